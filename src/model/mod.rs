//! The MIDM networks. Every module follows candle-transformers' style: a Config struct, a
//! `new(vb, &cfg)` whose VarBuilder paths mirror the official checkpoint keys, a plain `forward`.
//!
//! Canonical key space (the one of a MIDMs fine-tuning checkpoint, see `tests/fixtures/parity`):
//! - `diff_model.first_stage_model.*`: autoencoder ([`autoencoder`]);
//! - `diff_model.model.diffusion_model.*`: UNet denoiser ([`unet`]);
//! - `diff_model.{betas, alphas_cumprod, ...}`: DDPM schedule buffers (recomputed, see `sampling::schedule`);
//! - `seg_enc.*`, `real_enc.*`, `iter_enc.*`, `layer.*`, `phi.*`, `theta.*`: correspondence ([`correspondence`]).

pub mod autoencoder;
pub mod correspondence;
pub mod kernels;
pub mod layers;
pub mod ops;
pub mod unet;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use autoencoder::{Autoencoder, AutoencoderConfig, AutoencoderKind};
pub use correspondence::{Correspondence, CorrespondenceConfig};
pub use ops::LabelDownsample;
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
    /// How the condition labels reach the latent grid (`midms.label_downsample`; nearest
    /// sampling, the official behaviour, unless a model's config says otherwise).
    #[serde(default)]
    pub label_downsample: LabelDownsample,
    /// `midms.region_matching` (our own models; off for the authors' checkpoints): a cell inside
    /// the drawn shape matches only exemplar cells inside the exemplar's shape, one outside only
    /// cells outside it ([`crate::sampling::regions`]).
    #[serde(default)]
    pub region_matching: bool,
    /// `midms.background_latent` (our own models): with region matching, the latent that cells
    /// outside the sketch take when the exemplar has no outside ([`crate::sampling::regions`]).
    #[serde(default)]
    pub background_latent: Option<Vec<f32>>,
    /// `midms.region_open_strokes` (our own models, with region matching): cells an open stroke
    /// crosses count as inside the drawn shape ([`crate::sampling::regions::target_cells`]).
    #[serde(default)]
    pub region_open_strokes: bool,
    /// `midms.region_keep_outside` (our own models, with region matching): at a re-matching the
    /// cells outside the drawn shape keep the re-warp whatever the cycle check says
    /// ([`crate::sampling::regions::Regions::keep_outside`]).
    #[serde(default)]
    pub region_keep_outside: bool,
    /// `midms.layout_prior` (our own models, with region matching; model v1.13): a pair of cells
    /// inside the drawn shape and the exemplar's loses this times the squared distance between
    /// their places within their shapes' boxes from its correlation
    /// ([`crate::sampling::regions::layout_positions`]); 0: none.
    #[serde(default)]
    pub layout_prior: f32,
    /// `midms.colour_layout_prior` (our own models, with region matching and colour transfer):
    /// the same prior in the colour warp, from the same first correlation; 0: none.
    #[serde(default)]
    pub colour_layout_prior: f32,
    /// `midms.frame_drawing` (our own models, one-channel line labels; model v1.14): a drawing
    /// whose box is small is scaled up until its longer side is this share of the canvas,
    /// translated, and its image mapped back ([`crate::sampling::frame`]); 0: off.
    #[serde(default)]
    pub frame_drawing: f64,
    /// `midms.frame_exemplar` (our own models, one-channel line labels; model v1.15): an
    /// exemplar whose glyph is small is scaled up the same way before anything is made of it
    /// ([`crate::sampling::frame::frame_exemplars`]); 0: off.
    #[serde(default)]
    pub frame_exemplar: f64,
    /// `midms.close_gaps` (our own models, one-channel line labels; model v1.17): a gap up to
    /// twice this many pixels in a drawing's outline is closed before anything is made of the
    /// drawing ([`crate::sampling::gaps`]); 0: off.
    #[serde(default)]
    pub close_gaps: u8,
    /// `midms.close_wide_gaps` (our own models; model v1.18): `[radius, depth]`, after
    /// `close_gaps` a gap up to twice `radius` px is closed where it encloses a part deeper than
    /// `depth` (a large region, not the space between strokes drawn open); `None`: off.
    #[serde(default)]
    pub close_wide_gaps: Option<[u8; 2]>,
    /// `midms.clear_exemplar_ground` (our own models; model v1.16): an exemplar's plain coloured
    /// ground is made white before anything is made of it ([`crate::sampling::ground`]).
    #[serde(default)]
    pub clear_exemplar_ground: bool,
    /// `midms.colour_transfer` (our own models; off for the authors' checkpoints): the exemplar's
    /// chroma, warped by the first matching, replaces the output's where it is not white
    /// ([`crate::sampling::colour`]).
    #[serde(default)]
    pub colour_transfer: bool,
    /// `midms.colour_temperature` (our own models, with colour transfer): the softmax temperature
    /// of the chroma's warp, sharper than the latent's; `None`: the matching's temperature.
    #[serde(default)]
    pub colour_temperature: Option<f64>,
    /// `midms.colour_gamut` (our own models, with colour transfer): how a transferred colour
    /// outside sRGB comes back into it; absent, each channel is clamped (models up to v1.10).
    #[serde(default)]
    pub colour_gamut: crate::sampling::colour::ColourGamut,
    /// `midms.refine_eta` (our own models): the refinement's DDIM eta in place of the sampler
    /// options' (the authors' 1: a stochastic pass); `None`: the options'.
    #[serde(default)]
    pub refine_eta: Option<f64>,
    /// `midms.unet_condition` (our own models; the authors' UNet is unconditional): the UNet
    /// takes the drawing on the latent grid (`seg_enc`'s input, [`Self::condition_on_grid`]) as
    /// [`UNET_CONDITION_CHANNELS`] extra input channels after the latent.
    #[serde(default)]
    pub unet_condition: bool,
}

/// Input channels a UNet with `midms.unet_condition` takes beside the latent: the line label and
/// the filled drawing on the latent grid (the trainer's `train.midm.UNET_CONDITION_CHANNELS`).
pub const UNET_CONDITION_CHANNELS: usize = 2;

impl MidmConfig {
    /// The closing passes the model makes over a drawing (`close_gaps`, then
    /// `close_wide_gaps`); empty: it closes none.
    pub fn gap_closings(&self) -> Vec<crate::sampling::gaps::GapClosing> {
        use crate::sampling::gaps::GapClosing;
        let small = (self.close_gaps > 0).then(|| GapClosing::small(self.close_gaps));
        let wide = self
            .close_wide_gaps
            .map(|[radius, depth]| GapClosing { radius, depth });
        small.into_iter().chain(wide).collect()
    }

    /// Latent side: image size divided by the autoencoder's downsampling factor.
    pub fn latent_size(&self) -> usize {
        self.image_size / self.autoencoder.downsample_factor()
    }

    /// `condition` [B, label_nc, H, W] on the latent grid: (`seg_enc`'s input, the label the
    /// trunk takes), by the model's `label_downsample` and `label_fill`.
    pub fn condition_on_grid(&self, condition: &Tensor) -> Result<(Tensor, Tensor)> {
        let l = self.latent_size();
        ops::condition_on_grid(
            condition,
            l,
            l,
            self.label_downsample,
            self.correspondence.label_fill,
        )
    }

    /// Number of condition channels (1 for plain edge maps, 15 for the CelebA-HQ edge label).
    pub fn label_nc(&self) -> usize {
        self.correspondence.label_nc
    }
}

/// Floating-point format of the UNet and autoencoder weights and activations.
///
/// Only those two networks run in half precision: they carry nearly all of the FLOPs (the
/// autoencoder's encoder excepted: it runs once and its latent feeds the correlation). The
/// correspondence networks, the correlation / softmax (temperature 0.005 amplifies any rounding
/// of the correlation 200-fold), the VQ codebook search, the cycle check and the DDIM arithmetic
/// stay in float32, and every network boundary converts back to float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// All networks of a MIDM, loaded and ready for inference.
pub struct MidmModel {
    pub config: MidmConfig,
    pub autoencoder: Autoencoder,
    pub unet: UNetModel,
    pub correspondence: Correspondence,
    pub device: Device,
    pub precision: Precision,
}

impl MidmModel {
    /// `vb` is rooted at the canonical key space (see the module docs). Float32 throughout.
    pub fn new(vb: VarBuilder, config: &MidmConfig) -> Result<Self> {
        Self::with_precision(vb, config, Precision::F32)
    }

    /// [`Self::new`] with the UNet and the autoencoder in `precision` (see [`Precision`]).
    pub fn with_precision(
        vb: VarBuilder,
        config: &MidmConfig,
        precision: Precision,
    ) -> Result<Self> {
        if precision == Precision::Bf16 && vb.device().is_cpu() {
            // Found by running it: the first attention block fails with "unsupported dtype BF16
            // for op matmul". Say so before loading instead.
            candle_core::bail!("bf16 needs a CUDA device: candle's CPU matmul has no bf16 kernel (use f16 or f32 on the CPU)")
        }
        let vb = vb.set_dtype(DType::F32);
        let half = vb.clone().set_dtype(precision.dtype());
        let autoencoder =
            Autoencoder::new(half.pp("diff_model.first_stage_model"), &config.autoencoder)?;
        let unet = UNetModel::new(half.pp("diff_model.model.diffusion_model"), &config.unet)?;
        let correspondence = Correspondence::new(vb.clone(), &config.correspondence)?;
        Ok(Self {
            config: config.clone(),
            autoencoder,
            unet,
            correspondence,
            device: vb.device().clone(),
            precision,
        })
    }
}

/// The largest absolute difference between two tensors of one shape (the model's unit tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}
