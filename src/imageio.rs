//! Images <-> tensors and condition labels.
