//! Correspondence networks: condition encoder `seg_enc`, exemplar encoder `real_enc`,
//! iteration encoder `iter_enc` (SPADE on the condition features), the shared residual trunk
//! `layer` and the 1x1 projections `theta` (target side) and `phi` (reference side).
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Widths of the correspondence networks (official: n_ch 256, ndf 64, spade_nhidden 128).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceConfig {
    /// Condition label channels (15 for the CelebA-HQ edge label, 1 for plain edges).
    pub label_nc: usize,
    /// Latent channels of the autoencoder (input of `real_enc` / `iter_enc`).
    pub latent_channels: usize,
    /// Matching feature width `N_CH`.
    pub n_ch: usize,
    /// Base conv width `ndf` of the encoders (layer widths ndf, 4 ndf, 8 ndf).
    pub ndf: usize,
    /// Hidden width of SPADE's shared MLP.
    pub spade_nhidden: usize,
    /// Residual blocks in the trunk `layer`.
    pub trunk_blocks: usize,
}

pub struct Correspondence {}

impl Correspondence {
    pub fn new(_vb: VarBuilder, _cfg: &CorrespondenceConfig) -> Result<Self> {
        todo!()
    }
}

#[allow(unused)]
fn _unused(_t: &Tensor) {}
