//! The worker's events, applied to the editor's panels.
use std::time::Duration;

use super::app::MidmApp;
use super::panels::draw::DrawTarget;
use crate::image::CannyParams;
use crate::worker::{ModelInfo, WorkerEvent};

impl MidmApp {
    pub(super) fn poll_worker(&mut self, ctx: &egui::Context) {
        if self.worker.ensure_alive() {
            self.error("The worker stopped and was restarted.");
        }
        while let Some(event) = self.worker.try_recv() {
            let run = self.steps.generation;
            let current = |g: u64| Some(g) == run;
            match event {
                WorkerEvent::ModelLoaded(info) => self.on_model_loaded(info),
                WorkerEvent::LoadFailed { path, error } => {
                    self.model.loading = None;
                    self.pending_run = false;
                    let keep = match &self.model.info {
                        Some(m) => format!(" (still using {})", m.path.display()),
                        None => String::new(),
                    };
                    self.error(format!("Could not load {}: {error}{keep}", path.display()));
                }
                WorkerEvent::Started { .. } => {}
                WorkerEvent::Step { generation, frame } if current(generation) => {
                    self.steps.push(ctx, *frame);
                }
                WorkerEvent::Decoded {
                    generation,
                    index,
                    result,
                } if current(generation) && index < self.steps.frames.len() => {
                    match result {
                        Ok(decoded) => self.steps.on_decoded(ctx, index, decoded),
                        Err(e) => {
                            self.steps.pending_decodes.remove(&index);
                            self.error(format!("Could not decode step {index}: {e}"));
                        }
                    }
                    self.try_write_sheet();
                }
                WorkerEvent::Probe {
                    generation,
                    index,
                    pixel,
                    heat,
                } if current(generation) => self.steps.on_probe(index, pixel, heat),
                WorkerEvent::Finished {
                    generation,
                    elapsed,
                } if current(generation) => self.on_finished(elapsed),
                WorkerEvent::Cancelled { generation } if current(generation) => {
                    self.steps.running = false;
                    // In live mode every edit cancels a run: no news worth a message.
                    if !self.live() {
                        self.info("Run cancelled.");
                    }
                }
                WorkerEvent::Failed { generation, error }
                    if current(generation) || !self.steps.running =>
                {
                    self.steps.running = false;
                    self.error(format!("Run failed: {error}"));
                }
                WorkerEvent::Restarted => {
                    self.steps.running = false;
                    if let Some(m) = self.model.info.take() {
                        self.load_model(m.path);
                    }
                }
                e @ (WorkerEvent::Ranked { .. }
                | WorkerEvent::RankDone { .. }
                | WorkerEvent::Swept { .. }
                | WorkerEvent::SweepDone { .. }) => self.gallery.on_worker_event(e),
                // Events of a superseded run.
                WorkerEvent::Step { .. }
                | WorkerEvent::Decoded { .. }
                | WorkerEvent::Probe { .. }
                | WorkerEvent::Finished { .. }
                | WorkerEvent::Cancelled { .. }
                | WorkerEvent::Failed { .. } => {}
            }
        }
    }

    fn on_model_loaded(&mut self, info: ModelInfo) {
        // Same on-screen size for every model, so the step panels stay in view.
        self.draw.resize(info.image_size as u32, true);
        if info.label_nc == 1 {
            self.draw.layer = 0;
            self.draw.target = DrawTarget::Condition;
        }
        // Edge settings follow the model's training data, unless the user tuned them.
        let layout_changed = self
            .model
            .info
            .as_ref()
            .is_none_or(|m| m.label_nc != info.label_nc);
        let presets = [CannyParams::edge_model(), CannyParams::celeba()];
        if layout_changed && presets.contains(&self.params.canny) {
            self.params.canny = CannyParams::for_label_nc(info.label_nc);
            self.draw.brush_size = if info.label_nc == 1 { 3.0 } else { 2.0 };
        }
        self.info(format!(
            "Loaded {} ({}x{}, {} condition channel{}, {}, hash {}) in {:.2} s",
            info.path.display(),
            info.image_size,
            info.image_size,
            info.label_nc,
            if info.label_nc == 1 { "" } else { "s" },
            info.precision,
            info.hash,
            info.load_time.as_secs_f32()
        ));
        self.model.path_text = info.path.display().to_string();
        self.model.info = Some(info);
        self.model.loading = None;
        if self.pending_run {
            self.pending_run = false;
            self.request_run();
        }
    }

    fn on_finished(&mut self, elapsed: Duration) {
        self.steps.finish();
        let t = &self.steps.timings;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let frames = match t.frame_time_summary() {
            Some((mean, max)) => format!(
                ", UI frame time {:.2} ms mean / {:.2} ms max over {} frames",
                ms(mean),
                ms(max),
                t.frame_times.len()
            ),
            None => String::new(),
        };
        let first_parts = match (t.first_step, t.first_step_parts) {
            (Some(first), Some((sampler, convert, delivery))) => format!(
                " (worker queue and inputs {:.0} + sampler {:.0} + display conversion {:.0} + delivery {:.0} ms)",
                ms(first.saturating_sub(sampler + convert + delivery)),
                ms(sampler),
                ms(convert),
                ms(delivery)
            ),
            _ => String::new(),
        };
        let text = format!(
            "Run done: first step after {:.0} ms{first_parts}, final image after {:.0} ms (worker {:.0} ms, of which {:.0} ms making step previews){frames}",
            ms(t.first_step.unwrap_or_default()),
            ms(t.final_image.unwrap_or_default()),
            ms(elapsed),
            ms(t.convert_total),
        );
        self.info(text);
    }
}
