# Sourced by scripts/gpu-train.sh and scripts/gpu-continue.sh (the device machine's scripts): their
# arguments FONT SECONDS [EXPORT], the budget clock, carried packages, the device and its monitor.
# Sets font, budget, init, start, out, device; defines left (seconds of the budget left), log and
# monitor_gpu FILE INTERVAL (nvidia-smi's utilisation every INTERVAL s into FILE, pid in $smi).
set -u
font=$1
budget=$2
init=${3:-}
start=$(date +%s)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
left() { echo $((budget - ($(date +%s) - start))); }
log() { echo "+$(($(date +%s) - start)) s: $*" | tee -a "$out/steps.log"; }

# SITE=DIR: carried pure-Python or abi3 packages (resvg_py) the machine lacks
[ -n "${SITE:-}" ] && export PYTHONPATH="$(cd "$SITE" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
# DEVICE=cpu: the same script as a dry run on the CPU (a short budget), so that no GPU minute is
# spent on a bug in it
device=${DEVICE:-cuda}
smi=
monitor_gpu() {
    [ "$device" = cuda ] || return 0
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l "$2" >"$1" 2>&1 &
    smi=$!
}
