//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3).
//!
//! The im2col path spends 9 multiply-adds per input channel and output pixel; F(2x2, 3x3)
//! spends 16 per 2x2 output tile, 2.25x fewer, at the price of cheap linear transforms of the
//! input tiles, the kernels and the products (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016). The GEMM is >60 % of the CPU time of every network here, and 3x3
//! stride-1 convs are most of it (UNet res blocks, the autoencoder, the correspondence
//! encoders), so they run here whenever the image is large enough that the kernel transform,
//! done per call (caching it would cost 16/9 of the weights' memory), is negligible.
//!
//! Numerics: the transform matrices hold only 0, +-1 and +-1/2, so rounding grows only mildly
//! over the direct sum (measured in the tests against candle's conv2d and on the parity
//! fixtures).
//!
//! Layout, per band of tile rows of one image (T tiles): V `[cin][16][T]` (input tiles
//! transformed), U `[cout][16][cin]` (kernels transformed), M `[cout][16][T]`; the 16 GEMMs
//! M[xi] = U[xi] V[xi] are strided views, so each transform pass is over contiguous blocks and
//! parallel over channels.
use rayon::prelude::*;

use super::conv::BAND_FLOATS;
use super::{for_each_chunk, threads};

/// Tiles one image must have at least (a 16x16 output): below, the kernel transform (16 x cout
/// x cin per call) is no longer small against the GEMM (16 x cout x cin x 2T flops) and the
/// GEMMs are too narrow to run at speed; those convs take the im2col path. Shipped model, 2
/// threads, median of 7: UNet pass 50-52 ms im2col, 42-44 ms from 256 tiles, 35-41 from 64.
pub(super) const MIN_TILES: usize = 64;

/// Input and output channels at least: with fewer, the transforms (memory-bound, ~4x the
/// input and the output in size) cost about what the GEMM saves. Shipped model, 2 threads:
/// its autoencoder's 32-channel convs made encode 45-49 -> 50-62 ms with Winograd.
const MIN_CHANNELS: usize = 64;

thread_local! {
    /// V, U and M, kept per calling thread and reused (every element is overwritten), for the
    /// reason given at the im2col band in `conv.rs`.
    static BUFS: std::cell::RefCell<[Vec<f32>; 3]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// One conv's shape, for a 3x3 kernel at stride 1, dilation 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape3x3 {
    pub cin: usize,
    pub cout: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    pub pad: usize,
}

impl Shape3x3 {
    fn tiles(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }

    /// Whether Winograd pays for this conv (see [`MIN_TILES`] and [`MIN_CHANNELS`]).
    pub fn pays(&self) -> bool {
        let (ty, tx) = self.tiles();
        ty * tx >= MIN_TILES && self.cin >= MIN_CHANNELS && self.cout >= MIN_CHANNELS
    }
}

/// `out[b][cout][oh][ow] += conv3x3(x, w)`; `out` comes pre-filled with the bias.
pub(super) fn conv3x3(s: &Shape3x3, x: &[f32], w: &[f32], b: usize, out: &mut [f32]) {
    let (tiles_y, tiles_x) = s.tiles();
    // Tile rows per band: V and M of one band within the im2col band's budget each.
    let per_row = 16 * s.cin.max(s.cout) * tiles_x;
    let band = (BAND_FLOATS / per_row.max(1)).clamp(1, tiles_y);
    // Output channels per block of transformed kernels, in the same budget: the UNet's widest
    // convs (1344 -> 672 channels at the official size) would need 58 MB for all of U.
    let block = (BAND_FLOATS / (16 * s.cin)).clamp(1, s.cout);
    let [mut v, mut u, mut m] = BUFS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    resize(&mut u, 16 * block * s.cin);
    if block == s.cout {
        transform_kernels(s, w, 0, &mut u[..16 * s.cout * s.cin]);
    }
    let (image, plane) = (s.cin * s.ih * s.iw, s.cout * s.oh * s.ow);
    for bi in 0..b {
        let xb = &x[bi * image..(bi + 1) * image];
        let ob = &mut out[bi * plane..(bi + 1) * plane];
        let mut ty0 = 0;
        while ty0 < tiles_y {
            let rows = band.min(tiles_y - ty0);
            let t = rows * tiles_x;
            resize(&mut v, 16 * s.cin * t);
            resize(&mut m, 16 * s.cout * t);
            let v = &mut v[..16 * s.cin * t];
            let m = &mut m[..16 * s.cout * t];
            transform_inputs(s, xb, ty0, rows, v);
            for co0 in (0..s.cout).step_by(block) {
                let n = block.min(s.cout - co0);
                let u = &mut u[..16 * n * s.cin];
                if block < s.cout {
                    // Recomputed per band: several bands and several blocks together would
                    // take a wide conv on a large image, which no network here has.
                    transform_kernels(s, w, co0, u);
                }
                multiply(s, u, v, &mut m[16 * co0 * t..16 * (co0 + n) * t], t);
            }
            transform_outputs(s, m, ty0, rows, ob);
            ty0 += rows;
        }
    }
    BUFS.with(|c| *c.borrow_mut() = [v, u, m]);
}

/// Grows `buf` to `n` without initialising it twice: every caller overwrites all of `..n`.
fn resize(buf: &mut Vec<f32>, n: usize) {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
}

/// U = G g G^T per (cout, cin) for the output channels `co0..` that `u` has room for,
/// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
fn transform_kernels(s: &Shape3x3, w: &[f32], co0: usize, u: &mut [f32]) {
    let cin = s.cin;
    for_each_chunk(u, 16 * cin, |i, dst| {
        let co = co0 + i;
        for ci in 0..cin {
            let g = &w[(co * cin + ci) * 9..][..9];
            // Rows: G g (4 x 3).
            let mut r = [[0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                r[0][c] = g0;
                r[1][c] = 0.5 * (g0 + g1 + g2);
                r[2][c] = 0.5 * (g0 - g1 + g2);
                r[3][c] = g2;
            }
            for (i, row) in r.iter().enumerate() {
                let (a0, a1, a2) = (row[0], row[1], row[2]);
                let cols = [a0, 0.5 * (a0 + a1 + a2), 0.5 * (a0 - a1 + a2), a2];
                for (j, val) in cols.into_iter().enumerate() {
                    dst[(i * 4 + j) * cin + ci] = val;
                }
            }
        }
    });
}

/// V = B^T d B for every 4x4 input tile d of the band, B^T = [[1, 0, -1, 0], [0, 1, 1, 0],
/// [0, -1, 1, 0], [0, 1, 0, -1]]; one channel per task, through a zero-padded copy of the
/// rows the band reads so that the loops have no bounds checks.
///
/// Vectorised across a row of tiles: tile tx reads columns 2tx..2tx+3 of four rows, i.e. the
/// even and odd columns `e[tx], o[tx], e[tx+1], o[tx+1]`, so each padded row is split into its
/// even and odd columns once and every transform step is an element-wise loop over contiguous
/// slices (`perf`, model v1's stages: 8.8 % of the time here tile by tile, 5.8 % so).
fn transform_inputs(s: &Shape3x3, xb: &[f32], ty0: usize, rows: usize, v: &mut [f32]) {
    let (_, tiles_x) = s.tiles();
    let t = rows * tiles_x;
    let (pw, ph) = (2 * tiles_x + 2, 2 * rows + 2);
    let y_first = (2 * ty0) as isize - s.pad as isize;
    let half = tiles_x + 1;
    for_each_chunk(v, 16 * t, |ci, dst| {
        let plane = &xb[ci * s.ih * s.iw..(ci + 1) * s.ih * s.iw];
        // Even and odd columns of every padded row: [ph][2][half].
        let mut eo = vec![0f32; ph * 2 * half];
        let mut padded = vec![0f32; pw];
        let n = s.iw.min(pw - s.pad);
        for (r, split) in eo.chunks_exact_mut(2 * half).enumerate() {
            let iy = y_first + r as isize;
            if iy < 0 || iy >= s.ih as isize {
                continue;
            }
            // Padded column c is input column c - pad; the rest of `padded` stays zero.
            padded[s.pad..s.pad + n].copy_from_slice(&plane[iy as usize * s.iw..][..n]);
            let (even, odd) = split.split_at_mut(half);
            for ((pair, e), o) in padded.chunks_exact(2).zip(even).zip(odd) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        let mut cols = vec![0f32; 4 * tiles_x];
        for ty in 0..rows {
            let base = ty * tiles_x;
            for j in 0..4 {
                // d B, column j, for each of the tile's four rows k.
                for (k, c) in cols.chunks_exact_mut(tiles_x).enumerate() {
                    let row = &eo[(2 * ty + k) * 2 * half..][..2 * half];
                    let (e, o) = row.split_at(half);
                    let (e0, e1, o0, o1) = (&e[..tiles_x], &e[1..], &o[..tiles_x], &o[1..]);
                    match j {
                        0 => combine(c, e0, e1, false),
                        1 => combine(c, o0, e1, true),
                        2 => combine(c, e1, o0, false),
                        _ => combine(c, o0, o1, false),
                    }
                }
                // B^T (.) over the rows: V[i][j] for i = 0..4.
                let (c0, rest) = cols.split_at(tiles_x);
                let (c1, rest) = rest.split_at(tiles_x);
                let (c2, c3) = rest.split_at(tiles_x);
                let terms = [
                    (c0, c2, false),
                    (c1, c2, true),
                    (c2, c1, false),
                    (c1, c3, false),
                ];
                for (i, (a, b, add)) in terms.into_iter().enumerate() {
                    combine(&mut dst[(i * 4 + j) * t + base..][..tiles_x], a, b, add);
                }
            }
        }
    });
}

/// `dst = a + b` or `a - b`, element by element: the one step of the input transform, as a
/// loop over contiguous slices that vectorises.
fn combine(dst: &mut [f32], a: &[f32], b: &[f32], add: bool) {
    let pairs = dst.iter_mut().zip(a.iter().zip(b));
    if add {
        pairs.for_each(|(d, (a, b))| *d = a + b);
    } else {
        pairs.for_each(|(d, (a, b))| *d = a - b);
    }
}

/// M[xi] = U[xi] V[xi] for the 16 tile positions xi (for the output channels of `u` and `m`):
/// independent GEMMs, spread over the threads whole (each one is too narrow to split well; 16
/// of them balance over 2-16 threads).
fn multiply(s: &Shape3x3, u: &[f32], v: &[f32], m: &mut [f32], t: usize) {
    let cin = s.cin;
    let cout = u.len() / (16 * cin);
    // As an address: raw pointers are not Send, and the GEMMs write disjoint parts.
    let mp = m.as_mut_ptr() as usize;
    let one = |xi: usize| {
        // SAFETY: the strided views stay inside u ([cout][16][cin]), v ([cin][16][t]) and m
        // ([cout][16][t]); the 16 GEMMs write disjoint columns xi*t.. of m's rows.
        unsafe {
            gemm::gemm(
                cout,
                t,
                cin,
                (mp as *mut f32).add(xi * t),
                1,
                (16 * t) as isize,
                false,
                u.as_ptr().add(xi * cin),
                1,
                (16 * cin) as isize,
                v.as_ptr().add(xi * t),
                1,
                (16 * t) as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    // threads() is already capped by the current pool (one inside `midm batch`'s sub-batches).
    if threads() > 1 {
        (0..16).into_par_iter().for_each(one);
    } else {
        (0..16).for_each(one);
    }
}

/// Y = A^T m A per tile, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], added to the output (which holds
/// the bias); tiles past the image's edge are clipped. Vectorised across a row of tiles as
/// [`transform_inputs`] is: every step is an element-wise loop over contiguous slices of M.
fn transform_outputs(s: &Shape3x3, m: &[f32], ty0: usize, rows: usize, ob: &mut [f32]) {
    let (_, tiles_x) = s.tiles();
    let t = rows * tiles_x;
    let (oh, ow) = (s.oh, s.ow);
    for_each_chunk(ob, oh * ow, |co, plane| {
        let mc = &m[co * 16 * t..(co + 1) * 16 * t];
        // A^T m: rows s0 (m0 + m1 + m2) and s1 (m1 - m2 - m3) of each of the 4 columns.
        let mut sums = vec![0f32; 8 * tiles_x];
        let mut y = vec![0f32; 4 * tiles_x];
        for ty in 0..rows {
            let base = ty * tiles_x;
            let e = |xi: usize| &mc[xi * t + base..][..tiles_x];
            for k in 0..4 {
                let (m0, m1, m2, m3) = (e(k), e(4 + k), e(8 + k), e(12 + k));
                let (s0, s1) = sums[2 * k * tiles_x..(2 * k + 2) * tiles_x].split_at_mut(tiles_x);
                for x in 0..tiles_x {
                    s0[x] = m0[x] + m1[x] + m2[x];
                    s1[x] = m1[x] - m2[x] - m3[x];
                }
            }
            // (.) A: outputs (dy, dx) of every tile, [4][tiles_x].
            let col = |k: usize, r: usize| &sums[(2 * k + r) * tiles_x..][..tiles_x];
            for r in 0..2 {
                let (a, b, c, d) = (col(0, r), col(1, r), col(2, r), col(3, r));
                let (y0, y1) = y[2 * r * tiles_x..(2 * r + 2) * tiles_x].split_at_mut(tiles_x);
                for x in 0..tiles_x {
                    y0[x] = a[x] + b[x] + c[x];
                    y1[x] = b[x] - c[x] - d[x];
                }
            }
            let oy = 2 * (ty0 + ty);
            for dy in 0..2 {
                if oy + dy >= oh {
                    break;
                }
                let row = &mut plane[(oy + dy) * ow..][..ow];
                let (y0, y1) = y[2 * dy * tiles_x..(2 * dy + 2) * tiles_x].split_at(tiles_x);
                let mut pairs = row.chunks_exact_mut(2);
                for ((p, a), b) in (&mut pairs).zip(y0).zip(y1) {
                    p[0] += a;
                    p[1] += b;
                }
                if let [last] = pairs.into_remainder() {
                    *last += y0[tiles_x - 1];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::conv::Conv2d;
    use candle_core::{Device, Module, Result, Tensor};
    use candle_nn::Conv2dConfig;

    /// Against candle's conv2d: padding 1 and 0, odd output sides (clipped tiles), a batch,
    /// a band split (many channels), with and without bias.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, cin, cout, pad, h, w) in &[
            (2, 64, 70, 1, 17, 19),
            (1, 72, 64, 0, 18, 21),
            (1, 65, 67, 1, 32, 32),
            (1, 1024, 64, 1, 40, 40),
            (1, 2048, 160, 1, 16, 16),
        ] {
            let s = Shape3x3 {
                cin,
                cout,
                ih: h,
                iw: w,
                oh: h + 2 * pad - 2,
                ow: w + 2 * pad - 2,
                pad,
            };
            assert!(s.pays(), "{s:?} would take the im2col path");
            let x = Tensor::randn(0f32, 1., (b, cin, h, w), &dev)?;
            let wt =
                (Tensor::randn(0f32, 1., (cout, cin, 3, 3), &dev)? / (9. * cin as f64).sqrt())?;
            let bias = Tensor::randn(0f32, 1., cout, &dev)?;
            let cfg = Conv2dConfig {
                padding: pad,
                ..Default::default()
            };
            for bias in [Some(bias), None] {
                let ours = Conv2d::new(wt.clone(), bias.clone(), cfg).forward(&x)?;
                let reference = candle_nn::Conv2d::new(wt.clone(), bias, cfg).forward(&x)?;
                assert_eq!(ours.dims(), reference.dims());
                let err = crate::model::max_abs_diff(&ours, &reference)?;
                assert!(
                    err < 2e-5,
                    "b {b} cin {cin} cout {cout} pad {pad} {h}x{w}: {err}"
                );
            }
        }
        Ok(())
    }
}
