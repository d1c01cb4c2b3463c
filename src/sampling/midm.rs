//! The MIDM sampler: initial warp, interleaved DDIM steps with re-matching and confidence
//! masking, refinement, decode. Reports an event per step to a caller-supplied sink.
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::frame::{self, Frame};
use super::schedule::{DdimSchedule, DdpmSchedule};
use super::warp::Warper;
use super::{colour, ddim, gaps, ground, matching, regions};
use crate::error::{ensure, Error, Result};
use crate::model::MidmModel;

/// Inputs of one translation (batch B; the sampler does not resize).
#[derive(Debug, Clone)]
pub struct MidmInputs {
    /// Condition label [B, label_nc, H, W], values in [0, 1].
    pub condition: Tensor,
    /// Exemplar image [B, 3, H, W], values in [-1, 1].
    pub exemplar: Tensor,
    /// Exemplar label [B, label_nc, H, W], values in [0, 1] (built like the condition).
    pub exemplar_label: Tensor,
}

/// Refinement pass settings (official: 200-step DDIM sub-schedule, eta 1, start at step 180).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefineOptions {
    pub ddim_steps: usize,
    /// DDIM eta of the pass; a model's `midms.refine_eta` (our own models) takes its place.
    pub eta: f64,
    pub hijack_step: usize,
}

impl RefineOptions {
    /// The authors' refinement settings (the only ones the front ends offer).
    pub fn official() -> Self {
        Self {
            ddim_steps: 200,
            eta: 1.0,
            hijack_step: 180,
        }
    }
}

/// Sampler settings. `Default` is the official inference configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerOptions {
    /// DDIM sub-schedule length S of the interleaved loop (official 16).
    pub ddim_steps: usize,
    /// Number of interleaved steps, taken at the end of the DDIM schedule (official 4: t_list = [12..16)).
    pub interleaved_steps: usize,
    /// Loop indices k at which x0 is re-matched and re-warped (official {1, 2}).
    pub rewarp_at: Vec<usize>,
    /// Softmax temperature of the soft warp and soft flow (official 0.005).
    pub temperature: f64,
    /// Forward-backward error threshold (official 0.5).
    pub fb_threshold: f64,
    /// Keep the re-warp only where the cycle check is confident; false = take it everywhere.
    pub use_mask: bool,
    /// None = no refinement pass (final latent = last loop x0).
    pub refine: Option<RefineOptions>,
    /// Emit the soft-warp weights (B x hw x hw) with warp events, for the correspondence probe.
    pub emit_warp_weights: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            ddim_steps: 16,
            interleaved_steps: 4,
            rewarp_at: vec![1, 2],
            temperature: 0.005,
            fb_threshold: 0.5,
            use_mask: true,
            refine: Some(RefineOptions::official()),
            emit_warp_weights: false,
        }
    }
}

/// Noise that replays the reference's random draws (all shapes [B, c, h, w] of the latent).
#[derive(Debug, Clone)]
pub struct InjectedNoise {
    /// Noise of the loop's first q_sample.
    pub loop_q: Tensor,
    /// Noise of the refinement's q_sample.
    pub refine_q: Tensor,
    /// Noise z_j of each refinement step j.
    pub refine_steps: Vec<Tensor>,
}

/// Where random numbers come from.
#[derive(Debug, Clone)]
pub enum Noise {
    /// Deterministic standard-normal draws from a seeded generator.
    Seeded(u64),
    /// One seeded generator per batch item, each drawn in the order of a single run: item i of
    /// a batch gets exactly the noise of a run of its inputs alone with `Seeded(seeds[i])`.
    SeededEach(Vec<u64>),
    Injected(InjectedNoise),
}

/// What a step event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The exemplar latent warped by the initial correlation (x0 before any diffusion).
    InitialWarp,
    /// Interleaved step k of the loop (re-matched when `rewarped`).
    Interleaved { k: usize, rewarped: bool },
    /// Refinement step i (0-based within the refinement pass).
    Refine { i: usize },
    /// The final decoded image.
    Final,
}

impl StepKind {
    /// Short name for timelines, sheets and file names: `warp`, `k1`, `r7`, `final`.
    pub fn name(self) -> String {
        match self {
            StepKind::InitialWarp => "warp".into(),
            StepKind::Interleaved { k, .. } => format!("k{k}"),
            StepKind::Refine { i } => format!("r{i}"),
            StepKind::Final => "final".into(),
        }
    }

    /// [`Self::name`] with a `*` on the interleaved steps that re-matched (timeline, sheet).
    pub fn label(self) -> String {
        match self {
            StepKind::Interleaved { rewarped: true, .. } => format!("{}*", self.name()),
            _ => self.name(),
        }
    }

    /// One sentence for the step view.
    pub fn describe(self) -> String {
        match self {
            StepKind::InitialWarp => {
                "Initial warp (exemplar latent warped by the first matching)".into()
            }
            StepKind::Interleaved { k, rewarped } => format!(
                "Interleaved step {k}{}",
                if rewarped {
                    " (re-matched and re-warped)"
                } else {
                    ""
                }
            ),
            StepKind::Refine { i } => format!("Refinement step {i}"),
            StepKind::Final => "Final image".into(),
        }
    }
}

/// One event of a run, streamed to the [`StepSink`]. Latent tensors are [B, c, h, w].
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub kind: StepKind,
    /// Position of this event in the run (0-based) and the number of events the run will emit.
    pub index: usize,
    pub total: usize,
    /// Diffusion timestep of the UNet pass of this step, if any.
    pub t: Option<usize>,
    /// Current x0 estimate r~n (for `InitialWarp`: the warped exemplar latent).
    pub pred_x0: Tensor,
    /// Exemplar latent warped by this step's matching (R), if the step matched.
    pub warped: Option<Tensor>,
    /// Confidence mask M [B, 1, h, w] (1 = re-warp kept), if the step matched.
    pub mask: Option<Tensor>,
    /// Soft-warp weights [B, h*w (target), h*w (exemplar)] when requested and the step matched.
    pub warp_weights: Option<Tensor>,
    /// Decoded image [B, 3, H, W] in about [-1, 1] (`Final` only).
    pub image: Option<Tensor>,
    /// The encoded exemplar E(y) [B, c, h, w] (`InitialWarp` only): with the exemplar image it
    /// lets a viewer fit a cheap latent-to-colour preview (see `crate::image::LatentPreview`).
    pub exemplar_latent: Option<Tensor>,
    /// The exemplar's chroma warped by the first matching ([`colour::transfer_colour`]'s
    /// `warped`; `InitialWarp` only, for a model with colour transfer): a viewer puts it onto
    /// its decodes and previews of any step, as the final image has it.
    pub colour_warped: Option<Tensor>,
    /// How each item's drawing was framed (`InitialWarp` only, for a model with
    /// `midms.frame_drawing` that framed one; [`frame`]): this event's latents, masks and
    /// warp weights are the framed drawing's, and a viewer maps what it shows back with it
    /// (`Final`'s image is back already).
    pub frames: Option<Vec<Option<Frame>>>,
    /// Which items' drawings had a gap in an outline closed (`InitialWarp` only, for a model
    /// with `midms.close_gaps` that closed one; [`gaps`]): this event's latents and masks are
    /// those of the closed drawing.
    pub closed_gaps: Option<Vec<bool>>,
    /// What the sampler did to the exemplars before using them (`InitialWarp` only, for a model
    /// that framed one or cleared its ground; [`ExemplarPrep`]): `exemplar_latent` and the warp
    /// weights are those of its `image`.
    pub exemplar: Option<ExemplarPrep>,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// Receives events; `cancelled` is polled between UNet passes.
pub trait StepSink {
    fn on_event(&mut self, event: &StepEvent);
    fn cancelled(&self) -> bool {
        false
    }
}

impl StepSink for () {
    fn on_event(&mut self, _event: &StepEvent) {}
}

/// Result of a translation.
#[derive(Debug, Clone)]
pub struct MidmOutput {
    /// Decoded image [B, 3, H, W] (not clamped, except by a model's colour transfer, whose
    /// output is in [-1, 1]), on the canvas where the model frames drawings ([`frame`]).
    pub image: Tensor,
    /// Final latent (before decode).
    pub latent: Tensor,
    /// Mask of the last re-warp (the reference returns the one of k = 2).
    pub mask: Option<Tensor>,
}

/// Run a full MIDM translation. Errors: candle errors, invalid inputs or options
/// ([`Error::Invalid`]), or [`Error::Cancelled`] when the sink asked to stop.
pub fn translate(
    model: &MidmModel,
    inputs: &MidmInputs,
    opts: &SamplerOptions,
    noise: &Noise,
    sink: &mut dyn StepSink,
) -> Result<MidmOutput> {
    validate(model, inputs, opts)?;
    let exemplar = ExemplarSide::new(model, &inputs.exemplar, &inputs.exemplar_label)?;
    translate_with_exemplar(model, inputs, &exemplar, opts, noise, sink)
}

/// [`translate`] with the exemplar side computed beforehand (it must be that of
/// `inputs.exemplar` and `inputs.exemplar_label`; the result is the same, bit for bit).
pub fn translate_with_exemplar(
    model: &MidmModel,
    inputs: &MidmInputs,
    exemplar: &ExemplarSide,
    opts: &SamplerOptions,
    noise: &Noise,
    sink: &mut dyn StepSink,
) -> Result<MidmOutput> {
    let mut run = Run::new(model, inputs, opts, noise, sink)?;
    let batch = inputs.condition.dim(0)?;
    ensure!(
        exemplar.latent.dim(0)? == batch,
        "the exemplar side has batch {}, the inputs {batch}",
        exemplar.latent.dim(0)?
    );
    run.go(exemplar)
}

/// The exemplar side of a run: the exemplar's latent E(y) and its matching features. It depends
/// on the exemplar and its label only, so a caller that runs many sketches against one exemplar
/// (the editor's live mode) computes it once: it is most of the time to the first step.
#[derive(Debug, Clone)]
pub struct ExemplarSide {
    /// E(y) [B, c, h, w].
    pub latent: Tensor,
    /// Correlation features of (E(y), label) for the initial warp (what the gallery ranks by).
    pub(crate) out: Tensor,
    /// Centred and normalised matching features, for the re-matching of the loop.
    matching: Tensor,
    /// The exemplar's shape on the latent grid, for a model with region matching
    /// ([`regions::foreground_cells`]).
    pub(crate) cells: Option<Tensor>,
    /// The exemplar's chroma to warp, for a model with colour transfer
    /// ([`colour::colour_source`]).
    colour: Option<Tensor>,
    /// The exemplar's shape [B, 1, H, W] ([`regions::exemplar_foreground`]) where the model
    /// needed it, kept so that the gallery's silhouette does not flood-fill it again.
    pub(crate) foreground: Option<Tensor>,
    /// What was done to the exemplar before anything above was made of it.
    pub prep: ExemplarPrep,
}

/// What the sampler does to each item's exemplar before making anything of it, where the model
/// says so (models v1.15 and v1.16): a plain coloured ground made white
/// (`midms.clear_exemplar_ground`, [`ground`]), then a small glyph framed
/// (`midms.frame_exemplar`, [`frame::frame_exemplars`]).
#[derive(Debug, Clone)]
pub struct ExemplarPrep {
    /// The exemplars as the model used them, [B, 3, H, W] in [-1, 1].
    pub image: Tensor,
    /// Each item's frame; a probe's heat over the used exemplar maps back with it.
    pub frames: Vec<Option<Frame>>,
    /// Whether each item's plain coloured ground was made white.
    pub cleared: Vec<bool>,
}

impl ExemplarPrep {
    /// Whether any item's exemplar was changed.
    pub fn changed(&self) -> bool {
        self.frames.iter().any(Option::is_some) || self.cleared.iter().any(|c| *c)
    }
}

impl ExemplarSide {
    /// `exemplar` [B, 3, H, W] in [-1, 1]; `label` [B, label_nc, H, W] in [0, 1].
    pub fn new(model: &MidmModel, exemplar: &Tensor, label: &Tensor) -> Result<Self> {
        let device = &model.device;
        let exemplar = exemplar.to_device(device)?.to_dtype(DType::F32)?;
        let label = label.to_device(device)?.to_dtype(DType::F32)?;
        let cfg = &model.config;
        let (prep, label, foreground) = prepared_exemplar(cfg, exemplar, label)?;
        let exemplar = &prep.image;
        let latent = model.autoencoder.encode(exemplar)?;
        let (_, _, h, w) = latent.dims4()?;
        let label_ds = model.config.label_downsample.apply(&label, h, w)?;
        let (out, matching) = model
            .correspondence
            .reference_features(&latent, &label_ds)?;
        let matching = crate::model::ops::center_and_normalize(&matching)?;
        let cells = match &foreground {
            Some(fg) if cfg.region_matching => Some(regions::foreground_cells(fg, h, w)?),
            _ => None,
        };
        let colour = match &foreground {
            Some(fg) if cfg.colour_transfer => Some(colour::colour_source(exemplar, fg, h, w)?),
            _ => None,
        };
        Ok(Self {
            latent,
            out,
            matching,
            cells,
            colour,
            foreground,
            prep,
        })
    }
}

/// The drawing as the model translates it, in its two stages.
pub(crate) struct DrawingPrep {
    /// The drawing on its canvas with its gaps closed, where the model closes them
    /// (`midms.close_gaps`, `midms.close_wide_gaps`, [`gaps`]).
    pub closed: Tensor,
    /// Whether each item had a gap closed.
    pub gaps_closed: Vec<bool>,
    /// `closed` with each small drawing framed, where the model frames them
    /// (`midms.frame_drawing`, [`frame`]): what everything after is made of.
    pub input: Tensor,
    /// Each item's frame (`None`: as it was).
    pub frames: Vec<Option<Frame>>,
}

/// What the model did to a run's inputs before using them (`midms.close_gaps` and
/// `close_wide_gaps`, `frame_drawing`, `frame_exemplar`, `clear_exemplar_ground`), in the words
/// the editor's steps panel and `midm translate` share: whether it closed a gap in the drawing's
/// outline, how much larger it saw a small drawing or exemplar glyph, whether it took the
/// exemplar off a plain coloured ground; empty when it did none of these.
pub fn preparation_note(
    gaps_closed: bool,
    drawing_scale: Option<f64>,
    exemplar_scale: Option<f64>,
    ground_cleared: bool,
) -> String {
    let mut parts = Vec::new();
    if gaps_closed {
        parts.push("the drawing with the gap in its outline closed".to_string());
    }
    if let Some(d) = drawing_scale {
        parts.push(format!(
            "the small drawing {d:.1}x larger, centred (shown back in place)"
        ));
    }
    if let Some(e) = exemplar_scale {
        parts.push(format!(
            "the exemplar's small glyph {e:.1}x larger, centred"
        ));
    }
    if ground_cleared {
        parts.push("the exemplar on white instead of its plain ground".to_string());
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!("The model saw {}.", parts.join("; ")),
    }
}

/// [`DrawingPrep`] of `condition` [B, C, H, W] for a model's config.
pub(crate) fn prepared_drawing(
    cfg: &crate::model::MidmConfig,
    condition: &Tensor,
) -> Result<DrawingPrep> {
    let b = condition.dim(0)?;
    let closings = cfg.gap_closings();
    let (closed, gaps_closed) = match closings.is_empty() {
        true => (condition.clone(), vec![false; b]),
        false => gaps::close_gaps(condition, &closings)?,
    };
    let (input, frames) = match cfg.frame_drawing {
        share if share > 0.0 => frame::frame_condition(&closed, share)?,
        _ => (closed.clone(), vec![None; b]),
    };
    Ok(DrawingPrep {
        closed,
        gaps_closed,
        input,
        frames,
    })
}

/// The exemplar as the model uses it ([`ExemplarPrep`]), its label (framed with it) and its shape
/// (flood-filled once, where region matching or colour transfer needs it).
pub(crate) fn prepared_exemplar(
    cfg: &crate::model::MidmConfig,
    exemplar: Tensor,
    label: Tensor,
) -> Result<(ExemplarPrep, Tensor, Option<Tensor>)> {
    let b = exemplar.dim(0)?;
    let (exemplar, cleared) = match cfg.clear_exemplar_ground {
        true => ground::clear_plain_ground(&exemplar)?,
        false => (exemplar, vec![false; b]),
    };
    let needs_shape = cfg.region_matching || cfg.colour_transfer;
    let shape = (needs_shape || cfg.frame_exemplar > 0.0)
        .then(|| regions::exemplar_foreground(&exemplar))
        .transpose()?;
    if cfg.frame_exemplar <= 0.0 {
        let frames = vec![None; b];
        let prep = ExemplarPrep {
            image: exemplar,
            frames,
            cleared,
        };
        return Ok((prep, label, shape));
    }
    let found = shape
        .as_ref()
        .expect("made above when the model frames exemplars");
    let (image, label, frames) =
        frame::frame_exemplars(&exemplar, &label, found, cfg.frame_exemplar)?;
    let shape = if !needs_shape {
        None
    } else if frames.iter().any(Option::is_some) {
        Some(regions::exemplar_foreground(&image)?)
    } else {
        shape
    };
    let prep = ExemplarPrep {
        image,
        frames,
        cleared,
    };
    Ok((prep, label, shape))
}

/// Draws noise in the order the reference consumes it.
enum NoiseStream<'a> {
    // Boxed: the generator's state is large next to the injected variant.
    Seeded(Box<rand::rngs::StdRng>),
    /// One generator per batch item.
    SeededEach(Vec<rand::rngs::StdRng>),
    Injected {
        noise: &'a InjectedNoise,
        refine_step: usize,
    },
}

impl NoiseStream<'_> {
    fn draw(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            NoiseStream::Seeded(rng) => {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
                Ok(Tensor::from_vec(v, shape, device)?)
            }
            NoiseStream::SeededEach(rngs) => {
                ensure!(
                    shape.first() == Some(&rngs.len()),
                    "{} seeds for a batch of shape {shape:?}",
                    rngs.len()
                );
                // Item by item, each [1, ...] from its own generator, concatenated on the batch
                // dim: the same values as a batch-1 run of that item with its seed.
                let n: usize = shape[1..].iter().product();
                let mut v = Vec::with_capacity(n * rngs.len());
                for rng in rngs.iter_mut() {
                    v.extend((0..n).map(|_| -> f32 { StandardNormal.sample(rng) }));
                }
                Ok(Tensor::from_vec(v, shape, device)?)
            }
            NoiseStream::Injected { .. } => unreachable!("injected noise is taken by name"),
        }
    }

    fn loop_q(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            NoiseStream::Injected { noise, .. } => checked(&noise.loop_q, shape, device, "loop_q"),
            _ => self.draw(shape, device),
        }
    }

    fn refine_q(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            NoiseStream::Injected { noise, .. } => {
                checked(&noise.refine_q, shape, device, "refine_q")
            }
            _ => self.draw(shape, device),
        }
    }

    fn refine_step(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            NoiseStream::Injected { noise, refine_step } => {
                let j = *refine_step;
                *refine_step += 1;
                let z = noise.refine_steps.get(j).ok_or_else(|| {
                    Error::Invalid(format!("injected noise has no refinement step {j}"))
                })?;
                checked(z, shape, device, "refine step")
            }
            _ => self.draw(shape, device),
        }
    }
}

fn checked(t: &Tensor, shape: &[usize], device: &Device, what: &str) -> Result<Tensor> {
    ensure!(
        t.dims() == shape,
        "injected {what} noise has shape {:?}, expected {shape:?}",
        t.dims()
    );
    Ok(t.to_device(device)?.to_dtype(DType::F32)?)
}

struct Run<'a> {
    model: &'a MidmModel,
    inputs: &'a MidmInputs,
    opts: &'a SamplerOptions,
    noise: NoiseStream<'a>,
    sink: &'a mut dyn StepSink,
    ddpm: DdpmSchedule,
    start: Instant,
    events: usize,
    total: usize,
    exemplar_latent: Option<Tensor>,
    colour_warped: Option<Tensor>,
    /// Each item's frame, where the model frames small drawings (`midms.frame_drawing`).
    frames: Vec<Option<Frame>>,
    /// Whether each item's drawing had gaps closed (`midms.close_gaps`).
    closed_gaps: Vec<bool>,
    /// What was done to the exemplars, where anything was ([`ExemplarSide::prep`]).
    exemplar_prep: Option<ExemplarPrep>,
    /// The drawing on the latent grid for a UNet with `midms.unet_condition`, concatenated to
    /// every UNet input ([`Run::unet`]).
    unet_condition: Option<Tensor>,
}

impl<'a> Run<'a> {
    fn new(
        model: &'a MidmModel,
        inputs: &'a MidmInputs,
        opts: &'a SamplerOptions,
        noise: &'a Noise,
        sink: &'a mut dyn StepSink,
    ) -> Result<Self> {
        validate(model, inputs, opts)?;
        let noise = match noise {
            Noise::Seeded(seed) => {
                NoiseStream::Seeded(Box::new(rand::rngs::StdRng::seed_from_u64(*seed)))
            }
            Noise::SeededEach(seeds) => {
                let b = inputs.condition.dim(0)?;
                ensure!(
                    seeds.len() == b,
                    "{} seeds for a batch of {b} (one per item)",
                    seeds.len()
                );
                NoiseStream::SeededEach(
                    seeds
                        .iter()
                        .map(|s| rand::rngs::StdRng::seed_from_u64(*s))
                        .collect(),
                )
            }
            Noise::Injected(n) => NoiseStream::Injected {
                noise: n,
                refine_step: 0,
            },
        };
        let ddpm = DdpmSchedule::new(&model.config.ddpm);
        let refine_steps = opts.refine.as_ref().map_or(0, |r| {
            DdimSchedule::new(&ddpm, r.ddim_steps, r.eta)
                .len()
                .saturating_sub(r.hijack_step)
        });
        Ok(Self {
            model,
            inputs,
            opts,
            noise,
            sink,
            ddpm,
            start: Instant::now(),
            events: 0,
            total: 1 + opts.interleaved_steps + refine_steps + 1,
            exemplar_latent: None,
            colour_warped: None,
            frames: Vec::new(),
            closed_gaps: Vec::new(),
            exemplar_prep: None,
            unet_condition: None,
        })
    }

    fn check_cancel(&self) -> Result<()> {
        if self.sink.cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        kind: StepKind,
        t: Option<usize>,
        pred_x0: &Tensor,
        warped: Option<&Tensor>,
        mask: Option<&Tensor>,
        weights: Option<&Tensor>,
        image: Option<&Tensor>,
    ) {
        let event = StepEvent {
            kind,
            index: self.events,
            total: self.total,
            t,
            pred_x0: pred_x0.clone(),
            warped: warped.cloned(),
            mask: mask.cloned(),
            warp_weights: if self.opts.emit_warp_weights {
                weights.cloned()
            } else {
                None
            },
            image: image.cloned(),
            exemplar_latent: match kind {
                StepKind::InitialWarp => self.exemplar_latent.clone(),
                _ => None,
            },
            colour_warped: match kind {
                StepKind::InitialWarp => self.colour_warped.clone(),
                _ => None,
            },
            frames: (kind == StepKind::InitialWarp && self.frames.iter().any(Option::is_some))
                .then(|| self.frames.clone()),
            closed_gaps: (kind == StepKind::InitialWarp && self.closed_gaps.contains(&true))
                .then(|| self.closed_gaps.clone()),
            exemplar: match kind {
                StepKind::InitialWarp => self.exemplar_prep.clone(),
                _ => None,
            },
            elapsed: self.start.elapsed(),
        };
        self.events += 1;
        self.sink.on_event(&event);
    }

    fn q_sample(&self, x0: &Tensor, t: usize, noise: &Tensor) -> Result<Tensor> {
        Ok(ddim::q_sample(&self.ddpm, x0, t, noise)?)
    }

    fn unet(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        self.check_cancel()?;
        let b = x.dim(0)?;
        let t = Tensor::from_vec(vec![t as u32; b], b, x.device())?;
        match &self.unet_condition {
            Some(c) => Ok(self.model.unet.forward(&Tensor::cat(&[x, c], 1)?, &t)?),
            None => Ok(self.model.unet.forward(x, &t)?),
        }
    }

    /// Refinement: a DDIM pass over the last steps of a long schedule, from `x0`; stochastic
    /// (the authors' eta 1) unless the model sets its own `midms.refine_eta`.
    fn refine(&mut self, mut x0: Tensor, refine: &RefineOptions) -> Result<Tensor> {
        let device = &self.model.device;
        let shape = x0.dims().to_vec();
        let eta = self.model.config.refine_eta.unwrap_or(refine.eta);
        let ddim = DdimSchedule::new(&self.ddpm, refine.ddim_steps, eta);
        let q = self.noise.refine_q(&shape, device)?;
        let mut x = self.q_sample(&x0, ddim.time_range(refine.hijack_step - 1), &q)?;
        for (i, s) in (refine.hijack_step..ddim.len()).enumerate() {
            let t = ddim.time_range(s);
            let c = ddim.coefficients(ddim.index_of_step(s));
            let eps = self.unet(&x, t)?;
            let step = ddim::ddim_step(&x, &eps, &c)?;
            let z = self.noise.refine_step(&shape, device)?;
            x = step.x_prev(&c, Some(&z))?;
            x0 = step.pred_x0;
            self.emit(StepKind::Refine { i }, Some(t), &x0, None, None, None, None);
        }
        Ok(x0)
    }

    /// One run: the sketch's features, the initial warp, the interleaved steps, the refinement
    /// and the decoded image, each announced to the sink as it is made.
    fn go(&mut self, exemplar: &ExemplarSide) -> Result<MidmOutput> {
        let model = self.model;
        let opts = self.opts;
        let device = &model.device;
        let corr_net = &model.correspondence;
        let condition = self
            .inputs
            .condition
            .to_device(device)?
            .to_dtype(DType::F32)?;
        // A drawing's small gaps are closed (model v1.17), as if drawn closed, and a small
        // drawing is framed (model v1.14); its image comes back in `finish`.
        let prep = prepared_drawing(&model.config, &condition)?;
        (self.closed_gaps, self.frames) = (prep.gaps_closed, prep.frames);
        let condition = prep.input;
        let ref_latent = &exemplar.latent;
        self.exemplar_prep = exemplar.prep.changed().then(|| exemplar.prep.clone());
        self.exemplar_latent = Some(ref_latent.clone());
        let (_, _, h, w) = ref_latent.dims4()?;
        let (seg_in, label_ds) = model.config.condition_on_grid(&condition)?;
        let (trg_out, trg_matching) = corr_net.target_features(&seg_in, &label_ds)?;
        self.unet_condition = model.config.unet_condition.then(|| seg_in.clone());
        let warper = Warper::new(
            model,
            opts,
            &condition,
            exemplar.cells.as_ref(),
            exemplar.colour.as_ref(),
            (h, w),
        )?;

        let initial = warper.initial(&trg_out, &exemplar.out, ref_latent)?;
        // Kept for the InitialWarp event and the final image.
        self.colour_warped = initial.colour;
        let x0 = initial.x0;
        self.emit(
            StepKind::InitialWarp,
            None,
            &x0,
            Some(&x0),
            None,
            Some(&initial.weights),
            None,
        );
        drop(initial.weights);
        let (mut x0, last_mask) = self.interleave(x0, &warper, &trg_matching, exemplar)?;
        if let Some(refine) = &opts.refine {
            x0 = self.refine(x0, refine)?;
        }
        self.finish(x0, last_mask)
    }

    /// Interleaved DDIM steps on the last `interleaved_steps` steps of the S-step schedule, from
    /// the initial warp `x0`, re-matching at `rewarp_at`: the last x0 estimate and the last mask.
    fn interleave(
        &mut self,
        mut x0: Tensor,
        warper: &Warper,
        trg_matching: &Tensor,
        exemplar: &ExemplarSide,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let opts = self.opts;
        let device = &self.model.device;
        let ddim = DdimSchedule::new(&self.ddpm, opts.ddim_steps, 0.0);
        let n = opts.interleaved_steps;
        let first = opts.ddim_steps - n;
        let mut carried: Option<(f32, Tensor)> = None; // (sqrt(a_prev), dir_xt) of the last step
        let mut last_mask = None;
        let shape = x0.dims().to_vec();
        for k in 0..n {
            self.check_cancel()?;
            let s = first + k;
            let mut rewarp = None;
            if k > 0 && opts.rewarp_at.contains(&k) {
                let feat = self
                    .model
                    .correspondence
                    .iteration_features(&x0, trg_matching)?;
                let r = warper.rematch(&feat, &exemplar.matching, &exemplar.latent)?;
                x0 = matching::masked_mix(&r.warped, &x0, &r.mask)?;
                // Kept through the UNet pass only when the probe asks for them (67 MB at the
                // official size).
                rewarp = Some((
                    r.warped,
                    r.mask,
                    opts.emit_warp_weights.then_some(r.weights),
                ));
            }
            let x_in = match &carried {
                None => {
                    let q = self.noise.loop_q(&shape, device)?;
                    self.q_sample(&x0, ddim.time_range(s - 1), &q)?
                }
                Some((sqrt_a_prev, dir_xt)) => ((&x0 * *sqrt_a_prev as f64)? + dir_xt)?,
            };
            let t = ddim.time_range(s);
            let c = ddim.coefficients(ddim.index_of_step(s));
            let eps = self.unet(&x_in, t)?;
            let step = ddim::ddim_step(&x_in, &eps, &c)?;
            carried = Some((c.sqrt_alpha_prev, step.dir_xt));
            x0 = step.pred_x0;
            let kind = StepKind::Interleaved {
                k,
                rewarped: rewarp.is_some(),
            };
            match &rewarp {
                Some((warped, mask, weights)) => {
                    self.emit(
                        kind,
                        Some(t),
                        &x0,
                        Some(warped),
                        Some(mask),
                        weights.as_ref(),
                        None,
                    );
                    last_mask = Some(mask.clone());
                }
                None => self.emit(kind, Some(t), &x0, None, None, None, None),
            }
        }
        Ok((x0, last_mask))
    }

    /// The decoded image of `x0` (with the exemplar's colours where the model transfers them),
    /// announced as the final step.
    fn finish(&mut self, x0: Tensor, last_mask: Option<Tensor>) -> Result<MidmOutput> {
        let model = self.model;
        self.check_cancel()?;
        let mut image = model.autoencoder.decode(&x0)?;
        if let Some(warped) = &self.colour_warped {
            image = colour::transfer_colour(&image, warped, model.config.colour_gamut)?;
        }
        image = frame::unframe_images(&image, &self.frames)?;
        self.emit(
            StepKind::Final,
            None,
            &x0,
            None,
            last_mask.as_ref(),
            None,
            Some(&image),
        );
        Ok(MidmOutput {
            image,
            latent: x0,
            mask: last_mask,
        })
    }
}

fn validate(model: &MidmModel, inputs: &MidmInputs, opts: &SamplerOptions) -> Result<()> {
    let cfg = &model.config;
    let size = cfg.image_size;
    let (b, c, h, w) = inputs.condition.dims4()?;
    ensure!(
        c == cfg.label_nc(),
        "the condition has {c} channels, the model expects {}",
        cfg.label_nc()
    );
    ensure!(
        (h, w) == (size, size),
        "the condition is {w}x{h}, the model expects {size}x{size}"
    );
    let (be, ce, he, we) = inputs.exemplar.dims4()?;
    ensure!(ce == 3, "the exemplar has {ce} channels, expected 3 (RGB)");
    ensure!(
        (he, we) == (size, size),
        "the exemplar is {we}x{he}, the model expects {size}x{size}"
    );
    let (bl, cl, hl, wl) = inputs.exemplar_label.dims4()?;
    ensure!(
        cl == cfg.label_nc() && (hl, wl) == (size, size),
        "the exemplar label is {cl}x{hl}x{wl}, expected {}x{size}x{size}",
        cfg.label_nc()
    );
    ensure!(
        b == be && b == bl,
        "batch sizes differ: condition {b}, exemplar {be}, label {bl}"
    );
    ensure!(opts.ddim_steps >= 1, "ddim_steps must be at least 1");
    ensure!(
        opts.interleaved_steps < opts.ddim_steps,
        "interleaved steps ({}) must be fewer than DDIM steps ({})",
        opts.interleaved_steps,
        opts.ddim_steps
    );
    ensure!(opts.temperature > 0.0, "temperature must be positive");
    if let Some(r) = &opts.refine {
        ensure!(
            r.hijack_step >= 1 && r.hijack_step < r.ddim_steps,
            "refinement start step {} must be in 1..{}",
            r.hijack_step,
            r.ddim_steps
        );
    }
    Ok(())
}
