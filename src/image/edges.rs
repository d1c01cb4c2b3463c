//! Condition labels from edges and part strokes, built the way the training data builds them.
//!
//! Two layouts exist:
//! - `label_nc = 1`: one binary edge map (Canny edges of the target photo, or a drawn sketch);
//! - `label_nc = 15`: the CelebA-HQ edge label of CoCosNet / MIDMs (`celebahqedge_dataset.py`):
//!   channel 0 = all edges (part edges plus Canny edges of the background), channels 1..=13 =
//!   one distance map per facial part ([`PARTS`] order), channel 14 = part edges only.
//!   A distance map is `floor(min(d / 3, 255)) / 255` with `d` the city-block (L1) distance to
//!   that part's edge pixels (OpenCV `DIST_L1`), so an absent part is all ones.
//!
//! The reference computes part edges as the boundaries of filled part masks; in the editor the
//! user draws those boundaries directly, so a part layer's stroke pixels are its edge pixels.
//! Everything here works on plain images and `Vec<f32>` (no tensors), so the UI can use it too.
use image::{imageops::FilterType, DynamicImage, GrayImage, Luma};

/// Facial parts of the CelebA-HQ edge label, in channel order (channels 1..=13).
pub const PARTS: [&str; 13] = [
    "skin", "l_brow", "r_brow", "l_eye", "r_eye", "l_ear", "r_ear", "nose", "u_lip", "mouth",
    "l_lip", "eye_g", "hair",
];

/// Channels of the CelebA-HQ edge label.
pub const CELEBA_LABEL_NC: usize = 2 + PARTS.len();

/// Canny settings: hysteresis thresholds in imageproc's units (Sobel magnitude of a 0..255
/// image, at most about 1140) and a dilation of the edges (Chebyshev radius, 0 = none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CannyParams {
    pub low: f32,
    pub high: f32,
    pub dilate: u8,
}

impl Default for CannyParams {
    fn default() -> Self {
        Self::edge_model()
    }
}

impl CannyParams {
    /// The shipped single-channel model's data (`train/data.py`): scikit-image Canny with
    /// thresholds 0.05 / 0.15 of a `[0,1]` luminance, then a 3x3 dilation (3 px lines, as the
    /// training labels at 64x64 and 128x128).
    pub fn edge_model() -> Self {
        Self {
            low: 0.05 * 255.0,
            high: 0.15 * 255.0,
            dilate: 1,
        }
    }

    /// The CelebA-HQ edge label (`celebahqedge_dataset.py`): scikit-image's default thresholds
    /// (0.1 / 0.2 of a `[0,1]` image), 1 px edges.
    pub fn celeba() -> Self {
        Self {
            low: 0.1 * 255.0,
            high: 0.2 * 255.0,
            dilate: 0,
        }
    }

    /// The preset matching a model's condition layout.
    pub fn for_label_nc(label_nc: usize) -> Self {
        if label_nc == CELEBA_LABEL_NC {
            Self::celeba()
        } else {
            Self::edge_model()
        }
    }
}

/// Errors of label building (bad sizes or layouts; never a panic).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    #[error("unsupported condition layout: label_nc = {0} (supported: 1 = edge map, 15 = CelebA-HQ edges + parts)")]
    UnsupportedLabelNc(usize),
    #[error("layer {index} is {got}x{got2}, expected {want}x{want}")]
    LayerSize {
        index: usize,
        got: u32,
        got2: u32,
        want: u32,
    },
    #[error("expected {want} part layers, got {got}")]
    PartCount { want: usize, got: usize },
}

/// A condition label, channel-major ([C, H, W] flattened), values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub channels: usize,
    pub size: usize,
    pub data: Vec<f32>,
}

impl Label {
    /// One channel as a slice of `size * size` values.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.size * self.size;
        &self.data[c * n..(c + 1) * n]
    }
}

/// Canny edges of an image resized (bilinear, like the reference's PIL resize) to `size` x
/// `size`, transparency composited on white as the training data is: 255 on edges, 0 elsewhere.
/// (imageproc blurs with sigma 1.4 where scikit-image uses 1.0; the thresholds are the same.)
pub fn canny_edges(image: &DynamicImage, size: u32, params: CannyParams) -> GrayImage {
    let resized = image.resize_exact(size, size, FilterType::Triangle);
    let gray = DynamicImage::ImageRgb8(super::raster::flatten_alpha(&resized)).to_luma8();
    // imageproc asserts high >= low; a UI slider may cross them, so order them here.
    let (low, high) = if params.low <= params.high {
        (params.low, params.high)
    } else {
        (params.high, params.low)
    };
    let edges = imageproc::edges::canny(&gray, low.max(0.0), high.max(0.0));
    match params.dilate {
        0 => edges,
        r => imageproc::morphology::dilate(&edges, imageproc::distance_transform::Norm::LInf, r),
    }
}

/// Exact city-block distance of every pixel to the nearest non-zero pixel of `edges`
/// (`None` where the image has no edge pixel at all). imageproc's `distance_transform`
/// computes the same distances but saturates them at 255, which a 256 x 256 label exceeds, so
/// this is its two-pass form without the saturation.
pub fn l1_distance(edges: &GrayImage) -> Option<Vec<u32>> {
    let (w, h) = (edges.width() as usize, edges.height() as usize);
    if !edges.pixels().any(|p| p.0[0] != 0) {
        return None;
    }
    let inf = u32::MAX / 2;
    let mut d: Vec<u32> = edges
        .pixels()
        .map(|p| if p.0[0] != 0 { 0 } else { inf })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if x > 0 {
                d[i] = d[i].min(d[i - 1] + 1);
            }
            if y > 0 {
                d[i] = d[i].min(d[i - w] + 1);
            }
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let i = y * w + x;
            if x + 1 < w {
                d[i] = d[i].min(d[i + 1] + 1);
            }
            if y + 1 < h {
                d[i] = d[i].min(d[i + w] + 1);
            }
        }
    }
    Some(d)
}

/// The distance map channel of one part: `floor(min(d / 3, 255)) / 255` (the reference casts
/// `clip(d / 3, 0, 255)` to uint8, then ToTensor divides by 255). No edges: all ones.
pub fn part_distance_map(edges: &GrayImage) -> Vec<f32> {
    match l1_distance(edges) {
        Some(d) => d
            .into_iter()
            .map(|v| ((v as f32 / 3.0).min(255.0)).floor() / 255.0)
            .collect(),
        None => vec![1.0; (edges.width() * edges.height()) as usize],
    }
}

fn check_size(index: usize, layer: &GrayImage, size: u32) -> Result<(), LabelError> {
    if layer.width() != size || layer.height() != size {
        return Err(LabelError::LayerSize {
            index,
            got: layer.width(),
            got2: layer.height(),
            want: size,
        });
    }
    Ok(())
}

fn binary(v: u8) -> f32 {
    if v != 0 {
        1.0
    } else {
        0.0
    }
}

/// Build a condition label of `label_nc` channels from a background edge layer (drawn strokes
/// or Canny edges) and the part layers (one per entry of [`PARTS`]; ignored when
/// `label_nc = 1`, where they are merged into the single edge map). Non-zero pixels are edges.
pub fn build_label(
    label_nc: usize,
    edges: &GrayImage,
    parts: &[GrayImage],
) -> Result<Label, LabelError> {
    let size = edges.width();
    check_size(0, edges, size)?;
    for (i, p) in parts.iter().enumerate() {
        check_size(i + 1, p, size)?;
    }
    let n = (size * size) as usize;
    // Union of all part strokes (channel 14) and of everything (channel 0).
    let mut part_edges = vec![0u8; n];
    for p in parts {
        for (o, v) in part_edges.iter_mut().zip(p.as_raw()) {
            *o |= (*v != 0) as u8;
        }
    }
    let all: Vec<f32> = edges
        .as_raw()
        .iter()
        .zip(&part_edges)
        .map(|(e, p)| binary(*e | *p))
        .collect();
    match label_nc {
        1 => Ok(Label {
            channels: 1,
            size: size as usize,
            data: all,
        }),
        CELEBA_LABEL_NC => {
            if parts.len() != PARTS.len() {
                return Err(LabelError::PartCount {
                    want: PARTS.len(),
                    got: parts.len(),
                });
            }
            let mut data = Vec::with_capacity(CELEBA_LABEL_NC * n);
            data.extend_from_slice(&all);
            for p in parts {
                data.extend(part_distance_map(p));
            }
            data.extend(part_edges.iter().map(|v| binary(*v)));
            Ok(Label {
                channels: CELEBA_LABEL_NC,
                size: size as usize,
                data,
            })
        }
        other => Err(LabelError::UnsupportedLabelNc(other)),
    }
}

/// Empty (all-zero) layers for a canvas of `size` pixels: the edge layer and the part layers.
pub fn empty_parts(size: u32) -> Vec<GrayImage> {
    (0..PARTS.len())
        .map(|_| GrayImage::from_pixel(size, size, Luma([0])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imageproc::distance_transform::{distance_transform, Norm};

    fn dot(size: u32, pts: &[(u32, u32)]) -> GrayImage {
        let mut g = GrayImage::new(size, size);
        for &(x, y) in pts {
            g.put_pixel(x, y, Luma([255]));
        }
        g
    }

    #[test]
    fn l1_matches_imageproc_where_it_does_not_saturate() {
        let g = dot(40, &[(3, 4), (30, 33), (20, 2)]);
        let ours = l1_distance(&g).unwrap();
        let theirs = distance_transform(&g, Norm::L1);
        for (a, b) in ours.iter().zip(theirs.as_raw()) {
            assert_eq!(*a, *b as u32);
        }
    }

    #[test]
    fn l1_does_not_saturate_on_large_images() {
        let g = dot(300, &[(0, 0)]);
        let d = l1_distance(&g).unwrap();
        assert_eq!(d[299 * 300 + 299], 598);
        // floor(598 / 3) = 199 -> 199 / 255.
        let m = part_distance_map(&g);
        assert!((m[299 * 300 + 299] - 199.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn celeba_layout() {
        let edges = dot(8, &[(0, 0)]);
        let mut parts = empty_parts(8);
        parts[3] = dot(8, &[(4, 4)]);
        let l = build_label(15, &edges, &parts).unwrap();
        assert_eq!(l.data.len(), 15 * 64);
        // channel 0: both strokes; channel 14: only the part stroke.
        assert_eq!(l.channel(0)[0], 1.0);
        assert_eq!(l.channel(0)[4 * 8 + 4], 1.0);
        assert_eq!(l.channel(14)[0], 0.0);
        assert_eq!(l.channel(14)[4 * 8 + 4], 1.0);
        // part 3 (l_eye, channel 4): 0 on the stroke, floor(d/3)/255 elsewhere; others all 1.
        assert_eq!(l.channel(4)[4 * 8 + 4], 0.0);
        assert_eq!(l.channel(4)[0], (8.0f32 / 3.0).floor() / 255.0);
        assert!(l.channel(1).iter().all(|v| *v == 1.0));
    }

    #[test]
    fn single_channel_merges_parts() {
        let edges = dot(4, &[(1, 1)]);
        let mut parts = empty_parts(4);
        parts[0] = dot(4, &[(2, 2)]);
        let l = build_label(1, &edges, &parts).unwrap();
        assert_eq!(l.data.iter().filter(|v| **v == 1.0).count(), 2);
        assert!(matches!(
            build_label(3, &edges, &parts),
            Err(LabelError::UnsupportedLabelNc(3))
        ));
        assert!(matches!(
            build_label(15, &edges, &parts[..2]),
            Err(LabelError::PartCount { .. })
        ));
        assert!(build_label(1, &edges, &[dot(5, &[])]).is_err());
    }

    #[test]
    fn canny_tolerates_crossed_thresholds() {
        let mut img = image::RgbImage::new(32, 32);
        for y in 0..32 {
            for x in 16..32 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let img = DynamicImage::ImageRgb8(img);
        let e = canny_edges(
            &img,
            32,
            CannyParams {
                low: 60.0,
                high: 20.0,
                dilate: 0,
            },
        );
        assert!(e.pixels().any(|p| p.0[0] == 255));
        // Dilation by 1 sets the 3x3 neighbourhood of every edge pixel.
        let wide = canny_edges(
            &img,
            32,
            CannyParams {
                low: 60.0,
                high: 20.0,
                dilate: 1,
            },
        );
        for (x, y, p) in e.enumerate_pixels() {
            if p.0[0] == 255 {
                for (dx, dy) in [(-1i32, -1i32), (1, 1), (1, -1), (-1, 1), (0, 1), (1, 0)] {
                    let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                    if (0..32).contains(&nx) && (0..32).contains(&ny) {
                        assert_eq!(wide.get_pixel(nx as u32, ny as u32).0[0], 255);
                    }
                }
            }
        }
    }
}
