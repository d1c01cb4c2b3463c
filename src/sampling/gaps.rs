//! A drawing's small gaps closed: a model's `midms.close_gaps` (model v1.17; our own models, not
//! in the authors' code, so never on for their checkpoints).
//!
//! The inside of a drawing is found by a flood fill from the border ([`fill_plane`]): an outline
//! the pen did not quite close leaks, its inside counts as outside, and region matching leaves it
//! white (the hand-drawn set with one 3-8 px gap cut into each outline, seed 0: silhouette IoU
//! 0.44, a*b* colour 0.58, against 0.91 and 0.83 closed). So a gap up to `2 * radius` px in an
//! outline is closed before anything is made of the drawing, as if it had been drawn closed.
//!
//! The trainer computes the same (`train.ops.close_plane`): exact Euclidean discs (imageproc's
//! L2 morphology is scipy's `distance_transform_edt <= r`, both on integer squared distances),
//! 4-connected fills and parts, an 8-neighbourhood for the bridge. On the host: one 128x128
//! drawing, distance transforms and fills candle has no op for.
use std::collections::HashSet;

use candle_core::{Result, Tensor};
use image::{GrayImage, Luma};
use imageproc::distance_transform::Norm;
use imageproc::morphology::{dilate, erode};
use imageproc::region_labelling::{connected_components, Connectivity};

use super::frame::host_values;
use crate::model::ops::fill_plane;

/// The largest `midms.close_gaps` radius (or `close_wide_gaps` value) a config may set (the
/// trainer's bound too): beyond it whole parts of a drawing would be taken for gaps.
pub const MAX_CLOSE_GAPS: u8 = 16;

/// One closing pass: gaps up to `2 * radius` px, where they enclose a part deeper than `depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapClosing {
    pub radius: u8,
    pub depth: u8,
}

impl GapClosing {
    /// `midms.close_gaps`: gaps up to twice `radius`, wherever they enclose a part deeper than it.
    pub fn small(radius: u8) -> Self {
        Self {
            radius,
            depth: radius,
        }
    }
}

fn to_image(mask: &[bool], h: usize, w: usize) -> GrayImage {
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        Luma([if mask[y as usize * w + x as usize] {
            255
        } else {
            0
        }])
    })
}

fn to_mask(image: &GrayImage) -> Vec<bool> {
    image.pixels().map(|p| p[0] > 0).collect()
}

/// One drawing's line pixels (`h` x `w`, row-major, true = line) with its gaps up to
/// `2 * radius` px closed, or `None` where no gap encloses a part deeper than `depth` (the
/// drawing stays as drawn).
///
/// The lines dilated by a disc of `radius` bridge a gap between stroke ends; the region that
/// closed outline encloses is eroded back by the same disc (beyond the image counts as outside),
/// which returns it to the lines' outer edge. Closing the lines themselves would bridge nothing:
/// a disc beside a thin stroke's gap misses both ends. Of what the region adds to the drawing's
/// own fill, a part counts only if it is deep (a pixel farther than `depth` from its edge): a
/// leaked inside is; the notches and concave corners the closing also rounds off (a cactus's arm
/// pits, a pine's branch tips) are not, and stay open. The region's rim next to a part that counts
/// is added to the lines.
pub fn close_plane(lines: &[bool], h: usize, w: usize, pass: GapClosing) -> Option<Vec<bool>> {
    let GapClosing { radius, depth } = pass;
    if radius == 0 || !lines.contains(&true) {
        return None;
    }
    let pad = usize::from(radius) + 1;
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let at = |y: usize, x: usize| y * pw + x;
    let mut padded = vec![false; ph * pw];
    for y in 0..h {
        for x in 0..w {
            padded[at(y + pad, x + pad)] = lines[y * w + x];
        }
    }
    let grown = to_mask(&dilate(&to_image(&padded, ph, pw), Norm::L2, radius));
    let enclosed = to_image(&fill_plane(&grown, ph, pw), ph, pw);
    let kept = erode(&enclosed, Norm::L2, radius);
    let region: Vec<bool> = (0..h * w)
        .map(|i| lines[i] || kept.get_pixel((i % w + pad) as u32, (i / w + pad) as u32)[0] > 0)
        .collect();
    let own = fill_plane(lines, h, w);
    let added: Vec<bool> = region.iter().zip(&own).map(|(r, o)| *r && !*o).collect();
    let added_image = to_image(&added, h, w);
    let parts = connected_components(&added_image, Connectivity::Four, Luma([0u8]));
    let core = erode(&added_image, Norm::L2, depth);
    let deep_parts: HashSet<u32> = parts
        .pixels()
        .zip(core.pixels())
        .filter(|(_, c)| c[0] > 0)
        .map(|(p, _)| p[0])
        .collect();
    if deep_parts.is_empty() {
        return None;
    }
    let deep: Vec<bool> = parts.pixels().map(|p| deep_parts.contains(&p[0])).collect();
    let inside = |y: isize, x: isize, mask: &[bool]| {
        (0..h as isize).contains(&y)
            && (0..w as isize).contains(&x)
            && mask[y as usize * w + x as usize]
    };
    let closed: Vec<bool> = (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as isize, (i % w) as isize);
            let rim = region[i]
                && [(-1, 0), (1, 0), (0, -1), (0, 1)]
                    .iter()
                    .any(|(dy, dx)| !inside(y + dy, x + dx, &region));
            let near_deep = || (-1..=1).any(|dy| (-1..=1).any(|dx| inside(y + dy, x + dx, &deep)));
            lines[i] || (rim && near_deep())
        })
        .collect();
    Some(closed)
}

/// [`close_plane`] by each of `passes` in turn, or `None` where none closed anything.
pub fn close_passes(
    lines: &[bool],
    h: usize,
    w: usize,
    passes: &[GapClosing],
) -> Option<Vec<bool>> {
    let mut closed: Option<Vec<bool>> = None;
    for pass in passes {
        if let Some(more) = close_plane(closed.as_deref().unwrap_or(lines), h, w, *pass) {
            closed = Some(more);
        }
    }
    closed
}

/// `condition` [B, 1, H, W] (1 = line) with each drawing's gaps closed by each of `passes` in
/// turn ([`close_plane`]), and for each item whether anything was closed.
pub fn close_gaps(condition: &Tensor, passes: &[GapClosing]) -> Result<(Tensor, Vec<bool>)> {
    let (b, c, h, w) = condition.dims4()?;
    if c != 1 {
        candle_core::bail!("closing a drawing's gaps needs a one-channel line label, got {c}");
    }
    let host = host_values(condition)?;
    let mut closed_any = Vec::with_capacity(b);
    let mut out = Vec::with_capacity(host.len());
    for plane in host.chunks(h * w) {
        let lines: Vec<bool> = plane.iter().map(|v| *v > 0.5).collect();
        let closed = close_passes(&lines, h, w, passes);
        match &closed {
            Some(lines) => out.extend(lines.iter().map(|l| f32::from(u8::from(*l)))),
            None => out.extend_from_slice(plane),
        }
        closed_any.push(closed.is_some());
    }
    if !closed_any.contains(&true) {
        return Ok((condition.clone(), closed_any));
    }
    let closed = Tensor::from_vec(out, (b, c, h, w), condition.device())?;
    Ok((closed.to_dtype(condition.dtype())?, closed_any))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` of text ('#' = line) as a mask and its size.
    fn mask(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let m = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (m, rows.len(), rows[0].len())
    }

    fn outline(gap: usize) -> Vec<String> {
        // A 20 x 20 square outline, 1 px wide, in a 28 x 28 canvas, with `gap` pixels of its
        // right side missing in the middle.
        (0..28)
            .map(|y| {
                (0..28)
                    .map(|x| {
                        let on_square = (4..24).contains(&y)
                            && (4..24).contains(&x)
                            && (y == 4 || y == 23 || x == 4 || x == 23);
                        let in_gap = x == 23 && (14 - gap / 2..14 - gap / 2 + gap).contains(&y);
                        if on_square && !in_gap {
                            '#'
                        } else {
                            '.'
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// A gap up to 2 * radius px is closed and the square's inside found; a wider one is not.
    #[test]
    fn a_gap_up_to_twice_the_radius_is_closed() {
        for (gap, radius, closes) in [(4, 2, true), (6, 3, true), (7, 3, false), (5, 2, false)] {
            let rows = outline(gap);
            let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
            let (lines, h, w) = mask(&rows);
            let inside = |m: &[bool]| fill_plane(m, h, w).iter().filter(|v| **v).count();
            assert!(inside(&lines) < 100, "the gap leaks");
            let closed = close_plane(&lines, h, w, GapClosing::small(radius));
            assert_eq!(closed.is_some(), closes, "gap {gap}, radius {radius}");
            if let Some(closed) = closed {
                // The whole square but the bridge's dent (at most `radius` px deep into the gap).
                let filled = inside(&closed);
                let dent = 2 * usize::from(radius).pow(2);
                assert!(
                    (400 - dent..=400).contains(&filled),
                    "{filled}: gap {gap}, radius {radius}"
                );
                // Only pixels in the gap's neighbourhood are added.
                for (i, (c, l)) in closed.iter().zip(&lines).enumerate() {
                    if *c && !*l {
                        let (y, x) = (i / w, i % w);
                        let r = usize::from(radius);
                        assert!(
                            (23 - r..=23).contains(&x) && (9..=19).contains(&y),
                            "({y}, {x})"
                        );
                    }
                }
            }
        }
    }

    /// A closed drawing, an open stroke and a notch narrower than the disc are left as drawn.
    #[test]
    fn closed_drawings_open_strokes_and_narrow_notches_stay_as_drawn() {
        let closed_square = outline(0);
        let (lines, h, w) = mask(&closed_square.iter().map(String::as_str).collect::<Vec<_>>());
        let small = GapClosing::small(3);
        assert_eq!(close_plane(&lines, h, w, small), None);
        // A U whose arms are 4 px apart: a notch, not a leaked inside.
        let (u, h, w) = mask(&[
            "............",
            "..#....#....",
            "..#....#....",
            "..#....#....",
            "..#....#....",
            "..#....#....",
            "..######....",
            "............",
        ]);
        assert_eq!(close_plane(&u, h, w, small), None);
        let (arc, h, w) = mask(&["........", ".##.....", "...##...", ".....##.", "........"]);
        assert_eq!(close_plane(&arc, h, w, small), None);
        assert_eq!(close_plane(&[false; 64], 8, 8, small), None);
    }

    /// The wide pass (`midms.close_wide_gaps` [5, 8]): a 10 px gap in a large square's outline is
    /// closed; a U whose arms are 9 px apart (its opening bridged, but the part it would enclose
    /// only 4 px deep) and the small pass's 10 px gap are not.
    #[test]
    fn a_wide_gap_is_closed_only_around_a_large_region() {
        let wide = GapClosing {
            radius: 5,
            depth: 8,
        };
        let n = 40;
        let mut square = vec![false; n * n];
        for i in 4..36 {
            for (y, x) in [(4, i), (35, i), (i, 4), (i, 35)] {
                square[y * n + x] = true;
            }
        }
        for y in 15..25 {
            square[y * n + 35] = false;
        }
        let inside = |m: &[bool]| fill_plane(m, n, n).iter().filter(|v| **v).count();
        assert!(inside(&square) < 200, "the gap leaks");
        assert_eq!(close_plane(&square, n, n, GapClosing::small(3)), None);
        let closed = close_plane(&square, n, n, wide).expect("the wide gap is closed");
        assert!(inside(&closed) > 32 * 32 - 2 * 25, "{}", inside(&closed));
        let passes = [GapClosing::small(3), wide];
        assert_eq!(close_passes(&square, n, n, &passes), Some(closed));
        let mut u = vec![false; n * n];
        for y in 4..36 {
            u[y * n + 10] = true;
            u[y * n + 20] = true;
        }
        for x in 10..=20 {
            u[35 * n + x] = true;
        }
        assert_eq!(close_passes(&u, n, n, &passes), None);
    }

    #[test]
    fn the_label_keeps_items_without_gaps_as_they_are() -> Result<()> {
        let gapped = outline(4);
        let (a, h, w) = mask(&gapped.iter().map(String::as_str).collect::<Vec<_>>());
        let whole = outline(0);
        let (b, _, _) = mask(&whole.iter().map(String::as_str).collect::<Vec<_>>());
        let values: Vec<f32> = a
            .iter()
            .chain(&b)
            .map(|v| f32::from(u8::from(*v)))
            .collect();
        let label = Tensor::from_vec(values.clone(), (2, 1, h, w), &candle_core::Device::Cpu)?;
        let (closed, flags) = close_gaps(&label, &[GapClosing::small(2)])?;
        assert_eq!(flags, vec![true, false]);
        let closed = closed.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(&closed[h * w..], &values[h * w..]);
        assert!(closed[..h * w].iter().sum::<f32>() > values[..h * w].iter().sum::<f32>());
        Ok(())
    }
}
