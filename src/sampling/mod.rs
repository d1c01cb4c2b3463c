//! Sampling: the DDPM/DDIM schedules, the matching operations and the MIDM loop, and the
//! gallery's ranking of exemplars (`rank`, `silhouette`).
pub mod colour;
pub mod ddim;
pub mod frame;
pub mod gaps;
pub mod ground;
pub mod matching;
pub mod midm;
pub mod rank;
pub mod regions;
pub mod schedule;
pub mod silhouette;
mod warp;
