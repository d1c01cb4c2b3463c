//! `midm bench`: times every stage of a translation (after warm-up, medians over runs) on the
//! shipped model or on the official CelebA-HQ size with random weights, with the analytical
//! FLOPs of each stage ([`flops`]) and the achieved rate.
pub mod flops;
pub mod worker;

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, DdpmConfig, MidmConfig, MidmModel,
    Precision, UNetConfig,
};
use crate::sampling::{matching, midm};

/// The official CelebA-HQ edge-to-face configuration (paper / authors' config), 256x256 images.
pub fn official_config() -> MidmConfig {
    MidmConfig {
        image_size: 256,
        autoencoder: AutoencoderConfig {
            kind: AutoencoderKind::Vq { n_embed: 8192 },
            embed_dim: 3,
            z_channels: 3,
            double_z: false,
            in_channels: 3,
            out_ch: 3,
            ch: 128,
            ch_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![],
            resolution: 256,
        },
        unet: UNetConfig {
            image_size: 64,
            in_channels: 3,
            out_channels: 3,
            model_channels: 224,
            channel_mult: vec![1, 2, 3, 4],
            num_res_blocks: 2,
            attention_resolutions: vec![8, 4, 2],
            num_head_channels: Some(32),
            num_heads: None,
        },
        ddpm: DdpmConfig::default(),
        correspondence: CorrespondenceConfig {
            label_nc: 15,
            latent_channels: 3,
            n_ch: 256,
            ndf: 64,
            spade_nhidden: 128,
            trunk_blocks: 4,
            label_fill: false,
        },
        label_downsample: Default::default(),
        region_matching: false,
        background_latent: None,
        region_open_strokes: false,
        region_keep_outside: false,
        colour_transfer: false,
        colour_temperature: None,
        colour_gamut: Default::default(),
        refine_eta: None,
        unet_condition: false,
        layout_prior: 0.0,
        colour_layout_prior: 0.0,
        frame_drawing: 0.0,
        frame_exemplar: 0.0,
        close_gaps: 0,
        close_wide_gaps: None,
        clear_exemplar_ground: false,
    }
}

/// Random weights for any requested tensor: N(0, 1/fan_in) for weights, so that activations
/// stay O(1) through deep stacks (timings of NaN/denormal-ridden tensors would be meaningless);
/// spectral-norm vectors are unit vectors so that sigma stays O(1).
struct RandomWeights {
    seed: u64,
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let n = s.elem_count();
        let seed = self.seed
            ^ name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let mut state = seed | 1;
        let mut next = || {
            // xorshift64*: plenty for benchmark weights.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            1
        };
        let scale = if dims.len() > 1 {
            (12.0 / fan_in as f32).sqrt()
        } else {
            0.1
        };
        let mut v: Vec<f32> = (0..n).map(|_| next() * scale).collect();
        if name.ends_with("weight_u") || name.ends_with("weight_v") {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        if name.ends_with("norm.weight")
            || name.contains("norm") && name.ends_with(".weight") && dims.len() == 1
        {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Tensor::from_vec(v, dims, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A model of `config` with random weights.
pub fn random_model(
    config: &MidmConfig,
    device: &Device,
    precision: Precision,
) -> candle_core::Result<MidmModel> {
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> =
        Box::new(RandomWeights { seed: 1012 });
    let vb = VarBuilder::from_backend(backend, DType::F32, device.clone());
    MidmModel::with_precision(vb, config, precision)
}

/// Timings of one stage.
#[derive(Debug, Clone)]
pub struct StageTiming {
    /// Stable key (shared with `train/bench_torch.py`).
    pub key: &'static str,
    pub name: &'static str,
    pub median: Duration,
    pub runs: usize,
    /// Analytical FLOPs of the stage (None: not a compute stage, e.g. a latency).
    pub flops: Option<flops::Flops>,
    /// The process's peak resident memory once the stage's runs ended (Linux `VmHWM`; None
    /// elsewhere and for rows that are not measured runs). Stages run in the table's order, so
    /// the row where it rises is the stage that set a new peak.
    pub peak_memory: Option<u64>,
}

impl StageTiming {
    fn with_flops(mut self, f: flops::Flops) -> Self {
        self.flops = Some(f);
        self
    }

    /// Achieved GFLOP/s (all counted FLOPs over the median time).
    pub fn gflops_per_s(&self) -> Option<f64> {
        self.flops
            .map(|f| f.total() as f64 / self.median.as_secs_f64().max(1e-12) / 1e9)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sync(device: &Device) -> candle_core::Result<()> {
    device.synchronize()
}

fn time<T, F: FnMut() -> crate::Result<T>>(
    (key, name): (&'static str, &'static str),
    device: &Device,
    warmup: usize,
    runs: usize,
    mut f: F,
) -> crate::Result<StageTiming> {
    for _ in 0..warmup {
        f()?;
        sync(device)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        sync(device)?;
        times.push(t.elapsed());
    }
    Ok(StageTiming {
        key,
        name,
        median: median(times),
        runs: runs.max(1),
        flops: None,
        peak_memory: peak_memory_bytes(),
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Number of UNet passes and re-matchings of a translation with `opts`.
pub fn pass_counts(opts: &midm::SamplerOptions) -> (u64, u64) {
    let refine = opts
        .refine
        .as_ref()
        .map_or(0, |r| r.ddim_steps.saturating_sub(r.hijack_step));
    let rematches = opts
        .rewarp_at
        .iter()
        .filter(|&&k| k > 0 && k < opts.interleaved_steps)
        .count();
    ((opts.interleaved_steps + refine) as u64, rematches as u64)
}

/// Time every stage and the whole translation of `model` on random inputs (batch 1).
///
/// `whole`: also time whole translations and the first-step latency (else they are estimated
/// from the stages, see [`estimate_translation`]).
pub fn bench_model(
    model: &MidmModel,
    warmup: usize,
    runs: usize,
    whole: bool,
) -> crate::Result<Vec<StageTiming>> {
    bench_model_batch(model, 1, warmup, runs, whole)
}

/// [`bench_model`] on a batch of `batch` random pairs (each with its own seed): every time is
/// that of the whole batch, and the FLOPs are those of one pair (so divide by `batch`).
/// Long by its layout, not its logic: one timed closure per stage, in the order the report
/// prints them, each beside its FLOPs, so that a stage and its count are read together.
pub fn bench_model_batch(
    model: &MidmModel,
    batch: usize,
    warmup: usize,
    runs: usize,
    whole: bool,
) -> crate::Result<Vec<StageTiming>> {
    let cfg = &model.config;
    let device = &model.device;
    let b = batch.max(1);
    let midm::MidmInputs {
        condition,
        exemplar,
        exemplar_label,
    } = random_inputs(model, b)?;
    let seeds = midm::Noise::SeededEach((0..b as u64).collect());
    let ae = &model.autoencoder;
    let corr_net = &model.correspondence;
    let opts = midm::SamplerOptions::default();
    let fl = flops::StageFlops::new(cfg);

    let latent = ae.encode(&exemplar)?;
    let (_, _, h, w) = latent.dims4()?;
    let (seg_in, label_ds) = cfg.condition_on_grid(&condition)?;
    let ref_label_ds = cfg.label_downsample.apply(&exemplar_label, h, w)?;
    let (trg_out, trg_matching) = corr_net.target_features(&seg_in, &label_ds)?;
    let (ref_out, _) = corr_net.reference_features(&latent, &ref_label_ds)?;
    let t = Tensor::new(vec![500u32; b], device)?;
    // What the sampler gives the UNet: the latent, and the drawing for a model that sees it.
    let unet_input = if cfg.unet_condition {
        Tensor::cat(&[&latent, &seg_in], 1)?
    } else {
        latent.clone()
    };

    let mut out = vec![
        time(
            ("encode", "encode (autoencoder)"),
            device,
            warmup,
            runs,
            || Ok(ae.encode(&exemplar)?),
        )?
        .with_flops(fl.encode),
        time(
            ("condition_side", "correspondence: condition side"),
            device,
            warmup,
            runs,
            || Ok(corr_net.target_features(&seg_in, &label_ds)?),
        )?
        .with_flops(fl.condition_side),
        time(
            ("exemplar_side", "correspondence: exemplar side"),
            device,
            warmup,
            runs,
            || Ok(corr_net.reference_features(&latent, &ref_label_ds)?),
        )?
        .with_flops(fl.exemplar_side),
        time(
            ("correlation_warp", "correlation + soft warp"),
            device,
            warmup,
            runs,
            || {
                let c = matching::correlation(&trg_out, &ref_out)?;
                Ok(matching::soft_warp(&latent, &c, opts.temperature)?)
            },
        )?
        .with_flops(fl.correlation_warp),
        time(
            ("iteration_features", "iteration features (F_Y^iter)"),
            device,
            warmup,
            runs,
            || Ok(corr_net.iteration_features(&latent, &trg_matching)?),
        )?
        .with_flops(fl.iteration_features),
        {
            // Made here and dropped after the stage, so that it does not count in the later
            // stages' peak memory (67 MB at the official size).
            let corr = matching::correlation(&trg_out, &ref_out)?;
            time(
                ("cycle_check", "cycle check (flow + fb + mask)"),
                device,
                warmup,
                runs,
                || {
                    Ok(matching::cycle_mask(
                        &corr,
                        h,
                        w,
                        opts.temperature,
                        opts.fb_threshold,
                    )?)
                },
            )?
            .with_flops(fl.cycle_check)
        },
        time(("unet", "UNet pass"), device, warmup, runs, || {
            Ok(model.unet.forward(&unet_input, &t)?)
        })?
        .with_flops(fl.unet),
        time(
            ("decode", "decode (VQ + decoder)"),
            device,
            warmup,
            runs,
            || Ok(ae.decode(&latent)?),
        )?
        .with_flops(fl.decode),
    ];
    if cfg.frame_drawing > 0.0 {
        // A drawing a third of the canvas wide in a corner (the random condition fills it, so
        // the translation below is not framed): the host work framing adds to a run.
        let size = cfg.image_size;
        let mut small = vec![0f32; size * size];
        for i in 0..size / 3 {
            for (y, x) in [
                (4, 4 + i),
                (3 + size / 3, 4 + i),
                (4 + i, 4),
                (4 + i, 3 + size / 3),
            ] {
                small[y * size + x] = 1.0;
            }
        }
        let small = Tensor::from_vec(small, (1, 1, size, size), device)?.repeat((b, 1, 1, 1))?;
        let image = exemplar.clone();
        out.push(time(
            ("frame", "frame a small drawing (label + image back)"),
            device,
            warmup,
            runs,
            || {
                let (label, frames) =
                    crate::sampling::frame::frame_condition(&small, cfg.frame_drawing)?;
                Ok((
                    label,
                    crate::sampling::frame::unframe_images(&image, &frames)?,
                ))
            },
        )?);
    }
    let closings = cfg.gap_closings();
    if !closings.is_empty() {
        // A square outline half the canvas wide with a 4 px gap in its right side (the random
        // condition's gaps are not timed: it is noise): what closing adds to a run.
        let (size, half) = (cfg.image_size, cfg.image_size / 2);
        let (lo, hi) = (size / 4, size / 4 + half - 1);
        let mut gapped = vec![0f32; size * size];
        for i in lo..=hi {
            for (y, x) in [(lo, i), (hi, i), (i, lo), (i, hi)] {
                gapped[y * size + x] = 1.0;
            }
        }
        for y in size / 2 - 2..size / 2 + 2 {
            gapped[y * size + hi] = 0.0;
        }
        let gapped = Tensor::from_vec(gapped, (1, 1, size, size), device)?.repeat((b, 1, 1, 1))?;
        out.push(time(
            ("gaps", "close a gap in a drawing's outline"),
            device,
            warmup,
            runs,
            || {
                let (closed, flags) = crate::sampling::gaps::close_gaps(&gapped, &closings)?;
                if !flags.iter().all(|c| *c) {
                    return Err(crate::Error::Invalid(
                        "the bench's gap was not closed".into(),
                    ));
                }
                Ok(closed)
            },
        )?);
    }
    if cfg.frame_exemplar > 0.0 || cfg.clear_exemplar_ground {
        // The bench exemplar's top-left third in the middle of a plain light-blue ground (the
        // whole one fills its image, so nothing is done to it): what the model's exemplar
        // preparation adds to a run's exemplar side, the sampler's own function.
        let (size, third) = (cfg.image_size, cfg.image_size / 3);
        let glyph = exemplar.narrow(2, 0, third)?.narrow(3, 0, third)?;
        let place = |t: Tensor| -> candle_core::Result<Tensor> {
            t.pad_with_zeros(2, third, size - 2 * third)?
                .pad_with_zeros(3, third, size - 2 * third)
        };
        let keep = place(Tensor::ones((b, 3, third, third), DType::F32, device)?)?;
        let blue = Tensor::new(&[0.2f32, 0.5, 0.9], device)?.reshape((1, 3, 1, 1))?;
        let ground = (1.0 - &keep)?.broadcast_mul(&blue)?;
        let small = ((place(glyph)? * &keep)? + ground)?;
        let label = exemplar_label.clone();
        out.push(time(
            (
                "prepare_exemplar",
                "prepare a small exemplar on a plain ground",
            ),
            device,
            warmup,
            runs,
            || {
                let (prep, label, shape) =
                    midm::prepared_exemplar(cfg, small.clone(), label.clone())?;
                let framed = prep.frames.iter().all(Option::is_some) || cfg.frame_exemplar <= 0.0;
                let cleared = prep.cleared.iter().all(|c| *c) || !cfg.clear_exemplar_ground;
                if !(framed && cleared) {
                    return Err(crate::Error::Invalid(
                        "the bench's small exemplar was not prepared".into(),
                    ));
                }
                Ok((prep.image, label, shape))
            },
        )?);
    }
    let inputs = midm::MidmInputs {
        condition,
        exemplar,
        exemplar_label,
    };
    let whole_runs = runs.clamp(1, 3);
    let (passes, rematches) = pass_counts(&opts);
    if !whole {
        out.push(estimate_translation(&out, &fl, passes, rematches));
        return Ok(out);
    }
    out.push(
        time(
            (
                "translation",
                "whole translation (16-step loop + refinement)",
            ),
            device,
            warmup.min(1),
            whole_runs,
            || midm::translate(model, &inputs, &opts, &seeds, &mut ()),
        )?
        .with_flops(fl.translation(passes, rematches)),
    );
    if b == 1 {
        out.push(
            first_step_latency(model, &inputs, &opts, whole_runs)?.with_flops(fl.first_step()),
        );
    }
    Ok(out)
}

/// Every stage and whole translations at each batch size in `batches`, for `midm bench
/// --batch 1,8`: (batch size, timings of [`bench_model_batch`] with the stages only, then the
/// whole translation). The whole translations of the sizes are timed in turns (one run of each
/// size per round), so that load from other processes on a shared machine falls on all sizes
/// alike instead of on whichever ran while it lasted.
///
/// Whole translations go through [`crate::batch::run::translate_seeded`] with `workers`
/// concurrent sub-batches, as `midm batch` runs them; the stages are one batched call each.
pub fn bench_batches(
    model: &MidmModel,
    batches: &[usize],
    workers: usize,
    warmup: usize,
    runs: usize,
) -> crate::Result<Vec<(usize, Vec<StageTiming>)>> {
    let mut results = Vec::new();
    let mut inputs = Vec::new();
    for &b in batches {
        let mut t = bench_model_batch(model, b, warmup, runs, false)?;
        t.retain(|s| s.key != "translation_est");
        results.push((b, t));
        inputs.push(random_inputs(model, b)?);
    }
    let opts = midm::SamplerOptions::default();
    // (wall time, CPU time of the process)
    let run = |b: usize, inputs: &midm::MidmInputs| -> crate::Result<(Duration, Duration)> {
        let (t, cpu) = (Instant::now(), process_cpu_time());
        let seeds: Vec<u64> = (0..b as u64).collect();
        crate::batch::run::translate_seeded(model, inputs, &opts, &seeds, workers)?;
        sync(&model.device)?;
        Ok((t.elapsed(), process_cpu_time().saturating_sub(cpu)))
    };
    if warmup > 0 {
        for (&b, inputs) in batches.iter().zip(&inputs) {
            run(b, inputs)?;
        }
    }
    let mut times = vec![Vec::new(); batches.len()];
    let mut cpu = vec![Vec::new(); batches.len()];
    for _ in 0..runs.max(1) {
        for (i, (&b, inputs)) in batches.iter().zip(&inputs).enumerate() {
            let (wall, c) = run(b, inputs)?;
            times[i].push(wall);
            cpu[i].push(c);
        }
    }
    let fl = flops::StageFlops::new(&model.config);
    let (passes, rematches) = pass_counts(&opts);
    for (((_, t), times), cpu) in results.iter_mut().zip(times).zip(cpu) {
        let runs = times.len();
        let fastest = times.iter().min().copied().unwrap_or_default();
        t.push(StageTiming {
            key: "translation",
            name: "whole translation (16-step loop + refinement)",
            runs,
            median: median(times),
            flops: Some(fl.translation(passes, rematches)),
            peak_memory: None,
        });
        // On a shared machine the fastest run is the one least disturbed by other processes.
        t.push(StageTiming {
            key: "translation_fastest",
            name: "  fastest run of it",
            runs,
            median: fastest,
            flops: None,
            peak_memory: None,
        });
        t.push(StageTiming {
            key: "translation_cpu",
            name: "  CPU time of it (all threads)",
            runs,
            median: median(cpu),
            flops: None,
            peak_memory: None,
        });
    }
    Ok(results)
}

/// CPU time (user + system, all threads) of this process so far, from `/proc/self/stat` (zero
/// where there is none). Unlike wall time it does not grow when other processes take the CPU,
/// so on a shared machine it tells throughput apart from contention.
pub fn process_cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces), from field 3 on.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ: 100 on every Linux architecture we build for.
    Duration::from_millis(ticks * 10)
}

/// A batch of `b` random inputs at the model's size.
fn random_inputs(model: &MidmModel, b: usize) -> crate::Result<midm::MidmInputs> {
    let (size, nc, device) = (
        model.config.image_size,
        model.config.label_nc(),
        &model.device,
    );
    Ok(midm::MidmInputs {
        condition: Tensor::rand(0f32, 1f32, (b, nc, size, size), device)?,
        exemplar: Tensor::rand(-1f32, 1f32, (b, 3, size, size), device)?,
        exemplar_label: Tensor::rand(0f32, 1f32, (b, nc, size, size), device)?,
    })
}

/// Print [`bench_batches`] side by side: milliseconds per image of every stage at each batch
/// size, then images per second of whole translations and their ratio to the first size.
pub fn print_batches(title: &str, results: &[(usize, Vec<StageTiming>)]) {
    println!("\n{title}: per image at each batch size");
    print!("{:<48}", "stage (ms per image)");
    for (b, _) in results {
        print!(" {:>10}", format!("B={b}"));
    }
    println!();
    let Some((_, first)) = results.first() else {
        return;
    };
    for (i, stage) in first.iter().enumerate() {
        print!("{:<48}", stage.name);
        for (b, t) in results {
            let ms = t
                .get(i)
                .map_or(f64::NAN, |t| t.median.as_secs_f64() * 1e3 / *b as f64);
            print!(" {ms:>10.2}");
        }
        println!();
    }
    let rate_of = |key: &'static str| {
        move |(b, t): &(usize, Vec<StageTiming>)| {
            t.iter()
                .find(|s| s.key == key)
                .map(|s| *b as f64 / s.median.as_secs_f64())
        }
    };
    let rate = rate_of("translation");
    let base = rate(&results[0]);
    let fastest = rate_of("translation_fastest");
    let base_fastest = fastest(&results[0]);
    let cpu_rate = |(b, t): &(usize, Vec<StageTiming>)| {
        t.iter()
            .find(|s| s.key == "translation_cpu")
            .filter(|s| !s.median.is_zero())
            .map(|s| *b as f64 / s.median.as_secs_f64())
    };
    print!("{:<48}", "images per CPU-second (all threads)");
    for r in results {
        print!(
            " {:>10}",
            cpu_rate(r).map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    println!();
    print!("{:<48}", "images per second (whole translations)");
    for r in results {
        print!(" {:>10}", rate(r).map_or("-".into(), |v| format!("{v:.3}")));
    }
    println!();
    print!("{:<48}", "speed-up over the first batch size");
    for r in results {
        let x = rate(r).zip(base).map(|(v, b)| v / b);
        print!(" {:>10}", x.map_or("-".into(), |v| format!("{v:.2}x")));
    }
    println!();
    print!("{:<48}", "images per second, fastest run (speed-up)");
    for r in results {
        let v = fastest(r);
        let x = v.zip(base_fastest).map(|(v, b)| v / b);
        print!(
            " {:>10}",
            v.zip(x)
                .map_or("-".into(), |(v, x)| format!("{v:.3} ({x:.2}x)"))
        );
    }
    println!();
    if let Some(peak) = peak_memory_bytes() {
        println!("peak resident memory so far: {:.1} MiB", mib(peak));
    }
}

/// A translation's time as the sum of its measured stages (each UNet pass and re-matching
/// counted as often as the sampler runs it), for sizes where timing whole runs takes too long.
pub fn estimate_translation(
    stages: &[StageTiming],
    fl: &flops::StageFlops,
    passes: u64,
    rematches: u64,
) -> StageTiming {
    let ms = |k: &str| {
        stages
            .iter()
            .find(|t| t.key == k)
            .map_or(0.0, |t| t.median.as_secs_f64())
    };
    let secs = ms("encode")
        + ms("condition_side")
        + ms("exemplar_side")
        + ms("correlation_warp")
        + rematches as f64
            * (ms("iteration_features") + ms("correlation_warp") + ms("cycle_check"))
        + passes as f64 * ms("unet")
        + ms("decode");
    StageTiming {
        key: "translation_est",
        name: "whole translation, sum of stages (estimate)",
        median: Duration::from_secs_f64(secs),
        runs: 0,
        flops: Some(fl.translation(passes, rematches)),
        peak_memory: None,
    }
}

/// Time from the start of a run to its first streamed event (the initial warp).
fn first_step_latency(
    model: &MidmModel,
    inputs: &midm::MidmInputs,
    opts: &midm::SamplerOptions,
    runs: usize,
) -> crate::Result<StageTiming> {
    struct FirstEvent(Option<Duration>);
    impl midm::StepSink for FirstEvent {
        fn on_event(&mut self, e: &midm::StepEvent) {
            self.0.get_or_insert(e.elapsed);
        }
        fn cancelled(&self) -> bool {
            self.0.is_some()
        }
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut sink = FirstEvent(None);
        let result = midm::translate(model, inputs, opts, &midm::Noise::Seeded(0), &mut sink);
        match result {
            Ok(_) | Err(crate::Error::Cancelled) => {}
            Err(e) => return Err(e),
        }
        times.push(sink.0.unwrap_or_default());
    }
    Ok(StageTiming {
        key: "first_step",
        name: "run -> first streamed step",
        median: median(times),
        runs,
        flops: None,
        peak_memory: peak_memory_bytes(),
    })
}

/// Print a table of timings with FLOPs and achieved rates.
pub fn print_table(title: &str, timings: &[StageTiming]) {
    println!("\n{title}");
    println!(
        "{:<48} {:>11} {:>5} {:>10} {:>9} {:>9}",
        "stage", "median ms", "runs", "GFLOP", "GFLOP/s", "peak MiB"
    );
    for t in timings {
        let (g, r) = match (t.flops, t.gflops_per_s()) {
            (Some(f), Some(r)) => (format!("{:.3}", f.total() as f64 / 1e9), format!("{r:.1}")),
            _ => ("-".into(), "-".into()),
        };
        let peak = t
            .peak_memory
            .map_or("-".into(), |b| format!("{:.0}", mib(b)));
        println!(
            "{:<48} {:>11.2} {:>5} {:>10} {:>9} {:>9}",
            t.name,
            t.median.as_secs_f64() * 1e3,
            t.runs,
            g,
            r,
            peak
        );
    }
    if let Some(peak) = peak_memory_bytes() {
        println!("peak resident memory so far: {:.1} MiB", mib(peak));
    }
}

/// The timings as JSON (`{key: {ms, runs, gflop, gflop_mm}}`), the format of
/// `train/bench_torch.py --json`.
pub fn to_json(timings: &[StageTiming]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for t in timings {
        m.insert(
            t.key.to_string(),
            serde_json::json!({
                "name": t.name,
                "ms": t.median.as_secs_f64() * 1e3,
                "runs": t.runs,
                "gflop": t.flops.map(|f| f.total() as f64 / 1e9),
                "gflop_mm": t.flops.map(|f| f.mm as f64 / 1e9),
                "peak_mib": t.peak_memory.map(mib),
            }),
        );
    }
    serde_json::Value::Object(m)
}

/// Print the analytical FLOPs of every stage of `cfg` (no timing).
pub fn print_flops(title: &str, cfg: &MidmConfig) {
    let f = flops::StageFlops::new(cfg);
    let (passes, rematches) = pass_counts(&midm::SamplerOptions::default());
    println!("\n{title}: analytical FLOPs");
    println!("{:<32} {:>12} {:>12}", "stage", "GFLOP (mm)", "GFLOP (all)");
    let rows = [
        ("encode", f.encode),
        ("condition_side", f.condition_side),
        ("exemplar_side", f.exemplar_side),
        ("correlation_warp", f.correlation_warp),
        ("iteration_features", f.iteration_features),
        ("cycle_check", f.cycle_check),
        ("unet", f.unet),
        ("decode", f.decode),
        ("first_step", f.first_step()),
        ("translation", f.translation(passes, rematches)),
    ];
    for (k, v) in rows {
        println!(
            "{k:<32} {:>12.4} {:>12.4}",
            v.mm as f64 / 1e9,
            v.total() as f64 / 1e9
        );
    }
}

/// Print candle and PyTorch timings of the same stages side by side.
pub fn print_comparison(title: &str, timings: &[StageTiming], torch: &serde_json::Value) {
    let stages = &torch["stages"];
    let meta = &torch["meta"];
    println!(
        "\n{title}: candle vs PyTorch {} ({} threads)",
        meta["torch"].as_str().unwrap_or("?"),
        meta["threads"]
    );
    println!(
        "{:<44} {:>10} {:>10} {:>7} {:>9} {:>9} {:>8}",
        "stage", "candle ms", "torch ms", "ratio", "GFLOP/s", "torch GF/s", "mm dGF%"
    );
    for t in timings {
        let s = &stages[t.key];
        let torch_ms = s["ms"].as_f64();
        let ms = t.median.as_secs_f64() * 1e3;
        let fmt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
        let rate = t.gflops_per_s();
        let torch_rate = match (t.flops, torch_ms) {
            (Some(f), Some(tm)) => Some(f.total() as f64 / (tm / 1e3) / 1e9),
            _ => None,
        };
        // Relative difference of our analytical matrix FLOPs to PyTorch's FlopCounterMode.
        let diff = match (t.flops, s["gflop_mm"].as_f64()) {
            (Some(f), Some(g)) if g > 0.0 => Some((f.mm as f64 / 1e9 - g) / g * 100.0),
            _ => None,
        };
        println!(
            "{:<44} {:>10.2} {:>10} {:>7} {:>9} {:>9} {:>8}",
            t.name,
            ms,
            fmt(torch_ms, 2),
            fmt(torch_ms.map(|tm| ms / tm), 2),
            fmt(rate, 1),
            fmt(torch_rate, 1),
            fmt(diff, 2)
        );
    }
    if let Some(peak) = peak_memory_bytes() {
        println!("candle peak resident memory so far: {:.1} MiB", mib(peak));
    }
}
