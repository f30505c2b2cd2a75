//! `whaleid train-detector`: the learned detector's head, trained on the frozen backbone's
//! feature grids of the catalogue's photos with true boxes (and photos whose only boxes were
//! rejected: known sea). Photos are split for validation (20 %, a run of consecutive photos
//! in file order, so that a sequence's near duplicates stay on one side); each photo's
//! grid is computed once per view (the photo, its mirror image, and the photo smaller),
//! and the head trains on the cached grids in minutes on a CPU. The second look
//! (`refine`) trains on windows around the same photos' boxes. The validation photos give
//! AP50, AP50:95 (with the second look and without) and the data to calibrate the scores;
//! then both heads are trained again, the same way, on every photo, and those are written
//! (with few photos, the validation photos' boxes are worth having).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::ap::{self, Scored};
use super::refine;
use super::{Finder, PhotoProblem, is_true_box, is_unknown_box, with_photo};
use crate::base::progress::Progress;
use crate::base::vocabulary::{BoxPx, Part};
use crate::catalogue::Catalogue;
use crate::models::Backbone;
use crate::models::detector::{self, Calibration, Detection, Detector, DetectorCard, DetectorConfig, FeatureMaps};

#[derive(Debug, Clone)]
pub struct TrainDetectorOptions {
    pub epochs: usize,
    pub hidden: usize,
    pub learning_rate: f64,
    /// The longer side photos are read at (default: the backbone's, `default_long_side`).
    pub long_side: Option<u32>,
    /// Share of photos held out for validation.
    pub validation: f64,
    /// After validation, train the head kept on every photo (validation photos too).
    pub refit: bool,
    pub seed: u64,
    /// Where the detector file goes (default: `detectors/` beside the catalogue).
    pub out: Option<PathBuf>,
}

impl Default for TrainDetectorOptions {
    fn default() -> Self {
        TrainDetectorOptions {
            epochs: 30,
            hidden: 128,
            learning_rate: 1e-3,
            long_side: None,
            validation: 0.2,
            refit: true,
            seed: 1,
            out: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainDetectorReport {
    pub detector: PathBuf,
    pub card: DetectorCard,
    pub calibration: Calibration,
    pub problems: Vec<PhotoProblem>,
}

/// A photo the detector learns from.
struct Sample {
    file: PathBuf,
    hash: String,
    truths: Vec<(BoxPx, Part)>,
    unknown: Vec<BoxPx>,
}

/// One cached view: a photo's features (f16 to halve the memory) and its targets.
struct View {
    features: FeatureMaps,
    targets: detector::Targets,
}

fn samples(cat: &Catalogue) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for photo in cat.photos()? {
        let annotations = cat.annotations_of_photo(photo.id)?;
        let truths: Vec<(BoxPx, Part)> =
            annotations.iter().filter(|a| is_true_box(a)).filter_map(|a| a.bbox.map(|b| (b, a.part))).collect();
        let rejected =
            annotations.iter().any(|a| a.bbox.is_some() && a.status == crate::base::vocabulary::Status::Rejected);
        if truths.is_empty() && !rejected {
            continue;
        }
        let unknown = annotations.iter().filter(|a| is_unknown_box(a)).filter_map(|a| a.bbox).collect();
        out.push(Sample { file: cat.photo_file(&photo.stored_path), hash: photo.facts.hash.clone(), truths, unknown });
    }
    Ok(out)
}

fn fingerprint(samples: &[Sample]) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut keyed: Vec<String> = samples
        .iter()
        .map(|s| {
            let boxes: Vec<String> =
                s.truths.iter().map(|(b, p)| format!("{:.1},{:.1},{:.1},{:.1},{p}", b.x, b.y, b.w, b.h)).collect();
            format!("{}:{}", s.hash, boxes.join(";"))
        })
        .collect();
    keyed.sort();
    for k in keyed {
        hasher.update(k.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex()[..16].to_string()
}

/// The views a photo is trained on: (share of the reading size, mirrored left-right). The
/// smaller view shows every animal smaller than it will be met, so the small and distant
/// ones are not left to chance.
const VIEWS: [(f64, bool); 3] = [(1.0, false), (1.0, true), (0.75, false)];

/// The views of `img`, the photo of `sample` ([`VIEWS`]), for training.
fn views(finder: &Finder, img: &image::DynamicImage, sample: &Sample, parts: &[Part]) -> anyhow::Result<Vec<View>> {
    let mut out = Vec::new();
    for (share, mirrored) in VIEWS {
        let shown = if mirrored { img.fliph() } else { img.clone() };
        let long_side = ((finder.long_side as f64 * share).round() as u32).max(1);
        let (input, features) = finder.features_at(&shown, long_side)?;
        let (rows, cols) = features.grid();
        let w = img.width() as f64;
        let place = |b: &BoxPx| {
            let x = if mirrored { w - b.x - b.w } else { b.x };
            BoxPx::new(x * input.scale, b.y * input.scale, b.w * input.scale, b.h * input.scale)
        };
        let truths: Vec<(BoxPx, u32)> = sample
            .truths
            .iter()
            .map(|(b, p)| (place(b), parts.iter().position(|q| q == p).unwrap_or(0) as u32))
            .collect();
        let unknown: Vec<BoxPx> = sample.unknown.iter().map(place).collect();
        let targets = detector::targets(rows, cols, features.stride as f64, &truths, &unknown);
        out.push(View { features: features.to_dtype(DType::F16)?, targets });
    }
    Ok(out)
}

/// `samples` -> (training, validation): `share` of them (at least one, none under five
/// photos) held out as a run of consecutive photos in file order from a start chosen by
/// `seed`, wrapping round. Photos of one sequence are near duplicates: scattered over both
/// sides, they would measure the head on what it was shown.
fn split(mut samples: Vec<Sample>, share: f64, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    samples.sort_by(|a, b| (&a.file, &a.hash).cmp(&(&b.file, &b.hash)));
    if !samples.is_empty() {
        let start = rng.random_range(0..samples.len());
        samples.rotate_left(start);
    }
    let held = if samples.len() >= 5 { ((samples.len() as f64 * share).round() as usize).max(1) } else { 0 };
    let validation = samples.drain(..held).collect();
    (samples, validation)
}

/// Trains a detector on `cat`'s boxes over `backbone`, writes it with its card and makes it
/// the catalogue's active detector (an undoable edit).
pub fn train_detector(
    cat: &mut Catalogue,
    backbone: Arc<dyn Backbone>,
    opts: &TrainDetectorOptions,
    progress: &dyn Progress,
) -> anyhow::Result<TrainDetectorReport> {
    let started = Instant::now();
    let all = samples(cat)?;
    let boxes: usize = all.iter().map(|s| s.truths.len()).sum();
    if boxes == 0 {
        anyhow::bail!(
            "{}: no boxes to train a detector on; draw or verify boxes around the animals in a few photos first",
            cat.path().display()
        );
    }
    let mut parts: Vec<Part> = all.iter().flat_map(|s| s.truths.iter().map(|t| t.1)).collect();
    parts.sort_by_key(|p| p.as_str());
    parts.dedup();
    let data_fingerprint = fingerprint(&all);

    let (training, validation) = split(all, opts.validation, opts.seed);

    let mut finder = Finder::zero_shot(backbone.clone(), parts[0]);
    finder.long_side = opts.long_side.unwrap_or_else(|| super::default_long_side(backbone.as_ref()));
    let mut problems = Vec::new();
    progress.stage("reading photos", training.len() as u64);
    let mut cache = read_views(&training, &finder, &parts, progress, &mut problems)?;
    if cache.is_empty() {
        anyhow::bail!("{}: none of the photos with boxes could be read", cat.path().display());
    }
    let (vars, det) = fit(&cache, backbone.as_ref(), opts, &parts, progress)?;
    let refine_config = refine::config_for(det.config.stride, det.config.channels.iter().sum());
    let stride = det.config.stride as f64;
    let device = backbone.device().clone();
    // The second look's windows in `samples`: around their true boxes and around the boxes
    // `first_look` puts among their best (a photo that failed to decode is already among the
    // problems).
    let windows_of = |samples: &[Sample], first_look: &Detector| {
        let photos: Vec<(&Path, Vec<BoxPx>)> =
            samples.iter().map(|s| (s.file.as_path(), s.truths.iter().map(|t| t.0).collect())).collect();
        refine::read_windows(&photos, first_look, &finder, &refine_config, stride, opts.seed, progress, &mut Vec::new())
    };
    progress.stage("reading windows around the boxes", training.len() as u64);
    let mut windows = windows_of(&training, &det)?;
    let (refine_vars, refiner) =
        refine::fit_refiner(&windows, &refine_config, opts.epochs, &device, opts.seed, progress)?;
    let det = det.with_refiner(refine_config, refiner);

    // Validation: AP on photos never trained on (with the second look and without), and the
    // calibration of the scores.
    let mut first_look = Vec::new();
    let mut detections = Vec::new();
    let mut truths = Vec::new();
    progress.stage("validating", validation.len() as u64);
    for s in &validation {
        let found = with_photo(&s.file, |img| {
            let (input, features) = finder.features(&img)?;
            // Not calibrated: the calibration is fitted on these scores.
            let first = det.first_look(&features, &input)?;
            let refined = det.second_look(backbone.as_ref(), &img, first.clone())?;
            Ok((first, refined))
        });
        match found {
            Ok((first, refined)) => {
                let image = truths.len();
                let scored = |d: Detection| Scored { image, bbox: d.bbox, score: d.score };
                first_look.extend(first.into_iter().map(scored));
                detections.extend(refined.into_iter().map(scored));
                truths.push(s.truths.iter().map(|t| t.0).collect::<Vec<_>>());
            }
            Err(problem) => problems.push(problem),
        }
        progress.advance(1);
    }
    let measured = truths.iter().any(|t| !t.is_empty());
    let ap50 = |found: &[Scored]| measured.then(|| ap::average_precision(found, &truths, 0.5));
    let ap50_95 = |found: &[Scored]| measured.then(|| ap::average_precision_50_95(found, &truths));
    let calibration =
        if measured { Calibration::fit(&ap::outcomes(&detections, &truths, 0.5)) } else { Calibration::default() };

    // The head kept is trained again on every photo, the validation photos too (with few
    // photos, each one teaches), and so is the second look; the validated run measured the
    // recipe and calibrated it.
    let (vars, refine_vars, config) = if validation.is_empty() || !opts.refit {
        (vars, refine_vars, det.config)
    } else {
        progress.stage("reading the validation photos to train on them too", validation.len() as u64);
        // A photo that failed to decode is already among the problems.
        cache.extend(read_views(&validation, &finder, &parts, progress, &mut Vec::new())?);
        // The validation photos' windows as the head that never saw them places its boxes.
        progress.stage("reading windows around the validation photos' boxes", validation.len() as u64);
        windows.extend(windows_of(&validation, &det)?);
        let (vars, det) = fit(&cache, backbone.as_ref(), opts, &parts, progress)?;
        let (refine_vars, _) =
            refine::fit_refiner(&windows, &refine_config, opts.epochs, &device, opts.seed, progress)?;
        (vars, refine_vars, DetectorConfig { refine: Some(refine_config), ..det.config })
    };
    drop(cache);
    drop(windows);

    let card = DetectorCard {
        catalogue: cat.path().display().to_string(),
        data_fingerprint,
        train_photos: training.len(),
        train_boxes: training.iter().map(|s| s.truths.len()).sum(),
        refit_on_all: opts.refit && !validation.is_empty(),
        validation_photos: validation.len(),
        validation_boxes: validation.iter().map(|s| s.truths.len()).sum(),
        epochs: opts.epochs,
        seconds: started.elapsed().as_secs_f64(),
        validation_ap50: ap50(&detections),
        validation_ap50_95: ap50_95(&detections),
        validation_ap50_first_look: ap50(&first_look),
        validation_ap50_95_first_look: ap50_95(&first_look),
        created: crate::catalogue::now(),
    };
    let config = DetectorConfig { calibration, card: card.clone(), ..config };
    let out = opts.out.clone().unwrap_or_else(|| default_out(cat.path()));
    Detector::save(&[&vars, &refine_vars], &config, &out)?;
    std::fs::write(out.with_extension("json"), serde_json::to_string_pretty(&config)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.with_extension("json").display()))?;
    super::set_active_detector(cat, Some(&out))?;
    Ok(TrainDetectorReport { detector: out, card, calibration, problems })
}

/// The views of every photo of `samples` ([`views`]); a photo that cannot be read or
/// decoded goes to `problems`, and the others are read.
fn read_views(
    samples: &[Sample],
    finder: &Finder,
    parts: &[Part],
    progress: &dyn Progress,
    problems: &mut Vec<PhotoProblem>,
) -> anyhow::Result<Vec<View>> {
    let mut cache = Vec::new();
    for s in samples {
        if progress.cancelled() {
            anyhow::bail!("cancelled");
        }
        match with_photo(&s.file, |img| views(finder, &img, s, parts)) {
            Ok(v) => cache.extend(v),
            Err(problem) => problems.push(problem),
        }
        progress.advance(1);
    }
    Ok(cache)
}

/// A head trained on the cached views `cache` (seeded by `opts.seed`: the same views give
/// the same start and order).
fn fit(
    cache: &[View],
    backbone: &dyn Backbone,
    opts: &TrainDetectorOptions,
    parts: &[Part],
    progress: &dyn Progress,
) -> anyhow::Result<(VarMap, Detector)> {
    let device = backbone.device().clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (vars, det) = untrained_detector(backbone, opts, parts.to_vec())?;
    standardise(&vars, cache, &device)?;
    let trainable: Vec<candle_core::Var> = {
        let data = vars.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        data.iter().filter(|(k, _)| !k.contains("feature_")).map(|(_, v)| v.clone()).collect()
    };
    let mut opt =
        AdamW::new(trainable, ParamsAdamW { lr: opts.learning_rate, weight_decay: 1e-4, ..Default::default() })?;
    let steps = opts.epochs * cache.len();
    progress.stage("training", opts.epochs as u64);
    let mut order: Vec<usize> = (0..cache.len()).collect();
    let mut step = 0usize;
    for _ in 0..opts.epochs {
        if progress.cancelled() {
            anyhow::bail!("cancelled");
        }
        order.shuffle(&mut rng);
        for &i in &order {
            let warm = (step as f64 / 50.0).min(1.0);
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
            opt.set_learning_rate(opts.learning_rate * warm * (0.02 + 0.98 * cosine));
            let view = &cache[i];
            let out = det.net.forward(&view.features.to_dtype(DType::F32)?.maps)?;
            let loss = detector::loss(&out, &view.targets, &device)?;
            opt.backward_step(&loss)?;
            step += 1;
        }
        progress.advance(1);
    }
    Ok((vars, det))
}

/// A detector over `backbone` before any training (its variables in the map returned), for
/// `parts`, reading photos at `opts.long_side` and the backbone's default feature depths.
pub fn untrained_detector(
    backbone: &dyn Backbone,
    opts: &TrainDetectorOptions,
    parts: Vec<Part>,
) -> anyhow::Result<(VarMap, Detector)> {
    let taps = detector::default_taps(backbone);
    // The grid's width and stride, read off a small blank photo.
    let blank = image::DynamicImage::new_rgb8(64, 64);
    let probe = detector::prepare_photo(&blank, 64, backbone.input_multiple(), backbone.device())?;
    let features = detector::FeatureMaps::new(backbone, &probe.image, &taps)?;
    let config = DetectorConfig {
        backbone: backbone.name().to_string(),
        taps,
        long_side: opts.long_side.unwrap_or_else(|| super::default_long_side(backbone)),
        stride: features.stride,
        channels: features.channels(),
        hidden: opts.hidden,
        parts,
        calibration: Calibration::default(),
        refine: None,
        card: DetectorCard::default(),
    };
    let vars = VarMap::new();
    let det = Detector::new(config, &vars, backbone.device())?;
    // The head starts from the seed's draw: the same data and seed give the same start.
    crate::models::reseed(&vars, opts.seed)?;
    Ok((vars, det))
}

/// `detectors/detector-<time>.safetensors` beside the catalogue.
fn default_out(catalogue: &Path) -> PathBuf {
    let dir = catalogue.parent().unwrap_or(Path::new(".")).join("detectors");
    let stem = catalogue.file_stem().and_then(|s| s.to_str()).unwrap_or("catalogue");
    dir.join(format!("{stem}-{}.safetensors", chrono::Utc::now().format("%Y%m%d-%H%M%S")))
}

/// Sets the head's feature standardisation to the cached maps' per-channel mean and standard
/// deviation, tap by tap.
fn standardise(vars: &VarMap, cache: &[View], device: &Device) -> anyhow::Result<()> {
    let taps = cache.first().map(|v| v.features.maps.len()).unwrap_or(0);
    for tap in 0..taps {
        let maps = cache.iter().step_by(2).map(|view| {
            let g = view.features.maps[tap].to_dtype(DType::F32)?;
            let (_, c, r, k) = g.dims4()?;
            g.reshape((c, r * k))
        });
        detector::set_standardisation(vars, &format!("tap{tap}"), maps, device)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Sample {
        Sample { file: PathBuf::from(format!("survey/{name}.jpg")), hash: name.into(), truths: vec![], unknown: vec![] }
    }

    /// The validation photos are a fifth of the photos, consecutive in file order (wrapping
    /// round), whatever order the photos came in; the seed moves the run; under five photos
    /// none are held out.
    #[test]
    fn validation_holds_out_a_run_of_consecutive_photos() {
        let names: Vec<String> = (0..20).map(|i| format!("IMG_{:04}", 4900 + i)).collect();
        let mut starts = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let shuffled: Vec<Sample> = names.iter().rev().map(|n| sample(n)).collect();
            let (training, validation) = split(shuffled, 0.2, seed);
            assert_eq!((training.len(), validation.len()), (16, 4));
            let index = |s: &Sample| names.iter().position(|n| *n == s.hash).unwrap();
            let first = index(&validation[0]);
            for (k, s) in validation.iter().enumerate() {
                assert_eq!(index(s), (first + k) % names.len(), "seed {seed}: not consecutive");
            }
            starts.insert(first);
        }
        assert!(starts.len() > 1, "the seed chooses where the run starts");
        let few: Vec<Sample> = names[..4].iter().map(|n| sample(n)).collect();
        assert_eq!(split(few, 0.2, 0).1.len(), 0);
    }
}
