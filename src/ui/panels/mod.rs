//! The editor's panels, in the style of egui's demo app: each a struct with its own state and a
//! `ui` method. Panels never talk to the worker, the file dialogs or the disk: they push an
//! [`Action`] and the app carries it out.
pub mod canvas_view;
pub mod draw;
pub mod exemplar;
pub mod gallery;
pub mod messages;
pub mod model;
pub mod outputs;
pub mod params;
pub mod steps;
pub mod toolbar;

use std::path::PathBuf;

use egui::{ColorImage, TextureHandle, TextureOptions};
use image::RgbaImage;

/// A file dialog the app opens on a helper thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialog {
    OpenExemplar,
    OpenEdgeMap,
    EdgesFromPhoto,
    OpenModelFolder,
    OpenModelFile,
    GalleryFolder,
    ExportPng,
    ExportSheet,
}

/// What a panel asks the app to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run,
    Cancel,
    Dialog(Dialog),
    /// Save the result to the outputs folder at once (Ctrl+S).
    QuickSave,
    PasteExemplar,
    /// Use this gallery image as the exemplar.
    UseExemplar(PathBuf),
    LoadModel(PathBuf),
    /// Reload the current model (after a device or precision change).
    ReloadModel,
    /// Save into this outputs folder from now on (remembered).
    SetOutputs(PathBuf),
    /// Turn live mode on or off.
    SetLive(bool),
    /// "Run all" in the gallery (true) or stop it (false).
    Sweep(bool),
    /// Decode step i of the current run.
    Decode(usize),
    /// The probe row of latent pixel (row, column) at step i.
    Probe(usize, (usize, usize)),
}

pub fn color_image(img: &RgbaImage) -> ColorImage {
    ColorImage::from_rgba_unmultiplied([img.width() as usize, img.height() as usize], img.as_raw())
}

/// A nearest-filtered texture of `img` (the views show model pixels as squares).
pub fn texture(ctx: &egui::Context, name: &str, img: &RgbaImage) -> TextureHandle {
    ctx.load_texture(name, color_image(img), TextureOptions::NEAREST)
}
