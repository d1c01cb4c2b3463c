//! The eframe/egui editor. Never touches tensors: it sends jobs to the worker and shows the
//! RGBA images of the step events it gets back. TODO(helper: ui).
