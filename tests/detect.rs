//! The detection commands from the outside: `train-detector`, `detect` on a catalogue and on a
//! folder, and what each does with bad input (a file that is not a detector, a detector for
//! another backbone, a photo that does not decode, nothing to train on).
//!
//! The backbone is EfficientNet-Lite0 with random weights, written by the test: the commands'
//! plumbing runs on it in seconds on small synthetic photos, without the fetched weights (what
//! such a detector finds means nothing, so boxes are asked for at threshold 0).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{DType, Device};
use candle_nn::{Init, VarMap};
use common::{whaleid, write};
use whaleid::base::vocabulary::{Part, Source, Status};
use whaleid::catalogue::Catalogue;
use whaleid::models::detector::{Detector, DetectorCard, DetectorConfig};
use whaleid::models::{EfficientNetConfig, FileKind};

/// EfficientNet-Lite0 of random weights, saved as backbone weights in `dir`.
fn random_backbone(dir: &Path) -> PathBuf {
    let net = whaleid::models::efficientnet::random(&EfficientNetConfig::lite0(), &Device::Cpu).unwrap();
    let path = dir.join("efficientnet_lite0.safetensors");
    let bytes = safetensors::serialize(net.named_tensors(), Some(FileKind::Backbone.metadata())).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    whaleid().args(args).output().expect("whaleid runs")
}

/// Runs whaleid, expects success, and parses its `--json` report.
fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "whaleid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Expects whaleid to fail and returns what it said.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "whaleid {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// `whaleid synth` photos (512 x 384, one fluke box each) of `individuals` x 3 in `out`.
fn synth(out: &Path, individuals: usize, seed: u64) {
    let (n, seed) = (individuals.to_string(), seed.to_string());
    json(&["synth", "--out", s(out), "--individuals", &n, "--images-per-individual", "3", "--seed", &seed, "--json"]);
}

/// Three synthetic photos with no boxes and no labels: the photos of a `synth` run alone.
fn unboxed_photos(dir: &Path) -> PathBuf {
    let rendered = dir.join("rendered");
    synth(&rendered, 1, 99);
    let photos = dir.join("unboxed");
    std::fs::rename(rendered.join("images"), &photos).unwrap();
    photos
}

/// The photo's first bytes only: a JPEG cut short, as a copy interrupted half-way leaves it.
fn cut_short(photo: &Path) {
    let bytes = std::fs::read(photo).unwrap();
    std::fs::write(photo, &bytes[..bytes.len() / 2]).unwrap();
}

/// A catalogue of 6 synthetic photos with boxes, and the detector trained on it (its active
/// detector) over a random backbone.
struct Trained {
    dir: tempfile::TempDir,
    backbone: PathBuf,
    catalogue: PathBuf,
    detector: PathBuf,
    report: serde_json::Value,
}

/// The catalogue, backbone and detector that [`trained`] copies: trained once per run of
/// this file (training is the slow part), in cargo's scratch folder for tests.
struct Template {
    dir: PathBuf,
    backbone: PathBuf,
    detector: PathBuf,
    report: serde_json::Value,
}

fn template() -> &'static Template {
    static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("detect-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let backbone = random_backbone(&dir);
        let boxed = dir.join("boxed");
        synth(&boxed, 2, 1);
        let catalogue = dir.join("c.whaleid");
        json(&["import", "--catalog", s(&catalogue), s(&boxed), "--json"]);
        let detector = dir.join("detectors/d.safetensors");
        let report = json(&[
            "train-detector",
            "--catalog",
            s(&catalogue),
            "--backbone",
            s(&backbone),
            "--epochs",
            "4",
            "--long-side",
            "128",
            "--out",
            s(&detector),
            "--json",
        ]);
        Template { dir, backbone, detector, report }
    })
}

/// A copy of the template's catalogue and photos of its own (its active detector the
/// template's, which no test changes).
fn trained() -> Trained {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    let boxed = dir.path().join("boxed");
    std::fs::create_dir_all(&boxed).unwrap();
    for entry in std::fs::read_dir(t.dir.join("boxed")).unwrap() {
        let from = entry.unwrap().path();
        if from.is_dir() {
            let to = boxed.join(from.file_name().unwrap());
            std::fs::create_dir_all(&to).unwrap();
            for file in std::fs::read_dir(&from).unwrap() {
                let file = file.unwrap().path();
                std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&from, boxed.join(from.file_name().unwrap())).unwrap();
        }
    }
    let catalogue = dir.path().join("c.whaleid");
    std::fs::copy(t.dir.join("c.whaleid"), &catalogue).unwrap();
    Trained { dir, backbone: t.backbone.clone(), catalogue, detector: t.detector.clone(), report: t.report.clone() }
}

fn active(catalogue: &Path) -> Option<PathBuf> {
    whaleid::jobs::detect::active_detector(&Catalogue::open(catalogue).unwrap()).unwrap()
}

#[test]
fn train_detector_writes_the_detector_and_its_card_and_makes_it_active_undoably() {
    let t = trained();
    assert_eq!(t.report["detector"], s(&t.detector), "{}", t.report);
    assert!(t.detector.is_file());
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(t.detector.with_extension("json")).unwrap())
        .expect("a card in JSON beside the detector");
    assert_eq!(card["backbone"], "efficientnet_lite0");
    assert_eq!(card["long_side"], 128);
    assert_eq!(card["card"]["epochs"], 4);
    let (train, validation) = (card["card"]["train_photos"].as_u64(), card["card"]["validation_photos"].as_u64());
    assert_eq!(train.unwrap() + validation.unwrap(), 6, "{card}");
    assert!(validation.unwrap() >= 1, "{card}");
    assert_eq!(card["card"]["refit_on_all"], true, "the head written learned from the validation photos too: {card}");
    assert_eq!(card["card"], t.report["card"]);
    // The second look is part of the detector, and validation measured the boxes with and
    // without it.
    assert_eq!(card["refine"]["boxes"], 4, "{card}");
    assert_eq!(card["refine"]["input"], 192, "12 cells of Lite0's 16-px grid: {card}");
    assert_eq!(card["refine"]["judges"], true, "the second look judges its windows too: {card}");
    for key in ["validation_ap50", "validation_ap50_first_look", "validation_ap50_95_first_look"] {
        let v = card["card"][key].as_f64().unwrap_or_else(|| panic!("{key} in {card}"));
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    let det = whaleid::models::detector::Detector::load(&t.detector, "efficientnet_lite0", &Device::Cpu).unwrap();
    assert!(det.refiner.is_some(), "the second look is read back from the file");

    let detector = std::fs::canonicalize(&t.detector).unwrap();
    assert_eq!(active(&t.catalogue), Some(detector.clone()));
    json(&["undo", "--catalog", s(&t.catalogue), "--json"]);
    assert_eq!(active(&t.catalogue), None, "undo takes the activation back");
    json(&["redo", "--catalog", s(&t.catalogue), "--json"]);
    assert_eq!(active(&t.catalogue), Some(detector));
}

#[test]
fn eval_detect_measures_the_detector_with_and_without_its_second_look_beside_the_zero_shot_proposals() {
    let t = trained();
    let boxed = t.dir.path().join("boxed");
    let report =
        json(&["eval-detect", s(&boxed), "--backbone", s(&t.backbone), "--detector", s(&t.detector), "--json"]);
    assert_eq!((report["photos"].as_u64(), report["true_boxes"].as_u64()), (Some(6), Some(6)), "{report}");
    for kind in ["detector", "first_look", "zero_shot"] {
        for key in ["ap50", "ap50_95", "mean_best_iou"] {
            let v = report[kind][key].as_f64().unwrap_or_else(|| panic!("{kind}.{key} in {report}"));
            assert!((0.0..=1.0).contains(&v), "{kind}.{key} {v}");
        }
    }
    let text = run(&["eval-detect", s(&boxed), "--backbone", s(&t.backbone), "--detector", s(&t.detector)]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("learned detector") && text.contains("its first look only"), "{text}");

    // Zero-shot alone: no detector rows.
    let report = json(&["eval-detect", s(&boxed), "--backbone", s(&t.backbone), "--json"]);
    assert!(report["detector"].is_null() && report["first_look"].is_null(), "{report}");
}

#[test]
fn detect_on_a_catalogue_adds_unreviewed_scored_proposals_and_names_a_photo_that_does_not_decode() {
    let t = trained();
    let photos = unboxed_photos(t.dir.path());
    json(&["import", "--catalog", s(&t.catalogue), s(&photos), "--json"]);
    // The second of the three new photos is damaged after the import: found mid-run.
    let damaged = photos.join("whale_0000_01.jpg");
    cut_short(&damaged);

    let report =
        json(&["detect", "--catalog", s(&t.catalogue), "--backbone", s(&t.backbone), "--threshold", "0", "--json"]);
    assert_eq!(report["photos_skipped"], 6, "the photos with boxes are left alone: {report}");
    assert_eq!(report["photos_searched"], 2, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(problems[0]["photo"].as_str().unwrap().ends_with("whale_0000_01.jpg"), "{report}");
    assert!(!problems[0]["problem"].as_str().unwrap().is_empty());
    let detector = std::fs::canonicalize(&t.detector).unwrap();
    assert_eq!(report["detector"], s(&detector), "the active detector was used");

    let cat = Catalogue::open(&t.catalogue).unwrap();
    let mut proposals = 0;
    for photo in cat.photos().unwrap() {
        let annotations = cat.annotations_of_photo(photo.id).unwrap();
        if photo.stored_path.starts_with("boxed/") {
            assert_eq!(annotations.len(), 1);
            assert_eq!(annotations[0].source, Source::Imported);
            continue;
        }
        if photo.stored_path.ends_with("whale_0000_01.jpg") {
            assert!(annotations.is_empty(), "the damaged photo gets nothing");
            continue;
        }
        assert!(!annotations.is_empty(), "{} got no proposal", photo.stored_path);
        for a in &annotations {
            assert_eq!((a.source, a.status, a.part), (Source::Detector, Status::Unreviewed, Part::Fluke));
            let score = a.score.expect("a proposal carries its score");
            assert!((0.0..=1.0).contains(&score), "{score}");
            let b = a.bbox.expect("a proposal is a box");
            assert!(b.w > 0.0 && b.h > 0.0 && b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= 512.01 && b.y + b.h <= 384.01);
        }
        proposals += annotations.len();
    }
    assert_eq!(report["boxes_added"], proposals, "{report}");
}

#[test]
fn detect_on_a_folder_writes_coco_results_names_a_photo_that_does_not_decode_and_leaves_the_catalogue_alone() {
    let t = trained();
    let photos = unboxed_photos(t.dir.path());
    // A damaged photo among the good ones, sorted between them.
    let damaged = write(&photos.join("whale_0000_00b.jpg"), std::fs::read(photos.join("whale_0000_00.jpg")).unwrap());
    cut_short(&damaged);
    let history = |c: &Path| json(&["history", "--catalog", s(c), "--json"]);
    let before = (history(&t.catalogue), std::fs::read(&t.catalogue).unwrap().len());

    let boxes = t.dir.path().join("boxes.json");
    let out = run(&[
        "detect",
        s(&photos),
        "--catalog",
        s(&t.catalogue),
        "--backbone",
        s(&t.backbone),
        "--threshold",
        "0",
        "--out",
        s(&boxes),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a damaged photo is reported, not fatal: {stderr}");
    assert!(stderr.contains(s(&damaged)), "the damaged photo is named: {stderr}");

    let found: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&boxes).unwrap()).unwrap();
    let keys: BTreeSet<&str> = ["bbox", "category", "image", "score"].into();
    let mut images = BTreeSet::new();
    for entry in &found {
        let entry_keys: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(entry_keys, keys, "{entry}");
        let bbox: Vec<f64> = entry["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let [x, y, w, h] = bbox[..] else { panic!("bbox is [x, y, w, h]: {entry}") };
        assert!(w > 0.0 && h > 0.0 && x >= 0.0 && y >= 0.0 && x + w <= 512.01 && y + h <= 384.01, "{entry}");
        assert!((0.0..=1.0).contains(&entry["score"].as_f64().unwrap()), "{entry}");
        assert_eq!(entry["category"], "fluke", "the detector's part");
        images.insert(entry["image"].as_str().unwrap().to_string());
    }
    let good: BTreeSet<String> =
        ["whale_0000_00.jpg", "whale_0000_01.jpg", "whale_0000_02.jpg"].map(String::from).into();
    assert_eq!(images, good, "every good photo, named relative to the folder, gets boxes");
    assert_eq!((history(&t.catalogue), std::fs::read(&t.catalogue).unwrap().len()), before);
}

#[test]
fn a_detector_file_that_is_not_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = random_backbone(dir.path());
    let photos = dir.path().join("photos");
    common::photos(&photos, 1, 64, 48);

    // A trained head, as training writes it.
    let vars = VarMap::new();
    vars.get(4, "neck.linear.bias", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    let head = dir.path().join("run").join(whaleid::models::HEAD_FILE);
    std::fs::create_dir_all(head.parent().unwrap()).unwrap();
    let config = whaleid::jobs::train::config::TrainConfig::default();
    whaleid::jobs::train::checkpoint::save_checkpoint(&vars, &config, &[], &head).unwrap();
    // Random bytes.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let junk = write(&dir.path().join("junk.safetensors"), noise);

    for (file, says) in [(&head, "a trained head, not a detector"), (&junk, "not a safetensors file")] {
        let stderr = fails(&["detect", s(&photos), "--backbone", s(&backbone), "--detector", s(file)]);
        assert!(stderr.contains(s(file)), "names the file: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("detector"), "says it is not a detector: {stderr}");
    }
}

#[test]
fn a_detector_trained_for_another_backbone_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = random_backbone(dir.path());
    let photos = dir.path().join("photos");
    common::photos(&photos, 1, 64, 48);
    let config = DetectorConfig {
        backbone: "dinov2_vits14".into(),
        taps: vec![12],
        long_side: 224,
        stride: 14,
        channels: vec![384],
        hidden: 8,
        parts: vec![Part::Fluke],
        calibration: Default::default(),
        refine: None,
        card: DetectorCard::default(),
    };
    let vars = VarMap::new();
    Detector::new(config.clone(), &vars, &Device::Cpu).unwrap();
    let file = dir.path().join("dinov2-detector.safetensors");
    Detector::save(&[&vars], &config, &file).unwrap();

    let stderr = fails(&["detect", s(&photos), "--backbone", s(&backbone), "--detector", s(&file)]);
    assert!(stderr.contains(s(&file)), "names the file: {stderr}");
    assert!(stderr.contains("dinov2_vits14") && stderr.contains("efficientnet_lite0"), "names both: {stderr}");
}

#[test]
fn train_detector_without_boxes_fails_naming_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = random_backbone(dir.path());
    let photos = unboxed_photos(dir.path());
    let catalogue = dir.path().join("no-boxes.whaleid");
    json(&["import", "--catalog", s(&catalogue), s(&photos), "--json"]);
    let out = dir.path().join("d.safetensors");
    let stderr = fails(&[
        "train-detector",
        "--catalog",
        s(&catalogue),
        "--backbone",
        s(&backbone),
        "--long-side",
        "128",
        "--out",
        s(&out),
    ]);
    assert!(stderr.contains(s(&catalogue)) && stderr.contains("no boxes to train"), "{stderr}");
    assert!(!out.exists(), "no detector written");
    assert_eq!(active(&catalogue), None);
}
