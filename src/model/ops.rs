//! General tensor operations used across the crate (networks, sampler, image I/O, bench).
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Subtract the channel mean, divide by the channel L2 norm (no epsilon, as the reference).
pub fn center_and_normalize(f: &Tensor) -> Result<Tensor> {
    let f = f.broadcast_sub(&f.mean_keepdim(1)?)?;
    f.broadcast_div(&f.sqr()?.sum_keepdim(1)?.sqrt()?)
}

/// `F.interpolate(x, (h, w), mode="nearest")`: source index floor(i * H / h).
pub fn interpolate_nearest(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, src_h, src_w) = x.dims4()?;
    if (src_h, src_w) == (h, w) {
        return Ok(x.clone());
    }
    let index = |dst: usize, src: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..dst).map(|i| ((i * src) / dst) as u32).collect();
        Tensor::from_vec(idx, dst, x.device())
    };
    x.index_select(&index(h, src_h)?, 2)?
        .index_select(&index(w, src_w)?, 3)
}

/// Max-pooling of `x` [B, C, H, W] down to [B, C, h, w]: `F.max_pool2d(x, H / h)` when the sizes
/// divide, else `F.adaptive_max_pool2d(x, (h, w))` (cell i spans floor(i H / h) .. ceil((i + 1) H / h)).
pub fn max_pool_to(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, src_h, src_w) = x.dims4()?;
    if (src_h, src_w) == (h, w) {
        return Ok(x.clone());
    }
    if src_h.is_multiple_of(h) && src_w.is_multiple_of(w) {
        return x.max_pool2d((src_h / h, src_w / w));
    }
    // Adaptive cells are rectangles, so the max separates into one pass per axis.
    let pool_axis = |x: &Tensor, dim: usize, src: usize, dst: usize| -> Result<Tensor> {
        let cells = (0..dst)
            .map(|i| {
                let a = i * src / dst;
                let b = ((i + 1) * src).div_ceil(dst);
                x.narrow(dim, a, b - a)?.max_keepdim(dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&cells, dim)
    };
    let x = pool_axis(x, 2, src_h, h)?;
    pool_axis(&x, 3, src_w, w)
}

/// How a condition label is brought to the latent grid (`midms.label_downsample` in a model's
/// `config.yaml`). The official model samples the nearest pixel, which drops a one-pixel line
/// between the samples; a model trained with `max` keeps every line that touches a latent cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelDownsample {
    /// `F.interpolate(label, (h, w), mode="nearest")` (the authors' code).
    #[default]
    Nearest,
    /// `F.max_pool2d(label, H // h)` (adaptive max pooling where H is not a multiple of h).
    Max,
}

impl LabelDownsample {
    /// Parses a config value (`nearest` or `max`).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "max" => Ok(Self::Max),
            other => Err(format!(
                "midms.label_downsample = {other:?} is not supported: use nearest or max"
            )),
        }
    }

    /// `label` [B, C, H, W] at the latent size (h, w).
    pub fn apply(self, label: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        match self {
            Self::Nearest => interpolate_nearest(label, h, w),
            Self::Max => max_pool_to(label, h, w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn nearest_takes_top_left_of_each_block() -> Result<()> {
        let x = Tensor::arange(0f32, 16f32, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = rows(&interpolate_nearest(&x, 2, 2)?);
        assert_eq!(y, vec![vec![0., 2.], vec![8., 10.]]);
        Ok(())
    }

    /// A one-pixel anti-diagonal at 16x16 down to 4x4: nearest sampling (rows and columns
    /// 0, 4, 8, 12) never lands on it, max-pooling keeps it as a line of the four blocks it crosses.
    #[test]
    fn max_keeps_a_thin_diagonal_that_nearest_drops() -> Result<()> {
        let n = 16;
        let mut v = vec![0f32; n * n];
        for i in 0..n {
            v[i * n + (n - 1 - i)] = 1.0;
        }
        let x = Tensor::from_vec(v, (1, 1, n, n), &Device::Cpu)?;
        let nearest = rows(&LabelDownsample::Nearest.apply(&x, 4, 4)?);
        assert!(nearest.iter().flatten().all(|&p| p == 0.0), "{nearest:?}");
        let max = rows(&LabelDownsample::Max.apply(&x, 4, 4)?);
        let want: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..4).map(|c| (r + c == 3) as u8 as f32).collect())
            .collect();
        assert_eq!(max, want);
        // On the main diagonal the samples (0, 4, 8, 12) land on the line: both keep it.
        let mut v = vec![0f32; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        let x = Tensor::from_vec(v, (1, 1, n, n), &Device::Cpu)?;
        let diag: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..4).map(|c| (r == c) as u8 as f32).collect())
            .collect();
        assert_eq!(rows(&LabelDownsample::Max.apply(&x, 4, 4)?), diag);
        assert_eq!(rows(&LabelDownsample::Nearest.apply(&x, 4, 4)?), diag);
        Ok(())
    }

    #[test]
    fn max_pool_matches_adaptive_cells_when_sizes_do_not_divide() -> Result<()> {
        let x = Tensor::arange(0f32, 25f32, &Device::Cpu)?.reshape((1, 1, 5, 5))?;
        // adaptive_max_pool2d(5 -> 2): cells [0, 3) and [2, 5) on both axes.
        assert_eq!(
            rows(&max_pool_to(&x, 2, 2)?),
            vec![vec![12., 14.], vec![22., 24.]]
        );
        let x = Tensor::arange(0f32, 16f32, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        assert_eq!(
            rows(&max_pool_to(&x, 2, 2)?),
            vec![vec![5., 7.], vec![13., 15.]]
        );
        Ok(())
    }

    #[test]
    fn label_downsample_values() {
        assert_eq!(LabelDownsample::parse("max"), Ok(LabelDownsample::Max));
        assert_eq!(
            LabelDownsample::parse("nearest"),
            Ok(LabelDownsample::Nearest)
        );
        assert_eq!(LabelDownsample::default(), LabelDownsample::Nearest);
        let err = LabelDownsample::parse("bilinear").unwrap_err();
        assert!(err.contains("label_downsample") && err.contains("bilinear"));
    }
}
