//! The catalogue never loses work: edits persist at once, every edit can be undone and
//! redone, and files it cannot safely open are refused untouched.

mod common;

use whaleid::base::ids::AnnotationId;
use whaleid::base::vocabulary::{BoxPx, How, Status};
use whaleid::catalogue::{Catalogue, CatalogueError};

fn catalogue_with_two_sightings(dir: &std::path::Path) -> (Catalogue, AnnotationId, AnnotationId) {
    let (cat, ids) = common::boxed_catalogue(dir, 2, None);
    (cat, ids[0], ids[1])
}

#[test]
fn a_verified_box_is_still_verified_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, a, _) = catalogue_with_two_sightings(dir.path());
    cat.set_status(&[a], Status::Verified).unwrap();
    drop(cat);
    let cat = Catalogue::open(&dir.path().join("c.whaleid")).unwrap();
    assert_eq!(cat.annotation(a).unwrap().unwrap().status, Status::Verified);
}

#[test]
fn merging_two_individuals_can_be_undone_and_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, a, b) = catalogue_with_two_sightings(dir.path());
    let first = cat.new_individual(&[a], Some("humpback_whale")).unwrap();
    let second = cat.new_individual(&[b], Some("humpback_whale")).unwrap();
    assert_ne!(first.code, second.code, "new individuals get unique codes");
    cat.rename_individual(second.id, "Salt").unwrap();

    cat.merge_individuals(first.id, second.id).unwrap();
    assert_eq!(cat.individuals().unwrap().len(), 1);
    assert_eq!(cat.sightings(first.id).unwrap().len(), 2);

    assert_eq!(cat.undo().unwrap().as_deref(), Some("merge individuals"));
    let back = cat.individual(second.id).unwrap().expect("the absorbed individual is back");
    assert_eq!(back.name, "Salt");
    assert_eq!(cat.identification(b).unwrap().unwrap().individual_id, second.id);
    assert_eq!(cat.sightings(first.id).unwrap().len(), 1);

    assert_eq!(cat.redo().unwrap().as_deref(), Some("merge individuals"));
    assert_eq!(cat.individuals().unwrap().len(), 1);
    assert_eq!(cat.identification(b).unwrap().unwrap().individual_id, first.id);
    assert!(cat.check_integrity().unwrap().is_empty());
}

#[test]
fn undo_walks_back_through_every_edit_and_a_new_edit_ends_the_redo_branch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, a, b) = catalogue_with_two_sightings(dir.path());
    cat.set_status(&[a, b], Status::Verified).unwrap();
    cat.set_box(a, BoxPx::new(1.0, 2.0, 3.0, 4.0)).unwrap();
    cat.delete_annotation(b).unwrap();

    assert_eq!(cat.undo().unwrap().as_deref(), Some("delete box"));
    assert_eq!(cat.annotation(b).unwrap().unwrap().status, Status::Verified);
    assert_eq!(cat.undo().unwrap().as_deref(), Some("move box"));
    assert_eq!(cat.annotation(a).unwrap().unwrap().bbox, Some(BoxPx::new(10.0, 10.0, 50.0, 40.0)));
    assert_eq!(cat.undo().unwrap().as_deref(), Some("verify 2 annotation(s)"));
    assert_eq!(cat.annotation(a).unwrap().unwrap().status, Status::Unreviewed);
    assert_eq!(cat.undo().unwrap().as_deref(), Some("setup"));
    assert!(cat.photos().unwrap().is_empty());
    assert_eq!(cat.undo().unwrap(), None);

    assert_eq!(cat.redo().unwrap().as_deref(), Some("setup"));
    assert_eq!(cat.redo().unwrap().as_deref(), Some("verify 2 annotation(s)"));
    assert_eq!(cat.annotation(b).unwrap().unwrap().status, Status::Verified);
    cat.set_status(&[b], Status::Rejected).unwrap();
    assert_eq!(cat.redo().unwrap(), None, "a new edit drops what could be redone");
    // Undo survives closing the catalogue.
    drop(cat);
    let mut cat = Catalogue::open(&dir.path().join("c.whaleid")).unwrap();
    assert_eq!(cat.undo().unwrap().as_deref(), Some("reject 1 annotation(s)"));
    assert_eq!(cat.annotation(b).unwrap().unwrap().status, Status::Verified);
}

#[test]
fn split_moves_the_selected_crops_to_a_new_individual() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, a, b) = catalogue_with_two_sightings(dir.path());
    let ind = cat.new_individual(&[a, b], Some("humpback_whale")).unwrap();
    let split = cat.split_individual(&[b]).unwrap();
    assert_eq!(split.species.as_deref(), Some("humpback_whale"));
    assert_eq!(cat.sightings(ind.id).unwrap().len(), 1);
    assert_eq!(cat.identification(b).unwrap().unwrap().how, How::Confirmed);
    cat.undo().unwrap();
    assert_eq!(cat.sightings(ind.id).unwrap().len(), 2);
    assert!(cat.individual(split.id).unwrap().is_none());
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(&dir.path().join("notes.whaleid"), "these are my field notes, not a database\n");
    let err = Catalogue::open(&path).err().expect("refused");
    assert!(matches!(err, CatalogueError::NotACatalogue(..)), "{err}");
    assert!(err.to_string().contains("notes.whaleid") && err.to_string().contains("not an SQLite database"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "these are my field notes, not a database\n");
}

#[test]
fn another_programs_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    let err = Catalogue::open(&path).err().expect("refused");
    assert!(err.to_string().contains("another program"), "{err}");
}

#[test]
fn a_catalogue_from_a_newer_whaleid_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.whaleid");
    drop(Catalogue::create(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Catalogue::open(&path).err().expect("refused");
    assert!(matches!(err, CatalogueError::NewerSchema { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer whaleid") && err.to_string().contains("untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "not a byte changed");
    assert!(!dir.path().join("future.whaleid-wal").exists());
}

/// Labels imported for whole photos, then a detector's box verified on one of them: the box
/// takes the individual over and the whole-photo annotation goes, in one undoable edit. A
/// second verified box on the same photo stays unidentified (the individual has moved).
#[test]
fn a_box_verified_on_a_photo_identified_as_a_whole_takes_its_individual_and_undo_restores_both() {
    use whaleid::base::photo::PhotoFacts;
    use whaleid::base::vocabulary::{Part, Side, Source};
    use whaleid::catalogue::{NewAnnotation, NewPhoto};
    let dir = tempfile::tempdir().unwrap();
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let annotation = |photo, bbox, source, status| NewAnnotation {
        photo_id: photo,
        bbox,
        part: Part::DorsalFin,
        side: Side::Unknown,
        source,
        status,
        species: None,
        score: None,
    };
    let (whole, first, second, other_photo_box) = cat
        .edit("setup", |e| {
            let facts = |hash: &str| PhotoFacts {
                hash: hash.into(),
                width: 1600,
                height: 1068,
                orientation: 1,
                taken_at: None,
                latitude: None,
                longitude: None,
            };
            let photo = e.insert_photo(&NewPhoto { stored_path: "a.jpg".into(), facts: facts("a") })?;
            let other = e.insert_photo(&NewPhoto { stored_path: "b.jpg".into(), facts: facts("b") })?;
            let whole = e.insert_annotation(&annotation(photo, None, Source::Imported, Status::Unreviewed))?;
            let ind = e.create_individual(Some("F272"), "", None)?;
            e.identify(whole, ind.id, How::Imported, None)?;
            let b = Some(BoxPx::new(600.0, 400.0, 200.0, 180.0));
            let first = e.insert_annotation(&annotation(photo, b, Source::Detector, Status::Unreviewed))?;
            let second = e.insert_annotation(&annotation(photo, b, Source::Detector, Status::Unreviewed))?;
            let other_box = e.insert_annotation(&annotation(other, b, Source::Detector, Status::Unreviewed))?;
            Ok((whole, first, second, other_box))
        })
        .unwrap();

    cat.set_status(&[first], Status::Verified).unwrap();
    let id = cat.identification(first).unwrap().expect("the box took the individual");
    assert_eq!(cat.individual(id.individual_id).unwrap().unwrap().code, "F272");
    assert!(cat.annotation(whole).unwrap().is_none(), "the whole-photo annotation is gone");

    cat.set_status(&[second, other_photo_box], Status::Verified).unwrap();
    assert!(cat.identification(second).unwrap().is_none(), "only one box takes the individual");
    assert!(cat.identification(other_photo_box).unwrap().is_none(), "another photo's box takes nothing");

    cat.undo().unwrap();
    cat.undo().unwrap();
    assert!(cat.identification(first).unwrap().is_none());
    assert_eq!(cat.annotation(first).unwrap().unwrap().status, Status::Unreviewed);
    let back = cat.identification(whole).unwrap().expect("the whole-photo annotation is back, identified");
    assert_eq!(cat.individual(back.individual_id).unwrap().unwrap().code, "F272");
}
