//! Ranking a gallery of exemplars for the current condition, on the worker thread, one
//! exemplar at a time (a `Ranked` event each, so the UI fills in as they come). A ranking
//! yields to runs: between exemplars it stops as soon as a run was submitted (or cancelled)
//! after it was asked, or a newer ranking was asked.
//!
//! An exemplar's features do not depend on the sketch, and re-ranking after every stroke is
//! the common case: they are kept per image (and Canny settings) for the loaded model, so a
//! re-ranking only matches them against the new sketch.
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use image::RgbaImage;

use super::serve::{build, exemplar_at, guarded, label_tensor, plain_exemplar_label};
use super::{LabelInput, ModelInfo, WorkerEvent};
use crate::error::Result;
use crate::image::CannyParams;
use crate::model::MidmModel;
use crate::sampling::rank::{score, ConditionFeatures, ExemplarFeatures, RankOptions};

/// One ranking request (see [`super::WorkerHandle::rank`]).
pub(crate) struct RankJob {
    pub ranking: u64,
    /// The run generation when the ranking was asked: a newer one means a run is waiting.
    pub generation: u64,
    pub condition: LabelInput,
    pub exemplars: Vec<(usize, RgbaImage)>,
    pub canny: CannyParams,
    pub rankings: Arc<AtomicU64>,
    pub generations: Arc<AtomicU64>,
}

impl RankJob {
    fn superseded(&self) -> bool {
        self.rankings.load(Ordering::SeqCst) != self.ranking
            || self.generations.load(Ordering::SeqCst) != self.generation
    }
}

/// Most exemplars whose features are kept (about 130 KB each at a 32x32 latent).
const CACHE_LIMIT: usize = 1024;

/// Exemplar features of one model, by hash of (image, Canny settings).
#[derive(Default)]
struct Cache {
    model: u64,
    features: HashMap<u64, ExemplarFeatures>,
}

thread_local! {
    // Only the worker thread ranks; a respawned worker starts empty, as its model does.
    static CACHE: RefCell<Cache> = RefCell::default();
}

fn hash_of(h: impl Hash) -> u64 {
    let mut s = DefaultHasher::new();
    h.hash(&mut s);
    s.finish()
}

/// Serves `job`, reporting through `emit`; ends with `RankDone`.
pub(super) fn serve(
    model: Option<&(MidmModel, ModelInfo)>,
    job: &RankJob,
    emit: &dyn Fn(WorkerEvent),
) {
    let ranking = job.ranking;
    let done = |complete| emit(WorkerEvent::RankDone { ranking, complete });
    if job.superseded() {
        return done(false);
    }
    let prepared = match model {
        None => Err("no model is loaded".to_string()),
        Some((model, info)) => guarded("ranking", || {
            condition_features(model, info, &job.condition)
        })
        .map(|c| (model, info, c)),
    };
    let (model, info, condition) = match prepared {
        Ok(p) => p,
        Err(error) => {
            // Nothing can be scored: say why for every exemplar.
            for (id, _) in &job.exemplars {
                let score = Err(error.clone());
                emit(WorkerEvent::Ranked {
                    ranking,
                    id: *id,
                    score,
                });
            }
            return done(true);
        }
    };
    // The model's identity: an installed model may share a path, not an address and a hash.
    let model_key = hash_of((
        model as *const MidmModel as usize,
        &info.hash,
        info.precision.name(),
    ));
    for (id, image) in &job.exemplars {
        if job.superseded() {
            return done(false);
        }
        let score = guarded("ranking", || {
            let ex = cached_features(model_key, image, job.canny, || {
                exemplar_features(model, info, image, job.canny)
            })?;
            score(&condition, &ex, RankOptions::default())
        });
        emit(WorkerEvent::Ranked {
            ranking,
            id: *id,
            score,
        });
    }
    done(true)
}

fn cached_features(
    model: u64,
    image: &RgbaImage,
    canny: CannyParams,
    compute: impl FnOnce() -> Result<ExemplarFeatures>,
) -> Result<ExemplarFeatures> {
    let key = hash_of((image.dimensions(), image.as_raw(), format!("{canny:?}")));
    let hit = CACHE.with_borrow_mut(|c| {
        if c.model != model || c.features.len() >= CACHE_LIMIT {
            *c = Cache {
                model,
                ..Cache::default()
            };
        }
        c.features.get(&key).cloned()
    });
    if let Some(f) = hit {
        return Ok(f);
    }
    let f = compute()?;
    CACHE.with_borrow_mut(|c| c.features.insert(key, f.clone()));
    Ok(f)
}

fn condition_features(
    model: &MidmModel,
    info: &ModelInfo,
    condition: &LabelInput,
) -> Result<ConditionFeatures> {
    // The exemplar only matters to `ExemplarEdges`, which a condition is not.
    let label = build(
        condition,
        &RgbaImage::new(1, 1),
        info.label_nc,
        info.image_size,
    )?;
    ConditionFeatures::new(model, &label_tensor(model, &label)?)
}

/// The exemplar's label as a run builds it from Canny edges, without traced strokes or parts.
fn exemplar_features(
    model: &MidmModel,
    info: &ModelInfo,
    image: &RgbaImage,
    canny: CannyParams,
) -> Result<ExemplarFeatures> {
    let label = plain_exemplar_label(image, canny, info.label_nc, info.image_size)?;
    let tensor = crate::image::rgb_to_tensor(&exemplar_at(image, info.image_size), &model.device)?;
    ExemplarFeatures::new(model, &tensor, &label_tensor(model, &label)?)
}
