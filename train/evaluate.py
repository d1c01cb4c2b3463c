"""Evaluation on the validation split: `python -m train.evaluate [--weights weights] [--n 128]`.

Metrics (no pretrained network needed):
- SWD: sliced Wasserstein distance between Laplacian-pyramid patch descriptors of the outputs and of
  the real validation targets (Karras et al. 2017): pyramid levels at the image side and two halvings
  (128/64/32 for the shipped model); 7x7 RGB patches,
  64 random patches per image and level; descriptors normalised per level and channel; 4 x 128
  random unit directions; reported x1e3, averaged over levels (lower is better).
- Colour relevance: histogram intersection of the 8x8x8 RGB histograms of the non-white pixels of
  output and exemplar, mean over pairs, in [0, 1] (higher = the output uses the exemplar's colours).
- Target L1: mean |output - ground-truth target| in [-1, 1] units (the sketch was made from it).
- Shape IoU: intersection over union of the non-white pixels of output and ground-truth target,
  mean over pairs (higher = the output takes the sketch's silhouette; the exemplar row shows how
  much of that an output gets by copying the exemplar's shape).

Rows: (a) full MIDM; (b) warp only (decode of the initial warped latent, no diffusion);
(c) no interleaving (warp once, then the same DDIM steps without re-matching); (d) no confidence
mask; (e) no refinement; plus three reference rows: the exemplar itself (a trivial baseline), the
autoencoder's reconstruction of the target (what any output through this decoder can at best look
like) and the diffusion stages started from the target's own latent (the full loop without
re-matching, then refinement: what the UNet does to a perfect warp).
"""
import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from .common import EmojiBatches
from .colour import transfer_colour
from .frame import unframe
from .ops import WHITE


def laplacian_pyramid(x, levels=3):
    pyr = []
    for _ in range(levels - 1):
        down = F.avg_pool2d(x, 2)
        pyr.append(x - F.interpolate(down, scale_factor=2, mode="nearest"))
        x = down
    pyr.append(x)
    return pyr


def patches(x, n, g, k=7):
    b, c, h, w = x.shape
    ys = torch.randint(0, h - k + 1, (b, n), generator=g)
    xs = torch.randint(0, w - k + 1, (b, n), generator=g)
    out = []
    for i in range(b):
        for y, xx in zip(ys[i].tolist(), xs[i].tolist()):
            out.append(x[i, :, y:y + k, xx:xx + k].reshape(-1))
    return torch.stack(out)


def sliced_wasserstein(a, b, g, dirs=128, repeats=4):
    vals = []
    for _ in range(repeats):
        d = torch.randn(a.shape[1], dirs, generator=g)
        d = d / d.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ d, dim=0)
        pb, _ = torch.sort(b @ d, dim=0)
        vals.append((pa - pb).abs().mean())
    return torch.stack(vals).mean().item()


def swd(fake, real, seed=0, n_patches=64):
    """fake, real: [N, 3, H, W] in [-1, 1], same N."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lf, lr in zip(laplacian_pyramid(fake), laplacian_pyramid(real)):
        k = 7 if lf.shape[-1] >= 16 else 3
        da, db = patches(lf, n_patches, g, k), patches(lr, n_patches, g, k)
        both = torch.cat([da, db]).reshape(-1, 3, k * k)
        mu = both.mean(dim=(0, 2), keepdim=True)
        sd = both.std(dim=(0, 2), keepdim=True) + 1e-8
        da = ((da.reshape(-1, 3, k * k) - mu) / sd).reshape(len(da), -1)
        db = ((db.reshape(-1, 3, k * k) - mu) / sd).reshape(len(db), -1)
        out.append(sliced_wasserstein(da, db, g) * 1e3)
    return float(np.mean(out)), out


def to_u8(x):
    """[3, H, W] in [-1, 1] -> [H * W, 3] integer pixel values."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().long().permute(1, 2, 0).reshape(-1, 3)


def foreground(u):
    """Non-white pixels (any channel below ops.WHITE, 235), as the emoji sit on white."""
    return (u < WHITE).any(dim=1)


def shape_iou(out, target):
    ious = []
    for o, t in zip(out, target):
        a, b = foreground(to_u8(o)), foreground(to_u8(t))
        union = (a | b).sum().item()
        ious.append((a & b).sum().item() / union if union else 1.0)
    return float(np.mean(ious))


def colour_relevance(out, ex, bins=8):
    def hist(x):
        u = to_u8(x)
        fg = foreground(u)
        u = u[fg] if fg.sum() > 16 else u
        q = (u * bins // 256).clamp(max=bins - 1)
        h = torch.bincount(q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2], minlength=bins ** 3).float()
        return h / h.sum()

    return float(np.mean([torch.minimum(hist(o), hist(e)).sum().item() for o, e in zip(out, ex)]))


VARIANTS = {
    "full": {},
    "warp_only": None,
    "no_interleaving": {"rewarp_at": ()},
    "no_mask": {"use_mask": False},
    "no_refinement": {"refine": False},
    # A model with `midms.colour_transfer` (model v1.6) without it (train.colour).
    "no_colour_transfer": {"colour": False},
}


REFERENCE_ROWS = ["exemplar", "ae_recon", "from_target"]


@torch.no_grad()
def warp_only(model, edge, ref, ref_edge):
    """The first warp decoded (the warp-only ablation), with the model's colour transfer as
    `MIDM.translate` applies it (the first matching's chroma), its preparation of the drawing
    (`MIDM.prepared_drawing`: gaps closed, a small one framed) and its
    preparation of the exemplar (`MIDM.prepared_exemplar`)."""
    edge, frames = model.prepared_drawing(edge)
    ref, ref_edge, fg = model.prepared_exemplar(ref, ref_edge)
    feats = model.ae.encode(ref)
    regions = model.regions(edge, ref, feats.shape[2:], fg)
    m = model.match(edge, feats, ref_edge, regions=regions)
    out = model.ae.decode(m["warped"])
    if getattr(model, "colour_transfer", False):
        out = transfer_colour(out, model.warp_colour(ref, m["colour_corr"], regions, fg), model.colour_gamut)
    return unframe(out, frames)


@torch.no_grad()
def run_variant(model, batch, name, seed, chunk=32):
    """`name`'s outputs for `batch` (on the host), `chunk` pairs at a time on the model's device; the
    noise is drawn on the host (`MIDM.translate`), so a GPU run gets the CPU run's draws."""
    dev = next(model.parameters()).device
    outs = []
    for s in range(0, len(batch["edge"]), chunk):
        edge, ref, ref_edge, image = (batch[k][s:s + chunk].to(dev) for k in ("edge", "ref", "ref_edge", "image"))
        g = torch.Generator().manual_seed(seed + s)
        if name == "ae_recon":
            out = model.ae.decode(model.ae.encode(image))
        elif name == "from_target":
            out = model.translate(edge, ref, ref_edge, generator=g, rewarp_at=(), start_latent=model.ae.encode(image))[0]
        elif name == "warp_only":
            out = warp_only(model, edge, ref, ref_edge)
        elif name == "exemplar":
            out = ref
        else:
            out = model.translate(edge, ref, ref_edge, generator=g, **VARIANTS[name])[0]
        outs.append(out.float().cpu())
    return torch.cat(outs).clamp(-1, 1)


def default_variants(model):
    """The ablations that apply to `model`: without colour transfer, its ablation is the full model."""
    return [v for v in VARIANTS if v != "no_colour_transfer" or getattr(model, "colour_transfer", False)]


def bootstrap_swd(outs, target, k, seed=0):
    """SWD of every row on `k` resamples of the pairs (drawn with replacement, the same draws for
    every row, so that rows compare pair for pair) -> {row: [k values]}. SWD compares sets of
    patches, so a pair's share in it cannot be taken apart; resampling the pairs tells how much a
    figure, and an ordering of two rows, owes to which emoji happen to be in the set: on 256 held-out
    pairs of model v1.11 the SWD of four disjoint 64-pair chunks ran from 67 to 216, and the full
    model ranked first in one chunk against no mask and in one against no refinement."""
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randint(0, len(target), (len(target),), generator=g) for _ in range(k)]
    return {name: [swd(out[d], target[d], seed)[0] for d in draws] for name, out in outs.items()}


def bootstrap_summary(rows):
    """{row: (5 %, 95 % quantile of its resampled SWD, share of resamples where the full row scores
    below it)} for the rows of one seed that carry "swd_bootstrap" (the full row's share is None)."""
    full = np.array(rows["full"]["swd_bootstrap"]) if "swd_bootstrap" in rows.get("full", {}) else None
    out = {}
    for name, r in rows.items():
        if "swd_bootstrap" not in r:
            continue
        v = np.array(r["swd_bootstrap"])
        below = None if name == "full" or full is None else float(np.mean(full < v))
        out[name] = (float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95)), below)
    return out


def evaluate(model, data_dir, n=128, seed=0, variants=None, size=64, metric_size=None, pairs="neighbours",
             bootstrap=0):
    """`size`: the model's image side (data from emoji<size>.npz); `metric_size`: the side at which
    the metrics compare (outputs and targets area-downsampled to it), so that models of different
    sizes can be compared on the same footing; default `size`. `pairs`: "neighbours" (the first
    models' validation pairs: Canny-edge conditions, a Unicode neighbour as exemplar) or "authors"
    (train.pairs: the one-line sketch drawn 2 px wide, the same emoji in another style as exemplar
    where there is one) or "heldout" (the same, with the exemplar in the held-out style, Twemoji:
    colours from a designer never trained on). `bootstrap` > 0: also each row's SWD on that many
    resamples of the pairs (`bootstrap_swd`), under "swd_bootstrap"."""
    if pairs in ("authors", "heldout"):
        from .pairs import PairBatches

        val = PairBatches(data_dir, "val", size=size, seed=seed)
    else:
        val = EmojiBatches(data_dir, "val", size=size, seed=seed)
    if pairs == "heldout":
        idx = val.heldout_indices()[:n]
        n = len(idx)
        batch = val._plain(idx, heldout=True)
    else:
        n = min(n, len(val))
        idx = val.idx[:n]
        batch = val.batch(n, augment=False, indices=idx, exemplar_k=torch.zeros(n, dtype=torch.long))
    rows = {}
    at = lambda x: x if not metric_size or metric_size == size else F.interpolate(x, size=metric_size, mode="area")
    target, ref = at(batch["image"]), at(batch["ref"])
    outs = {}
    for name in (variants or default_variants(model) + REFERENCE_ROWS):
        out = at(run_variant(model, batch, name, seed))
        s, per_level = swd(out, target, seed)
        rows[name] = {"swd": s, "swd_levels": per_level, "colour": colour_relevance(out, ref),
                      "target_l1": (out - target).abs().mean().item(), "shape_iou": shape_iou(out, target)}
        if bootstrap:
            outs[name] = out
    if bootstrap:
        for name, values in bootstrap_swd(outs, target, bootstrap, seed).items():
            rows[name]["swd_bootstrap"] = values
    return rows, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", nargs="+", default=None,
                    help=f"subset of {list(VARIANTS) + REFERENCE_ROWS} (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device for the translations (e.g. cuda); the metrics run on the host")
    ap.add_argument("--bootstrap", type=int, default=0,
                    help="also SWD on this many resamples of the pairs: each row's 5-95 %% interval and how "
                         "often the full model scores below it (bootstrap_swd)")
    ap.add_argument("--metric-size", type=int, default=None,
                    help="compare at this image side (e.g. 64 to put a 128 model beside a 64 one)")
    ap.add_argument("--pairs", choices=["neighbours", "authors", "heldout"], default=None,
                    help="validation pairs (see evaluate(); heldout: the exemplar is the same emoji in the held-out "
                         "Twemoji style); default: authors for a v2 model, else neighbours")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from .export import load_exported

    model, cfg = load_exported(a.weights)
    model.to(a.device)
    size = cfg["midms"]["image_size"]
    pairs = a.pairs or ("authors" if model.label_downsample == "max" else "neighbours")
    results = {}
    for seed in a.seeds:
        rows, n = evaluate(model, a.data, a.n, seed, a.variants, size, a.metric_size, pairs, a.bootstrap)
        results[seed] = rows
    print(f"validation pairs ({pairs}): {n}, seeds: {a.seeds}, model {size}x{size}, metrics at {a.metric_size or size}")
    print("| variant | SWD x1e3 (lower better) | colour relevance (higher better) | L1 to target | shape IoU |")
    print("|---|---|---|---|---|")
    for name in results[a.seeds[0]]:
        m = lambda k: np.mean([results[s][name][k] for s in a.seeds])
        sd = lambda k: np.std([results[s][name][k] for s in a.seeds])
        print(f"| {name} | {m('swd'):.1f} ± {sd('swd'):.1f} | {m('colour'):.3f} ± {sd('colour'):.3f} | "
              f"{m('target_l1'):.3f} | {m('shape_iou'):.3f} |")
    for seed in a.seeds if a.bootstrap else ():
        print(f"\nseed {seed}, SWD on {a.bootstrap} resamples of the pairs: 5-95 % interval; full below the row in")
        for name, (lo, hi, below) in bootstrap_summary(results[seed]).items():
            print(f"| {name} | {lo:.1f}-{hi:.1f} | {'' if below is None else f'{100 * below:.0f} %'} |")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
