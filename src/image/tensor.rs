//! Images and condition labels as tensors: exemplars, conditions (PNGs or a safetensors
//! tensor), the exemplar's edge label, and decoded tensors back to images.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage};

use super::edges::{canny_edges, CannyParams};
use super::raster::{edge_map, flatten_alpha, read_image};
use super::ImageError;

/// What happened while loading, for the user (e.g. "resized from 300x200 to 64x64").
pub type Notes = Vec<String>;

/// Resize to `size` x `size` if needed, noting it.
fn fit(img: DynamicImage, size: usize, what: &str, notes: &mut Notes) -> DynamicImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (w, h) == (size, size) {
        return img;
    }
    notes.push(format!(
        "{what}: resized from {w}x{h} to {size}x{size} (the model's size)"
    ));
    img.resize_exact(size as u32, size as u32, FilterType::Triangle)
}

/// RGB image -> [1, 3, H, W] in [-1, 1]. Transparent pixels are composited on white.
pub fn rgb_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor, ImageError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = p[c] as f32 / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// Load an exemplar photo as [1, 3, size, size] in [-1, 1].
pub fn load_exemplar(
    path: &Path,
    size: usize,
    device: &Device,
) -> Result<(Tensor, RgbImage, Notes), ImageError> {
    let mut notes = Notes::new();
    let img = fit(
        read_image(path)?,
        size,
        &path.display().to_string(),
        &mut notes,
    );
    let rgb = flatten_alpha(&img);
    Ok((rgb_to_tensor(&rgb, device)?, rgb, notes))
}

/// Grey image -> [H, W] values in [0, 1].
fn grey_values(img: &GrayImage) -> Vec<f32> {
    img.pixels().map(|p| p[0] as f32 / 255.0).collect()
}

/// Load a condition label with `label_nc` channels at `size`:
/// - one PNG per channel (`paths.len() == label_nc`), each a grey image in [0, 1]; a
///   single-channel model takes one edge-map PNG, binarised by [`edge_map`] as in the editor;
/// - or one `.safetensors` file holding a single [C, H, W] or [1, C, H, W] tensor.
pub fn load_condition(
    paths: &[PathBuf],
    label_nc: usize,
    size: usize,
    device: &Device,
) -> Result<(Tensor, Notes), ImageError> {
    let mut notes = Notes::new();
    if let [single] = paths {
        if single.extension().is_some_and(|e| e == "safetensors") {
            return Ok((
                load_condition_tensor(single, label_nc, size, device, &mut notes)?,
                notes,
            ));
        }
    }
    if paths.len() != label_nc {
        return Err(ImageError::Condition(format!(
            "the model's condition has {label_nc} channels but {} image(s) were given; give one PNG per \
             channel (in channel order) or one .safetensors tensor",
            paths.len()
        )));
    }
    let mut data = Vec::with_capacity(label_nc * size * size);
    for path in paths {
        let img = fit(
            read_image(path)?,
            size,
            &path.display().to_string(),
            &mut notes,
        );
        if label_nc == 1 {
            data.extend(grey_values(&edge_map(&img, size as u32)));
        } else {
            data.extend(grey_values(&img.to_luma8()));
        }
    }
    Ok((
        Tensor::from_vec(data, (1, label_nc, size, size), device)?,
        notes,
    ))
}

fn load_condition_tensor(
    path: &Path,
    label_nc: usize,
    size: usize,
    device: &Device,
    notes: &mut Notes,
) -> Result<Tensor, ImageError> {
    let err = |reason: String| ImageError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| err(e.to_string()))?;
    if tensors.len() != 1 {
        return Err(err(format!(
            "expected exactly one tensor, found {}",
            tensors.len()
        )));
    }
    let t = tensors.into_values().next().unwrap().to_dtype(DType::F32)?;
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 if t.dim(0)? == 1 => t,
        _ => {
            return Err(err(format!(
                "expected a [C, H, W] or [1, C, H, W] tensor, found {:?}",
                t.dims()
            )))
        }
    };
    let (_, c, h, w) = t.dims4()?;
    if c != label_nc {
        return Err(ImageError::Condition(format!(
            "{}: the condition tensor has {c} channels, the model expects {label_nc}",
            path.display()
        )));
    }
    if (h, w) != (size, size) {
        notes.push(format!(
            "{}: resized from {w}x{h} to {size}x{size} (nearest)",
            path.display()
        ));
        return Ok(crate::model::ops::interpolate_nearest(&t, size, size)?);
    }
    Ok(t)
}

/// The exemplar's own label for a single-channel (edge) model: its Canny edges, built exactly
/// as the shipped model's training data (see [`CannyParams::edge_model`]).
pub fn edge_label(img: &RgbImage, device: &Device) -> Result<Tensor, ImageError> {
    let size = img.width().max(img.height());
    let edges = canny_edges(
        &DynamicImage::ImageRgb8(img.clone()),
        size,
        CannyParams::edge_model(),
    );
    let (w, h) = (edges.width() as usize, edges.height() as usize);
    Ok(Tensor::from_vec(grey_values(&edges), (1, 1, h, w), device)?)
}

/// [3, H, W] (or [1, 3, H, W]) in [-1, 1] -> RGB image, clamped.
pub fn tensor_to_rgb(t: &Tensor) -> Result<RgbImage, ImageError> {
    let t = if t.rank() == 4 { t.get(0)? } else { t.clone() };
    let (c, h, w) = t.dims3()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let at = |ch: usize, y: usize, x: usize| v[(ch.min(c - 1) * h + y) * w + x];
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |ch| {
            (((at(ch, y as usize, x as usize) + 1.0) * 127.5)
                .round()
                .clamp(0.0, 255.0)) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    }))
}

/// A [1, H, W] / [1, 1, H, W] map in [0, 1] -> grey image.
pub fn tensor_to_grey(t: &Tensor) -> Result<GrayImage, ImageError> {
    let t = t.flatten_to(t.rank().saturating_sub(3))?;
    let t = if t.rank() == 2 { t.get(0)? } else { t };
    let t = if t.rank() == 2 { t } else { t.squeeze(0)? };
    let (h, w) = t.dims2()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([(v[y as usize * w + x as usize] * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_round_trip() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 50, y as u8 * 60, 7]));
        let t = rgb_to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 5]);
        assert_eq!(tensor_to_rgb(&t).unwrap(), img);
    }
}
