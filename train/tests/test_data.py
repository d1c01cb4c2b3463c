"""train.data: several styles of one emoji, the split by emoji, the held-out style, the one-line
sketches, and the exemplar tables (on synthetic glyphs and packages: CI has no font or tarballs)."""
import json

import numpy as np
import pytest

import train.data as data


def fake_noto(size, n=16):
    """`n` glyphs standing in for the font: half of them with a validation key."""
    keys = list(range(0x1F600, 0x1F800))
    picked = [k for k in keys if data.split_of_key(k) == data.TRAIN][: n // 2] + \
             [k for k in keys if data.split_of_key(k) == data.VAL][: n // 2]
    imgs = np.full((len(picked), size, size, 3), 255, np.uint8)
    alpha = np.zeros((len(picked), size, size), np.uint8)
    imgs[:, 8:24, 8:24] = (0, 0, 200)
    alpha[:, 8:24, 8:24] = 255
    return [f"u{k:X}" for k in picked], imgs, alpha, [(k, i, f"{k:x}") for i, k in enumerate(picked)]


def write_pack(path, prefix, icons, chars=None):
    path.mkdir()
    json.dump({"prefix": prefix, "width": 32, "height": 32, "icons": icons}, open(path / "icons.json", "w"))
    if chars is not None:
        json.dump(chars, open(path / "chars.json", "w"))
    return str(path)


RED = '<rect x="4" y="4" width="24" height="24" fill="#ff0000"/>'


def test_styles_split_by_emoji_and_held_out(tmp_path, monkeypatch):
    size = 32
    monkeypatch.setattr(data, "extract_rgba", lambda size, font_path: fake_noto(size))
    names, _, _, keys = fake_noto(size)
    train_key, val_key = keys[0][0], keys[8][0]
    fluent = write_pack(tmp_path / "fl", "fluent-emoji-flat", {
        "smile": {"body": RED}, "val-smile": {"body": RED}, "wide": {"body": RED, "height": 16}},
        {f"{train_key:x}": "smile", f"{val_key:x}-200d-2642": "val-smile", "1f7e5": "wide"})
    # no chars.json: keys by name (via fluent's names), hyphen-less names and "-1" suffixes too
    fx = write_pack(tmp_path / "fx", "fxemoji", {"valsmile": {"body": RED}, "smile-1": {"body": RED},
                                                 "nothing-known": {"body": RED}})
    tw = write_pack(tmp_path / "tw", "twemoji", {"smile": {"body": RED}}, {f"{train_key:x}": "smile"})
    path, n, counts = data.build(str(tmp_path / "out"), size=size, font_path=None, packs=[fluent, fx, tw])
    d = data.load(str(tmp_path / "out"), size)
    got = [str(x) for x in d["names"]]
    assert got[:16] == names
    i = {nm: got.index(nm) for nm in got}
    k = d["keys"]
    assert k[i["fxemoji:valsmile"]] == val_key and k[i["fxemoji:smile-1"]] == train_key
    assert k[i["fxemoji:nothing-known"]] > 0x10FFFF  # an emoji of its own
    # every style of an emoji is in that emoji's split; Twemoji is held out whatever its key
    assert d["split"][i["fluent-emoji-flat:val-smile"]] == data.VAL == d["split"][i["fxemoji:valsmile"]]
    assert d["split"][i["fluent-emoji-flat:smile"]] == data.TRAIN
    assert d["split"][i["twemoji:smile"]] == data.HELDOUT
    assert counts[2] == 1 and sum(counts) == n == len(got)
    assert [str(s) for s in d["styles"]] == ["noto", "fluent-emoji-flat", "fxemoji", "twemoji"]
    # same emoji, other style, same split: never the held-out style, never itself
    same = d["same_key"][0]
    assert set(same[same >= 0].tolist()) == {i["fluent-emoji-flat:smile"], i["fxemoji:smile-1"]}
    assert (d["same_key"][i["twemoji:smile"]] == -1).all()
    # neighbours stay inside a split
    val_idx = set(np.nonzero(d["split"] == data.VAL)[0].tolist())
    assert set(d["candidates"][8].tolist()) <= val_idx
    # one-line sketches: the outline of the 24x24 square, 1 px wide
    sk = d["sketch"][i["fluent-emoji-flat:smile"]]
    assert sk.dtype == bool and 60 < sk.sum() < 110
    assert d["alpha"][i["fluent-emoji-flat:smile"]][16, 16] == 255


def test_one_emoji_is_one_whole_sequence_not_one_first_codepoint(tmp_path, monkeypatch):
    """Flags share their first regional indicator, a farmer its first codepoint with every person:
    pairs of "the same emoji in another style" (training) and held-out pairs (evaluation) must
    not take one for the other."""
    size = 32

    def noto_with_a_farmer(size, font_path):
        names, imgs, alpha, keys = fake_noto(size)
        return names + ["noto-farmer"], np.concatenate([imgs, imgs[:1]]), np.concatenate([alpha, alpha[:1]]), \
            keys + [(0x1F33E, 99, data.sequence_id([0x1F33E, 0x200D, 0x1F9D1]))]

    monkeypatch.setattr(data, "extract_rgba", noto_with_a_farmer)
    ca, cn = "1f1e8-1f1e6", "1f1e8-1f1f3"
    fl = write_pack(tmp_path / "fl", "fluent-emoji-flat", {"flag-canada": {"body": RED}, "flag-china": {"body": RED},
                                                           "keycap-hash": {"body": RED}, "farmer": {"body": RED}},
                    {ca: "flag-canada", cn: "flag-china", "23-fe0f-20e3": "keycap-hash", "1f9d1-200d-1f33e": "farmer"})
    fx = write_pack(tmp_path / "fx", "fxemoji", {"flag-china": {"body": RED}, "keycaphash": {"body": RED},
                                                 "farmer": {"body": RED}})
    tw = write_pack(tmp_path / "tw", "twemoji", {"flag-canada": {"body": RED}, "flag-china": {"body": RED}},
                    {ca: "flag-canada", cn: "flag-china"})
    data.build(str(tmp_path / "out"), size=size, font_path=None, packs=[fl, fx, tw])
    d = data.load(str(tmp_path / "out"), size)
    i = {str(nm): j for j, nm in enumerate(d["names"])}
    seqs = [str(x) for x in d["seqs"]]
    assert seqs[i["fluent-emoji-flat:flag-canada"]] == ca and seqs[i["fxemoji:flag-china"]] == cn
    assert seqs[i["fluent-emoji-flat:keycap-hash"]] == "23-20e3" == seqs[i["fxemoji:keycaphash"]]  # FE0F dropped
    # one key codepoint (one split) for both flags, but each flag pairs only with itself
    assert d["keys"][i["fluent-emoji-flat:flag-canada"]] == d["keys"][i["fluent-emoji-flat:flag-china"]] == 0x1F1E8
    same = d["same_key"][i["fluent-emoji-flat:flag-china"]]
    assert same[same >= 0].tolist() == [i["fxemoji:flag-china"]]
    assert (d["same_key"][i["fluent-emoji-flat:flag-canada"]] == -1).all()
    assert d["same_key"][i["fluent-emoji-flat:keycap-hash"]][0] == i["fxemoji:keycaphash"]
    # the key (and so the split) stays the sequence's first codepoint, whatever order its id lists;
    # Noto's farmer, its ligature backwards (sheaf of rice first), takes the packs' key and split
    assert seqs[i["fxemoji:farmer"]] == "1f33e-200d-1f9d1" == seqs[i["noto-farmer"]]
    assert d["keys"][i["fluent-emoji-flat:farmer"]] == d["keys"][i["fxemoji:farmer"]] == 0x1F9D1
    assert d["keys"][i["noto-farmer"]] == 0x1F9D1 and d["split"][i["noto-farmer"]] == data.split_of_key(0x1F9D1)
    assert d["split"][i["noto-farmer"]] != data.split_of_key(0x1F33E)  # where its own first codepoint had put it
    assert i["fxemoji:farmer"] in d["same_key"][i["noto-farmer"]].tolist()


def test_noto_ligatures_expand_to_their_whole_sequence():
    rev = {"u1F1E8": 0x1F1E8, "u1F1E6": 0x1F1E6, "u1F9D1": 0x1F9D1, "u200D": 0x200D, "u1F33E": 0x1F33E,
           "uFE0F": 0xFE0F}
    comps = {"flag_ca": ("u1F1E8", "u1F1E6"), "zwj_person": ("u1F9D1", "u200D"),
             "farmer": ("zwj_person", "u1F33E", "uFE0F"), "broken": ("u1F9D1", "nowhere")}
    seq = lambda g: data.sequence_id(data._glyph_codepoints(g, rev, comps))
    assert seq("flag_ca") == "1f1e8-1f1e6"
    assert seq("farmer") == "1f33e-200d-1f9d1"  # a ligature of a ligature, FE0F dropped, parts sorted
    # Noto lists a ZWJ sequence's parts backwards; the packs' chars.json forwards: one identity
    assert data.sequence_id([0x1F3F3, 0xFE0F, 0x200D, 0x1F308]) == data.sequence_id([0x1F308, 0x200D, 0x1F3F3])
    assert data.sequence_id([0x1F1E8, 0x1F1E6]) != data.sequence_id([0x1F1E6, 0x1F1E8])  # flags keep their order
    assert seq("u1F33E") == "1f33e"
    assert data._glyph_codepoints("broken", rev, comps) is None


def test_share_alike_pack_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "extract_rgba", lambda size, font_path: fake_noto(size))
    om = write_pack(tmp_path / "om", "openmoji", {"smile": {"body": RED}}, {"1f600": "smile"})
    with pytest.raises(SystemExit, match="share-alike"):
        data.build(str(tmp_path / "out"), size=32, font_path=None, packs=[om])


def test_sketch_lines_merge_the_two_edges_of_a_stroke():
    """A 4-px dark ring: Canny finds its inner and outer edge; the sketch is one line."""
    size = 64
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - 32, xx - 32)
    img = np.full((size, size, 3), 255, np.uint8)
    img[(r > 14) & (r < 18)] = 30
    alpha = np.where(r < 18, 255, 0).astype(np.uint8)
    sk = data.sketch_lines(img, alpha)
    # one closed ring of ~2 pi 16 px; each row crossing the ring through its centre sees 2 runs
    row = sk[32]
    runs = np.count_nonzero(np.diff(row.astype(int)) == 1)
    assert runs == 2, row.nonzero()
    assert 80 < sk.sum() < 140
