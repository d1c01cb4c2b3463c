//! The background worker: owns the model, runs jobs, streams step events back to the UI.
//!
//! Requests go in over one crossbeam channel, [`WorkerEvent`]s come back over another. Every
//! event carries only CPU-side data (RGBA images, plain `Vec<f32>`), so the UI never sees a
//! tensor. Each run gets a generation number; submitting a run or calling
//! [`WorkerHandle::cancel`] bumps the shared counter, and the sampler's sink reports
//! `cancelled()` as soon as its generation is no longer the newest, so a stale run stops at the
//! next UNet pass. Panics in a job are caught and reported; the thread keeps serving, and
//! [`WorkerHandle::ensure_alive`] respawns it should it ever die.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use crossbeam_channel::{unbounded, Receiver, Sender};
use image::{imageops::FilterType, RgbaImage};
use sha2::{Digest, Sha256};

use crate::device::DeviceChoice;
use crate::edges::Label;
use crate::model::{MidmModel, Precision};
use crate::sampling::midm::{
    translate, Cancelled, MidmInputs, Noise, SamplerOptions, StepEvent, StepKind, StepSink,
};

/// What the UI needs to know about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub image_size: usize,
    pub latent_size: usize,
    pub label_nc: usize,
    /// First 16 hex digits of the SHA-256 of the weight and config files.
    pub hash: String,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub load_time: Duration,
}

/// One translation request. Labels come from [`crate::edges::build_label`].
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub condition: Label,
    /// Exemplar photo at any size (resized to the model's resolution here).
    pub exemplar: RgbaImage,
    pub exemplar_label: Label,
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
    /// Decoded x0 estimate r~n, at image resolution. `None` for refinement steps decoded only
    /// on request ([`WorkerHandle::decode`]): a decode costs several UNet passes, so decoding
    /// all 20 refinement steps eagerly would multiply the run time.
    pub pred_x0: Option<RgbaImage>,
    /// The x0 latent (C, h, w, row-major) of a step not decoded yet.
    pub latent: Option<(Arc<Vec<f32>>, [usize; 3])>,
    /// Decoded warped exemplar R, at image resolution.
    pub warped: Option<RgbaImage>,
    /// Confidence mask M at latent resolution (white = re-warp kept).
    pub mask: Option<RgbaImage>,
    /// Soft-warp weights [h*w target, h*w exemplar] (row-major), for the correspondence probe.
    pub warp_weights: Option<Arc<Vec<f32>>>,
    pub latent_size: usize,
    /// Final decoded image (`Final` only).
    pub image: Option<RgbaImage>,
    /// Time since the run started, as measured by the sampler.
    pub elapsed: Duration,
    /// Time spent converting this event (decodes, copies) inside the sink.
    pub convert_time: Duration,
    /// When the worker sent it (to measure latencies on the UI side).
    pub sent_at: Instant,
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
        result: Result<RgbaImage, String>,
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
}

enum Request {
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
        latent: Arc<Vec<f32>>,
        shape: [usize; 3],
    },
    Shutdown,
}

type Repaint = Arc<dyn Fn() + Send + Sync>;

/// The UI's end of the worker.
pub struct WorkerHandle {
    requests: Sender<Request>,
    events: Receiver<WorkerEvent>,
    events_tx: Sender<WorkerEvent>,
    generation: Arc<AtomicU64>,
    repaint: Repaint,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Start the worker thread; `repaint` is called after every event (e.g. `ctx.request_repaint()`).
    pub fn spawn(repaint: impl Fn() + Send + Sync + 'static) -> Self {
        let (events_tx, events) = unbounded();
        let repaint: Repaint = Arc::new(repaint);
        let generation = Arc::new(AtomicU64::new(0));
        let (requests, thread) =
            start_thread(events_tx.clone(), generation.clone(), repaint.clone());
        Self {
            requests,
            events,
            events_tx,
            generation,
            repaint,
            thread: Some(thread),
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

    /// Decode the latent of step `index` of run `generation` (answered by `Decoded`, after any
    /// run in flight; dropped if a newer run started meanwhile).
    pub fn decode(&self, generation: u64, index: usize, latent: Arc<Vec<f32>>, shape: [usize; 3]) {
        self.send(Request::Decode {
            generation,
            index,
            latent,
            shape,
        });
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
            );
            self.requests = requests;
            self.thread = Some(thread);
            let _ = self.events_tx.send(WorkerEvent::Restarted);
            (self.repaint)();
        }
        dead
    }

    fn send(&self, request: Request) {
        // A dead thread is noticed by `ensure_alive`; the request is lost with it.
        let _ = self.requests.send(request);
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.requests.send(Request::Shutdown);
        // Do not join: a run on a big model may take a while to reach its next cancel point.
    }
}

fn start_thread(
    events: Sender<WorkerEvent>,
    generation: Arc<AtomicU64>,
    repaint: Repaint,
) -> (Sender<Request>, JoinHandle<()>) {
    let (tx, rx) = unbounded();
    let thread = std::thread::Builder::new()
        .name("midm-worker".into())
        .spawn(move || {
            Worker {
                model: None,
                events,
                generation,
                repaint,
            }
            .serve(rx)
        })
        .expect("spawning the worker thread");
    (tx, thread)
}

struct Worker {
    model: Option<(MidmModel, ModelInfo)>,
    events: Sender<WorkerEvent>,
    generation: Arc<AtomicU64>,
    repaint: Repaint,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

impl Worker {
    fn emit(&self, event: WorkerEvent) {
        let _ = self.events.send(event);
        (self.repaint)();
    }

    fn serve(mut self, rx: Receiver<Request>) {
        while let Ok(request) = rx.recv() {
            match request {
                Request::Shutdown => break,
                Request::Load {
                    path,
                    device,
                    precision,
                } => {
                    let result = catch_unwind(AssertUnwindSafe(|| load(&path, device, precision)));
                    match result {
                        Ok(Ok((model, info))) => {
                            self.model = Some((model, info.clone()));
                            self.emit(WorkerEvent::ModelLoaded(info));
                        }
                        Ok(Err(error)) => self.emit(WorkerEvent::LoadFailed { path, error }),
                        Err(p) => self.emit(WorkerEvent::LoadFailed {
                            path,
                            error: format!("the loader panicked: {}", panic_message(p)),
                        }),
                    }
                }
                Request::Install {
                    model,
                    path,
                    device,
                } => {
                    let hash = model_hash(&path).unwrap_or_else(|_| "unknown".into());
                    let info = ModelInfo {
                        image_size: model.config.image_size,
                        latent_size: model.config.latent_size(),
                        label_nc: model.config.label_nc(),
                        path,
                        hash,
                        device,
                        precision: model.precision,
                        load_time: Duration::ZERO,
                    };
                    self.model = Some((*model, info.clone()));
                    self.emit(WorkerEvent::ModelLoaded(info));
                }
                Request::Run {
                    generation,
                    request,
                } => {
                    if generation != self.generation.load(Ordering::SeqCst) {
                        continue; // superseded before it started
                    }
                    self.emit(WorkerEvent::Started { generation });
                    let result = catch_unwind(AssertUnwindSafe(|| self.run(generation, &request)));
                    let event = match result {
                        Ok(Ok(elapsed)) => WorkerEvent::Finished {
                            generation,
                            elapsed,
                        },
                        Ok(Err(e)) if e.downcast_ref::<Cancelled>().is_some() => {
                            WorkerEvent::Cancelled { generation }
                        }
                        Ok(Err(e)) => WorkerEvent::Failed {
                            generation,
                            error: format!("{e:#}"),
                        },
                        Err(p) => WorkerEvent::Failed {
                            generation,
                            error: format!("the run panicked: {}", panic_message(p)),
                        },
                    };
                    self.emit(event);
                }
                Request::Decode {
                    generation,
                    index,
                    latent,
                    shape,
                } => {
                    if generation != self.generation.load(Ordering::SeqCst) {
                        continue;
                    }
                    let result = catch_unwind(AssertUnwindSafe(|| self.decode(&latent, shape)));
                    let result = match result {
                        Ok(r) => r.map_err(|e| format!("{e:#}")),
                        Err(p) => Err(format!("the decoder panicked: {}", panic_message(p))),
                    };
                    self.emit(WorkerEvent::Decoded {
                        generation,
                        index,
                        result,
                    });
                }
                Request::Panic { generation } => {
                    self.emit(WorkerEvent::Started { generation });
                    let result =
                        catch_unwind(|| -> anyhow::Result<()> { panic!("injected failure") });
                    if let Err(p) = result {
                        self.emit(WorkerEvent::Failed {
                            generation,
                            error: format!("the run panicked: {}", panic_message(p)),
                        });
                    }
                }
            }
        }
    }

    fn decode(&self, latent: &[f32], shape: [usize; 3]) -> anyhow::Result<RgbaImage> {
        let Some((model, _)) = &self.model else {
            anyhow::bail!("no model is loaded");
        };
        let [c, h, w] = shape;
        let z = Tensor::from_slice(latent, (1, c, h, w), &model.device)?;
        tensor_to_image(&model.autoencoder.decode(&z)?)
    }

    fn run(&self, generation: u64, request: &RunRequest) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let Some((model, info)) = &self.model else {
            anyhow::bail!("no model is loaded");
        };
        let size = info.image_size;
        for (what, label) in [
            ("condition", &request.condition),
            ("exemplar label", &request.exemplar_label),
        ] {
            if label.channels != info.label_nc || label.size != size {
                anyhow::bail!(
                    "{what} is {}x{}x{}, the model expects {}x{size}x{size}",
                    label.channels,
                    label.size,
                    label.size,
                    info.label_nc
                );
            }
        }
        let device = &model.device;
        let label_tensor =
            |l: &Label| Tensor::from_vec(l.data.clone(), (1, l.channels, l.size, l.size), device);
        let inputs = MidmInputs {
            condition: label_tensor(&request.condition)?,
            exemplar: image_to_tensor(&request.exemplar, size, device)?,
            exemplar_label: label_tensor(&request.exemplar_label)?,
        };
        let mut sink = DisplaySink {
            model,
            generation,
            newest: &self.generation,
            events: &self.events,
            repaint: &self.repaint,
            error: None,
            latent_size: info.latent_size,
        };
        let result = translate(
            model,
            &inputs,
            &request.options,
            &Noise::Seeded(request.seed),
            &mut sink,
        );
        if let Some(e) = sink.error {
            return Err(e.context("converting a step for display"));
        }
        result?;
        Ok(start.elapsed())
    }
}

/// Converts each step event to RGBA images on the worker thread and streams it to the UI.
struct DisplaySink<'a> {
    model: &'a MidmModel,
    generation: u64,
    newest: &'a AtomicU64,
    events: &'a Sender<WorkerEvent>,
    repaint: &'a Repaint,
    /// First conversion error; it stops the run (through `cancelled`) and is reported.
    error: Option<anyhow::Error>,
    latent_size: usize,
}

impl DisplaySink<'_> {
    fn convert(&self, e: &StepEvent) -> anyhow::Result<StepFrame> {
        let t0 = Instant::now();
        let first = |t: &Tensor| t.get(0);
        let decode = |z: &Tensor| -> anyhow::Result<RgbaImage> {
            let img = self.model.autoencoder.decode(&first(z)?.unsqueeze(0)?)?;
            tensor_to_image(&img)
        };
        // Decode eagerly the warp and the interleaved steps; refinement steps only on request
        // (the last one equals the final image, which is the sampler's own decode).
        let eager = !matches!(e.kind, StepKind::Refine { .. });
        let (pred_x0, latent) = if let Some(img) = &e.image {
            (Some(tensor_to_image(img)?), None)
        } else if eager {
            (Some(decode(&e.pred_x0)?), None)
        } else {
            let z = first(&e.pred_x0)?.to_dtype(DType::F32)?;
            let (c, h, w) = z.dims3()?;
            (
                None,
                Some((Arc::new(z.flatten_all()?.to_vec1::<f32>()?), [c, h, w])),
            )
        };
        // At the initial warp, r~n is R itself: decode it once.
        let warped = match (e.kind, &pred_x0) {
            (StepKind::InitialWarp, Some(img)) if e.warped.is_some() => Some(img.clone()),
            _ => e.warped.as_ref().map(decode).transpose()?,
        };
        let mask = e
            .mask
            .as_ref()
            .map(|m| mask_to_image(&first(m)?))
            .transpose()?;
        let warp_weights = e
            .warp_weights
            .as_ref()
            .map(|w| -> anyhow::Result<Arc<Vec<f32>>> {
                Ok(Arc::new(
                    first(w)?
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                ))
            })
            .transpose()?;
        let image = e.image.as_ref().map(tensor_to_image).transpose()?;
        Ok(StepFrame {
            kind: e.kind,
            index: e.index,
            total: e.total,
            t: e.t,
            pred_x0,
            latent,
            warped,
            mask,
            warp_weights,
            latent_size: self.latent_size,
            image,
            elapsed: e.elapsed,
            convert_time: t0.elapsed(),
            sent_at: Instant::now(),
        })
    }
}

impl StepSink for DisplaySink<'_> {
    fn on_event(&mut self, event: &StepEvent) {
        if self.error.is_some() || self.cancelled() {
            return;
        }
        match self.convert(event) {
            Ok(frame) => {
                let _ = self.events.send(WorkerEvent::Step {
                    generation: self.generation,
                    frame: Box::new(frame),
                });
                (self.repaint)();
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn cancelled(&self) -> bool {
        self.error.is_some() || self.newest.load(Ordering::SeqCst) != self.generation
    }
}

fn load(
    path: &Path,
    device: DeviceChoice,
    precision: Precision,
) -> Result<(MidmModel, ModelInfo), String> {
    let start = Instant::now();
    let dev = device
        .to_device()
        .map_err(|e| format!("device {device:?}: {e}"))?;
    let model =
        crate::checkpoint::load_model_with(path, &dev, precision).map_err(|e| e.to_string())?;
    let hash = model_hash(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let info = ModelInfo {
        path: path.to_path_buf(),
        image_size: model.config.image_size,
        latent_size: model.config.latent_size(),
        label_nc: model.config.label_nc(),
        hash,
        device,
        precision,
        load_time: start.elapsed(),
    };
    Ok((model, info))
}

/// SHA-256 over the model's files (a single file, or the weight and config files of a folder in
/// name order), shortened to 16 hex digits: enough to tell models apart in exported PNGs.
pub fn model_hash(path: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(
                ext,
                "safetensors" | "ckpt" | "pth" | "yaml" | "yml" | "json"
            ) {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut hasher = Sha256::new();
    for f in files {
        let mut file = std::fs::File::open(&f)?;
        std::io::copy(&mut file, &mut hasher)?;
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// RGBA image -> [1, 3, size, size] in [-1, 1] (bilinear resize, alpha composited on white as
/// the training data is).
fn image_to_tensor(image: &RgbaImage, size: usize, device: &Device) -> anyhow::Result<Tensor> {
    let s = size as u32;
    let resized = image::imageops::resize(image, s, s, FilterType::Triangle);
    let rgb = crate::imageio::flatten_alpha(&image::DynamicImage::ImageRgba8(resized));
    Ok(crate::imageio::rgb_to_tensor(&rgb, device)?)
}

/// [1, 3, H, W] in about [-1, 1] -> RGBA (clamped).
fn tensor_to_image(t: &Tensor) -> anyhow::Result<RgbaImage> {
    Ok(image::DynamicImage::ImageRgb8(crate::imageio::tensor_to_rgb(t)?).to_rgba8())
}

/// [1, h, w] mask in [0, 1] -> grey RGBA.
fn mask_to_image(m: &Tensor) -> anyhow::Result<RgbaImage> {
    let (_, h, w) = m.dims3()?;
    let v = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(RgbaImage::from_fn(w as u32, h as u32, |x, y| {
        let g = (v[y as usize * w + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgba([g, g, g, 255])
    }))
}

/// Short name of a step for timelines and sheets.
pub fn step_label(kind: StepKind) -> String {
    match kind {
        StepKind::InitialWarp => "warp".into(),
        StepKind::Interleaved { k, rewarped: true } => format!("k{k}*"),
        StepKind::Interleaved { k, rewarped: false } => format!("k{k}"),
        StepKind::Refine { i } => format!("r{i}"),
        StepKind::Final => "final".into(),
    }
}
