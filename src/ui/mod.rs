//! The eframe/egui editor. Never touches tensors: it sends jobs to the [`crate::worker`] and
//! shows the RGBA images of the step events it gets back.
//!
//! - [`canvas`]: the condition's layers, strokes, undo/redo;
//! - [`export`]: PNGs with parameters in text chunks, atomic writes, the steps sheet;
//! - [`app`]: the window itself ([`MidmApp`]).
pub mod app;
pub mod canvas;
pub mod export;

use std::path::PathBuf;

pub use app::{AppArgs, MidmApp, Params};

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
        Box::new(move |cc| Ok(Box::new(MidmApp::new(&cc.egui_ctx, args, cc.storage)))),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

/// The shipped model folder, if present (`weights/` in the working directory or the crate).
pub fn default_model_dir() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("weights"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights"),
    ];
    candidates
        .into_iter()
        .find(|d| d.join("config.yaml").exists() || d.join("config.json").exists())
}

/// A sample sketch and exemplar pair from `assets/` (`NAME_sketch.png`, `NAME_exemplar.png`).
pub fn default_sample() -> Option<(PathBuf, PathBuf)> {
    let dirs = [
        PathBuf::from("assets"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"),
    ];
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut sketches: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("_sketch.png"))
            })
            .collect();
        sketches.sort();
        for s in sketches {
            let name = s
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace("_sketch.png", "_exemplar.png");
            let e = s.with_file_name(name);
            if e.exists() {
                return Some((s, e));
            }
        }
    }
    None
}
