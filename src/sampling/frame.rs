//! Framing a small drawing: a model's `midms.frame_drawing` (model v1.14; our own models, not in
//! the authors' code, so never on for their checkpoints or parity sets).
//!
//! The model trained on glyphs that fill their frame; a drawing a quarter of the canvas wide, or
//! off in a corner, came out as smears (the hand-drawn sketches drawn at 55 % of their size:
//! silhouette IoU 0.67 against 0.90 at full size). So a drawing whose box is small is scaled up
//! about its box's centre until its longer side is the model's share of the canvas, centred,
//! translated, and the image mapped back onto the canvas where the drawing lies (IoU 0.91 at
//! 55 %; docs/model-history.md, model v1.14). A drawing that nearly fills the canvas is left as
//! it is. Latents, masks and matchings are those of the framed drawing; images come back.
//!
//! The trainer computes the same (`train/frame.py`): the box, the scale and the label's nearest
//! sampling in f64, so both frame a label to the same pixels; an image comes back as the mean of
//! n x n bilinear samples per canvas pixel (n = ceil(scale)), `outside` beyond the framed canvas.
//! On the host: a label plane and an image are 16 k pixels (the mapping by hand, since neither
//! candle nor `image` resamples about a point at a real-valued scale).
use candle_core::{DType, Result, Tensor};
use image::RgbaImage;

/// A drawing is framed only when it grows by at least this much: smaller changes resample a
/// drawing that nearly fills the canvas for little gain (chosen on the hand-drawn set and its
/// sketches drawn at 75 % and 55 % of their size; `train.frame.MIN_SCALE`).
pub const MIN_SCALE: f64 = 1.15;

/// How one drawing is framed, in pixels of its `size`-pixel canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Framed length per canvas length.
    pub scale: f64,
    /// The drawing box's centre (row, column), pixel edges as coordinates.
    pub centre: (f64, f64),
    /// The canvas side.
    pub size: usize,
}

impl Frame {
    /// The frame of one drawing (`plane`: `size` x `size` label values, a line where > 0.5) for
    /// a model's `share`, or `None` (no line, or a scale under [`MIN_SCALE`]).
    pub fn of(plane: &[f32], size: usize, share: f64) -> Option<Self> {
        let (mut y0, mut y1, mut x0, mut x1) = (usize::MAX, 0, usize::MAX, 0);
        for (i, _) in plane.iter().enumerate().filter(|(_, v)| **v > 0.5) {
            let (y, x) = (i / size, i % size);
            (y0, y1, x0, x1) = (y0.min(y), y1.max(y + 1), x0.min(x), x1.max(x + 1));
        }
        if y1 == 0 {
            return None;
        }
        let scale = share * size as f64 / (y1 - y0).max(x1 - x0) as f64;
        (scale >= MIN_SCALE).then_some(Self {
            scale,
            centre: ((y0 + y1) as f64 / 2.0, (x0 + x1) as f64 / 2.0),
            size,
        })
    }

    /// The canvas index each framed row (or column) takes: floor(centre + (v + 1/2 - size/2) /
    /// scale), `None` beyond the canvas.
    fn sources(&self, centre: f64) -> Vec<Option<usize>> {
        let n = self.size as f64;
        (0..self.size)
            .map(|v| {
                let s = (centre + (v as f64 + 0.5 - n / 2.0) / self.scale).floor();
                (s >= 0.0 && s < n).then_some(s as usize)
            })
            .collect()
    }

    /// A label plane framed: each framed pixel its nearest canvas pixel, 0 beyond the canvas.
    pub fn frame_plane(&self, plane: &[f32]) -> Vec<f32> {
        let (rows, cols) = (self.sources(self.centre.0), self.sources(self.centre.1));
        let mut out = vec![0f32; plane.len()];
        for (v, sy) in rows.iter().enumerate() {
            for (u, sx) in cols.iter().enumerate() {
                if let (Some(sy), Some(sx)) = (sy, sx) {
                    out[v * self.size + u] = plane[sy * self.size + sx];
                }
            }
        }
        out
    }

    /// For canvas rows (or columns) of a `res`-pixel plane and sub-samples 0..n: the two framed
    /// indices each bilinear sample reads (`None` beyond the framed plane) and their weights.
    fn taps(&self, centre: f64, res: usize, n: usize) -> Vec<[(Option<usize>, f64); 2]> {
        // The frame in this plane's pixels (a mask on the latent grid is a smaller plane).
        let (r, centre) = (res as f64, centre * res as f64 / self.size as f64);
        let inside = |i: f64| (i >= 0.0 && i < r).then_some(i as usize);
        let mut taps = Vec::with_capacity(res * n);
        for p in 0..res {
            for i in 0..n {
                let pos = p as f64 + (i as f64 + 0.5) / n as f64;
                let f = (pos - centre) * self.scale + r / 2.0 - 0.5;
                let i0 = f.floor();
                let w1 = f - i0;
                taps.push([(inside(i0), 1.0 - w1), (inside(i0 + 1.0), w1)]);
            }
        }
        taps
    }

    /// `channels` planes of `res` x `res` values of the framed drawing back on the canvas: each
    /// canvas pixel the mean of n x n bilinear samples (n = ceil(scale)), `outside` beyond.
    pub fn unframe_planes(&self, planes: &[f32], res: usize, outside: f32) -> Vec<f32> {
        let n = self.scale.ceil() as usize;
        let (rows, cols) = (
            self.taps(self.centre.0, res, n),
            self.taps(self.centre.1, res, n),
        );
        let plane = res * res;
        let mut out = vec![0f32; planes.len()];
        for (c, src) in planes.chunks(plane).enumerate() {
            let at = |y: Option<usize>, x: Option<usize>| match (y, x) {
                (Some(y), Some(x)) => src[y * res + x] as f64,
                _ => outside as f64,
            };
            for y in 0..res {
                for x in 0..res {
                    let mut sum = 0f64;
                    for ry in &rows[y * n..(y + 1) * n] {
                        for cx in &cols[x * n..(x + 1) * n] {
                            for (ty, wy) in ry {
                                for (tx, wx) in cx {
                                    sum += at(*ty, *tx) * wy * wx;
                                }
                            }
                        }
                    }
                    out[c * plane + y * res + x] = (sum / (n * n) as f64) as f32;
                }
            }
        }
        out
    }

    /// An RGBA image of the framed drawing (a step's preview, its mask) back on the canvas,
    /// white beyond the framed canvas (transparent black for `clear`).
    pub fn unframe_rgba(&self, image: &RgbaImage, clear: bool) -> RgbaImage {
        let res = image.width() as usize;
        let planes: Vec<f32> = (0..4)
            .flat_map(|c| image.pixels().map(move |p| p.0[c] as f32))
            .collect();
        let outside = if clear { 0.0 } else { 255.0 };
        let out = self.unframe_planes(&planes, res, outside);
        let plane = res * res;
        RgbaImage::from_fn(res as u32, res as u32, |x, y| {
            let i = y as usize * res + x as usize;
            image::Rgba([0, 1, 2, 3].map(|c| out[c * plane + i].round().clamp(0.0, 255.0) as u8))
        })
    }

    /// For framed rows (or columns): the two canvas indices a bilinear sample reads (`None`
    /// beyond the canvas) and their weights. Framed pixel v's centre lies at canvas position
    /// centre + (v + 1/2 - size/2) / scale, i.e. at that minus 1/2 as a pixel-centre index.
    fn bilinear_taps(&self, centre: f64) -> Vec<[(Option<usize>, f64); 2]> {
        let n = self.size as f64;
        let inside = |i: f64| (i >= 0.0 && i < n).then_some(i as usize);
        (0..self.size)
            .map(|v| {
                let f = centre + (v as f64 + 0.5 - n / 2.0) / self.scale - 0.5;
                let i0 = f.floor();
                let w1 = f - i0;
                [(inside(i0), 1.0 - w1), (inside(i0 + 1.0), w1)]
            })
            .collect()
    }

    /// `channels` planes of an exemplar framed: each framed pixel a bilinear sample of the
    /// canvas (in f64, the weights' product first, as the trainer), `outside` beyond it. One
    /// sample is enough: framing only enlarges (scale >= [`MIN_SCALE`]).
    pub fn frame_image_planes(&self, planes: &[f32], outside: f32) -> Vec<f32> {
        let (rows, cols) = (
            self.bilinear_taps(self.centre.0),
            self.bilinear_taps(self.centre.1),
        );
        let (res, plane) = (self.size, self.size * self.size);
        let mut out = vec![0f32; planes.len()];
        for (c, src) in planes.chunks(plane).enumerate() {
            let at = |y: Option<usize>, x: Option<usize>| match (y, x) {
                (Some(y), Some(x)) => src[y * res + x] as f64,
                _ => outside as f64,
            };
            for (v, ry) in rows.iter().enumerate() {
                for (u, cx) in cols.iter().enumerate() {
                    let mut sum = 0f64;
                    for (ty, wy) in ry {
                        for (tx, wx) in cx {
                            sum += at(*ty, *tx) * (wy * wx);
                        }
                    }
                    out[c * plane + v * res + u] = sum as f32;
                }
            }
        }
        out
    }

    /// The canvas position of a framed position, both as fractions of the side (the probe's
    /// heat over a framed exemplar); the inverse of [`Self::to_framed`].
    pub fn from_framed(&self, (fy, fx): (f64, f64)) -> (f64, f64) {
        let n = self.size as f64;
        let f = |p: f64, c: f64| ((p * n - n / 2.0) / self.scale + c) / n;
        (f(fy, self.centre.0), f(fx, self.centre.1))
    }

    /// The framed position of a canvas position, both as fractions of the side (the correspondence
    /// probe's cell); `None` beyond the framed canvas.
    pub fn to_framed(&self, (y, x): (f64, f64)) -> Option<(f64, f64)> {
        let n = self.size as f64;
        let f = |p: f64, c: f64| ((p * n - c) * self.scale + n / 2.0) / n;
        let (fy, fx) = (f(y, self.centre.0), f(x, self.centre.1));
        ((0.0..1.0).contains(&fy) && (0.0..1.0).contains(&fx)).then_some((fy, fx))
    }
}

/// A tensor's values on the host, in f32, row-major (framing works on 16 k-pixel planes there).
pub(crate) fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// `condition` [B, 1, S, S] with each small drawing framed, and the frame of each item (`None`:
/// as it was).
pub fn frame_condition(condition: &Tensor, share: f64) -> Result<(Tensor, Vec<Option<Frame>>)> {
    let (b, c, h, w) = condition.dims4()?;
    if c != 1 || h != w {
        candle_core::bail!("framing a drawing needs a square one-channel label, got {c}x{h}x{w}");
    }
    let host = host_values(condition)?;
    let mut frames = Vec::with_capacity(b);
    let mut out = Vec::with_capacity(host.len());
    for plane in host.chunks(h * w) {
        let frame = Frame::of(plane, h, share);
        match &frame {
            Some(f) => out.extend(f.frame_plane(plane)),
            None => out.extend_from_slice(plane),
        }
        frames.push(frame);
    }
    if frames.iter().all(Option::is_none) {
        return Ok((condition.clone(), frames));
    }
    let framed = Tensor::from_vec(out, (b, c, h, w), condition.device())?;
    Ok((framed.to_dtype(condition.dtype())?, frames))
}

/// Exemplars [B, 3, S, S] in [-1, 1] and their labels [B, 1, S, S] with each small glyph framed
/// as [`frame_condition`] frames a drawing (the box of its `foreground` [B, 1, S, S], the
/// exemplar's shape), the image by bilinear samples (white beyond the canvas), the label by
/// nearest; and the frame of each item (`None`: as it was). The exemplar is only a source, so
/// nothing is mapped back but the probe's heat (model v1.15, `midms.frame_exemplar`).
pub fn frame_exemplars(
    exemplar: &Tensor,
    label: &Tensor,
    foreground: &Tensor,
    share: f64,
) -> Result<(Tensor, Tensor, Vec<Option<Frame>>)> {
    let (b, c, h, w) = exemplar.dims4()?;
    if h != w || label.dims4()? != (b, 1, h, w) || foreground.dims4()? != (b, 1, h, w) {
        candle_core::bail!(
            "framing an exemplar needs a square image with a one-channel label and shape of its \
             size, got {:?}, {:?}, {:?}",
            exemplar.dims(),
            label.dims(),
            foreground.dims()
        );
    }
    let fg = host_values(foreground)?;
    let frames: Vec<Option<Frame>> = fg.chunks(h * w).map(|p| Frame::of(p, h, share)).collect();
    if frames.iter().all(Option::is_none) {
        return Ok((exemplar.clone(), label.clone(), frames));
    }
    let (images, labels) = (host_values(exemplar)?, host_values(label)?);
    let (mut framed_images, mut framed_labels) = (Vec::new(), Vec::new());
    let items = images.chunks(c * h * w).zip(labels.chunks(h * w));
    for ((image, plane), frame) in items.zip(&frames) {
        match frame {
            Some(f) => {
                framed_images.extend(f.frame_image_planes(image, 1.0));
                framed_labels.extend(f.frame_plane(plane));
            }
            None => {
                framed_images.extend_from_slice(image);
                framed_labels.extend_from_slice(plane);
            }
        }
    }
    let device = exemplar.device();
    let framed_image = Tensor::from_vec(framed_images, (b, c, h, w), device)?;
    let framed_label = Tensor::from_vec(framed_labels, (b, 1, h, w), device)?;
    Ok((
        framed_image.to_dtype(exemplar.dtype())?,
        framed_label.to_dtype(label.dtype())?,
        frames,
    ))
}

/// Images [B, C, S, S] of framed drawings back on their canvases (white, 1, beyond the framed
/// canvas; an item without a frame as it is).
pub fn unframe_images(images: &Tensor, frames: &[Option<Frame>]) -> Result<Tensor> {
    if frames.iter().all(Option::is_none) {
        return Ok(images.clone());
    }
    let (b, c, h, w) = images.dims4()?;
    let host = host_values(images)?;
    let mut out = Vec::with_capacity(host.len());
    for (item, frame) in host.chunks(c * h * w).zip(frames) {
        match frame {
            Some(f) => out.extend(f.unframe_planes(item, h, 1.0)),
            None => out.extend_from_slice(item),
        }
    }
    Tensor::from_vec(out, (b, c, h, w), images.device())?.to_dtype(images.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A `size` canvas with a hollow square of side `side` (1-px lines) at (`top`, `left`).
    fn square(size: usize, top: usize, left: usize, side: usize) -> Vec<f32> {
        let mut p = vec![0f32; size * size];
        for i in 0..side {
            for (y, x) in [
                (top, left + i),
                (top + side - 1, left + i),
                (top + i, left),
                (top + i, left + side - 1),
            ] {
                p[y * size + x] = 1.0;
            }
        }
        p
    }

    #[test]
    fn a_small_drawing_is_centred_at_the_share_and_a_large_one_left_alone() {
        let small = square(64, 4, 8, 16);
        let f = Frame::of(&small, 64, 0.75).expect("a 16 px square in 64 is framed");
        assert_eq!(f.scale, 3.0);
        assert_eq!(f.centre, (12.0, 16.0));
        let framed = f.frame_plane(&small);
        // Its box is now 48 px, centred: rows and columns 8..56.
        let g = Frame::of(&framed, 64, 1.0).expect("still a drawing");
        assert_eq!(g.centre, (32.0, 32.0));
        assert_eq!(g.scale, 64.0 / 48.0);
        // 40 of 64 px: 0.75 * 64 / 40 = 1.2 >= 1.15; 44 px: 1.09, not framed.
        assert!(Frame::of(&square(64, 10, 10, 40), 64, 0.75).is_some());
        assert_eq!(Frame::of(&square(64, 10, 10, 44), 64, 0.75), None);
        assert_eq!(Frame::of(&[0f32; 64 * 64], 64, 0.75), None);
    }

    #[test]
    fn an_image_comes_back_where_the_drawing_was_and_white_elsewhere() -> Result<()> {
        let size = 32;
        let f = Frame::of(&square(size, 2, 20, 8), size, 0.75).unwrap();
        assert_eq!(f.scale, 3.0);
        // A framed image: black (-1) over the framed drawing's box (rows and columns 4..28),
        // mid grey (0) elsewhere.
        let img = Tensor::from_vec(
            (0..size * size)
                .map(|i| {
                    let (y, x) = (i / size, i % size);
                    if (4..28).contains(&y) && (4..28).contains(&x) {
                        -1f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>(),
            (1, 1, size, size),
            &Device::Cpu,
        )?;
        let back = unframe_images(&img, &[Some(f)])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let at = |y: usize, x: usize| back[y * size + x];
        let near = |got: f32, want: f32| (got - want).abs() < 1e-6;
        // The drawing's own box (rows 2..10, columns 20..28) is black again.
        assert!(near(at(5, 23), -1.0), "{}", at(5, 23));
        // A canvas pixel that maps into the framed canvas's grey border is grey ...
        assert!(near(at(1, 19), 0.0), "{}", at(1, 19));
        // ... and one beyond the framed canvas white.
        assert!(near(at(30, 2), 1.0), "{}", at(30, 2));
        // An item without a frame is left as it is.
        let same = unframe_images(&img, &[None])?;
        assert_eq!(
            same.flatten_all()?.to_vec1::<f32>()?,
            img.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn a_small_exemplar_glyph_is_framed_and_a_full_one_left_alone() -> Result<()> {
        let size = 32;
        // A black 8 px square glyph (rows 20..28, columns 2..10) on white, its shape and a
        // label line along its top.
        let glyph = |y: usize, x: usize| (20..28).contains(&y) && (2..10).contains(&x);
        let plane = |f: &dyn Fn(usize, usize) -> bool, on: f32, off: f32| -> Vec<f32> {
            (0..size * size)
                .map(|i| if f(i / size, i % size) { on } else { off })
                .collect()
        };
        let dev = Device::Cpu;
        let image: Vec<f32> = (0..3).flat_map(|_| plane(&glyph, -1.0, 1.0)).collect();
        let image = Tensor::from_vec(image, (1, 3, size, size), &dev)?;
        let top = |y: usize, x: usize| y == 20 && (2..10).contains(&x);
        let label = Tensor::from_vec(plane(&top, 1.0, 0.0), (1, 1, size, size), &dev)?;
        let shape = Tensor::from_vec(plane(&glyph, 1.0, 0.0), (1, 1, size, size), &dev)?;
        let (framed, framed_label, frames) = frame_exemplars(&image, &label, &shape, 0.75)?;
        let f = frames[0].expect("an 8 px glyph in 32 is framed");
        assert_eq!((f.scale, f.centre), (3.0, (24.0, 6.0)));
        // The glyph now spans the framed canvas's middle 24 px (4..28), black inside, white
        // beyond, a bilinear blend at its edge.
        let px = framed.flatten_all()?.to_vec1::<f32>()?;
        let at = |y: usize, x: usize| px[y * size + x];
        assert_eq!((at(16, 16), at(5, 5), at(26, 26)), (-1.0, -1.0, -1.0));
        assert_eq!((at(1, 16), at(16, 30), at(31, 31)), (1.0, 1.0, 1.0));
        assert!(at(4, 16) > -1.0 && at(4, 16) < 1.0, "{}", at(4, 16));
        // The label's top line (one canvas row) is three framed rows at the top of the box.
        let lines = framed_label.flatten_all()?.to_vec1::<f32>()?;
        let rows: Vec<usize> = (0..size).filter(|y| lines[y * size + 16] > 0.5).collect();
        assert_eq!(rows, vec![4, 5, 6]);
        // A framed position maps back to where it came from.
        let (y, x) = f.from_framed((0.5, 0.5));
        assert_eq!((y * 32.0, x * 32.0), (24.0, 6.0));
        let (by, bx) = f
            .to_framed(f.from_framed((0.2, 0.7)))
            .expect("on the framed canvas");
        assert!(
            (by - 0.2).abs() < 1e-12 && (bx - 0.7).abs() < 1e-12,
            "{by} {bx}"
        );
        // A glyph that fills its image is left as it is.
        let full = Tensor::ones((1, 1, size, size), DType::F32, &dev)?;
        let (same, _, frames) = frame_exemplars(&image, &label, &full, 0.75)?;
        assert_eq!(frames, vec![None]);
        assert_eq!(same.flatten_all()?.to_vec1::<f32>()?, host_values(&image)?);
        Ok(())
    }

    #[test]
    fn the_probe_maps_a_canvas_point_to_its_framed_place() {
        let f = Frame::of(&square(64, 4, 8, 16), 64, 0.75).unwrap();
        // The drawing's centre goes to the framed canvas's centre, its corner 3x as far out.
        assert_eq!(f.to_framed((12.0 / 64.0, 16.0 / 64.0)), Some((0.5, 0.5)));
        assert_eq!(f.to_framed((4.0 / 64.0, 8.0 / 64.0)), Some((0.125, 0.125)));
        assert_eq!(f.to_framed((0.9, 0.9)), None);
    }
}
