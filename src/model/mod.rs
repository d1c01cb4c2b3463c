//! The MIDM networks. Every module follows candle-transformers' style: a Config struct, a
//! `new(vb, &cfg)` whose VarBuilder paths mirror the official checkpoint keys, a plain `forward`.
//!
//! Canonical key space (the one of a MIDMs fine-tuning checkpoint, see `../shared/parity`):
//! - `diff_model.first_stage_model.*`: autoencoder ([`autoencoder`]);
//! - `diff_model.model.diffusion_model.*`: UNet denoiser ([`unet`]);
//! - `diff_model.{betas, alphas_cumprod, ...}`: DDPM schedule buffers (recomputed, see `sampling::schedule`);
//! - `seg_enc.*`, `real_enc.*`, `iter_enc.*`, `layer.*`, `phi.*`, `theta.*`: correspondence ([`correspondence`]).

pub mod autoencoder;
pub mod conv;
pub mod correspondence;
pub mod layers;
pub mod unet;

use candle_core::{Device, Result};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use autoencoder::{Autoencoder, AutoencoderConfig, AutoencoderKind};
pub use correspondence::{Correspondence, CorrespondenceConfig};
pub use unet::{UNetConfig, UNetModel};

/// DDPM noise schedule parameters (LDM `model.params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdpmConfig {
    pub timesteps: usize,
    pub linear_start: f64,
    pub linear_end: f64,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            timesteps: 1000,
            linear_start: 0.0015,
            linear_end: 0.0195,
        }
    }
}

/// Everything needed to build a [`MidmModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MidmConfig {
    /// Image side in pixels (square), e.g. 256 for the official CelebA-HQ model.
    pub image_size: usize,
    pub autoencoder: AutoencoderConfig,
    pub unet: UNetConfig,
    pub ddpm: DdpmConfig,
    pub correspondence: CorrespondenceConfig,
}

impl MidmConfig {
    /// Latent side: image size divided by the autoencoder's downsampling factor.
    pub fn latent_size(&self) -> usize {
        self.image_size / self.autoencoder.downsample_factor()
    }

    /// Number of condition channels (1 for plain edge maps, 15 for the CelebA-HQ edge label).
    pub fn label_nc(&self) -> usize {
        self.correspondence.label_nc
    }
}

/// All networks of a MIDM, loaded and ready for inference.
pub struct MidmModel {
    pub config: MidmConfig,
    pub autoencoder: Autoencoder,
    pub unet: UNetModel,
    pub correspondence: Correspondence,
    pub device: Device,
}

impl MidmModel {
    /// `vb` is rooted at the canonical key space (see the module docs).
    pub fn new(vb: VarBuilder, config: &MidmConfig) -> Result<Self> {
        let autoencoder =
            Autoencoder::new(vb.pp("diff_model.first_stage_model"), &config.autoencoder)?;
        let unet = UNetModel::new(vb.pp("diff_model.model.diffusion_model"), &config.unet)?;
        let correspondence = Correspondence::new(vb.clone(), &config.correspondence)?;
        Ok(Self {
            config: config.clone(),
            autoencoder,
            unet,
            correspondence,
            device: vb.device().clone(),
        })
    }
}
