//! The eframe/egui editor. Never touches tensors: it sends jobs to the [`crate::worker`] and
//! shows the RGBA images of the step events it gets back.
//!
//! - [`app`]: the window ([`MidmApp`]): layout, shortcuts, dispatch of the panels' actions;
//! - `panels`: toolbar, parameters, model, drawing, exemplar, steps (each a struct with `ui`);
//! - `actions`, `events`: what the app does for the user, and the worker's events;
//! - `gallery`: the exemplar gallery's rankings (asked of the worker) and picks;
//! - [`canvas`]: the condition's layers, strokes, undo/redo;
//! - [`compose`]: pure image compositing of the views (canvas, mask overlay, probe, edges);
//! - [`export`]: PNGs with parameters in text chunks, the steps sheet;
//! - [`live`]: live mode, runs that follow the pen;
//! - [`session`]: what is kept across restarts.
mod actions;
pub mod app;
pub mod canvas;
pub mod compose;
mod events;
pub mod export;
mod gallery;
pub mod live;
pub mod outputs;
mod panels;
pub mod session;

use std::path::PathBuf;

pub use app::{MidmApp, Params};

/// Command-line inputs of the editor.
#[derive(Debug, Clone, Default)]
pub struct AppArgs {
    /// Model folder or file; default: `$MIDM_MODEL`, the shipped `weights/`, else the last one used.
    pub model: Option<PathBuf>,
    /// Condition edge map to start from.
    pub condition: Option<PathBuf>,
    /// Exemplar image to start from.
    pub exemplar: Option<PathBuf>,
    /// Start a run as soon as the model is loaded.
    pub run: bool,
    /// Start empty: no persisted session, no default model or sample pair (tests).
    pub fresh: bool,
    /// The window is drawn on the CPU (e.g. Mesa's lavapipe): streamed steps repaint less often,
    /// so that the frames take less from the sampler (see `app::stream_repaint_gap`).
    pub software_renderer: bool,
}

/// The file name of `p` (for messages and export metadata).
pub(crate) fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Open the editor window and block until it is closed.
pub fn run_app(args: AppArgs) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("midm")
            .with_inner_size([1280.0, 860.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "midm",
        options,
        Box::new(move |cc| {
            let software_renderer = cc.wgpu_render_state.as_ref().is_some_and(|rs| {
                rs.adapter.get_info().device_type == eframe::wgpu::DeviceType::Cpu
            });
            let args = AppArgs {
                software_renderer,
                ..args
            };
            Ok(Box::new(MidmApp::new(&cc.egui_ctx, args, cc.storage)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}
