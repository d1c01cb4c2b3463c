"""Framing a small drawing (train.frame, model v1.14): the same cases as src/sampling/frame.rs."""
import numpy as np
import pytest
import torch

from train.frame import MIN_SCALE, checked_share, drawing_frame, frame_labels, unframe


def square(size, top, left, side):
    p = np.zeros((size, size), np.float32)
    p[top, left:left + side] = p[top + side - 1, left:left + side] = 1
    p[top:top + side, left] = p[top:top + side, left + side - 1] = 1
    return p


def test_a_small_drawing_is_centred_at_the_share_and_a_large_one_left_alone():
    small = square(64, 4, 8, 16)
    assert drawing_frame(small > 0.5, 0.75) == (3.0, 12.0, 16.0)
    framed, frames = frame_labels(torch.from_numpy(small)[None, None], 0.75)
    assert frames == [(3.0, 12.0, 16.0)]
    # Its box is now 48 px, centred: rows and columns 8..56.
    assert drawing_frame(framed[0, 0].numpy() > 0.5, 1.0) == (64 / 48, 32.0, 32.0)
    assert drawing_frame(square(64, 10, 10, 40) > 0.5, 0.75) is not None   # 1.2 >= MIN_SCALE
    assert drawing_frame(square(64, 10, 10, 44) > 0.5, 0.75) is None       # 1.09
    assert 48 / 44 < MIN_SCALE <= 48 / 40
    assert drawing_frame(np.zeros((64, 64), bool), 0.75) is None


def test_an_image_comes_back_where_the_drawing_was_and_white_elsewhere():
    size = 32
    fr = drawing_frame(square(size, 2, 20, 8) > 0.5, 0.75)
    img = torch.zeros(1, 1, size, size)
    img[0, 0, 4:28, 4:28] = -1          # black over the framed drawing's box, grey elsewhere
    back = unframe(img, [fr])[0, 0]
    assert back[5, 23].item() == pytest.approx(-1.0, abs=1e-6)   # the drawing's own box
    assert back[1, 19].item() == pytest.approx(0.0, abs=1e-6)    # the framed canvas's grey border
    assert back[30, 2].item() == pytest.approx(1.0, abs=1e-6)    # beyond the framed canvas: white
    assert torch.equal(unframe(img, [None]), img)


def test_the_share_is_checked():
    assert checked_share(None, 1) == 0.0
    assert checked_share(0.875, 1) == 0.875
    for bad in (-0.5, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="frame_drawing"):
            checked_share(bad, 1)
    with pytest.raises(ValueError, match="one-channel"):
        checked_share(0.875, 3)
