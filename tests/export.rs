//! Exports a biologist hands on: catalogue CSV, YOLO labels, crops and Program MARK capture histories.

mod common;

use std::path::Path;

use whaleid::base::progress::Silent;
use whaleid::base::vocabulary::Status;
use whaleid::catalogue::Catalogue;
use whaleid::jobs::export::{ExportFormat, ExportOptions, Occasion, export};
use whaleid::jobs::import::{ImportOptions, import};

/// Four photos: two of W1 (one with a box), one of W2, one unlabelled without a box.
fn survey(dir: &Path) -> Catalogue {
    let data = dir.join("survey");
    common::photos(&data, 4, 200, 100);
    common::write(
        &data.join("labels.csv"),
        "image,individual_id,species\np000.jpg,W1,humpback_whale\np001.jpg,W1,humpback_whale\np002.jpg,W2,humpback_whale\n",
    );
    common::write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.5 0.5\n");
    let mut cat = Catalogue::create(&dir.join("survey.whaleid")).unwrap();
    let report = import(&mut cat, &data, &ImportOptions::default(), &Silent).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    cat
}

fn run(cat: &Catalogue, format: ExportFormat, out: &Path) -> whaleid::jobs::export::ExportReport {
    export(cat, format, out, &ExportOptions::default(), &Silent).unwrap()
}

#[test]
fn the_catalogue_csv_has_one_row_per_annotation_and_reimports_as_labels() {
    let dir = tempfile::tempdir().unwrap();
    let cat = survey(dir.path());
    let out = dir.path().join("out/catalogue.csv");
    assert_eq!(run(&cat, ExportFormat::Csv, &out).items, 3);
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("annotation_id,image,path,"));
    assert!(rows.iter().any(|r| r.contains("survey/images/p000.jpg")
        && r.contains(",50.00,25.00,100.00,50.00,fluke,")
        && r.contains(",W1,")));
    let table = whaleid::jobs::import::labels::parse_labels(text.as_bytes()).unwrap();
    assert_eq!(table.rows.len(), 3);
    assert_eq!(table.rows[2].individual.as_deref(), Some("W2"));
}

#[test]
fn yolo_export_writes_a_label_file_for_every_photo_even_without_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let cat = survey(dir.path());
    let out = dir.path().join("yolo");
    assert_eq!(run(&cat, ExportFormat::Yolo, &out).items, 1);
    let labels: Vec<_> = std::fs::read_dir(out.join("labels")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(labels.len(), 4);
    assert_eq!(
        std::fs::read_to_string(out.join("labels/p000.txt")).unwrap(),
        "0 0.500000 0.500000 0.500000 0.500000\n"
    );
    assert_eq!(std::fs::read_to_string(out.join("labels/p003.txt")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(out.join("classes.txt")).unwrap().lines().next(), Some("fluke"));
    assert_eq!(std::fs::read_to_string(out.join("images.txt")).unwrap().lines().count(), 4);
}

#[test]
fn crops_are_written_per_individual_and_a_missing_photo_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cat = survey(dir.path());
    std::fs::remove_file(dir.path().join("survey/images/p002.jpg")).unwrap();
    let out = dir.path().join("crops");
    let report = run(&cat, ExportFormat::Crops, &out);
    assert_eq!(report.items, 2);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].file.ends_with("p002.jpg") && report.skipped[0].problem.contains("cannot read"));
    let boxed = image::open(out.join("W1").join(format!("p000_a{}.jpg", 1))).unwrap();
    assert_eq!((boxed.width(), boxed.height()), (100, 50), "cropped to the box");
    let whole = std::fs::read_dir(out.join("W1")).unwrap().count();
    assert_eq!(whole, 2);
}

#[test]
fn mark_capture_histories_have_one_column_per_sampling_occasion() {
    let dir = tempfile::tempdir().unwrap();
    let mut cat = survey(dir.path());
    // Field dates: W1 seen on 3 June and 17 June, W2 on 17 June; the unlabelled photo counts for nobody.
    for (path, date) in [
        ("p000", "2024-06-03T09:00:00"),
        ("p001", "2024-06-17T10:00:00"),
        ("p002", "2024-06-17T11:00:00"),
        ("p003", "2024-07-01T08:00:00"),
    ] {
        rusqlite::Connection::open(cat.path())
            .unwrap()
            .execute("UPDATE photos SET taken_at = ?2 WHERE path LIKE ?1", [format!("%{path}.jpg"), date.to_string()])
            .unwrap();
    }
    let out = dir.path().join("mark");
    let report = run(&cat, ExportFormat::Mark, &out);
    assert_eq!(report.items, 2);
    let inp = std::fs::read_to_string(out.join("capture_histories.inp")).unwrap();
    let lines: Vec<&str> = inp.lines().collect();
    assert!(lines[0].contains("2 occasions") && lines[0].contains("2024-06-03 2024-06-17"), "{inp}");
    assert_eq!(&lines[1..], ["/* W1 */ 11 1;", "/* W2 */ 01 1;"]);
    // By month both fall in one occasion; a rejected sighting is no capture.
    let w2 = cat.individual_by_code("W2").unwrap().unwrap();
    let w2_annotation = cat.sightings(w2.id).unwrap()[0].id;
    cat.set_status(&[w2_annotation], Status::Rejected).unwrap();
    let opts = ExportOptions { occasion: Occasion::Month, ..Default::default() };
    export(&cat, ExportFormat::Mark, &out, &opts, &Silent).unwrap();
    let inp = std::fs::read_to_string(out.join("capture_histories.inp")).unwrap();
    assert_eq!(inp.lines().skip(1).collect::<Vec<_>>(), ["/* W1 */ 1 1;"]);
}
