//! SiLU, softmax and GroupNorm(+SiLU) for the networks' CPU f32 path, with an exp that
//! vectorises; the matching's softmax with its temperature fused in, and its clamp in place.
//!
//! candle 0.11's CPU `silu` and `softmax_last_dim` call libm's scalar `expf` per element; in
//! `perf` on an official-size UNet pass that was 6 % of all cycles (attention scores at 32x32
//! are 14 x 1024 x 1024 exps per block). The exp below is branch-free f32 arithmetic, so the
//! loops over it compile to SIMD (16 lanes where AVX-512 is detected at run time, 8 with AVX2,
//! else SSE2's 4; see `Isa`).
//! Other devices and dtypes use candle's ops.
use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Result, Shape, Tensor};

use super::for_each_chunk;

/// exp(x) in f32 with at most a few ulps of error (Cephes `expf`): x = n ln2 + r with
/// |r| <= ln2 / 2, e^r by its degree-7 minimax polynomial, 2^n written into the exponent bits.
/// Inputs are clamped to [-87.3, 88.3] (results ~1e-38 .. 2e38 at the ends; softmax and SiLU only
/// ever need the lower end to be negligible, not exactly 0).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + SHIFTER;
    let n_int = t.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    er * f32::from_bits(((n_int + 127) << 23) as u32)
}

#[inline(always)]
fn silu_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = x / (1.0 + exp_f32(-x));
    }
}

#[inline(always)]
fn softmax_row(src: &[f32], dst: &mut [f32]) {
    let max = src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = exp_f32(x - max);
    }
    // Eight partial sums, so that the reduction vectorises too.
    let mut acc = [0f32; 8];
    let chunks = dst.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let inv = 1.0 / (acc.iter().sum::<f32>() + tail);
    for d in dst.iter_mut() {
        // Weights below the smallest normal f32 (1.2e-38, nothing a warp can show) are flushed to
        // 0: as operands of the warp's and the flow's matmuls, denormals cost the gemm kernel a
        // microcode assist each. Region matching puts ~1e-38 / sum on every penalised cell:
        // ranking the 41 gallery exemplars took a median 1.8 s before this, 0.93 s after (0.45 s
        // without region matching; `rank_shipped`, 2026-12-02).
        let v = *d * inv;
        *d = if v < f32::MIN_POSITIVE { 0.0 } else { v };
    }
}

/// The vector instructions a CPU kernel here is compiled for, picked at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Plain,
    /// AVX2 + FMA: 8 f32 lanes.
    Avx2,
    /// AVX-512F: 16 f32 lanes. Every loop here is plain element-wise arithmetic, nothing that the
    /// wider vectors fuse or reorder, so each width gives the same bits (tested below); on an
    /// AVX-512 machine the GroupNorm statistics were 3.2 % of an official-size translation with
    /// the AVX2 code (`perf`, 2026-12-02).
    Avx512,
}

impl Isa {
    #[cfg(test)]
    const ALL: [Isa; 3] = [Isa::Plain, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU runs `self` (checked once per process).
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            static FOUND: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
            let (avx2, avx512) = *FOUND.get_or_init(|| {
                (
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                    is_x86_feature_detected!("avx512f"),
                )
            });
            match self {
                Isa::Plain => true,
                Isa::Avx2 => avx2,
                Isa::Avx512 => avx512,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Plain
        }
    }

    /// The widest one this CPU runs.
    fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.supported())
            .unwrap_or(Isa::Plain)
    }
}

/// `fn $name(isa, args)`: `$inner(args)` compiled for each [`Isa`] (the `#[inline(always)]`
/// body inlined into a `#[target_feature]` copy per width), run with `isa` where this CPU
/// supports it, else with the plain copy.
macro_rules! per_isa {
    ($name:ident => $inner:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if isa.supported() {
                    match isa {
                        // SAFETY: the CPU supports the features (checked just above).
                        Isa::Avx512 => return unsafe { avx512($($arg),*) },
                        // SAFETY: as above.
                        Isa::Avx2 => return unsafe { avx2($($arg),*) },
                        Isa::Plain => {}
                    }
                }
            }
            let _ = isa;
            $inner($($arg),*)
        }
    };
}

per_isa!(silu_slice_on => silu_slice(src: &[f32], dst: &mut [f32]));
per_isa!(softmax_row_on => softmax_row(src: &[f32], dst: &mut [f32]));

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fast activation: expected a contiguous f32 tensor"),
    }
}

/// Elements per parallel task: enough to amortise rayon, small enough to spread a 1 MB tensor.
const GRAIN: usize = 1 << 14;

/// A new buffer of `src.len()` floats, filled by `f(i, out chunk i, src chunk i)` over
/// `chunk`-sized pieces (see [`for_each_chunk`]).
fn map_chunks<F>(src: &[f32], chunk: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32], &[f32]) + Send + Sync,
{
    let mut dst = vec![0f32; src.len()];
    for_each_chunk(&mut dst, chunk, |i, d| {
        f(i, d, &src[i * chunk..][..d.len()])
    });
    dst
}

struct Silu;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "midm-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l)?;
        let isa = Isa::best();
        let dst = map_chunks(src, GRAIN, |_, d, s| silu_slice_on(isa, s, d));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// Softmax over the last dim, of `x * scale` when a scale is given (the matching's
/// `corr / temperature`, without a scaled copy of the whole [hw, hw] matrix).
struct SoftmaxLastDim {
    scale: Option<f32>,
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "midm-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l)?;
        let n = *l.shape().dims().last().unwrap_or(&1);
        let isa = Isa::best();
        let rows_per_task = (GRAIN / n.max(1)).max(1) * n.max(1);
        let scale = self.scale;
        let dst = map_chunks(src, rows_per_task, |_, d, s| {
            let mut scaled = vec![0f32; if scale.is_some() { n } else { 0 }];
            for (d, s) in d.chunks_exact_mut(n).zip(s.chunks_exact(n)) {
                let s = match scale {
                    Some(m) => {
                        // As candle's affine(m, 0) computes it, so the values are unchanged.
                        for (t, &x) in scaled.iter_mut().zip(s) {
                            *t = x * m + 0.0;
                        }
                        &scaled[..]
                    }
                    None => s,
                };
                softmax_row_on(isa, s, d)
            }
        });
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// Clamps a tensor at 0 in its own storage.
struct ReluInPlace;

impl InplaceOp1 for ReluInPlace {
    fn name(&self) -> &'static str {
        "midm-relu-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => {
                for_each_chunk(&mut v[a..b], GRAIN, |_, c| {
                    for x in c {
                        // candle's relu: max(x, 0).
                        *x = x.max(0.0);
                    }
                });
                Ok(())
            }
            _ => candle_core::bail!("relu in place: expected a contiguous f32 tensor"),
        }
    }
}

/// GroupNorm over `[B, C, ...]` with per-channel affine, optionally followed by SiLU, in two
/// passes over each group (mean, then variance and output). candle-nn's GroupNorm is about ten
/// tensor ops, each a full pass with a fresh buffer: on the official autoencoder's 256x256x128
/// activations (33 MB each) those passes and their page faults were a large part of decode.
/// Statistics are accumulated in f64 (8 lanes, so the loops still vectorise).
struct GroupNormOp<'a> {
    groups: usize,
    eps: f64,
    weight: &'a [f32],
    bias: &'a [f32],
    act: Act,
}

/// The activation fused into a norm's output pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Identity,
    Silu,
    /// `LeakyReLU(slope)`; also a PReLU with one shared parameter.
    LeakyRelu(f32),
}

/// Sum of `v - center` and, with `squares`, of its squares (else 0), in f64 over 8 lanes,
/// added up in the same order whatever the vector width (AVX2 and AVX-512 give the same bits).
#[inline(always)]
fn sum_f64(v: &[f32], center: f64, squares: bool) -> (f64, f64) {
    let mut s = [0f64; 8];
    let mut q = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] as f64 - center;
            s[i] += d;
            if squares {
                q[i] += d * d;
            }
        }
    }
    let (mut st, mut qt) = (0f64, 0f64);
    for &x in tail {
        let d = x as f64 - center;
        st += d;
        if squares {
            qt += d * d;
        }
    }
    (s.iter().sum::<f64>() + st, q.iter().sum::<f64>() + qt)
}

#[inline(always)]
fn normalize_slice(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32, act: Act) {
    match act {
        Act::Silu => {
            for (d, &x) in dst.iter_mut().zip(src) {
                let y = (x - mean) * scale + shift;
                *d = y / (1.0 + exp_f32(-y));
            }
        }
        Act::LeakyRelu(slope) => {
            for (d, &x) in dst.iter_mut().zip(src) {
                let y = (x - mean) * scale + shift;
                *d = if y >= 0.0 { y } else { y * slope };
            }
        }
        Act::Identity => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = (x - mean) * scale + shift;
            }
        }
    }
}

per_isa!(sum_f64_on => sum_f64(v: &[f32], center: f64, squares: bool) -> (f64, f64));
per_isa!(normalize_slice_on => normalize_slice(
    src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32, act: Act
));

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "midm-group-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l)?;
        let dims = l.shape().dims();
        let (b, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let group_len = cpg * spatial;
        let isa = Isa::best();
        let dst = map_chunks(src, group_len, |bg, d, x| {
            let n = x.len() as f64;
            let mean = sum_f64_on(isa, x, 0.0, false).0 / n;
            // Second pass around the mean: no cancellation in the variance.
            let var = sum_f64_on(isa, x, mean, true).1 / n;
            let inv_std = 1.0 / (var + self.eps).sqrt();
            let g = bg % self.groups;
            for (k, (d, x)) in d.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                let ch = g * cpg + k;
                let scale = (inv_std * self.weight[ch] as f64) as f32;
                let (m, sh) = (mean as f32, self.bias[ch]);
                normalize_slice_on(isa, x, d, m, scale, sh, self.act)
            }
        });
        let _ = b;
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// GroupNorm (+ SiLU when `silu`) of a contiguous CPU f32 tensor `[B, C, ...]`; `None` when the
/// fast path does not apply (other device or dtype), so the caller uses candle-nn's.
pub fn group_norm_cpu(
    x: &Tensor,
    groups: usize,
    eps: f64,
    weight: &[f32],
    bias: &[f32],
    silu: bool,
) -> Result<Option<Tensor>> {
    if !fast_path(x) || x.rank() < 3 || x.dim(1)? != weight.len() || x.dim(1)? % groups != 0 {
        return Ok(None);
    }
    let act = if silu { Act::Silu } else { Act::Identity };
    let op = GroupNormOp {
        groups,
        eps,
        weight,
        bias,
        act,
    };
    x.contiguous()?.apply_op1_no_bwd(&op).map(Some)
}

/// `InstanceNorm2d(affine=False)` (biased variance) + `act` of a CPU f32 tensor `[B, C, H, W]`:
/// the GroupNorm kernel with one group per channel. `None` off the fast path. The composite
/// candle version took six passes, each single-threaded, so the correspondence encoders ran at
/// 1.5-1.9x PyTorch's time on two threads while they matched it on one.
pub fn instance_norm_cpu(x: &Tensor, eps: f64, act: Act) -> Result<Option<Tensor>> {
    if !fast_path(x) || x.rank() != 4 {
        return Ok(None);
    }
    let c = x.dim(1)?;
    let (ones, zeros) = (vec![1f32; c], vec![0f32; c]);
    let op = GroupNormOp {
        groups: c,
        eps,
        weight: &ones,
        bias: &zeros,
        act,
    };
    x.contiguous()?.apply_op1_no_bwd(&op).map(Some)
}

fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `x * sigmoid(x)` (the autoencoder's `nonlinearity`, the UNet's `nn.SiLU`).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op1_no_bwd(&Silu)
    } else {
        candle_nn::ops::silu(x)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) && x.rank() > 0 {
        x.contiguous()?
            .apply_op1_no_bwd(&SoftmaxLastDim { scale: None })
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// `softmax_last_dim(x * scale)`, the same values without the scaled copy on the CPU.
pub fn softmax_last_dim_scaled(x: &Tensor, scale: f64) -> Result<Tensor> {
    if fast_path(x) && x.rank() > 0 {
        x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim {
            scale: Some(scale as f32),
        })
    } else {
        candle_nn::ops::softmax_last_dim(&x.affine(scale, 0.0)?)
    }
}

/// `x.relu()` in `x`'s own storage on the CPU (a new tensor elsewhere). `x` must be a fresh
/// result no other tensor shares storage with: a clone of it would change too. Crate-private
/// for that reason (the correlation's matmul output is its one caller).
pub(crate) fn relu_fresh(x: Tensor) -> Result<Tensor> {
    if fast_path(&x) && x.is_contiguous() {
        x.inplace_op1(&ReluInPlace)?;
        Ok(x)
    } else {
        x.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SiLU, softmax and the GroupNorm output pass give the same bits with AVX-512, AVX2 or
    /// neither, over the exp's whole range and odd lengths (vector tails).
    #[test]
    fn elementwise_kernels_are_the_same_bits_at_every_vector_width() {
        for n in [1usize, 15, 16, 17, 1000, 4099] {
            let src: Vec<f32> = (0..n).map(|i| (i as f32 * 0.917).sin() * 90.0).collect();
            let run = |f: &dyn Fn(&[f32], &mut [f32])| {
                let mut d = vec![0f32; n];
                f(&src, &mut d);
                d.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            let acts = [Act::Silu, Act::LeakyRelu(0.2), Act::Identity];
            let plain = (
                run(&|s, d| silu_slice(s, d)),
                run(&|s, d| softmax_row(s, d)),
                acts.map(|a| run(&|s, d| normalize_slice(s, d, 0.3, 1.7, -0.2, a))),
            );
            for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                let name = format!("{isa:?}");
                let got = (
                    run(&|s, d| silu_slice_on(isa, s, d)),
                    run(&|s, d| softmax_row_on(isa, s, d)),
                    acts.map(|a| run(&|s, d| normalize_slice_on(isa, s, d, 0.3, 1.7, -0.2, a))),
                );
                assert!(got.0 == plain.0, "silu, {name}, n {n}");
                assert!(got.1 == plain.1, "softmax, {name}, n {n}");
                assert!(got.2 == plain.2, "group norm output, {name}, n {n}");
            }
        }
    }

    /// The GroupNorm statistics give the same bits with AVX-512, AVX2 or neither (so a model
    /// translates the same on every machine), with and without the squares, tails included.
    #[test]
    fn statistics_are_the_same_bits_at_every_vector_width() {
        for n in [1usize, 7, 8, 9, 63, 1000, 4099] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i as f32 * 0.377).sin() * 3.0) + 1.5)
                .collect();
            for (center, squares) in [(0.0, false), (1.25, true)] {
                let plain = sum_f64(&v, center, squares);
                let bits = |(s, q): (f64, f64)| (s.to_bits(), q.to_bits());
                for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                    let got = sum_f64_on(isa, &v, center, squares);
                    assert_eq!(bits(got), bits(plain), "{isa:?}, n {n}");
                }
                if !squares {
                    assert_eq!(plain.1, 0.0);
                }
            }
        }
    }
}
