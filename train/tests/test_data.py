"""The optional Fluent Emoji Flat source (`train.data --fluent`): icons rasterised on white, added to
the training split only, and none whose emoji is in the validation split."""
import json

import numpy as np

import train.data as data


def fake_noto(size):
    """16 glyphs standing in for the font (CI has no font): 8 of each split (exemplar candidates
    need at least 7 glyphs of a split)."""
    names = [f"u1F{n:03X}" for n in range(0x600, 0x700)]
    picked = [n for n in names if not data.split_of(n)][:8] + [n for n in names if data.split_of(n)][:8]
    imgs = np.full((len(picked), size, size, 3), 255, np.uint8)
    imgs[:, 8:24, 8:24] = (0, 0, 200)
    return picked, imgs, [(int(n[1:], 16), i) for i, n in enumerate(picked)]


def test_fluent_icons_join_the_training_split_only(tmp_path, monkeypatch):
    size = 32
    monkeypatch.setattr(data, "extract", lambda size, font_path: fake_noto(size))
    noto_names, _, noto_keys = fake_noto(size)
    val_key = noto_keys[8][0]
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    red = '<rect x="0" y="0" width="32" height="16" fill="#ff0000"/>'
    icons = {"prefix": "fluent-emoji-flat", "width": 32, "height": 32, "icons": {
        "red-square": {"body": red.replace('height="16"', 'height="32"')},
        "wide-banner": {"body": red, "height": 16},  # not square: padded, centred
        "same-as-val": {"body": red},
        "no-codepoint": {"body": red},
    }}
    chars = {"1f7e5": "red-square", "1f3f3-fe0f": "wide-banner", f"{val_key:x}-200d-2642": "same-as-val"}
    json.dump(icons, open(pkg / "icons.json", "w"))
    json.dump(chars, open(pkg / "chars.json", "w"))

    path, n, nval = data.build(str(tmp_path / "out"), size=size, font_path=None, fluent=str(pkg))
    d = np.load(path)
    names = [str(x) for x in d["names"]]
    assert names == noto_names + ["fluent-emoji-flat:red-square", "fluent-emoji-flat:wide-banner"]
    assert (n, nval) == (18, 8) and d["split"].tolist() == [0] * 8 + [1] * 8 + [0, 0]
    assert d["keys"].tolist()[16:] == [0x1F7E5, 0x1F3F3]
    sq, banner = d["images"][16], d["images"][17]
    assert sq[16, 16, 0] > 200 and sq[16, 16, 1:].max() < 60
    # The 32x16 banner fills the middle rows of its square and leaves white above and below.
    assert banner[16, 16, 0] > 200 and banner[16, 16, 1:].max() < 60
    assert (banner[2, 16] > 240).all() and (banner[29, 16] > 240).all()
    assert d["edges"][17].any()  # Canny finds the banner's border
    # Exemplars stay inside a split: validation glyphs keep validation exemplars; the Fluent icons
    # get training glyphs.
    assert set(d["candidates"][8:16].flatten().tolist()) <= set(range(8, 16))
    assert set(d["candidates"][16:].flatten().tolist()) <= set(range(8)) | {16, 17}
