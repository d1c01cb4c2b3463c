//! LDM DDPM schedule and DDIM sub-schedules, computed as the reference computes them
//! (float64, then rounded to float32 buffers), so that every constant matches bit for bit.
use crate::model::DdpmConfig;

/// DDPM buffers (float32, as stored in an LDM checkpoint).
#[derive(Debug, Clone)]
pub struct DdpmSchedule {
    pub alphas_cumprod: Vec<f32>,
    pub sqrt_alphas_cumprod: Vec<f32>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f32>,
}

/// `np.linspace(start, stop, n)`: `i * step + start`, with the last value set to `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

impl DdpmSchedule {
    /// LDM's "linear" schedule: betas = linspace(sqrt(start), sqrt(end), T) ** 2.
    pub fn new(cfg: &DdpmConfig) -> Self {
        let betas: Vec<f64> = linspace(
            cfg.linear_start.sqrt(),
            cfg.linear_end.sqrt(),
            cfg.timesteps,
        )
        .into_iter()
        .map(|b| b * b)
        .collect();
        let mut acp = Vec::with_capacity(betas.len());
        let mut prod = 1f64;
        for b in &betas {
            prod *= 1.0 - b;
            acp.push(prod);
        }
        Self {
            alphas_cumprod: acp.iter().map(|&a| a as f32).collect(),
            sqrt_alphas_cumprod: acp.iter().map(|&a| a.sqrt() as f32).collect(),
            sqrt_one_minus_alphas_cumprod: acp.iter().map(|&a| (1.0 - a).sqrt() as f32).collect(),
        }
    }

    pub fn num_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }
}

/// A DDIM sub-schedule (`DDIMSampler.make_schedule`, uniform discretisation).
#[derive(Debug, Clone)]
pub struct DdimSchedule {
    /// Ascending DDPM timesteps: [0, c, 2c, ...] + 1 with c = T / S.
    pub timesteps: Vec<usize>,
    pub alphas: Vec<f32>,
    pub alphas_prev: Vec<f32>,
    pub sigmas: Vec<f32>,
    pub sqrt_one_minus_alphas: Vec<f32>,
}

impl DdimSchedule {
    pub fn new(ddpm: &DdpmSchedule, steps: usize, eta: f64) -> Self {
        let t_max = ddpm.num_timesteps();
        let c = (t_max / steps.max(1)).max(1);
        let timesteps: Vec<usize> = (0..t_max).step_by(c).map(|t| t + 1).collect();
        let acp = &ddpm.alphas_cumprod;
        let alphas: Vec<f32> = timesteps.iter().map(|&t| acp[t.min(t_max - 1)]).collect();
        let alphas_prev: Vec<f32> = std::iter::once(acp[0])
            .chain(alphas[..alphas.len() - 1].iter().copied())
            .collect();
        let sigmas = alphas
            .iter()
            .zip(&alphas_prev)
            .map(|(&a, &ap)| {
                let (a, ap) = (a as f64, ap as f64);
                (eta * ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).sqrt()) as f32
            })
            .collect();
        // 1 - a in float32, then a correctly rounded float32 square root (as torch does).
        let sqrt_one_minus_alphas = alphas.iter().map(|&a| (1.0f32 - a).sqrt()).collect();
        Self {
            timesteps,
            alphas,
            alphas_prev,
            sigmas,
            sqrt_one_minus_alphas,
        }
    }

    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// `time_range[s]`: the timesteps in descending order, as the sampler walks them.
    pub fn time_range(&self, s: usize) -> usize {
        self.timesteps[self.len() - 1 - s]
    }

    /// Schedule index of step `s` of the descending walk.
    pub fn index_of_step(&self, s: usize) -> usize {
        self.len() - 1 - s
    }
}

/// Scalars of one DDIM update, in float32 as the reference computes them.
#[derive(Debug, Clone, Copy)]
pub struct DdimCoefficients {
    pub sqrt_alpha: f32,
    pub sqrt_one_minus_alpha: f32,
    pub sqrt_alpha_prev: f32,
    /// sqrt(1 - a_prev - sigma^2), the weight of eps in the direction term.
    pub dir_coef: f32,
    pub sigma: f32,
}

impl DdimSchedule {
    pub fn coefficients(&self, index: usize) -> DdimCoefficients {
        let a = self.alphas[index];
        let a_prev = self.alphas_prev[index];
        let sigma = self.sigmas[index];
        DdimCoefficients {
            sqrt_alpha: a.sqrt(),
            sqrt_one_minus_alpha: self.sqrt_one_minus_alphas[index],
            sqrt_alpha_prev: a_prev.sqrt(),
            dir_coef: (1.0f32 - a_prev - sigma * sigma).sqrt(),
            sigma,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim16_timesteps_match_reference() {
        let ddpm = DdpmSchedule::new(&DdpmConfig::default());
        let s = DdimSchedule::new(&ddpm, 16, 0.0);
        assert_eq!(
            s.timesteps,
            vec![1, 63, 125, 187, 249, 311, 373, 435, 497, 559, 621, 683, 745, 807, 869, 931, 993]
        );
        assert_eq!(s.time_range(11), 311);
        assert_eq!(s.time_range(12), 249);
        assert_eq!(s.index_of_step(12), 4);
        let r = DdimSchedule::new(&ddpm, 200, 1.0);
        assert_eq!(r.len(), 200);
        assert_eq!(r.time_range(179), 101);
        assert_eq!(r.time_range(199), 1);
    }
}
