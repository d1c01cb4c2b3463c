//! LDM `openaimodel.UNetModel` (keys under `diff_model.model.diffusion_model`).
//! TODO(helper: nets): implement.
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

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

pub struct UNetModel {}

impl UNetModel {
    pub fn new(_vb: VarBuilder, _cfg: &UNetConfig) -> Result<Self> {
        todo!()
    }
    /// eps prediction for latent `x` [B,C,h,w] at integer timesteps `t` [B] (u32/i64/f32).
    pub fn forward(&self, _x: &Tensor, _t: &Tensor) -> Result<Tensor> {
        todo!()
    }
}
