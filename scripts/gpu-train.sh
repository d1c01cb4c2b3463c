#!/usr/bin/env bash
# Trains the 128x128 emoji model on one NVIDIA GPU inside a time budget, and packs the result into
# $OUT (the device tool's return folder: at most 8 files of 16 MiB).
#   scripts/gpu-train.sh FONT SECONDS [EXPORT]
# FONT: NotoColorEmoji.ttf (the GPU machine has no package registry: carry it); SECONDS: wall-clock
# budget of this script, packing included; EXPORT: an exported model to continue (e.g. weights)
# instead of training from scratch. PACKS=DIR in the environment adds the iconify-json tarballs in DIR
# as more styles (train.data --packs; `npm pack @iconify-json/fluent-emoji-flat` etc.; twemoji in DIR
# is held out). RECIPE=v2 trains model v2 (train.pairs, config.RECIPE_V2): from an EXPORT of model v1
# or v1.1 it keeps the autoencoder, UNet and decoder and trains new correspondence networks. VGG=FILE (the
# output of `python -m train.vgg`, carried) puts its perceptual and contextual losses on VGG16
# features. AE_ANCHOR=A first fine-tunes the EXPORT's autoencoder for colour (train.pipeline
# --ae-anchor: its latents held near the export's with weight A; models v1 and v1.1 turn green brown), so
# that the UNet, decoder and matching stages then train on its latents (the decoder stage with the
# same colour terms). CORR_EMA=D validates and finishes the matching stages with an average of their
# weights (train.train --corr-ema; checked on the CPU only). AMP=bf16 trains under bf16
# autocast (not yet run on a GPU). DTYPE=f16 exports float16 weights. With RECIPE=v2 the export is then
# scored on the hand-drawn set (train.drawn_eval, seed 0) into $OUT.
. "$(dirname "$0")/gpu-common.sh"
data=/tmp/midm-data
runs=/tmp/midm-runs
mkdir -p "$data" "$runs"
monitor_gpu "$runs/gpu-util.csv" 10
python3 -c "import torch, skimage, fontTools, safetensors, yaml, tqdm${PACKS:+, resvg_py}; print('torch', torch.__version__, torch.cuda.get_device_name() if '$device' == 'cuda' else 'cpu')" || exit 1

python3 -m train.data --out "$data" --size 128 --font "$font" ${PACKS:+--packs "$PACKS"} || exit 1
echo "data built at +$(( $(date +%s) - start )) s"

pack_s=25
[ "${RECIPE:-v1}" = v2 ] && pack_s=120  # and the hand-drawn evaluation
minutes=$(python3 -c "print(($(left) - $pack_s) / 60)")
echo "pipeline: $minutes min"
python3 -m train.pipeline --run "$runs/gpu128" --data "$data" --size 128 --device "$device" --minutes "$minutes" \
    ${init:+--init-from "$init"} --recipe "${RECIPE:-v1}" ${VGG:+--vgg "$VGG"} ${AE_ANCHOR:+--ae-anchor "$AE_ANCHOR"} ${CORR_EMA:+--corr-ema "$CORR_EMA"} --amp "${AMP:-f32}" --shares 0.28 0.55 0.92 \
    --dtype "${DTYPE:-f32}" >"$runs/gpu128.log" 2>&1
rc=$?
echo "gpu128 pipeline exit $rc"
[ -n "$smi" ] && kill $smi 2>/dev/null

# The pipeline's last step is the export (train.pipeline.export_run: in $DTYPE, with its own
# background latent). A run that stopped early still exports its latest finished stage the same way.
if [ "$rc" -ne 0 ]; then
    python3 -c "import sys; from train.pipeline import export_run; export_run(*sys.argv[1:])" \
        "$runs/gpu128" "$data" "${DTYPE:-f32}"
fi
(cd "$runs/gpu128/export" && split -b 15M model.safetensors "$out/w128.safetensors.part-" && cp config.yaml "$out/")
(cd "$runs" && tar czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='model*.safetensors' .)
if [ "${RECIPE:-v1}" = v2 ]; then
    python3 -m train.drawn_eval --weights "$runs/gpu128/export" --variants full exemplar --seeds 0 --threads 8 \
        --json "$out/drawn_eval.json" --sheet "$out/drawn.png" | tail -n 12
fi
ls -la "$out"
echo "done at +$(( $(date +%s) - start )) s"
