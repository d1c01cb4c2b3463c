//! midm: exemplar-based image translation with Matching Interleaved Diffusion Models
//! (MIDMs, Seo et al., AAAI 2023), inference in candle.
//!
//! Layout:
//! - [`model`]: the networks (autoencoder, UNet, correspondence encoders), built from a
//!   [`model::MidmConfig`] with VarBuilder paths equal to the official checkpoint keys;
//! - [`checkpoint`]: finding and loading weights (safetensors, PyTorch zip/pickle) and the LDM config;
//! - [`sampling`]: DDPM/DDIM schedules, the matching operations and the MIDM loop;
//! - [`imageio`]: images <-> tensors, condition labels;
//! - [`edges`]: Canny edges and condition labels from edges and part strokes (no tensors);
//! - [`worker`]: the background thread the editor talks to;
//! - [`ui`]: the eframe editor (never touches tensors).

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod edges;
pub mod imageio;
pub mod model;
pub mod sampling;
pub mod ui;
pub mod worker;

pub use checkpoint::{load_model, LoadError};
pub use model::{MidmConfig, MidmModel};
pub use sampling::midm::{
    translate, Cancelled, InjectedNoise, MidmInputs, MidmOutput, Noise, SamplerOptions, StepEvent,
    StepKind, StepSink,
};
