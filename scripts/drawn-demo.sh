#!/usr/bin/env bash
# Hand-drawn sketches (assets/drawn/: drawn with straight lines and ellipses, not the Canny edges of
# any glyph) translated with three exemplars of assets/ at seed 0 -> OUT (default target/drawn-demo.png;
# weights/drawn.png is the hand-drawn evaluation's sheet, scripts/drawn-eval.sh). Each row:
# the sketch, then exemplar and output for each exemplar. Needs a release build and ImageMagick.
set -eu
bin=${MIDM_BIN:-target/release/midm}
out=${1:-target/drawn-demo.png}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiles=()
for s in smiley house; do
    tiles+=("assets/drawn/${s}_sketch.png")
    for ex in robot cat shark; do
        "$bin" translate --condition "assets/drawn/${s}_sketch.png" --exemplar "assets/${ex}_exemplar.png" \
            --out "$tmp/${s}_$ex.png" --seed 0
        tiles+=("assets/${ex}_exemplar.png" "$tmp/${s}_$ex.png")
    done
done
montage "${tiles[@]}" -tile 7x -geometry 128x128+2+2 -background white "$out"
echo "wrote $out"
