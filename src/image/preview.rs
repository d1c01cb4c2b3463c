//! A cheap colour preview of a latent, so that every streamed step can be shown at once.
//!
//! Decoding a latent costs about as much as several UNet passes on a CPU; a run that decoded
//! every interleaved step for display spent most of its time there. The preview is an affine
//! map from the latent channels to RGB, fitted per run by least squares on the exemplar: its
//! latent E(y) against the exemplar image averaged down to the latent grid. The outputs take the
//! exemplar's colours, so a map fitted on it previews them well; the exact decode replaces the
//! preview for the step a user looks at.
use candle_core::{DType, Tensor};
use image::{imageops::FilterType, Rgb, RgbImage, RgbaImage};

use crate::error::{ensure, Result};

/// Affine latent-to-RGB map: `rgb = W^T [z; 1]` (a 1x1 convolution). Quadratic terms fitted
/// on the exemplar generalised worse to the outputs of the shipped model's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentPreview {
    channels: usize,
    rows: Vec<[f32; 3]>,
}

/// The features of one latent cell (`z`: its channel values) into `out`.
fn features(z: &[f64], out: &mut Vec<f64>) {
    out.clear();
    out.extend_from_slice(z);
    out.push(1.0);
}

/// A [c, h, w] (or [1, c, h, w]) latent as f32 values and its shape.
fn latent_values(latent: &Tensor) -> Result<(Vec<f32>, usize, usize, usize)> {
    let latent = match latent.rank() {
        4 => latent.get(0)?,
        _ => latent.clone(),
    };
    let (c, h, w) = latent.dims3()?;
    let v = latent.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok((v, c, h, w))
}

impl LatentPreview {
    /// Fit the map on `latent` = E(`image`) ([1, c, h, w]); `image` at any size.
    pub fn fit(latent: &Tensor, image: &RgbImage) -> Result<Self> {
        let (z, c, h, w) = latent_values(latent)?;
        ensure!(c > 0 && h * w > 0, "empty latent");
        // Area average down to the latent grid (what one latent cell stands for).
        let target = image::imageops::thumbnail(image, w as u32, h as u32);
        let n = h * w;
        let k = c + 1;
        // Normal equations (X^T X + ridge) W = X^T Y, one row of X per cell. A k-square solve
        // (k = 4 for 3 channels) is tiny: written here rather than pulling in a linear-algebra
        // crate.
        let mut xtx = vec![0f64; k * k];
        let mut xty = vec![[0f64; 3]; k];
        let (mut cell, mut x) = (vec![0f64; c], Vec::with_capacity(k));
        for p in 0..n {
            for (ch, v) in cell.iter_mut().enumerate() {
                *v = z[ch * n + p] as f64;
            }
            features(&cell, &mut x);
            let y = target.as_raw()[p * 3..p * 3 + 3]
                .iter()
                .map(|v| *v as f64 / 255.0);
            for (j, yv) in y.enumerate() {
                for i in 0..k {
                    xty[i][j] += x[i] * yv;
                }
            }
            for i in 0..k {
                for j in 0..k {
                    xtx[i * k + j] += x[i] * x[j];
                }
            }
        }
        // A small ridge keeps a flat exemplar (a singular system) solvable.
        for i in 0..k - 1 {
            xtx[i * k + i] += 1e-3 * n as f64;
        }
        let rows = solve(xtx, xty, k)?;
        Ok(Self { channels: c, rows })
    }

    /// The preview of `latent` ([1, c, h, w], the channels it was fitted on) at `size` x `size`.
    pub fn render(&self, latent: &Tensor, size: u32) -> Result<RgbaImage> {
        Ok(image::DynamicImage::ImageRgb8(self.render_rgb(latent, size)?).to_rgba8())
    }

    /// [`Self::render`] as an RGB image.
    pub fn render_rgb(&self, latent: &Tensor, size: u32) -> Result<RgbImage> {
        let (z, c, h, w) = latent_values(latent)?;
        ensure!(
            c == self.channels,
            "the preview was fitted on {} latent channels, not {c}",
            self.channels
        );
        let n = h * w;
        let (mut cell, mut x) = (vec![0f64; c], Vec::with_capacity(self.rows.len()));
        let small = RgbImage::from_fn(w as u32, h as u32, |px, py| {
            let p = py as usize * w + px as usize;
            for (ch, v) in cell.iter_mut().enumerate() {
                *v = z[ch * n + p] as f64;
            }
            features(&cell, &mut x);
            let mut rgb = [0f32; 3];
            for (f, row) in x.iter().zip(&self.rows) {
                for (o, r) in rgb.iter_mut().zip(row) {
                    *o += *f as f32 * r;
                }
            }
            Rgb(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
        });
        Ok(image::imageops::resize(
            &small,
            size,
            size,
            FilterType::Triangle,
        ))
    }
}

/// Gaussian elimination with partial pivoting of the k x k system `a` for three right-hand sides.
fn solve(mut a: Vec<f64>, mut b: Vec<[f64; 3]>, k: usize) -> Result<Vec<[f32; 3]>> {
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs()))
            .unwrap_or(col);
        ensure!(
            a[pivot * k + col].abs() > 1e-12,
            "the latent preview cannot be fitted (a flat latent)"
        );
        if pivot != col {
            for j in 0..k {
                a.swap(col * k + j, pivot * k + j);
            }
            b.swap(col, pivot);
        }
        for row in col + 1..k {
            let f = a[row * k + col] / a[col * k + col];
            for j in col..k {
                a[row * k + j] -= f * a[col * k + j];
            }
            let pivot_rhs = b[col];
            for (v, p) in b[row].iter_mut().zip(pivot_rhs) {
                *v -= f * p;
            }
        }
    }
    let mut out = vec![[0f64; 3]; k];
    for row in (0..k).rev() {
        for ch in 0..3 {
            let tail: f64 = (row + 1..k).map(|j| a[row * k + j] * out[j][ch]).sum();
            out[row][ch] = (b[row][ch] - tail) / a[row * k + row];
        }
    }
    Ok(out.iter().map(|r| r.map(|v| v as f32)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A latent that is an affine function of the image's colours is previewed back exactly.
    #[test]
    fn an_affine_latent_is_previewed_back() -> Result<()> {
        let (h, w) = (8usize, 8usize);
        let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            Rgb([(x * 30) as u8, (y * 30) as u8, ((x + y) * 12) as u8])
        });
        // Channels: 2r - 1, g - b, 0.5 b + 0.1 (r, g, b in [0, 1]).
        let mut z = vec![0f32; 3 * h * w];
        for (p, px) in img.pixels().enumerate() {
            let [r, g, b] = px.0.map(|v| v as f32 / 255.0);
            z[p] = 2.0 * r - 1.0;
            z[h * w + p] = g - b;
            z[2 * h * w + p] = 0.5 * b + 0.1;
        }
        let latent = Tensor::from_vec(z, (1, 3, h, w), &Device::Cpu)?;
        let preview = LatentPreview::fit(&latent, &img)?;
        let back = preview.render(&latent, w as u32)?;
        let max_diff = back
            .pixels()
            .zip(img.pixels())
            .flat_map(|(a, b)| (0..3).map(move |i| (a.0[i] as i32 - b.0[i] as i32).abs()))
            .max()
            .unwrap();
        assert!(max_diff <= 6, "max difference {max_diff}"); // the ridge biases a little
                                                             // A flat exemplar still fits (the ridge) and previews its colour.
        let flat = RgbImage::from_pixel(8, 8, Rgb([200, 100, 50]));
        let zero = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu)?;
        let p = LatentPreview::fit(&zero, &flat)?.render(&zero, 16)?;
        assert_eq!(p.get_pixel(3, 3).0, [200, 100, 50, 255]);
        Ok(())
    }
}
