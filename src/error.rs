//! The library's one error type. The front ends (the `midm` binary, the editor) wrap it in
//! `anyhow` where they add context for the user.
use crate::checkpoint::LoadError;
use crate::image::ImageError;
use crate::image::LabelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run's sink asked it to stop (a newer run superseded it, or the user cancelled).
    #[error("run cancelled")]
    Cancelled,
    /// Inputs or options a run cannot use (wrong sizes, channels, step counts, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }
}

/// `anyhow::ensure!` for [`Error::Invalid`]: return it with the formatted message unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if $cond {
        } else {
            return Err($crate::error::Error::Invalid(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;
