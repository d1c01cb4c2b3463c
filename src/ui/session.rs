//! The editor's session, kept across restarts (eframe persistence): the state of each panel
//! that outlives a window, as one serde struct.
use std::path::PathBuf;

use super::app::MidmApp;
use super::canvas::{Canvas, SavedCanvas};
use super::panels::draw::DrawPanel;
use super::panels::exemplar::ExemplarPanel;
use crate::params::Params;

pub const STORAGE_KEY: &str = "midm-session";

/// The drawing panel's canvases and the condition's name.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DrawSession {
    pub canvas: Option<SavedCanvas>,
    pub exemplar_parts: Option<SavedCanvas>,
    pub condition_name: Option<String>,
}

/// The exemplar panel's image (PNG bytes, hex-encoded) and name.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExemplarSession {
    pub png: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Session {
    pub draw: DrawSession,
    pub exemplar: ExemplarSession,
    pub params: Params,
    pub model_path: Option<PathBuf>,
    /// Live mode as the user set it (`None`: on for fast models).
    pub live: Option<bool>,
    /// The outputs folder the user set (`None`: the default).
    pub outputs: Option<PathBuf>,
    /// The exemplar gallery's user folder.
    #[serde(default)]
    pub gallery_folder: Option<PathBuf>,
}

impl DrawSession {
    pub fn of(p: &DrawPanel) -> Self {
        Self {
            canvas: Some(p.canvas.to_saved()),
            exemplar_parts: Some(p.exemplar_parts.to_saved()),
            condition_name: p.condition_name.clone(),
        }
    }

    /// The panel this session describes (empty 64-pixel canvases where it holds none).
    pub fn panel(&self) -> DrawPanel {
        let size = self.canvas.as_ref().map_or(64, |c| c.size);
        let restore = |c: &Option<SavedCanvas>| {
            c.as_ref()
                .and_then(Canvas::from_saved)
                .unwrap_or_else(|| Canvas::new(size))
        };
        DrawPanel::new(
            restore(&self.canvas),
            restore(&self.exemplar_parts),
            self.condition_name.clone(),
        )
    }
}

impl ExemplarSession {
    pub fn of(p: &ExemplarPanel) -> Self {
        let Some(e) = &p.exemplar else {
            return Self::default();
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        let png = e.image.write_to(&mut buf, image::ImageFormat::Png).ok();
        Self {
            png: png.map(|()| hex(buf.get_ref())),
            name: Some(e.name.clone()),
        }
    }

    pub fn panel(&self) -> ExemplarPanel {
        let mut p = ExemplarPanel::default();
        let img = self.png.as_deref().and_then(unhex);
        if let Some(img) = img.and_then(|b| image::load_from_memory(&b).ok()) {
            p.set(img, self.name.clone().unwrap_or_else(|| "exemplar".into()));
        }
        p
    }
}

impl MidmApp {
    /// The session to persist: each panel's lasting state.
    pub(super) fn session(&self) -> Session {
        Session {
            draw: DrawSession::of(&self.draw),
            exemplar: ExemplarSession::of(&self.exemplar),
            params: self.params.clone(),
            model_path: self.model.info.as_ref().map(|m| m.path.clone()),
            live: self.live.choice,
            outputs: self.outputs_setting.clone(),
            gallery_folder: self.gallery.folder.clone(),
        }
    }

    /// Persist the session into `storage`.
    pub fn save_to(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.session());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_input() {
        assert_eq!(unhex(&hex(&[0, 15, 255])), Some(vec![0, 15, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_session_restores_the_panels() {
        let mut draw = DrawSession::default().panel();
        draw.canvas.line(
            0,
            super::super::canvas::Tool::Brush,
            1.0,
            (1.0, 1.0),
            (9.0, 9.0),
        );
        draw.condition_name = Some("a.png".into());
        let mut ex = ExemplarPanel::default();
        ex.set(
            image::DynamicImage::ImageRgba8(image::RgbaImage::new(5, 3)),
            "e.png".into(),
        );
        let s = Session {
            draw: DrawSession::of(&draw),
            exemplar: ExemplarSession::of(&ex),
            ..Session::default()
        };
        let s: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        let back = s.draw.panel();
        assert_eq!(back.canvas.layers(), draw.canvas.layers());
        assert_eq!(back.condition_name.as_deref(), Some("a.png"));
        let ex = s.exemplar.panel().exemplar.unwrap();
        assert_eq!((ex.image.dimensions(), ex.name.as_str()), ((5, 3), "e.png"));
    }
}
