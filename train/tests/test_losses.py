"""Each loss on tiny tensors against values computed by hand."""
import math

import pytest
import torch

from train import losses as L
from train.ops import correlation, soft_warp


def test_table6_weights():
    assert (L.W_DOM, L.W_CYCLE, L.W_SRC, L.W_PERC, L.W_STYLE, L.W_DIFF) == (10.0, 1.0, 1.0, 0.002, 1.0, 1.0)


def test_domain_loss_by_hand():
    trg = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # -> (0.6, 0.8)
    src = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)  # -> (0, 1)
    ref = torch.tensor([5.0, 0.0]).view(1, 2, 1, 1)  # -> (1, 0)
    # mean(|0.6-0|, |0.8-1|) = 0.4 ; masked by ref: mean(|0.6-0|, |0-0|) = 0.3
    assert L.domain_loss(trg, src, ref).item() == pytest.approx(0.7, abs=1e-6)


def test_cycle_loss_uniform_correlation_by_hand():
    feats = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    corr = torch.zeros(1, 1, 2, 1, 2)  # uniform matching: every warp averages -> 2
    assert L.cycle_loss(feats, corr).item() == pytest.approx(1.0, abs=1e-6)  # mean(|1-2|, |3-2|)


def test_cycle_loss_identity_matching_is_zero():
    f = torch.randn(1, 4, 2, 2)
    corr = correlation(f, f)
    assert L.cycle_loss(f, corr).item() < 1e-4


def test_src_and_perc_loss_by_hand():
    a = [torch.full((1, 1, 2, 2), v) for v in (1.0, 2.0, 3.0, 4.0)]
    b = [torch.zeros(1, 1, 2, 2) for _ in range(4)]
    # 1/8*1 + 1/4*2 + 1/2*3 + 1*4
    assert L.src_loss(a, b).item() == pytest.approx(0.125 + 0.5 + 1.5 + 4.0)
    assert L.perc_loss(a, b).item() == pytest.approx(3.0)


def test_contextual_loss_by_hand():
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # positions (1,0) and (0,1)
    assert L.contextual_loss(y, y).item() == pytest.approx(0.0, abs=1e-4)
    # x has both positions equal to y's first: each y position j gets max_i A_ij = (1, 0) -> CX = 1/2
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    assert L.contextual_loss(x, y).item() == pytest.approx(math.log(2.0), abs=1e-4)


def test_contextual_loss_stays_finite_when_a_cosine_rounds_above_one():
    # What a TF32 matmul gives for matching features: a distance of -5e-4 instead of 0.
    d = torch.tensor([[[-5e-4, 0.5], [0.5, 0.3]]])
    d.requires_grad_(True)
    loss = L.contextual_from_distances(d).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(d.grad).all()
    exact = L.contextual_from_distances(torch.tensor([[[0.0, 0.5], [0.5, 0.3]]])).sum()
    assert loss.item() == pytest.approx(exact.item(), abs=1e-6)


def test_soft_warp_by_hand():
    src = torch.tensor([10.0, 20.0]).view(1, 1, 1, 2)
    corr = torch.zeros(1, 1, 1, 1, 2)
    corr[0, 0, 0, 0, 1] = 0.005 * math.log(3.0)  # softmax weights (1/4, 3/4)
    assert soft_warp(src, corr).item() == pytest.approx(17.5, abs=1e-4)


def test_shape_iou_by_hand():
    from train.evaluate import shape_iou

    white = torch.ones(1, 3, 4, 4)
    a = white.clone()
    a[0, :, 0, :2] = -1.0  # 2 dark pixels
    b = white.clone()
    b[0, 0, 0, 1:4] = 0.0  # 3 pixels with a mid-grey red channel, one shared with a
    assert abs(shape_iou(a, b) - 1 / 4) < 1e-9
    assert shape_iou(a, a) == 1.0
    assert shape_iou(white, white) == 1.0


def test_colour_loss_is_the_hand_drawn_colour_measure_made_differentiable():
    """rgb_to_ab equals skimage's rgb2lab; the loss is 0 for the target's colours, 1 for a colour in
    no shared bin, follows drawn_eval's (hard-binned) measure in between, and has gradients."""
    import numpy as np
    from skimage.color import rgb2lab

    from train.drawn_eval import colour_intersection
    from train.losses import colour_loss, rgb_to_ab

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    want = rgb2lab(((x + 1) / 2).permute(0, 2, 3, 1).numpy())[..., 1:]
    assert np.abs(rgb_to_ab(x).permute(0, 2, 3, 1).numpy() - want).max() < 1e-3

    def square(rgb):
        a = np.full((64, 64, 3), 255, np.uint8)
        a[16:48, 16:48] = rgb
        return a

    pm1 = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
    red, green = square((221, 46, 68)), square((80, 160, 60))
    half = red.copy()
    half[16:32, 16:48] = (80, 160, 60)  # half the drawing in the exemplar's red
    assert colour_loss(pm1(red), pm1(red)).item() < 1e-4
    assert colour_loss(pm1(green), pm1(red)).item() > 0.99
    mid = colour_loss(pm1(half), pm1(red)).item()
    assert abs((1 - mid) - colour_intersection(half, red)) < 0.1, (mid, colour_intersection(half, red))
    out = pm1(half).requires_grad_(True)
    colour_loss(out, pm1(red)).backward()
    assert out.grad[0, :, 16:32, 16:48].abs().sum() > 0  # the green half is pushed
    assert out.grad[0, :, :8, :8].abs().sum() == 0  # the white background is not part of it


def test_ab_distance_charges_a_green_turned_brown_far_more_than_a_darker_green():
    """`train.train ae --w-ab`: model v1's autoencoder turned Twemoji's green (92, 145, 59) into a
    brown (107, 87, 71). RGB L1 charges that about 3x a 10 % darker green; the a*b* distance
    charges it over 5x, and nothing for the identical image."""
    from train.losses import ab_distance

    def solid(rgb):
        return (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1).view(1, 3, 1, 1).expand(1, 3, 8, 8)

    green, brown, darker = solid((92, 145, 59)), solid((107, 87, 71)), solid((83, 130, 53))
    assert ab_distance(green, green).item() == 0
    ab_ratio = (ab_distance(green, brown) / ab_distance(green, darker)).item()
    l1_ratio = ((green - brown).abs().mean() / (green - darker).abs().mean()).item()
    assert ab_ratio > 5 and l1_ratio < 5, (ab_ratio, l1_ratio)
