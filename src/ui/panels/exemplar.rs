//! The exemplar: open / paste / drop, the Canny settings of its label, and its edge preview
//! (computed on a helper thread: Canny is too slow for the UI thread at larger sizes).
use crossbeam_channel::{unbounded, Receiver, Sender};
use egui::{load::SizedTexture, Color32, Sense, Stroke, TextureHandle, TextureOptions, Vec2};
use image::{imageops::FilterType, DynamicImage, GrayImage, RgbaImage};

use super::{color_image, texture, Action, Dialog};
use crate::image::{canny_edges, CannyParams};
use crate::ui::compose;

/// Longest side an exemplar is kept at (it is resized to the model's resolution per run).
const EXEMPLAR_MAX_SIDE: u32 = 512;

/// (model size, Canny settings, exemplar version): what an edge preview was computed for.
type EdgesKey = (u32, CannyParams, u64);
/// An edge preview from its helper thread.
type EdgesResult = (EdgesKey, GrayImage);

pub struct Exemplar {
    pub image: RgbaImage,
    pub name: String,
}

pub struct ExemplarPanel {
    pub exemplar: Option<Exemplar>,
    /// Bumped on every new exemplar.
    pub version: u64,
    edges: Option<EdgesResult>,
    edges_pending: Option<EdgesKey>,
    edges_channel: (Sender<EdgesResult>, Receiver<EdgesResult>),
    tex: Option<(TextureHandle, u64)>,
    edges_tex: Option<TextureHandle>,
}

impl Default for ExemplarPanel {
    fn default() -> Self {
        Self {
            exemplar: None,
            version: 0,
            edges: None,
            edges_pending: None,
            edges_channel: unbounded(),
            tex: None,
            edges_tex: None,
        }
    }
}

impl ExemplarPanel {
    pub fn set(&mut self, img: DynamicImage, name: String) {
        let img = if img.width().max(img.height()) > EXEMPLAR_MAX_SIDE {
            img.resize(EXEMPLAR_MAX_SIDE, EXEMPLAR_MAX_SIDE, FilterType::Triangle)
        } else {
            img
        };
        self.exemplar = Some(Exemplar {
            image: img.to_rgba8(),
            name,
        });
        self.version += 1;
    }

    /// The edge preview at `size` with `canny`, if computed; starts computing it otherwise
    /// (the context is repainted when it is ready).
    pub fn edges(
        &mut self,
        ctx: &egui::Context,
        size: u32,
        canny: CannyParams,
    ) -> Option<&GrayImage> {
        while let Ok((key, edges)) = self.edges_channel.1.try_recv() {
            if self.edges_pending == Some(key) {
                self.edges_pending = None;
            }
            self.edges = Some((key, edges));
            self.edges_tex = None;
        }
        let key = (size, canny, self.version);
        let current = self.edges.as_ref().is_some_and(|(k, _)| *k == key);
        if !current && self.edges_pending != Some(key) {
            if let Some(ex) = &self.exemplar {
                let image = DynamicImage::ImageRgba8(ex.image.clone());
                let tx = self.edges_channel.0.clone();
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send((key, canny_edges(&image, key.0, key.1)));
                    ctx.request_repaint();
                });
                self.edges_pending = Some(key);
            }
        }
        self.edges.as_ref().map(|(_, e)| e)
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        canny: &mut CannyParams,
        (label_nc, model_size): (usize, u32),
        actions: &mut Vec<Action>,
    ) {
        // Taken first: a row wider than the column (the sliders) would widen what is left.
        let width = ui.available_width();
        ui.strong("Exemplar");
        ui.horizontal(|ui| {
            if ui.button("Open...").clicked() {
                actions.push(Action::Dialog(Dialog::OpenExemplar));
            }
            if ui.button("Paste").on_hover_text("Ctrl+V").clicked() {
                actions.push(Action::PasteExemplar);
            }
        });
        ui.add(egui::Slider::new(&mut canny.low, 0.0..=300.0).text("Canny low"));
        ui.add(egui::Slider::new(&mut canny.high, 0.0..=600.0).text("Canny high"));
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut canny.dilate, 0..=3).text("line width +"));
            if ui.small_button("model default").clicked() {
                *canny = CannyParams::for_label_nc(label_nc);
            }
        });
        // The exemplar and its edges side by side, in the width the window leaves.
        let fit = (width - ui.spacing().item_spacing.x) / 2.0;
        let side = (model_size as f32 * 2.0)
            .clamp(128.0, 256.0)
            .min(fit)
            .max(64.0);
        let Some(ex) = &self.exemplar else {
            return drop_here(ui, side);
        };
        if self.tex.as_ref().is_none_or(|(_, v)| *v != self.version) {
            let tex =
                ui.ctx()
                    .load_texture("exemplar", color_image(&ex.image), TextureOptions::LINEAR);
            self.tex = Some((tex, self.version));
        }
        let ctx = ui.ctx().clone();
        if self.edges(&ctx, model_size, *canny).is_some() && self.edges_tex.is_none() {
            let img = compose::edges_preview(&self.edges.as_ref().unwrap().1);
            self.edges_tex = Some(texture(&ctx, "exemplar-edges", &img));
        }
        let size = Vec2::splat(side);
        ui.horizontal(|ui| {
            if let Some((tex, _)) = &self.tex {
                ui.add(egui::Image::from_texture(SizedTexture::new(tex.id(), size)));
            }
            if let Some(tex) = &self.edges_tex {
                ui.add(egui::Image::from_texture(SizedTexture::new(tex.id(), size)))
                    .on_hover_text("automatic edges (exemplar label)");
            }
        });
        if let Some(e) = &self.exemplar {
            ui.weak(&e.name);
        }
    }
}

fn drop_here(ui: &mut egui::Ui, side: f32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(side * 2.0 + 8.0, side), Sense::hover());
    let stroke = Stroke::new(1.0, Color32::GRAY);
    ui.painter()
        .rect_stroke(rect, 4.0, stroke, egui::StrokeKind::Inside);
    ui.painter().text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        "Drop an exemplar image here",
        egui::FontId::proportional(14.0),
        ui.visuals().weak_text_color(),
    );
}
