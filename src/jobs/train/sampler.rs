//! Batch samplers: which dataset items go into each batch of an epoch.
//!
//! Both are pure functions of (seed, epoch): the same seed gives the same batches on every
//! machine (ChaCha8 is portable), so a training run can be resumed or reproduced exactly.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("a P×K batch needs P ≥ 1 classes and K ≥ 1 images per class, got P = {p}, K = {k}")]
    EmptyBatch { p: usize, k: usize },
    #[error("P×K batches with P = {p} need at least {p} classes, the labels hold {classes}")]
    TooFewClasses { p: usize, classes: usize },
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
}

/// Splits each epoch of a dataset into batches of dataset indices.
pub trait BatchSampler {
    /// The batches of `epoch`, deterministic for the sampler's seed.
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>>;
    /// How many batches every epoch has.
    fn batches_per_epoch(&self) -> usize;
}

/// One independent random stream per epoch: epoch e's batches do not depend on how many numbers
/// earlier epochs drew.
fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    rng
}

/// P×K sampling (Hermans et al. 2017): each batch holds P classes with K images each, so every
/// anchor has positives and negatives for batch-hard mining.
///
/// An epoch visits every class once, in random order; the last batch is topped up with other
/// random classes so that all batches have P distinct classes. A class with at least K images
/// gives K distinct ones; a class with fewer gives all of them plus draws with replacement up to
/// K (so a rare individual's every photo is seen each epoch).
#[derive(Debug, Clone)]
pub struct PkSampler {
    /// Dataset indices of each class, classes in label order.
    by_class: Vec<Vec<usize>>,
    p: usize,
    k: usize,
    seed: u64,
}

impl PkSampler {
    /// `labels[i]` is the class of dataset item i (any u32 identifiers, not necessarily dense).
    pub fn new(labels: &[u32], p: usize, k: usize, seed: u64) -> Result<Self, SamplerError> {
        if p == 0 || k == 0 {
            return Err(SamplerError::EmptyBatch { p, k });
        }
        let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (index, &label) in labels.iter().enumerate() {
            by_label.entry(label).or_default().push(index);
        }
        if by_label.len() < p {
            return Err(SamplerError::TooFewClasses { p, classes: by_label.len() });
        }
        Ok(PkSampler { by_class: by_label.into_values().collect(), p, k, seed })
    }

    /// Images per batch, P·K.
    pub fn batch_size(&self) -> usize {
        self.p * self.k
    }

    /// K dataset indices of class `class`.
    fn draw(&self, class: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let images = &self.by_class[class];
        if images.len() >= self.k {
            return rand::seq::index::sample(rng, images.len(), self.k).iter().map(|i| images[i]).collect();
        }
        let mut drawn = images.clone();
        drawn.extend((images.len()..self.k).map(|_| images[rng.random_range(0..images.len())]));
        drawn.shuffle(rng);
        drawn
    }
}

impl BatchSampler for PkSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = epoch_rng(self.seed, epoch);
        let classes = self.by_class.len();
        let mut order: Vec<usize> = (0..classes).collect();
        order.shuffle(&mut rng);
        order
            .chunks(self.p)
            .map(|chunk| {
                let mut group = chunk.to_vec();
                if group.len() < self.p {
                    let mut others: Vec<usize> = (0..classes).filter(|c| !chunk.contains(c)).collect();
                    others.shuffle(&mut rng);
                    group.extend(others.into_iter().take(self.p - chunk.len()));
                }
                group.into_iter().flat_map(|class| self.draw(class, &mut rng)).collect()
            })
            .collect()
    }

    fn batches_per_epoch(&self) -> usize {
        self.by_class.len().div_ceil(self.p)
    }
}

/// Plain shuffled batches: a fresh permutation of all items each epoch, cut into batches.
#[derive(Debug, Clone)]
pub struct ShuffledSampler {
    len: usize,
    batch_size: usize,
    /// Drop a last, smaller batch (keeps batch statistics such as batch norm's comparable).
    drop_last: bool,
    seed: u64,
}

impl ShuffledSampler {
    pub fn new(len: usize, batch_size: usize, drop_last: bool, seed: u64) -> Result<Self, SamplerError> {
        if batch_size == 0 {
            return Err(SamplerError::ZeroBatchSize);
        }
        Ok(ShuffledSampler { len, batch_size, drop_last, seed })
    }
}

impl BatchSampler for ShuffledSampler {
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len).collect();
        order.shuffle(&mut epoch_rng(self.seed, epoch));
        order.chunks(self.batch_size).take(self.batches_per_epoch()).map(<[usize]>::to_vec).collect()
    }

    fn batches_per_epoch(&self) -> usize {
        if self.drop_last { self.len / self.batch_size } else { self.len.div_ceil(self.batch_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// 10 classes: class c has c + 1 images (1..=10), labels sparse (c * 7).
    fn uneven_labels() -> Vec<u32> {
        (0..10u32).flat_map(|c| std::iter::repeat_n(c * 7, c as usize + 1)).collect()
    }

    #[test]
    fn pk_sampler_gives_the_same_batches_for_the_same_seed_and_others_for_another() {
        let labels = uneven_labels();
        let a = PkSampler::new(&labels, 3, 4, 42).unwrap();
        let b = PkSampler::new(&labels, 3, 4, 42).unwrap();
        let c = PkSampler::new(&labels, 3, 4, 43).unwrap();
        assert_eq!(a.batches(0), b.batches(0));
        assert_eq!(a.batches(5), b.batches(5));
        assert_ne!(a.batches(0), a.batches(1), "epochs must differ");
        assert_ne!(a.batches(0), c.batches(0), "seeds must differ");
    }

    #[test]
    fn pk_epoch_visits_every_class_with_p_classes_of_k_images_per_batch() {
        let labels = uneven_labels();
        let (p, k) = (3, 4);
        let sampler = PkSampler::new(&labels, p, k, 7).unwrap();
        for epoch in 0..20 {
            let batches = sampler.batches(epoch);
            assert_eq!(batches.len(), sampler.batches_per_epoch());
            assert_eq!(batches.len(), 4, "10 classes in batches of 3 classes");
            let mut visited = BTreeSet::new();
            for batch in &batches {
                assert_eq!(batch.len(), p * k);
                let mut per_class: HashMap<u32, usize> = HashMap::new();
                for &i in batch {
                    *per_class.entry(labels[i]).or_default() += 1;
                }
                assert_eq!(per_class.len(), p, "P distinct classes in {batch:?}");
                assert!(per_class.values().all(|&n| n == k), "K images per class in {batch:?}");
                visited.extend(per_class.keys().copied());
            }
            assert_eq!(visited, labels.iter().copied().collect::<BTreeSet<_>>(), "epoch {epoch} misses a class");
        }
    }

    #[test]
    fn pk_rare_classes_are_drawn_with_replacement_and_keep_every_image_common_ones_without() {
        let labels = uneven_labels();
        let k = 4;
        let sampler = PkSampler::new(&labels, 2, k, 3).unwrap();
        for batch in sampler.batches(0) {
            let mut per_class: HashMap<u32, Vec<usize>> = HashMap::new();
            for &i in &batch {
                per_class.entry(labels[i]).or_default().push(i);
            }
            for (label, drawn) in per_class {
                let all: BTreeSet<usize> = (0..labels.len()).filter(|&i| labels[i] == label).collect();
                let distinct: BTreeSet<usize> = drawn.iter().copied().collect();
                if all.len() >= k {
                    assert_eq!(distinct.len(), k, "class {label}: K distinct images");
                } else {
                    assert_eq!(distinct, all, "class {label}: every image of a rare class");
                }
            }
        }
    }

    #[test]
    fn pk_sampler_rejects_impossible_batches() {
        let labels = uneven_labels();
        assert_eq!(PkSampler::new(&labels, 11, 2, 0).unwrap_err(), SamplerError::TooFewClasses { p: 11, classes: 10 });
        assert_eq!(PkSampler::new(&labels, 0, 2, 0).unwrap_err(), SamplerError::EmptyBatch { p: 0, k: 2 });
        assert_eq!(PkSampler::new(&[], 1, 1, 0).unwrap_err(), SamplerError::TooFewClasses { p: 1, classes: 0 });
    }

    #[test]
    fn shuffled_sampler_is_a_seeded_permutation_cut_into_batches() {
        let sampler = ShuffledSampler::new(10, 4, false, 9).unwrap();
        let batches = sampler.batches(0);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(batches, ShuffledSampler::new(10, 4, false, 9).unwrap().batches(0));
        assert_ne!(batches, sampler.batches(1));

        let dropping = ShuffledSampler::new(10, 4, true, 9).unwrap();
        assert_eq!(dropping.batches_per_epoch(), 2);
        assert!(dropping.batches(0).iter().all(|b| b.len() == 4));
        assert_eq!(ShuffledSampler::new(10, 0, false, 9).unwrap_err(), SamplerError::ZeroBatchSize);
    }
}
