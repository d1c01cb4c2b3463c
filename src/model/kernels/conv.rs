//! `Conv2d` with candle-nn's API and a faster CPU path.
//!
//! candle 0.11's CPU conv2d builds its im2col tile element by element (NHWC transposes, bounds
//! checks per tap); `midm bench` under `perf` spent ~55% of the time there and ~22% in the GEMM.
//! Here the im2col matrix is built in NCHW order (row `(ci, kh, kw)` matches the weight's natural
//! `[c_out, c_in * k * k]` flattening, so the weight needs no reordering), one contiguous row
//! segment at a time, in bands of output rows that fit in cache, and each band is one GEMM
//! (`gemm` crate, the kernel candle itself uses) written straight into the output with the bias
//! pre-filled. Other devices and dtypes use candle's conv2d.
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::Conv2dConfig;

use super::winograd::{self, Shape3x3};
use super::{for_each_chunk, threads};

/// Target size of one im2col band (floats): 4 Mi floats = 16 MiB, about half the L3 here.
pub(super) const BAND_FLOATS: usize = 4 << 20;

thread_local! {
    /// The im2col band, kept per calling thread and reused: a fresh 16 MiB buffer per conv call
    /// cost page faults plus a zeroing pass (`perf`: ~8 % of an official-size UNet pass in
    /// the kernel's clear_page), and im2col overwrites every element anyway.
    static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    fn candle_forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::Conv2d::new(self.weight.clone(), self.bias.clone(), self.config).forward(x)
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(c: candle_nn::Conv2d) -> Self {
        Self::new(c.weight().clone(), c.bias().cloned(), *c.config())
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let fast = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && c.groups == 1
            && x.rank() == 4;
        if !fast {
            return self.candle_forward(x);
        }
        let x = x.contiguous()?;
        let cout = self.weight.dim(0)?;
        let bias = match &self.bias {
            Some(b) => b.clone(),
            None => Tensor::zeros(cout, DType::F32, x.device())?,
        };
        x.apply_op3_no_bwd(
            &self.weight,
            &bias,
            &Im2colConv {
                padding: c.padding,
                stride: c.stride,
                dilation: c.dilation,
            },
        )
    }
}

/// Whether 3x3 stride-1 convs may take the Winograd path; `MIDM_CONV=im2col` turns it off, to
/// compare the two side by side in one binary (`docs/performance.md`).
fn winograd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MIDM_CONV").map_or(true, |v| v != "im2col"))
}

struct Im2colConv {
    padding: usize,
    stride: usize,
    dilation: usize,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("conv2d: {what} is not f32")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("conv2d: {what} is not contiguous"),
    }
}

/// Columns one GEMM should at least have: below this, a batch's images share one GEMM (see
/// [`Geom::group`]).
const GROUP_COLUMNS: usize = 2048;

/// Shapes of one conv call.
#[derive(Debug, Clone, Copy)]
struct Geom {
    cin: usize,
    ih: usize,
    iw: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: usize,
    s: usize,
    d: usize,
}

impl Geom {
    fn ksize(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Images per GEMM. One, except for a batch of small images: at the shipped model's 8x8
    /// and 16x16 UNet levels one image is a GEMM of 64 or 256 columns, too narrow for the
    /// kernel to run at speed and a thread handoff per call; side by side, several images
    /// make one GEMM of >= [`GROUP_COLUMNS`] columns (within the im2col band's size).
    fn group(&self, b: usize) -> usize {
        let hw = self.oh * self.ow;
        if b < 2 || hw >= GROUP_COLUMNS {
            return 1;
        }
        let fits = (BAND_FLOATS / (self.ksize() * hw).max(1)).max(1);
        GROUP_COLUMNS.div_ceil(hw).min(b).min(fits)
    }

    /// im2col row `r` = (ci, ky, kx) of image `xb` for output rows `y0..`, into `dst`
    /// (`dst.len() / ow` rows of `ow`).
    fn fill_row(&self, xb: &[f32], r: usize, y0: usize, dst: &mut [f32]) {
        let Geom {
            ih,
            iw,
            kh,
            kw,
            ow,
            p,
            s,
            d,
            ..
        } = *self;
        let ci = r / (kh * kw);
        let ky = (r / kw) % kh;
        let kx = r % kw;
        let plane = &xb[ci * ih * iw..(ci + 1) * ih * iw];
        for (j, drow) in dst.chunks_exact_mut(ow).enumerate() {
            let iy = ((y0 + j) * s + ky * d) as isize - p as isize;
            if iy < 0 || iy >= ih as isize {
                drow.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * iw..(iy as usize + 1) * iw];
            let off = (kx * d) as isize - p as isize;
            if s == 1 {
                // ix = ox + off: one shifted copy with zeros at the borders.
                let lo = (-off).clamp(0, ow as isize) as usize;
                let hi = ((iw as isize - off).clamp(0, ow as isize) as usize).max(lo);
                drow[..lo].fill(0.0);
                drow[hi..].fill(0.0);
                let start = (lo as isize + off) as usize;
                drow[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
            } else {
                for (ox, v) in drow.iter_mut().enumerate() {
                    let ix = (ox * s) as isize + off;
                    *v = if ix >= 0 && ix < iw as isize {
                        src[ix as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `dst[cout, n] (row stride dst_stride) += w[cout, ksize] @ col[ksize, n]`.
///
/// SAFETY: `dst` must point to `cout` rows of at least `n` floats at stride `dst_stride`.
unsafe fn gemm_into(
    dst: *mut f32,
    dst_stride: usize,
    w: &[f32],
    col: &[f32],
    cout: usize,
    n: usize,
) {
    let ksize = col.len() / n;
    let t = threads();
    gemm::gemm(
        cout,
        n,
        ksize,
        dst,
        1,
        dst_stride as isize,
        true,
        w.as_ptr(),
        1,
        ksize as isize,
        col.as_ptr(),
        1,
        n as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        if t > 1 {
            gemm::Parallelism::Rayon(t)
        } else {
            gemm::Parallelism::None
        },
    );
}

impl CustomOp3 for Im2colConv {
    fn name(&self) -> &'static str {
        "midm-im2col-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, cin, ih, iw) = xl.shape().dims4()?;
        let (cout, wcin, kh, kw) = wl.shape().dims4()?;
        if wcin != cin {
            candle_core::bail!("conv2d: input has {cin} channels, the weight {wcin}")
        }
        let (p, s, d) = (self.padding, self.stride, self.dilation);
        let out_dim = |i: usize, k: usize| -> Result<usize> {
            let span = d * (k - 1) + 1;
            if i + 2 * p < span {
                candle_core::bail!("conv2d: input {i} too small for kernel {k}")
            }
            Ok((i + 2 * p - span) / s + 1)
        };
        let (oh, ow) = (out_dim(ih, kh)?, out_dim(iw, kw)?);
        let g = Geom {
            cin,
            ih,
            iw,
            cout,
            kh,
            kw,
            oh,
            ow,
            p,
            s,
            d,
        };
        let x = slice(xs, xl, "input")?;
        let w = slice(ws, wl, "weight")?;
        let bias = slice(bs, bl, "bias")?;
        let hw = oh * ow;
        // Output pre-filled with the bias (one pass, no zeroing first); the GEMM accumulates into it.
        let mut out: Vec<f32> = Vec::with_capacity(b * cout * hw);
        for i in 0..b * cout {
            out.extend(std::iter::repeat_n(bias[i % cout], hw));
        }
        let w3 = Shape3x3 {
            cin,
            cout,
            ih,
            iw,
            oh,
            ow,
            pad: p,
        };
        if kh == 3 && kw == 3 && s == 1 && d == 1 && w3.pays() && winograd_enabled() {
            winograd::conv3x3(&w3, x, w, b, &mut out);
            return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
        }
        let mut col = COL.with(|c| std::mem::take(&mut *c.borrow_mut()));
        let group = g.group(b);
        if group > 1 {
            grouped(&g, x, w, bias, b, group, &mut col, &mut out);
        } else {
            banded(&g, x, w, b, &mut col, &mut out);
        }
        COL.with(|c| *c.borrow_mut() = col);
        Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))))
    }
}

/// One image at a time, in bands of output rows (each band one GEMM).
fn banded(g: &Geom, x: &[f32], w: &[f32], b: usize, col: &mut Vec<f32>, out: &mut [f32]) {
    let (ksize, hw, ow, oh) = (g.ksize(), g.oh * g.ow, g.ow, g.oh);
    let image = g.cin * g.ih * g.iw;
    let band_rows = (BAND_FLOATS / (ksize * ow).max(1)).clamp(1, oh);
    if col.len() < ksize * band_rows * ow {
        col.resize(ksize * band_rows * ow, 0.0);
    }
    for bi in 0..b {
        let xb = &x[bi * image..(bi + 1) * image];
        let mut y0 = 0;
        while y0 < oh {
            let rows = band_rows.min(oh - y0);
            let n = rows * ow;
            let col = &mut col[..ksize * n];
            // One im2col row per (ci, ky, kx); rows are independent.
            for_each_chunk(col, n, |r, dst| g.fill_row(xb, r, y0, dst));
            // SAFETY: dst is [cout, hw] at row stride hw (column block y0*ow .. +n of this
            // batch element), in bounds of `out`.
            unsafe {
                gemm_into(
                    out.as_mut_ptr().add(bi * g.cout * hw + y0 * ow),
                    hw,
                    w,
                    col,
                    g.cout,
                    n,
                )
            };
            y0 += rows;
        }
    }
}

/// `group` whole images side by side per GEMM (columns image-major), computed into a scratch
/// [cout, group * hw] and copied to each image's [cout, hw] block of `out`.
#[allow(clippy::too_many_arguments)]
fn grouped(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    b: usize,
    group: usize,
    col: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (ksize, hw, cout) = (g.ksize(), g.oh * g.ow, g.cout);
    let image = g.cin * g.ih * g.iw;
    if col.len() < ksize * group * hw {
        col.resize(ksize * group * hw, 0.0);
    }
    let mut scratch = vec![0f32; cout * group * hw];
    for first in (0..b).step_by(group) {
        let k = group.min(b - first);
        let n = k * hw;
        let col = &mut col[..ksize * n];
        for_each_chunk(col, n, |r, dst| {
            for (i, part) in dst.chunks_exact_mut(hw).enumerate() {
                let bi = first + i;
                g.fill_row(&x[bi * image..(bi + 1) * image], r, 0, part);
            }
        });
        let scratch = &mut scratch[..cout * n];
        for (row, &bv) in scratch.chunks_exact_mut(n).zip(bias) {
            row.fill(bv);
        }
        // SAFETY: scratch is [cout, n] at row stride n.
        unsafe { gemm_into(scratch.as_mut_ptr(), n, w, col, cout, n) };
        for i in 0..k {
            let dst = &mut out[(first + i) * cout * hw..(first + i + 1) * cout * hw];
            for (co, drow) in dst.chunks_exact_mut(hw).enumerate() {
                drow.copy_from_slice(&scratch[co * n + i * hw..co * n + (i + 1) * hw]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against candle's conv2d on odd shapes, strides, paddings and a non-contiguous input, one
    /// image (banded path) and batches of small images (grouped, with a partial last group).
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for b in [1, 2, 5] {
            check_against_candle(&dev, b)?;
        }
        // 40 x 40 = 1600 columns: two images per GEMM, the fifth alone.
        let g = Geom {
            cin: 1,
            ih: 40,
            iw: 40,
            cout: 1,
            kh: 3,
            kw: 3,
            oh: 40,
            ow: 40,
            p: 1,
            s: 1,
            d: 1,
        };
        assert_eq!((g.group(1), g.group(5)), (1, 2));
        let x = Tensor::randn(0f32, 1., (5, 3, 40, 40), &dev)?;
        let wt = Tensor::randn(0f32, 1., (4, 3, 3, 3), &dev)?;
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let a = Conv2d::new(wt.clone(), None, cfg).forward(&x)?;
        let r = candle_nn::Conv2d::new(wt, None, cfg).forward(&x)?;
        let err = crate::model::max_abs_diff(&a, &r)?;
        assert!(err < 1e-4, "{err}");
        Ok(())
    }

    fn check_against_candle(dev: &Device, b: usize) -> Result<()> {
        for &(cin, cout, k, pad, stride, h, w) in &[
            (3, 5, 3, 1, 1, 7, 9),
            (4, 6, 3, 0, 2, 9, 8),
            (2, 3, 1, 0, 1, 5, 5),
            (5, 4, 3, 1, 2, 6, 6),
            (3, 2, 3, 0, 1, 4, 11),
        ] {
            let x = Tensor::randn(0f32, 1., (b, cin, h, w), dev)?;
            let wt = Tensor::randn(0f32, 1., (cout, cin, k, k), dev)?;
            let bias = Tensor::randn(0f32, 1., cout, dev)?;
            let cfg = Conv2dConfig {
                padding: pad,
                stride,
                ..Default::default()
            };
            let ours = Conv2d::new(wt.clone(), Some(bias.clone()), cfg);
            let reference = candle_nn::Conv2d::new(wt, Some(bias), cfg);
            let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?; // strided view
            for input in [&x, &xt] {
                let a = ours.forward(input)?;
                let r = reference.forward(input)?;
                assert_eq!(a.dims(), r.dims());
                let err = crate::model::max_abs_diff(&a, &r)?;
                assert!(
                    err < 1e-4,
                    "b {b} cin {cin} k {k} pad {pad} stride {stride}: {err}"
                );
            }
        }
        Ok(())
    }
}
