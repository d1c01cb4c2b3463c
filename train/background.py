"""The latent of a white background, for region matching's photo case (`ops.fill_outside`):
`python -m train.background --weights weights --data train/data/v2 [--n 512] [--write]`.

It is the mean latent, under the model's own encoder, of the cells outside the glyph's shape
(`ops.region_cells(ops.exemplar_foreground(...))`) over `--n` training-split glyphs (a seeded
sample): the background the UNet saw around every training glyph. The latent of a plain white
image is not it: the encoder sees no glyph there, and model v1.3 given that latent outside a photo
sketch shifted the colours inside (the hand-drawn cat photo's IoU 0.62 against 0.73 with this mean).
`--write` stores it as `midms.background_latent` in `<weights>/config.yaml`.
"""
import argparse
import os

import numpy as np
import torch
import yaml

from .data import load
from .ops import exemplar_foreground, region_cells


@torch.no_grad()
def background_latent(model, images, batch=32):
    """images: uint8 [N, H, W, 3] -> the mean latent [C] of their cells outside their shapes."""
    total, count = None, 0
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = model.ae.encode(x)
        outside = 1 - region_cells(exemplar_foreground(x), z.shape[2:])
        part = (z.double() * outside.double()).sum((0, 2, 3))
        total = part if total is None else total + part
        count += int(outside.sum())
    return (total / count).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--data", default="train/data/v2")
    ap.add_argument("--n", type=int, default=512, help="training glyphs sampled")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="store it in <weights>/config.yaml")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from .export import load_exported

    model, cfg = load_exported(a.weights)
    d = load(a.data, cfg["midms"]["image_size"])
    train_idx = np.nonzero(d["split"] == 0)[0]
    pick = np.sort(np.random.default_rng(a.seed).choice(train_idx, min(a.n, len(train_idx)), replace=False))
    bg = [round(float(v), 4) for v in background_latent(model, d["images"][pick])]
    print(f"background latent over {len(pick)} training glyphs: {bg}")
    if a.write:
        path = os.path.join(a.weights, "config.yaml")
        with open(path) as f:
            text = f.read()
        full = yaml.safe_load(text)
        full["midms"]["background_latent"] = bg
        with open(path, "w") as f:
            yaml.safe_dump(full, f, sort_keys=False)
        print(f"wrote midms.background_latent to {path}")


if __name__ == "__main__":
    main()
