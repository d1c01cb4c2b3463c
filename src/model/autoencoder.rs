//! LDM first-stage autoencoder (`VQModelInterface` for f=4 models, `AutoencoderKL` for f=8).
//! Keys under `diff_model.first_stage_model`: `encoder.*`, `decoder.*`, `quant_conv.*`,
//! `post_quant_conv.*`, `quantize.embedding.weight` (VQ only).
//! TODO(helper: nets): implement.
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

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
        1 << (self.ch_mult.len() - 1)
    }
}

pub struct Autoencoder {}

impl Autoencoder {
    pub fn new(_vb: VarBuilder, _cfg: &AutoencoderConfig) -> Result<Self> {
        todo!()
    }
    /// Image [B,3,H,W] in [-1,1] -> continuous latent [B,embed_dim,h,w] (no quantisation).
    pub fn encode(&self, _x: &Tensor) -> Result<Tensor> {
        todo!()
    }
    /// Latent -> image; VQ models quantise first.
    pub fn decode(&self, _z: &Tensor) -> Result<Tensor> {
        todo!()
    }
}
