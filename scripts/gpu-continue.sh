#!/usr/bin/env bash
# Continues the shipped model on one NVIDIA GPU inside a time budget, the way models v1.9-v1.11
# were trained on the CPU but with GPU batches: the UNet that sees the drawing (`unet --seed-from
# EXPORT --unet-condition --t-max 260`), then the re-matching network alone on that UNet (`e2e
# --train-nets iter_enc`). Each candidate is exported in float16 and scored on the machine that
# trained it, on the measures that chose model v1.11 (the 256 held-out pairs with resamples,
# train.evaluate --bootstrap; the hand-drawn set, train.drawn_eval), not by a stage's own score.
#   SITE=.carry/site PACKS=.carry/packs bash scripts/gpu-continue.sh FONT SECONDS [EXPORT]
# FONT: NotoColorEmoji.ttf (carried: the GPU machine has no package registry); SECONDS: wall-clock
# budget, packing included; EXPORT: the model to continue (default weights). `.carry/` is filled by
# scripts/prepare-gpu-carry.sh. DATA=DIR uses a data set already built (train.data --size 128);
# DEVICE=cpu runs the same script on the CPU with a short budget, a dry run, so that no GPU minute
# is spent on a bug in it (N_HELDOUT=8 DRAWN_SEEDS=0 shorten its scoring). UNET_S, SCORE_S: seconds
# for the UNet stage and for scoring and packing; UNET_BATCH, E2E_BATCH, WORKERS (data processes,
# default 10 of the host's 16 vCPUs: one makes a UNet batch of 128 in 0.29 s on a Zen 4 core, and the
# H200 took 10 a second with six while the steps still waited on the host each step);
# X0_TEXTURE, X0_TEXTURE_N: the UNet's texture term (`--x0-texture`; 0 turns it off), which narrowed
# the full model's held-out SWD gaps to no mask and no refinement on the CPU (train/README.md).
# Into $OUT: per candidate (e2e and unet, side by side; base with SCORE_BASE=1) its hand-drawn and
# held-out figures, and the
# float16 weights of the trained ones in 15 MiB parts (cat them back together): more files than the
# device tool returns (8), so on a device run it through scripts/device-lease.sh, which packs them.
. "$(dirname "$0")/gpu-common.sh"
init=${init:-weights}
runs=/tmp/midm-continue
# A fresh start: a run folder left by an earlier call would be resumed, not continued from EXPORT.
rm -rf "$runs"
mkdir -p "$runs"
threads=$(nproc)
monitor_gpu "$out/gpu-util.csv" 5
python3 -c "import torch, scipy, skimage, safetensors, yaml; print('torch', torch.__version__)" || exit 1

data=${DATA:-}
if [ -z "$data" ]; then
    data=/tmp/midm-data
    python3 -m train.data --out "$data" --size 128 --font "$font" ${PACKS:+--packs "$PACKS"} >"$out/data.log" 2>&1 ||
        { tail -n 20 "$out/data.log"; exit 1; }
fi
log "data ready"

# Seconds kept for scoring and packing; the rest goes to training, 3/5 to the UNet (the held-out
# gaps point at it) unless set.
score_s=${SCORE_S:-200}
train_s=$(($(left) - score_s))
unet_s=${UNET_S:-$((train_s * 3 / 5))}
common=(--data "$data" --device "$device" --threads "$threads" --steps 1000000 --finish-on-timeout --workers "${WORKERS:-10}")

python3 -m train.train unet --run "$runs/unet" --seed-from "$init" --unet-condition "${common[@]}" \
    --minutes "$(python3 -c "print($unet_s / 60)")" --batch "${UNET_BATCH:-64}" --lr 1e-4 --ema 0.999 --t-max 260 \
    --x0-texture "${X0_TEXTURE:-0.01}" --x0-texture-n "${X0_TEXTURE_N:-16}" >"$out/unet.log" 2>&1
log "unet stage exit $?"
python3 -m train.export --run "$runs/unet" --out "$runs/x-unet" --dtype f16 >>"$out/unet.log" 2>&1 &&
    log "unet candidate exported" || log "unet export failed"

e2e_s=$(($(left) - score_s - 20))
if [ -f "$runs/x-unet/model.safetensors" ] && [ "$e2e_s" -gt 30 ]; then
    python3 -m train.train e2e --run "$runs/e2e" --seed-from "$runs/x-unet" "${common[@]}" \
        --minutes "$(python3 -c "print($e2e_s / 60)")" --batch "${E2E_BATCH:-32}" --lr 3e-5 \
        --w-perc 0 --w-style 0 --w-colour 0 --iter-align 10 --unet-lr 0 --train-nets iter_enc --corr-ema 0.99 \
        >"$out/e2e.log" 2>&1
    log "e2e stage exit $?"
    # Its last step's raw weights: the kind of checkpoint that scored best for model v1.11.
    python3 -m train.export --run "$runs/e2e" --out "$runs/x-e2e" --state "$runs/e2e/e2e/ckpt.pt" --dtype f16 \
        >>"$out/e2e.log" 2>&1 && log "e2e candidate exported" || log "e2e export failed"
fi
[ -n "$smi" ] && kill $smi 2>/dev/null
for s in unet e2e; do
    [ -f "$runs/$s/$s/losses.csv" ] && cp "$runs/$s/$s/losses.csv" "$out/$s.losses.csv"
done

# The candidates are scored side by side, each in its own process on the GPU: one after the other
# they did not fit (2026-12-04, H200: 256 held-out pairs with four variants ran out of 150 s; both
# candidates side by side with three variants took 154 s, the hand-drawn set 7 s each). The shipped
# model's figures are known from the CPU; SCORE_BASE=1 scores it too. The first 256 of the 886
# held-out pairs fit the lease; a candidate chosen by them is scored on all 886 on the CPU before it
# ships (the model card's figure: on the first 256 alone the close rows can order otherwise).
half=$((threads > 1 ? threads / 2 : 1))
score() { # name weights
    timeout "$(($(left) - 20))" python3 -m train.drawn_eval --weights "$2" --seeds ${DRAWN_SEEDS:-0 1} \
        --threads "$half" --device "$device" --variants full no_interleave no_mask no_refine \
        --json "$out/$1.drawn.json" >"$out/$1.drawn.log" 2>&1
    log "$1 hand-drawn exit $?"
    timeout "$(($(left) - 20))" python3 -m train.evaluate --weights "$2" --data "$data" --pairs heldout \
        --n "${N_HELDOUT:-256}" --seeds 0 --threads "$half" --device "$device" --bootstrap 20 \
        --variants full no_refinement no_mask --json "$out/$1.heldout.json" >"$out/$1.heldout.log" 2>&1
    log "$1 held-out exit $?"
}
for c in e2e unet; do
    [ -f "$runs/x-$c/model.safetensors" ] && score "$c" "$runs/x-$c" &
done
[ -n "${SCORE_BASE:-}" ] && score base "$init" &
wait
for c in unet e2e; do
    [ -f "$runs/x-$c/model.safetensors" ] || continue
    cp "$runs/x-$c/config.yaml" "$out/$c.config.yaml"
    split -b 15M "$runs/x-$c/model.safetensors" "$out/$c.safetensors.part-"
done
ls -la "$out"
log "done"
