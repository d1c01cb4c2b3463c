//! SPADE's modulated positional norm, `norm(x) * (1 + gamma) + beta` (+ activation), where
//! `norm` standardises each pixel over the channels (unbiased variance). As candle tensor ops
//! it was eight single-threaded passes with a fresh buffer each; here it is two parallel passes:
//! per-pixel statistics (f64, per block of pixels, reading each channel's row of the block),
//! then one output pass per channel row.
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activations::{contiguous_f32, Act};
use super::{for_each_chunk, PARALLEL_MIN};

/// Pixels per statistics task: enough work per channel row, small enough for L1.
const PIXELS: usize = 512;

struct SpadeOp {
    eps: f64,
    act: Act,
}

/// Mean and 1 / std over the channels of the pixels `p0 .. p0 + out.len()` of one sample.
fn pixel_stats(x: &[f32], c: usize, hw: usize, p0: usize, eps: f64, out: &mut [(f32, f32)]) {
    let n = out.len();
    let mut sum = vec![0f64; n];
    for ch in 0..c {
        for (s, &v) in sum.iter_mut().zip(&x[ch * hw + p0..][..n]) {
            *s += v as f64;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / c as f64).collect();
    let mut sq = vec![0f64; n];
    for ch in 0..c {
        for ((q, &v), m) in sq.iter_mut().zip(&x[ch * hw + p0..][..n]).zip(&mean) {
            let d = v as f64 - m;
            *q += d * d;
        }
    }
    let dof = (c as f64 - 1.0).max(1.0);
    for ((o, m), q) in out.iter_mut().zip(&mean).zip(&sq) {
        *o = (*m as f32, (1.0 / (q / dof + eps).sqrt()) as f32);
    }
}

impl CustomOp3 for SpadeOp {
    fn name(&self) -> &'static str {
        "midm-spade"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
        );
        let dims = l1.shape().dims();
        let (b, c) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        let parallel = rayon::current_num_threads() > 1 && x.len() >= PARALLEL_MIN;
        let mut stats = vec![(0f32, 0f32); b * hw];
        for (bi, st) in stats.chunks_mut(hw).enumerate() {
            let xs = &x[bi * c * hw..][..c * hw];
            let task = |(i, out): (usize, &mut [(f32, f32)])| {
                pixel_stats(xs, c, hw, i * PIXELS, self.eps, out)
            };
            if parallel {
                st.par_chunks_mut(PIXELS).enumerate().for_each(task);
            } else {
                st.chunks_mut(PIXELS).enumerate().for_each(task);
            }
        }
        let mut dst = vec![0f32; x.len()];
        for_each_chunk(&mut dst, hw, |row, d| {
            let st = &stats[(row / c) * hw..][..hw];
            let at = row * hw;
            let (xs, g, bt) = (&x[at..][..hw], &gamma[at..][..hw], &beta[at..][..hw]);
            for p in 0..hw {
                let y = (xs[p] - st[p].0) * st[p].1 * (1.0 + g[p]) + bt[p];
                d[p] = match self.act {
                    Act::LeakyRelu(slope) if y < 0.0 => y * slope,
                    _ => y,
                };
            }
        });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `norm(x) * (1 + gamma) + beta`, then `act` (identity or LeakyReLU), for CPU f32 tensors
/// `[B, C, H, W]` of one shape; `None` off the fast path.
pub fn spade_modulate_cpu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<Option<Tensor>> {
    let fast = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    let same = x.dims() == gamma.dims() && x.dims() == beta.dims();
    if !(fast(x) && fast(gamma) && fast(beta) && same && x.rank() == 4) || act == Act::Silu {
        return Ok(None);
    }
    let op = SpadeOp { eps, act };
    x.contiguous()?
        .apply_op3_no_bwd(&gamma.contiguous()?, &beta.contiguous()?, &op)
        .map(Some)
}
