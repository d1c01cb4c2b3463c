"""Model v2's training pairs and conditions (train.pairs) and the max-pooled label (ops)."""
import math

import numpy as np
import torch

import train.data as data
import train.pairs as pairs
from train.ops import downsample_label


def test_max_downsample_keeps_a_thin_diagonal():
    """A 1-px diagonal at 128, two pixels off the main one: max-pooling marks every 4x4 block it
    crosses; the authors' nearest sampling keeps pixel (4i, 4j) of each block and loses all of it."""
    x = torch.zeros(1, 1, 128, 128)
    r = torch.arange(126)
    x[0, 0, r, r + 2] = 1
    mx = downsample_label(x, (32, 32), "max")[0, 0]
    nn = downsample_label(x, (32, 32), "nearest")[0, 0]
    assert torch.equal(mx, ((torch.eye(32) + torch.eye(32).roll(1, 1).triu()) > 0).float())
    assert nn.sum() == 0
    # sizes that do not divide: adaptive pooling
    assert downsample_label(torch.ones(1, 1, 30, 30), (8, 8), "max").shape == (1, 1, 8, 8)


def test_unknown_downsample_is_an_error():
    try:
        downsample_label(torch.zeros(1, 1, 8, 8), (2, 2), "bilinear")
    except ValueError as e:
        assert "label_downsample" in str(e)
    else:
        raise AssertionError("accepted an unknown mode")


def test_hue_rotation_keeps_white_and_turns_red():
    m = pairs.hue_rotation(torch.tensor([2 * math.pi / 3]))
    white = torch.ones(1, 3, 2, 2)
    assert torch.allclose(pairs.apply_colour(white, m), white, atol=1e-6)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    out = pairs.apply_colour(red, m)[0, :, 0, 0]
    assert out[1] > 0.9 and out[0] < -0.9 and out[2] < -0.9  # red -> green


def test_dilate_draws_each_width():
    lines = torch.zeros(4, 1, 16, 16)
    lines[:, 0, 8, 2:14] = 1
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = pairs.dilate(lines, w)
    assert [int(out[k, 0, :, 8].sum()) for k in range(4)] == [1, 2, 3, 4]


def fake_set(tmp_path, size=32):
    """Two styles of 12 emoji: a coloured square (style 0) and a coloured disc (style 1)."""
    n = 12
    keys = [k for k in range(0x1F600, 0x1F700) if data.split_of_key(k) == data.TRAIN][:n]
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) < size / 4
    sq = np.zeros((size, size), bool)
    sq[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    imgs, alpha, names, style, key = [], [], [], [], []
    rng = np.random.default_rng(0)
    for s, shape in enumerate((sq, disc)):
        for k in keys:
            im = np.full((size, size, 3), 255, np.uint8)
            im[shape] = rng.integers(0, 200, 3)
            imgs.append(im)
            alpha.append(shape.astype(np.uint8) * 255)
            names.append(f"s{s}:{k:x}")
            style.append(s)
            key.append(k)
    imgs, alpha = np.stack(imgs), np.stack(alpha)
    split = [0] * len(names)
    sketch = np.stack([data.sketch_lines(i, a) for i, a in zip(imgs, alpha)])
    cand = np.zeros((len(names), data.K_CANDIDATES), np.int64)
    for i, lst in data.exemplar_candidates([(k, s, 0) for k, s in zip(key, style)], list(range(len(names)))).items():
        cand[i] = lst
    np.savez_compressed(tmp_path / f"emoji{size}.npz", images=imgs, alpha=alpha, sketch=np.packbits(sketch, axis=-1),
                        edges=np.stack([data.edge_map(i) for i in imgs]).astype(np.uint8),
                        split=np.array(split, np.uint8), candidates=cand,
                        same_key=data.same_key_table(key, style, split), names=np.array(names),
                        keys=np.array(key), style=np.array(style, np.uint8), styles=np.array(["a", "b"]))
    return str(tmp_path), n


def test_pair_batches(tmp_path):
    d, n = fake_set(tmp_path)
    pb = pairs.PairBatches(d, "train", size=32, seed=3)
    b = pb.batch(64)
    assert b["image"].shape == b["ref"].shape == (64, 3, 32, 32)
    assert b["edge"].shape == b["ref_edge"].shape == (64, 1, 32, 32)
    for k in ("image", "ref"):
        assert b[k].min() >= -1 and b[k].max() <= 1
    assert set(torch.unique(b["edge"]).tolist()) <= {0.0, 1.0} and b["edge"].sum() > 0
    mode, i, j = b["mode"], b["idx"], b["ref_idx"]
    assert torch.equal(i[mode == 0], j[mode == 0])  # self-reference
    assert ((i[mode == 1] - j[mode == 1]).abs() == n).all()  # the same key in the other style
    assert (mode == 0).any() and (mode == 1).any() and (mode == 2).any()
    # exemplars on a background: their corners are not white
    bg = b["background"]
    corner = b["ref"][:, :, 0, 0].mean(1)
    assert bg.any() and (corner[~bg] > 0.95).all() and (corner[bg] < 0.95).float().mean() > 0.8
    # targets stay on white, placed anywhere at 55-100 %
    assert (b["image"][:, :, 0, 0] > 0.95).all()
    # same seed, same batch
    again = pairs.PairBatches(d, "train", size=32, seed=3).batch(64)
    assert torch.equal(again["edge"], b["edge"]) and torch.equal(again["ref"], b["ref"])


def test_condition_lies_on_the_target(tmp_path):
    """The stroke condition follows the placed target: its lines sit on the target's outline
    (within the wobble and width), not where the unplaced glyph was."""
    d, _ = fake_set(tmp_path)
    pb = pairs.PairBatches(d, "train", size=32, seed=5)
    b = pb.batch(32)
    fg = (b["image"] < 0.9).any(1, keepdim=True).float()
    near = torch.nn.functional.max_pool2d(fg, 7, stride=1, padding=3)  # target and 3 px around
    on = (b["edge"] * near).sum() / b["edge"].sum()
    assert on > 0.95, on


def test_plain_batches_use_the_other_style(tmp_path):
    d, n = fake_set(tmp_path)
    pb = pairs.PairBatches(d, "train", size=32, seed=0)
    idx = pb.idx[:4]
    b = pb.batch(4, augment=False, indices=idx)
    assert ((b["ref_idx"] - idx).abs() == n).all()
    assert torch.equal(b["edge"], pb.batch(4, augment=False, indices=idx)["edge"])


def test_loader_in_workers_is_deterministic(tmp_path):
    d, _ = fake_set(tmp_path)
    a = pairs.Loader(pairs.PairBatches(d, "train", size=32, seed=1), 4, "cpu", workers=1, seed=9).next()
    b = pairs.Loader(pairs.PairBatches(d, "train", size=32, seed=1), 4, "cpu", workers=1, seed=9).next()
    assert torch.equal(a["edge"], b["edge"]) and torch.equal(a["ref"], b["ref"])


def test_heldout_pairs_take_the_held_out_style(tmp_path):
    d, n = fake_set(tmp_path)
    z = dict(np.load(f"{d}/emoji32.npz"))
    z["split"][n:] = data.HELDOUT  # style 1 becomes the held-out style
    z["same_key"] = data.same_key_table(z["keys"].tolist(), z["style"].tolist(), z["split"].tolist())
    np.savez_compressed(f"{d}/emoji32.npz", **z)
    pb = pairs.PairBatches(d, "train", size=32, seed=0)
    idx = pb.heldout_indices()
    assert len(idx) == n and (pb.same[idx] == -1).all()
    b = pb._plain(idx, heldout=True)
    assert (b["ref_idx"] == idx + n).all()


def test_heldout_pairs_match_the_whole_sequence_not_the_key(tmp_path):
    """Two emoji of one key codepoint (two flags of one first letter): each held-out pair takes the
    held-out glyph of its own sequence; without `seqs` (an older data set) the key decides."""
    d, n = fake_set(tmp_path)
    z = dict(np.load(f"{d}/emoji32.npz"))
    z["split"][n:] = data.HELDOUT
    z["keys"][1] = z["keys"][0]  # glyphs 0 and 1 (and their held-out twins n, n + 1) share a key
    z["keys"][n + 1] = z["keys"][n]
    z["seqs"] = np.array([f"{k:x}" for k in range(2 * n)])  # but every emoji ...
    z["seqs"][n:] = z["seqs"][:n]  # ... is its own sequence, in both styles
    np.savez_compressed(f"{d}/emoji32.npz", **z)
    pb = pairs.PairBatches(d, "train", size=32, seed=0)
    assert pb.heldout_of[0] == n and pb.heldout_of[1] == n + 1
    del z["seqs"]
    np.savez_compressed(f"{d}/emoji32.npz", **z)
    old = pairs.PairBatches(d, "train", size=32, seed=0)
    assert old.heldout_of[0] == old.heldout_of[1]  # by key: both on one held-out glyph


def test_fill_label_fills_closed_outlines_only():
    """ops.fill_label (scipy binary_fill_holes, 4-connected background) on the Rust test's shapes
    (model::ops::tests::fill_label_fills_closed_outlines_only): a closed square and a diamond of
    diagonal steps fill, an open arc does not."""
    import numpy as np
    import torch

    from train.ops import fill_label

    rows = ["..........", ".####..#..", ".#..#.#.#.", ".#..#..#..", ".####.....", "..........",
            ".###..#...", ".#.#.#....", ".#...#....", ".###......"]
    want = ["..........", ".####..#..", ".####.###.", ".####..#..", ".####.....", "..........",
            ".###..#...", ".#.#.#....", ".#...#....", ".###......"]
    grid = lambda rs: torch.tensor(np.array([[c == "#" for c in r] for r in rs], np.float32))[None, None]
    assert torch.equal(fill_label(grid(rows)), grid(want))


def test_batches_carry_the_filled_drawing_that_seg_input_would_make(tmp_path):
    """train.pairs makes `fill` with each batch (in its worker processes), so the training step
    does not fill on the host; seg_enc's input is the same either way."""
    from train.ops import fill_label, seg_input

    d, _ = fake_set(tmp_path)
    pb = pairs.PairBatches(d, "train", size=32, seed=2)
    for b in (pb.batch(6), pb.batch(6, augment=False)):
        assert torch.equal(b["fill"], fill_label(b["edge"]))
        made, _ = seg_input(b["edge"], (8, 8), "max", True)
        given, _ = seg_input(b["edge"], (8, 8), "max", True, b["fill"])
        assert torch.equal(given, made)
