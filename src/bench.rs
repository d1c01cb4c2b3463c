//! `midm bench`: times every stage of a translation (after warm-up, medians over runs) on the
//! shipped model or on the official CelebA-HQ size with random weights.
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::model::{
    AutoencoderConfig, AutoencoderKind, CorrespondenceConfig, DdpmConfig, MidmConfig, MidmModel,
    UNetConfig,
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
        },
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
            v.iter_mut().for_each(|x| *x = 1.0 + *x);
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
pub fn random_model(config: &MidmConfig, device: &Device) -> candle_core::Result<MidmModel> {
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> =
        Box::new(RandomWeights { seed: 1012 });
    let vb = VarBuilder::from_backend(backend, DType::F32, device.clone());
    MidmModel::new(vb, config)
}

/// Timings of one stage.
#[derive(Debug, Clone)]
pub struct StageTiming {
    pub name: &'static str,
    pub median: Duration,
    pub runs: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sync(device: &Device) -> candle_core::Result<()> {
    device.synchronize()
}

fn time<F: FnMut() -> anyhow::Result<()>>(
    name: &'static str,
    device: &Device,
    warmup: usize,
    runs: usize,
    mut f: F,
) -> anyhow::Result<StageTiming> {
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
        name,
        median: median(times),
        runs: runs.max(1),
    })
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Time every stage and the whole translation of `model` on random inputs (batch 1).
pub fn bench_model(
    model: &MidmModel,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<StageTiming>> {
    let cfg = &model.config;
    let device = &model.device;
    let size = cfg.image_size;
    let nc = cfg.label_nc();
    let condition = Tensor::rand(0f32, 1f32, (1, nc, size, size), device)?;
    let exemplar = Tensor::rand(-1f32, 1f32, (1, 3, size, size), device)?;
    let exemplar_label = Tensor::rand(0f32, 1f32, (1, nc, size, size), device)?;
    let ae = &model.autoencoder;
    let corr_net = &model.correspondence;
    let opts = midm::SamplerOptions::default();

    let latent = ae.encode(&exemplar)?;
    let (_, _, h, w) = latent.dims4()?;
    let label_ds = crate::model::correspondence::interpolate_nearest(&condition, h, w)?;
    let ref_label_ds = crate::model::correspondence::interpolate_nearest(&exemplar_label, h, w)?;
    let (trg_out, trg_matching) = corr_net.target_features(&label_ds)?;
    let (ref_out, _) = corr_net.reference_features(&latent, &ref_label_ds)?;
    let corr = matching::correlation(&trg_out, &ref_out)?;
    let t = Tensor::new(&[500u32], device)?;

    let mut out = vec![
        time("encode (autoencoder)", device, warmup, runs, || {
            Ok(drop(ae.encode(&exemplar)?))
        })?,
        time(
            "correspondence: condition side",
            device,
            warmup,
            runs,
            || Ok(drop(corr_net.target_features(&label_ds)?)),
        )?,
        time(
            "correspondence: exemplar side",
            device,
            warmup,
            runs,
            || Ok(drop(corr_net.reference_features(&latent, &ref_label_ds)?)),
        )?,
        time("correlation + soft warp", device, warmup, runs, || {
            let c = matching::correlation(&trg_out, &ref_out)?;
            Ok(drop(matching::soft_warp(&latent, &c, opts.temperature)?))
        })?,
        time(
            "iteration features (F_Y^iter)",
            device,
            warmup,
            runs,
            || Ok(drop(corr_net.iteration_features(&latent, &trg_matching)?)),
        )?,
        time(
            "cycle check (flow + fb + mask)",
            device,
            warmup,
            runs,
            || {
                Ok(drop(matching::cycle_mask(
                    &corr,
                    h,
                    w,
                    opts.temperature,
                    opts.fb_threshold,
                )?))
            },
        )?,
        time("UNet pass", device, warmup, runs, || {
            Ok(drop(model.unet.forward(&latent, &t)?))
        })?,
        time("decode (VQ + decoder)", device, warmup, runs, || {
            Ok(drop(ae.decode(&latent)?))
        })?,
    ];
    let inputs = midm::MidmInputs {
        condition,
        exemplar,
        exemplar_label,
    };
    let whole_runs = runs.clamp(1, 3);
    out.push(time(
        "whole translation (16-step loop + refinement)",
        device,
        warmup.min(1),
        whole_runs,
        || {
            Ok(drop(midm::translate(
                model,
                &inputs,
                &opts,
                &midm::Noise::Seeded(0),
                &mut (),
            )?))
        },
    )?);
    out.push(first_step_latency(model, &inputs, &opts, whole_runs)?);
    Ok(out)
}

/// Time from the start of a run to its first streamed event (the initial warp).
fn first_step_latency(
    model: &MidmModel,
    inputs: &midm::MidmInputs,
    opts: &midm::SamplerOptions,
    runs: usize,
) -> anyhow::Result<StageTiming> {
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
        if let Err(e) = result {
            anyhow::ensure!(e.downcast_ref::<midm::Cancelled>().is_some(), e);
        }
        times.push(sink.0.unwrap_or_default());
    }
    Ok(StageTiming {
        name: "run -> first streamed step",
        median: median(times),
        runs,
    })
}

/// Print a table of timings.
pub fn print_table(title: &str, timings: &[StageTiming]) {
    println!("\n{title}");
    println!("{:<48} {:>12} {:>6}", "stage", "median ms", "runs");
    for t in timings {
        println!(
            "{:<48} {:>12.2} {:>6}",
            t.name,
            t.median.as_secs_f64() * 1e3,
            t.runs
        );
    }
    if let Some(peak) = peak_memory_bytes() {
        println!(
            "peak resident memory so far: {:.1} MiB",
            peak as f64 / (1024.0 * 1024.0)
        );
    }
}
