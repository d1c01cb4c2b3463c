//! Recognising weight files by their keys and mapping every key into the canonical key space
//! (or dropping it, and saying why).
use super::{spec, TensorEntry};

/// What a weight file holds, recognised from its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WeightsKind {
    /// Standalone first stage (`encoder.*`, `decoder.*`, `quantize.*`, `loss.*`, ...), e.g. LDM's vq-f4 `model.ckpt`.
    FirstStage,
    /// LDM model-zoo checkpoint (`model.diffusion_model.*`, `first_stage_model.*`, `model_ema.*`).
    Ldm,
    /// MIDMs checkpoint or export in the canonical key space (`diff_model.*`, `seg_enc.*`, ...).
    Midms,
}

impl WeightsKind {
    pub fn describe(self) -> &'static str {
        match self {
            WeightsKind::FirstStage => "first-stage autoencoder",
            WeightsKind::Ldm => "LDM checkpoint",
            WeightsKind::Midms => "MIDMs weights",
        }
    }
}

/// Recognises a file from its keys; `None` for anything else (e.g. a parity trace).
pub fn classify(entries: &[TensorEntry]) -> Option<WeightsKind> {
    let any = |p: &str| entries.iter().any(|e| e.name.starts_with(p));
    if any("diff_model.") || spec::CORRESPONDENCE.iter().any(|p| any(p)) {
        Some(WeightsKind::Midms)
    } else if any("model.diffusion_model.") {
        Some(WeightsKind::Ldm)
    } else if any("encoder.") && any("decoder.") {
        Some(WeightsKind::FirstStage)
    } else {
        None
    }
}

/// Groups of keys dropped on purpose (as named in the [`LoadReport`](super::report::LoadReport)).
pub const DROP_SAMPLER: &str = "diffusion_sampler.* (the DDIM sampler's duplicate and buffers)";
pub const DROP_EMA: &str = "model_ema.* (EMA copy of the UNet, unused by MIDMs inference)";
pub const DROP_SCHEDULE: &str = "DDPM schedule buffers (recomputed from the config)";
pub const DROP_LOSS: &str = "loss.* (first-stage training loss)";
pub const DROP_OTHER: &str = "other keys no network uses";

const SCHEDULE_BUFFERS: [&str; 12] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

/// What becomes of one key of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFate {
    /// Used, under this canonical key.
    Use(String),
    /// Dropped on purpose (one of the `DROP_*` groups).
    Drop(&'static str),
}

/// Maps a key of a file of `kind` into the canonical key space (that of a MIDMs checkpoint).
pub fn canonical_key(kind: WeightsKind, key: &str) -> KeyFate {
    let c = match kind {
        WeightsKind::Midms => key.to_string(),
        WeightsKind::Ldm => format!("diff_model.{key}"),
        WeightsKind::FirstStage if key.starts_with("loss.") => return KeyFate::Drop(DROP_LOSS),
        WeightsKind::FirstStage => format!("{}{key}", spec::FIRST_STAGE),
    };
    if c.starts_with("diffusion_sampler.") {
        KeyFate::Drop(DROP_SAMPLER)
    } else if c.contains("model_ema") {
        KeyFate::Drop(DROP_EMA)
    } else if c
        .strip_prefix("diff_model.")
        .is_some_and(|b| SCHEDULE_BUFFERS.contains(&b))
    {
        KeyFate::Drop(DROP_SCHEDULE)
    } else if spec::in_needed_module(&c) {
        KeyFate::Use(c)
    } else {
        KeyFate::Drop(DROP_OTHER)
    }
}
