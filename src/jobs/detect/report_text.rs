//! How the detection reports read on a terminal.

use std::fmt;

use super::eval::{DetectionScores, EvalDetectReport};
use super::{DetectReport, PhotoProblem, TrainDetectorReport};

fn problems(f: &mut fmt::Formatter<'_>, problems: &[PhotoProblem]) -> fmt::Result {
    for p in problems {
        writeln!(f, "  skipped {}: {}", p.photo, p.problem)?;
    }
    Ok(())
}

impl fmt::Display for DetectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = self.detector.as_deref().unwrap_or("zero-shot proposals (no detector trained yet)");
        writeln!(f, "detector: {by}")?;
        writeln!(
            f,
            "searched {} photo(s) without boxes ({} already had boxes): {} proposal(s) added as unreviewed",
            self.photos_searched, self.photos_skipped, self.boxes_added
        )?;
        if self.boxes_replaced > 0 {
            writeln!(f, "{} older unreviewed proposal(s) replaced", self.boxes_replaced)?;
        }
        problems(f, &self.problems)?;
        if self.cancelled {
            writeln!(f, "cancelled: the photos done so far are kept")?;
        }
        Ok(())
    }
}

impl fmt::Display for TrainDetectorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.card;
        writeln!(f, "detector written to {} (now the catalogue's active detector)", self.detector.display())?;
        writeln!(
            f,
            "trained on {} photo(s), {} box(es), {} epochs, {:.1} s",
            c.train_photos, c.train_boxes, c.epochs, c.seconds
        )?;
        match (c.validation_ap50, c.validation_ap50_95) {
            (Some(ap50), Some(ap)) => writeln!(
                f,
                "validation ({} photo(s) never trained on, {} box(es)): AP50 {ap50:.3}, AP50:95 {ap:.3}",
                c.validation_photos, c.validation_boxes
            )?,
            _ => writeln!(f, "validation: too few photos with boxes to hold some out")?,
        }
        if let (Some(ap50), Some(ap)) = (c.validation_ap50_first_look, c.validation_ap50_95_first_look) {
            writeln!(f, "  before the second look at the best boxes: AP50 {ap50:.3}, AP50:95 {ap:.3}")?;
        }
        if c.refit_on_all {
            writeln!(
                f,
                "then trained again on all {} photo(s), the validation photos too: that head is the one written",
                c.train_photos + c.validation_photos
            )?;
        }
        writeln!(
            f,
            "scores calibrated: p = sigmoid({:.3} * logit(s) + {:.3})",
            self.calibration.a, self.calibration.b
        )?;
        problems(f, &self.problems)
    }
}

fn row(f: &mut fmt::Formatter<'_>, name: &str, s: &DetectionScores) -> fmt::Result {
    writeln!(f, "{name:<22} {:>6.3} {:>9.3} {:>14.3} {:>8}", s.ap50, s.ap50_95, s.mean_best_iou, s.boxes_proposed)
}

impl fmt::Display for EvalDetectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} photo(s), {} true box(es)", self.photos, self.true_boxes)?;
        writeln!(f, "{:<22} {:>6} {:>9} {:>14} {:>8}", "", "AP50", "AP50:95", "mean best IoU", "boxes")?;
        if let Some(d) = &self.detector {
            row(f, "learned detector", d)?;
        }
        if let Some(d) = &self.first_look {
            row(f, "  its first look only", d)?;
        }
        row(f, "zero-shot proposals", &self.zero_shot)?;
        problems(f, &self.problems)
    }
}
