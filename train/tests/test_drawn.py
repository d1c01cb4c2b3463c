"""The hand-drawn set (train.drawn) and its metrics (train.drawn_eval); no model needed."""
import os

import numpy as np
import pytest
from PIL import Image

from train import drawn
from train.drawn_eval import chamfer, colour_distance, colour_intersection, filled, output_edges, read_condition, silhouette_iou

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SET = os.path.join(ROOT, "assets", "drawn")


def square_sketch():
    s = drawn.Sketch(2.0)
    s.rect(32, 32, 96, 96)
    return drawn.rasterise(s, np.random.default_rng(0))


def white(size=128):
    return np.full((size, size, 3), 255, np.uint8)


def test_iou_of_a_closed_square():
    lines = square_sketch()
    out = white()
    out[filled(lines)] = (200, 40, 40)
    assert silhouette_iou(lines, out) == pytest.approx(1.0)
    # an axis-aligned square where the wobbly one was drawn: close to 1, not exact
    out = white()
    out[32:97, 32:97] = (200, 40, 40)
    assert 0.9 < silhouette_iou(lines, out) < 1.0
    assert silhouette_iou(lines, white()) == 0.0


def test_open_strokes_count_only_their_pixels():
    s = drawn.Sketch(2.0)
    s.line((20, 64), (108, 64))
    lines = drawn.rasterise(s, np.random.default_rng(0))
    assert filled(lines).sum() == lines.sum()
    out = white()
    out[40:90, 20:109] = 0  # a big filled block around the stroke: IoU is the stroke's share of it
    assert silhouette_iou(lines, out) == pytest.approx(lines.sum() / (50 * 89), abs=0.01)


def test_chamfer_is_zero_on_coinciding_edges_and_k_for_a_shift():
    out = white()
    out[:, :64] = 0  # one vertical boundary
    edges = output_edges(out)
    assert edges.any()
    assert chamfer(edges, edges) == (0.0, False)
    right = np.nonzero(edges.any(0))[0].max()  # the edge band's last column
    for k in (1, 3, 6):
        line = np.zeros_like(edges)
        line[:, right + k] = True  # a drawn line k px to the right of the output's edge
        d, none = chamfer(line, edges)
        assert d == pytest.approx(k, abs=0.1) and not none  # (Canny leaves the border rows out)
    d, none = chamfer(edges, output_edges(white()))
    assert none and d == pytest.approx(np.hypot(128, 128))


def test_chamfer_of_a_drawn_outline_on_its_filled_output():
    lines = square_sketch()
    out = white()
    out[filled(lines)] = (30, 30, 200)
    d, _ = chamfer(lines, output_edges(out))
    assert d < 1.5  # the output's boundary runs along the stroke


def test_colour_intersection():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 230, (128, 128, 3)).astype(np.uint8)
    assert colour_intersection(img, img) == pytest.approx(1.0)
    red, cyan = white(), white()
    red[32:96, 32:96] = (220, 30, 30)
    cyan[32:96, 32:96] = (30, 220, 220)
    assert colour_intersection(red, cyan) < 0.05
    assert colour_intersection(red, cyan, soft=True) < 0.05
    # the white background does not count; a photo exemplar counts whole
    assert colour_intersection(red, red[::-1]) == pytest.approx(1.0)
    assert colour_intersection(red, red, ex_is_photo=True) < 0.5


def test_colour_distance_is_small_for_a_shade_off_where_the_intersection_misses():
    red, shade, cyan = white(), white(), white()
    red[32:96, 32:96] = (220, 30, 30)
    cyan[32:96, 32:96] = (30, 220, 220)
    assert colour_distance(red, red[::-1]) == pytest.approx(0.0, abs=1e-6)
    assert colour_distance(red, cyan) > 100
    # a red a few a*b* units off: the hard bins may call it a total miss, the distance does not
    for g in range(20, 60, 4):
        shade[32:96, 32:96] = (220, g, 30)
        d, i = colour_distance(shade, red), colour_intersection(shade, red)
        assert d < 20
        if i < 0.05:
            break
    else:
        raise AssertionError("no shade within 20 a*b* units fell into another bin")


def test_condition_follows_the_rust_rule(tmp_path):
    ink = square_sketch()
    dark_on_light = np.where(ink, 0, 255).astype(np.uint8)
    Image.fromarray(dark_on_light).save(tmp_path / "a.png")
    Image.fromarray(255 - dark_on_light).save(tmp_path / "b.png")
    Image.fromarray(np.repeat(dark_on_light[..., None], 3, 2)).save(tmp_path / "c.png")
    for name in ("a", "b", "c"):
        c = read_condition(tmp_path / f"{name}.png")
        assert c.shape == (128, 128) and np.array_equal(c > 0.5, ink)
    Image.fromarray(dark_on_light).resize((256, 256), Image.NEAREST).save(tmp_path / "d.png")
    c = read_condition(tmp_path / "d.png")
    assert c.shape == (128, 128) and c.max() > 0.5


def stroke_width(ink):
    """Mean stroke width: ink area over skeleton length."""
    from skimage.morphology import skeletonize

    return ink.sum() / max(skeletonize(ink).sum(), 1)


def test_sketches_are_deterministic_thin_and_committed():
    widths = []
    for name, fn, w, _ in drawn.SUBJECTS:
        a, b = drawn.draw(name, fn, w), drawn.draw(name, fn, w)
        assert np.array_equal(a, b)
        assert set(np.unique(a)) <= {0, 255} and (a == 255).mean() > 0.8
        ink = a == 0
        widths.append(stroke_width(ink))
        assert 1.0 <= widths[-1] <= 4.0, (name, widths[-1])
        from scipy.ndimage import distance_transform_edt

        assert distance_transform_edt(ink).max() <= 4.0, name  # strokes and pen dots, no filled areas
        path = os.path.join(SET, f"{name}_sketch.png")
        if os.path.exists(path):  # the committed file is what the generator draws
            assert np.array_equal(np.asarray(Image.open(path)), a), name
    assert len(drawn.SUBJECTS) >= 24
    assert 1.5 <= np.median(widths) <= 3.0
    # open details exist: some strokes enclose nothing
    assert any(not closed for name, fn, w, _ in drawn.SUBJECTS for _, closed, _ in _strokes(fn))


def _strokes(fn):
    s = drawn.Sketch()
    fn(s)
    return s.strokes


def test_committed_pairs():
    pairs = drawn.load_pairs(SET)
    assert len(pairs) >= 24 and len({p["name"] for p in pairs}) == len(pairs)
    assert sum(p["exemplar_kind"] == "photo" for p in pairs) >= 3
    for p in pairs:
        for f in (p["sketch"], p["exemplar"]):
            im = Image.open(os.path.join(SET, f))
            assert im.size == (128, 128), f
        assert p["exemplar_licence"] and p["exemplar_source"]
