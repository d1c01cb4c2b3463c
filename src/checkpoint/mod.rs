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
mod error;
mod keys;
pub mod ldm_config;
pub mod pickle;
mod report;
pub mod spec;
pub mod weights;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::model::{CorrespondenceConfig, MidmConfig, MidmModel, Precision};
pub use error::LoadError;
use error::{io_error, list, paths};
pub use keys::{
    canonical_key, classify, KeyFate, WeightsKind, DROP_EMA, DROP_LOSS, DROP_OTHER, DROP_SAMPLER,
    DROP_SCHEDULE,
};
pub use ldm_config::LdmConfig;
pub use report::{model_hash, FileReport, LoadReport};
pub use weights::{Format, TensorEntry, WeightsFile};

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
    let (dir, candidates, single) = candidates(path)?;
    let (files, kinds, ignored_files) = recognise(path, candidates, single)?;
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

    let file_paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let (plan, shapes, mut reports) = map_keys(&files, &kinds);
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
    if ldm.label_fill && correspondence.label_nc != 2 {
        return Err(LoadError::Config {
            path: config_file,
            reason: format!(
                "midms.label_fill is set, but seg_enc takes {} input channel(s): the label and the \
                 filled drawing need two (weights of a model without label_fill?)",
                correspondence.label_nc
            ),
        });
    }
    let line_channels = correspondence.label_nc - usize::from(ldm.label_fill);
    for (key, share) in [
        ("frame_drawing", ldm.frame_drawing),
        ("frame_exemplar", ldm.frame_exemplar),
    ] {
        if share > 0.0 && line_channels != 1 {
            return Err(LoadError::Config {
                path: config_file,
                reason: format!(
                    "midms.{key} frames a drawing: it needs a one-channel line label, the model \
                     takes {line_channels} label channel(s)"
                ),
            });
        }
    }
    if (ldm.close_gaps > 0 || ldm.close_wide_gaps.is_some()) && line_channels != 1 {
        return Err(LoadError::Config {
            path: config_file,
            reason: format!(
                "midms.close_gaps closes a drawing's gaps: it needs a one-channel line label, the \
                 model takes {line_channels} label channel(s)"
            ),
        });
    }
    if (ldm.region_open_strokes || ldm.region_keep_outside) && !ldm.region_matching {
        return Err(LoadError::Config {
            path: config_file,
            reason: "midms.region_open_strokes and midms.region_keep_outside refine region \
                     matching: they need midms.region_matching: true"
                .into(),
        });
    }
    let layout = [
        ("layout_prior", ldm.layout_prior),
        ("colour_layout_prior", ldm.colour_layout_prior),
    ];
    if let Some((key, _)) = layout.iter().find(|(_, w)| *w > 0.0) {
        if !ldm.region_matching {
            return Err(LoadError::Config {
                path: config_file,
                reason: format!(
                    "midms.{key} weighs matches inside the drawn shape: it needs \
                     midms.region_matching: true"
                ),
            });
        }
    }
    if let Some(bg) = &ldm.background_latent {
        if bg.len() != ldm.autoencoder.embed_dim {
            return Err(LoadError::Config {
                path: config_file,
                reason: format!(
                    "midms.background_latent has {} values, but the latents have {} channels",
                    bg.len(),
                    ldm.autoencoder.embed_dim
                ),
            });
        }
    }
    let config = ldm.with_correspondence(correspondence);

    validate(&config, &plan, &shapes, &files)?;
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

/// The folder of a load, its weight files to look at, and whether a single file was given.
fn candidates(path: &Path) -> Result<(PathBuf, Vec<PathBuf>, bool), LoadError> {
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

    Ok((dir, candidates, single))
}

/// Weight files recognised by their keys, one per kind, in load order; and the files ignored.
#[allow(clippy::type_complexity)]
fn recognise(
    path: &Path,
    candidates: Vec<PathBuf>,
    single: bool,
) -> Result<(Vec<WeightsFile>, Vec<WeightsKind>, Vec<(PathBuf, String)>), LoadError> {
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

    Ok((files, kinds, ignored_files))
}

/// Canonical key -> (file index, key in that file), later files winning; the shapes by
/// canonical key; and a report per file.
#[allow(clippy::type_complexity)]
fn map_keys(
    files: &[WeightsFile],
    kinds: &[WeightsKind],
) -> (
    BTreeMap<String, (usize, String)>,
    HashMap<String, Vec<usize>>,
    Vec<FileReport>,
) {
    let mut reports: Vec<FileReport> = Vec::new();
    let mut plan: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (file, &kind)) in files.iter().zip(kinds).enumerate() {
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

    (plan, shapes, reports)
}

/// Every key the config needs is there, nothing unexpected inside a needed module, and every
/// shape matches.
fn validate(
    config: &MidmConfig,
    plan: &BTreeMap<String, (usize, String)>,
    shapes: &HashMap<String, Vec<usize>>,
    files: &[WeightsFile],
) -> Result<(), LoadError> {
    let file_paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let expected = spec::expected_keys(config);
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
    Ok(())
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
        // every seg_enc input: the label, and the filled drawing where the config sets label_fill
        label_nc: dim("seg_enc.layer1.0.weight_orig", 1)?,
        ndf: dim("seg_enc.layer1.0.weight_orig", 0)?,
        latent_channels: dim("real_enc.layer1.0.weight_orig", 1)?,
        n_ch: dim("seg_enc.G_middle_1.conv_1.weight_orig", 0)?,
        spade_nhidden: dim("seg_enc.G_middle_1.norm_0.mlp_shared.1.weight", 0)?,
        trunk_blocks,
        // the config says (LdmConfig::with_correspondence)
        label_fill: false,
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
