//! `whaleid bench detect`: detection end to end per photo (decode, resize, the backbone's
//! features, the head, suppression) with detection's default backbone (or the one asked for)
//! at its default long side; `train-detector`'s time on the same photos; and the backbone
//! alone at the detector's input size against onnxruntime running the same backbone on the
//! same input size, in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::Serialize;

use super::{Rounds, embed, embed_cnn, median, tempdir};
use crate::base::console::Console;
use crate::base::progress::Progress;
use crate::base::vocabulary::Part;
use crate::catalogue::Catalogue;
use crate::jobs::detect::{DEFAULT_THRESHOLD, Finder, TrainDetectorOptions, default_long_side};
use crate::models::{KnownModel, Tap, detector};

/// What a photo may take, end to end, on two cores.
const TARGET_SECONDS_PER_PHOTO: f64 = 1.0;
/// The synthetic photos' size when the real ones are absent: a 1600-px field photo.
const SYNTHETIC_SIZE: (u32, u32) = (1600, 1068);
/// Synthetic photos rendered when `--photos` does not say (as many as the real data set has).
const SYNTHETIC_PHOTOS: usize = 81;
/// Backbone passes timed for the ratio against onnxruntime, on each side.
const BACKBONE_RUNS: usize = 8;

pub(super) struct DetectBenchOptions {
    pub backbone: KnownModel,
    pub data: PathBuf,
    pub photos: Option<usize>,
    pub epochs: usize,
    /// Rounds of the backbone alone, then onnxruntime (see [`Rounds`]).
    pub rounds: usize,
    pub models_dir: PathBuf,
    pub json: bool,
}

#[derive(Serialize)]
struct DetectBench {
    /// The backbone's name as typed on the command line.
    backbone: String,
    /// Where the photos came from: the real photos' folder, or `synthetic`.
    photos_from: String,
    photos: usize,
    photo_width: u32,
    photo_height: u32,
    long_side: u32,
    /// The detector's input for these photos (the first photo's, resized).
    input_width: usize,
    input_height: usize,
    threads: usize,
    /// Decode + resize + backbone features + head + suppression, mean over the photos.
    seconds_per_photo: f64,
    median_seconds_per_photo: f64,
    /// The decoding's share of it.
    decode_seconds_per_photo: f64,
    target_seconds_per_photo: f64,
    meets_target: bool,
    /// Whether the head was trained here (else an untrained head: the same work per photo).
    head_trained: bool,
    training: Option<Training>,
    /// The backbone alone at the detector's input size, one photo per pass (the median
    /// round's mean).
    backbone_ms_per_input: f64,
    /// onnxruntime ms ÷ whaleid ms for the backbone at the same input, the median of the
    /// rounds': >= 1.0 means whaleid is at least as fast.
    ratio_vs_onnxruntime: Option<f64>,
    /// Each round's figures, whaleid's and onnxruntime's.
    rounds: Rounds,
}

#[derive(Serialize)]
struct Training {
    photos: usize,
    boxes: usize,
    epochs: usize,
    /// `train-detector` from start to written file: features of every photo (and its mirror
    /// image), the epochs, validation.
    seconds: f64,
    validation_ap50: Option<f64>,
}

pub(super) fn bench_detect(opts: &DetectBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.photos != Some(0), "--photos must be positive");
    let weights = crate::jobs::detect::known_backbone_path_in(opts.backbone, &opts.models_dir)?;
    let backbone = crate::models::load_backbone(&weights, &Device::Cpu)?;
    let long_side = default_long_side(backbone.as_ref());
    let threads = rayon::current_num_threads();
    let console = Console::new(opts.json);
    let scratch = tempdir("whaleid-bench-detect")?;

    // The photos, as a dataset with boxes (for training) in the scratch folder.
    let dataset = scratch.path().join("data");
    let (photos_from, part) = if opts.data.join("images").is_dir() {
        copy_dataset(&opts.data, &dataset, opts.photos)?;
        (opts.data.display().to_string(), Some(Part::DorsalFin))
    } else {
        let n = opts.photos.unwrap_or(SYNTHETIC_PHOTOS);
        let mut synth = crate::jobs::synth::SynthOptions::new(&dataset, n, 1, 7);
        (synth.width, synth.height) = SYNTHETIC_SIZE;
        console.stage("rendering", n as u64);
        crate::jobs::synth::generate(&synth, &|| console.advance(1))?;
        ("synthetic".to_string(), None)
    };
    let files = crate::base::photo::photos_under(&dataset.join("images"));
    anyhow::ensure!(!files.is_empty(), "{}: no photos", opts.data.display());

    // The head: trained on the photos' boxes, or untrained (the same work per photo).
    let (finder, training) = if opts.epochs > 0 {
        let mut cat = Catalogue::create(&scratch.path().join("bench.whaleid"))?;
        let import = crate::jobs::import::ImportOptions { part, ..Default::default() };
        crate::jobs::import::import(&mut cat, &dataset, &import, &console)?;
        let train = TrainDetectorOptions {
            epochs: opts.epochs,
            out: Some(scratch.path().join("detector.safetensors")),
            ..Default::default()
        };
        let start = Instant::now();
        let report = crate::jobs::detect::train_detector(&mut cat, backbone.clone(), &train, &console)?;
        let seconds = start.elapsed().as_secs_f64();
        let training = Training {
            photos: report.card.train_photos + report.card.validation_photos,
            boxes: report.card.train_boxes + report.card.validation_boxes,
            epochs: opts.epochs,
            seconds,
            validation_ap50: report.card.validation_ap50,
        };
        (Finder::learned(backbone.clone(), &report.detector)?, Some(training))
    } else {
        let parts = vec![part.unwrap_or(Part::Fluke)];
        let (_, det) = crate::jobs::detect::untrained_detector(backbone.as_ref(), &Default::default(), parts)?;
        let det = crate::jobs::detect::with_untrained_second_look(backbone.as_ref(), det)?;
        (Finder::with_detector(backbone.clone(), det), None)
    };

    // Detection end to end, photo by photo, after one photo to warm up.
    let first =
        crate::base::photo::decode_file(&files[0]).map_err(|e| anyhow::anyhow!("{}: {e}", files[0].display()))?;
    finder.find(&first, DEFAULT_THRESHOLD)?;
    console.stage("detecting", files.len() as u64);
    let (mut times, mut decoding) = (Vec::new(), Duration::ZERO);
    for file in &files {
        let start = Instant::now();
        let img = crate::base::photo::decode_file(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        decoding += start.elapsed();
        finder.find(&img, DEFAULT_THRESHOLD)?;
        times.push(start.elapsed());
        console.advance(1);
    }
    drop(console);
    let n = times.len() as f64;
    let seconds_per_photo = times.iter().map(Duration::as_secs_f64).sum::<f64>() / n;

    // The backbone alone on the first photo's input, and onnxruntime on an input of that size.
    let input = detector::prepare_photo(&first, long_side, backbone.input_multiple(), backbone.device())?;
    let (_, _, height, width) = input.image.dims4()?;
    let final_map = [Tap::Output(backbone.depth())];
    let rounds = Rounds::run(
        opts.rounds,
        || {
            let mut passes = Vec::new();
            for _ in 0..BACKBONE_RUNS {
                let start = Instant::now();
                drop(backbone.features(&input.image, &final_map)?);
                passes.push(start.elapsed().as_secs_f64() * 1e3);
            }
            Ok((
                passes.iter().sum::<f64>() / BACKBONE_RUNS as f64,
                passes.iter().copied().fold(f64::INFINITY, f64::min),
            ))
        },
        || match opts.backbone.efficientnet() {
            Some(_) => embed_cnn::onnxruntime_reference(&weights, BACKBONE_RUNS, 1, (height, width), threads),
            None => embed::onnxruntime_reference(&opts.models_dir, BACKBONE_RUNS, 1, (height, width), threads),
        },
    )?;

    let out = DetectBench {
        backbone: opts.backbone.label().to_string(),
        photos_from,
        photos: times.len(),
        photo_width: first.width(),
        photo_height: first.height(),
        long_side,
        input_width: width,
        input_height: height,
        threads,
        seconds_per_photo,
        median_seconds_per_photo: median(times).as_secs_f64(),
        decode_seconds_per_photo: decoding.as_secs_f64() / n,
        target_seconds_per_photo: TARGET_SECONDS_PER_PHOTO,
        meets_target: seconds_per_photo < TARGET_SECONDS_PER_PHOTO,
        head_trained: training.is_some(),
        training,
        backbone_ms_per_input: rounds.ms_per_image(),
        ratio_vs_onnxruntime: rounds.ratio(),
        rounds,
    };
    crate::base::console::emit(opts.json, &out, render)
}

fn render(o: &DetectBench) -> String {
    let source = match o.photos_from.as_str() {
        "synthetic" => "synthetic photos (the real ones are absent)".to_string(),
        dir => format!("real photos from {dir}"),
    };
    let mut text = format!(
        "detection with {} at {} px on the longer side, {} threads, CPU\n  \
         {} {}x{} {source} (input {}x{}), {} head\n  \
         end to end (decode, resize, features, head, suppression): {:.3} s/photo (median {:.3}, decoding {:.3}); \
         target < {:.1} s: {}",
        o.backbone,
        o.long_side,
        o.threads,
        o.photos,
        o.photo_width,
        o.photo_height,
        o.input_width,
        o.input_height,
        if o.head_trained { "trained" } else { "untrained" },
        o.seconds_per_photo,
        o.median_seconds_per_photo,
        o.decode_seconds_per_photo,
        o.target_seconds_per_photo,
        if o.meets_target { "met" } else { "missed" },
    );
    if let Some(t) = &o.training {
        let ap = t.validation_ap50.map(|a| format!("{a:.3}")).unwrap_or_else(|| "n/a".into());
        text.push_str(&format!(
            "\n  train-detector on {} photo(s), {} box(es), {} epoch(s): {:.1} s (validation AP50 {ap})",
            t.photos, t.boxes, t.epochs, t.seconds
        ));
    }
    text.push_str(&format!(
        "\n  {} alone at {}x{} (an image is one input), {} rounds: whaleid {:.1} ms",
        o.backbone,
        o.input_width,
        o.input_height,
        o.rounds.ms_per_image.len(),
        o.backbone_ms_per_input
    ));
    text.push_str(&o.rounds.describe());
    text
}

/// Copies the first `photos` (default: all) of `data/images` and their YOLO labels
/// (`data/labels/NAME.txt`) to `to`, a dataset of just those photos.
fn copy_dataset(data: &Path, to: &Path, photos: Option<usize>) -> anyhow::Result<()> {
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map_err(|e| anyhow::anyhow!("{} -> {}: {e}", from.display(), to.display()))
    };
    std::fs::create_dir_all(to.join("images"))?;
    std::fs::create_dir_all(to.join("labels"))?;
    let files = crate::base::photo::photos_under(&data.join("images"));
    for file in files.iter().take(photos.unwrap_or(usize::MAX)) {
        let Some(name) = file.file_name() else { continue };
        copy(file, &to.join("images").join(name))?;
        let label = data.join("labels").join(Path::new(name).with_extension("txt"));
        if label.is_file() {
            copy(&label, &to.join("labels").join(Path::new(name).with_extension("txt")))?;
        }
    }
    for extra in ["classes.txt", "data.yaml"] {
        for dir in [data.to_path_buf(), data.join("labels")] {
            if dir.join(extra).is_file() {
                let target = if dir == data { to.join(extra) } else { to.join("labels").join(extra) };
                copy(&dir.join(extra), &target)?;
            }
        }
    }
    Ok(())
}
