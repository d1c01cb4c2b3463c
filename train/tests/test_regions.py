"""Region matching (`midms.region_matching`, ops.restrict_to_regions): what it keeps apart and
when it stands aside. The Rust sampler's twin is checked against these numerics by the parity
tests on a trainer fixture of the shipped model (which sets it)."""
import torch

from train.config import default_config
from train.midm import MIDM
from train.ops import TEMPERATURE, exemplar_foreground, region_cells, restrict_to_regions, soft_warp


def square_exemplar():
    """16x16 white exemplar with a red 8x8 square whose 4x4 middle is white (enclosed)."""
    x = torch.ones(1, 3, 16, 16)
    x[:, 1:, 4:12, 4:12] = -1
    x[:, :, 6:10, 6:10] = 1
    return x


def test_exemplar_foreground_fills_what_the_shape_encloses():
    fg = exemplar_foreground(square_exemplar())
    assert fg[0, 0, 4:12, 4:12].all() and fg.sum() == 64
    cells = region_cells(fg, (4, 4))[0, 0]
    want = torch.zeros(4, 4)
    want[1:3, 1:3] = 1
    assert torch.equal(cells, want)


def test_matches_stay_on_their_side():
    t = torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 2, 2)
    r = torch.tensor([0.0, 1, 0, 0]).reshape(1, 1, 2, 2)
    corr = torch.tensor([0.9, 0.1, 0.9, 0.9]).repeat(4, 1).reshape(1, 2, 2, 2, 2)
    src = torch.arange(4.0).reshape(1, 1, 2, 2)
    warped = soft_warp(src, restrict_to_regions(corr, t, r))
    # The inside cell takes exemplar cell 1 alone (its low correlation notwithstanding); the
    # outside cells never take it.
    assert warped[0, 0, 0, 0] == 1.0
    p = torch.softmax(restrict_to_regions(corr, t, r).reshape(1, 4, 4) / TEMPERATURE, -1)
    assert (p[0, 1:, 1] == 0).all()


def test_an_exemplar_without_background_is_left_alone():
    t = torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 2, 2)
    corr = torch.rand(1, 2, 2, 2, 2)
    assert torch.equal(restrict_to_regions(corr, t, torch.ones(1, 1, 2, 2)), corr)


def test_the_config_value_switches_it_and_the_authors_default_is_off():
    cfg = default_config()
    assert MIDM(cfg).regions(torch.zeros(1, 1, 64, 64), square_exemplar(), (16, 16)) is None
    cfg["midms"]["region_matching"] = True
    on = MIDM(cfg).regions(torch.zeros(1, 1, 64, 64), torch.nn.functional.interpolate(square_exemplar(), 64), (16, 16))
    assert on is not None and on[0].sum() == 0 and on[1].sum() == 64  # the 32x32 square at 4 px a cell
