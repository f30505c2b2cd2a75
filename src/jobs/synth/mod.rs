//! Synthetic humpback-whale fluke photographs: the demo catalogue and test data for metric
//! learning.
//!
//! An individual's identity is drawn from `(seed, individual)` alone: the shape of its trailing
//! edge (scallops, the central notch, nicks and missing chunks), its black-and-white ventral
//! pigmentation, its scars and the survey days it was sighted on. A photograph is drawn from
//! `(seed, individual, photo)`: pose, sea and sky, light, water streaming off the fluke,
//! occlusion and blur. So individual 7 looks the same whether 10 or 100 are generated.
//!
//! The identity is painted once into a texture in the fluke's canonical frame: `u` runs across
//! the span from the left tip (-0.5) to the right tip (+0.5) as the photographer sees the
//! ventral side, `v` runs down from the trailing edge (0 at the notch) to the tail stock; one
//! unit is the span. A photo maps that frame into the picture with one affine transform per
//! lobe (both agree on the centre line), which gives rotation, scale, perspective squash and
//! shear, plus a slight yaw asymmetry between the lobes.

mod files;
mod fluke;
mod geometry;
mod noise;
mod paint;
mod photo;
mod pigment;
mod pose;
mod sea;
mod seeds;
mod sightings;
mod water;
mod whale;

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use image::RgbImage;
use rayon::prelude::*;

use files::{write_jpeg, write_labels_csv, yolo_line};

pub use files::{SPECIES, individual_id, photo_file_name};
use whale::SyntheticWhale;

/// What to generate and where.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub individuals: usize,
    pub images_per_individual: usize,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// Individuals are numbered from here, so a second call can make *other* individuals
    /// (train on 30, evaluate on 20 others).
    pub first_individual: usize,
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
}

impl SynthOptions {
    pub fn new(out: impl Into<PathBuf>, individuals: usize, images_per_individual: usize, seed: u64) -> Self {
        Self {
            out: out.into(),
            individuals,
            images_per_individual,
            seed,
            width: 512,
            height: 384,
            first_individual: 0,
            jpeg_quality: 90,
        }
    }
}

/// What `generate` wrote.
#[derive(Clone, Debug)]
pub struct SynthReport {
    pub photos: usize,
    pub individuals: usize,
    pub labels_csv: PathBuf,
    pub images_dir: PathBuf,
}

const MIN_SIDE: u32 = 64;
const MAX_SIDE: u32 = 8192;

/// Renders all photos (in parallel with rayon), calling `on_photo` once per photo written.
///
/// Writes `images/whale_IIII_PP.jpg` (with EXIF date and GPS), `labels.csv`
/// (`image,individual_id,species,side,part`), and YOLO boxes `labels/whale_IIII_PP.txt` with
/// `labels/classes.txt`.
///
/// # Errors
/// When the options are out of range or a file cannot be written.
pub fn generate(opts: &SynthOptions, on_photo: &(dyn Fn() + Sync)) -> Result<SynthReport> {
    ensure!(
        (MIN_SIDE..=MAX_SIDE).contains(&opts.width) && (MIN_SIDE..=MAX_SIDE).contains(&opts.height),
        "photo size {}x{} is outside {MIN_SIDE}..={MAX_SIDE} pixels",
        opts.width,
        opts.height
    );
    ensure!((1..=100).contains(&opts.jpeg_quality), "JPEG quality {} is outside 1..=100", opts.jpeg_quality);
    let images_dir = opts.out.join("images");
    let labels_dir = opts.out.join("labels");
    for dir in [&images_dir, &labels_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let first = opts.first_individual;
    let last = first.checked_add(opts.individuals).context("first_individual + individuals overflows")?;
    (first..last).into_par_iter().try_for_each(|individual| {
        let whale = SyntheticWhale::new(opts.seed, individual);
        (0..opts.images_per_individual).into_par_iter().try_for_each(|photo| {
            let (image, fluke_box) = whale.photograph(opts.seed, photo, opts.width, opts.height);
            let capture = whale.capture(opts.seed, photo);
            let name = photo_file_name(individual, photo);
            write_jpeg(&images_dir.join(&name), &image, opts.jpeg_quality, &capture)?;
            let yolo = labels_dir.join(name.replace(".jpg", ".txt"));
            fs::write(&yolo, yolo_line(fluke_box, opts.width, opts.height))
                .with_context(|| format!("writing {}", yolo.display()))?;
            on_photo();
            Ok::<_, anyhow::Error>(())
        })
    })?;

    let classes = labels_dir.join("classes.txt");
    fs::write(&classes, "fluke\n").with_context(|| format!("writing {}", classes.display()))?;
    let labels_csv = opts.out.join("labels.csv");
    write_labels_csv(&labels_csv, first..last, opts.images_per_individual)
        .with_context(|| format!("writing {}", labels_csv.display()))?;

    Ok(SynthReport {
        photos: opts.individuals * opts.images_per_individual,
        individuals: opts.individuals,
        labels_csv,
        images_dir,
    })
}

/// Renders one photo in memory (for benchmarks and tests): the RGB image and its fluke box
/// `[x, y, w, h]` in pixels (the visible part of the fluke, clipped to the frame).
pub fn render_photo(seed: u64, individual: usize, photo: usize, width: u32, height: u32) -> (RgbImage, [f32; 4]) {
    let width = width.clamp(MIN_SIDE, MAX_SIDE);
    let height = height.clamp(MIN_SIDE, MAX_SIDE);
    SyntheticWhale::new(seed, individual).photograph(seed, photo, width, height)
}
