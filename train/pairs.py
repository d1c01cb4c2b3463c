"""Training pairs as the MIDMs authors make them, conditions as users draw (model v2 recipe).

Pairs (per sample, `PairBatches.batch`):
- **self** (30 %): the target itself, geometrically jittered (flip, +-15 deg, scale 0.85-1.15,
  shift +-10 %), is its exemplar: the authors' self-reference pairs, the only pairs whose
  correspondence is exact.
- **style** (50 %): the same emoji drawn by another designer (`same_key` in train.data): the
  authors' retrieved similar images, here with the same content for certain. Falls back to a
  neighbour where the emoji exists in one style only.
- **neighbour** (20 %): a Unicode neighbour (`candidates`): the authors' harder pairs.
One hue rotation about the grey axis (white stays white) is applied to target and exemplar alike
in half of the pairs, so that the colours can only come from the exemplar, never from memory.

Exemplars as users give them: 35 % are composited onto a background (flat colour, gradient,
noise at several scales, or large blurred glyphs) after shrinking to 60-100 %, with photo-like
jitter (brightness, contrast, gamma, per-channel gain, sensor noise); the target stays on white,
so matching must learn to ignore a background. The exemplar label is then computed the way the
editor computes it at inference: Canny edges of the exemplar as it is (sigma 1, thresholds
0.05 / 0.15, 3x3 dilation, like train.data.edge_map and the Rust `CannyParams::edge_model`).

Conditions as users draw: the glyph's one-line `sketch` (train.data) is placed with the target
(scale 0.55-1.0 and a random position on the white canvas: users draw anywhere, at any size),
wobbled by a smooth random displacement (up to ~1.5 px), re-thinned to 1 px, 0-15 % of it dropped
in 8 px cells (open arcs, missing details) and drawn 1-4 px wide (at 128 px; scaled with the size).

Everything runs on the CPU in numpy/torch with one generator per batcher; `loader()` runs batchers
in DataLoader worker processes (pinned memory, non-blocking copies), so a GPU step never waits for
augmentation and the training loop makes no host round trip for it.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import data as emoji_data
from .ops import exemplar_foreground, fill_label

P_SELF, P_STYLE = 0.3, 0.5  # the rest: neighbours
P_HUE = 0.5
P_BACKGROUND = 0.35
PLACE_SCALE = (0.55, 1.0)
WIDTHS_128 = ((1, 0.2), (2, 0.4), (3, 0.25), (4, 0.15))  # stroke width at 128 px, probability
DROP_MAX = 0.15
JITTER_PX = 1.5
VAL_WIDTH_128 = 2


def luminance(x):
    """[B, 3, H, W] in [-1, 1] -> [B, H, W] in [0, 1]."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return ((x + 1) / 2 * w).sum(1)


def canny_label(img):
    """The exemplar label the editor computes: [B, 3, H, W] in [-1, 1] -> [B, 1, H, W] in {0, 1}."""
    lum = luminance(img).numpy()
    return torch.from_numpy(np.stack([emoji_data.edge_map(
        (np.clip(lm, 0, 1)[..., None].repeat(3, -1) * 255).round().astype(np.uint8)) for lm in lum]))[:, None]


def hue_rotation(theta):
    """[B] angles -> [B, 3, 3] RGB rotations about the grey axis (keeps white and greys)."""
    c, s = torch.cos(theta), torch.sin(theta)
    k = 1.0 / 3.0
    r3 = math.sqrt(1.0 / 3.0)
    m = torch.empty(len(theta), 3, 3)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = c + (1 - c) * k
    m[:, 0, 1] = m[:, 1, 2] = m[:, 2, 0] = k * (1 - c) - r3 * s
    m[:, 0, 2] = m[:, 1, 0] = m[:, 2, 1] = k * (1 - c) + r3 * s
    return m


def random_hue_rotations(b, g, p):
    """[B, 3, 3] colour rotations: a random angle in a share `p` of the images, none in the rest."""
    turn = torch.rand(b, generator=g) < p
    return hue_rotation(torch.where(turn, (torch.rand(b, generator=g) * 2 - 1) * math.pi, torch.zeros(b)))


def apply_colour(img, m):
    """Rotates colours of images in [-1, 1] about the grey axis (in [0, 1] space)."""
    x = (img + 1) / 2
    y = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    return y * 2 - 1


def affine_theta(b, g, rot=0.0, scale=(1.0, 1.0), shift=0.0, flip=False, fit=False):
    """[B, 2, 3] sampling matrices (output -> input) of random similarity transforms. `fit`: the shift
    keeps a shrunk image inside the canvas (scale s leaves 1 - s of room)."""
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=g)
    ang = r(-rot, rot) * math.pi / 180
    sc = r(*scale)
    fl = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    room = (1 - sc) if fit else torch.full((b,), shift)
    tx, ty = (2 * torch.rand(b, generator=g) - 1) * room, (2 * torch.rand(b, generator=g) - 1) * room
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc * fl
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc * fl
    theta[:, 1, 1] = torch.cos(ang) / sc
    # the shift is in output coordinates: x_in = A (x_out - t)
    theta[:, 0, 2] = -(theta[:, 0, 0] * tx + theta[:, 0, 1] * ty)
    theta[:, 1, 2] = -(theta[:, 1, 0] * tx + theta[:, 1, 1] * ty)
    return theta


def warp(x, grid, fill):
    """grid_sample with a constant outside value (`fill`: 1 for white images, 0 for masks)."""
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def smooth_field(b, size, amp_px, g, cells=4):
    """A smooth random displacement [B, H, W, 2] in grid units, at most ~`amp_px` pixels."""
    f = (2 * torch.rand(b, 2, cells, cells, generator=g) - 1) * (amp_px * 2 / size)
    return F.interpolate(f, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def thin(mask):
    """[B, 1, H, W] bool -> 1-px skeleton (skimage)."""
    from skimage.morphology import skeletonize

    return torch.from_numpy(np.stack([skeletonize(m) for m in mask[:, 0].numpy()]))[:, None]


def dilate(lines, width):
    """[B, 1, H, W] {0,1} drawn `width` px wide (per sample; 1..4)."""
    out = lines.clone()
    for w in range(2, int(width.max().item()) + 1):
        lo, hi = (w - 1) // 2, w // 2
        d = F.max_pool2d(F.pad(lines, (lo, hi, lo, hi)), w, stride=1)
        out = torch.where((width == w).view(-1, 1, 1, 1), d, out)
    return out


def stroke_widths(b, size, g):
    w, p = zip(*WIDTHS_128)
    k = torch.multinomial(torch.tensor(p), b, replacement=True, generator=g)
    return (torch.tensor(w, dtype=torch.float)[k] * size / 128).round().clamp(min=1)


def user_condition(sketch, place_grid, g, size):
    """The training condition from 1-px sketches [B, 1, H, W] placed by `place_grid` (the target's
    placement): wobble, re-thin, dropout, width. Returns [B, 1, H, W] in {0, 1}."""
    b = sketch.shape[0]
    wide = F.max_pool2d(sketch, 3, stride=1, padding=1)  # survives bilinear shrinking without gaps
    grid = place_grid + smooth_field(b, size, JITTER_PX * size / 128, g)
    placed = warp(wide, grid, 0.0) > 0.35
    lines = thin(placed).float()
    cell = max(2, size // 16)
    keep = torch.rand(b, 1, size // cell, size // cell, generator=g) >= DROP_MAX * torch.rand(b, 1, 1, 1, generator=g)
    lines = lines * F.interpolate(keep.float(), size=(size, size), mode="nearest")
    return dilate(lines, stroke_widths(b, size, g))


def val_condition(sketch, size):
    return dilate(sketch, torch.full((sketch.shape[0],), max(1, round(VAL_WIDTH_128 * size / 128))))


def background(b, size, g, glyphs):
    """[B, 3, H, W] in [-1, 1]: flat, gradient, multi-scale noise or large blurred `glyphs` [B, 3, H, W]
    (uint8) behind."""
    kind = torch.randint(4, (b,), generator=g)
    c0 = torch.rand(b, 3, 1, 1, generator=g) * 2 - 1
    c1 = torch.rand(b, 3, 1, 1, generator=g) * 2 - 1
    ang = torch.rand(b, generator=g) * 2 * math.pi
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    t = ((torch.cos(ang).view(-1, 1, 1) * xx + torch.sin(ang).view(-1, 1, 1) * yy) + 1.5) / 3
    grad = c0 + (c1 - c0) * t[:, None]
    noise = torch.zeros(b, 3, size, size)
    for cells, wgt in ((4, 0.8), (8, 0.5), (16, 0.3), (32, 0.2)):
        n = torch.rand(b, 3, cells, cells, generator=g) * 2 - 1
        noise += wgt * F.interpolate(n, size=(size, size), mode="bilinear", align_corners=False)
    noise = (c0 + 0.6 * noise).clamp(-1, 1)
    gl = glyphs.float() / 127.5 - 1
    grid = F.affine_grid(affine_theta(b, g, rot=180, scale=(1.5, 3.0), shift=0.5), (b, 3, size, size), align_corners=False)
    big = warp(gl, grid, 1.0)
    big = F.avg_pool2d(F.pad(big, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    big = (grad + (big - 1) * 0.8).clamp(-1, 1)  # glyph shapes darken a gradient
    opts = torch.stack([c0.expand(-1, -1, size, size), grad, noise, big], 1)
    return opts[torch.arange(b), kind]


def photo_jitter(img, g):
    b = img.shape[0]
    r = lambda lo, hi: (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=g))
    x = (img + 1) / 2
    x = x * (1 + r(-0.1, 0.1).expand(-1, 3, -1, -1) * torch.rand(b, 3, 1, 1, generator=g))
    x = (x - 0.5) * r(0.8, 1.2) + 0.5 + r(-0.12, 0.12)
    x = x.clamp(1e-4, 1) ** r(0.8, 1.25)
    x = x + 0.02 * torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) < 0.5)
    return x.clamp(0, 1) * 2 - 1


class PairBatches:
    """Batches of (target image, condition, exemplar, exemplar label) made as the module docstring
    says, from train.data's npz (it needs the `sketch`, `alpha` and `same_key` arrays of a data set
    built by the current train.data)."""

    def __init__(self, data_dir, split, size=64, seed=0, device="cpu"):
        d = emoji_data.load(data_dir, size)
        for k in ("sketch", "alpha", "same_key"):
            if k not in d:
                raise SystemExit(f"{data_dir}/emoji{size}.npz has no `{k}`: rebuild it with `python -m train.data`")
        want = {"train": emoji_data.TRAIN, "val": emoji_data.VAL, "heldout": emoji_data.HELDOUT}[split]
        self.size = size
        self.device = torch.device(device)
        self.images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).contiguous()  # uint8
        self.alpha = torch.from_numpy(d["alpha"])[:, None]
        self.sketch = torch.from_numpy(d["sketch"])[:, None]
        self.cand = torch.from_numpy(d["candidates"])
        self.same = torch.from_numpy(d["same_key"])
        self.names = d["names"]
        self.idx = torch.from_numpy(np.nonzero(d["split"] == want)[0])
        # the held-out style's glyph of the same emoji (-1: none), for evaluation with unseen exemplars
        # by the whole sequence where the data set has it; by key codepoint for older builds, which
        # paired a flag with its first letter and a farmer with a sheaf of rice
        ident = [str(s) for s in d["seqs"]] if "seqs" in d else [int(k) for k in d["keys"]]
        held = {k: i for i, (k, sp) in enumerate(zip(ident, d["split"])) if sp == emoji_data.HELDOUT}
        self.heldout_of = torch.tensor([held.get(k, -1) for k in ident])
        self.seed = seed
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.idx)

    def reseed(self, seed):
        self.g.manual_seed(seed)

    def exemplars(self, i, mode):
        """Exemplar index per sample: 0 self, 1 another style (else a neighbour), 2 neighbour."""
        b = len(i)
        same = self.same[i]
        n_same = (same >= 0).sum(1)
        k_same = (torch.rand(b, generator=self.g) * n_same.clamp(min=1)).long()
        k_nb = torch.randint(self.cand.shape[1], (b,), generator=self.g)
        nb = self.cand[i, k_nb]
        st = same[torch.arange(b), k_same]
        j = torch.where(mode == 0, i, torch.where((mode == 1) & (n_same > 0), st, nb))
        mode = torch.where((mode == 1) & (n_same == 0), torch.full_like(mode, 2), mode)
        return j, mode

    def batch(self, n, augment=True, indices=None, exemplar_k=None, self_only=False):
        """`self_only`: every exemplar is its target (jittered, on a background for some)."""
        g, s = self.g, self.size
        i = self.idx[torch.randint(len(self.idx), (n,), generator=g)] if indices is None else torch.as_tensor(indices)
        b = len(i)
        if not augment:
            return self._plain(i, exemplar_k)
        u = torch.rand(b, generator=g)
        mode = torch.where(u < P_SELF, 0, torch.where(u < P_SELF + P_STYLE, 1, 2))
        if self_only:
            mode = torch.zeros_like(mode)
        j, mode = self.exemplars(i, mode)
        img = self.images[i].float() / 127.5 - 1
        ref = self.images[j].float() / 127.5 - 1
        ref_alpha = self.alpha[j].float() / 255
        m = random_hue_rotations(b, g, P_HUE)
        img, ref = apply_colour(img, m), apply_colour(ref, m)
        img, edge = self._placed(i, img)
        # exemplar: geometric jitter (all modes), on a background for some
        bg_on = torch.rand(b, generator=g) < P_BACKGROUND
        theta = affine_theta(b, g, rot=15, scale=(0.85, 1.15), shift=0.1, flip=True)
        shrink = torch.where(bg_on, 0.6 + 0.4 * torch.rand(b, generator=g), torch.ones(b))
        theta[:, :, :2] /= shrink.view(-1, 1, 1)
        grid = F.affine_grid(theta, (b, 3, s, s), align_corners=False)
        ref = warp(ref, grid, 1.0)
        ref_alpha = warp(ref_alpha, grid, 0.0).clamp(0, 1)
        if bg_on.any():
            k = bg_on.nonzero()[:, 0]
            behind = self.images[self.idx[torch.randint(len(self.idx), (len(k),), generator=g)]]
            bg = background(len(k), s, g, behind)
            comp = (ref[k] + (1 - ref_alpha[k]) * (bg - 1)).clamp(-1, 1)  # on white -> on bg
            ref[k] = photo_jitter(comp, g)
        return {"image": img, "edge": edge, "fill": fill_label(edge), "ref": ref, "ref_edge": canny_label(ref),
                "ref_fg": exemplar_foreground(ref), "src_fg": exemplar_foreground(img),
                "idx": i, "ref_idx": j, "mode": mode, "background": bg_on}

    def _placed(self, i, img):
        """The drawing anywhere on the canvas, at any size: target `img` (of glyphs `i`) and its
        user-like condition placed alike. Returns (target, condition)."""
        g, s, b = self.g, self.size, len(i)
        flip = torch.rand(b, generator=g) < 0.5
        img = torch.where(flip.view(-1, 1, 1, 1), img.flip(3), img)
        sk = torch.where(flip.view(-1, 1, 1, 1), self.sketch[i].flip(3), self.sketch[i]).float()
        place = F.affine_grid(affine_theta(b, g, scale=PLACE_SCALE, fit=True), (b, 1, s, s), align_corners=False)
        return warp(img, place, 1.0), user_condition(sk, place, g, s)

    def targets(self, n):
        """`n` training targets with their user-like conditions, placed as in `batch`, without
        exemplars or colour jitter: the batches of a UNet with `midms.unet_condition` (the unet
        stage). Returns {"image", "edge", "fill"}."""
        i = self.idx[torch.randint(len(self.idx), (n,), generator=self.g)]
        img, edge = self._placed(i, self.images[i].float() / 127.5 - 1)
        return {"image": img, "edge": edge, "fill": fill_label(edge)}

    def self_pairs(self, n):
        """`n` self-reference pairs (`batch(n, self_only=True)`): the unet stage's warp-start batches,
        whose warped exemplar should come out as the target itself."""
        return self.batch(n, self_only=True)

    def heldout_indices(self):
        """Glyphs of this split whose emoji the held-out style (Twemoji) also draws."""
        return self.idx[self.heldout_of[self.idx] >= 0]

    def _plain(self, i, exemplar_k=None, heldout=False):
        """Validation pairs: the same emoji in another style where there is one (else the neighbour
        `exemplar_k`), or with `heldout` in the held-out style; the sketch 2 px wide (at 128) in
        place, no jitter."""
        b = len(i)
        k = torch.zeros(b, dtype=torch.long) if exemplar_k is None else torch.as_tensor(exemplar_k)
        st = self.heldout_of[i] if heldout else self.same[i, 0]
        j = torch.where(st >= 0, st, self.cand[i, k])
        img = self.images[i].float() / 127.5 - 1
        ref = self.images[j].float() / 127.5 - 1
        edge = val_condition(self.sketch[i].float(), self.size)
        return {"image": img, "edge": edge, "fill": fill_label(edge), "ref": ref, "ref_edge": canny_label(ref),
                "ref_fg": exemplar_foreground(ref), "src_fg": exemplar_foreground(img), "idx": i, "ref_idx": j}


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, batcher, n, seed, make="batch"):
        self.batcher, self.n, self.seed, self.make = batcher, n, seed, make

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        self.batcher.reseed(self.seed + 100_003 * (info.id if info else 0))
        make = getattr(self.batcher, self.make)
        while True:
            yield make(self.n)


class Loader:
    """Endless training batches on `device`: made in `workers` processes (0: in this one).
    `make`: the PairBatches method that makes them ("batch": pairs; "targets": targets and
    conditions only, the unet stage's)."""

    def __init__(self, batcher, n, device, workers=0, seed=0, make="batch"):
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        if workers:
            dl = torch.utils.data.DataLoader(_Stream(batcher, n, seed, make), batch_size=None, num_workers=workers,
                                             pin_memory=pin, persistent_workers=True, prefetch_factor=4)
            self.it = iter(dl)
        else:
            batcher.reseed(seed)
            self.it = iter(_Stream(batcher, n, seed, make))

    def next(self):
        b = next(self.it)
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}


def main():
    """`python -m train.pairs --data train/data --size 128 --out pairs.png`: one batch as a grid (rows:
    target, condition, exemplar, exemplar label), to look at what training sees."""
    import argparse

    from .common import edge_to_pm1, save_grid

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train")
    ap.add_argument("--out", default="pairs.png")
    a = ap.parse_args()
    b = PairBatches(a.data, a.split, a.size, a.seed).batch(a.n)
    save_grid(a.out, [b["image"], edge_to_pm1(b["edge"]) * -1, b["ref"], edge_to_pm1(b["ref_edge"]) * -1])
    print(f"{a.out}: modes {b['mode'].tolist()} (0 self, 1 other style, 2 neighbour), "
          f"backgrounds {b['background'].int().tolist()}")


if __name__ == "__main__":
    main()
