//! Images <-> tensors, condition labels, and atomic PNG writes.
//!
//! Conventions: RGB images become [1, 3, H, W] tensors in [-1, 1]; condition labels are
//! [1, C, H, W] in [0, 1] where 1 marks an edge (or, for distance-map channels, the value the
//! model was trained with). Edge maps drawn dark-on-light are inverted automatically: an edge
//! map is sparse, so a mostly bright single-channel image is taken to be drawn inverted.
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage, RgbaImage};

/// Errors reading or writing images, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read image: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{0}")]
    Condition(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What happened while loading, for the user (e.g. "resized from 300x200 to 64x64").
pub type Notes = Vec<String>;

/// Read any image file `image` understands; a zero-byte or corrupt file is an error naming it.
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageError> {
    let err = |reason: String| ImageError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.is_empty() {
        return Err(err("the file is empty".into()));
    }
    image::load_from_memory(&bytes).map_err(|e| err(e.to_string()))
}

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

/// Flatten alpha onto white so that emoji-like images with transparency look as drawn.
pub fn flatten_alpha(img: &DynamicImage) -> RgbImage {
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        let mix = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        out.put_pixel(x, y, image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])]));
    }
    out
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

/// A single-channel edge map: grey values in [0, 1], inverted when drawn dark on light.
pub fn edge_map_values(img: &GrayImage) -> Vec<f32> {
    let mut v = grey_values(img);
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    if mean > 0.5 {
        v.iter_mut().for_each(|x| *x = 1.0 - *x);
    }
    v
}

/// Canny edges of a photo as a [0, 1] edge map (1 = edge), thresholds on the 0..255 gradient.
pub fn canny_edges(img: &RgbImage, low: f32, high: f32) -> GrayImage {
    let grey = DynamicImage::ImageRgb8(img.clone()).to_luma8();
    imageproc::edges::canny(&grey, low, high)
}

/// Default Canny thresholds used for exemplar labels and "edges from photo".
pub const CANNY_LOW: f32 = 50.0;
pub const CANNY_HIGH: f32 = 120.0;

/// Load a condition label with `label_nc` channels at `size`:
/// - one PNG per channel (`paths.len() == label_nc`), each a grey image in [0, 1]; a
///   single-channel model takes one edge-map PNG (auto-inverted if drawn dark on light);
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
        )
        .to_luma8();
        if label_nc == 1 {
            data.extend(edge_map_values(&img));
        } else {
            data.extend(grey_values(&img));
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
        return Ok(crate::model::correspondence::interpolate_nearest(
            &t, size, size,
        )?);
    }
    Ok(t)
}

/// The exemplar's own label for a single-channel (edge) model: its Canny edges.
pub fn edge_label(img: &RgbImage, device: &Device) -> Result<Tensor, ImageError> {
    let edges = canny_edges(img, CANNY_LOW, CANNY_HIGH);
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

/// Write PNG bytes atomically: a temporary file in the same folder, then rename, so that a
/// failed write (full disk, no permission) leaves no partial file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let err = |reason: String| ImageError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e.to_string()));
    }
    Ok(())
}

/// Encode an image as PNG with text chunks (key, value) and write it atomically.
pub fn save_png(
    path: &Path,
    img: &DynamicImage,
    text: &[(String, String)],
) -> Result<(), ImageError> {
    let werr = |reason: String| ImageError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let rgba: RgbaImage = img.to_rgba8();
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, rgba.width(), rgba.height());
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            enc.add_itxt_chunk(k.clone(), v.clone())
                .map_err(|e| werr(e.to_string()))?;
        }
        let mut w = enc.write_header().map_err(|e| werr(e.to_string()))?;
        w.write_image_data(rgba.as_raw())
            .map_err(|e| werr(e.to_string()))?;
    }
    write_atomic(path, &bytes)
}

/// Read the text chunks of a PNG (as written by [`save_png`]).
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let err = |reason: String| ImageError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| err(e.to_string()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        if let Ok(text) = t.get_text() {
            out.push((t.keyword.clone(), text));
        }
    }
    Ok(out)
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

    #[test]
    fn dark_on_light_edges_are_inverted() {
        let mut g = GrayImage::from_pixel(4, 4, image::Luma([255]));
        g.put_pixel(1, 1, image::Luma([0]));
        let v = edge_map_values(&g);
        assert_eq!(v[5], 1.0);
        assert_eq!(v[0], 0.0);
    }

    #[test]
    fn png_text_round_trip_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let img = DynamicImage::ImageRgb8(RgbImage::new(3, 3));
        save_png(&path, &img, &[("midm.seed".into(), "42".into())]).unwrap();
        let text = read_png_text(&path).unwrap();
        assert!(text.contains(&("midm.seed".to_string(), "42".to_string())));
        // Only the final file remains.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A write into a missing folder fails cleanly and leaves nothing.
        let bad = dir.path().join("missing/out.png");
        assert!(save_png(&bad, &img, &[]).is_err());
        assert!(!bad.exists());
    }

    #[test]
    fn empty_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        std::fs::write(&path, b"").unwrap();
        let e = read_image(&path).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
