//! Synthetic whales: the demo catalogue and the test data for metric learning.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use image::RgbImage;
use image::imageops::FilterType;
use whaleid::jobs::synth::{self, SynthOptions};

fn read_labels(path: &Path) -> Vec<(String, String)> {
    let mut reader = csv::Reader::from_path(path).expect("labels.csv is readable");
    let headers = reader.headers().expect("labels.csv has a header").clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), ["image", "individual_id", "species", "side", "part"]);
    reader
        .records()
        .map(|r| {
            let r = r.expect("labels.csv rows parse");
            assert_eq!((&r[2], &r[3], &r[4]), ("humpback_whale", "unknown", "fluke"));
            (r[0].to_string(), r[1].to_string())
        })
        .collect()
}

fn read_yolo_box(path: &Path) -> [f32; 4] {
    let text = fs::read_to_string(path).expect("YOLO label exists");
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{}: {text:?}", path.display());
    assert_eq!(fields[0], "0");
    let v: Vec<f32> = fields[1..].iter().map(|f| f.parse().expect("a number")).collect();
    [v[0], v[1], v[2], v[3]]
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-9)
}

#[test]
fn pixel_baseline_cannot_identify_synthetic_whales() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions::new(dir.path(), 30, 6, 7);
    let written = AtomicUsize::new(0);
    let report = synth::generate(&opts, &|| {
        written.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(report.photos, 180);
    assert_eq!(report.individuals, 30);
    assert_eq!(written.load(Ordering::Relaxed), 180, "on_photo is called once per photo");

    let labels = read_labels(&report.labels_csv);
    assert_eq!(labels.len(), 180);
    let thumbnails: Vec<(String, Vec<f32>)> = labels
        .iter()
        .map(|(file, id)| {
            let photo = image::open(report.images_dir.join(file)).unwrap().grayscale();
            let small = photo.resize_exact(32, 32, FilterType::Triangle).to_luma8();
            (id.clone(), small.as_raw().iter().map(|&v| v as f32).collect())
        })
        .collect();

    let correct = thumbnails
        .iter()
        .enumerate()
        .filter(|(i, (id, query))| {
            let nearest = thumbnails
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .max_by(|(_, (_, a)), (_, (_, b))| cosine(query, a).total_cmp(&cosine(query, b)))
                .map(|(_, (other, _))| other);
            nearest == Some(id)
        })
        .count();
    let top1 = correct as f32 / thumbnails.len() as f32;
    println!(
        "pixel baseline (32x32 grey, cosine 1-NN, leave-one-out): top-1 = {top1:.3} \
         ({correct}/180; chance = {:.3})",
        5.0 / 179.0
    );
    assert!(top1 < 0.25, "raw pixels identify {top1:.3} of photos: nuisance variation is too weak");
}

#[test]
fn the_same_seed_writes_the_same_bytes_and_another_seed_other_whales() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = |dir: &Path, seed| SynthOptions { width: 256, height: 192, ..SynthOptions::new(dir, 3, 2, seed) };
    for (dir, seed) in [(&a, 11), (&b, 11), (&c, 12)] {
        synth::generate(&options(dir.path(), seed), &|| {}).unwrap();
    }
    let files = [
        "labels.csv",
        "labels/classes.txt",
        "images/whale_0000_00.jpg",
        "images/whale_0001_01.jpg",
        "images/whale_0002_00.jpg",
        "labels/whale_0000_00.txt",
        "labels/whale_0002_01.txt",
    ];
    for file in files {
        let first = fs::read(a.path().join(file)).unwrap();
        assert_eq!(first, fs::read(b.path().join(file)).unwrap(), "{file} differs between runs");
    }
    for file in ["images/whale_0000_00.jpg", "images/whale_0001_01.jpg"] {
        let first = image::open(a.path().join(file)).unwrap().to_rgb8();
        let other = image::open(c.path().join(file)).unwrap().to_rgb8();
        assert_ne!(first, other, "{file} is the same under another seed");
    }
}

/// Mean edge strength (grey-level gradient) inside a box and outside it: the black-and-white
/// fluke is all edges, the sea is smooth.
fn edge_strength(image: &RgbImage, in_box: impl Fn(u32, u32) -> bool) -> (f32, f32) {
    let grey = image::DynamicImage::ImageRgb8(image.clone()).to_luma8();
    let (w, h) = grey.dimensions();
    let (mut sums, mut counts) = ([0.0f32; 2], [0.0f32; 2]);
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let p = grey.get_pixel(x, y)[0] as f32;
            let dx = (grey.get_pixel(x + 1, y)[0] as f32 - p).abs();
            let dy = (grey.get_pixel(x, y + 1)[0] as f32 - p).abs();
            let k = in_box(x, y) as usize;
            sums[k] += dx + dy;
            counts[k] += 1.0;
        }
    }
    (sums[1] / counts[1].max(1.0), sums[0] / counts[0].max(1.0))
}

#[test]
fn fluke_boxes_cover_the_fluke_and_later_individuals_continue_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions { first_individual: 5, ..SynthOptions::new(dir.path(), 6, 3, 21) };
    let report = synth::generate(&opts, &|| {}).unwrap();

    let labels = read_labels(&report.labels_csv);
    let ids: Vec<&str> = labels.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.first(), Some(&"SYN-0005"));
    assert_eq!(ids.last(), Some(&"SYN-0010"));
    assert_eq!(labels[0].0, "whale_0005_00.jpg");
    assert_eq!(fs::read_to_string(dir.path().join("labels/classes.txt")).unwrap().trim(), "fluke");

    let mut contrasts = Vec::new();
    for (file, _) in &labels {
        let image = image::open(report.images_dir.join(file)).unwrap().to_rgb8();
        let (w, h) = image.dimensions();
        let [cx, cy, bw, bh] = read_yolo_box(&dir.path().join("labels").join(file.replace(".jpg", ".txt")));
        for v in [cx, cy, bw, bh] {
            assert!((0.0..=1.0).contains(&v), "{file}: box {cx} {cy} {bw} {bh} leaves the photo");
        }
        assert!(cx - bw / 2.0 >= -1e-4 && cx + bw / 2.0 <= 1.0 + 1e-4, "{file}: box crosses the frame");
        assert!(cy - bh / 2.0 >= -1e-4 && cy + bh / 2.0 <= 1.0 + 1e-4, "{file}: box crosses the frame");
        assert!(bw > 0.2 && bh > 0.05, "{file}: the fluke box {bw}x{bh} is implausibly small");
        assert!(bw * bh < 0.8, "{file}: the fluke box {bw}x{bh} is most of the frame");

        // The box holds the black-and-white fluke; the sea around it is smoother.
        let (x0, x1) = (((cx - bw / 2.0) * w as f32) as u32, ((cx + bw / 2.0) * w as f32) as u32);
        let (y0, y1) = (((cy - bh / 2.0) * h as f32) as u32, ((cy + bh / 2.0) * h as f32) as u32);
        let in_box = |x: u32, y: u32| (x0..x1).contains(&x) && (y0..y1).contains(&y);
        let (inside, outside) = edge_strength(&image, in_box);
        contrasts.push(inside / outside.max(1e-3));
    }
    contrasts.sort_by(f32::total_cmp);
    println!("edge strength inside / outside the fluke boxes: {contrasts:.2?}");
    assert!(contrasts[0] > 1.2, "a box misses the fluke: {contrasts:.2?}");
    assert!(contrasts[contrasts.len() / 2] > 1.8, "boxes are loose or misplaced: {contrasts:.2?}");

    // Individual 6 is the same whale whether it comes second of six or first of one.
    let alone = tempfile::tempdir().unwrap();
    let one = SynthOptions { first_individual: 6, ..SynthOptions::new(alone.path(), 1, 3, 21) };
    synth::generate(&one, &|| {}).unwrap();
    for file in ["images/whale_0006_01.jpg", "labels/whale_0006_02.txt"] {
        assert_eq!(
            fs::read(dir.path().join(file)).unwrap(),
            fs::read(alone.path().join(file)).unwrap(),
            "{file} depends on how many individuals were generated"
        );
    }
    // And render_photo draws exactly what generate saved (up to JPEG loss).
    let (rendered, fluke_box) = synth::render_photo(21, 6, 1, 512, 384);
    let saved = image::open(dir.path().join("images/whale_0006_01.jpg")).unwrap().to_rgb8();
    let diff = rendered.as_raw().iter().zip(saved.as_raw()).map(|(a, b)| a.abs_diff(*b) as f32).sum::<f32>()
        / rendered.as_raw().len() as f32;
    assert!(diff < 4.0, "render_photo differs from the saved photo by {diff} per channel");
    let [cx, cy, bw, bh] = read_yolo_box(&dir.path().join("labels/whale_0006_01.txt"));
    let [x, y, w, h] = fluke_box;
    assert!((cx - (x + w / 2.0) / 512.0).abs() < 1e-5 && (bh - h / 384.0).abs() < 1e-5);
    assert!((cy - (y + h / 2.0) / 384.0).abs() < 1e-5 && (bw - w / 512.0).abs() < 1e-5);
}

#[test]
fn photos_carry_a_capture_date_within_the_survey_season() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions { width: 128, height: 96, ..SynthOptions::new(dir.path(), 4, 3, 3) };
    synth::generate(&opts, &|| {}).unwrap();
    let mut days = std::collections::BTreeSet::new();
    for individual in 0..4 {
        for photo in 0..3 {
            let path = dir.path().join("images").join(synth::photo_file_name(individual, photo));
            let file = fs::File::open(&path).unwrap();
            let exif = exif::Reader::new()
                .read_from_container(&mut std::io::BufReader::new(file))
                .expect("the JPEG carries EXIF");
            let taken = exif
                .get_field(exif::Tag::DateTimeOriginal, exif::In::PRIMARY)
                .expect("DateTimeOriginal is set")
                .display_value()
                .to_string();
            assert!(taken.as_str() > "2024-06-01" && taken.as_str() < "2024-10-01", "{taken}");
            days.insert(taken[..10].to_string());
            let latitude = exif.get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY).expect("GPS latitude");
            assert!(latitude.display_value().to_string().starts_with("42 deg"), "{}", latitude.display_value());
        }
    }
    assert!(days.len() >= 3, "12 photos of 4 whales span only {days:?}");
}
