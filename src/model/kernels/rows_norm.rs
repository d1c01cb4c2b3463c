//! GroupNorm and InstanceNorm on devices other than the CPU, through candle-nn's fused layer-norm
//! kernel: a group norm is a layer norm over the rows `[batch * groups, channels / groups * h * w]`
//! followed by the per-channel affine.
//!
//! Why: candle-nn's `GroupNorm` is a dozen tensor ops (sum, scale, subtract, square, sum, scale,
//! add, sqrt, divide, multiply, add), each a kernel launch. On one H200 the shipped model's
//! translation was bound by per-op cost, not arithmetic (164 ms alone against 25.6 ms an image in
//! a batch of 32), and its UNet runs about 29 norms a pass; this route takes each to four launches
//! (normalise, scale, shift, and the SiLU that follows most of them). The CPU keeps its own fused
//! f32 kernel ([`super::activations`]), so CPU numerics do not change.
//!
//! The kernel computes the variance in one pass (E[x^2] - mean^2, f32 sums), the composite in two;
//! `MIDM_NORM=composite` restores the composite ops, for comparing the two on a GPU
//! (see [`enabled_for`]).
use candle_core::{DType, DeviceLocation, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Whether the fused route is taken for `x` (where the CPU's own f32 kernel did not apply):
/// off the CPU by default; `MIDM_NORM=composite` never, `MIDM_NORM=rows` on the CPU too (its f16
/// and bf16 paths), which lets the CPU check the route's wiring through whole translations.
pub fn enabled_for(x: &Tensor) -> bool {
    static MODE: OnceLock<Option<bool>> = OnceLock::new();
    let forced = *MODE.get_or_init(|| match std::env::var("MIDM_NORM").ok().as_deref() {
        Some("composite") => Some(false),
        Some("rows") => Some(true),
        _ => None,
    });
    forced.unwrap_or(!x.device().is_cpu())
}

/// `x` viewed as `rows` rows, each normalised to mean 0 and biased variance 1 (`eps` added to
/// the variance), in `x`'s shape and dtype.
pub fn normalize_rows(x: &Tensor, rows: usize, eps: f64) -> Result<Tensor> {
    let n = x.elem_count();
    if rows == 0 || !n.is_multiple_of(rows) {
        candle_core::bail!("normalize_rows: {n} elements are not {rows} equal rows")
    }
    let cols = n / rows;
    let (ones, zeros) = unit_affine(x, cols)?;
    let flat = x.contiguous()?.reshape((rows, cols))?;
    candle_nn::ops::layer_norm(&flat, &ones, &zeros, eps as f32)?.reshape(x.shape())
}

/// `GroupNorm(groups)` of an `[b, c, ...]` tensor with per-channel `weight` and `bias` shaped
/// `[1, c, 1, ...]`, then SiLU when `with_silu`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f64,
    weight: &Tensor,
    bias: &Tensor,
    with_silu: bool,
) -> Result<Tensor> {
    let y = normalize_rows(x, x.dim(0)? * groups, eps)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)?;
    if with_silu {
        candle_nn::ops::silu(&y)
    } else {
        Ok(y)
    }
}

/// `InstanceNorm2d(affine=False)` of an `[b, c, h, w]` tensor.
pub fn instance_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    normalize_rows(x, b * c, eps)
}

/// The all-ones scale and all-zeros shift the layer-norm kernel takes, made once per device,
/// dtype and row length: made per call they would cost two launches of their own.
fn unit_affine(x: &Tensor, cols: usize) -> Result<(Tensor, Tensor)> {
    type Key = (DeviceLocation, DType, usize);
    static CACHE: OnceLock<Mutex<HashMap<Key, (Tensor, Tensor)>>> = OnceLock::new();
    let key = (x.device().location(), x.dtype(), cols);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("norm cache");
    if let Some(pair) = cache.get(&key) {
        return Ok(pair.clone());
    }
    let pair = (
        Tensor::ones(cols, x.dtype(), x.device())?,
        Tensor::zeros(cols, x.dtype(), x.device())?,
    );
    cache.insert(key, pair.clone());
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    use crate::model::max_abs_diff as max_diff;

    /// The route gives candle-nn's GroupNorm (two-pass variance) on inputs whose mean is far
    /// from 0, with and without SiLU, for batches and odd spatial sides. Run on the CPU, where
    /// candle-nn's layer norm is the same formula as its CUDA kernel.
    #[test]
    fn group_norm_by_rows_equals_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        for (b, c, h, w) in [(1, 64, 8, 8), (2, 96, 5, 7), (3, 32, 16, 16)] {
            let x = ((Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)? * 2.5)? + 3.0)?;
            let weight = Tensor::randn(1f32, 0.2, c, &dev)?;
            let bias = Tensor::randn(0f32, 0.2, c, &dev)?;
            let want = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, 32, 1e-5)?
                .forward(&x)?;
            let (w4, b4) = (weight.reshape((1, c, 1, 1))?, bias.reshape((1, c, 1, 1))?);
            let got = group_norm(&x, 32, 1e-5, &w4, &b4, false)?;
            assert!(max_diff(&got, &want)? < 1e-4, "{b}x{c}x{h}x{w}");
            let got = group_norm(&x, 32, 1e-5, &w4, &b4, true)?;
            assert!(max_diff(&got, &candle_nn::ops::silu(&want)?)? < 1e-4);
        }
        Ok(())
    }

    /// Instance norm by rows against the per-channel mean and variance computed directly.
    #[test]
    fn instance_norm_by_rows_has_zero_mean_unit_variance_per_channel() -> Result<()> {
        let dev = Device::Cpu;
        let x = ((Tensor::randn(0f32, 1.0, (2, 3, 9, 11), &dev)? * 4.0)? - 1.5)?;
        let y = instance_norm(&x, 1e-5)?;
        assert_eq!(y.dims(), x.dims());
        let flat = y.reshape((6, 99))?;
        let mean = flat.mean_keepdim(1)?;
        let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
        assert!(mean.abs()?.max(0)?.max(0)?.to_scalar::<f32>()? < 1e-5);
        assert!(((var - 1.0)?.abs()?.max(0)?.max(0)?.to_scalar::<f32>()?) < 1e-4);
        // A non-contiguous input (a transposed view) normalises its logical layout.
        let t = x.transpose(2, 3)?;
        let want = instance_norm(&t.contiguous()?, 1e-5)?;
        assert_eq!(max_diff(&instance_norm(&t, 1e-5)?, &want)?, 0.0);
        Ok(())
    }

    #[test]
    fn rows_must_divide_the_tensor() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(normalize_rows(&x, 4, 1e-5).is_err());
    }
}
