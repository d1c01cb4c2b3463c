//! What a load read, used, overrode and dropped, and the model hash.
use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::error::io_error;
use super::{Format, LoadError, WeightsKind};

/// One weight file of a load, as reported to the user.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: WeightsKind,
    pub format: Format,
    /// Tensors in the file (its state dict for PyTorch files).
    pub tensors: usize,
    /// Tensors the model takes from this file (after later files override earlier ones).
    pub used: usize,
    /// Tensors overridden by a later file.
    pub overridden: usize,
    /// Keys dropped on purpose, per group (`DROP_*`), with a few example keys.
    pub dropped: Vec<(&'static str, usize, Vec<String>)>,
    /// State-dict entries that are not tensors (skipped).
    pub non_tensors: usize,
}

/// What a load used and ignored, for the CLI and the editor to show.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The path the user gave.
    pub source: PathBuf,
    pub config_file: PathBuf,
    /// Weight files in load order (later ones win).
    pub files: Vec<FileReport>,
    /// Files looked at and not used, with the reason.
    pub ignored_files: Vec<(PathBuf, String)>,
    /// Number of tensors the model is built from.
    pub used_keys: usize,
    /// Validated keys the networks did not ask for when built (should be empty; filled by `build`).
    pub unrequested: Vec<String>,
}

impl LoadReport {
    /// A few lines saying what was loaded.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} tensors, config {}",
            self.source.display(),
            self.used_keys,
            self.config_file.display()
        );
        for f in &self.files {
            s += &format!(
                "\n  {} ({}): {} tensors, {} used, {} overridden by a later file",
                f.path.display(),
                f.kind.describe(),
                f.tensors,
                f.used,
                f.overridden
            );
            for (group, n, _) in &f.dropped {
                s += &format!("\n    ignored {n}: {group}");
            }
            if f.non_tensors > 0 {
                s += &format!(
                    "\n    skipped {} non-tensor state-dict entries",
                    f.non_tensors
                );
            }
        }
        for (p, why) in &self.ignored_files {
            s += &format!("\n  ignored file {}: {why}", p.display());
        }
        s
    }

    /// Short hash identifying the loaded model (for export metadata): sha256 over the config file
    /// and every weight file that contributed a tensor, in load order; first 16 hex digits.
    pub fn model_hash(&self) -> Result<String, LoadError> {
        let mut files = vec![self.config_file.clone()];
        files.extend(
            self.files
                .iter()
                .filter(|f| f.used > 0)
                .map(|f| f.path.clone()),
        );
        model_hash(&files)
    }
}

/// sha256 over the contents of `files`, in order; the first 16 hex digits.
pub fn model_hash(files: &[PathBuf]) -> Result<String, LoadError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let mut f = std::fs::File::open(p).map_err(|e| io_error(p, e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| io_error(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}
