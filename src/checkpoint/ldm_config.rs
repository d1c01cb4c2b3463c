//! The LDM `config.yaml` that ships beside every latent-diffusion checkpoint (or the same
//! structure as JSON, e.g. the `ldm_config` object of a parity set's `config.json`).
//!
//! Only `model.params.*` is read. The `target` strings are never looked at (they name Python
//! classes, and differ between the latent-diffusion and MIDMs code trees). Options the reference
//! supports but midm does not (conditioning, scale-shift norm, spatial transformers, ...) are
//! rejected with an error naming the option, rather than silently building another network.
use serde::Deserialize;

use crate::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, DdpmConfig, LabelDownsample,
    MidmConfig, UNetConfig, UNET_CONDITION_CHANNELS,
};
use crate::sampling::colour::ColourGamut;
use crate::sampling::gaps::MAX_CLOSE_GAPS;

/// What an LDM config determines: everything except the correspondence widths (those are read
/// from the weights' shapes).
#[derive(Debug, Clone, PartialEq)]
pub struct LdmConfig {
    /// Image side in pixels (`first_stage_config.params.ddconfig.resolution`).
    pub image_size: usize,
    pub autoencoder: AutoencoderConfig,
    pub unet: UNetConfig,
    pub ddpm: DdpmConfig,
    /// `midms.label_downsample` (our own models' section; absent in the authors' configs).
    pub label_downsample: LabelDownsample,
    /// `midms.label_fill` (our own models' section): `seg_enc` also takes the filled drawing.
    pub label_fill: bool,
    /// `midms.region_matching` (our own models' section): matches kept inside / outside the
    /// drawn shape ([`crate::sampling::regions`]).
    pub region_matching: bool,
    /// `midms.background_latent` (our own models' section): with region matching, the latent
    /// that cells outside the sketch take when the exemplar has no outside (a photo).
    pub background_latent: Option<Vec<f32>>,
    /// `midms.region_open_strokes` (our own models' section): open strokes count as inside.
    pub region_open_strokes: bool,
    /// `midms.region_keep_outside` (our own models' section): the re-warp kept outside the shape.
    pub region_keep_outside: bool,
    /// `midms.layout_prior` (our own models' section): with region matching, the weight of the
    /// layout prior inside the shape in the latent matchings; absent, 0 (none).
    pub layout_prior: f32,
    /// `midms.colour_layout_prior` (our own models' section): the same in the colour warp.
    pub colour_layout_prior: f32,
    /// `midms.frame_drawing` (our own models' section): the share of the canvas a small
    /// drawing is framed to ([`crate::sampling::frame`]); absent, 0 (off).
    pub frame_drawing: f64,
    /// `midms.frame_exemplar` (our own models' section): the share of the canvas an exemplar
    /// whose glyph is small is framed to ([`crate::sampling::frame::frame_exemplars`]); absent,
    /// 0 (off).
    pub frame_exemplar: f64,
    /// `midms.close_gaps` (our own models' section): the radius in pixels by which a drawing's
    /// small gaps are closed ([`crate::sampling::gaps`]); absent, 0 (off).
    pub close_gaps: u8,
    /// `midms.close_wide_gaps` (our own models' section): `[radius, depth]` of the second,
    /// wider closing pass ([`crate::sampling::gaps`]); absent, off.
    pub close_wide_gaps: Option<[u8; 2]>,
    /// `midms.clear_exemplar_ground` (our own models' section): an exemplar's plain coloured
    /// ground is made white ([`crate::sampling::ground`]); absent, off.
    pub clear_exemplar_ground: bool,
    /// `midms.colour_transfer` (our own models' section): the exemplar's chroma warped onto the
    /// output ([`crate::sampling::colour`]).
    pub colour_transfer: bool,
    /// `midms.colour_temperature` (our own models' section): the colour warp's softmax
    /// temperature; absent, the matching's.
    pub colour_temperature: Option<f64>,
    /// `midms.colour_gamut` (our own models' section): how a transferred colour outside sRGB
    /// comes back into it; absent, clipped.
    pub colour_gamut: ColourGamut,
    /// `midms.refine_eta` (our own models' section): the refinement's DDIM eta; absent, the
    /// sampler options' (the authors' 1).
    pub refine_eta: Option<f64>,
    /// `midms.unet_condition` (our own models' section): the UNet also takes the drawing on the
    /// latent grid (`seg_enc`'s input) as extra input channels.
    pub unet_condition: bool,
}

impl LdmConfig {
    /// `correspondence` as the weights' shapes give it (`label_nc` counting every `seg_enc` input).
    pub fn with_correspondence(self, mut correspondence: CorrespondenceConfig) -> MidmConfig {
        if self.label_fill {
            correspondence.label_fill = true;
            correspondence.label_nc -= 1;
        }
        MidmConfig {
            image_size: self.image_size,
            autoencoder: self.autoencoder,
            unet: self.unet,
            ddpm: self.ddpm,
            correspondence,
            label_downsample: self.label_downsample,
            region_matching: self.region_matching,
            background_latent: self.background_latent,
            region_open_strokes: self.region_open_strokes,
            region_keep_outside: self.region_keep_outside,
            layout_prior: self.layout_prior,
            colour_layout_prior: self.colour_layout_prior,
            frame_drawing: self.frame_drawing,
            frame_exemplar: self.frame_exemplar,
            close_gaps: self.close_gaps,
            close_wide_gaps: self.close_wide_gaps,
            clear_exemplar_ground: self.clear_exemplar_ground,
            colour_transfer: self.colour_transfer,
            colour_temperature: self.colour_temperature,
            colour_gamut: self.colour_gamut,
            refine_eta: self.refine_eta,
            unet_condition: self.unet_condition,
        }
    }
}

#[derive(Deserialize)]
struct File {
    model: Model,
    /// Our own models' top-level section (label_nc, N_CH, ...: informative, except the key below).
    #[serde(default)]
    midms: Option<Midms>,
}

#[derive(Deserialize)]
struct Midms {
    label_downsample: Option<String>,
    #[serde(default)]
    label_fill: bool,
    #[serde(default)]
    region_matching: bool,
    #[serde(default)]
    background_latent: Option<Vec<f32>>,
    #[serde(default)]
    region_open_strokes: bool,
    #[serde(default)]
    region_keep_outside: bool,
    #[serde(default)]
    layout_prior: Option<f64>,
    #[serde(default)]
    colour_layout_prior: Option<f64>,
    #[serde(default)]
    frame_drawing: Option<f64>,
    #[serde(default)]
    frame_exemplar: Option<f64>,
    #[serde(default)]
    close_gaps: Option<u8>,
    #[serde(default)]
    close_wide_gaps: Option<[u8; 2]>,
    #[serde(default)]
    clear_exemplar_ground: bool,
    #[serde(default)]
    colour_transfer: bool,
    #[serde(default)]
    colour_temperature: Option<f64>,
    colour_gamut: Option<String>,
    #[serde(default)]
    refine_eta: Option<f64>,
    #[serde(default)]
    unet_condition: bool,
}

/// `base` (from `model.params`) with our own models' `midms` values, the same for YAML and JSON.
fn with_midms(base: LdmConfig, m: Option<&Midms>) -> Result<LdmConfig, String> {
    let Some(m) = m else {
        return Ok(base);
    };
    if let Some(t) = m
        .colour_temperature
        .filter(|t| !(t.is_finite() && *t > 0.0))
    {
        return Err(format!(
            "midms.colour_temperature must be a positive number, not {t}"
        ));
    }
    for (key, weight) in [
        ("layout_prior", m.layout_prior),
        ("colour_layout_prior", m.colour_layout_prior),
    ] {
        if let Some(w) = weight.filter(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(format!("midms.{key} must be a finite number >= 0, not {w}"));
        }
    }
    for (key, share) in [
        ("frame_drawing", m.frame_drawing),
        ("frame_exemplar", m.frame_exemplar),
    ] {
        if let Some(s) = share.filter(|s| !(0.0..=1.0).contains(s)) {
            return Err(format!(
                "midms.{key} must be a share of the canvas in (0, 1] (or 0: off), not {s}"
            ));
        }
    }
    if let Some(r) = m.close_gaps.filter(|r| *r > MAX_CLOSE_GAPS) {
        return Err(format!(
            "midms.close_gaps must be a radius of 0 (off) to {MAX_CLOSE_GAPS} pixels, not {r}"
        ));
    }
    if let Some(w) = m
        .close_wide_gaps
        .filter(|w| w.iter().any(|v| !(1..=MAX_CLOSE_GAPS).contains(v)))
    {
        return Err(format!(
            "midms.close_wide_gaps must be [radius, depth], each 1 to {MAX_CLOSE_GAPS} pixels, \
             not {w:?}"
        ));
    }
    if let Some(eta) = m.refine_eta.filter(|e| !(0.0..=1.0).contains(e)) {
        return Err(format!("midms.refine_eta must lie in [0, 1], not {eta}"));
    }
    if m.unet_condition {
        // The condition is seg_enc's input: the line label and the filled drawing.
        let want = base.autoencoder.embed_dim + UNET_CONDITION_CHANNELS;
        if !m.label_fill || base.unet.in_channels != want {
            return Err(format!(
                "midms.unet_condition needs midms.label_fill and a UNet with in_channels {want} \
                 (latent + line + fill), not label_fill {} and in_channels {}",
                m.label_fill, base.unet.in_channels
            ));
        }
    }
    Ok(LdmConfig {
        label_downsample: label_downsample(Some(m))?,
        label_fill: m.label_fill,
        region_matching: m.region_matching,
        background_latent: m.background_latent.clone(),
        region_open_strokes: m.region_open_strokes,
        region_keep_outside: m.region_keep_outside,
        layout_prior: m.layout_prior.unwrap_or(0.0) as f32,
        colour_layout_prior: m.colour_layout_prior.unwrap_or(0.0) as f32,
        frame_drawing: m.frame_drawing.unwrap_or(0.0),
        frame_exemplar: m.frame_exemplar.unwrap_or(0.0),
        close_gaps: m.close_gaps.unwrap_or(0),
        close_wide_gaps: m.close_wide_gaps,
        clear_exemplar_ground: m.clear_exemplar_ground,
        colour_transfer: m.colour_transfer,
        colour_temperature: m.colour_temperature,
        colour_gamut: match m.colour_gamut.as_deref() {
            None => ColourGamut::Clip,
            Some(s) => ColourGamut::parse(s)?,
        },
        refine_eta: m.refine_eta,
        unet_condition: m.unet_condition,
        ..base
    })
}

fn label_downsample(m: Option<&Midms>) -> Result<LabelDownsample, String> {
    match m.and_then(|m| m.label_downsample.as_deref()) {
        None => Ok(LabelDownsample::Nearest),
        Some(s) => LabelDownsample::parse(s),
    }
}

#[derive(Deserialize)]
struct Model {
    params: Params,
}

#[derive(Deserialize)]
struct Sub<T> {
    params: T,
}

fn default_timesteps() -> usize {
    1000
}
fn default_linear_start() -> f64 {
    1e-4
}
fn default_linear_end() -> f64 {
    2e-2
}
fn yes() -> bool {
    true
}
fn default_ch_mult() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn minus_one() -> i64 {
    -1
}

/// `model.params` (LDM `LatentDiffusion` / `DDPM` arguments; defaults are LDM's).
#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_timesteps")]
    timesteps: usize,
    #[serde(default = "default_linear_start")]
    linear_start: f64,
    #[serde(default = "default_linear_end")]
    linear_end: f64,
    beta_schedule: Option<String>,
    given_betas: Option<serde_yaml::Value>,
    parameterization: Option<String>,
    conditioning_key: Option<String>,
    unet_config: Sub<UnetParams>,
    first_stage_config: Sub<FirstStageParams>,
}

#[derive(Deserialize)]
struct UnetParams {
    image_size: usize,
    in_channels: usize,
    out_channels: usize,
    model_channels: usize,
    num_res_blocks: usize,
    attention_resolutions: Vec<usize>,
    #[serde(default = "default_ch_mult")]
    channel_mult: Vec<usize>,
    #[serde(default = "minus_one")]
    num_head_channels: i64,
    #[serde(default = "minus_one")]
    num_heads: i64,
    #[serde(default = "minus_one")]
    num_heads_upsample: i64,
    #[serde(default)]
    use_scale_shift_norm: bool,
    #[serde(default)]
    resblock_updown: bool,
    #[serde(default)]
    use_new_attention_order: bool,
    #[serde(default)]
    use_spatial_transformer: bool,
    #[serde(default = "yes")]
    conv_resample: bool,
    dims: Option<usize>,
    num_classes: Option<serde_yaml::Value>,
    context_dim: Option<serde_yaml::Value>,
    n_embed: Option<usize>,
}

#[derive(Deserialize)]
struct FirstStageParams {
    embed_dim: usize,
    n_embed: Option<usize>,
    ddconfig: DdConfig,
}

#[derive(Deserialize)]
struct DdConfig {
    #[serde(default = "yes")]
    double_z: bool,
    z_channels: usize,
    resolution: usize,
    in_channels: usize,
    out_ch: usize,
    ch: usize,
    #[serde(default = "default_ch_mult")]
    ch_mult: Vec<usize>,
    num_res_blocks: usize,
    attn_resolutions: Vec<usize>,
    #[serde(default = "yes")]
    resamp_with_conv: bool,
    #[serde(default)]
    give_pre_end: bool,
    #[serde(default)]
    tanh_out: bool,
    attn_type: Option<String>,
}

/// Parses `config.yaml` text.
pub fn parse_yaml(text: &str) -> Result<LdmConfig, String> {
    let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    with_midms(convert(file.model.params)?, file.midms.as_ref())
}

/// Parses JSON text: either the LDM structure itself (`{"model": ...}`) or a document holding it
/// under `ldm_config` (a parity set's `config.json`).
pub fn parse_json(text: &str) -> Result<LdmConfig, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    // A parity set keeps its `midms` section beside `ldm_config`, at the top level.
    let midms: Option<Midms> = match v.get("midms") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| format!("midms: {e}"))?,
        None => None,
    };
    let ldm = match v.get("ldm_config") {
        Some(inner) => inner.clone(),
        None if v.get("model").is_some() => v,
        None => return Err("no `ldm_config` object and no `model` object".into()),
    };
    let file: File = serde_json::from_value(ldm).map_err(|e| format!("ldm_config: {e}"))?;
    with_midms(
        convert(file.model.params)?,
        midms.as_ref().or(file.midms.as_ref()),
    )
}

fn head_option(name: &str, v: i64) -> Result<Option<usize>, String> {
    match v {
        -1 => Ok(None),
        v if v > 0 => Ok(Some(v as usize)),
        v => Err(format!("unet_config.params.{name} = {v} is invalid")),
    }
}

fn unsupported<T>(what: &str) -> Result<T, String> {
    Err(format!("{what} is not supported by midm"))
}

fn convert(p: Params) -> Result<LdmConfig, String> {
    if let Some(s) = p.beta_schedule.as_deref().filter(|s| *s != "linear") {
        return unsupported(&format!("beta_schedule {s:?}"));
    }
    if p.given_betas.as_ref().is_some_and(|v| !v.is_null()) {
        return unsupported("given_betas");
    }
    if let Some(s) = p.parameterization.as_deref().filter(|s| *s != "eps") {
        return unsupported(&format!("parameterization {s:?}"));
    }
    if let Some(c) = &p.conditioning_key {
        return unsupported(&format!(
            "conditioning_key {c:?} (MIDMs uses an unconditional LDM)"
        ));
    }
    let ddpm = DdpmConfig {
        timesteps: p.timesteps,
        linear_start: p.linear_start,
        linear_end: p.linear_end,
    };
    let autoencoder = autoencoder_config(p.first_stage_config.params)?;
    Ok(LdmConfig {
        image_size: autoencoder.resolution,
        autoencoder,
        unet: unet_config(p.unet_config.params)?,
        ddpm,
        label_downsample: LabelDownsample::Nearest,
        label_fill: false,
        region_matching: false,
        background_latent: None,
        region_open_strokes: false,
        region_keep_outside: false,
        layout_prior: 0.0,
        colour_layout_prior: 0.0,
        frame_drawing: 0.0,
        frame_exemplar: 0.0,
        close_gaps: 0,
        close_wide_gaps: None,
        clear_exemplar_ground: false,
        colour_transfer: false,
        colour_temperature: None,
        colour_gamut: ColourGamut::Clip,
        refine_eta: None,
        unet_condition: false,
    })
}

fn unet_config(u: UnetParams) -> Result<UNetConfig, String> {
    let flags = [
        (u.use_scale_shift_norm, "unet use_scale_shift_norm"),
        (u.resblock_updown, "unet resblock_updown"),
        (u.use_new_attention_order, "unet use_new_attention_order"),
        (u.use_spatial_transformer, "unet use_spatial_transformer"),
        (!u.conv_resample, "unet conv_resample: false"),
        (u.dims.is_some_and(|d| d != 2), "unet dims other than 2"),
        (
            u.num_classes.as_ref().is_some_and(|v| !v.is_null()),
            "unet num_classes (class-conditional)",
        ),
        (
            u.context_dim.as_ref().is_some_and(|v| !v.is_null()),
            "unet context_dim (cross-attention)",
        ),
        (u.n_embed.is_some(), "unet n_embed (codebook prediction)"),
    ];
    if let Some((_, what)) = flags.iter().find(|(on, _)| *on) {
        return unsupported(what);
    }
    let num_head_channels = head_option("num_head_channels", u.num_head_channels)?;
    let num_heads = head_option("num_heads", u.num_heads)?;
    if num_head_channels.is_none() && num_heads.is_none() {
        return Err("unet_config.params: either num_heads or num_head_channels must be set".into());
    }
    if u.num_heads_upsample != -1 && u.num_heads_upsample != u.num_heads {
        return unsupported("unet num_heads_upsample different from num_heads");
    }
    if u.channel_mult.is_empty() || u.model_channels == 0 || u.num_res_blocks == 0 {
        return Err(
            "unet_config.params: channel_mult, model_channels and num_res_blocks must be non-zero"
                .into(),
        );
    }
    Ok(UNetConfig {
        image_size: u.image_size,
        in_channels: u.in_channels,
        out_channels: u.out_channels,
        model_channels: u.model_channels,
        channel_mult: u.channel_mult,
        num_res_blocks: u.num_res_blocks,
        attention_resolutions: u.attention_resolutions,
        num_head_channels,
        num_heads,
    })
}

fn autoencoder_config(f: FirstStageParams) -> Result<AutoencoderConfig, String> {
    let d = f.ddconfig;
    let flags = [
        (!d.resamp_with_conv, "first stage resamp_with_conv: false"),
        (d.give_pre_end, "first stage give_pre_end"),
        (d.tanh_out, "first stage tanh_out"),
        (
            d.attn_type.as_deref().is_some_and(|a| a != "vanilla"),
            "first stage attn_type other than vanilla",
        ),
    ];
    if let Some((_, what)) = flags.iter().find(|(on, _)| *on) {
        return unsupported(what);
    }
    if d.ch_mult.is_empty() || d.ch == 0 || d.resolution == 0 {
        return Err(
            "first_stage_config ddconfig: ch_mult, ch and resolution must be non-zero".into(),
        );
    }
    let factor = 1usize << (d.ch_mult.len() - 1);
    if !d.resolution.is_multiple_of(factor) {
        return Err(format!(
            "ddconfig.resolution {} is not a multiple of the downsampling factor {factor}",
            d.resolution
        ));
    }
    let kind = match f.n_embed {
        Some(n_embed) => AutoencoderKind::Vq { n_embed },
        None => AutoencoderKind::Kl,
    };
    Ok(AutoencoderConfig {
        kind,
        embed_dim: f.embed_dim,
        z_channels: d.z_channels,
        double_z: d.double_z,
        in_channels: d.in_channels,
        out_ch: d.out_ch,
        ch: d.ch,
        ch_mult: d.ch_mult,
        num_res_blocks: d.num_res_blocks,
        attn_resolutions: d.attn_resolutions,
        resolution: d.resolution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "model:
  params:
    linear_start: 0.0015
    linear_end: 0.0195
    unet_config:
      params: {image_size: 8, in_channels: 3, out_channels: 3, model_channels: 32,
               num_res_blocks: 1, attention_resolutions: [2], channel_mult: [1, 1],
               num_head_channels: 16}
    first_stage_config:
      params:
        embed_dim: 3
        n_embed: 64
        ddconfig: {double_z: false, z_channels: 3, resolution: 32, in_channels: 3, out_ch: 3,
                   ch: 32, ch_mult: [1, 2, 1], num_res_blocks: 1, attn_resolutions: []}
";

    #[test]
    fn label_downsample_from_the_midms_section() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        assert_eq!(
            parse("").unwrap().label_downsample,
            LabelDownsample::Nearest
        );
        assert_eq!(
            parse("midms:\n  label_nc: 1\n").unwrap().label_downsample,
            LabelDownsample::Nearest
        );
        assert_eq!(
            parse("midms:\n  label_downsample: nearest\n")
                .unwrap()
                .label_downsample,
            LabelDownsample::Nearest
        );
        assert_eq!(
            parse("midms:\n  label_nc: 1\n  label_downsample: max\n")
                .unwrap()
                .label_downsample,
            LabelDownsample::Max
        );
        let err = parse("midms:\n  label_downsample: area\n").unwrap_err();
        assert!(
            err.contains("label_downsample") && err.contains("area"),
            "{err}"
        );
    }

    #[test]
    fn label_downsample_in_a_parity_config_json() {
        let ldm =
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(TINY).unwrap()).unwrap();
        let doc = |midms: serde_json::Value| {
            serde_json::json!({ "ldm_config": ldm, "midms": midms }).to_string()
        };
        let down = |m| parse_json(&doc(m)).map(|c| c.label_downsample);
        assert_eq!(
            down(serde_json::json!({"label_nc": 15})),
            Ok(LabelDownsample::Nearest)
        );
        assert_eq!(
            down(serde_json::json!({"label_downsample": "max"})),
            Ok(LabelDownsample::Max)
        );
        assert!(down(serde_json::json!({"label_downsample": 4})).is_err());
    }

    #[test]
    fn colour_temperature_is_our_models_own_and_must_be_positive() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        assert_eq!(parse("").unwrap().colour_temperature, None);
        let cfg = parse("midms:\n  colour_transfer: true\n  colour_temperature: 0.001\n").unwrap();
        assert!(cfg.colour_transfer);
        assert_eq!(cfg.colour_temperature, Some(0.001));
        for bad in ["0", "-0.01", ".nan"] {
            let err = parse(&format!("midms:\n  colour_temperature: {bad}\n")).unwrap_err();
            assert!(err.contains("colour_temperature"), "{bad}: {err}");
        }
    }

    #[test]
    fn colour_gamut_is_clip_unless_a_model_says_scale() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        assert_eq!(parse("").unwrap().colour_gamut, ColourGamut::Clip);
        let cfg = parse("midms:\n  colour_transfer: true\n  colour_gamut: scale\n").unwrap();
        assert_eq!(cfg.colour_gamut, ColourGamut::Scale);
        let err = parse("midms:\n  colour_gamut: clamp\n").unwrap_err();
        assert!(
            err.contains("colour_gamut") && err.contains("clip or scale"),
            "{err}"
        );
    }

    #[test]
    fn layout_prior_is_our_models_own_and_a_finite_weight() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        assert_eq!(parse("").unwrap().layout_prior, 0.0);
        let on = "midms:\n  region_matching: true\n  layout_prior: 3.0\n";
        assert_eq!(parse(on).unwrap().layout_prior, 3.0);
        assert_eq!(parse(on).unwrap().colour_layout_prior, 0.0);
        let colour = "midms:\n  region_matching: true\n  colour_layout_prior: 1.5\n";
        assert_eq!(parse(colour).unwrap().colour_layout_prior, 1.5);
        for key in ["layout_prior", "colour_layout_prior"] {
            for bad in ["-1.0", ".inf", ".nan"] {
                let err = parse(&format!("midms:\n  {key}: {bad}\n")).unwrap_err();
                assert!(err.contains(&format!("midms.{key}")), "{bad}: {err}");
            }
        }
    }

    #[test]
    fn framing_ground_and_gap_settings_are_our_models_own_and_checked() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        let off = parse("").unwrap();
        assert_eq!((off.frame_drawing, off.frame_exemplar), (0.0, 0.0));
        let on = parse("midms:\n  frame_drawing: 0.875\n  frame_exemplar: 0.75\n").unwrap();
        assert_eq!((on.frame_drawing, on.frame_exemplar), (0.875, 0.75));
        assert!(!on.clear_exemplar_ground);
        let cleared = parse("midms:\n  clear_exemplar_ground: true\n").unwrap();
        assert!(cleared.clear_exemplar_ground && !off.clear_exemplar_ground);
        for key in ["frame_drawing", "frame_exemplar"] {
            for bad in ["-0.5", "1.5", ".nan", ".inf"] {
                let err = parse(&format!("midms:\n  {key}: {bad}\n")).unwrap_err();
                assert!(err.contains(&format!("midms.{key}")), "{bad}: {err}");
            }
        }
        assert_eq!(off.close_gaps, 0);
        assert_eq!(parse("midms:\n  close_gaps: 3\n").unwrap().close_gaps, 3);
        assert_eq!(off.close_wide_gaps, None);
        let wide = parse("midms:\n  close_wide_gaps: [5, 8]\n").unwrap();
        assert_eq!(wide.close_wide_gaps, Some([5, 8]));
        for bad in ["[0, 8]", "[5, 17]", "[5]", "5"] {
            let err = parse(&format!("midms:\n  close_wide_gaps: {bad}\n")).unwrap_err();
            assert!(err.contains("close_wide_gaps"), "{bad}: {err}");
        }
        for bad in ["17", "-1", "2.5", "yes"] {
            let err = parse(&format!("midms:\n  close_gaps: {bad}\n")).unwrap_err();
            assert!(err.contains("close_gaps"), "{bad}: {err}");
        }
    }

    #[test]
    fn refine_eta_is_our_models_own_and_lies_in_0_1() {
        let parse = |extra: &str| parse_yaml(&format!("{TINY}{extra}"));
        assert_eq!(parse("").unwrap().refine_eta, None);
        assert_eq!(
            parse("midms:\n  refine_eta: 0.0\n").unwrap().refine_eta,
            Some(0.0)
        );
        for bad in ["-0.5", "1.5", ".nan"] {
            let err = parse(&format!("midms:\n  refine_eta: {bad}\n")).unwrap_err();
            assert!(err.contains("refine_eta"), "{bad}: {err}");
        }
    }

    #[test]
    fn unet_condition_needs_the_fill_and_two_more_unet_inputs() {
        let five = TINY.replace(
            "in_channels: 3, out_channels",
            "in_channels: 5, out_channels",
        );
        let parse = |base: &str, extra: &str| parse_yaml(&format!("{base}{extra}"));
        assert!(!parse(TINY, "").unwrap().unet_condition);
        let on = "midms:\n  label_fill: true\n  unet_condition: true\n";
        let cfg = parse(&five, on).unwrap();
        assert!(cfg.unet_condition && cfg.label_fill);
        let widths = CorrespondenceConfig {
            label_nc: 2,
            latent_channels: 3,
            n_ch: 8,
            ndf: 8,
            spade_nhidden: 8,
            trunk_blocks: 4,
            label_fill: false,
        };
        assert!(cfg.with_correspondence(widths).unet_condition);
        // A UNet without the extra inputs, or a condition without the fill channel, is refused.
        for (base, extra) in [
            (TINY, on),
            (five.as_str(), "midms:\n  unet_condition: true\n"),
        ] {
            let err = parse(base, extra).unwrap_err();
            assert!(
                err.contains("unet_condition") && err.contains("in_channels 5"),
                "{err}"
            );
        }
    }
}
