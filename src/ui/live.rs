//! Live mode: the output follows the pen. Every finished stroke, every pause while drawing and
//! every change of exemplar or parameter starts a new run; the run in flight is cancelled at its
//! next UNet pass (any edit cancels it, see `MidmApp::ui`).
use std::time::{Duration, Instant};

use crate::params::Params;
use crate::worker::ModelInfo;

/// A pause this long while the pen is down counts as a look at the result.
pub const PAUSE: Duration = Duration::from_millis(150);

/// Live mode is on by default for models at most this size: on a 2-core CPU the shipped
/// 128-pixel model translates in about half a second, the official 256-pixel one in ~20 s.
const FAST_MODEL_SIZE: usize = 128;

/// What the run inputs are: the canvas and exemplar versions and the parameters.
pub type Inputs = ((u64, u64, u64), Params);

/// What live mode asks of the app this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStep {
    /// Nothing changed since the last run (or live mode is off).
    Idle,
    /// Start a run now.
    Run,
    /// The pen is down and moving: look again after this long.
    WaitFor(Duration),
}

#[derive(Debug, Default)]
pub struct LiveMode {
    /// The user's choice; `None` follows the model (on for fast models).
    pub choice: Option<bool>,
    /// The inputs of the last run started (by live mode or by Run).
    ran: Option<Inputs>,
    /// The inputs last seen, and when they last changed.
    seen: Option<(Inputs, Instant)>,
}

impl LiveMode {
    pub fn new(choice: Option<bool>) -> Self {
        Self {
            choice,
            ..Self::default()
        }
    }

    pub fn enabled(&self, model: Option<&ModelInfo>) -> bool {
        self.choice
            .unwrap_or_else(|| model.is_some_and(|m| m.image_size <= FAST_MODEL_SIZE))
    }

    /// A run with `inputs` was started.
    pub fn ran(&mut self, inputs: Inputs) {
        self.ran = Some(inputs);
    }

    /// Whether to run now, given the current inputs and whether the pen is down.
    pub fn poll(&mut self, now: Instant, inputs: Inputs, pen_down: bool) -> LiveStep {
        let changed_at = match &self.seen {
            Some((seen, at)) if *seen == inputs => *at,
            _ => {
                self.seen = Some((inputs.clone(), now));
                now
            }
        };
        if self.ran.as_ref() == Some(&inputs) {
            return LiveStep::Idle;
        }
        let quiet = now.saturating_duration_since(changed_at);
        match pen_down && quiet < PAUSE {
            true => LiveStep::WaitFor(PAUSE - quiet),
            false => LiveStep::Run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(v: u64) -> Inputs {
        ((v, 0, 0), Params::default())
    }

    #[test]
    fn runs_on_a_finished_stroke_and_after_a_pause_while_drawing() {
        let mut live = LiveMode::new(Some(true));
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // First look: never ran, pen up -> run.
        assert_eq!(live.poll(t0, inputs(0), false), LiveStep::Run);
        live.ran(inputs(0));
        assert_eq!(live.poll(ms(5), inputs(0), false), LiveStep::Idle);
        // Drawing: every move is a change; no run while the pen keeps moving.
        assert_eq!(live.poll(ms(10), inputs(1), true), LiveStep::WaitFor(PAUSE));
        assert_eq!(live.poll(ms(60), inputs(2), true), LiveStep::WaitFor(PAUSE));
        assert_eq!(
            live.poll(ms(110), inputs(2), true),
            LiveStep::WaitFor(Duration::from_millis(100))
        );
        // A pause of 150 ms with the pen down -> run.
        assert_eq!(live.poll(ms(210), inputs(2), true), LiveStep::Run);
        live.ran(inputs(2));
        assert_eq!(live.poll(ms(220), inputs(2), true), LiveStep::Idle);
        // The stroke goes on and ends: run at once on pen up.
        assert_eq!(
            live.poll(ms(230), inputs(3), true),
            LiveStep::WaitFor(PAUSE)
        );
        assert_eq!(live.poll(ms(240), inputs(3), false), LiveStep::Run);
        // A parameter change is a change too.
        live.ran(inputs(3));
        let mut p = inputs(3);
        p.1.seed += 1;
        assert_eq!(live.poll(ms(300), p, false), LiveStep::Run);
    }

    #[test]
    fn on_by_default_only_for_fast_models() {
        let info = |size| ModelInfo {
            path: "m".into(),
            image_size: size,
            latent_size: size / 4,
            label_nc: 1,
            frame_drawing: 0.0,
            gap_closings: Vec::new(),
            hash: String::new(),
            device: Default::default(),
            precision: Default::default(),
            load_time: Duration::ZERO,
        };
        let auto = LiveMode::new(None);
        assert!(auto.enabled(Some(&info(128))));
        assert!(!auto.enabled(Some(&info(256))));
        assert!(!auto.enabled(None));
        assert!(!LiveMode::new(Some(false)).enabled(Some(&info(128))));
        assert!(LiveMode::new(Some(true)).enabled(Some(&info(256))));
    }
}
