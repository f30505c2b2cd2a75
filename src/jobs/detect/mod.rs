//! Detection jobs: proposing boxes on a catalogue's photos or a folder (`detect`), training
//! the catalogue's detector from its verified boxes (`train-detector`), and measuring both
//! against labelled boxes (`eval-detect`).
//!
//! The backbone is DINOv2 ViT-S/14 by default, the embedder's own, reading a photo at 518 px
//! on its longer side (37 patches). Measured on dolphin fins (the same photos split the same
//! way), its patch tokens gave a learned head twice the validation AP50 of EfficientNet-Lite0's
//! features at 768 px (0.69 against 0.33), in about 0.7 s per 1600-px photo on 2 cores;
//! Lite0 stays available (`--backbone efficientnet-lite0`, read at 768 px).
//! `whaleid bench detect` times detection per photo.

pub mod ap;
pub mod eval;
mod refine;
mod report_text;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;

use crate::base::ids::PhotoId;
use crate::base::progress::Progress;
use crate::base::vocabulary::{Part, Source, Status};
use crate::catalogue::{Catalogue, CatalogueError, NewAnnotation};
use crate::models::detector::{self, Detection, Detector, DetectorInput, FeatureMaps};
use crate::models::{Backbone, KnownModel};

pub use refine::with_untrained_second_look;
pub use train::{TrainDetectorOptions, TrainDetectorReport, train_detector, untrained_detector};

/// The backbone detection reads features from unless told otherwise.
pub const DEFAULT_BACKBONE: KnownModel = KnownModel::Dinov2Vits14;

/// The setting that holds the active detector's path (empty: none, zero-shot proposals).
pub const ACTIVE_DETECTOR_SETTING: &str = "active_detector";
/// The longer side photos are read at by a ViT (patches of 14 px: 37 across), unless a
/// detector says otherwise.
pub const DEFAULT_LONG_SIDE: u32 = 518;
/// The same for a CNN, whose finest features read here are 16 px apart.
pub const CNN_LONG_SIDE: u32 = 768;

/// The longer side `backbone` reads photos at by default.
pub fn default_long_side(backbone: &dyn Backbone) -> u32 {
    if backbone.input_multiple() > 1 { DEFAULT_LONG_SIDE } else { CNN_LONG_SIDE }
}
/// Proposals below this score are not recorded by default.
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// The detector's backbone weights in the models folder (DINOv2 ViT-S/14), or an error that
/// says how to fetch them.
pub fn default_backbone_path() -> anyhow::Result<PathBuf> {
    backbone_path_in(&crate::models::default_dir())
}

/// The detector's backbone weights in the models folder `dir`, or an error that says how to
/// fetch them.
pub fn backbone_path_in(dir: &Path) -> anyhow::Result<PathBuf> {
    known_backbone_path_in(DEFAULT_BACKBONE, dir)
}

/// `model`'s weights in the models folder `dir`, or an error that says how to fetch them.
pub fn known_backbone_path_in(model: KnownModel, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = model.weights_path(dir);
    if !path.is_file() {
        anyhow::bail!(
            "no detector backbone at {}: run `whaleid models fetch --model {}`",
            path.display(),
            model.label()
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
        let long_side = default_long_side(backbone.as_ref());
        Finder { backbone, detector: None, taps, long_side, part }
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

    /// Photos read at this longer side (zero-shot proposals; a learned detector keeps its own).
    pub fn reading_at(mut self, long_side: u32) -> Self {
        if self.detector.is_none() {
            self.long_side = long_side;
        }
        self
    }

    /// The catalogue's active detector over `backbone` when its file can be used, else
    /// zero-shot proposals labelled with the catalogue's usual part. A detector that cannot
    /// be used (missing, not a detector, trained on another backbone) is named with its
    /// problem in the second value, so the caller can say why it fell back.
    pub fn for_catalogue(cat: &Catalogue, backbone: Arc<dyn Backbone>) -> anyhow::Result<(Self, Option<String>)> {
        let zero_shot = |backbone| -> anyhow::Result<Self> { Ok(Finder::zero_shot(backbone, usual_part(cat)?)) };
        let Some(file) = active_detector(cat)? else { return Ok((zero_shot(backbone)?, None)) };
        let problem = if file.is_file() {
            match Finder::learned(backbone.clone(), &file) {
                Ok(finder) => return Ok((finder, None)),
                Err(e) => format!("{e:#}"),
            }
        } else {
            format!("{}: the detector file is missing", file.display())
        };
        let why = format!("the catalogue's detector cannot be used ({problem}); proposing boxes zero-shot instead");
        Ok((zero_shot(backbone)?, Some(why)))
    }

    pub fn is_learned(&self) -> bool {
        self.detector.is_some()
    }

    /// The resized photo and its features.
    pub fn features(&self, img: &DynamicImage) -> anyhow::Result<(DetectorInput, FeatureMaps)> {
        self.features_at(img, self.long_side)
    }

    /// The same with the photo read at `long_side` (training views at other scales).
    pub fn features_at(&self, img: &DynamicImage, long_side: u32) -> anyhow::Result<(DetectorInput, FeatureMaps)> {
        let input = detector::prepare_photo(img, long_side, self.backbone.input_multiple(), self.backbone.device())?;
        let features = FeatureMaps::new(self.backbone.as_ref(), &input.image, &self.taps)?;
        Ok((input, features))
    }

    /// Boxes in one photo scoring at least `min_score`, best first.
    pub fn find(&self, img: &DynamicImage, min_score: f32) -> anyhow::Result<Vec<Detection>> {
        let (input, features) = self.features(img)?;
        Ok(match &self.detector {
            Some(det) => det.detect(self.backbone.as_ref(), img, &features, &input, min_score)?,
            None => {
                let grid = features.concatenated()?;
                let mut found = detector::zero_shot::propose(&grid, features.stride, &input, self.part)?;
                found.retain(|d| d.score >= min_score);
                found
            }
        })
    }

    /// Every kind of box from one feature pass (what `eval-detect` compares).
    pub fn find_all(&self, img: &DynamicImage) -> anyhow::Result<AllFound> {
        let (input, features) = self.features(img)?;
        let (first_look, learned) = match &self.detector {
            Some(det) => {
                let first = det.first_look(&features, &input)?;
                let refined = det.second_look(self.backbone.as_ref(), img, first.clone())?;
                (det.calibrated(first, 0.01), det.calibrated(refined, 0.01))
            }
            None => (Vec::new(), Vec::new()),
        };
        let zero_shot = detector::zero_shot::propose(&features.concatenated()?, features.stride, &input, self.part)?;
        Ok(AllFound { learned, first_look, zero_shot })
    }

    /// Whether the learned detector takes a second look at its best boxes.
    pub fn looks_twice(&self) -> bool {
        self.detector.as_ref().is_some_and(|d| d.refiner.is_some())
    }
}

/// One photo's boxes of every kind.
pub struct AllFound {
    /// The learned detector's (empty without one).
    pub learned: Vec<Detection>,
    /// The same before the second look placed the best of them again.
    pub first_look: Vec<Detection>,
    pub zero_shot: Vec<Detection>,
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
    /// Unreviewed proposals taken away because a new detector proposed again on their photo.
    pub boxes_replaced: usize,
    pub problems: Vec<PhotoProblem>,
    pub cancelled: bool,
}

/// Which photos to search and what to do with the proposals already there.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Proposals scoring under this are not recorded.
    pub threshold: f32,
    /// Only these photos (those an import added); every photo of the catalogue when `None`.
    pub photos: Option<Vec<PhotoId>>,
    /// A new detector's turn: photos whose boxes are all unreviewed proposals (or rejected)
    /// are searched again, their unreviewed proposals replaced by the new ones.
    pub replace_proposals: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions { threshold: DEFAULT_THRESHOLD, photos: None, replace_proposals: false }
    }
}

/// Whether a photo still needs proposals: it has no box that a person reviewed or drew and
/// no proposal waiting for review (rejected proposals alone do not count: the animal may
/// still be there). When proposals are replaced, waiting proposals do not count either.
fn needs_boxes(annotations: &[crate::catalogue::Annotation], replace_proposals: bool) -> bool {
    if replace_proposals {
        !annotations.iter().any(is_true_box)
    } else {
        !annotations.iter().any(|a| a.bbox.is_some() && a.status != Status::Rejected)
    }
}

/// Adds proposals (source `detector`, status `unreviewed`, with their score) to the
/// catalogue's photos that have no boxes yet (with `replace_proposals`, in place of their
/// unreviewed proposals). Each photo's change is one edit (undoable), committed as soon as it
/// is done; a photo that fails to decode is reported and the rest go on.
pub fn detect_catalogue(
    cat: &mut Catalogue,
    finder: &Finder,
    opts: &DetectOptions,
    progress: &dyn Progress,
) -> anyhow::Result<DetectReport> {
    let mut report = DetectReport { detector: None, ..Default::default() };
    let photos = match &opts.photos {
        None => cat.photos()?,
        Some(ids) => {
            let mut photos = Vec::with_capacity(ids.len());
            for &id in ids {
                // A photo deleted since it was asked for has nothing to search.
                photos.extend(cat.photo(id)?);
            }
            photos
        }
    };
    let mut todo = Vec::new();
    for photo in photos {
        let annotations = cat.annotations_of_photo(photo.id)?;
        if needs_boxes(&annotations, opts.replace_proposals) {
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
        let found = match with_photo(&file, |img| finder.find(&img, opts.threshold)) {
            Ok(found) => found,
            Err(problem) => {
                report.problems.push(problem);
                progress.advance(1);
                continue;
            }
        };
        report.photos_searched += 1;
        let replaced: Vec<_> = if opts.replace_proposals {
            annotations.iter().filter(|a| is_unknown_box(a)).map(|a| a.id).collect()
        } else {
            Vec::new()
        };
        if !found.is_empty() || !replaced.is_empty() {
            let species = annotations.iter().find_map(|a| a.species.clone());
            let verb = if replaced.is_empty() { "detect boxes in" } else { "detect boxes again in" };
            cat.edit(&format!("{verb} {}", photo.stored_path), |e| {
                for &old in &replaced {
                    e.delete_annotation(old)?;
                }
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
            report.boxes_replaced += replaced.len();
        }
        progress.advance(1);
        progress.committed(done as u64 + 1, report.photos_searched as u64);
    }
    Ok(report)
}

/// What the app shows about the catalogue's detector: which one is active, how many true
/// boxes it was trained on, and how many the catalogue has now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorStatus {
    pub active: Option<PathBuf>,
    /// The boxes the active detector learned from (training and validation), from its card.
    pub trained_on: Option<usize>,
    /// Why the active detector cannot be read, naming its file.
    pub problem: Option<String>,
    /// Boxes a person drew, imported or verified.
    pub true_boxes: usize,
}

/// Boxes verified or drawn since the active detector was trained that make retraining
/// worth offering.
pub const RETRAIN_AFTER_NEW_BOXES: usize = 10;

impl DetectorStatus {
    /// The true boxes the active detector has not learned from (all of them without one).
    pub fn new_boxes(&self) -> usize {
        self.true_boxes.saturating_sub(self.trained_on.unwrap_or(0))
    }

    /// Whether enough new boxes have come to offer retraining.
    pub fn retrain_worth_it(&self) -> bool {
        self.new_boxes() >= RETRAIN_AFTER_NEW_BOXES
    }
}

pub fn detector_status(cat: &Catalogue) -> anyhow::Result<DetectorStatus> {
    let active = active_detector(cat)?;
    let (trained_on, problem) = match &active {
        None => (None, None),
        Some(file) => match detector::read_config(file) {
            Ok(config) => (Some(config.card.train_boxes + config.card.validation_boxes), None),
            Err(e) => (None, Some(format!("{e}"))),
        },
    };
    let true_boxes = cat.annotations()?.iter().filter(|a| is_true_box(a)).count();
    Ok(DetectorStatus { active, trained_on, problem, true_boxes })
}

/// The part most of the catalogue's true boxes show (zero-shot proposals are labelled so);
/// `Part::Body` when it has none.
pub fn usual_part(cat: &Catalogue) -> anyhow::Result<Part> {
    let mut counts: std::collections::BTreeMap<&'static str, (usize, Part)> = Default::default();
    for a in cat.annotations()?.iter().filter(|a| is_true_box(a)) {
        counts.entry(a.part.as_str()).or_insert((0, a.part)).0 += 1;
    }
    Ok(counts.into_values().max_by_key(|(n, _)| *n).map_or(Part::Body, |(_, p)| p))
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
    let photos = crate::base::photo::photos_under(folder);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::base::progress::Silent;
    use crate::models::efficientnet::{EfficientNetConfig, seeded};

    /// Asks to stop once `after` photos are done.
    struct CancelAfter {
        after: u64,
        done: AtomicU64,
    }

    impl Progress for CancelAfter {
        fn advance(&self, n: u64) {
            self.done.fetch_add(n, Ordering::Relaxed);
        }

        fn cancelled(&self) -> bool {
            self.done.load(Ordering::Relaxed) >= self.after
        }
    }

    /// A catalogue of `n` synthetic photos without boxes.
    fn catalogue(dir: &Path, n: usize) -> (Catalogue, Vec<PhotoId>) {
        let photos = dir.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for i in 0..n {
            let (img, _) = crate::jobs::synth::render_photo(3, i, 0, 160, 120);
            img.save(photos.join(format!("whale_{i}.png"))).unwrap();
        }
        let mut cat = Catalogue::create(&dir.join("c.whaleid")).unwrap();
        let report = crate::jobs::import::import(&mut cat, &photos, &Default::default(), &Silent).unwrap();
        (cat, report.added_photos)
    }

    fn finder() -> Finder {
        let net = seeded(&EfficientNetConfig::tiny(), &candle_core::Device::Cpu, 1).unwrap();
        Finder::zero_shot(Arc::new(net), Part::Fluke).reading_at(96)
    }

    fn proposals(cat: &Catalogue, photo: PhotoId) -> Vec<crate::catalogue::Annotation> {
        cat.annotations_of_photo(photo).unwrap().into_iter().filter(is_unknown_box).collect()
    }

    #[test]
    fn only_the_photos_asked_for_are_searched_and_a_cancel_keeps_what_was_done() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cat, photos) = catalogue(dir.path(), 4);
        let finder = finder();
        let opts = DetectOptions { threshold: 0.0, photos: Some(photos[..3].to_vec()), ..Default::default() };
        let stop = CancelAfter { after: 1, done: AtomicU64::new(0) };
        let report = detect_catalogue(&mut cat, &finder, &opts, &stop).unwrap();
        assert!(report.cancelled);
        assert_eq!(report.photos_searched, 1, "stopped after the first photo");
        assert!(!proposals(&cat, photos[0]).is_empty(), "the first photo's proposals are kept");
        assert!(proposals(&cat, photos[1]).is_empty());

        let report = detect_catalogue(&mut cat, &finder, &opts, &Silent).unwrap();
        assert_eq!((report.photos_searched, report.photos_skipped), (2, 1), "the rest, once");
        assert!(proposals(&cat, photos[3]).is_empty(), "a photo not asked for is left alone");

        // A photo spoilt on disk since it was imported is named with its problem; the rest go on.
        let spoilt = cat.photo_file(&cat.photo(photos[3]).unwrap().unwrap().stored_path);
        std::fs::write(&spoilt, b"not a photo").unwrap();
        let report = detect_catalogue(&mut cat, &finder, &DetectOptions { photos: None, ..opts }, &Silent).unwrap();
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].photo.ends_with("whale_3.png"), "{:?}", report.problems);
        assert_eq!(report.photos_skipped, 3);
    }

    #[test]
    fn replacing_takes_a_photo_s_unreviewed_proposals_away_in_one_edit_and_keeps_reviewed_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cat, photos) = catalogue(dir.path(), 2);
        let finder = finder();
        let opts = DetectOptions { threshold: 0.0, ..Default::default() };
        detect_catalogue(&mut cat, &finder, &opts, &Silent).unwrap();
        let before: Vec<_> = proposals(&cat, photos[0]).iter().map(|a| a.id).collect();
        assert!(!before.is_empty());
        // The second photo's first proposal is verified: that photo has a reviewed box now.
        let verified = proposals(&cat, photos[1])[0].id;
        cat.set_status(&[verified], Status::Verified).unwrap();
        let actions = cat.history(100).unwrap().len();

        let again = DetectOptions { replace_proposals: true, ..opts };
        let report = detect_catalogue(&mut cat, &finder, &again, &Silent).unwrap();
        assert_eq!((report.photos_searched, report.photos_skipped), (1, 1));
        assert_eq!(report.boxes_replaced, before.len());
        let after: Vec<_> = proposals(&cat, photos[0]).iter().map(|a| a.id).collect();
        assert!(!after.is_empty() && after.iter().all(|a| !before.contains(a)), "new proposals in place of the old");
        assert_eq!(cat.annotation(verified).unwrap().unwrap().status, Status::Verified);
        assert_eq!(cat.history(100).unwrap().len(), actions + 1, "one edit for the photo");
        cat.undo().unwrap();
        let back: Vec<_> = proposals(&cat, photos[0]).iter().map(|a| a.id).collect();
        assert_eq!(back, before, "one undo brings the old proposals back");
    }
}
