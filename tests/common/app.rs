//! Helpers shared by the app's tests (egui_kittest, no display, no GPU): the window in a
//! temporary home, waits that run frames until the window shows what is awaited (with a
//! deadline, never a blind sleep), what it shows, and the demo catalogue copied per test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use whaleid::app::{AppOptions, WhaleApp};
use whaleid::catalogue::Catalogue;

pub const DEADLINE: Duration = Duration::from_secs(180);

pub fn app(options: AppOptions) -> Harness<'static, WhaleApp> {
    Harness::builder().with_size(egui::vec2(1280.0, 800.0)).build_eframe(move |cc| WhaleApp::new(&cc.egui_ctx, options))
}

/// Runs frames until `done` holds for the window, failing after `DEADLINE`.
pub fn run_until(h: &mut Harness<'_, WhaleApp>, what: &str, done: impl Fn(&Harness<'_, WhaleApp>) -> bool) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h) {
            h.step();
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn settled(h: &Harness<'_, WhaleApp>) -> bool {
    h.state().is_settled()
}

pub fn shows(h: &Harness<'_, WhaleApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Whether a notice containing `text` was shown, even if a later one has replaced it.
pub fn noticed(h: &Harness<'_, WhaleApp>, text: &str) -> bool {
    h.state().state().notices.iter().any(|n| n.text.contains(text))
}

/// The demo catalogue, made once for the tests that need one, copied for each so none sees
/// another's edits.
pub fn demo_copy(into: &Path) -> PathBuf {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    let demo = DEMO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("demo").join("demo.whaleid");
        whaleid::jobs::demo::ensure_demo(&path, &whaleid::base::progress::Silent).unwrap();
        path
    });
    let from = demo.parent().unwrap();
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = into.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    into.join("demo.whaleid")
}

/// The window with the tiny random embedder, on `panel`.
pub fn identifying_app(home: &Path, catalogue: &Path, panel: &str) -> Harness<'static, WhaleApp> {
    let mut options = AppOptions::new(home.to_path_buf(), Some(catalogue.to_path_buf()));
    options.panel = Some(panel.into());
    options.embedding = whaleid::app::tiny_random_models().unwrap();
    app(options)
}

/// Takes the label off one crop, as if it had come back from the field unidentified.
pub fn unidentify(catalogue: &Path, photo: &str) -> whaleid::base::ids::AnnotationId {
    let mut cat = Catalogue::open(catalogue).unwrap();
    let photo = cat.photo_id_by_path(&format!("photos/images/{photo}")).unwrap().unwrap();
    let annotation = cat.annotations_of_photo(photo).unwrap()[0].id;
    cat.edit("test: forget the label", |e| e.unidentify(annotation)).unwrap();
    annotation
}

pub fn label_of(h: &Harness<'_, WhaleApp>, starting: &str) -> String {
    use egui_kittest::kittest::NodeT;
    let node = h.get_by_label_contains(starting).accesskit_node();
    // A plain label keeps its text in the value.
    node.label().or_else(|| node.value()).unwrap_or_default()
}
