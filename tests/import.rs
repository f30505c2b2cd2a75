//! Importing a biologist's folders: every bad file is reported by name with its problem
//! and the rest is imported; importing again adds nothing twice.

mod common;

use std::path::Path;

use common::{jpeg_bytes, photo, photos, png_claiming, write};
use whaleid::base::ids::PhotoId;
use whaleid::base::progress::Silent;
use whaleid::base::vocabulary::{BoxPx, Part, Status};
use whaleid::catalogue::Catalogue;
use whaleid::jobs::import::{ImportOptions, ImportReport, import};

fn run(cat: &mut Catalogue, dataset: &Path) -> ImportReport {
    import(cat, dataset, &ImportOptions::default(), &Silent).unwrap()
}

fn problem_about<'a>(report: &'a ImportReport, file_name: &str) -> Vec<&'a str> {
    report
        .problems
        .iter()
        .filter(|p| p.file.file_name().is_some_and(|n| n == file_name))
        .map(|p| p.problem.as_str())
        .collect()
}

#[test]
fn broken_photos_are_reported_by_name_and_the_rest_imports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 3, 64, 48);
    let good = jpeg_bytes(&photo(99, 300, 200));
    write(&data.join("images/truncated.jpg"), &good[..good.len() / 2]);
    write(&data.join("images/empty.jpg"), b"");
    write(&data.join("images/notes.jpg"), "GPS log, not a photo\n");
    write(&data.join("images/huge.png"), png_claiming(100_000, 100_000));
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert_eq!(report.photos.found, 7);
    assert_eq!(report.photos.added, 3);
    assert_eq!(report.photos.failed, 4);
    let expect = [
        ("truncated.jpg", "truncated"),
        ("empty.jpg", "empty"),
        ("notes.jpg", "not an image"),
        ("huge.png", "100000x100000"),
    ];
    for (name, words) in expect {
        let problems = problem_about(&report, name);
        assert!(problems.len() == 1 && problems[0].contains(words), "{name}: {problems:?}");
    }
    assert_eq!(cat.photos().unwrap().len(), 3);
}

#[test]
fn importing_the_same_folder_again_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 4, 64, 48);
    write(&data.join("train.csv"), "Image,Id\np000.jpg,w_1\np001.jpg,w_1\np002.jpg,w_2\np003.jpg,new_whale\n");
    write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.5 0.5\n");
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let first = run(&mut cat, &data);
    assert_eq!((first.photos.added, first.boxes.added, first.labels.applied, first.labels.unlabelled), (4, 1, 3, 1));
    assert_eq!(first.labels.individuals_added, 2);
    let second = run(&mut cat, &data);
    assert_eq!(second.photos.added, 0);
    assert_eq!(second.photos.already_present, 4);
    assert_eq!((second.boxes.added, second.boxes.already_present), (0, 1));
    assert_eq!((second.labels.applied, second.labels.already_present), (0, 3));
    let stats = whaleid::catalogue::stats::stats(&cat).unwrap();
    assert_eq!((stats.photos, stats.annotations, stats.individuals, stats.identified_annotations), (4, 3, 2, 3));
    // The Kaggle humpback format implies the species and the part.
    assert_eq!(stats.species.get("humpback_whale"), Some(&2));
    assert_eq!(stats.annotations_by_part.get("fluke"), Some(&3));
}

#[test]
fn labels_for_missing_photos_and_names_climbing_out_are_refused_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 2, 64, 48);
    write(
        &data.join("labels.csv"),
        "image,individual_id,species,side\n\
         p000.jpg,F1,bottlenose_dolphin,left\n\
         ghost.jpg,F2,bottlenose_dolphin,left\n\
         ../../etc/passwd,F3,bottlenose_dolphin,left\n\
         /etc/passwd,F3,bottlenose_dolphin,left\n\
         p001.jpg,F4,bottlenose_dolphin,upside\n",
    );
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert_eq!(report.labels.applied, 1);
    assert_eq!(report.labels.failed, 4);
    let problems: Vec<_> = report.problems.iter().map(|p| (p.line, p.problem.clone())).collect();
    assert!(problems.iter().any(|(l, p)| *l == Some(3) && p.contains("no photo 'ghost.jpg'")), "{problems:?}");
    assert!(problems.iter().any(|(l, p)| *l == Some(4) && p.contains("climbs out")), "{problems:?}");
    assert!(problems.iter().any(|(l, p)| *l == Some(5) && p.contains("absolute")), "{problems:?}");
    assert!(problems.iter().any(|(l, p)| *l == Some(6) && p.contains("unknown side")), "{problems:?}");
    let f1 = cat.individual_by_code("F1").unwrap().unwrap();
    let sighting = &cat.sightings(f1.id).unwrap()[0];
    assert_eq!(sighting.part, Part::DorsalFin, "dolphins are identified by their dorsal fin");
    assert_eq!(sighting.bbox, None, "a per-photo label covers the whole photo");
}

#[test]
fn a_csv_in_an_unknown_layout_is_refused_naming_the_expected_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 1, 64, 48);
    write(&data.join("sightings.csv"), "date,place\n2024-01-01,Skjervøy\n");
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert_eq!(report.photos.added, 1, "the photos still import");
    let problems = problem_about(&report, "sightings.csv");
    assert!(problems[0].contains("no image column") && problems[0].contains("Image,whaleID"), "{problems:?}");
}

#[test]
fn a_csv_with_bom_crlf_duplicates_and_bad_bytes_imports_its_good_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 3, 64, 48);
    let mut csv = b"\xEF\xBB\xBFImage,whaleID\r\np000.jpg,whale_1\r\np000.jpg,whale_1\r\n".to_vec();
    csv.extend_from_slice(b"p001.jpg,whale_\xff\xfe\r\np002.jpg,whale_2\r\np003.jpg\r\n");
    write(&data.join("train.csv"), csv);
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert_eq!(report.labels.applied, 2);
    assert_eq!(report.labels.duplicate_rows, 1);
    let problems: Vec<_> = report.problems.iter().map(|p| (p.line, p.problem.as_str())).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, Some(4));
    assert!(problems[0].1.contains("UTF-8"));
    assert_eq!(problems[1].0, Some(6));
    assert_eq!(report.files[0].kind, "labels, NOAA right whale (Image,whaleID)");
    let stats = whaleid::catalogue::stats::stats(&cat).unwrap();
    assert_eq!(stats.annotations_by_part.get("head"), Some(&2), "right whales are identified by their heads");
}

#[test]
fn boxes_outside_the_photo_are_refused_and_boxes_reaching_out_are_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 2, 100, 50);
    write(&data.join("labels/classes.txt"), "dorsal_fin\n");
    write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.2 0.2\n0 3.0 3.0 0.1 0.1\n0 0.95 0.5 0.2 0.2\n0 x 1 1 1\n");
    write(&data.join("labels/p404.txt"), "0 0.5 0.5 0.2 0.2\n");
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert_eq!((report.boxes.added, report.boxes.clipped), (2, 1));
    let problems = problem_about(&report, "p000.txt");
    assert!(problems.iter().any(|p| p.contains("outside the 100x50 photo")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("clipped")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("not numbers")), "{problems:?}");
    assert!(problem_about(&report, "p404.txt")[0].contains("not in the dataset"));
    let p0 = cat
        .photo_id_by_path(&cat.stored_path(&data.canonicalize().unwrap().join("images/p000.jpg")).unwrap())
        .unwrap()
        .unwrap();
    let boxes = cat.annotations_of_photo(p0).unwrap();
    assert_eq!(boxes.len(), 2);
    assert!(boxes.iter().all(|a| a.part == Part::DorsalFin && a.status == Status::Verified));
    assert_eq!(boxes[1].bbox, Some(BoxPx::new(85.0, 20.0, 15.0, 10.0)));
}

#[test]
fn a_moved_photo_folder_is_recognised_by_content_and_relinked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("season1");
    photos(&data, 3, 64, 48);
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    run(&mut cat, &data);
    let moved = dir.path().join("archive/season1");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&data, &moved).unwrap();
    let report = whaleid::jobs::import::relink(&mut cat, &moved, &Silent).unwrap();
    assert_eq!((report.missing_before, report.relinked, report.still_missing), (3, 3, 0));
    for p in cat.photos().unwrap() {
        assert!(cat.photo_file(&p.stored_path).exists(), "{} relinked", p.stored_path);
    }
    // Importing a copy of the same photos elsewhere reports them as duplicates, not new sightings.
    let copy = dir.path().join("copy");
    photos(&copy, 3, 64, 48);
    let again = run(&mut cat, &copy);
    assert_eq!((again.photos.added, again.photos.duplicates), (0, 3));
    // Undo puts the old paths back.
    cat.undo().unwrap();
    assert!(cat.photos().unwrap().iter().all(|p| p.stored_path.starts_with("season1/")));
}

#[test]
fn moving_photos_then_importing_the_new_folder_relinks_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    photos(&data, 2, 64, 48);
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    run(&mut cat, &data);
    std::fs::rename(&data, dir.path().join("b")).unwrap();
    let report = run(&mut cat, &dir.path().join("b"));
    assert_eq!((report.photos.added, report.photos.relinked), (0, 2));
    assert_eq!(cat.photos().unwrap().len(), 2);
}

#[test]
fn exported_coco_imports_back_into_a_new_catalogue_with_identities() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 3, 120, 80);
    write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.5 0.5\n");
    write(&data.join("labels/p001.txt"), "0 0.25 0.25 0.2 0.2\n0 0.75 0.75 0.2 0.2\n");
    write(&data.join("labels/classes.txt"), "fluke\n");
    let mut cat = Catalogue::create(&data.join("c.whaleid")).unwrap();
    run(&mut cat, &data);
    let first = cat.annotations_of_photo(PhotoId(1)).unwrap()[0].id;
    cat.new_individual(&[first], Some("humpback_whale")).unwrap();

    let coco = data.join("export/coco.json");
    let report = whaleid::jobs::export::export(
        &cat,
        whaleid::jobs::export::ExportFormat::Coco,
        &coco,
        &Default::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(report.items, 3);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&coco).unwrap()).unwrap();
    assert_eq!(doc["images"].as_array().unwrap().len(), 3, "photos without boxes are kept");

    let mut fresh = Catalogue::create(&dir.path().join("fresh.whaleid")).unwrap();
    let first_import = run(&mut fresh, &data.join("images"));
    assert_eq!(first_import.photos.added, 3);
    let back = run(&mut fresh, &coco);
    assert!(back.problems.is_empty(), "{:?}", back.problems);
    assert_eq!((back.boxes.added, back.labels.applied), (3, 1));
    assert_eq!(fresh.individuals().unwrap()[0].code, "WID-00001");
}

/// A camera held upright writes landscape pixels plus EXIF orientation 6 (rotate 90°).
fn jpeg_with_orientation(img: &image::RgbImage, orientation: u16) -> Vec<u8> {
    let field = exif::Field {
        tag: exif::Tag::Orientation,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Short(vec![orientation]),
    };
    let mut writer = exif::experimental::Writer::new();
    writer.push_field(&field);
    let mut block = std::io::Cursor::new(Vec::new());
    writer.write(&mut block, false).unwrap();
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
    image::ImageEncoder::set_exif_metadata(&mut encoder, block.into_inner()).unwrap();
    encoder.encode_image(img).unwrap();
    bytes
}

#[test]
fn a_photo_taken_upright_is_catalogued_upright_and_its_boxes_are_in_upright_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write(&data.join("images/upright.jpg"), jpeg_with_orientation(&photo(7, 80, 40), 6));
    // YOLO boxes refer to the photo as shown: 40 wide, 80 high.
    write(&data.join("labels/upright.txt"), "0 0.5 0.25 0.5 0.25\n");
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let p = &cat.photos().unwrap()[0];
    assert_eq!((p.facts.width, p.facts.height, p.facts.orientation), (40, 80, 6));
    assert_eq!(cat.annotations_of_photo(p.id).unwrap()[0].bbox, Some(BoxPx::new(10.0, 10.0, 20.0, 20.0)));
    let shown = whaleid::base::photo::decode_file(&cat.photo_file(&p.stored_path)).unwrap();
    assert_eq!((shown.width(), shown.height()), (40, 80), "decoding applies the orientation too");
}
