"""Emoji dataset: `python -m train.data --out train/data`.

Source: the Noto Color Emoji bitmaps of Debian's `fonts-noto-color-emoji`
(/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf, CBDT PNG strikes of 136x128, Apache-2.0).
Each glyph is composited on white, padded to a square, resized to SIZE x SIZE (Lanczos).

- Split: a glyph is in the validation split when sha1(glyph name) % 10 == 0 (fixed, ~10%).
- Condition (label_nc = 1): Canny edges (skimage, sigma 1.0 on the luminance in [0,1]) of the
  target, dilated with a 3x3 square so lines are 3 px wide at 64x64. Lines that thick survive the
  reference's nearest-neighbour downsampling to the 16x16 latent grid (which keeps one pixel of
  every 4x4 block), and look like a brush sketch.
- Exemplar rule: every glyph gets a "key codepoint": its own codepoint, or, for a sequence glyph
  (ZWJ sequences, skin tones, flags, keycaps), the first codepoint of its GSUB ligature. Glyphs are
  ordered by (key codepoint, glyph id) inside each split; the exemplar candidates of a glyph are the
  K = 6 nearest glyphs in that order whose key codepoint differs (so a skin-tone variant of the same
  emoji is never its exemplar, but neighbouring faces, hands, animals, flags are). Unicode assigns
  neighbouring codepoints to related emoji (e.g. U+1F600..1F64F smileys), so these are related
  content, as the paper's training pairs are. Geometric augmentation is applied at training time.

Optional second source, training split only: `--fluent PKG` adds Microsoft's Fluent Emoji Flat
(MIT), from the npm package @iconify-json/fluent-emoji-flat (`npm pack
@iconify-json/fluent-emoji-flat` gives the tarball; 3,174 SVG icons), rasterised with resvg at
SIZE x SIZE on white. Its key codepoint is the first codepoint of the icon's sequence (the
package's chars.json). An icon whose key is the key of a Noto validation glyph is dropped, so the
validation split, its exemplars and the evaluation stay exactly as without it, and no validation
emoji is seen in another style during training; every other icon joins the training split, with
exemplars by the same rule (a Fluent icon's candidates may be Noto glyphs and the reverse).
"""
import argparse
import hashlib
import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
K_CANDIDATES = 6


def edge_map(rgb_u8):
    """Canny edges of an RGB uint8 image [H, W, 3] -> float32 {0,1} [H, W], lines 3 px wide."""
    from scipy.ndimage import binary_dilation
    from skimage.feature import canny

    g = (rgb_u8.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    e = canny(g, sigma=1.0, low_threshold=0.05, high_threshold=0.15)
    e = binary_dilation(e, structure=np.ones((3, 3), bool))
    return e.astype(np.float32)


def _ligature_first_codepoints(font):
    """glyph name -> first component glyph name, from the GSUB ligature substitutions."""
    first = {}
    gsub = font["GSUB"].table
    for lookup in gsub.LookupList.Lookup:
        for st in lookup.SubTable:
            if lookup.LookupType == 7:
                st = st.ExtSubTable
            ligs = getattr(st, "ligatures", None)
            if not ligs:
                continue
            for g0, lst in ligs.items():
                for lig in lst:
                    first.setdefault(lig.LigGlyph, g0)
    return first


def extract(size=64, font_path=FONT):
    from fontTools.ttLib import TTFont

    font = TTFont(font_path)
    strike = font["CBDT"].strikeData[0]
    rev = {}
    for cp, g in font.getBestCmap().items():
        rev.setdefault(g, cp)
    first = _ligature_first_codepoints(font)
    order = {g: i for i, g in enumerate(font.getGlyphOrder())}
    names, imgs, keys = [], [], []
    for name, bmp in strike.items():
        try:
            im = Image.open(io.BytesIO(bmp.imageData)).convert("RGBA")
        except Exception:
            continue
        side = max(im.size)
        canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
        rgb = canvas.convert("RGB").resize((size, size), Image.LANCZOS)
        key = rev.get(name)
        seen = 0
        g = name
        while key is None and g in first and seen < 8:
            g = first[g]
            key = rev.get(g)
            seen += 1
        if key is None or key < 0x80:
            # keycaps and the like: keep, ordered at the end
            key = 0x10FFFF if key is None else key
        names.append(name)
        imgs.append(np.asarray(rgb, dtype=np.uint8))
        keys.append((key, order.get(name, 0)))
    return names, np.stack(imgs), keys


def _iconify_json(pkg):
    """icons.json and chars.json of an iconify-json package: its npm tarball or unpacked folder."""
    if os.path.isdir(pkg):
        return [json.load(open(os.path.join(pkg, f))) for f in ("icons.json", "chars.json")]
    with tarfile.open(pkg) as t:
        return [json.load(t.extractfile(f"package/{f}")) for f in ("icons.json", "chars.json")]


def extract_iconify(pkg, size=64):
    """Icons of an iconify-json package (e.g. Fluent Emoji Flat) rasterised to SIZE x SIZE RGB on
    white; returns names ("<package prefix>:<icon>", e.g. "fluent-emoji-flat:cat-face"), images and (key codepoint, order) pairs. Aliases
    (mirrored copies of other icons) and icons without a codepoint are skipped."""
    import resvg_py

    icons, chars = _iconify_json(pkg)
    key_of = {}
    for seq, name in chars.items():
        key_of.setdefault(name, int(seq.split("-")[0], 16))
    names, imgs, keys = [], [], []
    for n, (name, icon) in enumerate(sorted(icons["icons"].items())):
        if name not in key_of:
            continue
        w, h = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
        side = max(w, h)  # a square view box centred on the icon: pads it as the Noto glyphs are
        x0, y0 = icon.get("left", 0) - (side - w) / 2, icon.get("top", 0) - (side - h) / 2
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0} {y0} {side} {side}">'
               f'{icon["body"]}</svg>')
        png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
        im = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im)
        names.append(f"{icons.get('prefix', 'iconify')}:{name}")
        imgs.append(np.asarray(canvas.convert("RGB"), dtype=np.uint8))
        keys.append((key_of[name], 1_000_000 + n))  # after the Noto glyphs of the same key
    return names, np.stack(imgs), keys


def split_of(name):
    return 1 if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10 == 0 else 0


def exemplar_candidates(keys, idx):
    """For glyph indices `idx` (one split), the K nearest in key order with a different key."""
    srt = sorted(idx, key=lambda i: keys[i])
    cands = {}
    for p, i in enumerate(srt):
        found = []
        for d in range(1, len(srt)):
            for q in (p - d, p + d):
                if 0 <= q < len(srt) and keys[srt[q]][0] != keys[i][0] and len(found) < K_CANDIDATES:
                    found.append(srt[q])
            if len(found) >= K_CANDIDATES:
                break
        cands[i] = found
    return cands


def build(out, size=64, font_path=FONT, fluent=None):
    names, imgs, keys = extract(size, font_path)
    split = [split_of(n) for n in names]
    if fluent:
        val_keys = {k[0] for k, s in zip(keys, split) if s}
        fn, fi, fk = extract_iconify(fluent, size)
        keep = [i for i, k in enumerate(fk) if k[0] not in val_keys]
        names += [fn[i] for i in keep]
        imgs = np.concatenate([imgs, fi[keep]])
        keys += [fk[i] for i in keep]
        split += [0] * len(keep)
    edges = np.stack([edge_map(im) for im in imgs]).astype(np.uint8)
    split = np.array(split, np.uint8)
    cand = np.zeros((len(names), K_CANDIDATES), np.int64)
    for s in (0, 1):
        c = exemplar_candidates(keys, [i for i in range(len(names)) if split[i] == s])
        for i, lst in c.items():
            cand[i] = lst
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"emoji{size}.npz")
    np.savez_compressed(path, images=imgs, edges=edges, split=split, candidates=cand,
                        names=np.array(names), keys=np.array([k[0] for k in keys], np.int64))
    return path, len(names), int(split.sum())


def load(data_dir, size=64):
    d = np.load(os.path.join(data_dir, f"emoji{size}.npz"))
    return {k: d[k] for k in d.files}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="train/data")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--font", default=FONT, help="NotoColorEmoji.ttf (default: Debian's fonts-noto-color-emoji)")
    ap.add_argument("--fluent", default=None,
                    help="also train on Fluent Emoji Flat: the tarball of `npm pack @iconify-json/fluent-emoji-flat`")
    a = ap.parse_args()
    if not os.path.exists(a.font):
        raise SystemExit(f"{a.font} not found: apt-get install fonts-noto-color-emoji")
    if a.fluent and not os.path.exists(a.fluent):
        raise SystemExit(f"{a.fluent} not found: npm pack @iconify-json/fluent-emoji-flat")
    path, n, nval = build(a.out, a.size, a.font, a.fluent)
    print(f"wrote {path}: {n} glyphs, {n - nval} train, {nval} val")


if __name__ == "__main__":
    main()
