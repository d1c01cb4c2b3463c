//! Measures the exemplar ranking on the shipped model (`weights/`), through the worker as the
//! editor uses it: the time to rank every shipped exemplar for a sketch, and where each asset
//! sketch's own exemplar (`NAME_sketch.png` -> `NAME_exemplar.png` in the same folder) ranks.
//! A measurement, not a check; run it with
//! `cargo test --release --test rank_shipped -- --ignored --nocapture`.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::imageops::FilterType;
use midm::device::DeviceChoice;
use midm::image::{edge_map, empty_parts, CannyParams};
use midm::worker::{LabelInput, RankScore, WorkerEvent, WorkerHandle};

const TIMEOUT: Duration = Duration::from_secs(600);

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Scores of one ranking, by exemplar index, and its wall time.
fn rank(
    w: &WorkerHandle,
    condition: LabelInput,
    exemplars: &[(usize, image::RgbaImage)],
    canny: CannyParams,
) -> (Vec<RankScore>, Duration) {
    let t0 = Instant::now();
    let ranking = w.rank(condition, exemplars.to_vec(), canny);
    let mut scores = vec![None; exemplars.len()];
    loop {
        match w.recv_timeout(TIMEOUT).expect("the worker answers") {
            WorkerEvent::Ranked {
                ranking: r,
                id,
                score,
            } if r == ranking => scores[id] = Some(score.expect("a score")),
            WorkerEvent::RankDone {
                ranking: r,
                complete,
            } if r == ranking => {
                assert!(complete);
                break;
            }
            _ => {}
        }
    }
    (
        scores.into_iter().map(Option::unwrap).collect(),
        t0.elapsed(),
    )
}

#[test]
#[ignore = "a measurement on the shipped model (minutes in a debug build)"]
fn shipped_model_ranking_time_and_own_exemplar_rank() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let w = WorkerHandle::spawn(|_| {});
    w.load(root.join("weights"), DeviceChoice::Cpu);
    let info = match w.recv_timeout(TIMEOUT) {
        Some(WorkerEvent::ModelLoaded(info)) => info,
        other => panic!("loading weights/: {other:?}"),
    };
    let size = info.image_size as u32;
    let canny = CannyParams::for_label_nc(info.label_nc);
    let dirs = [root.join("assets"), root.join("assets/drawn")];
    let gallery: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| files(d, "_exemplar.png"))
        .collect();
    let exemplars: Vec<(usize, image::RgbaImage)> = gallery
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let img = image::open(p).unwrap();
            (
                i,
                img.resize_exact(size, size, FilterType::Triangle)
                    .to_rgba8(),
            )
        })
        .collect();
    let n = gallery.len();
    let (mut ranks, mut times, mut top1, mut top3) = (Vec::new(), Vec::new(), 0, 0);
    // The later keys alone, for comparison: (first, sum of ranks) by the cycle share (ties
    // counted in the own exemplar's favour) and by the mean best correlation.
    let mut alone = [(0usize, 0usize); 2];
    for sketch in dirs.iter().flat_map(|d| files(d, "_sketch.png")) {
        let own = sketch
            .to_string_lossy()
            .replace("_sketch.png", "_exemplar.png");
        let Some(own) = gallery.iter().position(|g| g.to_string_lossy() == own) else {
            continue;
        };
        let edges = edge_map(&image::open(&sketch).unwrap(), size);
        let condition = LabelInput::Layers {
            edges,
            parts: empty_parts(size),
        };
        let (scores, t) = rank(&w, condition, &exemplars, canny);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| RankScore::best_first(&scores[a], &scores[b]));
        let rank = order.iter().position(|&i| i == own).unwrap() + 1;
        let best = &gallery[order[0]];
        let name = |p: &Path| p.strip_prefix(&root).unwrap().display().to_string();
        println!(
            "{:32} own exemplar rank {rank:2}/{n} (shape {:.3}), first {} ({:.3}), {:.0} ms",
            name(&sketch),
            scores[own].shape,
            name(best),
            scores[order[0]].shape,
            t.as_secs_f64() * 1e3
        );
        // Where the own exemplar would rank by one key alone.
        let keys: [fn(&RankScore) -> f32; 2] = [|s| s.cycle_share, |s| s.mean_max_corr];
        for (k, key) in keys.iter().enumerate() {
            let r = 1 + scores.iter().filter(|s| key(s) > key(&scores[own])).count();
            alone[k].0 += (r == 1) as usize;
            alone[k].1 += r;
        }
        top1 += (rank == 1) as usize;
        top3 += (rank <= 3) as usize;
        ranks.push(rank);
        times.push(t);
    }
    let total = ranks.len();
    let mean_rank = ranks.iter().sum::<usize>() as f64 / total as f64;
    // The first ranking computes every exemplar's features; later ones reuse them.
    for (k, what) in ["the cycle share", "the mean best correlation"]
        .iter()
        .enumerate()
    {
        println!(
            "by {what} alone: own exemplar first {}/{total}, mean rank {:.1}",
            alone[k].0,
            alone[k].1 as f64 / total as f64
        );
    }
    let cold = times.remove(0);
    times.sort();
    let k = times.len();
    println!(
        "{total} sketches, {n} exemplars: own exemplar first {top1}/{total}, in the top 3 {top3}/{total}, \
         mean rank {mean_rank:.1} (chance {:.1}); ranking all {n}: first {:.0} ms, then median \
         {:.0} ms, min {:.0}, max {:.0} ({} px model, {}, {} threads)",
        (n + 1) as f64 / 2.0,
        cold.as_secs_f64() * 1e3,
        times[k / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[k - 1].as_secs_f64() * 1e3,
        size,
        info.precision,
        rayon::current_num_threads(),
    );
}
