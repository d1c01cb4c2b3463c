//! What the CLI and the editor share, so that they agree: the user-facing sampler parameters and
//! their defaults, where the default model is found, and the PNG metadata both write (and the
//! editor reads back to restore a result's parameters).
use std::path::{Path, PathBuf};

use crate::device::DeviceChoice;
use crate::image::CannyParams;
use crate::model::Precision;
use crate::sampling::midm::{RefineOptions, SamplerOptions};

/// Seed of the diffusion noise when none is given (the seed of the README's screenshots).
pub const DEFAULT_SEED: u64 = 42;

/// User-facing sampler parameters (saved with the editor's session and in exported PNGs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    pub seed: u64,
    pub ddim_steps: usize,
    pub interleaved_steps: usize,
    pub temperature: f64,
    pub fb_threshold: f64,
    pub use_mask: bool,
    pub refine: bool,
    pub canny: CannyParams,
    pub device: DeviceChoice,
    pub precision: Precision,
}

impl Default for Params {
    fn default() -> Self {
        Self::from_options(&SamplerOptions::default(), DEFAULT_SEED)
    }
}

impl Params {
    /// The parameters of `options` (the official refinement when it refines at all).
    pub fn from_options(o: &SamplerOptions, seed: u64) -> Self {
        Self {
            seed,
            ddim_steps: o.ddim_steps,
            interleaved_steps: o.interleaved_steps,
            temperature: o.temperature,
            fb_threshold: o.fb_threshold,
            use_mask: o.use_mask,
            refine: o.refine.is_some(),
            canny: CannyParams::default(),
            device: DeviceChoice::Cpu,
            precision: Precision::F32,
        }
    }

    /// The sampler options of these parameters (official values for everything not exposed;
    /// the interleaved steps clamped to the schedule, re-warps only at steps that exist).
    pub fn sampler_options(&self) -> SamplerOptions {
        let d = SamplerOptions::default();
        // Into the range the sampler takes (interleaved steps fewer than DDIM steps): a
        // restored PNG or an edited session may hold any numbers.
        let ddim_steps = self.ddim_steps.max(2);
        let interleaved = self.interleaved_steps.clamp(1, ddim_steps - 1);
        SamplerOptions {
            ddim_steps,
            interleaved_steps: interleaved,
            rewarp_at: d
                .rewarp_at
                .into_iter()
                .filter(|k| *k < interleaved)
                .collect(),
            temperature: self.temperature,
            fb_threshold: self.fb_threshold,
            use_mask: self.use_mask,
            refine: self.refine.then(RefineOptions::official),
            emit_warp_weights: false,
        }
    }
}

/// The default model: `$MIDM_MODEL`, else `./weights`, else the `weights/` folder of the source
/// tree this binary was built from (a folder counts when it holds a config).
pub fn default_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MIDM_MODEL") {
        return Some(PathBuf::from(p));
    }
    [
        PathBuf::from("weights"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights"),
    ]
    .into_iter()
    .find(|d| d.join("config.yaml").exists() || d.join("config.json").exists())
}

/// Where the bundled assets are looked for: `assets/` here, then the source tree's.
pub fn asset_dirs() -> [PathBuf; 2] {
    [
        PathBuf::from("assets"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"),
    ]
}

/// The pair the editor opens with on a first start (paths inside an asset folder): a sketch
/// drawn as users draw (thin, wobbly, one line) and a fitting exemplar in Twemoji's style, which
/// the model never trained on, so that the first thing a user sees is what the model does on
/// their kind of input. (The older `assets/NAME_sketch.png` are glyphs' Canny edges.) The tree:
/// the gallery's outline ranking puts its own exemplar first (`tests/rank_shipped.rs`), so the
/// first suggestions fit the sketch on screen; the cup's Twemoji saucer and steam are filled
/// shapes where the sketch has lines, which put the cup 39th of 41.
pub const SAMPLE_PAIR: (&str, &str) = ("drawn/tree_sketch.png", "drawn/tree_exemplar.png");

/// [`SAMPLE_PAIR`] in the first asset folder ([`asset_dirs`]) that holds both files.
pub fn sample_pair() -> Option<(PathBuf, PathBuf)> {
    asset_dirs().into_iter().find_map(|dir| {
        let (sketch, exemplar) = (dir.join(SAMPLE_PAIR.0), dir.join(SAMPLE_PAIR.1));
        (sketch.is_file() && exemplar.is_file()).then_some((sketch, exemplar))
    })
}

/// [`default_model`], or the source tree's `weights/` (whose absence the loader then reports).
pub fn default_model_path() -> PathBuf {
    default_model().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights"))
}

/// PNG text chunk keywords (iTXt, UTF-8). `midm:params` holds [`Params`] as JSON.
pub const KEY_PARAMS: &str = "midm:params";
pub const KEY_SEED: &str = "midm:seed";
pub const KEY_MODEL_HASH: &str = "midm:model_hash";
pub const KEY_MODEL: &str = "midm:model";
pub const KEY_CONDITION: &str = "midm:condition";
pub const KEY_EXEMPLAR: &str = "midm:exemplar";
/// Keys of PNGs written by the CLI before it shared the editor's format: the seed, and the
/// [`SamplerOptions`] as JSON.
pub const LEGACY_KEY_SEED: &str = "midm.seed";
pub const LEGACY_KEY_OPTIONS: &str = "midm.options";

/// What a result PNG records about how it was made.
#[derive(Debug, Clone)]
pub struct ResultInfo<'a> {
    pub params: &'a Params,
    /// [`crate::checkpoint::LoadReport::model_hash`] of the model.
    pub model_hash: Option<&'a str>,
    pub model: Option<&'a Path>,
    /// The condition's name (file names, or "drawn").
    pub condition: &'a str,
    pub exemplar: Option<&'a str>,
}

impl ResultInfo<'_> {
    /// The PNG text chunks, in the one format both front ends write.
    pub fn png_text(&self) -> Vec<(String, String)> {
        let mut t = vec![
            (
                KEY_PARAMS.to_string(),
                serde_json::to_string(self.params).unwrap_or_default(),
            ),
            (KEY_SEED.to_string(), self.params.seed.to_string()),
        ];
        if let Some(h) = self.model_hash {
            t.push((KEY_MODEL_HASH.to_string(), h.to_string()));
        }
        if let Some(m) = self.model {
            t.push((KEY_MODEL.to_string(), m.display().to_string()));
        }
        t.push((KEY_CONDITION.to_string(), self.condition.to_string()));
        if let Some(e) = self.exemplar {
            t.push((KEY_EXEMPLAR.to_string(), e.to_string()));
        }
        t
    }
}

/// The value of one text chunk.
pub fn text_value<'a>(text: &'a [(String, String)], key: &str) -> Option<&'a str> {
    text.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The parameters recorded in a PNG's text chunks: `midm:params`, or the older CLI keys
/// `midm.options` + `midm.seed`. `None` when the PNG records none; an error when they are
/// unreadable.
pub fn params_from_png_text(text: &[(String, String)]) -> Option<Result<Params, String>> {
    if let Some(json) = text_value(text, KEY_PARAMS) {
        return Some(serde_json::from_str::<Params>(json).map_err(|e| e.to_string()));
    }
    let options = text_value(text, LEGACY_KEY_OPTIONS)?;
    let parsed = (|| -> Result<Params, String> {
        let o: SamplerOptions = serde_json::from_str(options).map_err(|e| e.to_string())?;
        let seed = match text_value(text, LEGACY_KEY_SEED) {
            Some(s) => s.trim().parse().map_err(|e| format!("seed {s:?}: {e}"))?,
            None => DEFAULT_SEED,
        };
        Ok(Params::from_options(&o, seed))
    })();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_pair_is_shipped_as_a_sketch_and_an_exemplar_of_the_model_size() {
        let (sketch, exemplar) = sample_pair().expect("the sample pair is in assets/");
        for (path, colour) in [(sketch, false), (exemplar, true)] {
            let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                (img.width(), img.height()),
                (128, 128),
                "{}",
                path.display()
            );
            assert_eq!(img.color().has_color(), colour, "{}", path.display());
        }
    }

    #[test]
    fn defaults_are_the_official_sampler_options() {
        let p = Params::default();
        assert_eq!(p.seed, DEFAULT_SEED);
        assert_eq!(p.sampler_options(), SamplerOptions::default());
    }

    #[test]
    fn png_text_round_trips_the_parameters() {
        let params = Params {
            seed: 7,
            ddim_steps: 12,
            refine: false,
            ..Params::default()
        };
        let text = ResultInfo {
            params: &params,
            model_hash: Some("0123456789abcdef"),
            model: Some(Path::new("weights")),
            condition: "a.png",
            exemplar: Some("b.png"),
        }
        .png_text();
        assert_eq!(params_from_png_text(&text), Some(Ok(params)));
        assert_eq!(text_value(&text, KEY_MODEL_HASH), Some("0123456789abcdef"));
        assert_eq!(params_from_png_text(&[]), None);
    }

    #[test]
    fn the_older_cli_keys_still_restore() {
        let options = SamplerOptions {
            ddim_steps: 10,
            interleaved_steps: 3,
            use_mask: false,
            refine: None,
            ..SamplerOptions::default()
        };
        let text = vec![
            (LEGACY_KEY_SEED.to_string(), "123".to_string()),
            (
                LEGACY_KEY_OPTIONS.to_string(),
                serde_json::to_string(&options).unwrap(),
            ),
        ];
        let p = params_from_png_text(&text).unwrap().unwrap();
        assert_eq!((p.seed, p.ddim_steps, p.interleaved_steps), (123, 10, 3));
        assert!(!p.use_mask && !p.refine);
        let bad = vec![(LEGACY_KEY_OPTIONS.to_string(), "{".to_string())];
        assert!(params_from_png_text(&bad).unwrap().is_err());
    }
}
