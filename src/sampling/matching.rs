//! Matching operations of MIDMs: normalised correlation, soft warp, soft flow, the
//! forward-backward cycle check and the confidence mask, exactly as the reference builds them
//! (see `tests/fixtures/parity/README.md`, section 4, steps 4-7).
//!
//! Correlations are kept as matrices [B, h*w (target), h*w (reference)]; the reference's
//! [B, h, w, h, w] layout is the same memory.
use candle_core::{DType, Device, Result, Tensor};

use crate::model::kernels::activations::{relu_fresh, softmax_last_dim_scaled};
use crate::model::kernels::transpose::transposed_columns;

/// Epsilon of the second normalisation inside `correlation`.
const CORR_EPS: f64 = 1e-5;

/// `Correlation.correlation(q, s)`: both renormalised over channels (+1e-5), dot products of
/// every target position with every reference position, clamped at 0.
/// q, s: [B, C, h, w] -> [B, h*w, h*w].
pub fn correlation(query: &Tensor, support: &Tensor) -> Result<Tensor> {
    let normalize = |x: &Tensor| -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let norm = (x.sqr()?.sum_keepdim(1)?.sqrt()? + CORR_EPS)?;
        x.broadcast_div(&norm)?.reshape((b, c, h * w))
    };
    let q = normalize(query)?;
    let s = normalize(support)?;
    // Clamped in place: the product and a clamped copy were two [hw, hw] matrices (67 MB each
    // at the official size) alive at once.
    relu_fresh(q.transpose(1, 2)?.matmul(&s)?)
}

/// Row blocks of a [B, rows, cols] f32 result: at most this many bytes per block.
const BLOCK_BYTES: usize = 4 << 20;

/// Row ranges of a [B, rows, cols] matrix in blocks of <= [`BLOCK_BYTES`] (at least one row).
fn row_blocks(rows: usize, cols: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = (BLOCK_BYTES / (4 * cols.max(1))).clamp(1, rows.max(1));
    (0..rows)
        .step_by(step)
        .map(move |r| r..(r + step).min(rows))
}

/// `f` on each row block of a [B, rows, cols] computation, joined along the rows. The soft
/// flow's ops are row-wise (a softmax over the last dim, a matmul's rows), so only one block's
/// temporaries are alive at a time.
fn map_row_blocks(
    rows: usize,
    cols: usize,
    f: impl Fn(std::ops::Range<usize>) -> Result<Tensor>,
) -> Result<Tensor> {
    let blocks = row_blocks(rows, cols).map(f).collect::<Result<Vec<_>>>()?;
    if blocks.len() == 1 {
        return Ok(blocks.into_iter().next().expect("one block"));
    }
    Tensor::cat(&blocks, 1)
}

/// Softmax over reference positions of `corr / temperature`: the soft-warp weights P.
/// (The networks' softmax: same arithmetic as candle's, with a vectorised exp on the CPU; at a
/// 64x64 latent this is 16.7 M exps per call. The division is fused into it as candle's
/// `corr / t` computes it, `corr * (1 / t)`, so no scaled copy of the matrix is made.)
pub fn warp_weights(corr: &Tensor, temperature: f64) -> Result<Tensor> {
    softmax_last_dim_scaled(corr, 1.0 / temperature)
}

/// Warp `src` [B, C, h, w] (reference grid) to the target grid with weights P [B, hw, hw].
pub fn apply_warp(weights: &Tensor, src: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = src.dims4()?;
    let src = src.reshape((b, c, h * w))?;
    // (P @ src^T)^T = src @ P^T: [B, C, hw_ref] x [B, hw_ref, hw_trg].
    src.matmul(&weights.transpose(1, 2)?)?.reshape((b, c, h, w))
}

/// `soft_warp(src, corr)` of the reference.
pub fn soft_warp(src: &Tensor, corr: &Tensor, temperature: f64) -> Result<Tensor> {
    apply_warp(&warp_weights(corr, temperature)?, src)
}

/// Output of `get_flow`: expected coordinates and flows, all [B, h, w, 2] with (x, y) order
/// in [-1, 1].
#[derive(Debug, Clone)]
pub struct SoftFlow {
    /// Expected reference coordinate of every target pixel.
    pub map_trg: Tensor,
    /// Expected target coordinate of every reference pixel.
    pub map_src: Tensor,
    pub flow_trg: Tensor,
    pub flow_src: Tensor,
}

/// The sampling grid: `grid[i, j] = (x_j, y_i)`, x = y = linspace(-1, 1, n), flattened [h*w, 2].
fn grid(h: usize, w: usize, device: &Device) -> Result<Tensor> {
    let lin = |n: usize| -> Vec<f32> {
        if n == 1 {
            return vec![-1.0];
        }
        // torch.linspace in float32: start + i * step for the first half, end - (n-1-i) * step after.
        let step = 2.0f32 / (n - 1) as f32;
        (0..n)
            .map(|i| {
                if i < n / 2 {
                    -1.0 + i as f32 * step
                } else {
                    1.0 - (n - 1 - i) as f32 * step
                }
            })
            .collect()
    };
    let (xs, ys) = (lin(w), lin(h));
    let mut g = Vec::with_capacity(h * w * 2);
    for y in &ys {
        for x in &xs {
            g.push(*x);
            g.push(*y);
        }
    }
    Tensor::from_vec(g, (h * w, 2), device)
}

/// `get_flow(corr, temp)`: soft argmax coordinates in both directions.
pub fn soft_flow(corr: &Tensor, h: usize, w: usize, temperature: f64) -> Result<SoftFlow> {
    let (b, trg, reference) = corr.dims3()?;
    let grid = grid(h, w, corr.device())?;
    let grid_b = grid
        .unsqueeze(0)?
        .broadcast_as((b, h * w, 2))?
        .contiguous()?;
    // Both softmaxes in row blocks, each block straight into its expected coordinates: whole,
    // the softmaxes (and the transposed copy) were 67 MB each at the official size.
    // Over reference positions:
    let map_trg = map_row_blocks(trg, reference, |r| {
        softmax_last_dim_scaled(&corr.narrow(1, r.start, r.len())?, 1.0 / temperature)?
            .matmul(&grid_b)
    })?;
    // Over target positions, produced transposed ([B, ref, trg]): the layout the matmul wants,
    // and one contiguous row per softmax instead of candle's strided dim-1 softmax.
    let map_src = map_row_blocks(reference, trg, |r| {
        let block = transposed_columns(corr, r.start, r.len())?;
        softmax_last_dim_scaled(&block, 1.0 / temperature)?.matmul(&grid_b)
    })?;
    let flow_trg = (&map_trg - &grid_b)?;
    let flow_src = (&map_src - &grid_b)?;
    let shape = (b, h, w, 2);
    Ok(SoftFlow {
        map_trg: map_trg.reshape(shape)?,
        map_src: map_src.reshape(shape)?,
        flow_trg: flow_trg.reshape(shape)?,
        flow_src: flow_src.reshape(shape)?,
    })
}

/// `F.grid_sample(field, coords, mode="bilinear", padding_mode="zeros", align_corners=True)` for
/// a 2-channel field laid out [B, h, w, 2] and coordinates [B, h, w, 2] in (x, y) order.
/// Done on the host: it is tiny (h*w points, four taps each) and candle has no grid_sample.
fn grid_sample_2ch(field: &[f32], coords: &[f32], b: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * h * w * 2];
    for bi in 0..b {
        let base = bi * h * w * 2;
        let at = |y: i64, x: i64, c: usize| -> f32 {
            if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
                0.0
            } else {
                field[base + (y as usize * w + x as usize) * 2 + c]
            }
        };
        for p in 0..h * w {
            let gx = coords[base + p * 2];
            let gy = coords[base + p * 2 + 1];
            let ix = (gx + 1.0) / 2.0 * (w as f32 - 1.0);
            let iy = (gy + 1.0) / 2.0 * (h as f32 - 1.0);
            let (x0, y0) = (ix.floor(), iy.floor());
            let (tx, ty) = (ix - x0, iy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..2 {
                let v = at(y0, x0, c) * (1.0 - tx) * (1.0 - ty)
                    + at(y0, x0 + 1, c) * tx * (1.0 - ty)
                    + at(y0 + 1, x0, c) * (1.0 - tx) * ty
                    + at(y0 + 1, x0 + 1, c) * tx * ty;
                out[base + p * 2 + c] = v;
            }
        }
    }
    out
}

/// Forward-backward consistency errors `(fb_ts, fb_st)`, each [B, h, w]. As in the reference,
/// `fb_ts` samples `flow_trg` (not `flow_src`) at `map_trg`, and `fb_st` samples `flow_src` at
/// `map_src`.
pub fn fb_check(flow: &SoftFlow) -> Result<(Tensor, Tensor)> {
    let (b, h, w, _) = flow.map_trg.dims4()?;
    let device = flow.map_trg.device().clone();
    let host =
        |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let one = |field: &Tensor, coords: &Tensor| -> Result<Tensor> {
        let f = host(field)?;
        let sampled = grid_sample_2ch(&f, &host(coords)?, b, h, w);
        let err: Vec<f32> = sampled
            .chunks_exact(2)
            .zip(f.chunks_exact(2))
            .map(|(s, f)| ((s[0] + f[0]).powi(2) + (s[1] + f[1]).powi(2)).sqrt())
            .collect();
        Tensor::from_vec(err, (b, h, w), &device)
    };
    Ok((
        one(&flow.flow_trg, &flow.map_trg)?,
        one(&flow.flow_src, &flow.map_src)?,
    ))
}

/// Confidence mask from `fb` [B, h, w]: consistent where fb < threshold; 2x2 average pool;
/// nearest x2 upsample; > 0.5 (at least 3 of 4 pixels of a block consistent). [B, 1, h, w].
pub fn confidence_mask(fb: &Tensor, threshold: f64) -> Result<Tensor> {
    let (b, h, w) = fb.dims3()?;
    let raw = fb
        .lt(threshold)?
        .to_dtype(DType::F32)?
        .reshape((b, 1, h, w))?;
    let pooled = raw.avg_pool2d(2)?;
    let (ph, pw) = (pooled.dim(2)?, pooled.dim(3)?);
    let up = pooled.upsample_nearest2d(ph * 2, pw * 2)?;
    let mut mask = up.gt(0.5)?.to_dtype(DType::F32)?;
    // Odd sizes: the reference's shapes would not even line up; keep the last row/column unmasked.
    if (ph * 2, pw * 2) != (h, w) {
        mask = mask
            .pad_with_zeros(2, 0, h - ph * 2)?
            .pad_with_zeros(3, 0, w - pw * 2)?;
    }
    Ok(mask)
}

/// The reference's `mask = fbcheck(get_flow(corr))[0]` chain in one call, returning the flow,
/// the fb error of the target side and the mask.
pub fn cycle_mask(
    corr: &Tensor,
    h: usize,
    w: usize,
    temperature: f64,
    threshold: f64,
) -> Result<(SoftFlow, Tensor, Tensor)> {
    let flow = soft_flow(corr, h, w, temperature)?;
    let (fb_ts, _) = fb_check(&flow)?;
    let mask = confidence_mask(&fb_ts, threshold)?;
    Ok((flow, fb_ts, mask))
}

/// Blend: `new * mask + old * (1 - mask)`.
pub fn masked_mix(new: &Tensor, old: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let keep = mask.affine(-1.0, 1.0)?;
    new.broadcast_mul(mask)? + old.broadcast_mul(&keep)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::activations::softmax_last_dim;

    #[test]
    fn identity_correlation_gives_consistent_flow_and_full_mask() -> Result<()> {
        // Features that only match themselves: the soft flow is the identity, fb error ~0.
        let (h, w) = (4, 4);
        let eye = Tensor::eye(h * w, DType::F32, &Device::Cpu)?.reshape((1, h * w, h, w))?;
        let corr = correlation(&eye, &eye)?;
        let (flow, fb, mask) = cycle_mask(&corr, h, w, 0.005, 0.5)?;
        let max_flow = flow
            .flow_trg
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(max_flow < 1e-5, "flow {max_flow}");
        assert!(fb.flatten_all()?.max(0)?.to_scalar::<f32>()? < 1e-5);
        assert_eq!(mask.sum_all()?.to_scalar::<f32>()?, (h * w) as f32);
        Ok(())
    }

    /// The correlation (clamped in place) and the warp weights (scale fused into the softmax)
    /// equal the tensor-op formulas bit for bit, and the row-blocked soft flow equals them to
    /// float rounding, on a size that splits into several blocks.
    #[test]
    fn fused_and_blocked_matching_equals_the_tensor_ops() -> Result<()> {
        let (h, w, t) = (48, 48, 0.005);
        let hw = h * w;
        assert!(row_blocks(hw, hw).count() > 4);
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 8, h, w), &dev)?;
        let s = Tensor::randn(0f32, 1.0, (1, 8, h, w), &dev)?;
        let normalize = |x: &Tensor| -> Result<Tensor> {
            let norm = (x.sqr()?.sum_keepdim(1)?.sqrt()? + CORR_EPS)?;
            x.broadcast_div(&norm)?.reshape((1, 8, hw))
        };
        let whole = normalize(&q)?
            .transpose(1, 2)?
            .matmul(&normalize(&s)?)?
            .relu()?;
        let corr = correlation(&q, &s)?;
        let same = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        assert_eq!(same(&corr, &whole)?, 0.0);
        let scaled = (&whole / t)?;
        assert_eq!(
            same(&warp_weights(&corr, t)?, &softmax_last_dim(&scaled)?)?,
            0.0
        );
        let g = grid(h, w, &dev)?.unsqueeze(0)?.contiguous()?;
        let flow = soft_flow(&corr, h, w, t)?;
        let map_trg = softmax_last_dim(&scaled)?
            .matmul(&g)?
            .reshape((1, h, w, 2))?;
        let map_src = softmax_last_dim(&scaled.transpose(1, 2)?)?
            .matmul(&g)?
            .reshape((1, h, w, 2))?;
        // The expected coordinates differ by float rounding only: gemm sums a [rows, hw] x
        // [hw, 2] product in another order for another number of rows.
        assert!(same(&flow.map_trg, &map_trg)? <= 2e-7);
        assert!(same(&flow.map_src, &map_src)? <= 2e-7);
        Ok(())
    }

    #[test]
    fn warp_moves_values_to_matched_positions() -> Result<()> {
        // Target pixel 0 matches reference pixel 1 and vice versa.
        let corr = Tensor::new(&[[[0f32, 1.0], [1.0, 0.0]]], &Device::Cpu)?;
        let src = Tensor::new(&[10f32, 20.0], &Device::Cpu)?.reshape((1, 1, 1, 2))?;
        let out: Vec<f32> = soft_warp(&src, &corr, 0.005)?.flatten_all()?.to_vec1()?;
        assert!(
            (out[0] - 20.0).abs() < 1e-3 && (out[1] - 10.0).abs() < 1e-3,
            "{out:?}"
        );
        Ok(())
    }

    #[test]
    fn mask_needs_three_of_four() -> Result<()> {
        // One 2x2 block: three consistent pixels -> all ones; two -> none.
        let fb = Tensor::new(&[[[0.1f32, 0.1], [0.1, 0.9]]], &Device::Cpu)?;
        let m = confidence_mask(&fb, 0.5)?;
        assert_eq!(m.sum_all()?.to_scalar::<f32>()?, 4.0);
        let fb2 = Tensor::new(&[[[0.1f32, 0.9], [0.1, 0.9]]], &Device::Cpu)?;
        assert_eq!(
            confidence_mask(&fb2, 0.5)?.sum_all()?.to_scalar::<f32>()?,
            0.0
        );
        Ok(())
    }
}
