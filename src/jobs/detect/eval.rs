//! `whaleid eval-detect DATASET`: the learned detector and the zero-shot proposals against a
//! dataset's labelled boxes (YOLO or COCO, read by the importer into a scratch catalogue),
//! side by side: AP50, AP50:95 and the mean best IoU per true box.

use std::path::Path;

use super::ap::{self, Scored};
use super::{Finder, PhotoProblem, is_true_box, with_photo};
use crate::base::progress::{Progress, Silent};
use crate::catalogue::Catalogue;
use crate::models::detector::Detection;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DetectionScores {
    pub ap50: f64,
    pub ap50_95: f64,
    pub mean_best_iou: f64,
    pub boxes_proposed: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalDetectReport {
    pub photos: usize,
    pub true_boxes: usize,
    /// The learned detector's scores; none without a detector.
    pub detector: Option<DetectionScores>,
    /// The same before its second look (none without one).
    pub first_look: Option<DetectionScores>,
    pub zero_shot: DetectionScores,
    pub problems: Vec<PhotoProblem>,
}

fn scores(found: &[Scored], truths: &[Vec<crate::base::vocabulary::BoxPx>]) -> DetectionScores {
    DetectionScores {
        ap50: ap::average_precision(found, truths, 0.5),
        ap50_95: ap::average_precision_50_95(found, truths),
        mean_best_iou: ap::mean_best_iou(found, truths),
        boxes_proposed: found.len(),
    }
}

/// Measures `finder` (its learned detector, where it has one, and its zero-shot proposals) on
/// the photos and boxes of `dataset`.
pub fn eval_detect(dataset: &Path, finder: &Finder, progress: &dyn Progress) -> anyhow::Result<EvalDetectReport> {
    let scratch = tempfile::tempdir()?;
    let mut cat = Catalogue::create(&scratch.path().join("eval.whaleid"))?;
    let imported = crate::jobs::import::import(&mut cat, dataset, &Default::default(), &Silent)?;
    let photos = cat.photos()?;
    if photos.is_empty() {
        anyhow::bail!("{}: no photos found ({} files looked at)", dataset.display(), imported.files.len());
    }
    let mut truths = Vec::new();
    let (mut learned, mut first_look, mut zero) = (Vec::new(), Vec::new(), Vec::new());
    let mut problems = Vec::new();
    progress.stage("detecting", photos.len() as u64);
    for photo in photos {
        if progress.cancelled() {
            anyhow::bail!("cancelled");
        }
        let boxes: Vec<_> =
            cat.annotations_of_photo(photo.id)?.iter().filter(|a| is_true_box(a)).filter_map(|a| a.bbox).collect();
        let file = cat.photo_file(&photo.stored_path);
        match with_photo(&file, |img| finder.find_all(&img)) {
            Ok(found) => {
                let image = truths.len();
                let scored = |d: Detection| Scored { image, bbox: d.bbox, score: d.score };
                learned.extend(found.learned.into_iter().map(scored));
                first_look.extend(found.first_look.into_iter().map(scored));
                zero.extend(found.zero_shot.into_iter().map(scored));
                truths.push(boxes);
            }
            Err(problem) => problems.push(problem),
        }
        progress.advance(1);
    }
    Ok(EvalDetectReport {
        photos: truths.len(),
        true_boxes: truths.iter().map(Vec::len).sum(),
        detector: finder.is_learned().then(|| scores(&learned, &truths)),
        first_look: finder.looks_twice().then(|| scores(&first_look, &truths)),
        zero_shot: scores(&zero, &truths),
        problems,
    })
}
