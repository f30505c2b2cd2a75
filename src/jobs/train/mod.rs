//! Fine-tuning the embedder on the biologist's own catalogue.

pub mod augment;
pub mod baseline;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
mod feeder;
mod gradients;
pub mod lda;
mod lda_start;
pub mod loss;
mod refit;
pub mod report;
mod report_text;
pub mod sampler;
mod schedule;
mod seeded;
mod trainer;
pub mod validation;

pub use checkpoint::CHECKPOINT;
pub use config::{Mode, Precision, TrainConfig, depths_name};
pub use error::TrainError;
pub use feeder::{Inputs, TunedInputs, TunedSource};
pub use loss::{LossConfig, LossError, MetricLoss};
pub use report::{Refit, TrainEvent, TrainReport};
pub use sampler::{BatchSampler, PkSampler, ShuffledSampler};
pub use trainer::train_model;
pub use validation::Validation;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use crate::base::ids::AnnotationId;
use crate::base::progress::Progress;
use crate::catalogue::Catalogue;
use crate::models::{Embedder, Tap};

/// Folds of individuals over which the LDA baseline chooses the backbone depth.
pub const DEPTH_FOLDS: usize = 5;

/// Trains on `cat`'s labelled crops (split by individual) as `config.mode` says, caching the
/// backbone's tokens first; writes the best model and its card into `out`.
pub fn train_catalogue(
    cat: &Catalogue,
    embedder: &Embedder,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> anyhow::Result<TrainReport> {
    let usable: std::collections::HashSet<AnnotationId> =
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
            let saved: TrainConfig = serde_json::from_value(checkpoint::read_card(dir)?["config"].clone())
                .map_err(|e| anyhow::anyhow!("{}: unreadable settings: {e}", dir.join(checkpoint::CARD).display()))?;
            resumed = TrainConfig { epochs: config.epochs, resume: config.resume.clone(), ..saved };
            &resumed
        }
        None => config,
    };
    let split = data::split_by_individual(&labelled, config.validation_fraction, config.seed);
    let ids: Vec<AnnotationId> = labelled.iter().map(|l| l.annotation).collect();
    // The depths to try: those asked for, or the candidates, chosen by the LDA baseline over
    // folds of individuals (cheap, and what the neck starts from). Fine-tuned blocks feed one
    // depth.
    let candidates: Vec<Vec<usize>> = match config.blocks.as_slice() {
        [] => config::candidate_blocks(embedder.blocks(), embedder.backbone().is_convolutional())
            .into_iter()
            .filter(|c| config.mode == Mode::Head || c.len() == 1)
            .fold(Vec::new(), |mut all, c| {
                if !all.contains(&c) {
                    all.push(c);
                }
                all
            }),
        given => vec![given.iter().map(|&d| d.clamp(1, embedder.blocks())).collect()],
    };
    let mut depths: Vec<usize> = candidates.iter().flatten().copied().collect();
    depths.sort_unstable();
    depths.dedup();
    let taps: Vec<Tap> = depths.iter().map(|&d| Tap::Output(d)).collect();
    let cache_dir = config.cache_dir.clone().unwrap_or_else(|| crate::base::paths::data_dir().join("cache"));
    let spec = cache::CacheSpec {
        taps: &taps,
        grid: config.grid,
        views: cache::Views {
            count: config.views_for(ids.len()),
            augmentation: &config.augmentation,
            seed: config.seed,
        },
        dir: &cache_dir,
    };
    let caches = cache::token_caches(cat, embedder, &ids, &spec, progress)?;
    if let Some(problems) = caches.first().map(|c| &c.problems) {
        for p in problems {
            eprintln!("warning: {p}");
        }
    }
    let cache_of = |chosen: &[usize]| -> anyhow::Result<cache::TokenCache> {
        let parts: Vec<&cache::TokenCache> =
            chosen.iter().filter_map(|d| depths.iter().position(|x| x == d).map(|i| &caches[i])).collect();
        cache::TokenCache::concatenated(&parts).map_err(Into::into)
    };
    let mut choice = 0;
    let mut scores = Vec::new();
    if candidates.len() > 1 {
        // Every individual validated once over the folds: a few validation individuals alone
        // tell close candidates apart by chance.
        progress.stage("choosing the backbone depth", candidates.len() as u64);
        let folds = data::folds_by_individual(&labelled, DEPTH_FOLDS, config.seed);
        for candidate in &candidates {
            if progress.cancelled() || cancel.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("cancelled while choosing the backbone depth");
            }
            let cache = cache_of(candidate)?;
            let mut sum = 0.0;
            for fold in &folds {
                sum += baseline::lda_score(&cache, fold, config)?;
            }
            scores.push((candidate.clone(), sum / folds.len().max(1) as f64));
            progress.advance(1);
        }
        // Ties go to the later candidate (the deeper).
        choice = (0..scores.len()).max_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1)).unwrap_or(0);
    }
    let cache = cache_of(&candidates[choice])?;
    drop(caches);
    let depth = candidates[choice].last().copied().unwrap_or(embedder.blocks());
    let config = &TrainConfig { blocks: candidates[choice].clone(), views: spec.views.count, ..config.clone() };
    let block_inputs;
    let crops;
    let source = match config.mode {
        Mode::Head => None,
        Mode::LastBlocks(n) => {
            let from = depth.saturating_sub(n.max(1));
            block_inputs = cache::token_caches(
                cat,
                embedder,
                &ids,
                &cache::CacheSpec { taps: &[Tap::Input(from)], ..spec },
                progress,
            )?
            .swap_remove(0);
            if block_inputs.annotations != cache.annotations {
                anyhow::bail!("the crops changed while their tokens were cached; start again");
            }
            Some(TunedSource::BlockInputs(&block_inputs))
        }
        Mode::Full => {
            crops = cache::crops_of(cat, embedder.key(), &cache.annotations)?.0;
            if crops.len() != cache.annotations.len() {
                anyhow::bail!("the crops changed while their tokens were cached; start again");
            }
            Some(TunedSource::Images(&crops))
        }
    };
    let inputs = Inputs {
        pooled: &cache,
        tuned: source.map(|source| TunedInputs { backbone: embedder.backbone(), size: embedder.size(), source }),
    };
    let mut report = train_model(&inputs, &split, embedder.key(), config, out, events, cancel)?;
    report.depth_scores = scores;
    let all = data::split_by_individual(&labelled, 0.0, config.seed);
    refit::refit(&inputs, &mut report, &all, embedder.key(), config, out, events, cancel)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use candle_core::{DType, Device};

    use super::*;
    use crate::models::{Dinov2Config, Head, pool_tokens};

    /// The embedder must feed a trained head what its training fed it: the tokens of the same
    /// depths, pooled to the same grid. (A head trained on pooled tokens once saw full ones.)
    #[test]
    fn a_trained_head_sees_at_inference_what_it_saw_in_training() {
        let size = 112; // 8 x 8 patches, pooled to 4 x 4
        let embedder = Embedder::random(&Dinov2Config::tiny(), size).unwrap();
        let inputs: Vec<Vec<f32>> =
            (0..12).map(|i| (0..3 * 112 * 112).map(|j| ((i * 7 + j) % 23) as f32 / 11.0 - 1.0).collect()).collect();
        let taps = embedder.tokens_at(&inputs, &[Tap::Output(1), Tap::Output(2)]).unwrap();
        let pooled: Vec<cache::TokenCache> = taps
            .iter()
            .map(|t| {
                cache::TokenCache::plain(
                    (0..12).map(AnnotationId).collect(),
                    pool_tokens(t, 8, 8, 4).unwrap().to_dtype(DType::F16).unwrap(),
                )
            })
            .collect();
        let labelled: Vec<data::Labelled> = (0..12)
            .map(|i| data::Labelled { annotation: AnnotationId(i), individual: format!("ind{}", i % 4) })
            .collect();
        let split = data::split_by_individual(&labelled, 0.0, 0);
        // One depth, and two read side by side.
        for (blocks, cache) in [
            (vec![1], cache::TokenCache::concatenated(&[&pooled[0]]).unwrap()),
            (vec![1, 2], cache::TokenCache::concatenated(&[&pooled[0], &pooled[1]]).unwrap()),
        ] {
            let config =
                TrainConfig { epochs: 1, blocks: blocks.clone(), grid: 4, embedding_dim: 8, ..Default::default() };
            let out = tempfile::tempdir().unwrap();
            let (sender, _events) = std::sync::mpsc::channel();
            let report = train_model(
                &Inputs::head(&cache),
                &split,
                embedder.key(),
                &config,
                out.path(),
                &sender,
                &AtomicBool::new(false),
            )
            .unwrap();
            let head = Head::load(&report.checkpoint, 32, &Device::Cpu).unwrap();
            assert_eq!((&head.blocks, head.grid), (&blocks, Some(4)));
            let rows: Vec<usize> = (0..12).collect();
            let trained_on =
                head.forward(&cache.batch(&rows, &Device::Cpu).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            let served = embedder.with_head_file(&report.checkpoint).unwrap().embed(&inputs).unwrap();
            for (a, b) in served.iter().zip(&trained_on) {
                let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                assert!(
                    cosine > 0.999,
                    "blocks {blocks:?}: cosine {cosine} between the served and the trained-on embedding"
                );
            }
        }
    }

    /// Photos of `classes` x `per` made-up individuals: each a colour pattern on a 4 x 4 grid
    /// of 14-pixel squares, with noise, written as PNGs into `dir`.
    fn pattern_photos(
        dir: &std::path::Path,
        classes: usize,
        per: usize,
    ) -> (Vec<crate::jobs::embed::Crop>, Vec<data::Labelled>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let patterns: Vec<Vec<[u8; 3]>> =
            (0..classes).map(|_| (0..16).map(|_| [rng.random(), rng.random(), rng.random()]).collect()).collect();
        let (mut crops, mut labelled) = (Vec::new(), Vec::new());
        for (c, pattern) in patterns.iter().enumerate() {
            for k in 0..per {
                let img = image::RgbImage::from_fn(56, 56, |x, y| {
                    let base = pattern[(y / 14 * 4 + x / 14) as usize];
                    image::Rgb(base.map(|v| (v as i32 + rng.random_range(-40..=40)).clamp(0, 255) as u8))
                });
                let photo = dir.join(format!("ind{c}_{k}.png"));
                img.save(&photo).unwrap();
                let annotation = AnnotationId(crops.len() as i64);
                crops.push(crate::jobs::embed::Crop { annotation, box_key: String::new(), bbox: None, photo });
                labelled.push(data::Labelled { annotation, individual: format!("ind{c}") });
            }
        }
        (crops, labelled)
    }

    fn inputs_of(crops: &[crate::jobs::embed::Crop], size: u32) -> Vec<Vec<f32>> {
        crops
            .iter()
            .map(|c| crate::models::prepare(&crate::base::photo::decode_file(&c.photo).unwrap(), c.bbox, size))
            .collect()
    }

    fn tuned_weights(checkpoint: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
        candle_core::safetensors::load(checkpoint, &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(crate::models::TUNED_PREFIX).map(|n| (n.to_string(), t)))
            .collect()
    }

    fn max_change(tuned: &std::collections::HashMap<String, candle_core::Tensor>, embedder: &Embedder) -> f32 {
        let pretrained: std::collections::HashMap<String, candle_core::Tensor> =
            embedder.backbone().named_tensors().into_iter().collect();
        tuned
            .iter()
            .map(|(n, t)| (t - &pretrained[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap())
            .fold(0.0, f32::max)
    }

    /// A run fine-tuning `embedder`'s backbone fed by `source`: its report, its events, and
    /// the folder it wrote into.
    fn tune(
        embedder: &Embedder,
        pooled: &cache::TokenCache,
        source: TunedSource,
        split: &data::Split,
        config: &TrainConfig,
    ) -> (TrainReport, Vec<TrainEvent>, tempfile::TempDir) {
        let tuned = TunedInputs { backbone: embedder.backbone(), size: embedder.size(), source };
        let out = tempfile::tempdir().unwrap();
        let (sender, events) = std::sync::mpsc::channel();
        let inputs = Inputs { pooled, tuned: Some(tuned) };
        let report =
            train_model(&inputs, split, embedder.key(), config, out.path(), &sender, &AtomicBool::new(false)).unwrap();
        drop(sender);
        (report, events.into_iter().collect(), out)
    }

    #[test]
    fn last_blocks_training_tunes_only_the_last_blocks_and_the_embedder_serves_them() {
        let dir = tempfile::tempdir().unwrap();
        let (crops, labelled) = pattern_photos(dir.path(), 6, 4);
        let size = 56; // 4 x 4 patches, pooled to 2 x 2
        let embedder = Embedder::random(&Dinov2Config::tiny(), size).unwrap();
        let inputs = inputs_of(&crops, size);
        let taps = embedder.tokens_at(&inputs, &[Tap::Input(1), Tap::Output(2)]).unwrap();
        let cache = |tokens: &candle_core::Tensor| {
            cache::TokenCache::plain(
                (0..crops.len() as i64).map(AnnotationId).collect(),
                tokens.to_dtype(DType::F16).unwrap(),
            )
        };
        let (block_inputs, pooled) = (cache(&taps[0]), cache(&pool_tokens(&taps[1], 4, 4, 2).unwrap()));
        // No validation individuals: the last epoch is kept, so the weights must have moved.
        let split = data::split_by_individual(&labelled, 0.0, 1);
        let config = TrainConfig {
            mode: Mode::LastBlocks(1),
            epochs: 3,
            batch: 8,
            blocks: vec![2],
            grid: 2,
            embedding_dim: 8,
            learning_rate: 1e-2,
            ..Default::default()
        };
        let (report, _events, _out) =
            tune(&embedder, &pooled, TunedSource::BlockInputs(&block_inputs), &split, &config);
        assert_eq!(report.mode, Mode::LastBlocks(1));
        let weights = tuned_weights(&report.checkpoint);
        assert!(!weights.is_empty(), "the model file carries the tuned blocks");
        assert!(
            weights.keys().all(|n| n.starts_with("encoder.layer.1.") || n.starts_with("layernorm.")),
            "only the last block and the final LayerNorm: {:?}",
            weights.keys().collect::<Vec<_>>()
        );
        assert!(max_change(&weights, &embedder) > 1e-4, "the last block was trained");

        // What training computed from the cached block inputs, the embedder computes from photos.
        let head = Head::load(&report.checkpoint, 32, &Device::Cpu).unwrap();
        let tail = embedder
            .dinov2()
            .unwrap()
            .with_weights(&weights)
            .unwrap()
            .with_kernels(crate::models::Kernels::Differentiable);
        let rows: Vec<usize> = (0..crops.len()).collect();
        let trained_on = tail.forward_tail(&block_inputs.batch(&rows, &Device::Cpu).unwrap(), 1, 2).unwrap();
        let trained_on = head.forward(&pool_tokens(&trained_on, 4, 4, 2).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let served = embedder.with_head_file(&report.checkpoint).unwrap().embed(&inputs).unwrap();
        for (a, b) in served.iter().zip(&trained_on) {
            let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(cosine > 0.999, "cosine {cosine} between the served and the trained-on embedding");
        }
    }

    #[test]
    fn full_training_in_bf16_reads_augmented_photos_tunes_the_whole_backbone_and_survives_a_lost_photo() {
        let dir = tempfile::tempdir().unwrap();
        let (crops, labelled) = pattern_photos(dir.path(), 6, 4);
        let size = 56;
        let embedder = Embedder::random(&Dinov2Config::tiny(), size).unwrap();
        let tokens = embedder.tokens_at(&inputs_of(&crops, size), &[Tap::Output(2)]).unwrap().remove(0);
        let pooled = cache::TokenCache::plain(
            (0..crops.len() as i64).map(AnnotationId).collect(),
            pool_tokens(&tokens, 4, 4, 2).unwrap().to_dtype(DType::F16).unwrap(),
        );
        // A photo that goes missing after caching is left out of its batches, nothing more.
        std::fs::remove_file(&crops[0].photo).unwrap();
        // No validation individuals: the last epoch is kept, so the weights must have moved.
        let split = data::split_by_individual(&labelled, 0.0, 1);
        let config = TrainConfig {
            mode: Mode::Full,
            epochs: 2,
            batch: 8,
            blocks: vec![2],
            grid: 2,
            embedding_dim: 8,
            learning_rate: 1e-2,
            accumulate: 2,
            // Mixed precision runs on a CPU too (slowly): the GPU's path, checked here.
            precision: Precision::Bf16,
            ..Default::default()
        };
        let (report, events, _out) = tune(&embedder, &pooled, TunedSource::Images(&crops), &split, &config);
        assert_eq!(report.epochs_run, 2);
        assert!(events.iter().any(|e| matches!(e, TrainEvent::Step { .. })));
        let weights = tuned_weights(&report.checkpoint);
        for name in
            ["embeddings.patch_embeddings.projection.weight", "encoder.layer.0.mlp.fc1.weight", "layernorm.weight"]
        {
            assert!(weights.contains_key(name), "{name} is saved");
        }
        assert!(max_change(&weights, &embedder) > 1e-4, "the backbone was trained");
        let served = embedder.with_head_file(&report.checkpoint).unwrap();
        assert_ne!(served.key(), embedder.key());
        let e = served.embed(&inputs_of(&crops[1..3], size)).unwrap();
        assert_eq!((e.len(), e[0].len()), (2, 8));
    }
}
