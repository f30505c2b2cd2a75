//! Stories of reviewing a detector's proposals in the app: boxes that arrive unreviewed with a
//! score. Each is driven as a biologist drives it (keys, clicks and sliders found by name) and
//! checked on screen and in the catalogue read back from disk. The proposals are written into a
//! copy of the demo catalogue before the window opens, as the detector would write them.

mod common;

use std::path::Path;

use common::app::{app, demo_copy, identifying_app, noticed, run_until, settled, shows};
use eframe::egui;
use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use whaleid::app::settings::Settings;
use whaleid::app::{AppOptions, WhaleApp};
use whaleid::base::ids::{AnnotationId, PhotoId};
use whaleid::base::vocabulary::{BoxPx, Part, Side, Source, Status};
use whaleid::catalogue::{Catalogue, NewAnnotation};

fn photo_id(cat: &Catalogue, file: &str) -> PhotoId {
    cat.photo_id_by_path(&format!("photos/images/{file}")).unwrap().unwrap()
}

/// A detector's proposal on a demo photo (512 x 384 pixels), unreviewed, with its score.
fn propose(catalogue: &Path, file: &str, score: f64) -> AnnotationId {
    let mut cat = Catalogue::open(catalogue).unwrap();
    let photo = photo_id(&cat, file);
    // Each proposal of a photo somewhere else, so none hides another.
    let x = 20.0 + 40.0 * cat.annotations_of_photo(photo).unwrap().len() as f64;
    cat.add_annotation(&NewAnnotation {
        photo_id: photo,
        bbox: Some(BoxPx::new(x, 40.0, 200.0, 150.0)),
        part: Part::Fluke,
        side: Side::Unknown,
        source: Source::Detector,
        status: Status::Unreviewed,
        species: Some("humpback_whale".into()),
        score: Some(score),
    })
    .unwrap()
}

fn status(catalogue: &Path, annotation: AnnotationId) -> Status {
    Catalogue::open(catalogue).unwrap().annotation(annotation).unwrap().unwrap().status
}

fn annotate_app(home: &Path, catalogue: &Path) -> Harness<'static, WhaleApp> {
    let mut options = AppOptions::new(home.to_path_buf(), Some(catalogue.to_path_buf()));
    options.panel = Some("annotate".into());
    app(options)
}

/// Moves Annotate's score slider as a screen reader (or a typed value) would.
fn set_minimum_score(h: &mut Harness<'_, WhaleApp>, value: f64) {
    h.get_by_role_and_label(Role::Slider, "minimum score").set_value_accesskit(value);
    run_until(h, "the threshold to be taken", |h| (h.state().state().settings.proposal_threshold - value).abs() < 1e-9);
}

fn saved_settings(home: &Path) -> Settings {
    let (settings, error) = Settings::load(home);
    assert!(error.is_none(), "{error:?}");
    settings
}

#[test]
fn a_proposal_shows_its_score_and_the_slider_hides_the_doubtful_one_and_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    propose(&catalogue, "whale_0000_00.jpg", 0.83);
    propose(&catalogue, "whale_0000_00.jpg", 0.35);
    let home = tempfile::tempdir().unwrap();
    let mut h = annotate_app(home.path(), &catalogue);
    run_until(&mut h, "the first photo's boxes", |h| settled(h) && shows(h, "Box 1: fluke · verified"));
    assert!(shows(&h, "Box 2: fluke · unreviewed · unidentified · detector 0.83"));
    assert!(shows(&h, "Box 3: fluke · unreviewed · unidentified · detector 0.35"));
    assert!(shows(&h, "Verify all ≥ 0.00"));

    set_minimum_score(&mut h, 0.5);
    run_until(&mut h, "the doubtful proposal to be hidden", |h| !shows(h, "detector 0.35"));
    assert!(shows(&h, "Box 2: fluke · unreviewed · unidentified · detector 0.83"), "the sure one stays");
    assert!(shows(&h, "1 proposal(s) scoring under 0.50 hidden"), "nothing disappears without a word");
    assert!(shows(&h, "Verify all ≥ 0.50"), "the bulk action says the slider's value");
    h.check_accessibility();

    // The threshold is one of the window's settings: written once the change is finished.
    run_until(&mut h, "the settings to be written", |h| {
        settled(h) && saved_settings(home.path()).proposal_threshold == 0.5
    });
    drop(h);
    let mut h = annotate_app(home.path(), &catalogue);
    run_until(&mut h, "the first photo again", |h| settled(h) && shows(h, "Box 1: fluke · verified"));
    assert!(shows(&h, "detector 0.83"));
    assert!(!shows(&h, "detector 0.35"), "the next start keeps hiding it");
}

#[test]
fn enter_verifies_one_proposal_delete_rejects_another_and_both_stay_so_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let sure = propose(&catalogue, "whale_0000_00.jpg", 0.83);
    let wrong = propose(&catalogue, "whale_0000_00.jpg", 0.35);
    let home = tempfile::tempdir().unwrap();
    let mut h = annotate_app(home.path(), &catalogue);
    run_until(&mut h, "the first photo's boxes", |h| settled(h) && shows(h, "detector 0.35"));

    // The photo opens on its first proposal; Enter verifies it and goes on to the next one.
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the verification", |h| {
        settled(h) && shows(h, "Box 2: fluke · verified · unidentified · detector 0.83")
    });
    h.key_press(egui::Key::Delete);
    run_until(&mut h, "the rejection", |h| {
        settled(h) && h.state().state().save.last.as_deref() == Some("rejected 1 box")
    });
    assert_eq!(status(&catalogue, sure), Status::Verified);
    assert_eq!(status(&catalogue, wrong), Status::Rejected);
    drop(h);

    // A new window on the same file shows both decisions.
    let mut h = annotate_app(home.path(), &catalogue);
    run_until(&mut h, "the first photo again", |h| settled(h) && shows(h, "Box 1: fluke · verified"));
    assert!(shows(&h, "Box 2: fluke · verified · unidentified · detector 0.83"));
    assert!(shows(&h, "Box 3: fluke · rejected · unidentified · detector 0.35"));
}

#[test]
fn verify_all_at_or_above_the_threshold_verifies_exactly_those_and_one_undo_takes_them_all_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let proposals = [
        ("whale_0000_00.jpg", 0.83),
        ("whale_0000_00.jpg", 0.35),
        ("whale_0001_02.jpg", 0.60),
        ("whale_0003_01.jpg", 0.59),
        ("whale_0005_04.jpg", 0.95),
    ]
    .map(|(file, score)| (propose(&catalogue, file, score), score));
    let actions = Catalogue::open(&catalogue).unwrap().history(100).unwrap().len();
    let home = tempfile::tempdir().unwrap();
    let mut h = annotate_app(home.path(), &catalogue);
    run_until(&mut h, "the first photo's boxes", |h| settled(h) && shows(h, "detector 0.83"));
    for (id, _) in proposals {
        assert_eq!(status(&catalogue, id), Status::Unreviewed, "nothing is accepted before it is asked for");
    }

    set_minimum_score(&mut h, 0.6);
    h.get_by_role_and_label(Role::Button, "Verify all ≥ 0.60").click();
    run_until(&mut h, "the bulk verification", |h| {
        settled(h) && noticed(h, "Verified 3 proposal(s) scoring 0.60 or more on 3 photo(s)")
    });
    for (id, score) in proposals {
        let expected = if score >= 0.6 { Status::Verified } else { Status::Unreviewed };
        assert_eq!(status(&catalogue, id), expected, "the proposal scoring {score}");
    }
    assert_eq!(Catalogue::open(&catalogue).unwrap().history(100).unwrap().len(), actions + 1, "one edit");
    assert!(shows(&h, "Box 2: fluke · verified · unidentified · detector 0.83"));

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && noticed(h, "Undid: verified the proposals scoring 0.60 or more"));
    for (id, score) in proposals {
        assert_eq!(status(&catalogue, id), Status::Unreviewed, "the proposal scoring {score} after one undo");
    }
    run_until(&mut h, "the photo to follow", |h| shows(h, "Box 2: fluke · unreviewed · unidentified · detector 0.83"));
}

#[test]
fn doubtful_first_puts_the_photo_with_the_lowest_proposal_score_first_and_u_follows_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    propose(&catalogue, "whale_0004_02.jpg", 0.72);
    propose(&catalogue, "whale_0002_05.jpg", 0.15);
    propose(&catalogue, "whale_0007_01.jpg", 0.40);
    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(catalogue.clone())));
    run_until(&mut h, "the library", |h| settled(h) && h.state().state().queue.len() == 180);

    h.get_by_role_and_label(Role::ComboBox, "Sort").click();
    run_until(&mut h, "the orders", |h| h.query_by_label("doubtful proposals first (lowest score)").is_some());
    h.get_by_label("doubtful proposals first (lowest score)").click();
    let order = {
        let cat = Catalogue::open(&catalogue).unwrap();
        ["whale_0002_05.jpg", "whale_0007_01.jpg", "whale_0004_02.jpg"].map(|f| photo_id(&cat, f))
    };
    run_until(&mut h, "the doubtful photos first", |h| h.state().state().queue.starts_with(&order));
    assert_eq!(h.state().state().queue.len(), 180, "the others follow");

    // Annotate walks the same queue: it opens on the most doubtful photo, and U goes on in order.
    h.get_by_label("Annotate").click();
    run_until(&mut h, "the most doubtful photo", |h| shows(h, "1 of 180 · photos/images/whale_0002_05.jpg"));
    run_until(&mut h, "its proposal", |h| shows(h, "detector 0.15"));
    h.key_press(egui::Key::U);
    run_until(&mut h, "the next doubtful photo", |h| shows(h, "2 of 180 · photos/images/whale_0007_01.jpg"));
    h.key_press(egui::Key::U);
    run_until(&mut h, "the last doubtful photo", |h| shows(h, "3 of 180 · photos/images/whale_0004_02.jpg"));
}

#[test]
fn identify_leaves_out_a_photo_whose_only_box_is_a_proposal_until_the_filter_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    {
        // The detector found the fluke of a photo nobody had boxed: its one box is a proposal.
        let mut cat = Catalogue::open(&catalogue).unwrap();
        let photo = photo_id(&cat, "whale_0003_05.jpg");
        for a in cat.annotations_of_photo(photo).unwrap() {
            cat.delete_annotation(a.id).unwrap();
        }
    }
    propose(&catalogue, "whale_0003_05.jpg", 0.70);
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    let proposal_shown = |h: &Harness<'_, WhaleApp>| shows(h, "whale_0003_05.jpg · fluke");
    run_until(&mut h, "the first crop to identify", |h| {
        settled(h) && shows(h, "Candidate 1: ") && shows(h, "crop(s) to identify")
    });
    assert!(shows(&h, "179 crop(s) to identify"), "the 179 boxed photos, not the proposal");
    assert!(!proposal_shown(&h), "an unidentified crop would come first, were it offered");

    h.get_by_label_contains("include unreviewed proposals (scoring 0.00 or more)").click();
    run_until(&mut h, "the proposal, unidentified, at the head of the queue", |h| {
        proposal_shown(h) && shows(h, "180 crop(s) to identify")
    });
    assert!(shows(&h, "This crop is an unreviewed detector proposal scoring 0.70"));
    run_until(&mut h, "the filter to be written", |h| settled(h) && saved_settings(home.path()).identify_proposals);

    h.get_by_label_contains("include unreviewed proposals").click();
    run_until(&mut h, "the proposal to leave the queue", |h| !proposal_shown(h) && shows(h, "179 crop(s) to identify"));
}
