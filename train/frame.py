"""Framing a small drawing (model v1.14, `midms.frame_drawing`; not in the authors' code, so never
on for their checkpoints or parity sets).

The model trained on glyphs that fill their frame. A drawing a quarter of the canvas wide, or off in
a corner, is outside what it saw: the hand-drawn sketches drawn at 55 % of their size came out as
smears (silhouette IoU 0.67 against 0.90 at full size). So a drawing whose box is small is scaled up
about its box's centre until its longer side is `share` of the canvas, centred, translated, and the
output mapped back onto the canvas where the drawing lies; a drawing that nearly fills the canvas
(the scale would be under `MIN_SCALE`) is left as it is. Latents, masks and matchings are those of
the framed drawing; only images come back to the canvas.

The Rust sampler computes the same (`src/sampling/frame.rs`): the box, the scale and the nearest
sampling of the label in float64, so both frame a label to the same pixels; the image's return is
a mean of n x n bilinear samples per canvas pixel (n = ceil(scale)), white beyond the framed canvas.
"""
import math

import numpy as np
import torch

# A drawing is framed only when it grows by at least this much: smaller changes resample a drawing
# that already nearly fills the canvas for little gain (chosen on the hand-drawn set and its sketches
# drawn at 75 % and 55 % of their size, docs/model-history.md, model v1.14).
MIN_SCALE = 1.15


def drawing_frame(lines, share):
    """The frame of one drawing: `lines` bool [S, S] (the line pixels) -> (scale, cy, cx) with the
    box's centre in pixels (rows and columns as edges: a box of rows y0..y1-1 has centre (y0+y1)/2),
    or None (no lines, or the scale under MIN_SCALE)."""
    rows, cols = np.nonzero(np.asarray(lines))
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    size = lines.shape[-1]
    scale = share * size / max(y1 - y0, x1 - x0)
    if scale < MIN_SCALE:
        return None
    return scale, (y0 + y1) / 2, (x0 + x1) / 2


def _sources(centre, scale, size):
    """Canvas index sampled by each framed row (or column): floor(centre + (v + 1/2 - size/2) / scale)."""
    return np.floor(centre + (np.arange(size) + 0.5 - size / 2) / scale).astype(np.int64)


def _frame_plane(plane, frame):
    """One [S, S] plane framed by nearest sampling (its canvas pixel per framed pixel; 0 beyond)."""
    scale, cy, cx = frame
    size = plane.shape[-1]
    sy, sx = _sources(cy, scale, size), _sources(cx, scale, size)
    ok_y, ok_x = (sy >= 0) & (sy < size), (sx >= 0) & (sx < size)
    framed = np.zeros_like(plane)
    framed[np.ix_(ok_y, ok_x)] = plane[np.ix_(sy[ok_y], sx[ok_x])]
    return framed


def frame_labels(label, share):
    """`label` [B, 1, S, S] (1 = line) -> (the label with each small drawing framed, one frame or
    None per item). A framed pixel takes its nearest canvas pixel; beyond the canvas, no line."""
    frames, out = [], label.clone()
    host = label[:, 0].detach().cpu().numpy()
    for b, plane in enumerate(host):
        fr = drawing_frame(plane > 0.5, share)
        frames.append(fr)
        if fr is None:
            continue
        out[b, 0] = torch.from_numpy(_frame_plane(plane, fr)).to(label)
    return out, frames


def _taps(centre, scale, size, n):
    """For canvas rows (or columns) 0..size-1 and sub-samples 0..n-1: the two framed indices each
    bilinear sample reads (-1 or `size` beyond the framed canvas) and their weights, [size, n] each."""
    p = np.arange(size)[:, None] + (np.arange(n)[None, :] + 0.5) / n        # canvas position
    f = (p - centre) * scale + size / 2 - 0.5                               # framed pixel-centre index
    i0 = np.floor(f)
    w1 = f - i0
    i0 = i0.astype(np.int64)
    return np.clip(i0, -1, size), np.clip(i0 + 1, -1, size), 1 - w1, w1


def unframe_image(image, frame, outside=1.0):
    """One framed image [C, S, S] (a torch tensor) back onto the canvas: each canvas pixel the mean
    of n x n bilinear samples (n = ceil(scale)) of the framed image, `outside` (white) beyond it."""
    scale, cy, cx = frame
    c, size = image.shape[0], image.shape[-1]
    n = math.ceil(scale)
    img = np.pad(image.detach().cpu().double().numpy(), ((0, 0), (1, 1), (1, 1)), constant_values=outside)
    ya, yb, wya, wyb = _taps(cy, scale, size, n)
    xa, xb, wxa, wxb = _taps(cx, scale, size, n)
    out = np.zeros((c, size, size))
    for i in range(n):
        for j in range(n):
            for yi, wy in ((ya[:, i], wya[:, i]), (yb[:, i], wyb[:, i])):
                for xi, wx in ((xa[:, j], wxa[:, j]), (xb[:, j], wxb[:, j])):
                    out += img[:, yi + 1][:, :, xi + 1] * (wy[:, None] * wx[None, :])
    return torch.from_numpy(out / (n * n)).to(image.dtype).to(image.device)


def unframe(images, frames):
    """[B, C, S, S] images of framed drawings back onto their canvases (items without a frame as
    they are)."""
    if frames is None or all(f is None for f in frames):
        return images
    return torch.stack([im if f is None else unframe_image(im, f) for im, f in zip(images, frames)])


def checked_share(value, label_nc, key="frame_drawing"):
    """`midms.frame_drawing` (or `key`, `frame_exemplar`) from a config: absent or 0 = off; else in
    (0, 1], for a one-channel line label (a segmentation map has no drawing to frame)."""
    share = float(value or 0.0)
    if not (0 <= share <= 1 and np.isfinite(share)):
        raise ValueError(f"midms.{key} must be a share of the canvas in (0, 1] (or 0: off), not {value}")
    if share and label_nc != 1:
        raise ValueError(f"midms.{key} needs a one-channel line label, the model has {label_nc} channels")
    return share


# ---- the exemplar (model v1.15, `midms.frame_exemplar`) --------------------------------------------
# An exemplar whose glyph fills half its image does as much harm as a small drawing (the hand-drawn
# set's Twemoji exemplars shrunk to 55 %, centred on white: IoU 0.80 against 0.91, white holes and
# blotches inside the shape). The exemplar is only a source, so nothing comes back: its glyph is
# scaled up to the share before anything is made of it (latent, features, foreground, colours).

def _bilinear_taps(centre, scale, size):
    """For framed rows (or columns) 0..size-1: the two canvas indices each reads (-1 or `size` beyond
    the canvas) and their weights. Framed pixel v's centre lies at canvas position
    centre + (v + 1/2 - size/2) / scale, i.e. at pixel-centre index that minus 1/2."""
    f = centre + (np.arange(size) + 0.5 - size / 2) / scale - 0.5
    i0 = np.floor(f)
    w1 = f - i0
    i0 = i0.astype(np.int64)
    return np.clip(i0, -1, size), np.clip(i0 + 1, -1, size), 1 - w1, w1


def frame_image(image, frame, outside=1.0):
    """One exemplar [C, S, S] (a torch tensor in [-1, 1]) framed: each framed pixel a bilinear sample
    of the canvas (float64, as the Rust sampler), `outside` (white) beyond it. No mean over several
    samples as `unframe_image` takes: framing only ever enlarges (scale >= MIN_SCALE)."""
    scale, cy, cx = frame
    size = image.shape[-1]
    img = np.pad(image.detach().cpu().double().numpy(), ((0, 0), (1, 1), (1, 1)), constant_values=outside)
    ya, yb, wya, wyb = _bilinear_taps(cy, scale, size)
    xa, xb, wxa, wxb = _bilinear_taps(cx, scale, size)
    out = np.zeros((image.shape[0], size, size))
    for yi, wy in ((ya, wya), (yb, wyb)):
        for xi, wx in ((xa, wxa), (xb, wxb)):
            out += img[:, yi + 1][:, :, xi + 1] * (wy[:, None] * wx[None, :])
    return torch.from_numpy(out).to(image.dtype).to(image.device)


def frame_exemplars(ref_img, ref_label, foreground, share):
    """[B, 3, S, S] exemplars, their [B, 1, S, S] line labels and `ops.exemplar_foreground` of them ->
    (exemplars, labels, one frame or None per item): a glyph whose box (of its foreground) is small
    framed as `frame_labels` frames a drawing, the image by bilinear samples, the label by nearest."""
    frames = [drawing_frame(fg[0].detach().cpu().numpy() > 0.5, share) for fg in foreground]
    if all(f is None for f in frames):
        return ref_img, ref_label, frames
    imgs, labels = ref_img.clone(), ref_label.clone()
    host = ref_label[:, 0].detach().cpu().numpy()
    for b, fr in enumerate(frames):
        if fr is None:
            continue
        imgs[b] = frame_image(ref_img[b], fr)
        labels[b, 0] = torch.from_numpy(_frame_plane(host[b], fr)).to(ref_label)
    return imgs, labels, frames
