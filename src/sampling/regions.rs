//! Region matching: a model's `midms.region_matching` (our own models; not in the authors' code,
//! so never on for their checkpoints or parity sets).
//!
//! The authors' UNet is unconditional (ours sees the drawing too, `midms.unet_condition`, but
//! still denoises the warp): the output takes its shape from the warped exemplar. A cell
//! outside the drawing that matches the exemplar's glyph paints a patch there, and a cell inside
//! that matches the exemplar's white background leaves a hole. With region matching a cell inside
//! the drawn shape matches only exemplar cells inside the exemplar's shape, and a cell outside
//! only cells outside it, in the initial warp and in every re-matching (the cycle check sees the
//! same restricted correlation). An exemplar with no outside (a photo) is matched as before, and
//! with a model's `midms.background_latent` the cells outside the sketch then take that latent
//! (the white background the UNet saw around every training glyph) instead of a warp of the photo.
//! Model v1.3's networks on the hand-drawn set, seed 0: silhouette IoU 0.680 -> 0.793 with the
//! restriction, 0.844 with the fill too (docs/model-history.md, model v1.4). The trainer computes
//! the same (`train.ops.restrict_to_regions`, `train.ops.fill_outside`).
//!
//! Two refinements (`midms.region_open_strokes`, `midms.region_keep_outside`; model v1.5): a
//! stroke that encloses nothing (a ray, a string, a handle) covers less than half of any cell, so
//! it counted as outside and the output dropped it; with the first, every cell it crosses is
//! inside. Outside the drawn shape every exemplar cell is the same white, so the cycle check finds
//! no confident match there and the mask kept the UNet's estimate, pale blobs around the drawing;
//! with the second, those cells keep the re-warp. Hand-drawn set, seeds 0 and 1: IoU / chamfer
//! 0.846 / 2.01 -> 0.871 / 1.72 (`train.ops.target_cells`, `train.ops.keep_outside`).
use candle_core::{DType, Result, Tensor, D};

use crate::model::ops::{avg_pool_to, fill_label, max_pool_to};

/// The exemplar needs at least this share of its cells on each side, else its matches are left
/// unrestricted (a photo without a white background has nothing to keep the outside on).
pub const MIN_SHARE: f32 = 0.05;

/// An exemplar pixel is foreground when one of its channels is below 235 of 255
/// (`train.evaluate.foreground`'s rule); 234.5 keeps the comparison clear of float rounding.
const WHITE_BELOW: f64 = 234.5;

/// Which sides of its shape an exemplar has, by the share of its cells inside (`cells`: one
/// item's, in {0, 1}). Region matching restricts the matches of an exemplar with both; one with
/// no outside (a photo) may take the background latent instead. The trainer's
/// `ops.exemplar_sides`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Both,
    NoOutside,
    NoInside,
}

fn sides(cells: &[f32]) -> Sides {
    // The share in f32, compared with f32 bounds, as the trainer computes it.
    let share = cells.iter().sum::<f32>() / cells.len() as f32;
    if share > 1.0 - MIN_SHARE {
        Sides::NoOutside
    } else if share < MIN_SHARE {
        Sides::NoInside
    } else {
        Sides::Both
    }
}

/// Cells of the latent grid `h` x `w` more than half inside `inside` [B, 1, H, W] (in {0, 1}):
/// [B, 1, h, w] in {0, 1}.
fn cells(inside: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    avg_pool_to(inside, h, w)?.gt(0.5)?.to_dtype(DType::F32)
}

/// A line pixel this close (Chebyshev distance, in pixels) to an enclosed pixel belongs to an
/// outline; farther, to an open stroke.
pub const OPEN_STROKE_GAP: usize = 3;

/// The drawn shape on the latent grid: cells more than half inside the region the condition's
/// lines enclose, lines included ([`fill_label`]), and with `open_strokes` every cell an open
/// stroke crosses ([`open_stroke_pixels`]). `condition` [B, 1, H, W], 1 = line.
pub fn target_cells(condition: &Tensor, h: usize, w: usize, open_strokes: bool) -> Result<Tensor> {
    let filled = fill_label(condition)?;
    let inside = cells(&filled, h, w)?;
    if !open_strokes {
        return Ok(inside);
    }
    let crossed = max_pool_to(&open_stroke_pixels(condition, &filled)?, h, w)?
        .gt(0.0)?
        .to_dtype(DType::F32)?;
    inside.maximum(&crossed)
}

/// The line pixels of strokes that enclose nothing: lines (`condition` > 0.5) farther than
/// [`OPEN_STROKE_GAP`] pixels from every enclosed non-line pixel of `filled` (both [B, 1, H, W]).
/// On the host, like [`fill_label`] before it: a 7x7 neighbourhood test per line pixel, 0.8 M
/// comparisons at 128x128 (the trainer's 7x7 max-pool of the enclosed pixels gives the same).
pub fn open_stroke_pixels(condition: &Tensor, filled: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = condition.dims4()?;
    let lines = condition
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let filled = filled.flatten_all()?.to_vec1::<f32>()?;
    let g = OPEN_STROKE_GAP;
    let mut out = vec![0f32; lines.len()];
    for (i, px) in out.iter_mut().enumerate() {
        if lines[i] <= 0.5 {
            continue;
        }
        let (img, y, x) = (i / (h * w), i / w % h, i % w);
        let base = img * h * w;
        let near_enclosed = (y.saturating_sub(g)..(y + g + 1).min(h)).any(|yy| {
            (x.saturating_sub(g)..(x + g + 1).min(w)).any(|xx| {
                let j = base + yy * w + xx;
                filled[j] > 0.5 && lines[j] <= 0.5
            })
        });
        *px = f32::from(u8::from(!near_enclosed));
    }
    Tensor::from_vec(out, (b, 1, h, w), condition.device())
}

/// The exemplar's shape: its non-white pixels plus what they enclose (so a white eye or belly
/// inside an outline counts as the shape's). `exemplar` [B, 3, H, W] in [-1, 1] -> [B, 1, H, W]
/// in {0, 1}; the trainer's `ops.exemplar_foreground`.
pub fn exemplar_foreground(exemplar: &Tensor) -> Result<Tensor> {
    let grey = ((exemplar.to_dtype(DType::F32)? + 1.0)? * 127.5)?;
    let nonwhite = grey.lt(WHITE_BELOW)?.max_keepdim(1)?.to_dtype(DType::F32)?;
    fill_label(&nonwhite)
}

/// The exemplar's shape ([`exemplar_foreground`]) on the latent grid.
pub fn exemplar_cells(exemplar: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    foreground_cells(&exemplar_foreground(exemplar)?, h, w)
}

/// [`exemplar_cells`] from a foreground already made (one flood fill per exemplar where colour
/// transfer needs the foreground too).
pub fn foreground_cells(foreground: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    cells(foreground, h, w)
}

/// What region matching subtracts from a correlation [B, hw_target, hw_exemplar]: 1 where a
/// target cell and an exemplar cell lie on different sides, 0 elsewhere and for an exemplar with
/// less than [`MIN_SHARE`] of its cells on a side. Correlations are clamped to [0, 1], so every
/// penalised one (now <= 0) is at or below every allowed one, and at the temperature's 1 / 0.005
/// its weight drops by exp(-200): below 1e-37 next to any allowed correlation above 0.45.
/// `target` [B, 1, h, w], `exemplar` [B, 1, h, w] from [`target_cells`] and [`exemplar_cells`].
/// With `layout` > 0 (`midms.layout_prior`) a pair of cells both inside is penalised by `layout`
/// times the squared distance of their [`layout_positions`] (the trainer's
/// `ops.layout_penalty`, in the same f32 operations).
pub fn penalty(target: &Tensor, exemplar: &Tensor, layout: f32) -> Result<Tensor> {
    let (b, _, h, w) = target.dims4()?;
    let (_, _, hr, wr) = exemplar.dims4()?;
    // Written out on the host from the two small cell masks: the same matrix from candle's
    // broadcast ops (strided loops over 1 M values, four of them) cost ~13 ms at 32x32 cells,
    // ranking 41 gallery exemplars a median 2.3 s against 1.8 s with this loop (`rank_shipped`).
    let host = |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
    let (t, r) = (host(target)?, host(exemplar)?);
    let (nt, nr) = (h * w, hr * wr);
    let mut out = vec![0f32; b * nt * nr];
    for (bi, block) in out.chunks_exact_mut(nt * nr).enumerate() {
        let (t, r) = (&t[bi * nt..][..nt], &r[bi * nr..][..nr]);
        if sides(r) != Sides::Both {
            continue;
        }
        let (pt, pr) = (layout_positions(t, h, w), layout_positions(r, hr, wr));
        for ((row, &ti), a) in block.chunks_exact_mut(nr).zip(t).zip(&pt) {
            for ((p, &rj), c) in row.iter_mut().zip(r).zip(&pr) {
                *p = match (ti > 0.5, rj > 0.5) {
                    (true, true) if layout > 0.0 => {
                        let (dx, dy) = (a.0 - c.0, a.1 - c.1);
                        layout * (dx * dx + dy * dy)
                    }
                    (inside_t, inside_r) => f32::from(u8::from(inside_t != inside_r)),
                };
            }
        }
    }
    Tensor::from_vec(out, (b, nt, nr), target.device())
}

/// Each cell centre's (x, y) on an `h` x `w` grid relative to the bounding box of the inside cells
/// (`cells` > 0.5, row-major): (0, 0) at the box's top-left corner, (1, 1) at its bottom-right;
/// with no inside cell, relative to the whole grid. What the layout prior compares: a house's
/// roof lies at the top of the drawing's box and of the exemplar's, wherever and however large
/// each is drawn (the trainer's `ops.layout_positions`).
pub fn layout_positions(cells: &[f32], h: usize, w: usize) -> Vec<(f32, f32)> {
    let inside = |y: usize, x: usize| cells[y * w + x] > 0.5;
    let rows: Vec<usize> = (0..h).filter(|&y| (0..w).any(|x| inside(y, x))).collect();
    let cols: Vec<usize> = (0..w).filter(|&x| (0..h).any(|y| inside(y, x))).collect();
    let span = |v: &[usize], n: usize| match (v.first(), v.last()) {
        (Some(&lo), Some(&hi)) => (lo as f32, (hi + 1) as f32),
        _ => (0.0, n as f32),
    };
    let ((y0, y1), (x0, x1)) = (span(&rows, h), span(&cols, w));
    (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as f32 + 0.5, (i % w) as f32 + 0.5);
            ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0))
        })
        .collect()
}

/// Cells outside the sketch where the exemplar has no outside (less than [`MIN_SHARE`] of its
/// cells lie outside its shape): [B, 1, h, w] in {0, 1}, where [`Regions::fill_outside`] puts the
/// background latent.
pub fn fill_mask(target: &Tensor, exemplar: &Tensor) -> Result<Tensor> {
    let share = exemplar.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
    let no_outside = share.gt(1.0 - MIN_SHARE as f64)?.to_dtype(DType::F32)?;
    target.affine(-1.0, 1.0)?.broadcast_mul(&no_outside)
}

/// Cells outside the drawn shape where region matching decides the outside: the exemplar has
/// both sides (the restriction applies) or, with a background latent, none outside (the fill
/// applies). [B, 1, h, w] in {0, 1}; where [`Regions::keep_outside`] keeps the re-warp.
pub fn decided_outside(target: &Tensor, exemplar: &Tensor, background: bool) -> Result<Tensor> {
    let (b, _, h, w) = target.dims4()?;
    let host = |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
    let (t, r) = (host(target)?, host(exemplar)?);
    let (nt, nr) = (h * w, r.len() / b);
    let mut out = vec![0f32; b * nt];
    for (bi, block) in out.chunks_exact_mut(nt).enumerate() {
        let decided = match sides(&r[bi * nr..][..nr]) {
            Sides::Both => true,
            Sides::NoOutside => background,
            Sides::NoInside => false,
        };
        if decided {
            for (o, &ti) in block.iter_mut().zip(&t[bi * nt..][..nt]) {
                *o = 1.0 - ti;
            }
        }
    }
    Tensor::from_vec(out, (b, 1, h, w), target.device())
}

/// Region matching for one run: the correlation penalty and, with a background latent, where
/// the warps take it.
#[derive(Debug, Clone)]
pub struct Regions {
    penalty: Tensor,
    /// The colour warp's penalty where its layout weight differs from the matchings'.
    colour_penalty: Option<Tensor>,
    /// (mask [B, 1, h, w] as u8, background [B, C, h, w]) when some item of the batch needs it.
    fill: Option<(Tensor, Tensor)>,
    /// [`decided_outside`], for a model with `midms.region_keep_outside`.
    keep: Option<Tensor>,
}

impl Regions {
    /// `target`, `exemplar`: cells from [`target_cells`] and [`exemplar_cells`]; `background`:
    /// the model's `midms.background_latent` (`[C]`), if it has one; `keep_outside`: its
    /// `midms.region_keep_outside`; the layout priors: its `midms.layout_prior` and
    /// `midms.colour_layout_prior` ([`penalty`]).
    pub fn new(
        target: &Tensor,
        exemplar: &Tensor,
        background: Option<&[f32]>,
        keep_outside: bool,
        (layout_prior, colour_layout_prior): (f32, f32),
    ) -> Result<Self> {
        let colour_penalty = (colour_layout_prior != layout_prior)
            .then(|| penalty(target, exemplar, colour_layout_prior))
            .transpose()?;
        let penalty = penalty(target, exemplar, layout_prior)?;
        let keep = keep_outside
            .then(|| decided_outside(target, exemplar, background.is_some()))
            .transpose()?;
        let fill = match background {
            Some(bg) => {
                let mask = fill_mask(target, exemplar)?;
                if mask.sum_all()?.to_scalar::<f32>()? > 0.0 {
                    let (b, _, h, w) = mask.dims4()?;
                    let bg = Tensor::new(bg, mask.device())?
                        .reshape((1, bg.len(), 1, 1))?
                        .broadcast_as((b, bg.len(), h, w))?
                        .contiguous()?;
                    Some((mask.gt(0.5)?, bg))
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(Self {
            penalty,
            colour_penalty,
            fill,
            keep,
        })
    }

    /// A confidence mask [B, 1, h, w] with the cells of [`decided_outside`] set to 1 (the re-warp
    /// kept there), for a model with `midms.region_keep_outside`; else the mask as it is.
    pub fn keep_outside(&self, mask: Tensor) -> Result<Tensor> {
        match &self.keep {
            Some(keep) => mask.maximum(keep),
            None => Ok(mask),
        }
    }

    /// A correlation [B, hw, hw] restricted to matches on the same side.
    pub fn restrict(&self, corr: &Tensor) -> Result<Tensor> {
        corr - &self.penalty
    }

    /// Whether the colour warp's layout weight differs from the matchings'.
    pub fn colour_differs(&self) -> bool {
        self.colour_penalty.is_some()
    }

    /// The first correlation as the colour warp takes it: [`Self::restrict`] with the colour
    /// warp's layout weight.
    pub fn restrict_colour(&self, corr: &Tensor) -> Result<Tensor> {
        corr - self.colour_penalty.as_ref().unwrap_or(&self.penalty)
    }

    /// A warp [B, C, h, w] with the background latent on the cells of [`fill_mask`].
    pub fn fill_outside(&self, warped: Tensor) -> Result<Tensor> {
        match &self.fill {
            Some((mask, bg)) => mask.broadcast_as(warped.shape())?.where_cond(bg, &warped),
            None => Ok(warped),
        }
    }

    /// A warp of anything else [B, C, h, w] (the exemplar's chroma, [`super::colour`]) with
    /// zeros where [`Self::fill_outside`] puts the background latent: no photo colour there.
    pub fn clear_outside(&self, warped: Tensor) -> Result<Tensor> {
        match &self.fill {
            Some((mask, _)) => mask
                .broadcast_as(warped.shape())?
                .where_cond(&warped.zeros_like()?, &warped),
            None => Ok(warped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A 16x16 exemplar: white, with a red 8x8 square whose middle is white (enclosed, so inside).
    fn exemplar() -> Tensor {
        let mut v = vec![1f32; 3 * 16 * 16];
        for y in 4..12 {
            for x in 4..12 {
                if (6..10).contains(&y) && (6..10).contains(&x) {
                    continue;
                }
                v[16 * y + x + 256] = -1.0; // green channel off
                v[16 * y + x + 512] = -1.0; // blue channel off
            }
        }
        Tensor::from_vec(v, (1, 3, 16, 16), &Device::Cpu).unwrap()
    }

    #[test]
    fn exemplar_cells_take_the_shape_and_what_it_encloses() -> Result<()> {
        let c = exemplar_cells(&exemplar(), 4, 4)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // 4x4 blocks: the square covers blocks (1..3, 1..3) whole, its white middle included.
        let want: Vec<f32> = (0..16)
            .map(|i| {
                f32::from(u8::from(
                    (1..3).contains(&(i / 4)) && (1..3).contains(&(i % 4)),
                ))
            })
            .collect();
        assert_eq!(c, want);
        Ok(())
    }

    #[test]
    fn penalty_separates_the_sides_and_spares_an_exemplar_without_background() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1f32, 0., 0., 0.], &dev)?.reshape((1, 1, 2, 2))?;
        let r = Tensor::new(&[0f32, 1., 0., 0.], &dev)?.reshape((1, 1, 2, 2))?;
        let p = penalty(&t, &r, 0.0)?.squeeze(0)?.to_vec2::<f32>()?;
        assert_eq!(p[0], vec![1., 0., 1., 1.]); // inside: only exemplar cell 1
        assert_eq!(p[1], vec![0., 1., 0., 0.]); // outside: anything but cell 1
                                                // An exemplar all inside (a photo): nothing is penalised.
        let full = Tensor::ones((1, 1, 2, 2), DType::F32, &dev)?;
        assert_eq!(penalty(&t, &full, 0.0)?.sum_all()?.to_scalar::<f32>()?, 0.0);
        // Penalised cells (here with the higher correlations) weigh nothing after the warp's
        // softmax at T = 0.005: exp(-180) or less (PyTorch gives 0; the vectorised exp stops at
        // the smallest normal float, 1.2e-38).
        let corr = Tensor::new(&[[[0.9f32, 0.2, 1.0, 0.5]]], &dev)?;
        let p1 = Tensor::new(&[[[0.0f32, 0.0, 1.0, 1.0]]], &dev)?;
        let w = crate::sampling::matching::warp_weights(&(corr - p1)?, 0.005)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(w[2..].iter().all(|&x| x < 1e-37), "{w:?}");
        assert!((w[0] + w[1] - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn layout_positions_are_relative_to_the_shapes_box() {
        // a 4x6 grid, inside: rows 1..3, columns 2..5 (the trainer's test has the same numbers)
        let mut cells = vec![0f32; 24];
        for y in 1..3 {
            cells[y * 6 + 2..y * 6 + 5].fill(1.0);
        }
        let p = layout_positions(&cells, 4, 6);
        // the box's first cell: its centre; its last; a cell outside the box: beyond [0, 1]
        assert_eq!(p[6 + 2], (0.5 / 3.0, 0.25));
        assert_eq!(p[2 * 6 + 4], (2.5 / 3.0, 0.75));
        assert_eq!(p[0], (-2.0 / 3.0 + 0.5 / 3.0, -0.25));
        // no inside cell: the whole grid
        assert_eq!(layout_positions(&[0.0; 4], 2, 2)[3], (0.75, 0.75));
    }

    #[test]
    fn the_layout_prior_weighs_inside_pairs_by_their_places_in_their_shapes() -> Result<()> {
        let dev = Device::Cpu;
        // target: a 2x2 block at the top-left of a 4x4 grid; exemplar: the bottom-right 2x2
        // block, so both boxes hold the same places at different positions
        let block = |y0: usize, x0: usize| {
            let mut v = vec![0f32; 16];
            for y in y0..y0 + 2 {
                v[y * 4 + x0..y * 4 + x0 + 2].fill(1.0);
            }
            Tensor::from_vec(v, (1, 1, 4, 4), &dev)
        };
        let (t, r) = (block(0, 0)?, block(2, 2)?);
        let p = penalty(&t, &r, 2.0)?.squeeze(0)?.to_vec2::<f32>()?;
        assert_eq!(p[0][10], 0.0, "the same place in both boxes");
        assert_eq!(p[0][15], 2.0 * (0.5 * 0.5 + 0.5 * 0.5), "opposite corners");
        assert_eq!(p[1][10], 2.0 * 0.5 * 0.5, "one cell over");
        assert_eq!(
            (p[0][0], p[2][10], p[2][0]),
            (1.0, 1.0, 0.0),
            "sides as without it"
        );
        assert_eq!(
            penalty(&t, &r, 0.0)?.squeeze(0)?.to_vec2::<f32>()?[0][15],
            0.0
        );
        Ok(())
    }

    /// A 16x16 condition: a closed 8x8 square outline (rows and columns 2 and 9) and an open
    /// horizontal stroke on row 13, columns 2..14, 5 px below the square's inside (rows 3..8).
    fn square_and_stroke() -> Tensor {
        let mut v = vec![0f32; 16 * 16];
        for i in 2..10 {
            for (y, x) in [(2, i), (9, i), (i, 2), (i, 9)] {
                v[16 * y + x] = 1.0;
            }
        }
        for x in 2..14 {
            v[16 * 13 + x] = 1.0;
        }
        Tensor::from_vec(v, (1, 1, 16, 16), &Device::Cpu).unwrap()
    }

    #[test]
    fn open_strokes_are_inside_only_when_the_model_says_so() -> Result<()> {
        let cond = square_and_stroke();
        let open = open_stroke_pixels(&cond, &fill_label(&cond)?)?
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        // The stroke's pixels (row 13, 5 rows from the inside, rows 3..8) are open; the
        // square's outline (within 1 px of its inside) is not.
        assert!((2..14).all(|x| open[13][x] == 1.0));
        assert_eq!(open.iter().flatten().sum::<f32>(), 12.0);
        // 4x4 cells: the filled square (rows and columns 2..10) covers more than half of cell
        // (1, 1) alone; cells 0 and 2 of each axis get 2 of their 4 rows or columns.
        let plain = target_cells(&cond, 4, 4, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let with = target_cells(&cond, 4, 4, true)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = vec![0f32; 16];
        want[5] = 1.0;
        assert_eq!(plain, want);
        // Row 13 lies in cell row 3; columns 2..14 cross cell columns 0..3.
        for x in 0..4 {
            want[12 + x] = 1.0;
        }
        assert_eq!(with, want);
        Ok(())
    }

    /// Item 0 has both sides: its outside is kept. Item 1, a photo: its outside is kept only
    /// with a background latent (which the fill puts there). Item 2, an exemplar with almost
    /// nothing inside: region matching stands aside, nothing is kept.
    #[test]
    fn the_outside_keeps_the_rewarp_where_region_matching_decides_it() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1f32, 0., 0., 0.], &dev)?
            .reshape((1, 1, 2, 2))?
            .repeat((3, 1, 1, 1))?;
        let r = Tensor::new(&[0f32, 1., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0.], &dev)?
            .reshape((3, 1, 2, 2))?;
        let mask = Tensor::new(&[0f32, 1., 0., 0.], &dev)?
            .reshape((1, 1, 2, 2))?
            .repeat((3, 1, 1, 1))?;
        let kept = |bg: Option<&[f32]>, keep: bool| -> Result<Vec<f32>> {
            Regions::new(&t, &r, bg, keep, (0.0, 0.0))?
                .keep_outside(mask.clone())?
                .flatten_all()?
                .to_vec1::<f32>()
        };
        let (m, k) = ([0f32, 1., 0., 0.], [0f32, 1., 1., 1.]);
        let cat = |a: [f32; 4], b: [f32; 4], c: [f32; 4]| [a, b, c].concat();
        assert_eq!(kept(None, true)?, cat(k, m, m));
        assert_eq!(kept(Some(&[1.0]), true)?, cat(k, k, m));
        assert_eq!(kept(Some(&[1.0]), false)?, cat(m, m, m));
        Ok(())
    }

    /// Item 0: a glyph exemplar (has an outside): nothing filled. Item 1: a photo (all inside):
    /// the target's outside cells take the background latent, its inside keeps the warp.
    #[test]
    fn a_photo_exemplar_leaves_a_background_outside_the_sketch() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1f32, 0., 0., 0., 1., 0., 0., 0.], &dev)?.reshape((2, 1, 2, 2))?;
        let r = Tensor::new(&[0f32, 1., 0., 0., 1., 1., 1., 1.], &dev)?.reshape((2, 1, 2, 2))?;
        let regions = Regions::new(&t, &r, Some(&[7.0, -7.0]), false, (0.0, 0.0))?;
        let warped = Tensor::arange(0f32, 16., &dev)?.reshape((2, 2, 2, 2))?;
        let out = regions
            .fill_outside(warped.clone())?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = warped.flatten_all()?.to_vec1::<f32>()?;
        for cell in 1..4 {
            want[8 + cell] = 7.0; // item 1, channel 0
            want[12 + cell] = -7.0; // item 1, channel 1
        }
        assert_eq!(out, want);
        // Without a background latent the warp is left alone.
        let plain = Regions::new(&t, &r, None, false, (0.0, 0.0))?.fill_outside(warped.clone())?;
        assert_eq!(
            plain.flatten_all()?.to_vec1::<f32>()?,
            warped.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }
}
