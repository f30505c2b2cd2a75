//! Calibrated fusion of the global and the local score.
//!
//! Each score is mapped to the probability that the query and a candidate individual are the
//! same animal by an isotonic (monotone, otherwise free) regression fitted on labelled pairs
//! of the catalogue: a query and one of its shortlisted individuals, same or not. The two
//! log-odds are then weighed by a logistic regression fitted on the same pairs (weights kept
//! non-negative): the two scores are not independent evidence (a crop that matches well
//! globally also tends to match locally), so adding their log-odds overcounts what they
//! share. The fused number reads as a probability, ranks the candidates, and carries the
//! new-individual threshold.

use serde::{Deserialize, Serialize};

/// Same-individual pairs with a local score needed before the local score is calibrated;
/// with fewer, the fused probability is the global one alone.
pub const MIN_LOCAL_PAIRS: usize = 20;

/// Probabilities are kept this far from 0 and 1, so that no single score is certain.
const EPSILON: f32 = 1e-4;

/// One labelled pair: the query against one candidate individual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// The candidate's best cosine with the query.
    pub global: f32,
    /// Verified local matches with the candidate's best crop; `None` when not verified.
    pub local: Option<f32>,
    pub same: bool,
}

/// A monotone non-decreasing map from a score to a probability: knots at the centres of the
/// pool-adjacent-violators blocks, linear between them, flat beyond the ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    knots: Vec<f32>,
    probabilities: Vec<f32>,
}

/// A block of pooled scores: their sum, the same pairs among them, and how many.
#[derive(Debug, Clone, Copy)]
struct Block {
    x: f64,
    y: f64,
    n: f64,
}

impl Block {
    fn mean(&self) -> f64 {
        self.y / self.n
    }
}

/// Pools adjacent blocks until their means never decrease (weights are the `n`).
fn pool(blocks: impl IntoIterator<Item = Block>) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for b in blocks {
        out.push(b);
        while out.len() >= 2 && out[out.len() - 2].mean() >= out[out.len() - 1].mean() {
            let last = out.pop().expect("two blocks");
            let prev = out.last_mut().expect("two blocks");
            prev.x += last.x;
            prev.y += last.y;
            prev.n += last.n;
        }
    }
    out
}

impl Isotonic {
    /// Fits `(score, same)` points; `None` without any point. Each block's rate is smoothed
    /// (one same and one different pair added) so that a handful of pairs never gives 0 or 1.
    pub fn fit(points: &[(f32, bool)]) -> Option<Isotonic> {
        let mut sorted: Vec<(f32, bool)> = points.iter().copied().filter(|(x, _)| x.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Equal scores form one block from the start: the fit cannot separate them.
        let mut ties: Vec<Block> = Vec::new();
        for &(x, same) in &sorted {
            let y = f64::from(u8::from(same));
            match ties.last_mut() {
                Some(b) if b.x / b.n == f64::from(x) => {
                    b.x += f64::from(x);
                    b.y += y;
                    b.n += 1.0;
                }
                _ => ties.push(Block { x: f64::from(x), y, n: 1.0 }),
            }
        }
        let blocks = pool(ties);
        // Smoothing can reorder blocks of different sizes; pooling again restores the order.
        let smoothed = pool(blocks.iter().map(|b| Block { x: b.x, y: (b.y + 1.0) / (b.n + 2.0) * b.n, n: b.n }));
        Some(Isotonic {
            knots: smoothed.iter().map(|b| (b.x / b.n) as f32).collect(),
            probabilities: smoothed.iter().map(|b| (b.mean() as f32).clamp(EPSILON, 1.0 - EPSILON)).collect(),
        })
    }

    /// The probability at `x`.
    pub fn probability(&self, x: f32) -> f32 {
        let k = &self.knots;
        let p = &self.probabilities;
        if x.is_nan() {
            return p[0];
        }
        let i = k.partition_point(|&knot| knot <= x);
        if i == 0 {
            return p[0];
        }
        if i == k.len() {
            return p[k.len() - 1];
        }
        let t = (x - k[i - 1]) / (k[i] - k[i - 1]);
        p[i - 1] + t * (p[i] - p[i - 1])
    }

    fn check(&self) -> Result<(), String> {
        let (k, p) = (&self.knots, &self.probabilities);
        if k.is_empty() || k.len() != p.len() {
            return Err(format!("{} knots for {} probabilities", k.len(), p.len()));
        }
        if !k.iter().all(|x| x.is_finite()) || !k.windows(2).all(|w| w[0] < w[1]) {
            return Err("the knots are not finite and increasing".into());
        }
        if !p.iter().all(|&q| q > 0.0 && q < 1.0) || !p.windows(2).all(|w| w[0] <= w[1]) {
            return Err("the probabilities are not in (0, 1) and non-decreasing".into());
        }
        Ok(())
    }
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(EPSILON, 1.0 - EPSILON);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// The fitted maps of one model's scores to probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub global: Isotonic,
    /// Absent when too few verified same pairs were available.
    pub local: Option<Isotonic>,
    /// Share of same pairs among the fitted pairs.
    pub prior: f32,
    /// The fusion `[bias, global weight, local weight]` over the two log-odds; absent in
    /// calibrations stored before it was fitted, which add the log-odds as independent
    /// evidence.
    #[serde(default)]
    pub weights: Option<[f32; 3]>,
    /// Pairs fitted, and the same ones among them.
    pub pairs: usize,
    pub same: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrationError {
    #[error("calibration needs both same-individual and different-individual pairs ({same} same of {pairs})")]
    OneSided { same: usize, pairs: usize },
    #[error("not a calibration: {0}")]
    Invalid(String),
}

impl Calibration {
    pub fn fit(pairs: &[Pair]) -> Result<Calibration, CalibrationError> {
        let same = pairs.iter().filter(|p| p.same).count();
        if same == 0 || same == pairs.len() {
            return Err(CalibrationError::OneSided { same, pairs: pairs.len() });
        }
        let global: Vec<(f32, bool)> = pairs.iter().map(|p| (p.global, p.same)).collect();
        let local: Vec<(f32, bool)> = pairs.iter().filter_map(|p| p.local.map(|l| (l, p.same))).collect();
        let local_same = local.iter().filter(|(_, s)| *s).count();
        let mut fitted = Calibration {
            global: Isotonic::fit(&global).ok_or_else(|| CalibrationError::Invalid("no finite global score".into()))?,
            local: if local_same >= MIN_LOCAL_PAIRS && local_same < local.len() { Isotonic::fit(&local) } else { None },
            prior: same as f32 / pairs.len() as f32,
            weights: None,
            pairs: pairs.len(),
            same,
        };
        if let Some(local_fit) = &fitted.local {
            let points: Vec<([f64; 2], bool)> = pairs
                .iter()
                .filter_map(|p| {
                    let l = p.local?;
                    let g = logit(fitted.global.probability(p.global)) as f64;
                    Some(([g, logit(local_fit.probability(l)) as f64], p.same))
                })
                .collect();
            fitted.weights = fusion_weights(&points, fitted.prior);
        }
        Ok(fitted)
    }

    /// The probability that a candidate with these scores is the query's individual:
    /// non-decreasing in each score.
    pub fn probability(&self, global: f32, local: Option<f32>) -> f32 {
        let g = self.global.probability(global);
        match (&self.local, local) {
            (Some(fit), Some(l)) => {
                let (lg, ll) = (logit(g), logit(fit.probability(l)));
                match self.weights {
                    Some([b, wg, wl]) => sigmoid(b + wg * lg + wl * ll),
                    None => sigmoid(lg + ll - logit(self.prior)),
                }
            }
            _ => g,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a calibration serialises")
    }

    /// Reads what `to_json` wrote, refusing anything that is not a valid calibration.
    pub fn from_json(text: &str) -> Result<Calibration, CalibrationError> {
        let c: Calibration = serde_json::from_str(text).map_err(|e| CalibrationError::Invalid(e.to_string()))?;
        c.global.check().map_err(|e| CalibrationError::Invalid(format!("global: {e}")))?;
        if let Some(l) = &c.local {
            l.check().map_err(|e| CalibrationError::Invalid(format!("local: {e}")))?;
        }
        if let Some(w) = c.weights
            && (w.iter().any(|v| !v.is_finite()) || w[1] < 0.0 || w[2] < 0.0)
        {
            return Err(CalibrationError::Invalid(format!("fusion weights {w:?} are not finite and non-negative")));
        }
        if !(c.prior > 0.0 && c.prior < 1.0) {
            return Err(CalibrationError::Invalid(format!("prior {} is not in (0, 1)", c.prior)));
        }
        Ok(c)
    }
}

/// The logistic regression `sigmoid(b + wg * x[0] + wl * x[1])` of `same` on the two
/// log-odds, by Newton steps from independent evidence (`b = -logit(prior)`, weights 1) with
/// a light ridge towards it; weights kept non-negative, so the fusion stays non-decreasing
/// in each score. `None` when the fit does not settle on finite numbers.
fn fusion_weights(points: &[([f64; 2], bool)], prior: f32) -> Option<[f32; 3]> {
    use nalgebra::{Matrix3, Vector3};
    let start = Vector3::new(-(logit(prior) as f64), 1.0, 1.0);
    let mut w = start;
    let ridge = 1e-3 * points.len().max(1) as f64;
    for _ in 0..50 {
        let mut grad = (w - start) * ridge;
        let mut hess = Matrix3::identity() * ridge;
        for (x, same) in points {
            let v = Vector3::new(1.0, x[0], x[1]);
            let p = 1.0 / (1.0 + (-w.dot(&v)).exp());
            grad += v * (p - if *same { 1.0 } else { 0.0 });
            hess += v * v.transpose() * (p * (1.0 - p)).max(1e-9);
        }
        let step = hess.try_inverse()? * grad;
        w -= step;
        w[1] = w[1].max(0.0);
        w[2] = w[2].max(0.0);
        if step.norm() < 1e-6 {
            break;
        }
    }
    let out = [w[0] as f32, w[1] as f32, w[2] as f32];
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// The probability of every pair from a calibration fitted without its group (the query's
/// individual, as a hash of its name), the groups of one `group % folds` in turn: what the
/// fusion scores on individuals it was not fitted on. A fold whose complement cannot be
/// fitted uses the fit on all pairs.
pub fn cross_validated(pairs: &[(u32, Pair)], folds: u32) -> Result<Vec<f32>, CalibrationError> {
    let folds = folds.max(2);
    let fold_of = |group: u32| group % folds;
    let all: Vec<Pair> = pairs.iter().map(|(_, p)| *p).collect();
    let everything = Calibration::fit(&all)?;
    let mut out = vec![0.0; pairs.len()];
    for f in 0..folds {
        let rest: Vec<Pair> = pairs.iter().filter(|(g, _)| fold_of(*g) != f).map(|(_, p)| *p).collect();
        let fitted = Calibration::fit(&rest).unwrap_or_else(|_| everything.clone());
        for (slot, (g, p)) in out.iter_mut().zip(pairs) {
            if fold_of(*g) == f {
                *slot = fitted.probability(p.global, p.local);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded pairs whose chance of being the same rises with both scores.
    fn pairs(n: usize, seed: u64) -> Vec<Pair> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let same = rng.random_bool(0.2);
                let global = if same { rng.random_range(0.3..0.9) } else { rng.random_range(0.1..0.6) };
                let local = if same { rng.random_range(0..40) } else { rng.random_range(0..8) } as f32;
                Pair { global, local: Some(local), same }
            })
            .collect()
    }

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        // 0.1 same, 0.2 different: a violation, pooled into one block at 0.15.
        let fit = Isotonic::fit(&[(0.1, true), (0.2, false), (0.3, true), (0.4, true)]).unwrap();
        assert_eq!(fit.knots.len(), 2);
        assert!((fit.knots[0] - 0.15).abs() < 1e-6 && (fit.knots[1] - 0.35).abs() < 1e-6, "{:?}", fit.knots);
        // Smoothed: (1 + 1) / (2 + 2) and (2 + 1) / (2 + 2).
        assert!((fit.probability(0.0) - 0.5).abs() < 1e-6);
        assert!((fit.probability(0.25) - 0.625).abs() < 1e-6);
        assert!((fit.probability(1.0) - 0.75).abs() < 1e-6);
        assert!(Isotonic::fit(&[]).is_none());
        assert!(Isotonic::fit(&[(f32::NAN, true)]).is_none());
    }

    #[test]
    fn fused_probability_is_monotone_in_each_score() {
        let c = Calibration::fit(&pairs(2000, 1)).unwrap();
        assert!(c.local.is_some());
        let globals: Vec<f32> = (0..=40).map(|i| i as f32 / 40.0).collect();
        let locals: Vec<f32> = (0..=50).map(|i| i as f32).collect();
        for &g in &globals {
            for w in locals.windows(2) {
                assert!(c.probability(g, Some(w[0])) <= c.probability(g, Some(w[1])));
            }
        }
        for &l in &locals {
            for w in globals.windows(2) {
                assert!(c.probability(w[0], Some(l)) <= c.probability(w[1], Some(l)));
            }
        }
        // The scores move it: a strong pair is likely, a weak one unlikely.
        assert!(c.probability(0.85, Some(35.0)) > 0.9);
        assert!(c.probability(0.15, Some(1.0)) < 0.05);
        let p = c.probability(0.5, None);
        assert!(p > 0.0 && p < 1.0);
    }

    #[test]
    fn calibrated_probabilities_match_observed_rates() {
        let train = pairs(4000, 2);
        let test = pairs(4000, 3);
        let c = Calibration::fit(&train).unwrap();
        // Among test pairs given about 80 % or more, about that share is the same individual.
        let high: Vec<&Pair> = test.iter().filter(|p| c.probability(p.global, p.local) >= 0.8).collect();
        let rate = high.iter().filter(|p| p.same).count() as f32 / high.len() as f32;
        assert!(high.len() > 100 && rate > 0.8, "{} pairs, rate {rate}", high.len());
        let low: Vec<&Pair> = test.iter().filter(|p| c.probability(p.global, p.local) < 0.1).collect();
        let rate = low.iter().filter(|p| p.same).count() as f32 / low.len() as f32;
        assert!(low.len() > 100 && rate < 0.1, "{} pairs, rate {rate}", low.len());
    }

    #[test]
    fn a_local_score_that_repeats_the_global_one_is_not_counted_twice() {
        // The local score carries nothing the global one does not: added as independent
        // evidence it would double the log-odds and overstate every probability.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let twin = |rng: &mut rand_chacha::ChaCha8Rng| {
            let same = rng.random_bool(0.2);
            let global: f32 = if same { rng.random_range(0.3..0.9) } else { rng.random_range(0.1..0.6) };
            Pair { global, local: Some(global * 40.0), same }
        };
        let train: Vec<Pair> = (0..4000).map(|_| twin(&mut rng)).collect();
        let c = Calibration::fit(&train).unwrap();
        let [_, wg, wl] = c.weights.expect("fusion weights");
        assert!(wg >= 0.0 && wl >= 0.0, "weights {wg} {wl}");
        // On other pairs, the probabilities given match the rates seen (expected calibration
        // error over ten bins); adding the log-odds as independent evidence misses them.
        let test: Vec<Pair> = (0..4000).map(|_| twin(&mut rng)).collect();
        let error = |c: &Calibration| {
            // Per bin: the probabilities given and the same pairs, summed.
            let mut bins = [(0f32, 0f32); 10];
            for p in &test {
                let q = c.probability(p.global, p.local);
                let bin = &mut bins[((q * 10.0) as usize).min(9)];
                *bin = (bin.0 + q, bin.1 + if p.same { 1.0 } else { 0.0 });
            }
            bins.iter().map(|(q, same)| (q - same).abs()).sum::<f32>() / test.len() as f32
        };
        let naive = Calibration { weights: None, ..c.clone() };
        let (fitted, independent) = (error(&c), error(&naive));
        assert!(fitted < 0.07, "{fitted} (independent evidence {independent})");
        assert!(independent > 1.6 * fitted, "independent evidence {independent}, fitted {fitted}");
    }

    #[test]
    fn local_is_left_out_with_too_few_verified_pairs() {
        let mut few = pairs(200, 4);
        for p in &mut few {
            if p.same {
                p.local = None;
            }
        }
        let c = Calibration::fit(&few).unwrap();
        assert!(c.local.is_none());
        assert_eq!(c.probability(0.5, Some(30.0)), c.probability(0.5, None));
    }

    #[test]
    fn one_sided_pairs_are_refused() {
        let same = vec![Pair { global: 0.5, local: None, same: true }; 3];
        assert_eq!(Calibration::fit(&same), Err(CalibrationError::OneSided { same: 3, pairs: 3 }));
        assert!(matches!(Calibration::fit(&[]), Err(CalibrationError::OneSided { same: 0, pairs: 0 })));
    }

    #[test]
    fn json_round_trips_and_damage_is_refused() {
        let c = Calibration::fit(&pairs(500, 5)).unwrap();
        assert_eq!(Calibration::from_json(&c.to_json()).unwrap(), c);
        assert!(Calibration::from_json("{}").is_err());
        assert!(Calibration::from_json("not json").is_err());
        let mut bad = c.clone();
        bad.global.probabilities.reverse();
        assert!(matches!(Calibration::from_json(&bad.to_json()), Err(CalibrationError::Invalid(_))));
        let mut bad = c.clone();
        bad.prior = 1.5;
        assert!(matches!(Calibration::from_json(&bad.to_json()), Err(CalibrationError::Invalid(_))));
        let mut bad = c.clone();
        bad.weights = Some([0.0, -1.0, 1.0]);
        assert!(matches!(Calibration::from_json(&bad.to_json()), Err(CalibrationError::Invalid(_))));
        // A calibration stored before the fusion was fitted reads as independent evidence.
        let mut old: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        old.as_object_mut().unwrap().remove("weights");
        assert_eq!(Calibration::from_json(&old.to_string()).unwrap().weights, None);
    }

    #[test]
    fn cross_validation_scores_each_group_without_it() {
        // Two groups whose labels contradict each other: fitted without its own group, each
        // group's pairs get the other group's (opposite) rate.
        let mut grouped = Vec::new();
        for i in 0..40 {
            grouped.push((0, Pair { global: 0.9, local: None, same: i % 4 == 0 }));
            grouped.push((1, Pair { global: 0.9, local: None, same: i % 4 != 0 }));
            grouped.push((2, Pair { global: 0.1, local: None, same: false }));
        }
        grouped.push((2, Pair { global: 0.1, local: None, same: true }));
        let p = cross_validated(&grouped, 3).unwrap();
        let fold0 = p[0];
        let fold1 = p[1];
        assert!(fold0 > 0.6, "group 0 scored by group 1's rate: {fold0}");
        assert!(fold1 < 0.4, "group 1 scored by group 0's rate: {fold1}");
        assert_eq!(p.len(), grouped.len());
    }
}
