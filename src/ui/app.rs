//! The editor window: canvas, exemplar slot, parameters, run controls, step scrubber,
//! correspondence probe and export. All model work happens on the worker thread.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use egui::{
    load::SizedTexture, Color32, ColorImage, Key, KeyboardShortcut, Modifiers, Pos2, Rect, Sense,
    Stroke, TextureHandle, TextureOptions, Vec2,
};
use image::{imageops::FilterType, DynamicImage, GrayImage, Rgba, RgbaImage};

use super::canvas::{Canvas, SavedCanvas, Tool};
use super::export;
use crate::device::DeviceChoice;
use crate::edges::{build_label, canny_edges, CannyParams, PARTS};
use crate::model::Precision;
use crate::sampling::midm::{RefineOptions, SamplerOptions, StepKind};
use crate::worker::{step_label, ModelInfo, RunRequest, StepFrame, WorkerEvent, WorkerHandle};

/// Command-line inputs of the editor.
#[derive(Debug, Clone, Default)]
pub struct AppArgs {
    /// Model folder or file; default: the shipped `weights/`, else the last one used.
    pub model: Option<PathBuf>,
    /// Condition edge map to start from.
    pub condition: Option<PathBuf>,
    /// Exemplar image to start from.
    pub exemplar: Option<PathBuf>,
    /// Start a run as soon as the model is loaded.
    pub run: bool,
    /// Start empty: no persisted session, no default model or sample pair (tests).
    pub fresh: bool,
}

/// User-facing sampler parameters (saved with the session and in exported PNGs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    pub seed: u64,
    pub ddim_steps: usize,
    pub interleaved_steps: usize,
    pub temperature: f64,
    pub fb_threshold: f64,
    pub use_mask: bool,
    pub refine: bool,
    pub canny: CannyParams,
    pub device: DeviceChoice,
    pub precision: Precision,
}

impl Default for Params {
    fn default() -> Self {
        let o = SamplerOptions::default();
        Self {
            seed: 42,
            ddim_steps: o.ddim_steps,
            interleaved_steps: o.interleaved_steps,
            temperature: o.temperature,
            fb_threshold: o.fb_threshold,
            use_mask: o.use_mask,
            refine: o.refine.is_some(),
            canny: CannyParams::default(),
            device: DeviceChoice::Cpu,
            precision: Precision::F32,
        }
    }
}

impl Params {
    /// The sampler options of these parameters (official values for everything not exposed).
    pub fn sampler_options(&self) -> SamplerOptions {
        let d = SamplerOptions::default();
        let interleaved = self.interleaved_steps.clamp(1, self.ddim_steps.max(1));
        SamplerOptions {
            ddim_steps: self.ddim_steps.max(1),
            interleaved_steps: interleaved,
            rewarp_at: d
                .rewarp_at
                .into_iter()
                .filter(|k| *k < interleaved)
                .collect(),
            temperature: self.temperature,
            fb_threshold: self.fb_threshold,
            use_mask: self.use_mask,
            refine: self.refine.then(|| {
                d.refine.unwrap_or(RefineOptions {
                    ddim_steps: 200,
                    eta: 1.0,
                    hijack_step: 180,
                })
            }),
            emit_warp_weights: true,
        }
    }
}
/// A file dialog's answer, sent back from its thread.
type DialogResult = (Dialog, Option<PathBuf>);

/// Session state kept across restarts (eframe persistence).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Saved {
    canvas: Option<SavedCanvas>,
    exemplar_parts: Option<SavedCanvas>,
    /// Exemplar as PNG bytes, hex-encoded.
    exemplar_png: Option<String>,
    exemplar_name: Option<String>,
    condition_name: Option<String>,
    params: Params,
    model_path: Option<PathBuf>,
}

const STORAGE_KEY: &str = "midm-session";
/// Longest side an exemplar is kept at (it is resized to the model's resolution per run).
const EXEMPLAR_MAX_SIDE: u32 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawTarget {
    Condition,
    ExemplarParts,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialog {
    OpenExemplar,
    OpenEdgeMap,
    EdgesFromPhoto,
    OpenModelFolder,
    OpenModelFile,
    ExportPng,
    ExportSheet,
}

struct Exemplar {
    image: RgbaImage,
    name: String,
}

/// Textures of one received step.
struct FrameTextures {
    /// `None` until the step is decoded (refinement steps are decoded on demand).
    pred: Option<TextureHandle>,
    warped: Option<TextureHandle>,
    mask: Option<TextureHandle>,
    overlay: Option<TextureHandle>,
}

/// Latencies of the current run and UI frame times while it streams.
#[derive(Debug, Clone, Default)]
pub struct RunTimings {
    pub first_step: Option<Duration>,
    /// Where the first step's latency went: the sampler's own time to its first event, the
    /// worker's conversion of it for display, and the wait from the worker's send to this
    /// thread's update picking it up.
    pub first_step_parts: Option<(Duration, Duration, Duration)>,
    pub final_image: Option<Duration>,
    /// CPU time of each `ui` call while the run streamed.
    pub frame_times: Vec<Duration>,
    /// Worker time spent turning step events into images (decodes, copies).
    pub convert_total: Duration,
}

impl RunTimings {
    pub fn frame_time_summary(&self) -> Option<(Duration, Duration)> {
        let n = self.frame_times.len();
        if n == 0 {
            return None;
        }
        let mean = self.frame_times.iter().sum::<Duration>() / n as u32;
        let max = self.frame_times.iter().max().copied().unwrap_or_default();
        Some((mean, max))
    }
}

/// The editor.
pub struct MidmApp {
    worker: WorkerHandle,
    /// The context the worker's repaint requests go to (the one of the latest frame).
    ctx_cell: Arc<Mutex<Option<egui::Context>>>,
    model: Option<ModelInfo>,
    loading: Option<PathBuf>,
    model_path_text: String,
    pub params: Params,

    canvas: Canvas,
    exemplar_parts: Canvas,
    target: DrawTarget,
    tool: Tool,
    brush_size: f32,
    layer: usize,
    zoom: f32,
    line_start: Option<(f32, f32)>,
    stroking: bool,
    condition_name: Option<String>,

    exemplar: Option<Exemplar>,
    exemplar_edges: Option<GrayImage>,
    edges_key: Option<(u32, CannyParams, u64)>,
    exemplar_version: u64,

    generation: Option<u64>,
    running: bool,
    run_started: Option<Instant>,
    timings: RunTimings,
    frames: Vec<StepFrame>,
    frame_tex: Vec<FrameTextures>,
    selected: usize,
    follow: bool,
    probe: Option<(usize, usize)>,
    probe_tex: Option<(TextureHandle, (usize, usize, usize))>,

    canvas_tex: Option<(TextureHandle, u64)>,
    exemplar_tex: Option<(TextureHandle, u64)>,
    edges_tex: Option<TextureHandle>,
    messages: Vec<Message>,
    dialogs: (Sender<DialogResult>, Receiver<DialogResult>),
    pending_run: bool,
    last_edit_version: (u64, u64, u64),
    last_frame_ms: f32,
    canvas_rect: Option<Rect>,
    /// Steps whose decode was requested from the worker.
    pending_decodes: std::collections::HashSet<usize>,
    /// A steps sheet waiting for the remaining decodes.
    sheet_pending: Option<PathBuf>,
}

fn repaint(cell: &Mutex<Option<egui::Context>>) {
    if let Some(ctx) = cell.lock().ok().and_then(|c| c.clone()) {
        ctx.request_repaint();
    }
}

/// Canvas zoom that shows a `size`-pixel condition at 256 screen pixels (4x for the 64-pixel
/// models, 2x for 128), whole steps so every canvas pixel is a square of screen pixels.
fn fit_zoom(size: u32) -> f32 {
    (256 / size.max(1)).clamp(1, 16) as f32
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn color_image(img: &RgbaImage) -> ColorImage {
    ColorImage::from_rgba_unmultiplied([img.width() as usize, img.height() as usize], img.as_raw())
}

/// Colours of the canvas layers: edges black, parts distinct hues.
pub fn layer_color(layer: usize) -> Color32 {
    const COLORS: [Color32; 14] = [
        Color32::BLACK,
        Color32::from_rgb(230, 170, 120), // skin
        Color32::from_rgb(120, 70, 30),   // l_brow
        Color32::from_rgb(150, 90, 40),   // r_brow
        Color32::from_rgb(30, 120, 220),  // l_eye
        Color32::from_rgb(30, 170, 220),  // r_eye
        Color32::from_rgb(200, 120, 200), // l_ear
        Color32::from_rgb(160, 80, 200),  // r_ear
        Color32::from_rgb(230, 90, 60),   // nose
        Color32::from_rgb(220, 30, 90),   // u_lip
        Color32::from_rgb(150, 20, 40),   // mouth
        Color32::from_rgb(240, 60, 130),  // l_lip
        Color32::from_rgb(90, 90, 90),    // eye_g
        Color32::from_rgb(60, 160, 60),   // hair
    ];
    COLORS[layer.min(COLORS.len() - 1)]
}

fn layer_name(layer: usize) -> &'static str {
    if layer == 0 {
        "edges"
    } else {
        PARTS[layer - 1]
    }
}

impl MidmApp {
    /// Build the editor; `storage` restores the previous session unless `args.fresh`.
    pub fn new(ctx: &egui::Context, args: AppArgs, storage: Option<&dyn eframe::Storage>) -> Self {
        let ctx_cell = Arc::new(Mutex::new(Some(ctx.clone())));
        let cell = ctx_cell.clone();
        let worker = WorkerHandle::spawn(move || repaint(&cell));
        let saved: Saved = if args.fresh {
            Saved::default()
        } else {
            storage
                .and_then(|s| eframe::get_value(s, STORAGE_KEY))
                .unwrap_or_default()
        };
        let canvas_size = saved.canvas.as_ref().map(|c| c.size).unwrap_or(64);
        let mut app = Self {
            worker,
            ctx_cell,
            model: None,
            loading: None,
            model_path_text: String::new(),
            params: saved.params.clone(),
            canvas: saved
                .canvas
                .as_ref()
                .and_then(Canvas::from_saved)
                .unwrap_or_else(|| Canvas::new(canvas_size)),
            exemplar_parts: saved
                .exemplar_parts
                .as_ref()
                .and_then(Canvas::from_saved)
                .unwrap_or_else(|| Canvas::new(canvas_size)),
            target: DrawTarget::Condition,
            tool: Tool::Brush,
            brush_size: 3.0,
            layer: 0,
            zoom: fit_zoom(canvas_size),
            line_start: None,
            stroking: false,
            condition_name: saved.condition_name.clone(),
            exemplar: None,
            exemplar_edges: None,
            edges_key: None,
            exemplar_version: 0,
            generation: None,
            running: false,
            run_started: None,
            timings: RunTimings::default(),
            frames: Vec::new(),
            frame_tex: Vec::new(),
            selected: 0,
            follow: true,
            probe: None,
            probe_tex: None,
            canvas_tex: None,
            exemplar_tex: None,
            edges_tex: None,
            messages: Vec::new(),
            dialogs: unbounded(),
            pending_run: args.run,
            last_edit_version: (0, 0, 0),
            last_frame_ms: 0.0,
            canvas_rect: None,
            pending_decodes: Default::default(),
            sheet_pending: None,
        };
        if let Some(bytes) = saved.exemplar_png.as_deref().and_then(unhex) {
            if let Ok(img) = image::load_from_memory(&bytes) {
                app.set_exemplar(
                    img,
                    saved
                        .exemplar_name
                        .clone()
                        .unwrap_or_else(|| "exemplar".into()),
                );
            }
        }
        // Start-up inputs: command line first, then (fresh or empty session) the sample pair.
        let sample = if !args.fresh
            && args.condition.is_none()
            && args.exemplar.is_none()
            && (app.canvas.is_empty() && app.exemplar.is_none())
        {
            super::default_sample()
        } else {
            None
        };
        let condition = args
            .condition
            .clone()
            .or(sample.as_ref().map(|s| s.0.clone()));
        let exemplar = args
            .exemplar
            .clone()
            .or(sample.as_ref().map(|s| s.1.clone()));
        if let Some(c) = condition {
            app.load_edge_map(&c);
        }
        if let Some(e) = exemplar {
            app.load_exemplar(&e);
        }
        let model = match args.fresh {
            true => args.model.clone(),
            false => args
                .model
                .clone()
                .or_else(super::default_model_dir)
                .or(saved.model_path.clone()),
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

    // ----- state access (used by the tests and the panels) -----

    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }

    pub fn canvas_mut(&mut self) -> &mut Canvas {
        &mut self.canvas
    }

    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn frames(&self) -> &[StepFrame] {
        &self.frames
    }

    pub fn selected_step(&self) -> usize {
        self.selected
    }

    pub fn select_step(&mut self, i: usize) {
        if !self.frames.is_empty() {
            self.selected = i.min(self.frames.len() - 1);
            self.follow = self.selected + 1 == self.frames.len();
        }
    }

    /// The step frame shown in the step view.
    pub fn shown_frame(&self) -> Option<&StepFrame> {
        self.frames.get(self.selected)
    }

    /// The final image of the last completed run.
    pub fn final_image(&self) -> Option<&RgbaImage> {
        self.frames.iter().rev().find_map(|f| f.image.as_ref())
    }

    /// Where the canvas was drawn in the last frame (screen points).
    pub fn canvas_rect(&self) -> Option<Rect> {
        self.canvas_rect
    }

    /// UI time of the last frame, in milliseconds.
    pub fn last_frame_ms(&self) -> f32 {
        self.last_frame_ms
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn last_error(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.error)
            .map(|m| m.text.as_str())
    }

    pub fn timings(&self) -> &RunTimings {
        &self.timings
    }

    pub fn has_exemplar(&self) -> bool {
        self.exemplar.is_some()
    }

    /// The probe position (latent row, column), if the pointer is over an output image.
    pub fn probe(&self) -> Option<(usize, usize)> {
        self.probe
    }

    pub fn set_probe(&mut self, p: Option<(usize, usize)>) {
        self.probe = p;
    }

    /// The probe heat map of the shown step: weights of the probed position over the exemplar
    /// latent grid (normalised to max 1), from the latest matching at or before that step.
    pub fn probe_heat(&self) -> Option<Vec<f32>> {
        let (r, c) = self.probe?;
        let frame = self
            .frames
            .get(..=self.selected)?
            .iter()
            .rev()
            .find(|f| f.warp_weights.is_some())?;
        let w = frame.warp_weights.as_ref()?;
        let hw = frame.latent_size * frame.latent_size;
        if r >= frame.latent_size || c >= frame.latent_size || w.len() < hw * hw {
            return None;
        }
        let row = &w[(r * frame.latent_size + c) * hw..][..hw];
        let max = row.iter().cloned().fold(f32::MIN, f32::max).max(1e-12);
        Some(row.iter().map(|v| v / max).collect())
    }

    fn info(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        self.messages.push(Message { text, error: false });
    }

    fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::warn!("{text}");
        self.messages.push(Message { text, error: true });
    }

    fn model_size(&self) -> u32 {
        self.model
            .as_ref()
            .map(|m| m.image_size as u32)
            .unwrap_or(self.canvas.size())
    }

    fn label_nc(&self) -> usize {
        self.model.as_ref().map(|m| m.label_nc).unwrap_or(1)
    }

    fn edit_version(&self) -> (u64, u64, u64) {
        (
            self.canvas.version(),
            self.exemplar_parts.version(),
            self.exemplar_version,
        )
    }

    // ----- actions -----

    /// Load a model on the worker; the current one stays until it succeeds.
    pub fn load_model(&mut self, path: impl Into<PathBuf>) {
        let path = path.into();
        self.model_path_text = path.display().to_string();
        self.loading = Some(path.clone());
        self.worker
            .load_with(path, self.params.device, self.params.precision);
    }

    /// Hand an already built model to the worker (tests build one from fixture weights).
    pub fn install_model(&mut self, model: crate::MidmModel, path: impl Into<PathBuf>) {
        let path = path.into();
        self.loading = Some(path.clone());
        self.worker.install(model, path, self.params.device);
    }

    pub fn load_exemplar(&mut self, path: &Path) {
        match image::open(path) {
            Ok(img) => self.set_exemplar(img, file_name(path)),
            Err(e) => self.error(format!("{}: {e}", path.display())),
        }
    }

    pub fn set_exemplar(&mut self, img: DynamicImage, name: String) {
        let img = if img.width().max(img.height()) > EXEMPLAR_MAX_SIDE {
            img.resize(EXEMPLAR_MAX_SIDE, EXEMPLAR_MAX_SIDE, FilterType::Triangle)
        } else {
            img
        };
        self.exemplar = Some(Exemplar {
            image: img.to_rgba8(),
            name,
        });
        self.exemplar_version += 1;
        self.edges_key = None;
    }

    pub fn load_edge_map(&mut self, path: &Path) {
        match image::open(path) {
            Ok(img) => {
                self.canvas.set_edges_from_image(&img);
                self.condition_name = Some(file_name(path));
            }
            Err(e) => self.error(format!("{}: {e}", path.display())),
        }
    }

    fn edges_from_photo(&mut self, path: &Path) {
        match image::open(path) {
            Ok(img) => {
                let edges = canny_edges(&img, self.canvas.size(), self.params.canny);
                self.canvas.set_layer(0, edges);
                self.condition_name = Some(format!("edges of {}", file_name(path)));
            }
            Err(e) => self.error(format!("{}: {e}", path.display())),
        }
    }

    fn paste_exemplar(&mut self) {
        let result = arboard::Clipboard::new().and_then(|mut c| c.get_image());
        match result {
            Ok(data) => {
                match RgbaImage::from_raw(
                    data.width as u32,
                    data.height as u32,
                    data.bytes.into_owned(),
                ) {
                    Some(img) => {
                        self.set_exemplar(DynamicImage::ImageRgba8(img), "pasted image".into())
                    }
                    None => self.error("the clipboard image has an unexpected size"),
                }
            }
            Err(e) => self.error(format!("no image to paste: {e}")),
        }
    }

    /// Exemplar edges at the model's resolution (cached).
    fn exemplar_edges(&mut self) -> Option<&GrayImage> {
        let size = self.model_size();
        let key = (size, self.params.canny, self.exemplar_version);
        if self.edges_key != Some(key) {
            let ex = self.exemplar.as_ref()?;
            self.exemplar_edges = Some(canny_edges(
                &DynamicImage::ImageRgba8(ex.image.clone()),
                size,
                self.params.canny,
            ));
            self.edges_key = Some(key);
            self.edges_tex = None;
        }
        self.exemplar_edges.as_ref()
    }

    /// Start a run with the current canvas, exemplar and parameters (cancels the one in flight).
    pub fn request_run(&mut self) {
        let Some(info) = self.model.clone() else {
            self.error("No model is loaded.");
            return;
        };
        if self.exemplar.is_none() {
            self.error("Drop or open an exemplar image first.");
            return;
        }
        let nc = info.label_nc;
        let size = info.image_size as u32;
        if self.canvas.size() != size {
            self.canvas = self.canvas.resized(size);
            self.exemplar_parts = self.exemplar_parts.resized(size);
        }
        let condition = match self.canvas.label(nc) {
            Ok(l) => l,
            Err(e) => return self.error(format!("condition: {e}")),
        };
        let mut edges = self
            .exemplar_edges()
            .cloned()
            .unwrap_or_else(|| GrayImage::new(size, size));
        for (e, p) in edges.iter_mut().zip(self.exemplar_parts.layer(0).as_raw()) {
            *e |= *p;
        }
        let exemplar_label = match build_label(nc, &edges, &self.exemplar_parts.layers()[1..]) {
            Ok(l) => l,
            Err(e) => return self.error(format!("exemplar label: {e}")),
        };
        let exemplar = self
            .exemplar
            .as_ref()
            .map(|e| e.image.clone())
            .unwrap_or_default();
        let request = RunRequest {
            condition,
            exemplar,
            exemplar_label,
            options: self.params.sampler_options(),
            seed: self.params.seed,
        };
        self.frames.clear();
        self.frame_tex.clear();
        self.pending_decodes.clear();
        self.sheet_pending = None;
        self.selected = 0;
        self.follow = true;
        self.probe_tex = None;
        self.timings = RunTimings::default();
        self.run_started = Some(Instant::now());
        self.running = true;
        self.generation = Some(self.worker.run(request));
        self.last_edit_version = self.edit_version();
    }

    pub fn cancel(&mut self) {
        if self.running {
            self.worker.cancel();
        }
    }

    /// Apply parameters from an exported PNG's text chunks.
    pub fn restore_from_png(&mut self, path: &Path) -> bool {
        let text = match export::read_png_text(path) {
            Ok(t) => t,
            Err(_) => return false,
        };
        let Some(json) = export::text_value(&text, export::KEY_PARAMS) else {
            return false;
        };
        match serde_json::from_str::<Params>(json) {
            Ok(p) => {
                // Device and precision belong to this machine, not to the image.
                let (device, precision) = (self.params.device, self.params.precision);
                self.params = Params {
                    device,
                    precision,
                    ..p
                };
                self.info(format!(
                    "Restored the parameters of {} (seed {}).",
                    file_name(path),
                    self.params.seed
                ));
                true
            }
            Err(e) => {
                self.error(format!("{}: unreadable parameters: {e}", path.display()));
                true
            }
        }
    }

    fn handle_dropped(&mut self, path: &Path) {
        if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            && self.restore_from_png(path)
        {
            return;
        }
        self.load_exemplar(path);
    }

    /// PNG text chunks describing the current result.
    pub fn export_text(&self) -> Vec<(String, String)> {
        let mut t = vec![
            (
                export::KEY_PARAMS.to_string(),
                serde_json::to_string(&self.params).unwrap_or_default(),
            ),
            (export::KEY_SEED.to_string(), self.params.seed.to_string()),
        ];
        if let Some(m) = &self.model {
            t.push((export::KEY_MODEL_HASH.to_string(), m.hash.clone()));
            t.push((export::KEY_MODEL.to_string(), m.path.display().to_string()));
        }
        t.push((
            export::KEY_CONDITION.to_string(),
            self.condition_name
                .clone()
                .unwrap_or_else(|| "drawn".into()),
        ));
        if let Some(e) = &self.exemplar {
            t.push((export::KEY_EXEMPLAR.to_string(), e.name.clone()));
        }
        t
    }

    /// Write the final image to `path` (atomically, with parameters in text chunks).
    pub fn export_png(&mut self, path: &Path) -> anyhow::Result<()> {
        let img = self
            .final_image()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no result to export yet"))?;
        export::save_png(path, &img, &self.export_text())
    }

    /// Write the steps sheet of the current run to `path`, once every step is decoded (the
    /// missing decodes are requested here; the sheet is written when the last one arrives).
    pub fn export_sheet(&mut self, path: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(!self.frames.is_empty(), "no steps to export yet");
        for i in 0..self.frames.len() {
            self.request_decode(i);
        }
        self.sheet_pending = Some(path.to_path_buf());
        if !self.pending_decodes.is_empty() {
            self.info("Decoding the remaining steps for the sheet...");
        }
        self.try_write_sheet();
        Ok(())
    }

    /// Whether a steps sheet is still waiting for decodes.
    pub fn sheet_pending(&self) -> bool {
        self.sheet_pending.is_some()
    }

    fn open_dialog(&self, which: Dialog) {
        let tx = self.dialogs.0.clone();
        let cell = self.ctx_cell.clone();
        let images = ["png", "jpg", "jpeg", "bmp", "webp"];
        std::thread::spawn(move || {
            let d = rfd::FileDialog::new();
            let path = match which {
                Dialog::OpenExemplar | Dialog::OpenEdgeMap | Dialog::EdgesFromPhoto => {
                    d.add_filter("images", &images).pick_file()
                }
                Dialog::OpenModelFolder => d.pick_folder(),
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
            let _ = tx.send((which, path));
            repaint(&cell);
        });
    }

    fn handle_dialog(&mut self, which: Dialog, path: PathBuf) {
        match which {
            Dialog::OpenExemplar => self.load_exemplar(&path),
            Dialog::OpenEdgeMap => self.load_edge_map(&path),
            Dialog::EdgesFromPhoto => self.edges_from_photo(&path),
            Dialog::OpenModelFolder | Dialog::OpenModelFile => self.load_model(path),
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

    // ----- events from the worker -----

    fn poll_worker(&mut self, ctx: &egui::Context) {
        if self.worker.ensure_alive() {
            self.error("The worker stopped and was restarted.");
        }
        while let Some(event) = self.worker.try_recv() {
            match event {
                WorkerEvent::ModelLoaded(info) => {
                    let size = info.image_size as u32;
                    if self.canvas.size() != size {
                        self.canvas = self.canvas.resized(size);
                        self.exemplar_parts = self.exemplar_parts.resized(size);
                        // Same on-screen size for every model, so the step panels stay in view.
                        self.zoom = fit_zoom(size);
                    }
                    if info.label_nc == 1 {
                        self.layer = 0;
                        self.target = DrawTarget::Condition;
                    }
                    // Edge settings follow the model's training data, unless the user tuned them.
                    let layout_changed = self
                        .model
                        .as_ref()
                        .is_none_or(|m| m.label_nc != info.label_nc);
                    let presets = [CannyParams::edge_model(), CannyParams::celeba()];
                    if layout_changed && presets.contains(&self.params.canny) {
                        self.params.canny = CannyParams::for_label_nc(info.label_nc);
                        self.brush_size = if info.label_nc == 1 { 3.0 } else { 2.0 };
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
                    self.model_path_text = info.path.display().to_string();
                    self.model = Some(info);
                    self.loading = None;
                    self.edges_key = None;
                    if self.pending_run {
                        self.pending_run = false;
                        self.request_run();
                    }
                }
                WorkerEvent::LoadFailed { path, error } => {
                    self.loading = None;
                    self.pending_run = false;
                    let keep = match &self.model {
                        Some(m) => format!(" (still using {})", m.path.display()),
                        None => String::new(),
                    };
                    self.error(format!("Could not load {}: {error}{keep}", path.display()));
                }
                WorkerEvent::Started { .. } => {}
                WorkerEvent::Step { generation, frame } => {
                    if Some(generation) != self.generation {
                        continue;
                    }
                    if self.frames.is_empty() {
                        self.timings.first_step = self.run_started.map(|s| s.elapsed());
                        self.timings.first_step_parts =
                            Some((frame.elapsed, frame.convert_time, frame.sent_at.elapsed()));
                    }
                    self.push_frame(ctx, *frame);
                }
                WorkerEvent::Decoded {
                    generation,
                    index,
                    result,
                } => {
                    if Some(generation) != self.generation || index >= self.frames.len() {
                        continue;
                    }
                    self.pending_decodes.remove(&index);
                    match result {
                        Ok(img) => {
                            self.frames[index].pred_x0 = Some(img);
                            self.frames[index].latent = None;
                            self.make_pred_textures(ctx, index);
                        }
                        Err(e) => self.error(format!("Could not decode step {index}: {e}")),
                    }
                    self.try_write_sheet();
                }
                WorkerEvent::Finished {
                    generation,
                    elapsed,
                } => {
                    if Some(generation) == self.generation {
                        self.running = false;
                        self.timings.final_image = self.run_started.map(|s| s.elapsed());
                        let frames = match self.timings.frame_time_summary() {
                            Some((mean, max)) => format!(
                                ", UI frame time {:.2} ms mean / {:.2} ms max over {} frames",
                                mean.as_secs_f64() * 1e3,
                                max.as_secs_f64() * 1e3,
                                self.timings.frame_times.len()
                            ),
                            None => String::new(),
                        };
                        let first_parts = match self.timings.first_step_parts {
                            Some((sampler, convert, delivery)) => format!(
                                " (sampler {:.0} + display conversion {:.0} + delivery {:.0} ms)",
                                sampler.as_secs_f64() * 1e3,
                                convert.as_secs_f64() * 1e3,
                                delivery.as_secs_f64() * 1e3
                            ),
                            None => String::new(),
                        };
                        self.info(format!(
                            "Run done: first step after {:.0} ms{first_parts}, final image after {:.0} ms (worker {:.0} ms, of which {:.0} ms decoding steps for display){frames}",
                            self.timings.first_step.unwrap_or_default().as_secs_f64() * 1e3,
                            self.timings.final_image.unwrap_or_default().as_secs_f64() * 1e3,
                            elapsed.as_secs_f64() * 1e3,
                            self.timings.convert_total.as_secs_f64() * 1e3,
                        ));
                    }
                }
                WorkerEvent::Cancelled { generation } => {
                    if Some(generation) == self.generation {
                        self.running = false;
                        self.info("Run cancelled.");
                    }
                }
                WorkerEvent::Failed { generation, error } => {
                    if Some(generation) == self.generation || !self.running {
                        self.running = false;
                        self.error(format!("Run failed: {error}"));
                    }
                }
                WorkerEvent::Restarted => {
                    self.running = false;
                    if let Some(m) = self.model.take() {
                        self.load_model(m.path);
                    }
                }
            }
        }
    }

    fn push_frame(&mut self, ctx: &egui::Context, frame: StepFrame) {
        let i = self.frames.len();
        self.timings.convert_total += frame.convert_time;
        let warped = frame.warped.as_ref().map(|w| {
            ctx.load_texture(
                format!("step{i}-R"),
                color_image(w),
                TextureOptions::NEAREST,
            )
        });
        let mask = frame.mask.as_ref().map(|m| {
            ctx.load_texture(
                format!("step{i}-M"),
                color_image(m),
                TextureOptions::NEAREST,
            )
        });
        self.frame_tex.push(FrameTextures {
            pred: None,
            warped,
            mask,
            overlay: None,
        });
        self.frames.push(frame);
        self.make_pred_textures(ctx, i);
        if self.follow {
            self.selected = self.frames.len() - 1;
        }
    }

    /// Textures of the decoded r~n of step `i` and of its mask overlay.
    fn make_pred_textures(&mut self, ctx: &egui::Context, i: usize) {
        let frame = &self.frames[i];
        let Some(shown) = frame.image.as_ref().or(frame.pred_x0.as_ref()) else {
            return;
        };
        let pred = ctx.load_texture(
            format!("step{i}-pred"),
            color_image(shown),
            TextureOptions::NEAREST,
        );
        // Steps without a matching keep the mask of the latest one.
        let mask_src = self.frames[..=i].iter().rev().find_map(|f| f.mask.as_ref());
        let overlay = mask_src.map(|m| {
            let o = mask_overlay(shown, m);
            ctx.load_texture(
                format!("step{i}-overlay"),
                color_image(&o),
                TextureOptions::NEAREST,
            )
        });
        self.frame_tex[i].pred = Some(pred);
        self.frame_tex[i].overlay = overlay;
    }

    /// Ask the worker to decode step `i` if it is not decoded yet.
    fn request_decode(&mut self, i: usize) {
        let (Some(generation), Some(frame)) = (self.generation, self.frames.get(i)) else {
            return;
        };
        if frame.pred_x0.is_some() || self.pending_decodes.contains(&i) {
            return;
        }
        if let Some((latent, shape)) = &frame.latent {
            self.worker.decode(generation, i, latent.clone(), *shape);
            self.pending_decodes.insert(i);
        }
    }

    fn try_write_sheet(&mut self) {
        let Some(path) = self.sheet_pending.clone() else {
            return;
        };
        if self.frames.iter().any(|f| f.pred_x0.is_none()) && !self.pending_decodes.is_empty() {
            return; // still decoding
        }
        self.sheet_pending = None;
        let cell = self.model_size().max(64);
        let sheet = export::steps_sheet(&self.frames, cell);
        match export::save_png(&path, &sheet, &self.export_text()) {
            Ok(()) => self.info(format!("Saved the steps sheet {}", path.display())),
            Err(e) => self.error(format!("{e:#}")),
        }
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
        while let Ok((which, path)) = self.dialogs.1.try_recv() {
            if let Some(p) = path {
                self.handle_dialog(which, p);
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for p in dropped {
            self.handle_dropped(&p);
        }
        self.shortcuts(ui);

        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui));
        egui::Panel::left("params")
            .default_size(250.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.params_panel(ui));
            });
        egui::Panel::bottom("messages").show(ui, |ui| self.messages_panel(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::both().show(ui, |ui| {
                ui.horizontal_top(|ui| {
                    ui.vertical(|ui| self.canvas_panel(ui));
                    ui.add_space(24.0);
                    ui.vertical(|ui| self.exemplar_panel(ui));
                });
                ui.separator();
                self.steps_panel(ui);
            });
        });

        // An edit cancels the run in flight (its result would no longer match the inputs).
        let v = self.edit_version();
        if v != self.last_edit_version {
            self.last_edit_version = v;
            if self.running {
                self.cancel();
            }
        }
        let dt = t0.elapsed();
        self.last_frame_ms = dt.as_secs_f32() * 1e3;
        if self.running {
            self.timings.frame_times.push(dt);
        }
    }

    fn shortcuts(&mut self, ui: &mut egui::Ui) {
        let redo = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
        let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
        let save = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
        let (do_redo, do_undo, do_save, paste) = ui.input_mut(|i| {
            let r = i.consume_shortcut(&redo)
                || i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Y));
            let u = i.consume_shortcut(&undo);
            let s = i.consume_shortcut(&save);
            let p = i.events.iter().any(|e| matches!(e, egui::Event::Paste(_)));
            (r, u, s, p)
        });
        let text_focus = ui.ctx().memory(|m| m.focused().is_some());
        if do_redo {
            self.active_canvas_mut().redo();
        } else if do_undo {
            self.active_canvas_mut().undo();
        }
        if do_save {
            if self.final_image().is_some() {
                self.open_dialog(Dialog::ExportPng);
            } else {
                self.error("Nothing to export yet: run first.");
            }
        }
        if paste && !text_focus {
            self.paste_exemplar();
        }
        if !text_focus && !self.frames.is_empty() {
            let (left, right) = ui.input(|i| {
                (
                    i.key_pressed(Key::ArrowLeft),
                    i.key_pressed(Key::ArrowRight),
                )
            });
            if left {
                self.select_step(self.selected.saturating_sub(1));
            }
            if right {
                self.select_step(self.selected + 1);
            }
        }
    }

    fn active_canvas_mut(&mut self) -> &mut Canvas {
        match self.target {
            DrawTarget::Condition => &mut self.canvas,
            DrawTarget::ExemplarParts => &mut self.exemplar_parts,
        }
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let can_run = self.model.is_some() && self.exemplar.is_some();
            if ui
                .add_enabled(can_run, egui::Button::new("Run"))
                .on_hover_text("Translate (cancels a run in flight)")
                .clicked()
            {
                self.request_run();
            }
            if ui
                .add_enabled(self.running, egui::Button::new("Cancel"))
                .clicked()
            {
                self.cancel();
            }
            ui.separator();
            if ui
                .add_enabled(
                    self.final_image().is_some(),
                    egui::Button::new("Export PNG..."),
                )
                .on_hover_text("Ctrl+S")
                .clicked()
            {
                self.open_dialog(Dialog::ExportPng);
            }
            if ui
                .add_enabled(
                    !self.frames.is_empty(),
                    egui::Button::new("Export steps..."),
                )
                .clicked()
            {
                self.open_dialog(Dialog::ExportSheet);
            }
            ui.separator();
            let status = if let Some(p) = &self.loading {
                format!("Loading {}...", p.display())
            } else if self.running {
                let total = self.frames.last().map(|f| f.total).unwrap_or(0);
                format!("Running: step {}/{}", self.frames.len(), total)
            } else if let Some(m) = &self.model {
                format!(
                    "Model {} ({}px, {} ch)",
                    file_name(&m.path),
                    m.image_size,
                    m.label_nc
                )
            } else {
                "No model".to_string()
            };
            ui.label(status);
            if self.running || self.loading.is_some() {
                ui.spinner();
            }
            if let Some(first) = self.timings.first_step {
                let mut s = format!("first step {:.0} ms", first.as_secs_f64() * 1e3);
                if let Some(f) = self.timings.final_image {
                    s += &format!(", final {:.0} ms", f.as_secs_f64() * 1e3);
                }
                if let Some((mean, _)) = self.timings.frame_time_summary() {
                    s += &format!(", UI frame {:.1} ms", mean.as_secs_f64() * 1e3);
                }
                ui.weak(s);
            }
        });
    }

    fn params_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Parameters");
        ui.horizontal(|ui| {
            let l = ui.label("Seed");
            ui.add(egui::DragValue::new(&mut self.params.seed))
                .labelled_by(l.id);
            if ui.button("New seed").clicked() {
                self.params.seed = rand::random::<u32>() as u64;
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("DDIM steps");
            ui.add(egui::DragValue::new(&mut self.params.ddim_steps).range(2..=1000))
                .labelled_by(l.id);
        });
        ui.horizontal(|ui| {
            let l = ui.label("Interleaved steps");
            let max = self.params.ddim_steps.saturating_sub(1).max(1);
            ui.add(egui::DragValue::new(&mut self.params.interleaved_steps).range(1..=max))
                .labelled_by(l.id);
        });
        ui.add(
            egui::Slider::new(&mut self.params.temperature, 0.0005..=0.1)
                .logarithmic(true)
                .text("Temperature"),
        );
        ui.add(egui::Slider::new(&mut self.params.fb_threshold, 0.0..=2.0).text("Mask threshold"));
        ui.checkbox(&mut self.params.use_mask, "Confidence mask");
        ui.checkbox(&mut self.params.refine, "Refinement (20 DDIM steps)");
        if ui.button("Official defaults").clicked() {
            let seed = self.params.seed;
            let device = self.params.device;
            let precision = self.params.precision;
            let canny = self.params.canny;
            self.params = Params {
                seed,
                device,
                precision,
                canny,
                ..Params::default()
            };
        }
        ui.separator();
        ui.heading("Model");
        ui.horizontal(|ui| {
            let before = (self.params.device, self.params.precision);
            egui::ComboBox::from_label("Device")
                .selected_text(match self.params.device {
                    DeviceChoice::Cpu => "CPU".to_string(),
                    DeviceChoice::Cuda(i) => format!("CUDA {i}"),
                })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.params.device, DeviceChoice::Cpu, "CPU");
                    if DeviceChoice::cuda_compiled() {
                        ui.selectable_value(
                            &mut self.params.device,
                            DeviceChoice::Cuda(0),
                            "CUDA 0",
                        );
                    }
                });
            // Half precision pays off on a GPU; on a CPU it is slower than f32 (no native f16 GEMM).
            egui::ComboBox::from_label("Precision")
                .selected_text(self.params.precision.name())
                .show_ui(ui, |ui| {
                    for p in [Precision::F32, Precision::F16, Precision::Bf16] {
                        ui.selectable_value(&mut self.params.precision, p, p.name());
                    }
                });
            if before != (self.params.device, self.params.precision) {
                if let Some(m) = self.model.clone() {
                    self.load_model(m.path);
                }
            }
        });
        if !DeviceChoice::cuda_compiled() {
            ui.weak("(built without CUDA)");
        }
        ui.add(
            egui::TextEdit::singleline(&mut self.model_path_text).hint_text("model folder or file"),
        );
        ui.horizontal(|ui| {
            if ui.button("Load").clicked() && !self.model_path_text.trim().is_empty() {
                let p = PathBuf::from(self.model_path_text.trim());
                self.load_model(p);
            }
            if ui.button("Folder...").clicked() {
                self.open_dialog(Dialog::OpenModelFolder);
            }
            if ui.button("File...").clicked() {
                self.open_dialog(Dialog::OpenModelFile);
            }
        });
        if let Some(m) = &self.model {
            ui.weak(format!(
                "{}\nhash {}\n{}x{} px, latent {}x{}",
                m.path.display(),
                m.hash,
                m.image_size,
                m.image_size,
                m.latent_size,
                m.latent_size
            ));
        }
    }

    fn messages_panel(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if let Some(m) = self.messages.last() {
                let color = if m.error {
                    Color32::from_rgb(230, 80, 70)
                } else {
                    ui.visuals().text_color()
                };
                ui.colored_label(color, &m.text);
                if ui
                    .small_button("Dismiss")
                    .on_hover_text("Dismiss")
                    .clicked()
                {
                    self.messages.pop();
                }
            } else {
                ui.weak("Draw edges on the canvas, drop an exemplar, press Run.");
            }
        });
    }

    fn canvas_panel(&mut self, ui: &mut egui::Ui) {
        let multi = self.label_nc() > 1;
        ui.horizontal(|ui| {
            ui.strong("Condition");
            if multi {
                ui.selectable_value(&mut self.target, DrawTarget::Condition, "sketch");
                ui.selectable_value(
                    &mut self.target,
                    DrawTarget::ExemplarParts,
                    "trace exemplar parts",
                );
            }
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tool, Tool::Brush, "Brush");
            ui.selectable_value(&mut self.tool, Tool::Eraser, "Eraser");
            ui.add(
                egui::Slider::new(&mut self.brush_size, 1.0..=12.0)
                    .step_by(1.0)
                    .text("size"),
            );
        });
        if multi {
            egui::ComboBox::from_label("Layer")
                .selected_text(layer_name(self.layer))
                .show_ui(ui, |ui| {
                    for l in 0..=PARTS.len() {
                        let text = egui::RichText::new(layer_name(l)).color(layer_color(l));
                        ui.selectable_value(&mut self.layer, l, text);
                    }
                });
        }
        ui.horizontal(|ui| {
            let (can_undo, can_redo) = {
                let c = self.active_canvas_mut();
                (c.can_undo(), c.can_redo())
            };
            if ui
                .add_enabled(can_undo, egui::Button::new("Undo"))
                .on_hover_text("Ctrl+Z")
                .clicked()
            {
                self.active_canvas_mut().undo();
            }
            if ui
                .add_enabled(can_redo, egui::Button::new("Redo"))
                .on_hover_text("Ctrl+Shift+Z")
                .clicked()
            {
                self.active_canvas_mut().redo();
            }
            if ui.button("Clear").clicked() {
                self.active_canvas_mut().clear();
                if self.target == DrawTarget::Condition {
                    self.condition_name = None;
                }
            }
            ui.add(egui::Slider::new(&mut self.zoom, 1.0..=16.0).text("zoom"));
        });
        ui.horizontal(|ui| {
            if ui.button("Load edge map...").clicked() {
                self.open_dialog(Dialog::OpenEdgeMap);
            }
            if ui.button("Edges from photo...").clicked() {
                self.open_dialog(Dialog::EdgesFromPhoto);
            }
            if ui
                .add_enabled(
                    self.exemplar.is_some(),
                    egui::Button::new("Edges of exemplar"),
                )
                .clicked()
            {
                if let Some(e) = self.exemplar_edges().cloned() {
                    self.canvas.set_layer(0, e);
                    self.condition_name = self
                        .exemplar
                        .as_ref()
                        .map(|e| format!("edges of {}", e.name));
                }
            }
        });
        self.canvas_widget(ui);
        ui.weak("Shift-drag: straight line");
    }

    fn canvas_image(&self) -> RgbaImage {
        let target = self.target;
        let canvas = match target {
            DrawTarget::Condition => &self.canvas,
            DrawTarget::ExemplarParts => &self.exemplar_parts,
        };
        let size = canvas.size();
        let mut img = match (target, &self.exemplar) {
            (DrawTarget::ExemplarParts, Some(e)) => {
                let mut bg = image::imageops::resize(&e.image, size, size, FilterType::Triangle);
                for p in bg.pixels_mut() {
                    for c in 0..3 {
                        p.0[c] = (p.0[c] as u16 / 2 + 128) as u8; // faded under the strokes
                    }
                }
                bg
            }
            _ => RgbaImage::from_pixel(size, size, Rgba([255, 255, 255, 255])),
        };
        for (l, layer) in canvas.layers().iter().enumerate() {
            let c = layer_color(l);
            for (p, v) in img.pixels_mut().zip(layer.as_raw()) {
                if *v != 0 {
                    *p = Rgba([c.r(), c.g(), c.b(), 255]);
                }
            }
        }
        img
    }

    fn canvas_widget(&mut self, ui: &mut egui::Ui) {
        let canvas_version = match self.target {
            DrawTarget::Condition => self.canvas.version(),
            DrawTarget::ExemplarParts => {
                self.exemplar_parts.version() ^ (self.exemplar_version << 32) ^ (1 << 63)
            }
        };
        if self
            .canvas_tex
            .as_ref()
            .is_none_or(|(_, v)| *v != canvas_version)
        {
            let img = color_image(&self.canvas_image());
            match &mut self.canvas_tex {
                Some((tex, v)) => {
                    tex.set(img, TextureOptions::NEAREST);
                    *v = canvas_version;
                }
                None => {
                    self.canvas_tex = Some((
                        ui.ctx()
                            .load_texture("canvas", img, TextureOptions::NEAREST),
                        canvas_version,
                    ))
                }
            }
        }
        let size = self.active_canvas_mut().size() as f32;
        let display = Vec2::splat(size * self.zoom);
        let (response, painter) = ui.allocate_painter(display, Sense::click_and_drag());
        let rect = response.rect;
        self.canvas_rect = Some(rect);
        if let Some((tex, _)) = &self.canvas_tex {
            painter.image(
                tex.id(),
                rect,
                Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                Color32::WHITE,
            );
        }
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, Color32::GRAY),
            egui::StrokeKind::Outside,
        );
        let zoom = self.zoom;
        let to_canvas = move |p: Pos2| ((p.x - rect.min.x) / zoom, (p.y - rect.min.y) / zoom);
        let shift = ui.input(|i| i.modifiers.shift);
        let (layer, tool, radius) = (self.layer, self.tool, self.brush_size / 2.0);
        let layer = if self.label_nc() > 1 { layer } else { 0 };

        if response.drag_started() {
            let origin = ui
                .input(|i| i.pointer.press_origin())
                .or(response.interact_pointer_pos());
            if let Some(o) = origin {
                let p = to_canvas(o);
                if shift {
                    self.line_start = Some(p);
                } else {
                    self.stroking = true;
                    self.active_canvas_mut()
                        .begin_stroke(layer, tool, radius, p);
                }
            }
        }
        if response.dragged() {
            if let Some(pos) = response.interact_pointer_pos() {
                let p = to_canvas(pos);
                if let Some(a) = self.line_start {
                    let to_screen =
                        |q: (f32, f32)| Pos2::new(rect.min.x + q.0 * zoom, rect.min.y + q.1 * zoom);
                    painter.line_segment(
                        [to_screen(a), pos],
                        Stroke::new(
                            self.brush_size * zoom,
                            layer_color(layer).gamma_multiply(0.6),
                        ),
                    );
                } else if self.stroking {
                    self.active_canvas_mut()
                        .continue_stroke(layer, tool, radius, p);
                }
            }
        }
        if response.drag_stopped() {
            if let (Some(a), Some(pos)) = (self.line_start.take(), response.interact_pointer_pos())
            {
                let b = to_canvas(pos);
                self.active_canvas_mut().line(layer, tool, radius, a, b);
            }
            if self.stroking {
                self.stroking = false;
                self.active_canvas_mut().end_stroke();
            }
        }
        if response.clicked() {
            if let Some(pos) = response.interact_pointer_pos() {
                let c = self.active_canvas_mut();
                c.begin_stroke(layer, tool, radius, to_canvas(pos));
                c.end_stroke();
            }
        }
        if self.target == DrawTarget::Condition && (response.drag_started() || response.clicked()) {
            if let Some(n) = &self.condition_name {
                if !n.ends_with(" (edited)") {
                    self.condition_name = Some(format!("{n} (edited)"));
                }
            }
        }
        if let Some(h) = response.hover_pos() {
            painter.circle_stroke(
                h,
                (self.brush_size * self.zoom / 2.0).max(2.0),
                Stroke::new(1.0, Color32::from_rgb(255, 120, 0)),
            );
        }
    }

    fn exemplar_panel(&mut self, ui: &mut egui::Ui) {
        ui.strong("Exemplar");
        ui.horizontal(|ui| {
            if ui.button("Open...").clicked() {
                self.open_dialog(Dialog::OpenExemplar);
            }
            if ui.button("Paste").on_hover_text("Ctrl+V").clicked() {
                self.paste_exemplar();
            }
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.params.canny.low, 0.0..=300.0).text("Canny low"));
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.params.canny.high, 0.0..=600.0).text("Canny high"));
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.params.canny.dilate, 0..=3).text("line width +"));
            if ui.small_button("model default").clicked() {
                self.params.canny = CannyParams::for_label_nc(self.label_nc());
            }
        });
        let side = (self.model_size() as f32 * 2.0).clamp(128.0, 256.0);
        if self.exemplar.is_none() {
            let (rect, _) =
                ui.allocate_exact_size(Vec2::new(side * 2.0 + 8.0, side), Sense::hover());
            ui.painter().rect_stroke(
                rect,
                4.0,
                Stroke::new(1.0, Color32::GRAY),
                egui::StrokeKind::Inside,
            );
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop an exemplar image here",
                egui::FontId::proportional(14.0),
                ui.visuals().weak_text_color(),
            );
            return;
        }
        if self
            .exemplar_tex
            .as_ref()
            .is_none_or(|(_, v)| *v != self.exemplar_version)
        {
            let img = color_image(&self.exemplar.as_ref().unwrap().image);
            self.exemplar_tex = Some((
                ui.ctx()
                    .load_texture("exemplar", img, TextureOptions::LINEAR),
                self.exemplar_version,
            ));
        }
        if self.exemplar_edges().is_some() && self.edges_tex.is_none() {
            let e = self.exemplar_edges.as_ref().unwrap();
            let img = RgbaImage::from_fn(e.width(), e.height(), |x, y| {
                let v = 255 - e.get_pixel(x, y).0[0];
                Rgba([v, v, v, 255])
            });
            self.edges_tex = Some(ui.ctx().load_texture(
                "exemplar-edges",
                color_image(&img),
                TextureOptions::NEAREST,
            ));
        }
        ui.horizontal(|ui| {
            if let Some((tex, _)) = &self.exemplar_tex {
                ui.add(egui::Image::from_texture(SizedTexture::new(
                    tex.id(),
                    Vec2::splat(side),
                )));
            }
            if let Some(tex) = &self.edges_tex {
                ui.add(egui::Image::from_texture(SizedTexture::new(
                    tex.id(),
                    Vec2::splat(side),
                )))
                .on_hover_text("automatic edges (exemplar label)");
            }
        });
        if let Some(e) = &self.exemplar {
            ui.weak(&e.name);
        }
    }

    fn steps_panel(&mut self, ui: &mut egui::Ui) {
        ui.strong("Steps");
        if self.frames.is_empty() {
            ui.weak(if self.running {
                "Waiting for the first step..."
            } else {
                "Press Run to see every step here."
            });
            return;
        }
        self.timeline(ui);
        let n = self.frames.len();
        let mut sel = self.selected;
        let slider = ui.add(
            egui::Slider::new(&mut sel, 0..=n - 1)
                .text("Step")
                .custom_formatter(|v, _| {
                    let i = v as usize;
                    self.frames
                        .get(i)
                        .map(|f| step_label(f.kind))
                        .unwrap_or_default()
                }),
        );
        if slider.changed() {
            self.select_step(sel);
        }
        // While a run streams and the view follows it, refinement frames fly past: decoding each
        // (queued behind the run on the worker) would only spend CPU on frames no longer shown.
        if !(self.running && self.follow) {
            self.request_decode(self.selected);
        }
        self.update_probe_texture(ui.ctx());
        let probe_id = self.probe.and(self.probe_tex.as_ref().map(|(t, _)| t.id()));
        let sel_now = self.selected;
        let frame = &self.frames[sel_now];
        let tex = &self.frame_tex[sel_now];
        ui.label(format!(
            "{}  (event {}/{}{}, {:.0} ms)",
            describe(frame.kind),
            frame.index + 1,
            frame.total,
            frame.t.map(|t| format!(", t = {t}")).unwrap_or_default(),
            frame.elapsed.as_secs_f64() * 1e3
        ));
        let side = (self.model_size() as f32 * 2.5).clamp(128.0, 256.0);
        let size = Vec2::splat(side);
        let latent = frame.latent_size;
        let mut hovered: Option<(usize, usize)> = None;
        let probe_at = self.probe;
        let placeholder = |ui: &mut egui::Ui, text: &str| {
            let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
            ui.painter().rect_stroke(
                rect,
                0.0,
                Stroke::new(1.0, Color32::DARK_GRAY),
                egui::StrokeKind::Inside,
            );
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                text,
                egui::FontId::proportional(12.0),
                Color32::GRAY,
            );
        };
        ui.horizontal_top(|ui| {
            let mut show =
                |ui: &mut egui::Ui, title: &str, t: Option<egui::TextureId>, probe: bool| {
                    ui.vertical(|ui| {
                        ui.label(title);
                        match t {
                            Some(t) => {
                                let r = ui.add(
                                    egui::Image::from_texture(SizedTexture::new(t, size))
                                        .sense(Sense::hover()),
                                );
                                if let (true, Some((pr, pc))) = (probe, probe_at) {
                                    let cell = r.rect.width() / latent as f32;
                                    let min = r.rect.min + Vec2::new(pc as f32, pr as f32) * cell;
                                    let mark = Rect::from_min_size(min, Vec2::splat(cell));
                                    let stroke = Stroke::new(2.0, Color32::YELLOW);
                                    ui.painter().rect_stroke(
                                        mark,
                                        0.0,
                                        stroke,
                                        egui::StrokeKind::Outside,
                                    );
                                }
                                if probe {
                                    if let Some(p) = r.hover_pos() {
                                        let u = ((p.x - r.rect.min.x) / r.rect.width())
                                            .clamp(0.0, 0.999);
                                        let v = ((p.y - r.rect.min.y) / r.rect.height())
                                            .clamp(0.0, 0.999);
                                        hovered = Some((
                                            (v * latent as f32) as usize,
                                            (u * latent as f32) as usize,
                                        ));
                                    }
                                }
                            }
                            None => placeholder(ui, "no matching\nat this step"),
                        }
                    });
                };
            let first = if frame.image.is_some() {
                "output"
            } else {
                "r~n (x0 estimate)"
            };
            match tex.pred.as_ref() {
                Some(t) => show(ui, first, Some(t.id()), true),
                None => {
                    ui.vertical(|ui| {
                        ui.label(first);
                        placeholder(ui, "decoding...");
                    });
                }
            }
            // Steps without a matching show the latest R and M still in effect.
            let latest = |pick: &dyn Fn(&FrameTextures) -> Option<egui::TextureId>| {
                (0..=sel_now)
                    .rev()
                    .find_map(|i| pick(&self.frame_tex[i]).map(|t| (i, t)))
            };
            let title = |name: &str, found: Option<(usize, egui::TextureId)>| match found {
                Some((i, _)) if i != sel_now => {
                    format!("{name} (from {})", step_label(self.frames[i].kind))
                }
                _ => name.to_string(),
            };
            let r = latest(&|t| t.warped.as_ref().map(|t| t.id()));
            show(ui, &title("R (warped exemplar)", r), r.map(|x| x.1), false);
            let m = latest(&|t| t.mask.as_ref().map(|t| t.id()));
            show(ui, &title("M (confidence)", m), m.map(|x| x.1), false);
            show(ui, "M over r~n", tex.overlay.as_ref().map(|t| t.id()), true);
            ui.vertical(|ui| {
                ui.label("match in exemplar");
                match probe_id {
                    Some(id) => {
                        ui.add(egui::Image::from_texture(SizedTexture::new(id, size)));
                    }
                    None => placeholder(
                        ui,
                        "hover r~n or the output\nto see where a pixel\nis matched",
                    ),
                }
            });
        });
        if hovered.is_some() || self.probe.is_some() {
            self.probe = hovered;
        }
    }

    /// Rebuild the probe heat-map texture when the probed pixel or the shown step changes.
    fn update_probe_texture(&mut self, ctx: &egui::Context) {
        let Some((r, c)) = self.probe else { return };
        let key = (r, c, self.selected);
        if self.probe_tex.as_ref().is_some_and(|(_, k)| *k == key) {
            return;
        }
        let (Some(heat), Some(ex)) = (self.probe_heat(), self.exemplar.as_ref()) else {
            self.probe_tex = None;
            return;
        };
        let s = self.model_size();
        let l = (heat.len() as f64).sqrt() as u32;
        let base = image::imageops::resize(&ex.image, s, s, FilterType::Triangle);
        let img = RgbaImage::from_fn(s, s, |x, y| {
            let h = heat[((y * l / s) * l + x * l / s) as usize];
            let p = base.get_pixel(x, y).0;
            // Soft-warp weights are peaky (temperature 0.005): sqrt keeps weaker matches visible.
            let h = h.sqrt();
            let mix = |a: u8, b: f32| (a as f32 * (1.0 - h) + b * h) as u8;
            Rgba([
                mix(p[0] / 3, 255.0),
                mix(p[1] / 3, 30.0),
                mix(p[2] / 3, 30.0),
                255,
            ])
        });
        let tex = ctx.load_texture("probe", color_image(&img), TextureOptions::NEAREST);
        self.probe_tex = Some((tex, key));
    }

    fn timeline(&mut self, ui: &mut egui::Ui) {
        let total = self
            .frames
            .last()
            .map(|f| f.total)
            .unwrap_or(0)
            .max(self.frames.len());
        let width = ui.available_width().clamp(200.0, 900.0);
        let (rect, response) =
            ui.allocate_exact_size(Vec2::new(width, 22.0), Sense::click_and_drag());
        let cell = width / total.max(1) as f32;
        let painter = ui.painter_at(rect);
        for i in 0..total {
            let r = Rect::from_min_size(
                Pos2::new(rect.min.x + i as f32 * cell, rect.min.y),
                Vec2::new(cell - 1.0, rect.height()),
            );
            let fill = match self.frames.get(i).map(|f| f.kind) {
                None => Color32::from_gray(50),
                Some(StepKind::InitialWarp) => Color32::from_rgb(70, 120, 220),
                Some(StepKind::Interleaved { rewarped: true, .. }) => {
                    Color32::from_rgb(230, 140, 40)
                }
                Some(StepKind::Interleaved { .. }) => Color32::from_rgb(200, 170, 80),
                Some(StepKind::Refine { .. }) => Color32::from_rgb(80, 170, 90),
                Some(StepKind::Final) => Color32::from_gray(230),
            };
            painter.rect_filled(r, 2.0, fill);
            if i == self.selected {
                painter.rect_stroke(
                    r,
                    2.0,
                    Stroke::new(2.0, Color32::WHITE),
                    egui::StrokeKind::Outside,
                );
            }
        }
        if (response.dragged() || response.clicked()) && !self.frames.is_empty() {
            if let Some(p) = response.interact_pointer_pos() {
                let i = ((p.x - rect.min.x) / cell).floor().max(0.0) as usize;
                self.select_step(i.min(self.frames.len() - 1));
            }
        }
    }

    fn save_state(&self) -> Saved {
        let exemplar_png = self.exemplar.as_ref().and_then(|e| {
            let mut buf = std::io::Cursor::new(Vec::new());
            e.image.write_to(&mut buf, image::ImageFormat::Png).ok()?;
            Some(hex(buf.get_ref()))
        });
        Saved {
            canvas: Some(self.canvas.to_saved()),
            exemplar_parts: Some(self.exemplar_parts.to_saved()),
            exemplar_png,
            exemplar_name: self.exemplar.as_ref().map(|e| e.name.clone()),
            condition_name: self.condition_name.clone(),
            params: self.params.clone(),
            model_path: self.model.as_ref().map(|m| m.path.clone()),
        }
    }

    /// Persist the session into `storage`.
    pub fn save_to(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.save_state());
    }
}

fn describe(kind: StepKind) -> String {
    match kind {
        StepKind::InitialWarp => {
            "Initial warp (exemplar latent warped by the first matching)".into()
        }
        StepKind::Interleaved { k, rewarped } => {
            format!(
                "Interleaved step {k}{}",
                if rewarped {
                    " (re-matched and re-warped)"
                } else {
                    ""
                }
            )
        }
        StepKind::Refine { i } => format!("Refinement step {i}"),
        StepKind::Final => "Final image".into(),
    }
}

/// r~n tinted green where the re-warp was kept (M = 1) and red elsewhere.
fn mask_overlay(img: &RgbaImage, mask: &RgbaImage) -> RgbaImage {
    let (w, h) = img.dimensions();
    let (mw, mh) = mask.dimensions();
    RgbaImage::from_fn(w, h, |x, y| {
        let m = mask.get_pixel(x * mw / w, y * mh / h).0[0] as f32 / 255.0;
        let p = img.get_pixel(x, y).0;
        let tint = [255.0 * (1.0 - m), 255.0 * m, 0.0];
        let mix = |a: u8, b: f32| (a as f32 * 0.6 + b * 0.4) as u8;
        Rgba([
            mix(p[0], tint[0]),
            mix(p[1], tint[1]),
            mix(p[2], tint[2]),
            255,
        ])
    })
}

impl eframe::App for MidmApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        MidmApp::ui(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.save_to(storage);
    }
}
