//! Ranking exemplars on the worker, on the fixture model of `MIDM_PARITY_DIR`: one score per
//! exemplar, and a ranking never holds up a run by more than the exemplar being scored.
mod common;

use std::time::{Duration, Instant};

use image::{GrayImage, Luma, Rgba, RgbaImage};
use midm::device::DeviceChoice;
use midm::image::{build_label, empty_parts, CannyParams};
use midm::worker::{LabelInput, RankScore, RunRequest, WorkerEvent, WorkerHandle};
use midm::{MidmModel, SamplerOptions};

const TIMEOUT: Duration = Duration::from_secs(300);

fn worker_with_model() -> (WorkerHandle, u32, usize) {
    let model = MidmModel::new(common::fixture_vb(), &common::fixture_config()).unwrap();
    let (size, nc) = (model.config.image_size, model.config.label_nc());
    let w = WorkerHandle::spawn(|_| {});
    w.install(model, common::parity_dir(), DeviceChoice::Cpu);
    match w.recv_timeout(TIMEOUT) {
        Some(WorkerEvent::ModelLoaded(_)) => {}
        other => panic!("expected ModelLoaded, got {other:?}"),
    }
    (w, size as u32, nc)
}

/// A drawn ring as the condition's edge layer.
fn condition(size: u32) -> LabelInput {
    let c = size as f32 / 2.0;
    let edges = GrayImage::from_fn(size, size, |x, y| {
        let r = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
        Luma([if (r - c * 0.6).abs() < 1.0 { 255 } else { 0 }])
    });
    LabelInput::Layers {
        edges,
        parts: empty_parts(size),
    }
}

/// Exemplars that differ: stripes of varying period and colour.
fn exemplars(n: usize, size: u32) -> Vec<(usize, RgbaImage)> {
    (0..n)
        .map(|i| {
            let period = 3 + i as u32;
            let img = RgbaImage::from_fn(size, size, |x, y| {
                let on = ((x + y * (i as u32 % 3)) / period).is_multiple_of(2);
                let v = if on { 40 + 9 * i as u8 } else { 230 };
                Rgba([v, 255 - v, (i * 20) as u8, 255])
            });
            (100 + i, img)
        })
        .collect()
}

fn run_request(size: u32, nc: usize) -> RunRequest {
    let parts = empty_parts(size);
    let ring = match condition(size) {
        LabelInput::Layers { edges, .. } => edges,
        _ => unreachable!(),
    };
    let label = build_label(nc, &ring, &parts).unwrap();
    let options = SamplerOptions {
        refine: None,
        ..Default::default()
    };
    RunRequest {
        condition: label.clone().into(),
        exemplar: exemplars(1, size).remove(0).1,
        exemplar_label: label.into(),
        options,
        seed: 1,
    }
}

fn next(w: &WorkerHandle) -> WorkerEvent {
    w.recv_timeout(TIMEOUT).expect("the worker answers")
}

/// Runs one ranking to its end: the scores by id, in the order they came.
fn ranking(w: &WorkerHandle, ex: &[(usize, RgbaImage)], size: u32) -> Vec<(usize, RankScore)> {
    let ranking = w.rank(condition(size), ex.to_vec(), CannyParams::celeba());
    let mut scores = Vec::new();
    loop {
        match next(w) {
            WorkerEvent::Ranked {
                ranking: r,
                id,
                score,
            } => {
                assert_eq!(r, ranking);
                scores.push((id, score.expect("a score")));
            }
            WorkerEvent::RankDone {
                ranking: r,
                complete,
            } => {
                assert_eq!(r, ranking);
                assert!(complete);
                return scores;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_ranking_scores_every_exemplar_once() {
    let (w, size, _) = worker_with_model();
    let ex = exemplars(5, size);
    let t0 = Instant::now();
    let scores = ranking(&w, &ex, size);
    let first = t0.elapsed();
    let ids: Vec<usize> = scores.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ex.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    for (id, s) in &scores {
        eprintln!("exemplar {id}: {s:?}");
        for v in [s.shape, s.cycle_share, s.mean_max_corr] {
            assert!((0.0..=1.0).contains(&v), "exemplar {id}: {s:?}");
        }
    }
    // Again (the exemplars' features are kept now): the same scores.
    let t0 = Instant::now();
    assert_eq!(ranking(&w, &ex, size), scores);
    eprintln!("first ranking {first:?}, again {:?}", t0.elapsed());
}

#[test]
fn a_run_is_not_held_up_by_a_ranking() {
    let (w, size, nc) = worker_with_model();

    // Asked before the ranking was served: the ranking stops before its first exemplar.
    let ranking = w.rank(condition(size), exemplars(8, size), CannyParams::celeba());
    let generation = w.run(run_request(size, nc));
    match next(&w) {
        WorkerEvent::RankDone {
            ranking: r,
            complete,
        } => assert!(r == ranking && !complete),
        other => panic!("expected the ranking to stop at once, got {other:?}"),
    }
    assert!(matches!(next(&w), WorkerEvent::Started { generation: g } if g == generation));
    while !matches!(next(&w), WorkerEvent::Finished { .. }) {}

    // Asked while it scores: at most the exemplar being scored is finished first.
    let n = 24;
    let ranking = w.rank(condition(size), exemplars(n, size), CannyParams::celeba());
    let t0 = Instant::now();
    assert!(matches!(next(&w), WorkerEvent::Ranked { .. }));
    let per_exemplar = t0.elapsed();
    let submitted = Instant::now();
    let generation = w.run(run_request(size, nc));
    let (mut after, mut complete) = (0, None);
    let started = loop {
        match next(&w) {
            WorkerEvent::Ranked { ranking: r, .. } if r == ranking => after += 1,
            WorkerEvent::RankDone {
                ranking: r,
                complete: c,
            } if r == ranking => complete = Some(c),
            WorkerEvent::Started { generation: g } if g == generation => break submitted.elapsed(),
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!(
        "one exemplar {per_exemplar:?}; run started {started:?} after it was submitted, \
         {after} exemplar(s) scored meanwhile"
    );
    assert_eq!(complete, Some(false), "the ranking should have stopped");
    // One in progress when the run came, plus one that may have ended in the instant between
    // the first score arriving and the run being submitted.
    assert!(
        after <= 2,
        "{after} exemplars scored after the run was submitted"
    );
}
