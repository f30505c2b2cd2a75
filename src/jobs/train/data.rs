//! The training set: the catalogue's labelled crops, split by individual so validation
//! individuals are never seen in training. Unlabelled crops are never a class; individuals
//! with one crop stay in training (they cannot be validated on their own).

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::base::ids::AnnotationId;

/// A labelled crop.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub annotation: AnnotationId,
    pub individual: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Split {
    /// Training crops with their class index into `classes`.
    #[serde(skip)]
    pub train: Vec<(AnnotationId, u32)>,
    pub classes: Vec<String>,
    #[serde(skip)]
    pub validation: Vec<Labelled>,
    pub validation_individuals: Vec<String>,
}

impl Split {
    /// Crops per training class, in class order (dynamic margins need them).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &(_, c) in &self.train {
            counts[c as usize] += 1;
        }
        counts
    }
}

/// Splits by individual: a seeded `validation_fraction` of the individuals that have at
/// least two crops goes to validation, everything else trains.
pub fn split_by_individual(labelled: &[Labelled], validation_fraction: f64, seed: u64) -> Split {
    let (by_individual, eligible) = grouped(labelled, seed);
    let n_val = (eligible.len() as f64 * validation_fraction.clamp(0.0, 1.0)).round() as usize;
    holding(&by_individual, &eligible.into_iter().take(n_val).collect())
}

/// `k` splits whose validation individuals partition those with at least two crops (each
/// validated once, in one fold, never trained on there); singletons always train.
pub fn folds_by_individual(labelled: &[Labelled], k: usize, seed: u64) -> Vec<Split> {
    let (by_individual, eligible) = grouped(labelled, seed);
    let k = k.min(eligible.len());
    (0..k).map(|fold| holding(&by_individual, &eligible.iter().skip(fold).step_by(k).copied().collect())).collect()
}

/// The crops of each individual (in name order), and the individuals with at least two crops
/// (those that can be validated on), shuffled by `seed`.
fn grouped(labelled: &[Labelled], seed: u64) -> (BTreeMap<&str, Vec<AnnotationId>>, Vec<&str>) {
    let mut by_individual: BTreeMap<&str, Vec<AnnotationId>> = BTreeMap::new();
    for l in labelled {
        by_individual.entry(l.individual.as_str()).or_default().push(l.annotation);
    }
    let mut eligible: Vec<&str> = by_individual.iter().filter(|(_, a)| a.len() >= 2).map(|(i, _)| *i).collect();
    eligible.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    (by_individual, eligible)
}

/// The split that validates on the individuals in `held` and trains on all the others.
fn holding(by_individual: &BTreeMap<&str, Vec<AnnotationId>>, held: &BTreeSet<&str>) -> Split {
    let mut split = Split::default();
    for (individual, annotations) in by_individual {
        if held.contains(individual) {
            split.validation_individuals.push(individual.to_string());
            split
                .validation
                .extend(annotations.iter().map(|&a| Labelled { annotation: a, individual: individual.to_string() }));
        } else {
            let class = split.classes.len() as u32;
            split.classes.push(individual.to_string());
            split.train.extend(annotations.iter().map(|&a| (a, class)));
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(spec: &[(&str, usize)]) -> Vec<Labelled> {
        let mut out = Vec::new();
        for (ind, n) in spec {
            for _ in 0..*n {
                out.push(Labelled { annotation: AnnotationId(out.len() as i64), individual: ind.to_string() });
            }
        }
        out
    }

    #[test]
    fn validation_individuals_never_train_and_singletons_stay_in_training() {
        let data = labelled(&[("A", 3), ("B", 2), ("C", 1), ("D", 4), ("E", 2)]);
        let split = split_by_individual(&data, 0.5, 7);
        assert_eq!(split.validation_individuals.len(), 2, "half of the four with two or more crops");
        assert!(!split.validation_individuals.contains(&"C".to_string()));
        for v in &split.validation_individuals {
            assert!(!split.classes.contains(v));
        }
        assert_eq!(split.train.len() + split.validation.len(), data.len());
        assert_eq!(split.class_counts().iter().sum::<usize>(), split.train.len());
        assert_eq!(split_by_individual(&data, 0.5, 7).validation_individuals, split.validation_individuals);
    }

    #[test]
    fn folds_validate_each_individual_once_and_never_train_on_it_there() {
        let data = labelled(&[("A", 3), ("B", 2), ("C", 1), ("D", 4), ("E", 2), ("F", 2), ("G", 5)]);
        let folds = folds_by_individual(&data, 3, 1);
        assert_eq!(folds.len(), 3);
        let mut validated: Vec<String> = folds.iter().flat_map(|f| f.validation_individuals.clone()).collect();
        validated.sort();
        assert_eq!(validated, ["A", "B", "D", "E", "F", "G"], "all but the singleton, once each");
        for f in &folds {
            assert!(!f.validation_individuals.is_empty());
            assert!(f.validation_individuals.iter().all(|v| !f.classes.contains(v)));
            assert!(f.classes.contains(&"C".to_string()));
            assert_eq!(f.train.len() + f.validation.len(), data.len());
        }
        assert_eq!(folds_by_individual(&data, 10, 1).len(), 6, "no more folds than individuals to hold out");
    }
}
