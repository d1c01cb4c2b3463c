"""Unpack an .xz file: `python3 scripts/unxz.py SRC DST`. The GPU machine has Python but may lack
the xz tool; scripts/device-check.sh (the CUDA binary) and scripts/device-lease.sh (the weights) use it."""
import lzma
import shutil
import sys

with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
