#!/usr/bin/env bash
# Builds the CUDA binary of midm on a machine without a GPU or a CUDA install, for carrying to a
# GPU machine: target/cuda/midm.
#
#   scripts/build-cuda.sh            # CUDA 13.0 toolchain from PyPI, kernels for sm_90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
#
# Measured here (2-core CPU): 22-35 min from scratch (eframe, candle and nvcc on candle's
# kernels), 3.5 min after a change to midm.
#
# Why the detour:
# * candle-kernels compiles its kernels with nvcc at build time. nvcc, its front end (cicc), the
#   CUDA headers, CCCL and libcudart come from NVIDIA's PyPI wheels, installed into
#   target/cuda-sdk (no system CUDA, no hub).
# * candle-core 0.11.1 asks cudarc for `dynamic-linking`, which links libcuda, libcublas(Lt),
#   libcurand and libnvrtc at build time; there is no libcuda on a machine without a driver. The
#   build patches candle-core (in a copy, in target/) to cudarc's `dynamic-loading`: cudarc then
#   dlopens those libraries when the first CUDA device is created, which also lets one binary use
#   whichever CUDA 12/13 libraries the GPU machine has. Only libcudart (linked by candle-kernels)
#   stays a link-time dependency.
# * The build runs in a copy of the crate (target/cuda-build/src) so that the patch never touches
#   this checkout's Cargo.lock.
#
# On the GPU machine put the CUDA libraries on the loader path, e.g. those of PyTorch's wheels:
#   export LD_LIBRARY_PATH=$(python -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13/lib"))')
# (scripts/device-check.sh does this).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# The PTX that candle-kernels embeds is JIT-compiled by the GPU's driver, which refuses PTX from a
# newer toolkit than itself: 13.0 matches the R580 drivers of the GPU machines we target.
cuda_version=13.0.88
sdk=$root/target/cuda-sdk
cuda_home=$sdk/nvidia/cu13
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if ! "$cuda_home/bin/nvcc" --version 2>/dev/null | grep -q "V$cuda_version"; then
    rm -rf "$sdk"
    echo "installing the CUDA $cuda_version toolchain from PyPI into $sdk"
    # One pip call: `pip --target` replaces the shared `nvidia/` folder on a second call.
    python3 -m pip install --quiet --no-deps --target "$sdk" \
        "nvidia-cuda-nvcc==$cuda_version" "nvidia-cuda-crt==$cuda_version" \
        "nvidia-nvvm==$cuda_version" "nvidia-cuda-runtime==$cuda_version" \
        "nvidia-cuda-cccl==13.0.85"
fi
# The wheels ship versioned sonames only; the linker looks for the unversioned name.
ln -sf libcudart.so.13 "$cuda_home/lib/libcudart.so"
# CCCL's wheel puts cub/thrust/cuda under include/cccl; nvcc.profile adds it as a system include.
export CUDA_HOME=$cuda_home CUDA_PATH=$cuda_home NVCC=$cuda_home/bin/nvcc
export PATH=$cuda_home/bin:$PATH
# candle-kernels links libcudart; the C compiler driving the link searches LIBRARY_PATH.
export LIBRARY_PATH=$cuda_home/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
"$NVCC" --version | tail -n 2

# candle-core with cudarc's dynamic loading.
registry_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 | head -n 1)
if [ -z "$registry_copy" ]; then
    cargo fetch
    registry_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 | head -n 1)
fi
patched=$root/target/cuda-build/candle-core
if ! grep -q '"dynamic-loading"' "$patched/Cargo.toml" 2>/dev/null; then
    rm -rf "$patched"
    mkdir -p "$root/target/cuda-build"
    cp -r "$registry_copy" "$patched"
    sed -i 's/"dynamic-linking"/"dynamic-loading"/' "$patched/Cargo.toml"
    grep -q '"dynamic-loading"' "$patched/Cargo.toml"
fi

# A copy of the crate's sources, so the patched lock file stays in target/.
src=$root/target/cuda-build/src
mkdir -p "$src"
# (The binary embeds no assets or weights: the manifest, lock file and sources are all it needs,
# with vendor/ (the patched egui-wgpu the manifest points at) and tests/ (the manifest names the
# editor's `[[test]]` targets, and cargo checks that their files exist when it reads it).)
for item in Cargo.toml Cargo.lock src vendor tests; do
    rm -rf "${src:?}/$item"
    cp -r "$item" "$src/"
done

(
    cd "$src"
    CARGO_TARGET_DIR=$root/target/cuda-build/target cargo build --release --features cuda \
        --config "patch.crates-io.candle-core.path=\"$patched\""
)
mkdir -p target/cuda
cp target/cuda-build/target/release/midm target/cuda/midm
strip target/cuda/midm
# ~80 MB, mostly embedded PTX and the GGUF kernels' machine code; the device tool carries at most
# 64 MiB, so it travels compressed (~13 MB) and scripts/device-check.sh unpacks it.
xz -T0 -6 -c target/cuda/midm > target/cuda/midm.xz
ls -l target/cuda/midm target/cuda/midm.xz
echo "needs at run time (besides the GPU driver):"
readelf -d target/cuda/midm | grep NEEDED
