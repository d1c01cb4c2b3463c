//! Correspondence networks: condition encoder `seg_enc`, exemplar encoder `real_enc`,
//! iteration encoder `iter_enc` (SPADE on the condition features), the shared residual trunk
//! `layer` and the 1x1 projections `theta` (target side) and `phi` (reference side).
//!
//! Semantics follow the authors' code in evaluation mode (see `tests/fixtures/parity/README.md`,
//! section 4): spectral norm without power iteration, instance norm without affine, SPADE with a
//! positional (per-pixel, over channels) normalisation, reflection padding in the SPADE paths.
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::kernels::activations::{instance_norm_cpu, Act};
use super::kernels::rows_norm;
use super::kernels::spade::spade_modulate_cpu;
use super::layers::Conv2d;
use super::ops::{center_and_normalize, interpolate_nearest};
use serde::{Deserialize, Serialize};

const NORM_EPS: f64 = 1e-5;
const LRELU_SLOPE: f32 = 0.2;

/// Widths of the correspondence networks (official: n_ch 256, ndf 64, spade_nhidden 128).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceConfig {
    /// Condition label channels (15 for the CelebA-HQ edge label, 1 for plain edges).
    pub label_nc: usize,
    /// Latent channels of the autoencoder (input of `real_enc` / `iter_enc`).
    pub latent_channels: usize,
    /// Matching feature width `N_CH`.
    pub n_ch: usize,
    /// Base conv width `ndf` of the encoders (layer widths ndf, 4 ndf, 8 ndf).
    pub ndf: usize,
    /// Hidden width of SPADE's shared MLP.
    pub spade_nhidden: usize,
    /// Residual blocks in the trunk `layer`.
    pub trunk_blocks: usize,
    /// `midms.label_fill` (our own models; not in the authors' code): `seg_enc` also takes the
    /// filled drawing as one more channel ([`crate::model::ops::condition_on_grid`]).
    #[serde(default)]
    pub label_fill: bool,
}

impl CorrespondenceConfig {
    /// Input channels of `seg_enc`: the label, plus the filled drawing where `label_fill` is set.
    pub fn seg_channels(&self) -> usize {
        self.label_nc + usize::from(self.label_fill)
    }
}

/// Reflection padding by one pixel on both spatial axes (`nn.ReflectionPad2d(1)`).
pub fn reflect_pad1(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = Tensor::cat(&[x.narrow(3, 1, 1)?, x.clone(), x.narrow(3, w - 2, 1)?], 3)?;
    Tensor::cat(&[x.narrow(2, 1, 1)?, x.clone(), x.narrow(2, h - 2, 1)?], 2)
}

/// `InstanceNorm2d(affine=False)`: per sample and channel over H, W, biased variance.
pub fn instance_norm(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = instance_norm_cpu(x, NORM_EPS, Act::Identity)? {
        return Ok(y);
    }
    instance_norm_composite(x)
}

/// [`instance_norm`] then `LeakyReLU(slope)`, in one pass on the CPU f32 path.
fn instance_norm_leaky(x: &Tensor, slope: f32) -> Result<Tensor> {
    if let Some(y) = instance_norm_cpu(x, NORM_EPS, Act::LeakyRelu(slope))? {
        return Ok(y);
    }
    leaky_relu(&instance_norm_composite(x)?, slope)
}

/// LeakyReLU, and PReLU with one parameter (candle-nn's, at our f32 slope).
fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    candle_nn::ops::leaky_relu(x, slope as f64)
}

/// [`instance_norm`] off the CPU f32 path: candle-nn's fused layer norm over the rows
/// `[b * c, h * w]` on other devices ([`rows_norm`]), else the tensor ops.
fn instance_norm_composite(x: &Tensor) -> Result<Tensor> {
    if rows_norm::enabled_for(x) {
        return rows_norm::instance_norm(x, NORM_EPS);
    }
    let (b, c, h, w) = x.dims4()?;
    let flat = x.reshape((b, c, h * w))?;
    let mean = flat.mean_keepdim(2)?;
    let centered = flat.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(2)?;
    centered
        .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
        .reshape((b, c, h, w))
}

/// SPADE's positional normalisation: per pixel over channels, unbiased variance.
fn positional_norm(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim(1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = (centered.sqr()?.sum_keepdim(1)? / (c as f64 - 1.0))?;
    centered.broadcast_div(&(var + NORM_EPS)?.sqrt()?)
}

/// A plain conv (with or without bias) at `vb`.
fn conv(
    vb: &VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
    bias: bool,
) -> Result<Conv2d> {
    let weight = vb.get((cout, cin, k, k), "weight")?;
    conv_with_weight(vb, weight, cout, pad, bias)
}

/// A spectral-norm conv in evaluation mode: `W = weight_orig / (u . (W_mat @ v))`, computed once.
/// The stored u, v need not be converged, so sigma is NOT the largest singular value.
fn sn_conv(
    vb: &VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
    bias: bool,
) -> Result<Conv2d> {
    let weight = vb.get((cout, cin, k, k), "weight_orig")?;
    let u = vb.get(cout, "weight_u")?;
    let v = vb.get(cin * k * k, "weight_v")?;
    let wv = weight
        .reshape((cout, cin * k * k))?
        .matmul(&v.unsqueeze(1)?)?;
    let sigma = u.unsqueeze(0)?.matmul(&wv)?.reshape(())?;
    conv_with_weight(vb, weight.broadcast_div(&sigma)?, cout, pad, bias)
}

/// A conv of `weight`, with the bias at `vb` when `bias`; stride 1, as every conv here.
fn conv_with_weight(
    vb: &VarBuilder,
    weight: Tensor,
    cout: usize,
    pad: usize,
    bias: bool,
) -> Result<Conv2d> {
    let bias = bias.then(|| vb.get(cout, "bias")).transpose()?;
    let cfg = Conv2dConfig {
        padding: pad,
        ..Default::default()
    };
    Ok(Conv2d::new(weight, bias, cfg))
}

/// The effective (eval-mode) weight of a spectral-norm conv, for tests and tools.
pub fn spectral_norm_weight(vb: &VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Tensor> {
    Ok(sn_conv(vb, cin, cout, k, 0, false)?.weight().clone())
}

/// SPADE: positional norm, modulated by gamma/beta predicted from the segmentation input.
#[derive(Debug)]
struct Spade {
    mlp_shared: Conv2d,
    mlp_gamma: Conv2d,
    mlp_beta: Conv2d,
}

impl Spade {
    fn new(vb: VarBuilder, norm_nc: usize, label_nc: usize, nhidden: usize) -> Result<Self> {
        Ok(Self {
            mlp_shared: conv(&vb.pp("mlp_shared.1"), label_nc, nhidden, 3, 0, true)?,
            mlp_gamma: conv(&vb.pp("mlp_gamma"), nhidden, norm_nc, 3, 0, true)?,
            mlp_beta: conv(&vb.pp("mlp_beta"), nhidden, norm_nc, 3, 0, true)?,
        })
    }

    /// The modulated norm, followed by `LeakyReLU(slope)` when `slope` is given.
    fn forward(&self, x: &Tensor, seg: &Tensor, slope: Option<f32>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let seg = interpolate_nearest(seg, h, w)?;
        let actv = self.mlp_shared.forward(&reflect_pad1(&seg)?)?.relu()?;
        let actv = reflect_pad1(&actv)?;
        let gamma = self.mlp_gamma.forward(&actv)?;
        let beta = self.mlp_beta.forward(&actv)?;
        let act = slope.map_or(Act::Identity, Act::LeakyRelu);
        if let Some(y) = spade_modulate_cpu(x, &gamma, &beta, NORM_EPS, act)? {
            return Ok(y);
        }
        let y = positional_norm(x)?.mul(&(gamma + 1.0)?)?.add(&beta)?;
        match slope {
            Some(slope) => leaky_relu(&y, slope),
            None => Ok(y),
        }
    }
}

/// `SPADEResnetBlock` with a learned (spectral-norm, bias-free) shortcut.
#[derive(Debug)]
struct SpadeResnetBlock {
    conv_0: Conv2d,
    conv_1: Conv2d,
    conv_s: Conv2d,
    norm_0: Spade,
    norm_1: Spade,
    norm_s: Spade,
}

impl SpadeResnetBlock {
    fn new(
        vb: VarBuilder,
        fin: usize,
        fout: usize,
        label_nc: usize,
        nhidden: usize,
    ) -> Result<Self> {
        let fmiddle = fin.min(fout);
        Ok(Self {
            conv_0: sn_conv(&vb.pp("conv_0"), fin, fmiddle, 3, 0, true)?,
            conv_1: sn_conv(&vb.pp("conv_1"), fmiddle, fout, 3, 0, true)?,
            conv_s: sn_conv(&vb.pp("conv_s"), fin, fout, 1, 0, false)?,
            norm_0: Spade::new(vb.pp("norm_0"), fin, label_nc, nhidden)?,
            norm_1: Spade::new(vb.pp("norm_1"), fmiddle, label_nc, nhidden)?,
            norm_s: Spade::new(vb.pp("norm_s"), fin, label_nc, nhidden)?,
        })
    }

    fn forward(&self, x: &Tensor, seg: &Tensor) -> Result<Tensor> {
        let x_s = self.conv_s.forward(&self.norm_s.forward(x, seg, None)?)?;
        let dx = self.norm_0.forward(x, seg, Some(LRELU_SLOPE))?;
        let dx = self.conv_0.forward(&reflect_pad1(&dx)?)?;
        let dx = self.norm_1.forward(&dx, seg, Some(LRELU_SLOPE))?;
        let dx = self.conv_1.forward(&reflect_pad1(&dx)?)?;
        x_s + dx
    }
}

/// One of `seg_enc` / `real_enc` / `iter_enc`: three conv + instance-norm layers, then a SPADE
/// residual block conditioned on `seg`.
#[derive(Debug)]
pub struct FeatureEncoder {
    layer1: Conv2d,
    layer2: Conv2d,
    layer3: Conv2d,
    g_middle_1: SpadeResnetBlock,
}

impl FeatureEncoder {
    pub fn new(
        vb: VarBuilder,
        in_nc: usize,
        seg_nc: usize,
        cfg: &CorrespondenceConfig,
    ) -> Result<Self> {
        let ndf = cfg.ndf;
        Ok(Self {
            layer1: sn_conv(&vb.pp("layer1.0"), in_nc, ndf, 3, 1, false)?,
            layer2: sn_conv(&vb.pp("layer2.0"), ndf, 4 * ndf, 3, 1, false)?,
            layer3: sn_conv(&vb.pp("layer3.0"), 4 * ndf, 8 * ndf, 3, 1, false)?,
            g_middle_1: SpadeResnetBlock::new(
                vb.pp("G_middle_1"),
                8 * ndf,
                cfg.n_ch,
                seg_nc,
                cfg.spade_nhidden,
            )?,
        })
    }

    /// Output of the first conv + instance norm (before the LeakyReLU), for tests.
    pub fn layer1_out(&self, x: &Tensor) -> Result<Tensor> {
        instance_norm(&self.layer1.forward(x)?)
    }

    pub fn forward(&self, x: &Tensor, seg: &Tensor) -> Result<Tensor> {
        let x = instance_norm_leaky(&self.layer1.forward(x)?, LRELU_SLOPE)?;
        let x = instance_norm_leaky(&self.layer2.forward(&x)?, LRELU_SLOPE)?;
        let x = instance_norm(&self.layer3.forward(&x)?)?;
        // No activation between layer3 and the SPADE block, as in the reference.
        self.g_middle_1.forward(&x, seg)
    }
}

/// Residual block of the trunk: one PReLU parameter shared by both activations.
#[derive(Debug)]
struct ResidualBlock {
    conv1: Conv2d,
    conv2: Conv2d,
    /// The PReLU's one parameter.
    prelu: f32,
}

impl ResidualBlock {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            conv1: conv(&vb.pp("conv1"), c, c, 3, 0, true)?,
            conv2: conv(&vb.pp("conv2"), c, c, 3, 0, true)?,
            prelu: vb.get(1, "prelu.weight")?.to_vec1::<f32>()?[0],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let o = instance_norm_leaky(&self.conv1.forward(&reflect_pad1(x)?)?, self.prelu)?;
        let o = instance_norm(&self.conv2.forward(&reflect_pad1(&o)?)?)?;
        leaky_relu(&(o + x)?, self.prelu)
    }
}

/// All correspondence networks of a MIDM.
#[derive(Debug)]
pub struct Correspondence {
    pub seg_enc: FeatureEncoder,
    pub real_enc: FeatureEncoder,
    pub iter_enc: FeatureEncoder,
    layer: Vec<ResidualBlock>,
    phi: Conv2d,
    theta: Conv2d,
    config: CorrespondenceConfig,
}

impl Correspondence {
    /// `vb` is rooted at the checkpoint's top level (keys `seg_enc.*`, `layer.*`, ...).
    pub fn new(vb: VarBuilder, cfg: &CorrespondenceConfig) -> Result<Self> {
        let trunk_c = cfg.n_ch + cfg.label_nc;
        let layer = (0..cfg.trunk_blocks)
            .map(|i| ResidualBlock::new(vb.pp(format!("layer.{i}")), trunk_c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            seg_enc: FeatureEncoder::new(
                vb.pp("seg_enc"),
                cfg.seg_channels(),
                cfg.seg_channels(),
                cfg,
            )?,
            real_enc: FeatureEncoder::new(
                vb.pp("real_enc"),
                cfg.latent_channels,
                cfg.latent_channels,
                cfg,
            )?,
            iter_enc: FeatureEncoder::new(vb.pp("iter_enc"), cfg.latent_channels, cfg.n_ch, cfg)?,
            layer,
            phi: conv(&vb.pp("phi"), trunk_c, cfg.n_ch, 1, 0, true)?,
            theta: conv(&vb.pp("theta"), trunk_c, cfg.n_ch, 1, 0, true)?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &CorrespondenceConfig {
        &self.config
    }

    /// The shared trunk on `cat[features, label]`.
    pub fn trunk(&self, features: &Tensor, label: &Tensor) -> Result<Tensor> {
        let mut x = Tensor::cat(&[features, label], 1)?;
        for block in &self.layer {
            x = block.forward(&x)?;
        }
        Ok(x)
    }

    /// Matching features of the condition side: `theta(layer(cat[seg_enc(seg_in), label]))`,
    /// centred and normalised over channels; `seg_in` and `label_ds` as
    /// [`crate::model::ops::condition_on_grid`] makes them (the same tensor unless the model
    /// fills the drawing). Also returns the raw `seg_enc` output, which conditions `iter_enc`.
    pub fn target_features(&self, seg_in: &Tensor, label_ds: &Tensor) -> Result<(Tensor, Tensor)> {
        let matching = self.seg_enc.forward(seg_in, seg_in)?;
        let out = self.theta.forward(&self.trunk(&matching, label_ds)?)?;
        Ok((center_and_normalize(&out)?, matching))
    }

    /// Matching features of the exemplar side: `phi(layer(cat[real_enc(z), label]))`,
    /// centred and normalised; also the raw `real_enc` output (used by the re-matching).
    pub fn reference_features(
        &self,
        ref_latent: &Tensor,
        ref_label_ds: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let matching = self.real_enc.forward(ref_latent, ref_latent)?;
        let out = self.phi.forward(&self.trunk(&matching, ref_label_ds)?)?;
        Ok((center_and_normalize(&out)?, matching))
    }

    /// Features of the current x0 estimate for re-matching, conditioned on the raw `seg_enc`
    /// output of the condition; centred and normalised.
    pub fn iteration_features(&self, x0: &Tensor, target_matching: &Tensor) -> Result<Tensor> {
        center_and_normalize(&self.iter_enc.forward(x0, target_matching)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_pad_matches_definition() -> Result<()> {
        let x = Tensor::arange(0f32, 9f32, &Device::Cpu)?.reshape((1, 1, 3, 3))?;
        let p = reflect_pad1(&x)?;
        assert_eq!(p.dims(), &[1, 1, 5, 5]);
        let rows: Vec<Vec<f32>> = p.squeeze(0)?.squeeze(0)?.to_vec2()?;
        assert_eq!(rows[0], vec![4., 3., 4., 5., 4.]);
        assert_eq!(rows[1], vec![1., 0., 1., 2., 1.]);
        assert_eq!(rows[2], vec![4., 3., 4., 5., 4.]);
        assert_eq!(rows[4], vec![4., 3., 4., 5., 4.]);
        Ok(())
    }

    use crate::model::max_abs_diff as max_diff;

    /// The fused CPU kernels against the tensor-op definitions, in a two-thread pool at a size
    /// that takes the parallel path (2 x 40 x 24 x 40 = 76,800 elements) and at one that does not.
    #[test]
    fn fused_norms_match_the_tensor_ops() -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(fused_norms_match)
    }

    fn fused_norms_match() -> Result<()> {
        for (b, c, h, w) in [(2, 40, 24, 40), (1, 3, 5, 7)] {
            let x = ((Tensor::randn(0f32, 1f32, (b, c, h, w), &Device::Cpu)? * 3.0)? + 0.5)?;
            let g = Tensor::randn(0f32, 1f32, (b, c, h, w), &Device::Cpu)?;
            let bt = Tensor::randn(0f32, 1f32, (b, c, h, w), &Device::Cpu)?;
            let want = instance_norm_composite(&x)?;
            assert!(max_diff(&instance_norm(&x)?, &want)? < 1e-5);
            let fused = instance_norm_leaky(&x, 0.2)?;
            assert!(max_diff(&fused, &leaky_relu(&want, 0.2)?)? < 1e-5);
            let want = positional_norm(&x)?.mul(&(&g + 1.0)?)?.add(&bt)?;
            for slope in [None, Some(0.2f32)] {
                let act = slope.map_or(Act::Identity, Act::LeakyRelu);
                let got = spade_modulate_cpu(&x, &g, &bt, NORM_EPS, act)?.expect("fast path");
                let want = match slope {
                    Some(s) => leaky_relu(&want, s)?,
                    None => want.clone(),
                };
                assert!(max_diff(&got, &want)? < 1e-4, "SPADE, slope {slope:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn positional_norm_uses_unbiased_variance() -> Result<()> {
        let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
        let y: Vec<f32> = positional_norm(&x)?.flatten_all()?.to_vec1()?;
        // mean 2, unbiased var 1.
        let s = (1.0f32 + 1e-5).sqrt();
        for (got, want) in y.iter().zip([-1.0 / s, 0.0, 1.0 / s]) {
            assert!((got - want).abs() < 1e-6);
        }
        Ok(())
    }
}
