"""The hand-drawn test set: `python -m train.drawn_test [--out assets/drawn-test] [--twemoji TGZ]`.

A second hand-drawn set, made 2026-12-05 after model v1.13, to check the figures of the first
(`assets/drawn`, `train.drawn`), on which models v1.1-v1.13 were chosen, on drawings no choice has
seen. **It is never used to choose a model or a setting**: figures on it are reported beside the
first set's, and a model is not picked for them. Drawn in the same way (`train.drawn.Sketch`: thin
black strokes with a hand wobble, no anti-aliasing, 128x128, seeded by name), but by another hand's
habits: the typical drawings of a house (a box with a triangle on it), a tree (a ball on a
stick), a mug and a smiley drawn smaller and off the centre, and sixteen subjects the first set has
none of, each with one fitting Twemoji icon (a style the model never trained on). Some exemplars
show their subject otherwise than the sketch does (a peeled banana, a cone with a swirl), as a
user's pick often does.
"""
import argparse
import json
import os

import numpy as np

from .drawn import TWEMOJI, TWEMOJI_LICENCE, Sketch, _bezier, _ellipse, _save, draw, twemoji_icons


def house(s):
    s.rect(28, 60, 100, 112)                                   # walls
    s.line((22, 62), (64, 22), (106, 62), closed=True)         # roof
    s.rect(56, 84, 72, 112)                                    # door
    s.rect(36, 70, 50, 82)                                     # windows
    s.rect(78, 70, 92, 82)


def tree(s):
    s.circle(64, 46, 32)                                       # canopy
    s.line((58, 77), (58, 116), (70, 116), (70, 77))           # trunk


def mug(s):
    s.rect(30, 50, 84, 110)
    s.ellipse(84, 80, 14, 17, -80, 80)                         # handle
    for x in (46, 66):                                         # steam
        s.add(_bezier((x, 42), (x - 6, 34), (x + 6, 26), (x, 18)), w=1.5)


def smiley(s):
    """Small and off the centre, as a quick doodle often is."""
    s.circle(46, 48, 30)
    s.dot(36, 40, 2.5)
    s.dot(56, 40, 2.5)
    s.ellipse(46, 54, 14, 10, 20, 160)


def banana(s):
    s.add(np.vstack([_bezier((22, 34), (16, 106), (86, 126), (114, 84)),
                     _bezier((114, 84), (76, 100), (40, 82), (38, 34))[1:]]), closed=True)
    s.line((22, 34), (24, 24), (36, 24), (38, 34))             # stalk


def strawberry(s):
    s.add(np.vstack([_bezier((28, 46), (22, 80), (50, 112), (64, 116)),
                     _bezier((64, 116), (78, 112), (106, 80), (100, 46))[1:],
                     _bezier((100, 46), (80, 36), (48, 36), (28, 46))[1:-1]]), closed=True)
    s.line((38, 42), (46, 26), (56, 38), (64, 20), (72, 38), (82, 26), (90, 42))   # leaves
    for x, y in ((46, 60), (64, 58), (82, 60), (54, 78), (74, 78), (64, 96)):        # seeds
        s.dot(x, y, 1.6)


def ice_cream(s):
    s.line((42, 70), (86, 70), (64, 120), closed=True)         # cone
    s.line((50, 80), (70, 100), w=1.5)                         # waffle
    s.line((78, 80), (58, 100), w=1.5)
    s.ellipse(64, 62, 26, 10)                                  # swirl
    s.ellipse(64, 46, 19, 9)
    s.add(np.vstack([_ellipse(64, 32, 11, 8, 180, 360), [(64, 16)]]), closed=True)


def bulb(s):
    s.add(np.vstack([[(50, 96), (50, 82)], _ellipse(64, 48, 30, 30, 130, 410), [(78, 82), (78, 96)]]))
    s.rect(50, 96, 78, 112)                                    # base
    s.line((50, 104), (78, 104), w=1.5)
    s.line((58, 118), (70, 118))
    s.line((58, 84), (64, 66), (70, 84), w=1.5)                # filament
    s.line((64, 66), (64, 58), w=1.5)


def pizza(s):
    s.line((22, 24), (106, 24), (64, 118), closed=True)
    s.line((24, 33), (104, 33))                                # crust
    for x, y, r in ((50, 46, 7), (78, 48, 7), (62, 70, 6), (66, 94, 4)):
        s.circle(x, y, r)


def tulip(s):
    s.add(np.vstack([[(44, 26), (54, 40), (64, 24), (74, 40), (84, 26)],
                     _bezier((84, 26), (88, 56), (78, 68), (64, 68))[1:],
                     _bezier((64, 68), (50, 68), (40, 56), (44, 26))[1:-1]]), closed=True)
    s.line((64, 68), (64, 118))                                # stem
    s.add(np.vstack([_bezier((64, 112), (50, 104), (36, 94), (30, 80)),
                     _bezier((30, 80), (48, 84), (60, 96), (64, 112))[1:-1]]), closed=True)
    s.add(np.vstack([_bezier((64, 104), (78, 98), (92, 88), (98, 76)),
                     _bezier((98, 76), (82, 78), (70, 88), (64, 104))[1:-1]]), closed=True)


def snail(s):
    s.line((14, 98), (16, 80), (24, 70), (34, 72), (40, 86), (108, 86), (116, 98), closed=True)   # body
    s.line((22, 71), (16, 50))                                 # feelers
    s.line((30, 70), (32, 48))
    s.dot(16, 49, 2.2)
    s.dot(32, 47, 2.2)
    s.circle(74, 58, 27)                                       # shell
    t = np.linspace(0, 2.6 * np.pi, 90)
    r = 22 * (1 - t / (3.0 * np.pi))
    s.add(np.stack([74 + r * np.cos(t), 58 + r * np.sin(t)], 1), w=1.5)


def cherries(s):
    s.circle(40, 94, 18)
    s.circle(88, 94, 18)
    s.add(_bezier((42, 76), (46, 50), (58, 32), (70, 20)))     # stalks
    s.add(_bezier((86, 76), (84, 50), (78, 34), (70, 20)))
    s.add(np.vstack([_bezier((70, 20), (82, 6), (100, 8), (108, 20)),
                     _bezier((108, 20), (96, 30), (80, 28), (70, 20))[1:-1]]), closed=True)   # leaf


def lemon(s):
    s.add(np.vstack([_ellipse(64, 72, 44, 34, 5, 175), [(14, 70)], _ellipse(64, 72, 44, 34, 185, 355),
                     [(114, 74)]]), closed=True)
    s.add(np.vstack([_bezier((30, 44), (18, 34), (16, 22), (20, 16)),
                     _bezier((20, 16), (36, 20), (42, 34), (30, 44))[1:-1]]), closed=True)   # leaf


def carrot(s):
    s.add(np.vstack([_bezier((78, 26), (60, 40), (30, 80), (16, 116)),
                     _bezier((16, 116), (50, 96), (92, 66), (102, 48))[1:],
                     _bezier((102, 48), (98, 36), (90, 28), (78, 26))[1:-1]]), closed=True)
    for (x0, y0), (x1, y1) in (((56, 50), (66, 58)), ((44, 70), (54, 76)), ((68, 60), (74, 70)),
                               ((34, 90), (42, 94))):
        s.line((x0, y0), (x1, y1), w=1.5)                      # ridges
    for tip in ((104, 8), (118, 20), (116, 36)):               # leaves
        s.line((92, 34), tip)


def watermelon(s):
    s.add(_ellipse(64, 40, 54, 54, 0, 180), closed=True)       # slice, flat side up
    s.add(_ellipse(64, 40, 44, 44, 8, 172))                    # rind
    for x, y in ((44, 54), (64, 62), (84, 54), (54, 76), (74, 76), (64, 48)):
        s.dot(x, y, 2.0)


def doughnut(s):
    s.ellipse(64, 70, 50, 38)
    s.ellipse(64, 64, 13, 8)                                   # hole
    t = np.linspace(0, 2 * np.pi, 200)[:-1]                    # icing edge
    r = 1 + 0.06 * np.sin(9 * t)
    s.add(np.stack([64 + 42 * r * np.cos(t), 62 + 30 * r * np.sin(t)], 1), closed=True, w=1.5)


def lollipop(s):
    s.circle(52, 50, 36)
    t = np.linspace(0, 3.5 * np.pi, 120)
    r = 30 * t / (3.5 * np.pi)
    s.add(np.stack([52 + r * np.cos(t), 50 + r * np.sin(t)], 1), w=1.5)   # swirl
    s.line((74, 80), (110, 118), (116, 112), (80, 74))         # stick


def t_shirt(s):
    s.line((42, 20), (52, 20), (58, 28), (64, 30), (70, 28), (76, 20), (86, 20), (116, 42), (104, 60),
           (92, 52), (92, 114), (36, 114), (36, 52), (24, 60), (12, 42), closed=True)


def envelope(s):
    s.rect(14, 32, 114, 100)
    s.line((14, 32), (64, 72), (114, 32))                      # flap
    s.line((14, 100), (50, 64), w=1.5)
    s.line((114, 100), (78, 64), w=1.5)


def cactus(s):
    pts = [(54, 118), (54, 82), (40, 82), (34, 76), (34, 52)]
    pts += list(_ellipse(39, 52, 5, 5, 180, 360)[1:-1])
    pts += [(44, 52), (44, 72), (54, 72), (54, 36)]
    pts += list(_ellipse(64, 36, 10, 10, 180, 360)[1:-1])
    pts += [(74, 36), (74, 60), (84, 60), (84, 40)]
    pts += list(_ellipse(89, 40, 5, 5, 180, 360)[1:-1])
    pts += [(94, 40), (94, 64), (88, 70), (74, 70), (74, 118)]
    s.add(pts, closed=True)
    s.line((40, 118), (88, 118))                               # ground


# (name, drawing function, stroke width, Twemoji icon).
SUBJECTS = [
    ("house", house, 2.0, "house"),
    ("tree", tree, 2.0, "deciduous-tree"),
    ("mug", mug, 2.5, "hot-beverage"),
    ("smiley", smiley, 2.0, "slightly-smiling-face"),
    ("banana", banana, 2.0, "banana"),
    ("strawberry", strawberry, 2.0, "strawberry"),
    ("ice_cream", ice_cream, 2.0, "soft-ice-cream"),
    ("bulb", bulb, 2.0, "light-bulb"),
    ("pizza", pizza, 2.0, "pizza"),
    ("tulip", tulip, 2.0, "tulip"),
    ("snail", snail, 2.0, "snail"),
    ("cherries", cherries, 2.0, "cherries"),
    ("lemon", lemon, 3.0, "lemon"),
    ("carrot", carrot, 2.0, "carrot"),
    ("watermelon", watermelon, 2.0, "watermelon"),
    ("doughnut", doughnut, 2.0, "doughnut"),
    ("lollipop", lollipop, 2.0, "lollipop"),
    ("t_shirt", t_shirt, 2.0, "t-shirt"),
    ("envelope", envelope, 1.5, "envelope"),
    ("cactus", cactus, 2.0, "cactus"),
]


def build_small(scale, out, source="assets/drawn-test"):
    """The generated sketches of a hand-drawn set (`source`: this set or `assets/drawn`) drawn again at
    `scale` of their size, at a random place (seeded by name), with the same pen, and the same
    exemplars: what a user who draws small gives the model. Writes `out` with its `pairs.json`; the
    photo pairs and the two kept older sketches of `assets/drawn` are left out."""
    import shutil
    import zlib

    from . import drawn
    from .drawn import rasterise

    subjects = {n: (fn, w, prefix) for prefix, subs in (("", drawn.SUBJECTS), ("test/", SUBJECTS))
                for n, fn, w, _ in subs if (prefix == "test/") == source.rstrip("/").endswith("drawn-test")}
    os.makedirs(out, exist_ok=True)
    pairs = [p for p in json.load(open(os.path.join(source, "pairs.json")))
             if p["name"] in subjects and p["exemplar_kind"] == "twemoji"]
    for p in pairs:
        fn, width, prefix = subjects[p["name"]]
        s = Sketch(width)
        fn(s)
        pts = np.vstack([pt for pt, _, _ in s.strokes])
        lo, size = pts.min(0), (pts.max(0) - pts.min(0)) * scale
        rng = np.random.default_rng(zlib.crc32(f"small/{p['name']}".encode()))
        at = np.array([rng.uniform(4, 124 - size[0]), rng.uniform(4, 124 - size[1])])
        s.strokes = [((pt - lo) * scale + at, closed, w) for pt, closed, w in s.strokes]
        ink = rasterise(s, np.random.default_rng(zlib.crc32(f"{prefix}{p['name']}".encode())))
        _save(os.path.join(out, p["sketch"]), np.where(ink, 0, 255).astype(np.uint8))
        shutil.copy(os.path.join(source, p["exemplar"]), os.path.join(out, p["exemplar"]))
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    return pairs


def build_small_exemplar(scale, out, source="assets/drawn-test"):
    """The Twemoji pairs of a hand-drawn set (`source`) with each exemplar shrunk to `scale` of its size
    (Lanczos) at a random place (seeded by name) on white, the sketches as they are: what a user gives
    who takes an image with wide margins as the exemplar. Writes `out` with its `pairs.json`."""
    import shutil
    import zlib

    from PIL import Image

    os.makedirs(out, exist_ok=True)
    pairs = [p for p in json.load(open(os.path.join(source, "pairs.json"))) if p["exemplar_kind"] == "twemoji"]
    for p in pairs:
        shutil.copy(os.path.join(source, p["sketch"]), os.path.join(out, p["sketch"]))
        image = Image.open(os.path.join(source, p["exemplar"])).convert("RGB")
        side = int(round(image.width * scale))
        rng = np.random.default_rng(zlib.crc32(f"small-exemplar/{p['name']}".encode()))
        at = tuple(int(v) for v in rng.integers(0, image.width - side + 1, size=2))
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image.resize((side, side), Image.LANCZOS), at)
        canvas.save(os.path.join(out, p["exemplar"]))
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    return pairs


# Plain grounds for `build_plain_ground`: greys, pastels and a dark navy, as icons and backdrops have.
GROUNDS = [(200, 200, 200), (180, 210, 240), (250, 240, 190), (190, 235, 210), (40, 40, 60), (245, 200, 215)]


def build_plain_ground(out, source="assets/drawn-test"):
    """The Twemoji pairs of a hand-drawn set (`source`) with each exemplar's white ground (its near-white
    pixels 4-connected to the border) painted one plain colour (`GROUNDS`, in turn), the sketches as they
    are: what a user gives who takes an icon on a coloured square or an object on a plain backdrop. The
    exemplar on white is kept beside it as the pair's `colour_reference`, the colours the output is
    scored against. Writes `out` with its `pairs.json`."""
    import shutil

    from PIL import Image
    from scipy.ndimage import label

    os.makedirs(out, exist_ok=True)
    pairs = [p for p in json.load(open(os.path.join(source, "pairs.json"))) if p["exemplar_kind"] == "twemoji"]
    for i, p in enumerate(pairs):
        shutil.copy(os.path.join(source, p["sketch"]), os.path.join(out, p["sketch"]))
        reference = p["exemplar"].replace(".png", "_on_white.png")
        shutil.copy(os.path.join(source, p["exemplar"]), os.path.join(out, reference))
        image = np.asarray(Image.open(os.path.join(source, p["exemplar"])).convert("RGB")).copy()
        parts, _ = label((image >= 235).all(2))
        edge = np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]])
        image[np.isin(parts, np.unique(edge[edge > 0]))] = GROUNDS[i % len(GROUNDS)]
        Image.fromarray(image).save(os.path.join(out, p["exemplar"]))
        p["colour_reference"] = reference
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    return pairs


def cut_gap(lines, width, seed):
    """`lines` (bool [H, W], a drawing's line pixels) with a `width` x `width` square of line cleared
    about a pixel of its outer outline, at the first of up to 400 such pixels (in an order seeded by
    `seed`) where the inside then leaks out (the filled area at least halves); None where no such cut
    is found (no closed outline)."""
    from scipy.ndimage import binary_dilation, binary_fill_holes

    area = binary_fill_holes(lines).sum()
    outside = ~binary_fill_holes(lines)
    rim = lines & binary_dilation(outside, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
    ys, xs = np.nonzero(rim)
    for i in np.random.default_rng(seed).permutation(len(ys))[:400]:
        y0, x0 = ys[i] - width // 2, xs[i] - width // 2
        cut = lines.copy()
        cut[max(y0, 0):y0 + width, max(x0, 0):x0 + width] = False
        if binary_fill_holes(cut).sum() <= area / 2:
            return cut
    return None


def build_gaps(width, out, source="assets/drawn-test"):
    """The pairs of a hand-drawn set (`source`) with a gap `width` px wide cut into each sketch's outer
    outline where the inside then leaks out (the filled area at least halves; the place seeded by
    name), the exemplars as they are: what a user gives whose pen did not quite close a shape. The
    intact sketch is kept beside it as the pair's `shape_reference`, the shape the output is scored
    against. A sketch where no such cut is found (no closed outline) is left out. Writes `out` with
    its `pairs.json`."""
    import shutil
    import zlib

    from .drawn_eval import read_condition

    os.makedirs(out, exist_ok=True)
    kept = []
    for p in json.load(open(os.path.join(source, "pairs.json"))):
        lines = read_condition(os.path.join(source, p["sketch"])) > 0.5
        cut = cut_gap(lines, width, zlib.crc32(f"gaps/{p['name']}".encode()))
        if cut is None:
            continue
        reference = p["sketch"].replace(".png", "_closed.png")
        shutil.copy(os.path.join(source, p["sketch"]), os.path.join(out, reference))
        _save(os.path.join(out, p["sketch"]), np.where(cut, 0, 255).astype(np.uint8))
        shutil.copy(os.path.join(source, p["exemplar"]), os.path.join(out, p["exemplar"]))
        p["shape_reference"] = reference
        kept.append(p)
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(kept, f, indent=1)
        f.write("\n")
    return kept


def build(out="assets/drawn-test", pkg=TWEMOJI):
    os.makedirs(out, exist_ok=True)
    version = os.path.basename(pkg).replace("iconify-json-twemoji-", "").replace(".tgz", "")
    icons = twemoji_icons([ic for *_, ic in SUBJECTS], pkg)
    pairs = []
    for name, fn, width, icon in SUBJECTS:
        # Seeded by "test/NAME", so a subject both sets have gets another wobble.
        _save(os.path.join(out, f"{name}_sketch.png"), draw(f"test/{name}", fn, width))
        _save(os.path.join(out, f"{name}_exemplar.png"), icons[icon])
        pairs.append({"name": name, "sketch": f"{name}_sketch.png", "exemplar": f"{name}_exemplar.png",
                      "sketch_source": f"train/drawn_test.py: {fn.__name__}, {width:g} px strokes, "
                                       f"seed crc32('test/{name}')",
                      "exemplar_kind": "twemoji",
                      "exemplar_source": f"Twemoji icon '{icon}' (npm @iconify-json/twemoji {version})",
                      "exemplar_licence": TWEMOJI_LICENCE})
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/drawn-test")
    ap.add_argument("--twemoji", default=TWEMOJI, help="npm tarball of @iconify-json/twemoji (npm pack)")
    ap.add_argument("--small", type=float, default=None,
                    help="instead: the generated sketches of --source drawn again at this scale of their size, "
                         "at a random place (what a user who draws small gives), into --out")
    ap.add_argument("--small-exemplar", type=float, default=None,
                    help="instead: the Twemoji pairs of --source with each exemplar shrunk to this scale of its "
                         "size at a random place on white (an exemplar with wide margins), into --out")
    ap.add_argument("--plain-ground", action="store_true",
                    help="instead: the Twemoji pairs of --source with each exemplar's white ground painted a "
                         "plain colour (an icon on a coloured square), into --out")
    ap.add_argument("--gaps", type=int, default=None,
                    help="instead: the pairs of --source with a gap this many px wide cut into each sketch's "
                         "outer outline where the inside leaks out (a shape not quite closed), into --out")
    ap.add_argument("--source", default="assets/drawn-test",
                    help="with --small, --small-exemplar, --plain-ground or --gaps: assets/drawn-test or "
                         "assets/drawn")
    a = ap.parse_args()
    if a.small is not None:
        pairs = build_small(a.small, a.out, a.source)
    elif a.small_exemplar is not None:
        pairs = build_small_exemplar(a.small_exemplar, a.out, a.source)
    elif a.plain_ground:
        pairs = build_plain_ground(a.out, a.source)
    elif a.gaps is not None:
        pairs = build_gaps(a.gaps, a.out, a.source)
    else:
        pairs = build(a.out, a.twemoji)
    print(f"wrote {len(pairs)} pairs to {a.out}/")


if __name__ == "__main__":
    main()
