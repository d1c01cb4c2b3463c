"""Matching operations of MIDMs: correlation, soft warp, flows, forward-backward consistency mask."""
import functools

import numpy as np
import torch
import torch.nn.functional as F

TEMPERATURE = 0.005


def to_device(x, device):
    """`x`, made on the CPU, on `device` without waiting for it. A plain `.to("cuda")` of pageable
    memory synchronises the stream: the host then waits for every queued kernel before it queues the
    next step's, and a small network leaves the GPU idle meanwhile (the UNet stage kept an H200 about
    half busy, docs/gpu-runs/2026-12-04-h200). Pinned memory copies asynchronously; the caching host
    allocator keeps the block until the copy is done."""
    device = torch.device(device)
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def full_precision(fn):
    """Runs `fn` in float32 with autocast off. Training under bf16 autocast (`--amp bf16`) keeps
    correlations, softmaxes, flows, the cycle check, the contextual loss and VQ distances here: a
    temperature of 0.005 turns bf16's 3 significant digits of a cosine into a different match. In a
    float32 run it changes nothing (`.float()` of a float32 tensor is the tensor itself)."""
    @functools.wraps(fn)
    def wrapped(*args, **kw):
        dev = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device_type=dev, enabled=False):
            args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            return fn(*args, **kw)
    return wrapped
LABEL_DOWNSAMPLE = ("nearest", "max")


def downsample_label(label, hw, mode="nearest"):
    """The condition label brought to the latent grid. "nearest" is the authors' (it keeps one pixel
    of every f x f block, so a 1-2 px stroke breaks into dots and a diagonal into a dotted line);
    "max" (our models' `midms.label_downsample: max`) max-pools f x f blocks, so every stroke that
    crosses a block marks it. The Rust sampler implements both (`label_downsample`)."""
    if mode == "nearest":
        return F.interpolate(label, size=hw, mode="nearest")
    if mode == "max":
        h, w = label.shape[-2:]
        if h % hw[0] == 0 and w % hw[1] == 0:
            return F.max_pool2d(label, kernel_size=(h // hw[0], w // hw[1]))
        return F.adaptive_max_pool2d(label, hw)
    raise ValueError(f"label_downsample: {mode!r} (expected one of {LABEL_DOWNSAMPLE})")


def fill_label(label):
    """[B, 1, H, W] line label (1 = line) -> the region the lines enclose, lines included, in {0, 1}:
    `scipy.ndimage.binary_fill_holes` (background 4-connected to the border stays 0). The Rust
    sampler computes the same (`model::ops::fill_label`)."""
    from scipy.ndimage import binary_fill_holes

    lines = (label[:, 0] > 0.5).cpu().numpy()
    filled = np.stack([binary_fill_holes(m) for m in lines]).astype(np.float32)
    return torch.from_numpy(filled)[:, None].to(label.device, label.dtype)


def close_plane(lines, radius, depth=None):
    """One drawing's line pixels (bool [H, W]) with its gaps up to 2 * `radius` px closed (model v1.17,
    `midms.close_gaps`; model v1.18's wider pass, `midms.close_wide_gaps`, with its own `depth`), or the
    lines as they are where no gap encloses a part deeper than `depth` (default: `radius`).

    Dilating the lines by a disc of `radius` px bridges a gap between stroke ends up to 2 * radius
    missing pixels; the region that closed outline encloses (lines and inside, `binary_fill_holes`) is
    eroded back by the same disc (beyond the image counts as outside), which returns it to the lines'
    outer edge. (Closing the lines themselves bridges nothing: a disc beside a thin stroke's gap misses
    both ends.) Of what that region adds to the drawing's own fill, a part counts only if it is deep,
    some pixel farther than `depth` from its edge: a shape's leaked inside is, while the notches and
    concave corners the closing also rounds off (a cactus's arm pits, a pine's branch tips) are not,
    and stay open. The region's rim (its pixels with a 4-neighbour outside it) next to a part that
    counts is added to the lines: the bridge. Without such a part the drawing is returned unchanged,
    so a closed drawing is translated as before. Distances are exact (`distance_transform_edt`), as
    imageproc's L2 morphology in the Rust sampler (`sampling::gaps`)."""
    from scipy.ndimage import binary_dilation, binary_fill_holes, distance_transform_edt, label

    if radius <= 0 or not lines.any():
        return lines
    pad = radius + 1
    grown = distance_transform_edt(~np.pad(lines, pad)) <= radius
    region = (distance_transform_edt(binary_fill_holes(grown)) > radius)[pad:-pad, pad:-pad] | lines
    parts, _ = label(region & ~binary_fill_holes(lines))
    deep = np.isin(parts, np.unique(parts[distance_transform_edt(parts > 0) > (depth or radius)]))
    if not deep.any():
        return lines
    around = np.pad(region, 1)
    rim = region & ~(around[:-2, 1:-1] & around[2:, 1:-1] & around[1:-1, :-2] & around[1:-1, 2:])
    return lines | (rim & binary_dilation(deep, np.ones((3, 3), bool)))


def close_gaps(label, radius, depth=None):
    """[B, 1, H, W] line label (1 = line) -> the label with each drawing's small gaps closed
    (`close_plane`): an outline the pen did not quite close counts as closed, so its inside is found
    (`fill_label`) and kept as the drawing's, not taken for outside and left white."""
    lines = (label[:, 0] > 0.5).cpu().numpy()
    closed = np.stack([close_plane(m, radius, depth) for m in lines]).astype(np.float32)
    return torch.from_numpy(closed)[:, None].to(label.device, label.dtype)


def seg_input(label, hw, mode="nearest", fill=False, filled=None):
    """(seg_enc's input, the label the `layer` trunk takes) on the latent grid. `fill` (our models'
    `midms.label_fill: true`, not in the authors' code) adds a channel to seg_enc's input: the share
    of each latent cell inside the drawing (`fill_label`, area-averaged). Convolutions over a
    32x32 grid see a few cells around them; without it a cell in the middle of a large closed
    shape looks like one outside it, and the warp leaves the inside white. `filled`: `fill_label(label)`
    made beforehand (train.pairs makes it with the batch, in its worker processes: the fill runs on
    the host, and here it would cost a device round trip every training step)."""
    line = downsample_label(label, hw, mode)
    if not fill:
        return line, line
    filled = fill_label(label) if filled is None else filled.to(line.dtype)
    return torch.cat([line, F.adaptive_avg_pool2d(filled, hw)], 1), line


# Region matching (our models' `midms.region_matching: true`; not in the authors' code). The
# UNet is unconditional: the output takes its shape from the warped exemplar, so a target cell
# outside the drawing that matches the exemplar's glyph paints a patch there, and one inside that
# matches the exemplar's white background leaves a hole. With it, a cell inside the drawing matches
# only exemplar cells inside the exemplar's shape, a cell outside only cells outside it. The Rust
# sampler implements the same (`sampling::regions`).
REGION_MIN_SHARE = 0.05  # each side of the exemplar needs this share of cells, else no restriction
WHITE = 235  # a pixel (0..255) is non-white when any channel is below this (the evaluations' rule too)


def exemplar_foreground(ref_img):
    """[B, 3, H, W] exemplar in [-1, 1] -> [B, 1, H, W] in {0, 1}: its non-white pixels (any channel
    below 235 of 255, `train.evaluate.foreground`'s rule) plus the areas they enclose (`fill_label`),
    so that a white eye or a white belly inside an outline counts as the shape's."""
    # Half a grey level below WHITE: the same pixels as an integer test, clear of float rounding.
    nonwhite = ((ref_img.float() + 1) * 127.5 < WHITE - 0.5).any(1, keepdim=True).float()
    return fill_label(nonwhite)


# A plain coloured ground (model v1.16, `midms.clear_exemplar_ground`; not in the authors' code). An
# icon on a coloured square or an object shot on a plain backdrop has no white around it, so it counts
# as a photo: the drawing's inside matches the ground as well as the glyph and takes its colour (the
# hand-drawn set's Twemoji exemplars on plain colours: a*b* colour 0.53 against 0.83 on white). Where
# the border is one plain colour, the ground (the pixels of about that colour 4-connected to the
# border) is made white before anything else is made of the exemplar. The Rust sampler computes the
# same (`sampling::regions::clear_plain_ground`), in f32 from the same (x + 1) * 127.5 values.
GROUND_TOLERANCE = 16  # grey levels per channel from the ground colour
GROUND_BORDER_SHARE = 0.6  # this share of the border's pixels must be of the ground colour (a glyph may touch it)


def plain_ground(levels):
    """[3, H, W] float32 grey levels (0..255) -> bool [H, W], the plain non-white ground 4-connected to
    the border, or None (a white ground, a border of many colours: a photo, or corners off the ground
    colour: a tile glyph)."""
    _, h, w = levels.shape
    border = np.zeros((h, w), bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    edge = levels[:, border]                                   # [3, n], row-major order
    ground = np.sort(edge, axis=1)[:, edge.shape[1] // 2]       # each channel's (upper) median
    if (ground >= WHITE - 0.5).all():
        return None
    near = (np.abs(levels - ground[:, None, None]) <= GROUND_TOLERANCE).all(0)
    # A ground reaches the image's four corners; a tile glyph (Twemoji's buttons, a white sign on a
    # coloured rounded square) has corners of its own, white, and is left a glyph.
    if near[border].mean() < GROUND_BORDER_SHARE or not near[[0, 0, -1, -1], [0, -1, 0, -1]].all():
        return None
    from scipy.ndimage import label

    parts, _ = label(near)                                     # 4-connected
    touching = np.unique(parts[border & near])
    return np.isin(parts, touching)


def clear_plain_ground(ref_img):
    """[B, 3, H, W] exemplars in [-1, 1] -> (the exemplars with each plain coloured ground made white,
    one bool per item: whether it had one)."""
    levels = ((ref_img.detach().float() + 1) * 127.5).cpu().numpy()
    grounds = [plain_ground(a) for a in levels]
    if all(g is None for g in grounds):
        return ref_img, [False] * len(grounds)
    out = ref_img.clone()
    for b, g in enumerate(grounds):
        if g is not None:
            out[b][:, torch.from_numpy(g).to(out.device)] = 1.0
    return out, [g is not None for g in grounds]


def region_cells(inside, hw):
    """[B, 1, H, W] in {0, 1} -> [B, 1, h, w]: 1 where more than half of a latent cell is inside."""
    return (F.adaptive_avg_pool2d(inside.float(), hw) > 0.5).float()


# Two refinements of region matching (our models' `midms.region_open_strokes` and
# `midms.region_keep_outside`; model v1.5). A stroke that encloses nothing (a sun's ray, a balloon's
# string, a handle) covers less than half of any latent cell, so region matching counted it as
# outside and the output dropped it. And outside the drawn shape every exemplar cell is the same
# white, so the cycle check finds no confident match there and the mask kept the UNet's estimate,
# which paints pale blobs around the drawing. Model v1.4's networks on the hand-drawn set, seeds 0
# and 1: IoU / chamfer 0.846 / 2.01 -> 0.871 / 1.72 with both.
OPEN_STROKE_GAP = 3  # px: a line pixel this close (Chebyshev) to an enclosed area belongs to an outline


def open_stroke_pixels(label, filled):
    """[B, 1, H, W] line label (1 = line) and its `fill_label` -> [B, 1, H, W] in {0, 1}: the line
    pixels of strokes that enclose nothing, i.e. farther than OPEN_STROKE_GAP px from every enclosed
    non-line pixel. Torch ops only (a GPU training step makes them without a host round trip)."""
    lines = (label > 0.5).to(filled.dtype)
    enclosed = filled * (1 - lines)
    k = 2 * OPEN_STROKE_GAP + 1
    near = F.max_pool2d(enclosed, k, stride=1, padding=OPEN_STROKE_GAP)
    return lines * (1 - near)


def target_cells(label, hw, filled=None, open_strokes=False):
    """The drawn shape on the latent grid `hw` ([B, 1, h, w] in {0, 1}): cells more than half inside
    the filled drawing (`fill_label`, or `filled` made beforehand), and with `open_strokes` also
    every cell an open stroke crosses (`open_stroke_pixels`)."""
    filled = fill_label(label) if filled is None else filled.to(label.dtype)
    cells = region_cells(filled, hw)
    if open_strokes:
        crossed = (F.adaptive_max_pool2d(open_stroke_pixels(label, filled), hw) > 0).to(cells.dtype)
        cells = torch.maximum(cells, crossed)
    return cells


def keep_outside(mask, trg, ref, background=None):
    """The confidence mask [B, 1, h, w] with every target cell outside the drawn shape set to 1 (the
    re-warp kept), where region matching decides the outside: an exemplar with both sides (its
    restriction applies), or one without an outside when the model has a `background` latent
    (`fill_outside`). Elsewhere the mask is left as it is."""
    both, no_outside = exemplar_sides(ref)
    decided = both | no_outside if background is not None else both
    return torch.maximum(mask, (1 - trg.to(mask.dtype)) * decided.to(mask.dtype))


def exemplar_sides(ref):
    """[B, 1, h, w] exemplar region cells -> (both, no_outside), bool [B, 1, 1, 1]: the exemplar has
    at least REGION_MIN_SHARE of its cells on each side of its shape (its matches are restricted),
    or less than that outside it (a photo: `fill_outside`'s case). The Rust sampler's
    `regions::sides`."""
    share = ref.float().flatten(1).mean(1).reshape(-1, 1, 1, 1)
    return (share >= REGION_MIN_SHARE) & (share <= 1 - REGION_MIN_SHARE), share > 1 - REGION_MIN_SHARE


def layout_positions(cells):
    """[B, 1, h, w] region cells -> [B, h * w, 2] float32: each cell centre's (x, y) relative to the
    bounding box of the item's inside cells, (0, 0) at its top-left corner and (1, 1) at its
    bottom-right (an item with no inside cell: relative to the whole grid). Torch ops only, no host
    round trip. The Rust sampler's `regions::layout_positions`."""
    b, _, h, w = cells.shape
    inside = cells.reshape(b, h, w) > 0.5

    def span(occupied, n):
        # first and one past the last occupied index, [B] each; (0, n) where none is
        idx = torch.arange(n, device=cells.device)
        lo = torch.where(occupied, idx, n).amin(1)
        hi = torch.where(occupied, idx + 1, 0).amax(1)
        empty = ~occupied.any(1)
        return torch.where(empty, 0, lo).float(), torch.where(empty, n, hi).float()

    y0, y1 = span(inside.any(2), h)
    x0, x1 = span(inside.any(1), w)
    ys = torch.arange(h, device=cells.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=cells.device, dtype=torch.float32) + 0.5
    py = (ys[None, :] - y0[:, None]) / (y1 - y0)[:, None]
    px = (xs[None, :] - x0[:, None]) / (x1 - x0)[:, None]
    return torch.stack([px[:, None, :].expand(b, h, w), py[:, :, None].expand(b, h, w)], -1).reshape(b, h * w, 2)


def layout_penalty(trg, ref, weight):
    """Region matching's layout prior (our models' `midms.layout_prior` and `colour_layout_prior`,
    model v1.13): `weight` times
    the squared distance between a target cell's and an exemplar cell's positions, each relative to
    its own shape's bounding box (`layout_positions`): [B, h_t * w_t, h_r * w_r] float32. Inside the
    drawn shape a cell then matches the exemplar's part at the same place within the shape (a
    house's roof its roof, a tree's trunk its trunk) unless the features clearly prefer another."""
    p, q = layout_positions(trg), layout_positions(ref)
    dx = p[:, :, None, 0] - q[:, None, :, 0]
    dy = p[:, :, None, 1] - q[:, None, :, 1]
    return weight * (dx * dx + dy * dy)


@full_precision
def restrict_to_regions(corr, trg, ref, layout=0.0):
    """corr [B, h_t, w_t, h_r, w_r]; trg [B, 1, h_t, w_t], ref [B, 1, h_r, w_r] region cells.
    Subtracts 1 where a target cell and a reference cell lie in different regions: correlations
    are in [0, 1], so a penalised one (now <= 0) is at or below every allowed one, and at the
    temperature's 1/0.005 its weight drops by exp(-200) (below 1e-37 next to any allowed
    correlation above 0.45). Only for an exemplar with at least REGION_MIN_SHARE of its cells on
    each side (a photo without a white background is left as it is: `fill_outside`). With
    `layout` > 0 (`midms.layout_prior`, `colour_layout_prior`) a pair of cells both inside subtracts
    `layout_penalty` instead."""
    b, ht, wt, hr, wr = corr.shape
    t = trg.reshape(b, ht * wt, 1).float()
    r = ref.reshape(b, 1, hr * wr).float()
    applies = exemplar_sides(ref)[0].reshape(b, 1, 1)
    other = t * (1 - r) + (1 - t) * r
    if layout:
        other = torch.where(t * r > 0, layout_penalty(trg, ref, layout), other)
    penalty = torch.where(applies, other, torch.zeros_like(other))
    return (corr.reshape(b, ht * wt, hr * wr) - penalty).reshape(b, ht, wt, hr, wr)


def fill_outside(warped, trg, ref, background):
    """Region matching's other half, for an exemplar that has no outside (a photo: less than
    REGION_MIN_SHARE of its cells outside its shape, so restrict_to_regions stands aside): target
    cells outside the drawn shape take `background` ([C], the latent of a white background,
    `midms.background_latent`) instead of a warp of the photo, so the output keeps the sketch's
    shape on a clean background in the photo's colours. warped [B, C, h, w]; trg, ref region cells."""
    outside = (1 - trg.float()) * exemplar_sides(ref)[1].float()
    bg = torch.as_tensor(background, dtype=warped.dtype, device=warped.device).reshape(1, -1, 1, 1)
    return torch.where(outside > 0, bg.expand_as(warped), warped)


@full_precision
def feature_normalize(f):
    """Subtract the channel mean, divide by the channel L2 norm (no epsilon, as the reference)."""
    f = f - f.mean(dim=1, keepdim=True)
    return f / torch.norm(f, 2, 1, keepdim=True)


@full_precision
def correlation(q, s):
    """[B, C, h, w] x [B, C, h, w] -> [B, h_t, w_t, h_r, w_r] cosine similarity, clamped at 0."""
    q = q / (torch.norm(q, 2, 1, keepdim=True) + 1e-5)
    s = s / (torch.norm(s, 2, 1, keepdim=True) + 1e-5)
    return torch.einsum("bcij,bckl->bijkl", q, s).clamp(min=0)


@full_precision
def soft_warp(src, corr, temp=TEMPERATURE):
    """Softmax over reference positions; src [B, C, h_r, w_r] -> [B, C, h_t, w_t]."""
    b, ht, wt, hr, wr = corr.shape
    p = torch.softmax(corr.reshape(b, ht * wt, hr * wr) / temp, dim=-1)
    c = src.shape[1]
    out = torch.bmm(p, src.reshape(b, c, hr * wr).transpose(1, 2))
    return out.transpose(1, 2).reshape(b, c, ht, wt)


def _grid(h, w, device):
    y = torch.linspace(-1, 1, h, device=device)
    x = torch.linspace(-1, 1, w, device=device)
    gy, gx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([gx, gy], dim=-1)  # [h, w, 2], (x, y)


@full_precision
def get_flow(corr, temp=TEMPERATURE):
    """Returns (map_trg, map_src, flow_trg, flow_src), each [B, h, w, 2] in (x, y) order."""
    b, h, w, hr, wr = corr.shape
    grid = _grid(h, w, corr.device)
    gflat = grid.reshape(-1, 2)
    pt = torch.softmax(corr.reshape(b, h, w, hr * wr) / temp, dim=-1)
    map_trg = pt @ gflat
    ps = torch.softmax(corr.reshape(b, h * w, hr, wr) / temp, dim=1)
    map_src = torch.einsum("bnkl,nc->bklc", ps, gflat)
    return map_trg, map_src, map_trg - grid, map_src - grid


@full_precision
def fbcheck(map_trg, map_src, flow_trg, flow_src):
    """Forward-backward errors (the reference samples flow_trg at map_trg, flow_src at map_src)."""
    ts = F.grid_sample(flow_trg.permute(0, 3, 1, 2), map_trg, mode="bilinear", padding_mode="zeros",
                       align_corners=True)
    st = F.grid_sample(flow_src.permute(0, 3, 1, 2), map_src, mode="bilinear", padding_mode="zeros",
                       align_corners=True)
    fb_ts = torch.sqrt(((ts + flow_trg.permute(0, 3, 1, 2)) ** 2).sum(1))
    fb_st = torch.sqrt(((st + flow_src.permute(0, 3, 1, 2)) ** 2).sum(1))
    return fb_ts, fb_st


@full_precision
def fb_mask(fb_ts, trace=None, prefix=None):
    """1 where >= 3 of the 4 pixels of each 2x2 block pass the forward-backward check."""
    raw = (fb_ts < 0.5).float().unsqueeze(1)
    pooled = F.avg_pool2d(raw, 2)
    m = (F.interpolate(pooled, scale_factor=2, mode="nearest") > 0.5).float()
    if trace is not None:
        trace[f"{prefix}.mask_raw"], trace[f"{prefix}.mask_pooled"] = raw, pooled
    return m
