//! Small building blocks shared by the networks: GroupNorm, convolutions (3x3 and 1x1 as a
//! matmul), SiLU, nearest upsampling. Every loader reads the checkpoint key `weight` / `bias`
//! under the given VarBuilder path and fails with a candle error naming the key when it is
//! missing or has another shape.
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

pub use super::kernels::conv::Conv2d;
use super::kernels::rows_norm;

/// GroupNorm with 32 groups and affine parameters, as both LDM networks use it
/// (`eps` is 1e-6 in the autoencoder's `Normalize`, 1e-5 in the UNet's `GroupNorm32`).
pub fn group_norm(channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    const GROUPS: usize = 32;
    if !channels.is_multiple_of(GROUPS) {
        candle_core::bail!(
            "GroupNorm at {}: {channels} channels are not a multiple of {GROUPS} groups",
            vb.prefix()
        )
    }
    let (weight, bias) = (vb.get(channels, "weight")?, vb.get(channels, "bias")?);
    // Host copies of the affine parameters for the fused CPU kernel (f32 models on the CPU).
    let host = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
    // Shaped for broadcasting over [b, c, h, w] on other devices (`kernels::rows_norm`).
    let per_channel = |t: &Tensor| t.reshape((1, channels, 1, 1));
    Ok(GroupNorm {
        weight: host(&weight)?,
        bias: host(&bias)?,
        per_channel: (per_channel(&weight)?, per_channel(&bias)?),
        inner: candle_nn::GroupNorm::new(weight, bias, channels, GROUPS, eps)?,
        groups: GROUPS,
        eps,
    })
}

/// candle-nn's GroupNorm, with a fused CPU f32 kernel ([`super::kernels::activations::group_norm_cpu`])
/// that can also apply the SiLU that follows most norms in both networks.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Vec<f32>,
    bias: Vec<f32>,
    per_channel: (Tensor, Tensor),
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fused(x, false)
    }

    /// `silu(norm(x))` in one pass.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.fused(x, true)
    }

    fn fused(&self, x: &Tensor, with_silu: bool) -> Result<Tensor> {
        let fast = super::kernels::activations::group_norm_cpu(
            x,
            self.groups,
            self.eps,
            &self.weight,
            &self.bias,
            with_silu,
        )?;
        match fast {
            Some(y) => Ok(y),
            None if x.rank() >= 3 && rows_norm::enabled_for(x) => self.by_rows(x, with_silu),
            None if with_silu => silu(&self.inner.forward(x)?),
            None => self.inner.forward(x),
        }
    }

    /// The norm through candle-nn's fused layer norm ([`rows_norm`]), for `[b, c, ..]` inputs.
    fn by_rows(&self, x: &Tensor, with_silu: bool) -> Result<Tensor> {
        // [b, c, rest..] as [b, c, n, 1], which the [1, c, 1, 1] affine broadcasts over.
        let dims = x.dims();
        let x4 = x.reshape((dims[0], dims[1], dims[2..].iter().product::<usize>(), 1))?;
        let (weight, bias) = &self.per_channel;
        rows_norm::group_norm(&x4, self.groups, self.eps, weight, bias, with_silu)?.reshape(dims)
    }
}

/// A `k x k` Conv2d with bias (`weight` `[out,in,k,k]`, `bias` `[out]`).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    };
    candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb).map(Conv2d::from)
}

/// A 3x3 Conv2d, stride 1, zero padding 1 (the common case in both networks).
pub fn conv3x3(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(in_channels, out_channels, 3, 1, 1, vb)
}

/// A Linear layer with bias (`weight` `[out,in]`, `bias` `[out]`).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb)
}

/// A pointwise (1x1) convolution evaluated as a batched matmul over the channel axis, so it
/// costs one GEMM per batch element and no im2col copy. Loads 4-D Conv2d weights
/// `[out,in,1,1]` ([`Self::conv2d`]) and 3-D Conv1d weights `[out,in,1]` ([`Self::conv1d`],
/// UNet attention `qkv` / `proj_out`).
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out, 1]`, broadcast over positions.
    bias: Tensor,
}

impl Conv1x1 {
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (out, _) = weight.dims2()?;
        let bias = bias.reshape((out, 1))?;
        Ok(Self { weight, bias })
    }

    /// From a 1x1 `Conv2d` checkpoint entry.
    pub fn conv2d(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((out_channels, in_channels, 1, 1), "weight")?;
        let b = vb.get(out_channels, "bias")?;
        Self::new(w.reshape((out_channels, in_channels))?, b)
    }

    /// From a kernel-size-1 `Conv1d` checkpoint entry.
    pub fn conv1d(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((out_channels, in_channels, 1), "weight")?;
        let b = vb.get(out_channels, "bias")?;
        Self::new(w.reshape((out_channels, in_channels))?, b)
    }

    /// Stacks several 1x1 convolutions over the same input into one (outputs concatenated
    /// along channels), e.g. the autoencoder's separate `q`, `k`, `v` into one GEMM.
    pub fn stack(convs: &[Conv1x1]) -> Result<Self> {
        let w: Vec<&Tensor> = convs.iter().map(|c| &c.weight).collect();
        let b: Vec<&Tensor> = convs.iter().map(|c| &c.bias).collect();
        Ok(Self {
            weight: Tensor::cat(&w, 0)?,
            bias: Tensor::cat(&b, 0)?,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// `x`: `[B, in, ...]` (any number of spatial dims) -> `[B, out, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 3 {
            candle_core::bail!("Conv1x1 expects [B, C, ...], got {:?}", dims)
        }
        let (b, c) = (dims[0], dims[1]);
        let positions: usize = dims[2..].iter().product();
        let flat = x.reshape((b, c, positions))?;
        let y = self
            .weight
            .broadcast_matmul(&flat)?
            .broadcast_add(&self.bias)?;
        let mut out_dims = dims.to_vec();
        out_dims[1] = self.out_channels();
        y.reshape(out_dims)
    }
}

impl Module for Conv1x1 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv1x1::forward(self, x)
    }
}

pub use super::kernels::activations::{silu, softmax_last_dim};

/// Nearest-neighbour upsampling by 2 (`F.interpolate(x, scale_factor=2, mode="nearest")`).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    x.upsample_nearest2d(2 * h, 2 * w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The fused-layer-norm route (taken off the CPU) gives candle-nn's GroupNorm for the UNet's
    /// [b, c, h, w] inputs and its attention's [b, c, t] ones, with and without SiLU.
    #[test]
    fn group_norm_by_rows_matches_candle_nn_at_ranks_3_and_4() -> Result<()> {
        let dev = Device::Cpu;
        let c = 64;
        let tensors = std::collections::HashMap::from([
            ("weight".to_string(), Tensor::randn(1f32, 0.3, c, &dev)?),
            ("bias".to_string(), Tensor::randn(0f32, 0.3, c, &dev)?),
        ]);
        let norm = group_norm(c, 1e-5, VarBuilder::from_tensors(tensors, DType::F32, &dev))?;
        for shape in [vec![2, c, 6, 5], vec![1, c, 49]] {
            let x = ((Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)? * 3.0)? - 2.0)?;
            let want = norm.inner.forward(&x)?;
            for with_silu in [false, true] {
                let want = if with_silu {
                    silu(&want)?
                } else {
                    want.clone()
                };
                let got = norm.by_rows(&x, with_silu)?;
                assert_eq!(got.dims(), x.dims());
                let diff = crate::model::max_abs_diff(&got, &want)?;
                assert!(diff < 1e-4, "{shape:?} silu {with_silu}: {diff}");
            }
        }
        Ok(())
    }
}
