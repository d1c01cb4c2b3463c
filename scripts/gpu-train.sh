#!/usr/bin/env bash
# Trains the emoji model at 128x128 and at 64x64 side by side on one NVIDIA GPU, inside a time budget,
# and packs the results into $OUT (the device tool's return folder: at most 8 files of 16 MiB).
#   scripts/gpu-train.sh FONT SECONDS
# FONT: NotoColorEmoji.ttf (the GPU machine has no package registry: carry it); SECONDS: wall-clock
# budget of this script, packing included.
set -u
font=$1
budget=$2
start=$(date +%s)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
data=/tmp/midm-data
runs=/tmp/midm-runs
mkdir -p "$data" "$runs"
left() { echo $((budget - ($(date +%s) - start))); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, skimage, fontTools, safetensors, yaml, tqdm; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 >"$runs/gpu-util.csv" 2>&1 &
smi=$!

python3 -m train.data --out "$data" --size 128 --font "$font" &
d128=$!
python3 -m train.data --out "$data" --size 64 --font "$font" &
d64=$!
wait $d128 && wait $d64 || exit 1
echo "data built at +$(( $(date +%s) - start )) s"

pack_s=35
minutes=$(python3 -c "print(($(left) - $pack_s) / 60)")
echo "pipelines: $minutes min each"
python3 -m train.pipeline --run "$runs/gpu128" --data "$data" --size 128 --device cuda --minutes "$minutes" \
    --n-embed 2048 --shares 0.28 0.55 0.92 >"$runs/gpu128.log" 2>&1 &
p128=$!
python3 -m train.pipeline --run "$runs/gpu64" --data "$data" --size 64 --device cuda --minutes "$minutes" \
    --n-embed 2048 --shares 0.28 0.55 0.92 >"$runs/gpu64.log" 2>&1 &
p64=$!
wait $p128; echo "gpu128 pipeline exit $?"
wait $p64; echo "gpu64 pipeline exit $?"
kill $smi 2>/dev/null

# Pack: a run that stopped early still exports its latest finished stage.
for r in gpu128 gpu64; do
    [ -f "$runs/$r/export/model.safetensors" ] || python3 -m train.export --run "$runs/$r" --out "$runs/$r/export"
done
# The 128 model in float32; the 64 model in float16 (both in float32 would pass the 64 MiB return limit).
python3 - "$runs" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
r = sys.argv[1] + "/gpu64/export/model.safetensors"
try:
    save_file({k: v.half() for k, v in load_file(r).items()}, r.replace(".safetensors", ".f16.safetensors"))
except Exception as e:
    print("f16 conversion failed:", e)
EOF
(cd "$runs/gpu128/export" && split -b 15M model.safetensors "$out/w128.safetensors.part-")
(cd "$runs/gpu64/export" && split -b 15M model.f16.safetensors "$out/w64-f16.safetensors.part-")
(cd "$runs" && tar czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='model*.safetensors' .)
ls -la "$out"
echo "done at +$(( $(date +%s) - start )) s"
