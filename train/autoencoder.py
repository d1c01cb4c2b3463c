"""VQ autoencoder (LDM `VQModelInterface`, VQ-f4 layout): key names as the official checkpoint."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import full_precision


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        k = k.reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)
        v = v.reshape(b, c, hh * ww)
        out = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        # Asymmetric zero pad (right/bottom), as the LDM autoencoder.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.attn_1 = AttnBlock(c)
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, in_channels, z_channels):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(ch_mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            cout = ch * m
            for _ in range(num_res_blocks):
                lvl.block.append(ResnetBlock(cin, cout))
                cin = cout
            lvl.attn = nn.ModuleList()
            if i != len(ch_mult) - 1:
                lvl.downsample = Downsample(cin)
            self.down.append(lvl)
        self.mid = Mid(cin)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, z_channels, 3, padding=1)

    def forward(self, x, return_features=False):
        feats = []
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            feats.append(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid(h)
        feats.append(h)
        out = self.conv_out(swish(self.norm_out(h)))
        return (out, feats) if return_features else out


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, out_ch, z_channels):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = Mid(cin)
        ups = []
        for i in reversed(range(len(ch_mult))):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            cout = ch * ch_mult[i]
            for _ in range(num_res_blocks + 1):
                lvl.block.append(ResnetBlock(cin, cout))
                cin = cout
            lvl.attn = nn.ModuleList()
            if i != 0:
                lvl.upsample = Upsample(cin)
            ups.insert(0, lvl)
        self.up = nn.ModuleList(ups)  # key up.{i}: level i, i = 0 full resolution
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, n_e, e_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    @full_precision
    def indices(self, z):
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.embedding.weight
        d = (zf ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * zf @ e.t()
        return torch.argmin(d, dim=1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z):
        """Returns (z_q with straight-through gradient, codebook+commitment loss, indices)."""
        idx = self.indices(z)
        zq = self.embedding(idx).permute(0, 3, 1, 2)
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(zq.detach(), z)
        zq = z + (zq - z).detach()
        return zq, loss, idx


class VQModel(nn.Module):
    """`encode` = quant_conv(encoder(x)) (no quantization); `decode` quantizes first."""

    def __init__(self, embed_dim, n_embed, ddconfig):
        super().__init__()
        d = ddconfig
        self.encoder = Encoder(d["ch"], d["ch_mult"], d["num_res_blocks"], d["in_channels"], d["z_channels"])
        self.decoder = Decoder(d["ch"], d["ch_mult"], d["num_res_blocks"], d["out_ch"], d["z_channels"])
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(d["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, d["z_channels"], 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode_noquant(self, z):
        return self.decoder(self.post_quant_conv(z))

    def decode(self, z):
        zq, _, _ = self.quantize(z)
        return self.decode_noquant(zq)

    def features(self, x):
        """Multi-scale encoder features (used as the perceptual feature network)."""
        return self.encoder(x, return_features=True)[1]

    def forward(self, x):
        z = self.encode(x)
        zq, qloss, idx = self.quantize(z)
        return self.decode_noquant(zq), qloss, idx
