//! The headless side of the `midm` binary: `midm translate`, `midm batch`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceChoice;
use crate::model::{MidmModel, Precision};
use crate::params::{default_model_path, Params, ResultInfo};
use crate::sampling::midm::{translate, MidmInputs, Noise, SamplerOptions, StepEvent, StepSink};

/// Sampler settings shared by the CLI commands; the defaults are the editor's ([`Params`]).
#[derive(Debug, Clone, clap::Args)]
pub struct SamplerArgs {
    /// Random seed of the diffusion noise.
    #[arg(long, default_value_t = Params::default().seed)]
    pub seed: u64,
    /// DDIM steps of the interleaved schedule.
    #[arg(long, default_value_t = Params::default().ddim_steps)]
    pub ddim_steps: usize,
    /// Interleaved (matching + DDIM) steps at the end of that schedule.
    #[arg(long, default_value_t = Params::default().interleaved_steps)]
    pub interleaved_steps: usize,
    /// Softmax temperature of the soft warp.
    #[arg(long, default_value_t = Params::default().temperature)]
    pub temperature: f64,
    /// Forward-backward consistency threshold of the confidence mask.
    #[arg(long, default_value_t = Params::default().fb_threshold)]
    pub fb_threshold: f64,
    /// Take every re-warp, without the confidence mask.
    #[arg(long)]
    pub no_mask: bool,
    /// Skip the refinement pass.
    #[arg(long)]
    pub no_refine: bool,
}

impl SamplerArgs {
    /// The parameters these flags give (the editor's type, so that both record the same).
    pub fn params(&self, device: DeviceChoice, precision: Precision) -> Params {
        Params {
            seed: self.seed,
            ddim_steps: self.ddim_steps,
            interleaved_steps: self.interleaved_steps,
            temperature: self.temperature,
            fb_threshold: self.fb_threshold,
            use_mask: !self.no_mask,
            refine: !self.no_refine,
            device,
            precision,
            ..Params::default()
        }
    }

    /// Flags that no run could take, named as the user typed them (the editor's widgets keep
    /// their values in range; [`Params::sampler_options`] clamps, which would hide the mistake).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.interleaved_steps >= 1,
            "--interleaved-steps must be at least 1"
        );
        anyhow::ensure!(
            self.interleaved_steps < self.ddim_steps,
            "--interleaved-steps ({}) must be fewer than --ddim-steps ({})",
            self.interleaved_steps,
            self.ddim_steps
        );
        anyhow::ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "--temperature must be a positive number (got {})",
            self.temperature
        );
        anyhow::ensure!(
            self.fb_threshold > 0.0 && self.fb_threshold.is_finite(),
            "--fb-threshold must be a positive number (got {})",
            self.fb_threshold
        );
        Ok(())
    }

    pub fn options(&self) -> SamplerOptions {
        self.params(DeviceChoice::Cpu, Precision::F32)
            .sampler_options()
    }
}

/// `midm translate`.
#[derive(Debug, Clone, clap::Args)]
pub struct TranslateArgs {
    /// Condition: an edge-map PNG (1-channel models), one PNG per channel in channel order
    /// (repeat the flag), or one .safetensors tensor [C, H, W].
    #[arg(long, required = true, num_args = 1..)]
    pub condition: Vec<PathBuf>,
    /// Exemplar photo (any common format; resized to the model's size).
    #[arg(long)]
    pub exemplar: PathBuf,
    /// Exemplar label, same layout as --condition. Default for 1-channel models: the
    /// exemplar's Canny edges.
    #[arg(long, num_args = 1..)]
    pub exemplar_label: Vec<PathBuf>,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Write every step's r~n, R and M as PNGs into this folder.
    #[arg(long)]
    pub steps_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// Which model to load, on which device, in which number format (`translate` and `batch`).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model folder or checkpoint file (default: $MIDM_MODEL, else the shipped model in weights/).
    #[arg(long = "model")]
    pub path: Option<PathBuf>,
    /// cpu or cuda[:N].
    // The doc comment is the --help text: its brackets are notation, not rustdoc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Number format of the UNet and autoencoder (matching always runs in f32). Half precision
    /// pays off on a GPU; on a CPU it is slower than f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// A model loaded from [`ModelArgs`], with what a result's metadata records of it.
pub struct CliModel {
    pub loaded: crate::checkpoint::LoadedModel,
    /// Where it was loaded from.
    pub path: PathBuf,
}

impl ModelArgs {
    /// Load the model, printing the load report on stderr.
    pub fn load(&self) -> anyhow::Result<CliModel> {
        let device = parse_device(&self.device)?.to_device()?;
        let path = self.path.clone().unwrap_or_else(default_model_path);
        let loaded = crate::checkpoint::inspect(&path)
            .and_then(|c| c.build_with(&device, self.precision))
            .with_context(|| format!("loading the model from {}", path.display()))?;
        eprintln!("{}", loaded.report.summary());
        Ok(CliModel { loaded, path })
    }

    /// The sampler settings of `sampler` as recorded with a result of this model (the commands
    /// check the flags first, [`SamplerArgs::check`]).
    pub fn params(&self, sampler: &SamplerArgs) -> anyhow::Result<Params> {
        Ok(sampler.params(parse_device(&self.device)?, self.precision))
    }
}

pub fn parse_device(s: &str) -> anyhow::Result<DeviceChoice> {
    match s {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        s if s.starts_with("cuda:") => Ok(DeviceChoice::Cuda(s[5..].parse().context("cuda:N")?)),
        _ => anyhow::bail!("unknown device {s:?}: use cpu, cuda or cuda:N"),
    }
}

/// Build the sampler inputs from files, resizing as needed (and saying so on stderr).
pub fn load_inputs(
    model: &MidmModel,
    condition: &[PathBuf],
    exemplar: &Path,
    exemplar_label: &[PathBuf],
) -> anyhow::Result<MidmInputs> {
    let (inputs, notes) = crate::batch::load_inputs(model, condition, exemplar, exemplar_label)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(inputs)
}

/// Decode a latent and return an RGB image.
pub fn decode_rgb(model: &MidmModel, latent: &Tensor) -> anyhow::Result<DynamicImage> {
    let img = model.autoencoder.decode(latent)?;
    Ok(DynamicImage::ImageRgb8(crate::image::tensor_to_rgb(&img)?))
}

/// Progress on stderr and, optionally, every step written as PNGs.
struct CliSink<'a> {
    model: &'a MidmModel,
    bar: ProgressBar,
    steps_dir: Option<PathBuf>,
    error: Option<anyhow::Error>,
    /// How the model framed the drawing (`midms.frame_drawing`): steps are written back on the
    /// canvas, as the final image is.
    frame: Option<crate::sampling::frame::Frame>,
    /// Whether the model closed a gap in the drawing's outline (`midms.close_gaps`).
    gaps_closed: bool,
    /// What the model did to the exemplar before using it ([`crate::sampling::midm::ExemplarPrep`]).
    exemplar: Option<crate::sampling::midm::ExemplarPrep>,
}

/// `NNN_<step>`: the event index, then the step's name as the editor shows it.
fn step_name(e: &StepEvent) -> String {
    format!("{:03}_{}", e.index, e.kind.name())
}

impl CliSink<'_> {
    fn write_step(&self, dir: &Path, e: &StepEvent) -> anyhow::Result<()> {
        let name = step_name(e);
        let save = |suffix: &str, img: DynamicImage| -> anyhow::Result<()> {
            let img = match &self.frame {
                // A mask is black (not kept) beyond the framed canvas, an image white.
                Some(f) => {
                    DynamicImage::ImageRgba8(f.unframe_rgba(&img.to_rgba8(), suffix == "mask"))
                        .to_rgb8()
                        .into()
                }
                None => img,
            };
            crate::image::save_png(&dir.join(format!("{name}_{suffix}.png")), &img, &[])?;
            Ok(())
        };
        save("pred_x0", decode_rgb(self.model, &e.pred_x0)?)?;
        if let Some(w) = &e.warped {
            save("warped", decode_rgb(self.model, w)?)?;
        }
        if let Some(m) = &e.mask {
            let size = self.model.config.image_size as u32;
            let grey = crate::image::tensor_to_grey(&m.get(0)?)?;
            let big =
                image::imageops::resize(&grey, size, size, image::imageops::FilterType::Nearest);
            save("mask", DynamicImage::ImageLuma8(big))?;
        }
        Ok(())
    }
}

impl StepSink for CliSink<'_> {
    fn on_event(&mut self, e: &StepEvent) {
        self.bar.set_length(e.total as u64);
        self.bar.set_position(e.index as u64 + 1);
        self.bar.set_message(match e.t {
            Some(t) => format!("{} (t = {t})", step_name(e)),
            None => step_name(e),
        });
        if let Some(frames) = &e.frames {
            self.frame = frames[0];
        }
        if let Some(closed) = &e.closed_gaps {
            self.gaps_closed = closed[0];
        }
        if let Some(prep) = &e.exemplar {
            self.exemplar = Some(prep.clone());
        }
        if let (Some(dir), None) = (&self.steps_dir, &self.error) {
            if let Err(err) = self.write_step(dir, e) {
                self.error = Some(err);
            }
        }
    }
}

pub fn run_translate(args: &TranslateArgs) -> anyhow::Result<()> {
    args.sampler.check()?;
    let t0 = Instant::now();
    let CliModel { loaded, path } = args.model.load()?;
    eprintln!("loaded in {:.2} s", t0.elapsed().as_secs_f64());
    let model_hash = loaded.report.model_hash()?;
    let model = loaded.model;
    let inputs = load_inputs(
        &model,
        &args.condition,
        &args.exemplar,
        &args.exemplar_label,
    )?;
    if let Some(dir) = &args.steps_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]").unwrap());
    let mut sink = CliSink {
        model: &model,
        bar,
        steps_dir: args.steps_dir.clone(),
        error: None,
        frame: None,
        gaps_closed: false,
        exemplar: None,
    };
    let t1 = Instant::now();
    let out = translate(
        &model,
        &inputs,
        &args.sampler.options(),
        &Noise::Seeded(args.sampler.seed),
        &mut sink,
    )?;
    sink.bar.finish();
    if let Some(e) = sink.error {
        return Err(e.context("writing the steps"));
    }
    let exemplar_prep = sink.exemplar.as_ref();
    let note = crate::sampling::midm::preparation_note(
        sink.gaps_closed,
        sink.frame.map(|f| f.scale),
        exemplar_prep.and_then(|p| p.frames[0]).map(|f| f.scale),
        exemplar_prep.is_some_and(|p| p.cleared[0]),
    );
    if !note.is_empty() {
        eprintln!("{note}");
    }
    let img = DynamicImage::ImageRgb8(crate::image::tensor_to_rgb(&out.image)?);
    let condition: Vec<String> = args
        .condition
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let exemplar = args.exemplar.display().to_string();
    let text = ResultInfo {
        params: &args.model.params(&args.sampler)?,
        model_hash: Some(model_hash.as_str()),
        model: Some(path.as_path()),
        condition: &condition.join(", "),
        exemplar: Some(exemplar.as_str()),
    }
    .png_text();
    crate::image::save_png(&args.out, &img, &text)?;
    eprintln!(
        "wrote {} ({:.2} s translation)",
        args.out.display(),
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `midm batch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Manifest: CSV with a header (condition,exemplar[,exemplar_label][,seed][,output]) or
    /// JSON Lines (one object per line with those keys). Relative paths are relative to the
    /// manifest's folder. Not with --grid.
    #[allow(rustdoc::broken_intra_doc_links)] // --help text, as above
    #[arg(required_unless_present = "grid", conflicts_with = "grid")]
    pub manifest: Option<PathBuf>,
    /// Every sketch with every exemplar and every seed (--sketches, --exemplars, --seeds);
    /// results are named {sketch}__{exemplar}__s{seed}.png.
    #[arg(long, requires_all = ["sketches", "exemplars"])]
    pub grid: bool,
    /// Grid: sketch files or folders (a folder gives its image files, sorted by name).
    #[arg(long, num_args = 1..)]
    pub sketches: Vec<PathBuf>,
    /// Grid: exemplar files or folders.
    #[arg(long, num_args = 1..)]
    pub exemplars: Vec<PathBuf>,
    /// Grid: seeds, comma-separated (default: --seed).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Grid: pair each sketch only with the K exemplars whose outlines fit it best (the editor
    /// gallery's ranking by outline), best first.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: Option<u64>,
    /// Output folder (results, and sheet.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Pairs per chunk: loaded together, translated as batched tensors (each pair keeps its own
    /// seed), written together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Concurrent sub-batches a chunk is cut into, each on one thread with single-threaded ops
    /// (default: one per thread, at most one per pair). 1: the whole chunk in one sampler call,
    /// its ops spread over all threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// i/N: run only the entries j with j % N == i (0-based), e.g. one task of an array job.
    #[arg(long, default_value = "0/1")]
    pub shard: crate::batch::Shard,
    /// Contact sheet of the results (condition, exemplar, output): default DIR/sheet.png, or
    /// DIR/sheet-shard{i}of{N}.png with --shard, so that the shards of one folder do not
    /// overwrite each other's.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
    /// Write no contact sheet.
    #[arg(long, conflicts_with = "sheet")]
    pub no_sheet: bool,
    /// Allocate from glibc's malloc instead of mimalloc: a peak about a quarter lower (1000
    /// pairs at --batch 8: 343-347 against 472 MiB), 3-8 % slower (docs/performance.md).
    #[arg(long)]
    pub low_memory: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sampler settings for every pair; --seed is the seed of manifest rows that give none.
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// `midm batch`: prints a summary line; an error (nonzero exit) when any pair failed.
pub fn run_batch(args: &BatchArgs) -> anyhow::Result<()> {
    use crate::batch::{Grid, Manifest, Outcome};
    args.sampler.check()?;
    anyhow::ensure!(
        args.top.is_none() || args.grid,
        "--top picks exemplars for a --grid; a manifest lists its pairs itself"
    );
    let CliModel { loaded, path } = args.model.load()?;
    let manifest = match &args.manifest {
        Some(path) => Manifest::open(path, args.sampler.seed)?,
        None => {
            let seeds = match args.seeds.is_empty() {
                true => vec![args.sampler.seed],
                false => args.seeds.clone(),
            };
            let mut grid = Grid::new(&args.sketches, &args.exemplars, seeds)?;
            if let Some(k) = args.top {
                let cfg = &loaded.model.config;
                grid.keep_best(k as usize, cfg.image_size, cfg.label_nc());
            }
            Manifest::Grid(grid)
        }
    };
    let shard = args.shard;
    let total = manifest.count()?;
    let mine = (0..total).filter(|j| shard.contains(*j)).count();
    let config = crate::batch::BatchConfig {
        out_dir: args.out.clone(),
        batch: args.batch,
        workers: args.workers.unwrap_or_else(rayon::current_num_threads),
        params: args.model.params(&args.sampler)?,
        shard,
        model_hash: loaded.report.model_hash()?,
        model_path: path,
    };
    eprintln!(
        "{mine} of {total} pairs (shard {}/{}), {} per chunk in {} sub-batches",
        shard.index,
        shard.count,
        args.batch,
        config.workers.clamp(1, args.batch.max(1))
    );
    let bar = ProgressBar::new(mine as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed} < {eta}] {per_sec} {msg}")
            .unwrap(),
    );
    let t0 = Instant::now();
    let mut report = |r: &crate::batch::PairReport| {
        let name = r
            .output
            .as_ref()
            .map_or_else(|| format!("entry {}", r.index), |p| p.display().to_string());
        for n in &r.notes {
            bar.suspend(|| eprintln!("note: {n}"));
        }
        if let Outcome::Failed(why) = &r.outcome {
            bar.suspend(|| eprintln!("failed: entry {} ({name}): {why}", r.index));
        }
        bar.set_message(name);
        bar.inc(1);
    };
    let summary =
        crate::batch::run_batch(&loaded.model, manifest.entries()?, &config, &mut report)?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if !args.no_sheet && !summary.rows.is_empty() {
        let sheet = args.sheet.clone().unwrap_or_else(|| {
            args.out.join(match shard.count {
                1 => "sheet.png".to_string(),
                n => format!("sheet-shard{}of{n}.png", shard.index),
            })
        });
        let layout = crate::batch::SheetLayout::default();
        crate::batch::write_sheet(&sheet, &summary.rows, &layout)
            .with_context(|| format!("writing {}", sheet.display()))?;
        eprintln!("wrote {} ({} results)", sheet.display(), summary.rows.len());
    }
    eprintln!(
        "{} in {secs:.1} s ({:.3} images/s)",
        summary.line(),
        summary.done as f64 / secs.max(1e-9)
    );
    anyhow::ensure!(
        summary.failed == 0,
        "{} of {mine} pairs failed (see above)",
        summary.failed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sampler: SamplerArgs,
    }

    /// `midm translate` without sampler flags runs what the editor runs by default.
    #[test]
    fn cli_defaults_are_the_editors() {
        let args = Cli::parse_from(["midm"]).sampler;
        let editor = Params::default();
        assert_eq!(args.params(editor.device, editor.precision), editor);
        assert_eq!(args.options(), SamplerOptions::default());
        let off = Cli::parse_from(["midm", "--no-refine", "--seed", "3"]).sampler;
        assert_eq!(off.options().refine, None);
        assert_eq!(off.params(editor.device, editor.precision).seed, 3);
    }

    #[test]
    fn impossible_sampler_flags_are_refused_by_their_names() {
        let err = |argv: &[&str]| {
            let mut all = vec!["midm"];
            all.extend_from_slice(argv);
            Cli::parse_from(all)
                .sampler
                .check()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["--ddim-steps", "0"]),
            "--interleaved-steps (4) must be fewer than --ddim-steps (0)"
        );
        assert_eq!(
            err(&["--ddim-steps", "16", "--interleaved-steps", "16"]),
            "--interleaved-steps (16) must be fewer than --ddim-steps (16)"
        );
        assert!(err(&["--interleaved-steps", "0"]).starts_with("--interleaved-steps must"));
        assert!(err(&["--temperature", "0"]).starts_with("--temperature must"));
        assert!(err(&["--fb-threshold", "0"]).starts_with("--fb-threshold must"));
        assert!(
            Cli::parse_from(["midm", "--ddim-steps", "2", "--interleaved-steps", "1"])
                .sampler
                .check()
                .is_ok()
        );
    }
}
