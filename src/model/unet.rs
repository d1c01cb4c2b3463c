//! LDM `openaimodel.UNetModel` (keys under `diff_model.model.diffusion_model`), in the layout the
//! MIDMs / LDM CelebA-HQ models use: no class conditioning, no spatial transformer, no
//! scale-shift norm, conv resampling, legacy ("QKVAttentionLegacy") attention.
//!
//! Keys: `time_embed.{0,2}`, `input_blocks.{i}.{j}`, `middle_block.{0,1,2}`,
//! `output_blocks.{i}.{j}`, `out.{0,2}`; inside a ResBlock `in_layers.{0,2}`, `emb_layers.1`,
//! `out_layers.{0,3}`, `skip_connection`; inside an AttentionBlock `norm`, `qkv`, `proj_out`
//! (Conv1d, 3-D weights); `op` (Downsample) and `conv` (Upsample).
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::layers::{
    conv2d, conv3x3, group_norm, linear, silu, softmax_last_dim, upsample_nearest2x, Conv1x1,
    Conv2d, GroupNorm,
};

/// `GroupNorm32` in openaimodel: GroupNorm(32, eps=1e-5, affine).
const GN_EPS: f64 = 1e-5;

/// LDM `unet_config.params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub image_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Downsample factors (1, 2, 4, ...) at which attention blocks are inserted.
    pub attention_resolutions: Vec<usize>,
    /// Either heads of fixed width (`num_head_channels`, LDM default -1 = unused) ...
    pub num_head_channels: Option<usize>,
    /// ... or a fixed number of heads.
    pub num_heads: Option<usize>,
}

impl UNetConfig {
    /// Width of the time embedding (`time_embed_dim = 4 * model_channels`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// Number of heads of an attention block over `channels` channels, as openaimodel derives
    /// it: `channels / num_head_channels` when that is set, else `num_heads`.
    pub fn heads_for(&self, channels: usize) -> Result<usize> {
        match (self.num_head_channels, self.num_heads) {
            (Some(d), _) if d > 0 => {
                if !channels.is_multiple_of(d) {
                    candle_core::bail!(
                        "UNet config: {channels} attention channels are not a multiple of num_head_channels {d}"
                    )
                }
                Ok(channels / d)
            }
            (_, Some(n)) if n > 0 => {
                if !channels.is_multiple_of(n) {
                    candle_core::bail!(
                        "UNet config: {channels} attention channels do not split into {n} heads"
                    )
                }
                Ok(n)
            }
            _ => candle_core::bail!("UNet config: set num_head_channels or num_heads"),
        }
    }
}

/// Sinusoidal timestep embedding `[cos(t f_k), sin(t f_k)]` (cos first), `f_k =
/// exp(-ln(10000) k / half)`, evaluated in float32 like the reference; `t` is `[B]` of any dtype.
/// An odd `dim` gets a zero column appended.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let b = t.dims1()?;
    // float32 throughout, in the reference's order: (-ln(10000) * k) / half, then exp.
    let neg_log = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|k| ((neg_log * k as f32) / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .reshape((b, 1))?
        .broadcast_mul(&freqs)?;
    let mut parts = vec![args.cos()?, args.sin()?];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros((b, 1), DType::F32, t.device())?);
    }
    Tensor::cat(&parts, 1)
}

/// `ResBlock` without scale-shift norm; dropout is the identity at inference.
#[derive(Debug)]
struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb_proj: Linear,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv1x1>,
}

impl ResBlock {
    fn new(
        channels: usize,
        emb_channels: usize,
        out_channels: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let skip = if channels != out_channels {
            Some(Conv1x1::conv2d(
                channels,
                out_channels,
                vb.pp("skip_connection"),
            )?)
        } else {
            None
        };
        Ok(Self {
            in_norm: group_norm(channels, GN_EPS, vb.pp("in_layers.0"))?,
            in_conv: conv3x3(channels, out_channels, vb.pp("in_layers.2"))?,
            emb_proj: linear(emb_channels, out_channels, vb.pp("emb_layers.1"))?,
            out_norm: group_norm(out_channels, GN_EPS, vb.pp("out_layers.0"))?,
            out_conv: conv3x3(out_channels, out_channels, vb.pp("out_layers.3"))?,
            skip,
        })
    }

    /// `emb_act` is `SiLU(emb)`, shared by every ResBlock (the first op of `emb_layers`).
    fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward_silu(x)?)?;
        let (b, c) = (emb_act.dim(0)?, h.dim(1)?);
        let e = self.emb_proj.forward(emb_act)?.reshape((b, c, 1, 1))?;
        let h = h.broadcast_add(&e)?;
        let h = self.out_conv.forward(&self.out_norm.forward_silu(&h)?)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// `AttentionBlock` with `QKVAttentionLegacy`: heads are split after reshaping qkv to
/// `[B*n, 3d, T]`, so head `i` owns channels `[3di, 3d(i+1))` of qkv as q | k | v.
#[derive(Debug)]
struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    heads: usize,
}

impl AttentionBlock {
    fn new(channels: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(channels, GN_EPS, vb.pp("norm"))?,
            qkv: Conv1x1::conv1d(channels, 3 * channels, vb.pp("qkv"))?,
            proj_out: Conv1x1::conv1d(channels, channels, vb.pp("proj_out"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = h * w;
        let x = x.reshape((b, c, t))?;
        let qkv = self.qkv.forward(&self.norm.forward(&x)?)?;
        let d = c / self.heads;
        let n = b * self.heads;
        let qkv = qkv.reshape((n, 3 * d, t))?;
        // Both q and k are scaled by d^-1/4 (separately, as the reference rounds them).
        let scale = 1.0 / (d as f64).sqrt().sqrt();
        // Heads in chunks whose [t, t] score matrices total <= 4 MiB: at the official size (t =
        // 1024, 14 heads) one chunk would be 59 MB, allocated fresh (page faults) three times per
        // block and far outside the cache. Same arithmetic per head either way.
        let chunk = ((1usize << 20) / (t * t)).clamp(1, n);
        let mut parts = Vec::with_capacity(n.div_ceil(chunk));
        for start in (0..n).step_by(chunk) {
            let qkv = qkv.narrow(0, start, chunk.min(n - start))?;
            let q = (qkv.narrow(1, 0, d)? * scale)?;
            let k = (qkv.narrow(1, d, d)? * scale)?;
            let v = qkv.narrow(1, 2 * d, d)?;
            // weight[t,s] = sum_c q[c,t] k[c,s]; softmax over s.
            let weight = softmax_last_dim(&q.t()?.matmul(&k)?)?;
            // a[c,t] = sum_s weight[t,s] v[c,s].
            parts.push(v.matmul(&weight.t()?)?);
        }
        let a = Tensor::cat(&parts, 0)?.reshape((b, c, t))?;
        (x + self.proj_out.forward(&a)?)?.reshape((b, c, h, w))
    }
}

/// `[ResBlock(in -> out)]`, plus an attention block over `out` channels where the
/// downsampling factor `ds` is listed: the head of every input and output block.
fn res_and_attention(
    cfg: &UNetConfig,
    in_ch: usize,
    out_ch: usize,
    ds: usize,
    vb: &VarBuilder,
) -> Result<Vec<Layer>> {
    let ted = cfg.time_embed_dim();
    let mut layers = vec![Layer::Res(Box::new(ResBlock::new(
        in_ch,
        ted,
        out_ch,
        vb.pp("0"),
    )?))];
    if cfg.attention_resolutions.contains(&ds) {
        layers.push(Layer::Attn(AttentionBlock::new(
            out_ch,
            cfg.heads_for(out_ch)?,
            vb.pp("1"),
        )?));
    }
    Ok(layers)
}

#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Res(Box<ResBlock>),
    Attn(AttentionBlock),
    /// `op`: 3x3 stride 2, padding 1.
    Down(Conv2d),
    /// nearest x2, then `conv` 3x3.
    Up(Conv2d),
}

/// `TimestepEmbedSequential`: layers run in order, ResBlocks also get the embedding.
#[derive(Debug)]
struct Block(Vec<Layer>);

impl Block {
    fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.0 {
            h = match layer {
                Layer::Conv(c) | Layer::Down(c) => c.forward(&h)?,
                Layer::Res(r) => r.forward(&h, emb_act)?,
                Layer::Attn(a) => a.forward(&h)?,
                Layer::Up(c) => c.forward(&upsample_nearest2x(&h)?)?,
            };
        }
        Ok(h)
    }
}

#[derive(Debug)]
pub struct UNetModel {
    time_embed_0: Linear,
    time_embed_2: Linear,
    input_blocks: Vec<Block>,
    middle_block: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    model_channels: usize,
    in_channels: usize,
    /// Spatial sides must be multiples of this (one halving per level but the last).
    size_multiple: usize,
}

impl UNetModel {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        if cfg.channel_mult.is_empty() {
            candle_core::bail!("UNet config: channel_mult is empty")
        }
        let mc = cfg.model_channels;
        let ted = cfg.time_embed_dim();
        let time_embed_0 = linear(mc, ted, vb.pp("time_embed.0"))?;
        let time_embed_2 = linear(ted, ted, vb.pp("time_embed.2"))?;

        let vb_in = vb.pp("input_blocks");
        let mut input_blocks = vec![Block(vec![Layer::Conv(conv3x3(
            cfg.in_channels,
            mc,
            vb_in.pp("0.0"),
        )?)])];
        let mut chans = vec![mc];
        let mut ch = mc;
        let mut ds = 1;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let vb_b = vb_in.pp(input_blocks.len());
                let layers = res_and_attention(cfg, ch, mult * mc, ds, &vb_b)?;
                ch = mult * mc;
                input_blocks.push(Block(layers));
                chans.push(ch);
            }
            if level + 1 != cfg.channel_mult.len() {
                let vb_b = vb_in.pp(input_blocks.len());
                input_blocks.push(Block(vec![Layer::Down(conv2d(
                    ch,
                    ch,
                    3,
                    2,
                    1,
                    vb_b.pp("0.op"),
                )?)]));
                chans.push(ch);
                ds *= 2;
            }
        }

        let vb_m = vb.pp("middle_block");
        let middle_block = Block(vec![
            Layer::Res(Box::new(ResBlock::new(ch, ted, ch, vb_m.pp("0"))?)),
            Layer::Attn(AttentionBlock::new(ch, cfg.heads_for(ch)?, vb_m.pp("1"))?),
            Layer::Res(Box::new(ResBlock::new(ch, ted, ch, vb_m.pp("2"))?)),
        ]);

        let vb_out = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let vb_b = vb_out.pp(output_blocks.len());
                let Some(ich) = chans.pop() else {
                    candle_core::bail!("UNet: more output blocks than skip connections")
                };
                let mut layers = res_and_attention(cfg, ch + ich, mc * mult, ds, &vb_b)?;
                ch = mc * mult;
                if level != 0 && i == cfg.num_res_blocks {
                    let idx = layers.len();
                    layers.push(Layer::Up(conv3x3(ch, ch, vb_b.pp(format!("{idx}.conv")))?));
                    ds /= 2;
                }
                output_blocks.push(Block(layers));
            }
        }

        Ok(Self {
            time_embed_0,
            time_embed_2,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: group_norm(ch, GN_EPS, vb.pp("out.0"))?,
            out_conv: conv3x3(mc, cfg.out_channels, vb.pp("out.2"))?,
            model_channels: mc,
            in_channels: cfg.in_channels,
            size_multiple: 1 << (cfg.channel_mult.len() - 1),
        })
    }

    /// eps prediction for latent `x` `[B,C,h,w]` at integer timesteps `t` `[B]` (u32/i64/f32).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_with_taps(x, t, &mut |_, _| {})
    }

    /// [`Self::forward`], reporting intermediates to `tap`: "t_emb", "emb", "input_blocks.{i}",
    /// "middle_block", "output_blocks.{i}".
    pub fn forward_with_taps(
        &self,
        x: &Tensor,
        t: &Tensor,
        tap: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "UNet input has {c} channels, the model expects {}",
                self.in_channels
            )
        }
        if !h.is_multiple_of(self.size_multiple) || !w.is_multiple_of(self.size_multiple) {
            candle_core::bail!(
                "UNet input {h}x{w} is not a multiple of {} on each side",
                self.size_multiple
            )
        }
        let t = match t.dims() {
            [n] if *n == b => t.clone(),
            [1] | [] => t.reshape(1)?.broadcast_as(b)?,
            d => candle_core::bail!("UNet timesteps have shape {d:?}, expected [{b}]"),
        };
        // Input and output keep the caller's dtype; the network runs in the weights' dtype.
        let dtype = self.out_conv.weight().dtype();
        let t_emb = timestep_embedding(&t, self.model_channels)?.to_dtype(dtype)?;
        tap("t_emb", &t_emb);
        let emb = self
            .time_embed_2
            .forward(&silu(&self.time_embed_0.forward(&t_emb)?)?)?;
        tap("emb", &emb);
        let emb_act = silu(&emb)?;

        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.to_dtype(dtype)?;
        for (i, block) in self.input_blocks.iter().enumerate() {
            h = block.forward(&h, &emb_act)?;
            tap(&format!("input_blocks.{i}"), &h);
            skips.push(h.clone());
        }
        h = self.middle_block.forward(&h, &emb_act)?;
        tap("middle_block", &h);
        for (i, block) in self.output_blocks.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                candle_core::bail!("UNet: more output blocks than skip connections")
            };
            h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb_act)?;
            tap(&format!("output_blocks.{i}"), &h);
        }
        self.out_conv
            .forward(&self.out_norm.forward_silu(&h)?)?
            .to_dtype(x.dtype())
    }
}
