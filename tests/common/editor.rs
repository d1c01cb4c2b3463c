//! Shared helpers of the editor tests (egui_kittest): a fresh app, a harness, the fixture
//! model, stepping until a condition holds, and a stroke dragged in small steps.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use egui::{Pos2, Vec2};
use egui_kittest::Harness;
use midm::ui::{AppArgs, MidmApp};
use midm::MidmModel;

pub const TIMEOUT: Duration = Duration::from_secs(300);

/// An app with no persisted session, default model or sample pair.
pub fn fresh_app() -> MidmApp {
    let ctx = egui::Context::default();
    MidmApp::new(
        &ctx,
        AppArgs {
            fresh: true,
            ..Default::default()
        },
        None,
    )
}

pub fn harness(app: MidmApp) -> Harness<'static, MidmApp> {
    Harness::builder()
        .with_size(Vec2::new(1400.0, 1000.0))
        .build_ui_state(|ui, app: &mut MidmApp| app.ui(ui), app)
}

pub fn fixture_model() -> MidmModel {
    MidmModel::new(super::fixture_vb(), &super::fixture_config())
        .expect("building the fixture model")
}

/// Step the UI until `cond` holds (sleeping a little so the worker can progress).
pub fn step_until(
    h: &mut Harness<'static, MidmApp>,
    what: &str,
    mut cond: impl FnMut(&MidmApp) -> bool,
) {
    let start = Instant::now();
    while !cond(h.state()) {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Drag on the canvas from canvas pixel `a` to `b`.
pub fn stroke(h: &mut Harness<'static, MidmApp>, a: (f32, f32), b: (f32, f32)) {
    let rect = h.state().canvas_rect().expect("canvas drawn");
    let zoom = rect.width() / h.state().canvas().size() as f32;
    let at = |p: (f32, f32)| {
        Pos2::new(
            rect.min.x + (p.0 + 0.5) * zoom,
            rect.min.y + (p.1 + 0.5) * zoom,
        )
    };
    h.hover_at(at(a));
    h.step();
    h.drag_at(at(a));
    h.step();
    for i in 1..=8 {
        let t = i as f32 / 8.0;
        h.hover_at(at((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)));
        h.step();
    }
    h.drop_at(at(b));
    h.step();
    h.step();
}

/// In-memory eframe storage.
#[derive(Default)]
pub struct MemStorage(pub HashMap<String, String>);

impl eframe::Storage for MemStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}
