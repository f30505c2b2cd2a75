//! Detection jobs: proposing boxes on a catalogue's photos or a folder (`detect`), training
//! the catalogue's detector from its verified boxes (`train-detector`), and measuring both
//! against labelled boxes (`eval-detect`).
//!
//! The backbone is EfficientNet-Lite0 by default: at the resolution where a fin is a few
//! cells wide (a 1600-px photo read at 768 px on the longer side), it costs a fraction of a
//! ViT's pass (`whaleid bench embed --model efficientnet-lite0` sets them side by side;
//! `whaleid bench detect` times detection per photo).

pub mod ap;
pub mod eval;
mod report_text;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;

use crate::base::progress::Progress;
use crate::base::vocabulary::{Part, Source, Status};
use crate::catalogue::{Catalogue, CatalogueError, NewAnnotation};
use crate::models::detector::{self, Detection, Detector, DetectorInput, FeatureMaps};
use crate::models::{Backbone, KnownModel};

pub use train::{TrainDetectorOptions, TrainDetectorReport, train_detector, untrained_detector};

/// The setting that holds the active detector's path (empty: none, zero-shot proposals).
pub const ACTIVE_DETECTOR_SETTING: &str = "active_detector";
/// The longer side photos are read at, unless a detector says otherwise.
pub const DEFAULT_LONG_SIDE: u32 = 768;
/// Proposals below this score are not recorded by default.
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// The detector's backbone weights in the models folder (EfficientNet-Lite0), or an error
/// that says how to fetch them.
pub fn default_backbone_path() -> anyhow::Result<PathBuf> {
    let path = KnownModel::EfficientnetLite0.weights_path(&crate::models::default_dir());
    if !path.is_file() {
        anyhow::bail!(
            "no detector backbone at {}: run `whaleid models fetch --model efficientnet-lite0`",
            path.display()
        );
    }
    Ok(path)
}

/// The catalogue's active detector file, if one was activated.
pub fn active_detector(cat: &Catalogue) -> Result<Option<PathBuf>, CatalogueError> {
    Ok(cat.setting(ACTIVE_DETECTOR_SETTING)?.filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// Makes `file` (a detector file) the catalogue's detector, or none; an undoable edit.
pub fn set_active_detector(cat: &mut Catalogue, file: Option<&Path>) -> anyhow::Result<()> {
    let value = match file {
        Some(path) => {
            detector::read_config(path)?;
            std::fs::canonicalize(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .to_string_lossy()
                .into_owned()
        }
        None => String::new(),
    };
    cat.set_setting(ACTIVE_DETECTOR_SETTING, &value)?;
    Ok(())
}

/// What finds boxes in photos: a backbone, and the learned detector over its features
/// where there is one (else zero-shot proposals).
pub struct Finder {
    backbone: Arc<dyn Backbone>,
    detector: Option<Detector>,
    taps: Vec<usize>,
    long_side: u32,
    /// The part zero-shot proposals are labelled with.
    pub part: Part,
}

impl Finder {
    /// Zero-shot proposals from `backbone`'s features.
    pub fn zero_shot(backbone: Arc<dyn Backbone>, part: Part) -> Self {
        let taps = detector::default_taps(backbone.as_ref());
        Finder { backbone, detector: None, taps, long_side: DEFAULT_LONG_SIDE, part }
    }

    /// The detector in `file` over `backbone`, refused if it was trained on another one.
    pub fn learned(backbone: Arc<dyn Backbone>, file: &Path) -> anyhow::Result<Self> {
        let det = Detector::load(file, backbone.name(), backbone.device())?;
        Ok(Self::with_detector(backbone, det))
    }

    /// `det` over `backbone` (the one it was made for), reading photos as `det` says.
    pub fn with_detector(backbone: Arc<dyn Backbone>, det: Detector) -> Self {
        let part = det.config.parts.first().copied().unwrap_or(Part::Body);
        Finder { taps: det.config.taps.clone(), long_side: det.config.long_side, backbone, detector: Some(det), part }
    }

    pub fn is_learned(&self) -> bool {
        self.detector.is_some()
    }

    /// The resized photo and its features.
    pub fn features(&self, img: &DynamicImage) -> anyhow::Result<(DetectorInput, FeatureMaps)> {
        let input =
            detector::prepare_photo(img, self.long_side, self.backbone.input_multiple(), self.backbone.device())?;
        let features = FeatureMaps::new(self.backbone.as_ref(), &input.image, &self.taps)?;
        Ok((input, features))
    }

    /// Boxes in one photo scoring at least `min_score`, best first.
    pub fn find(&self, img: &DynamicImage, min_score: f32) -> anyhow::Result<Vec<Detection>> {
        let (input, features) = self.features(img)?;
        Ok(match &self.detector {
            Some(det) => det.detect(&features, &input, min_score)?,
            None => {
                let grid = features.concatenated()?;
                let mut found = detector::zero_shot::propose(&grid, features.stride, &input, self.part)?;
                found.retain(|d| d.score >= min_score);
                found
            }
        })
    }

    /// Both kinds of boxes from one feature pass: the learned detector's (empty without one)
    /// and the zero-shot proposals.
    pub fn find_both(&self, img: &DynamicImage) -> anyhow::Result<(Vec<Detection>, Vec<Detection>)> {
        let (input, features) = self.features(img)?;
        let learned = match &self.detector {
            Some(det) => det.detect(&features, &input, 0.01)?,
            None => Vec::new(),
        };
        let zero = detector::zero_shot::propose(&features.concatenated()?, features.stride, &input, self.part)?;
        Ok((learned, zero))
    }
}

/// A photo that could not be searched for boxes, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhotoProblem {
    pub photo: String,
    pub problem: String,
}

/// Decodes the photo at `file` and runs `work` on it. Whatever goes wrong (the file cannot be
/// read or decoded, or the work fails) comes back as a [`PhotoProblem`] naming the file, so
/// that a job records it and goes on with the other photos.
fn with_photo<T>(file: &Path, work: impl FnOnce(DynamicImage) -> anyhow::Result<T>) -> Result<T, PhotoProblem> {
    crate::base::photo::decode_file(file)
        .map_err(anyhow::Error::msg)
        .and_then(work)
        .map_err(|e| PhotoProblem { photo: file.display().to_string(), problem: format!("{e:#}") })
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DetectReport {
    /// The detector file used; none for zero-shot proposals.
    pub detector: Option<String>,
    pub photos_searched: usize,
    /// Photos skipped because they already have reviewed boxes or proposals.
    pub photos_skipped: usize,
    pub boxes_added: usize,
    pub problems: Vec<PhotoProblem>,
    pub cancelled: bool,
}

/// Whether a photo still needs proposals: it has no box that a person reviewed or drew and
/// no proposal waiting for review (rejected proposals alone do not count: the animal may
/// still be there).
fn needs_boxes(annotations: &[crate::catalogue::Annotation]) -> bool {
    !annotations.iter().any(|a| a.bbox.is_some() && a.status != Status::Rejected)
}

/// Adds proposals (source `detector`, status `unreviewed`, with their score) to the
/// catalogue's photos that have no boxes yet. Each photo's proposals are one edit (undoable),
/// committed as soon as it is done; a photo that fails to decode is reported and the rest go
/// on.
pub fn detect_catalogue(
    cat: &mut Catalogue,
    finder: &Finder,
    threshold: f32,
    progress: &dyn Progress,
) -> anyhow::Result<DetectReport> {
    let mut report = DetectReport { detector: None, ..Default::default() };
    let photos = cat.photos()?;
    let mut todo = Vec::new();
    for photo in photos {
        let annotations = cat.annotations_of_photo(photo.id)?;
        if needs_boxes(&annotations) {
            todo.push((photo, annotations));
        } else {
            report.photos_skipped += 1;
        }
    }
    progress.stage("detecting", todo.len() as u64);
    for (done, (photo, annotations)) in todo.into_iter().enumerate() {
        if progress.cancelled() {
            report.cancelled = true;
            break;
        }
        let file = cat.photo_file(&photo.stored_path);
        let found = match with_photo(&file, |img| finder.find(&img, threshold)) {
            Ok(found) => found,
            Err(problem) => {
                report.problems.push(problem);
                progress.advance(1);
                continue;
            }
        };
        report.photos_searched += 1;
        if !found.is_empty() {
            let species = annotations.iter().find_map(|a| a.species.clone());
            cat.edit(&format!("detect boxes in {}", photo.stored_path), |e| {
                for d in &found {
                    e.insert_annotation(&NewAnnotation {
                        photo_id: photo.id,
                        bbox: Some(d.bbox),
                        part: d.part,
                        side: crate::base::vocabulary::Side::Unknown,
                        source: Source::Detector,
                        status: Status::Unreviewed,
                        species: species.clone(),
                        score: Some(d.score as f64),
                    })?;
                }
                Ok(())
            })?;
            report.boxes_added += found.len();
        }
        progress.advance(1);
        progress.committed(done as u64 + 1, report.photos_searched as u64);
    }
    Ok(report)
}

/// One box found in a folder's photo, COCO results style.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FolderBox {
    /// The photo's path relative to the folder.
    pub image: String,
    /// `[x, y, w, h]` in photo pixels.
    pub bbox: [f64; 4],
    pub score: f32,
    pub category: Part,
}

/// Boxes in every photo under `folder`, without touching any catalogue. Photos that fail to
/// decode are reported and skipped.
pub fn detect_folder(
    folder: &Path,
    finder: &Finder,
    threshold: f32,
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<FolderBox>, Vec<PhotoProblem>)> {
    if !folder.is_dir() {
        anyhow::bail!("{}: not a folder of photos", folder.display());
    }
    let mut photos: Vec<PathBuf> = walkdir::WalkDir::new(folder)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.is_file() && crate::base::photo::is_photo(p))
        .collect();
    photos.sort();
    progress.stage("detecting", photos.len() as u64);
    let (mut boxes, mut problems) = (Vec::new(), Vec::new());
    for path in photos {
        if progress.cancelled() {
            break;
        }
        let name = path.strip_prefix(folder).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        match with_photo(&path, |img| finder.find(&img, threshold)) {
            Ok(found) => boxes.extend(found.into_iter().map(|d| FolderBox {
                image: name.clone(),
                bbox: [d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h],
                score: d.score,
                category: d.part,
            })),
            Err(problem) => problems.push(problem),
        }
        progress.advance(1);
    }
    Ok((boxes, problems))
}

/// True boxes of a photo for training and evaluation: boxes a person drew, imported or
/// verified. Unreviewed proposals are not known either way; rejected ones are known sea.
pub fn is_true_box(a: &crate::catalogue::Annotation) -> bool {
    a.bbox.is_some()
        && match a.status {
            Status::Verified => true,
            Status::Rejected => false,
            Status::Unreviewed => a.source != Source::Detector,
        }
}

/// Unreviewed proposals: left out of training, neither animal nor sea.
pub fn is_unknown_box(a: &crate::catalogue::Annotation) -> bool {
    a.bbox.is_some() && a.status == Status::Unreviewed && a.source == Source::Detector
}
