#!/usr/bin/env bash
# One device call for a whole lease, when a lease has to serve both the CUDA check (issues 17, 18)
# and the model (issue 14): each device call starts a fresh machine (a minute or more of a
# 15-minute lease), so both run in one command. Carry .carry/NotoColorEmoji.ttf, .carry/packs,
# .carry/site, target/cuda/midm.xz (and .lease/, below):
#
#   bash scripts/device-lease.sh SECONDS     # e.g. 570 inside a 600 s device call
#
# 1. builds the training data in the background (niced, 6 of the machine's cores) while
# 2. scripts/device-check.sh runs its parts (PARTS, below) for CHECK_S seconds (default 240), then
# 3. scripts/gpu-continue.sh continues the shipped model for the rest of the budget, and
# 4. packs everything for the device tool's return limit (8 files of 16 MiB): results.tar.gz.part-* (all
#    reports, logs, scores and images) and the candidates' float16 weights in 15 MiB parts.
# Back here, before shipping a candidate: `python -m train.merge --base weights --trained CANDIDATE --out
# DIR` keeps the tensors the run did not train at their float32 values (float16 rounds them all).
# What travels must stay under the device tool's 64 MiB: the binary (13 MB), .carry/ without its
# VGG file (19 MB) and the weights (35 MB) do not fit beside tests/ and docs/. So the weights travel
# xz-compressed in .lease/ (scripts/prepare-gpu-carry.sh writes it), and for the call tests/, docs/,
# screenshots/ and the big files of weights/ are taken out of the index and ignored, then put back
# (2026-12-04: 63.6 MiB travelled):
#   git rm -r -q --cached tests docs screenshots weights/model.safetensors weights/drawn.png
#   printf '/tests/\n/docs/\n/screenshots/\n/weights/model.safetensors\n/weights/drawn.png\n' >> .git/info/exclude
#   ... the device call ...;  git reset -q, and drop those lines from .git/info/exclude
# DATA=DIR skips the data build (an existing train.data --size 128 folder).
# DEVICE=cpu MIDM_DEVICE=cpu MIDM_BIN=target/release/midm MIDM_SKIP_OFFICIAL=1 rehearses it on a CPU.
set -u
cd "$(dirname "$0")/.."
budget=${1:?seconds}
final=${OUT:-/tmp/lease-out}
work=/tmp/lease
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
rm -rf "$work"
# The shipped weights may travel compressed (.lease/model.safetensors.xz, with its sha256): the
# working tree that travels is capped at 64 MiB, and the weights, the binary and .carry/ nearly fill it.
if [ ! -f weights/model.safetensors ] && [ -f .lease/model.safetensors.xz ]; then
    python3 scripts/unxz.py .lease/model.safetensors.xz weights/model.safetensors
    sha256sum -c .lease/model.sha256 || exit 1
fi
mkdir -p "$work/check" "$work/continue" "$final"
export PYTHONUNBUFFERED=1

data=${DATA:-/tmp/midm-data}
[ -n "${DATA:-}" ] && echo "data given" >"$work/data.log" ||
(PYTHONPATH=$PWD/.carry/site nice -n 19 python3 -m train.data --out "$data" --size 128 \
    --font .carry/NotoColorEmoji.ttf --packs .carry/packs --jobs 6 >"$work/data.log" 2>&1
    echo "data exit $? at +$(($(date +%s) - start)) s" >>"$work/data.log") &
data_pid=$!

# The next lease's check (2026-12-04): the translations (the norms now take candle-nn's fused layer
# norm off the CPU), the official size (fixed since it failed), the worker (its exit), the norms side
# by side and a kernel profile; the batch and PyTorch parts ran on 2026-12-04 (docs/gpu-runs).
OUT=$work/check CHECK_S=${CHECK_S:-240} MIDM_RUNS=${MIDM_RUNS:-5} PARTS=${PARTS:-translate official profile norms worker} \
    bash scripts/device-check.sh >"$work/check.log" 2>&1
echo "check done at +$(($(date +%s) - start)) s" | tee -a "$work/check.log"
wait "$data_pid"
tail -n 3 "$work/data.log"

# 20 s kept for packing.
OUT=$work/continue DATA=$data SITE=.carry/site PACKS=.carry/packs \
    bash scripts/gpu-continue.sh .carry/NotoColorEmoji.ttf "$(($(left) - 20))" >"$work/continue.log" 2>&1
echo "continue done at +$(($(date +%s) - start)) s" | tee -a "$work/continue.log"

mv "$work"/continue/*.part-* "$final"/ 2>/dev/null
# In 15 MiB parts too (usually one): `cat results.tar.gz.part-* | tar xz`.
tar czf - -C "$work" . | split -b 15M - "$final/results.tar.gz.part-"
ls -la "$final"
cat "$work/check/compare.txt" "$work/check/batch.txt" "$work/check/profile.txt" 2>/dev/null | grep -vE '^(wrote|  )' | tail -n 60
cat "$work/continue/steps.log" 2>/dev/null
