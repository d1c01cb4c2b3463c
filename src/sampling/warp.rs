//! The warps of one run: the initial matching of the sketch against the exemplar and the
//! re-matchings of the loop, each with what the model's config adds to the authors' method
//! (region matching, colour transfer). [`super::midm`]'s loop calls these; the order of the ops
//! is the authors' (`tests/parity_midm.rs`).
use candle_core::{DType, Tensor};

use super::midm::SamplerOptions;
use super::{matching, regions};
use crate::error::Result;
use crate::model::MidmModel;

/// The matching settings of one run and the model's additions to them.
pub(crate) struct Warper<'a> {
    /// Region matching (a model's `midms.region_matching`): restricted correlations, and warps
    /// that leave a photo's cells outside the sketch to the background latent.
    regions: Option<regions::Regions>,
    /// Colour transfer (a model's `midms.colour_transfer`): the exemplar's chroma, moved by the
    /// first matching, by its own (sharper) softmax where the model sets
    /// `midms.colour_temperature`.
    colour_source: Option<&'a Tensor>,
    colour_temperature: Option<f64>,
    temperature: f64,
    fb_threshold: f64,
    use_mask: bool,
}

/// What the initial matching gives.
pub(crate) struct InitialWarp {
    /// The warped exemplar latent: the loop's first x0.
    pub x0: Tensor,
    pub weights: Tensor,
    /// The exemplar's chroma on the sketch's grid, for a model with colour transfer.
    pub colour: Option<Tensor>,
}

/// What a re-matching gives.
pub(crate) struct Rewarp {
    /// The exemplar latent re-warped (R).
    pub warped: Tensor,
    pub weights: Tensor,
    /// Where the re-warp is kept (M): the cycle check's confident cells, or everywhere without
    /// the mask.
    pub mask: Tensor,
}

impl<'a> Warper<'a> {
    /// `condition` [B, label_nc, H, W]; `exemplar_cells` and `colour_source` from the exemplar's
    /// side; `(h, w)` the latent grid.
    pub fn new(
        model: &MidmModel,
        opts: &SamplerOptions,
        condition: &Tensor,
        exemplar_cells: Option<&Tensor>,
        colour_source: Option<&'a Tensor>,
        (h, w): (usize, usize),
    ) -> Result<Self> {
        let cfg = &model.config;
        let regions = match exemplar_cells {
            Some(cells) => Some(regions::Regions::new(
                &regions::target_cells(condition, h, w, cfg.region_open_strokes)?,
                cells,
                cfg.background_latent.as_deref(),
                cfg.region_keep_outside,
                // a colour weight of its own only where there is a colour warp to take it
                match colour_source {
                    Some(_) => (cfg.layout_prior, cfg.colour_layout_prior),
                    None => (cfg.layout_prior, cfg.layout_prior),
                },
            )?),
            None => None,
        };
        Ok(Self {
            regions,
            colour_source,
            colour_temperature: cfg.colour_temperature,
            temperature: opts.temperature,
            fb_threshold: opts.fb_threshold,
            use_mask: opts.use_mask,
        })
    }

    fn restrict(&self, corr: Tensor) -> Result<Tensor> {
        match &self.regions {
            Some(r) => Ok(r.restrict(&corr)?),
            None => Ok(corr),
        }
    }

    fn fill_outside(&self, warped: Tensor) -> Result<Tensor> {
        match &self.regions {
            Some(r) => Ok(r.fill_outside(warped)?),
            None => Ok(warped),
        }
    }

    /// The initial warp of `latent` (the exemplar's) by the correlation of the sketch's features
    /// `target` with the exemplar's `reference`. Its [hw, hw] correlation is dropped before the
    /// warp: at the official size it is 67 MB, and held on it added to every later peak.
    pub fn initial(
        &self,
        target: &Tensor,
        reference: &Tensor,
        latent: &Tensor,
    ) -> Result<InitialWarp> {
        let raw = matching::correlation(target, reference)?;
        // The colour warp's own restriction where its layout weight differs (model v1.13).
        let colour_corr = match &self.regions {
            Some(r) if r.colour_differs() => Some(r.restrict_colour(&raw)?),
            _ => None,
        };
        let corr = self.restrict(raw)?;
        let weights = matching::warp_weights(&corr, self.temperature)?;
        let colour = match self.colour_source {
            None => None,
            Some(src) => {
                // The latent warp's weights, unless the colour warp has a temperature or a
                // restriction of its own.
                let own = match (self.colour_temperature, colour_corr) {
                    (None, None) => None,
                    (t, c) => Some(matching::warp_weights(
                        c.as_ref().unwrap_or(&corr),
                        t.unwrap_or(self.temperature),
                    )?),
                };
                let warped = matching::apply_warp(own.as_ref().unwrap_or(&weights), src)?;
                Some(match &self.regions {
                    Some(r) => r.clear_outside(warped)?,
                    None => warped,
                })
            }
        };
        drop(corr);
        let x0 = self.fill_outside(matching::apply_warp(&weights, latent)?)?;
        Ok(InitialWarp {
            x0,
            weights,
            colour,
        })
    }

    /// A re-matching of the loop: the features of the current estimate `feat` against the
    /// exemplar's matching features `reference`, `latent` re-warped, and the mask of where to
    /// keep it.
    pub fn rematch(&self, feat: &Tensor, reference: &Tensor, latent: &Tensor) -> Result<Rewarp> {
        let (b, _, h, w) = latent.dims4()?;
        let corr = self.restrict(matching::correlation(feat, reference)?)?;
        let weights = matching::warp_weights(&corr, self.temperature)?;
        let warped = self.fill_outside(matching::apply_warp(&weights, latent)?)?;
        let mask = if self.use_mask {
            let cycle = matching::cycle_mask(&corr, h, w, self.temperature, self.fb_threshold)?.2;
            match &self.regions {
                Some(r) => r.keep_outside(cycle)?,
                None => cycle,
            }
        } else {
            Tensor::ones((b, 1, h, w), DType::F32, latent.device())?
        };
        Ok(Rewarp {
            warped,
            weights,
            mask,
        })
    }
}
