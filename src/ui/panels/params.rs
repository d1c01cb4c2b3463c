//! The sampler parameters (seed, steps, temperature, mask threshold, mask, refinement).
use crate::params::Params;

/// Edits the shared [`Params`] (which the model and exemplar panels also edit: device,
/// precision, Canny), so it keeps no state of its own.
pub fn ui(ui: &mut egui::Ui, params: &mut Params) {
    ui.heading("Parameters");
    ui.horizontal(|ui| {
        let l = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut params.seed))
            .labelled_by(l.id);
        if ui.button("New seed").clicked() {
            params.seed = rand::random::<u32>() as u64;
        }
    });
    ui.horizontal(|ui| {
        let l = ui.label("DDIM steps");
        ui.add(egui::DragValue::new(&mut params.ddim_steps).range(2..=1000))
            .labelled_by(l.id);
    });
    ui.horizontal(|ui| {
        let l = ui.label("Interleaved steps");
        let max = params.ddim_steps.saturating_sub(1).max(1);
        ui.add(egui::DragValue::new(&mut params.interleaved_steps).range(1..=max))
            .labelled_by(l.id);
    });
    ui.add(
        egui::Slider::new(&mut params.temperature, 0.0005..=0.1)
            .logarithmic(true)
            .text("Temperature"),
    );
    ui.add(egui::Slider::new(&mut params.fb_threshold, 0.0..=2.0).text("Mask threshold"));
    ui.checkbox(&mut params.use_mask, "Confidence mask");
    ui.checkbox(&mut params.refine, "Refinement (20 DDIM steps)");
    if ui.button("Official defaults").clicked() {
        // The seed and this machine's settings stay.
        *params = Params {
            seed: params.seed,
            device: params.device,
            precision: params.precision,
            canny: params.canny,
            ..Params::default()
        };
    }
}
