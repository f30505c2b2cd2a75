//! How well boxes match the truth: COCO-style average precision at an IoU threshold
//! (101-point interpolated, class-agnostic) and the mean best IoU per true box.

use crate::base::vocabulary::BoxPx;

/// A scored box in photo `image`.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub image: usize,
    pub bbox: BoxPx,
    pub score: f32,
}

/// Which detections are right at `iou`: each true box is claimed by at most one, the
/// best-scoring first. Returns (score, right) per detection, best first.
pub fn outcomes(detections: &[Scored], truths: &[Vec<BoxPx>], iou: f64) -> Vec<(f32, bool)> {
    let mut order: Vec<&Scored> = detections.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut claimed: Vec<Vec<bool>> = truths.iter().map(|t| vec![false; t.len()]).collect();
    order
        .into_iter()
        .map(|d| {
            let Some(boxes) = truths.get(d.image) else { return (d.score, false) };
            let best = boxes
                .iter()
                .enumerate()
                .filter(|(j, _)| !claimed[d.image][*j])
                .map(|(j, t)| (j, t.iou(&d.bbox)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((j, v)) if v >= iou => {
                    claimed[d.image][j] = true;
                    (d.score, true)
                }
                _ => (d.score, false),
            }
        })
        .collect()
}

/// Average precision at `iou`, interpolated at 101 recall points as COCO does; 0 when there
/// are no true boxes.
pub fn average_precision(detections: &[Scored], truths: &[Vec<BoxPx>], iou: f64) -> f64 {
    let total: usize = truths.iter().map(Vec::len).sum();
    if total == 0 {
        return 0.0;
    }
    let mut right = 0usize;
    let mut curve = Vec::new();
    for (k, (_, ok)) in outcomes(detections, truths, iou).into_iter().enumerate() {
        right += ok as usize;
        curve.push((right as f64 / total as f64, right as f64 / (k + 1) as f64));
    }
    // Precision made monotone from the right, then read at recall 0, 0.01, ..., 1.
    for i in (0..curve.len().saturating_sub(1)).rev() {
        curve[i].1 = curve[i].1.max(curve[i + 1].1);
    }
    (0..=100)
        .map(|r| {
            let recall = r as f64 / 100.0;
            curve.iter().find(|(rec, _)| *rec >= recall - 1e-12).map_or(0.0, |(_, p)| *p)
        })
        .sum::<f64>()
        / 101.0
}

/// AP averaged over IoU 0.50, 0.55, ..., 0.95.
pub fn average_precision_50_95(detections: &[Scored], truths: &[Vec<BoxPx>]) -> f64 {
    (0..10).map(|i| average_precision(detections, truths, 0.5 + 0.05 * i as f64)).sum::<f64>() / 10.0
}

/// For each true box, the highest IoU any detection in its photo reaches; their mean.
pub fn mean_best_iou(detections: &[Scored], truths: &[Vec<BoxPx>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for (image, boxes) in truths.iter().enumerate() {
        for t in boxes {
            let best = detections.iter().filter(|d| d.image == image).map(|d| d.bbox.iou(t)).fold(0.0, f64::max);
            sum += best;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(image: usize, x: f64, score: f32) -> Scored {
        Scored { image, bbox: BoxPx::new(x, 0.0, 10.0, 10.0), score }
    }

    #[test]
    fn perfect_detections_score_one_and_misses_lower_it() {
        let truths = vec![vec![BoxPx::new(0.0, 0.0, 10.0, 10.0)], vec![BoxPx::new(20.0, 0.0, 10.0, 10.0)]];
        let perfect = [s(0, 0.0, 0.9), s(1, 20.0, 0.8)];
        assert!((average_precision(&perfect, &truths, 0.5) - 1.0).abs() < 1e-12);
        assert!((mean_best_iou(&perfect, &truths) - 1.0).abs() < 1e-12);
        // A confident false box ranked first: precision 1/2 at recall 1/2, 2/3 at 1.
        let with_false = [s(0, 50.0, 0.95), s(0, 0.0, 0.9), s(1, 20.0, 0.8)];
        let ap = average_precision(&with_false, &truths, 0.5);
        assert!((ap - 2.0 / 3.0).abs() < 1e-9, "{ap}");
        // A duplicate of a claimed box is a false one.
        let dup = outcomes(&[s(0, 0.0, 0.9), s(0, 1.0, 0.8)], &truths, 0.5);
        assert_eq!(dup, vec![(0.9, true), (0.8, false)]);
        // Half the truths never found: AP 0.5 (recall never passes 0.5).
        let half = average_precision(&[s(0, 0.0, 0.9)], &truths, 0.5);
        assert!((half - 51.0 / 101.0).abs() < 1e-9, "{half}");
        // A shifted box: IoU 0.25 misses at 0.5, and its IoU is the mean best of that truth.
        let shifted = [s(0, 6.0, 0.9)];
        assert_eq!(average_precision(&shifted, &truths[..1], 0.5), 0.0);
        assert!((mean_best_iou(&shifted, &truths[..1]) - 40.0 / 160.0).abs() < 1e-9);
        assert!(average_precision_50_95(&perfect, &truths) > 0.99);
    }
}
