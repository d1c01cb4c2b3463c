"""Evaluation on the hand-drawn set (`assets/drawn`, made by `python -m train.drawn`):
`python -m train.drawn_eval [--weights weights] [--variants ...] [--seeds 0 1] [--json out.json] [--sheet out.png]`.

Inputs, as the CLI and the editor build them (`src/image/`):
- condition: the sketch PNG read as one grey channel (RGB as the `image` crate's luma,
  floor((2126 R + 7152 G + 722 B) / 10000); alpha ignored), resized to the model's side if it
  differs (a larger drawing: a model pixel is ink when any pixel of its block is), binarised at
  mid-grey and inverted when its mean grey is above 127 (a sketch drawn dark on light): the
  edge-map rule the CLI and the editor share;
- exemplar: the PNG as RGB in [-1, 1] (alpha on white); its label is its Canny edge map as
  `train.evaluate`, `train.demo` and `train.fixture` make it (`train.data.edge_map`: skimage Canny,
  sigma 1.0, thresholds 0.05 / 0.15, 3x3 dilation). The Rust CLI computes the same label with
  imageproc, whose Canny blurs with sigma 1.4.

Metrics, per pair and as means (outputs at the model's side, 128 for the shipped model):
- silhouette IoU: the sketch's filled region against the output's non-white pixels (any channel
  below 235 on 0..255, `train.evaluate.foreground`, the rule of its shape IoU). The filled region is
  the sketch's line pixels (condition > 0.5) plus the areas they enclose
  (`scipy.ndimage.binary_fill_holes`): a closed outline counts with its inside, an open stroke
  (a smile, a string, rays) only with its own pixels. Higher is better.
- line chamfer: mean distance in pixels from the sketch's line pixels to the nearest Canny edge of
  the output (skimage Canny of the output's luminance, sigma 1.0 and thresholds 0.05 / 0.15 as
  `train.data.edge_map`, not dilated; Euclidean distance transform). An output without any edge
  scores the image diagonal (181 px at 128) and is counted in `no_edges`. Lower is better.
- colour: histogram intersection, in [0, 1], of the normalised 16x16 a*b* histograms (CIELAB,
  `skimage.color.rgb2lab`, a and b binned over [-128, 128)) of the output's non-white pixels and
  the exemplar's non-white pixels; a photo exemplar (its background is not white) counts with all
  its pixels. An image with fewer than 16 non-white pixels counts with all of them (as
  `train.evaluate.colour_relevance`). Higher is better. Bins 16 units wide make it strict: a red
  of a* 70, b* 53 against one of a* 66, b* 31 scores near 0. `colour_soft` (a secondary column)
  blurs both histograms with a Gaussian of one bin before the intersection.

Rows: `full`, `warp_only`, `no_interleave`, `no_mask`, `no_refine` (`train.evaluate`'s variants:
`no_interleave` = its `no_interleaving`, `no_refine` = its `no_refinement`), for a model with
`midms.colour_transfer` also `no_colour` (its `no_colour_transfer`; every other row keeps the
transfer, by the first matching, which they share), and
`exemplar` (the exemplar copied as the output, a trivial baseline: perfect colour, the exemplar's
shape).
Noise: `train.evaluate.run_variant` (a CPU generator seeded with seed + first index of each chunk
of 32 pairs); `--seeds 0 1` reports the mean over seeds (and their spread).

The contact sheet has one row per pair: sketch, exemplar, the full output of each seed, then the
ablations at the first seed; above each row its name and the full model's metrics (first seed).
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from .data import edge_map
from .drawn import load_pairs
from .evaluate import VARIANTS, default_variants, foreground, run_variant

ROWS = {"full": "full", "warp_only": "warp_only", "no_interleave": "no_interleaving", "no_mask": "no_mask",
        "no_refine": "no_refinement", "no_colour": "no_colour_transfer", "exemplar": "exemplar"}
# On request only (`--variants exemplar_recon`): the exemplar through the autoencoder and back, the
# colour no translation can beat (model v1's autoencoder: 0.335).
EXTRA_ROWS = {"exemplar_recon": "ae_recon"}
ALIASES = {"no_interleaving": "no_interleave", "no_refinement": "no_refine", "no_colour_transfer": "no_colour"}
BINS = 16


# ---- inputs ------------------------------------------------------------------------------------
def rust_luma(img):
    """PIL image -> uint8 [H, W] grey as the Rust `image` crate's `to_luma8` gives it."""
    if img.mode == "L":
        return np.asarray(img, np.uint8)
    if img.mode in ("LA", "I;16", "I", "F"):
        return np.asarray(img.convert("L"), np.uint8)
    rgb = np.asarray(img.convert("RGB"), np.uint32)
    return ((2126 * rgb[..., 0] + 7152 * rgb[..., 1] + 722 * rgb[..., 2]) // 10000).astype(np.uint8)


def read_condition(path, size=128):
    """A sketch PNG -> float32 [size, size] in {0, 1}, 1 = edge, by the rule the CLI and the editor
    share (`image::edge_map` in src/image/raster.rs): resized to the model's side, binarised at
    mid-grey, and inverted when its mean grey is above 127 (drawn dark on light)."""
    from PIL import Image

    img = Image.open(path)
    img.load()
    g = rust_luma(img)
    dark_lines = int(g.astype(np.uint64).sum()) // max(g.size, 1) > 127
    ink = lambda v: (v < 128) if dark_lines else (v >= 128)
    h, w = g.shape
    if w > size or h > size:  # a larger drawing: a model pixel is ink when any pixel of its block is
        out = np.zeros((size, size), np.float32)
        ys, xs = np.nonzero(ink(g))
        out[ys * size // h, xs * size // w] = 1
        return out
    if (w, h) != (size, size):
        g = rust_luma(Image.fromarray(g).resize((size, size), Image.BILINEAR))
    return ink(g).astype(np.float32)


def read_rgb(path):
    """RGB uint8 [H, W, 3], transparency composited on white (as `flatten_alpha`)."""
    from PIL import Image

    img = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img)
    return np.asarray(bg.convert("RGB"), np.uint8)


# ---- metrics -----------------------------------------------------------------------------------
def nonwhite(rgb_u8):
    """[H, W, 3] uint8 -> bool [H, W], train.evaluate's foreground rule."""
    h, w = rgb_u8.shape[:2]
    return foreground(torch.from_numpy(rgb_u8.reshape(-1, 3).astype(np.int64))).numpy().reshape(h, w)


def sketch_lines(cond):
    return cond > 0.5


def filled(lines):
    """Lines plus the areas they enclose; open strokes contribute only their own pixels."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(lines)


def silhouette_iou(lines, out_u8):
    a, b = filled(lines), nonwhite(out_u8)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def output_edges(rgb_u8):
    """Canny edges of an RGB uint8 image, as train.data.edge_map without its dilation."""
    from skimage.feature import canny

    g = (rgb_u8.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    return canny(g, sigma=1.0, low_threshold=0.05, high_threshold=0.15)


def chamfer(lines, edges):
    """Mean distance (px) from the line pixels to the nearest edge pixel; (value, no_edges). With
    no edge at all the distance is capped at the image diagonal."""
    from scipy.ndimage import distance_transform_edt

    diag = float(np.hypot(*lines.shape))
    if not edges.any():
        return diag, True
    if not lines.any():
        return 0.0, False
    d = distance_transform_edt(~edges)
    return float(np.minimum(d[lines], diag).mean()), False


def ab_pixels(rgb_u8, mask=None):
    """[N, 2] CIELAB a*, b* of the masked pixels (all pixels when the mask holds fewer than 16)."""
    from skimage.color import rgb2lab

    ab = rgb2lab(rgb_u8)[..., 1:].reshape(-1, 2)
    if mask is not None and mask.sum() >= 16:
        ab = ab[mask.reshape(-1)]
    return ab


def hist_of(ab, bins=BINS):
    q = np.clip(np.floor((ab + 128) * bins / 256), 0, bins - 1).astype(np.int64)
    h = np.bincount(q[:, 0] * bins + q[:, 1], minlength=bins * bins).astype(np.float64)
    return (h / h.sum()).reshape(bins, bins)


def foreground_ab(out_u8, ex_u8, ex_is_photo=False):
    """The a*b* pixels the colour measures compare: the output's non-white ones, the exemplar's
    non-white ones (a photo exemplar's all)."""
    return ab_pixels(out_u8, nonwhite(out_u8)), ab_pixels(ex_u8, None if ex_is_photo else nonwhite(ex_u8))


def intersection(ab_out, ab_ex, soft=False):
    """Histogram intersection of the a*b* histograms; `soft` first blurs both with a Gaussian of
    one bin (16 a*b* units), so that a small hue shift across a bin edge is not a total miss."""
    ho, he = hist_of(ab_out), hist_of(ab_ex)
    if soft:
        from scipy.ndimage import gaussian_filter

        ho, he = (gaussian_filter(h, 1.0, mode="constant") for h in (ho, he))
        ho, he = ho / ho.sum(), he / he.sum()
    return float(np.minimum(ho, he).sum())


def mean_distance(ab_out, ab_ex):
    """Distance in a*b* units between the mean a*b* colours (lower is better). Beside the histogram
    intersection, whose 16-unit bins count a shade across a bin edge as a total miss: a model whose
    colours are near the exemplar's but a shade off scores low there and well here (model v1.2
    against model v1.1, seeds 0 and 1: 0.220 against 0.283 by intersection, 10.4 against 14.0 by
    this distance)."""
    return float(np.linalg.norm(ab_out.mean(0) - ab_ex.mean(0)))


def colour_intersection(out_u8, ex_u8, ex_is_photo=False, soft=False):
    return intersection(*foreground_ab(out_u8, ex_u8, ex_is_photo), soft)


def colour_distance(out_u8, ex_u8, ex_is_photo=False):
    return mean_distance(*foreground_ab(out_u8, ex_u8, ex_is_photo))


def score(lines, out_u8, ex_u8, ex_is_photo):
    ch, none = chamfer(lines, output_edges(out_u8))
    # each image to CIELAB once for the three colour measures (six conversions before)
    ab_out, ab_ex = foreground_ab(out_u8, ex_u8, ex_is_photo)
    return {"iou": silhouette_iou(lines, out_u8), "chamfer": ch, "colour": intersection(ab_out, ab_ex),
            "colour_soft": intersection(ab_out, ab_ex, soft=True), "colour_dist": mean_distance(ab_out, ab_ex),
            "no_edges": none}


# ---- running -----------------------------------------------------------------------------------
def load_set(folder, size):
    pairs = load_pairs(folder)
    cond = np.stack([read_condition(os.path.join(folder, p["sketch"]), size) for p in pairs])
    ex = np.stack([read_rgb(os.path.join(folder, p["exemplar"])) for p in pairs])
    # A pair may name the image whose colours the output is scored against (`colour_reference`: the
    # exemplar on white, where the set puts it on a coloured ground); by default the exemplar.
    ref_colours = np.stack([read_rgb(os.path.join(folder, p.get("colour_reference", p["exemplar"])))
                            for p in pairs])
    # And the sketch whose shape it is scored against (`shape_reference`: the intact drawing, where the
    # set cut a gap into it); by default the sketch.
    ref_lines = np.stack([sketch_lines(read_condition(os.path.join(folder, p.get("shape_reference", p["sketch"])),
                                                      size)) for p in pairs])
    if ex.shape[1:3] != (size, size):
        raise SystemExit(f"exemplars must be {size}x{size} (regenerate with python -m train.drawn)")
    batch = {"edge": torch.from_numpy(cond)[:, None],
             "ref": torch.from_numpy(ex).permute(0, 3, 1, 2).float() / 127.5 - 1,
             "ref_edge": torch.from_numpy(np.stack([edge_map(x) for x in ex]))[:, None]}
    batch["image"] = batch["ref"]  # what the exemplar_recon row reconstructs
    return pairs, cond, ex, ref_colours, ref_lines, batch


def to_u8_images(x):
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (rounded as train.evaluate.to_u8)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def default_rows(model):
    """Every row that applies to `model` (`train.evaluate.default_variants`: `no_colour` only for
    a model with colour transfer) and the reference rows."""
    applies = set(default_variants(model))
    return [v for v, name in ROWS.items() if name in applies or name not in VARIANTS]


def evaluate(model, folder="assets/drawn", variants=None, seeds=(0,), size=128):
    pairs, cond, ex, ref_colours, ref_lines, batch = load_set(folder, size)
    variants = variants or default_rows(model)
    per = {v: {p["name"]: {} for p in pairs} for v in variants}
    outs = {}
    for seed in seeds:
        for v in variants:
            o = to_u8_images(run_variant(model, batch, {**ROWS, **EXTRA_ROWS}[v], seed))
            outs[(v, seed)] = o
            for i, p in enumerate(pairs):
                per[v][p["name"]][str(seed)] = score(ref_lines[i], o[i], ref_colours[i],
                                                          p["exemplar_kind"] == "photo")
    means = {}
    for v in variants:
        m = {}
        for k in ("iou", "chamfer", "colour", "colour_soft", "colour_dist"):
            by_seed = [float(np.mean([per[v][p["name"]][str(s)][k] for p in pairs])) for s in seeds]
            m[k] = float(np.mean(by_seed))
            m[f"{k}_sd_over_seeds"] = float(np.std(by_seed))
            m[f"{k}_by_seed"] = by_seed
            for kind in ("twemoji", "photo"):
                sub = [p["name"] for p in pairs if p["exemplar_kind"] == kind]
                if sub:
                    m[f"{k}_{kind}"] = float(np.mean([per[v][n][str(s)][k] for n in sub for s in seeds]))
        m["no_edges"] = int(sum(per[v][p["name"]][str(s)]["no_edges"] for p in pairs for s in seeds))
        means[v] = m
    return pairs, cond, ex, per, means, outs


# ---- reporting ---------------------------------------------------------------------------------
def markdown(pairs, per, means, seeds):
    lines = [f"hand-drawn pairs: {len(pairs)} ({sum(p['exemplar_kind'] == 'photo' for p in pairs)} with photo "
             f"exemplars), seeds {list(seeds)} (mean over seeds, ± their spread)", "",
             "| variant | silhouette IoU (higher better) | line chamfer px (lower better) | colour a*b* (higher better) "
             "| colour, 1-bin blur | mean-colour distance a*b* (lower better) |", "|---|---|---|---|---|---|"]
    for v, m in means.items():
        extra = f" ({m['no_edges']} outputs without edges)" if m["no_edges"] else ""
        lines.append(f"| {v} | {m['iou']:.3f} ± {m['iou_sd_over_seeds']:.3f} | {m['chamfer']:.2f} ± "
                     f"{m['chamfer_sd_over_seeds']:.2f}{extra} | {m['colour']:.3f} ± {m['colour_sd_over_seeds']:.3f} | "
                     f"{m['colour_soft']:.3f} | {m['colour_dist']:.1f} |")
    lines += ["", "per pair, IoU / chamfer / colour (mean over seeds):", "",
              "| pair | " + " | ".join(per) + " |", "|---" * (len(per) + 1) + "|"]
    for p in pairs:
        n = p["name"]
        cells = []
        for v in per:
            r = lambda k: np.mean([per[v][n][str(s)][k] for s in seeds])
            cells.append(f"{r('iou'):.2f} / {r('chamfer'):.1f} / {r('colour'):.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contact_sheet(path, pairs, cond, ex, outs, per, seeds, variants, cell=128, pad=2):
    from PIL import Image, ImageDraw, ImageFont

    cols = [("sketch", None), ("exemplar", None)]
    cols += [(f"full s{s}", ("full", s)) for s in seeds if ("full", s) in outs]
    cols += [(f"{v} s{seeds[0]}", (v, seeds[0])) for v in variants if v not in ("full", "exemplar")]
    try:
        font = ImageFont.load_default()
    except Exception:  # no font: the sheet without labels
        font = None
    label_h = 14 if font else 0
    W = len(cols) * (cell + pad) + pad
    H = label_h + pad + len(pairs) * (label_h + cell + pad)
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    grey = (90, 90, 90)
    if font:
        for j, (name, _) in enumerate(cols):
            draw.text((pad + j * (cell + pad) + 2, 1), name, fill=grey, font=font)
    for i, p in enumerate(pairs):
        y = label_h + pad + i * (label_h + cell + pad)
        if font:
            f = per.get("full", {}).get(p["name"], {}).get(str(seeds[0]))
            m = f" - full s{seeds[0]}: IoU {f['iou']:.2f}, chamfer {f['chamfer']:.1f}, colour {f['colour']:.2f}" if f else ""
            draw.text((pad + 2, y), f"{p['name']} ({p['exemplar_kind']}){m}", fill=(0, 0, 0), font=font)
        tiles = [np.repeat(((1 - cond[i]) * 255).round().astype(np.uint8)[..., None], 3, 2), ex[i]]
        tiles += [outs[key][i] for _, key in cols[2:]]
        for j, t in enumerate(tiles):
            im = Image.fromarray(t)
            if im.size != (cell, cell):
                im = im.resize((cell, cell), Image.NEAREST)
            sheet.paste(im, (pad + j * (cell + pad), y + label_h))
    sheet.save(path)


def compact_sheet(path, cond, ex, out, per_row=4, cell=96, pad=4):
    """A grid of (sketch, exemplar, output) triples, `per_row` triples a row: the README's view."""
    from PIL import Image

    n = len(cond)
    rows = (n + per_row - 1) // per_row
    tw = 3 * cell + 2 * pad  # one triple
    sheet = Image.new("RGB", (per_row * tw + (per_row + 1) * 3 * pad, rows * (cell + pad) + pad), (255, 255, 255))
    for i in range(n):
        r, c = divmod(i, per_row)
        x0, y0 = 3 * pad + c * (tw + 3 * pad), pad + r * (cell + pad)
        tiles = [np.repeat(((1 - cond[i]) * 255).round().astype(np.uint8)[..., None], 3, 2), ex[i], out[i]]
        for j, t in enumerate(tiles):
            sheet.paste(Image.fromarray(t).resize((cell, cell), Image.BILINEAR), (x0 + j * (cell + pad), y0))
    sheet.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--set", default="assets/drawn", help="folder with pairs.json (python -m train.drawn)")
    ap.add_argument("--variants", nargs="+", default=None, help=f"subset of {list(ROWS)} (default: all), or {list(EXTRA_ROWS)}")
    ap.add_argument("--seeds", "--seed", dest="seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--sheet", default=None, help="contact sheet PNG")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device for the translations (e.g. cuda); the scores run on the host")
    ap.add_argument("--compact", default=None,
                    help="also a compact sheet PNG: (sketch, exemplar, full output of the first seed) triples")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    variants = [ALIASES.get(v, v) for v in (a.variants or [])]
    bad = [v for v in variants if v not in ROWS and v not in EXTRA_ROWS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {list(ROWS) + list(EXTRA_ROWS)}")
    from .export import load_exported

    t0 = time.time()
    model, cfg = load_exported(a.weights)
    model.to(a.device)
    size = cfg["midms"]["image_size"]
    variants = variants or default_rows(model)
    pairs, cond, ex, per, means, outs = evaluate(model, a.set, variants, a.seeds, size)
    wall = time.time() - t0
    print(markdown(pairs, per, means, a.seeds))
    print(f"\nwall time {wall:.0f} s ({a.threads} thread(s), {len(pairs)} pairs x {len(variants)} rows x "
          f"{len(a.seeds)} seeds)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"weights": a.weights, "set": a.set, "seeds": a.seeds, "image_size": size,
                       "pairs": [{k: p[k] for k in ("name", "sketch", "exemplar", "exemplar_kind")} for p in pairs],
                       "means": means, "per_pair": per, "wall_s": round(wall, 1), "threads": a.threads}, f, indent=1)
            f.write("\n")
        print(f"wrote {a.json}")
    if a.sheet:
        contact_sheet(a.sheet, pairs, cond, ex, outs, per, a.seeds, variants)
        print(f"wrote {a.sheet}")
    if a.compact and ("full", a.seeds[0]) in outs:
        compact_sheet(a.compact, cond, ex, outs[("full", a.seeds[0])])
        print(f"wrote {a.compact}")


if __name__ == "__main__":
    main()
