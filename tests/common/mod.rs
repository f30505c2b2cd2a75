//! Helpers shared by the integration tests: small photos and datasets made on the fly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{ImageEncoder, Rgb, RgbImage};

/// A distinct little photo: the pattern depends on `seed`, so every file hashes differently.
pub fn photo(seed: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(31).wrapping_add(y.wrapping_mul(17)).wrapping_add(seed.wrapping_mul(2_654_435_761));
        Rgb([(v >> 3) as u8, (v >> 11) as u8 ^ (seed as u8), (x * 255 / w.max(1)) as u8])
    })
}

pub fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(img).unwrap();
    out
}

pub fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> PathBuf {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// Writes `n` JPEG photos `images/p000.jpg`... under `dir`.
pub fn photos(dir: &Path, n: u32, w: u32, h: u32) -> Vec<PathBuf> {
    (0..n).map(|i| write(&dir.join(format!("images/p{i:03}.jpg")), jpeg_bytes(&photo(i, w, h)))).collect()
}

/// A PNG whose header claims a size; its CRC is recomputed so only the size is wrong.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = png_bytes(&photo(1, 4, 4));
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = 0xFFFF_FFFFu32;
    for &b in &png[12..29] {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

/// `../shared` beside the repository, when this machine has it.
pub fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("data").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/data is not on this machine");
        None
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_whaleid"))
}

/// Runs the whaleid binary, expects success, and parses its `--json` output.
pub fn whaleid_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(bin()).args(args).output().expect("whaleid runs");
    assert!(out.status.success(), "whaleid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A catalogue `c.whaleid` in `dir` of `n` photos (`p0.jpg`, ... 100 x 80 px, taken on
/// consecutive days from 1 June 2024; no files on disk), each with one unreviewed fluke box
/// of `species`, added in one edit labelled `setup`. Returns it with the annotation ids.
pub fn boxed_catalogue(
    dir: &Path,
    n: usize,
    species: Option<&str>,
) -> (whaleid::catalogue::Catalogue, Vec<whaleid::base::ids::AnnotationId>) {
    use whaleid::base::photo::PhotoFacts;
    use whaleid::base::vocabulary::{BoxPx, Part, Side, Source, Status};
    use whaleid::catalogue::{Catalogue, NewAnnotation, NewPhoto};
    let mut cat = Catalogue::create(&dir.join("c.whaleid")).unwrap();
    let ids = cat
        .edit("setup", |e| {
            let mut ids = Vec::new();
            for i in 0..n {
                let facts = PhotoFacts {
                    hash: format!("h{i}"),
                    width: 100,
                    height: 80,
                    orientation: 1,
                    taken_at: Some(format!("2024-06-{:02}T10:00:00", i + 1)),
                    latitude: None,
                    longitude: None,
                };
                let photo = e.insert_photo(&NewPhoto { stored_path: format!("p{i}.jpg"), facts })?;
                ids.push(e.insert_annotation(&NewAnnotation {
                    photo_id: photo,
                    bbox: Some(BoxPx::new(10.0, 10.0, 50.0, 40.0)),
                    part: Part::Fluke,
                    side: Side::Unknown,
                    source: Source::Manual,
                    status: Status::Unreviewed,
                    species: species.map(str::to_string),
                    score: None,
                })?);
            }
            Ok(ids)
        })
        .unwrap();
    (cat, ids)
}

pub mod app;
