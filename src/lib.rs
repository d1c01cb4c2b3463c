//! midm: exemplar-based image translation with Matching Interleaved Diffusion Models
//! (MIDMs, Seo et al., AAAI 2023), inference in candle.
//!
//! Layout:
//! - [`model`]: the networks (autoencoder, UNet, correspondence encoders), built from a
//!   [`model::MidmConfig`] with VarBuilder paths equal to the official checkpoint keys;
//! - [`checkpoint`]: finding and loading weights (safetensors, PyTorch zip/pickle) and the LDM config;
//! - [`sampling`]: DDPM/DDIM schedules, the matching operations and the MIDM loop;
//! - [`params`]: what the CLI and the editor share (parameters, defaults, PNG metadata);
//! - [`image`]: image files, edge maps, Canny, condition labels, tensors, PNG metadata;
//! - [`batch`]: `midm batch` (manifests, resumable batched runs, shards, contact sheets);
//! - [`worker`]: the background thread the editor talks to;
//! - `ui`: the eframe editor (never touches tensors), behind the default `gui` feature.

pub mod alloc;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod error;
pub mod image;
pub mod model;
pub mod params;
pub mod sampling;
#[cfg(feature = "gui")]
pub mod ui;
pub mod worker;

pub use checkpoint::{load_model, LoadError};
pub use error::{Error, Result};
pub use model::{MidmConfig, MidmModel};
pub use sampling::midm::{
    translate, InjectedNoise, MidmInputs, MidmOutput, Noise, SamplerOptions, StepEvent, StepKind,
    StepSink,
};
