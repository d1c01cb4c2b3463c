"""The model targets (hand-drawn means, the full model against every ablation) checked on the files
the evaluations write: `python -m train.targets --drawn DRAWN.json --swd NAME=EVAL.json ...`.

DRAWN.json is `train.drawn_eval`'s output (means over its seeds); each EVAL.json is
`train.evaluate --json`'s (rows per seed; SWD averaged over the seeds). Prints one line per check
and exits 1 if any fails, so that `scripts/model-targets.sh` can say in one word whether a model
meets them. The figures of record are the full sets (`--n 886` held-out, `--n 985` validation):
on part of them close rows can order otherwise.
"""
import argparse
import json
import sys

import numpy as np

from .drawn_eval import ROWS

# Hand-drawn means: (key, target, higher is better).
DRAWN_TARGETS = [("iou", 0.85, True), ("chamfer", 2.0, False), ("colour", 0.75, True)]
# The ablations the full model must beat: drawn_eval's row names, and train.evaluate's for the same rows.
DRAWN_ABLATIONS = ["warp_only", "no_interleave", "no_mask", "no_refine"]
SWD_ABLATIONS = [ROWS[name] for name in DRAWN_ABLATIONS]


def drawn_checks(drawn):
    """[(label, ok)] for the hand-drawn means and the full row against each ablation."""
    means = drawn["means"]
    full = means["full"]
    out = []
    for key, target, higher in DRAWN_TARGETS:
        v = full[key]
        ok = v >= target if higher else v <= target
        out.append((f"hand-drawn {key} {v:.3f} {'>=' if higher else '<='} {target}", ok))
    for name in DRAWN_ABLATIONS:
        if name not in means:
            out.append((f"hand-drawn: no row {name}", False))
            continue
        for key, _, higher in DRAWN_TARGETS:
            a, b = full[key], means[name][key]
            ok = a > b if higher else a < b
            out.append((f"hand-drawn {key}: full {a:.4f} against {name} {b:.4f}", ok))
    return out


def swd_checks(label, rows_by_seed):
    """[(label, ok)]: the full row's SWD (mean over the file's seeds) below each ablation's."""
    seeds = list(rows_by_seed)

    def mean_swd(name):
        return float(np.mean([rows_by_seed[s][name]["swd"] for s in seeds]))

    if any("full" not in rows_by_seed[s] for s in seeds):
        return [(f"{label}: no full row", False)]
    full = mean_swd("full")
    out = []
    for name in SWD_ABLATIONS:
        if any(name not in rows_by_seed[s] for s in seeds):
            out.append((f"{label}: no row {name}", False))
            continue
        v = mean_swd(name)
        out.append((f"{label} SWD: full {full:.1f} against {name} {v:.1f}", full < v))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drawn", required=True, help="train.drawn_eval's JSON")
    ap.add_argument("--swd", nargs="*", default=[], metavar="NAME=FILE", help="train.evaluate's JSON, named")
    a = ap.parse_args(argv)
    checks = drawn_checks(json.load(open(a.drawn)))
    for item in a.swd:
        name, _, path = item.partition("=")
        checks += swd_checks(name, json.load(open(path)))
    for text, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    missed = sum(not ok for _, ok in checks)
    print(f"{len(checks) - missed} of {len(checks)} checks met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
