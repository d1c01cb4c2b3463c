#!/usr/bin/env bash
# The GPU check of issue 5, as one prepared run on a GPU machine that has PyTorch but no Rust:
# build target/cuda/midm here with scripts/build-cuda.sh, carry target/cuda/midm.xz, and run
#
#   scripts/device-check.sh                  # writes its reports to $OUT (default /tmp/midm-check)
#
# 1. translates the five asset pairs on the GPU in f32, f16 and bf16 and on the CPU in f32 (same
#    seed; the noise is drawn on the host, so both devices get the same draws) and prints the
#    difference of each GPU image from the CPU image, in 8-bit levels;
# 2. `midm bench --compare-torch` on the GPU, shipped model and official size (random weights,
#    whole translations), f32, f16 and bf16, each against PyTorch on the same GPU and weights;
# 3. `midm bench --worker` on the GPU, f32 and f16: the editor's worker path on that device (runs
#    streaming every step, one cancelled half way, then run again);
# 4. `midm bench --batch 1,8,32` on the GPU (one sampler call per batch, --workers 1), f32 and
#    f16: images per second against B=1 (the batch issue's GPU target is >= 4x).
#
# MIDM_BIN and MIDM_DEVICE override the binary and the device; with MIDM_DEVICE=cpu, a CPU build
# and MIDM_SKIP_OFFICIAL=1 (the official size takes minutes per translation on a CPU) the script
# is rehearsed on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/midm-check}
bin=${MIDM_BIN:-target/cuda/midm}
device=${MIDM_DEVICE:-cuda}
runs=${MIDM_RUNS:-10}
python=${PYTHON:-python3}
mkdir -p "$out" "$out/images"
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$bin.xz" "$bin"
    chmod +x "$bin"
fi
export PYTHONUNBUFFERED=1

# cudarc loads libcublas, libcublasLt, libcurand and libnvrtc at run time; PyTorch's wheels have them.
nvidia_libs=$("$python" -c 'import nvidia, glob, os; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "lib", "lib*.so*"))})))' 2>/dev/null)
export LD_LIBRARY_PATH=${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
    "$python" -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available())'
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    "$bin" --version
} 2>&1 | tee "$out/env.txt"

# 1. Translations, GPU vs CPU.
{
    for name in cat face robot shark tulip; do
        for prec in f32 f16 bf16; do
            "$bin" translate --device "$device" --precision "$prec" --seed 0 \
                --condition "assets/${name}_sketch.png" --exemplar "assets/${name}_exemplar.png" \
                --out "$out/images/${name}_${device}_${prec}.png" 2>&1 | grep -E 'wrote|rror' ||
                echo "$name $prec on $device: FAILED"
        done
        "$bin" translate --device cpu --seed 0 \
            --condition "assets/${name}_sketch.png" --exemplar "assets/${name}_exemplar.png" \
            --out "$out/images/${name}_cpu_f32.png" 2>&1 | grep -E 'wrote|rror'
    done
    "$python" - "$out/images" "$device" <<'EOF'
import sys, os
import numpy as np
from PIL import Image
folder, device = sys.argv[1], sys.argv[2]
print(f"{'pair':<8} {'precision':<9} {'mean |d|':>9} {'max |d|':>8} {'> 8 levels':>11}   ({device} vs cpu f32, 8-bit levels)")
for name in ["cat", "face", "robot", "shark", "tulip"]:
    ref_path = os.path.join(folder, f"{name}_cpu_f32.png")
    if not os.path.exists(ref_path):
        continue
    ref = np.asarray(Image.open(ref_path), dtype=np.int32)
    for prec in ["f32", "f16", "bf16"]:
        p = os.path.join(folder, f"{name}_{device}_{prec}.png")
        if not os.path.exists(p):
            print(f"{name:<8} {prec:<9} missing")
            continue
        d = np.abs(np.asarray(Image.open(p), dtype=np.int32) - ref)
        print(f"{name:<8} {prec:<9} {d.mean():9.3f} {d.max():8d} {100 * (d > 8).mean():10.2f}%")
EOF
} 2>&1 | tee "$out/translate.txt"

# 2. Benchmarks against PyTorch on the same device and weights.
for prec in f32 f16 bf16; do
    {
        "$bin" bench --device "$device" --precision "$prec" --runs "$runs" \
            --compare-torch --torch-dir . --python "$python"
        if [ -z "${MIDM_SKIP_OFFICIAL:-}" ]; then
            "$bin" bench --device "$device" --precision "$prec" --runs "$runs" --official-only \
                --official-whole --compare-torch --torch-dir . --python "$python"
        fi
    } 2>&1 | tee "$out/bench_$prec.txt"
done

# 3. The editor's worker on the device.
for prec in f32 f16; do
    "$bin" bench --worker --device "$device" --precision "$prec" --warmup 1 --runs 5 2>&1 |
        tee "$out/worker_$prec.txt"
done

# 4. Batches: one sampler call of B pairs on the GPU.
for prec in f32 f16; do
    "$bin" bench --device "$device" --precision "$prec" --batch 1,8,32 --workers 1 \
        --warmup 1 --runs 3 2>&1 | tee "$out/batch_$prec.txt"
done
