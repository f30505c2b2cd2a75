//! What a detector proposes and how proposals are cleaned up: scored boxes in photo pixels,
//! non-maximum suppression, and the calibration that turns a raw score into the probability
//! that the box is right.

use serde::{Deserialize, Serialize};

use crate::base::vocabulary::{BoxPx, Part};

/// One proposed box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BoxPx,
    /// Calibrated where the detector was calibrated: the probability that the box matches a
    /// true one at IoU 0.5.
    pub score: f32,
    pub part: Part,
}

/// Greedy non-maximum suppression, class-agnostic: the best-scoring box first, every box that
/// overlaps a kept one by more than `iou` dropped; at most `keep` boxes.
pub fn nms(mut detections: Vec<Detection>, iou: f64, keep: usize) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in detections {
        if kept.len() >= keep {
            break;
        }
        if kept.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

/// [`nms`], each kept box then moved to the score-weighted mean of every candidate that
/// overlaps it by at least `vote_iou` (box voting): the cells around an animal each measure
/// its edges, and their consensus is placed better than the single best-scoring cell's box.
/// The score stays the best one's. Boxes that voting brought onto a better one are then
/// suppressed like any other.
pub fn nms_voting(detections: Vec<Detection>, iou: f64, vote_iou: f64, keep: usize) -> Vec<Detection> {
    let kept = nms(detections.clone(), iou, keep);
    let voted = kept
        .into_iter()
        .map(|k| {
            let (mut sum, mut weight) = ([0f64; 4], 0f64);
            for d in detections.iter().filter(|d| d.bbox.iou(&k.bbox) >= vote_iou) {
                let w = d.score as f64;
                let b = d.bbox;
                for (s, v) in sum.iter_mut().zip([b.x, b.y, b.x + b.w, b.y + b.h]) {
                    *s += w * v;
                }
                weight += w;
            }
            if weight <= 0.0 {
                return k;
            }
            let [x0, y0, x1, y1] = sum.map(|s| s / weight);
            Detection { bbox: BoxPx::new(x0, y0, x1 - x0, y1 - y0), ..k }
        })
        .collect();
    nms(voted, iou, keep)
}

/// Platt scaling: `p = sigmoid(a * logit(s) + b)`, fitted on the validation photos' detections
/// (right or wrong at IoU 0.5). Monotone, so it reorders nothing; it only makes the score
/// read as a probability. The identity until fitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: f64,
    pub b: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration { a: 1.0, b: 0.0 }
    }
}

fn logit(s: f64) -> f64 {
    let s = s.clamp(1e-6, 1.0 - 1e-6);
    (s / (1.0 - s)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Calibration {
    pub fn apply(&self, raw: f32) -> f32 {
        sigmoid(self.a * logit(raw as f64) + self.b) as f32
    }

    /// Fits `a` (kept positive, so the map stays increasing) and `b` by Newton steps on the
    /// log-loss of `(raw score, right)` pairs, with Platt's smoothed targets. Fewer than two
    /// of either outcome leave too little to fit: the identity.
    pub fn fit(samples: &[(f32, bool)]) -> Calibration {
        let positives = samples.iter().filter(|s| s.1).count();
        let negatives = samples.len() - positives;
        if positives < 2 || negatives < 2 {
            return Calibration::default();
        }
        let t_pos = (positives as f64 + 1.0) / (positives as f64 + 2.0);
        let t_neg = 1.0 / (negatives as f64 + 2.0);
        let xs: Vec<(f64, f64)> =
            samples.iter().map(|&(s, right)| (logit(s as f64), if right { t_pos } else { t_neg })).collect();
        let (mut a, mut b) = (1.0f64, 0.0f64);
        for _ in 0..100 {
            // Gradient and Hessian of the mean log-loss, with a small ridge for stability.
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-6, 0.0, 1e-6);
            for &(x, t) in &xs {
                let p = sigmoid(a * x + b);
                let d = p - t;
                let w = p * (1.0 - p);
                ga += d * x;
                gb += d;
                haa += w * x * x;
                hab += w * x;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if da.abs() + db.abs() < 1e-9 {
                break;
            }
        }
        if !a.is_finite() || !b.is_finite() || a <= 0.0 {
            return Calibration::default();
        }
        Calibration { a, b }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, score: f32) -> Detection {
        Detection { bbox: BoxPx::new(x, 0.0, 10.0, 10.0), score, part: Part::Fluke }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() {
        let kept = nms(vec![det(0.0, 0.5), det(1.0, 0.9), det(50.0, 0.3), det(2.0, 0.1)], 0.5, 10);
        let xs: Vec<f64> = kept.iter().map(|d| d.bbox.x).collect();
        assert_eq!(xs, vec![1.0, 50.0]);
        assert_eq!(nms(vec![det(0.0, 0.5), det(50.0, 0.3)], 0.5, 1).len(), 1);
    }

    #[test]
    fn voting_moves_a_kept_box_to_the_weighted_mean_of_the_boxes_that_agree_with_it() {
        let b = |x: f64, w: f64, score: f32| Detection { bbox: BoxPx::new(x, 0.0, w, 10.0), score, part: Part::Fluke };
        // The best box is shifted right; two weaker ones on the left pull it back, a far
        // one (another animal) does not, and is kept as its own box.
        let found =
            nms_voting(vec![b(2.0, 10.0, 0.6), b(0.0, 10.0, 0.3), b(0.0, 10.0, 0.3), b(40.0, 10.0, 0.2)], 0.5, 0.5, 10);
        assert_eq!(found.len(), 2);
        assert!((found[0].bbox.x - 1.0).abs() < 1e-9, "{:?}", found[0].bbox);
        assert!((found[0].bbox.w - 10.0).abs() < 1e-9);
        assert_eq!(found[0].score, 0.6);
        assert_eq!(found[1].bbox.x, 40.0);
        // Two boxes that overlap too little to suppress each other, both pulled by the
        // candidates between them onto the same place: one is left.
        let pulled =
            nms_voting(vec![b(0.0, 10.0, 0.9), b(6.0, 10.0, 0.8), b(3.0, 10.0, 0.7), b(3.0, 10.0, 0.7)], 0.5, 0.5, 10);
        assert_eq!(pulled.len(), 1, "{pulled:?}");
        assert_eq!(pulled[0].score, 0.9);
    }

    #[test]
    fn calibration_is_increasing_and_follows_the_outcomes() {
        // Raw scores that overstate: right only 20 % of the time around 0.8.
        let mut samples = Vec::new();
        for i in 0..100 {
            let raw = 0.7 + 0.002 * i as f32;
            samples.push((raw, i % 5 == 0));
        }
        for i in 0..20 {
            samples.push((0.95 + 0.001 * i as f32, true));
        }
        let c = Calibration::fit(&samples);
        assert!(c.a > 0.0);
        let (lo, mid, hi) = (c.apply(0.75), c.apply(0.8), c.apply(0.97));
        assert!(lo < mid && mid < hi, "{lo} {mid} {hi}");
        assert!(mid < 0.5, "an overstated 0.8 is brought down: {mid}");
        assert!(hi > 0.6, "{hi}");
        assert_eq!(Calibration::fit(&[(0.9, true)]), Calibration::default());
    }
}
