//! Exemplar ranking (`midm::sampling::rank`) on the fixture model of `MIDM_PARITY_DIR`: the
//! score is the reference's own initial cycle mask, it equals the mask the sampler's matching
//! functions give on the sampler's features, it is deterministic and in [0, 1], and an exemplar
//! of the sketch's outline ranks first whatever the networks say.
mod common;

use candle_core::{DType, Device, Tensor};
use midm::sampling::matching;
use midm::sampling::rank::{
    rank, score, ConditionFeatures, ExemplarFeatures, RankOptions, RankScore,
};
use midm::MidmModel;

fn fixture_model() -> MidmModel {
    MidmModel::new(common::fixture_vb(), &common::fixture_config())
        .expect("building the fixture model")
}

fn options() -> RankOptions {
    let c = common::config_json();
    RankOptions {
        temperature: common::temperature(&c),
        fb_threshold: common::fb_threshold(&c),
    }
}

fn item(t: &Tensor, i: usize) -> Tensor {
    t.narrow(0, i, 1).unwrap()
}

fn mean(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn the_score_is_the_references_initial_cycle_mask() {
    let model = fixture_model();
    let trace = common::trace();
    let inputs = common::reference_inputs(&trace);
    let mask = common::get(&trace, "flow_ref.fb_mask");
    let corr = common::get(&trace, "corr.corr_ref"); // [B, h, w, h, w]
    for i in 0..2 {
        let cond = ConditionFeatures::new(&model, &item(&inputs.condition, i)).unwrap();
        let ex = ExemplarFeatures::new(
            &model,
            &item(&inputs.exemplar, i),
            &item(&inputs.exemplar_label, i),
        )
        .unwrap();
        let s = score(&cond, &ex, options()).unwrap();
        let want_share = mean(&item(&mask, i));
        let c = item(&corr, i).flatten_from(3).unwrap(); // [1, h, w, h*w]
        let want_corr = mean(&c.max(3).unwrap());
        eprintln!("item {i}: {s:?}, reference share {want_share}, corr {want_corr}");
        assert_eq!(s.cycle_share, want_share, "item {i}");
        assert!((s.mean_max_corr - want_corr).abs() < 1e-5, "item {i}");
    }
}

/// The sampler's initial matching (`Run::go`), written out with the library's functions.
fn sampler_mask(model: &MidmModel, cond: &Tensor, ex: &Tensor, ex_label: &Tensor) -> Tensor {
    let o = midm::SamplerOptions::default();
    let ref_latent = model.autoencoder.encode(ex).unwrap();
    let (_, _, h, w) = ref_latent.dims4().unwrap();
    let (seg_in, label_ds) = model.config.condition_on_grid(cond).unwrap();
    let ref_label_ds = model.config.label_downsample.apply(ex_label, h, w).unwrap();
    let corr_net = &model.correspondence;
    let (trg_out, _) = corr_net.target_features(&seg_in, &label_ds).unwrap();
    let (ref_out, _) = corr_net
        .reference_features(&ref_latent, &ref_label_ds)
        .unwrap();
    let corr = matching::correlation(&trg_out, &ref_out).unwrap();
    matching::cycle_mask(&corr, h, w, o.temperature, o.fb_threshold)
        .unwrap()
        .2
}

/// Exemplars unlike the fixture's: a flat grey one, a gradient, a shuffled fixture exemplar.
fn other_exemplars(model: &MidmModel) -> Vec<(Tensor, Tensor)> {
    let s = model.config.image_size;
    let nc = model.config.label_nc();
    let dev = Device::Cpu;
    let grey = Tensor::zeros((1, 3, s, s), DType::F32, &dev).unwrap();
    let ramp = Tensor::arange(0f32, s as f32, &dev)
        .unwrap()
        .affine(2.0 / s as f64, -1.0)
        .unwrap();
    let ramp = ramp.broadcast_as((1, 3, s, s)).unwrap().contiguous();
    let label = |v: f64| (Tensor::ones((1, nc, s, s), DType::F32, &dev).unwrap() * v).unwrap();
    let trace = common::trace();
    let inputs = common::reference_inputs(&trace);
    let flipped = item(&inputs.exemplar, 1).flip(&[3]).unwrap();
    vec![
        (grey, label(0.0)),
        (ramp.unwrap(), label(0.5)),
        (flipped, item(&inputs.exemplar_label, 0)),
        (item(&inputs.exemplar, 0), item(&inputs.exemplar_label, 0)),
    ]
}

#[test]
fn the_score_is_the_share_of_the_samplers_initial_mask() {
    let model = fixture_model();
    let trace = common::trace();
    let cond = item(&common::reference_inputs(&trace).condition, 1);
    let features = ConditionFeatures::new(&model, &cond).unwrap();
    for (k, (ex, label)) in other_exemplars(&model).iter().enumerate() {
        let s = score(
            &features,
            &ExemplarFeatures::new(&model, ex, label).unwrap(),
            RankOptions::default(),
        )
        .unwrap();
        let want = mean(&sampler_mask(&model, &cond, ex, label));
        eprintln!("exemplar {k}: {s:?}, sampler mask share {want}");
        assert_eq!(s.cycle_share, want, "exemplar {k}");
    }
}

#[test]
fn ranking_is_deterministic_in_range_and_sorted() {
    let model = fixture_model();
    let trace = common::trace();
    let cond = item(&common::reference_inputs(&trace).condition, 0);
    let exemplars = other_exemplars(&model);
    let a = rank(&model, &cond, &exemplars, RankOptions::default()).unwrap();
    let b = rank(&model, &cond, &exemplars, RankOptions::default()).unwrap();
    assert_eq!(a, b, "two rankings differ");
    let mut ids: Vec<usize> = a.iter().map(|(i, _)| *i).collect();
    ids.sort();
    assert_eq!(ids, (0..exemplars.len()).collect::<Vec<_>>());
    for (i, s) in &a {
        eprintln!("exemplar {i}: {s:?}");
        for v in [s.shape, s.cycle_share, s.mean_max_corr] {
            assert!((0.0..=1.0).contains(&v), "exemplar {i}: {s:?}");
        }
    }
    let scores: Vec<RankScore> = a.iter().map(|(_, s)| *s).collect();
    assert!(
        scores
            .windows(2)
            .all(|w| RankScore::best_first(&w[0], &w[1]).is_le()),
        "not best first: {scores:?}"
    );
    // Scores do not all tie: the ranking tells these exemplars apart.
    assert!(scores.first() != scores.last(), "{scores:?}");
}

#[test]
fn a_wrong_size_is_an_error_not_a_panic() {
    let model = fixture_model();
    let s = model.config.image_size;
    let cond = Tensor::zeros((1, 1, s, s), DType::F32, &Device::Cpu).unwrap();
    let err = ConditionFeatures::new(&model, &cond).unwrap_err();
    assert!(err.to_string().contains("condition"), "{err}");
}

/// A condition of `nc` channels whose first (all edges) holds a `w` x `h` rectangle's outline
/// (1 px) at (`x`, `y`); the others are empty.
fn outline(s: usize, nc: usize, (x, y, w, h): (usize, usize, usize, usize)) -> Tensor {
    let mut v = vec![0f32; s * s];
    for i in x..x + w {
        v[y * s + i] = 1.0;
        v[(y + h - 1) * s + i] = 1.0;
    }
    for j in y..y + h {
        v[j * s + x] = 1.0;
        v[j * s + x + w - 1] = 1.0;
    }
    v.resize(nc * s * s, 0.0);
    Tensor::from_vec(v, (1, nc, s, s), &Device::Cpu).unwrap()
}

/// An exemplar with a dark filled rectangle on white, in [-1, 1], and its (empty) label.
fn filled(model: &MidmModel, (x, y, w, h): (usize, usize, usize, usize)) -> (Tensor, Tensor) {
    let s = model.config.image_size;
    let mut v = vec![1f32; s * s];
    for j in y..y + h {
        v[j * s + x..j * s + x + w].fill(-0.6);
    }
    let img = Tensor::from_vec(
        [v.clone(), v.clone(), v].concat(),
        (1, 3, s, s),
        &Device::Cpu,
    );
    let label = Tensor::zeros((1, model.config.label_nc(), s, s), DType::F32, &Device::Cpu);
    (img.unwrap(), label.unwrap())
}

#[test]
fn the_exemplar_of_the_sketchs_outline_ranks_first_at_any_size_and_place() {
    let model = fixture_model();
    let s = model.config.image_size;
    let q = s / 8;
    // A tall sketch; a tall exemplar half its size elsewhere, a wide one, and a square one.
    let cond = outline(s, model.config.label_nc(), (q, q, 2 * q, 6 * q));
    let exemplars = [
        filled(&model, (5 * q, 4 * q, 3 * q, 3 * q)),
        filled(&model, (0, 5 * q, 8 * q, 2 * q)),
        filled(&model, (4 * q, 0, q, 3 * q)),
    ];
    let ranking = rank(&model, &cond, &exemplars, RankOptions::default()).unwrap();
    eprintln!("{ranking:?}");
    let order: Vec<usize> = ranking.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [2, 0, 1]);
    assert_eq!(ranking[0].1.shape, 1.0);
}
