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


def test_a_photo_exemplar_leaves_a_background_outside_the_sketch():
    """The Rust sampler's `a_photo_exemplar_leaves_a_background_outside_the_sketch`, same case."""
    from train.ops import fill_outside

    t = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0]).reshape(2, 1, 2, 2)
    r = torch.tensor([0.0, 1, 0, 0, 1, 1, 1, 1]).reshape(2, 1, 2, 2)  # a glyph, then a photo
    warped = torch.arange(16.0).reshape(2, 2, 2, 2)
    want = warped.clone().flatten()
    want[9:12], want[13:16] = 7.0, -7.0
    assert torch.equal(fill_outside(warped, t, r, [7.0, -7.0]).flatten(), want)


def test_background_latent_is_the_mean_outside_the_shapes():
    from train.background import background_latent

    model = MIDM(default_config()).eval()  # 64 px, 16x16 latents, random weights
    img = torch.full((3, 64, 64, 3), 255, dtype=torch.uint8)
    img[0, 16:48, 16:48] = 0  # a black square
    img[1, 8:40, 20:60] = torch.tensor([200, 30, 30], dtype=torch.uint8)  # a red block
    img[2] = torch.randint(0, 200, (64, 64, 3), dtype=torch.uint8)  # no outside at all
    x = img.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = model.ae.encode(x)
    outside = 1 - region_cells(exemplar_foreground(x), (16, 16))
    assert outside[2].sum() == 0 and outside[:2].sum() > 0
    want = (z * outside).sum((0, 2, 3)) / outside.sum()
    got = background_latent(model, img.numpy(), batch=2)  # batches split across the images
    assert torch.allclose(got, want, atol=1e-5)


def square_and_stroke():
    """The Rust sampler's `square_and_stroke`: a 16x16 condition with a closed 8x8 square outline
    (rows and columns 2 and 9) and an open stroke on row 13, columns 2..14."""
    c = torch.zeros(1, 1, 16, 16)
    c[..., 2, 2:10] = c[..., 9, 2:10] = c[..., 2:10, 2] = c[..., 2:10, 9] = 1
    c[..., 13, 2:14] = 1
    return c


def test_open_strokes_count_as_inside_when_the_model_says_so():
    """The Rust sampler's `open_strokes_are_inside_only_when_the_model_says_so`, same case."""
    from train.ops import fill_label, open_stroke_pixels, target_cells

    c = square_and_stroke()
    open_px = open_stroke_pixels(c, fill_label(c))[0, 0]
    assert open_px[13, 2:14].all() and open_px.sum() == 12  # the outline is next to its inside
    want = torch.zeros(4, 4)
    want[1, 1] = 1
    assert torch.equal(target_cells(c, (4, 4))[0, 0], want)
    want[3] = 1
    assert torch.equal(target_cells(c, (4, 4), open_strokes=True)[0, 0], want)
    # The same from a filled drawing made beforehand (train.pairs' workers).
    assert torch.equal(target_cells(c, (4, 4), fill_label(c), open_strokes=True)[0, 0], want)


def test_the_outside_keeps_the_rewarp_where_region_matching_decides_it():
    """The Rust sampler's test of the same name, same case: a glyph (both sides), a photo (kept
    only with a background latent), an exemplar with nothing inside (region matching stands aside)."""
    from train.ops import keep_outside

    t = torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 2, 2).repeat(3, 1, 1, 1)
    r = torch.tensor([0.0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).reshape(3, 1, 2, 2)
    mask = torch.tensor([0.0, 1, 0, 0]).reshape(1, 1, 2, 2).repeat(3, 1, 1, 1)
    m, k = [0.0, 1, 0, 0], [0.0, 1, 1, 1]
    assert keep_outside(mask, t, r).flatten().tolist() == k + m + m
    assert keep_outside(mask, t, r, [1.0]).flatten().tolist() == k + k + m


def test_the_refinements_need_region_matching_and_change_the_loop_mask():
    import pytest

    cfg = default_config()
    cfg["midms"]["region_keep_outside"] = True
    with pytest.raises(ValueError, match="region_matching"):
        MIDM(cfg)
    cfg["midms"]["region_matching"] = True
    model = MIDM(cfg)
    regions = (torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 2, 2), torch.tensor([0.0, 1, 0, 0]).reshape(1, 1, 2, 2))
    fb = torch.full((1, 2, 2), 9.0)  # every cell fails the cycle check
    cycle, used = model.confidence(fb, regions)
    assert cycle.sum() == 0 and used.flatten().tolist() == [0.0, 1, 1, 1]
    model.region_keep_outside = False
    cycle, used = model.confidence(fb, regions)
    assert used is cycle


def test_layout_positions_are_relative_to_the_shapes_box():
    """The Rust sampler's `layout_positions_are_relative_to_the_shapes_box`, same numbers."""
    from train.ops import layout_positions

    cells = torch.zeros(1, 1, 4, 6)
    cells[0, 0, 1:3, 2:5] = 1
    p = layout_positions(cells)[0]
    f32 = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731  (the Rust test's f32 literals)
    assert torch.equal(p[6 + 2], f32(0.5 / 3, 0.25)) and torch.equal(p[2 * 6 + 4], f32(2.5 / 3, 0.75))
    assert torch.allclose(p[0], torch.tensor([-2 / 3 + 0.5 / 3, -0.25]))
    assert layout_positions(torch.zeros(1, 1, 2, 2))[0, 3].tolist() == [0.75, 0.75]


def test_the_layout_prior_weighs_inside_pairs_by_their_places_in_their_shapes():
    """The Rust sampler's `the_layout_prior_weighs_inside_pairs_by_their_places_in_their_shapes`."""
    def block(y0, x0):
        v = torch.zeros(1, 1, 4, 4)
        v[0, 0, y0:y0 + 2, x0:x0 + 2] = 1
        return v

    t, r = block(0, 0), block(2, 2)
    zero = torch.zeros(1, 4, 4, 4, 4)
    p = -restrict_to_regions(zero, t, r, layout=2.0).reshape(16, 16)
    assert p[0, 10] == 0 and p[0, 15] == 2 * (0.25 + 0.25) and p[1, 10] == 2 * 0.25
    assert (p[0, 0], p[2, 10], p[2, 0]) == (1, 1, 0)
    assert -restrict_to_regions(zero, t, r).reshape(16, 16)[0, 15] == 0


def test_the_layout_prior_needs_region_matching_and_a_finite_weight():
    import pytest

    for key in ("layout_prior", "colour_layout_prior"):
        cfg = default_config()
        cfg["midms"][key] = 2.0
        with pytest.raises(ValueError, match="region_matching"):
            MIDM(cfg)
        cfg["midms"]["region_matching"] = True
        model = MIDM(cfg)
        assert getattr(model, key) == 2.0 and model.layout_prior + model.colour_layout_prior == 2.0
        for bad in (-1.0, float("inf"), float("nan")):
            cfg["midms"][key] = bad
            with pytest.raises(ValueError, match=key):
                MIDM(cfg)
