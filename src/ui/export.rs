//! PNG export with the run's parameters in text chunks (the format of [`crate::params`], written
//! atomically by [`crate::image::save_png`]) and the steps sheet.
use std::path::Path;

use image::{imageops::FilterType, Rgba, RgbaImage};

use crate::worker::StepFrame;

/// Save `image` with `text` chunks, atomically (temporary file + rename).
pub fn save_png(path: &Path, image: &RgbaImage, text: &[(String, String)]) -> anyhow::Result<()> {
    Ok(crate::image::save_png(
        path,
        &image::DynamicImage::ImageRgba8(image.clone()),
        text,
    )?)
}

/// One PNG sheet of a run: a column per step (label strip, r~n, R, M), scaled to `cell` pixels.
pub fn steps_sheet(frames: &[StepFrame], cell: u32) -> RgbaImage {
    let label_h = 12u32;
    let rows = 3u32;
    let pad = 2u32;
    let w = frames.len().max(1) as u32 * (cell + pad) + pad;
    let h = label_h + rows * (cell + pad) + pad;
    let mut sheet = RgbaImage::from_pixel(w, h, Rgba([24, 24, 24, 255]));
    for (col, f) in frames.iter().enumerate() {
        let x = pad + col as u32 * (cell + pad);
        draw_label(&mut sheet, x, 2, &f.kind.label());
        let shown = f.image.as_ref().or(f.pred_x0.as_ref());
        let cells = [shown, f.warped.as_ref(), f.mask.as_ref()];
        for (row, img) in cells.iter().enumerate() {
            let y = label_h + pad + row as u32 * (cell + pad);
            if let Some(img) = img {
                let scaled = image::imageops::resize(*img, cell, cell, FilterType::Nearest);
                image::imageops::overlay(&mut sheet, &scaled, x as i64, y as i64);
            }
        }
    }
    sheet
}

/// A tiny 3x5 bitmap font for step labels in the sheet (digits, a few letters, '*').
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'k' => [4, 5, 6, 5, 5],
        'r' => [0, 6, 5, 4, 4],
        'w' => [0, 5, 5, 7, 5],
        'a' => [0, 7, 1, 7, 7],
        'p' => [0, 7, 5, 7, 4],
        'f' => [3, 4, 6, 4, 4],
        'i' => [2, 0, 2, 2, 2],
        'n' => [0, 6, 5, 5, 5],
        'l' => [2, 2, 2, 2, 3],
        '*' => [0, 5, 2, 5, 0],
        _ => [0; 5],
    }
}

fn draw_label(img: &mut RgbaImage, x0: u32, y0: u32, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    let (x, y) = (x0 + i as u32 * 4 + col, y0 + row as u32);
                    if x < img.width() && y < img.height() {
                        img.put_pixel(x, y, Rgba([230, 230, 230, 255]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::read_png_text;
    use crate::params::{text_value, KEY_CONDITION, KEY_SEED};

    #[test]
    fn text_chunks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let img = RgbaImage::from_pixel(4, 4, Rgba([1, 2, 3, 255]));
        let text = vec![
            (KEY_SEED.to_string(), "42".to_string()),
            (KEY_CONDITION.to_string(), "ä.png".to_string()),
        ];
        save_png(&path, &img, &text).unwrap();
        let back = read_png_text(&path).unwrap();
        assert_eq!(text_value(&back, KEY_SEED), Some("42"));
        assert_eq!(text_value(&back, KEY_CONDITION), Some("ä.png"));
        assert_eq!(image::open(&path).unwrap().to_rgba8(), img);
        assert!(save_png(&dir.path().join("missing/out.png"), &img, &text).is_err());
    }
}
