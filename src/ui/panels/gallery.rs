//! The exemplar gallery: thumbnails of the shipped exemplars and of a user folder, ranked for
//! the current sketch by the model's own correspondence confidence (scored on the worker, see
//! [`crate::sampling::rank`]). Images are decoded on a helper thread, never on the UI thread;
//! the app asks the worker for rankings ([`crate::ui::MidmApp`]'s gallery glue).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use egui::{Color32, FontId, Rect, Role, Sense, Stroke, TextureHandle, Vec2, WidgetInfo};
use image::{imageops::FilterType, RgbaImage};

use super::{color_image, Action, Dialog};
use crate::image::CannyParams;
use crate::worker::{RankScore, WorkerEvent};

/// Side of a thumbnail on screen, in points.
const THUMB: f32 = 64.0;
/// Thumbnails are kept at twice that, for high-DPI screens.
const THUMB_PIXELS: u32 = 128;
/// A user folder beyond this many images is cut (each is ranked on every sketch change).
const MAX_FOLDER_IMAGES: usize = 200;
/// Quiet time after the last edit before the gallery is ranked again.
pub const DEBOUNCE: Duration = Duration::from_millis(400);
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

pub struct Entry {
    pub path: PathBuf,
    /// Shown name and accessibility label: `cat`, `drawn/cat` (shipped), or the file's stem.
    pub name: String,
    thumb: RgbaImage,
    tex: Option<TextureHandle>,
    /// The image resized to the model's size (what ranking sends to the worker).
    rank_image: Option<RgbaImage>,
    pub score: Option<Result<RankScore, String>>,
    /// The sketch translated with this exemplar by "Run all", and its texture.
    pub result: Option<Result<RgbaImage, String>>,
    result_tex: Option<TextureHandle>,
}

/// What the loading thread sends, tagged with its batch.
enum Loaded {
    Entry(u64, Box<Entry>),
    Failed(u64, String),
    Done(u64),
}

/// What a ranking is computed for; a different key asks for a new ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct RankKey {
    pub sketch: (u64, u64),
    pub model: String,
    pub canny: CannyParams,
    pub batch: u64,
}

/// What a "Run all" is computed for: a change drops its results.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepKey {
    pub sketch: (u64, u64),
    pub model: String,
    /// Canny settings, sampler options and seed.
    pub params: String,
    pub batch: u64,
}

/// What the app should do about "Run all" this frame.
pub enum SweepDue {
    Nothing,
    /// Ask the worker for these entries (those without a result yet).
    Start(Vec<(usize, RgbaImage)>),
    /// The sketch or parameters changed: stop the sweep in flight, its results were dropped.
    Stale,
}

/// The state of "Run all".
#[derive(Default)]
struct Sweep {
    key: Option<SweepKey>,
    /// Results are wanted for every entry (until all came or the user stopped it).
    wanted: bool,
    in_flight: Option<u64>,
    /// Show results in place of the exemplars.
    show: bool,
    /// When "Run all" was clicked.
    asked: Option<Instant>,
}

/// What the gallery shows of the rest of the editor.
pub struct GalleryView {
    pub has_model: bool,
    pub has_sketch: bool,
    pub exemplar_version: u64,
}

pub struct GalleryPanel {
    pub open: bool,
    /// The user folder, remembered across restarts.
    pub folder: Option<PathBuf>,
    /// Typed folder path, offered when no file dialog can be shown.
    pub folder_text: Option<String>,
    entries: Vec<Entry>,
    /// Loading batch: a new one on a folder or model size change; older results are dropped.
    batch: u64,
    loading: bool,
    /// The size rank images are made at (the model's); `None` before a model is known.
    rank_size: Option<u32>,
    reload: bool,
    failed: Vec<String>,
    channel: (Sender<Loaded>, Receiver<Loaded>),
    /// The ranking in flight, and how many entries it scored so far.
    ranking: Option<u64>,
    scored: usize,
    /// The key of the last ranking asked (in flight or done); `None`: ask again.
    ranked: Option<RankKey>,
    /// The key seen last and since when (the debounce).
    seen: Option<(RankKey, Instant)>,
    /// The entry last used as exemplar, with the exemplar version it became.
    pub picked: Option<(PathBuf, u64)>,
    sweep: Sweep,
    /// The order shown while the pointer is over the gallery: a ranking that lands as the user
    /// reaches for a thumbnail must not move it from under the pointer.
    held: Option<Vec<usize>>,
}

impl GalleryPanel {
    pub fn new(folder: Option<PathBuf>) -> Self {
        Self {
            open: true,
            folder,
            folder_text: None,
            entries: Vec::new(),
            batch: 0,
            loading: false,
            rank_size: None,
            reload: true,
            failed: Vec::new(),
            channel: unbounded(),
            ranking: None,
            scored: 0,
            ranked: None,
            seen: None,
            picked: None,
            sweep: Sweep::default(),
            held: None,
        }
    }

    pub fn set_folder(&mut self, folder: Option<PathBuf>) {
        self.folder = folder;
        self.folder_text = None;
        self.reload = true;
    }

    pub fn batch(&self) -> u64 {
        self.batch
    }

    pub fn is_ranking(&self) -> bool {
        self.ranking.is_some()
    }

    pub fn is_loading(&self) -> bool {
        self.loading || self.reload
    }

    /// Entries best first: scored ones by score, then the others in listing order.
    pub fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        let score = |i: usize| self.entries[i].score.as_ref().and_then(|s| s.as_ref().ok());
        order.sort_by(|&a, &b| match (score(a), score(b)) {
            (Some(x), Some(y)) => RankScore::best_first(x, y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        order
    }

    /// The order on screen: [`Self::order`], or the one held while the pointer is over the
    /// gallery (scores and badges still update in place).
    pub fn shown_order(&self) -> Vec<usize> {
        match &self.held {
            Some(held) if held.len() == self.entries.len() => held.clone(),
            _ => self.order(),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Takes what the loading thread sent; starts a new batch when the folder or the model
    /// size changed.
    pub fn poll(&mut self, ctx: &egui::Context, model_size: Option<u32>) {
        if model_size.is_some() && model_size != self.rank_size {
            self.rank_size = model_size;
            self.reload = true;
        }
        if self.reload {
            self.reload = false;
            self.start_batch(ctx);
        }
        while let Ok(msg) = self.channel.1.try_recv() {
            match msg {
                Loaded::Entry(b, e) if b == self.batch => self.entries.push(*e),
                Loaded::Failed(b, why) if b == self.batch => self.failed.push(why),
                Loaded::Done(b) if b == self.batch => self.loading = false,
                _ => {} // an older batch
            }
        }
    }

    fn start_batch(&mut self, ctx: &egui::Context) {
        self.batch += 1;
        self.entries.clear();
        self.failed.clear();
        self.loading = true;
        self.ranking = None;
        self.ranked = None;
        let (tx, batch, size) = (self.channel.0.clone(), self.batch, self.rank_size);
        let (folder, ctx) = (self.folder.clone(), ctx.clone());
        std::thread::spawn(move || {
            let mut files = shipped_exemplars();
            if let Some(dir) = &folder {
                match folder_images(dir) {
                    Ok(f) => files.extend(f),
                    Err(e) => {
                        let _ = tx.send(Loaded::Failed(batch, e));
                    }
                }
            }
            for (path, name) in files {
                let msg = match load_entry(&path, name, size) {
                    Ok(e) => Loaded::Entry(batch, Box::new(e)),
                    Err(e) => Loaded::Failed(batch, e),
                };
                let _ = tx.send(msg);
                ctx.request_repaint();
            }
            let _ = tx.send(Loaded::Done(batch));
            ctx.request_repaint();
        });
    }

    /// Whether to rank now for `key`: it changed, then stayed the same for [`DEBOUNCE`], the
    /// images are loaded and nothing else is `busy` (a run, a stroke in progress). Returns
    /// `Err(wait)` when it should be asked again after `wait`.
    pub fn due(&mut self, key: RankKey, now: Instant, busy: bool) -> Result<bool, Duration> {
        if self.seen.as_ref().is_none_or(|(k, _)| *k != key) {
            self.seen = Some((key.clone(), now));
        }
        if self.ranked.as_ref() == Some(&key) || self.is_loading() || self.entries.is_empty() {
            return Ok(false);
        }
        let quiet = now.duration_since(self.seen.as_ref().map_or(now, |s| s.1));
        if quiet < DEBOUNCE {
            return Err(DEBOUNCE - quiet);
        }
        Ok(!busy)
    }

    /// The images to rank, by entry index.
    pub fn rank_inputs(&self) -> Vec<(usize, RgbaImage)> {
        let with_image = self.entries.iter().enumerate();
        with_image
            .filter_map(|(i, e)| e.rank_image.clone().map(|img| (i, img)))
            .collect()
    }

    /// "Run all" was clicked for `key`.
    pub fn want_sweep(&mut self) {
        self.sweep.wanted = true;
        self.sweep.show = true;
        self.sweep.asked = Some(Instant::now());
    }

    /// "Stop" was clicked: what came so far stays.
    pub fn stop_sweep(&mut self) {
        self.sweep.wanted = false;
        self.sweep.in_flight = None;
    }

    pub fn is_sweeping(&self) -> bool {
        self.sweep.wanted
    }

    /// Whether to start (or resume) a sweep now; drops the results when `key` changed.
    pub fn sweep_due(&mut self, key: SweepKey, busy: bool) -> SweepDue {
        if self.sweep.key.as_ref() != Some(&key) {
            let had = self.sweep.key.is_some();
            let running = self.sweep.in_flight.take().is_some();
            for e in &mut self.entries {
                (e.result, e.result_tex) = (None, None);
            }
            self.sweep.key = Some(key);
            if had {
                self.sweep.wanted = false;
                return if running {
                    SweepDue::Stale
                } else {
                    SweepDue::Nothing
                };
            }
        }
        if !self.sweep.wanted || self.sweep.in_flight.is_some() || busy || self.is_loading() {
            return SweepDue::Nothing;
        }
        let todo: Vec<_> = self
            .rank_inputs()
            .into_iter()
            .filter(|(i, _)| self.entries[*i].result.is_none())
            .collect();
        if todo.is_empty() {
            self.sweep.wanted = false;
            return SweepDue::Nothing;
        }
        SweepDue::Start(todo)
    }

    pub fn sweep_started(&mut self, sweep: u64) {
        self.sweep.in_flight = Some(sweep);
    }

    pub fn ranking_started(&mut self, ranking: u64, key: RankKey) {
        self.ranking = Some(ranking);
        self.scored = 0;
        self.ranked = Some(key);
    }

    pub fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Ranked { ranking, id, score } if Some(ranking) == self.ranking => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.score = Some(score);
                    self.scored += 1;
                }
            }
            WorkerEvent::RankDone { ranking, complete } if Some(ranking) == self.ranking => {
                self.ranking = None;
                if !complete {
                    self.ranked = None; // stopped by a run: rank again once idle
                }
            }
            WorkerEvent::Swept { sweep, id, result } if Some(sweep) == self.sweep.in_flight => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.result = Some(result);
                    e.result_tex = None;
                }
            }
            WorkerEvent::SweepDone { sweep, complete } if Some(sweep) == self.sweep.in_flight => {
                self.sweep.in_flight = None;
                // Stopped by a run: the rest follows once the editor is idle again.
                self.sweep.wanted &= !complete;
                if complete {
                    let n = self.entries.iter().filter(|e| e.result.is_some()).count();
                    let secs = self.sweep.asked.map_or(0.0, |t| t.elapsed().as_secs_f32());
                    tracing::info!("Run all: {n} results in {secs:.1} s");
                }
            }
            _ => {}
        }
    }

    /// The right side panel, or a thin strip to open it again.
    pub fn show(&mut self, ui: &mut egui::Ui, view: &GalleryView, actions: &mut Vec<Action>) {
        let collapsed = egui::Panel::right("gallery-collapsed")
            .resizable(false)
            .exact_size(28.0);
        let expanded = egui::Panel::right("gallery")
            .resizable(true)
            .default_size(190.0)
            .min_size(90.0);
        let before = self.open;
        let mut open = before;
        egui::Panel::show_switched(ui, &mut open, collapsed, expanded, |ui, expanded| {
            if expanded {
                self.ui(ui, view, actions);
            } else if ui
                .button("«")
                .on_hover_text("Show the exemplar gallery")
                .clicked()
            {
                self.open = true;
            }
        });
        // Dragging the panel's edge may open or close it too.
        if open != before {
            self.open = open;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, view: &GalleryView, actions: &mut Vec<Action>) {
        ui.horizontal(|ui| {
            ui.strong("Gallery");
            // Counts, not spinners, while the worker computes: see the toolbar's run progress.
            if self.ranking.is_some() {
                ui.weak(format!("ranking {}/{}", self.scored, self.entries.len()));
            } else if self.is_loading() {
                ui.spinner();
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .small_button("»")
                    .on_hover_text("Hide the gallery")
                    .clicked()
                {
                    self.open = false;
                }
            });
        });
        self.folder_ui(ui, actions);
        self.sweep_ui(ui, view, actions);
        let ranked = self.entries.iter().any(|e| e.score.is_some());
        let hint = match (view.has_model, view.has_sketch, ranked) {
            (false, _, _) => "Load a model to rank these for the sketch.",
            (true, false, _) => "Draw a sketch to rank these for it.",
            (true, true, true) => {
                "Best fit first: % = how alike the outlines are, at any size and place (hover for \
                 the model's match score)."
            }
            (true, true, false) => "Ranked for the sketch when you pause drawing.",
        };
        ui.weak(hint);
        for f in self.failed.iter().take(3) {
            ui.colored_label(Color32::from_rgb(230, 80, 70), f);
        }
        ui.separator();
        let over = ui
            .ctx()
            .pointer_hover_pos()
            .is_some_and(|p| ui.max_rect().contains(p));
        let order = self.shown_order();
        self.held = over.then(|| order.clone());
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                for i in order {
                    self.thumbnail(ui, i, view, actions);
                }
            });
        });
    }

    fn folder_ui(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        ui.horizontal(|ui| {
            if ui
                .button("Add folder...")
                .on_hover_text("Also show the images of a folder (remembered)")
                .clicked()
            {
                actions.push(Action::Dialog(Dialog::GalleryFolder));
            }
            let name = self.folder.as_deref().map(crate::ui::file_name);
            if let Some(name) = name {
                ui.weak(name).on_hover_text(self.folder_display());
                if ui
                    .small_button("x")
                    .on_hover_text("Remove the folder")
                    .clicked()
                {
                    self.set_folder(None);
                }
            }
        });
        let mut chosen = None;
        if let Some(text) = &mut self.folder_text {
            ui.horizontal(|ui| {
                let edit = egui::TextEdit::singleline(text).hint_text("folder path");
                let r = ui.add_sized([ui.available_width() - 40.0, 18.0], edit);
                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button("Use").clicked() || enter {
                    chosen = Some(PathBuf::from(text.trim()));
                }
            });
        }
        if let Some(dir) = chosen {
            self.set_folder(Some(dir));
        }
    }

    /// "Run all" and its progress.
    fn sweep_ui(&mut self, ui: &mut egui::Ui, view: &GalleryView, actions: &mut Vec<Action>) {
        let n = self.entries.len();
        let done = self.entries.iter().filter(|e| e.result.is_some()).count();
        ui.horizontal(|ui| {
            // Kept narrow: a wider row would widen the panel and squeeze the central one.
            if self.sweep.wanted {
                ui.weak(format!("running {done}/{n}"));
                if ui.small_button("Stop").clicked() {
                    actions.push(Action::Sweep(false));
                }
                return;
            }
            let can = view.has_model && view.has_sketch && n > 0;
            let tip = "Translate the sketch with every exemplar here (current parameters and \
                       seed); each result shows in place of its exemplar, the exemplar in its \
                       corner. Click one to use its exemplar. A run pauses it; a change of \
                       sketch or parameters drops the results.";
            let button = ui.add_enabled(can, egui::Button::new("Run all"));
            if button.on_hover_text(tip).clicked() {
                actions.push(Action::Sweep(true));
            }
            if done > 0 {
                ui.checkbox(&mut self.sweep.show, "results");
            }
        });
    }

    fn folder_display(&self) -> String {
        self.folder
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string())
    }

    fn thumbnail(
        &mut self,
        ui: &mut egui::Ui,
        i: usize,
        view: &GalleryView,
        actions: &mut Vec<Action>,
    ) {
        let (rect, response) =
            ui.allocate_exact_size(Vec2::new(THUMB, THUMB + 12.0), Sense::click());
        let e = &mut self.entries[i];
        response.widget_info(|| WidgetInfo::labeled(Role::Button, true, &e.name));
        if !ui.is_rect_visible(rect) {
            return;
        }
        let tex = e.tex.get_or_insert_with(|| {
            let opts = egui::TextureOptions::LINEAR;
            ui.ctx().load_texture(
                format!("gallery-{}", e.path.display()),
                color_image(&e.thumb),
                opts,
            )
        });
        let img_rect = fit(
            Rect::from_min_size(rect.min, Vec2::splat(THUMB)),
            e.thumb.dimensions(),
        );
        let painter = ui.painter_at(rect);
        let uv = Rect::from_min_max([0.0, 0.0].into(), [1.0, 1.0].into());
        let result = match (&e.result, self.sweep.show) {
            (Some(Ok(img)), true) => Some(e.result_tex.get_or_insert_with(|| {
                let name = format!("gallery-result-{}", e.path.display());
                ui.ctx()
                    .load_texture(name, color_image(img), egui::TextureOptions::LINEAR)
            })),
            _ => None,
        };
        match result {
            // The result fills the square; its exemplar sits in the corner.
            Some(res) => {
                let square = Rect::from_min_size(rect.min, Vec2::splat(THUMB));
                painter.image(res.id(), square, uv, Color32::WHITE);
                // Bottom left: the score badge takes the bottom right.
                let inset = Rect::from_min_max(
                    square.lerp_inside(Vec2::new(0.0, 0.62)),
                    square.lerp_inside(Vec2::new(0.38, 1.0)),
                );
                painter.rect_filled(inset.expand(1.0), 0.0, Color32::WHITE);
                painter.image(
                    tex.id(),
                    fit(inset, e.thumb.dimensions()),
                    uv,
                    Color32::WHITE,
                );
            }
            None => {
                painter.image(tex.id(), img_rect, uv, Color32::WHITE);
            }
        }
        let current = self
            .picked
            .as_ref()
            .is_some_and(|(p, v)| *p == e.path && *v == view.exemplar_version);
        let visuals = ui.visuals();
        let stroke = match (current, response.hovered()) {
            (true, _) => Stroke::new(3.0, visuals.selection.stroke.color),
            (false, true) => Stroke::new(1.0, visuals.strong_text_color()),
            (false, false) => Stroke::new(1.0, visuals.weak_text_color().gamma_multiply(0.5)),
        };
        let square = Rect::from_min_size(rect.min, Vec2::splat(THUMB));
        painter.rect_stroke(square, 2.0, stroke, egui::StrokeKind::Inside);
        painter.text(
            rect.center_bottom(),
            egui::Align2::CENTER_BOTTOM,
            &e.name,
            FontId::proportional(10.0),
            visuals.text_color(),
        );
        if let Some(score) = &e.score {
            badge(&painter, square, score);
        }
        let tip = tooltip(e);
        if response.on_hover_text(tip).clicked() {
            actions.push(Action::UseExemplar(e.path.clone()));
        }
    }
}

/// What hovering a thumbnail tells: its name, both ranking scores, and Run all's outcome.
fn tooltip(e: &Entry) -> String {
    let result_tip = match &e.result {
        Some(Ok(_)) => "\nThe sketch translated with it is shown (\"Run all\")",
        Some(Err(_)) => "\n\"Run all\" failed for it",
        None => "",
    };
    let tip = match &e.score {
        Some(Ok(s)) => format!(
            "{}\noutline {:.0}% alike\n{:.0}% of the sketch's cells pass the cycle check\nmean best correlation {:.3}\nClick to use as exemplar",
            e.name,
            s.shape * 100.0,
            s.cycle_share * 100.0,
            s.mean_max_corr
        ),
        Some(Err(why)) => format!("{}\nnot ranked: {why}", e.name),
        None => format!("{}\nClick to use as exemplar", e.name),
    };
    match &e.result {
        Some(Err(why)) => format!("{tip}{result_tip}: {why}"),
        _ => format!("{tip}{result_tip}"),
    }
}

/// The score as a percentage in the thumbnail's corner.
fn badge(painter: &egui::Painter, square: Rect, score: &Result<RankScore, String>) {
    let (text, fill) = match score {
        Ok(s) => (
            format!("{:.0}%", s.shape * 100.0),
            Color32::from_black_alpha(190),
        ),
        Err(_) => ("!".into(), Color32::from_rgb(200, 60, 50)),
    };
    let galley = painter.layout_no_wrap(text, FontId::proportional(10.0), Color32::WHITE);
    let size = galley.size() + Vec2::new(6.0, 2.0);
    let r = Rect::from_min_size(square.right_bottom() - size - Vec2::splat(2.0), size);
    painter.rect_filled(r, 3.0, fill);
    painter.galley(r.min + Vec2::new(3.0, 1.0), galley, Color32::WHITE);
}

/// `size` fitted into `square`, centred.
fn fit(square: Rect, (w, h): (u32, u32)) -> Rect {
    let scale = square.width() / w.max(h).max(1) as f32;
    Rect::from_center_size(square.center(), Vec2::new(w as f32, h as f32) * scale)
}

/// Where the shipped assets are: next to the working directory, else the source tree.
fn assets_dir() -> Option<PathBuf> {
    crate::params::asset_dirs().into_iter().find(|d| d.is_dir())
}

/// `assets/*_exemplar.png` and `assets/drawn/*_exemplar.png`, with their shown names.
fn shipped_exemplars() -> Vec<(PathBuf, String)> {
    let Some(dir) = assets_dir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (sub, prefix) in [(dir.clone(), ""), (dir.join("drawn"), "drawn/")] {
        let Ok(read) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut found: Vec<(PathBuf, String)> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix("_exemplar.png")?
                    .to_string();
                Some((p, format!("{prefix}{name}")))
            })
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

/// The images of `dir` (by extension), sorted, at most [`MAX_FOLDER_IMAGES`].
fn folder_images(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let read = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(ext))
        })
        .collect();
    files.sort();
    files.truncate(MAX_FOLDER_IMAGES);
    Ok(files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            let name = stem.unwrap_or_default();
            (p, name)
        })
        .collect())
}

/// Decodes one image (on the loading thread): its thumbnail and, with a model size, the
/// image at that size for ranking (squashed to a square, as a run resizes the exemplar).
fn load_entry(path: &Path, name: String, size: Option<u32>) -> Result<Entry, String> {
    let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let thumb = img.thumbnail(THUMB_PIXELS, THUMB_PIXELS).to_rgba8();
    let rank_image = size.map(|s| img.resize_exact(s, s, FilterType::Triangle).to_rgba8());
    Ok(Entry {
        path: path.to_path_buf(),
        name,
        thumb,
        tex: None,
        rank_image,
        score: None,
        result: None,
        result_tex: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_exemplars_are_listed_with_short_names() {
        let names: Vec<String> = shipped_exemplars().into_iter().map(|(_, n)| n).collect();
        assert!(names.contains(&"cat".to_string()), "{names:?}");
        assert!(names.contains(&"drawn/cat".to_string()), "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with(".png")));
    }

    #[test]
    fn a_folder_lists_its_images_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.JPG", "a.png", "notes.txt", "c.webp"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let names: Vec<String> = folder_images(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(folder_images(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn ranking_waits_for_quiet_and_is_asked_once_per_key() {
        let mut g = GalleryPanel::new(None);
        g.reload = false;
        g.entries
            .push(load_entry(&shipped_exemplars()[0].0, "x".into(), Some(8)).unwrap());
        let key = |v| RankKey {
            sketch: (v, 0),
            model: "m".into(),
            canny: CannyParams::celeba(),
            batch: 1,
        };
        let t0 = Instant::now();
        assert!(g.due(key(1), t0, false).is_err(), "right after an edit");
        let later = t0 + DEBOUNCE;
        assert_eq!(g.due(key(1), later, true), Ok(false), "busy");
        assert_eq!(g.due(key(1), later, false), Ok(true));
        g.ranking_started(7, key(1));
        assert_eq!(
            g.due(key(1), later + DEBOUNCE, false),
            Ok(false),
            "asked already"
        );
        // Stopped by a run: asked again for the same key.
        g.on_worker_event(WorkerEvent::RankDone {
            ranking: 7,
            complete: false,
        });
        assert_eq!(g.due(key(1), later + DEBOUNCE, false), Ok(true));
        // A new edit restarts the wait.
        assert!(g.due(key(2), later + DEBOUNCE, false).is_err());
    }
}
