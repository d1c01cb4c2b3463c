//! The drawing canvas: binary layers at the model's resolution (layer 0 = edges, then one layer
//! per facial part), strokes with brush or eraser, straight lines, and stroke-level undo/redo.
use image::{imageops::FilterType, DynamicImage, GrayImage, Luma};
use imageproc::drawing::{draw_filled_circle_mut, BresenhamLineIter};

use crate::image::{build_label, Label, LabelError, PARTS};

/// Undo depth (whole-canvas snapshots; 64 x 14 x 256^2 bits-as-bytes is at most ~60 MB).
const MAX_UNDO: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Tool {
    Brush,
    Eraser,
}

/// Layers of one canvas. Each is `size` x `size`, 255 where painted.
#[derive(Clone, PartialEq)]
pub struct Canvas {
    size: u32,
    layers: Vec<GrayImage>,
    undo: Vec<Vec<GrayImage>>,
    redo: Vec<Vec<GrayImage>>,
    /// Last point of the stroke in progress (canvas pixels).
    last: Option<(f32, f32)>,
    /// Bumped on every change, so views know when to re-upload their texture.
    version: u64,
}

impl std::fmt::Debug for Canvas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canvas")
            .field("size", &self.size)
            .field("version", &self.version)
            .finish()
    }
}

impl Canvas {
    /// An empty canvas: the edge layer plus one layer per part.
    pub fn new(size: u32) -> Self {
        Self {
            size,
            layers: (0..=PARTS.len())
                .map(|_| GrayImage::new(size, size))
                .collect(),
            undo: Vec::new(),
            redo: Vec::new(),
            last: None,
            version: 0,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn version(&self) -> u64 {
        self.version
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
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// The condition label of this canvas for a model with `label_nc` channels.
    pub fn label(&self, label_nc: usize) -> Result<Label, LabelError> {
        build_label(label_nc, &self.layers[0], &self.layers[1..])
    }

    /// Remember the current state for undo (call once before each user action).
    fn checkpoint(&mut self) {
        self.undo.push(self.layers.clone());
        if self.undo.len() > MAX_UNDO {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    fn touched(&mut self) {
        self.version += 1;
    }

    /// Start a stroke at `p` (canvas pixels) on `layer`.
    pub fn begin_stroke(&mut self, layer: usize, tool: Tool, radius: f32, p: (f32, f32)) {
        self.checkpoint();
        self.last = Some(p);
        self.stamp_segment(layer, tool, radius, p, p);
    }

    /// Continue the stroke in progress to `p`.
    pub fn continue_stroke(&mut self, layer: usize, tool: Tool, radius: f32, p: (f32, f32)) {
        match self.last {
            // The pen held still: no change (live mode waits for such a pause).
            Some(prev) if prev == p => {}
            Some(prev) => {
                self.stamp_segment(layer, tool, radius, prev, p);
                self.last = Some(p);
            }
            None => self.begin_stroke(layer, tool, radius, p),
        }
    }

    pub fn end_stroke(&mut self) {
        self.last = None;
    }

    /// A straight line from `a` to `b` as one undoable action.
    pub fn line(&mut self, layer: usize, tool: Tool, radius: f32, a: (f32, f32), b: (f32, f32)) {
        self.checkpoint();
        self.stamp_segment(layer, tool, radius, a, b);
    }

    fn stamp_segment(
        &mut self,
        layer: usize,
        tool: Tool,
        radius: f32,
        a: (f32, f32),
        b: (f32, f32),
    ) {
        let Some(img) = self.layers.get_mut(layer) else {
            return;
        };
        let value = Luma([if tool == Tool::Brush { 255 } else { 0 }]);
        // Brush size 1 = one pixel: radius 0 circles are single pixels.
        let r = (radius - 0.5).max(0.0).round() as i32;
        for (x, y) in BresenhamLineIter::new(a, b) {
            draw_filled_circle_mut(img, (x, y), r, value);
        }
        self.touched();
    }

    /// Clear every layer (undoable).
    pub fn clear(&mut self) {
        if self.is_empty() {
            return;
        }
        self.checkpoint();
        for l in &mut self.layers {
            l.fill(0);
        }
        self.touched();
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(&mut self.layers, prev));
                self.touched();
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(&mut self.layers, next));
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
        if layer >= self.layers.len() || image.dimensions() != (self.size, self.size) {
            return;
        }
        self.checkpoint();
        self.layers[layer] = image;
        self.touched();
    }

    /// Resample to a new model resolution (nearest); keeps undo history out of it.
    pub fn resized(&self, size: u32) -> Canvas {
        let mut c = Canvas::new(size);
        for (dst, src) in c.layers.iter_mut().zip(&self.layers) {
            *dst = image::imageops::resize(src, size, size, FilterType::Nearest);
        }
        c
    }

    /// Compact form for persistence: size and each layer bit-packed as hex.
    pub fn to_saved(&self) -> SavedCanvas {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mut bytes = vec![0u8; l.as_raw().len().div_ceil(8)];
                for (i, v) in l.as_raw().iter().enumerate() {
                    if *v != 0 {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        SavedCanvas {
            size: self.size,
            layers,
        }
    }

    /// Inverse of [`Self::to_saved`]; `None` if the data is malformed.
    pub fn from_saved(saved: &SavedCanvas) -> Option<Canvas> {
        let mut c = Canvas::new(saved.size);
        if saved.layers.len() != c.layers.len() || saved.size == 0 || saved.size > 4096 {
            return None;
        }
        let n = (saved.size * saved.size) as usize;
        for (dst, hex) in c.layers.iter_mut().zip(&saved.layers) {
            if hex.len() != n.div_ceil(8) * 2 || !hex.is_ascii() {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect();
            let bytes = bytes?;
            for (i, v) in dst.iter_mut().enumerate() {
                *v = if bytes[i / 8] & (1 << (i % 8)) != 0 {
                    255
                } else {
                    0
                };
            }
        }
        Some(c)
    }
}

/// Persisted canvas.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedCanvas {
    pub size: u32,
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strokes_undo_redo_and_persistence() {
        let mut c = Canvas::new(16);
        c.begin_stroke(0, Tool::Brush, 0.5, (2.0, 2.0));
        c.continue_stroke(0, Tool::Brush, 0.5, (10.0, 2.0));
        c.end_stroke();
        let painted = c.layer(0).as_raw().iter().filter(|v| **v != 0).count();
        assert_eq!(painted, 9);
        let after = c.layers().to_vec();
        assert!(c.undo());
        assert!(c.is_empty());
        assert!(c.redo());
        assert_eq!(c.layers(), &after[..]);
        c.line(3, Tool::Brush, 2.0, (0.0, 8.0), (15.0, 8.0));
        let back = Canvas::from_saved(&c.to_saved()).unwrap();
        assert_eq!(back.layers(), c.layers());
        c.begin_stroke(0, Tool::Eraser, 3.0, (5.0, 2.0));
        assert!(c.layer(0).get_pixel(5, 2).0[0] == 0);
    }
}
