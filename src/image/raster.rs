//! Pixel-level helpers with no tensors and no model knowledge.
use std::path::Path;

use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage};

use super::ImageError;

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

/// A loaded sketch or edge map as the binary edge layer both front ends use, made as the training
/// conditions are (thin binary strokes, no grey): thresholded at mid-grey, edges = 255. An edge map
/// is sparse, so a mostly bright image is taken to be drawn dark on light and inverted. A larger
/// drawing is reduced by taking, for each model pixel, whether any ink falls in its block: a
/// bilinear reduction would turn a 4 px stroke of a 1024 px drawing into light grey that the
/// threshold then drops. A smaller one is enlarged (bilinear) and thresholded.
pub fn edge_map(image: &DynamicImage, size: u32) -> GrayImage {
    let gray = image.to_luma8();
    let (w, h) = gray.dimensions();
    let mean =
        gray.as_raw().iter().map(|v| *v as u64).sum::<u64>() / gray.as_raw().len().max(1) as u64;
    let dark_lines = mean > 127;
    let ink = |v: u8| if dark_lines { v < 128 } else { v >= 128 };
    if w > size || h > size {
        return block_any(&gray, size, ink);
    }
    let gray = DynamicImage::ImageLuma8(gray)
        .resize_exact(size, size, FilterType::Triangle)
        .to_luma8();
    GrayImage::from_fn(size, size, |x, y| {
        image::Luma([if ink(gray.get_pixel(x, y).0[0]) {
            255
        } else {
            0
        }])
    })
}

/// `size` x `size`: 255 where any source pixel of the block (the source rectangle that maps onto
/// the output pixel) is ink. Written here because `image` resizes by filtering only; one pass over
/// the source, cheap next to a run.
fn block_any(gray: &GrayImage, size: u32, ink: impl Fn(u8) -> bool) -> GrayImage {
    let (w, h) = gray.dimensions();
    let mut out = GrayImage::new(size, size);
    for (x, y, p) in gray.enumerate_pixels() {
        if ink(p.0[0]) {
            let (ox, oy) = (
                x as u64 * size as u64 / w as u64,
                y as u64 * size as u64 / h as u64,
            );
            out.put_pixel(ox as u32, oy as u32, image::Luma([255]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_maps_are_binarised_and_dark_on_light_inverted() {
        let mut g = GrayImage::from_pixel(4, 4, image::Luma([255]));
        g.put_pixel(1, 1, image::Luma([0]));
        g.put_pixel(2, 1, image::Luma([100])); // grey stroke edge: an edge
        g.put_pixel(3, 1, image::Luma([200])); // light grey: background
        let e = edge_map(&DynamicImage::ImageLuma8(g), 4);
        assert_eq!(&e.as_raw()[4..8], &[0, 255, 255, 0]);
        assert_eq!(e.as_raw()[0], 0);
        // Light on dark stays as it is, thresholded.
        let mut g = GrayImage::new(4, 4);
        g.put_pixel(0, 0, image::Luma([180]));
        g.put_pixel(1, 0, image::Luma([60]));
        let e = edge_map(&DynamicImage::ImageLuma8(g), 4);
        assert_eq!(&e.as_raw()[..3], &[255, 0, 0]);
    }

    #[test]
    fn a_large_drawing_keeps_its_thin_strokes() {
        // 1024 px, a 4 px dark stroke on white: 0.5 px at 128, which a bilinear reduction
        // greys out below the threshold; the stroke must stay one continuous line.
        let mut g = GrayImage::from_pixel(1024, 1024, image::Luma([255]));
        for x in 96..904 {
            for y in 512..516 {
                g.put_pixel(x, y, image::Luma([0]));
            }
        }
        let e = edge_map(&DynamicImage::ImageLuma8(g), 128);
        let row: Vec<u8> = (0..128).map(|x| e.get_pixel(x, 64).0[0]).collect();
        assert!(row[12..=112].iter().all(|&v| v == 255), "{row:?}");
        assert_eq!(e.as_raw().iter().filter(|&&v| v == 255).count(), 101);
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
