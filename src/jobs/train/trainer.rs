//! The training loop, in one of three [`Mode`]s: the head (pooling + neck + the loss's class
//! weights) on cached backbone tokens, the CPU default; the head and the last N blocks on
//! cached inputs to them; or everything end to end from augmented images (a GPU's work).
//! AdamW with weight decay (the backbone at a tenth of the head's learning rate), linear
//! warm-up then cosine decay, gradient accumulation and clipping by global norm, validation
//! on individuals never trained on after every epoch, early stopping, and the best model
//! kept. Events go over a channel to the CLI or the app; a cancel flag is honoured between
//! steps and leaves the last good checkpoint.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;

use super::baseline::baselines;
use super::checkpoint::{CARD, CHECKPOINT, TrainingCard, load_state, save_checkpoint, write_atomically};
use super::config::{Mode, TrainConfig, depths_name};
use super::data::Split;
use super::error::TrainError;
use super::feeder::{Feeder, Inputs, TunedBackbone, TunedSource};
use super::gradients::{add_gradients, clip_gradients, scale_gradients};
use super::lda_start::{LdaFeatures, LdaStart, LinearStart, imprint_class_weights};
use super::loss::LossConfig;
use super::report::{TrainEvent, TrainReport};
use super::sampler::{BatchSampler, PkSampler, ShuffledSampler};
use super::schedule::learning_rate;
use super::seeded::SeededVars;
use super::validation::{SplitRows, TrainingRow, Validation, cache_rows, validate_head};
use crate::models::{Head, TUNED_PREFIX};

/// Trains on `inputs` for `split` as `config.mode` says; writes the best model into `out`.
pub fn train_model(
    inputs: &Inputs,
    split: &Split,
    backbone_key: &str,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let cache = inputs.pooled;
    let device = inputs.tuned.as_ref().map_or(Device::Cpu, |t| t.backbone.device().clone());
    let SplitRows { train, validation } = cache_rows(cache, split);
    let fingerprint = {
        let mut h = blake3::Hasher::new();
        for (a, c) in &split.train {
            h.update(format!("{a}:{}\n", split.classes[*c as usize]).as_bytes());
        }
        h.finalize().to_hex()[..16].to_string()
    };
    if train.len() < 2 || split.classes.len() < 2 {
        return Err(TrainError::Data(format!(
            "{} labelled crop(s) of {} individual(s) to train on: at least two individuals are needed",
            train.len(),
            split.classes.len()
        )));
    }
    // Fine-tuned blocks feed one depth.
    let depth = match (&inputs.tuned, config.blocks.as_slice()) {
        (None, _) => 0,
        (Some(t), []) => t.backbone.depth(),
        (Some(_), [d]) => *d,
        (Some(_), many) => {
            return Err(TrainError::Data(format!(
                "{} training reads one depth, not blocks {}: several are for head training",
                config.mode,
                depths_name(many)
            )));
        }
    };
    let tuned_prefixes: Vec<String> = match &inputs.tuned {
        Some(t) => {
            let (from, stem) = config.mode.tuned_from(depth);
            t.backbone.tuned_prefixes(from, depth, stem).iter().map(|p| format!("{TUNED_PREFIX}{p}")).collect()
        }
        None => Vec::new(),
    };
    let (_, tokens_per_crop, token_dim) = cache.tokens.dims3()?;
    let vars = VarMap::new();
    if let Some(tuned) = &inputs.tuned {
        // Fine-tuning starts from (a copy of) the pretrained weights.
        let mut data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        for (name, pretrained) in tuned.backbone.named_tensors() {
            data.insert(format!("{TUNED_PREFIX}{name}"), Var::from_tensor(&pretrained.detach().to_device(&device)?)?);
        }
    }
    let seeded = SeededVars {
        vars: vars.clone(),
        rng: std::sync::Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed)),
    };
    let vb = VarBuilder::from_backend(Box::new(seeded), DType::F32, device.clone());
    let head = Head::trainable(vb.clone(), token_dim, config.embedding_dim)?;
    let loss = super::loss::build(
        &config.loss,
        vb.pp("loss"),
        config.embedding_dim,
        split.classes.len(),
        &split.class_counts(),
    )?;
    let feeder = match &inputs.tuned {
        None => Feeder { cache, tuned: None, augmentation: &config.augmentation },
        Some(tuned) => {
            let model = tuned
                .backbone
                .trainable(vb.pp(TUNED_PREFIX.trim_end_matches('.')), config.precision.kernels(&device))?;
            let from = match tuned.source {
                TunedSource::BlockInputs(_) => match config.mode {
                    Mode::LastBlocks(n) => depth.saturating_sub(n.max(1)),
                    other => return Err(TrainError::Data(format!("cached block inputs given for {other} training"))),
                },
                TunedSource::Images(_) => 0,
            };
            Feeder {
                cache,
                tuned: Some(TunedBackbone { model, inputs: tuned, from, depth, grid: config.grid }),
                augmentation: &config.augmentation,
            }
        }
    };
    let (running_mean, running_var) = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        (data.get("neck.bn.running_mean").cloned(), data.get("neck.bn.running_var").cloned())
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    let resumed_epoch = config.resume.as_ref().map(|dir| load_state(&vars, dir, &fingerprint)).transpose()?;
    // In name order: the gradient norm sums over them, and float sums depend on order. The
    // backbone's frozen weights are not trained (and below its tuned blocks not even run).
    let (head_vars, backbone_vars): (Vec<Var>, Vec<Var>) = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut named: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .filter(|(name, _)| !name.starts_with(TUNED_PREFIX) || tuned_prefixes.iter().any(|p| name.starts_with(p)))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let (backbone, head): (Vec<_>, Vec<_>) =
            named.into_iter().partition(|(name, _)| name.starts_with(TUNED_PREFIX));
        (head.into_iter().map(|(_, v)| v.clone()).collect(), backbone.into_iter().map(|(_, v)| v.clone()).collect())
    };
    let trainable: Vec<Var> = head_vars.iter().chain(&backbone_vars).cloned().collect();
    let params = |lr: f64| ParamsAdamW { lr, weight_decay: config.weight_decay, ..Default::default() };
    let mut optimizer = AdamW::new(head_vars, params(config.learning_rate))?;
    let mut backbone_optimizer = match backbone_vars.is_empty() {
        true => None,
        false => Some(AdamW::new(backbone_vars, params(config.learning_rate * config.backbone_lr_ratio))?),
    };

    let batch = config.batch.max(2).min(train.len());
    // Batch-hard triplets need several crops of each individual in a batch: P x K sampling.
    let sampler: Box<dyn BatchSampler> = match config.loss {
        LossConfig::Triplet(_) => {
            let labels: Vec<u32> = train.iter().map(|t| t.class).collect();
            let k = 4;
            Box::new(PkSampler::new(&labels, (batch / k).clamp(2, split.classes.len()), k, config.seed)?)
        }
        _ => Box::new(ShuffledSampler::new(train.len(), batch, train.len() > batch, config.seed)?),
    };
    let steps_per_epoch = sampler.batches_per_epoch().max(1);
    let accumulate = config.accumulate.max(1);
    let total_steps = steps_per_epoch * config.epochs.max(1);
    let warmup = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let train_crops = train.iter().filter(|t| cache.is_plain(t.row)).count();
    let _ = events.send(TrainEvent::Started {
        train_crops,
        views: train.len().div_ceil(train_crops.max(1)),
        classes: split.classes.len(),
        validation_crops: validation.len(),
        validation_individuals: split.validation_individuals.len(),
        steps_per_epoch,
    });
    let validate =
        |head: &Head| -> Result<Validation, TrainError> { validate_head(head, &feeder, &validation, config) };
    // The LDA start, fitted on the CLS token alone or on CLS and GeM together, whichever
    // scores better on the validation individuals (which also choose the epoch kept). With
    // few photos per individual the CLS alone usually generalises better (right-whale heads,
    // 27 validation individuals: MAP@5 0.668 against 0.613; synthetic flukes 0.926 against
    // 0.894); where the identity lies in the patches, GeM brings it.
    if config.lda_init && resumed_epoch.is_none() {
        let start = LdaStart::pool(&head, cache, &train, &device)?;
        let mut best: Option<(f64, LinearStart)> = None;
        for features in [LdaFeatures::Cls, LdaFeatures::Pooled] {
            let Some(linear) = start.linear(config, features) else { continue };
            start.set_neck(&vars, &linear, &device)?;
            let score = validate(&head)?.closed_set.map5;
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, linear));
            }
        }
        if let Some((_, linear)) = &best {
            start.set_neck(&vars, linear, &device)?;
        }
        imprint_class_weights(&vars, &head, cache, &train, split.classes.len(), &device)?;
    }
    let before = validate(&head)?;
    let baselines = baselines(cache, &train, &validation, config)?;
    let mut best = before.clone();
    let mut best_epoch = resumed_epoch.unwrap_or(0);
    let mut since_best = 0;
    let mut step = best_epoch * steps_per_epoch;
    let mut epochs_run = best_epoch;
    let mut cancelled = false;
    let checkpoint = out.join(CHECKPOINT);
    let card_path = out.join(CARD);
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io { path: out.to_path_buf(), source })?;
    let kind = format!(
        "whaleid {} training on DINOv2 ViT-S/14 (pooling + neck{})",
        config.mode,
        match &inputs.tuned {
            Some(_) => " + fine-tuned backbone weights",
            None => "",
        }
    );
    // The start is saved as epoch 0: training hands back the best model it validated, which
    // is never worse than where it started.
    let save = |epoch: usize, validation: &Validation| -> Result<(), TrainError> {
        save_checkpoint(&vars, config, &tuned_prefixes, &checkpoint)?;
        let card = TrainingCard {
            kind: &kind,
            backbone: backbone_key,
            config,
            epoch,
            validation,
            before_training: &before,
            baselines: &baselines,
            data_fingerprint: fingerprint.clone(),
            classes: split.classes.len(),
            validation_individuals: &split.validation_individuals,
            written_at: crate::catalogue::now(),
        };
        let json = serde_json::to_vec_pretty(&card).map_err(|e| TrainError::Data(e.to_string()))?;
        write_atomically(&card_path, &json)
    };
    save(best_epoch, &before)?;
    let epoch_started = Instant::now();
    'epochs: for epoch in best_epoch + 1..=config.epochs {
        let mut epoch_loss = 0.0;
        let batches = sampler.batches(epoch as u64);
        let mut pending: Option<(candle_core::backprop::GradStore, usize)> = None;
        for (i, indices) in batches.iter().enumerate() {
            let chunk: Vec<TrainingRow> = indices.iter().filter_map(|&j| train.get(j).copied()).collect();
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break 'epochs;
            }
            let rows: Vec<usize> = chunk.iter().map(|t| t.row).collect();
            let (tokens, kept) = feeder.tokens(&rows, config, tokens_per_crop, Some(&mut rng))?;
            if kept.len() >= 2 {
                let labels = Tensor::new(kept.iter().map(|&k| chunk[k].class).collect::<Vec<u32>>(), &device)?;
                let (embeddings, stats) = head.forward_train(&tokens)?;
                let value = loss.forward(&embeddings, &labels)?;
                let grads = value.backward()?;
                pending = Some(match pending.take() {
                    None => (grads, 1),
                    Some((sum, n)) => (add_gradients(sum, grads, &trainable)?, n + 1),
                });
                if let (Some((mean, var)), Some(rm), Some(rv)) = (stats, &running_mean, &running_var) {
                    // Running averages with PyTorch's momentum 0.1.
                    rm.set(&((rm.as_tensor() * 0.9)? + (mean * 0.1)?)?)?;
                    rv.set(&((rv.as_tensor() * 0.9)? + (var * 0.1)?)?)?;
                }
                let l = value.to_scalar::<f32>()? as f64;
                epoch_loss += l;
                let _ = events.send(TrainEvent::Step {
                    epoch,
                    step: i + 1,
                    steps: steps_per_epoch,
                    loss: l,
                    learning_rate: learning_rate(config.learning_rate, step, warmup, total_steps),
                });
            }
            // A step of the optimiser every `accumulate` batches, and at the end of the epoch.
            if let Some((mut grads, n)) = pending.take_if(|(_, n)| *n == accumulate || i + 1 == batches.len()) {
                scale_gradients(&mut grads, &trainable, 1.0 / n as f64)?;
                clip_gradients(&mut grads, &trainable, config.clip_norm)?;
                let lr = learning_rate(config.learning_rate, step, warmup, total_steps);
                optimizer.set_learning_rate(lr);
                optimizer.step(&grads)?;
                if let Some(o) = &mut backbone_optimizer {
                    o.set_learning_rate(lr * config.backbone_lr_ratio);
                    o.step(&grads)?;
                }
            }
            step += 1;
        }
        epochs_run = epoch;
        let validation_now = validate(&head)?;
        // Without validation individuals nothing can be judged: the latest head is kept.
        let improved = validation_now.closed_set.map5 > best.closed_set.map5 || validation.is_empty();
        if improved {
            best = validation_now.clone();
            best_epoch = epoch;
            since_best = 0;
            save(epoch, &best)?;
        } else {
            since_best += 1;
        }
        let per_epoch = epoch_started.elapsed().as_secs_f64() / (epoch - resumed_epoch.unwrap_or(0)) as f64;
        let _ = events.send(TrainEvent::Epoch {
            epoch,
            epochs: config.epochs,
            loss: epoch_loss / steps_per_epoch as f64,
            validation: validation_now,
            best: improved,
            eta_seconds: per_epoch * (config.epochs - epoch) as f64,
        });
        if since_best >= config.patience && !validation.is_empty() {
            break;
        }
    }
    let stopped_early = epochs_run < config.epochs && !cancelled;
    let _ = events.send(TrainEvent::Finished {
        best_epoch,
        best_map5: best.closed_set.map5,
        stopped_early,
        checkpoint: checkpoint.clone(),
    });
    Ok(TrainReport {
        checkpoint,
        baselines,
        mode: config.mode,
        blocks: config.blocks.clone(),
        depth_scores: Vec::new(),
        card: card_path,
        best_epoch,
        before,
        best,
        epochs_run,
        cancelled,
        refit: None,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::base::ids::AnnotationId;
    use crate::jobs::train::cache::TokenCache;
    use crate::jobs::train::checkpoint::STATE;
    use crate::jobs::train::data::{Labelled, split_by_individual};

    /// `classes` x `per` crops whose tokens are a class pattern plus noise, the pattern
    /// hidden in a few dimensions among many noisy ones.
    fn clustered_cache(classes: usize, per: usize, seed: u64) -> (TokenCache, Vec<Labelled>) {
        let (n_tokens, dim) = (5, 24);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let patterns: Vec<Vec<f32>> =
            (0..classes).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0f32)).collect()).collect();
        let mut values = Vec::new();
        let mut labelled = Vec::new();
        for (c, pattern) in patterns.iter().enumerate() {
            for _ in 0..per {
                for _ in 0..n_tokens {
                    values.extend(pattern.iter().map(|p| p * 0.5 + rng.random_range(-1.0..1.0f32)));
                }
                labelled
                    .push(Labelled { annotation: AnnotationId(labelled.len() as i64), individual: format!("ind{c}") });
            }
        }
        let n = classes * per;
        let tokens = Tensor::from_vec(values, (n, n_tokens, dim), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        (TokenCache::plain((0..n as i64).map(AnnotationId).collect(), tokens), labelled)
    }

    #[test]
    fn training_improves_validation_on_unseen_individuals_and_writes_a_loadable_head() {
        let (cache, labelled) = clustered_cache(24, 6, 1);
        let split = split_by_individual(&labelled, 0.3, 2);
        let config = TrainConfig {
            epochs: 40,
            batch: 32,
            embedding_dim: 16,
            patience: 40,
            lda_init: false,
            ..Default::default()
        };
        let out = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let report = train_model(&Inputs::head(&cache), &split, "test", &config, out.path(), &sender, &cancel).unwrap();
        drop(sender);
        assert!(
            report.best.closed_set.map5 > report.before.closed_set.map5 + 0.1,
            "before {:.3}, after {:.3}",
            report.before.closed_set.map5,
            report.best.closed_set.map5
        );
        let events: Vec<TrainEvent> = receiver.into_iter().collect();
        assert!(matches!(events.first(), Some(TrainEvent::Started { .. })));
        assert!(matches!(events.last(), Some(TrainEvent::Finished { .. })));
        assert_eq!(events.iter().filter(|e| matches!(e, TrainEvent::Epoch { .. })).count(), report.epochs_run);
        let head = Head::load(&report.checkpoint, 24, &Device::Cpu).unwrap();
        let e = head.forward(&cache.batch(&[0, 1], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(e.dims(), &[2, 16]);
        let card: serde_json::Value = serde_json::from_slice(&std::fs::read(&report.card).unwrap()).unwrap();
        assert_eq!(card["epoch"].as_u64().unwrap() as usize, report.best_epoch);
    }

    #[test]
    fn an_lda_start_beats_a_random_one_and_the_head_records_its_depth() {
        let (cache, labelled) = clustered_cache(24, 6, 1);
        let split = split_by_individual(&labelled, 0.3, 2);
        let (sender, _receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let run = |lda_init| {
            let config = TrainConfig { epochs: 1, embedding_dim: 16, lda_init, blocks: vec![7], ..Default::default() };
            let out = tempfile::tempdir().unwrap();
            let report =
                train_model(&Inputs::head(&cache), &split, "test", &config, out.path(), &sender, &cancel).unwrap();
            let head = Head::load(&report.checkpoint, 24, &Device::Cpu).unwrap();
            (report.before.closed_set.map5, head.blocks)
        };
        let (random, _) = run(false);
        let (lda, blocks) = run(true);
        assert!(lda > random + 0.1, "random start {random:.3}, LDA start {lda:.3}");
        assert_eq!(blocks, [7]);
    }

    #[test]
    fn a_run_resumes_after_its_best_epoch_with_its_weights_and_refuses_other_data() {
        let (cache, labelled) = clustered_cache(24, 6, 1);
        let split = split_by_individual(&labelled, 0.3, 2);
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let out = tempfile::tempdir().unwrap();
        let first = TrainConfig { epochs: 3, embedding_dim: 16, patience: 10, lda_init: false, ..Default::default() };
        let a = train_model(&Inputs::head(&cache), &split, "test", &first, out.path(), &sender, &cancel).unwrap();
        while receiver.try_recv().is_ok() {}
        let resume = TrainConfig { epochs: 5, resume: Some(out.path().to_path_buf()), ..first.clone() };
        let b = train_model(&Inputs::head(&cache), &split, "test", &resume, out.path(), &sender, &cancel).unwrap();
        assert!((b.before.closed_set.map5 - a.best.closed_set.map5).abs() < 1e-9, "the saved head was loaded");
        let steps = |events: Vec<TrainEvent>| -> Vec<(usize, usize, f64)> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    TrainEvent::Step { epoch, step, learning_rate, .. } => Some((epoch, step, learning_rate)),
                    _ => None,
                })
                .collect()
        };
        let resumed = steps(receiver.try_iter().collect());
        assert_eq!(resumed.first().map(|(epoch, _, _)| *epoch), Some(a.best_epoch + 1));
        assert_eq!(b.epochs_run, 5);
        // The resumed steps take up the learning-rate schedule where an uninterrupted run of
        // five epochs has it (not warming up again from the start).
        let whole = tempfile::tempdir().unwrap();
        let uninterrupted = TrainConfig { epochs: 5, ..first.clone() };
        train_model(&Inputs::head(&cache), &split, "test", &uninterrupted, whole.path(), &sender, &cancel).unwrap();
        let same_steps: Vec<(usize, usize, f64)> =
            steps(receiver.try_iter().collect()).into_iter().filter(|(epoch, _, _)| *epoch > a.best_epoch).collect();
        assert_eq!(resumed, same_steps);

        let other = split_by_individual(&labelled, 0.3, 9);
        let err = train_model(&Inputs::head(&cache), &other, "test", &resume, out.path(), &sender, &cancel)
            .unwrap_err()
            .to_string();
        assert!(err.contains("other training data") && err.contains("head.json"), "{err}");
    }

    #[test]
    fn cancelling_keeps_the_last_good_checkpoint() {
        let (cache, labelled) = clustered_cache(8, 4, 3);
        let split = split_by_individual(&labelled, 0.25, 4);
        let config = TrainConfig { epochs: 50, batch: 8, embedding_dim: 8, patience: 50, ..Default::default() };
        let out = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        std::thread::scope(|s| {
            let report =
                s.spawn(|| train_model(&Inputs::head(&cache), &split, "test", &config, out.path(), &sender, &cancel));
            // Cancel once the first epoch is done (a checkpoint exists by then).
            for event in &receiver {
                if matches!(event, TrainEvent::Epoch { .. }) {
                    cancel.store(true, Ordering::SeqCst);
                    break;
                }
            }
            let report = report.join().unwrap().unwrap();
            assert!(report.cancelled && report.epochs_run < 50);
            assert!(Head::load(&report.checkpoint, 24, &Device::Cpu).is_ok());
        });
    }

    #[test]
    fn a_run_is_repeatable_from_its_seed() {
        let (cache, labelled) = clustered_cache(12, 5, 4);
        let split = split_by_individual(&labelled, 0.3, 2);
        let (sender, _receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let run = |seed| {
            let config =
                TrainConfig { epochs: 3, batch: 8, embedding_dim: 8, seed, patience: 10, ..Default::default() };
            let out = tempfile::tempdir().unwrap();
            let report =
                train_model(&Inputs::head(&cache), &split, "test", &config, out.path(), &sender, &cancel).unwrap();
            let state = candle_core::safetensors::load(out.path().join(STATE), &Device::Cpu).unwrap();
            let mut weights: Vec<(String, Vec<f32>)> =
                state.into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
            weights.sort_by(|a, b| a.0.cmp(&b.0));
            (report.best.closed_set.map5, weights)
        };
        let (a, b, c) = (run(7), run(7), run(8));
        assert!(a.1 == b.1, "the same seed gives the same weights");
        assert_eq!(a.0, b.0);
        assert!(a.1 != c.1, "another seed gives other weights");
    }
}
