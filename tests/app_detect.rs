//! Stories of a detector's proposals in the app: boxes that arrive unreviewed with a score.
//! Each is driven as a biologist drives it (keys, clicks and sliders found by name) and
//! checked on screen and in the catalogue read back from disk. In the review stories the
//! proposals are written into a copy of the demo catalogue before the window opens, as the
//! detector would write them; in the detection stories the window's own jobs find them, with
//! a tiny random backbone (its boxes mean nothing, but they are the detector's).

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
use whaleid::jobs::detect::{ACTIVE_DETECTOR_SETTING, RETRAIN_AFTER_NEW_BOXES};

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

/// Six synthetic field photos (512 x 384) with their labels and YOLO boxes under `dir`.
fn field_trip(dir: &Path, individuals: usize, seed: u64) -> std::path::PathBuf {
    let out = dir.join(format!("field_trip_{seed}"));
    let mut synth = whaleid::jobs::synth::SynthOptions::new(&out, individuals, 3, seed);
    synth.first_individual = 100;
    whaleid::jobs::synth::generate(&synth, &|| {}).unwrap();
    out
}

/// A new catalogue holding `folder`'s photos (and the boxes and labels beside them, if any).
fn catalogue_of(dir: &Path, folders: &[&Path]) -> std::path::PathBuf {
    let path = dir.join("trip.whaleid");
    let mut cat = Catalogue::create(&path).unwrap();
    for folder in folders {
        let options = whaleid::jobs::import::ImportOptions::default();
        whaleid::jobs::import::import(&mut cat, folder, &options, &whaleid::base::progress::Silent).unwrap();
    }
    path
}

/// The window on Annotate, proposing boxes with the tiny random backbone.
fn detecting_app(home: &Path, catalogue: &Path) -> Harness<'static, WhaleApp> {
    let mut options = AppOptions::new(home.to_path_buf(), Some(catalogue.to_path_buf()));
    options.panel = Some("annotate".into());
    options.detection = whaleid::app::tiny_random_detection().unwrap();
    app(options)
}

/// Every proposal of the catalogue by photo: its box and score, in the order found.
fn proposals(catalogue: &Path) -> std::collections::BTreeMap<PhotoId, Vec<(AnnotationId, BoxPx, f64)>> {
    let cat = Catalogue::open(catalogue).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for photo in cat.photos().unwrap() {
        for a in cat.annotations_of_photo(photo.id).unwrap() {
            if a.source == Source::Detector {
                assert_eq!(a.status, Status::Unreviewed, "a proposal arrives unreviewed");
                let entry: &mut Vec<_> = out.entry(photo.id).or_default();
                entry.push((a.id, a.bbox.expect("a proposal has a box"), a.score.expect("a proposal has a score")));
            }
        }
    }
    out
}

fn active_detector(catalogue: &Path) -> Option<String> {
    Catalogue::open(catalogue).unwrap().setting(ACTIVE_DETECTOR_SETTING).unwrap().filter(|s| !s.is_empty())
}

#[test]
fn photos_imported_without_boxes_get_the_detector_s_proposals_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let trip = field_trip(dir.path(), 2, 7);
    let catalogue = catalogue_of(dir.path(), &[]);
    let home = tempfile::tempdir().unwrap();
    let mut h = detecting_app(home.path(), &catalogue);
    run_until(&mut h, "the empty catalogue", |h| settled(h) && h.state().state().library_loaded);

    // Only the photos: the boxes beside them stay behind, as for photos straight off a camera.
    h.get_by_role_and_label(Role::Button, "File").click();
    run_until(&mut h, "the File menu", |h| shows(h, "Type a path to import…"));
    h.get_by_label("Type a path to import…").click();
    run_until(&mut h, "the path window", |h| h.query_by_role_and_label(Role::TextInput, "Path").is_some());
    let path = h.get_by_role_and_label(Role::TextInput, "Path");
    path.click();
    path.type_text(trip.join("images").to_str().unwrap());
    h.step();
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the import and the detection after it", |h| {
        settled(h) && noticed(h, "Detecting boxes on 6 imported photo(s): ")
    });
    assert!(noticed(&h, "Importing photos from images: 6 photo(s) added"));
    assert!(noticed(&h, "on 6 photo(s) with zero-shot proposals"), "no detector yet: zero-shot proposals");

    // Written to the catalogue as the detector's unreviewed proposals, each with its score.
    let found = proposals(&catalogue);
    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(cat.photos().unwrap().len(), 6);
    assert!(!found.is_empty(), "proposals on the imported photos");
    for (photo, boxes) in &found {
        for a in cat.annotations_of_photo(*photo).unwrap() {
            assert_eq!(a.source, Source::Detector, "no other box on a photo that came without one");
        }
        assert!(boxes.iter().all(|(_, _, score)| (0.0..=1.0).contains(score)));
    }
    let total: usize = found.values().map(Vec::len).sum();
    assert!(noticed(&h, &format!("Detecting boxes on 6 imported photo(s): {total} proposal(s) on 6 photo(s)")));

    // Annotate shows them dashed with their score, ready for review.
    let (photo, boxes) = found.iter().next().unwrap();
    h.state_mut().send(whaleid::app::messages::Intent::OpenPhoto(*photo));
    let score = whaleid::base::vocabulary::Hundredths::of(boxes[0].2);
    run_until(&mut h, "the proposal on screen", |h| shows(h, &format!("unreviewed · unidentified · detector {score}")));
}

#[test]
fn detect_boxes_runs_on_demand_stops_on_cancel_falls_back_when_the_detector_file_is_gone_and_undoes_by_photo() {
    let dir = tempfile::tempdir().unwrap();
    let trip = field_trip(dir.path(), 8, 8);
    let catalogue = catalogue_of(dir.path(), &[&trip.join("images")]);
    let gone = dir.path().join("detectors").join("lost.safetensors");
    Catalogue::open(&catalogue).unwrap().set_setting(ACTIVE_DETECTOR_SETTING, gone.to_str().unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut h = detecting_app(home.path(), &catalogue);
    run_until(&mut h, "the catalogue", |h| settled(h) && h.state().state().rows.len() == 24);
    assert!(proposals(&catalogue).is_empty(), "nothing is proposed before it is asked for");

    // The status bar's Cancel stops it between photos; what was found stays.
    h.get_by_role_and_label(Role::Button, "Detect boxes").click();
    run_until(&mut h, "the job in the status bar", |h| h.query_by_role_and_label(Role::Button, "Cancel").is_some());
    h.get_by_role_and_label(Role::Button, "Cancel").click();
    run_until(&mut h, "the cancelled detection", |h| settled(h) && noticed(h, "Detecting boxes (cancelled): "));
    let partial = proposals(&catalogue);
    assert!(partial.len() < 24, "stopped before the last photo");

    // Asked again, it searches the photos left, and leaves those with proposals alone.
    h.get_by_role_and_label(Role::Button, "Detect boxes").click();
    run_until(&mut h, "the detection", |h| settled(h) && noticed(h, "Detecting boxes: "));
    // The broken detector is named with its problem, and zero-shot proposals stand in.
    let notice = h.state().state().notices.iter().find(|n| n.text.starts_with("Detecting boxes: ")).unwrap().clone();
    assert!(notice.text.contains("with zero-shot proposals"), "{}", notice.text);
    assert!(notice.text.contains(&format!("{}: the detector file is missing", gone.display())), "{}", notice.text);
    assert_eq!(notice.level, whaleid::app::messages::Level::Error, "a detector that cannot be used is a problem");
    let found = proposals(&catalogue);
    assert!(found.len() > partial.len());
    assert!(partial.iter().all(|(photo, boxes)| found[photo] == *boxes), "the first run's proposals stay as they were");
    let added: usize = found.values().map(Vec::len).sum::<usize>() - partial.values().map(Vec::len).sum::<usize>();
    assert!(notice.text.starts_with(&format!("Detecting boxes: {added} proposal(s) on ")), "{}", notice.text);

    // Each photo's proposals are one edit: one undo takes the last photo's back.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && noticed(h, "Undid: detect boxes in"));
    let after = proposals(&catalogue);
    assert_eq!(after.len(), found.len() - 1, "one photo's proposals taken back");
    assert!(after.iter().all(|(photo, boxes)| found[photo] == *boxes), "the others stay");
}

#[test]
fn retrain_detector_learns_from_the_true_boxes_becomes_active_and_replaces_the_zero_shot_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let boxed = field_trip(dir.path(), 4, 9);
    let unboxed = field_trip(dir.path(), 2, 10);
    let catalogue = catalogue_of(dir.path(), &[&boxed, &unboxed.join("images")]);
    let home = tempfile::tempdir().unwrap();
    let mut h = detecting_app(home.path(), &catalogue);
    run_until(&mut h, "the catalogue", |h| settled(h) && h.state().state().rows.len() == 18);

    h.get_by_role_and_label(Role::Button, "Detect boxes").click();
    run_until(&mut h, "the zero-shot proposals", |h| settled(h) && noticed(h, "Detecting boxes: "));
    let zero_shot = proposals(&catalogue);
    assert!(!zero_shot.is_empty());
    assert!(active_detector(&catalogue).is_none());
    // The 12 imported boxes and no detector yet: retraining is offered.
    assert!(shows(&h, "12 verified, drawn or imported box(es) and no detector trained on them yet"));

    h.get_by_role_and_label(Role::Button, "Retrain detector").click();
    run_until(&mut h, "the training and the detection after it", |h| {
        settled(h) && noticed(h, "Retraining the detector: ")
    });
    let notice = h.state().state().notices.iter().find(|n| n.text.starts_with("Retraining the detector: ")).unwrap();
    // All six photos without a true box were searched again with the new detector.
    assert!(notice.text.contains("on 6 photo(s) with the new detector trip-"), "{}", notice.text);

    // The new detector is the catalogue's, its file there, and it proposed again.
    let file = active_detector(&catalogue).expect("the new detector is active");
    assert!(Path::new(&file).is_file(), "{file}");
    whaleid::models::detector::read_config(Path::new(&file)).unwrap();
    let learned = proposals(&catalogue);
    // A head trained for a few epochs on a random backbone finds a varying number of boxes
    // (none, some runs), but never the zero-shot ones: none of those is left (told by box and
    // score, since a deleted row's id may be reused).
    let boxes_of = |p: &std::collections::BTreeMap<PhotoId, Vec<(AnnotationId, BoxPx, f64)>>| {
        p.iter()
            .flat_map(|(photo, b)| b.iter().map(move |(_, bbox, s)| format!("{photo:?} {bbox:?} {s}")))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(boxes_of(&learned).is_disjoint(&boxes_of(&zero_shot)), "the zero-shot proposals are replaced");
    let count = |p: &std::collections::BTreeMap<PhotoId, Vec<(AnnotationId, BoxPx, f64)>>| {
        p.values().map(Vec::len).sum::<usize>()
    };
    let said =
        format!("Retraining the detector: {} proposal(s) on 6 photo(s) with the new detector trip-", count(&learned));
    assert!(notice.text.starts_with(&said), "{}", notice.text);
    assert!(notice.text.contains(&format!("replacing {} older proposal(s)", count(&zero_shot))), "{}", notice.text);
    let unboxed_photos: std::collections::BTreeSet<PhotoId> = {
        let cat = Catalogue::open(&catalogue).unwrap();
        cat.photos().unwrap().iter().filter(|p| p.stored_path.contains("field_trip_10")).map(|p| p.id).collect()
    };
    assert!(learned.keys().all(|p| unboxed_photos.contains(p)), "only the photos without a true box get proposals");
    // The imported boxes are untouched, and the detector learned from all of them: no offer now.
    let cat = Catalogue::open(&catalogue).unwrap();
    let imported = cat
        .photos()
        .unwrap()
        .iter()
        .flat_map(|p| cat.annotations_of_photo(p.id).unwrap())
        .filter(|a| a.source == Source::Imported)
        .count();
    assert_eq!(imported, 12);
    run_until(&mut h, "the offer to go", |h| settled(h) && !shows(h, "no detector trained on them yet"));
    assert!(!shows(&h, "since the detector was trained"));
}

#[test]
fn the_retraining_notice_comes_once_enough_boxes_are_verified_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let trip = field_trip(dir.path(), 4, 11);
    let catalogue = catalogue_of(dir.path(), &[&trip.join("images")]);
    let enough = RETRAIN_AFTER_NEW_BOXES;
    {
        // Proposals on every photo: all but two of them sure ones.
        let mut cat = Catalogue::open(&catalogue).unwrap();
        let photos = cat.photos().unwrap();
        assert!(photos.len() > enough);
        for (i, photo) in photos.iter().enumerate() {
            let score = if i + 1 < enough { 0.9 } else { 0.4 };
            cat.add_annotation(&NewAnnotation {
                photo_id: photo.id,
                bbox: Some(BoxPx::new(100.0, 80.0, 200.0, 150.0)),
                part: Part::Fluke,
                side: Side::Unknown,
                source: Source::Detector,
                status: Status::Unreviewed,
                species: None,
                score: Some(score),
            })
            .unwrap();
        }
    }
    let home = tempfile::tempdir().unwrap();
    let mut h = detecting_app(home.path(), &catalogue);
    let offered = |h: &Harness<'_, WhaleApp>| shows(h, "and no detector trained on them yet");
    run_until(&mut h, "the catalogue", |h| settled(h) && h.state().state().detector.is_some());
    assert!(!offered(&h), "no true box yet");

    // Nothing to learn from yet: retraining says so and changes nothing.
    h.get_by_role_and_label(Role::Button, "Retrain detector").click();
    run_until(&mut h, "the refusal", |h| settled(h) && noticed(h, "Retraining the detector failed: "));
    assert!(noticed(&h, "no boxes to train a detector on; draw or verify boxes"));
    assert!(active_detector(&catalogue).is_none());

    // One box short of enough.
    set_minimum_score(&mut h, 0.5);
    h.get_by_role_and_label(Role::Button, "Verify all ≥ 0.50").click();
    run_until(&mut h, "the sure ones verified", |h| {
        settled(h) && noticed(h, &format!("Verified {} proposal(s)", enough - 1))
    });
    run_until(&mut h, "the count read again", |h| {
        settled(h) && h.state().state().detector.as_ref().is_some_and(|d| d.true_boxes == enough - 1)
    });
    assert!(!offered(&h), "{} new boxes are not enough", enough - 1);

    // One more, drawn or verified: now it is offered.
    set_minimum_score(&mut h, 0.0);
    h.get_by_role_and_label(Role::Button, "Verify all ≥ 0.00").click();
    run_until(&mut h, "the offer", |h| settled(h) && offered(h));
    let total = Catalogue::open(&catalogue).unwrap().photos().unwrap().len();
    assert!(shows(&h, &format!("{total} verified, drawn or imported box(es) and no detector trained on them yet")));
}
