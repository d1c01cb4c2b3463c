//! The keys (and shapes) a [`MidmConfig`] needs, enumerated the way the reference modules
//! register their parameters (LDM `openaimodel.UNetModel`, `model.Encoder` / `Decoder`,
//! `VQModelInterface` / `AutoencoderKL`, MIDMs' correspondence networks). Used to validate a
//! checkpoint before anything is built, so that every missing, unexpected or misshapen key is
//! reported at once, with its name. Checked against the authors' files in `tests/checkpoints.rs`.
use std::collections::BTreeMap;

use crate::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, MidmConfig, UNetConfig,
};

/// Canonical key -> shape.
pub type KeySpec = BTreeMap<String, Vec<usize>>;

/// Prefixes of the modules inference needs, in the canonical key space.
pub const FIRST_STAGE: &str = "diff_model.first_stage_model.";
pub const UNET: &str = "diff_model.model.diffusion_model.";
pub const CORRESPONDENCE: [&str; 6] = [
    "seg_enc.",
    "real_enc.",
    "iter_enc.",
    "layer.",
    "phi.",
    "theta.",
];

/// Whether a canonical key belongs to a module inference builds.
pub fn in_needed_module(key: &str) -> bool {
    key.starts_with(FIRST_STAGE)
        || key.starts_with(UNET)
        || CORRESPONDENCE.iter().any(|p| key.starts_with(p))
}

struct Spec<'a> {
    map: &'a mut KeySpec,
    prefix: String,
}

impl Spec<'_> {
    fn at(&mut self, p: &str) -> Spec<'_> {
        Spec {
            map: self.map,
            prefix: format!("{}{p}.", self.prefix),
        }
    }
    fn put(&mut self, name: &str, shape: &[usize]) {
        self.map
            .insert(format!("{}{name}", self.prefix), shape.to_vec());
    }
    /// Conv with bias; `shape` = [out, in, k...].
    fn conv(&mut self, name: &str, shape: &[usize]) {
        self.put(&format!("{name}.weight"), shape);
        self.put(&format!("{name}.bias"), &shape[..1]);
    }
    /// Affine norm (GroupNorm) of `c` channels.
    fn norm(&mut self, name: &str, c: usize) {
        self.put(&format!("{name}.weight"), &[c]);
        self.put(&format!("{name}.bias"), &[c]);
    }
    /// Spectral-norm conv as stored: weight_orig, weight_u, weight_v (+ bias).
    fn sn_conv(&mut self, name: &str, out: usize, inp: usize, k: usize, bias: bool) {
        self.put(&format!("{name}.weight_orig"), &[out, inp, k, k]);
        self.put(&format!("{name}.weight_u"), &[out]);
        self.put(&format!("{name}.weight_v"), &[inp * k * k]);
        if bias {
            self.put(&format!("{name}.bias"), &[out]);
        }
    }
}

fn root<'a>(map: &'a mut KeySpec, prefix: &str) -> Spec<'a> {
    Spec {
        map,
        prefix: prefix.to_string(),
    }
}

/// The first stage's keys, relative to its module (`encoder.*`, `decoder.*`, ...).
pub fn autoencoder_keys(cfg: &AutoencoderConfig) -> KeySpec {
    let mut map = KeySpec::new();
    let mut s = root(&mut map, "");
    let resnet = |s: &mut Spec, name: &str, cin: usize, cout: usize| {
        let mut b = s.at(name);
        b.norm("norm1", cin);
        b.conv("conv1", &[cout, cin, 3, 3]);
        b.norm("norm2", cout);
        b.conv("conv2", &[cout, cout, 3, 3]);
        if cin != cout {
            b.conv("nin_shortcut", &[cout, cin, 1, 1]);
        }
    };
    let attn = |s: &mut Spec, name: &str, c: usize| {
        let mut b = s.at(name);
        b.norm("norm", c);
        for p in ["q", "k", "v", "proj_out"] {
            b.conv(p, &[c, c, 1, 1]);
        }
    };
    let levels = cfg.ch_mult.len();
    // Encoder
    {
        let mut e = s.at("encoder");
        e.conv("conv_in", &[cfg.ch, cfg.in_channels, 3, 3]);
        let mut res = cfg.resolution;
        let mut block_in = cfg.ch;
        for (i, &mult) in cfg.ch_mult.iter().enumerate() {
            block_in = if i == 0 {
                cfg.ch
            } else {
                cfg.ch * cfg.ch_mult[i - 1]
            };
            let block_out = cfg.ch * mult;
            let mut d = e.at(&format!("down.{i}"));
            for j in 0..cfg.num_res_blocks {
                resnet(&mut d, &format!("block.{j}"), block_in, block_out);
                block_in = block_out;
                if cfg.attn_resolutions.contains(&res) {
                    attn(&mut d, &format!("attn.{j}"), block_in);
                }
            }
            if i + 1 != levels {
                d.conv("downsample.conv", &[block_in, block_in, 3, 3]);
                res /= 2;
            }
        }
        resnet(&mut e, "mid.block_1", block_in, block_in);
        attn(&mut e, "mid.attn_1", block_in);
        resnet(&mut e, "mid.block_2", block_in, block_in);
        e.norm("norm_out", block_in);
        let zc = if cfg.double_z {
            2 * cfg.z_channels
        } else {
            cfg.z_channels
        };
        e.conv("conv_out", &[zc, block_in, 3, 3]);
    }
    // Decoder
    {
        let mut d = s.at("decoder");
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut res = cfg.resolution >> (levels - 1);
        d.conv("conv_in", &[block_in, cfg.z_channels, 3, 3]);
        resnet(&mut d, "mid.block_1", block_in, block_in);
        attn(&mut d, "mid.attn_1", block_in);
        resnet(&mut d, "mid.block_2", block_in, block_in);
        for i in (0..levels).rev() {
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut u = d.at(&format!("up.{i}"));
            for j in 0..=cfg.num_res_blocks {
                resnet(&mut u, &format!("block.{j}"), block_in, block_out);
                block_in = block_out;
                if cfg.attn_resolutions.contains(&res) {
                    attn(&mut u, &format!("attn.{j}"), block_in);
                }
            }
            if i != 0 {
                u.conv("upsample.conv", &[block_in, block_in, 3, 3]);
                res *= 2;
            }
        }
        d.norm("norm_out", block_in);
        d.conv("conv_out", &[cfg.out_ch, block_in, 3, 3]);
    }
    match cfg.kind {
        AutoencoderKind::Vq { n_embed } => {
            s.conv("quant_conv", &[cfg.embed_dim, cfg.z_channels, 1, 1]);
            s.conv("post_quant_conv", &[cfg.z_channels, cfg.embed_dim, 1, 1]);
            s.put("quantize.embedding.weight", &[n_embed, cfg.embed_dim]);
        }
        AutoencoderKind::Kl => {
            s.conv("quant_conv", &[2 * cfg.embed_dim, 2 * cfg.z_channels, 1, 1]);
            s.conv("post_quant_conv", &[cfg.z_channels, cfg.embed_dim, 1, 1]);
        }
    }
    map
}

/// The UNet's keys, relative to `diffusion_model` (`time_embed.0.weight`, `input_blocks.0.0.weight`, ...).
pub fn unet_keys(cfg: &UNetConfig) -> KeySpec {
    let mut map = KeySpec::new();
    let mut s = root(&mut map, "");
    let mc = cfg.model_channels;
    let emb = 4 * mc;
    s.conv("time_embed.0", &[emb, mc]);
    s.conv("time_embed.2", &[emb, emb]);
    let resblock = |s: &mut Spec, name: &str, cin: usize, cout: usize| {
        let mut b = s.at(name);
        b.norm("in_layers.0", cin);
        b.conv("in_layers.2", &[cout, cin, 3, 3]);
        b.conv("emb_layers.1", &[cout, emb]);
        b.norm("out_layers.0", cout);
        b.conv("out_layers.3", &[cout, cout, 3, 3]);
        if cin != cout {
            b.conv("skip_connection", &[cout, cin, 1, 1]);
        }
    };
    let attention = |s: &mut Spec, name: &str, c: usize| {
        let mut b = s.at(name);
        b.norm("norm", c);
        b.conv("qkv", &[3 * c, c, 1]);
        b.conv("proj_out", &[c, c, 1]);
    };
    s.conv("input_blocks.0.0", &[mc, cfg.in_channels, 3, 3]);
    let mut chans = vec![mc];
    let mut ch = mc;
    let mut ds = 1;
    let mut idx = 1;
    let levels = cfg.channel_mult.len();
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks {
            resblock(&mut s, &format!("input_blocks.{idx}.0"), ch, mult * mc);
            ch = mult * mc;
            if cfg.attention_resolutions.contains(&ds) {
                attention(&mut s, &format!("input_blocks.{idx}.1"), ch);
            }
            chans.push(ch);
            idx += 1;
        }
        if level + 1 != levels {
            s.conv(&format!("input_blocks.{idx}.0.op"), &[ch, ch, 3, 3]);
            chans.push(ch);
            ds *= 2;
            idx += 1;
        }
    }
    resblock(&mut s, "middle_block.0", ch, ch);
    attention(&mut s, "middle_block.1", ch);
    resblock(&mut s, "middle_block.2", ch, ch);
    let mut idx = 0;
    for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
        for i in 0..=cfg.num_res_blocks {
            let skip = chans.pop().unwrap_or(0);
            resblock(
                &mut s,
                &format!("output_blocks.{idx}.0"),
                ch + skip,
                mc * mult,
            );
            ch = mc * mult;
            let mut n = 1;
            if cfg.attention_resolutions.contains(&ds) {
                attention(&mut s, &format!("output_blocks.{idx}.1"), ch);
                n += 1;
            }
            if level != 0 && i == cfg.num_res_blocks {
                s.conv(&format!("output_blocks.{idx}.{n}.conv"), &[ch, ch, 3, 3]);
                ds /= 2;
            }
            idx += 1;
        }
    }
    s.norm("out.0", ch);
    s.conv("out.2", &[cfg.out_channels, mc, 3, 3]);
    map
}

/// The correspondence networks' keys (top level: `seg_enc.*`, `real_enc.*`, `iter_enc.*`, `layer.*`, `phi.*`, `theta.*`).
pub fn correspondence_keys(cfg: &CorrespondenceConfig) -> KeySpec {
    let mut map = KeySpec::new();
    let mut s = root(&mut map, "");
    let ndf = cfg.ndf;
    // (module, input channels, SPADE condition channels)
    let encoders = [
        ("real_enc", cfg.latent_channels, cfg.latent_channels),
        ("iter_enc", cfg.latent_channels, cfg.n_ch),
        ("seg_enc", cfg.seg_channels(), cfg.seg_channels()),
    ];
    for (name, cin, seg_nc) in encoders {
        let mut e = s.at(name);
        e.sn_conv("layer1.0", ndf, cin, 3, false);
        e.sn_conv("layer2.0", 4 * ndf, ndf, 3, false);
        e.sn_conv("layer3.0", 8 * ndf, 4 * ndf, 3, false);
        // SPADEResnetBlock(fin = 8 ndf, fout = n_ch)
        let (fin, fout) = (8 * ndf, cfg.n_ch);
        let fmid = fin.min(fout);
        let mut g = e.at("G_middle_1");
        g.sn_conv("conv_0", fmid, fin, 3, true);
        g.sn_conv("conv_1", fout, fmid, 3, true);
        let spade = |g: &mut Spec, name: &str, c: usize| {
            let mut n = g.at(name);
            n.conv("mlp_shared.1", &[cfg.spade_nhidden, seg_nc, 3, 3]);
            n.conv("mlp_gamma", &[c, cfg.spade_nhidden, 3, 3]);
            n.conv("mlp_beta", &[c, cfg.spade_nhidden, 3, 3]);
        };
        spade(&mut g, "norm_0", fin);
        spade(&mut g, "norm_1", fmid);
        if fin != fout {
            g.sn_conv("conv_s", fout, fin, 1, false);
            spade(&mut g, "norm_s", fin);
        }
    }
    let c = cfg.n_ch + cfg.label_nc;
    for i in 0..cfg.trunk_blocks {
        let mut b = s.at(&format!("layer.{i}"));
        b.conv("conv1", &[c, c, 3, 3]);
        b.conv("conv2", &[c, c, 3, 3]);
        b.put("prelu.weight", &[1]);
    }
    s.conv("phi", &[cfg.n_ch, c, 1, 1]);
    s.conv("theta", &[cfg.n_ch, c, 1, 1]);
    map
}

/// Every key inference needs, in the canonical key space, with its shape.
pub fn expected_keys(cfg: &MidmConfig) -> KeySpec {
    let mut all = KeySpec::new();
    for (k, v) in autoencoder_keys(&cfg.autoencoder) {
        all.insert(format!("{FIRST_STAGE}{k}"), v);
    }
    for (k, v) in unet_keys(&cfg.unet) {
        all.insert(format!("{UNET}{k}"), v);
    }
    all.extend(correspondence_keys(&cfg.correspondence));
    all
}

/// The dot-less name LDM's EMA gives a UNet parameter (`model_ema.` + this), e.g.
/// `input_blocks.1.0.in_layers.2.weight` -> `diffusion_modelinput_blocks10in_layers2weight`.
pub fn ema_name(unet_key: &str) -> String {
    format!("diffusion_model.{unet_key}").replace('.', "")
}
