//! The message area: errors stay in sight until dismissed (a later info does not replace
//! them); below them, the latest info line.
use egui::Color32;

#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub error: bool,
    pub dismissed: bool,
}

#[derive(Default)]
pub struct Messages {
    /// Every message of this window, oldest first.
    pub list: Vec<Message>,
}

/// More open errors than this are summed up in one line (the oldest go first).
const MAX_SHOWN_ERRORS: usize = 4;

impl Messages {
    pub fn info(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        self.push(text, false);
    }

    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::warn!("{text}");
        self.push(text, true);
    }

    fn push(&mut self, text: String, error: bool) {
        let dismissed = false;
        self.list.push(Message {
            text,
            error,
            dismissed,
        });
    }

    pub fn last_error(&self) -> Option<&str> {
        let last = self.list.iter().rev().find(|m| m.error);
        last.map(|m| m.text.as_str())
    }

    /// The errors not dismissed yet, oldest first.
    pub fn open_errors(&self) -> impl Iterator<Item = &Message> {
        self.list.iter().filter(|m| m.error && !m.dismissed)
    }

    pub fn dismiss_errors(&mut self) {
        self.list.iter_mut().for_each(|m| m.dismissed = true);
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let red = Color32::from_rgb(230, 80, 70);
        let open: Vec<usize> = (0..self.list.len())
            .filter(|&i| self.list[i].error && !self.list[i].dismissed)
            .collect();
        let hidden = open.len().saturating_sub(MAX_SHOWN_ERRORS);
        if hidden > 0 {
            ui.horizontal(|ui| {
                ui.colored_label(red, format!("... and {hidden} earlier errors"));
                if ui.small_button("Dismiss all").clicked() {
                    self.dismiss_errors();
                }
            });
        }
        for &i in &open[hidden..] {
            ui.horizontal(|ui| {
                if ui.small_button("Dismiss").clicked() {
                    self.list[i].dismissed = true;
                }
                ui.add(egui::Label::new(egui::RichText::new(&self.list[i].text).color(red)).wrap());
            });
        }
        let info = self.list.iter().rev().find(|m| !m.error);
        ui.horizontal(|ui| match info {
            Some(m) => {
                ui.add(egui::Label::new(&m.text).wrap());
            }
            None if open.is_empty() => {
                ui.weak("Draw edges on the canvas, drop an exemplar, press Run.");
            }
            None => {}
        });
    }
}
