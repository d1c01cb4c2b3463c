//! The exemplar gallery in the real editor UI, driven through egui_kittest on the fixture
//! model of `MIDM_PARITY_DIR`: it lists the shipped exemplars, ranks them for the sketch (one
//! score per entry, shown best first), a click makes a thumbnail the exemplar, and the user
//! folder is remembered.
mod common;

use common::editor::{fixture_model, fresh_app, harness, step_until, stroke, MemStorage};

use std::path::PathBuf;
use std::time::Instant;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use midm::sampling::rank::RankScore;
use midm::ui::{AppArgs, MidmApp};

/// Names the gallery gives the shipped exemplars: `cat`, `drawn/cat`, ...
fn shipped_names() -> Vec<String> {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut names = Vec::new();
    for (dir, prefix) in [(assets.clone(), ""), (assets.join("drawn"), "drawn/")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let file = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(n) = file.strip_suffix("_exemplar.png") {
                names.push(format!("{prefix}{n}"));
            }
        }
    }
    names.sort();
    names
}

/// A fresh editor on the fixture model with its gallery listed.
fn gallery_harness() -> Harness<'static, MidmApp> {
    let mut app = fresh_app();
    app.install_model(fixture_model(), common::parity_dir());
    let mut h = harness(app);
    step_until(&mut h, "the model", |a| a.model_info().is_some());
    step_until(&mut h, "the thumbnails", |a| !a.gallery_busy());
    h
}

fn ranked(app: &MidmApp) -> bool {
    !app.gallery_busy() && app.gallery_entries().iter().all(|(_, s)| s.is_some())
}

#[test]
fn the_gallery_ranks_the_shipped_exemplars_for_the_sketch_and_a_click_uses_one() {
    let mut h = gallery_harness();

    let mut listed: Vec<String> = h
        .state()
        .gallery_entries()
        .into_iter()
        .map(|e| e.0)
        .collect();
    listed.sort();
    assert_eq!(listed, shipped_names());
    assert!(
        h.state().gallery_entries().iter().all(|(_, s)| s.is_none()),
        "nothing to rank without a sketch"
    );

    stroke(&mut h, (10.0, 10.0), (50.0, 40.0));
    let asked = Instant::now();
    step_until(&mut h, "the ranking", ranked);
    eprintln!("ranked {} entries in {:?}", listed.len(), asked.elapsed());
    let entries = h.state().gallery_entries();
    assert_eq!(entries.len(), listed.len(), "one score per entry");
    let scores: Vec<RankScore> = entries.iter().map(|(_, s)| s.unwrap()).collect();
    assert!(
        scores
            .windows(2)
            .all(|w| RankScore::best_first(&w[0], &w[1]).is_le()),
        "not shown best first: {entries:?}"
    );
    for (name, s) in entries.iter().take(5) {
        eprintln!("{name}: {s:?}");
    }

    // The first thumbnail (the best fit) becomes the exemplar when clicked.
    let best = entries[0].0.clone();
    assert!(!h.state().has_exemplar());
    h.get_by_label(&best).click();
    h.step();
    h.step();
    let file = format!("{}_exemplar.png", best.rsplit('/').next().unwrap());
    assert_eq!(h.state().exemplar_name(), Some(file.as_str()));
    assert_eq!(h.state().last_error(), None);

    // The gallery hides and comes back.
    h.get_by_label("»").click();
    for _ in 0..30 {
        h.step(); // the panel's slide animation
    }
    assert!(h.query_by_label(&best).is_none(), "hidden");
    h.get_by_label("«").click();
    for _ in 0..30 {
        h.step();
    }
    assert!(h.query_by_label(&best).is_some(), "shown again");

    // A new stroke ranks again.
    stroke(&mut h, (5.0, 55.0), (55.0, 55.0));
    step_until(&mut h, "the ranking to start", |a| a.gallery_busy());
    step_until(&mut h, "the new ranking", ranked);
}

#[test]
fn a_user_folder_is_listed_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbaImage::from_pixel(40, 30, image::Rgba([200, 30, 30, 255]));
    img.save(dir.path().join("red.png")).unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"not an image").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"skipped").unwrap();

    let mut h = harness(fresh_app());
    h.state_mut()
        .set_gallery_folder(Some(dir.path().to_path_buf()));
    step_until(&mut h, "the thumbnails", |a| !a.gallery_busy());
    let names: Vec<String> = h
        .state()
        .gallery_entries()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names.len(), shipped_names().len() + 1, "{names:?}");
    assert!(names.contains(&"red".to_string()));

    let mut storage = MemStorage::default();
    h.state().save_to(&mut storage);
    let ctx = egui::Context::default();
    let args = AppArgs {
        model: Some(PathBuf::from("/nonexistent-model")),
        ..Default::default()
    };
    let restored = MidmApp::new(&ctx, args, Some(&storage));
    assert_eq!(restored.gallery_folder(), Some(dir.path()));
}

#[test]
fn run_all_translates_the_sketch_with_every_exemplar_and_an_edit_drops_the_results() {
    let mut h = gallery_harness();
    stroke(&mut h, (10.0, 10.0), (50.0, 40.0));
    h.get_by_label("Run all").click();
    let asked = Instant::now();
    step_until(&mut h, "every result", |a| {
        !a.gallery_sweeping() && a.gallery_results().iter().all(|(_, r)| r.is_some())
    });
    let results = h.state().gallery_results();
    eprintln!("{} results in {:?}", results.len(), asked.elapsed());
    assert_eq!(results.len(), shipped_names().len());
    let images: Vec<_> = results
        .iter()
        .map(|(name, r)| match r {
            Some(Ok(img)) => img.clone(),
            other => panic!("{name}: {other:?}"),
        })
        .collect();
    assert!(
        images.iter().any(|i| *i != images[0]),
        "every exemplar gave the same image"
    );
    assert!(h.query_by_label("results").is_some(), "the results toggle");

    // Another stroke: the results were for the old sketch.
    stroke(&mut h, (5.0, 55.0), (55.0, 55.0));
    h.step();
    assert!(h.state().gallery_results().iter().all(|(_, r)| r.is_none()));
    assert!(!h.state().gallery_sweeping());
}

/// A ranking that lands while the pointer is over the gallery does not move the thumbnails from
/// under it (reaching for one right after a stroke); they take the new order once the pointer
/// leaves the gallery.
#[test]
fn the_order_holds_while_the_pointer_is_over_the_gallery() {
    let mut h = gallery_harness();
    let names =
        |a: &MidmApp| -> Vec<String> { a.gallery_entries().into_iter().map(|e| e.0).collect() };
    // A wide flat stroke first, then a closed tall box: shapes the outline ranking tells apart.
    stroke(&mut h, (5.0, 30.0), (60.0, 32.0));
    step_until(&mut h, "the first ranking", ranked);
    let first = names(h.state());
    for (a, b) in [
        ((20.0, 5.0), (20.0, 60.0)),
        ((20.0, 60.0), (40.0, 60.0)),
        ((40.0, 60.0), (40.0, 5.0)),
        ((40.0, 5.0), (20.0, 5.0)),
    ] {
        stroke(&mut h, a, b);
    }
    // The pointer goes to the first thumbnail before the new ranking lands.
    h.get_by_label(&first[0]).hover();
    h.step();
    step_until(&mut h, "the ranking to start", |a| a.gallery_busy());
    step_until(&mut h, "the new ranking", ranked);
    for _ in 0..3 {
        h.step();
    }
    let mut best: Vec<(String, RankScore)> = h
        .state()
        .gallery_entries()
        .into_iter()
        .map(|(n, s)| (n, s.expect("ranked")))
        .collect();
    best.sort_by(|a, b| RankScore::best_first(&a.1, &b.1));
    let best: Vec<String> = best.into_iter().map(|e| e.0).collect();
    assert_ne!(
        best, first,
        "the two drawings must rank the gallery differently"
    );
    assert_eq!(names(h.state()), first, "held while the pointer is over it");
    // Away from the gallery, the new order shows.
    h.hover_at(egui::Pos2::new(5.0, 300.0));
    for _ in 0..3 {
        h.step();
    }
    assert_eq!(
        names(h.state()),
        best,
        "the new ranking once the pointer left"
    );
}
