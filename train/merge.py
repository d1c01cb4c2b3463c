"""Put a half-precision export back onto the model it continued: `python -m train.merge --base weights
--trained EXPORT --out DIR`.

A device run exports in float16 (the device tool returns at most 64 MiB), which rounds every tensor,
also those the run never trained (the autoencoder, the first matching networks). Shipping that
export as is changes the frozen parts by their rounding: enough to move latents across VQ decision
boundaries (model v1.12's first candidate, 2026-12-04: no asset pair gave the parity fixture clear
margins). This keeps the base's own tensors wherever the export holds exactly their rounding, and
takes the others (what the run trained) from the export, in the base's dtype. The config comes from
the export.
"""
import argparse
import os
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def merge(base, trained):
    """(merged tensors, names taken from `trained`); both dicts share their keys."""
    if set(base) != set(trained):
        raise SystemExit(f"the two models differ in tensors: {sorted(set(base) ^ set(trained))[:5]} ...")
    out, taken = {}, []
    for k, b in base.items():
        t = trained[k]
        if t.shape != b.shape:
            raise SystemExit(f"{k}: shape {tuple(t.shape)} against the base's {tuple(b.shape)}")
        if torch.equal(b.to(t.dtype), t):
            out[k] = b
        else:
            out[k] = t.to(b.dtype)
            taken.append(k)
    return out, taken


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the exported model the run continued (float32)")
    ap.add_argument("--trained", required=True, help="the run's export (e.g. float16)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out, taken = merge(load_file(os.path.join(a.base, "model.safetensors")),
                       load_file(os.path.join(a.trained, "model.safetensors")))
    with safe_open(os.path.join(a.trained, "model.safetensors"), "pt") as f:
        meta = dict(f.metadata() or {})
    meta["base"] = a.base
    os.makedirs(a.out, exist_ok=True)
    save_file(out, os.path.join(a.out, "model.safetensors"), metadata=meta)
    shutil.copy(os.path.join(a.trained, "config.yaml"), os.path.join(a.out, "config.yaml"))
    groups = sorted({k.split(".")[0] if not k.startswith("diff_model") else ".".join(k.split(".")[:3]) for k in taken})
    print(f"{len(taken)} of {len(out)} tensors from {a.trained} ({', '.join(groups)}), the rest from {a.base}")


if __name__ == "__main__":
    main()
