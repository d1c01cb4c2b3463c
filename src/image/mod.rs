//! Images: files, pixels, edges, condition labels, tensors, PNG metadata. Layered without
//! cycles: [`raster`] (pixels only) <- [`edges`] (Canny, labels) <- [`tensor`] (images and
//! labels as tensors) <- [`preview`] (latent-to-colour previews); [`png`] (text chunks, atomic
//! writes) stands alone.
//!
//! Conventions: RGB images become [1, 3, H, W] tensors in [-1, 1]; condition labels are
//! [1, C, H, W] in [0, 1] where 1 marks an edge (or, for distance-map channels, the value the
//! model was trained with).
pub mod edges;
pub mod png;
pub mod preview;
pub mod raster;
pub mod tensor;

use std::path::PathBuf;

pub use self::png::{read_png_text, save_png, write_atomic};
pub use edges::{
    build_label, canny_edges, empty_parts, CannyParams, Label, LabelError, CELEBA_LABEL_NC, PARTS,
};
pub use preview::LatentPreview;
pub use raster::{edge_map, flatten_alpha, read_image};
pub use tensor::{
    edge_label, load_condition, load_exemplar, rgb_to_tensor, tensor_to_grey, tensor_to_rgb, Notes,
};

/// Errors reading or writing images, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read image: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{0}")]
    Condition(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
