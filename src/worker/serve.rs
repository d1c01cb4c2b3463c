//! The worker thread: serves requests one at a time, keeps the model and the current run's
//! tensors, and turns step events into what the UI shows.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use crossbeam_channel::{Receiver, Sender};
use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage, RgbaImage};

use super::{
    DecodedStep, LabelInput, ModelInfo, Repaint, Request, RunRequest, StepFrame, Urgency,
    WorkerEvent,
};
use crate::device::DeviceChoice;
use crate::error::{ensure, Error, Result};
use crate::image::{build_label, canny_edges, Label, LatentPreview};
use crate::model::{MidmModel, Precision};
use crate::sampling::colour::{self, ColourGamut};
use crate::sampling::frame::Frame;
use crate::sampling::midm::{
    translate_with_exemplar, ExemplarSide, MidmInputs, Noise, StepEvent, StepKind, StepSink,
};

/// What the worker keeps of the current run, by step index: the x0 latent and the warped
/// exemplar latent of each step (for exact decodes on request) and the soft-warp weights
/// [h*w, h*w] of each matching step (for the probe). At the official 64x64 latent one warp
/// matrix is 67 MB: it stays here. For a model with colour transfer, also the run's warped
/// chroma, so that every step's image is shown in the colours the final one gets.
#[derive(Default)]
struct RunStore {
    generation: u64,
    latents: Vec<Option<Tensor>>,
    warped: Vec<Option<Tensor>>,
    warps: Vec<Option<Tensor>>,
    /// The run's warped chroma, for a model with colour transfer.
    colour: Option<Tensor>,
    /// The gamut of the run's model (`midms.colour_gamut`), kept with the run so that a step
    /// decoded after a model switch keeps its own colours.
    colour_gamut: ColourGamut,
    /// How the run's model framed the drawing (`midms.frame_drawing`): the steps' latents, masks
    /// and warps are the framed drawing's, and what is shown comes back onto the canvas.
    frame: Option<Frame>,
    /// How the run's model framed the exemplar (`midms.frame_exemplar`): the warps read the
    /// framed exemplar, and a probe's heat comes back onto the exemplar as the user sees it.
    exemplar_frame: Option<Frame>,
    /// Whether the run's model closed a gap in the drawing's outline (`midms.close_gaps`).
    gaps_closed: bool,
    /// Whether the run's model made the exemplar's plain ground white
    /// (`midms.clear_exemplar_ground`).
    exemplar_cleared: bool,
}

impl RunStore {
    /// A step's preview or mask (`clear` beyond the framed canvas instead of white) where the
    /// drawing lies on the canvas.
    fn on_canvas(&self, image: RgbaImage, clear: bool) -> RgbaImage {
        match &self.frame {
            Some(f) => f.unframe_rgba(&image, clear),
            None => image,
        }
    }

    /// `image` [1, 3, H, W] with the run's colour transfer, if its model has one.
    fn coloured(&self, image: Tensor) -> Result<Tensor> {
        match &self.colour {
            Some(warped) => Ok(colour::transfer_colour(&image, warped, self.colour_gamut)?),
            None => Ok(image),
        }
    }
}

/// The exemplar side of the last run, for the next run on the same exemplar and label (in live
/// mode, every stroke): it saves the exemplar's encode and features, most of the time to the
/// first step.
struct ExemplarCache {
    rgb: RgbImage,
    label: Vec<f32>,
    side: ExemplarSide,
}

pub(super) struct Worker {
    model: Option<(MidmModel, ModelInfo)>,
    store: RunStore,
    exemplar_cache: Option<ExemplarCache>,
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

/// Runs `f`, turning a panic into an error message that says what panicked.
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(format!("the {what} panicked: {}", panic_message(p))),
    }
}

impl Worker {
    pub(super) fn new(
        events: Sender<WorkerEvent>,
        generation: Arc<AtomicU64>,
        repaint: Repaint,
    ) -> Self {
        Self {
            model: None,
            store: RunStore::default(),
            exemplar_cache: None,
            events,
            generation,
            repaint,
        }
    }

    fn emit(&self, event: WorkerEvent) {
        let _ = self.events.send(event);
        (self.repaint)(Urgency::Now);
    }

    fn is_current(&self, generation: u64) -> bool {
        generation == self.generation.load(Ordering::SeqCst)
    }

    pub(super) fn serve(mut self, rx: Receiver<Request>) {
        while let Ok(request) = rx.recv() {
            match request {
                Request::Shutdown => break,
                Request::Load {
                    path,
                    device,
                    precision,
                } => {
                    let result = catch_unwind(AssertUnwindSafe(|| load(&path, device, precision)))
                        .unwrap_or_else(|p| {
                            Err(format!("the loader panicked: {}", panic_message(p)))
                        });
                    match result {
                        Ok((model, info)) => {
                            self.exemplar_cache = None;
                            self.model = Some((model, info.clone()));
                            self.emit(WorkerEvent::ModelLoaded(info));
                        }
                        Err(error) => self.emit(WorkerEvent::LoadFailed { path, error }),
                    }
                }
                Request::Install {
                    model,
                    path,
                    device,
                } => self.install(*model, path, device),
                Request::Run {
                    generation,
                    request,
                } => self.serve_run(generation, &request),
                Request::Decode { generation, index } if self.is_current(generation) => {
                    let result = guarded("decoder", || self.decode(generation, index));
                    self.emit(WorkerEvent::Decoded {
                        generation,
                        index,
                        result,
                    });
                }
                Request::Probe {
                    generation,
                    index,
                    pixel,
                } if self.is_current(generation) => {
                    // A probe outside the grid or before any matching has no answer to show.
                    let heat = guarded("probe", || self.probe(generation, index, pixel))
                        .ok()
                        .flatten();
                    self.emit(WorkerEvent::Probe {
                        generation,
                        index,
                        pixel,
                        heat,
                    });
                }
                Request::Decode { .. } | Request::Probe { .. } => {} // a newer run started
                Request::Rank(job) => super::rank::serve(self.model.as_ref(), &job, &|e| {
                    self.emit(e);
                }),
                Request::Sweep(job) => super::sweep::serve(self.model.as_ref(), &job, &|e| {
                    self.emit(e);
                }),
                Request::Panic { generation } => {
                    self.emit(WorkerEvent::Started { generation });
                    let error = guarded("run", || -> Result<()> { panic!("injected failure") })
                        .unwrap_err();
                    self.emit(WorkerEvent::Failed { generation, error });
                }
            }
        }
    }

    fn install(&mut self, model: MidmModel, path: std::path::PathBuf, device: DeviceChoice) {
        let hash = crate::checkpoint::inspect(&path)
            .and_then(|c| c.report.model_hash())
            .unwrap_or_else(|_| "unknown".into());
        let info = ModelInfo {
            image_size: model.config.image_size,
            latent_size: model.config.latent_size(),
            label_nc: model.config.label_nc(),
            frame_drawing: model.config.frame_drawing,
            gap_closings: model.config.gap_closings(),
            path,
            hash,
            device,
            precision: model.precision,
            load_time: Duration::ZERO,
        };
        self.exemplar_cache = None;
        self.model = Some((model, info.clone()));
        self.emit(WorkerEvent::ModelLoaded(info));
    }

    fn serve_run(&mut self, generation: u64, request: &RunRequest) {
        if !self.is_current(generation) {
            return; // superseded before it started
        }
        // Nothing to paint yet: a repaint now would take the slot the first step needs (the
        // editor coalesces worker repaints).
        let _ = self.events.send(WorkerEvent::Started { generation });
        let result = catch_unwind(AssertUnwindSafe(|| self.run(generation, request)));
        let event = match result {
            Ok(Ok(elapsed)) => WorkerEvent::Finished {
                generation,
                elapsed,
            },
            Ok(Err(Error::Cancelled)) => WorkerEvent::Cancelled { generation },
            Ok(Err(e)) => WorkerEvent::Failed {
                generation,
                error: e.to_string(),
            },
            Err(p) => WorkerEvent::Failed {
                generation,
                error: format!("the run panicked: {}", panic_message(p)),
            },
        };
        self.emit(event);
    }

    /// The exact decodes of step `index`: r~n, and R where the step matched.
    fn decode(&self, generation: u64, index: usize) -> Result<DecodedStep> {
        let (model, _) = self.model.as_ref().ok_or_else(no_model)?;
        let store = &self.store;
        let latent = (store.generation == generation)
            .then(|| store.latents.get(index).cloned().flatten())
            .flatten()
            .ok_or_else(|| Error::Invalid(format!("step {index} of this run is not kept")))?;
        // Back on the canvas before the 8-bit image, as the sampler's final image is made, so that
        // the last step decodes to the final image exactly.
        let decode = |z: &Tensor| -> Result<RgbaImage> {
            let image = store.coloured(model.autoencoder.decode(z)?)?;
            let frames = [store.frame];
            tensor_to_image(&crate::sampling::frame::unframe_images(&image, &frames)?)
        };
        let pred_x0 = decode(&latent)?;
        let warped = match store.warped.get(index).cloned().flatten() {
            // At the initial warp r~n is R itself.
            Some(_) if index == 0 => Some(pred_x0.clone()),
            Some(w) => Some(decode(&w)?),
            None => None,
        };
        Ok(DecodedStep { pred_x0, warped })
    }

    /// The probe row of `pixel` from the latest matching at or before step `index`.
    fn probe(
        &self,
        generation: u64,
        index: usize,
        (r, c): (usize, usize),
    ) -> Result<Option<Vec<f32>>> {
        let (_, info) = self.model.as_ref().ok_or_else(no_model)?;
        let l = info.latent_size;
        if self.store.generation != generation || r >= l || c >= l {
            return Ok(None);
        }
        let end = (index + 1).min(self.store.warps.len());
        let Some(w) = self.store.warps[..end]
            .iter()
            .rev()
            .find_map(|w| w.as_ref())
        else {
            return Ok(None);
        };
        // The hovered cell of the canvas is this cell of the framed drawing the matching saw.
        let (r, c) = match &self.store.frame {
            None => (r, c),
            Some(f) => {
                let centre = |i: usize| (i as f64 + 0.5) / l as f64;
                match f.to_framed((centre(r), centre(c))) {
                    Some((y, x)) => ((y * l as f64) as usize, (x * l as f64) as usize),
                    None => return Ok(None),
                }
            }
        };
        let mut row: Vec<f32> = w.get(r * l + c)?.to_dtype(DType::F32)?.to_vec1()?;
        if let Some(f) = &self.store.exemplar_frame {
            row = f.unframe_planes(&row, l, 0.0);
        }
        let max = row.iter().cloned().fold(f32::MIN, f32::max).max(1e-12);
        Ok(Some(row.iter().map(|v| v / max).collect()))
    }

    fn run(&mut self, generation: u64, request: &RunRequest) -> Result<Duration> {
        let start = Instant::now();
        self.store = RunStore {
            generation,
            ..RunStore::default()
        };
        let Some((model, info)) = &self.model else {
            return Err(no_model());
        };
        self.store.colour_gamut = model.config.colour_gamut;
        let (size, nc) = (info.image_size, info.label_nc);
        let condition = build(&request.condition, &request.exemplar, nc, size)?;
        let exemplar_label = build(&request.exemplar_label, &request.exemplar, nc, size)?;
        for (what, label) in [
            ("condition", &condition),
            ("exemplar label", &exemplar_label),
        ] {
            ensure!(
                label.channels == nc && label.size == size,
                "{what} is {}x{}x{}, the model expects {nc}x{size}x{size}",
                label.channels,
                label.size,
                label.size,
            );
        }
        let device = &model.device;
        let exemplar_rgb = exemplar_at(&request.exemplar, size);
        let inputs = MidmInputs {
            condition: label_tensor(model, &condition)?,
            exemplar: crate::image::rgb_to_tensor(&exemplar_rgb, device)?,
            exemplar_label: label_tensor(model, &exemplar_label)?,
        };
        let mut sink = DisplaySink {
            generation,
            newest: &self.generation,
            events: &self.events,
            repaint: &self.repaint,
            store: &mut self.store,
            error: None,
            latent_size: info.latent_size,
            image_size: size as u32,
            exemplar_rgb,
            preview: None,
        };
        let options = crate::SamplerOptions {
            emit_warp_weights: true,
            ..request.options.clone()
        };
        let noise = Noise::Seeded(request.seed);
        let cache = &mut self.exemplar_cache;
        let hit = cache
            .as_ref()
            .is_some_and(|c| c.rgb == sink.exemplar_rgb && c.label == exemplar_label.data);
        if !hit {
            let side = ExemplarSide::new(model, &inputs.exemplar, &inputs.exemplar_label)?;
            *cache = Some(ExemplarCache {
                rgb: sink.exemplar_rgb.clone(),
                label: exemplar_label.data.clone(),
                side,
            });
        }
        let side = &cache.as_ref().expect("filled above").side;
        let result = translate_with_exemplar(model, &inputs, side, &options, &noise, &mut sink);
        if let Some(e) = sink.error {
            return Err(e); // a failed display conversion stopped the run
        }
        result?;
        Ok(start.elapsed())
    }
}

/// Builds a label on this thread (Canny and the distance transforms are too slow for the UI's).
pub(super) fn build(
    input: &LabelInput,
    exemplar: &RgbaImage,
    nc: usize,
    size: usize,
) -> Result<Label> {
    Ok(match input {
        LabelInput::Built(l) => l.clone(),
        LabelInput::Layers { edges, parts } => build_label(nc, edges, parts)?,
        LabelInput::ExemplarEdges {
            canny,
            traced,
            parts,
        } => {
            let image = DynamicImage::ImageRgba8(exemplar.clone());
            let mut edges: GrayImage = canny_edges(&image, size as u32, *canny);
            for (e, t) in edges.iter_mut().zip(traced.as_raw()) {
                *e |= *t;
            }
            build_label(nc, &edges, parts)?
        }
    })
}

/// Converts each step event to RGBA images on the worker thread, streams it to the UI and
/// keeps the tensors the UI may ask about later.
struct DisplaySink<'a> {
    generation: u64,
    newest: &'a AtomicU64,
    events: &'a Sender<WorkerEvent>,
    repaint: &'a Repaint,
    store: &'a mut RunStore,
    /// First conversion error; it stops the run (through `cancelled`) and is reported.
    error: Option<Error>,
    latent_size: usize,
    image_size: u32,
    /// The exemplar as the model sees it, to fit `preview` on.
    exemplar_rgb: RgbImage,
    /// This run's latent-to-colour preview, fitted at the initial warp.
    preview: Option<LatentPreview>,
}

impl DisplaySink<'_> {
    /// Streams previews only: nothing but the sampler's own final decode is on its critical
    /// path. Exact decodes of a step are made when the UI asks ([`WorkerHandle::decode`]).
    ///
    /// [`WorkerHandle::decode`]: super::WorkerHandle::decode
    fn convert(&mut self, e: &StepEvent) -> Result<StepFrame> {
        let t0 = Instant::now();
        let first = |t: &Tensor| t.get(0)?.unsqueeze(0);
        if let Some(prep) = &e.exemplar {
            self.store.exemplar_frame = prep.frames[0];
            self.store.exemplar_cleared = prep.cleared[0];
        }
        if let Some(z) = &e.exemplar_latent {
            // Fitted on the exemplar the latent is of: the one the model used, where it changed it.
            let used = match &e.exemplar {
                Some(prep) => Some(crate::image::tensor_to_rgb(&first(&prep.image)?)?),
                None => None,
            };
            let rgb = used.as_ref().unwrap_or(&self.exemplar_rgb);
            self.preview = Some(LatentPreview::fit(&first(z)?, rgb)?);
        }
        if let Some(c) = &e.colour_warped {
            self.store.colour = Some(first(c)?);
        }
        if let Some(frames) = &e.frames {
            self.store.frame = frames[0];
        }
        if let Some(closed) = &e.closed_gaps {
            self.store.gaps_closed = closed[0];
        }
        let store = &*self.store;
        let (preview, size) = (self.preview.as_ref(), self.image_size);
        let (colour, gamut) = (&store.colour, store.colour_gamut);
        // Previews in the final image's colours too: one host pass over the H x W preview.
        let show = |z: &Tensor| -> Result<Option<RgbaImage>> {
            let Some(p) = preview else { return Ok(None) };
            let mut img = p.render_rgb(&first(z)?, size)?;
            if let Some(c) = colour {
                colour::transfer_colour_rgb(&mut img, c, gamut)?;
            }
            let img = DynamicImage::ImageRgb8(img).to_rgba8();
            Ok(Some(store.on_canvas(img, false)))
        };
        let image = e.image.as_ref().map(tensor_to_image).transpose()?;
        let pred_x0 = match &image {
            Some(img) => Some(img.clone()),
            None => show(&e.pred_x0)?,
        };
        // At the initial warp, r~n is R itself.
        let warped = match (e.kind, &pred_x0) {
            (StepKind::InitialWarp, Some(img)) if e.warped.is_some() => Some(img.clone()),
            _ => e.warped.as_ref().map(show).transpose()?.flatten(),
        };
        let mask = e
            .mask
            .as_ref()
            .map(|m| Ok::<_, Error>(store.on_canvas(mask_to_image(&m.get(0)?)?, true)))
            .transpose()?;
        self.store.latents.push(Some(first(&e.pred_x0)?));
        self.store
            .warped
            .push(e.warped.as_ref().map(first).transpose()?);
        self.store
            .warps
            .push(e.warp_weights.as_ref().map(|w| w.get(0)).transpose()?);
        Ok(StepFrame {
            kind: e.kind,
            index: e.index,
            total: e.total,
            t: e.t,
            exact: image.is_some(),
            pred_x0,
            warped,
            mask,
            latent_size: self.latent_size,
            frame_scale: self.store.frame.map(|f| f.scale),
            drawing_gaps_closed: self.store.gaps_closed,
            exemplar_frame_scale: self.store.exemplar_frame.map(|f| f.scale),
            exemplar_ground_cleared: self.store.exemplar_cleared,
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
                (self.repaint)(Urgency::Stream);
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
    let loaded = crate::checkpoint::inspect(path)
        .and_then(|c| c.build_with(&dev, precision))
        .map_err(|e| e.to_string())?;
    // The hash the CLI records too: the config and the weight files that were used.
    let hash = loaded.report.model_hash().map_err(|e| e.to_string())?;
    let model = loaded.model;
    let info = ModelInfo {
        path: path.to_path_buf(),
        image_size: model.config.image_size,
        latent_size: model.config.latent_size(),
        label_nc: model.config.label_nc(),
        frame_drawing: model.config.frame_drawing,
        gap_closings: model.config.gap_closings(),
        hash,
        device,
        precision,
        load_time: start.elapsed(),
    };
    Ok((model, info))
}

/// The exemplar at the model's size (bilinear resize, alpha composited on white as the
/// training data is).
/// A label as a [1, C, H, W] tensor on the model's device.
pub(super) fn label_tensor(model: &MidmModel, l: &Label) -> Result<Tensor> {
    let shape = (1, l.channels, l.size, l.size);
    Ok(Tensor::from_vec(l.data.clone(), shape, &model.device)?)
}

/// An exemplar's label as a run builds it when nothing is traced on the exemplar: its Canny
/// edges (ranking and Run all label gallery images this way).
pub(super) fn plain_exemplar_label(
    image: &RgbaImage,
    canny: crate::image::CannyParams,
    nc: usize,
    size: usize,
) -> Result<Label> {
    let s = size as u32;
    let input = LabelInput::ExemplarEdges {
        canny,
        traced: GrayImage::new(s, s),
        parts: crate::image::empty_parts(s),
    };
    build(&input, image, nc, size)
}

pub(super) fn exemplar_at(image: &RgbaImage, size: usize) -> RgbImage {
    let s = size as u32;
    let resized = image::imageops::resize(image, s, s, FilterType::Triangle);
    crate::image::flatten_alpha(&DynamicImage::ImageRgba8(resized))
}

/// [1, 3, H, W] in about [-1, 1] -> RGBA (clamped).
pub(super) fn tensor_to_image(t: &Tensor) -> Result<RgbaImage> {
    Ok(DynamicImage::ImageRgb8(crate::image::tensor_to_rgb(t)?).to_rgba8())
}

/// [1, h, w] mask in [0, 1] -> grey RGBA.
fn mask_to_image(m: &Tensor) -> Result<RgbaImage> {
    let (_, h, w) = m.dims3()?;
    let v = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(RgbaImage::from_fn(w as u32, h as u32, |x, y| {
        let g = (v[y as usize * w + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgba([g, g, g, 255])
    }))
}

fn no_model() -> Error {
    Error::Invalid("no model is loaded".into())
}
