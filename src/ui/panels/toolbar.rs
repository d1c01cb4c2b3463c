//! The toolbar: run, cancel, export, and the status line.
use super::{Action, Dialog};
use crate::ui::panels::steps::StepsPanel;
use crate::worker::ModelInfo;

/// What the toolbar shows (it keeps no state of its own).
pub struct ToolbarView<'a> {
    pub model: Option<&'a ModelInfo>,
    pub loading: Option<&'a std::path::Path>,
    pub has_exemplar: bool,
    pub steps: &'a StepsPanel,
    pub live: bool,
}

pub fn ui(ui: &mut egui::Ui, view: &ToolbarView, actions: &mut Vec<Action>) {
    let steps = view.steps;
    ui.horizontal(|ui| {
        let can_run = view.model.is_some() && view.has_exemplar;
        if ui
            .add_enabled(can_run, egui::Button::new("Run"))
            .on_hover_text("Translate (cancels a run in flight)")
            .clicked()
        {
            actions.push(Action::Run);
        }
        if ui
            .add_enabled(steps.running, egui::Button::new("Cancel"))
            .clicked()
        {
            actions.push(Action::Cancel);
        }
        let mut live = view.live;
        if ui
            .checkbox(&mut live, "Live")
            .on_hover_text(
                "Run on every finished stroke, a pause while drawing, and every change of \
                 exemplar or parameter",
            )
            .changed()
        {
            actions.push(Action::SetLive(live));
        }
        ui.separator();
        let save = egui::Button::new("Save");
        if ui
            .add_enabled(steps.final_image().is_some(), save)
            .on_hover_text("Ctrl+S: into the outputs folder, numbered, with the parameters")
            .clicked()
        {
            actions.push(Action::QuickSave);
        }
        let export = egui::Button::new("Export PNG...");
        if ui
            .add_enabled(steps.final_image().is_some(), export)
            .on_hover_text("Save as: choose the file")
            .clicked()
        {
            actions.push(Action::Dialog(Dialog::ExportPng));
        }
        let sheet = egui::Button::new("Export steps...");
        if ui.add_enabled(!steps.frames.is_empty(), sheet).clicked() {
            actions.push(Action::Dialog(Dialog::ExportSheet));
        }
        ui.separator();
        ui.label(status(view));
        // No spinner while a run streams: its animation repaints every frame, and on a
        // software renderer each frame takes CPU from the sampler (a run took ~2x longer).
        if steps.running {
            let total = steps.frames.last().map_or(0, |f| f.total).max(1);
            let done = steps.frames.len() as f32 / total as f32;
            ui.add(egui::ProgressBar::new(done.min(1.0)).desired_width(60.0));
        } else if view.loading.is_some() {
            ui.spinner();
        }
        let t = &steps.timings;
        if let Some(first) = t.first_step {
            let mut s = format!("first step {:.0} ms", first.as_secs_f64() * 1e3);
            if let Some(f) = t.final_image {
                s += &format!(", final {:.0} ms", f.as_secs_f64() * 1e3);
            }
            if let Some((mean, _)) = t.frame_time_summary() {
                s += &format!(", UI frame {:.1} ms", mean.as_secs_f64() * 1e3);
            }
            ui.weak(s);
        }
    });
}

fn status(view: &ToolbarView) -> String {
    if let Some(p) = view.loading {
        format!("Loading {}...", p.display())
    } else if view.steps.running {
        let total = view.steps.frames.last().map(|f| f.total).unwrap_or(0);
        format!("Running: step {}/{}", view.steps.frames.len(), total)
    } else if let Some(m) = view.model {
        format!(
            "Model {} ({}px, {} ch)",
            crate::ui::file_name(&m.path),
            m.image_size,
            m.label_nc
        )
    } else {
        "No model".to_string()
    }
}
