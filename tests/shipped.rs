//! The shipped model in `weights/` loads and turns a sample sketch into a real image.
use std::path::PathBuf;

use candle_core::Device;
use midm::{imageio, Noise, SamplerOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_model_translates_a_sample() {
    let loaded =
        midm::checkpoint::load(&root().join("weights"), &Device::Cpu).expect("weights/ loads");
    let model = loaded.model;
    assert_eq!(
        model.config.label_nc(),
        1,
        "the shipped model takes a plain edge map"
    );
    let assets = root().join("assets");
    let sketch = assets.join("cat_sketch.png");
    let exemplar = assets.join("cat_exemplar.png");
    let inputs = midm::cli::load_inputs(&model, &[sketch], &exemplar, &[]).unwrap();
    let out = midm::translate(
        &model,
        &inputs,
        &SamplerOptions::default(),
        &Noise::Seeded(0),
        &mut (),
    )
    .unwrap();
    let img = imageio::tensor_to_rgb(&out.image).unwrap();
    let ex = image::open(&exemplar).unwrap().to_rgb8();
    let size = model.config.image_size as u32;
    assert_eq!((img.width(), img.height()), (size, size));
    // Not constant: the pixel values spread.
    let lum: Vec<f32> = img
        .pixels()
        .map(|p| (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0)
        .collect();
    let mean = lum.iter().sum::<f32>() / lum.len() as f32;
    let std = (lum.iter().map(|l| (l - mean).powi(2)).sum::<f32>() / lum.len() as f32).sqrt();
    assert!(
        std > 10.0,
        "output is nearly constant (luminance std {std:.1})"
    );
    // Not a copy of the exemplar (compare at the model's size).
    let ex = image::imageops::resize(&ex, size, size, image::imageops::FilterType::Triangle);
    let mad: f32 = img
        .pixels()
        .zip(ex.pixels())
        .map(|(a, b)| {
            (0..3)
                .map(|c| (a[c] as f32 - b[c] as f32).abs())
                .sum::<f32>()
        })
        .sum::<f32>()
        / (3 * size * size) as f32;
    assert!(
        mad > 5.0,
        "output is (nearly) the exemplar: mean abs difference {mad:.1}"
    );
    eprintln!(
        "shipped model: luminance std {std:.1}, mean abs difference to the exemplar {mad:.1}"
    );
}
