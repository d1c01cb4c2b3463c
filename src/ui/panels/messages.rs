//! The message line: the latest info or error, dismissable.
use egui::Color32;

#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

#[derive(Default)]
pub struct Messages {
    pub list: Vec<Message>,
}

impl Messages {
    pub fn info(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        self.list.push(Message { text, error: false });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::warn!("{text}");
        self.list.push(Message { text, error: true });
    }

    pub fn last_error(&self) -> Option<&str> {
        let last = self.list.iter().rev().find(|m| m.error);
        last.map(|m| m.text.as_str())
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let Some(m) = self.list.last() else {
                ui.weak("Draw edges on the canvas, drop an exemplar, press Run.");
                return;
            };
            let color = match m.error {
                true => Color32::from_rgb(230, 80, 70),
                false => ui.visuals().text_color(),
            };
            ui.colored_label(color, &m.text);
            if ui
                .small_button("Dismiss")
                .on_hover_text("Dismiss")
                .clicked()
            {
                self.list.pop();
            }
        });
    }
}
