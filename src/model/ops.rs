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
    pool_to(x, h, w, Pool::Max)
}

/// Average pooling of `x` [B, C, H, W] down to [B, C, h, w]: `F.avg_pool2d(x, H / h)` when the
/// sizes divide, else `F.adaptive_avg_pool2d(x, (h, w))`.
pub fn avg_pool_to(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    pool_to(x, h, w, Pool::Mean)
}

#[derive(Clone, Copy)]
enum Pool {
    Max,
    Mean,
}

fn pool_to(x: &Tensor, h: usize, w: usize, pool: Pool) -> Result<Tensor> {
    let (_, _, src_h, src_w) = x.dims4()?;
    if (src_h, src_w) == (h, w) {
        return Ok(x.clone());
    }
    let kernel = (src_h / h, src_w / w);
    match pool {
        _ if !(src_h.is_multiple_of(h) && src_w.is_multiple_of(w)) => adaptive_pool(x, h, w, pool),
        Pool::Max => x.max_pool2d(kernel),
        Pool::Mean => x.avg_pool2d(kernel),
    }
}

/// PyTorch's adaptive pooling cells (cell i spans floor(i H / h) .. ceil((i + 1) H / h)). They are
/// rectangles, so a max or a mean separates into one pass per axis.
fn adaptive_pool(x: &Tensor, h: usize, w: usize, pool: Pool) -> Result<Tensor> {
    let (_, _, src_h, src_w) = x.dims4()?;
    let reduce = |cell: Tensor, dim: usize| match pool {
        Pool::Max => cell.max_keepdim(dim),
        Pool::Mean => cell.mean_keepdim(dim),
    };
    let pool_axis = |x: &Tensor, dim: usize, src: usize, dst: usize| -> Result<Tensor> {
        let cells = (0..dst)
            .map(|i| {
                let a = i * src / dst;
                let b = ((i + 1) * src).div_ceil(dst);
                reduce(x.narrow(dim, a, b - a)?, dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&cells, dim)
    };
    let x = pool_axis(x, 2, src_h, h)?;
    pool_axis(&x, 3, src_w, w)
}

/// The region a line label encloses, lines included: `scipy.ndimage.binary_fill_holes` of
/// `label > 0.5` per image of `label` [B, 1, H, W], 1 inside and 0 outside. A non-line pixel
/// is outside when a 4-connected path of non-line pixels joins it to the border (scipy's default
/// structure). The trainer computes the same (`train.ops.fill_label`).
pub fn fill_label(label: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = label.dims4()?;
    if c != 1 {
        candle_core::bail!("fill_label: a one-channel line label is needed, got {c} channels");
    }
    let values = label
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let mut filled = Vec::with_capacity(values.len());
    for plane in values.chunks(h * w) {
        let lines: Vec<bool> = plane.iter().map(|v| *v > 0.5).collect();
        filled.extend(
            fill_plane(&lines, h, w)
                .into_iter()
                .map(|inside| f32::from(u8::from(inside))),
        );
    }
    Tensor::from_vec(filled, (b, 1, h, w), label.device())
}

/// [`fill_label`] of one drawing's line pixels (`h` x `w`, row-major, true = line): true inside
/// and on the lines.
pub fn fill_plane(lines: &[bool], h: usize, w: usize) -> Vec<bool> {
    use imageproc::region_labelling::{connected_components, Connectivity};

    // Non-line pixels are the foreground of the labelling; lines (0) separate its regions.
    let open = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([if lines[y as usize * w + x as usize] {
            0
        } else {
            255
        }])
    });
    let regions = connected_components(&open, Connectivity::Four, image::Luma([0u8]));
    let mut outside = std::collections::HashSet::new();
    for x in 0..w as u32 {
        outside.extend([
            regions.get_pixel(x, 0)[0],
            regions.get_pixel(x, h as u32 - 1)[0],
        ]);
    }
    for y in 0..h as u32 {
        outside.extend([
            regions.get_pixel(0, y)[0],
            regions.get_pixel(w as u32 - 1, y)[0],
        ]);
    }
    outside.remove(&0); // 0 labels the lines themselves
    regions.pixels().map(|p| !outside.contains(&p[0])).collect()
}

/// The condition on the latent grid [B, ., h, w]: (`seg_enc`'s input, the label the trunk takes).
/// The label is `down` of `condition`; with `fill` (a model's `midms.label_fill`), `seg_enc`
/// also gets the share of each latent cell inside the drawing ([`fill_label`], area-averaged):
/// its convolutions see a few cells around them, and without it a cell in the middle of a large
/// closed shape looks like one outside it. The trainer's `train.ops.seg_input`.
pub fn condition_on_grid(
    condition: &Tensor,
    h: usize,
    w: usize,
    down: LabelDownsample,
    fill: bool,
) -> Result<(Tensor, Tensor)> {
    let label = down.apply(condition, h, w)?;
    if !fill {
        return Ok((label.clone(), label));
    }
    let inside = avg_pool_to(&fill_label(condition)?, h, w)?;
    Ok((Tensor::cat(&[&label, &inside], 1)?, label))
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

    /// `rows` of text ('#' = line) as a [1, 1, H, W] label.
    fn label_of(rows: &[&str]) -> Tensor {
        let v: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| f32::from(u8::from(c == '#'))))
            .collect();
        Tensor::from_vec(v, (1, 1, rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    /// A closed square and a diamond of diagonal steps are filled (4-connected background, as
    /// scipy's binary_fill_holes: a diagonal gap between two line pixels does not leak); an open
    /// arc and a square with a one-pixel gap are not.
    #[test]
    fn fill_label_fills_closed_outlines_only() -> Result<()> {
        let label = label_of(&[
            "..........", //
            ".####..#..",
            ".#..#.#.#.",
            ".#..#..#..",
            ".####.....",
            "..........",
            ".###..#...",
            ".#.#.#....",
            ".#...#....",
            ".###......",
        ]);
        let want = label_of(&[
            "..........", //
            ".####..#..",
            ".####.###.",
            ".####..#..",
            ".####.....",
            "..........",
            ".###..#...",
            ".#.#.#....",
            ".#...#....",
            ".###......",
        ]);
        assert_eq!(rows(&fill_label(&label)?), rows(&want));
        Ok(())
    }

    /// seg_enc's input with `label_fill`: [max-pooled line, inside share per cell]; without it
    /// the line label alone, for both.
    #[test]
    fn condition_on_grid_adds_the_inside_share() -> Result<()> {
        let label = label_of(&["####", "#..#", "#..#", "####"]);
        let (seg, line) = condition_on_grid(&label, 2, 2, LabelDownsample::Max, true)?;
        assert_eq!(seg.dims4()?, (1, 2, 2, 2));
        assert_eq!(rows(&line), vec![vec![1., 1.], vec![1., 1.]]);
        assert_eq!(
            rows(&seg.narrow(1, 1, 1)?),
            vec![vec![1., 1.], vec![1., 1.]]
        );
        let open = label_of(&["#...", "#...", "#...", "#..."]);
        let (seg, _) = condition_on_grid(&open, 2, 2, LabelDownsample::Max, true)?;
        assert_eq!(
            rows(&seg.narrow(1, 1, 1)?),
            vec![vec![0.5, 0.], vec![0.5, 0.]]
        );
        let (seg, line) = condition_on_grid(&open, 2, 2, LabelDownsample::Max, false)?;
        assert_eq!((seg.dims4()?, rows(&seg)), (line.dims4()?, rows(&line)));
        Ok(())
    }

    #[test]
    fn avg_pool_matches_adaptive_cells_when_sizes_do_not_divide() -> Result<()> {
        let x = Tensor::arange(0f32, 25f32, &Device::Cpu)?.reshape((1, 1, 5, 5))?;
        // cells of rows/columns 0..3 and 2..5 (floor(i 5 / 2) .. ceil((i + 1) 5 / 2))
        let y = rows(&avg_pool_to(&x, 2, 2)?);
        let mean = |r: std::ops::Range<usize>, c: std::ops::Range<usize>| {
            let n = (r.len() * c.len()) as f32;
            r.flat_map(|i| c.clone().map(move |j| (i * 5 + j) as f32))
                .sum::<f32>()
                / n
        };
        let want = vec![
            vec![mean(0..3, 0..3), mean(0..3, 2..5)],
            vec![mean(2..5, 0..3), mean(2..5, 2..5)],
        ];
        for (a, b) in y.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
        }
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
