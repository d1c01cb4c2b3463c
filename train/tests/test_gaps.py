"""A drawing's small gaps closed (train.ops.close_plane, model v1.17): the same cases as
src/sampling/gaps.rs."""
import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from train.ops import close_gaps, close_plane


def outline(gap):
    """A 20 x 20 square outline, 1 px wide, in a 28 x 28 canvas, `gap` pixels of its right side missing."""
    m = np.zeros((28, 28), bool)
    m[4, 4:24] = m[23, 4:24] = m[4:24, 4] = m[4:24, 23] = True
    m[14 - gap // 2:14 - gap // 2 + gap, 23] = False
    return m


def test_a_gap_up_to_twice_the_radius_is_closed():
    for gap, radius, closes in [(4, 2, True), (6, 3, True), (7, 3, False), (5, 2, False)]:
        lines = outline(gap)
        assert binary_fill_holes(lines).sum() < 100
        closed = close_plane(lines, radius)
        assert (closed != lines).any() == closes, (gap, radius)
        if closes:
            # The whole square but the bridge's dent (at most `radius` px deep into the gap).
            assert 400 - 2 * radius ** 2 <= binary_fill_holes(closed).sum() <= 400
            ys, xs = np.nonzero(closed & ~lines)
            assert (xs >= 23 - radius).all() and (xs <= 23).all() and (ys >= 9).all() and (ys <= 19).all()


def test_closed_drawings_open_strokes_and_narrow_notches_stay_as_drawn():
    whole = outline(0)
    assert (close_plane(whole, 3) == whole).all()
    u = np.zeros((8, 12), bool)                    # a U whose arms are 4 px apart: a notch
    u[1:7, 2] = u[1:7, 7] = u[6, 2:8] = True
    assert (close_plane(u, 3) == u).all()
    arc = np.zeros((5, 8), bool)
    arc[1, 1:3] = arc[2, 3:5] = arc[3, 5:7] = True
    assert (close_plane(arc, 3) == arc).all()
    assert not close_plane(np.zeros((8, 8), bool), 3).any()


def test_the_label_keeps_items_without_gaps_as_they_are():
    label = torch.from_numpy(np.stack([outline(4), outline(0)]).astype(np.float32))[:, None]
    closed = close_gaps(label, 2)
    assert torch.equal(closed[1], label[1])
    assert closed[0].sum() > label[0].sum()


def test_a_wide_gap_is_closed_only_around_a_large_region():
    n = 40
    square = np.zeros((n, n), bool)
    square[4, 4:36] = square[35, 4:36] = square[4:36, 4] = square[4:36, 35] = True
    square[15:25, 35] = False
    assert binary_fill_holes(square).sum() < 200
    assert (close_plane(square, 3) == square).all()
    closed = close_plane(square, 5, 8)
    assert binary_fill_holes(closed).sum() > 32 * 32 - 2 * 25
    u = np.zeros((n, n), bool)                     # arms 9 px apart: bridged, but only 4 px deep
    u[4:36, 10] = u[4:36, 20] = u[35, 10:21] = True
    assert (close_plane(close_plane(u, 3), 5, 8) == u).all()
