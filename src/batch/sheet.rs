//! The contact sheet of a batch (`DIR/sheet.png`): for every result its condition, exemplar
//! and output side by side, several triples per row. Built from the files at the end and
//! written one band of rows at a time, so that a sheet of thousands of results never holds more
//! than one band of thumbnails.
use std::io::Write;
use std::path::Path;

use image::{imageops::FilterType, Rgb, RgbImage};

use super::run::SheetRow;
use crate::image::ImageError;

/// Sheet layout: thumbnail size, triples per row, gaps.
#[derive(Debug, Clone, Copy)]
pub struct SheetLayout {
    pub tile: u32,
    pub per_row: usize,
    /// Between the three tiles of a triple, and around and between the triples.
    pub gap: u32,
    pub triple_gap: u32,
}

impl Default for SheetLayout {
    fn default() -> Self {
        Self {
            tile: 96,
            per_row: 4,
            gap: 2,
            triple_gap: 12,
        }
    }
}

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
/// A tile whose file cannot be read (a `.safetensors` condition, a file deleted since).
const MISSING: Rgb<u8> = Rgb([200, 200, 200]);

impl SheetLayout {
    fn triple_width(&self) -> u32 {
        3 * self.tile + 2 * self.gap
    }

    /// Sheet size for `n` results.
    pub fn size(&self, n: usize) -> (u32, u32) {
        let cols = n.clamp(1, self.per_row) as u32;
        let rows = n.div_ceil(self.per_row).max(1) as u32;
        let w = cols * self.triple_width() + (cols + 1) * self.triple_gap;
        let h = rows * self.tile + (rows + 1) * self.triple_gap;
        (w, h)
    }

    fn thumb(&self, path: &Path) -> RgbImage {
        match crate::image::read_image(path) {
            Ok(img) => {
                let rgb = crate::image::flatten_alpha(&img);
                image::imageops::resize(&rgb, self.tile, self.tile, FilterType::Triangle)
            }
            Err(_) => RgbImage::from_pixel(self.tile, self.tile, MISSING),
        }
    }

    /// One band: a row of triples with the gap above it (and below, for the last).
    fn band(&self, rows: &[SheetRow], width: u32, last: bool) -> RgbImage {
        let h = self.triple_gap + self.tile + if last { self.triple_gap } else { 0 };
        let mut band = RgbImage::from_pixel(width, h, BACKGROUND);
        for (i, row) in rows.iter().enumerate() {
            let x0 = self.triple_gap + i as u32 * (self.triple_width() + self.triple_gap);
            for (k, path) in [&row.condition, &row.exemplar, &row.output]
                .into_iter()
                .enumerate()
            {
                let x = x0 + k as u32 * (self.tile + self.gap);
                let thumb = self.thumb(path);
                image::imageops::replace(&mut band, &thumb, x as i64, self.triple_gap as i64);
            }
        }
        band
    }
}

/// Write the sheet of `rows` to `path` (atomically: a temporary file renamed into place).
pub fn write_sheet(path: &Path, rows: &[SheetRow], layout: &SheetLayout) -> Result<(), ImageError> {
    let err = |reason: String| ImageError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let (w, h) = layout.size(rows.len());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    {
        let mut enc = png::Encoder::new(std::io::BufWriter::new(tmp.as_file()), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| err(e.to_string()))?;
        let mut stream = writer.stream_writer().map_err(|e| err(e.to_string()))?;
        let chunks: Vec<&[SheetRow]> = rows.chunks(layout.per_row.max(1)).collect();
        if chunks.is_empty() {
            let band = RgbImage::from_pixel(w, h, BACKGROUND);
            stream
                .write_all(band.as_raw())
                .map_err(|e| err(e.to_string()))?;
        }
        for (i, chunk) in chunks.iter().enumerate() {
            let band = layout.band(chunk, w, i + 1 == chunks.len());
            stream
                .write_all(band.as_raw())
                .map_err(|e| err(e.to_string()))?;
        }
        stream.finish().map_err(|e| err(e.to_string()))?;
    }
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_has_a_triple_per_result() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        RgbImage::from_pixel(8, 8, Rgb([255, 0, 0]))
            .save(&img)
            .unwrap();
        let row = SheetRow {
            condition: img.clone(),
            exemplar: dir.path().join("missing.png"),
            output: img.clone(),
        };
        let layout = SheetLayout {
            tile: 10,
            per_row: 2,
            gap: 1,
            triple_gap: 3,
        };
        let out = dir.path().join("sheet.png");
        write_sheet(&out, &vec![row; 3], &layout).unwrap();
        let sheet = image::open(&out).unwrap().to_rgb8();
        // Two triples per row, two rows.
        assert_eq!(sheet.dimensions(), layout.size(3));
        assert_eq!(layout.size(3), (2 * 32 + 3 * 3, 2 * 10 + 3 * 3));
        // Row 2, triple 1: condition red, exemplar missing (grey), output red; triple 2 empty.
        let y = 3 + 10 + 3 + 5;
        assert_eq!(*sheet.get_pixel(3 + 5, y), Rgb([255, 0, 0]));
        assert_eq!(*sheet.get_pixel(3 + 11 + 5, y), MISSING);
        assert_eq!(*sheet.get_pixel(3 + 22 + 5, y), Rgb([255, 0, 0]));
        assert_eq!(*sheet.get_pixel(3 + 32 + 3 + 5, y), BACKGROUND);
    }
}
