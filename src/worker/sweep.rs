//! "Run with all gallery exemplars": the current sketch translated with every exemplar of the
//! gallery, one final image per exemplar (`Swept`, as each finishes), then `SweepDone`. A sweep
//! yields to runs like a ranking does: a run submitted (or cancelled) after the sweep was
//! asked, or a newer sweep, stops it within one UNet pass. Exemplars go through the sampler a
//! few at a time, as `midm batch` runs them.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use image::RgbaImage;

use super::serve::{
    build, exemplar_at, guarded, label_tensor, plain_exemplar_label, tensor_to_image,
};
use super::{LabelInput, ModelInfo, WorkerEvent};
use crate::batch::translate_seeded_until;
use crate::error::Result;
use crate::image::CannyParams;
use crate::model::MidmModel;
use crate::sampling::midm::MidmInputs;
use crate::SamplerOptions;

/// One sweep request (see [`super::WorkerHandle::sweep`]).
pub(crate) struct SweepJob {
    pub sweep: u64,
    /// The run generation when the sweep was asked: a newer one means a run is waiting.
    pub generation: u64,
    pub condition: LabelInput,
    pub exemplars: Vec<(usize, RgbaImage)>,
    pub canny: CannyParams,
    pub options: SamplerOptions,
    pub seed: u64,
    pub sweeps: Arc<AtomicU64>,
    pub generations: Arc<AtomicU64>,
}

impl SweepJob {
    fn superseded(&self) -> bool {
        self.sweeps.load(Ordering::SeqCst) != self.sweep
            || self.generations.load(Ordering::SeqCst) != self.generation
    }
}

/// Serves `job`, reporting through `emit`; ends with `SweepDone`.
pub(super) fn serve(
    model: Option<&(MidmModel, ModelInfo)>,
    job: &SweepJob,
    emit: &dyn Fn(WorkerEvent),
) {
    let sweep = job.sweep;
    let done = |complete| emit(WorkerEvent::SweepDone { sweep, complete });
    let prepared = match model {
        None => Err("no model is loaded".to_string()),
        Some((model, info)) => guarded("sweep", || {
            let blank = RgbaImage::new(1, 1); // only an exemplar's own label needs the exemplar
            let label = build(&job.condition, &blank, info.label_nc, info.image_size)?;
            label_tensor(model, &label)
        })
        .map(|condition| (model, info, condition)),
    };
    let (model, info, condition) = match prepared {
        Ok(p) => p,
        Err(error) => {
            // Nothing can be translated: say why for every exemplar.
            for (id, _) in &job.exemplars {
                let result = Err(error.clone());
                emit(WorkerEvent::Swept {
                    sweep,
                    id: *id,
                    result,
                });
            }
            return done(true);
        }
    };
    // A chunk of exemplars at a time, as concurrent one-thread sub-batches (what `midm batch`
    // does): at this model's size one image per core beats one image on all cores.
    let workers = rayon::current_num_threads().max(1);
    for chunk in job.exemplars.chunks(workers) {
        if job.superseded() {
            return done(false);
        }
        let results = guarded("sweep", || {
            translate_chunk(model, info, job, &condition, chunk)
        });
        if job.superseded() {
            return done(false); // a cancelled translation is no result
        }
        for (k, (id, _)) in chunk.iter().enumerate() {
            let result = match &results {
                Ok(images) => Ok(images[k].clone()),
                Err(e) => Err(e.clone()),
            };
            emit(WorkerEvent::Swept {
                sweep,
                id: *id,
                result,
            });
        }
    }
    done(true)
}

/// The final images of the sketch with each exemplar of `chunk`, their labels built from their
/// Canny edges as a run builds them when nothing is traced on the exemplar. Each equals the
/// image of a run of that pair alone with the sweep's seed.
fn translate_chunk(
    model: &MidmModel,
    info: &ModelInfo,
    job: &SweepJob,
    condition: &Tensor,
    chunk: &[(usize, RgbaImage)],
) -> Result<Vec<RgbaImage>> {
    let (mut exemplars, mut labels) = (Vec::new(), Vec::new());
    for (_, image) in chunk {
        let label = plain_exemplar_label(image, job.canny, info.label_nc, info.image_size)?;
        labels.push(label_tensor(model, &label)?);
        let rgb = exemplar_at(image, info.image_size);
        exemplars.push(crate::image::rgb_to_tensor(&rgb, &model.device)?);
    }
    let n = chunk.len();
    let inputs = MidmInputs {
        condition: condition.repeat((n, 1, 1, 1))?,
        exemplar: Tensor::cat(&exemplars, 0)?,
        exemplar_label: Tensor::cat(&labels, 0)?,
    };
    let seeds = vec![job.seed; n];
    let cancelled = || job.superseded();
    let images = translate_seeded_until(model, &inputs, &job.options, &seeds, n, &cancelled)?;
    (0..n)
        .map(|i| tensor_to_image(&images.narrow(0, i, 1)?))
        .collect()
}
