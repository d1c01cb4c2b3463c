//! The CPU f32 kernels that replace candle's where `perf` showed them slow (each file says
//! how much), and the threading rule they share. Other devices and dtypes use candle's ops,
//! the norms through candle-nn's fused layer norm ([`rows_norm`]).
//!
//! - [`activations`]: SiLU, softmax and GroupNorm(+SiLU) with a vectorising exp;
//! - [`conv`]: `Conv2d` with a banded NCHW im2col + GEMM;
//! - [`rows_norm`]: GroupNorm and InstanceNorm on other devices, fewer launches;
//! - [`spade`]: SPADE's modulated positional norm;
//! - [`transpose`]: a column range of a matrix, transposed (the cycle check's other softmax);
//! - `winograd`: 3x3 stride-1 convs by F(2x2, 3x3), called by [`conv`].
pub mod activations;
pub mod conv;
pub mod rows_norm;
pub mod spade;
pub mod transpose;
mod winograd;

use rayon::prelude::*;

/// Below this many elements an op runs on the calling thread: handing work to rayon's pool
/// costs a futex wake-up of its workers and a sleep of the caller per op, which at the shipped
/// model's sizes (16x16 latents, 32-128 channels) costs more than the op itself.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// `f(i, chunk i)` over the `chunk`-sized pieces of `dst`, on rayon's pool when it has several
/// threads and `dst` is big enough ([`PARALLEL_MIN`]), else right here. Measured with one
/// thread: the handoff alone was ~6 % of a decode of the shipped model and about half of its
/// UNet pass.
pub(crate) fn for_each_chunk<F>(dst: &mut [f32], chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Send + Sync,
{
    if rayon::current_num_threads() <= 1 || dst.len() < PARALLEL_MIN {
        dst.chunks_mut(chunk).enumerate().for_each(|(i, d)| f(i, d));
    } else {
        dst.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, d)| f(i, d));
    }
}

/// Thread count for the GEMM, read once (candle re-reads it, and without `RAYON_NUM_THREADS` that
/// means parsing /proc/cpuinfo on every matmul), and at most the current rayon pool's: inside a
/// one-thread pool (`midm batch`'s concurrent sub-batches) the GEMM runs on the calling thread.
fn threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    (*N.get_or_init(candle_core::utils::get_num_threads)).min(rayon::current_num_threads())
}
