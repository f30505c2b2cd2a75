//! The photo and label formats a biologist brings: WebP and TIFF photos, YOLO folders whose
//! classes are named in `data.yaml` or not at all (`--part`, `--species`), and Happywhale's
//! `image,species,individual_id` labels, each imported end to end.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::{jpeg_bytes, photo, photos, write};
use image::{ImageEncoder, RgbImage};
use whaleid::base::progress::Silent;
use whaleid::base::vocabulary::{BoxPx, Part, Status};
use whaleid::catalogue::{Catalogue, Photo};
use whaleid::jobs::import::{ImportOptions, ImportReport, import};

fn run(cat: &mut Catalogue, dataset: &Path) -> ImportReport {
    import(cat, dataset, &ImportOptions::default(), &Silent).unwrap()
}

fn webp_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn tiff_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::tiff::TiffEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out.into_inner()
}

/// The catalogue's photo whose stored path ends with `name`.
fn photo_named(cat: &Catalogue, name: &str) -> Photo {
    let all = cat.photos().unwrap();
    all.iter()
        .find(|p| p.stored_path.ends_with(name))
        .cloned()
        .unwrap_or_else(|| panic!("no photo {name} in {:?}", all.iter().map(|p| &p.stored_path).collect::<Vec<_>>()))
}

#[test]
fn webp_and_tiff_photos_import_with_their_pixels_and_take_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fin, fluke) = (photo(3, 90, 60), photo(4, 70, 110));
    write(&data.join("images/fin.webp"), webp_bytes(&fin));
    write(&data.join("images/fluke.TIFF"), tiff_bytes(&fluke));
    write(&data.join("images/other.tif"), tiff_bytes(&photo(5, 40, 30)));
    write(
        &data.join("labels.csv"),
        "image,individual_id,species\nfin.webp,TT-01,bottlenose_dolphin\nfluke.TIFF,HW-07,humpback_whale\n",
    );
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.photos.found, report.photos.added, report.labels.applied), (3, 3, 2));

    for (name, original, individual, part) in
        [("fin.webp", &fin, "TT-01", Part::DorsalFin), ("fluke.TIFF", &fluke, "HW-07", Part::Fluke)]
    {
        let p = photo_named(&cat, name);
        assert_eq!((p.facts.width, p.facts.height), original.dimensions(), "{name}");
        // Both encodings are lossless: the catalogued photo decodes to the very pixels written.
        let shown = whaleid::base::photo::decode_file(&cat.photo_file(&p.stored_path)).unwrap();
        assert!(shown.to_rgb8() == *original, "{name} decodes to other pixels");
        let annotations = cat.annotations_of_photo(p.id).unwrap();
        assert_eq!(annotations.len(), 1, "{name}");
        assert_eq!((annotations[0].part, annotations[0].bbox), (part, None), "{name}");
        let ind = cat.identification(annotations[0].id).unwrap().expect("labelled").individual_id;
        assert_eq!(cat.individual(ind).unwrap().unwrap().code, individual);
    }
}

#[test]
fn yolo_class_names_from_data_yaml_give_each_box_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    photos(&data, 2, 100, 80);
    // Ultralytics' own layout: names by class index, no classes.txt.
    write(&data.join("data.yaml"), "path: .\ntrain: images\nnc: 2\nnames:\n  0: fluke\n  1: dorsal_fin\n");
    write(&data.join("labels/p000.txt"), "1 0.25 0.5 0.2 0.4\n0 0.75 0.5 0.3 0.2\n");
    write(&data.join("labels/p001.txt"), "1 0.5 0.5 0.5 0.5\n");
    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.boxes.added, 3);

    let boxes = |name: &str| {
        let p = photo_named(&cat, name);
        let mut found: Vec<(Part, BoxPx)> =
            cat.annotations_of_photo(p.id).unwrap().into_iter().map(|a| (a.part, a.bbox.unwrap())).collect();
        found.sort_by(|a, b| a.1.x.total_cmp(&b.1.x));
        found
    };
    assert_eq!(
        boxes("p000.jpg"),
        [(Part::DorsalFin, BoxPx::new(15.0, 24.0, 20.0, 32.0)), (Part::Fluke, BoxPx::new(60.0, 32.0, 30.0, 16.0))]
    );
    assert_eq!(boxes("p001.jpg"), [(Part::DorsalFin, BoxPx::new(25.0, 20.0, 50.0, 40.0))]);
}

/// Happywhale's `train.csv` as published: a flat `train_images/` folder, file names that are
/// hex ids, and its species spellings, misspellings included.
#[test]
fn happywhale_labels_import_with_species_parts_and_individuals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("happywhale");
    let rows = [
        ("00021adfb725ed.jpg", "melon_headed_whale", "cadddb1636b9"),
        ("000562241d384d.jpg", "humpback_whale", "1a71fbb72250"),
        ("0007c33415ce37.jpg", "false_killer_whale", "60008f293a2b"),
        ("0007d9bca26a99.jpg", "bottlenose_dolphin", "4b00fe572063"),
        ("00087baf5cef7a.jpg", "humpback_whale", "8e5253662392"),
        ("000a8f2d5c316a.jpg", "bottlenose_dolpin", "b9907151f66e"),
        ("000be9acf46619.jpg", "beluga", "a2b6a5f1bfea"),
        ("000bef247c7a42.jpg", "kiler_whale", "e2a8c8c8bc4a"),
        ("000c3d63c473c0.jpg", "humpback_whale", "1a71fbb72250"),
        ("000c476c11bad5.jpg", "globis", "afb22b20bf5e"),
    ];
    let mut csv = String::from("image,species,individual_id\n");
    for (i, (image, species, id)) in rows.iter().enumerate() {
        write(&data.join("train_images").join(image), jpeg_bytes(&photo(40 + i as u32, 64, 48)));
        csv += &format!("{image},{species},{id}\n");
    }
    write(&data.join("train.csv"), csv);
    // Test images come without labels.
    write(&data.join("test_images/000110707af0ba.jpg"), jpeg_bytes(&photo(80, 64, 48)));

    let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
    let report = run(&mut cat, &data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.files[0].kind, "labels, Happywhale (image,species,individual_id)");
    assert_eq!((report.photos.added, report.labels.applied, report.labels.individuals_added), (11, 10, 9));

    let humpback = cat.individual_by_code("1a71fbb72250").unwrap().expect("individual created");
    assert_eq!(humpback.species.as_deref(), Some("humpback_whale"));
    let sightings = cat.sightings(humpback.id).unwrap();
    let mut files: Vec<String> =
        sightings.iter().map(|s| cat.photo(s.photo_id).unwrap().unwrap().stored_path).collect();
    files.sort();
    assert_eq!(files, ["happywhale/train_images/000562241d384d.jpg", "happywhale/train_images/000c3d63c473c0.jpg"]);
    assert!(sightings.iter().all(|s| s.bbox.is_none() && s.status == Status::Verified));

    // The part follows the species as Happywhale spells it: flukes for humpbacks, dorsal fins
    // for the dolphins and toothed whales, the body otherwise.
    let part_of = |code: &str| {
        let ind = cat.individual_by_code(code).unwrap().unwrap_or_else(|| panic!("{code} not created"));
        let parts: Vec<Part> = cat.sightings(ind.id).unwrap().iter().map(|s| s.part).collect();
        (ind.species.unwrap(), parts[0])
    };
    let expected = [
        ("8e5253662392", "humpback_whale", Part::Fluke),
        ("60008f293a2b", "false_killer_whale", Part::DorsalFin),
        ("4b00fe572063", "bottlenose_dolphin", Part::DorsalFin),
        ("b9907151f66e", "bottlenose_dolpin", Part::DorsalFin),
        ("a2b6a5f1bfea", "beluga", Part::Body),
        ("e2a8c8c8bc4a", "kiler_whale", Part::DorsalFin),
        ("afb22b20bf5e", "globis", Part::DorsalFin),
    ];
    for (code, species, part) in expected {
        assert_eq!(part_of(code), (species.to_string(), part), "{code}");
    }
    let test_photo = photo_named(&cat, "000110707af0ba.jpg");
    assert!(cat.annotations_of_photo(test_photo.id).unwrap().is_empty(), "an unlabelled photo gets no crop");
}

/// A YOLO folder without `classes.txt` or labels says neither the part nor the species:
/// `import --part` and `--species` do, together or each on its own.
#[test]
fn cli_import_part_and_species_name_the_boxes_of_a_yolo_folder_without_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fins");
    photos(&data, 2, 100, 80);
    write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.4 0.4\n");
    write(&data.join("labels/p001.txt"), "0 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n");
    let import_into = |name: &str, options: &[&str]| {
        let cat = dir.path().join(name);
        let mut args = vec!["import", "--catalog", cat.to_str().unwrap(), data.to_str().unwrap(), "--json"];
        args.extend_from_slice(options);
        let report = common::whaleid_json_in(dir.path(), &args);
        assert_eq!(report[0]["boxes"]["added"], 3, "{report}");
        let cat = Catalogue::open(&cat).unwrap();
        let stats = whaleid::catalogue::stats::stats(&cat).unwrap();
        let parts: Vec<(String, i64)> = stats.annotations_by_part.into_iter().collect();
        let species: Vec<Option<String>> = cat
            .photos()
            .unwrap()
            .iter()
            .flat_map(|p| cat.annotations_of_photo(p.id).unwrap())
            .map(|a| a.species)
            .collect();
        (parts, species)
    };
    let (parts, species) = import_into("both.whaleid", &["--part", "dorsal_fin", "--species", "bottlenose_dolphin"]);
    assert_eq!(parts, [("dorsal_fin".to_string(), 3)]);
    assert_eq!(species, vec![Some("bottlenose_dolphin".to_string()); 3]);
    // Each on its own: the part as given, species unknown; the species, and its usual part.
    let (parts, species) = import_into("part.whaleid", &["--part", "dorsal_fin"]);
    assert_eq!((parts, species), (vec![("dorsal_fin".to_string(), 3)], vec![None; 3]));
    let (parts, species) = import_into("species.whaleid", &["--species", "humpback_whale"]);
    assert_eq!(parts, [("fluke".to_string(), 3)]);
    assert_eq!(species, vec![Some("humpback_whale".to_string()); 3]);
    // Without them the files say nothing: the whole animal, species unknown.
    let (parts, species) = import_into("plain.whaleid", &[]);
    assert_eq!((parts, species), (vec![("body".to_string(), 3)], vec![None; 3]));

    let out = common::whaleid_in(dir.path())
        .args(["import", "--catalog", "x.whaleid", data.to_str().unwrap(), "--part", "tail"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown part is refused before anything is imported");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tail") && err.contains("dorsal_fin"), "{err}");
    assert!(!dir.path().join("x.whaleid").exists());
}

/// Boxes whose files say nothing take the species and part the photo's label records: the
/// row's own species, else `--species`, else the one the label format implies; the part
/// from `--part`, else the species' usual part. Box and individual then agree.
#[test]
fn boxes_take_the_species_and_part_their_labels_record_with_the_import_options() {
    let dir = tempfile::tempdir().unwrap();
    let import_with = |name: &str, labels: &str, part: Option<Part>, species: Option<&str>| {
        let data = dir.path().join(name);
        photos(&data, 2, 100, 80);
        write(&data.join("labels/p000.txt"), "0 0.5 0.5 0.4 0.4\n");
        write(&data.join("labels/p001.txt"), "0 0.5 0.5 0.4 0.4\n");
        write(&data.join("labels.csv"), labels);
        let mut cat = Catalogue::create(&dir.path().join(format!("{name}.whaleid"))).unwrap();
        let opts = ImportOptions { part, species: species.map(str::to_string), ..Default::default() };
        let report = import(&mut cat, &data, &opts, &Silent).unwrap();
        assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
        let mut found = Vec::new();
        for p in ["p000.jpg", "p001.jpg"] {
            let a = cat.annotations_of_photo(photo_named(&cat, p).id).unwrap().remove(0);
            let individual = cat.identification(a.id).unwrap().expect("labelled").individual_id;
            let individual_species = cat.individual(individual).unwrap().unwrap().species;
            assert_eq!(a.species, individual_species, "{name} {p}: the box and its individual agree");
            found.push((a.part, a.species));
        }
        found
    };
    let dolphin = Some("bottlenose_dolphin".to_string());
    let generic = "image,individual_id,species\np000.jpg,B1,beluga\np001.jpg,D1,\n";
    assert_eq!(
        import_with("generic", generic, None, dolphin.as_deref()),
        [(Part::Body, Some("beluga".to_string())), (Part::DorsalFin, dolphin.clone())]
    );
    // Kaggle's `Image,Id` implies humpbacks, unless the biologist says otherwise.
    let kaggle = "Image,Id\np000.jpg,w_1\np001.jpg,w_2\n";
    assert_eq!(import_with("kaggle-dolphins", kaggle, None, dolphin.as_deref()), vec![(Part::DorsalFin, dolphin); 2]);
    let humpback = Some("humpback_whale".to_string());
    assert_eq!(import_with("kaggle", kaggle, None, None), vec![(Part::Fluke, humpback.clone()); 2]);
    assert_eq!(import_with("kaggle-bodies", kaggle, Some(Part::Body), None), vec![(Part::Body, humpback); 2]);
}
