//! `midm translate` as a user runs it, on the fixture weights, and the bad inputs it must
//! refuse with a clear message (never a panic).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn midm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_midm"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

/// Writes the fixture's first condition / exemplar label as [C, H, W] tensors and its
/// exemplar as a PNG.
fn fixture_inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let trace = common::trace();
    let save = |name: &str, t: Tensor| {
        let p = dir.join(name);
        candle_core::safetensors::save(&[("label".to_string(), t)].into_iter().collect(), &p)
            .unwrap();
        p
    };
    let cond = save(
        "cond.safetensors",
        common::get(&trace, "input.cond_label").get(0).unwrap(),
    );
    let label = save(
        "label.safetensors",
        common::get(&trace, "input.exemplar_label").get(0).unwrap(),
    );
    let ex = dir.join("exemplar.png");
    let img = midm::image::tensor_to_rgb(&common::get(&trace, "input.exemplar")).unwrap();
    img.save(&ex).unwrap();
    (cond, label, ex)
}

fn run(args: &[&str]) -> (bool, String) {
    let out = midm().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "midm panicked:\n{stderr}");
    (out.status.success(), stderr)
}

/// `midm translate` with the given files, plus `extra` flags.
fn translate(
    model: &Path,
    condition: &Path,
    exemplar: &Path,
    label: &Path,
    out: &Path,
    extra: &[&str],
) -> (bool, String) {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (model, condition, exemplar, label, out) = (
        path(model),
        path(condition),
        path(exemplar),
        path(label),
        path(out),
    );
    let mut args = vec![
        "translate",
        "--model",
        &model,
        "--condition",
        &condition,
        "--exemplar",
        &exemplar,
        "--exemplar-label",
        &label,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn translate_writes_image_and_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let out = dir.path().join("out.png");
    let steps = dir.path().join("steps");
    let model = common::parity_dir();
    let (ok, stderr) = translate(
        &model,
        &cond,
        &ex,
        &label,
        &out,
        &["--steps-dir", steps.to_str().unwrap(), "--seed", "7"],
    );
    assert!(ok, "{stderr}");
    let size = common::fixture_config().image_size as u32;
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (size, size));
    let text = midm::image::read_png_text(&out).unwrap();
    assert!(text.iter().any(|(k, v)| k == "midm:seed" && v == "7"));
    let names: Vec<String> = std::fs::read_dir(&steps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    // Initial warp, 4 loop steps, 20 refinement steps, final: one r~n each; R and M on the re-warps.
    assert_eq!(
        names.iter().filter(|n| n.ends_with("_pred_x0.png")).count(),
        1 + 4 + 20 + 1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with("_mask.png")).count(),
        2 + 1,
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains("k1_warped")));
}

/// The CLI records its parameters and the model hash the way the editor does, so that dropping
/// its PNG on the editor restores them.
#[cfg(feature = "gui")]
#[test]
fn a_cli_png_restores_its_parameters_in_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let out = dir.path().join("out.png");
    let model = common::parity_dir();
    let flags = [
        "--seed",
        "4243",
        "--ddim-steps",
        "12",
        "--interleaved-steps",
        "3",
        "--temperature",
        "0.01",
        "--no-mask",
        "--no-refine",
    ];
    let (ok, stderr) = translate(&model, &cond, &ex, &label, &out, &flags);
    assert!(ok, "{stderr}");
    let text = midm::image::read_png_text(&out).unwrap();
    let hash = midm::checkpoint::inspect(&model)
        .unwrap()
        .report
        .model_hash()
        .unwrap();
    assert_eq!(
        midm::params::text_value(&text, midm::params::KEY_MODEL_HASH),
        Some(hash.as_str()),
        "the CLI records the hash the editor shows"
    );
    let mut app = midm::ui::MidmApp::new(
        &egui::Context::default(),
        midm::ui::AppArgs {
            fresh: true,
            ..Default::default()
        },
        None,
    );
    assert!(app.restore_from_png(&out));
    let p = &app.params;
    assert_eq!(
        (p.seed, p.ddim_steps, p.interleaved_steps, p.temperature),
        (4243, 12, 3, 0.01)
    );
    assert!(!p.use_mask && !p.refine);
}

#[test]
fn translate_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let model = common::parity_dir();
    let mut outs = Vec::new();
    for (i, seed) in ["3", "3", "4"].iter().enumerate() {
        let out = dir.path().join(format!("out{i}.png"));
        let (ok, stderr) = translate(
            &model,
            &cond,
            &ex,
            &label,
            &out,
            &["--seed", seed, "--no-refine"],
        );
        assert!(ok, "{stderr}");
        outs.push(image::open(&out).unwrap().to_rgb8());
    }
    assert_eq!(outs[0], outs[1], "same seed, same image");
    // --no-refine has no random draw after the loop's q_sample, which the seed changes.
    assert_ne!(outs[0], outs[2], "another seed, another image");
}

#[test]
fn bad_images_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let model = common::parity_dir();
    let out = dir.path().join("out.png");
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let base = |exemplar: &Path, condition: &Path| -> (bool, String) {
        translate(&model, condition, exemplar, &label, &out, &["--no-refine"])
    };
    let (ok, e) = base(&empty, &cond);
    assert!(!ok && e.contains("empty.png") && e.contains("empty"), "{e}");
    let (ok, e) = base(&corrupt, &cond);
    assert!(!ok && e.contains("corrupt.png"), "{e}");
    let (ok, e) = base(&dir.path().join("missing.png"), &cond);
    assert!(!ok && e.contains("missing.png"), "{e}");
    // A one-channel PNG for a 15-channel model: the channel count is named.
    let (ok, e) = base(&ex, &ex);
    assert!(!ok && e.contains("15 channels"), "{e}");
    // A condition tensor with the wrong number of channels.
    let wrong = dir.path().join("wrong.safetensors");
    let t = Tensor::zeros((3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("c".to_string(), t)].into_iter().collect(), &wrong).unwrap();
    let (ok, e) = base(&ex, &wrong);
    assert!(!ok && e.contains("3 channels") && e.contains("15"), "{e}");
    assert!(!out.exists(), "no output is written on failure");
}

#[test]
fn other_sizes_are_resized_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let big = dir.path().join("big.png");
    image::open(&ex)
        .unwrap()
        .resize_exact(100, 80, image::imageops::FilterType::Triangle)
        .save(&big)
        .unwrap();
    let out = dir.path().join("out.png");
    let model = common::parity_dir();
    let (ok, e) = translate(&model, &cond, &big, &label, &out, &["--no-refine"]);
    assert!(ok, "{e}");
    let size = common::fixture_config().image_size;
    assert!(
        e.contains(&format!("resized from 100x80 to {size}x{size}")),
        "{e}"
    );
}

#[test]
fn missing_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cond, label, ex) = fixture_inputs(dir.path());
    let out = dir.path().join("out.png");
    let (ok, e) = run(&[
        "translate",
        "--model",
        dir.path().join("nowhere").to_str().unwrap(),
        "--condition",
        cond.to_str().unwrap(),
        "--exemplar",
        ex.to_str().unwrap(),
        "--exemplar-label",
        label.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("nowhere"), "{e}");
}
