"""MIDMs correspondence networks (seg_enc / real_enc / iter_enc, shared `layer` trunk, phi, theta).

Spectral norm is torch's `nn.utils.spectral_norm`, so the state_dict holds `weight_orig`,
`weight_u`, `weight_v` exactly like the reference checkpoint; in eval mode it does no power
iteration (W = weight_orig / dot(u, W v)), as the reference does at inference.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm


def pad_conv(x, conv):
    return conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))


class SPADE(nn.Module):
    """Positional (per-pixel, over channels, unbiased) normalisation modulated by the condition."""

    def __init__(self, norm_nc, label_nc, nhidden):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(label_nc, nhidden, 3), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3)

    def forward(self, x, seg):
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=True)
        n = (x - mean) / torch.sqrt(var + 1e-5)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        a = self.mlp_shared(seg)
        return n * (1 + pad_conv(a, self.mlp_gamma)) + pad_conv(a, self.mlp_beta)


class SPADEResnetBlock(nn.Module):
    def __init__(self, fin, fout, label_nc, nhidden):
        super().__init__()
        fmid = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3))
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3))
        self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, nhidden)
        self.norm_1 = SPADE(fmid, label_nc, nhidden)
        self.norm_s = SPADE(fin, label_nc, nhidden)

    def forward(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg))
        dx = pad_conv(F.leaky_relu(self.norm_0(x, seg), 0.2), self.conv_0)
        dx = pad_conv(F.leaky_relu(self.norm_1(dx, seg), 0.2), self.conv_1)
        return x_s + dx


def sn_block(cin, cout):
    return nn.Sequential(spectral_norm(nn.Conv2d(cin, cout, 3, padding=1, bias=False)), nn.InstanceNorm2d(cout))


class AdaptiveFeatureEncoder(nn.Module):
    """ShallowAdaptiveFeatureGenerator(ForLabel): 3 SN conv+IN layers then a SPADE resblock.

    `cond_nc` is the channel count of the SPADE condition (the input itself for real_enc /
    seg_enc, the seg_enc output for iter_enc).
    """

    def __init__(self, in_nc, cond_nc, ndf, n_ch, nhidden):
        super().__init__()
        self.layer1 = sn_block(in_nc, ndf)
        self.layer2 = sn_block(ndf, 4 * ndf)
        self.layer3 = sn_block(4 * ndf, 8 * ndf)
        self.G_middle_1 = SPADEResnetBlock(8 * ndf, n_ch, cond_nc, nhidden)

    def forward(self, x, seg=None, trace=None, name=None):
        seg = x if seg is None else seg
        h = self.layer1(x)
        if trace is not None:
            trace[f"corr.{name}.layer1"] = h
        h = self.layer2(F.leaky_relu(h, 0.2))
        h = self.layer3(F.leaky_relu(h, 0.2))
        return self.G_middle_1(h, seg)


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3)
        self.conv2 = nn.Conv2d(c, c, 3)
        self.prelu = nn.PReLU()

    def forward(self, x):
        o = self.prelu(F.instance_norm(pad_conv(x, self.conv1), eps=1e-5))
        o = F.instance_norm(pad_conv(o, self.conv2), eps=1e-5)
        return self.prelu(o + x)


def build_correspondence(module, latent_channels, label_nc, n_ch, ndf, nhidden, label_fill=False):
    """Adds seg_enc, real_enc, iter_enc, layer, phi, theta to `module` (canonical names).
    `label_fill`: seg_enc takes one channel more, the filled drawing (`ops.seg_input`)."""
    module.real_enc = AdaptiveFeatureEncoder(latent_channels, latent_channels, ndf, n_ch, nhidden)
    module.iter_enc = AdaptiveFeatureEncoder(latent_channels, n_ch, ndf, n_ch, nhidden)
    seg_nc = label_nc + int(label_fill)
    module.seg_enc = AdaptiveFeatureEncoder(seg_nc, seg_nc, ndf, n_ch, nhidden)
    c = n_ch + label_nc
    module.layer = nn.Sequential(*[ResidualBlock(c) for _ in range(4)])
    module.phi = nn.Conv2d(c, n_ch, 1)
    module.theta = nn.Conv2d(c, n_ch, 1)
