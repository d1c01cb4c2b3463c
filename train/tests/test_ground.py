"""An exemplar's plain coloured ground made white (train.ops.clear_plain_ground, model v1.16): the same
cases as src/sampling/ground.rs."""
import torch

from train.ops import clear_plain_ground


def image(ground, touching):
    """A 16x16 exemplar in [-1, 1]: `ground` everywhere, a red 6x6 square at rows and columns 5..11
    and, with `touching`, a red bar along the top row but for its corners."""
    levels = torch.tensor(ground, dtype=torch.float32)[:, None, None].repeat(1, 16, 16)
    red = torch.tensor([220.0, 40.0, 40.0])[:, None]
    levels[:, 5:11, 5:11] = red[:, :, None]
    if touching:
        levels[:, 0, 1:15] = red
    return (levels / 127.5 - 1)[None]


def test_a_plain_coloured_ground_is_made_white_and_the_glyph_kept():
    # 46 of the 60 border pixels are the grey ground, the corners among them: 0.77 >= 0.6.
    ex = image([200.0, 205.0, 190.0], True)
    out, cleared = clear_plain_ground(ex)
    assert cleared == [True]
    assert (out[0, :, 2, 2] == 1).all() and (out[0, :, 15, 15] == 1).all()
    assert torch.equal(out[0, :, 7, 7], ex[0, :, 7, 7]) and torch.equal(out[0, :, 0, 7], ex[0, :, 0, 7])


def test_a_white_ground_or_a_busy_border_is_left_as_it_is():
    white = image([255.0, 255.0, 255.0], False)
    same, cleared = clear_plain_ground(white)
    assert cleared == [False] and torch.equal(same, white)
    photo = (torch.arange(256, dtype=torch.float32) / 256 * 2 - 1).reshape(1, 1, 16, 16).repeat(1, 3, 1, 1)
    same, cleared = clear_plain_ground(photo)
    assert cleared == [False] and torch.equal(same, photo)
    tile = image([200.0, 205.0, 190.0], False)        # a sign on a rounded tile: white corners
    tile[0, :, [0, 0, 15, 15], [0, 15, 0, 15]] = 1.0
    assert clear_plain_ground(tile)[1] == [False]
