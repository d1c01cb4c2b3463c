//! Finding and loading weights: safetensors and the authors' own PyTorch files (`.ckpt` /
//! `.pth`, zip + pickle, read without executing any pickled code), plus the LDM `config.yaml`.
//!
//! A model is loaded from a folder or a single weight file:
//! - **folder**: every `*.safetensors`, `*.ckpt`, `*.pth`, `*.pt` is indexed and recognised by its
//!   keys: a MIDMs fine-tuning checkpoint (`diff_model.*`, `real_enc.*`, ... = the canonical key
//!   space), an LDM model-zoo checkpoint (`model.diffusion_model.*`), or a standalone first stage
//!   (`encoder.*` + `decoder.*`). Files with none of these keys (e.g. a parity set's
//!   `trace.safetensors`) are ignored and reported. The config is `config.yaml` (or the only
//!   `*.yaml`), else a `config.json` holding the LDM config (top level or under `ldm_config`).
//! - **single file**: that file, with the config found beside it (same rules).
//!
//! Loading order (the official `inference.py`): first stage, then LDM, then the MIDMs checkpoint
//! on top; a later file wins for every key it has. Keys inference does not need are dropped on
//! purpose and counted in the [`LoadReport`]: the DDIM sampler's duplicate `diffusion_sampler.*`,
//! EMA copies `*model_ema*`, the schedule buffers (recomputed from the config), a first stage's
//! `loss.*`. The config cannot be inferred from the weights alone (attention head width and image
//! size are not in any shape), so a config file is required.
//!
//! Everything is validated against the keys the configuration needs ([`spec`]) from the files'
//! headers alone, before any tensor is read: missing keys, unexpected keys inside a needed module
//! and shape mismatches are errors that name the keys and files. Only then are the needed tensors
//! read (each PyTorch storage once) and the networks built.
pub mod ldm_config;
pub mod pickle;
pub mod spec;
pub mod weights;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};

use crate::model::{CorrespondenceConfig, MidmConfig, MidmModel, Precision};
pub use ldm_config::LdmConfig;
pub use weights::{Format, TensorEntry, WeightsFile};

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

fn paths(files: &[PathBuf]) -> String {
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

fn list(keys: &[String]) -> String {
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

/// Groups of keys dropped on purpose (as named in the [`LoadReport`]).
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

fn io_error(path: &Path, e: std::io::Error) -> LoadError {
    if e.kind() == std::io::ErrorKind::NotFound {
        LoadError::NotFound(path.to_path_buf())
    } else {
        LoadError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// A checkpoint that has been found, configured and validated, before any tensor is read.
pub struct Checkpoint {
    pub config: MidmConfig,
    pub report: LoadReport,
    files: Vec<WeightsFile>,
    /// Canonical key -> (index into `files`, key in that file), for every key the model needs.
    plan: BTreeMap<String, (usize, String)>,
}

/// A built model and what was loaded.
pub struct LoadedModel {
    pub model: MidmModel,
    pub report: LoadReport,
}

/// Load a model from a folder (holding a config and one or more weight files) or a single file.
pub fn load_model(path: &Path, device: &Device) -> Result<MidmModel, LoadError> {
    Ok(load(path, device)?.model)
}

/// [`load_model`] with the UNet and autoencoder in `precision` (see [`Precision`]).
pub fn load_model_with(
    path: &Path,
    device: &Device,
    precision: Precision,
) -> Result<MidmModel, LoadError> {
    Ok(inspect(path)?.build_with(device, precision)?.model)
}

/// [`load_model`], with the report of what was loaded.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel, LoadError> {
    inspect(path)?.build(device)
}

const WEIGHT_EXTS: [&str; 4] = ["safetensors", "ckpt", "pth", "pt"];

fn ext_of(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Finds the config file in `dir`: `config.yaml` / `config.yml`, else the only `*.yaml`, else `config.json`.
fn find_config(dir: &Path, names: &[PathBuf]) -> Result<Option<PathBuf>, LoadError> {
    for n in ["config.yaml", "config.yml"] {
        if let Some(p) = names.iter().find(|p| p.file_name().is_some_and(|f| f == n)) {
            return Ok(Some(p.clone()));
        }
    }
    let yamls: Vec<&PathBuf> = names
        .iter()
        .filter(|p| matches!(ext_of(p).as_str(), "yaml" | "yml"))
        .collect();
    match yamls.as_slice() {
        [one] => return Ok(Some((*one).clone())),
        [] => {}
        _ => {
            return Err(LoadError::Ambiguous {
                path: dir.to_path_buf(),
                reason: format!(
                    "several YAML configs and none named config.yaml: {}",
                    paths(&yamls.into_iter().cloned().collect::<Vec<_>>())
                ),
            })
        }
    }
    Ok(names
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == "config.json"))
        .cloned())
}

fn read_config(path: &Path) -> Result<LdmConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let parsed = if ext_of(path) == "json" {
        ldm_config::parse_json(&text)
    } else {
        ldm_config::parse_yaml(&text)
    };
    parsed.map_err(|reason| LoadError::Config {
        path: path.to_path_buf(),
        reason,
    })
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let p = e.map_err(|e| io_error(dir, e))?.path();
        if p.is_file() {
            names.push(p);
        }
    }
    names.sort();
    Ok(names)
}

/// Finds the files, reads the config, indexes the weights and validates every key and shape
/// against the config, without reading tensor data.
pub fn inspect(path: &Path) -> Result<Checkpoint, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound(path.to_path_buf()));
    }
    let (dir, candidates, single) = if path.is_dir() {
        let names = list_dir(path)?;
        let weights: Vec<PathBuf> = names
            .iter()
            .filter(|p| WEIGHT_EXTS.contains(&ext_of(p).as_str()))
            .cloned()
            .collect();
        (path.to_path_buf(), weights, false)
    } else {
        if matches!(ext_of(path).as_str(), "yaml" | "yml" | "json") {
            return Err(LoadError::NoWeights {
                path: path.to_path_buf(),
                detail: ": this is a config file; give the folder holding it and the weights"
                    .into(),
            });
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, vec![path.to_path_buf()], true)
    };
    if candidates.is_empty() {
        return Err(LoadError::NoWeights {
            path: path.to_path_buf(),
            detail: " (looked for *.safetensors, *.ckpt, *.pth, *.pt)".into(),
        });
    }

    // Index and recognise the weight files.
    let mut ignored_files = Vec::new();
    let mut by_kind: BTreeMap<WeightsKind, Vec<WeightsFile>> = BTreeMap::new();
    for p in candidates {
        let file = WeightsFile::open(&p)?;
        match classify(&file.entries) {
            Some(kind) => by_kind.entry(kind).or_default().push(file),
            None => {
                let first: Vec<String> = file
                    .entries
                    .iter()
                    .take(3)
                    .map(|e| e.name.clone())
                    .collect();
                let reason = format!(
                    "no MIDMs, LDM or first-stage keys ({} tensors, e.g. {})",
                    file.len(),
                    if first.is_empty() {
                        "none".to_string()
                    } else {
                        first.join(", ")
                    }
                );
                if single {
                    return Err(LoadError::UnknownWeights { path: p, reason });
                }
                ignored_files.push((p, reason));
            }
        }
    }
    let mut files = Vec::new();
    let mut kinds = Vec::new();
    for (kind, mut group) in by_kind {
        if group.len() > 1 {
            let names: Vec<PathBuf> = group.iter().map(|f| f.path.clone()).collect();
            return Err(LoadError::Ambiguous {
                path: path.to_path_buf(),
                reason: format!(
                    "several {} files: {}; keep one, or point at a single file",
                    kind.describe(),
                    paths(&names)
                ),
            });
        }
        kinds.push(kind);
        files.push(group.pop().unwrap());
    }
    if files.is_empty() {
        return Err(LoadError::NoWeights {
            path: path.to_path_buf(),
            detail: format!(
                ": {}",
                ignored_files
                    .iter()
                    .map(|(p, r)| format!("{}: {r}", p.display()))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }

    // The config.
    let names = if single {
        list_dir(&dir).unwrap_or_default()
    } else {
        list_dir(&dir)?
    };
    let config_file = find_config(&dir, &names)?.ok_or_else(|| LoadError::Config {
        path: dir.join("config.yaml"),
        reason: "not found: the LDM config.yaml that ships with the checkpoint is needed beside the weights \
                 (the attention head width and image size are not recorded in the weights)"
            .into(),
    })?;
    let ldm = read_config(&config_file)?;

    // Map every key into the canonical space; later files win.
    let file_paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let mut reports: Vec<FileReport> = Vec::new();
    let mut plan: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (file, &kind)) in files.iter().zip(&kinds).enumerate() {
        let mut dropped: Vec<(&'static str, usize, Vec<String>)> = Vec::new();
        for e in &file.entries {
            match canonical_key(kind, &e.name) {
                KeyFate::Use(c) => {
                    if let Some((prev, _)) = plan.insert(c.clone(), (i, e.name.clone())) {
                        reports[prev].overridden += 1;
                    }
                    shapes.insert(c, e.shape.clone());
                }
                KeyFate::Drop(group) => match dropped.iter_mut().find(|d| d.0 == group) {
                    Some(d) => {
                        d.1 += 1;
                        if d.2.len() < 3 {
                            d.2.push(e.name.clone());
                        }
                    }
                    None => dropped.push((group, 1, vec![e.name.clone()])),
                },
            }
        }
        reports.push(FileReport {
            path: file.path.clone(),
            kind,
            format: file.format,
            tensors: file.len(),
            used: 0,
            overridden: 0,
            dropped,
            non_tensors: file.non_tensors.len(),
        });
    }

    // Correspondence widths come from the weights' shapes.
    let correspondence = infer_correspondence(&shapes, &file_paths)?;
    if correspondence.latent_channels != ldm.autoencoder.embed_dim {
        return Err(LoadError::Config {
            path: config_file,
            reason: format!(
                "the autoencoder's embed_dim is {}, but real_enc takes {} latent channels",
                ldm.autoencoder.embed_dim, correspondence.latent_channels
            ),
        });
    }
    let config = ldm.with_correspondence(correspondence);

    // Validate against what the config needs.
    let expected = spec::expected_keys(&config);
    let missing: Vec<String> = expected
        .keys()
        .filter(|k| !plan.contains_key(*k))
        .cloned()
        .collect();
    let unexpected: Vec<String> = plan
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingKeys {
            files: file_paths,
            keys: missing,
            unexpected,
        });
    }
    if !unexpected.is_empty() {
        let holders: Vec<PathBuf> = unexpected
            .iter()
            .map(|k| plan[k].0)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|i| files[i].path.clone())
            .collect();
        return Err(LoadError::UnexpectedKeys {
            files: holders,
            keys: unexpected,
        });
    }
    let mismatched: Vec<&String> = expected
        .iter()
        .filter(|(k, s)| &shapes[*k] != *s)
        .map(|(k, _)| k)
        .collect();
    if let Some(&key) = mismatched.first() {
        return Err(LoadError::ShapeMismatch {
            file: files[plan[key].0].path.clone(),
            key: plan[key].1.clone(),
            expected: expected[key].clone(),
            found: shapes[key].clone(),
            more: mismatched.len() - 1,
        });
    }
    for (i, _) in plan.values() {
        reports[*i].used += 1;
    }
    let report = LoadReport {
        source: path.to_path_buf(),
        config_file,
        files: reports,
        ignored_files,
        used_keys: plan.len(),
        unrequested: Vec::new(),
    };
    Ok(Checkpoint {
        config,
        report,
        files,
        plan,
    })
}

/// Reads the correspondence widths from the weights' shapes (they are not in the LDM config).
fn infer_correspondence(
    shapes: &HashMap<String, Vec<usize>>,
    files: &[PathBuf],
) -> Result<CorrespondenceConfig, LoadError> {
    if !shapes
        .keys()
        .any(|k| spec::CORRESPONDENCE.iter().any(|p| k.starts_with(p)))
    {
        return Err(LoadError::NoCorrespondence {
            files: files.to_vec(),
        });
    }
    let dim = |key: &str, d: usize| -> Result<usize, LoadError> {
        match shapes.get(key) {
            Some(s) if s.len() > d => Ok(s[d]),
            Some(s) => Err(LoadError::ShapeMismatch {
                file: files.last().cloned().unwrap_or_default(),
                key: key.to_string(),
                expected: vec![0; d + 1],
                found: s.clone(),
                more: 0,
            }),
            None => Err(LoadError::MissingKeys {
                files: files.to_vec(),
                keys: vec![key.to_string()],
                unexpected: Vec::new(),
            }),
        }
    };
    let trunk_blocks = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("layer.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    if trunk_blocks == 0 {
        return Err(LoadError::MissingKeys {
            files: files.to_vec(),
            keys: vec!["layer.0.conv1.weight".into()],
            unexpected: Vec::new(),
        });
    }
    Ok(CorrespondenceConfig {
        label_nc: dim("seg_enc.layer1.0.weight_orig", 1)?,
        ndf: dim("seg_enc.layer1.0.weight_orig", 0)?,
        latent_channels: dim("real_enc.layer1.0.weight_orig", 1)?,
        n_ch: dim("seg_enc.G_middle_1.conv_1.weight_orig", 0)?,
        spade_nhidden: dim("seg_enc.G_middle_1.norm_0.mlp_shared.1.weight", 0)?,
        trunk_blocks,
    })
}

impl Checkpoint {
    /// The weight files of this checkpoint, in load order.
    pub fn files(&self) -> &[WeightsFile] {
        &self.files
    }

    /// Reads every needed tensor, keyed canonically.
    pub fn load_tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
        let mut out = HashMap::with_capacity(self.plan.len());
        for (i, file) in self.files.iter().enumerate() {
            let wanted: Vec<(&String, &str)> = self
                .plan
                .iter()
                .filter(|(_, (f, _))| *f == i)
                .map(|(c, (_, k))| (c, k.as_str()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let names: Vec<&str> = wanted.iter().map(|(_, k)| *k).collect();
            let mut tensors = file.load(&names, device)?;
            for (canonical, key) in wanted {
                out.insert(canonical.clone(), tensors.remove(key).unwrap());
            }
        }
        Ok(out)
    }

    /// Reads the tensors and builds the networks in float32.
    pub fn build(self, device: &Device) -> Result<LoadedModel, LoadError> {
        self.build_with(device, Precision::F32)
    }

    /// Reads the tensors and builds the networks, the UNet and autoencoder in `precision`.
    pub fn build_with(
        self,
        device: &Device,
        precision: Precision,
    ) -> Result<LoadedModel, LoadError> {
        let tensors = self.load_tensors(device)?;
        let requested = Arc::new(Mutex::new(HashSet::new()));
        let backend = Recording {
            tensors,
            requested: requested.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let model = MidmModel::with_precision(vb, &self.config, precision).map_err(|e| {
            LoadError::Build {
                reason: e.to_string(),
            }
        })?;
        let mut report = self.report;
        let requested = requested.lock().map(|r| r.clone()).unwrap_or_default();
        report.unrequested = self
            .plan
            .keys()
            .filter(|k| !requested.contains(*k))
            .cloned()
            .collect();
        if !report.unrequested.is_empty() {
            tracing::warn!(
                "validated weights the networks did not use: {}",
                list(&report.unrequested)
            );
        }
        Ok(LoadedModel { model, report })
    }
}

/// A VarBuilder backend over the validated tensors that records which names the networks ask for.
struct Recording {
    tensors: HashMap<String, Tensor>,
    requested: Arc<Mutex<HashSet<String>>>,
}

impl Recording {
    fn fetch(&self, name: &str) -> candle_core::Result<Tensor> {
        if let Ok(mut r) = self.requested.lock() {
            r.insert(name.to_string());
        }
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })
    }
}

impl candle_nn::var_builder::SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.fetch(name)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        t.to_device(dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name)?.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
