//! The drawing canvas. Strokes are kept as vectors (sub-pixel points in model pixels) over a
//! raster base per layer (content that came from images: a loaded sketch, a photo's edges);
//! layer 0 = edges, then one layer per facial part. The binary layers the model gets are
//! rendered from them at model size the way the trainer makes its conditions (train/pairs.py:
//! binary {0,1} lines a few model pixels wide). Undo/redo work on whole steps: a stroke, a line,
//! a clear, a loaded layer.
use std::sync::atomic::{AtomicU64, Ordering};

use image::{imageops::FilterType, DynamicImage, GrayImage, Luma};
use imageproc::drawing::{draw_filled_circle_mut, BresenhamLineIter};

use crate::image::{build_label, Label, LabelError, PARTS};

/// Undo depth in steps. Steps below it stay as content (the canvas is the fold of its steps).
const MAX_UNDO: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Tool {
    Brush,
    Eraser,
}

/// One stroke: a polyline with round caps and joins, `radius` model pixels each side of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stroke {
    pub layer: usize,
    pub tool: Tool,
    pub radius: f32,
    /// Model-pixel coordinates (pixel (x, y) covers [x, x+1) x [y, y+1)), not rounded.
    pub points: Vec<(f32, f32)>,
}

/// One undoable step; the canvas is the fold of its steps in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Stroke(Stroke),
    /// Every layer emptied.
    Clear,
    /// A layer replaced by an image (`size` x `size`, 255 where painted).
    SetLayer(usize, GrayImage),
}

impl Op {
    /// How much of the step a replay can have applied: a stroke's points, else 1.
    fn units(&self) -> usize {
        match self {
            Op::Stroke(s) => s.points.len(),
            _ => 1,
        }
    }
}

/// How far a replay got: steps before `op` applied, and `units` of step `op`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    op: usize,
    units: usize,
}

impl Cursor {
    /// Where a replay continues after the first `n` steps.
    pub fn after(n: usize) -> Self {
        Cursor { op: n, units: 0 }
    }

    /// How many of `ops` this cursor has applied completely.
    pub fn applied(&self, ops: &[Op]) -> usize {
        match ops.get(self.op) {
            Some(op) if self.units >= op.units() => self.op + 1,
            _ => self.op,
        }
    }
}

/// What steps are replayed onto: the model-size layers here, the display raster in the view.
pub trait Raster {
    fn clear(&mut self);
    fn set_layer(&mut self, layer: usize, image: &GrayImage);
    /// One segment of `stroke` (`a == b` for its first point).
    fn segment(&mut self, stroke: &Stroke, a: (f32, f32), b: (f32, f32));
}

/// Apply `ops` from `from` on (what a previous replay of a prefix of them left undone, or all
/// of them from `Cursor::default()`); returns where the next replay should start.
pub fn replay(ops: &[Op], target: &mut impl Raster, from: Cursor) -> Cursor {
    for (i, op) in ops.iter().enumerate().skip(from.op) {
        let done = if i == from.op { from.units } else { 0 };
        match op {
            Op::Stroke(s) => {
                for j in done..s.points.len() {
                    target.segment(s, s.points[j.saturating_sub(1)], s.points[j]);
                }
            }
            Op::Clear if done == 0 => target.clear(),
            Op::SetLayer(l, img) if done == 0 => target.set_layer(*l, img),
            _ => {}
        }
    }
    match ops.last() {
        Some(op) => Cursor {
            op: ops.len() - 1,
            units: op.units(),
        },
        None => Cursor::default(),
    }
}

/// The model's rasterisation: binary disks stamped along the segment at model size.
struct ModelLayers<'a>(&'a mut [GrayImage]);

impl Raster for ModelLayers<'_> {
    fn clear(&mut self) {
        self.0.iter_mut().for_each(|l| l.fill(0));
    }

    fn set_layer(&mut self, layer: usize, image: &GrayImage) {
        if let Some(l) = self.0.get_mut(layer) {
            l.clone_from(image);
        }
    }

    fn segment(&mut self, s: &Stroke, a: (f32, f32), b: (f32, f32)) {
        if let Some(img) = self.0.get_mut(s.layer) {
            stamp_segment(img, s.tool, s.radius, a, b);
        }
    }
}

/// Disks of radius `(radius - 0.5).max(0).round()` on the Bresenham line between the pixels
/// whose centres are nearest `a` and `b` (brush size 1 = one pixel, 3 = three pixels wide):
/// binary lines a whole number of pixels wide, like the trainer's dilated edges.
fn stamp_segment(img: &mut GrayImage, tool: Tool, radius: f32, a: (f32, f32), b: (f32, f32)) {
    let value = Luma([if tool == Tool::Brush { 255 } else { 0 }]);
    let r = (radius - 0.5).max(0.0).round() as i32;
    // floor, not truncation: the nearest pixel centre also left of / above the canvas.
    let px = |p: (f32, f32)| (p.0.floor(), p.1.floor());
    for (x, y) in BresenhamLineIter::new(px(a), px(b)) {
        draw_filled_circle_mut(img, (x, y), r, value);
    }
}

/// A fresh id (for a step list or a step), unique across canvases, so a view that cached a
/// replay knows when to start over.
fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Layers of one canvas: its steps and the model input rendered from them.
pub struct Canvas {
    size: u32,
    ops: Vec<Op>,
    /// A unique id per step (as `ops`), so a view can tell which steps it already rendered.
    ids: Vec<u64>,
    redo: Vec<(u64, Op)>,
    /// Steps before this index can no longer be undone.
    floor: usize,
    /// The model input (each `size` x `size`, 255 where painted), kept up to date incrementally.
    layers: Vec<GrayImage>,
    cursor: Cursor,
    drawing: bool,
    /// Bumped on every change, so views and runs know when the condition changed.
    version: u64,
    /// Changes when steps are removed or rewritten (not when they grow).
    generation: u64,
}

impl Clone for Canvas {
    fn clone(&self) -> Self {
        Self {
            size: self.size,
            ops: self.ops.clone(),
            ids: self.ids.clone(),
            redo: self.redo.clone(),
            floor: self.floor,
            layers: self.layers.clone(),
            cursor: self.cursor,
            drawing: self.drawing,
            version: self.version,
            // the copies may diverge: a view must not take one's replay for the other's
            generation: fresh_id(),
        }
    }
}

impl std::fmt::Debug for Canvas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canvas")
            .field("size", &self.size)
            .field("steps", &self.ops.len())
            .field("version", &self.version)
            .finish()
    }
}

impl Canvas {
    /// An empty canvas: the edge layer plus one layer per part.
    pub fn new(size: u32) -> Self {
        Self {
            size,
            ops: Vec::new(),
            ids: Vec::new(),
            redo: Vec::new(),
            floor: 0,
            layers: (0..=PARTS.len())
                .map(|_| GrayImage::new(size, size))
                .collect(),
            cursor: Cursor::default(),
            drawing: false,
            version: 0,
            generation: fresh_id(),
        }
    }

    /// A canvas holding `ops` as its (not undoable) content.
    fn with_ops(size: u32, ops: Vec<Op>, version: u64) -> Self {
        let mut c = Canvas::new(size);
        c.floor = ops.len();
        c.ids = ops.iter().map(|_| fresh_id()).collect();
        c.ops = ops;
        c.version = version;
        c.render();
        c
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Identifies the step list; changes when steps are undone, pruned or replaced.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The steps, oldest first (for views that replay them at their own resolution).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The steps' ids (as [`Self::ops`]): an id names one step with all the steps before it.
    pub fn op_ids(&self) -> &[u64] {
        &self.ids
    }

    /// A stroke is in progress (between `begin_stroke` and `end_stroke`).
    pub fn drawing(&self) -> bool {
        self.drawing
    }

    pub fn layer(&self, i: usize) -> &GrayImage {
        &self.layers[i]
    }

    pub fn layers(&self) -> &[GrayImage] {
        &self.layers
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.as_raw().iter().all(|v| *v == 0))
    }

    pub fn can_undo(&self) -> bool {
        self.ops.len() > self.floor
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// The condition label of this canvas for a model with `label_nc` channels.
    pub fn label(&self, label_nc: usize) -> Result<Label, LabelError> {
        build_label(label_nc, &self.layers[0], &self.layers[1..])
    }

    fn touched(&mut self) {
        self.version += 1;
    }

    /// Render the steps not yet in the model layers (the last stroke's new segments).
    fn render(&mut self) {
        self.cursor = replay(&self.ops, &mut ModelLayers(&mut self.layers), self.cursor);
    }

    /// Render the model layers from scratch (after steps were removed).
    fn rerender(&mut self) {
        ModelLayers(&mut self.layers).clear();
        self.cursor = Cursor::default();
        self.generation = fresh_id();
        self.render();
    }

    /// A new user step: ends any stroke in progress and drops the redo history.
    fn push(&mut self, op: Op) {
        self.drawing = false;
        self.redo.clear();
        self.ops.push(op);
        self.ids.push(fresh_id());
        self.render();
        self.limit_undo();
        self.touched();
    }

    /// Keep at most `MAX_UNDO` undoable steps; drop whatever an old clear made invisible.
    fn limit_undo(&mut self) {
        self.floor = self.floor.max(self.ops.len().saturating_sub(MAX_UNDO));
        let cleared = self.ops[..self.floor]
            .iter()
            .rposition(|o| matches!(o, Op::Clear));
        if let Some(i) = cleared {
            // the layers stay as they are: replaying what follows a clear gives the same
            self.ops.drain(..=i);
            self.ids.drain(..=i);
            self.floor -= i + 1;
            self.cursor.op -= i + 1;
            self.generation = fresh_id();
        }
    }

    /// Start a stroke at `p` (canvas pixels, sub-pixel) on `layer`.
    pub fn begin_stroke(&mut self, layer: usize, tool: Tool, radius: f32, p: (f32, f32)) {
        if layer >= self.layers.len() {
            return;
        }
        let points = vec![p];
        self.push(Op::Stroke(Stroke {
            layer,
            tool,
            radius,
            points,
        }));
        self.drawing = true;
    }

    /// Continue the stroke in progress to `p` (it keeps the layer, tool and radius it began
    /// with); starts one if none is in progress.
    pub fn continue_stroke(&mut self, layer: usize, tool: Tool, radius: f32, p: (f32, f32)) {
        match self.ops.last_mut() {
            Some(Op::Stroke(s)) if self.drawing => {
                if s.points.last() != Some(&p) {
                    s.points.push(p);
                    self.render();
                    self.touched();
                }
            }
            _ => self.begin_stroke(layer, tool, radius, p),
        }
    }

    pub fn end_stroke(&mut self) {
        self.drawing = false;
    }

    /// A straight line from `a` to `b` as one undoable step.
    pub fn line(&mut self, layer: usize, tool: Tool, radius: f32, a: (f32, f32), b: (f32, f32)) {
        if layer < self.layers.len() {
            let points = vec![a, b];
            self.push(Op::Stroke(Stroke {
                layer,
                tool,
                radius,
                points,
            }));
        }
    }

    /// Clear every layer (undoable).
    pub fn clear(&mut self) {
        if !self.is_empty() {
            self.push(Op::Clear);
        }
    }

    pub fn undo(&mut self) -> bool {
        if !self.can_undo() {
            return false;
        }
        self.drawing = false;
        self.redo.extend(self.ids.pop().zip(self.ops.pop()));
        self.rerender();
        self.touched();
        true
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some((id, op)) => {
                self.drawing = false;
                self.ids.push(id);
                self.ops.push(op);
                self.render();
                self.limit_undo();
                self.touched();
                true
            }
            None => false,
        }
    }

    /// Replace the edge layer with an edge map image (undoable). Lines may be dark on light
    /// (a sketch) or light on dark (a Canny map): the majority tone is taken as background.
    pub fn set_edges_from_image(&mut self, image: &DynamicImage) {
        self.set_layer(0, crate::image::edge_map(image, self.size));
    }

    /// Replace one layer (undoable); the image must be `size` x `size`.
    pub fn set_layer(&mut self, layer: usize, image: GrayImage) {
        if layer < self.layers.len() && image.dimensions() == (self.size, self.size) {
            self.push(Op::SetLayer(layer, image));
        }
    }

    /// What shows now: each layer's raster base (the last image set on it since the last
    /// clear) and the strokes since, in order.
    fn visible(&self) -> (Vec<Option<&GrayImage>>, Vec<&Stroke>) {
        let start = self.ops.iter().rposition(|o| matches!(o, Op::Clear));
        let mut base = vec![None; self.layers.len()];
        let mut strokes: Vec<&Stroke> = Vec::new();
        for op in &self.ops[start.map_or(0, |i| i + 1)..] {
            match op {
                Op::SetLayer(l, img) => {
                    base[*l] = Some(img);
                    strokes.retain(|s| s.layer != *l);
                }
                Op::Stroke(s) => strokes.push(s),
                Op::Clear => {}
            }
        }
        (base, strokes)
    }

    /// A canvas of base layers and strokes (as saved or resized): not undoable.
    fn from_parts(size: u32, base: Vec<Option<GrayImage>>, strokes: Vec<Stroke>) -> Self {
        let bases = base.into_iter().enumerate();
        let mut ops: Vec<Op> = bases
            .filter_map(|(l, b)| Some(Op::SetLayer(l, b?)))
            .collect();
        ops.extend(strokes.into_iter().map(Op::Stroke));
        Canvas::with_ops(size, ops, 0)
    }

    /// At a new model resolution: strokes scaled (points and radius), bases resampled
    /// nearest; without undo history.
    pub fn resized(&self, size: u32) -> Canvas {
        let k = size as f32 / self.size as f32;
        let (base, strokes) = self.visible();
        let base = base
            .into_iter()
            .map(|b| b.map(|b| image::imageops::resize(b, size, size, FilterType::Nearest)))
            .collect();
        let strokes = strokes
            .into_iter()
            .map(|s| Stroke {
                radius: s.radius * k,
                points: s.points.iter().map(|p| (p.0 * k, p.1 * k)).collect(),
                ..s.clone()
            })
            .collect();
        let mut c = Canvas::from_parts(size, base, strokes);
        c.version = self.version + 1;
        c
    }

    /// Compact form for persistence: the model input and, to rebuild the strokes, each
    /// layer's base and the strokes over them.
    pub fn to_saved(&self) -> SavedCanvas {
        let (base, strokes) = self.visible();
        SavedCanvas {
            size: self.size,
            layers: self.layers.iter().map(pack).collect(),
            base: Some(
                base.into_iter()
                    .map(|b| b.map_or(String::new(), pack))
                    .collect(),
            ),
            strokes: strokes.into_iter().cloned().collect(),
        }
    }

    /// Inverse of [`Self::to_saved`]; also reads the older form (`layers` only, which becomes
    /// the base). `None` if the data is malformed.
    pub fn from_saved(saved: &SavedCanvas) -> Option<Canvas> {
        let (size, count) = (saved.size, PARTS.len() + 1);
        if size == 0 || size > 4096 || saved.layers.len() != count {
            return None;
        }
        let hex = saved.base.as_ref().unwrap_or(&saved.layers);
        if hex.len() != count {
            return None;
        }
        let base = hex
            .iter()
            .map(|h| match h.is_empty() {
                true => Some(None),
                false => unpack(h, size).map(Some),
            })
            .collect::<Option<Vec<_>>>()?;
        let valid = |s: &Stroke| {
            let finite = s.points.iter().all(|p| p.0.is_finite() && p.1.is_finite());
            s.layer < count && s.radius.is_finite() && s.radius > 0.0 && finite
        };
        let strokes = saved.strokes.clone();
        if !strokes.iter().all(|s| valid(s) && !s.points.is_empty()) {
            return None;
        }
        Some(Canvas::from_parts(size, base, strokes))
    }
}

/// A binary layer bit-packed as hex.
fn pack(l: &GrayImage) -> String {
    let mut bytes = vec![0u8; l.as_raw().len().div_ceil(8)];
    for (i, v) in l.as_raw().iter().enumerate() {
        if *v != 0 {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unpack(hex: &str, size: u32) -> Option<GrayImage> {
    let n = (size * size) as usize;
    if hex.len() != n.div_ceil(8) * 2 || !hex.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    let bit = |i: usize| bytes[i / 8] & (1 << (i % 8)) != 0;
    let raw = (0..n).map(|i| if bit(i) { 255 } else { 0 }).collect();
    GrayImage::from_raw(size, size, raw)
}

/// Persisted canvas.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedCanvas {
    pub size: u32,
    /// The model input, each layer bit-packed as hex (all that sessions saved before strokes
    /// were kept as vectors, and what those editors read).
    pub layers: Vec<String>,
    /// Each layer's raster base, as `layers` ("" = none).
    #[serde(default)]
    pub base: Option<Vec<String>>,
    #[serde(default)]
    pub strokes: Vec<Stroke>,
}

#[cfg(test)]
#[path = "canvas_tests.rs"]
mod tests;
