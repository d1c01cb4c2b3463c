//! Finding and loading weights: safetensors and the authors' own PyTorch files
//! (`.ckpt` / `.pth`, zip + pickle, read without executing any pickled code), plus the LDM
//! `config.yaml`. TODO(helper: checkpoint): implement.
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::model::MidmModel;

/// Why a model could not be loaded. Every variant names the file or keys involved.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not found")]
    NotFound(PathBuf),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Load a model from a folder (holding a config and one or more weight files) or a single file.
pub fn load_model(_path: &Path, _device: &Device) -> Result<MidmModel, LoadError> {
    todo!()
}
