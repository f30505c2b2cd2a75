//! The training set: the catalogue's labelled crops, split by individual so validation
//! individuals are never seen in training. Unlabelled crops are never a class; individuals
//! with one crop stay in training (they cannot be validated on their own).

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A labelled crop.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub annotation: i64,
    pub individual: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Split {
    /// Training crops with their class index into `classes`.
    #[serde(skip)]
    pub train: Vec<(i64, u32)>,
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
    let mut by_individual: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for l in labelled {
        by_individual.entry(l.individual.as_str()).or_default().push(l.annotation);
    }
    let mut eligible: Vec<&str> = by_individual.iter().filter(|(_, a)| a.len() >= 2).map(|(i, _)| *i).collect();
    eligible.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let n_val = (eligible.len() as f64 * validation_fraction.clamp(0.0, 1.0)).round() as usize;
    let validation: std::collections::BTreeSet<&str> = eligible.into_iter().take(n_val).collect();
    let mut split = Split::default();
    for (individual, annotations) in &by_individual {
        if validation.contains(individual) {
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
                out.push(Labelled { annotation: out.len() as i64, individual: ind.to_string() });
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
}
