//! The background worker: owns the model, runs jobs, streams step events back to the UI.
//! TODO(helper: ui).
