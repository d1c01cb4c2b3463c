"""Colour transfer (`midms.colour_transfer`, train.colour): the CIELAB conversions, the transfer's
arithmetic, and where the translation applies it. The Rust sampler's twin (`src/sampling/colour.rs`)
is checked against these numerics by the parity tests on a trainer fixture of the shipped model."""
import numpy as np
import torch

from train.colour import colour_source, lab_to_rgb, rgb_to_lab, transfer_colour
from train.config import default_config
from train.midm import MIDM
from train.ops import exemplar_foreground


def test_lab_is_skimages_and_round_trips():
    from skimage.color import rgb2lab

    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 8, 8, generator=g)
    want = torch.from_numpy(rgb2lab(rgb.permute(0, 2, 3, 1).numpy())).permute(0, 3, 1, 2).float()
    assert (rgb_to_lab(rgb) - want).abs().max() < 1e-3
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1e-4


def test_chroma_moves_by_the_warped_foreground_and_white_stays():
    red = rgb_to_lab(torch.tensor([0.7, 0.25, 0.25]).view(1, 3, 1, 1))[0, :, 0, 0]
    pink = torch.tensor([0.9, 0.55, 0.55])
    # One 2x2-pixel cell: the exemplar is red in pixels 0-2, white (no foreground) in pixel 3.
    ex = torch.tensor([[0.7, 0.7, 0.7, 1.0], [0.25, 0.25, 0.25, 1.0], [0.25, 0.25, 0.25, 1.0]]).view(1, 3, 2, 2)
    fg = torch.tensor([1.0, 1, 1, 0]).view(1, 1, 2, 2)
    src = colour_source(ex * 2 - 1, fg, (1, 1))
    assert src.shape == (1, 12, 1, 1) and abs(src[0, 0, 0, 0] - red[1]) < 1e-4 and src[0, 11, 0, 0] == 0
    src[0, 1::4] *= 0.5  # pixel 1: half the foreground, as a soft warp mixing it with white
    out_rgb = torch.stack([pink, pink, torch.ones(3), pink], 1).view(1, 3, 2, 2)
    out = rgb_to_lab((transfer_colour(out_rgb * 2 - 1, src) + 1) / 2)[0].reshape(3, 4)
    pink_lab = rgb_to_lab(pink.view(1, 3, 1, 1))[0, :, 0, 0]
    assert abs(out[0, 0] - pink_lab[0]) < 0.5, "lightness kept"
    assert (out[1:, 0] - red[1:]).abs().max() < 1.0, "full foreground: the exemplar's chroma"
    assert abs(out[1, 1] - (pink_lab[1] + red[1]) / 2) < 1.0, "half foreground: half way"
    assert out[1:, 2].abs().max() < 0.01, "white stays white"
    assert (out[1:, 3] - pink_lab[1:]).abs().max() < 0.01, "no foreground warped: unchanged"


def test_scaling_keeps_the_hue_that_clipping_moves():
    """`midms.colour_gamut` (model v1.11): a light pixel given a saturated yellow (red above 1 in linear
    RGB at L* 90) turns lemon-green when clipped (a* below 0); scaled, it keeps its hue angle and nearly all
    its chroma and gets darker. In gamut the two agree; an unknown mode is refused."""
    import pytest

    yellow = torch.tensor([90.0, 5.0, 70.0]).view(1, 3, 1, 1)
    clipped = rgb_to_lab(lab_to_rgb(yellow, "clip"))[0, :, 0, 0]
    scaled = rgb_to_lab(lab_to_rgb(yellow, "scale"))[0, :, 0, 0]
    hue = lambda lab: torch.atan2(lab[2], lab[1]).rad2deg()
    assert clipped[1] < 0, clipped
    assert abs(hue(scaled) - hue(yellow[0, :, 0, 0])) < 1.0 and scaled[0] < 87, scaled
    assert scaled[1:].norm() > 0.95 * yellow[0, 1:, 0, 0].norm(), scaled
    rgb = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert (lab_to_rgb(rgb_to_lab(rgb), "scale") - lab_to_rgb(rgb_to_lab(rgb), "clip")).abs().max() < 1e-5
    with pytest.raises(ValueError, match="gamut"):
        lab_to_rgb(yellow, "clamp")


def photo_model(colour):
    cfg = default_config()
    cfg["midms"].update({"region_matching": True, "background_latent": [0.5, -0.5, 0.0], "colour_transfer": colour})
    torch.manual_seed(0)
    return MIDM(cfg).eval()


def test_translation_transfers_colour_only_when_the_model_says_so():
    size = default_config()["midms"]["image_size"]
    g = torch.Generator().manual_seed(1)
    label = torch.zeros(1, 1, size, size)
    label[..., 8:-8, 8] = label[..., 8:-8, -9] = label[..., 8, 8:-8] = label[..., -9, 8:-8] = 1  # a square
    photo = torch.rand(1, 3, size, size, generator=g) * 1.2 - 1  # no white: a photo
    runs = {}
    for colour in (True, False):
        model = photo_model(colour)
        trace = {}
        out, _ = model.translate(label, photo, torch.zeros_like(label), steps=16, refine_steps=20, refine_hijack=18,
                                 trace=trace, generator=torch.Generator().manual_seed(0))
        runs[colour] = (out, trace)
    (on, t_on), (off, t_off) = runs[True], runs[False]
    assert "out.colour_warped" in t_on and "out.colour_warped" not in t_off
    assert torch.equal(t_on["out.decoded"], off), "the same translation up to the transfer"
    assert torch.equal(transfer_colour(t_on["out.decoded"], t_on["out.colour_warped"]), on)
    assert (on - off).abs().max() > 0.05
    # The photo has no outside: cells outside the sketch take the background latent and no colour.
    outside = 1 - t_on["corr.region_trg"]
    assert outside.sum() > 0 and (t_on["out.colour_warped"] * outside).abs().max() == 0
    # The ablation: `colour=False` leaves it out.
    off2, _ = photo_model(True).translate(label, photo, torch.zeros_like(label), steps=16, refine_steps=20,
                                          refine_hijack=18, generator=torch.Generator().manual_seed(0), colour=False)
    assert torch.equal(off2, off)


def test_the_source_counts_only_the_exemplars_shape():
    x = torch.ones(1, 3, 16, 16)
    x[:, 1:, 4:12, 4:12] = -1  # a red square on white
    src = colour_source(x, exemplar_foreground(x), (4, 4))
    fg = torch.nn.functional.pixel_shuffle(src, 4)[0, 2]
    assert fg.sum() == 64 and np.isclose(float(torch.nn.functional.pixel_shuffle(src, 4)[0, 0, 5, 5]), 80.1, atol=0.1)


def test_colour_temperature_sharpens_only_the_colour_warp():
    """`midms.colour_temperature` (model v1.7) changes the chroma's warp and nothing else; absent, the
    chroma moves by the latent warp's own weights (model v1.6); not positive is refused."""
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    # Cosine-like spreads: every target's best match 0.01-0.02 above the rest, a clear winner at 1e-4
    # but a mixture at the matching's 0.005.
    corr = torch.rand(1, 64, 64, generator=g) * 0.01
    corr[0, torch.arange(64), torch.randperm(64, generator=g)] += 0.02
    corr = corr.reshape(1, 8, 8, 8, 8)
    cfg = default_config()
    cfg["midms"]["colour_transfer"] = True
    plain = MIDM(cfg).eval()
    cfg["midms"]["colour_temperature"] = 1e-4
    sharp = MIDM(cfg).eval()
    assert plain.colour_temperature == 0.005 and sharp.colour_temperature == 1e-4
    src = colour_source(ref, exemplar_foreground(ref), (8, 8))
    flat = corr.reshape(1, 64, 64)
    hard = src.reshape(1, src.shape[1], 64)[:, :, flat.argmax(-1)[0]].reshape(1, -1, 8, 8)
    w_plain, w_sharp = plain.warp_colour(ref, corr, None), sharp.warp_colour(ref, corr, None)
    assert (w_sharp - hard).abs().max() < 1e-2 * src.abs().max(), "near the best match's chroma"
    assert (w_plain - hard).abs().max() > 0.1 * src.abs().max(), "the matching's softmax mixes"
    cfg["midms"]["colour_temperature"] = 0
    try:
        MIDM(cfg)
        raise AssertionError("a zero temperature was accepted")
    except ValueError as e:
        assert "colour_temperature" in str(e)
