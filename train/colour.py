"""Colour transfer along the correspondence: our models' `midms.colour_transfer` (model v1.6; not in
the authors' code, so never on for their checkpoints or parity sets).

The diffusion steps of a small, briefly trained UNet pull every colour toward its training prior:
the exemplars' own latents through the loop keep an a*b* colour of 0.256 where the autoencoder
alone keeps 0.535 (hand-drawn set), so a red heart comes out pink and a yellow face lemon-green.
The matching already says which exemplar pixels each output cell stands for. So the first matching
of a run (the sketch against the exemplar, the one the editor's correspondence probe shows) also
warps the exemplar's CIELAB chroma, pixel by pixel: each latent cell carries its c x c pixels
(`pixel_unshuffle`), and the softmax of the first matching's correlation moves them (at the model's
`midms.colour_temperature`, model v1.7: 0.001, five times sharper than the latent warp's, so that a
cell takes the chroma of its best matches rather than a greyish mix; 0.701 -> 0.772). (The re-matchings' softer
weights, tried: a*b* colour 0.553 against 0.701, and no interleaving, which has only the first
matching, then scored far higher on colour than the full model.) After decoding, every output pixel that is not
white takes that chroma in proportion to how much exemplar foreground warped onto it; its
lightness, and so its edges and shading, stay the model's. The same idea as exemplar-based
colourisation (He et al. 2018: warp the exemplar's a*b* by a learned correspondence).

Deliberately simple arithmetic, the same in the Rust sampler (`src/sampling/colour.rs`):
- sRGB <-> CIELAB (D65, the sRGB curve, the CIE f with its linear toe), as skimage's `rgb2lab`;
- source [B, 3 c^2, h, w]: pixel_unshuffle of (fg a*, fg b*, fg), fg = the exemplar's foreground
  (non-white pixels and what they enclose, `ops.exemplar_foreground`), so that white around a
  glyph brings no grey;
- transfer: a*' = a* + g (warped_a - warped_fg a*) (b* alike), g = clamp((97 - L*) / 4, 0, 1):
  white pixels (L* >= 97, where the hand-drawn measures' "non-white" ends) are left as they are,
  with a 4-unit ramp so that a pixel near white cannot flip between two runs' float noise;
- back to sRGB by the model's `midms.colour_gamut` (model v1.11), for a chroma that the pixel's
  lightness cannot show: `clip` (absent; models v1.6-v1.10) clamps each linear channel to [0, 1],
  which moves the hue: a light pixel given the exemplar's yellow (L* 90, b* 70: red above 1) loses
  red and turns lemon-green, a*b* bins away from the exemplar's; `scale` divides linear RGB by its
  largest channel where that is above 1, which keeps the chromaticity (so the hue, and a* and b*
  scale by only the cube root of the factor) and lowers the lightness to what sRGB can show:
  hand-drawn a*b* colour 0.788 -> 0.795 for model v1.10's weights, seeds 0 and 1.
"""
import torch
import torch.nn.functional as F

# sRGB (D65) -> XYZ, and the D65 white point: skimage.color's constants.
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
# Its inverse, computed once in float64 and written to float32 precision, so that the Rust sampler
# uses the very same numbers.
XYZ_TO_RGB = ((3.2404814, -1.5371516, -0.49853632), (-0.96925497, 1.87599, 0.041555926),
              (0.05564664, -0.20404133, 1.057311))
WHITE_D65 = (0.95047, 1.0, 1.08883)
# L* at and above which a pixel keeps its colour, and the width of the ramp below it.
GATE_L, GATE_RAMP = 97.0, 4.0
# How a colour outside sRGB comes back into it (`midms.colour_gamut`; see above).
GAMUTS = ("clip", "scale")


def checked_gamut(gamut):
    """`gamut` if it is one of GAMUTS, else a ValueError naming the config key (the one check that
    the model's config, the export and the conversion share)."""
    if gamut not in GAMUTS:
        raise ValueError(f"midms.colour_gamut must be one of {list(GAMUTS)}, not {gamut!r}")
    return gamut


def _matrix(m, like):
    return torch.tensor(m, dtype=like.dtype, device=like.device)


def rgb_to_lab(rgb):
    """[B, 3, H, W] sRGB in [0, 1] -> [B, 3, H, W] (L*, a*, b*)."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _matrix(RGB_TO_XYZ, rgb), lin)
    xyz = xyz / torch.tensor(WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab, gamut="clip"):
    """[B, 3, H, W] (L*, a*, b*) -> sRGB [B, 3, H, W] in [0, 1]: negative linear channels clamped to
    0, then by `gamut` (GAMUTS): each channel clamped to 1, or all three divided by the largest
    where it is above 1."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787)
    xyz = xyz * torch.tensor(WHITE_D65, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    lin = torch.einsum("ij,bjhw->bihw", _matrix(XYZ_TO_RGB, lab), xyz)
    lin = lin.clamp(min=0)
    if checked_gamut(gamut) == "scale":
        lin = lin / lin.amax(1, keepdim=True).clamp(min=1)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0, 1)


def colour_source(ref_img, fg, hw):
    """The exemplar's chroma to warp: [B, 3 c^2, h, w] from `ref_img` [B, 3, H, W] in [-1, 1] and its
    foreground `fg` [B, 1, H, W] in {0, 1} (`ops.exemplar_foreground`); c = H / h."""
    lab = rgb_to_lab((ref_img.float() + 1) / 2)
    fg = fg.float()
    src = torch.cat([lab[:, 1:] * fg, fg], 1)
    return F.pixel_unshuffle(src, ref_img.shape[-1] // hw[-1])


def transfer_colour(image, warped, gamut="clip"):
    """The decoded `image` [B, 3, H, W] in about [-1, 1] with the warped chroma `warped`
    [B, 3 c^2, h, w] (a `colour_source` warped to the target grid), back to sRGB by `gamut`
    (`lab_to_rgb`) -> [B, 3, H, W] in [-1, 1]."""
    w = F.pixel_shuffle(warped.float(), image.shape[-1] // warped.shape[-1])
    lab = rgb_to_lab((image.float().clamp(-1, 1) + 1) / 2)
    gate = ((GATE_L - lab[:, :1]) / GATE_RAMP).clamp(0, 1)
    ab = lab[:, 1:] + gate * (w[:, :2] - w[:, 2:] * lab[:, 1:])
    return lab_to_rgb(torch.cat([lab[:, :1], ab], 1), gamut) * 2 - 1
