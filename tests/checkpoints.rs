//! Loading checkpoints in the authors' formats (`tests/fixtures/checkpoints`, or `MIDM_CHECKPOINTS_DIR`)
//! and the parity set's safetensors, and every bad-input case of issue 2 (missing, empty, truncated
//! and misnamed files, renamed keys, wrong shapes, a pickle that tries to run a command). None of
//! these tests needs the networks: they stop before `MidmModel::new`.
mod common;

use common::max_abs_diff;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use midm::checkpoint::{
    canonical_key, classify, inspect, ldm_config, model_hash, pickle, spec, KeyFate, LoadError,
    WeightsFile, WeightsKind, DROP_EMA, DROP_LOSS, DROP_SAMPLER, DROP_SCHEDULE,
};
use midm::model::AutoencoderKind;

fn ckpt_dir() -> PathBuf {
    common::checkpoints_dir()
}

fn open(name: &str) -> WeightsFile {
    WeightsFile::open(&ckpt_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn count(f: &WeightsFile, pred: impl Fn(&str) -> bool) -> usize {
    f.entries.iter().filter(|e| pred(&e.name)).count()
}

const SCHEDULE: [&str; 12] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

#[test]
fn ldm_ckpt_reads_all_423_entries_with_0dim_scalars() {
    let f = open("ldm_model.ckpt");
    assert_eq!(f.len(), 423);
    assert_eq!(f.non_tensors.len(), 0);
    assert_eq!(classify(&f.entries), Some(WeightsKind::Ldm));
    assert_eq!(count(&f, |k| SCHEDULE.contains(&k)), 12);
    assert_eq!(count(&f, |k| k.starts_with("model.diffusion_model.")), 126);
    assert_eq!(count(&f, |k| k.starts_with("model_ema.")), 128);
    assert_eq!(count(&f, |k| k.starts_with("first_stage_model.")), 157);
    // Storage keys "0".."N-1" in order of first appearance; the ckpt shares none.
    assert_eq!(f.storage_key("betas"), Some("0"));
    let t = f
        .load(
            &["model_ema.decay", "model_ema.num_updates", "betas"],
            &Device::Cpu,
        )
        .unwrap();
    let decay = &t["model_ema.decay"];
    assert_eq!(decay.dims(), &[] as &[usize]);
    assert_eq!(decay.dtype(), DType::F32);
    assert!((decay.to_scalar::<f32>().unwrap() - 0.9999).abs() < 1e-7);
    let n = &t["model_ema.num_updates"];
    assert_eq!((n.dims().len(), n.dtype()), (0, DType::I32));
    // The schedule buffer is LDM's: linspace(sqrt(0.0015), sqrt(0.0195), 1000)^2.
    let betas = t["betas"].to_vec1::<f32>().unwrap();
    assert_eq!(betas.len(), 1000);
    assert!(
        (betas[0] - 0.0015).abs() < 1e-8 && (betas[999] - 0.0195).abs() < 1e-7,
        "{} {}",
        betas[0],
        betas[999]
    );
}

#[test]
fn vq_ckpt_reads_186_entries_and_matches_the_ldm_first_stage() {
    let f = open("vq_f4.ckpt");
    assert_eq!(f.len(), 186);
    assert_eq!(classify(&f.entries), Some(WeightsKind::FirstStage));
    assert_eq!(count(&f, |k| k.starts_with("loss.")), 29);
    assert_eq!(count(&f, |k| k.starts_with("encoder.")), 64);
    assert_eq!(count(&f, |k| k.starts_with("decoder.")), 88);
    let nbt: Vec<&str> = f
        .entries
        .iter()
        .filter(|e| e.name.ends_with("num_batches_tracked"))
        .map(|e| e.name.as_str())
        .collect();
    assert!(!nbt.is_empty());
    let t = f.load(&nbt, &Device::Cpu).unwrap();
    for name in &nbt {
        assert_eq!(
            (t[*name].dims().len(), t[*name].dtype()),
            (0, DType::I64),
            "{name}"
        );
    }
    // The 157 autoencoder tensors are bit-identical to the LDM checkpoint's first stage.
    let vq = f.load_all(&Device::Cpu).unwrap();
    let ldm = open("ldm_model.ckpt");
    let names: Vec<String> = ldm
        .entries
        .iter()
        .filter_map(|e| e.name.strip_prefix("first_stage_model.").map(String::from))
        .collect();
    assert_eq!(names.len(), 157);
    let full: Vec<String> = names
        .iter()
        .map(|n| format!("first_stage_model.{n}"))
        .collect();
    let ldm_t = ldm
        .load(
            &full.iter().map(String::as_str).collect::<Vec<_>>(),
            &Device::Cpu,
        )
        .unwrap();
    for n in &names {
        assert_eq!(
            max_abs_diff(&vq[n], &ldm_t[&format!("first_stage_model.{n}")]),
            0.0,
            "{n}"
        );
    }
}

#[test]
fn midms_pth_reads_997_entries_and_shared_storages() {
    let f = open("midms_finetuned.pth");
    assert_eq!(f.len(), 997);
    assert_eq!(classify(&f.entries), Some(WeightsKind::Midms));
    assert_eq!(
        count(&f, |k| k.starts_with("diff_model.model.diffusion_model.")),
        126
    );
    assert_eq!(count(&f, |k| k.starts_with("diff_model.model_ema.")), 128);
    assert_eq!(
        count(&f, |k| k.starts_with("diff_model.first_stage_model.")),
        157
    );
    assert_eq!(
        count(&f, |k| k.starts_with("diffusion_sampler.model.")),
        423
    );
    assert_eq!(
        count(&f, |k| k.starts_with("diffusion_sampler.")
            && !k.starts_with("diffusion_sampler.model.")),
        13
    );
    for p in ["real_enc.", "iter_enc.", "seg_enc."] {
        assert_eq!(count(&f, |k| k.starts_with(p)), 38, "{p}");
    }
    assert_eq!(count(&f, |k| k.starts_with("layer.")), 20);
    // Every diffusion_sampler.model.X views the storage of diff_model.X (592 storages for 1015 refs).
    let mut shared = 0;
    let mut storages = std::collections::HashSet::new();
    for e in &f.entries {
        storages.insert(f.storage_key(&e.name).unwrap().to_string());
        if let Some(x) = e.name.strip_prefix("diffusion_sampler.model.") {
            assert_eq!(
                f.storage_key(&e.name),
                f.storage_key(&format!("diff_model.{x}")),
                "{}",
                e.name
            );
            shared += 1;
        }
    }
    assert_eq!(shared, 423);
    assert_eq!(storages.len(), 997 - 423);
    let pair = [
        "diff_model.model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
        "diffusion_sampler.model.model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
        "diff_model.model_ema.num_updates",
        "seg_enc.G_middle_1.conv_0.weight_v",
    ];
    let t = f.load(&pair, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&t[pair[0]], &t[pair[1]]), 0.0);
    assert_eq!(t[pair[2]].dtype(), DType::I32);
    assert_eq!(t[pair[3]].dims(), &[576]); // [in * 3 * 3] with in = 8 ndf = 64
                                           // The fine-tuned UNet differs from the LDM one; the first stage does not.
    let ldm = open("ldm_model.ckpt");
    let l = ldm
        .load(
            &[
                "model.diffusion_model.out.2.weight",
                "first_stage_model.decoder.conv_out.weight",
            ],
            &Device::Cpu,
        )
        .unwrap();
    let m = f
        .load(
            &[
                "diff_model.model.diffusion_model.out.2.weight",
                "diff_model.first_stage_model.decoder.conv_out.weight",
            ],
            &Device::Cpu,
        )
        .unwrap();
    assert!(
        max_abs_diff(
            &l["model.diffusion_model.out.2.weight"],
            &m["diff_model.model.diffusion_model.out.2.weight"]
        ) > 0.0
    );
    assert_eq!(
        max_abs_diff(
            &l["first_stage_model.decoder.conv_out.weight"],
            &m["diff_model.first_stage_model.decoder.conv_out.weight"]
        ),
        0.0
    );
}

#[test]
fn key_mapping_into_the_canonical_space() {
    use KeyFate::{Drop, Use};
    let cases = [
        (
            WeightsKind::Ldm,
            "model.diffusion_model.out.2.weight",
            Use("diff_model.model.diffusion_model.out.2.weight".into()),
        ),
        (
            WeightsKind::Ldm,
            "first_stage_model.quantize.embedding.weight",
            Use("diff_model.first_stage_model.quantize.embedding.weight".into()),
        ),
        (
            WeightsKind::Ldm,
            "model_ema.diffusion_modelout2weight",
            Drop(DROP_EMA),
        ),
        (WeightsKind::Ldm, "model_ema.decay", Drop(DROP_EMA)),
        (WeightsKind::Ldm, "betas", Drop(DROP_SCHEDULE)),
        (
            WeightsKind::FirstStage,
            "encoder.conv_in.weight",
            Use("diff_model.first_stage_model.encoder.conv_in.weight".into()),
        ),
        (
            WeightsKind::FirstStage,
            "post_quant_conv.bias",
            Use("diff_model.first_stage_model.post_quant_conv.bias".into()),
        ),
        (
            WeightsKind::FirstStage,
            "loss.discriminator.main.3.num_batches_tracked",
            Drop(DROP_LOSS),
        ),
        (
            WeightsKind::Midms,
            "seg_enc.layer1.0.weight_orig",
            Use("seg_enc.layer1.0.weight_orig".into()),
        ),
        (
            WeightsKind::Midms,
            "layer.3.prelu.weight",
            Use("layer.3.prelu.weight".into()),
        ),
        (
            WeightsKind::Midms,
            "diffusion_sampler.model.model.diffusion_model.out.2.weight",
            Drop(DROP_SAMPLER),
        ),
        (
            WeightsKind::Midms,
            "diffusion_sampler.ddim_sigmas",
            Drop(DROP_SAMPLER),
        ),
        (
            WeightsKind::Midms,
            "diff_model.model_ema.num_updates",
            Drop(DROP_EMA),
        ),
        (
            WeightsKind::Midms,
            "diff_model.posterior_mean_coef2",
            Drop(DROP_SCHEDULE),
        ),
    ];
    for (kind, key, want) in cases {
        assert_eq!(canonical_key(kind, key), want, "{kind:?} {key}");
    }
    // The three files map onto the same canonical keys.
    let mapped = |f: &WeightsFile, kind| -> BTreeMap<String, Vec<usize>> {
        f.entries
            .iter()
            .filter_map(|e| match canonical_key(kind, &e.name) {
                Use(c) => Some((c, e.shape.clone())),
                Drop(_) => None,
            })
            .collect()
    };
    let pth = mapped(&open("midms_finetuned.pth"), WeightsKind::Midms);
    let ldm = mapped(&open("ldm_model.ckpt"), WeightsKind::Ldm);
    let vq = mapped(&open("vq_f4.ckpt"), WeightsKind::FirstStage);
    assert_eq!(pth.len(), 157 + 126 + 3 * 38 + 4 + 20);
    assert_eq!(ldm.len(), 157 + 126);
    assert_eq!(vq.len(), 157);
    for (k, s) in ldm.iter().chain(&vq) {
        assert_eq!(pth.get(k), Some(s), "{k}");
    }
}

#[test]
fn config_yaml_parses_into_the_model_config() {
    let text = std::fs::read_to_string(ckpt_dir().join("config.yaml")).unwrap();
    let c = ldm_config::parse_yaml(&text).unwrap();
    assert_eq!(c.image_size, 32);
    let ae = &c.autoencoder;
    assert_eq!(ae.kind, AutoencoderKind::Vq { n_embed: 64 });
    assert_eq!(
        (ae.embed_dim, ae.z_channels, ae.double_z, ae.ch),
        (3, 3, false, 32)
    );
    assert_eq!(
        (ae.ch_mult.as_slice(), ae.num_res_blocks, ae.resolution),
        (&[1, 2, 1][..], 1, 32)
    );
    assert!(ae.attn_resolutions.is_empty());
    assert_eq!(ae.downsample_factor(), 4);
    let u = &c.unet;
    assert_eq!(
        (
            u.image_size,
            u.in_channels,
            u.out_channels,
            u.model_channels
        ),
        (8, 3, 3, 32)
    );
    assert_eq!(
        (u.channel_mult.as_slice(), u.num_res_blocks),
        (&[1, 1][..], 1)
    );
    assert_eq!(u.attention_resolutions, vec![2]);
    assert_eq!((u.num_head_channels, u.num_heads), (Some(16), None));
    assert_eq!(
        (c.ddpm.timesteps, c.ddpm.linear_start, c.ddpm.linear_end),
        (1000, 0.0015, 0.0195)
    );

    // `num_head_channels: -1` means unused; no n_embed means a KL first stage.
    let kl = text
        .replace(
            "num_head_channels: 16",
            "num_head_channels: -1\n        num_heads: 4",
        )
        .replace("        n_embed: 64\n", "")
        .replace("double_z: false", "double_z: true");
    let c = ldm_config::parse_yaml(&kl).unwrap();
    assert_eq!(
        (c.unet.num_head_channels, c.unet.num_heads),
        (None, Some(4))
    );
    assert_eq!(c.autoencoder.kind, AutoencoderKind::Kl);
    // The target strings are never read.
    let c2 = ldm_config::parse_yaml(
        &text.replace("models.diffusion.ddpm.LatentDiffusion", "nowhere.Nothing"),
    )
    .unwrap();
    assert_eq!(c2.image_size, 32);
    // Unsupported options are named.
    let err = ldm_config::parse_yaml(&text.replace(
        "num_head_channels: 16",
        "num_head_channels: 16\n        use_scale_shift_norm: true",
    ))
    .unwrap_err();
    assert!(err.contains("use_scale_shift_norm"), "{err}");
    let err =
        ldm_config::parse_yaml(&text.replace("        model_channels: 32\n", "")).unwrap_err();
    assert!(err.contains("model_channels"), "{err}");
}

#[test]
fn parity_config_json_matches_the_fixture_config() {
    let dir = common::parity_dir();
    let c =
        ldm_config::parse_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let want = common::fixture_config();
    assert_eq!(c.image_size, want.image_size);
    assert_eq!(c.autoencoder, want.autoencoder);
    assert_eq!(c.unet, want.unet);
    assert_eq!(c.ddpm, want.ddpm);
}

/// The expected-key enumeration is exactly what the authors' files hold, for both configurations.
#[test]
fn spec_matches_the_authors_files() {
    let ck = inspect(&ckpt_dir()).unwrap();
    let pth = open("midms_finetuned.pth");
    let used: BTreeMap<String, Vec<usize>> = pth
        .entries
        .iter()
        .filter_map(|e| match canonical_key(WeightsKind::Midms, &e.name) {
            KeyFate::Use(c) => Some((c, e.shape.clone())),
            KeyFate::Drop(_) => None,
        })
        .collect();
    assert_eq!(spec::expected_keys(&ck.config), used);
    let c = &ck.config.correspondence;
    assert_eq!(
        (
            c.label_nc,
            c.latent_channels,
            c.n_ch,
            c.ndf,
            c.spade_nhidden,
            c.trunk_blocks
        ),
        (15, 3, 32, 8, 16, 4)
    );
    // The EMA names of the LDM ckpt invert through the UNet's key list.
    let ldm = open("ldm_model.ckpt");
    for k in spec::unet_keys(&ck.config.unet).keys() {
        let ema = format!("model_ema.{}", spec::ema_name(k));
        assert!(ldm.contains(&ema), "{ema}");
    }

    let par = inspect(&common::parity_dir()).unwrap();
    let st = WeightsFile::open(&common::parity_dir().join("weights.safetensors")).unwrap();
    let keys: BTreeMap<String, Vec<usize>> = st
        .entries
        .iter()
        .filter(|e| {
            !e.name
                .strip_prefix("diff_model.")
                .is_some_and(|b| SCHEDULE.contains(&b))
        })
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    assert_eq!(spec::expected_keys(&par.config), keys);
    assert_eq!(par.config, common::fixture_config());
    // And checkpoint_keys.json agrees on every needed key.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::parity_dir().join("checkpoint_keys.json")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for row in json["keys"].as_array().unwrap() {
        let key = row[0].as_str().unwrap();
        let shape: Vec<usize> = row[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        if let KeyFate::Use(c) = canonical_key(WeightsKind::Midms, key) {
            assert_eq!(keys.get(&c), Some(&shape), "{key}");
            n += 1;
        }
    }
    assert_eq!(n, keys.len());
}

#[test]
fn folder_of_the_authors_files_loads_in_the_official_order() {
    let ck = inspect(&ckpt_dir()).unwrap();
    let r = &ck.report;
    eprintln!("{}", r.summary());
    let kinds: Vec<WeightsKind> = r.files.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            WeightsKind::FirstStage,
            WeightsKind::Ldm,
            WeightsKind::Midms
        ]
    );
    assert!(r.config_file.ends_with("config.yaml"));
    assert_eq!(r.ignored_files.len(), 1, "{:?}", r.ignored_files);
    assert!(r.ignored_files[0].0.ends_with("expected.safetensors"));
    assert_eq!(r.used_keys, 421);
    // The .pth wins for everything.
    assert_eq!(
        r.files.iter().map(|f| f.used).collect::<Vec<_>>(),
        [0, 0, 421]
    );
    assert_eq!(r.files[0].overridden, 157);
    assert_eq!(r.files[1].overridden, 157 + 126);
    let dropped = |i: usize, g: &str| {
        r.files[i]
            .dropped
            .iter()
            .find(|d| d.0 == g)
            .map_or(0, |d| d.1)
    };
    assert_eq!(dropped(0, DROP_LOSS), 29);
    assert_eq!(dropped(1, DROP_EMA), 128);
    assert_eq!(dropped(1, DROP_SCHEDULE), 12);
    assert_eq!(dropped(2, DROP_SAMPLER), 436);
    assert_eq!(dropped(2, DROP_EMA), 128);
    assert_eq!(dropped(2, DROP_SCHEDULE), 12);
    assert_eq!(ck.config.image_size, 32);
    assert_eq!(ck.config.latent_size(), 8);
    assert_eq!(ck.config.label_nc(), 15);

    // The tensors handed to the networks are the .pth's (fine-tuned UNet), keyed canonically.
    let t = ck.load_tensors(&Device::Cpu).unwrap();
    assert_eq!(t.len(), 421);
    let pth = open("midms_finetuned.pth").load_all(&Device::Cpu).unwrap();
    for (k, v) in &t {
        assert_eq!(max_abs_diff(v, &pth[k]), 0.0, "{k}");
        assert_eq!(v.dtype(), DType::F32);
    }

    // A single file with its config beside it is enough when it holds everything.
    let single = inspect(&ckpt_dir().join("midms_finetuned.pth")).unwrap();
    assert_eq!(single.config, ck.config);
    assert_eq!(single.report.files.len(), 1);
}

#[test]
fn parity_folder_with_config_json_loads() {
    let ck = inspect(&common::parity_dir()).unwrap();
    eprintln!("{}", ck.report.summary());
    assert!(ck.report.config_file.ends_with("config.json"));
    assert_eq!(ck.report.files.len(), 1);
    // Every tensor of the set is used except the DDPM schedule buffers (recomputed).
    let all = candle_core::safetensors::load(
        common::parity_dir().join("weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let schedule = all
        .keys()
        .filter(|k| {
            k.strip_prefix("diff_model.")
                .is_some_and(|r| !r.contains('.'))
        })
        .count();
    assert_eq!(ck.report.used_keys, all.len() - schedule);
    assert!(ck
        .report
        .ignored_files
        .iter()
        .any(|(p, _)| p.ends_with("trace.safetensors")));
}

#[test]
fn model_hash_is_short_stable_and_content_based() {
    let ck = inspect(&ckpt_dir()).unwrap();
    let h = ck.report.model_hash().unwrap();
    assert_eq!(h.len(), 16);
    assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(h, ck.report.model_hash().unwrap());
    let a = model_hash(&[ckpt_dir().join("vq_f4.ckpt")]).unwrap();
    // README: sha256 (first 16) of vq_f4.ckpt.
    assert_eq!(a, "afb4cc7d91680c2c");
    assert_ne!(a, model_hash(&[ckpt_dir().join("ldm_model.ckpt")]).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Bad input

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn copy_config(dir: &Path) {
    std::fs::copy(ckpt_dir().join("config.yaml"), dir.join("config.yaml")).unwrap();
}

#[test]
fn missing_path_is_not_found() {
    let d = tmp();
    let p = d.path().join("nothing_here.safetensors");
    let err = inspect(&p).err().unwrap();
    assert!(matches!(&err, LoadError::NotFound(q) if q == &p), "{err}");
    assert!(err.to_string().contains("not found"));
    let err = midm::load_model(&p, &Device::Cpu).err().unwrap();
    assert!(matches!(err, LoadError::NotFound(_)), "{err}");
}

#[test]
fn empty_folder_has_no_weights() {
    let d = tmp();
    copy_config(d.path());
    let err = inspect(d.path()).err().unwrap();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err}");
    assert!(err.to_string().contains("no model weights"), "{err}");
}

#[test]
fn zero_byte_file_is_reported_empty() {
    for name in ["model.safetensors", "model.pth"] {
        let d = tmp();
        copy_config(d.path());
        let p = d.path().join(name);
        std::fs::File::create(&p).unwrap();
        let err = inspect(&p).err().unwrap();
        assert!(matches!(&err, LoadError::EmptyFile(q) if q == &p), "{err}");
        assert!(err.to_string().contains("empty file"), "{err}");
    }
}

#[test]
fn truncated_safetensors_is_reported_truncated() {
    let d = tmp();
    let src = std::fs::read(common::parity_dir().join("weights.safetensors")).unwrap();
    std::fs::copy(
        common::parity_dir().join("config.json"),
        d.path().join("config.json"),
    )
    .unwrap();
    let p = d.path().join("weights.safetensors");
    // Cut in the data, and cut inside the header.
    for cut in [src.len() / 2, 100] {
        std::fs::write(&p, &src[..cut]).unwrap();
        let err = inspect(d.path()).err().unwrap();
        assert!(
            matches!(&err, LoadError::Truncated { path, .. } if path == &p),
            "{err}"
        );
        assert!(err.to_string().contains("weights.safetensors"), "{err}");
    }
}

#[test]
fn non_safetensors_file_named_safetensors_is_rejected() {
    let d = tmp();
    copy_config(d.path());
    let p = d.path().join("model.safetensors");
    for content in [
        &b"this is not a tensor file, just some text\n"[..],
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        b"abc",
    ] {
        std::fs::write(&p, content).unwrap();
        let err = inspect(&p).err().unwrap();
        assert!(
            matches!(&err, LoadError::NotSafetensors { path, .. } if path == &p),
            "{err}"
        );
        assert!(err.to_string().contains("not a safetensors file"), "{err}");
    }
}

#[test]
fn non_zip_pth_and_truncated_pth_are_rejected() {
    let d = tmp();
    copy_config(d.path());
    let p = d.path().join("model.pth");
    std::fs::write(&p, b"definitely not a zip archive").unwrap();
    let err = inspect(&p).err().unwrap();
    assert!(matches!(err, LoadError::NotCheckpoint { .. }), "{err}");
    let src = std::fs::read(ckpt_dir().join("midms_finetuned.pth")).unwrap();
    std::fs::write(&p, &src[..src.len() - 1000]).unwrap();
    let err = inspect(&p).err().unwrap();
    assert!(matches!(err, LoadError::Truncated { .. }), "{err}");
}

#[test]
fn config_is_required_beside_a_single_file() {
    let d = tmp();
    let p = d.path().join("midms_finetuned.pth");
    std::fs::copy(ckpt_dir().join("midms_finetuned.pth"), &p).unwrap();
    let err = inspect(&p).err().unwrap();
    assert!(matches!(err, LoadError::Config { .. }), "{err}");
    assert!(err.to_string().contains("config.yaml"), "{err}");
    // A broken config is named too.
    std::fs::write(
        d.path().join("config.yaml"),
        "model:\n  params:\n    timesteps: [oops\n",
    )
    .unwrap();
    let err = inspect(&p).err().unwrap();
    assert!(
        matches!(&err, LoadError::Config { path, .. } if path.ends_with("config.yaml")),
        "{err}"
    );
}

#[test]
fn ldm_checkpoint_alone_has_no_correspondence() {
    let d = tmp();
    copy_config(d.path());
    std::fs::copy(
        ckpt_dir().join("ldm_model.ckpt"),
        d.path().join("ldm_model.ckpt"),
    )
    .unwrap();
    let err = inspect(d.path()).err().unwrap();
    assert!(matches!(err, LoadError::NoCorrespondence { .. }), "{err}");
    assert!(err.to_string().contains("ldm_model.ckpt"), "{err}");
}

#[test]
fn two_midms_checkpoints_in_one_folder_are_ambiguous() {
    let d = tmp();
    copy_config(d.path());
    for n in ["a.pth", "b.pth"] {
        std::fs::copy(ckpt_dir().join("midms_finetuned.pth"), d.path().join(n)).unwrap();
    }
    let err = inspect(d.path()).err().unwrap();
    assert!(matches!(err, LoadError::Ambiguous { .. }), "{err}");
    assert!(
        err.to_string().contains("a.pth") && err.to_string().contains("b.pth"),
        "{err}"
    );
}

/// Rewrites a torch zip checkpoint with `data.pkl` patched by `patch`.
fn rewrite_pickle(src: &Path, dst: &Path, patch: impl Fn(Vec<u8>) -> Vec<u8>) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        if name.ends_with("data.pkl") {
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            zout.start_file(name, opts).unwrap();
            zout.write_all(&patch(data)).unwrap();
        } else {
            drop(f);
            zout.raw_copy_file(zin.by_index(i).unwrap()).unwrap();
        }
    }
    zout.finish().unwrap();
}

fn replace_bytes(data: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in the pickle");
    let mut data = data;
    data[at..at + to.len()].copy_from_slice(to);
    data
}

#[test]
fn renamed_key_in_a_pth_is_named() {
    let d = tmp();
    copy_config(d.path());
    let p = d.path().join("midms_finetuned.pth");
    // Same length, so the pickle's string length prefix stays valid.
    rewrite_pickle(&ckpt_dir().join("midms_finetuned.pth"), &p, |data| {
        replace_bytes(
            data,
            b"real_enc.G_middle_1.conv_1.bias",
            b"real_enc.G_middle_1.conv_1.BIAS",
        )
    });
    assert_eq!(WeightsFile::open(&p).unwrap().len(), 997);
    let err = inspect(&p).err().unwrap();
    match &err {
        LoadError::MissingKeys {
            keys, unexpected, ..
        } => {
            assert_eq!(keys, &["real_enc.G_middle_1.conv_1.bias"]);
            assert_eq!(unexpected, &["real_enc.G_middle_1.conv_1.BIAS"]);
        }
        other => panic!("expected MissingKeys, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("real_enc.G_middle_1.conv_1.bias")
            && msg.contains("BIAS")
            && msg.contains("midms_finetuned.pth"),
        "{msg}"
    );

    // A renamed key the correspondence widths are read from is named as well.
    rewrite_pickle(&ckpt_dir().join("midms_finetuned.pth"), &p, |data| {
        replace_bytes(
            data,
            b"seg_enc.layer1.0.weight_orig",
            b"seg_enc.layer1.0.weight_oriG",
        )
    });
    let err = inspect(&p).err().unwrap();
    assert!(matches!(err, LoadError::MissingKeys { .. }), "{err}");
    assert!(
        err.to_string().contains("seg_enc.layer1.0.weight_orig"),
        "{err}"
    );
}

#[test]
fn unexpected_key_inside_a_needed_module_is_named() {
    let d = tmp();
    std::fs::copy(
        common::parity_dir().join("config.json"),
        d.path().join("config.json"),
    )
    .unwrap();
    let src = common::parity_dir().join("weights.safetensors");
    let mut t = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    t.insert(
        "diff_model.model.diffusion_model.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = d.path().join("weights.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let err = inspect(d.path()).err().unwrap();
    match &err {
        LoadError::UnexpectedKeys { keys, files } => {
            assert_eq!(keys, &["diff_model.model.diffusion_model.extra.weight"]);
            assert_eq!(files, std::slice::from_ref(&p));
        }
        other => panic!("expected UnexpectedKeys, got {other}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let d = tmp();
    std::fs::copy(
        common::parity_dir().join("config.json"),
        d.path().join("config.json"),
    )
    .unwrap();
    let src = common::parity_dir().join("weights.safetensors");
    let mut t = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    let key = "diff_model.model.diffusion_model.out.2.weight";
    let dims = t[key].dims().to_vec();
    let mut wrong = dims.clone();
    wrong[1] += 1;
    t.insert(
        key.into(),
        Tensor::zeros(wrong.as_slice(), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = d.path().join("weights.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let err = inspect(d.path()).err().unwrap();
    match &err {
        LoadError::ShapeMismatch {
            file,
            key: k,
            expected,
            found,
            more,
        } => {
            assert_eq!(
                (file, k.as_str(), expected, found, *more),
                (&p, key, &dims, &wrong, 0)
            );
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(err.to_string().contains(key), "{err}");
}

/// A minimal pickle writer for crafting test files.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn op(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(self, i: u8) -> Self {
        self.op(&[b'K', i])
    }
    /// `torch._utils._rebuild_tensor_v2(storage "0" of 2 floats, 0, (2,), (1,), False, OrderedDict())`
    fn tensor(self) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .op(b"(")
            .str("storage")
            .global("torch", "FloatStorage")
            .str("0")
            .str("cuda:0")
            .int(2)
            .op(b"tQ")
            .int(0)
            .int(2)
            .op(&[0x85])
            .int(1)
            .op(&[0x85, 0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    /// `os.system(cmd)`: a REDUCE that would run a shell command if it were executed.
    fn system(self, cmd: &str) -> Self {
        self.global("os", "system").str(cmd).op(&[0x85]).op(b"R")
    }
    fn write_zip(self, path: &Path) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(&self.op(b".").0).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&[1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat())
            .unwrap();
        z.start_file("archive/version", opts).unwrap();
        z.write_all(b"3\n").unwrap();
        z.finish().unwrap();
    }
}

#[test]
fn pickle_that_calls_a_function_is_never_executed() {
    let d = tmp();
    copy_config(d.path());
    let marker = d.path().join("pwned");
    let cmd = format!("touch {}", marker.display());

    // 1. The whole pickle is a call of os.system: a clear error, nothing run.
    let p = d.path().join("evil.pth");
    Pickle::new().system(&cmd).write_zip(&p);
    let err = inspect(&p).err().unwrap();
    assert!(matches!(err, LoadError::Pickle { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("os.system") && msg.contains("not executed"),
        "{msg}"
    );
    assert!(!marker.exists(), "the pickled command ran");

    // 2. A call hidden next to a real state dict stays an opaque value; the tensor still reads.
    Pickle::new()
        .op(b"}(")
        .str("state_dict")
        .global("collections", "OrderedDict")
        .op(b")R(")
        .str("seg_enc.w")
        .tensor()
        .op(b"u") // SETITEMS into the OrderedDict
        .str("callbacks")
        .system(&cmd)
        .op(b"u")
        .write_zip(&p);
    let f = WeightsFile::open(&p).unwrap();
    assert_eq!(f.entries.len(), 1);
    assert_eq!(f.entries[0].shape, vec![2]);
    let t = f.load_all(&Device::Cpu).unwrap();
    assert_eq!(t["seg_enc.w"].to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
    assert!(!marker.exists(), "the pickled command ran");

    // 3. The same call inside the state dict is not a tensor: skipped and reported.
    Pickle::new()
        .op(b"}(")
        .str("state_dict")
        .op(b"}(")
        .str("seg_enc.w")
        .tensor()
        .str("seg_enc.evil")
        .system(&cmd)
        .op(b"uu")
        .write_zip(&p);
    let f = WeightsFile::open(&p).unwrap();
    assert_eq!(f.non_tensors, vec!["seg_enc.evil".to_string()]);
    assert!(!marker.exists(), "the pickled command ran");

    // 4. The unpickler itself returns the call as data.
    let v = pickle::unpickle(&Pickle::new().system(&cmd).op(b".").0).unwrap();
    assert!(matches!(v, pickle::Value::Call(_)));
    assert!(format!("{v:?}").contains("not executed"));
    assert!(!marker.exists(), "the pickled command ran");
}

#[test]
fn malformed_pickles_give_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80, 2],                               // no STOP
        vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f], // string length past the end
        vec![0x80, 2, b'h', 7, b'.'],                // memo entry missing
        vec![0x80, 2, b'u', b'.'],                   // SETITEMS without a mark
        vec![0x80, 2, b'N', b'(', b'u', b'.'],       // SETITEMS on None
        vec![0x80, 2, b'i', b'.'],                   // INST: unsupported opcode
        vec![0x80, 2, b'R', b'.'],                   // REDUCE on an empty stack
    ];
    for data in cases {
        assert!(pickle::unpickle(&data).is_err(), "{data:?}");
    }
    // A tensor whose view runs past its storage.
    let bad = Pickle::new()
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"((")
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(2)
        .op(b"tQ")
        .int(0)
        .int(5)
        .op(&[0x85])
        .int(1)
        .op(&[0x85, 0x89, b'N', b't', b'R', b'.']);
    let err = pickle::unpickle(&bad.0).err().unwrap();
    assert!(err.contains("runs past its storage"), "{err}");
}

#[test]
fn misnamed_and_odd_files_in_a_folder() {
    // A weights folder can hold other files; only unrecognised *weights* files are reported.
    let d = tmp();
    copy_config(d.path());
    std::fs::copy(
        ckpt_dir().join("midms_finetuned.pth"),
        d.path().join("midms_finetuned.pth"),
    )
    .unwrap();
    std::fs::write(d.path().join("notes.txt"), "hello").unwrap();
    let mut other: HashMap<String, Tensor> = HashMap::new();
    other.insert(
        "foo.bar".into(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&other, d.path().join("other.safetensors")).unwrap();
    let ck = inspect(d.path()).unwrap();
    assert_eq!(ck.report.ignored_files.len(), 1);
    assert!(ck.report.ignored_files[0].1.contains("foo.bar"));
    // Pointing at that file alone is an error.
    let err = inspect(&d.path().join("other.safetensors")).err().unwrap();
    assert!(matches!(err, LoadError::UnknownWeights { .. }), "{err}");
}

/// The shipped weights with their `config.yaml` changed by `edit`: the config error that loading
/// them gives (checked to name `config.yaml`).
fn config_error_of_shipped_with(edit: impl FnOnce(String) -> String) -> LoadError {
    let d = tmp();
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    std::fs::copy(
        weights.join("model.safetensors"),
        d.path().join("model.safetensors"),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(weights.join("config.yaml")).unwrap();
    std::fs::write(d.path().join("config.yaml"), edit(shipped)).unwrap();
    let err = inspect(d.path()).err().unwrap();
    assert!(
        matches!(&err, LoadError::Config { path, .. } if path.ends_with("config.yaml")),
        "{err}"
    );
    err
}

/// The layout prior (`midms.layout_prior`) without region matching: a config error that names
/// what is missing (it weighs matches inside the drawn shape, which only region matching knows).
#[test]
fn a_layout_prior_without_region_matching_is_named() {
    let err = config_error_of_shipped_with(|shipped| {
        let cfg = shipped
            .replace("  region_matching: true\n", "")
            .replace("  region_open_strokes: true\n", "")
            .replace("  region_keep_outside: true\n", "");
        match cfg.contains("  layout_prior: ") {
            true => cfg,
            false => cfg.replace("midms:\n", "midms:\n  layout_prior: 2.0\n"),
        }
    });
    assert!(err.to_string().contains("midms.layout_prior"), "{err}");
}

/// Region matching's refinements (`midms.region_open_strokes`, `region_keep_outside`) without
/// region matching itself: a config error that says what is missing, not a silent no-op.
#[test]
fn region_refinements_without_region_matching_are_named() {
    let err = config_error_of_shipped_with(|shipped| {
        assert!(shipped.contains("  region_matching: true\n"));
        shipped.replace("  region_matching: true\n", "  region_matching: false\n")
    });
    assert!(err.to_string().contains("midms.region_matching"), "{err}");
}
