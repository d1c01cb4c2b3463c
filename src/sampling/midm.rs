//! The MIDM sampler: initial warp, interleaved DDIM steps with re-matching and confidence
//! masking, refinement, decode. Reports an event per step to a caller-supplied sink.
use std::time::Duration;

use candle_core::Tensor;

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
    pub eta: f64,
    pub hijack_step: usize,
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
            refine: Some(RefineOptions { ddim_steps: 200, eta: 1.0, hijack_step: 180 }),
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
    /// Time since the run started.
    pub elapsed: Duration,
}

/// The run was cancelled by the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("run cancelled")]
pub struct Cancelled;

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
    /// Decoded image [B, 3, H, W] (not clamped).
    pub image: Tensor,
    /// Final latent (before decode).
    pub latent: Tensor,
    /// Mask of the last re-warp (the reference returns the one of k = 2).
    pub mask: Option<Tensor>,
}

/// Run a full MIDM translation. Errors: candle errors, or [`Cancelled`] (downcast the anyhow error).
pub fn translate(
    _model: &MidmModel,
    _inputs: &MidmInputs,
    _opts: &SamplerOptions,
    _noise: &Noise,
    _sink: &mut dyn StepSink,
) -> anyhow::Result<MidmOutput> {
    todo!()
}
