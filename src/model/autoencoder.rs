//! LDM first-stage autoencoder (`VQModelInterface` for f=4 models, `AutoencoderKL` for f=8).
//! Keys under `diff_model.first_stage_model`: `encoder.*`, `decoder.*`, `quant_conv.*`,
//! `post_quant_conv.*`, `quantize.embedding.weight` (VQ only).
//!
//! Follows LDM's `modules/diffusionmodules/model.py` (`Encoder`, `Decoder`, `ResnetBlock`,
//! `AttnBlock`) and `VectorQuantizer2`, operation for operation where rounding matters.
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{
    conv2d, conv3x3, group_norm, softmax_last_dim, upsample_nearest2x, Conv1x1, Conv2d, GroupNorm,
};

/// `Normalize` in LDM's model.py: GroupNorm(32, eps=1e-6, affine).
const GN_EPS: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AutoencoderKind {
    /// Vector-quantised (VQModelInterface): encode = pre-quantisation latent, decode quantises first.
    Vq { n_embed: usize },
    /// KL (AutoencoderKL): encode = posterior mean, decode = plain decoder.
    Kl,
}

/// LDM `ddconfig` plus the first-stage parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderConfig {
    pub kind: AutoencoderKind,
    pub embed_dim: usize,
    pub z_channels: usize,
    pub double_z: bool,
    pub in_channels: usize,
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    /// Image resolution (`ddconfig.resolution`).
    pub resolution: usize,
}

impl AutoencoderConfig {
    pub fn downsample_factor(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }
}

/// `ResnetBlock` without time embedding (`temb_channels = 0`); dropout is the identity at
/// inference.
#[derive(Debug)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv1x1>,
}

impl ResnetBlock {
    fn new(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let nin_shortcut = if in_channels != out_channels {
            Some(Conv1x1::conv2d(
                in_channels,
                out_channels,
                vb.pp("nin_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(in_channels, GN_EPS, vb.pp("norm1"))?,
            conv1: conv3x3(in_channels, out_channels, vb.pp("conv1"))?,
            norm2: group_norm(out_channels, GN_EPS, vb.pp("norm2"))?,
            conv2: conv3x3(out_channels, out_channels, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Single-head spatial self-attention (`AttnBlock`, "vanilla"). `q`, `k`, `v` are 1x1 convs over
/// the same input; they are stacked into one GEMM at load time.
#[derive(Debug)]
struct AttnBlock {
    norm: GroupNorm,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    channels: usize,
}

impl AttnBlock {
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let q = Conv1x1::conv2d(channels, channels, vb.pp("q"))?;
        let k = Conv1x1::conv2d(channels, channels, vb.pp("k"))?;
        let v = Conv1x1::conv2d(channels, channels, vb.pp("v"))?;
        Ok(Self {
            norm: group_norm(channels, GN_EPS, vb.pp("norm"))?,
            qkv: Conv1x1::stack(&[q, k, v])?,
            proj_out: Conv1x1::conv2d(channels, channels, vb.pp("proj_out"))?,
            channels,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x)?.reshape((b, c, h * w))?)?;
        let q = qkv.narrow(1, 0, c)?;
        let k = qkv.narrow(1, c, c)?;
        let v = qkv.narrow(1, 2 * c, c)?;
        let t = h * w;
        // Query positions in chunks whose [rows, t] scores are <= 4 MiB: at the official size
        // (t = 4096) the whole score matrix is 67 MB, and the scaled copy and the softmax two
        // more: ~200 MB of the peak memory of encode and decode. Same arithmetic per row.
        let rows = ((1usize << 20) / t).clamp(1, t);
        let q_t = transposed_for_row_chunks(&q, !x.device().is_cpu())?;
        let mut parts = Vec::with_capacity(t.div_ceil(rows));
        for i0 in (0..t).step_by(rows) {
            let q = q_t.narrow(1, i0, rows.min(t - i0))?;
            // w[i,j] = sum_c q[c,i] k[c,j], scaled after the product as the reference does.
            let attn = (q.matmul(&k)? * (self.channels as f64).powf(-0.5))?;
            let attn = softmax_last_dim(&attn)?;
            // out[c,i] = sum_j v[c,j] attn[i,j]; matmul reads the transposed view without a copy.
            parts.push(v.matmul(&attn.t()?)?);
        }
        let out = Tensor::cat(&parts, 2)?;
        let out = self.proj_out.forward(&out)?.reshape((b, c, h, w))?;
        x + out
    }
}

/// q [B, C, T] as [B, T, C], to be cut into row chunks that are a matmul's left operand. On the
/// CPU a strided view (no copy; gemm reads any strides). cuBLAS, behind candle's CUDA matmul,
/// takes a column-major operand only when its leading dimension is its own row count, which a
/// chunk of the view is not (its stride is all T rows: "matmul is only supported for contiguous
/// tensors" at the official size, T = 4096 in chunks of 256, on an H200): there one contiguous copy.
fn transposed_for_row_chunks(q: &Tensor, copy: bool) -> Result<Tensor> {
    let q_t = q.transpose(1, 2)?;
    if copy {
        q_t.contiguous()
    } else {
        Ok(q_t)
    }
}

#[derive(Debug)]
struct DownLevel {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    /// `downsample.conv`: 3x3, stride 2, no padding (the input is padded right/bottom first).
    downsample: Option<Conv2d>,
}

/// LDM `Encoder`: image -> `z_channels` (or `2 z_channels` with `double_z`) at 1/f resolution.
#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid_block_1: ResnetBlock,
    mid_attn_1: AttnBlock,
    mid_block_2: ResnetBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    in_channels: usize,
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderConfig) -> Result<Self> {
        let levels = cfg.ch_mult.len();
        let conv_in = conv3x3(cfg.in_channels, cfg.ch, vb.pp("conv_in"))?;
        let mut curr_res = cfg.resolution;
        let mut block_in = cfg.ch;
        let mut down = Vec::with_capacity(levels);
        for (i, &mult) in cfg.ch_mult.iter().enumerate() {
            let vb_l = vb.pp(format!("down.{i}"));
            let block_out = cfg.ch * mult;
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks);
            let mut attns = Vec::new();
            for j in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(
                    block_in,
                    block_out,
                    vb_l.pp(format!("block.{j}")),
                )?);
                block_in = block_out;
                if cfg.attn_resolutions.contains(&curr_res) {
                    attns.push(AttnBlock::new(block_in, vb_l.pp(format!("attn.{j}")))?);
                }
            }
            let downsample = if i + 1 != levels {
                curr_res /= 2;
                Some(conv2d(
                    block_in,
                    block_in,
                    3,
                    2,
                    0,
                    vb_l.pp("downsample.conv"),
                )?)
            } else {
                None
            };
            down.push(DownLevel {
                blocks,
                attns,
                downsample,
            });
        }
        let vb_m = vb.pp("mid");
        let z_out = if cfg.double_z {
            2 * cfg.z_channels
        } else {
            cfg.z_channels
        };
        Ok(Self {
            conv_in,
            down,
            mid_block_1: ResnetBlock::new(block_in, block_in, vb_m.pp("block_1"))?,
            mid_attn_1: AttnBlock::new(block_in, vb_m.pp("attn_1"))?,
            mid_block_2: ResnetBlock::new(block_in, block_in, vb_m.pp("block_2"))?,
            norm_out: group_norm(block_in, GN_EPS, vb.pp("norm_out"))?,
            conv_out: conv3x3(block_in, z_out, vb.pp("conv_out"))?,
            in_channels: cfg.in_channels,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "autoencoder input has {c} channels, the model expects {}",
                self.in_channels
            )
        }
        let mut h = self.conv_in.forward(x)?;
        for level in &self.down {
            for (j, block) in level.blocks.iter().enumerate() {
                h = block.forward(&h)?;
                if let Some(attn) = level.attns.get(j) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(conv) = &level.downsample {
                // torch.nn.functional.pad(x, (0, 1, 0, 1)): one zero column right, one row below.
                let padded = h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
                h = conv.forward(&padded)?;
            }
        }
        let h = self.mid_block_1.forward(&h)?;
        let h = self.mid_attn_1.forward(&h)?;
        let h = self.mid_block_2.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

#[derive(Debug)]
struct UpLevel {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    /// `upsample.conv`: nearest x2 then this 3x3 conv.
    upsample: Option<Conv2d>,
}

/// LDM `Decoder`: `z_channels` latent -> image. No tanh, no clamp.
#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block_1: ResnetBlock,
    mid_attn_1: AttnBlock,
    mid_block_2: ResnetBlock,
    /// Indexed by level as the keys `up.{i}` are (0 = full resolution); run from the last.
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderConfig) -> Result<Self> {
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut curr_res = cfg.resolution >> (levels - 1);
        let conv_in = conv3x3(cfg.z_channels, block_in, vb.pp("conv_in"))?;
        let vb_m = vb.pp("mid");
        let mid_block_1 = ResnetBlock::new(block_in, block_in, vb_m.pp("block_1"))?;
        let mid_attn_1 = AttnBlock::new(block_in, vb_m.pp("attn_1"))?;
        let mid_block_2 = ResnetBlock::new(block_in, block_in, vb_m.pp("block_2"))?;
        let mut up = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let vb_l = vb.pp(format!("up.{i}"));
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks + 1);
            let mut attns = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(
                    block_in,
                    block_out,
                    vb_l.pp(format!("block.{j}")),
                )?);
                block_in = block_out;
                if cfg.attn_resolutions.contains(&curr_res) {
                    attns.push(AttnBlock::new(block_in, vb_l.pp(format!("attn.{j}")))?);
                }
            }
            let upsample = if i != 0 {
                curr_res *= 2;
                Some(conv3x3(block_in, block_in, vb_l.pp("upsample.conv"))?)
            } else {
                None
            };
            up.push(UpLevel {
                blocks,
                attns,
                upsample,
            });
        }
        up.reverse();
        Ok(Self {
            conv_in,
            mid_block_1,
            mid_attn_1,
            mid_block_2,
            up,
            norm_out: group_norm(block_in, GN_EPS, vb.pp("norm_out"))?,
            conv_out: conv3x3(block_in, cfg.out_ch, vb.pp("conv_out"))?,
        })
    }

    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let h = self.mid_block_1.forward(&h)?;
        let h = self.mid_attn_1.forward(&h)?;
        let mut h = self.mid_block_2.forward(&h)?;
        for level in self.up.iter().rev() {
            for (j, block) in level.blocks.iter().enumerate() {
                h = block.forward(&h)?;
                if let Some(attn) = level.attns.get(j) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(conv) = &level.upsample {
                h = conv.forward(&upsample_nearest2x(&h)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// Nearest-codebook quantiser (`VectorQuantizer2`, eval mode).
#[derive(Debug)]
pub struct VectorQuantizer {
    /// `[n_embed, embed_dim]`.
    embedding: Tensor,
    /// `sum_d e_jd^2`, `[n_embed]`, precomputed (the reference recomputes the same values).
    embedding_sq: Tensor,
}

impl VectorQuantizer {
    pub fn new(n_embed: usize, embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        let embedding = vb.get((n_embed, embed_dim), "embedding.weight")?;
        let embedding_sq = embedding.sqr()?.sum(1)?;
        Ok(Self {
            embedding,
            embedding_sq,
        })
    }

    /// `z` `[B,C,h,w]` -> (quantised `[B,C,h,w]`, indices `[B,h,w]` as u32).
    ///
    /// d_j = sum(z^2) + sum(e_j^2) - 2 z.e_j, idx = argmin_j d_j, and the output is the
    /// straight-through form z + (e_idx - z) evaluated in the input dtype, which can differ from
    /// e_idx in the last bit.
    pub fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, h, w) = z.dims4()?;
        let (_, e_dim) = self.embedding.dims2()?;
        if c != e_dim {
            candle_core::bail!("quantize: latent has {c} channels, the codebook {e_dim}")
        }
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let z_sq = flat.sqr()?.sum_keepdim(1)?;
        // Latent positions in chunks whose [rows, n_embed] distances are <= 4 MiB: at the
        // official size (4096 positions, 8192 codes) the whole matrix is 134 MB and the
        // expression below makes four of them (~400 MB of decode's peak memory). Same
        // arithmetic per row.
        let (n, n_embed) = (b * h * w, self.embedding_sq.dim(0)?);
        let rows = ((1usize << 20) / n_embed.max(1)).clamp(1, n.max(1));
        let mut parts = Vec::with_capacity(n.div_ceil(rows));
        for r0 in (0..n).step_by(rows) {
            let len = rows.min(n - r0);
            let ze = flat.narrow(0, r0, len)?.matmul(&self.embedding.t()?)?;
            let z_sq = z_sq.narrow(0, r0, len)?;
            let d = (z_sq.broadcast_add(&self.embedding_sq)? - (ze * 2.0)?)?;
            parts.push(d.argmin(1)?);
        }
        let idx = Tensor::cat(&parts, 0)?;
        let e = self.embedding.index_select(&idx, 0)?;
        let q = (&flat + (e - &flat)?)?;
        let q = q
            .reshape((b, h, w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        Ok((q, idx.reshape((b, h, w))?))
    }
}

/// The first stage: `encoder`, `quant_conv`, (`quantize`), `post_quant_conv`, `decoder`.
#[derive(Debug)]
pub struct Autoencoder {
    pub encoder: Encoder,
    pub decoder: Decoder,
    quant_conv: Conv1x1,
    post_quant_conv: Conv1x1,
    quantize: Option<VectorQuantizer>,
    embed_dim: usize,
}

impl Autoencoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderConfig) -> Result<Self> {
        if cfg.ch_mult.is_empty() {
            candle_core::bail!("autoencoder config: ch_mult is empty")
        }
        let (quant_in, quant_out, quantize) = match cfg.kind {
            AutoencoderKind::Vq { n_embed } => {
                // The codebook search stays in float32 whatever the network's dtype: a flipped
                // argmin changes a whole 4x4 (f=4) patch of the output.
                let vq = VectorQuantizer::new(
                    n_embed,
                    cfg.embed_dim,
                    vb.pp("quantize").set_dtype(DType::F32),
                )?;
                (cfg.z_channels, cfg.embed_dim, Some(vq))
            }
            AutoencoderKind::Kl => {
                if !cfg.double_z {
                    candle_core::bail!(
                        "autoencoder config: the KL autoencoder needs double_z: true"
                    )
                }
                (2 * cfg.z_channels, 2 * cfg.embed_dim, None)
            }
        };
        // The encoder stays in float32 whatever the decoder's dtype: its latent feeds the
        // correlation, whose softmax at temperature 0.005 amplifies any rounding 200-fold
        // (measured on the first CPU model, f16 vs f32 image: face 0.49 -> 0.11 / 255 mean abs).
        // It runs once per translation, so this costs little.
        let vb_f32 = vb.clone().set_dtype(DType::F32);
        Ok(Self {
            encoder: Encoder::new(vb_f32.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv: Conv1x1::conv2d(quant_in, quant_out, vb_f32.pp("quant_conv"))?,
            post_quant_conv: Conv1x1::conv2d(
                cfg.embed_dim,
                cfg.z_channels,
                vb.pp("post_quant_conv"),
            )?,
            quantize,
            embed_dim: cfg.embed_dim,
        })
    }

    /// Image `[B,3,H,W]` in [-1,1] -> continuous latent `[B,embed_dim,h,w]` (no quantisation).
    /// KL models return the posterior mean (the first `embed_dim` moments). Input and output are
    /// in the caller's dtype; the networks run in the weights' dtype.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x_in = x.to_dtype(self.encoder.conv_out.weight().dtype())?;
        let moments = self
            .quant_conv
            .forward(&self.encoder.forward(&x_in)?)?
            .to_dtype(x.dtype())?;
        if self.quantize.is_some() {
            Ok(moments)
        } else {
            moments.narrow(1, 0, self.embed_dim)?.contiguous()
        }
    }

    /// Latent -> image; VQ models quantise first (in float32).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match &self.quantize {
            Some(vq) => self
                .decode_no_quant(&vq.forward(&z.to_dtype(DType::F32)?)?.0)?
                .to_dtype(z.dtype()),
            None => self.decode_no_quant(z),
        }
    }

    /// Latent -> image without quantisation (`decoder(post_quant_conv(z))`).
    pub fn decode_no_quant(&self, z: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = z.dims4()?;
        if c != self.embed_dim {
            candle_core::bail!(
                "decode: latent has {c} channels, the autoencoder expects {}",
                self.embed_dim
            )
        }
        let z_in = z.to_dtype(self.dtype())?;
        self.decoder
            .forward(&self.post_quant_conv.forward(&z_in)?)?
            .to_dtype(z.dtype())
    }

    /// VQ models only: (quantised latent, codebook indices `[B,h,w]` u32).
    pub fn quantize(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.quantize {
            Some(vq) => {
                let (q, idx) = vq.forward(&z.to_dtype(DType::F32)?)?;
                Ok((q.to_dtype(z.dtype())?, idx))
            }
            None => candle_core::bail!("quantize: this autoencoder is not vector-quantised"),
        }
    }

    /// Whether the model is vector-quantised.
    pub fn is_vq(&self) -> bool {
        self.quantize.is_some()
    }

    /// Latent channels.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Dtype of the decoder's weights (the encoder's are always float32).
    pub fn dtype(&self) -> DType {
        self.decoder.conv_out.weight().dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// cuBLAS's rule for candle's CUDA matmul, left operand [.., m, k]: rows contiguous (strides
    /// [k, 1]) or columns contiguous (strides [1, m]).
    fn cublas_takes_lhs(x: &Tensor) -> bool {
        let (m, k) = (x.dims()[x.rank() - 2], x.dims()[x.rank() - 1]);
        let st = x.stride();
        let (s_m, s_k) = (st[st.len() - 2], st[st.len() - 1]);
        (s_k == 1 || k == 1) && (s_m == k || m == 1) || (s_k == m || k == 1) && (s_m == 1 || m == 1)
    }

    #[test]
    fn query_chunks_have_a_layout_cublas_takes_and_the_same_scores() -> Result<()> {
        // The official size's shape: T = 4096 positions in chunks of 256, q the first third of qkv.
        let (c, t, rows) = (8, 4096, 256);
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (1, 3 * c, t), &dev)?;
        let (q, k) = (qkv.narrow(1, 0, c)?, qkv.narrow(1, c, c)?);
        let view = transposed_for_row_chunks(&q, false)?.narrow(1, rows, rows)?;
        let copy = transposed_for_row_chunks(&q, true)?.narrow(1, rows, rows)?;
        assert!(
            !cublas_takes_lhs(&view),
            "the CPU view is the layout cuBLAS refused"
        );
        assert!(cublas_takes_lhs(&copy));
        let diff = (view.matmul(&k)? - copy.matmul(&k)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff <= 1e-5, "chunk scores differ by {diff}");
        Ok(())
    }
}
