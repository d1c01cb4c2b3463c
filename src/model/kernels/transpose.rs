//! `x[:, :, cols]` transposed to a contiguous `[B, cols, R]`: the cycle check's softmax over
//! target positions reads the correlation by columns. candle makes a transposed view contiguous
//! with a strided copy that walks the source column by column, one index computation per
//! element; at the official size that is 16.7 M elements per soft flow, and the cycle check took
//! longer than PyTorch's (282 against 182 ms, one run, 2 threads). Here the copy goes in bands
//! of 32 source columns, parallel over the bands: each source row gives 32 contiguous values to
//! 32 output rows that all advance by one, so reads and writes stay in a few cache lines.
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::for_each_chunk;

/// Source columns per band (output rows per task).
const BAND: usize = 32;

struct TransposeColumns {
    start: usize,
    len: usize,
}

impl CustomOp1 for TransposeColumns {
    fn name(&self) -> &'static str {
        "midm-transpose-columns"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("transpose columns: expected a contiguous f32 tensor")
        };
        let (b, rows, cols) = l.shape().dims3()?;
        let (start, k) = (self.start, self.len);
        let src = &v[a..e];
        let mut out = vec![0f32; b * k * rows];
        for (plane, out) in src
            .chunks_exact(rows * cols)
            .zip(out.chunks_exact_mut(k * rows))
        {
            for_each_chunk(out, BAND * rows, |i, dst| {
                let c0 = start + i * BAND;
                let width = dst.len() / rows; // BAND, or fewer in the last band
                for r in 0..rows {
                    let row = &plane[r * cols + c0..][..width];
                    for (c, x) in row.iter().enumerate() {
                        dst[c * rows + r] = *x;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, k, rows))))
    }
}

/// `x.narrow(2, start, len).transpose(1, 2).contiguous()` for a [B, R, C] tensor.
pub fn transposed_columns(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && start + len <= x.dim(2)? {
        x.contiguous()?
            .apply_op1_no_bwd(&TransposeColumns { start, len })
    } else {
        x.narrow(2, start, len)?.transpose(1, 2)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against candle's own transpose-and-copy: odd sizes (partial tiles), a batch, column
    /// ranges at the start, in the middle and at the end.
    #[test]
    fn matches_candle() -> Result<()> {
        let small = Tensor::randn(0f32, 1., (2, 70, 45), &Device::Cpu)?;
        // Big enough for the bands to run in parallel.
        let big = Tensor::randn(0f32, 1., (1, 300, 257), &Device::Cpu)?;
        for (x, start, len) in [
            (&small, 0, 45),
            (&small, 3, 33),
            (&small, 40, 5),
            (&small, 0, 1),
            (&big, 17, 200),
        ] {
            let want = x.narrow(2, start, len)?.transpose(1, 2)?.contiguous()?;
            let got = transposed_columns(x, start, len)?;
            assert_eq!(got.dims(), want.dims());
            let (g, w) = (
                got.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?,
            );
            assert!(g == w, "start {start} len {len}");
        }
        Ok(())
    }
}
