//! Why a model could not be loaded.
use std::path::{Path, PathBuf};

/// Why a model could not be loaded. Every variant names the file or keys involved.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not found")]
    NotFound(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: empty file (0 bytes)")]
    EmptyFile(PathBuf),
    #[error("{path}: no model weights found{detail}")]
    NoWeights { path: PathBuf, detail: String },
    #[error("{path}: not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error("{path}: truncated or damaged: {reason}")]
    Truncated { path: PathBuf, reason: String },
    #[error("{path}: not a PyTorch checkpoint: {reason}")]
    NotCheckpoint { path: PathBuf, reason: String },
    #[error("{path}: unreadable pickle (nothing in it was executed): {reason}")]
    Pickle { path: PathBuf, reason: String },
    #[error("{path}: not MIDM weights: {reason}")]
    UnknownWeights { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Ambiguous { path: PathBuf, reason: String },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "no correspondence weights (seg_enc.*, real_enc.*, iter_enc.*, layer.*, phi.*, theta.*) in {}: \
         an LDM checkpoint alone is not a MIDM; add the MIDMs fine-tuned .pth (or a safetensors export)",
        paths(.files)
    )]
    NoCorrespondence { files: Vec<PathBuf> },
    #[error("{} missing weight(s) in {}: {}{}", .keys.len(), paths(.files), list(.keys), renamed_hint(.unexpected))]
    MissingKeys {
        files: Vec<PathBuf>,
        keys: Vec<String>,
        unexpected: Vec<String>,
    },
    #[error("{} unexpected weight(s) of a needed module in {}: {}", .keys.len(), paths(.files), list(.keys))]
    UnexpectedKeys {
        files: Vec<PathBuf>,
        keys: Vec<String>,
    },
    #[error("{}: shape mismatch for {key}: the config needs {expected:?}, the file has {found:?}{}", .file.display(), more_hint(*.more))]
    ShapeMismatch {
        file: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        more: usize,
    },
    #[error("building the networks failed: {reason}")]
    Build { reason: String },
}

pub(crate) fn paths(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn renamed_hint(unexpected: &[String]) -> String {
    if unexpected.is_empty() {
        String::new()
    } else {
        format!(
            "; present but not expected (renamed?): {}",
            list(unexpected)
        )
    }
}

fn more_hint(more: usize) -> String {
    if more > 0 {
        format!(" (and {more} more mismatched keys)")
    } else {
        String::new()
    }
}

pub(crate) fn list(keys: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s += &format!(", ... ({} more)", keys.len() - SHOWN);
    }
    s
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> LoadError {
    if e.kind() == std::io::ErrorKind::NotFound {
        LoadError::NotFound(path.to_path_buf())
    } else {
        LoadError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}
