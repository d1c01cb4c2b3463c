//! The outline of a sketch and of an exemplar, compared up to position and scale: the gallery's
//! first ranking key ([`super::rank`]).
//!
//! Why not the model's own signal alone: the share of the sketch's cells whose initial match
//! passes the cycle check put each hand-drawn sketch's own exemplar 15.1st of 41 on average
//! (model v1.12, `tests/rank_shipped.rs`; chance 21), the house last and the cup 38th. The
//! silhouettes put it 8.1st, first for 16 of 37 sketches. On the 886 held-out emoji (one-line
//! sketches, Twemoji exemplars, a gallery of all 886; `python -m train.rank_eval`, which writes
//! this rule again over the trainer's ops) the own exemplar ranks 125.4th against chance's 443.5,
//! in the top ten for 272 (ties, such as Twemoji's many round faces, counted half). Adding the
//! cycle share to it, as a product or a weighted sum, ranked worse on the hand-drawn set
//! (2026-12-05), so it only breaks ties. Turning each shape to its principal axis first (Twemoji
//! draws its key, moon and rocket diagonally) ranked 300 held-out pairs worse (65.8th against
//! 39.8th, ties in the own exemplar's favour) and the hand-drawn set hardly better (8.3rd; 7.3rd
//! with flips tried too), so shapes are compared as drawn.
//!
//! Written here rather than taken from a crate: a crop, an area-average resample and a count of
//! a 32x32 grid (imageproc has no shape-matching descriptor; `image`'s resize filters are not an
//! area average).
use candle_core::{DType, Tensor};

use super::regions::{exemplar_foreground, open_stroke_pixels};
use crate::error::Result;
use crate::model::ops::fill_label;

/// Side of the grid a shape is resampled to after its crop to its bounding box.
pub const GRID: usize = 32;

/// A shape cropped to its bounding box and resampled to [`GRID`] x [`GRID`], with the box's
/// aspect ratio (which the resample takes away).
#[derive(Debug, Clone, PartialEq)]
pub struct Silhouette {
    cells: Vec<bool>,
    /// Width over height of the bounding box.
    aspect: f32,
}

impl Silhouette {
    /// The shape of `mask` (one image, [H, W] row-major, inside > 0.5); None when it is empty.
    pub fn from_mask(mask: &[f32], h: usize, w: usize) -> Option<Self> {
        let inside = |y: usize, x: usize| mask[y * w + x] > 0.5;
        let rows: Vec<usize> = (0..h).filter(|&y| (0..w).any(|x| inside(y, x))).collect();
        let cols: Vec<usize> = (0..w).filter(|&x| (0..h).any(|y| inside(y, x))).collect();
        let (y0, y1) = (*rows.first()?, *rows.last()? + 1);
        let (x0, x1) = (*cols.first()?, *cols.last()? + 1);
        let (bh, bw) = (y1 - y0, x1 - x0);
        // Area average onto the grid (adaptive average pooling: cell i covers source rows
        // floor(i * bh / GRID) .. ceil((i + 1) * bh / GRID)), then more than half inside.
        let span = |i: usize, n: usize| (i * n / GRID, ((i + 1) * n).div_ceil(GRID));
        let mut cells = Vec::with_capacity(GRID * GRID);
        for gy in 0..GRID {
            let (sy0, sy1) = span(gy, bh);
            for gx in 0..GRID {
                let (sx0, sx1) = span(gx, bw);
                let count = (sy0..sy1)
                    .flat_map(|y| (sx0..sx1).map(move |x| (y, x)))
                    .filter(|&(y, x)| inside(y0 + y, x0 + x))
                    .count();
                cells.push(2 * count > (sy1 - sy0) * (sx1 - sx0));
            }
        }
        Some(Self {
            cells,
            aspect: bw as f32 / bh as f32,
        })
    }

    /// The drawn shape of a condition [1, C, H, W] (channel 0 = lines, 1 = line): what its lines
    /// enclose, lines included, and its open strokes, as region matching takes it.
    pub fn of_condition(condition: &Tensor) -> Result<Option<Self>> {
        let lines = condition.narrow(1, 0, 1)?.gt(0.5)?.to_dtype(DType::F32)?;
        let filled = fill_label(&lines)?;
        let shape = filled.maximum(&open_stroke_pixels(&lines, &filled)?)?;
        Self::of_mask_tensor(&shape)
    }

    /// The shape of an exemplar [1, 3, H, W] in [-1, 1]: its non-white pixels and what they
    /// enclose ([`exemplar_foreground`]).
    pub fn of_exemplar(exemplar: &Tensor) -> Result<Option<Self>> {
        Self::of_mask_tensor(&exemplar_foreground(exemplar)?)
    }

    /// The shape of one mask [1, 1, H, W] in {0, 1} (an exemplar's foreground made already).
    pub fn of_mask_tensor(mask: &Tensor) -> Result<Option<Self>> {
        let (_, _, h, w) = mask.dims4()?;
        let values = mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self::from_mask(&values, h, w))
    }

    /// In [0, 1], 1 for the same shape at any position and size: the grids' intersection over
    /// union times the smaller aspect ratio over the larger.
    pub fn similarity(&self, other: &Self) -> f32 {
        let (mut both, mut either) = (0usize, 0usize);
        for (&a, &b) in self.cells.iter().zip(&other.cells) {
            both += usize::from(a && b);
            either += usize::from(a || b);
        }
        let iou = both as f32 / either.max(1) as f32;
        let ratio = self.aspect / other.aspect;
        iou * ratio.min(1.0 / ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filled rectangle (rows y0..y1, columns x0..x1) in an h x w mask.
    fn rect(h: usize, w: usize, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Vec<f32> {
        let mut m = vec![0.0; h * w];
        for y in y0..y1 {
            m[y * w + x0..y * w + x1].fill(1.0);
        }
        m
    }

    #[test]
    fn the_same_shape_elsewhere_and_larger_matches_fully() {
        let small = Silhouette::from_mask(&rect(128, 128, (10, 30), (5, 45)), 128, 128).unwrap();
        let large = Silhouette::from_mask(&rect(128, 128, (40, 100), (0, 120)), 128, 128).unwrap();
        assert_eq!(small.similarity(&large), 1.0);
    }

    #[test]
    fn other_proportions_and_other_shapes_score_lower() {
        let square = Silhouette::from_mask(&rect(64, 64, (0, 40), (0, 40)), 64, 64).unwrap();
        let wide = Silhouette::from_mask(&rect(64, 64, (0, 20), (0, 40)), 64, 64).unwrap();
        assert!((square.similarity(&wide) - 0.5).abs() < 1e-6);
        // An L: its square box with the upper-right quarter missing.
        let mut l = rect(64, 64, (0, 40), (0, 20));
        for (i, v) in rect(64, 64, (20, 40), (20, 40)).into_iter().enumerate() {
            l[i] = l[i].max(v);
        }
        let l = Silhouette::from_mask(&l, 64, 64).unwrap();
        let s = square.similarity(&l);
        assert!((s - 0.75).abs() < 0.02, "{s}");
        assert_eq!(l.similarity(&square), s, "symmetric");
    }

    #[test]
    fn an_empty_mask_has_no_silhouette() {
        assert_eq!(Silhouette::from_mask(&[0.0; 16], 4, 4), None);
    }

    #[test]
    fn a_drawn_outline_is_its_filled_shape() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // A square outline, 1 px wide, in a 1-channel condition; and the same square filled
        // as an exemplar (black on white, in [-1, 1]).
        let mut lines = vec![0f32; 64 * 64];
        for i in 10..50 {
            for (y, x) in [(10, i), (49, i), (i, 10), (i, 49)] {
                lines[y * 64 + x] = 1.0;
            }
        }
        let cond = Tensor::from_vec(lines, (1, 1, 64, 64), &dev)?;
        let filled = rect(64, 64, (20, 60), (0, 40));
        let ex: Vec<f32> = filled.iter().map(|&v| 1.0 - 2.0 * v).collect();
        let ex = Tensor::from_vec([ex.clone(), ex.clone(), ex].concat(), (1, 3, 64, 64), &dev)?;
        let a = Silhouette::of_condition(&cond)?.unwrap();
        let b = Silhouette::of_exemplar(&ex)?.unwrap();
        assert_eq!(a.similarity(&b), 1.0);
        Ok(())
    }
}
