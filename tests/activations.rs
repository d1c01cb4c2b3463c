//! The CPU f32 kernels of `midm::model::kernels::activations` (vectorised exp, SiLU, softmax, fused
//! GroupNorm(+SiLU)) against libm and candle's own ops.
mod common;

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use midm::model::kernels::activations::{exp_f32, group_norm_cpu, silu, softmax_last_dim};

#[test]
fn exp_matches_libm_to_a_few_ulps() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        let got = exp_f32(x) as f64;
        worst = worst.max(((got - want) / want).abs());
        x += 0.001_37;
    }
    // f32 ulp is 2^-23 = 1.19e-7 relative.
    assert!(worst < 4e-7, "worst relative error {worst:e}");
    assert!(exp_f32(-1000.0) < 1.3e-38);
    assert!(exp_f32(1000.0).is_finite());
}

/// `n` fixed pseudo-random values in [lo, hi) (a multiplicative hash from `seed`), so that every
/// run checks the same inputs.
fn hashed(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f32> {
    (seed..seed + n as u64)
        .map(|i| {
            ((i.wrapping_mul(2_654_435_761) % (1 << 32)) as f64 / (1u64 << 32) as f64 * (hi - lo)
                + lo) as f32
        })
        .collect()
}

#[test]
fn silu_and_softmax_match_candle() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(hashed(3 * 7 * 1001, 0, -12.0, 12.0), (3, 7, 1001), &dev).unwrap();
    let e = max_abs_diff(&silu(&x).unwrap(), &candle_nn::ops::silu(&x).unwrap());
    assert!(e < 5e-6, "silu {e:e}");
    let e = max_abs_diff(
        &softmax_last_dim(&x).unwrap(),
        &candle_nn::ops::softmax_last_dim(&x).unwrap(),
    );
    // exp is within 4e-7 relative of libm; the normalisation adds rounding on values up to 1.
    assert!(e < 1e-6, "softmax {e:e}");
    // Rows sum to 1; a strided input is made contiguous first.
    let s = softmax_last_dim(&x.t().unwrap()).unwrap().sum(2).unwrap();
    let ones = Tensor::ones(s.shape(), DType::F32, &dev).unwrap();
    assert!(max_abs_diff(&s, &ones) < 1e-5);
}

#[test]
fn group_norm_matches_candle_nn() {
    let dev = Device::Cpu;
    let (c, groups) = (64, 32);
    // An offset mean (values in [-1, 7)) makes the variance pass matter.
    let x = Tensor::from_vec(hashed(2 * c * 9 * 11, 1, -1.0, 7.0), (2, c, 9, 11), &dev).unwrap();
    let w = Tensor::from_vec(hashed(c, 7_000_001, 0.5, 1.5), c, &dev).unwrap();
    let b = Tensor::from_vec(hashed(c, 9_000_001, -0.5, 0.5), c, &dev).unwrap();
    let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), c, groups, 1e-6).unwrap();
    let want = candle_core::Module::forward(&reference, &x).unwrap();
    let (wv, bv) = (w.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    let got = group_norm_cpu(&x, groups, 1e-6, &wv, &bv, false)
        .unwrap()
        .unwrap();
    assert!(
        max_abs_diff(&got, &want) < 2e-5,
        "group norm {:e}",
        max_abs_diff(&got, &want)
    );
    let got = group_norm_cpu(&x, groups, 1e-6, &wv, &bv, true)
        .unwrap()
        .unwrap();
    let want = candle_nn::ops::silu(&want).unwrap();
    assert!(
        max_abs_diff(&got, &want) < 2e-5,
        "group norm + silu {:e}",
        max_abs_diff(&got, &want)
    );
    // Not applicable: wrong channel count for the parameters, or another dtype.
    assert!(
        group_norm_cpu(&x, groups, 1e-6, &wv[..32], &bv[..32], false)
            .unwrap()
            .is_none()
    );
    let xh = x.to_dtype(DType::F16).unwrap();
    assert!(group_norm_cpu(&xh, groups, 1e-6, &wv, &bv, false)
        .unwrap()
        .is_none());
}
