//! Running a batch: entries in, results out, B pairs per sampler call, one pair's failure never
//! stopping the others. Streams: at most one chunk of inputs and outputs is in memory.
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::DynamicImage;

use super::manifest::{Entry, OutputNames, Pair, Shard};
use crate::error::{ensure, Error, Result};
use crate::image::Notes;
use crate::model::MidmModel;
use crate::params::{params_from_png_text, text_value, Params, ResultInfo, KEY_MODEL_HASH};
use crate::sampling::midm::{translate, MidmInputs, Noise, SamplerOptions, StepEvent, StepSink};

/// PNG text key of a batch result: the hash of its input files' contents (see [`inputs_hash`]),
/// so that a re-run recognises a result of other inputs under the same name.
pub const KEY_INPUTS_HASH: &str = "midm:inputs_sha256";

/// The sampler inputs of one pair from files (images of another size are resized; the notes
/// say so). Errors name the file. The exemplar label defaults to the exemplar's Canny edges on
/// one-channel models.
pub fn load_inputs(
    model: &MidmModel,
    condition: &[PathBuf],
    exemplar: &Path,
    exemplar_label: &[PathBuf],
) -> Result<(MidmInputs, Notes)> {
    let size = model.config.image_size;
    let nc = model.config.label_nc();
    let device = &model.device;
    let (condition, mut notes) = crate::image::load_condition(condition, nc, size, device)?;
    let (exemplar_t, exemplar_rgb, n2) = crate::image::load_exemplar(exemplar, size, device)?;
    notes.extend(n2);
    let exemplar_label = if exemplar_label.is_empty() {
        ensure!(
            nc == 1,
            "this model's condition has {nc} channels: give the exemplar's label with --exemplar-label \
             (one PNG per channel or one .safetensors tensor)"
        );
        crate::image::edge_label(&exemplar_rgb, device)?
    } else {
        let (l, n3) = crate::image::load_condition(exemplar_label, nc, size, device)?;
        notes.extend(n3);
        l
    };
    let inputs = MidmInputs {
        condition,
        exemplar: exemplar_t,
        exemplar_label,
    };
    Ok((inputs, notes))
}

/// sha256 (first 16 hex digits) over the contents of a pair's input files, in order.
pub fn inputs_hash(pair: &Pair) -> Result<String> {
    let mut files = pair.condition.clone();
    files.push(pair.exemplar.clone());
    files.extend(pair.exemplar_label.iter().cloned());
    // The model hash's function: sha256 over file contents, nothing model-specific in it.
    Ok(crate::checkpoint::model_hash(&files)?)
}

/// What a batch runs with (every pair's seed replaces `params.seed`).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub out_dir: PathBuf,
    /// Pairs per chunk (loaded, translated and written together).
    pub batch: usize,
    /// Concurrent sub-batches a chunk is cut into ([`translate_seeded`]).
    pub workers: usize,
    pub params: Params,
    pub shard: Shard,
    /// [`crate::checkpoint::LoadReport::model_hash`] of the model, and where it was loaded from.
    pub model_hash: String,
    pub model_path: PathBuf,
}

/// What became of one pair.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// Its output was already there with matching metadata.
    Skipped,
    Failed(String),
}

/// One pair's outcome, for progress reporting.
#[derive(Debug, Clone)]
pub struct PairReport {
    pub index: usize,
    /// The result file, when the entry could be read.
    pub output: Option<PathBuf>,
    pub outcome: Outcome,
    /// Notes from loading (resizes), and a note when an older result was replaced.
    pub notes: Notes,
}

/// The inputs and result of a pair that is (or was) in the output folder, for the contact sheet.
#[derive(Debug, Clone)]
pub struct SheetRow {
    pub condition: PathBuf,
    pub exemplar: PathBuf,
    pub output: PathBuf,
}

/// Counts of a finished batch, and the pairs whose results exist now (paths only).
#[derive(Debug, Default)]
pub struct Summary {
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
    pub rows: Vec<SheetRow>,
}

impl Summary {
    /// "N done, M skipped (already there), K failed".
    pub fn line(&self) -> String {
        format!(
            "{} done, {} skipped (already there), {} failed",
            self.done, self.skipped, self.failed
        )
    }
}

/// A pair whose inputs are loaded and whose result is to be computed.
struct Ready {
    index: usize,
    pair: Pair,
    out: PathBuf,
    inputs: MidmInputs,
    text: Vec<(String, String)>,
    notes: Notes,
}

/// Run every entry of `shard` (in `config`), `config.batch` pairs per sampler call, calling
/// `report` once per pair as it finishes. Only errors that stop the whole batch (the output
/// folder cannot be made) are returned; a pair's own failure is an [`Outcome::Failed`].
pub fn run_batch(
    model: &MidmModel,
    entries: impl Iterator<Item = Entry>,
    config: &BatchConfig,
    report: &mut dyn FnMut(&PairReport),
) -> Result<Summary> {
    ensure!(config.batch >= 1, "the batch size must be at least 1");
    std::fs::create_dir_all(&config.out_dir)
        .map_err(|e| Error::Invalid(format!("creating {}: {e}", config.out_dir.display())))?;
    let mut runner = Runner {
        model,
        config,
        report,
        summary: Summary::default(),
        names: OutputNames::default(),
    };
    let mut chunk = Vec::with_capacity(config.batch);
    for entry in entries.filter(|e| config.shard.contains(e.index)) {
        if let Some(ready) = runner.prepare(entry) {
            chunk.push(ready);
        }
        if chunk.len() == config.batch {
            runner.run_chunk(std::mem::take(&mut chunk));
        }
    }
    if !chunk.is_empty() {
        runner.run_chunk(chunk);
    }
    Ok(runner.summary)
}

struct Runner<'a> {
    model: &'a MidmModel,
    config: &'a BatchConfig,
    report: &'a mut dyn FnMut(&PairReport),
    summary: Summary,
    names: OutputNames,
}

impl Runner<'_> {
    fn finish(&mut self, index: usize, output: Option<PathBuf>, outcome: Outcome, notes: Notes) {
        match &outcome {
            Outcome::Done => self.summary.done += 1,
            Outcome::Skipped => self.summary.skipped += 1,
            Outcome::Failed(_) => self.summary.failed += 1,
        }
        (self.report)(&PairReport {
            index,
            output,
            outcome,
            notes,
        });
    }

    fn record_row(&mut self, pair: &Pair, out: &Path) {
        self.summary.rows.push(SheetRow {
            condition: pair.condition[0].clone(),
            exemplar: pair.exemplar.clone(),
            output: out.to_path_buf(),
        });
    }

    /// Parse, check for an existing result, load: the pair ready to run, or its outcome reported.
    fn prepare(&mut self, entry: Entry) -> Option<Ready> {
        let index = entry.index;
        let pair = match entry.pair {
            Ok(p) => p,
            Err(e) => {
                let why = format!("manifest entry {index}: {e}");
                self.finish(index, None, Outcome::Failed(why), Vec::new());
                return None;
            }
        };
        let out = self.config.out_dir.join(&pair.output);
        let fail = |why: String| Outcome::Failed(why);
        if !self.names.claim(&pair.output) {
            let why = format!(
                "output {} is also an earlier entry's",
                pair.output.display()
            );
            self.finish(index, Some(out), fail(why), Vec::new());
            return None;
        }
        let text = match self.result_text(&pair) {
            Ok(t) => t,
            Err(e) => {
                self.finish(index, Some(out), fail(e.to_string()), Vec::new());
                return None;
            }
        };
        let mut notes = Vec::new();
        match existing_matches(&out, &text) {
            Some(true) => {
                self.record_row(&pair, &out);
                self.finish(index, Some(out), Outcome::Skipped, notes);
                return None;
            }
            Some(false) => notes.push(format!(
                "{}: made with other parameters, model or inputs; replacing it",
                out.display()
            )),
            None => {}
        }
        let loaded = load_inputs(
            self.model,
            &pair.condition,
            &pair.exemplar,
            &pair.exemplar_label,
        );
        match loaded {
            Ok((inputs, n)) => {
                notes.extend(n);
                Some(Ready {
                    index,
                    pair,
                    out,
                    inputs,
                    text,
                    notes,
                })
            }
            Err(e) => {
                self.finish(index, Some(out), fail(e.to_string()), notes);
                None
            }
        }
    }

    /// The PNG text a result of `pair` carries: the editor's export chunks plus the inputs' hash.
    fn result_text(&self, pair: &Pair) -> Result<Vec<(String, String)>> {
        let params = Params {
            seed: pair.seed,
            ..self.config.params.clone()
        };
        let condition: Vec<String> = pair
            .condition
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let exemplar = pair.exemplar.display().to_string();
        let mut text = ResultInfo {
            params: &params,
            model_hash: Some(&self.config.model_hash),
            model: Some(&self.config.model_path),
            condition: &condition.join(", "),
            exemplar: Some(&exemplar),
        }
        .png_text();
        text.push((KEY_INPUTS_HASH.to_string(), inputs_hash(pair)?));
        Ok(text)
    }

    /// One sampler call for the chunk; if it fails, each pair alone (so that one pair the
    /// sampler refuses does not take the others with it).
    fn run_chunk(&mut self, chunk: Vec<Ready>) {
        let result = translate_chunk(self.model, &self.config.params, self.config.workers, &chunk);
        match result {
            Ok(images) => {
                for (ready, img) in chunk.into_iter().zip(images) {
                    self.write(ready, img);
                }
            }
            Err(_) if chunk.len() > 1 => {
                for ready in chunk {
                    self.run_chunk(vec![ready]);
                }
            }
            Err(e) => {
                let r = chunk.into_iter().next().expect("a chunk of one");
                let why = format!("translation failed: {e}");
                self.finish(r.index, Some(r.out), Outcome::Failed(why), r.notes);
            }
        }
    }

    fn write(&mut self, ready: Ready, img: DynamicImage) {
        let Ready {
            index,
            pair,
            out,
            text,
            notes,
            ..
        } = ready;
        let written = out
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| format!("{}: {e}", out.display()))
            .and_then(|()| crate::image::save_png(&out, &img, &text).map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                self.record_row(&pair, &out);
                self.finish(index, Some(out), Outcome::Done, notes);
            }
            Err(e) => self.finish(index, Some(out), Outcome::Failed(e), notes),
        }
    }
}

/// Translate a chunk in batched sampler calls, each pair with its own seed; the images in
/// chunk order.
fn translate_chunk(
    model: &MidmModel,
    params: &Params,
    workers: usize,
    chunk: &[Ready],
) -> Result<Vec<DynamicImage>> {
    let cat = |f: fn(&MidmInputs) -> &Tensor| -> Result<Tensor> {
        let parts: Vec<&Tensor> = chunk.iter().map(|r| f(&r.inputs)).collect();
        Ok(Tensor::cat(&parts, 0)?)
    };
    let inputs = MidmInputs {
        condition: cat(|i| &i.condition)?,
        exemplar: cat(|i| &i.exemplar)?,
        exemplar_label: cat(|i| &i.exemplar_label)?,
    };
    let seeds: Vec<u64> = chunk.iter().map(|r| r.pair.seed).collect();
    let images = translate_seeded(model, &inputs, &params.sampler_options(), &seeds, workers)?;
    (0..chunk.len())
        .map(|i| {
            let rgb = crate::image::tensor_to_rgb(&images.get(i)?)?;
            Ok(DynamicImage::ImageRgb8(rgb))
        })
        .collect()
}

/// The decoded images [B, 3, H, W] of a batch whose item i has seed `seeds[i]` (each equal to
/// a run of that item alone). With `workers` > 1 the batch is cut into that many sub-batches
/// (sizes differing by at most one) that run concurrently, each a batched tensor on its own
/// thread with single-threaded ops: at the shipped model's size most ops are too small to
/// split across cores (one thread is faster than two on a single image), while whole
/// sub-batches keep every core busy without synchronising inside each op.
pub fn translate_seeded(
    model: &MidmModel,
    inputs: &MidmInputs,
    opts: &SamplerOptions,
    seeds: &[u64],
    workers: usize,
) -> Result<Tensor> {
    translate_seeded_until(model, inputs, opts, seeds, workers, &|| false)
}

/// Stops a translation when its caller says so (checked between UNet passes).
struct CancelSink<'a>(&'a (dyn Fn() -> bool + Sync));

impl StepSink for CancelSink<'_> {
    fn on_event(&mut self, _event: &StepEvent) {}
    fn cancelled(&self) -> bool {
        (self.0)()
    }
}

/// [`translate_seeded`] that stops with [`Error::Cancelled`] within one UNet pass of
/// `cancelled` turning true (the editor's "Run all" yields to runs this way).
pub fn translate_seeded_until(
    model: &MidmModel,
    inputs: &MidmInputs,
    opts: &SamplerOptions,
    seeds: &[u64],
    workers: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Tensor> {
    let b = inputs.condition.dim(0)?;
    ensure!(seeds.len() == b, "{} seeds for a batch of {b}", seeds.len());
    let workers = workers.clamp(1, b.max(1));
    let run = |start: usize, len: usize| -> Result<Tensor> {
        let part = |t: &Tensor| t.narrow(0, start, len);
        let sub = MidmInputs {
            condition: part(&inputs.condition)?,
            exemplar: part(&inputs.exemplar)?,
            exemplar_label: part(&inputs.exemplar_label)?,
        };
        let noise = Noise::SeededEach(seeds[start..start + len].to_vec());
        Ok(translate(model, &sub, opts, &noise, &mut CancelSink(cancelled))?.image)
    };
    if workers == 1 {
        return run(0, b);
    }
    let spans: Vec<(usize, usize)> = (0..workers)
        .map(|w| (w * b / workers, (w + 1) * b / workers - w * b / workers))
        .collect();
    let pools = worker_pools(workers)?;
    let results: Vec<Result<Tensor>> = std::thread::scope(|scope| {
        let handles: Vec<_> = spans
            .iter()
            .zip(&pools)
            .map(|(&(start, len), pool)| scope.spawn(move || pool.install(|| run(start, len))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("a batch worker panicked".into())))
            })
            .collect()
    });
    let images = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images, 0)?)
}

/// `n` one-thread rayon pools, kept for the whole process: the ops of a sub-batch run inside
/// one, so that their own rayon work stays on its thread. Kept rather than made per chunk, so
/// that each worker's thread-local im2col buffer and allocator heap are reused from chunk to
/// chunk instead of set up again.
fn worker_pools(n: usize) -> Result<Vec<std::sync::Arc<rayon::ThreadPool>>> {
    static POOLS: std::sync::Mutex<Vec<std::sync::Arc<rayon::ThreadPool>>> =
        std::sync::Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    while pools.len() < n {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|i| format!("midm-batch-worker-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("starting a batch worker: {e}")))?;
        pools.push(std::sync::Arc::new(pool));
    }
    Ok(pools[..n].to_vec())
}

/// Whether the PNG at `out` records the same parameters (the device aside: it changes where a
/// result was computed, not what), model and inputs as `text`. `None`: no readable PNG there.
fn existing_matches(out: &Path, text: &[(String, String)]) -> Option<bool> {
    if !out.is_file() {
        return None;
    }
    let have = crate::image::read_png_text(out).ok()?;
    let params = |t: &[(String, String)]| {
        params_from_png_text(t)
            .and_then(|p| p.ok())
            .map(|p| Params {
                device: Default::default(),
                ..p
            })
    };
    let same = |key: &str| {
        text_value(&have, key).is_some() && text_value(&have, key) == text_value(text, key)
    };
    Some(
        params(&have).is_some()
            && params(&have) == params(text)
            && same(KEY_MODEL_HASH)
            && same(KEY_INPUTS_HASH),
    )
}
