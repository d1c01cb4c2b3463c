//! The editor's real UI state, driven through egui_kittest (no GPU needed): strokes, undo/redo,
//! a run streaming into the scrubber, scrubbing, cancel, failed model loads, export and restore,
//! persistence. The model is built from the fixture weights of `MIDM_PARITY_DIR`.
mod common;

use common::editor::{fixture_model, fresh_app, harness, step_until, stroke, MemStorage};

use std::time::Duration;

use egui::{Key, Modifiers, Pos2, Vec2};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use image::{DynamicImage, Rgba, RgbaImage};
use midm::model::Precision;
use midm::ui::{AppArgs, MidmApp};
use midm::StepKind;

fn exemplar() -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(80, 80, |x, y| {
        Rgba([(x * 3) as u8, (y * 3) as u8, 90, 255])
    }))
}

/// An app with the fixture model loaded, an exemplar and a drawn stroke; live mode off (runs
/// start with Run).
fn ready_app(refine: bool) -> Harness<'static, MidmApp> {
    let mut app = fresh_app();
    app.set_live(false);
    app.install_model(fixture_model(), common::parity_dir());
    app.set_exemplar(exemplar(), "gradient".into());
    app.params.refine = refine;
    let mut h = harness(app);
    step_until(&mut h, "the model", |a| a.model_info().is_some());
    stroke(&mut h, (10.0, 10.0), (50.0, 40.0));
    h
}

#[test]
fn a_stroke_changes_the_condition_and_undo_redo_restore_it() {
    let mut h = harness(fresh_app());
    h.step();
    let empty = h.state().canvas().label(1).unwrap();
    stroke(&mut h, (5.0, 5.0), (30.0, 5.0));
    let drawn = h.state().canvas().label(1).unwrap();
    assert_ne!(drawn, empty, "the stroke did not change the condition");
    let ones = drawn.data.iter().filter(|v| **v == 1.0).count();
    assert!(ones >= 20, "only {ones} pixels painted");

    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(h.state().canvas().label(1).unwrap(), empty, "undo");
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.step();
    assert_eq!(h.state().canvas().label(1).unwrap(), drawn, "redo");

    // Shift-drag draws one straight line as one undoable action.
    let rect = h.state().canvas_rect().unwrap();
    let zoom = rect.width() / h.state().canvas().size() as f32;
    let at =
        |x: f32, y: f32| Pos2::new(rect.min.x + (x + 0.5) * zoom, rect.min.y + (y + 0.5) * zoom);
    h.event(egui::Event::ModifiersChanged(Modifiers::SHIFT));
    h.hover_at(at(0.0, 60.0));
    h.step();
    h.event(egui::Event::PointerButton {
        pos: at(0.0, 60.0),
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: Modifiers::SHIFT,
    });
    h.step();
    h.hover_at(at(20.0, 60.0));
    h.step();
    h.hover_at(at(40.0, 60.0));
    h.step();
    h.event(egui::Event::PointerButton {
        pos: at(40.0, 60.0),
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::SHIFT,
    });
    h.step();
    h.event(egui::Event::ModifiersChanged(Modifiers::NONE));
    h.step();
    let row: Vec<u8> = (0..=40)
        .map(|x| h.state().canvas().layer(0).get_pixel(x, 60).0[0])
        .collect();
    assert!(
        row.iter().all(|v| *v == 255),
        "straight line not drawn: {row:?}"
    );
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(
        h.state().canvas().label(1).unwrap(),
        drawn,
        "the line is one undo step"
    );

    h.get_by_label("Clear").click();
    h.step();
    assert!(h.state().canvas().is_empty());
}

#[test]
fn run_streams_into_the_scrubber_and_scrubbing_changes_the_view() {
    let mut h = ready_app(false);
    h.get_by_label("Run").click();
    h.step();
    assert!(h.state().is_running());
    let mut seen = Vec::new();
    step_until(&mut h, "the run", |a| {
        seen.push(a.frames().len());
        !a.is_running()
    });
    let app = h.state();
    assert!(app.last_error().is_none(), "{:?}", app.last_error());
    let frames = app.frames();
    assert_eq!(frames.len(), frames[0].total, "not every step arrived");
    // The scrubber filled in live: some frame showed a partial run.
    assert!(
        seen.iter().any(|n| *n > 0 && *n < frames.len()),
        "no partial state seen: {seen:?}"
    );
    assert_eq!(frames.last().unwrap().kind, StepKind::Final);
    assert!(app.final_image().is_some());
    let t = app.timings();
    assert!(t.first_step.is_some() && t.final_image.is_some());
    eprintln!(
        "UI test timings: first step {:?}, final {:?}, frame time {:?}",
        t.first_step,
        t.final_image,
        t.frame_time_summary()
    );
    // Following the run: the last step is shown.
    assert_eq!(app.selected_step(), frames.len() - 1);

    // Scrub with the arrow keys: the shown step changes.
    let last = h.state().shown_frame().unwrap().clone();
    h.key_press(Key::ArrowLeft);
    h.step();
    assert_eq!(h.state().selected_step(), frames_len(&h) - 2);
    assert_ne!(h.state().shown_frame().unwrap().kind, last.kind);
    h.key_press(Key::ArrowRight);
    h.step();
    assert_eq!(h.state().selected_step(), frames_len(&h) - 1);
    // Scrubbing back to the initial warp shows a different image than the output.
    h.state_mut().select_step(0);
    h.step();
    let first = h.state().shown_frame().unwrap().clone();
    assert_eq!(first.kind, StepKind::InitialWarp);
    assert_ne!(
        first.pred_x0.as_ref().unwrap(),
        last.image.as_ref().unwrap(),
        "the view did not change"
    );

    // Correspondence probe: a heat map over the exemplar's latent grid, peaked somewhere.
    h.state_mut().set_probe(Some((3, 4)));
    step_until(&mut h, "the probe row", |a| a.probe_heat().is_some());
    let heat = h.state().probe_heat().unwrap();
    let l = h.state().frames()[0].latent_size;
    assert_eq!(heat.len(), l * l);
    assert!(heat.iter().any(|v| (*v - 1.0).abs() < 1e-6));

    // Export, then restore the parameters by "dropping" the PNG on another app.
    let dir = std::env::temp_dir().join(format!("midm-ui-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("result.png");
    h.state_mut().params.seed = 4242;
    h.state_mut().export_png(&out).unwrap();
    let text = midm::image::read_png_text(&out).unwrap();
    for key in [
        "midm:params",
        "midm:seed",
        "midm:model_hash",
        "midm:condition",
        "midm:exemplar",
    ] {
        assert!(
            midm::params::text_value(&text, key).is_some(),
            "{key} missing"
        );
    }
    let sheet = dir.join("sheet.png");
    h.state_mut().export_sheet(&sheet).unwrap();
    // The sheet waits for the exact decodes of the streamed (previewed) steps.
    step_until(&mut h, "the steps sheet", |a| !a.sheet_pending());
    let sheet_img = image::open(&sheet).unwrap();
    assert!(sheet_img.width() > sheet_img.height());
    let mut other = fresh_app();
    assert_ne!(other.params.seed, 4242);
    assert!(other.restore_from_png(&out));
    assert_eq!(other.params.seed, 4242);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_mode_runs_on_each_stroke_and_on_a_pause_and_the_newest_run_wins() {
    let mut app = fresh_app();
    app.install_model(fixture_model(), common::parity_dir());
    app.set_exemplar(exemplar(), "gradient".into());
    app.params.refine = true; // a long run, so that the next stroke finds it in flight
    let mut h = harness(app);
    step_until(&mut h, "the model", |a| a.model_info().is_some());
    assert!(
        h.state().live(),
        "live mode is on by default for a small model"
    );
    for _ in 0..5 {
        h.step();
    }
    assert_eq!(h.state().run_generation(), None, "a run on an empty canvas");
    // The end of a stroke starts a run.
    stroke(&mut h, (10.0, 10.0), (50.0, 40.0));
    let first = h
        .state()
        .run_generation()
        .expect("the stroke started no run");
    assert!(h.state().is_running());
    step_until(&mut h, "the first run's first step", |a| {
        !a.frames().is_empty()
    });
    // The next stroke cancels it and starts another, which runs to the final image.
    stroke(&mut h, (5.0, 55.0), (40.0, 55.0));
    let second = h.state().run_generation().unwrap();
    assert!(second > first);
    step_until(&mut h, "the second run", |a| a.final_image().is_some());
    assert!(!h.state().is_running());
    assert_eq!(h.state().run_generation(), Some(second));
    assert!(h
        .state()
        .frames()
        .iter()
        .all(|f| f.total == h.state().frames()[0].total));
    assert!(
        h.state().last_error().is_none(),
        "{:?}",
        h.state().messages()
    );
    // Nothing changed: no new run.
    for _ in 0..20 {
        h.step();
    }
    assert_eq!(h.state().run_generation(), Some(second));

    // A pause with the pen down starts a run before the stroke ends.
    let rect = h.state().canvas_rect().unwrap();
    let zoom = rect.width() / h.state().canvas().size() as f32;
    let at = |x: f32, y: f32| Pos2::new(rect.min.x + x * zoom, rect.min.y + y * zoom);
    h.hover_at(at(30.0, 5.0));
    h.step();
    h.drag_at(at(30.0, 5.0));
    h.step();
    h.hover_at(at(30.0, 25.0));
    h.step();
    assert_eq!(
        h.state().run_generation(),
        Some(second),
        "ran while the pen moved"
    );
    std::thread::sleep(Duration::from_millis(200));
    h.step();
    let third = h.state().run_generation().unwrap();
    assert!(third > second, "no run after a pause while drawing");
    h.drop_at(at(30.0, 25.0));
    h.step();
    // Turning it off: a stroke starts nothing.
    h.state_mut().set_live(false);
    step_until(&mut h, "the third run", |a| !a.is_running());
    let last = h.state().run_generation();
    stroke(&mut h, (50.0, 5.0), (60.0, 20.0));
    assert_eq!(h.state().run_generation(), last);
}

fn frames_len(h: &Harness<'static, MidmApp>) -> usize {
    h.state().frames().len()
}

#[test]
fn cancel_stops_the_run() {
    let mut h = ready_app(true);
    h.get_by_label("Run").click();
    step_until(&mut h, "the first step", |a| !a.frames().is_empty());
    h.get_by_label("Cancel").click();
    // The frame that handles the click first takes the steps that came before it.
    h.step();
    let at_cancel = h.state().frames().len();
    step_until(&mut h, "the cancel", |a| !a.is_running());
    let app = h.state();
    let total = app.frames()[0].total;
    // After it, at most the step in flight (the sampler checks before every UNet pass) and one
    // the fast fixture model may have sent between that frame's poll and its click.
    assert!(
        app.frames().len() <= at_cancel + 2,
        "{} steps after cancel",
        app.frames().len() - at_cancel
    );
    assert!(app.frames().len() < total);
    assert!(app.final_image().is_none());
    assert!(app.messages().iter().any(|m| m.text.contains("cancelled")));
}

#[test]
fn an_edit_cancels_the_run_in_flight() {
    let mut h = ready_app(true);
    h.get_by_label("Run").click();
    step_until(&mut h, "the first step", |a| !a.frames().is_empty());
    stroke(&mut h, (2.0, 60.0), (20.0, 60.0));
    step_until(&mut h, "the cancel", |a| !a.is_running());
    assert!(h.state().final_image().is_none());
}

#[test]
fn a_failing_model_load_shows_an_error_and_keeps_the_old_model() {
    let mut h = ready_app(false);
    let before = h.state().model_info().cloned().unwrap();
    h.state_mut().load_model("/nonexistent/midm-model");
    step_until(&mut h, "the failed load", |a| !a.is_loading());
    let app = h.state();
    let err = app.last_error().expect("an error message");
    assert!(err.contains("/nonexistent/midm-model"), "{err}");
    assert_eq!(app.model_info(), Some(&before));
    // And it still runs.
    h.get_by_label("Run").click();
    h.step();
    assert!(h.state().is_running());
    step_until(&mut h, "the run", |a| !a.is_running());
    assert!(
        h.state().final_image().is_some(),
        "{:?}",
        h.state().last_error()
    );
}

#[test]
fn closing_loses_no_drawing() {
    let mut h = harness(fresh_app());
    h.step();
    stroke(&mut h, (3.0, 3.0), (40.0, 20.0));
    h.state_mut().set_exemplar(exemplar(), "gradient".into());
    h.state_mut().params.seed = 777;
    let mut storage = MemStorage::default();
    h.state().save_to(&mut storage);
    let drawn = h.state().canvas().label(1).unwrap();
    let ctx = egui::Context::default();
    let restored = MidmApp::new(&ctx, AppArgs::default(), Some(&storage));
    assert_eq!(restored.canvas().label(1).unwrap(), drawn);
    assert!(restored.has_exemplar());
    assert_eq!(restored.params.seed, 777);
}

#[test]
fn a_first_start_opens_the_sample_pair() {
    let ctx = egui::Context::default();
    let app = MidmApp::new(&ctx, AppArgs::default(), None);
    assert!(
        !app.canvas().is_empty(),
        "the sample sketch is on the canvas"
    );
    assert!(app.has_exemplar(), "the sample exemplar is loaded");
    assert!(app.open_errors().is_empty(), "{:?}", app.open_errors());
    // A session of one's own wins over the sample (`closing_loses_no_drawing` restores one).
    let fresh = MidmApp::new(
        &ctx,
        AppArgs {
            fresh: true,
            ..Default::default()
        },
        None,
    );
    assert!(fresh.canvas().is_empty() && !fresh.has_exemplar());
}

#[test]
fn switching_precision_reloads_the_model_and_bf16_on_the_cpu_fails_cleanly() {
    let mut h = harness(fresh_app());
    let weights = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights");
    h.state_mut().load_model(&weights);
    step_until(&mut h, "the f32 load", |a| !a.is_loading());
    assert_eq!(
        h.state().model_info().map(|m| m.precision),
        Some(Precision::F32)
    );

    // Through the combo box, as a user would.
    h.get_by_label("Precision").click();
    h.run_steps(3);
    h.get_by_label("f16").click();
    h.run_steps(3);
    step_until(&mut h, "the f16 reload", |a| {
        !a.is_loading() && a.model_info().map(|m| m.precision) == Some(Precision::F16)
    });
    assert!(h.state().last_error().is_none());

    h.get_by_label("Precision").click();
    h.run_steps(3);
    h.get_by_label("bf16").click();
    h.run_steps(3);
    step_until(&mut h, "the refused bf16 load", |a| !a.is_loading());
    let err = h.state().last_error().expect("an error message");
    assert!(err.contains("bf16 needs a CUDA device"), "{err}");
    // The f16 model stays loaded.
    assert_eq!(
        h.state().model_info().map(|m| m.precision),
        Some(Precision::F16)
    );
}

#[test]
fn a_model_of_another_size_keeps_the_canvas_on_screen_at_the_same_size() {
    let mut h = harness(fresh_app());
    h.step();
    let before = h.state().canvas_rect().expect("canvas drawn");
    assert_eq!(h.state().canvas().size(), 64);
    // The shipped model is 128x128: the canvas doubles its pixels, the zoom halves.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights");
    let model = midm::load_model(&root, &candle_core::Device::Cpu).expect("the shipped model");
    h.state_mut().install_model(model, root);
    step_until(&mut h, "the model", |a| a.model_info().is_some());
    h.step();
    assert_eq!(h.state().canvas().size(), 128);
    let after = h.state().canvas_rect().expect("canvas drawn");
    assert_eq!((before.width(), after.width()), (256.0, 256.0));
}

#[test]
fn following_a_run_shows_previews_and_decodes_a_step_only_when_one_is_picked() {
    let mut h = ready_app(true);
    h.get_by_label("Run").click();
    h.step();
    step_until(&mut h, "the run", |a| !a.is_running());
    // Give the worker time to serve any decode that was queued behind the run.
    for _ in 0..50 {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    let frames = h.state().frames();
    assert!(
        frames.iter().all(|f| f.pred_x0.is_some()),
        "a step without preview"
    );
    let previews: Vec<usize> = (0..frames.len()).filter(|&i| !frames[i].exact).collect();
    assert_eq!(
        previews.len(),
        frames.len() - 1,
        "a step passed while following was decoded exactly"
    );
    // Picking one decodes it exactly on demand, replacing the preview.
    let i = previews[previews.len() / 2];
    let preview = frames[i].pred_x0.clone();
    h.state_mut().select_step(i);
    step_until(&mut h, "the picked step's decode", |a| a.frames()[i].exact);
    assert_ne!(h.state().frames()[i].pred_x0, preview);
}

#[test]
fn ctrl_s_saves_to_the_outputs_folder_numbered_and_restorable() {
    let mut h = ready_app(false);
    let out = tempfile::tempdir().unwrap();
    h.state_mut().set_outputs_root(out.path().to_path_buf());
    h.get_by_label("Run").click();
    h.step();
    step_until(&mut h, "the run", |a| !a.is_running());
    assert!(h.state().final_image().is_some());
    for _ in 0..2 {
        h.key_press_modifiers(Modifiers::COMMAND, Key::S);
        h.step();
    }
    // one dated folder, two numbered files that never overwrite each other
    let days: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().collect();
    assert_eq!(days.len(), 1);
    let mut files: Vec<String> = std::fs::read_dir(days[0].path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let seed = h.state().params.seed;
    assert_eq!(
        files,
        [
            format!("00001-seed{seed}.png"),
            format!("00002-seed{seed}.png")
        ]
    );
    // the status line names the file, and the file carries the parameters
    let last = h.state().messages().last().unwrap();
    assert!(
        !last.error && last.text.contains("00002-seed"),
        "{}",
        last.text
    );
    let text = midm::image::read_png_text(&days[0].path().join(&files[0])).unwrap();
    assert_eq!(
        midm::params::text_value(&text, midm::params::KEY_SEED),
        Some(seed.to_string().as_str())
    );

    // Export PNG... on a desktop without a dialog backend: the window says so (an error that
    // stays) and the image goes to the outputs folder all the same.
    h.state_mut().export_dialog_unavailable();
    h.step();
    let errors = h.state().open_errors().join("\n");
    assert!(errors.contains("No file dialog"), "{errors}");
    assert!(errors.contains("00003-seed"), "{errors}");
    assert!(days[0]
        .path()
        .join(format!("00003-seed{seed}.png"))
        .is_file());
}

#[test]
fn errors_stay_in_sight_and_run_does_not_start_on_stale_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png at all").unwrap();
    let missing = dir.path().join("missing.png");
    let ctx = egui::Context::default();
    let args = AppArgs {
        fresh: true,
        run: true,
        condition: Some(broken),
        exemplar: Some(missing),
        ..Default::default()
    };
    let mut app = MidmApp::new(&ctx, args, None);
    app.install_model(fixture_model(), common::parity_dir());
    let mut h = harness(app);
    step_until(&mut h, "the model", |a| a.model_info().is_some());
    for _ in 0..10 {
        h.step();
    }
    // The model's "Loaded ..." info did not replace the errors, and nothing ran.
    assert_eq!(h.state().run_generation(), None, "ran on stale inputs");
    let open = h.state().open_errors().len();
    assert_eq!(open, 3, "{:?}", h.state().open_errors());
    assert!(h
        .query_by_label_contains("Could not load the sketch")
        .is_some());
    assert!(h
        .query_by_label_contains("Could not load the exemplar")
        .is_some());
    assert!(h.query_by_label_contains("Loaded").is_some());
    // Dismissing one leaves the others.
    h.get_all_by_label("Dismiss").next().unwrap().click();
    h.step();
    h.step();
    assert_eq!(h.state().open_errors().len(), 2);
    assert!(h
        .query_by_label_contains("Could not load the sketch")
        .is_none());
    assert!(h
        .query_by_label_contains("Could not load the exemplar")
        .is_some());
}

/// At 1280x800 and 1920x1080 every panel of a finished run lies inside the window (the
/// central area scrolls vertically only, so anything wider would be cut off).
#[test]
fn the_layout_fits_1280x800_and_1920x1080() {
    for (w, h_px) in [(1280.0, 800.0), (1920.0, 1080.0)] {
        let mut app = fresh_app();
        app.set_live(false);
        app.install_model(fixture_model(), common::parity_dir());
        app.set_exemplar(exemplar(), "gradient".into());
        app.params.refine = false;
        let mut h = Harness::builder()
            .with_size(Vec2::new(w, h_px))
            .build_ui_state(|ui, app: &mut MidmApp| app.ui(ui), app);
        step_until(&mut h, "the model", |a| a.model_info().is_some());
        stroke(&mut h, (10.0, 10.0), (50.0, 40.0));
        h.get_by_label("Run").click();
        h.step();
        step_until(&mut h, "the run", |a| a.final_image().is_some());
        h.step();
        // The central panel ends where the gallery panel begins.
        let right = h.get_by_label("Gallery").rect().min.x;
        for label in [
            "Exemplar",
            "Steps",
            "output",
            "M over r~n",
            "match in exemplar",
            "gradient",
        ] {
            let r = h.get_by_label(label).rect();
            assert!(
                r.max.x <= right,
                "{label} at {r:?} is under the gallery (from x = {right})"
            );
        }
        for label in [
            "Run",
            "Live",
            "Condition",
            "Exemplar",
            "Steps",
            "output",
            "M over r~n",
            "match in exemplar",
            "gradient",
        ] {
            let r = h.get_by_label(label).rect();
            assert!(
                r.max.x <= w && r.max.y <= h_px && r.min.x >= 0.0,
                "{label} at {r:?} is outside the {w}x{h_px} window"
            );
        }
        let canvas = h.state().canvas_rect().unwrap();
        assert!(
            canvas.max.x <= w && canvas.max.y <= h_px,
            "canvas at {canvas:?}"
        );
    }
}
