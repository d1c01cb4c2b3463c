#!/usr/bin/env bash
# The GPU check of issues 17 and 18, as one prepared run on a GPU machine that has PyTorch but no
# Rust: build target/cuda/midm here with scripts/build-cuda.sh, carry target/cuda/midm.xz, and run
#
#   scripts/device-check.sh                  # writes its reports to $OUT (default /tmp/midm-check)
#
# Parts, in the order of PARTS (default: translate batch worker bench official), each skipped or cut
# once CHECK_S seconds (default 480) have passed, so that the cheap, required figures come first:
#   translate: the five asset pairs on the GPU in f32, f16 and bf16 and on the CPU in f32 (same seed;
#     the noise is drawn on the host, so both devices get the same draws): the difference of each GPU
#     image from the CPU image in 8-bit levels, and the confidence-mask cells that flipped (counted
#     separately: one flipped cell swaps the re-warp for the estimate there);
#   batch: `midm bench --batch 1,8,32` (one sampler call per batch, --workers 1), f32 and f16: images
#     per second against B=1 (the batch issue's GPU target is >= 4x);
#   worker: `midm bench --worker`, f32 and f16: the editor's worker path on that device (runs
#     streaming every step, one cancelled half way, then run again);
#   bench: `midm bench --compare-torch` on the shipped model, f32, f16 and bf16, each against
#     PyTorch on the same GPU and weights;
#   official: the same at the official CelebA-HQ size (random weights, whole translations timed),
#     in OFFICIAL_PRECISIONS (default f32 f16).
# Two more parts, not in the default list (name them in PARTS):
#   norms: `midm bench` in f32 and f16 with the norms as candle-nn's fused layer norm (the default
#     off the CPU, `kernels::rows_norm`) and as the composite ops (`MIDM_NORM=composite`), in turns;
#   profile: one shipped-model translation (f32, cat pair) under Nsight Compute, every kernel's
#     GPU time (`ncu --metrics gpu__time_duration.sum`), summed per kernel name by
#     scripts/ncu_summary.py: launches, GPU-busy time against the translation's wall time.
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
parts=${PARTS:-translate batch worker bench official}
start=$(date +%s)
left() { echo $((${CHECK_S:-480} - ($(date +%s) - start))); }
mkdir -p "$out" "$out/images"
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    "$python" scripts/unxz.py "$bin.xz" "$bin"
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
    lscpu | grep -E '^Model name|^CPU\(s\)'
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    "$bin" --version
} 2>&1 | tee "$out/env.txt"

translate_pair() { # name device precision
    "$bin" translate --device "$2" --precision "$3" --seed 0 \
        --condition "assets/${1}_sketch.png" --exemplar "assets/${1}_exemplar.png" \
        --out "$out/images/${1}_${2}_${3}.png" --steps-dir "$out/images/${1}_${2}_${3}_steps" 2>&1 |
        grep -E 'wrote|rror' || echo "$1 $3 on $2: FAILED"
    # Only the masks are compared; the other step images would overrun the return limit.
    find "$out/images/${1}_${2}_${3}_steps" -type f ! -name '*_mask.png' -delete 2>/dev/null
}

part_translate() {
    for name in cat face robot shark tulip; do
        translate_pair "$name" cpu f32
        for prec in f32 f16 bf16; do translate_pair "$name" "$device" "$prec"; done
    done
}

# Run after the parts, outside their budget (seconds): what the translate part wrote, compared.
compare_translations() {
    "$python" - "$out/images" "$device" <<'EOF'
import sys, os, glob
import numpy as np
from PIL import Image
folder, device = sys.argv[1], sys.argv[2]
load = lambda p: np.asarray(Image.open(p).convert("L" if "mask" in p else "RGB"), dtype=np.int32)
print(f"{'pair':<8} {'precision':<9} {'mean |d|':>9} {'max |d|':>8} {'> 8 levels':>11} {'mask flips':>11}"
      f"   ({device} vs cpu f32: image in 8-bit levels; mask pixels that changed side, all steps)")
for name in ["cat", "face", "robot", "shark", "tulip"]:
    ref_path = os.path.join(folder, f"{name}_cpu_f32.png")
    if not os.path.exists(ref_path):
        continue
    ref = load(ref_path)
    ref_masks = sorted(glob.glob(os.path.join(folder, f"{name}_cpu_f32_steps", "*_mask.png")))
    for prec in ["f32", "f16", "bf16"]:
        p = os.path.join(folder, f"{name}_{device}_{prec}.png")
        if not os.path.exists(p):
            print(f"{name:<8} {prec:<9} missing")
            continue
        d = np.abs(load(p) - ref)
        flips, cells = 0, 0
        for m in ref_masks:
            q = m.replace("_cpu_f32_steps", f"_{device}_{prec}_steps")
            if os.path.exists(q):
                a, b = load(m) > 127, load(q) > 127
                flips, cells = flips + int((a != b).sum()), cells + a.size
        flip = f"{100 * flips / cells:10.2f}%" if cells else "       n/a"
        print(f"{name:<8} {prec:<9} {d.mean():9.3f} {d.max():8d} {100 * (d > 8).mean():10.2f}% {flip}")
EOF
}

part_batch() {
    for prec in f32 f16; do
        "$bin" bench --device "$device" --precision "$prec" --batch 1,8,32 --workers 1 --warmup 1 --runs 3 2>&1
    done
}

part_worker() {
    for prec in f32 f16; do
        "$bin" bench --worker --device "$device" --precision "$prec" --warmup 1 --runs 5 2>&1
    done
}

part_bench() {
    for prec in f32 f16 bf16; do
        "$bin" bench --device "$device" --precision "$prec" --runs "$runs" --compare-torch --torch-dir . --python "$python" 2>&1
    done
}

part_official() {
    [ -n "${MIDM_SKIP_OFFICIAL:-}" ] && { echo "skipped (MIDM_SKIP_OFFICIAL)"; return; }
    for prec in ${OFFICIAL_PRECISIONS:-f32 f16}; do
        "$bin" bench --device "$device" --precision "$prec" --runs "$runs" --official-only \
            --official-whole --compare-torch --torch-dir . --python "$python" 2>&1
    done
}

part_norms() {
    for prec in f32 f16; do
        for mode in rows composite rows composite; do
            echo "-- $prec, norms: $mode"
            export MIDM_NORM=$mode
            "$bin" bench --device "$device" --precision "$prec" --runs "$runs" 2>&1 | grep -E 'whole|UNet|decode|encode'
        done
    done
}

part_profile() {
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
    [ -z "$ncu" ] && { echo "no ncu on this machine"; return 1; }
    "$ncu" --version | tail -n 1
    # The same translation unprofiled first: its own timing ("N s translation", model load and
    # device start excluded) is what the kernels' sum is set against.
    "$bin" translate --device "$device" --precision f32 --seed 0 --condition assets/cat_sketch.png \
        --exemplar assets/cat_exemplar.png --out "$out/profile-cat.png" 2>&1 | grep -E 'translation|rror'
    "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
        --log-file "$out/ncu-raw.csv" "$bin" translate --device "$device" --precision f32 --seed 0 \
        --condition assets/cat_sketch.png --exemplar assets/cat_exemplar.png --out "$out/profile-cat.png" 2>&1 | tail -n 3
    "$python" scripts/ncu_summary.py "$out/ncu-raw.csv" --top 40
    # The raw table can be over the return limit; the summary is what comes back.
    xz -6 -T0 "$out/ncu-raw.csv" 2>/dev/null || rm -f "$out/ncu-raw.csv"
}

for part in $parts; do
    if [ "$(left)" -le 5 ]; then
        echo "part $part: skipped, the check's budget is spent" | tee "$out/$part.txt"
        continue
    fi
    echo "== part $part (+$(($(date +%s) - start)) s)"
    # The part runs in a child shell so that timeout can stop it with everything it started.
    export -f translate_pair "part_$part"
    export out bin device runs python
    timeout "$(left)" bash -c "part_$part" 2>&1 | tee "$out/$part.txt"
    echo "part $part exit ${PIPESTATUS[0]} at +$(($(date +%s) - start)) s" | tee -a "$out/$part.txt"
done
[ -d "$out/images" ] && compare_translations 2>&1 | tee "$out/compare.txt"
