//! Our own layout (`config.yaml` + `model.safetensors`) stored in float16 or bfloat16 (as the
//! trainer may export it, to halve the file) loads into the float32 model: every tensor is
//! converted on load, so the model equals the float32 model of the same rounded values.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use midm::checkpoint::WeightsFile;
use midm::{Noise, SamplerOptions};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights")
}

/// A model folder holding the shipped config and `tensors` as `model.safetensors`.
fn folder(root: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shipped().join("config.yaml"), dir.join("config.yaml")).unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
    dir
}

fn with_dtype(tensors: &HashMap<String, Tensor>, dtype: DType) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.to_dtype(dtype).unwrap()))
        .collect()
}

fn translate(dir: &Path) -> image::RgbImage {
    let model = midm::checkpoint::load(dir, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .model;
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let inputs = midm::cli::load_inputs(
        &model,
        &[assets.join("cat_sketch.png")],
        &assets.join("cat_exemplar.png"),
        &[],
    )
    .unwrap();
    let opts = SamplerOptions {
        refine: None,
        ..SamplerOptions::default()
    };
    let out = midm::translate(&model, &inputs, &opts, &Noise::Seeded(3), &mut ()).unwrap();
    midm::image::tensor_to_rgb(&out.image).unwrap()
}

#[test]
fn half_precision_files_load_as_their_float32_values() {
    let tmp = tempfile::tempdir().unwrap();
    let original =
        candle_core::safetensors::load(shipped().join("model.safetensors"), &Device::Cpu).unwrap();
    for half in [DType::F16, DType::BF16] {
        // The float32 reference holds exactly the values the half file can represent.
        let rounded = with_dtype(&with_dtype(&original, half), DType::F32);
        let name = format!("{half:?}");
        let half_dir = folder(tmp.path(), &name, &with_dtype(&original, half));
        let ref_dir = folder(tmp.path(), &format!("{name}-as-f32"), &rounded);
        let file = WeightsFile::open(&half_dir.join("model.safetensors")).unwrap();
        assert!(file.entries.iter().all(|e| e.dtype == half), "{name} file");
        assert_eq!(
            translate(&half_dir),
            translate(&ref_dir),
            "{name} weights must give the float32 model of the same values"
        );
    }
}
