//! Parity of the autoencoder and the UNet with the reference trace (`ae.*`, `unet.*`).
//!
//! Every check feeds a stage its stored input, so the only differences are float32 rounding
//! (summation order inside convolutions, GEMMs and GroupNorm reductions, and 1-ulp differences
//! of exp/cos/sin between libm and PyTorch's vectorised kernels). Tolerances are therefore
//! relative to the scale of the compared tensor.
mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use common::{assert_close, fixture_config, fixture_vb, get, max_abs, trace};
use midm::model::{Autoencoder, UNetModel};

/// Relative float32 budget of one network pass: one float32 rounding is 6e-8 relative; a pass
/// through ~20-40 conv / GroupNorm / attention layers with reductions over up to a few
/// thousand terms accumulates a few hundred of those in the worst case.
const PASS_REL: f32 = 2e-5;

/// Tolerance for a tensor produced by a full pass: `PASS_REL` of its largest magnitude (at least
/// 1, since GroupNorm renormalises every layer to unit scale, so absolute errors of the
/// internal activations do not shrink below float32 rounding of O(1) values).
fn pass_tol(want: &Tensor) -> f32 {
    PASS_REL * max_abs(want).max(1.0)
}

fn indices_equal(name: &str, got: &Tensor, want: &Tensor) {
    let got: Vec<i64> = got
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<i64> = want
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got.len(), want.len(), "{name}: length");
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    eprintln!("parity {name}: {differ} of {} indices differ", want.len());
    assert_eq!(differ, 0, "{name}: {differ} indices differ");
}

#[test]
fn parity_autoencoder() {
    let cfg = fixture_config();
    let tr = trace();
    let ae = Autoencoder::new(
        fixture_vb().pp("diff_model.first_stage_model"),
        &cfg.autoencoder,
    )
    .unwrap();

    // Encoder: from input.exemplar.
    let x = get(&tr, "input.exemplar");
    let enc = ae.encoder.forward(&x).unwrap();
    if let Some(want) = tr.get("ae.encoder_out") {
        assert_close("ae.encoder_out", &enc, want, pass_tol(want));
    }
    let latent = ae.encode(&x).unwrap();
    let want_latent = get(&tr, "ae.latent");
    let latent_tol = pass_tol(&want_latent);
    assert_close("ae.latent", &latent, &want_latent, latent_tol);

    // Quantiser: from the stored latent. The indices are a discrete decision and must match
    // exactly; the straight-through value z + (e - z) is two IEEE float32 operations on
    // identical inputs, so it must match bit for bit.
    let (quant, idx) = ae.quantize(&want_latent).unwrap();
    indices_equal("ae.quant_indices", &idx, &get(&tr, "ae.quant_indices"));
    if let Some(want) = tr.get("ae.quant") {
        assert_close("ae.quant", &quant, want, 0.0);
    }
    // Our own latent quantises the same way as long as its error stays below the smallest
    // distance of a stored latent vector to a codebook decision boundary (config.json).
    let margin = common::config_json()["numerical_margins"]
        ["vq_min_distance_to_voronoi_boundary_ae_decode"]
        .as_f64()
        .unwrap_or(0.0) as f32;
    if latent_tol * (want_latent.dim(1).unwrap() as f32).sqrt() < margin {
        let (_, idx_chain) = ae.quantize(&latent).unwrap();
        indices_equal(
            "ae.quant_indices (from own latent)",
            &idx_chain,
            &get(&tr, "ae.quant_indices"),
        );
    }

    // Decoder: from the stored latent.
    let dec = ae.decode(&want_latent).unwrap();
    let want = get(&tr, "ae.decoded");
    assert_close("ae.decoded", &dec, &want, pass_tol(&want));
    if let Some(want) = tr.get("ae.decoded_noquant") {
        let dec = ae.decode_no_quant(&want_latent).unwrap();
        assert_close("ae.decoded_noquant", &dec, want, pass_tol(want));
    }
}

#[test]
fn parity_unet() {
    let cfg = fixture_config();
    let tr = trace();
    let unet = UNetModel::new(
        fixture_vb().pp("diff_model.model.diffusion_model"),
        &cfg.unet,
    )
    .unwrap();
    let x = get(&tr, "unet.x");
    let t = get(&tr, "unet.t");

    let mut taps: HashMap<String, Tensor> = HashMap::new();
    let eps = unet
        .forward_with_taps(&x, &t, &mut |name, v| {
            taps.insert(name.to_string(), v.clone());
        })
        .unwrap();

    // The embedding's arguments t * f_k reach ~1000 rad, so a 1-ulp difference of exp() in f_k
    // between libm and PyTorch moves cos/sin by up to 1000 * 6e-8 = 6e-5; this is the float32
    // conditioning of the embedding itself, not an error of the formula (which would be O(1)).
    let want = get(&tr, "unet.t_emb");
    assert_close("unet.t_emb", &taps["t_emb"], &want, 1e-4);
    // emb = Linear(SiLU(Linear(t_emb))) with O(1) weights over mc inputs: the t_emb budget, spread.
    let want = get(&tr, "unet.emb");
    assert_close(
        "unet.emb",
        &taps["emb"],
        &want,
        1e-4 * max_abs(&want).max(1.0),
    );

    // Debug-only intermediates: compare whichever the trace holds.
    let mut keys: Vec<&String> = tr
        .keys()
        .filter(|k| {
            k.starts_with("unet.input_blocks.")
                || k.starts_with("unet.output_blocks.")
                || *k == "unet.middle_block"
        })
        .collect();
    keys.sort();
    for key in keys {
        let name = key.strip_prefix("unet.").unwrap();
        let got = taps
            .get(name)
            .unwrap_or_else(|| panic!("the UNet reported no {name}"));
        let want = &tr[key];
        assert_close(key, got, want, pass_tol(want));
    }

    let want = get(&tr, "unet.eps");
    assert_close("unet.eps", &eps, &want, pass_tol(&want));

    // forward() is forward_with_taps() without taps, and t may come as float.
    let eps_f = unet.forward(&x, &t.to_dtype(DType::F32).unwrap()).unwrap();
    assert_close("unet.eps (f32 timesteps)", &eps_f, &eps, 0.0);
}

#[test]
fn nets_missing_or_misshaped_key_is_an_error() {
    use candle_nn::VarBuilder;
    let cfg = fixture_config();
    let path = common::parity_dir().join("weights.safetensors");
    let mut weights = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();

    let ae_key = "diff_model.first_stage_model.decoder.mid.attn_1.q.weight";
    let unet_key = "diff_model.model.diffusion_model.middle_block.1.qkv.weight";
    let ae_w = weights.remove(ae_key).unwrap();
    let unet_w = weights.remove(unet_key).unwrap();

    // Missing keys.
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &candle_core::Device::Cpu);
    let err =
        Autoencoder::new(vb.pp("diff_model.first_stage_model"), &cfg.autoencoder).unwrap_err();
    assert!(
        err.to_string().contains("decoder.mid.attn_1.q.weight"),
        "{err}"
    );
    let err = UNetModel::new(vb.pp("diff_model.model.diffusion_model"), &cfg.unet).unwrap_err();
    assert!(
        err.to_string().contains("middle_block.1.qkv.weight"),
        "{err}"
    );

    // Mis-shaped keys: a 4-D conv weight where a 3-D Conv1d is expected, and a truncated one.
    let mut bad = weights;
    bad.insert(unet_key.to_string(), unet_w.unsqueeze(3).unwrap());
    bad.insert(
        ae_key.to_string(),
        ae_w.narrow(0, 1, ae_w.dim(0).unwrap() - 1).unwrap(),
    );
    let vb = VarBuilder::from_tensors(bad, DType::F32, &candle_core::Device::Cpu);
    let err =
        Autoencoder::new(vb.pp("diff_model.first_stage_model"), &cfg.autoencoder).unwrap_err();
    assert!(
        err.to_string().contains("decoder.mid.attn_1.q.weight"),
        "{err}"
    );
    let err = UNetModel::new(vb.pp("diff_model.model.diffusion_model"), &cfg.unet).unwrap_err();
    assert!(
        err.to_string().contains("middle_block.1.qkv.weight"),
        "{err}"
    );
}

/// The KL variant (LDM `AutoencoderKL`, f=8) has no fixture trace: check that it asks for the
/// checkpoint's keys with their shapes, and that encode returns the posterior mean (the first
/// `embed_dim` of the `2 embed_dim` moments).
#[test]
fn nets_kl_autoencoder_keys_and_shapes() {
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};
    use midm::model::{AutoencoderConfig, AutoencoderKind};
    let cfg = AutoencoderConfig {
        kind: AutoencoderKind::Kl,
        embed_dim: 4,
        z_channels: 4,
        double_z: true,
        in_channels: 3,
        out_ch: 3,
        ch: 32,
        ch_mult: vec![1, 2, 2, 4],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        resolution: 32,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let ae = Autoencoder::new(vb, &cfg).unwrap();
    let vars = varmap.data().lock().unwrap();
    let shape = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("{k} not requested"))
            .dims()
            .to_vec()
    };
    assert_eq!(shape("encoder.conv_out.weight"), [8, 128, 3, 3]);
    assert_eq!(shape("quant_conv.weight"), [8, 8, 1, 1]);
    assert_eq!(shape("post_quant_conv.weight"), [4, 4, 1, 1]);
    assert_eq!(shape("decoder.conv_in.weight"), [128, 4, 3, 3]);
    assert_eq!(shape("decoder.up.3.block.0.conv1.weight"), [128, 128, 3, 3]);
    assert_eq!(
        shape("decoder.up.2.block.0.nin_shortcut.weight"),
        [64, 128, 1, 1]
    );
    assert!(!vars.keys().any(|k| k.starts_with("quantize")));
    drop(vars);

    let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
    let z = ae.encode(&x).unwrap();
    assert_eq!(z.dims(), [2, 4, 4, 4]);
    assert_eq!(ae.decode(&z).unwrap().dims(), [2, 3, 32, 32]);
    assert!(ae.quantize(&z).is_err());
}
