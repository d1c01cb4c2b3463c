//! Sampling: the DDPM/DDIM schedules, the matching operations and the MIDM loop.
pub mod colour;
pub mod ddim;
pub mod matching;
pub mod midm;
pub mod rank;
pub mod regions;
pub mod schedule;
