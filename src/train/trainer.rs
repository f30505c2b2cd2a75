//! Training the head (pooling + neck + the loss's class weights) on cached backbone tokens:
//! the CPU default. AdamW with weight decay, linear warm-up then cosine decay, gradient
//! clipping by global norm, feature-level augmentation (patch-token dropout and noise),
//! validation on individuals never trained on after every epoch, early stopping, and the
//! best head written atomically with a JSON card. Events go over a channel to the CLI or
//! the app; a cancel flag is honoured between steps and leaves the last good checkpoint.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::baseline::Baselines;
use super::cache::{DEFAULT_GRID, TokenCache};
use super::data::Split;
use super::loss::LossConfig;
use super::sampler::{BatchSampler, PkSampler, ShuffledSampler};
use crate::embed::Head;
use crate::metrics::{ClosedSet, OpenSet};
use crate::search::Gallery;

/// Everything that decides a run (also written into the model card).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub loss: LossConfig,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    /// Gradients are scaled down when their global norm exceeds this.
    pub clip_norm: f64,
    /// Epochs without a better validation MAP@5 before stopping.
    pub patience: usize,
    pub validation_fraction: f64,
    pub seed: u64,
    pub embedding_dim: usize,
    pub grid: usize,
    /// The backbone blocks whose output is cached and trained on (12 = the last); 0 chooses
    /// among [`CANDIDATE_BLOCKS`] by the LDA baseline's validation MAP@5. Measured: on the
    /// right-whale heads blocks 5-6 identify unseen individuals best (LDA MAP@5 0.56 over
    /// three splits, against 0.45 for block 12); on the synthetic flukes block 12 is best
    /// (0.87 against 0.70 for block 6 on 20 new individuals). No one depth suits every
    /// catalogue, so the default measures.
    pub blocks: usize,
    /// Start the neck from Fisher's linear discriminant of the pooled training features
    /// (closed form, no overfitting to few photos per individual) instead of at random; the
    /// loss then refines it.
    pub lda_init: bool,
    /// LDA's ridge, as a share of the mean within-individual variance (see
    /// `baseline::LDA_RIDGE`).
    pub lda_ridge: f64,
    /// Continue the run whose output folder this is (its `train_state.safetensors` and card):
    /// from the epoch after its best one, with its weights (incl. the loss's) and its place in
    /// the learning-rate schedule. AdamW's moment estimates start afresh. Not part of the card.
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Share of patch tokens dropped per step (feature-level augmentation).
    pub token_dropout: f64,
    /// Standard deviation of Gaussian noise added to the tokens.
    pub token_noise: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::default(),
            epochs: 30,
            batch: 32,
            // Refining an LDA start (right-whale heads, unseen individuals): the best fine-tuned
            // epoch reached validation MAP@5 0.545 at 5e-4 and 0.562 at 1e-4.
            learning_rate: 1e-4,
            weight_decay: 1e-4,
            warmup_epochs: 1.0,
            clip_norm: 5.0,
            patience: 6,
            validation_fraction: 0.2,
            seed: 0,
            embedding_dim: 512,
            grid: DEFAULT_GRID,
            blocks: DEFAULT_BLOCKS,
            lda_init: true,
            lda_ridge: super::baseline::LDA_RIDGE,
            resume: None,
            token_dropout: 0.25,
            token_noise: 0.02,
        }
    }
}

/// See [`TrainConfig::blocks`]: 0 = choose by measurement.
pub const DEFAULT_BLOCKS: usize = 0;
/// The depths tried when choosing (one backbone pass caches them all).
pub const CANDIDATE_BLOCKS: [usize; 3] = [6, 9, 12];

/// Validation on held-out individuals: leave-one-out among their crops.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub closed_set: ClosedSet,
    pub open_set: Option<OpenSet>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        train_crops: usize,
        classes: usize,
        validation_crops: usize,
        validation_individuals: usize,
        steps_per_epoch: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        learning_rate: f64,
    },
    Epoch {
        epoch: usize,
        epochs: usize,
        loss: f64,
        validation: Validation,
        best: bool,
        eta_seconds: f64,
    },
    Finished {
        best_epoch: usize,
        best_map5: f64,
        stopped_early: bool,
        checkpoint: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub checkpoint: PathBuf,
    /// The frozen CLS token and its LDA projection on the same split.
    pub baselines: Baselines,
    /// The backbone depth trained on.
    pub blocks: usize,
    /// When the depth was chosen: each candidate's LDA validation MAP@5.
    pub depth_scores: Vec<(usize, f64)>,
    pub card: PathBuf,
    pub best_epoch: usize,
    pub before: Validation,
    pub best: Validation,
    pub epochs_run: usize,
    pub cancelled: bool,
    pub seconds: f64,
}

/// The JSON card written beside a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard<'a> {
    pub kind: &'static str,
    pub backbone: &'a str,
    pub config: &'a TrainConfig,
    pub epoch: usize,
    pub validation: &'a Validation,
    pub before_training: &'a Validation,
    pub baselines: &'a Baselines,
    /// blake3 of the training crops and their individuals.
    pub data_fingerprint: String,
    pub classes: usize,
    pub validation_individuals: &'a [String],
    pub written_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Loss(#[from] super::loss::LossError),
    #[error(transparent)]
    Sampler(#[from] super::sampler::SamplerError),
}

/// File names inside the output folder.
pub const CHECKPOINT: &str = "head.safetensors";
pub const CARD: &str = "head.json";
/// Every trained variable (the loss's class weights too), for resuming.
pub const STATE: &str = "train_state.safetensors";

/// Trains a head on `cache` for `split`; writes the best one into `out`.
pub fn train_head(
    cache: &TokenCache,
    split: &Split,
    backbone_key: &str,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let device = Device::Cpu;
    let (train, validation) = cache_rows(cache, split);
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
    let (_, tokens_per_crop, token_dim) = cache.tokens.dims3()?;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    let head = Head::trainable(vb.clone(), token_dim, config.embedding_dim)?;
    let loss = super::loss::build(
        &config.loss,
        vb.pp("loss"),
        config.embedding_dim,
        split.classes.len(),
        &split.class_counts(),
    )?;
    let (running_mean, running_var) = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        (data.get("neck.bn.running_mean").cloned(), data.get("neck.bn.running_var").cloned())
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    reseed(&vars, &mut rng)?;
    let resumed_epoch = match &config.resume {
        Some(dir) => Some(load_state(&vars, dir, &fingerprint)?),
        None => {
            if config.lda_init {
                init_neck_from_lda(&vars, &head, cache, &train, config.embedding_dim, config.lda_ridge)?;
                imprint_class_weights(&vars, &head, cache, &train, split.classes.len())?;
            }
            None
        }
    };
    let trainable: Vec<Var> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        // In name order: the gradient norm sums over them, and float sums depend on order.
        let mut named: Vec<(&String, &Var)> = data.iter().filter(|(name, _)| !name.contains("running_")).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    };
    let mut optimizer = AdamW::new(
        trainable.clone(),
        ParamsAdamW { lr: config.learning_rate, weight_decay: config.weight_decay, ..Default::default() },
    )?;

    let batch = config.batch.max(2).min(train.len());
    // Batch-hard triplets need several crops of each individual in a batch: P x K sampling.
    let sampler: Box<dyn BatchSampler> = match config.loss {
        LossConfig::Triplet(_) => {
            let labels: Vec<u32> = train.iter().map(|(_, c)| *c).collect();
            let k = 4;
            Box::new(PkSampler::new(&labels, (batch / k).clamp(2, split.classes.len()), k, config.seed)?)
        }
        _ => Box::new(ShuffledSampler::new(train.len(), batch, train.len() > batch, config.seed)?),
    };
    let steps_per_epoch = sampler.batches_per_epoch().max(1);
    let total_steps = steps_per_epoch * config.epochs.max(1);
    let warmup = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let _ = events.send(TrainEvent::Started {
        train_crops: train.len(),
        classes: split.classes.len(),
        validation_crops: validation.len(),
        validation_individuals: split.validation_individuals.len(),
        steps_per_epoch,
    });
    let validate =
        |head: &Head| -> Result<Validation, TrainError> { validation_metrics(head, cache, &validation, config) };
    let before = validate(&head)?;
    let baselines = super::baseline::baselines(cache, &train, &validation, config)?;
    let mut best = before.clone();
    let mut best_epoch = resumed_epoch.unwrap_or(0);
    let mut since_best = 0;
    let mut step = best_epoch * steps_per_epoch;
    let mut epochs_run = best_epoch;
    let mut cancelled = false;
    let checkpoint = out.join(CHECKPOINT);
    let card_path = out.join(CARD);
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io { path: out.to_path_buf(), source })?;
    // The start is saved as epoch 0: training hands back the best head it validated, which is
    // never worse than where it started.
    let save = |epoch: usize, validation: &Validation| -> Result<(), TrainError> {
        save_checkpoint(&vars, config, &checkpoint)?;
        let card = ModelCard {
            kind: "whaleid head (pooling + neck) on DINOv2 ViT-S/14 tokens",
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
        for (i, indices) in sampler.batches(epoch as u64).into_iter().enumerate() {
            let chunk: Vec<(usize, u32)> = indices.iter().filter_map(|&j| train.get(j).copied()).collect();
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break 'epochs;
            }
            if chunk.len() < 2 {
                continue;
            }
            let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
            let labels = Tensor::new(chunk.iter().map(|(_, c)| *c).collect::<Vec<u32>>(), &device)?;
            let tokens = augment(&cache.batch(&rows, &device)?, tokens_per_crop, config, &mut rng)?;
            let (embeddings, stats) = head.forward_train(&tokens)?;
            let value = loss.forward(&embeddings, &labels)?;
            let mut grads = value.backward()?;
            clip_gradients(&mut grads, &trainable, config.clip_norm)?;
            let lr = learning_rate(config.learning_rate, step, warmup, total_steps);
            optimizer.set_learning_rate(lr);
            optimizer.step(&grads)?;
            if let (Some((mean, var)), Some(rm), Some(rv)) = (stats, &running_mean, &running_var) {
                // Running averages with PyTorch's momentum 0.1.
                rm.set(&((rm.as_tensor() * 0.9)? + (mean * 0.1)?)?)?;
                rv.set(&((rv.as_tensor() * 0.9)? + (var * 0.1)?)?)?;
            }
            let l = value.to_scalar::<f32>()? as f64;
            epoch_loss += l;
            step += 1;
            let _ = events.send(TrainEvent::Step {
                epoch,
                step: i + 1,
                steps: steps_per_epoch,
                loss: l,
                learning_rate: lr,
            });
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
        blocks: config.blocks,
        depth_scores: Vec::new(),
        card: card_path,
        best_epoch,
        before,
        best,
        epochs_run,
        cancelled,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The split's crops as cache rows: training rows with their class, validation rows with
/// their annotation and individual.
#[allow(clippy::type_complexity)]
fn cache_rows<'a>(cache: &TokenCache, split: &'a Split) -> (Vec<(usize, u32)>, Vec<(usize, i64, &'a str)>) {
    let row_of: HashMap<i64, usize> = cache.annotations.iter().enumerate().map(|(r, &a)| (a, r)).collect();
    let train = split.train.iter().filter_map(|(a, c)| row_of.get(a).map(|&r| (r, *c))).collect();
    let validation = split
        .validation
        .iter()
        .filter_map(|l| row_of.get(&l.annotation).map(|&r| (r, l.annotation, l.individual.as_str())))
        .collect();
    (train, validation)
}

/// The LDA baseline's validation MAP@5 on `cache` (how well this depth's tokens separate
/// individuals never trained on); 0 without validation individuals.
pub fn lda_score(cache: &TokenCache, split: &Split, config: &TrainConfig) -> Result<f64, TrainError> {
    let (train, validation) = cache_rows(cache, split);
    if validation.is_empty() {
        return Ok(0.0);
    }
    let b = super::baseline::baselines(cache, &train, &validation, config)?;
    Ok(b.lda.map_or(b.frozen_cls.closed_set.map5, |l| l.closed_set.map5))
}

/// Redraws every variable from `rng` with the mean and spread candle's initialisation gave
/// it (constants stay constant), in name order: candle's own CPU random numbers cannot be
/// seeded, and a run must be repeatable from its seed.
fn reseed(vars: &VarMap, rng: &mut impl Rng) -> candle_core::Result<()> {
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let values = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let n = values.len().max(1) as f32;
        let mean = values.iter().sum::<f32>() / n;
        let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        if std == 0.0 {
            continue;
        }
        let normal = rand_distr::Normal::new(mean, std).map_err(|e| candle_core::Error::msg(format!("{name}: {e}")))?;
        let redrawn: Vec<f32> = (0..values.len()).map(|_| rng.sample(normal)).collect();
        var.set(&Tensor::from_vec(redrawn, var.shape(), var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// The card a run wrote into `dir`, as JSON.
pub fn read_card(dir: &Path) -> Result<serde_json::Value, TrainError> {
    let path = dir.join(CARD);
    let text = std::fs::read(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&text).map_err(|e| TrainError::Data(format!("{}: not a training card: {e}", path.display())))
}

/// Loads a run's saved variables into `vars` and returns the epoch they were saved at. The
/// run must have been on the same training data (its card's fingerprint).
fn load_state(vars: &VarMap, dir: &Path, fingerprint: &str) -> Result<usize, TrainError> {
    let card_path = dir.join(CARD);
    let card = read_card(dir)?;
    let (Some(epoch), Some(saved)) = (card["epoch"].as_u64(), card["data_fingerprint"].as_str()) else {
        return Err(TrainError::Data(format!("{}: no epoch or data fingerprint in it", card_path.display())));
    };
    if saved != fingerprint {
        return Err(TrainError::Data(format!(
            "{}: written for other training data (crops or labels changed since); start a new run",
            card_path.display()
        )));
    }
    let state_path = dir.join(STATE);
    let bad = |e: String| TrainError::Data(format!("{}: {e}", state_path.display()));
    let state = candle_core::safetensors::load(&state_path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in data.iter() {
        let saved = state.get(name).ok_or_else(|| bad(format!("no {name} in it (other settings?)")))?;
        if saved.shape() != var.shape() {
            return Err(bad(format!("{name} is {:?}, this run's is {:?} (other settings?)", saved.dims(), var.dims())));
        }
        var.set(saved)?;
    }
    Ok(epoch as usize)
}

/// Sets the neck to LDA of the pooled training features: the BatchNorm standardises them
/// with the training set's statistics, the Linear layer projects onto the discriminant
/// directions (zero rows past the number of individuals minus one).
fn init_neck_from_lda(
    vars: &VarMap,
    head: &Head,
    cache: &TokenCache,
    train: &[(usize, u32)],
    out_dim: usize,
    lda_ridge: f64,
) -> Result<(), TrainError> {
    let mut pooled = Vec::with_capacity(train.len());
    for chunk in train.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
        pooled.extend(head.pooling.forward(&cache.batch(&rows, &Device::Cpu)?)?.to_vec2::<f32>()?);
    }
    let dim = pooled.first().map_or(0, Vec::len);
    let n = pooled.len().max(1) as f64;
    let mean: Vec<f64> = (0..dim).map(|j| pooled.iter().map(|v| v[j] as f64).sum::<f64>() / n).collect();
    let var: Vec<f64> =
        (0..dim).map(|j| pooled.iter().map(|v| (v[j] as f64 - mean[j]).powi(2)).sum::<f64>() / n).collect();
    let standardised: Vec<Vec<f32>> = pooled
        .iter()
        .map(|v| (0..dim).map(|j| ((v[j] as f64 - mean[j]) / (var[j] + 1e-5).sqrt()) as f32).collect())
        .collect();
    let labels: Vec<u32> = train.iter().map(|(_, c)| *c).collect();
    let Some(lda) = super::baseline::Lda::fit(&standardised, &labels, lda_ridge) else {
        return Ok(()); // too few individuals with two crops: keep the random start
    };
    let (weight, bias) = lda.linear(out_dim);
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    let set = |name: &str, values: Vec<f32>| -> Result<(), TrainError> {
        let var = data.get(name).ok_or_else(|| TrainError::Data(format!("no variable {name}")))?;
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
        Ok(())
    };
    set("neck.bn.running_mean", mean.iter().map(|&m| m as f32).collect())?;
    set("neck.bn.running_var", var.iter().map(|&v| v as f32).collect())?;
    set("neck.bn.weight", vec![1.0; dim])?;
    set("neck.bn.bias", vec![0.0; dim])?;
    set("neck.linear.weight", weight)?;
    set("neck.linear.bias", bias)?;
    Ok(())
}

/// Sets each class's rows of the loss (ArcFace weights, sub-centres, proxies) to the mean
/// direction of its training embeddings ("weight imprinting"), plus a little of their random
/// start so sub-centres differ: the loss then starts from what the head already knows
/// instead of pulling an LDA start towards random class directions.
fn imprint_class_weights(
    vars: &VarMap,
    head: &Head,
    cache: &TokenCache,
    train: &[(usize, u32)],
    classes: usize,
) -> Result<(), TrainError> {
    let mut sums: Vec<Vec<f32>> = Vec::new();
    for chunk in train.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
        let embeddings = head.forward(&cache.batch(&rows, &Device::Cpu)?)?.to_vec2::<f32>()?;
        for ((_, class), e) in chunk.iter().zip(embeddings) {
            if sums.is_empty() {
                sums = vec![vec![0.0; e.len()]; classes];
            }
            for (s, v) in sums[*class as usize].iter_mut().zip(&e) {
                *s += v;
            }
        }
    }
    for s in &mut sums {
        crate::search::normalise(s);
    }
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in data.iter().filter(|(name, _)| name.starts_with("loss.")) {
        let Ok((rows, dim)) = var.as_tensor().dims2() else { continue };
        if classes == 0 || rows % classes != 0 || sums.first().is_none_or(|s| s.len() != dim) {
            continue;
        }
        let per_class = rows / classes;
        let current = var.as_tensor().to_vec2::<f32>()?;
        let imprinted: Vec<f32> = current
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                let mean = &sums[r / per_class];
                mean.iter().zip(row).map(|(m, x)| m + 0.05 * x).collect::<Vec<_>>()
            })
            .collect();
        var.set(&Tensor::from_vec(imprinted, (rows, dim), &Device::Cpu)?)
            .map_err(|e| TrainError::Data(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// Linear warm-up, then cosine decay to zero.
pub fn learning_rate(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Scales all gradients down together when their global L2 norm exceeds `max_norm`.
fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max_norm: f64,
) -> candle_core::Result<()> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(())
}

/// Feature-level augmentation: a random subset of patch tokens (the CLS token always stays)
/// and a little Gaussian noise.
fn augment(tokens: &Tensor, n: usize, config: &TrainConfig, rng: &mut impl Rng) -> candle_core::Result<Tensor> {
    let mut x = tokens.clone();
    if config.token_dropout > 0.0 && n > 2 {
        let keep = (((n - 1) as f64) * (1.0 - config.token_dropout)).round().max(1.0) as usize;
        let mut patches: Vec<u32> = (1..n as u32).collect();
        patches.shuffle(rng);
        let mut index = vec![0u32];
        index.extend(&patches[..keep]);
        x = x.index_select(&Tensor::new(index, x.device())?, 1)?;
    }
    if config.token_noise > 0.0 {
        let normal = rand_distr::Normal::new(0.0f32, config.token_noise as f32)
            .map_err(|e| candle_core::Error::msg(format!("token noise: {e}")))?;
        let noise: Vec<f32> = (0..x.elem_count()).map(|_| rng.sample(normal)).collect();
        x = (&x + Tensor::from_vec(noise, x.shape(), x.device())?)?;
    }
    Ok(x)
}

fn validation_metrics(
    head: &Head,
    cache: &TokenCache,
    validation: &[(usize, i64, &str)],
    config: &TrainConfig,
) -> Result<Validation, TrainError> {
    let mut embeddings = Vec::with_capacity(validation.len());
    for chunk in validation.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _, _)| *r).collect();
        embeddings.extend(head.forward(&cache.batch(&rows, &Device::Cpu)?)?.to_vec2::<f32>()?);
    }
    validation_of(&embeddings, validation, config)
}

/// Leave-one-out among the validation crops (never trained on), and the open-set figure
/// with part of their individuals left out of the gallery; `embeddings` in `validation` order.
pub(super) fn validation_of(
    embeddings: &[Vec<f32>],
    validation: &[(usize, i64, &str)],
    config: &TrainConfig,
) -> Result<Validation, TrainError> {
    let mut gallery = Gallery::new(embeddings.first().map_or(1, Vec::len));
    for ((_, annotation, individual), v) in validation.iter().zip(embeddings) {
        gallery
            .push(v, *annotation, Some(individual), crate::model::Part::Body, crate::model::Side::Unknown, None)
            .map_err(TrainError::Data)?;
    }
    let (closed_set, open) =
        crate::eval::gallery_metrics(&gallery, &HashSet::new(), config.validation_fraction.min(0.5), config.seed);
    Ok(Validation { closed_set, open_set: open.map(|o| o.tuned) })
}

fn save_checkpoint(vars: &VarMap, config: &TrainConfig, path: &Path) -> Result<(), TrainError> {
    let state: HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter().map(|(name, v)| (name.clone(), v.as_tensor().clone())).collect()
    };
    let state_path = path.with_file_name(STATE);
    let partial = state_path.with_extension("partial");
    candle_core::safetensors::save(&state, &partial)?;
    std::fs::rename(&partial, &state_path).map_err(|source| TrainError::Io { path: state_path.clone(), source })?;
    let mut tensors: HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter()
            .filter(|(name, _)| name.starts_with("pooling.") || name.starts_with("neck."))
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .collect()
    };
    // What the embedder must feed the head: the same depth and the same pooled grid.
    if config.blocks > 0 {
        tensors.insert(crate::embed::BLOCKS_TENSOR.into(), Tensor::new(&[config.blocks as f32], &Device::Cpu)?);
    }
    tensors.insert(crate::embed::GRID_TENSOR.into(), Tensor::new(&[config.grid as f32], &Device::Cpu)?);
    let partial = path.with_extension("partial");
    candle_core::safetensors::save(&tensors, &partial)?;
    std::fs::rename(&partial, path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|source| TrainError::Io { path: partial.clone(), source })?;
    std::fs::rename(&partial, path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::{Labelled, split_by_individual};

    /// `classes` x `per` crops whose tokens are a class pattern plus noise, the pattern
    /// hidden in a few dimensions among many noisy ones.
    fn clustered_cache(classes: usize, per: usize, seed: u64) -> (TokenCache, Vec<Labelled>) {
        let (n_tokens, dim) = (5, 24);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let patterns: Vec<Vec<f32>> =
            (0..classes).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0f32)).collect()).collect();
        let mut values = Vec::new();
        let mut labelled = Vec::new();
        for c in 0..classes {
            for _ in 0..per {
                for _ in 0..n_tokens {
                    values.extend(patterns[c].iter().map(|p| p * 0.5 + rng.random_range(-1.0..1.0f32)));
                }
                labelled.push(Labelled { annotation: labelled.len() as i64, individual: format!("ind{c}") });
            }
        }
        let n = classes * per;
        let tokens = Tensor::from_vec(values, (n, n_tokens, dim), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        (TokenCache { annotations: (0..n as i64).collect(), tokens, problems: vec![] }, labelled)
    }

    #[test]
    fn training_improves_validation_on_unseen_individuals_and_writes_a_loadable_head() {
        let (cache, labelled) = clustered_cache(24, 6, 1);
        let split = split_by_individual(&labelled, 0.3, 2);
        let config =
            TrainConfig { epochs: 40, batch: 32, embedding_dim: 16, patience: 40, lda_init: false, ..Default::default() };
        let out = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let report = train_head(&cache, &split, "test", &config, out.path(), &sender, &cancel).unwrap();
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
            let config = TrainConfig { epochs: 1, embedding_dim: 16, lda_init, blocks: 7, ..Default::default() };
            let out = tempfile::tempdir().unwrap();
            let report = train_head(&cache, &split, "test", &config, out.path(), &sender, &cancel).unwrap();
            let head = Head::load(&report.checkpoint, 24, &Device::Cpu).unwrap();
            (report.before.closed_set.map5, head.blocks)
        };
        let (random, _) = run(false);
        let (lda, blocks) = run(true);
        assert!(lda > random + 0.1, "random start {random:.3}, LDA start {lda:.3}");
        assert_eq!(blocks, Some(7));
    }

    #[test]
    fn a_run_resumes_after_its_best_epoch_with_its_weights_and_refuses_other_data() {
        let (cache, labelled) = clustered_cache(24, 6, 1);
        let split = split_by_individual(&labelled, 0.3, 2);
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = AtomicBool::new(false);
        let out = tempfile::tempdir().unwrap();
        let first = TrainConfig { epochs: 3, embedding_dim: 16, patience: 10, lda_init: false, ..Default::default() };
        let a = train_head(&cache, &split, "test", &first, out.path(), &sender, &cancel).unwrap();
        while receiver.try_recv().is_ok() {}
        let resume = TrainConfig { epochs: 5, resume: Some(out.path().to_path_buf()), ..first.clone() };
        let b = train_head(&cache, &split, "test", &resume, out.path(), &sender, &cancel).unwrap();
        assert!((b.before.closed_set.map5 - a.best.closed_set.map5).abs() < 1e-9, "the saved head was loaded");
        let epochs: Vec<usize> = receiver
            .try_iter()
            .filter_map(|e| match e {
                TrainEvent::Epoch { epoch, .. } => Some(epoch),
                _ => None,
            })
            .collect();
        assert_eq!(epochs.first(), Some(&(a.best_epoch + 1)));
        assert_eq!(b.epochs_run, 5);
        assert!(b.best.closed_set.map5 >= a.best.closed_set.map5);

        let other = split_by_individual(&labelled, 0.3, 9);
        let err = train_head(&cache, &other, "test", &resume, out.path(), &sender, &cancel).unwrap_err().to_string();
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
            let report = s.spawn(|| train_head(&cache, &split, "test", &config, out.path(), &sender, &cancel));
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
    fn learning_rate_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
