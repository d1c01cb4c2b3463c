"""Framing a small drawing (train.frame, model v1.14) and a small exemplar glyph (model v1.15): the same
cases as src/sampling/frame.rs."""
import numpy as np
import pytest
import torch

from train.frame import MIN_SCALE, checked_share, drawing_frame, frame_exemplars, frame_labels, unframe
from train.midm import MIDM


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
        with pytest.raises(ValueError, match="frame_exemplar"):
            checked_share(bad, 1, "frame_exemplar")
    with pytest.raises(ValueError, match="one-channel"):
        checked_share(0.875, 3)


def test_a_small_exemplar_glyph_is_framed_and_a_full_one_left_alone():
    size = 32
    # A black 8 px square glyph (rows 20..28, columns 2..10) on white, its shape, a label line on its top.
    image = torch.ones(1, 3, size, size)
    image[:, :, 20:28, 2:10] = -1
    shape = torch.zeros(1, 1, size, size)
    shape[:, :, 20:28, 2:10] = 1
    label = torch.zeros(1, 1, size, size)
    label[:, :, 20, 2:10] = 1
    framed, framed_label, frames = frame_exemplars(image, label, shape, 0.75)
    assert frames == [(3.0, 24.0, 6.0)]
    px = framed[0, 0]
    # The glyph spans the framed canvas's middle 24 px (4..28): black inside, white beyond, blended at its edge.
    assert (px[16, 16].item(), px[5, 5].item(), px[26, 26].item()) == (-1.0, -1.0, -1.0)
    assert (px[1, 16].item(), px[16, 30].item(), px[31, 31].item()) == (1.0, 1.0, 1.0)
    assert -1.0 < px[4, 16].item() < 1.0
    # The label's top line (one canvas row) is three framed rows at the top of the box.
    assert torch.nonzero(framed_label[0, 0, :, 16] > 0.5).flatten().tolist() == [4, 5, 6]
    # A glyph that fills its image is left as it is.
    same, _, frames = frame_exemplars(image, label, torch.ones(1, 1, size, size), 0.75)
    assert frames == [None] and torch.equal(same, image)


def test_the_trainer_frames_the_exemplar_before_anything_is_made_of_it():
    """MIDM.prepared_exemplar: off, the inputs as they are; on, the framed glyph and its shape recomputed."""
    m = MIDM.__new__(MIDM)
    m.region_matching, m.colour_transfer, m.frame_exemplar, m.clear_exemplar_ground = True, False, 0.0, False
    image = torch.ones(1, 3, 32, 32)
    image[:, :, 20:28, 2:10] = -1
    label = torch.zeros(1, 1, 32, 32)
    img, lbl, fg = m.prepared_exemplar(image, label)
    assert img is image and lbl is label and fg.sum().item() == 64
    m.frame_exemplar = 0.75
    trace = {}
    img, lbl, fg = m.prepared_exemplar(image, label, trace)
    # 24 px framed, and the bilinear blend one pixel each side is not white either.
    assert fg.sum().item() == 26 * 26 and torch.equal(trace["frame.ref_img"], img)
