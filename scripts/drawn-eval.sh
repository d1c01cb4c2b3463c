#!/usr/bin/env bash
# The hand-drawn evaluations (nothing is regenerated here): the model in WEIGHTS (default weights/)
# on every pair of both hand-drawn sets, seeds 0 and 1, all rows (full, warp_only, no_interleave,
# no_mask, no_refine, no_colour, exemplar):
# - the first set (assets/drawn, made by `python -m train.drawn`; models are chosen on it)
#   -> WEIGHTS/drawn_eval.json (per pair, per row, means) and WEIGHTS/drawn.png (contact sheet:
#   sketch | exemplar | full output of each seed | ablations at seed 0);
# - the test set (assets/drawn-test, `python -m train.drawn_test`; never used to choose)
#   -> WEIGHTS/drawn_test_eval.json and WEIGHTS/drawn_test.png.
# The markdown tables go to stdout. PyTorch on the CPU, 2 threads (about 3 and 5 minutes on 2 cores
# for the shipped model). Further arguments (--compact PATH, --variants ...) go to the first set's run. scripts/drawn-demo.sh is the older,
# Rust-binary demo.
set -eu
weights=${1:-weights}
python3 -m train.drawn_eval --weights "$weights" --seeds 0 1 --threads 2 \
    --json "$weights/drawn_eval.json" --sheet "$weights/drawn.png" "${@:2}"
python3 -m train.drawn_eval --weights "$weights" --set assets/drawn-test --seeds 0 1 --threads 2 \
    --json "$weights/drawn_test_eval.json" --sheet "$weights/drawn_test.png"
