//! `midm bench --worker`: runs through the editor's worker, without a window. It times what the
//! editor's status line reports (Run to first streamed step, Run to final image), then cancels a
//! run half way and runs again, as a user who edits mid-run does. On a GPU this proves the
//! worker path on that device; on a CPU it separates the worker's own cost from the renderer's.
use std::path::Path;
use std::time::{Duration, Instant};

use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::MidmModel;
use crate::sampling::midm::StepKind;
use crate::worker::{RunRequest, WorkerEvent, WorkerHandle};

const TIMEOUT: Duration = Duration::from_secs(600);

/// What one bench of the worker measured.
#[derive(Debug, Clone, Default)]
pub struct WorkerBench {
    /// Per timed run: Run -> first streamed step, Run -> final image.
    pub first_step: Vec<Duration>,
    pub final_image: Vec<Duration>,
    /// Steps streamed by each run.
    pub steps: usize,
    /// A run cancelled once half its steps had streamed: cancel -> `Cancelled`.
    pub cancel: Duration,
    /// The run started right after the cancel: Run -> final image.
    pub after_cancel: Duration,
    /// The sampler's threads: the editor's ([`crate::worker::editor_sampler_threads`]).
    pub threads: usize,
}

fn next_event(w: &WorkerHandle, start: Instant) -> Result<WorkerEvent> {
    let left = TIMEOUT.saturating_sub(start.elapsed());
    match w.recv_timeout(left) {
        Some(WorkerEvent::Failed { error, .. }) => {
            Err(Error::Invalid(format!("run failed: {error}")))
        }
        Some(WorkerEvent::LoadFailed { error, .. }) => {
            Err(Error::Invalid(format!("load failed: {error}")))
        }
        Some(e) => Ok(e),
        None => Err(Error::Invalid(format!("no worker event in {TIMEOUT:?}"))),
    }
}

impl WorkerBench {
    /// The figures on stdout, for a worker on `device` after `warmup` runs.
    pub fn print(&self, device: DeviceChoice, warmup: usize) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let summary = |v: &[Duration]| match (v.iter().min(), v.iter().max()) {
            (Some(&lo), Some(&hi)) => format!(
                "median {:8.1} ms  (min {:.1}, max {:.1})",
                ms(super::median(v.to_vec())),
                ms(lo),
                ms(hi)
            ),
            _ => "no runs".into(),
        };
        println!(
            "worker on {device:?} ({} sampler thread(s), as in the editor), {} runs after {warmup} warm-up, {} steps streamed per run:",
            self.threads,
            self.final_image.len(),
            self.steps
        );
        println!(
            "  Run -> first streamed step       {}",
            summary(&self.first_step)
        );
        println!(
            "  Run -> final image               {}",
            summary(&self.final_image)
        );
        println!(
            "  cancel half way -> Cancelled     {:8.1} ms",
            ms(self.cancel)
        );
        println!(
            "  the next run -> final image      {:8.1} ms",
            ms(self.after_cancel)
        );
    }
}

/// One run of `request`: (first step, final image, steps), timed from the request.
fn timed_run(w: &WorkerHandle, request: &RunRequest) -> Result<(Duration, Duration, usize)> {
    let t0 = Instant::now();
    let g = w.run(request.clone());
    let (mut first, mut steps) = (None, 0);
    loop {
        match next_event(w, t0)? {
            WorkerEvent::Step { generation, frame } if generation == g => {
                steps += 1;
                first.get_or_insert(t0.elapsed());
                if frame.kind == StepKind::Final {
                    return Ok((first.unwrap_or_default(), t0.elapsed(), steps));
                }
            }
            WorkerEvent::Cancelled { generation } if generation == g => {
                return Err(Error::Invalid("the timed run was cancelled".into()))
            }
            _ => {}
        }
    }
}

/// Installs `model` on a new worker, then `warmup` + `runs` runs of `request`, then the cancel.
pub fn bench_worker(
    model: MidmModel,
    model_path: &Path,
    device: DeviceChoice,
    request: &RunRequest,
    warmup: usize,
    runs: usize,
) -> Result<WorkerBench> {
    // The editor's thread rule, so that this times what the editor runs (without its window,
    // whose core then idles).
    let threads = crate::worker::editor_sampler_threads();
    let mut w = WorkerHandle::spawn_with(Some(threads), |_| {});
    let t0 = Instant::now();
    w.install(model, model_path, device);
    while !matches!(next_event(&w, t0)?, WorkerEvent::ModelLoaded(_)) {}
    let mut bench = WorkerBench {
        threads,
        ..Default::default()
    };
    for i in 0..warmup + runs {
        let (first, last, steps) = timed_run(&w, request)?;
        if i >= warmup {
            bench.first_step.push(first);
            bench.final_image.push(last);
            bench.steps = steps;
        }
    }
    // Cancel half way, as an edit does, then run again.
    let t0 = Instant::now();
    let g = w.run(request.clone());
    let cancelled_at = loop {
        if let WorkerEvent::Step { generation, frame } = next_event(&w, t0)? {
            if generation == g && 2 * (frame.index + 1) >= frame.total {
                w.cancel();
                break Instant::now();
            }
        }
    };
    loop {
        match next_event(&w, t0)? {
            WorkerEvent::Cancelled { generation } if generation == g => break,
            WorkerEvent::Finished { generation, .. } if generation == g => {
                return Err(Error::Invalid(
                    "the run finished although it was cancelled".into(),
                ))
            }
            _ => {}
        }
    }
    bench.cancel = cancelled_at.elapsed();
    bench.after_cancel = timed_run(&w, request)?.1;
    if !w.shutdown(TIMEOUT) {
        return Err(Error::Invalid(format!(
            "the worker did not stop in {TIMEOUT:?}"
        )));
    }
    Ok(bench)
}
