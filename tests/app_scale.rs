//! The library at the size of a long-running photo-ID project: 100,000 photos. Its own test
//! binary, so that its frame times are not measured while other tests decode photos.

use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use whaleid::app::{AppOptions, WhaleApp};
use whaleid::base::vocabulary::BoxPx;
use whaleid::catalogue::Catalogue;
use whaleid::catalogue::synthetic::SyntheticCatalogue;

const PHOTOS: usize = 100_000;

/// 100,000 photos (files need not exist: their tiles show a placeholder), 2,000 individuals,
/// one box per photo, a third of them unreviewed.
fn big_catalogue(path: &std::path::Path) {
    let mut cat = Catalogue::create(path).unwrap();
    cat.fill_synthetic(&SyntheticCatalogue::one_box_per_photo(PHOTOS, 2000, BoxPx::new(10.0, 10.0, 100.0, 50.0)))
        .unwrap();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn a_library_of_100000_photos_lays_out_only_what_is_on_screen_and_scrolls_smoothly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.whaleid");
    big_catalogue(&path);
    let home = tempfile::tempdir().unwrap();
    let options = AppOptions::new(home.path().to_path_buf(), Some(path));
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_eframe(move |cc| WhaleApp::new(&cc.egui_ctx, options));
    let start = Instant::now();
    while !(h.state().is_settled() && h.state().state().rows.len() == PHOTOS) {
        assert!(start.elapsed() < Duration::from_secs(120), "the library did not open");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
    let tiles = |h: &Harness<'_, WhaleApp>| h.query_all_by_label_contains(".jpg").count();
    assert!(h.query_by_label_contains("p000000.jpg").is_some());
    assert!(tiles(&h) < 200, "only the rows on screen are laid out, not {}", tiles(&h));

    // Wheel down a long way, timing every frame.
    let mut frames = Vec::new();
    for _ in 0..60 {
        h.hover_at(egui::pos2(700.0, 400.0));
        h.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, -5000.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
            modifiers: egui::Modifiers::NONE,
        });
        let t = Instant::now();
        h.step();
        frames.push(t.elapsed());
    }
    assert!(h.query_by_label_contains("p000000.jpg").is_none(), "the grid scrolled");
    assert!(tiles(&h) > 0 && tiles(&h) < 200);
    // A debug build on two cores draws these frames in a few milliseconds; 50 ms means a frame
    // started doing work proportional to the catalogue.
    let m = median(frames);
    assert!(m < Duration::from_millis(50), "median frame {m:?} while scrolling 100,000 photos");
}
