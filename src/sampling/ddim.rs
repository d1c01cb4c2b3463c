//! The DDIM update and the forward noising `q_sample`, in float32 as the reference computes them.
use candle_core::{Result, Tensor};

use super::schedule::{DdimCoefficients, DdpmSchedule};

/// `q_sample(x0, t, n) = sqrt(acp[t]) x0 + sqrt(1 - acp[t]) n`.
pub fn q_sample(ddpm: &DdpmSchedule, x0: &Tensor, t: usize, noise: &Tensor) -> Result<Tensor> {
    let a = ddpm.sqrt_alphas_cumprod[t] as f64;
    let b = ddpm.sqrt_one_minus_alphas_cumprod[t] as f64;
    (x0 * a)? + (noise * b)?
}

/// Result of one DDIM step.
#[derive(Debug, Clone)]
pub struct DdimStep {
    /// (x - sqrt(1 - a) eps) / sqrt(a).
    pub pred_x0: Tensor,
    /// sqrt(1 - a_prev - sigma^2) eps.
    pub dir_xt: Tensor,
}

impl DdimStep {
    /// `x_prev = sqrt(a_prev) pred_x0 + dir_xt (+ sigma z)`.
    pub fn x_prev(&self, c: &DdimCoefficients, z: Option<&Tensor>) -> Result<Tensor> {
        let x = ((&self.pred_x0 * c.sqrt_alpha_prev as f64)? + &self.dir_xt)?;
        match z {
            Some(z) if c.sigma != 0.0 => x + (z * c.sigma as f64)?,
            _ => Ok(x),
        }
    }
}

/// One DDIM step from the noisy latent `x` and the UNet's `eps`.
pub fn ddim_step(x: &Tensor, eps: &Tensor, c: &DdimCoefficients) -> Result<DdimStep> {
    let pred_x0 = ((x - (eps * c.sqrt_one_minus_alpha as f64)?)? / c.sqrt_alpha as f64)?;
    let dir_xt = (eps * c.dir_coef as f64)?;
    Ok(DdimStep { pred_x0, dir_xt })
}
