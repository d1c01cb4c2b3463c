//! The background worker: owns the model, runs jobs, streams step events back to the UI.
//!
//! Requests go in over one crossbeam channel, [`WorkerEvent`]s come back over another. Every
//! event carries only what the UI shows (RGBA images, one probe row), so the UI never sees a
//! tensor: the worker keeps each run's latents and soft-warp matrices and the UI asks for a
//! decode of step i ([`WorkerHandle::decode`]) or the probe row of a pixel at step i
//! ([`WorkerHandle::probe`]). Condition labels (Canny, distance transforms) are built here too,
//! from the canvas layers a [`RunRequest`] carries. Each run gets a generation number;
//! submitting a run or calling [`WorkerHandle::cancel`] bumps the shared counter, and the
//! sampler's sink reports `cancelled()` as soon as its generation is no longer the newest, so a
//! stale run stops at the next UNet pass. Panics in a job are caught and reported; the thread keeps serving, and
//! [`WorkerHandle::ensure_alive`] respawns it should it ever die. A ranking of exemplars
//! ([`WorkerHandle::rank`]) yields to runs: it stops between exemplars once a run was submitted.
mod rank;
mod serve;
mod sweep;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use image::{GrayImage, RgbaImage};

use crate::device::DeviceChoice;
use crate::image::{CannyParams, Label};
use crate::model::{MidmModel, Precision};
use crate::sampling::midm::{SamplerOptions, StepKind};
pub use crate::sampling::rank::RankScore;
use rank::RankJob;
use serve::Worker;
use sweep::SweepJob;

/// What the UI needs to know about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub image_size: usize,
    pub latent_size: usize,
    pub label_nc: usize,
    /// The model's `midms.frame_drawing` (0: it frames no drawing), for the editor to show the
    /// frame of a small drawing before a run.
    pub frame_drawing: f64,
    /// The model's gap closings (`midms.close_gaps`, `midms.close_wide_gaps`; empty: none), for
    /// the editor to show the gaps it closes before a run.
    pub gap_closings: Vec<crate::sampling::gaps::GapClosing>,
    /// [`crate::checkpoint::LoadReport::model_hash`] (the hash the CLI records too).
    pub hash: String,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub load_time: Duration,
}

/// A condition label, or what the worker builds it from with [`crate::image::build_label`].
#[derive(Debug, Clone)]
pub enum LabelInput {
    Built(Label),
    /// The editor's canvas: the edge layer and the part layers, at the model's size.
    Layers {
        edges: GrayImage,
        parts: Vec<GrayImage>,
    },
    /// The exemplar's own label: its Canny edges (at the model's size) merged with `traced`
    /// edges, plus the traced part layers.
    ExemplarEdges {
        canny: CannyParams,
        traced: GrayImage,
        parts: Vec<GrayImage>,
    },
}

impl From<Label> for LabelInput {
    fn from(l: Label) -> Self {
        LabelInput::Built(l)
    }
}

/// One translation request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub condition: LabelInput,
    /// Exemplar photo at any size (resized to the model's resolution here).
    pub exemplar: RgbaImage,
    pub exemplar_label: LabelInput,
    /// The worker always records the soft-warp weights (for [`WorkerHandle::probe`]).
    pub options: SamplerOptions,
    pub seed: u64,
}

/// One step of a run, converted for display.
#[derive(Debug, Clone)]
pub struct StepFrame {
    pub kind: StepKind,
    pub index: usize,
    pub total: usize,
    pub t: Option<usize>,
    /// Whether `pred_x0` and `warped` are exact decodes. While a run streams they are latent
    /// previews ([`crate::image::LatentPreview`]): a decode costs several UNet passes, so
    /// decoding every step would multiply the run time. [`WorkerHandle::decode`] gives the
    /// exact images of a step; only the `Final` step comes exact.
    pub exact: bool,
    /// x0 estimate r~n at image resolution (`None` if no preview could be made).
    pub pred_x0: Option<RgbaImage>,
    /// Warped exemplar R at image resolution, if the step matched.
    pub warped: Option<RgbaImage>,
    /// Confidence mask M at latent resolution (white = re-warp kept).
    pub mask: Option<RgbaImage>,
    pub latent_size: usize,
    /// How much the model scaled the drawing up to frame it (`midms.frame_drawing`), if it did:
    /// the images above are the framed drawing's, brought back onto the canvas.
    pub frame_scale: Option<f64>,
    /// Whether the model closed a gap in the drawing's outline (`midms.close_gaps`,
    /// `midms.close_wide_gaps`): the images
    /// above are the closed drawing's.
    pub drawing_gaps_closed: bool,
    /// How much the model scaled the exemplar's glyph up (`midms.frame_exemplar`), if it did.
    pub exemplar_frame_scale: Option<f64>,
    /// Whether the model made the exemplar's plain coloured ground white
    /// (`midms.clear_exemplar_ground`).
    pub exemplar_ground_cleared: bool,
    /// Final decoded image (`Final` only).
    pub image: Option<RgbaImage>,
    /// Time since the run started, as measured by the sampler.
    pub elapsed: Duration,
    /// Time spent converting this event (decodes, copies) inside the sink.
    pub convert_time: Duration,
    /// When the worker sent it (to measure latencies on the UI side).
    pub sent_at: Instant,
}

/// The exact decodes of one step.
#[derive(Debug, Clone)]
pub struct DecodedStep {
    pub pred_x0: RgbaImage,
    /// R, where the step matched.
    pub warped: Option<RgbaImage>,
}

/// Messages from the worker.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    ModelLoaded(ModelInfo),
    LoadFailed {
        path: PathBuf,
        error: String,
    },
    Started {
        generation: u64,
    },
    Step {
        generation: u64,
        frame: Box<StepFrame>,
    },
    /// Answer to [`WorkerHandle::decode`].
    Decoded {
        generation: u64,
        index: usize,
        result: Result<DecodedStep, String>,
    },
    /// Answer to [`WorkerHandle::probe`]: the soft-warp weights of latent pixel `pixel` over
    /// the exemplar's latent grid (normalised to max 1), from the latest matching at or before
    /// step `index`; `None` when no matching happened yet.
    Probe {
        generation: u64,
        index: usize,
        pixel: (usize, usize),
        heat: Option<Vec<f32>>,
    },
    Finished {
        generation: u64,
        elapsed: Duration,
    },
    Cancelled {
        generation: u64,
    },
    Failed {
        generation: u64,
        error: String,
    },
    /// The worker thread had died and was started again (without a model).
    Restarted,
    /// Answer to [`WorkerHandle::rank`]: the score of exemplar `id`, one event per exemplar.
    Ranked {
        ranking: u64,
        id: usize,
        score: Result<RankScore, String>,
    },
    /// The ranking ended; `complete` is false when a run or a newer ranking stopped it.
    RankDone {
        ranking: u64,
        complete: bool,
    },
    /// Answer to [`WorkerHandle::sweep`]: the final image with exemplar `id`, as each finishes.
    Swept {
        sweep: u64,
        id: usize,
        result: Result<RgbaImage, String>,
    },
    /// The sweep ended; `complete` is false when a run or a newer sweep stopped it.
    SweepDone {
        sweep: u64,
        complete: bool,
    },
}

pub(crate) enum Request {
    Load {
        path: PathBuf,
        device: DeviceChoice,
        precision: Precision,
    },
    Install {
        model: Box<MidmModel>,
        path: PathBuf,
        device: DeviceChoice,
    },
    Run {
        generation: u64,
        request: Box<RunRequest>,
    },
    Panic {
        generation: u64,
    },
    Decode {
        generation: u64,
        index: usize,
    },
    Probe {
        generation: u64,
        index: usize,
        pixel: (usize, usize),
    },
    Rank(Box<RankJob>),
    Sweep(Box<SweepJob>),
    Shutdown,
}

/// How soon the UI should paint after a worker event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A streamed step of a run: a newer one follows within a UNet pass, so the UI may show
    /// several at once.
    Stream,
    /// Anything else (a run's end, a failure, an answer to a request): paint now.
    Now,
}

pub(crate) type Repaint = Arc<dyn Fn(Urgency) + Send + Sync>;

/// The UI's end of the worker.
pub struct WorkerHandle {
    requests: Sender<Request>,
    events: Receiver<WorkerEvent>,
    events_tx: Sender<WorkerEvent>,
    generation: Arc<AtomicU64>,
    ranking: Arc<AtomicU64>,
    sweeps: Arc<AtomicU64>,
    repaint: Repaint,
    thread: Option<JoinHandle<()>>,
    /// The sampler's own pool size (None: rayon's global pool), kept for a respawn.
    threads: Option<usize>,
}

impl WorkerHandle {
    /// Start the worker thread; `repaint` is called after every event (e.g. with
    /// `ctx.request_repaint()`), told how soon the event needs painting.
    pub fn spawn(repaint: impl Fn(Urgency) + Send + Sync + 'static) -> Self {
        Self::spawn_with(None, repaint)
    }

    /// [`Self::spawn`] with the sampler on a rayon pool of its own with `threads` threads
    /// (`None`: rayon's global pool, every core; see [`editor_sampler_threads`]).
    pub fn spawn_with(
        threads: Option<usize>,
        repaint: impl Fn(Urgency) + Send + Sync + 'static,
    ) -> Self {
        let (events_tx, events) = unbounded();
        let repaint: Repaint = Arc::new(repaint);
        let generation = Arc::new(AtomicU64::new(0));
        let (requests, thread) = start_thread(
            events_tx.clone(),
            generation.clone(),
            repaint.clone(),
            threads,
        );
        Self {
            requests,
            events,
            events_tx,
            generation,
            ranking: Arc::default(),
            sweeps: Arc::default(),
            repaint,
            thread: Some(thread),
            threads,
        }
    }

    /// Load a model in float32 (on the worker thread). The previous model stays loaded if this fails.
    pub fn load(&self, path: impl Into<PathBuf>, device: DeviceChoice) {
        self.load_with(path, device, Precision::F32);
    }

    /// [`Self::load`] with the UNet and autoencoder in `precision`.
    pub fn load_with(&self, path: impl Into<PathBuf>, device: DeviceChoice, precision: Precision) {
        self.send(Request::Load {
            path: path.into(),
            device,
            precision,
        });
    }

    /// Hand an already built model to the worker (e.g. one built from fixture weights).
    pub fn install(&self, model: MidmModel, path: impl Into<PathBuf>, device: DeviceChoice) {
        self.send(Request::Install {
            model: Box::new(model),
            path: path.into(),
            device,
        });
    }

    /// Submit a run; it cancels the run in flight. Returns the new run's generation.
    pub fn run(&self, request: RunRequest) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.send(Request::Run {
            generation,
            request: Box::new(request),
        });
        generation
    }

    /// Decode step `index` of run `generation` exactly (answered by `Decoded`, after any run
    /// in flight; dropped if a newer run started meanwhile).
    pub fn decode(&self, generation: u64, index: usize) {
        self.send(Request::Decode { generation, index });
    }

    /// Where latent pixel `pixel` (row, column) of step `index` is matched in the exemplar
    /// (answered by `Probe`; dropped if a newer run started meanwhile).
    pub fn probe(&self, generation: u64, index: usize, pixel: (usize, usize)) {
        self.send(Request::Probe {
            generation,
            index,
            pixel,
        });
    }

    /// Score each exemplar for `condition` by the model's correspondence confidence (exemplar
    /// labels from their Canny edges with `canny`). Answered by one `Ranked` per exemplar and
    /// a `RankDone`, after any run in flight; a run or a newer ranking asked later stops it
    /// after the exemplar being scored. Returns the ranking's number.
    pub fn rank(
        &self,
        condition: LabelInput,
        exemplars: Vec<(usize, RgbaImage)>,
        canny: CannyParams,
    ) -> u64 {
        let ranking = self.ranking.fetch_add(1, Ordering::SeqCst) + 1;
        self.send(Request::Rank(Box::new(RankJob {
            ranking,
            generation: self.generation(),
            condition,
            exemplars,
            canny,
            rankings: self.ranking.clone(),
            generations: self.generation.clone(),
        })));
        ranking
    }

    /// Translate `condition` with each exemplar (labels from their Canny edges with `canny`),
    /// with the run's `options` and `seed`: one `Swept` per exemplar, then a `SweepDone`, after
    /// any run in flight. A run or a newer sweep asked later stops it within one UNet pass.
    /// Returns the sweep's number.
    pub fn sweep(
        &self,
        condition: LabelInput,
        exemplars: Vec<(usize, RgbaImage)>,
        canny: CannyParams,
        options: crate::SamplerOptions,
        seed: u64,
    ) -> u64 {
        let sweep = self.sweeps.fetch_add(1, Ordering::SeqCst) + 1;
        self.send(Request::Sweep(Box::new(SweepJob {
            sweep,
            generation: self.generation(),
            condition,
            exemplars,
            canny,
            options,
            seed,
            sweeps: self.sweeps.clone(),
            generations: self.generation.clone(),
        })));
        sweep
    }

    /// Stop the sweep in flight (within one UNet pass).
    pub fn stop_sweep(&self) {
        self.sweeps.fetch_add(1, Ordering::SeqCst);
    }

    /// Cancel whatever run is in flight (it stops at its next UNet pass).
    pub fn cancel(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The newest generation; events of older ones are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Test hook: submit a job that panics inside the worker, as a model bug would.
    #[doc(hidden)]
    pub fn run_panicking_job(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.send(Request::Panic { generation });
        generation
    }

    /// Next event, if any (non-blocking).
    pub fn try_recv(&self) -> Option<WorkerEvent> {
        self.events.try_recv().ok()
    }

    /// Next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WorkerEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Respawn the worker thread if it died; returns true when it did.
    pub fn ensure_alive(&mut self) -> bool {
        let dead = self.thread.as_ref().is_none_or(|t| t.is_finished());
        if dead {
            let (requests, thread) = start_thread(
                self.events_tx.clone(),
                self.generation.clone(),
                self.repaint.clone(),
                self.threads,
            );
            self.requests = requests;
            self.thread = Some(thread);
            let _ = self.events_tx.send(WorkerEvent::Restarted);
            (self.repaint)(Urgency::Now);
        }
        dead
    }

    fn send(&self, request: Request) {
        // A dead thread is noticed by `ensure_alive`; the request is lost with it.
        let _ = self.requests.send(request);
    }

    /// Cancel, stop the worker thread and wait up to `wait` for it to end, so that the model and
    /// its device tensors are dropped on the worker thread before the process exits: a CUDA
    /// process whose worker still held them at exit ended in a segmentation fault after its
    /// last output (`bench --worker` on an H200, 2026-12-04). True if the thread ended in time.
    pub fn shutdown(&mut self, wait: Duration) -> bool {
        self.cancel();
        self.send(Request::Shutdown);
        let Some(thread) = self.thread.take() else {
            return true;
        };
        // std has no join with a timeout: poll the thread's end until the deadline.
        let deadline = Instant::now() + wait;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                // Left running: a run on a big model may take a while to reach a cancel point.
                self.thread = Some(thread);
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.requests.send(Request::Shutdown);
        // Do not join: a run on a big model may take a while to reach its next cancel point.
    }
}

/// Threads the editor's sampler gets: one fewer than rayon's global pool has (`RAYON_NUM_THREADS`,
/// which `main` sets to the cores when unset), at least one; `MIDM_SAMPLER_THREADS` overrides.
/// The window is drawn on the same cores, on a software renderer entirely on the CPU, and a
/// sampler on every core made the two take turns. Measured on a 2-vCPU Xeon (AVX-512, a VM whose
/// host takes back 10-40 % of two busy vCPUs as steal time), model v1.3, cat pair, Xvfb +
/// lavapipe, two takes of 8 runs each way, each run right after its own `midm bench` (2026-12-02,
/// `scripts/measure-editor.sh`): Run -> final image 736-1214 ms and within 1.2x of its bench in
/// 16 of 16 runs with the sampler on one thread, 878-1454 ms and 12 of 16 on both; Run -> first
/// step 23-81 against 32-93 ms (docs/performance.md). On a 2-core AMD EPYC on 2026-12-01 (with
/// candle's element-wise pool still on) the editor had been faster with the sampler on both.
pub fn editor_sampler_threads() -> usize {
    std::env::var("MIDM_SAMPLER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or_else(|| rayon::current_num_threads().saturating_sub(1))
        .max(1)
}

fn start_thread(
    events: Sender<WorkerEvent>,
    generation: Arc<AtomicU64>,
    repaint: Repaint,
    threads: Option<usize>,
) -> (Sender<Request>, JoinHandle<()>) {
    let (tx, rx) = unbounded();
    let thread = std::thread::Builder::new()
        .name("midm-worker".into())
        .spawn(move || {
            let serve = move || Worker::new(events, generation, repaint).serve(rx);
            let pool = threads.map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("midm-sampler-{i}"))
                    .build()
            });
            match pool {
                Some(Ok(pool)) => pool.install(serve),
                Some(Err(e)) => {
                    tracing::warn!("sampler thread pool not built ({e}); using every core");
                    serve()
                }
                None => serve(),
            }
        })
        .expect("spawning the worker thread");
    (tx, thread)
}
