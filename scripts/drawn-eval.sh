#!/usr/bin/env bash
# The hand-drawn evaluation (assets/drawn, made by `python -m train.drawn`; nothing is regenerated
# here): the model in WEIGHTS (default weights/) on every pair, seeds 0 and 1, all rows (full,
# warp_only, no_interleave, no_mask, no_refine, exemplar) -> WEIGHTS/drawn_eval.json (per pair,
# per row, means) and WEIGHTS/drawn.png (contact sheet: sketch | exemplar | full output of each
# seed | ablations at seed 0); the markdown table goes to stdout. PyTorch on the CPU, one thread
# (16 minutes on one shared core for the shipped model). scripts/drawn-demo.sh is the older, Rust-binary demo.
set -eu
weights=${1:-weights}
python3 -m train.drawn_eval --weights "$weights" --seeds 0 1 \
    --json "$weights/drawn_eval.json" --sheet "$weights/drawn.png" "${@:2}"
