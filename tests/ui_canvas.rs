//! The drawing canvas on screen, driven through egui_kittest and rendered with wgpu (lavapipe
//! here): strokes are smooth at any zoom (anti-aliased, no model-pixel staircase) while the
//! model input stays a binary model-size raster; erasing shows; drawing stays fast on a canvas
//! with hundreds of strokes.
#![cfg(feature = "gui")]
mod common;

use common::editor::{fresh_app, harness};

use egui::{Pos2, Rect};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use image::RgbaImage;
use midm::ui::canvas::Tool;
use midm::ui::MidmApp;

fn set_zoom(h: &mut Harness<'static, MidmApp>, zoom: f64) {
    let slider = egui::accesskit::Role::Slider;
    h.get_by_role_and_label(slider, "zoom")
        .set_value_accesskit(zoom);
    h.run_steps(2);
}

/// Screen position of canvas point `p` (model pixels).
fn at(h: &Harness<'static, MidmApp>, p: (f32, f32)) -> Pos2 {
    let rect = h.state().canvas_rect().expect("canvas drawn");
    let zoom = rect.width() / h.state().canvas().size() as f32;
    Pos2::new(rect.min.x + p.0 * zoom, rect.min.y + p.1 * zoom)
}

/// Drag along the straight path from `a` to `b` (model pixels) in `n` moves; returns the
/// app's frame time (ms) of each frame while drawing.
fn drag(h: &mut Harness<'static, MidmApp>, a: (f32, f32), b: (f32, f32), n: usize) -> Vec<f32> {
    let mut ms = Vec::new();
    h.hover_at(at(h, a));
    h.step();
    h.drag_at(at(h, a));
    h.step();
    for i in 1..=n {
        let t = i as f32 / n as f32;
        h.hover_at(at(h, (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)));
        h.step();
        ms.push(h.state().last_frame_ms());
    }
    h.drop_at(at(h, b));
    h.step();
    // the hover ring off the canvas
    h.hover_at(Pos2::new(1390.0, 990.0));
    h.step();
    ms
}

/// The ink (darkness 0..1 summed) centre of each screen column of the canvas between model x
/// `x0` and `x1`, with the partly inked pixels counted.
fn column_profile(img: &RgbaImage, rect: Rect, x0: f32, x1: f32, zoom: f32) -> (Vec<f32>, usize) {
    let (mut centres, mut partial) = (Vec::new(), 0);
    let sx0 = (rect.min.x + x0 * zoom) as u32;
    let sx1 = (rect.min.x + x1 * zoom) as u32;
    for x in sx0..sx1 {
        let (mut ink, mut moment) = (0.0, 0.0);
        for y in rect.min.y as u32 + 1..rect.max.y as u32 - 1 {
            let v = img.get_pixel(x, y).0[0];
            let d = 1.0 - v as f32 / 255.0;
            if (20..=235).contains(&v) {
                partial += 1;
            }
            ink += d;
            moment += d * y as f32;
        }
        centres.push(moment / ink.max(1e-6));
    }
    (centres, partial)
}

/// The largest deviation of successive column centres from the line's slope (screen pixels).
fn worst_step(centres: &[f32], slope: f32) -> f32 {
    let steps = centres.windows(2).map(|w| (w[1] - w[0] - slope).abs());
    steps.fold(0.0, f32::max)
}

#[test]
fn a_stroke_is_smooth_on_screen_at_any_zoom_while_the_model_input_stays_binary() {
    let mut h = harness(fresh_app());
    h.step();
    set_zoom(&mut h, 6.0);
    let rect = h.state().canvas_rect().unwrap();
    let zoom = rect.width() / h.state().canvas().size() as f32;
    assert_eq!(zoom, 6.0);
    let (a, b) = ((8.3, 12.1), (54.7, 33.4));
    drag(&mut h, a, b, 40);
    let slope = (b.1 - a.1) / (b.0 - a.0);

    let shot = h.render().expect("rendering the UI");
    let (centres, partial) = column_profile(&shot, rect, 15.0, 48.0, zoom);
    let smooth = worst_step(&centres, slope);
    // Anti-aliased: soft edge pixels along both edges (a staircase of model pixels has none).
    assert!(
        partial >= centres.len(),
        "{partial} soft pixels in {} columns",
        centres.len()
    );
    // No model-pixel staircase: the line's centre moves by the slope from column to column.
    assert!(smooth < 0.5, "steps of {smooth} screen pixels: {centres:?}");

    // The model input is binary, and shown as such on request: there the staircase shows.
    let canvas = h.state().canvas();
    assert!(canvas
        .layers()
        .iter()
        .all(|l| l.iter().all(|v| *v == 0 || *v == 255)));
    let label = canvas.label(1).unwrap();
    assert!(label.data.iter().all(|v| *v == 0.0 || *v == 1.0));
    assert!(label.data.iter().filter(|v| **v == 1.0).count() > 100);
    h.get_by_label("show model input").click();
    h.run_steps(2);
    let shot = h.render().unwrap();
    let (centres, partial) = column_profile(&shot, rect, 15.0, 48.0, zoom);
    let blocky = worst_step(&centres, slope);
    assert!(
        blocky >= 2.0,
        "the model input shows no model-pixel steps ({blocky})"
    );
    assert!(
        partial < centres.len(),
        "{partial} soft pixels in the model input"
    );
}

#[test]
fn the_eraser_shows_on_screen() {
    let mut h = harness(fresh_app());
    h.step();
    set_zoom(&mut h, 6.0);
    drag(&mut h, (5.0, 20.5), (55.0, 20.5), 20);
    h.get_by_label("Eraser").click();
    h.step();
    drag(&mut h, (30.5, 5.0), (30.5, 40.0), 20);
    let shot = h.render().unwrap();
    let px = |p: Pos2| shot.get_pixel(p.x as u32, p.y as u32).0[0];
    assert!(px(at(&h, (15.0, 20.5))) < 40, "the stroke is drawn");
    assert!(px(at(&h, (30.5, 20.5))) > 215, "the eraser shows");
    assert_eq!(h.state().canvas().layer(0).get_pixel(30, 20).0[0], 0);
    assert_eq!(h.state().canvas().layer(0).get_pixel(15, 20).0[0], 255);
}

#[test]
fn drawing_on_a_canvas_of_hundreds_of_strokes_keeps_frames_short() {
    let mut h = harness(fresh_app());
    h.step();
    set_zoom(&mut h, 8.0);
    let c = h.state_mut().canvas_mut();
    for i in 0..400 {
        let (x, y) = ((i * 7 % 60) as f32 + 0.3, (i * 11 % 60) as f32 + 0.6);
        let tool = if i % 7 == 6 {
            Tool::Eraser
        } else {
            Tool::Brush
        };
        c.begin_stroke(0, tool, 1.5, (x, y));
        for j in 1..30 {
            let t = j as f32 * 0.3;
            c.continue_stroke(0, tool, 1.5, (x + t, y + (t * 0.7).sin() * 3.0));
        }
        c.end_stroke();
    }
    h.step();
    let full = h.state().last_frame_ms();
    let ms = drag(&mut h, (3.2, 50.1), (60.4, 8.9), 60);
    let worst = ms.iter().copied().fold(0.0, f32::max);
    let mean = ms.iter().sum::<f32>() / ms.len() as f32;
    eprintln!(
        "canvas frame times over 400 strokes: drawing mean {mean:.2} ms, worst {worst:.2} ms; \
         full display render {full:.1} ms"
    );
    h.state_mut().canvas_mut().undo();
    h.step();
    eprintln!(
        "undo (from the latest display snapshot): {:.1} ms",
        h.state().last_frame_ms()
    );
    // The target is 16 ms (measured ~1 ms mean here); the bound leaves room for a loaded
    // machine while still catching a full re-render per mouse move (over 100 ms here).
    assert!(worst < 40.0, "a frame took {worst} ms while drawing");
}
