//! Re-identification metrics, as the Kaggle humpback and Happywhale competitions and the
//! seed pipelines reported them: closed-set top-k, MAP@5 and Recall@k with one vote per
//! individual, the top-1 answer's weighted precision/recall/F1, and open-set MAP@5 with a
//! `new_individual` token inserted where the similarity drops below a threshold.

use std::collections::HashMap;

use serde::Serialize;

/// One query's ranked answer: individuals (best first) with their scores, and the truth.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub truth: String,
    /// `(individual, score)`, best first, one entry per individual.
    pub ranking: Vec<(String, f32)>,
    /// Whether the truth is absent from the gallery (the right answer is `new_individual`).
    pub truth_is_new: bool,
}

/// The token answering "not in the catalogue".
pub const NEW_INDIVIDUAL: &str = "new_individual";

pub const RECALL_AT: [usize; 6] = [1, 2, 4, 8, 16, 32];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClosedSet {
    pub queries: usize,
    pub top1: f64,
    pub top5: f64,
    pub map5: f64,
    /// `(k, recall)` for k in 1, 2, 4, 8, 16, 32.
    pub recall_at: Vec<(usize, f64)>,
    /// The top-1 answer as a classification, weighted by each individual's query count.
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
}

fn rank_of(r: &Ranked) -> Option<usize> {
    r.ranking.iter().position(|(id, _)| *id == r.truth).map(|p| p + 1)
}

/// Mean of 1/rank within the top 5 (0 when absent).
pub fn map5_of(ranks: impl Iterator<Item = Option<usize>>) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for r in ranks {
        n += 1;
        if let Some(r) = r.filter(|&r| r <= 5) {
            sum += 1.0 / r as f64;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

pub fn closed_set(results: &[Ranked]) -> ClosedSet {
    let n = results.len().max(1) as f64;
    let ranks: Vec<Option<usize>> = results.iter().map(rank_of).collect();
    let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    let predictions: Vec<(&str, Option<&str>)> =
        results.iter().map(|r| (r.truth.as_str(), r.ranking.first().map(|(id, _)| id.as_str()))).collect();
    let (weighted_precision, weighted_recall, weighted_f1) = weighted_prf(&predictions);
    ClosedSet {
        queries: results.len(),
        top1: within(1),
        top5: within(5),
        map5: map5_of(ranks.iter().copied()),
        recall_at: RECALL_AT.iter().map(|&k| (k, within(k))).collect(),
        weighted_precision,
        weighted_recall,
        weighted_f1,
    }
}

/// Precision, recall and F1 per true individual, averaged with weights = support.
pub fn weighted_prf(pairs: &[(&str, Option<&str>)]) -> (f64, f64, f64) {
    let mut support: HashMap<&str, usize> = HashMap::new();
    let mut predicted: HashMap<&str, usize> = HashMap::new();
    let mut correct: HashMap<&str, usize> = HashMap::new();
    for &(truth, pred) in pairs {
        *support.entry(truth).or_default() += 1;
        if let Some(p) = pred {
            *predicted.entry(p).or_default() += 1;
            if p == truth {
                *correct.entry(truth).or_default() += 1;
            }
        }
    }
    let total: usize = support.values().sum();
    if total == 0 {
        return (0.0, 0.0, 0.0);
    }
    let (mut p_sum, mut r_sum, mut f_sum) = (0.0, 0.0, 0.0);
    for (class, &s) in &support {
        let tp = *correct.get(class).unwrap_or(&0) as f64;
        let pred = *predicted.get(class).unwrap_or(&0) as f64;
        let precision = if pred > 0.0 { tp / pred } else { 0.0 };
        let recall = tp / s as f64;
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        let w = s as f64 / total as f64;
        p_sum += w * precision;
        r_sum += w * recall;
        f_sum += w * f1;
    }
    (p_sum, r_sum, f_sum)
}

/// The rank of the right answer once `new_individual` is inserted before the first
/// individual scoring below `threshold`.
pub fn open_set_rank(r: &Ranked, threshold: f32) -> Option<usize> {
    let insert_at = r.ranking.iter().position(|(_, s)| *s < threshold).unwrap_or(r.ranking.len());
    if r.truth_is_new {
        return Some(insert_at + 1);
    }
    rank_of(r).map(|rank| if rank > insert_at { rank + 1 } else { rank })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenSet {
    pub threshold: f32,
    pub map5: f64,
    /// Fraction of queries whose top answer is `new_individual`.
    pub answered_new: f64,
    pub queries: usize,
    pub new_queries: usize,
}

pub fn open_set(results: &[Ranked], threshold: f32) -> OpenSet {
    let ranks: Vec<Option<usize>> = results.iter().map(|r| open_set_rank(r, threshold)).collect();
    let answered_new = results.iter().filter(|r| r.ranking.first().is_none_or(|(_, s)| *s < threshold)).count() as f64
        / results.len().max(1) as f64;
    OpenSet {
        threshold,
        map5: map5_of(ranks.into_iter()),
        answered_new,
        queries: results.len(),
        new_queries: results.iter().filter(|r| r.truth_is_new).count(),
    }
}

/// Sweeps the threshold over the observed top scores and keeps the one maximising open-set
/// MAP@5, as the Kaggle pipelines tuned it on validation data.
pub fn tune_threshold(results: &[Ranked]) -> OpenSet {
    let mut candidates: Vec<f32> = results.iter().flat_map(|r| r.ranking.iter().take(5).map(|(_, s)| *s)).collect();
    candidates.push(f32::NEG_INFINITY);
    candidates.sort_by(|a, b| a.total_cmp(b));
    candidates.dedup();
    // Thresholds just above each observed score, so "below" splits between observed values.
    let mut best = open_set(results, f32::NEG_INFINITY);
    let step = (candidates.len() / 400).max(1);
    for &c in candidates.iter().step_by(step) {
        let t = if c.is_finite() { c + 1e-6 } else { c };
        let o = open_set(results, t);
        if o.map5 > best.map5 {
            best = o;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(truth: &str, ranking: &[(&str, f32)], new: bool) -> Ranked {
        Ranked {
            truth: truth.into(),
            ranking: ranking.iter().map(|(i, s)| (i.to_string(), *s)).collect(),
            truth_is_new: new,
        }
    }

    #[test]
    fn map5_counts_one_over_rank_within_five() {
        let rs = [
            ranked("a", &[("a", 0.9), ("b", 0.5)], false),
            ranked("a", &[("b", 0.9), ("a", 0.5)], false),
            ranked("a", &[("b", 0.9), ("c", 0.8), ("d", 0.7), ("e", 0.6), ("f", 0.5), ("a", 0.4)], false),
        ];
        let c = closed_set(&rs);
        assert!((c.map5 - (1.0 + 0.5 + 0.0) / 3.0).abs() < 1e-12);
        assert!((c.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.recall_at[5], (32, 1.0));
    }

    #[test]
    fn weighted_f1_of_a_perfect_and_a_useless_classifier() {
        assert_eq!(weighted_prf(&[("a", Some("a")), ("b", Some("b"))]), (1.0, 1.0, 1.0));
        assert_eq!(weighted_prf(&[("a", Some("b")), ("b", Some("a"))]), (0.0, 0.0, 0.0));
        let (p, r, _) = weighted_prf(&[("a", Some("a")), ("a", Some("b")), ("b", Some("b"))]);
        assert!((r - (2.0 / 3.0 * 0.5 + 1.0 / 3.0)).abs() < 1e-12);
        assert!((p - (2.0 / 3.0 * 1.0 + 1.0 / 3.0 * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn new_individual_is_inserted_where_similarity_drops_below_the_threshold() {
        let known = ranked("a", &[("b", 0.9), ("a", 0.4)], false);
        assert_eq!(open_set_rank(&known, 0.5), Some(3));
        assert_eq!(open_set_rank(&known, 0.3), Some(2));
        let new = ranked("z", &[("b", 0.45), ("a", 0.4)], true);
        assert_eq!(open_set_rank(&new, 0.5), Some(1));
        assert_eq!(open_set_rank(&new, 0.42), Some(2));
    }

    #[test]
    fn the_tuned_threshold_separates_known_from_new() {
        let rs = [
            ranked("a", &[("a", 0.9), ("b", 0.3)], false),
            ranked("b", &[("b", 0.8), ("a", 0.2)], false),
            ranked("z", &[("a", 0.4), ("b", 0.3)], true),
            ranked("y", &[("b", 0.5), ("a", 0.1)], true),
        ];
        let best = tune_threshold(&rs);
        assert_eq!(best.map5, 1.0);
        assert!(best.threshold > 0.5 && best.threshold <= 0.8 + 1e-5, "{}", best.threshold);
        assert_eq!(best.answered_new, 0.5);
    }
}
