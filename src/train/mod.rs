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
    // A resumed run goes on with its own settings (depth, loss, split seed...); only the
    // number of epochs is taken from this call.
    let resumed;
    let config = match &config.resume {
        Some(dir) => {
            let saved: TrainConfig = serde_json::from_value(trainer::read_card(dir)?["config"].clone())
                .map_err(|e| anyhow::anyhow!("{}: unreadable settings: {e}", dir.join(trainer::CARD).display()))?;
            resumed = TrainConfig { epochs: config.epochs, resume: config.resume.clone(), ..saved };
            &resumed
        }
        None => config,
    };
    let split = data::split_by_individual(&labelled, config.validation_fraction, config.seed);
    let ids: Vec<i64> = labelled.iter().map(|l| l.annotation).collect();
    // The depths to try: the one asked for, or (0) the candidates, chosen on the validation
    // individuals by the LDA baseline (cheap, and what the neck starts from).
    let depths: Vec<usize> = match config.blocks {
        0 => {
            let mut d: Vec<usize> = trainer::CANDIDATE_BLOCKS.iter().map(|&b| b.clamp(1, embedder.blocks())).collect();
            d.dedup();
            d
        }
        n => vec![n.clamp(1, embedder.blocks())],
    };
    let mut caches = cache::token_caches(cat, embedder, &ids, config.grid, &depths, progress)?;
    if let Some(problems) = caches.first().map(|c| &c.problems) {
        for p in problems {
            eprintln!("warning: {p}");
        }
    }
    let mut choice = 0;
    let mut scores = Vec::new();
    if caches.len() > 1 {
        for (depth, cache) in depths.iter().zip(&caches) {
            let score = trainer::lda_score(cache, &split, config)?;
            scores.push((*depth, score));
        }
        // Ties go to the deeper block (the later, in ascending order).
        choice = (0..scores.len()).max_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1)).unwrap_or(0);
    }
    let cache = caches.swap_remove(choice);
    let config = &TrainConfig { blocks: depths[choice], ..config.clone() };
    let mut report = train_head(&cache, &split, embedder.key(), config, out, events, cancel)?;
    report.depth_scores = scores;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use candle_core::{DType, Device};

    use super::*;
    use crate::embed::{Dinov2Config, Head, pool_tokens};

    /// The embedder must feed a trained head what its training fed it: the tokens of the same
    /// depth, pooled to the same grid. (A head trained on pooled tokens once saw full ones.)
    #[test]
    fn a_trained_head_sees_at_inference_what_it_saw_in_training() {
        let size = 112; // 8 x 8 patches, pooled to 4 x 4
        let embedder = Embedder::random(&Dinov2Config::tiny(), size).unwrap();
        let inputs: Vec<Vec<f32>> =
            (0..12).map(|i| (0..3 * 112 * 112).map(|j| ((i * 7 + j) % 23) as f32 / 11.0 - 1.0).collect()).collect();
        let tokens = pool_tokens(&embedder.tokens_at(&inputs, &[1]).unwrap()[0], 8, 8, 4).unwrap();
        let cache = cache::TokenCache {
            annotations: (0..12).collect(),
            tokens: tokens.to_dtype(DType::F16).unwrap(),
            problems: Vec::new(),
        };
        let labelled: Vec<data::Labelled> =
            (0..12).map(|i| data::Labelled { annotation: i, individual: format!("ind{}", i % 4) }).collect();
        let split = data::split_by_individual(&labelled, 0.0, 0);
        let config = TrainConfig { epochs: 1, blocks: 1, grid: 4, embedding_dim: 8, ..Default::default() };
        let out = tempfile::tempdir().unwrap();
        let (sender, _events) = std::sync::mpsc::channel();
        let report = train_head(&cache, &split, "test", &config, out.path(), &sender, &AtomicBool::new(false)).unwrap();
        let head = Head::load(&report.checkpoint, 32, &Device::Cpu).unwrap();
        assert_eq!((head.blocks, head.grid), (Some(1), Some(4)));
        let rows: Vec<usize> = (0..12).collect();
        let trained_on = head.forward(&cache.batch(&rows, &Device::Cpu).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let embedder = embedder.with_head(head, "trained".into());
        let served = embedder.embed(&inputs).unwrap();
        for (a, b) in served.iter().zip(&trained_on) {
            let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(cosine > 0.999, "cosine {cosine} between the served and the trained-on embedding");
        }
    }
}
