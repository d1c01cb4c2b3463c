#!/usr/bin/env bash
# The model targets in one command: the hand-drawn set (assets/drawn, seeds 0 and 1, every row) and
# the SWD of the full model and every ablation on all held-out pairs (Twemoji exemplars) and all
# validation pairs (exemplars in the training styles), then `train.targets` says which targets are
# met (exit 1 if any is missed).
#   scripts/model-targets.sh [WEIGHTS] [DATA] [OUT]
# WEIGHTS: the model folder (default weights); DATA: the data set `train/README.md` builds (default
# train/data); OUT: where the three JSONs and the contact sheet go (default target/model-targets;
# the committed weights/*.json stay as they are). THREADS (default 2); N_HELDOUT / N_VAL (default
# 886 / 985, every pair there is; fewer for a quick look, which can order close rows otherwise).
# Measured for model v1.12 on 2 cores: hand-drawn 3-4 min, held-out about an hour, validation 37 min;
# the quick form N_HELDOUT=8 N_VAL=8 took 5 min and exited 1: on 8 pairs no refinement edged the full
# model's held-out SWD (184.1 against 184.3).
set -eu
weights=${1:-weights}
data=${2:-train/data}
out=${3:-target/model-targets}
threads=${THREADS:-2}
mkdir -p "$out"
# drawn-eval.sh's own --json and --sheet (into WEIGHTS) are overridden: the later flags win.
scripts/drawn-eval.sh "$weights" --threads "$threads" --json "$out/drawn_eval.json" --sheet "$out/drawn.png"
rows="full no_refinement no_mask no_interleaving warp_only"
python3 -m train.evaluate --weights "$weights" --data "$data" --pairs heldout --n "${N_HELDOUT:-886}" \
    --seeds 0 --threads "$threads" --variants $rows --bootstrap 20 --json "$out/heldout.json"
python3 -m train.evaluate --weights "$weights" --data "$data" --pairs authors --n "${N_VAL:-985}" \
    --seeds 0 --threads "$threads" --variants $rows --json "$out/validation.json"
python3 -m train.targets --drawn "$out/drawn_eval.json" \
    --swd heldout="$out/heldout.json" validation="$out/validation.json"
