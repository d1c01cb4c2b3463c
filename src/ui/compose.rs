//! Pure image compositing for the editor's views (no egui, no tensors): the canvas with its
//! coloured layers, the confidence-mask overlay, the correspondence-probe heat map and the
//! exemplar's edge preview.
use image::{imageops::FilterType, GrayImage, Rgba, RgbaImage};

/// Colours of the canvas layers: edges black, parts distinct hues.
pub const LAYER_COLORS: [[u8; 3]; 14] = [
    [0, 0, 0],
    [230, 170, 120], // skin
    [120, 70, 30],   // l_brow
    [150, 90, 40],   // r_brow
    [30, 120, 220],  // l_eye
    [30, 170, 220],  // r_eye
    [200, 120, 200], // l_ear
    [160, 80, 200],  // r_ear
    [230, 90, 60],   // nose
    [220, 30, 90],   // u_lip
    [150, 20, 40],   // mouth
    [240, 60, 130],  // l_lip
    [90, 90, 90],    // eye_g
    [60, 160, 60],   // hair
];

pub fn layer_rgb(layer: usize) -> [u8; 3] {
    LAYER_COLORS[layer.min(LAYER_COLORS.len() - 1)]
}

/// The canvas as shown: each layer's strokes in its colour, later layers on top, over white or
/// (when tracing the exemplar's parts) over the faded exemplar.
pub fn canvas_image(layers: &[GrayImage], size: u32, background: Option<&RgbaImage>) -> RgbaImage {
    let mut img = match background {
        Some(bg) => {
            let mut bg = image::imageops::resize(bg, size, size, FilterType::Triangle);
            for p in bg.pixels_mut() {
                for c in 0..3 {
                    p.0[c] = (p.0[c] as u16 / 2 + 128) as u8; // faded under the strokes
                }
            }
            bg
        }
        None => RgbaImage::from_pixel(size, size, Rgba([255, 255, 255, 255])),
    };
    for (l, layer) in layers.iter().enumerate() {
        let [r, g, b] = layer_rgb(l);
        for (p, v) in img.pixels_mut().zip(layer.as_raw()) {
            if *v != 0 {
                *p = Rgba([r, g, b, 255]);
            }
        }
    }
    img
}

/// r~n tinted green where the re-warp was kept (M = 1) and red elsewhere.
pub fn mask_overlay(img: &RgbaImage, mask: &RgbaImage) -> RgbaImage {
    let (w, h) = img.dimensions();
    let (mw, mh) = mask.dimensions();
    RgbaImage::from_fn(w, h, |x, y| {
        let mp = mask.get_pixel(x * mw / w, y * mh / h).0;
        let m = mp[0] as f32 / 255.0;
        let p = img.get_pixel(x, y).0;
        let tint = [255.0 * (1.0 - m), 255.0 * m, 0.0];
        // No tint where the mask is clear: beyond a framed drawing's canvas the model saw nothing.
        let k = 0.4 * mp[3] as f32 / 255.0;
        let mix = |a: u8, b: f32| (a as f32 * (1.0 - k) + b * k) as u8;
        Rgba([
            mix(p[0], tint[0]),
            mix(p[1], tint[1]),
            mix(p[2], tint[2]),
            255,
        ])
    })
}

/// The probe's heat map (an l x l grid over the exemplar's latent, max 1) in red over the
/// darkened exemplar at `size` pixels.
pub fn probe_image(exemplar: &RgbaImage, heat: &[f32], size: u32) -> RgbaImage {
    let s = size;
    let l = (heat.len() as f64).sqrt() as u32;
    let base = image::imageops::resize(exemplar, s, s, FilterType::Triangle);
    RgbaImage::from_fn(s, s, |x, y| {
        let h = heat[((y * l / s) * l + x * l / s) as usize];
        let p = base.get_pixel(x, y).0;
        // Soft-warp weights are peaky (temperature 0.005): sqrt keeps weaker matches visible.
        let h = h.sqrt();
        let mix = |a: u8, b: f32| (a as f32 * (1.0 - h) + b * h) as u8;
        Rgba([
            mix(p[0] / 3, 255.0),
            mix(p[1] / 3, 30.0),
            mix(p[2] / 3, 30.0),
            255,
        ])
    })
}

/// Edges as a drawing: black lines on white.
pub fn edges_preview(edges: &GrayImage) -> RgbaImage {
    RgbaImage::from_fn(edges.width(), edges.height(), |x, y| {
        let v = 255 - edges.get_pixel(x, y).0[0];
        Rgba([v, v, v, 255])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn later_layers_paint_over_earlier_ones_on_white() {
        let mut edges = GrayImage::new(4, 4);
        edges.put_pixel(1, 1, Luma([255]));
        edges.put_pixel(2, 2, Luma([255]));
        let mut skin = GrayImage::new(4, 4);
        skin.put_pixel(2, 2, Luma([255]));
        let img = canvas_image(&[edges, skin], 4, None);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255, 255]);
        assert_eq!(img.get_pixel(1, 1).0, [0, 0, 0, 255]);
        assert_eq!(img.get_pixel(2, 2).0, [230, 170, 120, 255]);
    }

    #[test]
    fn a_traced_exemplar_shows_faded_under_the_strokes() {
        let bg = RgbaImage::from_pixel(8, 8, Rgba([0, 100, 200, 255]));
        let img = canvas_image(&[GrayImage::new(4, 4)], 4, Some(&bg));
        assert_eq!(img.get_pixel(3, 3).0, [128, 178, 228, 255]);
    }

    #[test]
    fn the_mask_overlay_tints_kept_green_and_dropped_red() {
        let img = RgbaImage::from_pixel(4, 4, Rgba([100, 100, 100, 255]));
        let mut mask = RgbaImage::from_pixel(2, 2, Rgba([0, 0, 0, 255]));
        mask.put_pixel(1, 0, Rgba([255, 255, 255, 255]));
        let o = mask_overlay(&img, &mask);
        assert_eq!(o.get_pixel(0, 0).0, [162, 60, 60, 255]); // dropped: red
        assert_eq!(o.get_pixel(3, 0).0, [60, 162, 60, 255]); // kept (mask cell (1, 0)): green
    }

    #[test]
    fn the_probe_heat_peaks_in_red_where_the_match_is() {
        let ex = RgbaImage::from_pixel(4, 4, Rgba([90, 90, 90, 255]));
        let mut heat = vec![0.0; 4];
        heat[3] = 1.0; // bottom-right latent cell
        let img = probe_image(&ex, &heat, 4);
        assert_eq!(img.get_pixel(3, 3).0, [255, 30, 30, 255]);
        assert_eq!(img.get_pixel(0, 0).0, [30, 30, 30, 255]);
    }

    #[test]
    fn edge_previews_are_dark_lines_on_white() {
        let mut e = GrayImage::new(2, 1);
        e.put_pixel(1, 0, Luma([255]));
        let p = edges_preview(&e);
        assert_eq!((p.get_pixel(0, 0).0[0], p.get_pixel(1, 0).0[0]), (255, 0));
    }
}
