//! Shared helpers for the parity tests: the fixture set comes from `MIDM_PARITY_DIR`
//! (default `tests/fixtures/parity`), and everything is built from that set's `config.json` and
//! weights, so the same tests run on any fixture set of the same layout.
#![allow(dead_code)]

#[cfg(feature = "gui")]
pub mod editor;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use midm::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, DdpmConfig, MidmConfig, UNetConfig,
};

pub fn parity_dir() -> PathBuf {
    match std::env::var_os("MIDM_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity"),
    }
}

/// The checkpoint-format fixtures: `MIDM_CHECKPOINTS_DIR`, default `tests/fixtures/checkpoints`.
pub fn checkpoints_dir() -> PathBuf {
    match std::env::var_os("MIDM_CHECKPOINTS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints"),
    }
}

pub fn config_json() -> serde_json::Value {
    let path = parity_dir().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The model configuration of the fixture set, from its `config.json`.
pub fn fixture_config() -> MidmConfig {
    let c = config_json();
    let ae = &c["autoencoder"];
    let un = &c["unet"];
    let mi = &c["midms"];
    let ddpm = &c["ddpm_schedule"];
    let opt = |v: &serde_json::Value| v.as_u64().map(|x| x as usize).filter(|&x| x > 0);
    MidmConfig {
        image_size: c["image_size"].as_u64().unwrap() as usize,
        autoencoder: AutoencoderConfig {
            kind: AutoencoderKind::Vq {
                n_embed: ae["n_embed"].as_u64().unwrap() as usize,
            },
            embed_dim: ae["embed_dim"].as_u64().unwrap() as usize,
            z_channels: ae["z_channels"].as_u64().unwrap() as usize,
            double_z: ae["double_z"].as_bool().unwrap(),
            in_channels: 3,
            out_ch: 3,
            ch: ae["ch"].as_u64().unwrap() as usize,
            ch_mult: usizes(&ae["ch_mult"]),
            num_res_blocks: ae["num_res_blocks"].as_u64().unwrap() as usize,
            attn_resolutions: usizes(&ae["attn_resolutions"]),
            resolution: c["image_size"].as_u64().unwrap() as usize,
        },
        unet: UNetConfig {
            image_size: un["image_size"].as_u64().unwrap() as usize,
            in_channels: un["in_channels"].as_u64().unwrap() as usize,
            out_channels: un["out_channels"].as_u64().unwrap() as usize,
            model_channels: un["model_channels"].as_u64().unwrap() as usize,
            channel_mult: usizes(&un["channel_mult"]),
            num_res_blocks: un["num_res_blocks"].as_u64().unwrap() as usize,
            attention_resolutions: usizes(&un["attention_resolutions"]),
            num_head_channels: opt(&un["num_head_channels"]),
            num_heads: opt(&un["num_heads"]),
        },
        ddpm: DdpmConfig {
            timesteps: ddpm["timesteps"].as_u64().unwrap() as usize,
            linear_start: ddpm["linear_start"].as_f64().unwrap(),
            linear_end: ddpm["linear_end"].as_f64().unwrap(),
        },
        correspondence: CorrespondenceConfig {
            label_nc: mi["label_nc"].as_u64().unwrap() as usize,
            latent_channels: ae["embed_dim"].as_u64().unwrap() as usize,
            n_ch: mi["N_CH"].as_u64().unwrap() as usize,
            ndf: mi["corr_ndf"].as_u64().unwrap() as usize,
            spade_nhidden: mi["spade_nhidden"].as_u64().unwrap() as usize,
            trunk_blocks: 4,
            // Absent from the authors' sets; a trainer-emitted set of a model v1.1 sets it.
            label_fill: mi["label_fill"].as_bool().unwrap_or(false),
        },
        // Absent from the authors' sets (nearest); a trainer-emitted set may name it.
        label_downsample: mi["label_downsample"]
            .as_str()
            .map_or(Default::default(), |s| {
                midm::model::LabelDownsample::parse(s).unwrap()
            }),
        // Absent from the authors' sets; a trainer-emitted set of a model that sets it says so.
        region_matching: mi["region_matching"].as_bool().unwrap_or(false),
        background_latent: mi["background_latent"]
            .as_array()
            .map(|v| v.iter().map(|x| x.as_f64().unwrap() as f32).collect()),
        region_open_strokes: mi["region_open_strokes"].as_bool().unwrap_or(false),
        region_keep_outside: mi["region_keep_outside"].as_bool().unwrap_or(false),
        colour_transfer: mi["colour_transfer"].as_bool().unwrap_or(false),
        colour_temperature: mi["colour_temperature"].as_f64(),
        // Absent from the authors' sets and from trainer sets made before model v1.11 (clip).
        colour_gamut: mi["colour_gamut"].as_str().map_or(Default::default(), |s| {
            midm::sampling::colour::ColourGamut::parse(s).unwrap()
        }),
        refine_eta: mi["refine_eta"].as_f64(),
        unet_condition: mi["unet_condition"].as_bool().unwrap_or(false),
        layout_prior: mi["layout_prior"].as_f64().unwrap_or(0.0) as f32,
        colour_layout_prior: mi["colour_layout_prior"].as_f64().unwrap_or(0.0) as f32,
        frame_drawing: mi["frame_drawing"].as_f64().unwrap_or(0.0),
        frame_exemplar: mi["frame_exemplar"].as_f64().unwrap_or(0.0),
        clear_exemplar_ground: mi["clear_exemplar_ground"].as_bool().unwrap_or(false),
        close_gaps: mi["close_gaps"].as_u64().unwrap_or(0) as u8,
        close_wide_gaps: mi["close_wide_gaps"]
            .as_array()
            .map(|v| [v[0].as_u64().unwrap() as u8, v[1].as_u64().unwrap() as u8]),
    }
}

/// Weights of the fixture set, rooted at the canonical key space.
pub fn fixture_vb() -> VarBuilder<'static> {
    let path = parity_dir().join("weights.safetensors");
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu).unwrap() }
}

/// Every tensor of `trace.safetensors`.
pub fn trace() -> HashMap<String, Tensor> {
    let path = parity_dir().join("trace.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

/// A trace tensor that every fixture set has.
pub fn get(trace: &HashMap<String, Tensor>, name: &str) -> Tensor {
    trace
        .get(name)
        .unwrap_or_else(|| panic!("trace tensor {name} missing"))
        .clone()
}

/// Largest absolute difference of two tensors of the same shape (as f32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute value of a tensor, to scale tolerances.
pub fn max_abs(a: &Tensor) -> f32 {
    a.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Assert `|got - want| <= tol` elementwise, printing the error for the closing note.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let err = max_abs_diff(got, want);
    eprintln!(
        "parity {name}: max abs error {err:.3e} (tolerance {tol:.1e}, scale {:.3e})",
        max_abs(want)
    );
    assert!(err <= tol, "{name}: max abs error {err:e} exceeds {tol:e}");
}

/// Soft-warp temperature of the set (`midms.soft_warp.alpha`; the official 0.005 if absent).
pub fn temperature(c: &serde_json::Value) -> f64 {
    c["midms"]["soft_warp"]["alpha"].as_f64().unwrap_or(0.005)
}

/// Forward-backward threshold of the set (`midms.fb_mask.fb_threshold`; official 0.5 if absent).
pub fn fb_threshold(c: &serde_json::Value) -> f64 {
    c["midms"]["fb_mask"]["fb_threshold"]
        .as_f64()
        .unwrap_or(0.5)
}

/// Number of interleaved loop steps recorded in the trace.
/// The condition the sampler's matching saw: the framed drawing where the trainer framed one
/// (`midms.frame_drawing`, `train.frame`), else the input.
pub fn sampler_condition(trace: &HashMap<String, Tensor>) -> Tensor {
    trace
        .get("frame.cond_label")
        .cloned()
        .unwrap_or_else(|| get(trace, "input.cond_label"))
}

/// The exemplar and its label the sampler's matching saw: the framed ones where the trainer
/// framed a small glyph (`midms.frame_exemplar`, `train.frame.frame_exemplars`), else the one
/// whose plain ground it made white (`midms.clear_exemplar_ground`), else the inputs.
pub fn sampler_exemplar(trace: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| trace.get(*k).cloned())
            .expect("the trace has the inputs")
    };
    (
        first(&["frame.ref_img", "ground.ref_img", "input.exemplar"]),
        first(&["frame.ref_label", "input.exemplar_label"]),
    )
}

pub fn loop_steps(trace: &HashMap<String, Tensor>) -> usize {
    (0..64)
        .take_while(|k| trace.contains_key(&format!("loop.{k}.pred_x0")))
        .count()
}

/// The sampler options the fixture set was made with.
pub fn reference_options(c: &serde_json::Value, n_loop: usize) -> midm::SamplerOptions {
    let inference = &c["midms"]["inference"];
    let refine = &inference["refine"];
    midm::SamplerOptions {
        ddim_steps: inference["ddim_num_steps"].as_u64().unwrap() as usize,
        interleaved_steps: n_loop,
        rewarp_at: inference["rewarp_at_loop_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect(),
        temperature: temperature(c),
        fb_threshold: fb_threshold(c),
        use_mask: true,
        refine: Some(midm::sampling::midm::RefineOptions {
            ddim_steps: refine["ddim_num_steps"].as_u64().unwrap() as usize,
            eta: refine["eta"].as_f64().unwrap(),
            hijack_step: refine["hijack_step"].as_u64().unwrap() as usize,
        }),
        emit_warp_weights: false,
    }
}

/// The reference's random draws, to inject into the sampler.
pub fn reference_noise(trace: &HashMap<String, Tensor>) -> midm::Noise {
    let refine_noise = get(trace, "refine.noise");
    midm::Noise::Injected(midm::InjectedNoise {
        loop_q: get(trace, "loop.0.q_noise"),
        refine_q: get(trace, "refine.q_noise"),
        refine_steps: (0..refine_noise.dim(0).unwrap())
            .map(|j| refine_noise.get(j).unwrap())
            .collect(),
    })
}

/// The fixture's condition, exemplar and exemplar label.
pub fn reference_inputs(trace: &HashMap<String, Tensor>) -> midm::MidmInputs {
    midm::MidmInputs {
        condition: get(trace, "input.cond_label"),
        exemplar: get(trace, "input.exemplar"),
        exemplar_label: get(trace, "input.exemplar_label"),
    }
}

/// Collects every step event of a run.
#[derive(Default)]
pub struct Recorder(pub Vec<midm::StepEvent>);

impl midm::StepSink for Recorder {
    fn on_event(&mut self, event: &midm::StepEvent) {
        self.0.push(event.clone());
    }
}
