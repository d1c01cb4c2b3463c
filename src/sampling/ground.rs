//! An exemplar's plain coloured ground made white: a model's `midms.clear_exemplar_ground` (model
//! v1.16; our own models, not in the authors' code, so never on for their checkpoints).
//!
//! An icon on a coloured square or an object shot on a plain backdrop has no white around it, so
//! region matching and colour transfer take it for a photo: the drawing's inside matches the
//! ground as well as the glyph and takes its colour (the hand-drawn set's Twemoji exemplars on
//! plain colours, seed 0: a*b* colour 0.62 against 0.84 on white). Where the border is mostly one
//! plain colour, the ground (the pixels of about that colour 4-connected to the border) is made
//! white before anything else is made of the exemplar.
//!
//! The trainer computes the same (`train.ops.clear_plain_ground`): grey levels (x + 1) * 127.5 in
//! f32, each channel's upper median over the border, the same tolerance and share, a 4-connected
//! flood. On the host: one 128x128 image, a flood fill candle has no op for.
use candle_core::{Result, Tensor};

/// A pixel within this many grey levels of the ground colour, in every channel, is ground.
pub const GROUND_TOLERANCE: f32 = 16.0;

/// At least this share of the border's pixels must be of the ground colour: a glyph may touch
/// the border (a face that fills its image), a photo's border has many colours.
pub const GROUND_BORDER_SHARE: f64 = 0.6;

/// A ground of this grey level or above in every channel is white already (the foreground rule's
/// 235, less half a level: clear of float rounding).
const WHITE_FROM: f32 = 234.5;

/// The plain non-white ground of one image (`levels`: 3 planes of `h` x `w` grey levels, 0..255),
/// 4-connected to the border, or `None` (a white ground, a border of many colours, or corners off
/// the ground colour: a tile glyph).
pub fn plain_ground(levels: &[f32], h: usize, w: usize) -> Option<Vec<bool>> {
    let n = h * w;
    let border: Vec<usize> = (0..n)
        .filter(|i| {
            let (y, x) = (i / w, i % w);
            y == 0 || y == h - 1 || x == 0 || x == w - 1
        })
        .collect();
    let ground: Vec<f32> = (0..3)
        .map(|c| {
            let mut v: Vec<f32> = border.iter().map(|i| levels[c * n + i]).collect();
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    if ground.iter().all(|g| *g >= WHITE_FROM) {
        return None;
    }
    let near: Vec<bool> = (0..n)
        .map(|i| (0..3).all(|c| (levels[c * n + i] - ground[c]).abs() <= GROUND_TOLERANCE))
        .collect();
    let on_border = border.iter().filter(|i| near[**i]).count();
    // A ground reaches the image's four corners; a tile glyph (Twemoji's buttons, a white sign on
    // a coloured rounded square) has corners of its own, white, and is left a glyph.
    let corners = [0, w - 1, (h - 1) * w, n - 1];
    if (on_border as f64 / border.len() as f64) < GROUND_BORDER_SHARE
        || !corners.iter().all(|i| near[*i])
    {
        return None;
    }
    // Flood from the border's ground pixels through 4-neighbours of the ground colour.
    let mut ground_mask = vec![false; n];
    let mut stack: Vec<usize> = border.into_iter().filter(|i| near[*i]).collect();
    for i in &stack {
        ground_mask[*i] = true;
    }
    while let Some(i) = stack.pop() {
        let (y, x) = (i / w, i % w);
        let neighbours = [
            (y > 0).then(|| i - w),
            (y + 1 < h).then(|| i + w),
            (x > 0).then(|| i - 1),
            (x + 1 < w).then(|| i + 1),
        ];
        for j in neighbours.into_iter().flatten() {
            if near[j] && !ground_mask[j] {
                ground_mask[j] = true;
                stack.push(j);
            }
        }
    }
    Some(ground_mask)
}

/// `exemplar` [B, 3, H, W] in [-1, 1] with each plain coloured ground made white (1), and one
/// flag per item: whether it had one.
pub fn clear_plain_ground(exemplar: &Tensor) -> Result<(Tensor, Vec<bool>)> {
    let (b, c, h, w) = exemplar.dims4()?;
    if c != 3 {
        candle_core::bail!("clearing an exemplar's ground needs 3 channels, got {c}");
    }
    let mut values = super::frame::host_values(exemplar)?;
    let mut cleared = Vec::with_capacity(b);
    for item in values.chunks_mut(3 * h * w) {
        let levels: Vec<f32> = item.iter().map(|v| (v + 1.0) * 127.5).collect();
        let ground = plain_ground(&levels, h, w);
        if let Some(mask) = &ground {
            for (i, _) in mask.iter().enumerate().filter(|(_, g)| **g) {
                for ch in 0..3 {
                    item[ch * h * w + i] = 1.0;
                }
            }
        }
        cleared.push(ground.is_some());
    }
    if !cleared.iter().any(|c| *c) {
        return Ok((exemplar.clone(), cleared));
    }
    let out = Tensor::from_vec(values, (b, 3, h, w), exemplar.device())?;
    Ok((out.to_dtype(exemplar.dtype())?, cleared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A 16x16 image in [-1, 1]: `ground` everywhere, a red 6x6 square at rows and columns 5..11,
    /// and, with `touching`, a red bar along the top row but for its corners.
    fn image(ground: [f32; 3], touching: bool) -> Tensor {
        let (h, w) = (16, 16);
        let mut v = vec![0f32; 3 * h * w];
        for y in 0..h {
            for x in 0..w {
                let bar = touching && y == 0 && (1..15).contains(&x);
                let glyph = (5..11).contains(&y) && (5..11).contains(&x) || bar;
                let rgb = if glyph { [220.0, 40.0, 40.0] } else { ground };
                for c in 0..3 {
                    v[c * h * w + y * w + x] = rgb[c] / 127.5 - 1.0;
                }
            }
        }
        Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
    }

    fn pixel(t: &Tensor, y: usize, x: usize) -> [f32; 3] {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        [0, 1, 2].map(|c| v[c * 256 + y * 16 + x])
    }

    #[test]
    fn a_plain_coloured_ground_is_made_white_and_the_glyph_kept() -> Result<()> {
        // A grey ground, and a glyph touching the border along its top row: still plain (46 of
        // the 60 border pixels, 0.77 >= 0.6, the corners among them).
        let (out, cleared) = clear_plain_ground(&image([200.0, 205.0, 190.0], true))?;
        assert_eq!(cleared, vec![true]);
        assert_eq!(pixel(&out, 2, 2), [1.0; 3]);
        assert_eq!(pixel(&out, 15, 15), [1.0; 3]);
        let red = [220.0f32, 40.0, 40.0].map(|v| v / 127.5 - 1.0);
        assert_eq!(pixel(&out, 7, 7), red);
        assert_eq!(pixel(&out, 0, 7), red);
        Ok(())
    }

    #[test]
    fn a_white_ground_or_a_busy_border_is_left_as_it_is() -> Result<()> {
        let white = image([255.0; 3], false);
        let (same, cleared) = clear_plain_ground(&white)?;
        assert_eq!(cleared, vec![false]);
        assert_eq!(pixel(&same, 2, 2), [1.0; 3]);
        // A border of many colours (a photo): a gradient over the whole image.
        let (h, w) = (16usize, 16usize);
        let v: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i % (h * w)) as f32 / (h * w) as f32) * 2.0 - 1.0)
            .collect();
        let photo = Tensor::from_vec(v.clone(), (1, 3, h, w), &Device::Cpu)?;
        let (same, cleared) = clear_plain_ground(&photo)?;
        assert_eq!(cleared, vec![false]);
        assert_eq!(same.flatten_all()?.to_vec1::<f32>()?, v);
        // A tile glyph: the grey square with white corners (a sign on a rounded tile).
        let mut tile = image([200.0, 205.0, 190.0], false)
            .flatten_all()?
            .to_vec1::<f32>()?;
        for c in 0..3 {
            for i in [0, 15, 240, 255] {
                tile[c * 256 + i] = 1.0;
            }
        }
        let tile = Tensor::from_vec(tile, (1, 3, h, w), &Device::Cpu)?;
        assert_eq!(clear_plain_ground(&tile)?.1, vec![false]);
        Ok(())
    }
}
