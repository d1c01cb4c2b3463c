//! The canvas as shown: composed at display resolution from the canvas's steps with
//! anti-aliased strokes and smoothed raster bases (a loaded sketch), so zooming does not pixelate
//! them;
//! or, on request, the binary model-size input exactly as the model gets it.
use egui::{Color32, Pos2, Rect, TextureHandle, TextureOptions};
use image::{imageops::FilterType, GrayImage, Rgba, RgbaImage};

use super::color_image;
use crate::ui::canvas::{replay, Canvas, Cursor, Op, Raster, Stroke, Tool};
use crate::ui::compose;

/// The display raster's largest side in pixels: above it the GPU scales it up (linearly, so
/// edges stay smooth) rather than the CPU rendering ever larger images on every undo.
const MAX_SIDE: u32 = 1024;

/// The display keeps its coverage every this many steps (the latest `SNAPSHOTS` of them), so
/// undo replays a few steps instead of the whole drawing.
const SNAPSHOT_EVERY: usize = 16;
const SNAPSHOTS: usize = 8;

/// Display-raster pixels per model pixel for a `size`-pixel canvas shown at `scale` screen
/// pixels per model pixel: a whole number, at least the
/// screen's resolution up to `MAX_SIDE`.
pub fn display_factor(size: u32, scale: f32) -> u32 {
    let cap = (MAX_SIDE / size.max(1)).max(1);
    (scale.ceil().max(1.0) as u32).min(cap)
}

/// Anti-aliased coverage of the capsule of radius `r` around segment `a`-`b` (raster pixels):
/// the brush keeps the larger coverage (so overlapping segments join seamlessly), the eraser
/// removes its coverage. Returns the rectangle it touched (`[x0, y0, x1, y1)`).
pub fn capsule(
    cov: &mut GrayImage,
    a: (f32, f32),
    b: (f32, f32),
    r: f32,
    erase: bool,
) -> Option<[u32; 4]> {
    let (w, h) = cov.dimensions();
    let pad = r + 1.0;
    let lo = |v: f32| (v - pad).floor().max(0.0) as u32;
    let hi = |v: f32, n: u32| ((v + pad).ceil().max(0.0) as u32).min(n);
    let (x0, x1) = (lo(a.0.min(b.0)), hi(a.0.max(b.0), w));
    let (y0, y1) = (lo(a.1.min(b.1)), hi(a.1.max(b.1), h));
    if x0 >= x1 || y0 >= y1 {
        return None;
    }
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    // squared distances: inside `full` fully covered, beyond `none` not at all (no sqrt)
    let (full, none) = ((r - 0.5).max(0.0).powi(2), (r + 0.5).powi(2));
    for y in y0..y1 {
        let py = y as f32 + 0.5 - a.1;
        let row = &mut cov.as_mut()[(y * w) as usize..][..w as usize];
        for (x, p) in row
            .iter_mut()
            .enumerate()
            .take(x1 as usize)
            .skip(x0 as usize)
        {
            if !erase && *p == 255 || erase && *p == 0 {
                continue; // nothing to add (overlapping segments of one stroke mostly)
            }
            let px = x as f32 + 0.5 - a.0;
            let t = match len2 > 0.0 {
                true => ((px * dx + py * dy) / len2).clamp(0.0, 1.0),
                false => 0.0,
            };
            let d2 = (px - t * dx).powi(2) + (py - t * dy).powi(2);
            let v = match d2 {
                d2 if d2 >= none => continue,
                d2 if d2 <= full && r >= 0.5 => 255,
                d2 => ((r + 0.5 - d2.sqrt()).clamp(0.0, 1.0) * 255.0).round() as u8,
            };
            *p = if erase {
                (*p).min(255 - v)
            } else {
                (*p).max(v)
            };
        }
    }
    Some([x0, y0, x1, y1])
}

/// A binary model-size layer at `k` display pixels per model pixel with smooth, anti-aliased
/// outlines, so that a loaded sketch's staircases read as the curves they stand for: the cubic
/// B-spline through its pixel values, cut at one half over a ramp one display pixel wide. The
/// cut keeps a line's width (2 pixels stay 2, 1 pixel about 0.9); two kinds of pixel the spline
/// alone would thin out are kept whole: pixels that touch only at a corner (a one-pixel
/// diagonal, joined by a ridge) and isolated ones (a disk of half a pixel). "Show model input"
/// still shows the pixels themselves.
/// Written here because `image`'s resize filters blur without the cut (a thin line's contrast
/// halves) or keep the squares (Nearest). A 128 px layer took 2 ms at k = 2 and 35 ms at k = 8
/// (1024 x 1024; release build, Zen 4), once per loaded image and zoom step.
pub fn smooth_upscale(layer: &GrayImage, k: u32) -> GrayImage {
    let (w, h) = layer.dimensions();
    if k <= 1 {
        // no finer grid to smooth on: the pixels themselves
        return GrayImage::from_fn(w, h, |x, y| {
            image::Luma([255 * u8::from(layer.get_pixel(x, y).0[0] > 127)])
        });
    }
    let ink: Vec<f32> = layer
        .as_raw()
        .iter()
        .map(|v| f32::from(u8::from(*v > 127)))
        .collect();
    let at = |x: i64, y: i64| {
        ink[(y.clamp(0, h as i64 - 1) as u32 * w + x.clamp(0, w as i64 - 1) as u32) as usize]
    };
    // the cubic B-spline's weights for the 4 pixels around a point at fraction t past the 2nd
    let spline = |t: f32| {
        let s = 1.0 - t;
        [
            s * s * s / 6.0,
            (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
            (4.0 - 6.0 * s * s + 3.0 * s * s * s) / 6.0,
            t * t * t / 6.0,
        ]
    };
    let kf = k as f32;
    GrayImage::from_fn(w * k, h * k, |x, y| {
        // the display pixel's centre in model pixels, from the model pixel centres
        let (u, v) = ((x as f32 + 0.5) / kf - 0.5, (y as f32 + 0.5) / kf - 0.5);
        let (x0, y0) = (u.floor() as i64, v.floor() as i64);
        let (fx, fy) = (u - u.floor(), v - v.floor());
        let (wx, wy) = (spline(fx), spline(fy));
        let mut f = 0.0;
        for (j, wy) in wy.iter().enumerate() {
            let row: f32 = (0..4)
                .map(|i| wx[i] * at(x0 - 1 + i as i64, y0 - 1 + j as i64))
                .sum();
            f += wy * row;
        }
        let [a, b, c, d] = [
            at(x0, y0),
            at(x0 + 1, y0),
            at(x0, y0 + 1),
            at(x0 + 1, y0 + 1),
        ];
        let ridge = match (a + d > 1.5, b + c > 0.5, b + c > 1.5, a + d > 0.5) {
            (true, false, _, _) => 1.0 - (fx - fy).abs(),
            (_, _, true, false) => 1.0 - (1.0 - fx - fy).abs(),
            _ => 0.0,
        };
        let corners = [
            (a, fx, fy),
            (b, 1.0 - fx, fy),
            (c, fx, 1.0 - fy),
            (d, 1.0 - fx, 1.0 - fy),
        ];
        let disk = corners
            .iter()
            .filter(|c| c.0 > 0.5)
            .map(|&(_, dx, dy)| 1.0 - (dx * dx + dy * dy).sqrt())
            .fold(0.0, f32::max);
        let f = f.max(ridge).max(disk);
        // across an edge the spline changes by 2/3 per model pixel: 1 per display pixel here
        let cover = ((f - 0.5) * kf * 1.5 + 0.5).clamp(0.0, 1.0);
        image::Luma([(cover * 255.0).round() as u8])
    })
}

/// Per-layer coverage at display resolution, composed over the background like
/// [`compose::canvas_image`] (later layers on top).
struct DisplayRaster {
    /// What the background was made for: model size, factor, background version.
    bg_key: (u32, u32, u64),
    generation: u64,
    cursor: Cursor,
    k: u32,
    cover: Vec<Option<GrayImage>>,
    /// `cover` after the first n steps, with the id of step n-1.
    snapshots: Vec<(usize, u64, Vec<Option<GrayImage>>)>,
    background: RgbaImage,
    image: RgbaImage,
    dirty: Option<[u32; 4]>,
}

impl DisplayRaster {
    fn new(bg_key: (u32, u32, u64), layers: usize, background: Option<&RgbaImage>) -> Self {
        let (size, k, _) = bg_key;
        let side = size * k;
        let background = match background {
            Some(bg) => {
                let mut bg = image::imageops::resize(bg, side, side, FilterType::Triangle);
                for p in bg.pixels_mut() {
                    for c in 0..3 {
                        p.0[c] = (p.0[c] as u16 / 2 + 128) as u8; // faded under the strokes
                    }
                }
                bg
            }
            None => RgbaImage::from_pixel(side, side, Rgba([255, 255, 255, 255])),
        };
        Self {
            bg_key,
            generation: 0,
            cursor: Cursor::default(),
            k,
            cover: vec![None; layers],
            snapshots: Vec::new(),
            image: background.clone(),
            background,
            dirty: None,
        }
    }

    fn mark(&mut self, r: [u32; 4]) {
        self.dirty = Some(match self.dirty {
            Some(d) => [
                d[0].min(r[0]),
                d[1].min(r[1]),
                d[2].max(r[2]),
                d[3].max(r[3]),
            ],
            None => r,
        });
    }

    fn mark_all(&mut self) {
        let (w, h) = self.image.dimensions();
        self.mark([0, 0, w, h]);
    }

    /// Start from the latest snapshot still valid for steps `ids` (else from nothing).
    fn restore(&mut self, ids: &[u64]) {
        self.snapshots
            .retain(|(n, id, _)| *n <= ids.len() && ids[*n - 1] == *id);
        match self.snapshots.last() {
            Some((n, _, cover)) => {
                self.cover.clone_from(cover);
                self.cursor = Cursor::after(*n);
                self.mark_all();
            }
            None => {
                self.clear();
                self.cursor = Cursor::default();
            }
        }
    }

    /// Bring the coverage up to `canvas`'s steps.
    fn sync(&mut self, canvas: &Canvas) {
        if self.generation != canvas.generation() {
            self.generation = canvas.generation();
            self.restore(canvas.op_ids());
        }
        self.catch_up(canvas.ops(), canvas.op_ids());
    }

    /// Render the steps not yet shown, keeping a snapshot every `SNAPSHOT_EVERY` steps (of
    /// finished steps only: the last one may be a stroke still growing).
    fn catch_up(&mut self, ops: &[Op], ids: &[u64]) {
        loop {
            let taken = self.snapshots.last().map_or(0, |s| s.0);
            let applied = self.cursor.applied(ops).max(taken + 1);
            let next = applied.div_ceil(SNAPSHOT_EVERY) * SNAPSHOT_EVERY;
            if next >= ops.len() {
                break;
            }
            let from = self.cursor;
            self.cursor = replay(&ops[..next], self, from);
            self.snapshots
                .push((next, ids[next - 1], self.cover.clone()));
            if self.snapshots.len() > SNAPSHOTS {
                self.snapshots.remove(0);
            }
        }
        let from = self.cursor;
        self.cursor = replay(ops, self, from);
    }

    /// Recompose the dirty rectangle; returns it.
    fn compose(&mut self) -> Option<[u32; 4]> {
        let [x0, y0, x1, y1] = self.dirty.take()?;
        let layers: Vec<([f32; 3], &GrayImage)> = (self.cover.iter().enumerate())
            .filter_map(|(l, c)| Some((compose::layer_rgb(l).map(f32::from), c.as_ref()?)))
            .collect();
        for y in y0..y1 {
            for x in x0..x1 {
                let mut p = self.background.get_pixel(x, y).0.map(f32::from);
                for (rgb, cov) in &layers {
                    let a = cov.get_pixel(x, y).0[0] as f32 / 255.0;
                    if a > 0.0 {
                        (0..3).for_each(|c| p[c] += (rgb[c] - p[c]) * a);
                    }
                }
                *self.image.get_pixel_mut(x, y) = Rgba(p.map(|v| v.round() as u8));
            }
        }
        Some([x0, y0, x1, y1])
    }
}

impl Raster for DisplayRaster {
    fn clear(&mut self) {
        self.cover.iter_mut().for_each(|c| *c = None);
        self.mark_all();
    }

    fn set_layer(&mut self, layer: usize, image: &GrayImage) {
        let side = self.image.width();
        if let Some(c) = self.cover.get_mut(layer) {
            *c = Some(smooth_upscale(image, side / image.width().max(1)));
            self.mark_all();
        }
    }

    fn segment(&mut self, s: &Stroke, a: (f32, f32), b: (f32, f32)) {
        let side = self.image.width();
        let Some(slot) = self.cover.get_mut(s.layer) else {
            return;
        };
        let cov = slot.get_or_insert_with(|| GrayImage::new(side, side));
        let k = self.k as f32;
        let (a, b) = ((a.0 * k, a.1 * k), (b.0 * k, b.1 * k));
        // As wide as the model input: its disks of radius round(radius - 0.5) cover
        // 2 * that + 1 pixels (even brush sizes round up).
        let shown = (s.radius - 0.5).max(0.0).round() + 0.5;
        if let Some(r) = capsule(cov, a, b, shown * k, s.tool == Tool::Eraser) {
            self.mark(r);
        }
    }
}

/// The canvas's textures: the display raster (linear) and the model input (nearest).
#[derive(Default)]
pub struct CanvasView {
    raster: Option<DisplayRaster>,
    tex: Option<TextureHandle>,
    model_tex: Option<(TextureHandle, (u64, u64, u64))>,
}

impl CanvasView {
    /// Paint `canvas` into `rect` over `background` (the exemplar being traced, and its
    /// version): at display resolution, or the binary model input when `model_input`.
    pub fn paint(
        &mut self,
        painter: &egui::Painter,
        rect: Rect,
        canvas: &Canvas,
        background: Option<(&RgbaImage, u64)>,
        model_input: bool,
    ) {
        let id = match model_input {
            true => self.model_texture(painter.ctx(), canvas, background),
            false => self.display_texture(painter.ctx(), rect, canvas, background),
        };
        let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        painter.image(id, rect, uv, Color32::WHITE);
    }

    /// The display raster brought up to date: rebuilt (from a snapshot) when steps were undone or the zoom,
    /// size or background changed, else only the new segments rendered and uploaded.
    fn display_texture(
        &mut self,
        ctx: &egui::Context,
        rect: Rect,
        canvas: &Canvas,
        background: Option<(&RgbaImage, u64)>,
    ) -> egui::TextureId {
        let size = canvas.size();
        let k = display_factor(size, rect.width() * ctx.pixels_per_point() / size as f32);
        let bg_key = (size, k, background.map_or(0, |b| b.1 + 1));
        if self.raster.as_ref().is_some_and(|r| r.bg_key != bg_key) {
            self.raster = None;
        }
        let raster = self.raster.get_or_insert_with(|| {
            DisplayRaster::new(bg_key, canvas.layer_count(), background.map(|b| b.0))
        });
        raster.sync(canvas);
        let dirty = raster.compose();
        let opts = TextureOptions::LINEAR;
        let side = raster.image.width();
        let fits = self
            .tex
            .as_ref()
            .is_some_and(|t| t.size() == [side as usize; 2]);
        match (&mut self.tex, dirty) {
            (Some(tex), Some(d)) if fits => {
                let (w, h) = (d[2] - d[0], d[3] - d[1]);
                let part = image::imageops::crop_imm(&raster.image, d[0], d[1], w, h);
                let pos = [d[0] as usize, d[1] as usize];
                tex.set_partial(pos, color_image(&part.to_image()), opts);
            }
            (Some(_), None) if fits => {}
            _ => {
                let tex = ctx.load_texture("canvas", color_image(&raster.image), opts);
                self.tex = Some(tex);
            }
        }
        self.tex
            .as_ref()
            .map_or(egui::TextureId::default(), |t| t.id())
    }

    /// The model input as the model gets it: binary model-size layers, pixels as squares.
    fn model_texture(
        &mut self,
        ctx: &egui::Context,
        canvas: &Canvas,
        background: Option<(&RgbaImage, u64)>,
    ) -> egui::TextureId {
        let key = (
            canvas.generation(),
            canvas.version(),
            background.map_or(0, |b| b.1 + 1),
        );
        if self.model_tex.as_ref().is_none_or(|(_, k)| *k != key) {
            let bg = background.map(|b| b.0);
            let img = compose::canvas_image(canvas.layers(), canvas.size(), bg);
            let img = color_image(&img);
            match &mut self.model_tex {
                Some((tex, k)) => {
                    tex.set(img, TextureOptions::NEAREST);
                    *k = key;
                }
                None => {
                    let tex = ctx.load_texture("model input", img, TextureOptions::NEAREST);
                    self.model_tex = Some((tex, key));
                }
            }
        }
        self.model_tex
            .as_ref()
            .map_or(egui::TextureId::default(), |t| t.0.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsules_are_anti_aliased_and_erasers_remove_coverage() {
        let mut cov = GrayImage::new(40, 40);
        capsule(&mut cov, (5.0, 5.0), (35.0, 20.0), 3.0, false).unwrap();
        let raw = cov.as_raw();
        assert!(raw.contains(&0) && raw.contains(&255));
        // both edges of the 30 px long capsule are soft
        let partial = raw.iter().filter(|v| **v > 0 && **v < 255).count();
        assert!(partial > 50, "{partial} partly covered pixels");
        // centre line fully covered, 5 px off it empty
        assert_eq!(cov.get_pixel(20, 12).0[0], 255);
        assert_eq!(cov.get_pixel(20, 18).0[0], 0);
        capsule(&mut cov, (20.0, 0.0), (20.0, 40.0), 2.0, true).unwrap();
        assert_eq!(cov.get_pixel(20, 12).0[0], 0);
        assert_eq!(cov.get_pixel(5, 5).0[0], 255);
    }

    #[test]
    fn undo_from_a_snapshot_shows_what_a_full_render_shows() {
        let mut c = Canvas::new(32);
        let mut shown = DisplayRaster::new((32, 2, 0), c.layer_count(), None);
        for i in 0..45 {
            let (x, y) = ((i * 7 % 29) as f32 + 0.4, (i * 5 % 31) as f32 + 0.2);
            let tool = if i % 4 == 3 {
                Tool::Eraser
            } else {
                Tool::Brush
            };
            c.begin_stroke(i % 2, tool, 1.5, (x, y));
            shown.sync(&c);
            c.continue_stroke(i % 2, tool, 1.5, (x + 4.2, y + 1.7));
            c.end_stroke();
            shown.sync(&c);
        }
        assert_eq!(shown.snapshots.len(), 2);
        for _ in 0..6 {
            c.undo();
            shown.sync(&c);
        }
        c.line(0, Tool::Brush, 2.0, (1.0, 30.0), (30.0, 1.0));
        shown.sync(&c);
        let mut fresh = DisplayRaster::new((32, 2, 0), c.layer_count(), None);
        fresh.sync(&c);
        assert!(shown.cover == fresh.cover, "undo restored another picture");
        assert!(shown.cover[0].is_some() && shown.cover[1].is_some());
    }

    #[test]
    fn a_loaded_raster_is_shown_smooth_at_its_width() {
        let mut layer = GrayImage::new(16, 16);
        (2..14).for_each(|x| layer.put_pixel(x, 5, image::Luma([255])));
        (2..14).for_each(|i| layer.put_pixel(i, i, image::Luma([255])));
        assert_eq!(
            smooth_upscale(&layer, 1),
            layer,
            "one display pixel per model pixel"
        );
        let big = smooth_upscale(&layer, 4);
        assert_eq!(big.dimensions(), (64, 64));
        // the horizontal line: its 4 display rows, about as wide, solid in the middle
        let column: Vec<u8> = (16..28).map(|y| big.get_pixel(32, y).0[0]).collect();
        let width = column.iter().map(|v| *v as f32 / 255.0).sum::<f32>();
        assert!((3.5..=4.5).contains(&width), "{column:?}");
        assert_eq!(
            (column[5], column[6], column[0], column[11]),
            (255, 255, 0, 0)
        );
        // the diagonal staircase: its centre line covered, its sides soft, not squares
        assert!((10..50).all(|i| big.get_pixel(i, i).0[0] == 255));
        let nearest = image::imageops::resize(&layer, 64, 64, FilterType::Nearest);
        let soft = big.as_raw().iter().filter(|v| **v > 0 && **v < 255).count();
        assert!(soft > 100 && big != nearest, "{soft} soft pixels");
        // nothing more than one model pixel from ink
        let far = |x: u32, y: u32| {
            let (mx, my) = (x as i64 / 4, y as i64 / 4);
            (-1..=1).all(|d: i64| {
                (-1..=1).all(|e: i64| {
                    let (px, py) = ((mx + d).clamp(0, 15) as u32, (my + e).clamp(0, 15) as u32);
                    layer.get_pixel(px, py).0[0] == 0
                })
            })
        };
        assert!(big
            .enumerate_pixels()
            .all(|(x, y, v)| v.0[0] == 0 || !far(x, y)));
    }

    #[test]
    fn the_display_factor_follows_the_screen_up_to_the_cap() {
        assert_eq!(display_factor(128, 2.0), 2);
        assert_eq!(display_factor(128, 2.5), 3);
        assert_eq!(display_factor(128, 16.0), 8);
        assert_eq!(display_factor(64, 16.0), 16);
        assert_eq!(display_factor(2048, 1.0), 1);
        assert_eq!(display_factor(64, 0.5), 1);
    }
}
