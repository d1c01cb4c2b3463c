//! Region matching: a model's `midms.region_matching` (our own models; not in the authors' code,
//! so never on for their checkpoints or parity sets).
//!
//! The UNet is unconditional: the output takes its shape from the warped exemplar. A cell
//! outside the drawing that matches the exemplar's glyph paints a patch there, and a cell inside
//! that matches the exemplar's white background leaves a hole. With region matching a cell inside
//! the drawn shape matches only exemplar cells inside the exemplar's shape, and a cell outside
//! only cells outside it, in the initial warp and in every re-matching (the cycle check sees the
//! same restricted correlation). An exemplar with no outside (a photo) is matched as before, and
//! with a model's `midms.background_latent` the cells outside the sketch then take that latent
//! (the white background the UNet saw around every training glyph) instead of a warp of the photo.
//! Model v1.3's networks on the hand-drawn set, seed 0: silhouette IoU 0.680 -> 0.793 with the
//! restriction, 0.844 with the fill too (weights/MODEL_CARD.md, model v1.4). The trainer computes
//! the same (`train.ops.restrict_to_regions`, `train.ops.fill_outside`).
use candle_core::{DType, Result, Tensor, D};

use crate::model::ops::{avg_pool_to, fill_label};

/// The exemplar needs at least this share of its cells on each side, else its matches are left
/// unrestricted (a photo without a white background has nothing to keep the outside on).
pub const MIN_SHARE: f32 = 0.05;

/// An exemplar pixel is foreground when one of its channels is below 235 of 255
/// (`train.evaluate.foreground`'s rule); 234.5 keeps the comparison clear of float rounding.
const WHITE_BELOW: f64 = 234.5;

/// Cells of the latent grid `h` x `w` more than half inside `inside` [B, 1, H, W] (in {0, 1}):
/// [B, 1, h, w] in {0, 1}.
fn cells(inside: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    avg_pool_to(inside, h, w)?.gt(0.5)?.to_dtype(DType::F32)
}

/// The drawn shape on the latent grid: cells more than half inside the region the condition's
/// lines enclose, lines included ([`fill_label`]). `condition` [B, 1, H, W], 1 = line.
pub fn target_cells(condition: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    cells(&fill_label(condition)?, h, w)
}

/// The exemplar's shape on the latent grid: its non-white pixels plus what they enclose (so a
/// white eye or belly inside an outline counts as the shape's). `exemplar` [B, 3, H, W] in [-1, 1].
pub fn exemplar_cells(exemplar: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let grey = ((exemplar.to_dtype(DType::F32)? + 1.0)? * 127.5)?;
    let nonwhite = grey.lt(WHITE_BELOW)?.max_keepdim(1)?.to_dtype(DType::F32)?;
    cells(&fill_label(&nonwhite)?, h, w)
}

/// What region matching subtracts from a correlation [B, hw_target, hw_exemplar]: 1 where a
/// target cell and an exemplar cell lie on different sides, 0 elsewhere and for an exemplar with
/// less than [`MIN_SHARE`] of its cells on a side. Correlations are clamped to [0, 1], so every
/// penalised one (now <= 0) is at or below every allowed one, and at the temperature's 1 / 0.005
/// its weight drops by exp(-200): below 1e-37 next to any allowed correlation above 0.45.
/// `target` [B, 1, h, w], `exemplar` [B, 1, h, w] from [`target_cells`] and [`exemplar_cells`].
pub fn penalty(target: &Tensor, exemplar: &Tensor) -> Result<Tensor> {
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
        // Same arithmetic as the trainer: the share in f32, compared with f32 bounds.
        let share = r.iter().sum::<f32>() / nr as f32;
        if !(MIN_SHARE..=1.0 - MIN_SHARE).contains(&share) {
            continue;
        }
        for (row, &ti) in block.chunks_exact_mut(nr).zip(t) {
            for (p, &rj) in row.iter_mut().zip(r) {
                *p = f32::from(u8::from((ti > 0.5) != (rj > 0.5)));
            }
        }
    }
    Tensor::from_vec(out, (b, nt, nr), target.device())
}

/// Cells outside the sketch where the exemplar has no outside (less than [`MIN_SHARE`] of its
/// cells lie outside its shape): [B, 1, h, w] in {0, 1}, where [`Regions::fill_outside`] puts the
/// background latent.
pub fn fill_mask(target: &Tensor, exemplar: &Tensor) -> Result<Tensor> {
    let share = exemplar.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
    let no_outside = share.gt(1.0 - MIN_SHARE as f64)?.to_dtype(DType::F32)?;
    target.affine(-1.0, 1.0)?.broadcast_mul(&no_outside)
}

/// Region matching for one run: the correlation penalty and, with a background latent, where
/// the warps take it.
#[derive(Debug, Clone)]
pub struct Regions {
    penalty: Tensor,
    /// (mask [B, 1, h, w] as u8, background [B, C, h, w]) when some item of the batch needs it.
    fill: Option<(Tensor, Tensor)>,
}

impl Regions {
    /// `target`, `exemplar`: cells from [`target_cells`] and [`exemplar_cells`]; `background`:
    /// the model's `midms.background_latent` ([C]), if it has one.
    pub fn new(target: &Tensor, exemplar: &Tensor, background: Option<&[f32]>) -> Result<Self> {
        let penalty = penalty(target, exemplar)?;
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
        Ok(Self { penalty, fill })
    }

    /// A correlation [B, hw, hw] restricted to matches on the same side.
    pub fn restrict(&self, corr: Tensor) -> Result<Tensor> {
        corr - &self.penalty
    }

    /// A warp [B, C, h, w] with the background latent on the cells of [`fill_mask`].
    pub fn fill_outside(&self, warped: Tensor) -> Result<Tensor> {
        match &self.fill {
            Some((mask, bg)) => mask.broadcast_as(warped.shape())?.where_cond(bg, &warped),
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
        let p = penalty(&t, &r)?.squeeze(0)?.to_vec2::<f32>()?;
        assert_eq!(p[0], vec![1., 0., 1., 1.]); // inside: only exemplar cell 1
        assert_eq!(p[1], vec![0., 1., 0., 0.]); // outside: anything but cell 1
                                                // An exemplar all inside (a photo): nothing is penalised.
        let full = Tensor::ones((1, 1, 2, 2), DType::F32, &dev)?;
        assert_eq!(penalty(&t, &full)?.sum_all()?.to_scalar::<f32>()?, 0.0);
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

    /// Item 0: a glyph exemplar (has an outside): nothing filled. Item 1: a photo (all inside):
    /// the target's outside cells take the background latent, its inside keeps the warp.
    #[test]
    fn a_photo_exemplar_leaves_a_background_outside_the_sketch() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1f32, 0., 0., 0., 1., 0., 0., 0.], &dev)?.reshape((2, 1, 2, 2))?;
        let r = Tensor::new(&[0f32, 1., 0., 0., 1., 1., 1., 1.], &dev)?.reshape((2, 1, 2, 2))?;
        let regions = Regions::new(&t, &r, Some(&[7.0, -7.0]))?;
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
        let plain = Regions::new(&t, &r, None)?.fill_outside(warped.clone())?;
        assert_eq!(
            plain.flatten_all()?.to_vec1::<f32>()?,
            warped.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }
}
