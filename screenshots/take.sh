#!/usr/bin/env bash
# Retakes the README screenshots from the real window: a release build under Xvfb + Mesa's
# lavapipe, the shipped model, the editor's sample pair (a hand-drawn tree and Twemoji's tree,
# `midm::params::SAMPLE_PAIR`), a real run.
#   screenshots/editor.png       after the run (final image selected)
#   screenshots/editor-step.png  interleaved step k1 selected, correspondence probe on r~n
#   screenshots/live-gallery.png live mode: a star drawn by hand, the gallery ranked for it,
#                                its first exemplar picked
#   screenshots/run-all.png      the gallery's "Run all": the sketch with every exemplar
#   screenshots/small-drawing.png a small star drawn in a corner, framed by the model, the probe on it
#   screenshots/small-exemplar.png the house pair with its exemplar at half size in a corner of a
#                                plain light-blue image (an icon with wide margins on a coloured
#                                ground): the ground cleared, the glyph framed, the probe on the door
#   screenshots/gap-closed.png   a star drawn with a gap in its outline, closed by the model, "show
#                                model input" marking the pixels that close it
# Needs: xvfb mesa-vulkan-drivers libvulkan1 xdotool imagemagick. MIDM_NO_BUILD=1 skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MIDM_NO_BUILD:-}" ] || cargo build --release -q
# A fresh HOME: no persisted session from earlier runs.
HOME=$(mktemp -d)
export HOME DISPLAY=:77
Xvfb :77 -screen 0 1280x800x24 >/dev/null 2>&1 &
xvfb=$!
app=
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
RUST_LOG=info ./target/release/midm --condition assets/drawn/tree_sketch.png --exemplar assets/drawn/tree_exemplar.png --run \
  >/tmp/midm-screenshots.log 2>&1 &
app=$!
# stroke N x0 y0 x1 y1 ...: one pen stroke through the points, N small moves per segment (as a
# hand moves, so that the canvas sees a drag, not jumps).
stroke() {
  local n=$1
  shift
  local pts=("$@")
  xdotool mousemove "${pts[0]}" "${pts[1]}" mousedown 1
  for ((p = 2; p < ${#pts[@]}; p += 2)); do
    local x0=${pts[p - 2]} y0=${pts[p - 1]} x1=${pts[p]} y1=${pts[p + 1]}
    for i in $(seq "$n"); do
      xdotool mousemove $((x0 + (x1 - x0) * i / n)) $((y0 + (y1 - y0) * i / n))
      sleep 0.01
    done
  done
  xdotool mouseup 1
}
win=$(xdotool search --sync --onlyvisible --name midm | head -1)
xdotool windowmove "$win" 0 0 windowsize "$win" 1280 800
# Load, run, and the editor's own status line reporting the finished run.
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
import -window root screenshots/editor.png
# Third cell of the step bar (interleaved step k1), then the probe on r~n (positions for the
# 1280x800 window as laid out now; check the result when the panels change).
xdotool mousemove 427 440 click 1
sleep 1
xdotool mousemove 410 585 click 1
sleep 2
import -window root screenshots/editor-step.png
# Live mode: Clear, then a star drawn in one stroke in small steps (as a hand does); the run
# starts when the stroke ends and the gallery ranks itself for the star; then the gallery's
# first exemplar is clicked, which runs again with it.
xdotool mousemove 473 89 click 1
sleep 1
stroke 20 468 150 492 225 570 225 507 270 532 345 468 300 404 345 429 270 366 225 444 225 468 150
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
xdotool mousemove 1130 200 click 1
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
import -window root screenshots/live-gallery.png
# The gallery's "Run all" (a minute or more on a CPU); the log says when every result is in.
xdotool mousemove 1126 83 click 1
for _ in $(seq 120); do
  sleep 5
  grep -q "Run all:" /tmp/midm-screenshots.log && break
done
grep -o "Run all:.*" /tmp/midm-screenshots.log || echo "Run all did not finish"
xdotool mousemove 700 300
sleep 1
import -window root screenshots/run-all.png
# A small drawing: Clear, the star again at 40 % of its size near the bottom-left corner (live
# mode runs it with the star exemplar); the model frames it, the steps panel says so, and the probe
# is held over the small output star.
xdotool mousemove 473 89 click 1
sleep 1
stroke 10 400 278 410 308 441 308 416 326 426 356 400 338 374 356 384 326 359 308 390 308 400 278
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
xdotool mousemove 373 617
sleep 2
import -window root screenshots/small-drawing.png
# A small exemplar on a plain ground: the editor again, on the house sketch with its exemplar
# shrunk to half size in the top-right corner of a light-blue image (as an icon with wide margins
# on a coloured ground gives it); the model clears the ground and frames the glyph, the steps panel
# says so, and the probe over the output's door shows its match where the glyph lies.
kill $app
sleep 1
convert -size 128x128 xc:'rgb(190,215,240)' \
  \( assets/drawn/house_exemplar.png -resize 64x64 -fuzz 6% -transparent white \) \
  -geometry +56+8 -composite "$HOME/small_house_exemplar.png"
RUST_LOG=info ./target/release/midm --condition assets/drawn/house_sketch.png \
  --exemplar "$HOME/small_house_exemplar.png" --run >>/tmp/midm-screenshots.log 2>&1 &
app=$!
win=$(xdotool search --sync --onlyvisible --name midm | head -1)
xdotool windowmove "$win" 0 0 windowsize "$win" 1280 800
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
for p in "380 575" "390 588" "400 600" "410 612"; do
  xdotool mousemove $p
  sleep 0.1
done
sleep 2
import -window root screenshots/small-exemplar.png
# A gap in an outline: the editor on the star pair, Clear, the star drawn by hand again with its
# last stroke ending a few pixels short of where it began (live mode runs it); the model closes the
# gap, "show model input" marks the pixels it closes it with, the steps panel says so.
kill $app
sleep 1
RUST_LOG=info ./target/release/midm --condition assets/drawn/star_sketch.png \
  --exemplar assets/drawn/star_exemplar.png >>/tmp/midm-screenshots.log 2>&1 &
app=$!
win=$(xdotool search --sync --onlyvisible --name midm | head -1)
xdotool windowmove "$win" 0 0 windowsize "$win" 1280 800
sleep 3
xdotool mousemove 473 89 click 1
sleep 1
stroke 20 468 150 492 225 570 225 507 270 532 345 468 300 404 345 429 270 366 225 444 225 463 166
sleep "${MIDM_SCREENSHOT_WAIT:-20}"
xdotool mousemove 708 89 click 1
xdotool mousemove 700 300
sleep 2
import -window root screenshots/gap-closed.png
echo "wrote screenshots/editor.png, editor-step.png, live-gallery.png, run-all.png, small-drawing.png, small-exemplar.png and gap-closed.png"
