//! Colour transfer along the correspondence: a model's `midms.colour_transfer` (our own models,
//! model v1.6; not in the authors' code, so never on for their checkpoints or parity sets).
//!
//! The diffusion steps of a small, briefly trained UNet pull every colour toward its training
//! prior: the hand-drawn set's exemplars, started from their own latents, come out of the loop at
//! an a*b* colour of 0.256 where the autoencoder alone keeps 0.535, so a red heart turns pink and
//! a yellow face lemon-green. The matching already says which exemplar pixels each output cell
//! stands for, so the first matching of a run (the sketch against the exemplar, what the
//! correspondence probe shows) also warps the exemplar's CIELAB chroma: each latent cell carries
//! its c x c pixels, and the first matching's softmax weights move them (at the model's own,
//! sharper `midms.colour_temperature` where it sets one, model v1.7). After decoding,
//! every pixel that is not white takes that chroma in proportion to the exemplar foreground that
//! warped onto it; its lightness, so its edges and shading, stay the model's. Hand-drawn set,
//! seeds 0 and 1: a*b* colour 0.249 -> 0.703, mean-colour distance 13.4 -> 6.5 a*b* units, IoU
//! 0.871 unchanged, chamfer 1.72 -> 1.63 (model v1.6); with the colour temperature 0.001 (model
//! v1.7) colour 0.772, chamfer 1.61 (docs/model-history.md). The trainer computes the same
//! (`train/colour.py`, whose docstring has the formulas).
//!
//! A chroma the pixel's lightness cannot show comes back into sRGB by the model's
//! `midms.colour_gamut` ([`ColourGamut`], model v1.11): clamping each channel (models v1.6-v1.10)
//! turned light pixels given a yellow lemon-green.
//!
//! On the host: one pass over the exemplar per exemplar side and one over the output per run
//! (128 x 128 pixels; the Lab conversions' branches and powers would be a dozen candle ops each).
use candle_core::{DType, Result, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// How a transferred colour outside sRGB comes back into it (`midms.colour_gamut`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourGamut {
    /// Each linear channel clamped to [0, 1] (absent from the config; models v1.6-v1.10). Moves
    /// the hue: a light pixel given the exemplar's yellow (L* 90, b* 70, red above 1) loses red
    /// and turns lemon-green.
    #[default]
    Clip,
    /// Linear RGB divided by its largest channel where that is above 1 (negatives still clamped to
    /// 0): the chromaticity, so the hue, is kept, a* and b* shrink by only the cube root of the
    /// factor, and the lightness drops to what sRGB can show (model v1.11: hand-drawn a*b* colour
    /// 0.788 -> 0.795 on model v1.10's weights, seeds 0 and 1).
    Scale,
}

impl ColourGamut {
    /// Parses a config value (`clip` or `scale`).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "clip" => Ok(Self::Clip),
            "scale" => Ok(Self::Scale),
            other => Err(format!(
                "midms.colour_gamut = {other:?} is not supported: use clip or scale"
            )),
        }
    }
}

/// sRGB (D65) to XYZ, skimage.color's matrix.
const RGB_TO_XYZ: [[f32; 3]; 3] = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
];
/// Its inverse, computed in f64 and written to f32 precision (the trainer uses the same numbers).
#[allow(clippy::excessive_precision)]
const XYZ_TO_RGB: [[f32; 3]; 3] = [
    [3.2404814, -1.5371516, -0.49853632],
    [-0.96925497, 1.87599, 0.041555926],
    [0.05564664, -0.20404133, 1.057311],
];
const WHITE_D65: [f32; 3] = [0.95047, 1.0, 1.08883];
/// L* at and above which a pixel keeps its colour (white), and the ramp below it, so that a
/// pixel near white cannot flip between two runs' float noise.
const GATE_L: f32 = 97.0;
const GATE_RAMP: f32 = 4.0;

fn mat(m: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    m.map(|row| row[0] * v[0] + row[1] * v[1] + row[2] * v[2])
}

/// sRGB in [0, 1] -> (L*, a*, b*).
pub fn rgb_to_lab(rgb: [f32; 3]) -> [f32; 3] {
    let lin = rgb.map(|c| {
        if c > 0.04045 {
            ((c + 0.055) / 1.055).powf(2.4)
        } else {
            c / 12.92
        }
    });
    let xyz = mat(&RGB_TO_XYZ, lin);
    let f = [0, 1, 2].map(|i| {
        let t = xyz[i] / WHITE_D65[i];
        if t > 0.008856 {
            t.powf(1.0 / 3.0)
        } else {
            7.787 * t + 16.0 / 116.0
        }
    });
    [
        116.0 * f[1] - 16.0,
        500.0 * (f[0] - f[1]),
        200.0 * (f[1] - f[2]),
    ]
}

/// (L*, a*, b*) -> sRGB in [0, 1], brought into the gamut by `gamut`.
pub fn lab_to_rgb(lab: [f32; 3], gamut: ColourGamut) -> [f32; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let f = [fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0];
    let xyz = [0, 1, 2].map(|i| {
        let v = if f[i] > 0.2068966 {
            f[i] * f[i] * f[i]
        } else {
            (f[i] - 16.0 / 116.0) / 7.787
        };
        v * WHITE_D65[i]
    });
    let lin = mat(&XYZ_TO_RGB, xyz).map(|l| l.max(0.0));
    let scale = match gamut {
        ColourGamut::Clip => 1.0,
        ColourGamut::Scale => lin[0].max(lin[1]).max(lin[2]).max(1.0),
    };
    lin.map(|l| {
        let l = l / scale;
        let c = if l > 0.0031308 {
            1.055 * l.powf(1.0 / 2.4) - 0.055
        } else {
            12.92 * l
        };
        c.clamp(0.0, 1.0)
    })
}

/// The exemplar's chroma to warp: [B, 3 c^2, h, w], channels (fg a*, fg b*, fg) of each of a
/// cell's c x c pixels in `pixel_unshuffle` order (channel k c^2 + i c + j holds pixel (i, j) of
/// the cell). `exemplar` [B, 3, H, W] in [-1, 1]; `foreground` [B, 1, H, W] in {0, 1}
/// ([`super::regions::exemplar_foreground`]: white around a glyph brings no grey); H = c h.
pub fn colour_source(exemplar: &Tensor, foreground: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, hh, ww) = exemplar.dims4()?;
    let c = hh / h;
    let host = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
    let (img, fg) = (host(exemplar)?, host(foreground)?);
    let plane = hh * ww;
    let mut out = vec![0f32; b * 3 * plane];
    for bi in 0..b {
        for y in 0..hh {
            for x in 0..ww {
                let p = y * ww + x;
                let rgb = [0, 1, 2].map(|k| (img[(bi * 3 + k) * plane + p] + 1.0) / 2.0);
                let lab = rgb_to_lab(rgb);
                let f = fg[bi * plane + p];
                let sub = (y % c) * c + x % c;
                let cell = (y / c) * w + x / c;
                for (k, v) in [lab[1] * f, lab[2] * f, f].into_iter().enumerate() {
                    out[((bi * 3 + k) * c * c + sub) * h * w + cell] = v;
                }
            }
        }
    }
    Tensor::from_vec(out, (b, 3 * c * c, h, w), exemplar.device())?.to_dtype(exemplar.dtype())
}

/// The decoded `image` [B, 3, H, W] (about [-1, 1]) with the warped chroma `warped`
/// [B, 3 c^2, h, w] (a [`colour_source`] warped to the target grid): a* and b* of each pixel move
/// to the warped ones in proportion to the warped foreground, gated off toward white, and come
/// back into sRGB by `gamut`; [B, 3, H, W] in [-1, 1].
pub fn transfer_colour(image: &Tensor, warped: &Tensor, gamut: ColourGamut) -> Result<Tensor> {
    let (b, _, hh, ww) = image.dims4()?;
    // In f32 whatever the run's precision (a half-precision decoder's output included).
    let img = image
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let warped = WarpedChroma::new(warped, hh, ww, gamut)?;
    let plane = hh * ww;
    let mut out = vec![0f32; img.len()];
    for bi in 0..b {
        for p in 0..plane {
            let rgb =
                [0, 1, 2].map(|k| (img[(bi * 3 + k) * plane + p].clamp(-1.0, 1.0) + 1.0) / 2.0);
            for (k, v) in warped.apply(bi, p, rgb).into_iter().enumerate() {
                out[(bi * 3 + k) * plane + p] = v * 2.0 - 1.0;
            }
        }
    }
    Tensor::from_vec(out, (b, 3, hh, ww), image.device())?.to_dtype(image.dtype())
}

/// [`transfer_colour`] on an 8-bit image in place (batch item 0 of `warped`): the editor's
/// streamed previews, without a round trip through tensors.
pub fn transfer_colour_rgb(
    image: &mut RgbImage,
    warped: &Tensor,
    gamut: ColourGamut,
) -> Result<()> {
    let (ww, hh) = (image.width() as usize, image.height() as usize);
    let warped = WarpedChroma::new(warped, hh, ww, gamut)?;
    for (p, px) in image.pixels_mut().enumerate() {
        let rgb = warped.apply(0, p, px.0.map(|v| v as f32 / 255.0));
        px.0 = rgb.map(|v| (v * 255.0).round() as u8);
    }
    Ok(())
}

/// The warped chroma on the host, addressed by output pixel.
struct WarpedChroma {
    src: Vec<f32>,
    /// Cell side c, latent grid h x w, image width.
    c: usize,
    h: usize,
    w: usize,
    width: usize,
    gamut: ColourGamut,
}

impl WarpedChroma {
    /// `warped` [B, 3 c^2, h, w] for an image `height` x `width` (c = height / h).
    fn new(warped: &Tensor, height: usize, width: usize, gamut: ColourGamut) -> Result<Self> {
        let (_, _, h, w) = warped.dims4()?;
        let src = warped
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        Ok(Self {
            src,
            c: height / h,
            h,
            w,
            width,
            gamut,
        })
    }

    /// Pixel `p` (row-major) of batch item `bi`, sRGB in [0, 1]: its a* and b* moved to the
    /// warped ones in proportion to the warped foreground, gated off toward white.
    fn apply(&self, bi: usize, p: usize, rgb: [f32; 3]) -> [f32; 3] {
        let (c, h, w) = (self.c, self.h, self.w);
        let (y, x) = (p / self.width, p % self.width);
        let at = |k: usize| {
            self.src[((bi * 3 + k) * c * c + (y % c) * c + x % c) * h * w + (y / c) * w + x / c]
        };
        let (wa, wb, wfg) = (at(0), at(1), at(2));
        let lab = rgb_to_lab(rgb);
        let gate = ((GATE_L - lab[0]) / GATE_RAMP).clamp(0.0, 1.0);
        lab_to_rgb(
            [
                lab[0],
                lab[1] + gate * (wa - wfg * lab[1]),
                lab[2] + gate * (wb - wfg * lab[2]),
            ],
            self.gamut,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn lab_round_trips_and_knows_its_primaries() {
        // skimage.color.rgb2lab of pure red: (53.24, 80.09, 67.20); of white: (100, -0.0025,
        // 0.0047), the matrix's rounding.
        let red = rgb_to_lab([1.0, 0.0, 0.0]);
        for (got, want) in red.iter().zip([53.24, 80.09, 67.20]) {
            assert!((got - want).abs() < 0.01, "{red:?}");
        }
        let white = rgb_to_lab([1.0, 1.0, 1.0]);
        assert!((white[0] - 100.0).abs() < 1e-3 && white[1].abs() < 0.01 && white[2].abs() < 0.01);
        for rgb in [[0.2, 0.5, 0.9], [0.9, 0.8, 0.1], [0.01, 0.02, 0.0]] {
            let back = lab_to_rgb(rgb_to_lab(rgb), ColourGamut::Clip);
            for (a, b) in back.iter().zip(rgb) {
                assert!((a - b).abs() < 1e-4, "{rgb:?} -> {back:?}");
            }
        }
    }

    /// A 2x2-pixel-cell grid of one cell: a pink output pixel takes the warped red's chroma at
    /// full foreground, half of it at half, and a white pixel keeps its white.
    #[test]
    fn chroma_moves_by_the_warped_foreground_and_white_stays() -> Result<()> {
        let dev = Device::Cpu;
        // In gamut at the pink's lightness, so that no clamping moves the expected chroma.
        let red = rgb_to_lab([0.7, 0.25, 0.25]);
        let pink = [0.9f32, 0.55, 0.55];
        // The exemplar: red with full foreground in pixels 0, 1, 2; white background in 3.
        let ex = [
            [0.7f32, 0.7, 0.7, 1.0],
            [0.25, 0.25, 0.25, 1.0],
            [0.25, 0.25, 0.25, 1.0],
        ];
        let ex = Tensor::new(&ex, &dev)?
            .affine(2.0, -1.0)?
            .reshape((1, 3, 2, 2))?;
        let fg = Tensor::new(&[1f32, 1.0, 1.0, 0.0], &dev)?.reshape((1, 1, 2, 2))?;
        let mut src = colour_source(&ex, &fg, 1, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(src.len(), 12);
        assert!((src[0] - red[1]).abs() < 1e-4 && src[3] == 0.0 && src[11] == 0.0);
        // Pixel 1 gets half the foreground (a soft warp mixing it with white).
        for k in 0..3 {
            src[k * 4 + 1] *= 0.5;
        }
        let warped = Tensor::from_vec(src, (1, 12, 1, 1), &dev)?;
        let out_rgb = [pink, pink, [1.0, 1.0, 1.0], pink];
        let img: Vec<f32> = (0..3)
            .flat_map(|k| out_rgb.iter().map(move |p| p[k] * 2.0 - 1.0))
            .collect();
        let img = Tensor::from_vec(img, (1, 3, 2, 2), &dev)?;
        let out = transfer_colour(&img, &warped, ColourGamut::Clip)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let lab_at = |p: usize| rgb_to_lab([0, 1, 2].map(|k| (out[k * 4 + p] + 1.0) / 2.0));
        let pink_lab = rgb_to_lab(pink);
        let full = lab_at(0);
        assert!((full[0] - pink_lab[0]).abs() < 0.5, "lightness kept");
        assert!((full[1] - red[1]).abs() < 1.0 && (full[2] - red[2]).abs() < 1.0);
        let half = lab_at(1);
        let mid = (pink_lab[1] + red[1]) / 2.0;
        assert!((half[1] - mid).abs() < 1.0, "{half:?} against a* {mid}");
        assert!(
            lab_at(2).iter().skip(1).all(|v| v.abs() < 0.01),
            "white stays white"
        );
        let none = lab_at(3);
        assert!(
            (none[1] - pink_lab[1]).abs() < 0.01,
            "no foreground warped: unchanged"
        );
        Ok(())
    }

    /// A light pixel given a saturated yellow: clamping loses red and the hue turns toward green
    /// (a* below 0); scaling keeps the hue angle, lowers the lightness and keeps nearly all the
    /// chroma. In gamut, both are the same round trip.
    #[test]
    fn scaling_keeps_the_hue_that_clipping_moves() {
        // Twemoji's face chroma at the lightness of a light UNet output: red above 1 in linear RGB.
        let yellow = [90.0f32, 5.0, 70.0];
        let hue = |lab: [f32; 3]| lab[2].atan2(lab[1]).to_degrees();
        let clipped = rgb_to_lab(lab_to_rgb(yellow, ColourGamut::Clip));
        let scaled = rgb_to_lab(lab_to_rgb(yellow, ColourGamut::Scale));
        assert!(
            clipped[1] < 0.0,
            "clipping turns it lemon-green: {clipped:?}"
        );
        assert!((hue(scaled) - hue(yellow)).abs() < 1.0, "{scaled:?}");
        assert!(scaled[0] < yellow[0] - 1.0, "darker: {scaled:?}");
        let chroma = |lab: [f32; 3]| lab[1].hypot(lab[2]);
        assert!(chroma(scaled) > 0.95 * chroma(yellow), "{scaled:?}");
        for rgb in [[0.2, 0.5, 0.9], [0.9, 0.8, 0.1], [1.0, 1.0, 1.0]] {
            let lab = rgb_to_lab(rgb);
            let (c, s) = (
                lab_to_rgb(lab, ColourGamut::Clip),
                lab_to_rgb(lab, ColourGamut::Scale),
            );
            assert!(
                c.iter().zip(s).all(|(a, b)| (a - b).abs() < 1e-5),
                "{rgb:?}"
            );
        }
        assert_eq!(ColourGamut::parse("scale"), Ok(ColourGamut::Scale));
        assert!(ColourGamut::parse("clamp")
            .unwrap_err()
            .contains("clip or scale"));
    }
}
