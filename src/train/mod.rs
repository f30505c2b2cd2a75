//! Fine-tuning the embedder on the biologist's own catalogue.

pub mod baseline;
pub mod cache;
pub mod data;
pub mod loss;
pub mod sampler;
pub mod trainer;

pub use loss::{LossConfig, LossError, MetricLoss};
pub use sampler::{BatchSampler, PkSampler, ShuffledSampler};
pub use trainer::{TrainConfig, TrainEvent, TrainReport, train_head};

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use crate::catalogue::Catalogue;
use crate::embed::Embedder;
use crate::progress::Progress;

/// Trains a head on `cat`'s labelled crops (split by individual), caching the backbone's
/// tokens first; writes the best head and its card into `out`.
pub fn train_catalogue(
    cat: &Catalogue,
    embedder: &Embedder,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> anyhow::Result<TrainReport> {
    let usable: std::collections::HashSet<i64> =
        cat.embedding_states(embedder.key())?.iter().map(|s| s.annotation.id).collect();
    let labelled: Vec<data::Labelled> = cat
        .identified_annotations()?
        .into_iter()
        .filter(|(a, _)| usable.contains(a))
        .map(|(annotation, individual)| data::Labelled { annotation, individual })
        .collect();
    let config = &TrainConfig { blocks: config.blocks.clamp(1, embedder.blocks()), ..config.clone() };
    let split = data::split_by_individual(&labelled, config.validation_fraction, config.seed);
    let ids: Vec<i64> = labelled.iter().map(|l| l.annotation).collect();
    let cache = cache::token_cache(cat, embedder, &ids, config.grid, config.blocks, progress)?;
    for p in &cache.problems {
        eprintln!("warning: {p}");
    }
    Ok(train_head(&cache, &split, embedder.key(), config, out, events, cancel)?)
}
