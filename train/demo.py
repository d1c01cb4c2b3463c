"""Translate the assets/ examples with the exported model: `python -m train.demo [--out weights/samples.png]`.

Grid rows: sketch, exemplar, MIDM output, warp-only output, the glyph the sketch came from.
"""
import argparse
import glob
import os

import numpy as np
import torch
from PIL import Image

from .common import save_grid
from .data import edge_map
from .evaluate import warp_only


def load_assets(folder="assets"):
    sk, ex, exl, tg, names = [], [], [], [], []
    for s in sorted(glob.glob(os.path.join(folder, "*_sketch.png"))):
        name = os.path.basename(s)[: -len("_sketch.png")]
        e = np.asarray(Image.open(s).convert("L"), np.float32) / 255.0
        x = np.asarray(Image.open(os.path.join(folder, f"{name}_exemplar.png")).convert("RGB"), np.uint8)
        t = os.path.join(folder, f"{name}_target.png")
        t = np.asarray(Image.open(t).convert("RGB"), np.uint8) if os.path.exists(t) else np.full_like(x, 255)
        sk.append(torch.from_numpy((e > 0.5).astype(np.float32))[None])
        exl.append(torch.from_numpy(edge_map(x))[None])
        ex.append(torch.from_numpy(x).permute(2, 0, 1).float() / 127.5 - 1)
        tg.append(torch.from_numpy(t).permute(2, 0, 1).float() / 127.5 - 1)
        names.append(name)
    return torch.stack(sk), torch.stack(ex), torch.stack(exl), torch.stack(tg), names


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--out", default="weights/samples.png")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from .export import load_exported

    model, _ = load_exported(a.weights)
    sk, ex, exl, tg, names = load_assets()
    out, _ = model.translate(sk, ex, exl, generator=torch.Generator().manual_seed(a.seed))
    warp = warp_only(model, sk, ex, exl)
    rows = [sk * 2 - 1, ex, out, warp, tg]
    big = [torch.nn.functional.interpolate(r, scale_factor=2, mode="nearest") for r in rows]
    save_grid(a.out, big)
    print(f"{a.out}: columns {names}; rows sketch, exemplar, MIDM, warp only, source glyph")


if __name__ == "__main__":
    main()
