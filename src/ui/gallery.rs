//! The app's side of the exemplar gallery ([`super::panels::gallery`]): it asks the worker to
//! rank the gallery when the sketch, the model or the gallery changed and the user paused, and
//! a clicked thumbnail becomes the exemplar.
use std::path::Path;
use std::time::Instant;

use super::app::MidmApp;
use super::panels::gallery::{GalleryView, RankKey, SweepDue, SweepKey};
use super::panels::Action;
use crate::worker::{LabelInput, RankScore};

impl MidmApp {
    /// The gallery's side panel (before the central panel in the layout).
    pub(super) fn gallery_ui(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        let ctx = ui.ctx().clone();
        let size = self.model.info.as_ref().map(|m| m.image_size as u32);
        self.gallery.poll(&ctx, size);
        self.maybe_rank(&ctx);
        self.maybe_sweep(&ctx);
        let view = GalleryView {
            has_model: self.model.info.is_some(),
            has_sketch: !self.draw.canvas.is_empty(),
            exemplar_version: self.exemplar.version,
        };
        self.gallery.show(ui, &view, actions);
    }

    fn maybe_rank(&mut self, ctx: &egui::Context) {
        let Some(info) = &self.model.info else {
            return;
        };
        let canvas = &self.draw.canvas;
        if canvas.size() != info.image_size as u32 || canvas.is_empty() {
            return;
        }
        let key = RankKey {
            sketch: self.draw.version(),
            model: format!("{} {} {}", info.path.display(), info.hash, info.precision),
            canny: self.params.canny,
            batch: self.gallery.batch(),
        };
        // A ranking waits for runs and strokes: it would only be stopped by them.
        let busy = self.steps.running
            || self.model.loading.is_some()
            || self.draw.drawing()
            || ctx.input(|i| i.pointer.any_down());
        match self.gallery.due(key.clone(), Instant::now(), busy) {
            Ok(true) => {
                let condition = LabelInput::Layers {
                    edges: canvas.layer(0).clone(),
                    parts: canvas.layers()[1..].to_vec(),
                };
                let images = self.gallery.rank_inputs();
                let ranking = self.worker.rank(condition, images, self.params.canny);
                self.gallery.ranking_started(ranking, key);
            }
            Ok(false) => {}
            Err(wait) => ctx.request_repaint_after(wait),
        }
    }

    /// "Run all": asks the worker for the entries without a result, when the editor is idle
    /// (a run stops a sweep; it resumes after); a changed sketch or parameter drops the results.
    fn maybe_sweep(&mut self, ctx: &egui::Context) {
        let Some(info) = &self.model.info else {
            return;
        };
        let canvas = &self.draw.canvas;
        if canvas.size() != info.image_size as u32 {
            return;
        }
        let options = self.params.sampler_options();
        let key = SweepKey {
            sketch: self.draw.version(),
            model: format!("{} {} {}", info.path.display(), info.hash, info.precision),
            params: format!("{:?} {options:?} {}", self.params.canny, self.params.seed),
            batch: self.gallery.batch(),
        };
        let busy = self.steps.running
            || self.model.loading.is_some()
            || self.draw.drawing()
            || ctx.input(|i| i.pointer.any_down());
        match self.gallery.sweep_due(key, busy || canvas.is_empty()) {
            SweepDue::Start(images) => {
                let condition = LabelInput::Layers {
                    edges: canvas.layer(0).clone(),
                    parts: canvas.layers()[1..].to_vec(),
                };
                let (canny, seed) = (self.params.canny, self.params.seed);
                let sweep = self.worker.sweep(condition, images, canny, options, seed);
                self.gallery.sweep_started(sweep);
            }
            SweepDue::Stale => self.worker.stop_sweep(),
            SweepDue::Nothing => {}
        }
    }

    /// A gallery thumbnail was clicked.
    pub(super) fn use_gallery_exemplar(&mut self, path: &Path) {
        self.load_exemplar(path);
        self.gallery.picked = Some((path.to_path_buf(), self.exemplar.version));
    }

    // ----- state access (used by the tests) -----

    /// The gallery's entries as shown, best first: name and score (if ranked).
    pub fn gallery_entries(&self) -> Vec<(String, Option<RankScore>)> {
        let entries = self.gallery.entries();
        let score = |i: usize| entries[i].score.as_ref().and_then(|s| s.clone().ok());
        let order = self.gallery.shown_order().into_iter();
        order.map(|i| (entries[i].name.clone(), score(i))).collect()
    }

    /// "Run all" results by entry name, in the gallery's order (`None`: not there yet).
    pub fn gallery_results(&self) -> Vec<(String, Option<Result<image::RgbaImage, String>>)> {
        let entries = self.gallery.entries();
        let order = self.gallery.shown_order().into_iter();
        order
            .map(|i| (entries[i].name.clone(), entries[i].result.clone()))
            .collect()
    }

    /// Whether "Run all" still wants results.
    pub fn gallery_sweeping(&self) -> bool {
        self.gallery.is_sweeping()
    }

    /// Whether the gallery is loading images or waiting for a ranking.
    pub fn gallery_busy(&self) -> bool {
        self.gallery.is_loading() || self.gallery.is_ranking()
    }

    /// Also show the images of `folder` in the gallery (remembered in the session).
    pub fn set_gallery_folder(&mut self, folder: Option<std::path::PathBuf>) {
        self.gallery.set_folder(folder);
    }

    pub fn gallery_folder(&self) -> Option<&Path> {
        self.gallery.folder.as_deref()
    }

    /// The name of the current exemplar (its file name when opened from a file).
    pub fn exemplar_name(&self) -> Option<&str> {
        self.exemplar.exemplar.as_ref().map(|e| e.name.as_str())
    }
}
