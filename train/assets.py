"""Write the example sketches and exemplars of `assets/`: `python -m train.assets [--data train/data]`.

The pairs were chosen from model v1's validation split, which went by glyph name. The split now
goes by emoji (`data.split_of_key`), and all of them but the zipper-mouth face are training emoji
in some style, so the script says which split each glyph is in rather than requiring validation.
NAME_sketch.png is the condition model v1 trained on: the model's size (`--size`, default: the
shipped model's, from weights/config.yaml), single channel, white (255) = edge on black (0), i.e.
the Canny edge map of the target glyph (3 px lines). NAME_exemplar.png is a related glyph, RGB on
white, same size. NAME_target.png is the glyph the sketch was drawn from (for comparison only).
"""
import argparse
import os

import numpy as np
from PIL import Image

from . import data as emoji_data

# (name, target glyph, exemplar glyph): related emoji with different colours.
PAIRS = [
    ("face", "u1F610", "u1F608"),     # neutral face <- smiling face with horns (purple)
    ("cat", "u1F431", "u1F435"),      # cat face <- monkey face
    ("tulip", "u1F337", "u1F33C"),    # tulip <- blossom
    ("robot", "u1F916", "u1F910"),    # robot face <- zipper-mouth face
    ("shark", "u1F988", "u1F980"),    # shark <- crab
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--out", default="assets")
    ap.add_argument("--size", type=int, default=None, help="image side (default: weights/config.yaml's)")
    a = ap.parse_args()
    if a.size is None:
        import yaml

        a.size = yaml.safe_load(open("weights/config.yaml"))["midms"]["image_size"]
    d = emoji_data.load(a.data, a.size)
    names = list(d["names"])
    os.makedirs(a.out, exist_ok=True)
    for name, trg, ex in PAIRS:
        i, j = names.index(trg), names.index(ex)
        split = lambda k: "validation" if d["split"][k] == 1 else "training"
        print(f"{name}: target {trg} ({split(i)}), exemplar {ex} ({split(j)})")
        Image.fromarray(d["edges"][i] * 255).save(os.path.join(a.out, f"{name}_sketch.png"))
        Image.fromarray(d["images"][j]).save(os.path.join(a.out, f"{name}_exemplar.png"))
        Image.fromarray(d["images"][i]).save(os.path.join(a.out, f"{name}_target.png"))
    print(f"wrote {len(PAIRS)} sketch/exemplar pairs to {a.out}/")


if __name__ == "__main__":
    main()
