//! "Run with all gallery exemplars": the current sketch translated with every exemplar of the
//! gallery, one final image per exemplar (`Swept`, as each finishes), then `SweepDone`. A sweep
//! yields to runs like a ranking does: a run submitted (or cancelled) after the sweep was
//! asked, or a newer sweep, stops it within one UNet pass.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use image::{GrayImage, RgbaImage};

use super::serve::{build, exemplar_at, guarded, tensor_to_image};
use super::{LabelInput, ModelInfo, WorkerEvent};
use crate::error::Result;
use crate::image::{empty_parts, CannyParams, Label};
use crate::model::MidmModel;
use crate::sampling::midm::{translate, MidmInputs, Noise, StepEvent, StepSink};
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

/// Stops a translation of the sweep as soon as the sweep is superseded; shows no steps.
struct SweepSink<'a>(&'a SweepJob);

impl StepSink for SweepSink<'_> {
    fn on_event(&mut self, _event: &StepEvent) {}
    fn cancelled(&self) -> bool {
        self.0.superseded()
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
    let condition = match model {
        None => Err("no model is loaded".to_string()),
        Some((model, info)) => guarded("sweep", || {
            let label = build(
                &job.condition,
                &RgbaImage::new(1, 1),
                info.label_nc,
                info.image_size,
            )?;
            label_tensor(model, &label)
        }),
    };
    let (model, info, condition) = match (model, condition) {
        (Some((model, info)), Ok(c)) => (model, info, c),
        (_, Err(error)) => {
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
        (None, Ok(_)) => unreachable!("a condition needs a model"),
    };
    for (id, image) in &job.exemplars {
        if job.superseded() {
            return done(false);
        }
        let result = guarded("sweep", || {
            translate_one(model, info, job, &condition, image)
        });
        if job.superseded() {
            return done(false); // a cancelled translation is no result
        }
        emit(WorkerEvent::Swept {
            sweep,
            id: *id,
            result,
        });
    }
    done(true)
}

/// The final image of the sketch with `image` as exemplar, its label built from its Canny
/// edges as a run builds it when nothing is traced on the exemplar.
fn translate_one(
    model: &MidmModel,
    info: &ModelInfo,
    job: &SweepJob,
    condition: &Tensor,
    image: &RgbaImage,
) -> Result<RgbaImage> {
    let size = info.image_size as u32;
    let label_input = LabelInput::ExemplarEdges {
        canny: job.canny,
        traced: GrayImage::new(size, size),
        parts: empty_parts(size),
    };
    let label = build(&label_input, image, info.label_nc, info.image_size)?;
    let inputs = MidmInputs {
        condition: condition.clone(),
        exemplar: crate::image::rgb_to_tensor(&exemplar_at(image, info.image_size), &model.device)?,
        exemplar_label: label_tensor(model, &label)?,
    };
    let noise = Noise::Seeded(job.seed);
    let out = translate(model, &inputs, &job.options, &noise, &mut SweepSink(job))?;
    tensor_to_image(&out.image)
}

fn label_tensor(model: &MidmModel, l: &Label) -> Result<Tensor> {
    let shape = (1, l.channels, l.size, l.size);
    Ok(Tensor::from_vec(l.data.clone(), shape, &model.device)?)
}
