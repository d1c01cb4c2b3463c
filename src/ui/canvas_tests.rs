use super::*;

fn painted(img: &GrayImage) -> usize {
    img.as_raw().iter().filter(|v| **v != 0).count()
}

fn full(size: u32) -> GrayImage {
    GrayImage::from_pixel(size, size, Luma([255]))
}

#[test]
fn strokes_undo_redo_and_persistence() {
    let mut c = Canvas::new(16);
    c.begin_stroke(0, Tool::Brush, 0.5, (2.0, 2.0));
    c.continue_stroke(0, Tool::Brush, 0.5, (10.0, 2.0));
    c.end_stroke();
    assert_eq!(painted(c.layer(0)), 9);
    let after = c.layers().to_vec();
    assert!(c.undo());
    assert!(c.is_empty());
    assert!(c.redo());
    assert_eq!(c.layers(), &after[..]);
    c.line(3, Tool::Brush, 2.0, (0.0, 8.0), (15.0, 8.0));
    let back = Canvas::from_saved(&c.to_saved()).unwrap();
    assert_eq!(back.layers(), c.layers());
    c.begin_stroke(0, Tool::Eraser, 3.0, (5.0, 2.0));
    assert!(c.layer(0).get_pixel(5, 2).0[0] == 0);
}

#[test]
fn a_stroke_is_a_binary_line_a_whole_number_of_model_pixels_wide() {
    // brush size 1..6 (radius = size / 2): disks of radius round(radius - 0.5)
    for (size, width) in [(1.0, 1), (2.0, 3), (3.0, 3), (4.0, 5), (5.0, 5), (6.0, 7)] {
        let mut c = Canvas::new(32);
        c.line(0, Tool::Brush, size / 2.0, (4.3, 10.6), (28.7, 10.6));
        let column: Vec<u8> = (0..32).map(|y| c.layer(0).get_pixel(16, y).0[0]).collect();
        assert!(column.iter().all(|v| *v == 0 || *v == 255), "binary");
        let ones: Vec<u32> = (0..32).filter(|y| column[*y as usize] == 255).collect();
        assert_eq!(ones.len(), width, "brush size {size}: {ones:?}");
        // centred on the pixel holding y = 10.6
        assert_eq!(ones[width / 2], 10, "brush size {size}: {ones:?}");
    }
}

#[test]
fn points_keep_sub_pixel_precision() {
    let mut c = Canvas::new(64);
    c.begin_stroke(0, Tool::Brush, 0.25, (3.75, 5.25));
    c.continue_stroke(0, Tool::Brush, 0.25, (20.6, 5.9));
    c.end_stroke();
    let Op::Stroke(s) = &c.ops()[0] else {
        panic!("not a stroke")
    };
    assert_eq!(s.points, [(3.75, 5.25), (20.6, 5.9)]);
    // the model pixel is the one whose centre is nearest
    assert_eq!(c.layer(0).get_pixel(3, 5).0[0], 255);
    assert_eq!(c.layer(0).get_pixel(20, 5).0[0], 255);
    // at twice the size the fractions land on their own pixels (rounded first: 6 and 10)
    let big = c.resized(128);
    assert_eq!(big.layer(0).get_pixel(7, 10).0[0], 255);
    assert_eq!(big.layer(0).get_pixel(6, 10).0[0], 0);
    // points left of the canvas belong to pixel -1, not 0
    let mut c = Canvas::new(8);
    c.line(0, Tool::Brush, 0.5, (-0.5, 2.0), (-0.5, 5.0));
    assert!(c.is_empty());
}

#[test]
fn the_eraser_erases_the_base_and_earlier_strokes_of_its_layer_only() {
    let mut c = Canvas::new(16);
    c.set_layer(0, full(16));
    c.line(2, Tool::Brush, 1.5, (0.5, 8.5), (15.5, 8.5));
    c.line(0, Tool::Eraser, 1.5, (8.5, 0.5), (8.5, 15.5));
    c.line(2, Tool::Eraser, 0.5, (4.5, 8.5), (4.5, 8.5));
    assert_eq!(c.layer(0).get_pixel(8, 3).0[0], 0, "base erased");
    assert_eq!(c.layer(0).get_pixel(10, 3).0[0], 255);
    assert_eq!(c.layer(2).get_pixel(8, 8).0[0], 255, "other layer kept");
    assert_eq!(c.layer(2).get_pixel(4, 8).0[0], 0, "stroke erased");
    // a later brush stroke paints over the erased line again
    c.line(0, Tool::Brush, 0.5, (0.5, 3.5), (15.5, 3.5));
    assert_eq!(c.layer(0).get_pixel(8, 3).0[0], 255);
    let back = Canvas::from_saved(&c.to_saved()).unwrap();
    assert_eq!(back.layers(), c.layers());
}

#[test]
fn each_stroke_line_clear_and_loaded_layer_is_one_undo_step() {
    let mut c = Canvas::new(16);
    let mut states = vec![c.layers().to_vec()];
    c.begin_stroke(1, Tool::Brush, 1.0, (1.5, 1.5));
    for x in 2..12 {
        c.continue_stroke(1, Tool::Brush, 1.0, (x as f32 + 0.3, 1.5 + x as f32 * 0.4));
    }
    assert!(c.drawing());
    c.end_stroke();
    assert!(!c.drawing());
    states.push(c.layers().to_vec());
    c.line(0, Tool::Brush, 0.5, (0.0, 12.0), (15.0, 14.0));
    states.push(c.layers().to_vec());
    c.set_layer(0, full(16));
    states.push(c.layers().to_vec());
    c.clear();
    assert!(c.is_empty());
    states.push(c.layers().to_vec());
    for want in states.iter().rev().skip(1) {
        assert!(c.undo());
        assert_eq!(c.layers(), &want[..]);
    }
    assert!(!c.undo() && !c.can_undo());
    for want in &states[1..] {
        assert!(c.redo());
        assert_eq!(c.layers(), &want[..]);
    }
    assert!(!c.can_redo());
    // a new step drops what could be redone
    c.undo();
    c.line(0, Tool::Brush, 0.5, (0.0, 0.0), (3.0, 0.0));
    assert!(!c.can_redo());
}

#[test]
fn every_change_bumps_the_version() {
    let mut c = Canvas::new(16);
    let mut v = c.version();
    let mut bumped = |c: &Canvas| {
        let b = c.version() > v;
        v = c.version();
        b
    };
    c.begin_stroke(0, Tool::Brush, 1.0, (1.0, 1.0));
    assert!(bumped(&c));
    c.continue_stroke(0, Tool::Brush, 1.0, (5.0, 1.0));
    assert!(bumped(&c));
    c.end_stroke();
    c.undo();
    assert!(bumped(&c));
    c.redo();
    assert!(bumped(&c));
    c.clear();
    assert!(bumped(&c));
}

#[test]
fn incremental_rendering_matches_a_full_render_and_undo_depth_is_bounded() {
    let mut c = Canvas::new(32);
    for i in 0..(MAX_UNDO + 80) {
        let (x, y) = ((i * 7 % 31) as f32 + 0.4, (i * 13 % 29) as f32 + 0.7);
        let tool = if i % 5 == 4 {
            Tool::Eraser
        } else {
            Tool::Brush
        };
        c.begin_stroke(i % 3, tool, 1.0 + (i % 3) as f32, (x, y));
        c.continue_stroke(i % 3, tool, 1.0, (x + 3.3, y - 2.1));
        c.continue_stroke(i % 3, tool, 1.0, (x + 5.0, y + 1.2));
        c.end_stroke();
        if i == 50 {
            c.clear();
        }
    }
    let incremental = c.layers().to_vec();
    let g = c.generation();
    c.rerender();
    assert_eq!(c.layers(), &incremental[..]);
    assert_ne!(c.generation(), g);
    let mut undone = 0;
    while c.undo() {
        undone += 1;
    }
    assert_eq!(undone, MAX_UNDO);
    // the clear was beyond the undo depth: what it hid was dropped
    assert!(c.ops().len() < MAX_UNDO + 80);
}

#[test]
fn resizing_scales_strokes_and_resamples_the_base() {
    let mut c = Canvas::new(16);
    let mut base = GrayImage::new(16, 16);
    base.put_pixel(3, 4, Luma([255]));
    c.set_layer(1, base);
    c.line(0, Tool::Brush, 1.5, (2.25, 8.5), (12.5, 8.5));
    let big = c.resized(32);
    assert_eq!(big.size(), 32);
    assert!(big.version() > c.version());
    let Some(Op::Stroke(s)) = big.ops().last() else {
        panic!("no stroke")
    };
    assert_eq!(
        (s.radius, s.points.clone()),
        (3.0, vec![(4.5, 17.0), (25.0, 17.0)])
    );
    let b = big.layer(1);
    let on: Vec<(u32, u32)> = (0..32 * 32)
        .map(|i| (i % 32, i / 32))
        .filter(|(x, y)| b.get_pixel(*x, *y).0[0] != 0)
        .collect();
    assert_eq!(on, [(6, 8), (7, 8), (6, 9), (7, 9)]);
    // radius 3 at 32 px: 2*round(2.5)+1 = 7 pixels wide
    let col = (0..32).filter(|y| big.layer(0).get_pixel(15, *y).0[0] != 0);
    assert_eq!(col.count(), 7);
    assert!(!big.can_undo());
}

#[test]
fn saved_canvases_round_trip_and_the_older_form_still_loads() {
    let mut c = Canvas::new(16);
    let mut base = GrayImage::new(16, 16);
    base.put_pixel(1, 1, Luma([255]));
    c.set_layer(0, base);
    c.line(0, Tool::Brush, 1.0, (2.3, 3.7), (14.1, 9.2));
    c.line(4, Tool::Brush, 2.0, (5.5, 5.5), (5.5, 12.5));
    c.line(0, Tool::Eraser, 1.0, (8.0, 0.0), (8.0, 15.0));
    let json = serde_json::to_string(&c.to_saved()).unwrap();
    let saved: SavedCanvas = serde_json::from_str(&json).unwrap();
    let back = Canvas::from_saved(&saved).unwrap();
    assert_eq!(back.layers(), c.layers());
    assert_eq!(back.visible().1, c.visible().1, "strokes kept as vectors");
    assert!(!back.can_undo());

    // the older form: size and layers only; the layers become the base
    let layers: Vec<String> = c.layers().iter().map(pack).collect();
    let old = serde_json::json!({ "size": 16, "layers": layers }).to_string();
    let old: SavedCanvas = serde_json::from_str(&old).unwrap();
    let back = Canvas::from_saved(&old).unwrap();
    assert_eq!(back.layers(), c.layers());
    assert!(back.visible().1.is_empty());

    // malformed data is refused
    let mut bad = c.to_saved();
    bad.strokes[0].layer = 99;
    assert!(Canvas::from_saved(&bad).is_none());
    let mut bad = c.to_saved();
    bad.layers[0].pop();
    bad.base = None;
    assert!(Canvas::from_saved(&bad).is_none());
}
