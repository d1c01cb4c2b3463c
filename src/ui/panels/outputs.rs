//! The outputs folder setting: where Ctrl+S (and an export without a file dialog) saves.
use std::path::PathBuf;

use super::Action;

#[derive(Default)]
pub struct OutputsPanel {
    /// The folder as typed (applied on Enter or when the field loses focus).
    text: String,
    shown: PathBuf,
}

impl OutputsPanel {
    /// `root` is the folder in effect; `from_env` says `$MIDM_OUTPUTS` set it.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        root: &PathBuf,
        from_env: bool,
        actions: &mut Vec<Action>,
    ) {
        if &self.shown != root {
            self.shown = root.clone();
            self.text = root.display().to_string();
        }
        ui.strong("Outputs");
        let edit = ui
            .add(egui::TextEdit::singleline(&mut self.text).desired_width(f32::INFINITY))
            .on_hover_text("Ctrl+S saves here, in a folder per day: NNNNN-seedS.png");
        let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if (enter || edit.lost_focus()) && self.text.trim() != root.display().to_string() {
            let text = self.text.trim();
            if !text.is_empty() {
                actions.push(Action::SetOutputs(PathBuf::from(text)));
            }
        }
        if from_env {
            ui.weak("set by $MIDM_OUTPUTS for this launch");
        }
    }
}
