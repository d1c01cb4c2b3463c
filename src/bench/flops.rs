//! Analytical FLOP counts of every stage, from a [`MidmConfig`] alone (batch 1).
//!
//! `mm` counts the multiply-adds of convolutions, linear layers and matrix products as 2 FLOPs
//! each (2 * Cin * Cout * k * k * H * W for a conv), the convention of
//! `torch.utils.flop_counter.FlopCounterMode`, so it can be checked against PyTorch (see
//! `train/bench_torch.py`). `other` is a rough count of the element-wise work (normalisation,
//! activations, softmax, bias and residual adds), which is small next to `mm` but not zero.
//! The walk over the networks mirrors `UNetModel::new`, `Encoder::new`, ... layer for layer.
use std::ops::{Add, AddAssign, Mul};

use crate::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, MidmConfig, UNetConfig,
};

/// FLOPs of one stage: matrix work and element-wise work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flops {
    pub mm: u64,
    pub other: u64,
}

impl Flops {
    pub fn total(&self) -> u64 {
        self.mm + self.other
    }
}

impl Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops {
            mm: self.mm + o.mm,
            other: self.other + o.other,
        }
    }
}

impl AddAssign for Flops {
    fn add_assign(&mut self, o: Flops) {
        *self = *self + o;
    }
}

impl Mul<u64> for Flops {
    type Output = Flops;
    fn mul(self, n: u64) -> Flops {
        Flops {
            mm: self.mm * n,
            other: self.other * n,
        }
    }
}

fn u(x: usize) -> u64 {
    x as u64
}

/// Conv `k x k`, `cin -> cout`, output `h x w`, with bias.
fn conv(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> Flops {
    let out = u(cout * h * w);
    Flops {
        mm: 2 * u(cin * k * k) * out,
        other: out,
    }
}

/// Conv without bias.
fn conv_nb(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> Flops {
    Flops {
        mm: 2 * u(cin * k * k * cout * h * w),
        other: 0,
    }
}

/// Linear `i -> o` (batch 1), with bias.
fn linear(i: usize, o: usize) -> Flops {
    Flops {
        mm: 2 * u(i * o),
        other: u(o),
    }
}

/// Element-wise work of `per` FLOPs per element over `n` elements.
fn ew(n: usize, per: u64) -> Flops {
    Flops {
        mm: 0,
        other: u(n) * per,
    }
}

/// GroupNorm (mean, variance, normalise, affine: ~7 per element) followed by SiLU (~4).
fn gn_silu(c: usize, h: usize, w: usize) -> Flops {
    ew(c * h * w, 11)
}

/// Softmax over rows (max, exp, sum, divide: ~5 per element).
fn softmax(n: usize) -> Flops {
    ew(n, 5)
}

/// Single- or multi-head self-attention over `t` positions with `c` channels (the products and
/// the softmax only; projections are counted by the caller). `heads` rows of `t x t` scores.
fn attention_core(c: usize, t: usize, heads: usize) -> Flops {
    Flops {
        mm: 2 * 2 * u(t * t * c),
        other: 0,
    } + softmax(heads * t * t)
}

/// UNet ResBlock at `h x w`.
fn unet_resblock(cin: usize, cout: usize, ted: usize, h: usize, w: usize) -> Flops {
    let mut f = gn_silu(cin, h, w)
        + conv(cin, cout, 3, h, w)
        + linear(ted, cout)
        + ew(cout * h * w, 1)
        + gn_silu(cout, h, w)
        + conv(cout, cout, 3, h, w)
        + ew(cout * h * w, 1);
    if cin != cout {
        f += conv(cin, cout, 1, h, w);
    }
    f
}

fn unet_attention(c: usize, heads: usize, h: usize, w: usize) -> Flops {
    let t = h * w;
    ew(c * t, 7)
        + conv(c, 3 * c, 1, h, w)
        + attention_core(c, t, heads)
        + conv(c, c, 1, h, w)
        + ew(c * t, 1)
}

/// One UNet pass on a `s x s` latent.
pub fn unet(cfg: &UNetConfig, s: usize) -> Flops {
    let mc = cfg.model_channels;
    let ted = cfg.time_embed_dim();
    let heads = |c: usize| cfg.heads_for(c).unwrap_or(1);
    let mut f = linear(mc, ted) + ew(ted, 4) + linear(ted, ted) + ew(ted, 4);
    let mut res = s;
    f += conv(cfg.in_channels, mc, 3, res, res);
    let mut chans = vec![mc];
    let (mut ch, mut ds) = (mc, 1);
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks {
            f += unet_resblock(ch, mult * mc, ted, res, res);
            ch = mult * mc;
            if cfg.attention_resolutions.contains(&ds) {
                f += unet_attention(ch, heads(ch), res, res);
            }
            chans.push(ch);
        }
        if level + 1 != cfg.channel_mult.len() {
            res /= 2;
            f += conv(ch, ch, 3, res, res);
            chans.push(ch);
            ds *= 2;
        }
    }
    f += unet_resblock(ch, ch, ted, res, res)
        + unet_attention(ch, heads(ch), res, res)
        + unet_resblock(ch, ch, ted, res, res);
    for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
        for i in 0..=cfg.num_res_blocks {
            let ich = chans.pop().unwrap_or(0);
            f += unet_resblock(ch + ich, mc * mult, ted, res, res);
            ch = mc * mult;
            if cfg.attention_resolutions.contains(&ds) {
                f += unet_attention(ch, heads(ch), res, res);
            }
            if level != 0 && i == cfg.num_res_blocks {
                res *= 2;
                f += conv(ch, ch, 3, res, res);
                ds /= 2;
            }
        }
    }
    f + gn_silu(ch, res, res) + conv(mc, cfg.out_channels, 3, res, res)
}

/// Autoencoder ResnetBlock at `h x w`.
fn ae_resblock(cin: usize, cout: usize, h: usize, w: usize) -> Flops {
    let mut f = gn_silu(cin, h, w)
        + conv(cin, cout, 3, h, w)
        + gn_silu(cout, h, w)
        + conv(cout, cout, 3, h, w)
        + ew(cout * h * w, 1);
    if cin != cout {
        f += conv(cin, cout, 1, h, w);
    }
    f
}

fn ae_attention(c: usize, h: usize, w: usize) -> Flops {
    let t = h * w;
    ew(c * t, 7)
        + conv(c, 3 * c, 1, h, w)
        + attention_core(c, t, 1)
        + conv(c, c, 1, h, w)
        + ew(c * t, 1)
}

/// Encoder + quant_conv on a `res x res` image.
pub fn ae_encode(cfg: &AutoencoderConfig, res: usize) -> Flops {
    let mut r = res;
    let mut f = conv(cfg.in_channels, cfg.ch, 3, r, r);
    let mut cin = cfg.ch;
    for (i, &mult) in cfg.ch_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks {
            f += ae_resblock(cin, cfg.ch * mult, r, r);
            cin = cfg.ch * mult;
            if cfg.attn_resolutions.contains(&r) {
                f += ae_attention(cin, r, r);
            }
        }
        if i + 1 != cfg.ch_mult.len() {
            r /= 2;
            f += conv(cin, cin, 3, r, r);
        }
    }
    f += ae_resblock(cin, cin, r, r) + ae_attention(cin, r, r) + ae_resblock(cin, cin, r, r);
    let z = if cfg.double_z {
        2 * cfg.z_channels
    } else {
        cfg.z_channels
    };
    f += gn_silu(cin, r, r) + conv(cin, z, 3, r, r);
    let q_out = match cfg.kind {
        AutoencoderKind::Vq { .. } => cfg.embed_dim,
        AutoencoderKind::Kl => 2 * cfg.embed_dim,
    };
    f + conv(z, q_out, 1, r, r)
}

/// (VQ) + post_quant_conv + Decoder from a latent of side `res / f`.
pub fn ae_decode(cfg: &AutoencoderConfig, res: usize) -> Flops {
    let levels = cfg.ch_mult.len();
    let mut r = res >> (levels - 1);
    let mut f = Flops::default();
    if let AutoencoderKind::Vq { n_embed } = cfg.kind {
        // Distances to every code: one GEMM, then the argmin.
        f += Flops {
            mm: 2 * u(r * r * n_embed * cfg.embed_dim),
            other: 3 * u(r * r * n_embed),
        };
    }
    f += conv(cfg.embed_dim, cfg.z_channels, 1, r, r);
    let mut cin = cfg.ch * cfg.ch_mult[levels - 1];
    f += conv(cfg.z_channels, cin, 3, r, r);
    f += ae_resblock(cin, cin, r, r) + ae_attention(cin, r, r) + ae_resblock(cin, cin, r, r);
    for i in (0..levels).rev() {
        for _ in 0..=cfg.num_res_blocks {
            f += ae_resblock(cin, cfg.ch * cfg.ch_mult[i], r, r);
            cin = cfg.ch * cfg.ch_mult[i];
            if cfg.attn_resolutions.contains(&r) {
                f += ae_attention(cin, r, r);
            }
        }
        if i != 0 {
            r *= 2;
            f += conv(cin, cin, 3, r, r);
        }
    }
    f + gn_silu(cin, r, r) + conv(cin, cfg.out_ch, 3, r, r)
}

/// SPADE at `s x s` over `norm_nc` channels, conditioned on `label_nc` channels.
fn spade(norm_nc: usize, label_nc: usize, nhidden: usize, s: usize) -> Flops {
    ew(norm_nc * s * s, 8)
        + conv(label_nc, nhidden, 3, s, s)
        + ew(nhidden * s * s, 1)
        + conv(nhidden, norm_nc, 3, s, s) * 2
        + ew(norm_nc * s * s, 3)
}

/// One of `seg_enc` / `real_enc` / `iter_enc` at `s x s`.
fn feature_encoder(in_nc: usize, seg_nc: usize, cfg: &CorrespondenceConfig, s: usize) -> Flops {
    let ndf = cfg.ndf;
    let (fin, fout) = (8 * ndf, cfg.n_ch);
    let fmid = fin.min(fout);
    let nh = cfg.spade_nhidden;
    conv_nb(in_nc, ndf, 3, s, s)
        + ew(ndf * s * s, 6)
        + conv_nb(ndf, 4 * ndf, 3, s, s)
        + ew(4 * ndf * s * s, 6)
        + conv_nb(4 * ndf, 8 * ndf, 3, s, s)
        + ew(8 * ndf * s * s, 6)
        + spade(fin, seg_nc, nh, s) * 2
        + conv_nb(fin, fout, 1, s, s)
        + conv(fin, fmid, 3, s, s)
        + spade(fmid, seg_nc, nh, s)
        + conv(fmid, fout, 3, s, s)
        + ew((fin + fmid + fout) * s * s, 1)
}

/// The shared trunk plus the 1x1 projection and the centring/normalisation.
fn trunk_and_projection(cfg: &CorrespondenceConfig, s: usize) -> Flops {
    let c = cfg.n_ch + cfg.label_nc;
    let block = (conv(c, c, 3, s, s) + ew(c * s * s, 8)) * 2 + ew(c * s * s, 3);
    block * u(cfg.trunk_blocks) + conv(c, cfg.n_ch, 1, s, s) + ew(cfg.n_ch * s * s, 5)
}

/// Matching features of the condition side at latent side `s`.
pub fn condition_side(cfg: &CorrespondenceConfig, s: usize) -> Flops {
    feature_encoder(cfg.label_nc, cfg.label_nc, cfg, s) + trunk_and_projection(cfg, s)
}

/// Matching features of the exemplar side at latent side `s`.
pub fn exemplar_side(cfg: &CorrespondenceConfig, s: usize) -> Flops {
    feature_encoder(cfg.latent_channels, cfg.latent_channels, cfg, s)
        + trunk_and_projection(cfg, s)
        + ew(cfg.n_ch * s * s, 5)
}

/// `iter_enc` on x0, centred and normalised.
pub fn iteration_features(cfg: &CorrespondenceConfig, s: usize) -> Flops {
    feature_encoder(cfg.latent_channels, cfg.n_ch, cfg, s) + ew(cfg.n_ch * s * s, 5)
}

/// Normalised correlation of `c`-channel features (T = s*s positions), softmax, warp of a
/// `c_src`-channel latent.
pub fn correlation_and_warp(c: usize, c_src: usize, s: usize) -> Flops {
    let t = s * s;
    ew(2 * c * t, 4)
        + Flops {
            mm: 2 * u(t * t * c),
            other: u(t * t),
        }
        + ew(t * t, 1)
        + softmax(t * t)
        + Flops {
            mm: 2 * u(t * t * c_src),
            other: 0,
        }
}

/// Soft flow in both directions, forward-backward check, mask.
pub fn cycle_check(s: usize) -> Flops {
    let t = s * s;
    ew(t * t, 1)
        + softmax(t * t) * 2
        + Flops {
            mm: 2 * 2 * u(t * t * 2),
            other: 0,
        }
        + ew(t * 2, 30)
}

/// Per-stage counts of one translation of `cfg` with the official sampler settings.
#[derive(Debug, Clone)]
pub struct StageFlops {
    pub encode: Flops,
    pub condition_side: Flops,
    pub exemplar_side: Flops,
    pub correlation_warp: Flops,
    pub iteration_features: Flops,
    pub cycle_check: Flops,
    pub unet: Flops,
    pub decode: Flops,
    /// The initial correlation (theta/phi features) and one re-matching (raw encoder features).
    pub rematch_correlation_warp: Flops,
}

impl StageFlops {
    pub fn new(cfg: &MidmConfig) -> Self {
        let s = cfg.latent_size();
        let c = &cfg.correspondence;
        let lat = cfg.autoencoder.embed_dim;
        Self {
            encode: ae_encode(&cfg.autoencoder, cfg.image_size),
            condition_side: condition_side(c, s),
            exemplar_side: exemplar_side(c, s),
            correlation_warp: correlation_and_warp(c.n_ch, lat, s),
            iteration_features: iteration_features(c, s),
            cycle_check: cycle_check(s),
            unet: unet(&cfg.unet, s),
            decode: ae_decode(&cfg.autoencoder, cfg.image_size),
            rematch_correlation_warp: correlation_and_warp(c.n_ch, lat, s),
        }
    }

    /// A whole translation: `unet_passes` UNet passes and `rematches` re-matchings.
    pub fn translation(&self, unet_passes: u64, rematches: u64) -> Flops {
        self.encode
            + self.condition_side
            + self.exemplar_side
            + self.correlation_warp
            + (self.iteration_features + self.rematch_correlation_warp + self.cycle_check)
                * rematches
            + self.unet * unet_passes
            + self.decode
    }

    /// Everything before the first streamed event (the initial warp).
    pub fn first_step(&self) -> Flops {
        self.encode + self.condition_side + self.exemplar_side + self.correlation_warp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_count_is_the_textbook_formula() {
        assert_eq!(conv(3, 8, 3, 4, 4).mm, 2 * 3 * 8 * 9 * 16);
    }
}
