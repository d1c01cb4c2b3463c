//! The headless side of the `midm` binary: `midm translate`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceChoice;
use crate::imageio;
use crate::model::{MidmModel, Precision};
use crate::sampling::midm::{
    translate, MidmInputs, Noise, RefineOptions, SamplerOptions, StepEvent, StepKind, StepSink,
};

/// Where the default model lives: `$MIDM_MODEL`, else `./weights`, else the `weights/` folder
/// of the source tree this binary was built from.
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MIDM_MODEL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("weights");
    if local.join("config.yaml").exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights")
}

/// Sampler settings shared by the CLI commands.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplerArgs {
    /// Random seed of the diffusion noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DDIM steps of the interleaved schedule.
    #[arg(long, default_value_t = 16)]
    pub ddim_steps: usize,
    /// Interleaved (matching + DDIM) steps at the end of that schedule.
    #[arg(long, default_value_t = 4)]
    pub interleaved_steps: usize,
    /// Softmax temperature of the soft warp.
    #[arg(long, default_value_t = 0.005)]
    pub temperature: f64,
    /// Forward-backward consistency threshold of the confidence mask.
    #[arg(long, default_value_t = 0.5)]
    pub fb_threshold: f64,
    /// Take every re-warp, without the confidence mask.
    #[arg(long)]
    pub no_mask: bool,
    /// Skip the refinement pass.
    #[arg(long)]
    pub no_refine: bool,
}

impl SamplerArgs {
    pub fn options(&self) -> SamplerOptions {
        let defaults = SamplerOptions::default();
        SamplerOptions {
            ddim_steps: self.ddim_steps,
            interleaved_steps: self.interleaved_steps,
            temperature: self.temperature,
            fb_threshold: self.fb_threshold,
            use_mask: !self.no_mask,
            refine: if self.no_refine {
                None
            } else {
                Some(RefineOptions {
                    ddim_steps: 200,
                    eta: 1.0,
                    hijack_step: 180,
                })
            },
            ..defaults
        }
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
    /// Model folder or checkpoint file (default: the shipped model in weights/).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write every step's r~n, R and M as PNGs into this folder.
    #[arg(long)]
    pub steps_dir: Option<PathBuf>,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Number format of the UNet and autoencoder (matching always runs in f32). Half precision
    /// pays off on a GPU; on a CPU it is slower than f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    #[command(flatten)]
    pub sampler: SamplerArgs,
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
    let size = model.config.image_size;
    let nc = model.config.label_nc();
    let device = &model.device;
    let (condition, mut notes) = imageio::load_condition(condition, nc, size, device)?;
    let (exemplar_t, exemplar_rgb, n2) = imageio::load_exemplar(exemplar, size, device)?;
    notes.extend(n2);
    let exemplar_label = if exemplar_label.is_empty() {
        anyhow::ensure!(
            nc == 1,
            "this model's condition has {nc} channels: give the exemplar's label with --exemplar-label \
             (one PNG per channel or one .safetensors tensor)"
        );
        imageio::edge_label(&exemplar_rgb, device)?
    } else {
        let (l, n3) = imageio::load_condition(exemplar_label, nc, size, device)?;
        notes.extend(n3);
        l
    };
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(MidmInputs {
        condition,
        exemplar: exemplar_t,
        exemplar_label,
    })
}

/// Decode a latent and return an RGB image.
pub fn decode_rgb(model: &MidmModel, latent: &Tensor) -> anyhow::Result<DynamicImage> {
    let img = model.autoencoder.decode(latent)?;
    Ok(DynamicImage::ImageRgb8(imageio::tensor_to_rgb(&img)?))
}

/// Progress on stderr and, optionally, every step written as PNGs.
struct CliSink<'a> {
    model: &'a MidmModel,
    bar: ProgressBar,
    steps_dir: Option<PathBuf>,
    error: Option<anyhow::Error>,
}

fn step_name(e: &StepEvent) -> String {
    match e.kind {
        StepKind::InitialWarp => format!("{:03}_initial", e.index),
        StepKind::Interleaved { k, .. } => format!("{:03}_loop{k}", e.index),
        StepKind::Refine { i } => format!("{:03}_refine{i:02}", e.index),
        StepKind::Final => format!("{:03}_final", e.index),
    }
}

impl CliSink<'_> {
    fn write_step(&self, dir: &Path, e: &StepEvent) -> anyhow::Result<()> {
        let name = step_name(e);
        let save = |suffix: &str, img: DynamicImage| -> anyhow::Result<()> {
            imageio::save_png(&dir.join(format!("{name}_{suffix}.png")), &img, &[])?;
            Ok(())
        };
        save("pred_x0", decode_rgb(self.model, &e.pred_x0)?)?;
        if let Some(w) = &e.warped {
            save("warped", decode_rgb(self.model, w)?)?;
        }
        if let Some(m) = &e.mask {
            let size = self.model.config.image_size as u32;
            let grey = imageio::tensor_to_grey(&m.get(0)?)?;
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
        if let (Some(dir), None) = (&self.steps_dir, &self.error) {
            if let Err(err) = self.write_step(dir, e) {
                self.error = Some(err);
            }
        }
    }
}

pub fn run_translate(args: &TranslateArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?.to_device()?;
    let model_path = args.model.clone().unwrap_or_else(default_model_path);
    let t0 = Instant::now();
    let loaded = crate::checkpoint::inspect(&model_path)
        .and_then(|c| c.build_with(&device, args.precision))
        .with_context(|| format!("loading the model from {}", model_path.display()))?;
    eprintln!("{}", loaded.report.summary());
    eprintln!("loaded in {:.2} s", t0.elapsed().as_secs_f64());
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
    let img = DynamicImage::ImageRgb8(imageio::tensor_to_rgb(&out.image)?);
    let text = vec![
        ("midm.seed".to_string(), args.sampler.seed.to_string()),
        (
            "midm.condition".to_string(),
            format!("{:?}", args.condition),
        ),
        ("midm.precision".to_string(), args.precision.to_string()),
        (
            "midm.exemplar".to_string(),
            args.exemplar.display().to_string(),
        ),
        (
            "midm.options".to_string(),
            serde_json::to_string(&args.sampler.options())?,
        ),
    ];
    imageio::save_png(&args.out, &img, &text)?;
    eprintln!(
        "wrote {} ({:.2} s translation)",
        args.out.display(),
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}
