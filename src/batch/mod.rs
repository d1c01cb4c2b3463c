//! `midm batch`: many translations with one model load, B pairs per sampler call.
//!
//! - [`manifest`]: the pairs (CSV, JSON Lines, or a grid), read as a stream, and `--shard`;
//! - [`run`]: loading, resuming (results with matching metadata are skipped), batched sampling,
//!   atomic writes with the editor's PNG metadata, per-pair failures;
//! - [`sheet`]: the contact sheet of the results, written band by band.
pub mod manifest;
pub mod run;
pub mod sheet;

pub use manifest::{Entry, Grid, Manifest, Pair, Shard};
pub use run::{
    load_inputs, run_batch, translate_seeded, translate_seeded_until, BatchConfig, Outcome,
    PairReport, SheetRow, Summary,
};
pub use sheet::{write_sheet, SheetLayout};
