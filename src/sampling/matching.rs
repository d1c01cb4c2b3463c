//! Matching operations: normalised correlation, soft warp, soft flow, forward-backward check.
