//! The worker without any UI, on the fixture model of `MIDM_PARITY_DIR` (default
//! `tests/fixtures/parity`): events arrive in order, the newest job wins, cancel stops a run within
//! one UNet pass, a panic or a failed load is reported and the worker keeps serving.
mod common;

use std::time::{Duration, Instant};

use image::{GrayImage, Luma, Rgba, RgbaImage};
use midm::device::DeviceChoice;
use midm::image::{build_label, empty_parts};
use midm::worker::{RunRequest, StepFrame, Urgency, WorkerEvent, WorkerHandle};
use midm::{MidmModel, SamplerOptions, StepKind};

const TIMEOUT: Duration = Duration::from_secs(300);

fn fixture_model() -> MidmModel {
    MidmModel::new(common::fixture_vb(), &common::fixture_config())
        .expect("building the fixture model")
}

/// A small request: a drawn oval as condition, a coloured gradient as exemplar.
pub fn request(size: u32, label_nc: usize, seed: u64, refine: bool) -> RunRequest {
    let mut edges = GrayImage::new(size, size);
    let c = size as f32 / 2.0;
    for i in 0..360 {
        let a = (i as f32).to_radians();
        let (x, y) = (
            c + 0.35 * c * 2.0 * a.cos() * 0.8,
            c + 0.35 * c * 2.0 * a.sin(),
        );
        edges.put_pixel(
            (x as u32).min(size - 1),
            (y as u32).min(size - 1),
            Luma([255]),
        );
    }
    let parts = empty_parts(size);
    let condition = build_label(label_nc, &edges, &parts).unwrap();
    let exemplar = RgbaImage::from_fn(size, size, |x, y| {
        Rgba([(x * 4) as u8, (y * 4) as u8, 128, 255])
    });
    let ex_edges = GrayImage::from_fn(size, size, |x, _| {
        Luma([if x == size / 2 { 255 } else { 0 }])
    });
    let exemplar_label = build_label(label_nc, &ex_edges, &parts).unwrap();
    let mut options = SamplerOptions {
        emit_warp_weights: true,
        ..Default::default()
    };
    if !refine {
        options.refine = None;
    }
    RunRequest {
        condition: condition.into(),
        exemplar,
        exemplar_label: exemplar_label.into(),
        options,
        seed,
    }
}

fn worker_with_model() -> (WorkerHandle, usize, usize) {
    worker_on(None)
}

/// A worker with the fixture model, its sampler on `threads` threads of its own (None: rayon's
/// global pool).
fn worker_on(threads: Option<usize>) -> (WorkerHandle, usize, usize) {
    let model = fixture_model();
    let (size, nc) = (model.config.image_size, model.config.label_nc());
    let w = WorkerHandle::spawn_with(threads, |_| {});
    w.install(model, common::parity_dir(), DeviceChoice::Cpu);
    match w.recv_timeout(TIMEOUT) {
        Some(WorkerEvent::ModelLoaded(info)) => assert_eq!(info.image_size, size),
        other => panic!("expected ModelLoaded, got {other:?}"),
    }
    (w, size, nc)
}

/// Collect events until `done` says stop (or time runs out).
fn collect(w: &WorkerHandle, mut done: impl FnMut(&WorkerEvent) -> bool) -> Vec<WorkerEvent> {
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < TIMEOUT {
        if let Some(e) = w.recv_timeout(Duration::from_millis(200)) {
            let stop = done(&e);
            out.push(e);
            if stop {
                return out;
            }
        }
    }
    panic!("timed out; got {} events", out.len());
}

/// The step frames among `events`, in order.
fn step_frames(events: &[WorkerEvent]) -> Vec<&StepFrame> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Step { frame, .. } => Some(&**frame),
            _ => None,
        })
        .collect()
}

fn is_end(e: &WorkerEvent, generation: u64) -> bool {
    matches!(e,
        WorkerEvent::Finished { generation: g, .. }
        | WorkerEvent::Cancelled { generation: g }
        | WorkerEvent::Failed { generation: g, .. } if *g == generation)
}

#[test]
fn events_arrive_in_order_and_end_with_the_final_image() {
    let (w, size, nc) = worker_with_model();
    let g = w.run(request(size as u32, nc, 1, false));
    let events = collect(&w, |e| is_end(e, g));
    let frames: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Step { generation, frame } if *generation == g => Some(frame),
            _ => None,
        })
        .collect();
    assert!(
        matches!(events.last(), Some(WorkerEvent::Finished { .. })),
        "last event: {:?}",
        events.last()
    );
    assert!(matches!(events.first(), Some(WorkerEvent::Started { .. })));
    // warp + 4 interleaved steps + final, with refinement off.
    assert_eq!(frames.len(), frames[0].total);
    assert_eq!(frames.len(), 6);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i, "events out of order");
        assert_eq!(
            f.pred_x0.as_ref().unwrap().dimensions(),
            (size as u32, size as u32)
        );
    }
    assert_eq!(frames[0].kind, StepKind::InitialWarp);
    // The probe row of a pixel, from the warp matrix the worker kept: normalised to max 1.
    let l = frames[0].latent_size;
    w.probe(g, 0, (1, 2));
    match collect(&w, |e| matches!(e, WorkerEvent::Probe { .. })).pop() {
        Some(WorkerEvent::Probe {
            index: 0,
            pixel: (1, 2),
            heat: Some(heat),
            ..
        }) => {
            assert_eq!(heat.len(), l * l);
            assert!(heat.iter().any(|v| (*v - 1.0).abs() < 1e-6));
        }
        other => panic!("expected a probe row, got {other:?}"),
    }
    let rewarped: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f.kind, StepKind::Interleaved { rewarped: true, .. }))
        .collect();
    assert_eq!(rewarped.len(), 2);
    assert!(rewarped
        .iter()
        .all(|f| f.mask.is_some() && f.warped.is_some()));
    let last = frames.last().unwrap();
    assert_eq!(last.kind, StepKind::Final);
    let img = last.image.as_ref().expect("final image");
    let first = img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| p != first), "final image is constant");
    for w in frames.windows(2) {
        assert!(w[0].elapsed <= w[1].elapsed);
    }
}

/// The editor paces repaints by these: streamed steps may wait for the next paint, a run's
/// start paints nothing, everything else paints at once.
#[test]
fn each_event_asks_for_a_repaint_of_its_urgency() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    let w = WorkerHandle::spawn(move |u| record.lock().unwrap().push(u));
    let model = fixture_model();
    let (size, nc) = (model.config.image_size, model.config.label_nc());
    w.install(model, common::parity_dir(), DeviceChoice::Cpu);
    let mut events = collect(&w, |e| matches!(e, WorkerEvent::ModelLoaded(_)));
    let g = w.run(request(size as u32, nc, 1, false));
    events.extend(collect(&w, |e| is_end(e, g)));
    let expected: Vec<Urgency> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Started { .. } => None,
            WorkerEvent::Step { .. } => Some(Urgency::Stream),
            _ => Some(Urgency::Now),
        })
        .collect();
    assert_eq!(*asked.lock().unwrap(), expected);
    assert_eq!(
        expected.last(),
        Some(&Urgency::Now),
        "the run's end paints at once"
    );
}

#[test]
fn newest_job_wins_and_cancel_stops_within_one_pass() {
    let (w, size, nc) = worker_with_model();
    let a = w.run(request(size as u32, nc, 1, true));
    // Wait until A streams, then supersede it.
    collect(
        &w,
        |e| matches!(e, WorkerEvent::Step { generation, .. } if *generation == a),
    );
    let submitted = Instant::now();
    let b = w.run(request(size as u32, nc, 2, false));
    let events = collect(&w, |e| is_end(e, b));
    let a_end = events
        .iter()
        .position(|e| is_end(e, a))
        .expect("A must end");
    assert!(
        matches!(events[a_end], WorkerEvent::Cancelled { .. }),
        "A: {:?}",
        events[a_end]
    );
    // After B was submitted, A emits at most the step it was converting (one UNet pass).
    let a_steps = events[..a_end]
        .iter()
        .filter(|e| matches!(e, WorkerEvent::Step { generation, frame } if *generation == a && frame.sent_at > submitted))
        .count();
    assert!(
        a_steps <= 1,
        "A kept streaming {a_steps} steps after being superseded"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, WorkerEvent::Finished { generation, .. } if *generation == a)));
    assert!(
        matches!(events.last(), Some(WorkerEvent::Finished { generation, .. }) if *generation == b)
    );

    // Plain cancel.
    let c = w.run(request(size as u32, nc, 3, true));
    collect(
        &w,
        |e| matches!(e, WorkerEvent::Step { generation, .. } if *generation == c),
    );
    let cancelled_at = Instant::now();
    w.cancel();
    let events = collect(&w, |e| is_end(e, c));
    let steps = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::Step { frame, .. } if frame.sent_at > cancelled_at))
        .count();
    assert!(steps <= 1, "{steps} steps after cancel");
    assert!(matches!(events.last(), Some(WorkerEvent::Cancelled { .. })));
}

#[test]
fn a_panic_is_reported_and_the_worker_keeps_serving() {
    let (w, size, nc) = worker_with_model();
    let g = w.run_panicking_job();
    let events = collect(&w, |e| is_end(e, g));
    match events.last() {
        Some(WorkerEvent::Failed { error, .. }) => assert!(error.contains("panicked"), "{error}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let g = w.run(request(size as u32, nc, 1, false));
    let events = collect(&w, |e| is_end(e, g));
    assert!(
        matches!(events.last(), Some(WorkerEvent::Finished { .. })),
        "{:?}",
        events.last()
    );
}

#[test]
fn bad_input_and_failed_loads_are_errors_and_keep_the_model() {
    let (w, size, nc) = worker_with_model();
    // A label of the wrong layout is a clear error, not a panic.
    let other_nc = if nc == 1 { 15 } else { 1 };
    let g = w.run(request(size as u32, other_nc, 1, false));
    let events = collect(&w, |e| is_end(e, g));
    match events.last() {
        Some(WorkerEvent::Failed { error, .. }) => assert!(error.contains("expects"), "{error}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    w.load("/nonexistent/midm-model", DeviceChoice::Cpu);
    let events = collect(&w, |e| {
        matches!(
            e,
            WorkerEvent::LoadFailed { .. } | WorkerEvent::ModelLoaded(_)
        )
    });
    assert!(
        matches!(events.last(), Some(WorkerEvent::LoadFailed { .. })),
        "{:?}",
        events.last()
    );
    let g = w.run(request(size as u32, nc, 1, false));
    let events = collect(&w, |e| is_end(e, g));
    assert!(
        matches!(events.last(), Some(WorkerEvent::Finished { .. })),
        "{:?}",
        events.last()
    );
}

#[test]
fn running_without_a_model_is_an_error() {
    let w = WorkerHandle::spawn(|_| {});
    let g = w.run(request(64, 1, 1, false));
    let events = collect(&w, |e| is_end(e, g));
    match events.last() {
        Some(WorkerEvent::Failed { error, .. }) => assert!(error.contains("no model"), "{error}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn steps_stream_as_previews_and_are_decoded_exactly_on_request() {
    let (w, size, nc) = worker_with_model();
    let g = w.run(request(size as u32, nc, 5, true));
    let events = collect(&w, |e| is_end(e, g));
    let frames = step_frames(&events);
    assert_eq!(frames.len(), frames[0].total);
    // Every step streams with a preview; only the final image is an exact decode.
    for f in &frames {
        assert_eq!(f.exact, f.kind == StepKind::Final, "step {}", f.index);
        let shown = f.pred_x0.as_ref().expect("a preview of every step");
        assert_eq!(shown.dimensions(), (size as u32, size as u32));
    }
    let f = frames
        .iter()
        .find(|f| matches!(f.kind, StepKind::Interleaved { rewarped: true, .. }))
        .expect("a re-warp step");
    w.decode(g, f.index);
    let events = collect(&w, |e| matches!(e, WorkerEvent::Decoded { .. }));
    match events.last() {
        Some(WorkerEvent::Decoded {
            index,
            result: Ok(decoded),
            ..
        }) => {
            assert_eq!(*index, f.index);
            assert_eq!(decoded.pred_x0.dimensions(), (size as u32, size as u32));
            assert_ne!(
                Some(&decoded.pred_x0),
                f.pred_x0.as_ref(),
                "no exact decode"
            );
            let warped = decoded
                .warped
                .as_ref()
                .expect("the exact R of a re-warp step");
            assert_eq!(warped.dimensions(), (size as u32, size as u32));
        }
        other => panic!("expected Decoded, got {other:?}"),
    }
}

/// The final image of one run of `request` on `w`.
fn final_image(w: &WorkerHandle, request: RunRequest) -> RgbaImage {
    let g = w.run(request);
    let events = collect(w, |e| is_end(e, g));
    events
        .into_iter()
        .find_map(|e| match e {
            WorkerEvent::Step { generation, frame } if generation == g => frame.image,
            _ => None,
        })
        .unwrap_or_else(|| panic!("run {g} gave no final image"))
}

#[test]
fn the_exemplar_side_is_reused_only_for_the_same_exemplar_and_changes_nothing() {
    let (w, size, nc) = worker_with_model();
    let first = request(size as u32, nc, 1, false);
    // Another sketch (the oval mirrored) on the same exemplar: the worker reuses E(y).
    let mut other_sketch = request(size as u32, nc, 2, false);
    if let midm::worker::LabelInput::Built(label) = &mut other_sketch.condition {
        label.data.reverse();
    }
    // The same sketch on another exemplar: the kept exemplar side must not be used.
    let mut other_exemplar = request(size as u32, nc, 2, false);
    other_exemplar.exemplar = RgbaImage::from_fn(size as u32, size as u32, |x, y| {
        Rgba([255 - (y * 4) as u8, 90, (x * 4) as u8, 255])
    });
    final_image(&w, first);
    for (what, r) in [("sketch", other_sketch), ("exemplar", other_exemplar)] {
        let after_another = final_image(&w, r.clone());
        let (fresh, _, _) = worker_with_model();
        let alone = final_image(&fresh, r);
        assert!(
            after_another == alone,
            "a run on another {what} after a run differs from the same run on a fresh worker"
        );
    }
}

#[test]
fn a_sweep_gives_each_exemplar_the_image_a_run_gives_and_yields_to_runs() {
    let (w, size, nc) = worker_with_model();
    let base = request(size as u32, nc, 3, false);
    let canny = midm::image::CannyParams::edge_model();
    let exemplars: Vec<(usize, RgbaImage)> = (0..3u8)
        .map(|k| {
            let img = RgbaImage::from_fn(size as u32, size as u32, |x, y| {
                Rgba([(x * 4) as u8 ^ (k * 60), (y * 4) as u8, 40 * k, 255])
            });
            (usize::from(k) + 10, img)
        })
        .collect();
    let sweep = w.sweep(
        base.condition.clone(),
        exemplars.clone(),
        canny,
        base.options.clone(),
        base.seed,
    );
    let events = collect(&w, |e| matches!(e, WorkerEvent::SweepDone { .. }));
    let swept: Vec<(usize, RgbaImage)> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Swept {
                sweep: s,
                id,
                result,
            } if *s == sweep => Some((*id, result.clone().expect("a sweep result"))),
            _ => None,
        })
        .collect();
    assert!(matches!(
        events.last(),
        Some(WorkerEvent::SweepDone { complete: true, .. })
    ));
    assert_eq!(swept.len(), exemplars.len());
    for ((id, img), (want_id, exemplar)) in swept.iter().zip(&exemplars) {
        assert_eq!(id, want_id, "results in the order asked");
        let mut run = base.clone();
        run.exemplar = exemplar.clone();
        run.exemplar_label = midm::worker::LabelInput::ExemplarEdges {
            canny,
            traced: GrayImage::new(size as u32, size as u32),
            parts: midm::image::empty_parts(size as u32),
        };
        assert!(final_image(&w, run) == *img, "exemplar {id}: sweep != run");
    }

    // A run asked during a sweep stops it.
    w.sweep(
        base.condition.clone(),
        exemplars.iter().cycle().take(60).cloned().collect(),
        canny,
        base.options.clone(),
        base.seed,
    );
    let g = w.run(base);
    let events = collect(&w, |e| is_end(e, g));
    let stopped = events.iter().any(|e| {
        matches!(
            e,
            WorkerEvent::SweepDone {
                complete: false,
                ..
            }
        )
    });
    let swept = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::Swept { .. }))
        .count();
    assert!(stopped && swept < 60, "the sweep went on: {swept} results");
}

/// `midm bench --worker`'s measurement: timed runs, then a run cancelled half way and another.
#[test]
fn worker_bench_times_runs_and_a_cancel_half_way() {
    let model = fixture_model();
    let (size, nc) = (model.config.image_size, model.config.label_nc());
    let req = request(size as u32, nc, 1, true);
    let b = midm::bench::worker::bench_worker(
        model,
        &common::parity_dir(),
        DeviceChoice::Cpu,
        &req,
        1,
        2,
    )
    .expect("bench");
    assert_eq!((b.first_step.len(), b.final_image.len()), (2, 2));
    assert!(b.steps > 2, "{} steps", b.steps);
    for (first, last) in b.first_step.iter().zip(&b.final_image) {
        assert!(first < last);
    }
    assert!(b.after_cancel > Duration::ZERO);
}

/// The editor runs its sampler on a pool of its own, one core fewer than the process may use:
/// the result must not depend on it (a one-thread pool against rayon's global pool).
#[test]
fn a_sampler_pool_of_its_own_gives_the_same_image() {
    let (global, size, nc) = worker_on(None);
    let (own, _, _) = worker_on(Some(1));
    let a = final_image(&global, request(size as u32, nc, 9, true));
    let b = final_image(&own, request(size as u32, nc, 9, true));
    let worst = a
        .pixels()
        .zip(b.pixels())
        .flat_map(|(p, q)| p.0.iter().zip(q.0).map(|(x, y)| x.abs_diff(y)))
        .max()
        .unwrap();
    assert!(worst <= 1, "final images differ by up to {worst} levels");
    #[cfg(target_os = "linux")]
    {
        // The run went through the pool: its thread is there, under its name.
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n == "midm-sampler-0"),
            "no sampler pool thread among {names:?}"
        );
        assert!(!names.iter().any(|n| n == "midm-sampler-1"));
    }
}

/// A worker holding the shipped model (`weights/`), its image size, label channels and config.
fn shipped_worker() -> (WorkerHandle, usize, usize, midm::model::MidmConfig) {
    let weights = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights");
    let model = midm::checkpoint::load(&weights, &candle_core::Device::Cpu)
        .expect("weights/ loads")
        .model;
    let (size, nc) = (model.config.image_size, model.config.label_nc());
    let config = model.config.clone();
    let w = WorkerHandle::spawn(|_| {});
    w.install(model, weights, DeviceChoice::Cpu);
    assert!(matches!(
        w.recv_timeout(TIMEOUT),
        Some(WorkerEvent::ModelLoaded(_))
    ));
    (w, size, nc, config)
}

/// A small exemplar glyph (the shipped model's `midms.frame_exemplar`): the steps say the model
/// saw it larger, and the probe's heat comes back onto the exemplar as the user sees it, onto the
/// glyph where it lies (not the middle of the image, where the framed glyph lay).
#[test]
fn a_small_exemplar_is_framed_and_the_probe_points_into_it_where_it_lies() {
    let (w, size, nc, config) = shipped_worker();
    assert!(
        config.frame_exemplar > 0.0,
        "the shipped model frames exemplars"
    );
    let mut req = request(size as u32, nc, 3, false);
    // A red disc of radius 20 centred at (96, 96) on white, its outline as the label.
    let (cx, cy, r) = (96.0f32, 96.0f32, 20.0f32);
    let dist = |x: u32, y: u32| (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
    req.exemplar = RgbaImage::from_fn(size as u32, size as u32, |x, y| match dist(x, y) < r {
        true => Rgba([220, 40, 40, 255]),
        false => Rgba([255, 255, 255, 255]),
    });
    let outline = GrayImage::from_fn(size as u32, size as u32, |x, y| {
        Luma([if (dist(x, y) - r).abs() < 0.8 { 255 } else { 0 }])
    });
    req.exemplar_label = build_label(nc, &outline, &empty_parts(size as u32))
        .unwrap()
        .into();
    let g = w.run(req);
    let events = collect(&w, |e| is_end(e, g));
    let first = step_frames(&events)[0];
    let scale = first.exemplar_frame_scale.expect("the disc is framed");
    assert!((2.5..3.0).contains(&scale), "exemplar frame scale {scale}");
    // The streamed preview's colours are fitted on the exemplar the latent is of (the framed
    // disc): the warped disc shows its red inside the drawn oval (fitted on the unframed image,
    // mostly white, it came out pale: [255, 137, 119]).
    let preview = first.pred_x0.as_ref().expect("a preview");
    let p = preview.get_pixel(size as u32 / 2, size as u32 / 2);
    assert!(
        (0..3).all(|c| (p[c] as i32 - [220, 40, 40][c]).abs() < 40),
        "the initial warp's preview is {p:?} in the oval's middle"
    );
    let l = first.latent_size;
    w.probe(g, 0, (l / 2, l / 2));
    let heat = match collect(&w, |e| matches!(e, WorkerEvent::Probe { .. })).pop() {
        Some(WorkerEvent::Probe { heat: Some(h), .. }) => h,
        other => panic!("expected a probe row, got {other:?}"),
    };
    assert_eq!(heat.len(), l * l);
    // The heat's centroid, in exemplar pixels, lies inside the disc.
    let cell = size as f32 / l as f32;
    let (mut sum, mut y, mut x) = (0f32, 0f32, 0f32);
    for (i, h) in heat.iter().enumerate() {
        sum += h;
        y += h * ((i / l) as f32 + 0.5) * cell;
        x += h * ((i % l) as f32 + 0.5) * cell;
    }
    let (y, x) = (y / sum, x / sum);
    assert!(
        (x - cx).hypot(y - cy) < r,
        "the probe's heat centres at ({x:.1}, {y:.1}), outside the disc"
    );
}

/// A red disc (220, 40, 40) of radius 52 in the middle of a `size` image of the `ground` colour.
fn red_disc(size: u32, ground: [u8; 3]) -> RgbaImage {
    let c = size as f32 / 2.0;
    RgbaImage::from_fn(size, size, |x, y| {
        match (x as f32 + 0.5 - c).hypot(y as f32 + 0.5 - c) < 52.0 {
            true => Rgba([220, 40, 40, 255]),
            false => Rgba([ground[0], ground[1], ground[2], 255]),
        }
    })
}

/// An exemplar on a plain coloured ground (the shipped model's `midms.clear_exemplar_ground`):
/// the steps say the model used it on white, and the drawn oval takes the glyph's red, not the
/// ground's blue (taken as a photo, the ground's blue came into the oval).
#[test]
fn a_plain_coloured_ground_is_cleared_and_its_colour_stays_out() {
    let (w, size, nc, config) = shipped_worker();
    assert!(
        config.clear_exemplar_ground,
        "the shipped model clears plain grounds"
    );
    let mut req = request(size as u32, nc, 3, false);
    // A red disc in the middle of a plain light-blue image (too large to frame).
    req.exemplar = red_disc(size as u32, [150, 190, 240]);
    let g = w.run(req);
    let events = collect(&w, |e| is_end(e, g));
    let frames = step_frames(&events);
    assert!(
        frames[0].exemplar_ground_cleared,
        "the blue ground is cleared"
    );
    assert_eq!(
        frames[0].exemplar_frame_scale, None,
        "a disc this large is not framed"
    );
    let image = frames.last().unwrap().image.clone().expect("a final image");
    // Of the output's coloured pixels, the share nearer the ground's blue than the disc's red.
    let dist =
        |p: &Rgba<u8>, q: [i32; 3]| (0..3).map(|ch| (p[ch] as i32 - q[ch]).pow(2)).sum::<i32>();
    let coloured: Vec<&Rgba<u8>> = image
        .pixels()
        .filter(|p| p[0].min(p[1]).min(p[2]) < 200)
        .collect();
    let blue = coloured
        .iter()
        .filter(|p| dist(p, [150, 190, 240]) < dist(p, [220, 40, 40]))
        .count();
    let share = blue as f32 / coloured.len().max(1) as f32;
    eprintln!(
        "{} coloured pixels, {share:.3} of them nearer the ground's blue",
        coloured.len()
    );
    assert!(
        coloured.len() > 2000 && share < 0.05,
        "{share} of {} coloured pixels are blue",
        coloured.len()
    );
}

/// A drawn outline with a gap (the shipped model's `midms.close_gaps`): the steps say the model
/// closed it, and the oval comes out filled with the exemplar's red (with the gap open, its inside
/// counted as outside and came out white).
#[test]
fn a_gap_in_the_outline_is_closed_and_its_inside_filled() {
    let (w, size, nc, config) = shipped_worker();
    assert!(config.close_gaps >= 3, "the shipped model closes gaps");
    let mut req = request(size as u32, nc, 3, false);
    let c = size as f32 / 2.0;
    // The oval's right side cut open over 5 rows.
    let mut edges = GrayImage::new(size as u32, size as u32);
    for i in 0..360 {
        let a = (i as f32).to_radians();
        let (x, y) = (c + 0.56 * c * a.cos(), c + 0.7 * c * a.sin());
        if !(x > c && (y - c).abs() < 2.5) {
            edges.put_pixel(x as u32, y as u32, Luma([255]));
        }
    }
    req.condition = build_label(nc, &edges, &empty_parts(size as u32))
        .unwrap()
        .into();
    req.exemplar = red_disc(size as u32, [255, 255, 255]);
    let g = w.run(req);
    let events = collect(&w, |e| is_end(e, g));
    let frames = step_frames(&events);
    assert!(frames[0].drawing_gaps_closed, "the gap is closed");
    let image = frames.last().unwrap().image.clone().expect("a final image");
    let red = image
        .pixels()
        .filter(|p| p[0] > 150 && p[1] < 120 && p[2] < 120)
        .count();
    // The oval's inside is about pi * 36 * 45 = 5,000 pixels.
    eprintln!("{red} red pixels");
    assert!(red > 3500, "only {red} red pixels: the inside stayed white");
}

/// A model with colour transfer (the shipped one) puts the run's warped chroma onto every step
/// the editor shows, not only onto the final image: the exact decode of the last loop step, whose
/// x0 is the final latent, is the final image itself, and its streamed preview has the
/// exemplar's colours as the final image has them.
#[test]
fn steps_of_a_colour_transfer_model_are_shown_in_the_final_colours() {
    let (w, size, nc, config) = shipped_worker();
    assert!(config.colour_transfer, "the shipped model transfers colour");
    let g = w.run(request(size as u32, nc, 3, false));
    let events = collect(&w, |e| is_end(e, g));
    let frames = step_frames(&events);
    let last = frames[frames.len() - 2];
    assert!(
        matches!(last.kind, StepKind::Interleaved { .. }),
        "{:?}",
        last.kind
    );
    let final_image = frames.last().unwrap().image.clone().expect("a final image");
    // The oval (90 of 128 px tall) is small enough for the shipped model to frame it
    // (`midms.frame_drawing`): the steps say so, and come back on the canvas, where the decode
    // below must still equal the final image.
    let scale = last.frame_scale.expect("the shipped model frames the oval");
    assert!((1.15..1.3).contains(&scale), "frame scale {scale}");
    w.decode(g, last.index);
    let decoded = match collect(&w, |e| matches!(e, WorkerEvent::Decoded { .. })).pop() {
        Some(WorkerEvent::Decoded { result: Ok(d), .. }) => d,
        other => panic!("expected Decoded, got {other:?}"),
    };
    assert_eq!(
        decoded.pred_x0, final_image,
        "the last step decoded as the final image shows it"
    );
    // The preview is a latent fit (of a gradient exemplar here, which has no white to fit the
    // background on): compare the a*b* chroma where the final image is coloured (L* < 90).
    let lab =
        |p: &Rgba<u8>| midm::sampling::colour::rgb_to_lab([0, 1, 2].map(|c| p[c] as f32 / 255.0));
    let preview = last.pred_x0.as_ref().unwrap();
    let (mut dist, mut n) = (0f32, 0);
    for (f, p) in final_image.pixels().zip(preview.pixels()) {
        let (f, p) = (lab(f), lab(p));
        if f[0] < 90.0 {
            dist += (f[1] - p[1]).hypot(f[2] - p[2]);
            n += 1;
        }
    }
    let mean = dist / n as f32;
    eprintln!("a*b* distance, last step's preview to the final image: {mean:.2} over {n} pixels");
    assert!(
        n > 500 && mean < 3.0,
        "preview chroma off by {mean} over {n} pixels"
    );
}

/// `shutdown` stops the thread that holds the model (the editor's exit, `bench --worker`'s end):
/// after a finished run and while a run is going, the thread ends within the wait; once it has
/// ended, a second call has nothing to wait for.
#[test]
fn shutdown_ends_the_worker_thread() {
    let (mut w, size, nc) = worker_with_model();
    let g = w.run(request(size as u32, nc, 1, false));
    collect(&w, |e| is_end(e, g));
    assert!(w.shutdown(Duration::from_secs(30)));
    assert!(w.shutdown(Duration::ZERO));

    let (mut w, size, nc) = worker_with_model();
    let g = w.run(request(size as u32, nc, 1, false));
    collect(
        &w,
        |e| matches!(e, WorkerEvent::Step { generation, .. } if *generation == g),
    );
    assert!(
        w.shutdown(Duration::from_secs(30)),
        "a running worker did not stop"
    );
}
