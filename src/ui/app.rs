//! The editor window: the panels' layout, keyboard shortcuts, and the dispatch of what the
//! panels ask for (`Action`) to the worker, the file dialogs and the disk. All model work
//! happens on the worker thread; files and runs are in `super::actions`, the worker's events
//! in `super::events`.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use egui::{Key, KeyboardShortcut, Modifiers, Rect};
use image::RgbaImage;

use super::canvas::Canvas;
use super::live::{LiveMode, LiveStep};
use super::panels::draw::{DrawPanel, DrawView};
use super::panels::exemplar::ExemplarPanel;
use super::panels::gallery::GalleryPanel;
pub use super::panels::messages::Message;
use super::panels::messages::Messages;
use super::panels::model::ModelPanel;
pub use super::panels::steps::RunTimings;
use super::panels::steps::{StepsPanel, StepsView};
use super::panels::toolbar::{self, ToolbarView};
use super::panels::{self, Action, Dialog};
use super::session::{Session, STORAGE_KEY};
use super::AppArgs;
pub use crate::params::Params;
use crate::worker::{ModelInfo, StepFrame, Urgency, WorkerHandle};

/// A file dialog's answer, sent back from its thread.
pub(super) type DialogResult = (Dialog, DialogOutcome);

/// How a file dialog ended.
pub(super) enum DialogOutcome {
    Picked(PathBuf),
    Cancelled,
    /// No dialog could be shown (no xdg portal or zenity): rfd returns at once, as for a cancel.
    Unavailable,
}
/// Edges of a photo (and its name), from their helper thread.
pub(super) type PhotoEdges = Result<(image::GrayImage, String), String>;

/// The editor.
pub struct MidmApp {
    pub(super) worker: WorkerHandle,
    /// The context the worker's repaint requests go to (the one of the latest frame).
    pub(super) ctx_cell: Arc<Mutex<Option<egui::Context>>>,
    /// The sampler parameters, shared by the parameter, model and exemplar panels.
    pub params: Params,
    pub(super) model: ModelPanel,
    pub(super) draw: DrawPanel,
    pub(super) exemplar: ExemplarPanel,
    pub(super) steps: StepsPanel,
    pub(super) gallery: GalleryPanel,
    pub(super) messages: Messages,
    pub(super) dialogs: (Sender<DialogResult>, Receiver<DialogResult>),
    pub(super) photo_edges: (Sender<PhotoEdges>, Receiver<PhotoEdges>),
    pub(super) pending_run: bool,
    pub(super) live: LiveMode,
    /// Where Ctrl+S saves (a dated folder below it): `$MIDM_OUTPUTS`, else ~/Pictures/midm.
    pub(super) outputs_root: PathBuf,
    /// The outputs folder the user set in the editor (remembered).
    pub(super) outputs_setting: Option<PathBuf>,
    outputs_panel: super::panels::outputs::OutputsPanel,
    last_edit_version: (u64, u64, u64),
    last_frame_ms: f32,
}

/// A run's streamed steps repaint at most once per gap; the steps between two paints are shown
/// together by the later one. A run's first step, its end and every other event paint at once.
/// On a software renderer (lavapipe) every frame is CPU taken from the sampler: a 1280x800
/// frame cost 25-37 ms of llvmpipe CPU, and with a 150 ms gap the window took ~0.85 CPU-s per
/// run (llvmpipe, UI thread, X server) beside the sampler's ~2.2, so the final image came at
/// 1.15-1.4x `midm bench`'s time. With 300 ms: 7-9 frames a run instead of 12-15, and 0.96-1.10x
/// (model v1, cat pair, 2-core AMD EPYC, 2026-12-01; against a bench that still ran candle's
/// element-wise pool, about 20 % slower than today's: see docs/performance.md).
pub(crate) fn stream_repaint_gap(software_renderer: bool) -> Duration {
    Duration::from_millis(if software_renderer { 300 } else { 150 })
}

/// Paces the worker's repaint requests (see [`stream_repaint_gap`]).
struct RepaintPacer {
    /// When the latest paint was asked for (now, or at the end of a gap).
    slot: Mutex<Option<Instant>>,
    gap: Duration,
}

impl RepaintPacer {
    fn new(gap: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            gap,
        }
    }

    fn on_event(&self, ctx: &egui::Context, urgency: Urgency) {
        let now = Instant::now();
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let at = paint_at(urgency, *slot, now, self.gap);
        *slot = Some(at);
        if urgency == Urgency::Now {
            ctx.request_repaint();
        } else {
            // Even "now" as a delay: egui answers a zero-delay request with two passes (the
            // second to let layout settle), and a step needs only one.
            ctx.request_repaint_after((at - now).max(Duration::from_millis(1)));
        }
    }
}

/// When to paint for an event at `now`, given the latest paint asked for (`slot`).
fn paint_at(urgency: Urgency, slot: Option<Instant>, now: Instant, gap: Duration) -> Instant {
    match (urgency, slot) {
        (Urgency::Now, _) => now,
        // A paint is already due then, and will show this step too. Asked again, because a
        // paint from another cause in between makes eframe forget a deferred one.
        (Urgency::Stream, Some(t)) if t > now => t,
        (Urgency::Stream, Some(t)) if now < t + gap => t + gap,
        (Urgency::Stream, _) => now,
    }
}

pub(super) fn repaint(cell: &Mutex<Option<egui::Context>>) {
    if let Some(ctx) = cell.lock().ok().and_then(|c| c.clone()) {
        ctx.request_repaint();
    }
}

impl MidmApp {
    /// Build the editor; `storage` restores the previous session unless `args.fresh`.
    pub fn new(ctx: &egui::Context, args: AppArgs, storage: Option<&dyn eframe::Storage>) -> Self {
        let ctx_cell = Arc::new(Mutex::new(Some(ctx.clone())));
        let cell = ctx_cell.clone();
        let pacer = RepaintPacer::new(stream_repaint_gap(args.software_renderer));
        let threads = crate::worker::editor_sampler_threads();
        tracing::info!("sampler on {threads} thread(s)");
        let worker = WorkerHandle::spawn_with(Some(threads), move |urgency| {
            if let Some(ctx) = cell.lock().ok().and_then(|c| c.clone()) {
                pacer.on_event(&ctx, urgency);
            }
        });
        let session: Session = match (args.fresh, storage) {
            (false, Some(s)) => eframe::get_value(s, STORAGE_KEY).unwrap_or_default(),
            _ => Session::default(),
        };
        let mut app = Self {
            worker,
            ctx_cell,
            params: session.params.clone(),
            model: ModelPanel::default(),
            draw: session.draw.panel(),
            exemplar: session.exemplar.panel(),
            steps: StepsPanel::default(),
            gallery: GalleryPanel::new(session.gallery_folder.clone()),
            messages: Messages::default(),
            dialogs: unbounded(),
            photo_edges: unbounded(),
            pending_run: args.run,
            live: LiveMode::new(session.live),
            outputs_root: super::outputs::root(session.outputs.as_deref()),
            outputs_setting: session.outputs.clone(),
            outputs_panel: Default::default(),
            last_edit_version: (0, 0, 0),
            last_frame_ms: 0.0,
        };
        // Start-up inputs: command line first, then (fresh or empty session) the sample pair.
        let empty = app.draw.canvas.is_empty() && app.exemplar.exemplar.is_none();
        let sample = (!args.fresh && args.condition.is_none() && args.exemplar.is_none() && empty)
            .then(crate::params::sample_pair)
            .flatten();
        let mut given_ok = true;
        if let Some(c) = args.condition.clone().or(sample.clone().map(|s| s.0)) {
            given_ok &= app.load_edge_map(&c);
        }
        if let Some(e) = args.exemplar.clone().or(sample.map(|s| s.1)) {
            given_ok &= app.load_exemplar(&e);
        }
        if !given_ok && app.pending_run {
            // The canvas and exemplar still hold the previous session's: not what was asked for.
            app.pending_run = false;
            app.error("Not running: an input given on the command line did not load.");
        }
        let model = match args.fresh {
            true => args.model.clone(),
            false => args
                .model
                .clone()
                .or_else(crate::params::default_model)
                .or(session.model_path.clone()),
        };
        match model {
            Some(m) => app.load_model(m),
            None if !args.fresh => {
                app.info("No model found: pick a model folder in the parameters panel.")
            }
            None => {}
        }
        app.last_edit_version = app.edit_version();
        app
    }

    // ----- state access (used by the tests) -----

    pub fn canvas(&self) -> &Canvas {
        &self.draw.canvas
    }

    pub fn canvas_mut(&mut self) -> &mut Canvas {
        &mut self.draw.canvas
    }

    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model.info.as_ref()
    }

    pub fn is_loading(&self) -> bool {
        self.model.loading.is_some()
    }

    /// The generation of the latest run started, if any.
    pub fn run_generation(&self) -> Option<u64> {
        self.steps.generation
    }

    pub fn is_running(&self) -> bool {
        self.steps.running
    }

    pub fn frames(&self) -> &[StepFrame] {
        &self.steps.frames
    }

    pub fn selected_step(&self) -> usize {
        self.steps.selected
    }

    pub fn select_step(&mut self, i: usize) {
        self.steps.select(i);
    }

    /// The step frame shown in the step view.
    pub fn shown_frame(&self) -> Option<&StepFrame> {
        self.steps.frames.get(self.steps.selected)
    }

    /// The final image of the last completed run.
    pub fn final_image(&self) -> Option<&RgbaImage> {
        self.steps.final_image()
    }

    /// Where the canvas was drawn in the last frame (screen points).
    pub fn canvas_rect(&self) -> Option<Rect> {
        self.draw.rect
    }

    /// UI time of the last frame, in milliseconds.
    pub fn last_frame_ms(&self) -> f32 {
        self.last_frame_ms
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages.list
    }

    pub fn last_error(&self) -> Option<&str> {
        self.messages.last_error()
    }

    /// The errors shown in the window (not dismissed yet), oldest first.
    pub fn open_errors(&self) -> Vec<&str> {
        self.messages
            .open_errors()
            .map(|m| m.text.as_str())
            .collect()
    }

    pub fn timings(&self) -> &RunTimings {
        &self.steps.timings
    }

    pub fn has_exemplar(&self) -> bool {
        self.exemplar.exemplar.is_some()
    }

    /// The probe position (latent row, column), if the pointer is over an output image.
    pub fn probe(&self) -> Option<(usize, usize)> {
        self.steps.probe
    }

    /// Probe a latent pixel of the shown step (as hovering it does); the worker's answer
    /// arrives as [`Self::probe_heat`].
    pub fn set_probe(&mut self, p: Option<(usize, usize)>) {
        self.steps.probe = p;
        let mut actions = Vec::new();
        self.steps.want_probe(&mut actions);
        actions.into_iter().for_each(|a| self.dispatch(a));
    }

    /// The latest probe row the worker sent for the shown step (see
    /// [`crate::worker::WorkerEvent::Probe`]), normalised to max 1.
    pub fn probe_heat(&self) -> Option<Vec<f32>> {
        self.steps.probe_heat()
    }

    /// Whether a steps sheet is still waiting for decodes.
    pub fn sheet_pending(&self) -> bool {
        self.steps.sheet_pending.is_some()
    }

    pub(super) fn info(&mut self, text: impl Into<String>) {
        self.messages.info(text);
    }

    pub(super) fn error(&mut self, text: impl Into<String>) {
        self.messages.error(text);
    }

    pub(super) fn model_size(&self) -> u32 {
        self.model
            .info
            .as_ref()
            .map_or(self.draw.canvas.size(), |m| m.image_size as u32)
    }

    pub(super) fn label_nc(&self) -> usize {
        self.model.info.as_ref().map_or(1, |m| m.label_nc)
    }

    pub(super) fn edit_version(&self) -> (u64, u64, u64) {
        let (a, b) = self.draw.version();
        (a, b, self.exemplar.version)
    }

    /// Take the current inputs as seen (no edit since).
    pub(super) fn inputs_seen(&mut self) {
        self.last_edit_version = self.edit_version();
    }

    // ----- the frame -----

    /// Draw one frame (eframe's `App::ui` calls this; tests call it through egui_kittest).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        let ctx = ui.ctx().clone();
        if let Ok(mut c) = self.ctx_cell.lock() {
            if c.as_ref() != Some(&ctx) {
                *c = Some(ctx.clone());
            }
        }
        self.poll_worker(&ctx);
        self.poll_photo_edges();
        while let Ok((which, outcome)) = self.dialogs.1.try_recv() {
            match outcome {
                DialogOutcome::Picked(p) => self.handle_dialog(which, p),
                DialogOutcome::Cancelled => {}
                DialogOutcome::Unavailable => self.no_dialog(which),
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            let files = i.raw.dropped_files.iter();
            files.map(|f| f.path().to_path_buf()).collect()
        });
        for p in dropped {
            self.handle_dropped(&p);
        }
        let mut actions = Vec::new();
        self.shortcuts(ui, &mut actions);
        self.layout(ui, &mut actions);
        for a in actions {
            self.dispatch(a);
        }

        // An edit cancels the run in flight (its result would no longer match the inputs).
        let v = self.edit_version();
        if v != self.last_edit_version {
            self.last_edit_version = v;
            if self.steps.running {
                self.log_superseded();
                self.cancel();
            }
        }
        self.live_step(&ctx);
        let dt = t0.elapsed();
        self.last_frame_ms = dt.as_secs_f32() * 1e3;
        if self.steps.running {
            self.steps.timings.frame_times.push(dt);
        }
    }

    /// Whether live mode is on (the user's choice, else on for fast models).
    pub fn live(&self) -> bool {
        self.live.enabled(self.model.info.as_ref())
    }

    pub fn set_live(&mut self, on: bool) {
        self.live.choice = Some(on);
    }

    /// Live mode: start a run when the inputs changed and the pen is up or has paused.
    fn live_step(&mut self, ctx: &egui::Context) {
        let ready = self.model.info.is_some() && self.model.loading.is_none();
        if !self.live() || !ready || !self.has_exemplar() || self.draw.canvas.is_empty() {
            return;
        }
        let pen_down = ctx.input(|i| i.pointer.primary_down());
        let inputs = (self.edit_version(), self.params.clone());
        match self.live.poll(Instant::now(), inputs, pen_down) {
            LiveStep::Run => self.request_run(),
            LiveStep::WaitFor(d) => ctx.request_repaint_after(d),
            LiveStep::Idle => {}
        }
    }

    fn layout(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        egui::Panel::top("toolbar").show(ui, |ui| {
            let view = ToolbarView {
                model: self.model.info.as_ref(),
                loading: self.model.loading.as_deref(),
                has_exemplar: self.has_exemplar(),
                steps: &self.steps,
                live: self.live(),
            };
            toolbar::ui(ui, &view, actions);
        });
        egui::Panel::left("params")
            .default_size(250.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    panels::params::ui(ui, &mut self.params);
                    ui.separator();
                    self.model.ui(ui, &mut self.params, actions);
                    ui.separator();
                    let env = super::outputs::env_root().is_some();
                    self.outputs_panel.ui(ui, &self.outputs_root, env, actions);
                });
            });
        egui::Panel::bottom("messages").show(ui, |ui| self.messages.ui(ui));
        self.gallery_ui(ui, actions);
        let (label_nc, size) = (self.label_nc(), self.model_size());
        egui::CentralPanel::default().show(ui, |ui| {
            // Vertical scrolling only: the panels scale to the width the side panels leave
            // (taken here: inside the scroll area a row that overflows would widen it).
            let width = ui.available_width() - ui.spacing().scroll.bar_width;
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.set_max_width(width);
                ui.horizontal_top(|ui| {
                    let ctx = ui.ctx().clone();
                    let edges = self.exemplar.edges(&ctx, size, self.params.canny).cloned();
                    let ex = self.exemplar.exemplar.as_ref();
                    let view = DrawView {
                        label_nc,
                        frame_drawing: self.model.info.as_ref().map_or(0.0, |m| m.frame_drawing),
                        gap_closings: self
                            .model
                            .info
                            .as_ref()
                            .map_or(&[][..], |m| &m.gap_closings),
                        exemplar: ex.map(|e| (&e.image, e.name.as_str(), self.exemplar.version)),
                        exemplar_edges: edges.as_ref(),
                    };
                    let drawn = ui.vertical(|ui| self.draw.ui(ui, &view, actions));
                    ui.add_space(24.0);
                    let left = width - drawn.response.rect.width() - 24.0;
                    ui.vertical(|ui| {
                        ui.set_max_width(left - ui.spacing().item_spacing.x);
                        let canny = &mut self.params.canny;
                        self.exemplar.ui(ui, canny, (label_nc, size), actions)
                    });
                });
                ui.separator();
                let view = StepsView {
                    exemplar: self.exemplar.exemplar.as_ref().map(|e| &e.image),
                    model_size: size,
                    width,
                };
                self.steps.ui(ui, &view, actions);
            });
        });
    }

    pub(super) fn dispatch(&mut self, action: Action) {
        match action {
            Action::Run => self.request_run(),
            Action::Cancel => self.cancel(),
            Action::Dialog(d) => self.open_dialog(d),
            Action::QuickSave => {
                if let Err(e) = self.quick_save() {
                    self.error(format!("{e:#}"));
                }
            }
            Action::PasteExemplar => self.paste_exemplar(),
            Action::UseExemplar(p) => self.use_gallery_exemplar(&p),
            Action::SetLive(on) => self.set_live(on),
            Action::Sweep(true) => self.gallery.want_sweep(),
            Action::Sweep(false) => {
                self.gallery.stop_sweep();
                self.worker.stop_sweep();
            }
            Action::SetOutputs(p) => {
                self.outputs_setting = Some(p.clone());
                self.set_outputs_root(super::outputs::root(Some(&p)));
                let now = self.outputs_root.display().to_string();
                self.info(format!("Ctrl+S saves into {now} from now on."));
            }
            Action::LoadModel(p) => self.load_model(p),
            Action::ReloadModel => {
                if let Some(m) = self.model.info.clone() {
                    self.load_model(m.path);
                }
            }
            Action::Decode(i) => match self.steps.generation {
                Some(g) => self.worker.decode(g, i),
                None => {
                    self.steps.pending_decodes.remove(&i);
                }
            },
            Action::Probe(i, pixel) => {
                if let Some(g) = self.steps.generation {
                    self.worker.probe(g, i, pixel);
                }
            }
        }
    }

    fn shortcuts(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        let redo = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
        let redo_y = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
        let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
        let save = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
        let (do_redo, do_undo, do_save, paste) = ui.input_mut(|i| {
            let r = i.consume_shortcut(&redo) || i.consume_shortcut(&redo_y);
            let u = i.consume_shortcut(&undo);
            let s = i.consume_shortcut(&save);
            let p = i.events.iter().any(|e| matches!(e, egui::Event::Paste(_)));
            (r, u, s, p)
        });
        let text_focus = ui.ctx().memory(|m| m.focused().is_some());
        if do_redo {
            self.draw.active_mut().redo();
        } else if do_undo {
            self.draw.active_mut().undo();
        }
        if do_save {
            match self.final_image() {
                Some(_) => actions.push(Action::QuickSave),
                None => self.error("Nothing to export yet: run first."),
            }
        }
        if paste && !text_focus {
            actions.push(Action::PasteExemplar);
        }
        if !text_focus && !self.steps.frames.is_empty() {
            let (left, right) = ui.input(|i| {
                (
                    i.key_pressed(Key::ArrowLeft),
                    i.key_pressed(Key::ArrowRight),
                )
            });
            if left {
                self.select_step(self.steps.selected.saturating_sub(1));
            }
            if right {
                self.select_step(self.steps.selected + 1);
            }
        }
    }
}

impl eframe::App for MidmApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        MidmApp::ui(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.save_to(storage);
    }

    fn on_exit(&mut self) {
        // The model is dropped on the worker thread, not torn down under it at exit; a run
        // that does not reach a cancel point in time is left to the exit.
        if !self.worker.shutdown(Duration::from_secs(2)) {
            tracing::warn!("the worker was still running at exit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_steps_paint_once_per_gap_and_the_rest_at_once() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let gap = stream_repaint_gap(false);
        assert_eq!(gap, Duration::from_millis(150));
        // A run's first step paints at once; the next, inside the gap, at the gap's end.
        assert_eq!(paint_at(Urgency::Stream, None, ms(0), gap), ms(0));
        assert_eq!(paint_at(Urgency::Stream, Some(ms(0)), ms(60), gap), ms(150));
        // Steps before that paint ride on it.
        assert_eq!(
            paint_at(Urgency::Stream, Some(ms(150)), ms(120), gap),
            ms(150)
        );
        // A step after a quiet spell paints at once again; a run's end never waits.
        assert_eq!(
            paint_at(Urgency::Stream, Some(ms(150)), ms(400), gap),
            ms(400)
        );
        assert_eq!(paint_at(Urgency::Now, Some(ms(150)), ms(120), gap), ms(120));

        // A 2 s run streaming a step every 60 ms: one paint per gap, none lost; a software
        // renderer gets half as many.
        for (software, expected) in [(false, 15), (true, 8)] {
            let gap = stream_repaint_gap(software);
            let (mut slot, mut paints) = (None, std::collections::BTreeSet::new());
            for step in 0..34 {
                let at = paint_at(Urgency::Stream, slot, ms(step * 60), gap);
                assert!(at >= ms(step * 60) && at <= ms(step * 60) + gap);
                paints.insert(at);
                slot = Some(at);
            }
            let paints: Vec<Instant> = paints.into_iter().collect();
            assert!(paints.windows(2).all(|w| w[1] - w[0] == gap));
            assert_eq!(
                paints.len(),
                expected,
                "every {gap:?} up to the gap after the last step (1980 ms)"
            );
        }
    }
}
