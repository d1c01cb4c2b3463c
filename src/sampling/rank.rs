//! Ranking exemplars for a condition: first by how alike their outlines are, up to position and
//! size ([`Silhouette`]), then by the model's own correspondence confidence: how well the initial
//! matching of the sampler (F_X of the condition against F_Y of the exemplar) passes its
//! forward-backward cycle check. No diffusion step is run, so scoring an exemplar costs one
//! autoencoder encode and the correspondence networks.
//!
//! The condition side is computed once ([`ConditionFeatures`]) and reused for every exemplar;
//! an exemplar's side ([`ExemplarFeatures`]) does not depend on the condition, so a caller that
//! ranks many conditions against one gallery can keep it too.
use std::cmp::Ordering;

use candle_core::{DType, Tensor};

use super::matching;
use super::midm::SamplerOptions;
use super::silhouette::Silhouette;
use crate::error::{ensure, Result};
use crate::model::MidmModel;

/// How well an exemplar fits a condition. Every value is in [0, 1], higher is better.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RankScore {
    /// How alike the sketch's drawn shape and the exemplar's are, up to position and size
    /// ([`Silhouette::similarity`]); 0 where either is empty.
    #[serde(default)]
    pub shape: f32,
    /// Share of the condition's latent cells kept by the sampler's confidence mask M of the
    /// initial correlation (the cycle check, with its 2x2 three-of-four rule).
    pub cycle_share: f32,
    /// Mean over the condition's latent cells of their best correlation with any exemplar cell.
    pub mean_max_corr: f32,
}

impl RankScore {
    /// Best first: the larger `shape`, then the larger `cycle_share`, then the larger
    /// `mean_max_corr` (the shares move in steps of 4 cells).
    pub fn best_first(a: &Self, b: &Self) -> Ordering {
        b.shape
            .total_cmp(&a.shape)
            .then(b.cycle_share.total_cmp(&a.cycle_share))
            .then(b.mean_max_corr.total_cmp(&a.mean_max_corr))
    }
}

/// The matching settings of the score: those of the sampler's initial warp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankOptions {
    pub temperature: f64,
    pub fb_threshold: f64,
}

impl From<&SamplerOptions> for RankOptions {
    fn from(o: &SamplerOptions) -> Self {
        Self {
            temperature: o.temperature,
            fb_threshold: o.fb_threshold,
        }
    }
}

impl Default for RankOptions {
    fn default() -> Self {
        (&SamplerOptions::default()).into()
    }
}

/// F_X of a condition at latent resolution (the sampler's `trg_out`).
#[derive(Debug, Clone)]
pub struct ConditionFeatures {
    features: Tensor,
    /// The drawn shape's cells, for a model with region matching.
    cells: Option<Tensor>,
    /// The drawn shape, for the first ranking key (none for an empty sketch).
    silhouette: Option<Silhouette>,
}

/// F_Y of an exemplar and its label (the sampler's `ref_out`).
#[derive(Debug, Clone)]
pub struct ExemplarFeatures {
    features: Tensor,
    /// The exemplar's shape's cells, for a model with region matching.
    cells: Option<Tensor>,
    /// The exemplar's shape (none for an all-white image).
    silhouette: Option<Silhouette>,
}

/// Checks a [1, channels, size, size] input and brings it to the model's device in float32,
/// as the sampler does.
fn input(model: &MidmModel, t: &Tensor, channels: usize, what: &str) -> Result<Tensor> {
    let size = model.config.image_size;
    let (b, c, h, w) = t.dims4()?;
    ensure!(
        (b, c, h, w) == (1, channels, size, size),
        "the {what} is {b}x{c}x{h}x{w}, ranking expects 1x{channels}x{size}x{size}"
    );
    Ok(t.to_device(&model.device)?.to_dtype(DType::F32)?)
}

impl ConditionFeatures {
    /// `condition`: [1, label_nc, H, W] in [0, 1].
    pub fn new(model: &MidmModel, condition: &Tensor) -> Result<Self> {
        let drawn = input(model, condition, model.config.label_nc(), "condition")?;
        // Matched as the sampler matches it: its gaps closed (`midms.close_gaps`), a small
        // drawing framed (`midms.frame_drawing`). The silhouette is the closed drawing's where it
        // was drawn (it compares shapes at any size and place).
        let prep = super::midm::prepared_drawing(&model.config, &drawn)?;
        let condition = prep.input;
        let (seg_in, label_ds) = model.config.condition_on_grid(&condition)?;
        let (features, _) = model.correspondence.target_features(&seg_in, &label_ds)?;
        let cells = if model.config.region_matching {
            let (_, _, h, w) = features.dims4()?;
            Some(super::regions::target_cells(
                &condition,
                h,
                w,
                model.config.region_open_strokes,
            )?)
        } else {
            None
        };
        let silhouette = Silhouette::of_condition(&prep.closed)?;
        Ok(Self {
            features,
            cells,
            silhouette,
        })
    }
}

impl ExemplarFeatures {
    /// `exemplar`: [1, 3, H, W] in [-1, 1]; `label`: [1, label_nc, H, W], built like the
    /// condition.
    pub fn new(model: &MidmModel, exemplar: &Tensor, label: &Tensor) -> Result<Self> {
        let exemplar = input(model, exemplar, 3, "exemplar")?;
        let label = input(model, label, model.config.label_nc(), "exemplar label")?;
        // The same features the sampler's initial warp matches against.
        let side = super::midm::ExemplarSide::new(model, &exemplar, &label)?;
        let silhouette = match &side.foreground {
            Some(fg) => Silhouette::of_mask_tensor(fg)?,
            None => Silhouette::of_exemplar(&exemplar)?,
        };
        Ok(Self {
            features: side.out,
            cells: side.cells,
            silhouette,
        })
    }
}

/// The score of one exemplar for one condition.
pub fn score(
    condition: &ConditionFeatures,
    exemplar: &ExemplarFeatures,
    opts: RankOptions,
) -> Result<RankScore> {
    let (_, _, h, w) = condition.features.dims4()?;
    ensure!(
        exemplar.features.dims() == condition.features.dims(),
        "exemplar features {:?} and condition features {:?} differ",
        exemplar.features.dims(),
        condition.features.dims()
    );
    let mut corr = matching::correlation(&condition.features, &exemplar.features)?;
    // With region matching, the restricted correlation the sampler's initial warp uses.
    if let (Some(t), Some(e)) = (&condition.cells, &exemplar.cells) {
        corr = super::regions::Regions::new(t, e, None, false, (0.0, 0.0))?.restrict(&corr)?;
    }
    let (_, _, mask) = matching::cycle_mask(&corr, h, w, opts.temperature, opts.fb_threshold)?;
    let cycle_share = mask.mean_all()?.to_scalar::<f32>()?;
    let mean_max_corr = corr.max(2)?.mean_all()?.to_scalar::<f32>()?;
    let shape = match (&condition.silhouette, &exemplar.silhouette) {
        (Some(a), Some(b)) => a.similarity(b),
        _ => 0.0,
    };
    Ok(RankScore {
        shape,
        cycle_share,
        mean_max_corr,
    })
}

/// Scores every `(exemplar, exemplar label)` for `condition` (tensors as in
/// [`ConditionFeatures::new`] and [`ExemplarFeatures::new`]); returns `(index, score)` best
/// first.
pub fn rank(
    model: &MidmModel,
    condition: &Tensor,
    exemplars: &[(Tensor, Tensor)],
    opts: RankOptions,
) -> Result<Vec<(usize, RankScore)>> {
    let cond = ConditionFeatures::new(model, condition)?;
    let mut scores = exemplars
        .iter()
        .enumerate()
        .map(|(i, (image, label))| {
            let ex = ExemplarFeatures::new(model, image, label)?;
            Ok((i, score(&cond, &ex, opts)?))
        })
        .collect::<Result<Vec<_>>>()?;
    scores.sort_by(|a, b| RankScore::best_first(&a.1, &b.1));
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_orders_by_shape_then_cycle_share_then_correlation() {
        let s = |shape, cycle_share, mean_max_corr| RankScore {
            shape,
            cycle_share,
            mean_max_corr,
        };
        let mut v = [
            s(0.2, 0.5, 0.9),
            s(0.2, 0.75, 0.1),
            s(0.2, 0.5, 0.95),
            s(0.2, 0.0, 1.0),
            s(0.9, 0.0, 0.0),
        ];
        v.sort_by(RankScore::best_first);
        assert_eq!(
            v,
            [
                s(0.9, 0.0, 0.0),
                s(0.2, 0.75, 0.1),
                s(0.2, 0.5, 0.95),
                s(0.2, 0.5, 0.9),
                s(0.2, 0.0, 1.0)
            ]
        );
    }

    #[test]
    fn default_options_are_the_samplers() {
        let o = SamplerOptions::default();
        let r = RankOptions::default();
        assert_eq!(
            (r.temperature, r.fb_threshold),
            (o.temperature, o.fb_threshold)
        );
    }
}
