//! The app as a biologist uses it, driven through egui_kittest (no display, no GPU): find
//! widgets by their names, click, type, press keys, and read what the window shows. Workers
//! run on their own threads, so each wait runs frames until the window shows what is awaited,
//! with a deadline, never a blind sleep.

mod common;

use common::app::{app, demo_copy, identifying_app, label_of, noticed, run_until, settled, shows, unidentify};
use eframe::egui;
use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use whaleid::app::embedding::ModelStatus;
use whaleid::app::{AppOptions, WhaleApp};
use whaleid::base::vocabulary::{BoxPx, Part, Side, Source, Status};
use whaleid::catalogue::{Catalogue, NewAnnotation};

#[test]
fn first_run_creates_the_demo_catalogue_opens_it_and_reopens_it_next_time() {
    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), None));
    h.step();
    assert!(shows(&h, "Creating the demo catalogue"), "the status bar shows the demo being made");
    run_until(&mut h, "the demo catalogue to open in the library", |h| {
        settled(h) && h.state().state().rows.len() == 180
    });
    assert!(shows(&h, "180 photos, 30 individuals"), "the status bar counts the catalogue");
    h.get_by_label("whale_0000_00.jpg"); // the first tile of the grid
    assert!(shows(&h, "saved"));
    h.check_accessibility();
    let demo = h.state().state().catalogue.clone().unwrap();
    drop(h);

    // The next start opens the last catalogue without making anything.
    let mut h = app(AppOptions::new(home.path().to_path_buf(), None));
    h.step();
    assert!(!shows(&h, "Creating the demo catalogue"));
    run_until(&mut h, "the last catalogue to reopen", |h| settled(h) && h.state().state().rows.len() == 180);
    assert_eq!(h.state().state().catalogue.as_ref().unwrap().canonicalize().unwrap(), demo.canonicalize().unwrap());
}

#[test]
fn a_box_verified_with_enter_is_still_verified_after_reopening_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    // A detector proposal on the first photo of the second whale, waiting for review.
    let proposal = {
        let mut cat = Catalogue::open(&catalogue).unwrap();
        let photo = cat.photo_id_by_path("photos/images/whale_0001_00.jpg").unwrap().unwrap();
        cat.add_annotation(&NewAnnotation {
            photo_id: photo,
            bbox: Some(BoxPx::new(20.0, 30.0, 200.0, 120.0)),
            part: Part::Fluke,
            side: Side::Unknown,
            source: Source::Detector,
            status: Status::Unreviewed,
            species: Some("humpback_whale".into()),
            score: Some(0.81),
        })
        .unwrap()
    };
    let proposal_title = "fluke · unreviewed · unidentified · detector 0.81";
    let verified_title = "fluke · verified · unidentified · detector 0.81";

    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(catalogue.clone())));
    run_until(&mut h, "the catalogue to open", settled);
    h.get_by_label("Annotate").click();
    run_until(&mut h, "the first photo's boxes", |h| shows(h, "Box 1: fluke · verified"));
    h.key_press(egui::Key::U);
    run_until(&mut h, "U to reach the detector's proposal", |h| shows(h, proposal_title));
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the verification to be written", |h| settled(h) && !shows(h, proposal_title));
    assert_eq!(h.state().state().save.last.as_deref(), Some("verified 1 box"), "the status bar's last edit");
    // Enter went on to the next photo; going back shows the box verified.
    h.key_press(egui::Key::ArrowLeft);
    run_until(&mut h, "the previous photo", |h| shows(h, verified_title));
    h.check_accessibility();
    drop(h);

    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(cat.annotation(proposal).unwrap().unwrap().status, Status::Verified);
    drop(cat);

    // Reopened, the library finds the photo by name and the annotate panel shows the box verified.
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(catalogue)));
    run_until(&mut h, "the catalogue to reopen", |h| settled(h) && h.state().state().rows.len() == 180);
    let file = h.get_by_role_and_label(Role::TextInput, "File");
    file.click();
    file.type_text("whale_0001_00");
    run_until(&mut h, "the filter to leave one photo", |h| shows(h, "1 of 180 photos"));
    h.get_by_label("whale_0001_00.jpg").click();
    h.step();
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the photo in the annotate panel", |h| shows(h, verified_title));
    assert!(!shows(&h, proposal_title));
}

#[test]
fn merging_two_individuals_moves_their_sightings_and_undo_brings_both_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut options = AppOptions::new(home.path().to_path_buf(), Some(catalogue.clone()));
    options.panel = Some("individuals".into());
    let mut h = app(options);
    run_until(&mut h, "the individuals", |h| settled(h) && h.state().state().individuals.len() == 30);

    h.get_by_label("SYN-0001  ·  6 sighting(s)").click();
    // All six photos of SYN-0001 were taken on one day.
    run_until(&mut h, "SYN-0001's gallery", |h| shows(h, "Seen on 1 day(s): 2024-07-02"));
    let field = h.get_by_role_and_label(Role::TextInput, "Merge with");
    field.click();
    field.type_text("SYN-0002");
    h.step();
    h.get_by_role_and_label(Role::Button, "Merge").click();
    run_until(&mut h, "the merge", |h| settled(h) && h.state().state().individuals.len() == 29);
    assert!(shows(&h, "SYN-0001  ·  12 sighting(s)"));
    assert!(!shows(&h, "SYN-0002  ·"));
    assert!(shows(&h, "29 individuals"));
    run_until(&mut h, "the merged gallery", |h| shows(h, "Seen on 3 day(s): 2024-07-02, 2024-07-19, 2024-09-11"));

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && h.state().state().individuals.len() == 30);
    assert!(shows(&h, "Undid: merge individuals"));
    assert!(shows(&h, "SYN-0001  ·  6 sighting(s)"));
    assert!(shows(&h, "SYN-0002  ·  6 sighting(s)"));
    h.check_accessibility();
    drop(h);

    let cat = Catalogue::open(&catalogue).unwrap();
    let two = cat.individual_by_code("SYN-0002").unwrap().expect("SYN-0002 is back after undo");
    assert_eq!(cat.sightings(two.id).unwrap().len(), 6);
}

#[test]
fn a_missing_photo_shows_a_placeholder_naming_the_file_and_the_rest_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    std::fs::remove_file(dir.path().join("photos/images/whale_0000_01.jpg")).unwrap();
    std::fs::write(dir.path().join("photos/images/whale_0000_02.jpg"), b"not a jpeg any more").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(catalogue)));
    run_until(&mut h, "the catalogue to open", settled);
    run_until(&mut h, "the placeholders", |h| {
        shows(h, "whale_0000_01.jpg (cannot show: cannot read")
            && shows(h, "whale_0000_02.jpg (cannot show: not an image")
    });
    // The photos beside them decode as usual.
    run_until(&mut h, "every thumbnail on screen", |h| h.state().pictures_pending() == 0);
    assert!(h.query_by_label("whale_0000_00.jpg").is_some(), "a whole photo's tile is named by its file alone");
    // The broken photo's boxes can still be reviewed.
    h.get_by_label_contains("whale_0000_01.jpg").click();
    h.step();
    h.key_press(egui::Key::Enter);
    run_until(&mut h, "the annotate panel on the missing photo", |h| shows(h, "Box 1: fluke · verified"));
}

#[test]
fn a_box_drawn_with_b_and_a_drag_is_saved_and_undo_and_redo_take_it_away_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut options = AppOptions::new(home.path().to_path_buf(), Some(catalogue.clone()));
    options.panel = Some("annotate".into());
    let mut h = app(options);
    run_until(&mut h, "the first photo", |h| settled(h) && shows(h, "Box 1: fluke · verified"));
    let boxes = || {
        let cat = Catalogue::open(&catalogue).unwrap();
        let photo = cat.photo_id_by_path("photos/images/whale_0000_00.jpg").unwrap().unwrap();
        cat.annotations_of_photo(photo).unwrap()
    };
    assert_eq!(boxes().len(), 1);

    // The photo fills the canvas left of the box list; drag 200 x 100 points across it.
    h.key_press(egui::Key::B);
    let (from, to) = (egui::pos2(300.0, 300.0), egui::pos2(500.0, 400.0));
    h.hover_at(from);
    h.drag_at(from);
    h.step();
    for k in 1..=4 {
        h.hover_at(from + (to - from) * (k as f32 / 4.0));
        h.step();
    }
    h.drop_at(to);
    run_until(&mut h, "the new box", |h| settled(h) && shows(h, "Box 2: fluke · verified · unidentified"));
    let drawn = boxes();
    assert_eq!(drawn.len(), 2);
    let b = drawn[1].bbox.expect("a drawn box has coordinates");
    assert!((b.w / b.h - 2.0).abs() < 0.05, "the box keeps the drag's 2:1 shape: {b}");
    assert!(b.x > 0.0 && b.y > 0.0 && b.x + b.w < 512.0 && b.y + b.h < 384.0, "inside the photo: {b}");

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && !shows(h, "Box 2:"));
    assert_eq!(boxes().len(), 1);
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, egui::Key::Z);
    run_until(&mut h, "the redo", |h| settled(h) && shows(h, "Box 2: fluke"));
    assert_eq!(boxes().len(), 2);
}

#[test]
fn a_folder_imported_from_the_file_menu_runs_in_the_background_and_lands_in_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let field_trip = dir.path().join("field_trip");
    let mut synth = whaleid::jobs::synth::SynthOptions::new(&field_trip, 2, 3, 7);
    synth.first_individual = 100;
    whaleid::jobs::synth::generate(&synth, &|| {}).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(catalogue)));
    run_until(&mut h, "the catalogue to open", |h| settled(h) && h.state().state().rows.len() == 180);

    // No desktop file dialog here, so the path is typed, as the menu offers.
    h.get_by_role_and_label(Role::Button, "File").click();
    run_until(&mut h, "the File menu", |h| shows(h, "Type a path to import…"));
    h.get_by_label("Type a path to import…").click();
    run_until(&mut h, "the path window", |h| h.query_by_role_and_label(Role::TextInput, "Path").is_some());
    let path = h.get_by_role_and_label(Role::TextInput, "Path");
    path.click();
    path.type_text(field_trip.to_str().unwrap());
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    run_until(&mut h, "the import to finish and the library to reload", |h| {
        settled(h) && h.state().state().rows.len() == 186
    });
    // The notice names the background job that did it.
    assert!(shows(
        &h,
        "Importing photos from field_trip: 6 photo(s) added, 0 already there, 6 box(es), 6 label(s) applied, \
         2 new individual(s)"
    ));
    assert!(shows(&h, "186 photos, 32 individuals"));
    h.check_accessibility();
}

#[test]
fn a_file_that_is_not_a_catalogue_is_refused_with_the_reason_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.whaleid");
    std::fs::write(&notes, "field notes, not a database").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut h = app(AppOptions::new(home.path().to_path_buf(), Some(notes.clone())));
    run_until(&mut h, "the refusal", |h| shows(h, "is not a whaleid catalogue"));
    assert!(shows(&h, "no catalogue open"));
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "field notes, not a database");
    // Edits have nowhere to go, and say so instead of vanishing.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.step();
    assert!(shows(&h, "No catalogue is open"));
    h.check_accessibility();
}

// ---- Identification (a tiny random embedder stands in for the real weights) -------------

#[test]
fn an_unidentified_crop_is_confirmed_as_the_first_candidate_with_key_1_and_undo_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let crop = unidentify(&catalogue, "whale_0003_05.jpg");
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    // Unidentified crops come first; the candidates come from a search in the background.
    // What was searched is on screen: the filter and the number of crops and individuals
    // (every other crop, once all are embedded).
    run_until(&mut h, "the candidates of the unidentified crop", |h| {
        settled(h)
            && shows(h, "whale_0003_05.jpg · fluke")
            && shows(h, "Candidate 1: ")
            && shows(h, "Searched 179 crop(s) of 30 individual(s) · filter: species humpback_whale, part fluke")
    });
    assert!(shows(&h, "unidentified"));
    let first = label_of(&h, "Candidate 1: ");
    let code = first.trim_start_matches("Candidate 1: ").split(',').next().unwrap().to_string();
    // The shortlist of the global search is verified by local features, and with no fusion
    // stored in the demo catalogue it is ranked by verified matches: the crop's own whale comes
    // first whatever the untrained tiny model (drawn afresh each run) ranks nearest. (That the
    // matches re-order the global ranking is proven deterministically in `jobs::search::rerank`.)
    assert_eq!(code, "SYN-0003", "{first}");
    let matches: usize =
        first.split(", ").nth(1).and_then(|w| w.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(matches >= 20, "{first}");
    // The comparison shows the verified matches as lines between the two crops.
    assert!(shows(&h, &format!("{matches} verified matches drawn")), "the lines are drawn");

    h.key_press(egui::Key::Num1);
    run_until(&mut h, "the confirmation to be written", |h| settled(h) && !shows(h, "whale_0003_05.jpg · fluke"));
    {
        let cat = Catalogue::open(&catalogue).unwrap();
        let ident = cat.identification(crop).unwrap().expect("the crop is identified");
        assert_eq!(cat.individual(ident.individual_id).unwrap().unwrap().code, code);
        assert_eq!(ident.how, whaleid::base::vocabulary::How::Confirmed);
    }

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && shows(h, "Undid: assigned 1 box"));
    assert!(Catalogue::open(&catalogue).unwrap().identification(crop).unwrap().is_none());
    h.check_accessibility();
}

#[test]
fn n_makes_a_new_individual_with_a_fresh_unique_code_and_the_name_typed() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let crop = unidentify(&catalogue, "whale_0007_02.jpg");
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    run_until(&mut h, "the unidentified crop's candidates", |h| {
        settled(h) && shows(h, "whale_0007_02.jpg · fluke") && shows(h, "Candidate 1: ")
    });
    let name = h.get_by_role_and_label(Role::TextInput, "Name for a new individual");
    name.click();
    name.type_text("Notch");
    h.step();
    h.key_press(egui::Key::Enter); // leaves the field, so N is a shortcut again
    h.step();
    h.key_press(egui::Key::N);
    run_until(&mut h, "the new individual", |h| settled(h) && h.state().state().individuals.len() == 31);
    assert!(shows(&h, "31 individuals"));
    let cat = Catalogue::open(&catalogue).unwrap();
    let ident = cat.identification(crop).unwrap().expect("the crop has its new individual");
    let made = cat.individual(ident.individual_id).unwrap().unwrap();
    assert_eq!((made.code.as_str(), made.name.as_str()), ("WID-00001", "Notch"));
    assert_eq!(made.species.as_deref(), Some("humpback_whale"));
}

#[test]
fn training_started_in_the_train_panel_can_be_cancelled_and_leaves_the_model_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "train");
    run_until(&mut h, "the dataset summary", |h| settled(h) && shows(h, "180 labelled crop(s) of 30 individual(s)"));
    assert!(shows(&h, "Model in use: untrained head"));
    h.get_by_role_and_label(Role::Button, "Start training").click();
    run_until(&mut h, "the first training steps", |h| {
        shows(h, "Training · epoch") && !shows(h, "Training loss: 0 point(s)")
    });
    h.get_by_role_and_label(Role::Button, "Cancel training").click();
    run_until(&mut h, "the run to stop", |h| settled(h) && shows(h, "cancelled after"));
    assert!(shows(&h, "the model in use is unchanged"));
    assert!(shows(&h, "Model in use: untrained head"));
    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(whaleid::jobs::embed::active_head(&cat).unwrap(), None, "a cancelled run activates nothing");
}

#[test]
fn training_run_to_its_end_activates_the_new_model_re_embeds_the_crops_and_undo_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "train");
    run_until(&mut h, "the dataset summary", |h| settled(h) && shows(h, "180 labelled crop(s) of 30 individual(s)"));
    assert!(shows(&h, "Model in use: untrained head"));
    let untrained = h.state().state().model.key().unwrap().to_string();

    // A short run: 2 typed into the Epochs field.
    h.get_by_role_and_label(Role::SpinButton, "Epochs").click();
    h.step();
    h.get_by_role_and_label(Role::SpinButton, "Epochs").type_text("2");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    assert_eq!(h.get_by_role_and_label(Role::SpinButton, "Epochs").value().as_deref(), Some("2"));
    // The head and the backbone's last blocks.
    h.get_by_role_and_label(Role::ComboBox, "Mode").click();
    run_until(&mut h, "the list of modes", |h| h.query_by_label("Last blocks").is_some());
    h.get_by_label("Last blocks").click();
    h.step();
    assert!(h.query_by_role_and_label(Role::SpinButton, "Mode").is_some(), "the number of blocks to tune");
    assert_eq!(h.get_by_role_and_label(Role::SpinButton, "Views per crop").value().as_deref(), Some("auto"));

    h.get_by_role_and_label(Role::Button, "Start training").click();
    run_until(&mut h, "the run to end and its head to be activated", |h| {
        settled(h) && shows(h, "best validation MAP@5") && !shows(h, "Model in use: untrained head")
    });
    assert!(noticed(&h, "now the catalogue's model, embeddings are recomputed in the background"));
    assert!(
        shows(&h, "the model kept is trained again on all 30 individuals"),
        "validation chose, then every individual"
    );
    let head = whaleid::jobs::embed::active_head(&Catalogue::open(&catalogue).unwrap())
        .unwrap()
        .expect("the finished run's head is the catalogue's model");
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(head.with_file_name("head.json")).unwrap()).unwrap();
    assert_eq!(card["config"]["views"], 4, "180 crops get four views each");
    assert_eq!(card["refit"]["individuals"], 30);
    assert_eq!(std::fs::read_dir(home.path().join("cache")).unwrap().count(), 2, "tokens, then block inputs");
    let models = dir.path().canonicalize().unwrap().join("models");
    assert!(head.starts_with(&models) && head.ends_with("head.safetensors"), "{}", head.display());
    assert_eq!(label_of(&h, "Model in use: "), format!("Model in use: {}", head.display()));
    let tuned = candle_core::safetensors::load(&head, &candle_core::Device::Cpu).unwrap();
    assert!(
        tuned.keys().any(|k| k.starts_with(whaleid::models::TUNED_PREFIX)),
        "the model carries its fine-tuned blocks"
    );

    // Every crop is embedded again, under the key the new head gives the backbone.
    let trained = whaleid::app::tiny_random_embedder().unwrap().with_head_file(&head).unwrap().key().to_string();
    assert_ne!(trained, untrained);
    run_until(&mut h, "the crops re-embedded with the new head", |h| {
        let model = &h.state().state().model;
        settled(h) && model.gallery.as_ref().is_some_and(|g| g.key == trained && g.load.gallery.len() == 180)
    });
    assert_eq!(h.state().state().model.key(), Some(trained.as_str()));
    let fresh = |key: &str| {
        let states = Catalogue::open(&catalogue).unwrap().embedding_states(key).unwrap();
        (states.len(), states.iter().filter(|s| !s.is_stale()).count())
    };
    assert_eq!(fresh(&trained), (180, 180));
    assert!(noticed(&h, "180 crop(s) embedded, 0 already up to date"));

    // Ctrl+Z takes the activation back: the untrained head and its embeddings (kept) again.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && shows(h, "Model in use: untrained head"));
    assert!(noticed(&h, "Undid: "));
    assert_eq!(whaleid::jobs::embed::active_head(&Catalogue::open(&catalogue).unwrap()).unwrap(), None);
    run_until(&mut h, "the untrained head's gallery", |h| {
        settled(h) && h.state().state().model.gallery.as_ref().is_some_and(|g| g.key == untrained)
    });
    assert_eq!(fresh(&untrained), (180, 180));
    h.check_accessibility();

    // The head's file damaged on disk (a copy cut short): redoing its activation fails to load
    // it, and nothing of the model before stays in use to propose candidates from.
    std::fs::write(&head, b"the first bytes of a head, then nothing").unwrap();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Y);
    let failed = |h: &Harness<'_, WhaleApp>| matches!(h.state().state().model.status, ModelStatus::Failed(_));
    run_until(&mut h, "the damaged head to fail to load", |h| settled(h) && failed(h));
    let model = &h.state().state().model;
    assert!(model.embedder.is_none() && model.gallery.is_none(), "the untrained head's gallery is gone");
    let ModelStatus::Failed(why) = &model.status else { unreachable!() };
    assert!(why.contains(&head.display().to_string()), "the error names the file: {why}");
    assert!(shows(&h, "no identification"), "the status bar says so");
    // Undo takes the activation back, and the untrained head loads again.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the untrained head again", |h| {
        settled(h) && h.state().state().model.gallery.as_ref().is_some_and(|g| g.key == untrained)
    });
    assert!(!failed(&h));
}

#[test]
fn clicking_a_point_on_the_map_opens_that_crop_in_identify() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "map");
    run_until(&mut h, "the map", |h| settled(h) && shows(h, "Embedding map of 180 crops"));
    let canvas = h.get_by_label_contains("Embedding map of").rect();
    // Move the pointer outwards from the middle until it rests on a crop.
    let mut found = None;
    'search: for ring in 0..60 {
        let r = ring as f32 * 6.0;
        let steps = (ring * 8).max(1);
        for k in 0..steps {
            let a = k as f32 / steps as f32 * std::f32::consts::TAU;
            let pos = canvas.center() + egui::vec2(a.cos(), a.sin()) * r;
            h.hover_at(pos);
            h.step();
            if shows(&h, "Hovering ") {
                found = Some(pos);
                break 'search;
            }
        }
    }
    let pos = found.expect("a crop under the pointer somewhere on the map");
    let hovered = label_of(&h, "Hovering ");
    let file = hovered.split(" · ").nth(1).unwrap().to_string();
    assert!(file.starts_with("whale_") && file.ends_with(".jpg"), "{hovered}");
    h.event(egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: Default::default(),
    });
    h.step();
    h.event(egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Default::default(),
    });
    run_until(&mut h, "the crop in Identify", |h| shows(h, &format!("{file} · fluke")));
    assert_eq!(h.state().active_panel().0, "identify");
    run_until(&mut h, "its candidates", |h| settled(h) && shows(h, "Candidate 1: "));
}
