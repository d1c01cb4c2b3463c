//! PNG files with text chunks (the parameters of a result, see [`crate::params`]), written
//! atomically.
use std::io::Write;
use std::path::Path;

use image::{DynamicImage, RgbaImage};

use super::ImageError;

/// Write bytes atomically: a temporary file in the same folder, persisted by a rename, so that
/// a failed write (full disk, no permission) leaves no partial file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let err = |reason: String| ImageError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
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
    use image::RgbImage;

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
}
