"""The hand-drawn evaluation set: `python -m train.drawn [--out assets/drawn] [--twemoji TGZ]`.

Sketches as a user draws them in the editor, not Canny edges of a glyph: thin dark strokes
(1.5-3.5 px, mostly 2) on white at 128x128, each stroke a polyline resampled every 1.5 px and
displaced along its normal by a smooth random wobble (a sum of three sinusoids, 0.4-0.9 px in
all; periodic along closed outlines so they stay closed), plus a small random shift of the whole
stroke. Strokes are rasterised without anti-aliasing: a pixel is ink when its centre lies within
half the stroke width of the polyline (round caps and joins), so the PNGs are pure black (0) on
white (255), 8-bit grey. Closed outlines (walls, bodies, heads) and open strokes (smiles, steam,
rays, veins, whiskers) both occur, with details: eyes, doors, windows, a mouth, leaf veins, a
handle, buttons. Every sketch has its own seed (crc32 of its name), so a rerun writes byte-identical
files.

Exemplars:
- Twemoji (CC-BY 4.0, Twitter, Inc. and contributors; npm @iconify-json/twemoji, a style the model
  never saw in training), one fitting icon per sketch, rasterised with resvg at 128x128 on white
  the way `train.data.extract_iconify` rasterises an iconify package (square view box, centred);
- photos shipped with scikit-image (`skimage.data`: chelsea, coffee, astronaut, rocket; their
  licences, from each function's docstring, are in `PHOTOS`), centre-cropped to a square and resized to 128 (Lanczos), paired with
  the cat, cup, face and rocket sketches (the pair `NAME_photo` reuses `NAME_sketch.png`).

The two older sketches `house_sketch.png` and `smiley_sketch.png` (straight lines and ellipses,
3-px lines, used by `scripts/drawn-demo.sh`) are kept as they are and join the set with Twemoji
exemplars; this module never rewrites them.

Writes `NAME_sketch.png`, `NAME_exemplar.png` and `pairs.json` (name, sketch, exemplar, sources
and licences) into `--out`.
"""
import argparse
import io
import json
import os
import zlib

import numpy as np
from PIL import Image

SIZE = 128
TWEMOJI = "/work/cache/npm/iconify-json-twemoji-1.2.5.tgz"
TWEMOJI_LICENCE = "CC-BY-4.0 (Twemoji: Copyright Twitter, Inc. and other contributors)"

# skimage.data photos: (function, licence as the function's docstring gives it).
PHOTOS = {
    "cat": ("chelsea", "CC0 (photographer Stefan van der Walt; 'Chelsea the cat')"),
    "cup": ("coffee", "CC0 (photographer Rachel Michetti, courtesy of Pikolo Espresso Bar)"),
    "face": ("astronaut", "public domain (NASA: astronaut Eileen Collins, NASA Great Images database)"),
    "rocket": ("rocket", "public domain (SpaceX: DSCOVR launch on Falcon 9, released by SpaceX)"),
}


# ---- strokes ----------------------------------------------------------------------------------
def _ellipse(cx, cy, rx, ry, a0=0.0, a1=360.0, n=None):
    """Points of an elliptic arc, angles in degrees, 0 = right, 90 = down (image coordinates)."""
    n = n or max(8, int(abs(a1 - a0) / 360 * 2 * np.pi * max(rx, ry) / 1.5))
    t = np.radians(np.linspace(a0, a1, n + 1))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _bezier(*ctrl, n=40):
    """Cubic (or any degree) Bezier curve through control points."""
    p = np.array(ctrl, float)
    t = np.linspace(0, 1, n + 1)[:, None]
    while len(p) > 1:  # de Casteljau
        p = np.stack([(1 - t) * p[i] + t * p[i + 1] for i in range(len(p) - 1)])
    return p[0]


class Sketch:
    """A list of strokes: (points [N, 2] as x, y in pixels; closed; width in px)."""

    def __init__(self, width=2.0):
        self.width = width
        self.strokes = []

    def add(self, pts, closed=False, w=None):
        self.strokes.append((np.asarray(pts, float), closed, w or self.width))
        return self

    def line(self, *pts, closed=False, w=None):
        return self.add(pts, closed, w)

    def rect(self, x0, y0, x1, y1, w=None):
        return self.add([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], True, w)

    def ellipse(self, cx, cy, rx, ry, a0=0.0, a1=360.0, w=None):
        full = abs(a1 - a0) >= 360
        pts = _ellipse(cx, cy, rx, ry, a0, a1)
        return self.add(pts[:-1] if full else pts, full, w)

    def circle(self, cx, cy, r, w=None):
        return self.ellipse(cx, cy, r, r, w=w)

    def dot(self, cx, cy, r=1.8, w=None):
        """A small filled blob (an eye, a button): a tiny closed circle drawn with a thick pen."""
        return self.ellipse(cx, cy, r * 0.5, r * 0.5, w=w or 2 * r)


def _resample(pts, closed, step=1.5):
    if closed:
        pts = np.vstack([pts, pts[:1]])
    seg = np.diff(pts, axis=0)
    d = np.concatenate([[0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    n = max(2, int(np.ceil(d[-1] / step)) + 1)
    s = np.linspace(0, d[-1], n)
    out = np.stack([np.interp(s, d, pts[:, 0]), np.interp(s, d, pts[:, 1])], 1)
    # keep the corners: add the original vertices back, in order
    out = np.concatenate([out, pts])
    key = np.concatenate([s, d])
    order = np.argsort(key, kind="stable")
    out, key = out[order], key[order]
    keep = np.concatenate([[True], np.diff(key) > 1e-6])
    out, key = out[keep], key[keep]
    if closed:
        out, key = out[:-1], key[:-1]
    return out, key, d[-1]


def wobble(pts, closed, rng, amp=0.7, shift=0.6):
    """Hand wobble: displacement along the normal by a smooth random function of arc length
    (periodic on a closed stroke), and a small shift of the whole stroke."""
    p, s, length = _resample(pts, closed)
    if len(p) < 2:
        return p
    disp = np.zeros(len(p))
    for k in range(3):
        a = amp * rng.uniform(0.3, 0.6)
        if closed:
            cycles = max(1, int(round(length / rng.uniform(18, 45))))
            freq = 2 * np.pi * cycles / length
        else:
            freq = 2 * np.pi / rng.uniform(18, 45)
        disp += a * np.sin(freq * s + rng.uniform(0, 2 * np.pi))
    if closed:
        tang = np.roll(p, -1, 0) - np.roll(p, 1, 0)
    else:
        tang = np.gradient(p, axis=0)
    tang /= np.maximum(np.hypot(tang[:, 0], tang[:, 1]), 1e-9)[:, None]
    normal = np.stack([-tang[:, 1], tang[:, 0]], 1)
    return p + normal * disp[:, None] + rng.uniform(-shift, shift, 2)


def rasterise(sketch, rng, size=SIZE):
    """Binary ink mask [size, size]: pixel centres within width / 2 of a wobbled stroke."""
    ink = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for pts, closed, w in sketch.strokes:
        p = wobble(pts, closed, rng)
        if closed:
            p = np.vstack([p, p[:1]])
        r = w / 2
        x0, y0 = np.floor(p.min(0) - r - 1).astype(int).clip(0, size)
        x1, y1 = np.ceil(p.max(0) + r + 2).astype(int).clip(0, size)
        if x1 <= x0 or y1 <= y0:
            continue
        px, py = xx[y0:y1, x0:x1].reshape(-1, 1), yy[y0:y1, x0:x1].reshape(-1, 1)
        a, b = p[:-1], p[1:] if len(p) > 1 else p
        if len(p) == 1:
            b = a
        ab = b - a
        L2 = np.maximum((ab ** 2).sum(1), 1e-12)
        t = (((px - a[:, 0]) * ab[:, 0] + (py - a[:, 1]) * ab[:, 1]) / L2).clip(0, 1)
        dx = px - (a[:, 0] + t * ab[:, 0])
        dy = py - (a[:, 1] + t * ab[:, 1])
        d = np.sqrt(dx ** 2 + dy ** 2).min(1).reshape(y1 - y0, x1 - x0)
        ink[y0:y1, x0:x1] |= d < r
    return ink


# ---- the subjects -------------------------------------------------------------------------------
def cottage(s):
    s.rect(30, 62, 98, 110)                                    # walls
    s.line((24, 64), (64, 26), (104, 64), closed=True)         # roof
    s.line((82, 44), (82, 30), (92, 30), (92, 53))             # chimney
    s.rect(56, 84, 72, 110)                                    # door
    s.dot(68, 98, 1.5)                                         # door knob
    for x in (38, 80):                                         # windows with crosses
        s.rect(x, 70, x + 12, 81, w=1.5)
        s.line((x + 6, 70), (x + 6, 81), w=1.5)
        s.line((x, 75.5), (x + 12, 75.5), w=1.5)


def face(s):
    s.circle(64, 64, 44)
    s.ellipse(48, 52, 4, 7)
    s.ellipse(80, 52, 4, 7)
    s.add(np.vstack([_ellipse(64, 74, 24, 18, 10, 170), [(40, 77)]]), closed=True)   # open grin


def cup(s):
    s.add(np.vstack([[(32, 50)], _bezier((32, 50), (32, 100), (40, 104), (64, 104))[1:],
                     _bezier((64, 104), (88, 104), (96, 100), (96, 50))[1:]]), closed=True)  # body
    s.ellipse(113 - 8, 74, 12, 14, -80, 80)                    # handle
    s.ellipse(64, 110, 44, 6, 15, 165, w=2)                    # saucer
    for x in (50, 64, 78):                                     # steam
        s.add(_bezier((x, 42), (x - 7, 34), (x + 7, 26), (x, 16)))


def tree(s):
    s.line((56, 118), (58, 84), (52, 76))                      # trunk, left side
    s.line((72, 118), (70, 84), (76, 76))                      # trunk, right side
    s.line((50, 118), (78, 118))                               # ground
    bumps = []
    for k in range(9):                                         # bumpy canopy
        a0 = -90 + k * 40
        c = np.radians(a0 + 20)
        bumps.append(_ellipse(64 + 34 * np.cos(c), 48 + 30 * np.sin(c), 13, 12, a0 - 40, a0 + 80, n=20))
    s.add(np.vstack(bumps), closed=True)
    s.add(_bezier((64, 72), (62, 62), (56, 56)), w=1.5)        # branches
    s.add(_bezier((64, 70), (68, 60), (76, 56)), w=1.5)


def pine(s):
    s.line((64, 10), (42, 40), (54, 40), (34, 68), (50, 68), (26, 98), (102, 98), (78, 68), (94, 68),
           (74, 40), (86, 40), closed=True)
    s.rect(56, 98, 72, 118)
    s.line((44, 118), (84, 118), w=1.5)


def heart(s):
    t = np.linspace(0, 2 * np.pi, 160)[:-1]
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    s.add(np.stack([64 + 3.1 * x, 60 - 3.1 * y], 1), closed=True)
    s.add(_bezier((40, 44), (38, 38), (42, 32), (48, 30)), w=1.5)   # shine


def fish(s):
    body = np.vstack([_bezier((96, 64), (78, 32), (40, 36), (22, 64)),
                      _bezier((22, 64), (40, 92), (78, 96), (96, 64))[1:]])
    s.add(body[:-1], closed=True)
    s.line((96, 64), (116, 46), (112, 64), (116, 82), closed=True)   # tail
    s.dot(38, 58, 2.2)                                               # eye
    s.add(_bezier((50, 50), (54, 58), (54, 70), (50, 78)))           # gill
    s.add(_bezier((62, 42), (70, 30), (80, 34), (82, 44)))           # fin
    s.add(_ellipse(26, 70, 4, 2, 200, 340), w=1.5)                   # mouth


def star(s):
    pts = []
    for k in range(10):
        r = 52 if k % 2 == 0 else 22
        a = np.radians(-90 + 36 * k)
        pts.append((64 + r * np.cos(a), 68 + r * np.sin(a)))
    s.add(pts, closed=True)


def sun(s):
    s.circle(64, 64, 26)
    for k in range(8):
        a = np.radians(k * 45 + 10)
        s.line((64 + 34 * np.cos(a), 64 + 34 * np.sin(a)), (64 + 52 * np.cos(a), 64 + 52 * np.sin(a)))
    s.dot(55, 58, 2)
    s.dot(73, 58, 2)
    s.ellipse(64, 68, 11, 8, 20, 160)


def cat(s):
    head = np.vstack([_ellipse(64, 70, 42, 36, -20, 200, n=80),
                      [(30, 34), (44, 42)], [(64, 36)], [(84, 42), (98, 34)]])
    s.add(head, closed=True)
    s.line((34, 40), (38, 52), (45, 44), w=1.5)                      # inner ears
    s.line((94, 40), (90, 52), (83, 44), w=1.5)
    s.ellipse(48, 66, 4, 6)
    s.ellipse(80, 66, 4, 6)
    s.line((60, 80), (68, 80), (64, 85), closed=True)                # nose
    s.add(_ellipse(58, 88, 6, 4, 0, 150), w=1.5)                     # mouth
    s.add(_ellipse(70, 88, 6, 4, 30, 180), w=1.5)
    for dy in (-3, 4):                                               # whiskers
        s.line((40, 84 + dy), (18, 80 + 2 * dy), w=1.5)
        s.line((88, 84 + dy), (110, 80 + 2 * dy), w=1.5)


def car(s):
    s.line((12, 90), (12, 70), (30, 66), (42, 46), (84, 46), (98, 66), (116, 70), (116, 90),
           (102, 90), (100, 80), (84, 80), (82, 90), (46, 90), (44, 80), (28, 80), (26, 90), closed=True)
    s.line((46, 50), (38, 66), (62, 66), (62, 50), closed=True)      # windows
    s.line((66, 50), (66, 66), (92, 66), (82, 50), closed=True)
    s.circle(36, 92, 10)
    s.circle(92, 92, 10)
    s.circle(36, 92, 3, w=1.5)
    s.circle(92, 92, 3, w=1.5)
    s.line((68, 72), (74, 72), w=1.5)                                # door handle


def sunflower(s):
    s.circle(64, 44, 13)
    for k in range(10):                                              # petals
        c = np.radians(k * 36)
        pts = _ellipse(0, 0, 10, 5.5)[:-1]
        rot = np.array([[np.cos(c), -np.sin(c)], [np.sin(c), np.cos(c)]])
        s.add(pts @ rot.T + [64 + 23 * np.cos(c), 44 + 23 * np.sin(c)], closed=True, w=1.5)
    s.line((64, 78), (63, 100), (64, 122))                            # stem
    s.add(np.vstack([_bezier((63, 104), (74, 92), (90, 96), (96, 100)),
                     _bezier((96, 100), (86, 110), (72, 110), (63, 104))[1:]]), closed=True)   # leaf
    s.line((66, 104), (90, 100), w=1.5)                               # its vein


def apple(s):
    body = np.vstack([_bezier((64, 42), (80, 30), (110, 40), (104, 76)),
                      _bezier((104, 76), (100, 110), (78, 116), (64, 108))[1:],
                      _bezier((64, 108), (50, 116), (28, 110), (24, 76))[1:],
                      _bezier((24, 76), (18, 40), (48, 30), (64, 42))[1:]])
    s.add(body[:-1], closed=True)
    s.add(_bezier((64, 44), (62, 34), (60, 26), (56, 20)))           # stem
    s.add(np.vstack([_bezier((66, 34), (72, 20), (86, 16), (94, 20)),
                     _bezier((94, 20), (88, 32), (76, 36), (66, 34))[1:]]), closed=True)  # leaf
    s.line((70, 31), (88, 22), w=1.5)                                # vein
    s.add(_ellipse(44, 62, 10, 14, 180, 250), w=1.5)                 # shine


def moon(s):
    """A crescent open to the left, its back to the right (as the Twemoji crescent), sleepy face."""
    outer = _ellipse(64, 64, 46, 46, -120, 120)
    inner = _ellipse(44, 58, 34, 36, 68, -68, n=60)
    s.add(np.vstack([outer, inner]), closed=True)
    s.dot(93, 52, 1.8)                                               # sleepy eye
    s.add(_ellipse(95, 72, 5, 3.5, 20, 160), w=1.5)                   # smile


def cloud(s):
    pts = np.vstack([_ellipse(38, 76, 18, 18, 90, 250), _ellipse(58, 52, 22, 22, 200, 330),
                     _ellipse(86, 56, 18, 18, 230, 360), _ellipse(98, 78, 16, 16, 290, 450)])
    pts = np.vstack([pts, [(38, 94)]])
    s.add(pts, closed=True)


def umbrella(s):
    canopy = _ellipse(64, 62, 52, 42, 180, 360)
    rim = np.vstack([_ellipse(116 - 13 - 26 * k, 62, 13, 7, 0, 180) for k in range(4)])   # scallops
    s.add(np.vstack([canopy, rim]), closed=True)
    s.line((64, 20), (64, 14), w=2.5)                                # tip
    s.add(np.vstack([[(64, 69)], [(64, 104)], _ellipse(56, 104, 8, 8, 0, 180)[1:]]))   # handle
    s.add(_bezier((64, 20), (52, 36), (46, 50), (38, 62)), w=1.5)     # ribs
    s.add(_bezier((64, 20), (76, 36), (82, 50), (90, 62)), w=1.5)


def ghost(s):
    top = _ellipse(64, 54, 36, 36, 180, 360)
    bottom = [(100, 54), (100, 104)]
    waves = np.vstack([_ellipse(100 - 6 - 12 * k, 104, 6, 6, 0, 180) for k in range(6)])
    s.add(np.vstack([top, bottom, waves, [(28, 104)]]), closed=True)
    s.ellipse(52, 56, 5, 8)
    s.ellipse(76, 56, 5, 8)
    s.ellipse(64, 80, 6, 7)                                          # "oh" mouth
    s.line((100, 72), (116, 62), w=1.5)                              # waving arm
    s.line((28, 72), (14, 80), w=1.5)


def mushroom(s):
    cap = np.vstack([_ellipse(64, 64, 50, 44, 180, 360), _bezier((114, 64), (100, 72), (28, 72), (14, 64))[1:]])
    s.add(cap[:-1], closed=True)
    s.add(np.vstack([_bezier((50, 70), (46, 90), (44, 110), (48, 116)),
                     [(80, 116)], _bezier((80, 116), (84, 110), (82, 90), (78, 70))[0:]]))   # stem
    for cx, cy, r in ((44, 40, 7), (72, 32, 6), (92, 50, 6), (62, 54, 5)):
        s.circle(cx, cy, r, w=1.5)                                   # spots


def rocket(s):
    body = np.vstack([_bezier((64, 8), (84, 24), (86, 50), (82, 92)),
                      [(46, 92)], _bezier((46, 92), (42, 50), (44, 24), (64, 8))[1:]])
    s.add(body[:-1], closed=True)
    s.line((46, 68), (30, 92), (34, 100), (46, 92), w=2)             # fins
    s.line((82, 68), (98, 92), (94, 100), (82, 92), w=2)
    s.circle(64, 46, 9)                                              # window
    s.line((48, 30), (80, 30), w=1.5)
    s.add(np.vstack([_bezier((52, 94), (50, 110), (58, 112), (64, 124)),
                     _bezier((64, 124), (70, 112), (78, 110), (76, 94))[1:]]))   # flame
    s.line((64, 98), (64, 110), w=1.5)


def snowman(s):
    s.circle(64, 36, 18)
    s.circle(64, 84, 30)
    s.dot(57, 32, 1.8)
    s.dot(71, 32, 1.8)
    s.line((64, 38), (76, 42), (64, 42))                             # carrot nose
    for y in (70, 84, 98):
        s.dot(64, y, 2.2)                                            # buttons
    s.line((36, 74), (14, 60), w=1.5)                                # twig arms
    s.line((22, 65), (16, 70), w=1.5)
    s.line((92, 74), (114, 60), w=1.5)
    s.line((106, 65), (110, 56), w=1.5)
    s.line((48, 20), (80, 20), w=2.5)                                # hat
    s.rect(52, 6, 76, 20)


def balloon(s):
    s.add(_ellipse(64, 48, 32, 38, -90, 270)[:-1], closed=True)
    s.line((60, 86), (68, 86), (64, 92), closed=True)                # knot
    s.add(_bezier((64, 92), (56, 100), (72, 108), (62, 124)), w=1.5)   # string
    s.add(_ellipse(52, 38, 8, 14, 190, 250), w=1.5)                  # shine


def cake(s):
    s.rect(24, 74, 104, 110)                                         # lower layer
    s.rect(36, 52, 92, 74)                                           # upper layer
    s.add(np.vstack([[(24, 84)], *[_ellipse(29 + 10 * k, 84, 5, 5, 180, 0) for k in range(8)]]), w=1.5)  # icing
    s.rect(61, 30, 67, 52, w=1.5)                                    # candle
    s.add(np.vstack([_bezier((64, 28), (56, 22), (62, 16), (64, 10)),
                     _bezier((64, 10), (66, 16), (72, 22), (64, 28))[1:]]), closed=True)  # flame
    s.line((16, 114), (112, 114))                                    # plate


def leaf(s):
    s.add(np.vstack([_bezier((22, 106), (20, 50), (60, 20), (110, 18)),
                     _bezier((110, 18), (108, 70), (76, 106), (22, 106))[1:]])[:-1], closed=True)
    s.add(_bezier((10, 118), (40, 90), (70, 56), (104, 24)))         # midrib and stem
    for t, side in ((0.35, 1), (0.5, 1), (0.65, 1), (0.35, -1), (0.5, -1), (0.65, -1)):
        x, y = 10 + t * 94, 118 - t * 94
        s.line((x, y), (x + (14 if side > 0 else -2), y - (2 if side > 0 else 14)), w=1.5)   # veins


def bird(s):
    body = np.vstack([_bezier((30, 50), (36, 30), (60, 30), (64, 48)),
                      _bezier((64, 48), (90, 50), (104, 60), (116, 50))[1:],
                      _bezier((116, 50), (108, 84), (80, 96), (56, 92))[1:],
                      _bezier((56, 92), (34, 88), (28, 70), (30, 50))[1:]])
    s.add(body[:-1], closed=True)
    s.line((32, 44), (16, 50), (32, 54), closed=True)                # beak
    s.dot(44, 44, 2)                                                 # eye
    s.add(np.vstack([_bezier((58, 62), (72, 54), (92, 58), (98, 64)),
                     _bezier((98, 64), (86, 76), (70, 78), (58, 62))[1:]]), w=1.5)   # wing
    s.line((62, 92), (60, 110), (54, 116), w=1.5)                    # legs
    s.line((60, 110), (64, 116), w=1.5)
    s.line((76, 92), (78, 110), (72, 116), w=1.5)
    s.line((78, 110), (84, 116), w=1.5)


def key(s):
    s.circle(34, 64, 20)
    s.circle(34, 64, 7, w=1.5)                                       # hole
    s.line((54, 58), (112, 58), (112, 78), (104, 78), (104, 70), (96, 70), (96, 78), (88, 78), (88, 70),
           (54, 70))                                                 # shaft and teeth


def crown(s):
    s.line((20, 96), (14, 40), (40, 66), (64, 24), (88, 66), (114, 40), (108, 96), closed=True)
    s.line((22, 84), (106, 84), w=1.5)
    for x, y in ((14, 36), (64, 20), (114, 36)):
        s.circle(x, y, 4.5, w=1.5)                                   # balls on the tips
    for x in (40, 64, 88):
        s.circle(x, 90, 3, w=1.5)                                    # jewels


def bell(s):
    s.add(np.vstack([_bezier((18, 96), (34, 86), (34, 60), (38, 44)),
                     _bezier((38, 44), (44, 20), (84, 20), (90, 44))[1:],
                     _bezier((90, 44), (94, 60), (94, 86), (110, 96))[1:]]), closed=True)
    s.circle(64, 104, 7)                                             # clapper
    s.circle(64, 20, 5, w=1.5)                                       # loop
    s.add(_ellipse(50, 56, 6, 14, 180, 250), w=1.5)


def sailboat(s):
    s.line((14, 86), (114, 86), (98, 108), (30, 108), closed=True)  # hull
    s.line((64, 86), (64, 12))                                       # mast
    s.line((68, 16), (68, 80), (108, 80), closed=True)               # sails
    s.line((60, 24), (60, 80), (26, 80), closed=True)
    s.add(_ellipse(64, 116, 60, 4, 200, 340), w=1.5)                  # water
    s.line((64, 12), (78, 10), (64, 6), w=1.5)                       # flag


def gift(s):
    s.rect(22, 56, 106, 114)                                         # box
    s.rect(16, 42, 112, 56)                                          # lid
    s.line((58, 42), (58, 114), w=1.5)                               # ribbon
    s.line((70, 42), (70, 114), w=1.5)
    s.ellipse(50, 32, 14, 9, 0, 360)                                 # bow
    s.ellipse(78, 32, 14, 9, 0, 360)


def pear(s):
    s.add(np.vstack([_bezier((64, 22), (82, 22), (80, 52), (94, 66)),
                     _bezier((94, 66), (116, 92), (96, 118), (64, 116))[1:],
                     _bezier((64, 116), (32, 118), (12, 92), (34, 66))[1:],
                     _bezier((34, 66), (48, 52), (46, 22), (64, 22))[1:]])[:-1], closed=True)
    s.add(_bezier((64, 24), (64, 16), (66, 10), (70, 6)))
    s.add(np.vstack([_bezier((68, 14), (76, 4), (92, 4), (96, 8)),
                     _bezier((96, 8), (88, 18), (76, 20), (68, 14))[1:]]), closed=True, w=1.5)


# (name, drawing function, stroke width, Twemoji icon). House and smiley are the kept older sketches.
SUBJECTS = [
    ("cottage", cottage, 2.0, "house"),
    ("face", face, 2.0, "grinning-face"),
    ("cup", cup, 2.0, "hot-beverage"),
    ("tree", tree, 2.0, "deciduous-tree"),
    ("pine", pine, 2.5, "evergreen-tree"),
    ("heart", heart, 2.0, "red-heart"),
    ("fish", fish, 2.0, "fish"),
    ("star", star, 3.0, "star"),
    ("sun", sun, 2.0, "sun-with-face"),
    ("cat", cat, 2.0, "cat-face"),
    ("car", car, 2.0, "automobile"),
    ("sunflower", sunflower, 2.0, "sunflower"),
    ("apple", apple, 2.0, "red-apple"),
    ("moon", moon, 2.5, "crescent-moon"),
    ("cloud", cloud, 3.5, "cloud"),
    ("umbrella", umbrella, 2.0, "umbrella"),
    ("ghost", ghost, 2.0, "ghost"),
    ("mushroom", mushroom, 2.0, "mushroom"),
    ("rocket", rocket, 2.0, "rocket"),
    ("snowman", snowman, 2.0, "snowman-without-snow"),
    ("balloon", balloon, 1.5, "balloon"),
    ("cake", cake, 2.0, "birthday-cake"),
    ("leaf", leaf, 2.0, "leaf-fluttering-in-wind"),
    ("bird", bird, 2.0, "bird"),
    ("key", key, 2.0, "old-key"),
    ("crown", crown, 2.0, "crown"),
    ("bell", bell, 3.0, "bell"),
    ("sailboat", sailboat, 2.0, "sailboat"),
    ("gift", gift, 2.0, "wrapped-gift"),
    ("pear", pear, 1.5, "pear"),
]
KEPT = [("house", "house-with-garden"), ("smiley", "slightly-smiling-face")]


def draw(name, fn, width, size=SIZE):
    """The sketch as uint8 [size, size]: 0 = ink, 255 = paper. Seeded by the name."""
    s = Sketch(width)
    fn(s)
    ink = rasterise(s, np.random.default_rng(zlib.crc32(name.encode())), size)
    return np.where(ink, 0, 255).astype(np.uint8)


# ---- exemplars ----------------------------------------------------------------------------------
def twemoji_icons(names, pkg=TWEMOJI, size=SIZE):
    """The named icons of an iconify-json package rasterised at size x size RGB on white, as
    `train.data.extract_iconify` does it (square view box centred on the icon, resvg)."""
    import resvg_py

    from .data import _iconify_json

    icons, _ = _iconify_json(pkg)
    out = {}
    for name in names:
        icon = icons["icons"][name]
        w, h = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
        side = max(w, h)
        x0, y0 = icon.get("left", 0) - (side - w) / 2, icon.get("top", 0) - (side - h) / 2
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0} {y0} {side} {side}">'
               f'{icon["body"]}</svg>')
        png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
        im = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im)
        out[name] = np.asarray(canvas.convert("RGB"), dtype=np.uint8)
    return out


def photo(fn_name, size=SIZE):
    """A scikit-image sample photo, centre-cropped to a square and resized (Lanczos)."""
    from skimage import data

    a = getattr(data, fn_name)()
    h, w = a.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    im = Image.fromarray(a[y0:y0 + side, x0:x0 + side]).convert("RGB")
    return np.asarray(im.resize((size, size), Image.LANCZOS), np.uint8)


def _save(path, arr):
    Image.fromarray(arr).save(path, optimize=False)


def build(out="assets/drawn", pkg=TWEMOJI):
    os.makedirs(out, exist_ok=True)
    version = os.path.basename(pkg).replace("iconify-json-twemoji-", "").replace(".tgz", "")
    icons = twemoji_icons([ic for *_, ic in SUBJECTS] + [ic for _, ic in KEPT], pkg)
    pairs = []

    def twemoji_pair(name, icon, sketch_source):
        _save(os.path.join(out, f"{name}_exemplar.png"), icons[icon])
        pairs.append({"name": name, "sketch": f"{name}_sketch.png", "exemplar": f"{name}_exemplar.png",
                      "sketch_source": sketch_source, "exemplar_kind": "twemoji",
                      "exemplar_source": f"Twemoji icon '{icon}' (npm @iconify-json/twemoji {version})",
                      "exemplar_licence": TWEMOJI_LICENCE})

    for name, fn, width, icon in SUBJECTS:
        _save(os.path.join(out, f"{name}_sketch.png"), draw(name, fn, width))
        twemoji_pair(name, icon, f"train/drawn.py: {fn.__name__}, {width:g} px strokes, seed crc32('{name}')")
    for name, icon in KEPT:
        if not os.path.exists(os.path.join(out, f"{name}_sketch.png")):
            raise SystemExit(f"{out}/{name}_sketch.png is missing (kept from before, not generated)")
        twemoji_pair(name, icon, "kept older sketch: straight lines and ellipses, 3 px (PIL ImageDraw)")
    for name, (fn_name, licence) in PHOTOS.items():
        _save(os.path.join(out, f"{name}_photo_exemplar.png"), photo(fn_name))
        pairs.append({"name": f"{name}_photo", "sketch": f"{name}_sketch.png",
                      "exemplar": f"{name}_photo_exemplar.png", "sketch_source": pairs[
                          [p["name"] for p in pairs].index(name)]["sketch_source"],
                      "exemplar_kind": "photo", "exemplar_source": f"skimage.data.{fn_name}() "
                      "(scikit-image sample data), centre-cropped to a square, resized to 128 (Lanczos)",
                      "exemplar_licence": licence})
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    return pairs


def load_pairs(folder="assets/drawn"):
    return json.load(open(os.path.join(folder, "pairs.json")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/drawn")
    ap.add_argument("--twemoji", default=TWEMOJI, help="npm tarball of @iconify-json/twemoji (npm pack)")
    a = ap.parse_args()
    pairs = build(a.out, a.twemoji)
    print(f"wrote {len(pairs)} pairs to {a.out}/ ({len(SUBJECTS)} generated sketches, "
          f"{len(KEPT)} kept, {len(PHOTOS)} photo exemplars)")


if __name__ == "__main__":
    main()
