//! The run and its steps: the timeline, the step slider, and the step view (r~n, R, M, M over
//! r~n, and the correspondence probe). Holds the frames of the current run as images only; the
//! decodes and probe rows it needs are asked of the worker through [`Action`]s.
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui::{load::SizedTexture, Color32, Pos2, Rect, Sense, Stroke, TextureHandle, Vec2};
use image::RgbaImage;

use super::{texture, Action};
use crate::sampling::midm::StepKind;
use crate::ui::compose;
use crate::worker::{DecodedStep, StepFrame};

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

/// Textures of one received step (previews until the exact decode arrives).
struct FrameTextures {
    pred: Option<TextureHandle>,
    warped: Option<TextureHandle>,
    mask: Option<TextureHandle>,
    overlay: Option<TextureHandle>,
}

/// What the steps panel is shown with.
pub struct StepsView<'a> {
    pub exemplar: Option<&'a RgbaImage>,
    pub model_size: u32,
    /// The width the steps may take.
    pub width: f32,
}

#[derive(Default)]
pub struct StepsPanel {
    pub generation: Option<u64>,
    pub running: bool,
    run_started: Option<Instant>,
    pub timings: RunTimings,
    pub frames: Vec<StepFrame>,
    tex: Vec<FrameTextures>,
    pub selected: usize,
    follow: bool,
    /// The probed latent pixel (row, column), while the pointer is over an output image.
    pub probe: Option<(usize, usize)>,
    probe_tex: Option<(TextureHandle, (usize, usize, usize))>,
    /// The worker's answer for (pixel, step), and the request in flight.
    probe_heat: Option<((usize, usize), usize, Vec<f32>)>,
    probe_requested: Option<((usize, usize), usize)>,
    /// Steps whose decode was asked of the worker.
    pub pending_decodes: HashSet<usize>,
    /// A steps sheet waiting for the remaining decodes.
    pub sheet_pending: Option<PathBuf>,
    /// The frames are the previous run's, shown until the new run's first step arrives (so
    /// that live mode does not flash an empty panel on every stroke).
    stale: bool,
    /// The running run was superseded (cancelled by an edit or replaced) and its figures logged.
    pub superseded: bool,
}

impl StepsPanel {
    /// A new run (`generation`) started: its steps replace the previous run's as they come.
    pub fn start(&mut self, generation: u64) {
        self.generation = Some(generation);
        self.running = true;
        self.superseded = false;
        self.run_started = Some(Instant::now());
        self.timings = RunTimings::default();
        self.pending_decodes.clear();
        self.sheet_pending = None;
        self.probe_requested = None;
        match self.frames.is_empty() {
            true => self.clear_frames(),
            false => self.stale = true,
        }
    }

    /// Forget the previous run's frames (at the new run's first step).
    fn clear_frames(&mut self) {
        self.frames.clear();
        self.tex.clear();
        self.selected = 0;
        self.follow = true;
        self.probe_tex = None;
        self.probe_heat = None;
        self.stale = false;
    }

    pub fn select(&mut self, i: usize) {
        if !self.frames.is_empty() {
            self.selected = i.min(self.frames.len() - 1);
            self.follow = self.selected + 1 == self.frames.len();
        }
    }

    /// The final image of the current run, once it is there.
    pub fn final_image(&self) -> Option<&RgbaImage> {
        match self.stale {
            true => None, // the previous run's, made with other inputs
            false => self.frames.iter().rev().find_map(|f| f.image.as_ref()),
        }
    }

    /// The latest probe row the worker sent for the shown step (see
    /// [`crate::worker::WorkerEvent::Probe`]).
    pub fn probe_heat(&self) -> Option<Vec<f32>> {
        let (_, i, heat) = self.probe_heat.as_ref()?;
        (*i == self.selected).then(|| heat.clone())
    }

    pub fn on_probe(&mut self, index: usize, pixel: (usize, usize), heat: Option<Vec<f32>>) {
        self.probe_requested = None;
        self.probe_tex = None;
        self.probe_heat = heat.map(|h| (pixel, index, h));
    }

    pub fn push(&mut self, ctx: &egui::Context, frame: StepFrame) {
        if self.stale {
            self.clear_frames();
        }
        if self.frames.is_empty() {
            self.timings.first_step = self.run_started.map(|s| s.elapsed());
            self.timings.first_step_parts =
                Some((frame.elapsed, frame.convert_time, frame.sent_at.elapsed()));
        }
        let i = self.frames.len();
        self.timings.convert_total += frame.convert_time;
        let warped = frame
            .warped
            .as_ref()
            .map(|w| texture(ctx, &format!("step{i}-R"), w));
        let mask = frame
            .mask
            .as_ref()
            .map(|m| texture(ctx, &format!("step{i}-M"), m));
        self.tex.push(FrameTextures {
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

    /// The exact decodes of step `index` replace its previews.
    pub fn on_decoded(&mut self, ctx: &egui::Context, index: usize, decoded: DecodedStep) {
        self.pending_decodes.remove(&index);
        let Some(f) = self.frames.get_mut(index) else {
            return;
        };
        f.pred_x0 = Some(decoded.pred_x0);
        if decoded.warped.is_some() {
            f.warped = decoded.warped;
        }
        f.exact = true;
        let warped = f.warped.as_ref();
        self.tex[index].warped = warped.map(|w| texture(ctx, &format!("step{index}-R"), w));
        self.make_pred_textures(ctx, index);
    }

    /// The run finished: record the final-image latency.
    pub fn finish(&mut self) {
        self.running = false;
        self.timings.final_image = self.run_started.map(|s| s.elapsed());
    }

    /// Textures of the decoded r~n of step `i` and of its mask overlay.
    fn make_pred_textures(&mut self, ctx: &egui::Context, i: usize) {
        let frame = &self.frames[i];
        let Some(shown) = frame.image.as_ref().or(frame.pred_x0.as_ref()) else {
            return;
        };
        let pred = texture(ctx, &format!("step{i}-pred"), shown);
        // Steps without a matching keep the mask of the latest one.
        let mask_src = self.frames[..=i].iter().rev().find_map(|f| f.mask.as_ref());
        let overlay = mask_src.map(|m| {
            texture(
                ctx,
                &format!("step{i}-overlay"),
                &compose::mask_overlay(shown, m),
            )
        });
        self.tex[i].pred = Some(pred);
        self.tex[i].overlay = overlay;
    }

    /// Ask for the exact decode of step `i` if it is not decoded or asked for yet.
    pub fn want_decode(&mut self, i: usize, actions: &mut Vec<Action>) {
        if !self.stale
            && self.frames.get(i).is_some_and(|f| !f.exact)
            && self.pending_decodes.insert(i)
        {
            actions.push(Action::Decode(i));
        }
    }

    /// Ask for the probe row of the probed pixel at the shown step, once per change.
    pub fn want_probe(&mut self, actions: &mut Vec<Action>) {
        let Some(pixel) = self.probe else { return };
        let key = (pixel, self.selected);
        let answered = self
            .probe_heat
            .as_ref()
            .is_some_and(|(p, i, _)| (*p, *i) == key);
        let fresh = !self.stale && !self.frames.is_empty();
        if !answered && self.probe_requested != Some(key) && fresh {
            actions.push(Action::Probe(self.selected, pixel));
            self.probe_requested = Some(key);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, view: &StepsView, actions: &mut Vec<Action>) {
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
        let frames = &self.frames;
        let slider = ui.add(
            egui::Slider::new(&mut sel, 0..=n - 1)
                .text("Step")
                .custom_formatter(|v, _| {
                    frames
                        .get(v as usize)
                        .map(|f| f.kind.label())
                        .unwrap_or_default()
                }),
        );
        if slider.changed() {
            self.select(sel);
        }
        // While a run streams and the view follows it, frames fly past and show their previews:
        // decoding each (queued behind the run on the worker) would only spend CPU on frames no
        // longer shown.
        if !(self.running && self.follow) {
            self.want_decode(self.selected, actions);
        }
        self.want_probe(actions);
        self.update_probe_texture(ui.ctx(), view);
        let frame = &self.frames[self.selected];
        ui.label(format!(
            "{}  (event {}/{}{}, {:.0} ms)",
            frame.kind.describe(),
            frame.index + 1,
            frame.total,
            frame.t.map(|t| format!(", t = {t}")).unwrap_or_default(),
            frame.elapsed.as_secs_f64() * 1e3,
        ));
        // On a line of its own: with both framings and a cleared ground it is long.
        let note = framing_note(frame);
        if !note.is_empty() {
            ui.label(egui::RichText::new(note).small());
        }
        // Five views side by side in the width the window leaves (no horizontal scrolling).
        let gaps = 4.0 * ui.spacing().item_spacing.x;
        let fit = ((view.width.min(ui.available_width()) - gaps) / 5.0).floor();
        let side = (view.model_size as f32 * 2.5)
            .clamp(128.0, 256.0)
            .min(fit)
            .max(48.0);
        let hovered = ui.horizontal_top(|ui| self.views(ui, side)).inner;
        if hovered.is_some() || self.probe.is_some() {
            self.probe = hovered;
        }
    }

    /// The five images of the shown step; returns the latent pixel under the pointer.
    fn views(&self, ui: &mut egui::Ui, side: f32) -> Option<(usize, usize)> {
        let sel = self.selected;
        let frame = &self.frames[sel];
        let size = Vec2::splat(side);
        let latent = frame.latent_size;
        let mut hovered = None;
        let first = match (frame.image.is_some(), frame.exact) {
            (true, _) => "output",
            (false, true) => "r~n (x0 estimate)",
            (false, false) => "r~n (x0 estimate, preview)",
        };
        let mut show = |ui: &mut egui::Ui, title: &str, t: Option<egui::TextureId>, probe: bool| {
            ui.vertical(|ui| {
                title_label(ui, title, side);
                let Some(t) = t else {
                    return placeholder(ui, size, "no matching\nat this step");
                };
                let r = ui.add(
                    egui::Image::from_texture(SizedTexture::new(t, size)).sense(Sense::hover()),
                );
                if !probe {
                    return;
                }
                let cell = r.rect.width() / latent as f32;
                if let Some((pr, pc)) = self.probe {
                    let min = r.rect.min + Vec2::new(pc as f32, pr as f32) * cell;
                    let mark = Rect::from_min_size(min, Vec2::splat(cell));
                    let stroke = Stroke::new(2.0, Color32::YELLOW);
                    ui.painter()
                        .rect_stroke(mark, 0.0, stroke, egui::StrokeKind::Outside);
                }
                if let Some(p) = r.hover_pos() {
                    let u = ((p.x - r.rect.min.x) / r.rect.width()).clamp(0.0, 0.999);
                    let v = ((p.y - r.rect.min.y) / r.rect.height()).clamp(0.0, 0.999);
                    hovered = Some(((v * latent as f32) as usize, (u * latent as f32) as usize));
                }
            });
        };
        match self.tex[sel].pred.as_ref() {
            Some(t) => show(ui, first, Some(t.id()), true),
            None => {
                ui.vertical(|ui| {
                    title_label(ui, first, side);
                    placeholder(ui, size, "decoding...");
                });
            }
        }
        // Steps without a matching show the latest R and M still in effect.
        let latest = |pick: &dyn Fn(&FrameTextures) -> Option<egui::TextureId>| {
            (0..=sel)
                .rev()
                .find_map(|i| pick(&self.tex[i]).map(|t| (i, t)))
        };
        let title = |name: &str, found: Option<(usize, egui::TextureId)>, decoded: bool| {
            let preview = match found {
                Some((i, _)) if decoded && !self.frames[i].exact => ", preview",
                _ => "",
            };
            match found {
                Some((i, _)) if i != sel => {
                    format!("{name} (from {}{preview})", self.frames[i].kind.label())
                }
                _ if preview.is_empty() => name.to_string(),
                _ => format!("{name} (preview)"),
            }
        };
        let r = latest(&|t| t.warped.as_ref().map(|t| t.id()));
        show(
            ui,
            &title("R (warped exemplar)", r, true),
            r.map(|x| x.1),
            false,
        );
        let m = latest(&|t| t.mask.as_ref().map(|t| t.id()));
        show(
            ui,
            &title("M (confidence)", m, false),
            m.map(|x| x.1),
            false,
        );
        let overlay = self.tex[sel].overlay.as_ref().map(|t| t.id());
        show(ui, "M over r~n", overlay, true);
        ui.vertical(|ui| {
            title_label(ui, "match in exemplar", side);
            match self.probe.and(self.probe_tex.as_ref()) {
                Some((tex, _)) => {
                    ui.add(egui::Image::from_texture(SizedTexture::new(tex.id(), size)));
                }
                None => placeholder(
                    ui,
                    size,
                    "hover r~n or the output\nto see where a pixel\nis matched",
                ),
            }
        });
        hovered
    }

    /// Rebuild the probe heat-map texture when the answer for the probed pixel arrives.
    fn update_probe_texture(&mut self, ctx: &egui::Context, view: &StepsView) {
        let Some((r, c)) = self.probe else { return };
        let key = (r, c, self.selected);
        if self.probe_tex.as_ref().is_some_and(|(_, k)| *k == key) {
            return;
        }
        let answer = self.probe_heat.as_ref();
        let heat = answer.filter(|(p, i, _)| (*p, *i) == ((r, c), self.selected));
        let (Some((_, _, heat)), Some(ex)) = (heat, view.exemplar) else {
            self.probe_tex = None;
            return;
        };
        let img = compose::probe_image(ex, heat, view.model_size);
        self.probe_tex = Some((texture(ctx, "probe", &img), key));
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
            painter.rect_filled(r, 2.0, kind_color(self.frames.get(i).map(|f| f.kind)));
            if i == self.selected {
                let stroke = Stroke::new(2.0, Color32::WHITE);
                painter.rect_stroke(r, 2.0, stroke, egui::StrokeKind::Outside);
            }
        }
        if (response.dragged() || response.clicked()) && !self.frames.is_empty() {
            if let Some(p) = response.interact_pointer_pos() {
                let i = ((p.x - rect.min.x) / cell).floor().max(0.0) as usize;
                self.select(i.min(self.frames.len() - 1));
            }
        }
    }
}

fn kind_color(kind: Option<StepKind>) -> Color32 {
    match kind {
        None => Color32::from_gray(50),
        Some(StepKind::InitialWarp) => Color32::from_rgb(70, 120, 220),
        Some(StepKind::Interleaved { rewarped: true, .. }) => Color32::from_rgb(230, 140, 40),
        Some(StepKind::Interleaved { .. }) => Color32::from_rgb(200, 170, 80),
        Some(StepKind::Refine { .. }) => Color32::from_rgb(80, 170, 90),
        Some(StepKind::Final) => Color32::from_gray(230),
    }
}

/// A view's title, cut to the view's width (the whole of it on hover).
fn title_label(ui: &mut egui::Ui, title: &str, width: f32) {
    ui.set_max_width(width);
    ui.add(egui::Label::new(title).truncate())
        .on_hover_text(title);
}

fn placeholder(ui: &mut egui::Ui, size: Vec2, text: &str) {
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let stroke = Stroke::new(1.0, Color32::DARK_GRAY);
    ui.painter()
        .rect_stroke(rect, 0.0, stroke, egui::StrokeKind::Inside);
    ui.painter().text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        text,
        egui::FontId::proportional(12.0),
        Color32::GRAY,
    );
}

/// What the steps panel says of what the model did to the inputs
/// ([`crate::sampling::midm::preparation_note`], as `midm translate` says it).
fn framing_note(frame: &StepFrame) -> String {
    crate::sampling::midm::preparation_note(
        frame.drawing_gaps_closed,
        frame.frame_scale,
        frame.exemplar_frame_scale,
        frame.exemplar_ground_cleared,
    )
}
