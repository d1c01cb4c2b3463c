"""How well the editor gallery's ranking by outline (`src/sampling/silhouette.rs`) finds an
exemplar of the sketched emoji, on the held-out pairs of the data set:
`python -m train.rank_eval --data DATA [--n 300]`.

Each of the first N held-out pairs (`train.pairs`: the one-line sketch of a validation emoji drawn
2 px wide, its exemplar the same emoji in Twemoji, the held-out style) ranks all N exemplars by
the Rust rule, written here again over the trainer's ops:
- the sketch's shape: what its lines enclose, lines included, and its open strokes
  (`ops.fill_label`, `ops.open_stroke_pixels`); the exemplar's: its non-white pixels and what
  they enclose (`ops.exemplar_foreground`);
- each cropped to its bounding box, area-resampled to 32x32 (`F.interpolate(mode="area")`, the
  spans of the Rust resample) and kept where more than half inside;
- similarity: the grids' intersection over union times the smaller of the two boxes' aspect
  ratios over the larger.
It prints where each sketch's own exemplar ranks (mean, first, in the top 3 and 10; chance is
(N + 1) / 2). Exemplars of the same outline tie (Twemoji draws most faces as one circle), so a tie
counts half in the own exemplar's favour: rank 1 + (scores above) + (other equal scores) / 2. The hand-drawn assets
are measured by the Rust code itself: `cargo test --release --test rank_shipped -- --ignored
--nocapture`.
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F

from .ops import exemplar_foreground, fill_label, open_stroke_pixels

GRID = 32


def sketch_shapes(label):
    """[B, 1, H, W] line label (1 = line) -> [B, H, W] bool: the drawn shapes."""
    lines = (label > 0.5).float()
    filled = fill_label(lines)
    return torch.maximum(filled, open_stroke_pixels(lines, filled))[:, 0] > 0.5


def silhouette(mask):
    """[H, W] bool -> (the GRID x GRID bool grid of its bounding box, the box's width / height),
    or None for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(ys) == 0:
        return None
    box = torch.as_tensor(np.asarray(mask)[ys.min():ys.max() + 1, xs.min():xs.max() + 1], dtype=torch.float32)
    grid = F.interpolate(box[None, None], size=(GRID, GRID), mode="area")[0, 0] > 0.5
    return grid.numpy(), (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)


def similarity(a, b):
    """Of two `silhouette`s: IoU of the grids times the smaller aspect ratio over the larger."""
    if a is None or b is None:
        return 0.0
    (ga, ra), (gb, rb) = a, b
    iou = (ga & gb).sum() / max((ga | gb).sum(), 1)
    return float(iou * min(ra / rb, rb / ra))


def own_ranks(sketches, exemplars):
    """Lists of `silhouette`s, pair i = (sketches[i], exemplars[i]) -> each sketch's own exemplar's
    rank among all exemplars (1 = first; a tie counts half)."""
    ranks = []
    for i, s in enumerate(sketches):
        scores = np.array([similarity(s, e) for e in exemplars])
        ranks.append(1 + (scores > scores[i]).sum() + ((scores == scores[i]).sum() - 1) / 2)
    return np.array(ranks)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    from .pairs import PairBatches

    val = PairBatches(a.data, "val", size=a.size, seed=0)
    idx = val.heldout_indices()[:a.n]
    batch = val._plain(idx, heldout=True)
    sketches = [silhouette(m) for m in sketch_shapes(batch["edge"])]
    exemplars = [silhouette(m) for m in exemplar_foreground(batch["ref"])[:, 0] > 0.5]
    r = own_ranks(sketches, exemplars)
    n = len(r)
    print(f"{n} held-out sketches, {n} Twemoji exemplars: own exemplar mean rank {r.mean():.1f} "
          f"(chance {(n + 1) / 2:.1f}), first {(r == 1).sum()}, top 3 {(r <= 3).sum()}, top 10 {(r <= 10).sum()}")


if __name__ == "__main__":
    main()
