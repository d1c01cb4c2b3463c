//! The model: device, precision, the model path, and what is loaded.
use std::path::PathBuf;

use super::{Action, Dialog};
use crate::device::DeviceChoice;
use crate::model::Precision;
use crate::params::Params;
use crate::worker::ModelInfo;

#[derive(Default)]
pub struct ModelPanel {
    /// The loaded model.
    pub info: Option<ModelInfo>,
    /// The model being loaded (the current one stays until it succeeds).
    pub loading: Option<PathBuf>,
    pub path_text: String,
}

impl ModelPanel {
    /// Device and precision live in `params` (they are saved with the session).
    pub fn ui(&mut self, ui: &mut egui::Ui, params: &mut Params, actions: &mut Vec<Action>) {
        ui.heading("Model");
        ui.horizontal(|ui| {
            let before = (params.device, params.precision);
            egui::ComboBox::from_label("Device")
                .selected_text(match params.device {
                    DeviceChoice::Cpu => "CPU".to_string(),
                    DeviceChoice::Cuda(i) => format!("CUDA {i}"),
                })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut params.device, DeviceChoice::Cpu, "CPU");
                    if DeviceChoice::cuda_compiled() {
                        let cuda = DeviceChoice::Cuda(0);
                        ui.selectable_value(&mut params.device, cuda, "CUDA 0");
                    }
                });
            // Half precision pays off on a GPU; on a CPU it is slower than f32 (no native f16 GEMM).
            egui::ComboBox::from_label("Precision")
                .selected_text(params.precision.name())
                .show_ui(ui, |ui| {
                    for p in [Precision::F32, Precision::F16, Precision::Bf16] {
                        ui.selectable_value(&mut params.precision, p, p.name());
                    }
                });
            if before != (params.device, params.precision) && self.info.is_some() {
                actions.push(Action::ReloadModel);
            }
        });
        if !DeviceChoice::cuda_compiled() {
            ui.weak("(built without CUDA)");
        }
        ui.add(egui::TextEdit::singleline(&mut self.path_text).hint_text("model folder or file"));
        ui.horizontal(|ui| {
            if ui.button("Load").clicked() && !self.path_text.trim().is_empty() {
                actions.push(Action::LoadModel(PathBuf::from(self.path_text.trim())));
            }
            if ui.button("Folder...").clicked() {
                actions.push(Action::Dialog(Dialog::OpenModelFolder));
            }
            if ui.button("File...").clicked() {
                actions.push(Action::Dialog(Dialog::OpenModelFile));
            }
        });
        if let Some(m) = &self.info {
            ui.weak(format!(
                "{}\nhash {}\n{}x{} px, latent {}x{}",
                m.path.display(),
                m.hash,
                m.image_size,
                m.image_size,
                m.latent_size,
                m.latent_size
            ));
        }
    }
}
