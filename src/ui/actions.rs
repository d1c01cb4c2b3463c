//! What the editor does on the user's behalf: load models and inputs, start and cancel runs,
//! export and restore results, and the file dialogs.
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbaImage};

use super::app::{repaint, DialogOutcome, MidmApp};
use super::export;
use super::file_name;
use super::panels::Dialog;
use crate::image::canny_edges;
use crate::params::{params_from_png_text, Params, ResultInfo};
use crate::worker::{LabelInput, RunRequest};

impl MidmApp {
    /// Load a model on the worker; the current one stays until it succeeds.
    pub fn load_model(&mut self, path: impl Into<PathBuf>) {
        let path = path.into();
        self.model.path_text = path.display().to_string();
        self.model.loading = Some(path.clone());
        self.worker
            .load_with(path, self.params.device, self.params.precision);
    }

    /// Hand an already built model to the worker (tests build one from fixture weights).
    pub fn install_model(&mut self, model: crate::MidmModel, path: impl Into<PathBuf>) {
        let path = path.into();
        self.model.loading = Some(path.clone());
        self.worker.install(model, path, self.params.device);
    }

    pub fn set_exemplar(&mut self, img: DynamicImage, name: String) {
        self.exemplar.set(img, name);
    }

    /// Returns false (and says why in the window) when the image does not load.
    pub fn load_exemplar(&mut self, path: &Path) -> bool {
        match image::open(path) {
            Ok(img) => {
                self.set_exemplar(img, file_name(path));
                true
            }
            Err(e) => {
                let shown = path.display();
                self.error(format!("Could not load the exemplar {shown}: {e}"));
                false
            }
        }
    }

    /// A sketch or edge map as the condition's edge layer (binarised by
    /// [`crate::image::edge_map`], as the CLI reads it).
    /// Returns false (and says why in the window) when the image does not load.
    pub fn load_edge_map(&mut self, path: &Path) -> bool {
        match image::open(path) {
            Ok(img) => {
                self.draw.canvas.set_edges_from_image(&img);
                self.draw.condition_name = Some(file_name(path));
                true
            }
            Err(e) => {
                self.error(format!("Could not load the sketch {}: {e}", path.display()));
                false
            }
        }
    }

    /// Canny edges of a photo as the condition's edge layer, computed on a helper thread (see
    /// [`Self::poll_photo_edges`]).
    fn edges_from_photo(&mut self, path: &Path) {
        let (tx, size, canny) = (
            self.photo_edges.0.clone(),
            self.draw.canvas.size(),
            self.params.canny,
        );
        let (cell, path) = (self.ctx_cell.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            let result = match image::open(&path) {
                Ok(img) => Ok((canny_edges(&img, size, canny), file_name(&path))),
                Err(e) => Err(format!("{}: {e}", path.display())),
            };
            let _ = tx.send(result);
            repaint(&cell);
        });
    }

    pub(super) fn poll_photo_edges(&mut self) {
        while let Ok(result) = self.photo_edges.1.try_recv() {
            match result {
                Ok((edges, name)) => {
                    let edges = image::imageops::resize(
                        &edges,
                        self.draw.canvas.size(),
                        self.draw.canvas.size(),
                        image::imageops::FilterType::Nearest,
                    );
                    self.draw.canvas.set_layer(0, edges);
                    self.draw.condition_name = Some(format!("edges of {name}"));
                }
                Err(e) => self.error(e),
            }
        }
    }

    pub(super) fn paste_exemplar(&mut self) {
        let result = arboard::Clipboard::new().and_then(|mut c| c.get_image());
        let data = match result {
            Ok(data) => data,
            Err(e) => return self.error(format!("no image to paste: {e}")),
        };
        let (w, h) = (data.width as u32, data.height as u32);
        match RgbaImage::from_raw(w, h, data.bytes.into_owned()) {
            Some(img) => self.set_exemplar(DynamicImage::ImageRgba8(img), "pasted image".into()),
            None => self.error("the clipboard image has an unexpected size"),
        }
    }

    /// Start a run with the current canvas, exemplar and parameters (cancels the one in flight).
    pub fn request_run(&mut self) {
        let Some(info) = self.model.info.clone() else {
            return self.error("No model is loaded.");
        };
        let Some(ex) = &self.exemplar.exemplar else {
            return self.error("Drop or open an exemplar image first.");
        };
        self.draw.resize(info.image_size as u32, false);
        // The worker builds the labels (Canny, distance transforms) off this thread.
        let (canvas, parts) = (&self.draw.canvas, &self.draw.exemplar_parts);
        let request = RunRequest {
            condition: LabelInput::Layers {
                edges: canvas.layer(0).clone(),
                parts: canvas.layers()[1..].to_vec(),
            },
            exemplar: ex.image.clone(),
            exemplar_label: LabelInput::ExemplarEdges {
                canny: self.params.canny,
                traced: parts.layer(0).clone(),
                parts: parts.layers()[1..].to_vec(),
            },
            options: self.params.sampler_options(),
            seed: self.params.seed,
        };
        if self.steps.running {
            self.log_superseded();
        }
        let generation = self.worker.run(request);
        self.steps.start(generation);
        self.inputs_seen(); // the resize above is no edit that should cancel this run
        let inputs = (self.edit_version(), self.params.clone());
        self.live.ran(inputs);
    }

    /// Live mode supersedes runs all the time: keep their figures in the log (once per run:
    /// a cancelled run counts as running until the worker confirms).
    pub(super) fn log_superseded(&mut self) {
        if std::mem::replace(&mut self.steps.superseded, true) {
            return;
        }
        let t = &self.steps.timings;
        let first = match t.first_step {
            Some(d) => format!("first step after {:.0} ms", d.as_secs_f64() * 1e3),
            None => "before its first step".into(),
        };
        let (mean, max) = t.frame_time_summary().unwrap_or_default();
        tracing::info!(
            "Run superseded: {first}, UI frame time {:.2} ms mean / {:.2} ms max over {} frames",
            mean.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            t.frame_times.len()
        );
    }

    pub fn cancel(&mut self) {
        if self.steps.running {
            self.worker.cancel();
        }
    }

    /// Apply the parameters recorded in a PNG (exported by the editor or written by the CLI).
    /// Returns false when the PNG records none.
    pub fn restore_from_png(&mut self, path: &Path) -> bool {
        let Ok(text) = crate::image::read_png_text(path) else {
            return false;
        };
        match params_from_png_text(&text) {
            None => false,
            Some(Ok(p)) => {
                // Device and precision belong to this machine, not to the image.
                let (device, precision) = (self.params.device, self.params.precision);
                self.params = Params {
                    device,
                    precision,
                    ..p
                };
                let seed = self.params.seed;
                self.info(format!(
                    "Restored the parameters of {} (seed {seed}).",
                    file_name(path)
                ));
                true
            }
            Some(Err(e)) => {
                self.error(format!("{}: unreadable parameters: {e}", path.display()));
                true
            }
        }
    }

    /// A dropped PNG that records parameters restores them; any other image is the exemplar.
    pub(super) fn handle_dropped(&mut self, path: &Path) {
        let png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !(png && self.restore_from_png(path)) {
            self.load_exemplar(path);
        }
    }

    /// PNG text chunks describing the current result.
    pub fn export_text(&self) -> Vec<(String, String)> {
        let model = self.model.info.as_ref();
        ResultInfo {
            params: &self.params,
            model_hash: model.map(|m| m.hash.as_str()),
            model: model.map(|m| m.path.as_path()),
            condition: self.draw.condition_name.as_deref().unwrap_or("drawn"),
            exemplar: self.exemplar.exemplar.as_ref().map(|e| e.name.as_str()),
        }
        .png_text()
    }

    /// Write the final image to `path` (atomically, with parameters in text chunks).
    pub fn export_png(&mut self, path: &Path) -> anyhow::Result<()> {
        let img = self
            .final_image()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no result to export yet"))?;
        export::save_png(path, &img, &self.export_text())
    }

    /// Save the result into today's folder of the outputs folder under the next free number;
    /// returns the file written.
    pub fn quick_save(&mut self) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            self.final_image().is_some(),
            "Nothing to save yet: run first."
        );
        let dir = super::outputs::dated(&self.outputs_root, std::time::SystemTime::now());
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the outputs folder {}: {e}", dir.display())
        })?;
        let path = super::outputs::next_path(&dir, self.params.seed);
        self.export_png(&path)?;
        self.info(format!("Saved {}", path.display()));
        Ok(path)
    }

    /// The outputs folder Ctrl+S saves into (its dated subfolders).
    pub fn set_outputs_root(&mut self, root: PathBuf) {
        self.outputs_root = root;
    }

    /// Test hook: the export dialog found no backend (what rfd's immediate return on a desktop
    /// without an xdg portal or zenity is taken as).
    #[doc(hidden)]
    pub fn export_dialog_unavailable(&mut self) {
        self.no_dialog(Dialog::ExportPng);
    }

    /// A file dialog that could not be shown: say so, and save to the outputs folder instead of
    /// doing nothing.
    pub(super) fn no_dialog(&mut self, which: Dialog) {
        let why = "No file dialog is available on this desktop (no xdg portal or zenity)";
        match which {
            Dialog::ExportPng => match self.quick_save() {
                Ok(p) => self.error(format!(
                    "{why}: saved to the outputs folder instead, {}",
                    p.display()
                )),
                Err(e) => self.error(format!(
                    "{why}, and saving to the outputs folder failed: {e:#}"
                )),
            },
            Dialog::ExportSheet => {
                let dir = super::outputs::dated(&self.outputs_root, std::time::SystemTime::now());
                let path = dir.join(format!("steps-seed{}.png", self.params.seed));
                match std::fs::create_dir_all(&dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| self.export_sheet(&path))
                {
                    Ok(()) => self.error(format!(
                        "{why}: writing the steps sheet to {}",
                        path.display()
                    )),
                    Err(e) => self.error(format!(
                        "{why}, and the steps sheet could not be written: {e:#}"
                    )),
                }
            }
            Dialog::GalleryFolder => {
                self.gallery.folder_text = Some(String::new());
                self.error(format!("{why}: type the folder's path in the gallery."));
            }
            _ => self.error(format!("{why}: drop the file on the window instead.")),
        }
    }

    /// Write the steps sheet of the current run to `path`, once every step is decoded (the
    /// missing decodes are requested here; the sheet is written when the last one arrives).
    pub fn export_sheet(&mut self, path: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(!self.steps.frames.is_empty(), "no steps to export yet");
        let mut actions = Vec::new();
        for i in 0..self.steps.frames.len() {
            self.steps.want_decode(i, &mut actions);
        }
        for a in actions {
            self.dispatch(a);
        }
        self.steps.sheet_pending = Some(path.to_path_buf());
        if !self.steps.pending_decodes.is_empty() {
            self.info("Decoding the remaining steps for the sheet...");
        }
        self.try_write_sheet();
        Ok(())
    }

    pub(super) fn try_write_sheet(&mut self) {
        let Some(path) = self.steps.sheet_pending.clone() else {
            return;
        };
        let undecoded = self.steps.frames.iter().any(|f| !f.exact);
        if undecoded && !self.steps.pending_decodes.is_empty() {
            return; // still decoding
        }
        self.steps.sheet_pending = None;
        let cell = self.model_size().max(64);
        let sheet = export::steps_sheet(&self.steps.frames, cell);
        match export::save_png(&path, &sheet, &self.export_text()) {
            Ok(()) => self.info(format!("Saved the steps sheet {}", path.display())),
            Err(e) => self.error(format!("{e:#}")),
        }
    }

    pub(super) fn open_dialog(&self, which: Dialog) {
        let tx = self.dialogs.0.clone();
        let cell = self.ctx_cell.clone();
        let images = ["png", "jpg", "jpeg", "bmp", "webp"];
        std::thread::spawn(move || {
            let shown = std::time::Instant::now();
            let d = rfd::FileDialog::new();
            let path = match which {
                Dialog::OpenExemplar | Dialog::OpenEdgeMap | Dialog::EdgesFromPhoto => {
                    d.add_filter("images", &images).pick_file()
                }
                Dialog::OpenModelFolder | Dialog::GalleryFolder => d.pick_folder(),
                Dialog::OpenModelFile => d
                    .add_filter("checkpoints", &["safetensors", "ckpt", "pth"])
                    .pick_file(),
                Dialog::ExportPng => d
                    .add_filter("PNG", &["png"])
                    .set_file_name("midm.png")
                    .save_file(),
                Dialog::ExportSheet => d
                    .add_filter("PNG", &["png"])
                    .set_file_name("midm-steps.png")
                    .save_file(),
            };
            // rfd answers "no path" both for a cancel and for a desktop without a dialog backend
            // (it logs the error instead); no person cancels within a quarter of a second.
            let outcome = match path {
                Some(p) => DialogOutcome::Picked(p),
                None if shown.elapsed() < std::time::Duration::from_millis(250) => {
                    DialogOutcome::Unavailable
                }
                None => DialogOutcome::Cancelled,
            };
            let _ = tx.send((which, outcome));
            repaint(&cell);
        });
    }

    pub(super) fn handle_dialog(&mut self, which: Dialog, path: PathBuf) {
        match which {
            Dialog::OpenExemplar => {
                self.load_exemplar(&path);
            }
            Dialog::OpenEdgeMap => {
                self.load_edge_map(&path);
            }
            Dialog::EdgesFromPhoto => self.edges_from_photo(&path),
            Dialog::OpenModelFolder | Dialog::OpenModelFile => self.load_model(path),
            Dialog::GalleryFolder => self.gallery.set_folder(Some(path)),
            Dialog::ExportPng => match self.export_png(&path) {
                Ok(()) => self.info(format!("Saved {}", path.display())),
                Err(e) => self.error(format!("{e:#}")),
            },
            Dialog::ExportSheet => {
                if let Err(e) = self.export_sheet(&path) {
                    self.error(format!("{e:#}"));
                }
            }
        }
    }
}
