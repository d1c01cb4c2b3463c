"""Emoji dataset: `python -m train.data --out train/data --size 128 [--packs DIR]`.

Sources (several styles of the same emoji; licences in weights/MODEL_CARD.md):
- Noto Color Emoji bitmaps of Debian's `fonts-noto-color-emoji` (Apache-2.0): the CBDT PNG strikes
  of /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf, padded to a square on white, resized
  (Lanczos) to SIZE x SIZE.
- With `--packs DIR`: the iconify-json npm tarballs in DIR (`npm pack @iconify-json/NAME`), rasterised
  with resvg at SIZE x SIZE: Fluent Emoji Flat (MIT), fxemoji (Apache-2.0), Emoji One (CC-BY-4.0),
  Streamline Emojis (CC-BY-4.0) join training and validation; Twemoji (CC-BY-4.0) is the held-out
  style (split 2: evaluation only, never trained on). OpenMoji (CC-BY-SA) is refused: share-alike.
  A pack's key codepoint comes from its chars.json, or, for packs without one (fxemoji, Emoji One,
  Streamline), from its icon name looked up in the names of the packs that have one
  (`grinning-face`, `cloud-1` -> `cloud`, `loveletter` -> `love-letter`); an icon whose name
  matches none is its own emoji.

Per glyph: `images` (RGB on white), `alpha` (coverage, 0..255), `style` (index into `styles`),
`keys` (key codepoint: its own, or for a sequence glyph the first codepoint of its sequence, for
Noto as a pack's chars.json lists it, else of its GSUB ligature), `seqs` (the emoji's identity
across styles, `sequence_id`: its whole codepoint sequence without FE0F and with the parts of a ZWJ
sequence sorted, e.g. `1f1e8-1f1e6` for the flag of Canada, `1f33e-200d-1f9d1` for a farmer),
`split` (0 train, 1 validation, 2 held-out style), and two conditions:
- `edges` (the first models' condition): Canny edges (skimage, sigma 1.0 on the luminance in [0,1])
  dilated with a 3x3 square, lines 3 px wide: double lines along dark outlines, shading contours.
- `sketch`: one thin line per drawn line, as a user draws: the outline of the glyph's coverage
  plus Canny edges at sigma 1.5, closed by a 5x5 dilation (which merges the parallel edges of an
  outline stroke) and skeletonised to 1 px; components under 6 px dropped. Training makes the
  condition from it (train.pairs: width 1-4 px, dropout, jitter, scale and position).

Split by emoji, not by glyph: a key codepoint is in validation when sha1(hex key) % 10 == 0, so
every variant (skin tone, gender) and every style of one emoji is in one split. A Noto glyph whose
sequence a pack's chars.json lists takes that pack's key (the sequence's first codepoint): Noto's
ligatures list most ZWJ sequences in another order.

Exemplar rule: `candidates` holds, per glyph, the K = 6 nearest glyphs of its split in (key, style,
order) order whose key differs (Unicode assigns neighbouring codepoints to related emoji);
`same_key` the glyphs of its split with the same sequence in another style (-1 padded): the same
emoji drawn by another designer (data sets built before `seqs` paired by key codepoint, so every
flag of one first letter, or a farmer and a sheaf of rice, counted as one emoji). train.pairs mixes
these with the glyph itself as exemplar.
"""
import argparse
import glob
import hashlib
import io
import json
import os
import re
import tarfile

import numpy as np
from PIL import Image

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
K_CANDIDATES = 6
K_SAME = 4
# Styles by package prefix; split 2 marks the held-out style.
HELD_OUT = {"twemoji"}
REFUSED = {"openmoji": "OpenMoji is CC-BY-SA (share-alike): not used"}
TRAIN, VAL, HELDOUT = 0, 1, 2


def edge_map(rgb_u8):
    """Canny edges of an RGB uint8 image [H, W, 3] -> float32 {0,1} [H, W], lines 3 px wide."""
    from scipy.ndimage import binary_dilation
    from skimage.feature import canny

    g = (rgb_u8.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    e = canny(g, sigma=1.0, low_threshold=0.05, high_threshold=0.15)
    e = binary_dilation(e, structure=np.ones((3, 3), bool))
    return e.astype(np.float32)


def sketch_lines(rgb_u8, alpha_u8):
    """One 1-px line per drawn line (see the module docstring) -> bool [H, W]."""
    from scipy.ndimage import binary_dilation, binary_erosion, label
    from skimage.feature import canny
    from skimage.morphology import skeletonize

    g = (rgb_u8.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    inner = canny(g, sigma=1.5, low_threshold=0.08, high_threshold=0.2)
    cover = alpha_u8 > 127
    outline = cover & ~binary_erosion(cover, structure=np.ones((3, 3), bool))
    m = binary_dilation(inner | outline, structure=np.ones((5, 5), bool))
    sk = skeletonize(m)
    lab, n = label(sk, structure=np.ones((3, 3), bool))
    if n:
        sizes = np.bincount(lab.ravel())
        sk &= sizes[lab] >= 6
    return sk


def _ligature_components(font):
    """glyph name -> its component glyph names, from the GSUB ligature substitutions."""
    comps = {}
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
                    comps.setdefault(lig.LigGlyph, (g0, *lig.Component))
    return comps


def sequence_id(codepoints):
    """The identity of an emoji across styles: its codepoints in hex joined by "-", without the
    variation selector FE0F (packs write keycaps and symbols with and without it), the parts of a
    ZWJ sequence in sorted order: Noto's ligatures list them backwards (its farmer is sheaf of rice,
    ZWJ, man), the packs forwards. No two RGI emoji differ only in that order but the skin tones of
    people holding hands, which count as one here."""
    parts, cur = [], []
    for c in codepoints:
        if c == 0x200D:
            parts.append(cur)
            cur = []
        elif c != 0xFE0F:
            cur.append(c)
    parts.append(cur)
    return "-200d-".join(sorted("-".join(f"{c:x}" for c in p) for p in parts))


def _glyph_codepoints(g, rev, comps, depth=0):
    """A Noto glyph's codepoint sequence: its own codepoint, or its ligature's components expanded
    (a ligature may be built from ligatures); None when some part maps to no codepoint."""
    if g in rev:
        return [rev[g]]
    if g not in comps or depth > 8:
        return None
    out = []
    for c in comps[g]:
        cps = _glyph_codepoints(c, rev, comps, depth + 1)
        if cps is None:
            return None
        out += cps
    return out


def _first_codepoint(g, rev, comps):
    """The codepoint of `g`'s first component, followed through nested ligatures: the key of a
    glyph whose whole sequence `_glyph_codepoints` cannot give (none of NotoColorEmoji.ttf 2.042)."""
    for _ in range(9):
        if g in rev or g not in comps:
            return rev.get(g)
        g = comps[g][0]
    return None


def _on_white(im_rgba):
    canvas = Image.new("RGBA", im_rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(im_rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8), np.asarray(im_rgba)[..., 3].copy()


def extract_rgba(size=64, font_path=FONT):
    """Noto glyphs: names, RGB on white [N, S, S, 3], alpha [N, S, S], (key codepoint, order,
    sequence id) per glyph."""
    from fontTools.ttLib import TTFont

    font = TTFont(font_path)
    strike = font["CBDT"].strikeData[0]
    rev = {}
    for cp, g in font.getBestCmap().items():
        rev.setdefault(g, cp)
    comps = _ligature_components(font)
    order = {g: i for i, g in enumerate(font.getGlyphOrder())}
    names, imgs, alphas, keys = [], [], [], []
    for name, bmp in strike.items():
        try:
            im = Image.open(io.BytesIO(bmp.imageData)).convert("RGBA")
        except Exception:
            continue
        side = max(im.size)
        canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
        rgb, alpha = _on_white(canvas.resize((size, size), Image.LANCZOS))
        cps = _glyph_codepoints(name, rev, comps)
        key = cps[0] if cps else _first_codepoint(name, rev, comps)
        if key is None or key < 0x80:
            # keycaps and the like: keep, ordered at the end
            key = 0x10FFFF if key is None else key
        names.append(name)
        imgs.append(rgb)
        alphas.append(alpha)
        keys.append((key, order.get(name, 0), sequence_id(cps) if cps else f"noto:{name}"))
    return names, np.stack(imgs), np.stack(alphas), keys


def extract(size=64, font_path=FONT):
    names, imgs, _, keys = extract_rgba(size, font_path)
    return names, imgs, keys


def _iconify_json(pkg):
    """icons.json and chars.json ({} when absent) of an iconify-json package: its npm tarball or
    unpacked folder."""
    def read(f):
        if os.path.isdir(pkg):
            p = os.path.join(pkg, f)
            return json.load(open(p)) if os.path.exists(p) else {}
        with tarfile.open(pkg) as t:
            try:
                return json.load(t.extractfile(f"package/{f}"))
            except KeyError:
                return {}
    return read("icons.json"), read("chars.json")


def pack_prefix(pkg):
    return _iconify_json(pkg)[0].get("prefix", "iconify")


def _compact(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _chars_entry(seq):
    """A chars.json sequence ("1f468-200d-1f33e") -> (key codepoint: its first, sequence id)."""
    cps = [int(c, 16) for c in seq.split("-")]
    return cps[0], sequence_id(cps)


def name_sequences(pkgs):
    """Icon name -> (key codepoint, sequence id) from the chars.json of `pkgs`; also under the
    name without hyphens (fxemoji writes `loveletter`)."""
    out = {}
    for p in pkgs:
        for seq, name in _iconify_json(p)[1].items():
            entry = _chars_entry(seq)
            out.setdefault(name, entry)
            out.setdefault(_compact(name), entry)
    return out


def sequence_by_name(name, names):
    for n in (name, re.sub(r"-\d+$", "", name)):
        for cand in (n, _compact(n)):
            if cand in names:
                return names[cand]
    return None


def extract_iconify_rgba(pkg, size=64, names_to_sequences=None):
    """Icons of an iconify-json package rasterised to SIZE x SIZE: names ("<prefix>:<icon>"), RGB
    on white, alpha, (key codepoint, order, sequence id) per icon. Aliases (mirrored copies) are
    skipped; an icon without a codepoint is looked up by name in `names_to_sequences` (from
    `name_sequences`), else skipped when that is None, else made an emoji of its own (a private
    key above the Unicode range, its name as sequence id)."""
    import resvg_py

    icons, chars = _iconify_json(pkg)
    prefix = icons.get("prefix", "iconify")
    entry_of = {}
    for seq, name in chars.items():
        entry_of.setdefault(name, _chars_entry(seq))
    names, imgs, alphas, keys = [], [], [], []
    for n, (name, icon) in enumerate(sorted(icons["icons"].items())):
        entry = entry_of.get(name)
        if entry is None and names_to_sequences is not None:
            entry = sequence_by_name(name, names_to_sequences)
            if entry is None:
                sid = f"{prefix}:{name}"
                entry = 0x110000 + int(hashlib.sha1(sid.encode()).hexdigest(), 16) % (1 << 24), sid
        if entry is None:
            continue
        key, sid = entry
        w, h = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
        side = max(w, h)  # a square view box centred on the icon: pads it as the Noto glyphs are
        x0, y0 = icon.get("left", 0) - (side - w) / 2, icon.get("top", 0) - (side - h) / 2
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0} {y0} {side} {side}">'
               f'{icon["body"]}</svg>')
        png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
        rgb, alpha = _on_white(Image.open(io.BytesIO(bytes(png))).convert("RGBA"))
        names.append(f"{prefix}:{name}")
        imgs.append(rgb)
        alphas.append(alpha)
        keys.append((key, 1_000_000 + n, sid))  # after the Noto glyphs of the same key
    return names, np.stack(imgs), np.stack(alphas), keys


def extract_iconify(pkg, size=64):
    """Icons with a codepoint of an iconify-json package: names, RGB on white, (key, order, sequence id)."""
    names, imgs, _, keys = extract_iconify_rgba(pkg, size)
    return names, imgs, keys


def split_of_key(key):
    """Validation when sha1 of the key's hex % 10 == 0: every variant and style of an emoji alike."""
    return VAL if int(hashlib.sha1(f"{key:x}".encode()).hexdigest(), 16) % 10 == 0 else TRAIN


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


def same_key_table(keys, style, split):
    """[N, K_SAME]: glyphs of the same split and emoji in another style (-1 padded). `keys`: per
    glyph the emoji's identity, its sequence id (older data sets: its key codepoint, which puts
    every flag of one first letter, or a profession and its tool, under one emoji)."""
    by_key = {}
    for i, (k, s) in enumerate(zip(keys, split)):
        by_key.setdefault((k, s), []).append(i)
    out = np.full((len(keys), K_SAME), -1, np.int64)
    for i, (k, s) in enumerate(zip(keys, split)):
        others = [j for j in by_key[(k, s)] if style[j] != style[i]]
        # one per other style first, so that a style with many variants does not crowd the rest
        seen, pick = set(), []
        for j in others:
            if style[j] not in seen:
                seen.add(style[j])
                pick.append(j)
        pick += [j for j in others if j not in pick]
        out[i, :len(pick[:K_SAME])] = pick[:K_SAME]
    return out


def _conditions(chunk):
    imgs, alphas = chunk
    return (np.stack([edge_map(im) for im in imgs]).astype(np.uint8),
            np.stack([sketch_lines(im, a) for im, a in zip(imgs, alphas)]))


def conditions(imgs, alphas, jobs=None):
    """Both conditions of every glyph, in `jobs` processes (Canny and skeletons take ~10 ms a glyph:
    2.5 min for 15,000 on one core, seconds on a GPU machine's 16)."""
    jobs = jobs or os.cpu_count() or 1
    chunks = [(imgs[i:i + 256], alphas[i:i + 256]) for i in range(0, len(imgs), 256)]
    if jobs == 1 or len(chunks) == 1:
        parts = [_conditions(c) for c in chunks]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as ex:
            parts = list(ex.map(_conditions, chunks))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build(out, size=64, font_path=FONT, packs=(), jobs=None):
    """Writes <out>/emoji<size>.npz; returns (path, glyph count, counts per split)."""
    names, imgs, alphas, keys = extract_rgba(size, font_path)
    styles = ["noto"]
    style = [0] * len(names)
    packs = list(packs)
    for p in packs:
        if pack_prefix(p) in REFUSED:
            raise SystemExit(f"{p}: {REFUSED[pack_prefix(p)]}")
    lookup = name_sequences(packs)
    # Noto's key is the first codepoint in its ligature's order, which for most ZWJ sequences is
    # not the sequence's own (its farmer began with the sheaf of rice), so one emoji fell into two
    # splits (96 sequences in both). Where the packs know the sequence, their key decides.
    key_of_sequence = {}
    for key, sid in lookup.values():
        key_of_sequence.setdefault(sid, key)
    keys = [(key_of_sequence.get(k[2], k[0]), *k[1:]) for k in keys]
    for p in packs:
        fn, fi, fa, fk = extract_iconify_rgba(p, size, lookup)
        styles.append(pack_prefix(p))
        names += fn
        imgs = np.concatenate([imgs, fi])
        alphas = np.concatenate([alphas, fa])
        keys += fk
        style += [len(styles) - 1] * len(fn)
    split = [HELDOUT if styles[s] in HELD_OUT else split_of_key(k[0]) for k, s in zip(keys, style)]
    edges, sketch = conditions(imgs, alphas, jobs)
    order = [(k[0], s, k[1]) for k, s in zip(keys, style)]
    cand = np.zeros((len(names), K_CANDIDATES), np.int64)
    for sp in (TRAIN, VAL, HELDOUT):
        c = exemplar_candidates(order, [i for i in range(len(names)) if split[i] == sp])
        for i, lst in c.items():
            cand[i, :len(lst)] = lst
    key0 = [k[0] for k in keys]
    seqs = [k[2] for k in keys]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"emoji{size}.npz")
    np.savez_compressed(path, images=imgs, alpha=alphas, edges=edges, sketch=np.packbits(sketch, axis=-1),
                        split=np.array(split, np.uint8), candidates=cand,
                        same_key=same_key_table(seqs, style, split), names=np.array(names),
                        keys=np.array(key0, np.int64), seqs=np.array(seqs), style=np.array(style, np.uint8),
                        styles=np.array(styles))
    return path, len(names), np.bincount(split, minlength=3).tolist()


def load(data_dir, size=64):
    d = np.load(os.path.join(data_dir, f"emoji{size}.npz"))
    out = {k: d[k] for k in d.files}
    if "sketch" in out:
        out["sketch"] = np.unpackbits(out["sketch"], axis=-1, count=out["images"].shape[2]).astype(bool)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="train/data")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--font", default=FONT, help="NotoColorEmoji.ttf (default: Debian's fonts-noto-color-emoji)")
    ap.add_argument("--packs", default=None,
                    help="a folder of iconify-json npm tarballs (`npm pack @iconify-json/fluent-emoji-flat` ...); "
                         "twemoji becomes the held-out style")
    ap.add_argument("--pack", action="append", default=[], help="one iconify-json tarball (repeatable)")
    ap.add_argument("--jobs", type=int, default=None, help="processes for the conditions (default: all cores)")
    a = ap.parse_args()
    if not os.path.exists(a.font):
        raise SystemExit(f"{a.font} not found: apt-get install fonts-noto-color-emoji")
    packs = sorted(glob.glob(os.path.join(a.packs, "*.tgz"))) if a.packs else []
    packs += a.pack
    for p in packs:
        if not os.path.exists(p):
            raise SystemExit(f"{p} not found")
    path, n, counts = build(a.out, a.size, a.font, packs, a.jobs)
    print(f"wrote {path}: {n} glyphs, {counts[0]} train, {counts[1]} val, {counts[2]} held-out style")


if __name__ == "__main__":
    main()
