//! The gallery a search runs on is read from the catalogue as it is now: rejected crops and
//! embeddings of a box that has moved are left out and counted, never silently searched.

mod common;

use whaleid::base::ids::AnnotationId;
use whaleid::base::vocabulary::{BoxPx, Status};
use whaleid::catalogue::Catalogue;
use whaleid::jobs::search::{Filter, Gallery};

const MODEL: &str = "test-model";

/// A catalogue of `n` boxed crops on `n` photos; returns the annotation ids.
fn catalogue(dir: &std::path::Path, n: usize) -> (Catalogue, Vec<AnnotationId>) {
    common::boxed_catalogue(dir, n, Some("humpback_whale"))
}

fn embed(cat: &mut Catalogue, annotation: AnnotationId, vector: &[f32]) {
    let key = cat.annotation(annotation).unwrap().unwrap().box_key();
    cat.put_embedding(annotation, MODEL, &key, vector).unwrap();
}

/// A unit vector along axis `i` of 4, slightly tilted so no two are equal.
fn axis(i: usize, tilt: f32) -> Vec<f32> {
    let mut v = vec![tilt; 4];
    v[i] = 1.0;
    v
}

#[test]
fn stale_rejected_and_missing_are_left_out_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, ids) = catalogue(dir.path(), 5);
    for (i, &a) in ids.iter().enumerate().take(4) {
        embed(&mut cat, a, &axis(i, 0.1));
    }
    // ids[4] never embedded; ids[1]'s box moves after embedding; ids[2] is rejected.
    cat.set_box(ids[1], BoxPx::new(12.0, 10.0, 50.0, 40.0)).unwrap();
    cat.set_status(&[ids[2]], Status::Rejected).unwrap();

    let load = Gallery::from_catalogue(&cat, MODEL).unwrap();
    assert_eq!((load.stale, load.rejected, load.missing, load.wrong_dim, load.corrupt), (1, 1, 1, 0, 0));
    let rows: Vec<AnnotationId> = load.gallery.entries().iter().map(|e| e.annotation).collect();
    assert_eq!(rows, [ids[0], ids[3]]);
    assert_eq!(load.gallery.dim(), 4);
    assert!(load.describe().contains("1 embedding is stale"), "{}", load.describe());

    // Re-embedding the moved box makes it fresh again.
    embed(&mut cat, ids[1], &axis(1, 0.1));
    let load = Gallery::from_catalogue(&cat, MODEL).unwrap();
    assert_eq!((load.stale, load.gallery.len()), (0, 3));

    // Another model's embeddings are not this gallery's.
    assert_eq!(Gallery::from_catalogue(&cat, "other-model").unwrap().missing, 4);
}

#[test]
fn an_identified_crop_is_found_by_its_individual_code() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, ids) = catalogue(dir.path(), 3);
    for (i, &a) in ids.iter().enumerate() {
        embed(&mut cat, a, &axis(i, 0.05));
    }
    let salt = cat.new_individual(&[ids[1]], Some("humpback_whale")).unwrap();
    let other = cat.new_individual(&[ids[2]], Some("humpback_whale")).unwrap();

    let load = Gallery::from_catalogue(&cat, MODEL).unwrap();
    let g = &load.gallery;
    assert_eq!(g.len(), 3, "unidentified crops are in the gallery too");
    assert_eq!(g.entries()[0].individual, None);
    assert_eq!(g.entries()[1].species.as_deref(), Some("humpback_whale"));
    let r = g.search(&axis(1, 0.0), 5, &Filter::default(), None, None);
    let found: Vec<(&str, AnnotationId)> =
        r.matches.iter().map(|m| (m.individual.as_str(), m.best_annotation)).collect();
    assert_eq!(found, [(salt.code.as_str(), ids[1]), (other.code.as_str(), ids[2])]);
    assert_eq!(r.searched_individuals, 2, "the unidentified crop is never proposed");
}

#[test]
fn a_stored_vector_of_the_wrong_dimension_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cat, ids) = catalogue(dir.path(), 5);
    for (i, &a) in ids.iter().enumerate().take(3) {
        embed(&mut cat, a, &axis(i, 0.1));
    }
    embed(&mut cat, ids[4], &[1.0, f32::NAN, 0.0, 0.0]);
    embed(&mut cat, ids[3], &[1.0, 0.0, 0.0]);
    // A blob that contradicts its own `dim` (truncated on disk).
    rusqlite::Connection::open(cat.path())
        .unwrap()
        .execute("UPDATE embeddings SET vector = substr(vector, 1, 10) WHERE annotation_id = ?1", [ids[2]])
        .unwrap();

    let load = Gallery::from_catalogue(&cat, MODEL).unwrap();
    assert_eq!((load.wrong_dim, load.corrupt), (1, 2));
    assert!(load.describe().contains("2 embeddings are corrupt"), "{}", load.describe());
    assert_eq!(load.gallery.dim(), 4);
    let rows: Vec<AnnotationId> = load.gallery.entries().iter().map(|e| e.annotation).collect();
    assert_eq!(rows, [ids[0], ids[1]]);
    // A query of another dimension searches nothing rather than panicking.
    let r = load.gallery.search(&[1.0, 0.0, 0.0], 5, &Filter::default(), None, None);
    assert!(r.matches.is_empty() && r.searched_images == 0);
}

#[test]
fn an_empty_catalogue_gives_an_empty_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let (cat, _) = catalogue(dir.path(), 0);
    let load = Gallery::from_catalogue(&cat, MODEL).unwrap();
    assert!(load.gallery.is_empty());
    assert_eq!(load.describe(), "");
}
