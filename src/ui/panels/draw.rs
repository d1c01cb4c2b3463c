//! The drawing panel: the condition canvas (and, for part-label models, the exemplar's traced
//! parts), brush / eraser, layers, undo / redo, loading edge maps.
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};
use image::{GrayImage, RgbaImage};

use super::canvas_view::CanvasView;
use super::{Action, Dialog};
use crate::image::PARTS;
use crate::sampling::frame::Frame;
use crate::sampling::gaps::{close_passes, GapClosing};
use crate::ui::canvas::{Canvas, Tool};
use crate::ui::compose;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawTarget {
    Condition,
    ExemplarParts,
}

/// What the drawing panel is shown with.
pub struct DrawView<'a> {
    pub label_nc: usize,
    /// The model's `midms.frame_drawing` (0: none): with "show model input", the part of the
    /// canvas a small drawing's frame takes is outlined.
    pub frame_drawing: f64,
    /// The model's gap closings (`midms.close_gaps`, `midms.close_wide_gaps`; empty: none): with
    /// "show model input", the pixels by which the model closes a gap in an outline are shown.
    pub gap_closings: &'a [GapClosing],
    /// The exemplar image, its name and version (its edges can become the condition, and its
    /// parts are traced over it).
    pub exemplar: Option<(&'a RgbaImage, &'a str, u64)>,
    pub exemplar_edges: Option<&'a GrayImage>,
}

pub struct DrawPanel {
    pub canvas: Canvas,
    pub exemplar_parts: Canvas,
    pub target: DrawTarget,
    pub tool: Tool,
    pub brush_size: f32,
    pub layer: usize,
    pub zoom: f32,
    /// What the condition came from, for the export metadata (`None` = drawn).
    pub condition_name: Option<String>,
    /// Show the binary model-size raster the model gets instead of the smooth display.
    pub show_model_input: bool,
    line_start: Option<(f32, f32)>,
    stroking: bool,
    view: CanvasView,
    /// [`model_input`] of the condition, kept for its canvas generation and version and the
    /// model's settings (rasterised, closed and searched once per edit, not every frame).
    model_input: Option<(InputKey, ModelInput)>,
    /// Where the canvas was drawn in the last frame (screen points).
    pub rect: Option<Rect>,
}

/// Colours of the canvas layers: edges black, parts distinct hues.
pub fn layer_color(layer: usize) -> Color32 {
    let [r, g, b] = compose::layer_rgb(layer);
    Color32::from_rgb(r, g, b)
}

fn layer_name(layer: usize) -> &'static str {
    if layer == 0 {
        "edges"
    } else {
        PARTS[layer - 1]
    }
}

/// Canvas zoom that shows a `size`-pixel condition at 256 screen pixels (4x for the 64-pixel
/// models, 2x for 128), whole steps so every canvas pixel is a square of screen pixels.
pub fn fit_zoom(size: u32) -> f32 {
    (256 / size.max(1)).clamp(1, 16) as f32
}

impl DrawPanel {
    pub fn new(canvas: Canvas, exemplar_parts: Canvas, condition_name: Option<String>) -> Self {
        Self {
            zoom: fit_zoom(canvas.size()),
            canvas,
            exemplar_parts,
            target: DrawTarget::Condition,
            tool: Tool::Brush,
            brush_size: 3.0,
            layer: 0,
            condition_name,
            show_model_input: false,
            line_start: None,
            stroking: false,
            view: CanvasView::default(),
            model_input: None,
            rect: None,
        }
    }

    pub fn active_mut(&mut self) -> &mut Canvas {
        match self.target {
            DrawTarget::Condition => &mut self.canvas,
            DrawTarget::ExemplarParts => &mut self.exemplar_parts,
        }
    }

    /// Resample both canvases to a model's resolution; `refit` also resets the zoom, so the
    /// canvas keeps its on-screen size.
    pub fn resize(&mut self, size: u32, refit: bool) {
        if self.canvas.size() != size {
            self.canvas = self.canvas.resized(size);
            self.exemplar_parts = self.exemplar_parts.resized(size);
            if refit {
                self.zoom = fit_zoom(size);
            }
        }
    }

    /// A stroke is in progress on either canvas (a shift-dragged line changes nothing until
    /// it is dropped, so it does not count).
    pub fn drawing(&self) -> bool {
        self.canvas.drawing() || self.exemplar_parts.drawing()
    }

    /// Edits of the inputs (to cancel a run whose result would no longer match them).
    pub fn version(&self) -> (u64, u64) {
        (self.canvas.version(), self.exemplar_parts.version())
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, view: &DrawView, actions: &mut Vec<Action>) {
        let multi = view.label_nc > 1;
        ui.horizontal(|ui| {
            ui.strong("Condition");
            if multi {
                ui.selectable_value(&mut self.target, DrawTarget::Condition, "sketch");
                let parts = DrawTarget::ExemplarParts;
                ui.selectable_value(&mut self.target, parts, "trace exemplar parts");
            }
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tool, Tool::Brush, "Brush");
            ui.selectable_value(&mut self.tool, Tool::Eraser, "Eraser");
            let size = egui::Slider::new(&mut self.brush_size, 1.0..=12.0).step_by(1.0);
            ui.add(size.text("size"));
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
        ui.horizontal(|ui| self.edit_buttons(ui));
        ui.horizontal(|ui| {
            if ui.button("Load edge map...").clicked() {
                actions.push(Action::Dialog(Dialog::OpenEdgeMap));
            }
            if ui.button("Edges from photo...").clicked() {
                actions.push(Action::Dialog(Dialog::EdgesFromPhoto));
            }
            let of_exemplar = egui::Button::new("Edges of exemplar");
            if ui
                .add_enabled(view.exemplar.is_some(), of_exemplar)
                .clicked()
            {
                if let (Some(e), Some((_, name, _))) = (view.exemplar_edges, view.exemplar) {
                    self.canvas.set_layer(0, e.clone());
                    self.condition_name = Some(format!("edges of {name}"));
                }
            }
        });
        self.canvas_widget(ui, view);
        ui.weak("Shift-drag: straight line");
    }

    fn edit_buttons(&mut self, ui: &mut egui::Ui) {
        let (can_undo, can_redo) = {
            let c = self.active_mut();
            (c.can_undo(), c.can_redo())
        };
        let undo = egui::Button::new("Undo");
        if ui
            .add_enabled(can_undo, undo)
            .on_hover_text("Ctrl+Z")
            .clicked()
        {
            self.active_mut().undo();
        }
        let redo = egui::Button::new("Redo");
        if ui
            .add_enabled(can_redo, redo)
            .on_hover_text("Ctrl+Shift+Z")
            .clicked()
        {
            self.active_mut().redo();
        }
        if ui.button("Clear").clicked() {
            self.active_mut().clear();
            if self.target == DrawTarget::Condition {
                self.condition_name = None;
            }
        }
        ui.add(egui::Slider::new(&mut self.zoom, 1.0..=16.0).text("zoom"));
        ui.checkbox(&mut self.show_model_input, "show model input")
            .on_hover_text(
                "The binary model-size raster, exactly as the model gets it; a small drawing is \
                 scaled up to fill the model's frame, the square outlined",
            );
    }

    fn canvas_widget(&mut self, ui: &mut egui::Ui, view: &DrawView) {
        let size = self.active_mut().size() as f32;
        let display = Vec2::splat(size * self.zoom);
        let (response, painter) = ui.allocate_painter(display, Sense::click_and_drag());
        let rect = response.rect;
        self.rect = Some(rect);
        let (canvas, background) = match self.target {
            DrawTarget::Condition => (&self.canvas, None),
            DrawTarget::ExemplarParts => (&self.exemplar_parts, view.exemplar.map(|e| (e.0, e.2))),
        };
        let model_input = self.show_model_input;
        self.view
            .paint(&painter, rect, canvas, background, model_input);
        let input = match (model_input, self.target, view.label_nc) {
            (true, DrawTarget::Condition, 1) => {
                self.condition_input(view.frame_drawing, view.gap_closings)
            }
            _ => ModelInput::default(),
        };
        let blue = Color32::from_rgb(0, 140, 255);
        paint_bridges(&painter, rect, self.zoom, &input.bridges, blue);
        if let Some((scale, [top, left, side])) = input.frame {
            let to_screen = |v: f64| v as f32 * self.zoom;
            let square = Rect::from_min_size(
                rect.min + Vec2::new(to_screen(left), to_screen(top)),
                Vec2::splat(to_screen(side)),
            );
            painter.rect_stroke(
                square,
                0.0,
                Stroke::new(1.5, blue),
                egui::StrokeKind::Middle,
            );
            let label = format!("the model's frame ({scale:.1}x)");
            // Above the square where the canvas has room, else just inside it.
            let at = match square.top() - 14.0 >= rect.top() {
                true => square.left_top() + Vec2::new(1.0, -14.0),
                false => square.left_top().max(rect.left_top()) + Vec2::new(3.0, 2.0),
            };
            painter.text(
                at,
                egui::Align2::LEFT_TOP,
                label,
                egui::FontId::proportional(11.0),
                blue,
            );
        }
        let frame = Stroke::new(1.0, Color32::GRAY);
        painter.rect_stroke(rect, 0.0, frame, egui::StrokeKind::Outside);
        let layer = if view.label_nc > 1 { self.layer } else { 0 };
        self.strokes(ui, &response, &painter, layer);
        if self.target == DrawTarget::Condition && (response.drag_started() || response.clicked()) {
            if let Some(n) = &self.condition_name {
                if !n.ends_with(" (edited)") {
                    self.condition_name = Some(format!("{n} (edited)"));
                }
            }
        }
        if let Some(h) = response.hover_pos() {
            let radius = (self.brush_size * self.zoom / 2.0).max(2.0);
            let ring = Stroke::new(1.0, Color32::from_rgb(255, 120, 0));
            painter.circle_stroke(h, radius, ring);
        }
    }

    /// [`model_input`] of the condition canvas for the model's settings, remade only when the
    /// canvas or the settings changed.
    fn condition_input(&mut self, share: f64, closings: &[GapClosing]) -> ModelInput {
        let key = (
            self.canvas.generation(),
            self.canvas.version(),
            share.to_bits(),
            closings.to_vec(),
        );
        match &self.model_input {
            Some((k, input)) if *k == key => input.clone(),
            _ => {
                let input = model_input(&self.canvas.layers()[0], share, closings);
                self.model_input = Some((key, input.clone()));
                input
            }
        }
    }

    /// Brush strokes, clicks and shift-dragged straight lines on `layer`.
    fn strokes(
        &mut self,
        ui: &egui::Ui,
        response: &egui::Response,
        painter: &egui::Painter,
        layer: usize,
    ) {
        let (rect, zoom) = (response.rect, self.zoom);
        let to_canvas = move |p: Pos2| ((p.x - rect.min.x) / zoom, (p.y - rect.min.y) / zoom);
        let (tool, radius) = (self.tool, self.brush_size / 2.0);
        if response.drag_started() {
            let origin = ui
                .input(|i| i.pointer.press_origin())
                .or(response.interact_pointer_pos());
            if let Some(o) = origin {
                if ui.input(|i| i.modifiers.shift) {
                    self.line_start = Some(to_canvas(o));
                } else {
                    self.stroking = true;
                    self.active_mut()
                        .begin_stroke(layer, tool, radius, to_canvas(o));
                }
            }
        }
        if response.dragged() {
            if let Some(pos) = response.interact_pointer_pos() {
                if let Some(a) = self.line_start {
                    let start = Pos2::new(rect.min.x + a.0 * zoom, rect.min.y + a.1 * zoom);
                    let color = layer_color(layer).gamma_multiply(0.6);
                    painter.line_segment([start, pos], Stroke::new(self.brush_size * zoom, color));
                } else if self.stroking {
                    self.active_mut()
                        .continue_stroke(layer, tool, radius, to_canvas(pos));
                }
            }
        }
        if response.drag_stopped() {
            if let (Some(a), Some(pos)) = (self.line_start.take(), response.interact_pointer_pos())
            {
                self.active_mut()
                    .line(layer, tool, radius, a, to_canvas(pos));
            }
            if self.stroking {
                self.stroking = false;
                self.active_mut().end_stroke();
            }
        }
        if response.clicked() {
            if let Some(pos) = response.interact_pointer_pos() {
                let c = self.active_mut();
                c.begin_stroke(layer, tool, radius, to_canvas(pos));
                c.end_stroke();
            }
        }
    }
}

/// What [`ModelInput`] is remade for: the canvas's generation and version, the model's share
/// and gap closings.
type InputKey = (u64, u64, u64, Vec<GapClosing>);

/// A small drawing's scale and the square of the canvas the model scales up (top, left, side in
/// model pixels), or `None`.
type ModelFrame = Option<(f64, [f64; 3])>;

/// The pixels (x, y) by which the model closes a gap, in `colour` over the canvas at `rect`
/// (`zoom` screen points per model pixel), ringed (a few pixels are easy to miss) and labelled
/// beside the ring.
fn paint_bridges(
    painter: &egui::Painter,
    rect: Rect,
    zoom: f32,
    bridges: &[(u32, u32)],
    colour: Color32,
) {
    if bridges.is_empty() {
        return;
    }
    let mut bounds = Rect::NOTHING;
    for &(x, y) in bridges {
        let pixel = Rect::from_min_size(
            rect.min + Vec2::new(x as f32, y as f32) * zoom,
            Vec2::splat(zoom),
        );
        painter.rect_filled(pixel, 0.0, colour);
        bounds = bounds.union(pixel);
    }
    let radius = bounds.size().length() / 2.0 + 3.0 * zoom;
    painter.circle_stroke(bounds.center(), radius, Stroke::new(1.5, colour));
    let at = bounds.center() + Vec2::new(radius + 3.0, -7.0);
    painter.text(
        at.min(rect.right_bottom() - Vec2::new(70.0, 14.0)),
        egui::Align2::LEFT_TOP,
        "gap closed",
        egui::FontId::proportional(11.0),
        colour,
    );
}

/// What the model makes of the condition before it translates it, as the sampler does it: the
/// pixels (x, y) by which it closes gaps in an outline (`midms.close_gaps`,
/// `midms.close_wide_gaps`), then the frame of
/// the closed drawing ([`model_frame`]).
#[derive(Debug, Clone, Default, PartialEq)]
struct ModelInput {
    bridges: Vec<(u32, u32)>,
    frame: ModelFrame,
}

/// [`ModelInput`] of `edges` (the condition's line layer at the model's size) for the model's
/// `midms.frame_drawing` `share` and gap `closings`.
fn model_input(edges: &GrayImage, share: f64, closings: &[GapClosing]) -> ModelInput {
    let size = edges.width() as usize;
    let lines: Vec<bool> = edges.pixels().map(|p| p[0] > 127).collect();
    let Some(closed) = close_passes(&lines, size, size, closings) else {
        return ModelInput {
            bridges: Vec::new(),
            frame: model_frame(&lines, size, share),
        };
    };
    let bridges = (0..size * size)
        .filter(|&i| closed[i] && !lines[i])
        .map(|i| ((i % size) as u32, (i / size) as u32))
        .collect();
    ModelInput {
        bridges,
        frame: model_frame(&closed, size, share),
    }
}

/// Where the model frames this drawing (`midms.frame_drawing` `share`; `lines`: the drawing's
/// line pixels, `size` x `size`): the scale and the square of the canvas it scales up to fill
/// the model's frame (top, left, side in model pixels, [`Frame`]'s geometry), or `None` when the
/// drawing is left as it is.
fn model_frame(lines: &[bool], size: usize, share: f64) -> ModelFrame {
    if share <= 0.0 {
        return None;
    }
    let plane: Vec<f32> = lines.iter().map(|l| f32::from(*l)).collect();
    let f = Frame::of(&plane, size, share)?;
    let side = size as f64 / f.scale;
    Some((
        f.scale,
        [f.centre.0 - side / 2.0, f.centre.1 - side / 2.0, side],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 px outline of a `side` px square with its top-left corner at (`top`, `left`), on a
    /// `size` px canvas.
    fn square_outline(size: u32, top: u32, left: u32, side: u32) -> GrayImage {
        let mut edges = GrayImage::new(size, size);
        let (bottom, right) = (top + side - 1, left + side - 1);
        for i in 0..side {
            for (y, x) in [
                (top, left + i),
                (bottom, left + i),
                (top + i, left),
                (top + i, right),
            ] {
                edges.put_pixel(x, y, image::Luma([255]));
            }
        }
        edges
    }

    #[test]
    fn the_frame_of_a_small_drawing_is_the_square_the_model_scales_up() {
        // A 16 px box outline at rows 8..24, columns 4..20 of a 64 px canvas; share 0.75: the
        // model scales it 3x, so its frame is the 64 / 3 px square about the box's centre (16, 12).
        let edges = square_outline(64, 8, 4, 16);
        let (scale, [top, left, side]) = model_input(&edges, 0.75, &[])
            .frame
            .expect("a small drawing");
        assert_eq!(scale, 3.0);
        assert!((side - 64.0 / 3.0).abs() < 1e-12);
        assert!((top - (16.0 - side / 2.0)).abs() < 1e-12);
        assert!((left - (12.0 - side / 2.0)).abs() < 1e-12);
        // No framing without the model's share, nor for a drawing that fills the canvas.
        assert_eq!(model_input(&edges, 0.0, &[]).frame, None);
        let mut full = GrayImage::new(64, 64);
        full.put_pixel(0, 0, image::Luma([255]));
        full.put_pixel(63, 63, image::Luma([255]));
        assert_eq!(model_input(&full, 0.75, &[]).frame, None);
    }

    /// A gap in an outline: the pixels the model closes it with are in the gap, and none without
    /// the model's `close_gaps`; a closed outline gets none.
    #[test]
    fn the_gap_the_model_closes_is_shown_where_it_is() {
        let mut edges = square_outline(64, 16, 16, 32);
        assert_eq!(
            model_input(&edges, 0.0, &[GapClosing::small(3)]),
            ModelInput::default()
        );
        for y in 30..34 {
            edges.put_pixel(47, y, image::Luma([0]));
        }
        let input = model_input(&edges, 0.0, &[GapClosing::small(3)]);
        assert!(!input.bridges.is_empty());
        for (x, y) in &input.bridges {
            assert!((44..=47).contains(x) && (28..=35).contains(y), "({x}, {y})");
        }
        assert_eq!(model_input(&edges, 0.0, &[]), ModelInput::default());
    }
}
