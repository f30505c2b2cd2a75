//! Training the embedder on the catalogue's own individuals, in one of three [`Mode`]s: the
//! head (pooling + neck + the loss's class weights) on cached backbone tokens, the CPU
//! default; the head and the last N blocks on cached inputs to them; or everything end to
//! end from augmented images (a GPU's work). AdamW with weight decay (the backbone at a
//! tenth of the head's learning rate), linear warm-up then cosine decay, gradient
//! accumulation and clipping by global norm, feature-level augmentation (patch-token dropout
//! and noise), validation on individuals never trained on after every epoch, early stopping,
//! and the best model written atomically with a JSON card. Events go over a channel to the
//! CLI or the app; a cancel flag is honoured between steps and leaves the last good checkpoint.

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

use super::augment::ImageAugmentation;
use super::baseline::Baselines;
use super::cache::{DEFAULT_GRID, TokenCache};
use super::data::Split;
use super::loss::LossConfig;
use super::sampler::{BatchSampler, PkSampler, ShuffledSampler};
use crate::jobs::embed::Crop;
use crate::jobs::eval::metrics::{ClosedSet, OpenSet};
use crate::jobs::search::Gallery;
use crate::models::{Dinov2, Head, Kernels, TUNED_PREFIX, Tap, pool_tokens};

/// Everything that decides a run (also written into the model card).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub mode: Mode,
    pub loss: LossConfig,
    pub epochs: usize,
    pub batch: usize,
    /// The head's learning rate.
    pub learning_rate: f64,
    /// The fine-tuned backbone's learning rate as a share of the head's: pretrained weights
    /// move less than fresh ones.
    pub backbone_lr_ratio: f64,
    /// Batches whose gradients are summed before each optimiser step (a larger effective
    /// batch than memory allows).
    pub accumulate: usize,
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
    /// The backbone depths whose outputs are cached and trained on (12 = the last block;
    /// several are concatenated feature by feature, `head` mode only); empty (or 0 in a
    /// settings file) chooses among [`CANDIDATE_BLOCKS`] by the LDA baseline's MAP@5,
    /// cross-validated over folds of individuals. Measured: on the right-whale heads block 6 identifies unseen individuals best
    /// (LDA MAP@5 0.56 over three splits, against 0.50 for 9, 0.44 for 12 and 0.49 for 9 + 12);
    /// on the synthetic flukes the deep blocks do (20 new individuals: 0.90-0.92 for 12,
    /// 0.92-0.93 for 9 + 12, 0.70 for 6). No one depth suits every catalogue, so the default
    /// measures.
    #[serde(deserialize_with = "depths")]
    pub blocks: Vec<usize>,
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
    /// Where backbone tokens are cached (default: `cache` in the data folder). Not part of
    /// the card.
    #[serde(skip)]
    pub cache_dir: Option<PathBuf>,
    /// Share of patch tokens dropped per step (feature-level augmentation).
    pub token_dropout: f64,
    /// Standard deviation of Gaussian noise added to the tokens.
    pub token_noise: f64,
    /// After validation has chosen the number of epochs, train once more on every
    /// individual, validation ones included, for that many epochs, and keep that model: the
    /// biologist's whole catalogue teaches the model in use. The card's figures stay those of
    /// the validated run (how this recipe does on individuals it never saw).
    pub refit: bool,
    /// `head` and `last-blocks` training: views cached per crop, the crop itself and
    /// `views - 1` copies made with `augmentation` (1 = none). Each costs a backbone pass
    /// once, when caching. (`full` training augments every step instead.) 0 = as many as fit
    /// [`VIEW_BUDGET`], at most 4: small catalogues, which need them most, get them cheaply.
    /// Measured on the synthetic flukes (30 individuals x 20 photos, then 20 new ones):
    /// MAP@5 0.878 and 0.902 with 1 view, 0.936 and 0.929 with 4, on two draws.
    pub views: usize,
    /// Arithmetic of the fine-tuned backbone (`last-blocks`, `full`): `auto` is bf16 matrix
    /// products on a GPU and f32 on a CPU.
    pub precision: Precision,
    /// Image augmentation of `full` training.
    pub augmentation: ImageAugmentation,
}

impl TrainConfig {
    /// Settings from a TOML file (`.toml`) or JSON (anything else); what the file leaves out
    /// keeps its default.
    pub fn from_file(path: &Path) -> Result<TrainConfig, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        let bad = |e: String| TrainError::Data(format!("{}: not valid training settings: {e}", path.display()));
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("toml") => toml::from_str(&text).map_err(|e| bad(e.to_string())),
            _ => serde_json::from_str(&text).map_err(|e| bad(e.to_string())),
        }
    }

    /// Views per crop for `crops` crops (see [`TrainConfig::views`]).
    pub fn views_for(&self, crops: usize) -> usize {
        match (self.mode, self.views) {
            (Mode::Full, _) => 1,
            (_, 0) => (VIEW_BUDGET / crops.max(1)).clamp(1, 4),
            (_, n) => n,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Head,
            loss: LossConfig::default(),
            epochs: 30,
            batch: 32,
            // Refining an LDA start (right-whale heads, unseen individuals): the best fine-tuned
            // epoch reached validation MAP@5 0.545 at 5e-4 and 0.562 at 1e-4.
            learning_rate: 1e-4,
            backbone_lr_ratio: 0.1,
            accumulate: 1,
            weight_decay: 1e-4,
            warmup_epochs: 1.0,
            clip_norm: 5.0,
            patience: 6,
            validation_fraction: 0.2,
            seed: 0,
            embedding_dim: 512,
            grid: DEFAULT_GRID,
            blocks: Vec::new(),
            lda_init: true,
            lda_ridge: super::baseline::LDA_RIDGE,
            resume: None,
            cache_dir: None,
            token_dropout: 0.25,
            token_noise: 0.02,
            refit: true,
            views: 0,
            precision: Precision::Auto,
            augmentation: ImageAugmentation::default(),
        }
    }
}

/// The arithmetic of a fine-tuned backbone's matrix products (see [`Kernels::Bf16`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on a GPU, f32 on a CPU (whose bf16 products are no faster).
    #[default]
    Auto,
    F32,
    Bf16,
}

impl Precision {
    pub fn kernels(self, device: &Device) -> Kernels {
        match self {
            Precision::Bf16 => Kernels::Bf16,
            Precision::Auto if device.is_cuda() => Kernels::Bf16,
            _ => Kernels::Differentiable,
        }
    }
}

/// How much of the model a run trains. Written in settings files and cards as `"head"`,
/// `"last-blocks=N"` or `"full"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Pooling + neck on cached tokens of the frozen backbone: minutes on a laptop CPU.
    #[default]
    Head,
    /// Also the last N blocks before the head's depth (and the final LayerNorm), on cached
    /// inputs to them: the frozen blocks below are run once, not at every step.
    LastBlocks(usize),
    /// Everything, end to end from augmented images: meant for a GPU.
    Full,
}

impl Mode {
    /// The backbone weights trained besides the head (Hugging Face name prefixes) when the
    /// head reads the output of `depth` blocks.
    pub fn tuned_prefixes(&self, depth: usize) -> Vec<String> {
        let blocks = |from: usize| (from..depth).map(|i| format!("encoder.layer.{i}.")).collect::<Vec<_>>();
        let mut prefixes = match *self {
            Mode::Head => return Vec::new(),
            Mode::LastBlocks(n) => blocks(depth.saturating_sub(n.max(1))),
            Mode::Full => {
                let mut p = vec!["embeddings.".to_string()];
                p.extend(blocks(0));
                p
            }
        };
        prefixes.push("layernorm.".into());
        prefixes
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// `head`, `full`, or `last-blocks N` (also written `last-blocks=N`).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().to_lowercase();
        match text.as_str() {
            "head" => return Ok(Mode::Head),
            "full" => return Ok(Mode::Full),
            _ => {}
        }
        let n = text
            .strip_prefix("last-blocks")
            .map(|rest| rest.trim_start_matches([' ', '=', ':']))
            .ok_or_else(|| format!("unknown mode {text:?}: head, last-blocks N or full"))?;
        match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Mode::LastBlocks(n)),
            _ => Err(format!("last-blocks needs a number of blocks of at least 1 (last-blocks=2), not {n:?}")),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Mode::LastBlocks(n) => serializer.collect_str(&format_args!("last-blocks={n}")),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Cards written before modes were strings hold `{"last-blocks": N}`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Table {
                #[serde(rename = "last-blocks")]
                last_blocks: usize,
            },
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Written::Table { last_blocks } => Ok(Mode::LastBlocks(last_blocks.max(1))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Head => write!(f, "head"),
            Mode::LastBlocks(n) => write!(f, "last-blocks {n}"),
            Mode::Full => write!(f, "full"),
        }
    }
}

/// What a run trains on.
pub struct Inputs<'a> {
    /// The frozen backbone's tokens at the trained depth, pooled: all that `head` training
    /// reads, and what every mode's LDA start, baselines and first validation are made of.
    pub pooled: &'a TokenCache,
    /// For `last-blocks` and `full`: the backbone to fine-tune and what feeds it.
    pub tuned: Option<TunedInputs<'a>>,
}

impl<'a> Inputs<'a> {
    pub fn head(pooled: &'a TokenCache) -> Self {
        Self { pooled, tuned: None }
    }
}

pub struct TunedInputs<'a> {
    /// The weights fine-tuning starts from (not changed itself).
    pub backbone: &'a Dinov2,
    /// The input side in pixels.
    pub size: u32,
    pub source: TunedSource<'a>,
}

pub enum TunedSource<'a> {
    /// `last-blocks`: the tokens entering the first tuned block (a [`Tap::Input`] cache),
    /// row for row as `Inputs::pooled`.
    BlockInputs(&'a TokenCache),
    /// `full`: the crops, row for row as `Inputs::pooled`, decoded and augmented every step.
    Images(&'a [Crop]),
}

/// Cached views (crops x views per crop) that `views = 0` allows: a few minutes of caching
/// on a laptop's CPU.
pub const VIEW_BUDGET: usize = 4000;

/// The depths tried when choosing (one backbone pass caches them all); on equal scores the
/// later one is taken.
pub const CANDIDATE_BLOCKS: [&[usize]; 4] = [&[6], &[9], &[12], &[9, 12]];

/// `blocks` in a settings file or card: a depth, a list of them, or 0 for none given.
fn depths<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        One(usize),
        Many(Vec<usize>),
    }
    let mut depths = match Written::deserialize(deserializer)? {
        Written::One(0) => Vec::new(),
        Written::One(d) => vec![d],
        Written::Many(d) => d,
    };
    if depths.contains(&0) {
        return Err(serde::de::Error::custom("block depths count from 1"));
    }
    depths.sort_unstable();
    depths.dedup();
    Ok(depths)
}

/// Says `[9, 12]` as "9 + 12".
pub fn depths_name(depths: &[usize]) -> String {
    depths.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" + ")
}

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
        /// Cached views trained on per crop (the crop and its augmented copies).
        views: usize,
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
    /// The validated run is over; the model kept is being trained again on every individual
    /// (see [`TrainConfig::refit`]).
    Refitting(Refit),
}

/// A model trained again on every individual after validation chose its epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refit {
    pub individuals: usize,
    pub crops: usize,
    pub epochs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub checkpoint: PathBuf,
    /// The frozen CLS token and its LDA projection on the same split.
    pub baselines: Baselines,
    pub mode: Mode,
    /// The backbone depths trained on.
    pub blocks: Vec<usize>,
    /// When the depths were chosen: each candidate's cross-validated LDA MAP@5.
    pub depth_scores: Vec<(Vec<usize>, f64)>,
    pub card: PathBuf,
    pub best_epoch: usize,
    pub before: Validation,
    pub best: Validation,
    pub epochs_run: usize,
    pub cancelled: bool,
    /// Set when the model kept was trained again on every individual.
    pub refit: Option<Refit>,
    pub seconds: f64,
}

/// The JSON card written beside a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard<'a> {
    pub kind: &'a str,
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
    // Fine-tuned blocks feed one depth.
    let depth = match (&inputs.tuned, config.blocks.as_slice()) {
        (None, _) => 0,
        (Some(t), []) => t.backbone.config().num_layers,
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
        Some(_) => config.mode.tuned_prefixes(depth).iter().map(|p| format!("{TUNED_PREFIX}{p}")).collect(),
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
        None => Feeder { cache, tuning: None, augmentation: &config.augmentation },
        Some(tuned) => {
            let model = Dinov2::new(tuned.backbone.config(), vb.pp(TUNED_PREFIX.trim_end_matches('.')))?
                .with_kernels(config.precision.kernels(&device));
            let side = tuned.size as usize / tuned.backbone.config().patch_size;
            let from = match tuned.source {
                TunedSource::BlockInputs(_) => match config.mode {
                    Mode::LastBlocks(n) => depth.saturating_sub(n.max(1)),
                    other => return Err(TrainError::Data(format!("cached block inputs given for {other} training"))),
                },
                TunedSource::Images(_) => 0,
            };
            Feeder {
                cache,
                tuning: Some(Tuning { model, inputs: tuned, from, depth, side, grid: config.grid }),
                augmentation: &config.augmentation,
            }
        }
    };
    let (running_mean, running_var) = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        (data.get("neck.bn.running_mean").cloned(), data.get("neck.bn.running_var").cloned())
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    let resumed_epoch = match &config.resume {
        Some(dir) => Some(load_state(&vars, dir, &fingerprint)?),
        None => {
            if config.lda_init {
                init_neck_from_lda(&vars, &head, cache, &train, config.embedding_dim, config.lda_ridge, &device)?;
                imprint_class_weights(&vars, &head, cache, &train, split.classes.len(), &device)?;
            }
            None
        }
    };
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
            let labels: Vec<u32> = train.iter().map(|(_, c)| *c).collect();
            let k = 4;
            Box::new(PkSampler::new(&labels, (batch / k).clamp(2, split.classes.len()), k, config.seed)?)
        }
        _ => Box::new(ShuffledSampler::new(train.len(), batch, train.len() > batch, config.seed)?),
    };
    let steps_per_epoch = sampler.batches_per_epoch().max(1);
    let accumulate = config.accumulate.max(1);
    let total_steps = steps_per_epoch * config.epochs.max(1);
    let warmup = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let train_crops = train.iter().filter(|(r, _)| cache.is_plain(*r)).count();
    let _ = events.send(TrainEvent::Started {
        train_crops,
        views: train.len().div_ceil(train_crops.max(1)),
        classes: split.classes.len(),
        validation_crops: validation.len(),
        validation_individuals: split.validation_individuals.len(),
        steps_per_epoch,
    });
    let validate =
        |head: &Head| -> Result<Validation, TrainError> { validation_metrics(head, &feeder, &validation, config) };
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
        let card = ModelCard {
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
            let chunk: Vec<(usize, u32)> = indices.iter().filter_map(|&j| train.get(j).copied()).collect();
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break 'epochs;
            }
            let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
            let (tokens, kept) = feeder.tokens(&rows, config, tokens_per_crop, Some(&mut rng))?;
            if kept.len() >= 2 {
                let labels = Tensor::new(kept.iter().map(|&k| chunk[k].1).collect::<Vec<u32>>(), &device)?;
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

/// Trains again on `all` (every individual: no validation) for the validated run's best
/// number of epochs, then puts that model in place of the validated one in `out` and notes
/// it in the card. Nothing changes when the validated run had no validation individuals (it
/// trained on all of them already), was cancelled, or when this run is cancelled.
#[allow(clippy::too_many_arguments)]
pub fn refit(
    inputs: &Inputs,
    validated: &mut TrainReport,
    all: &Split,
    backbone_key: &str,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> Result<(), TrainError> {
    if !config.refit || validated.cancelled || validated.best.closed_set.queries == 0 {
        return Ok(());
    }
    let what = Refit { individuals: all.classes.len(), crops: all.train.len(), epochs: validated.best_epoch };
    let _ = events.send(TrainEvent::Refitting(what.clone()));
    let dir = out.join("refit");
    let config = TrainConfig { epochs: what.epochs, resume: None, refit: false, ..config.clone() };
    // The refit's own events would read as a second run: only its steps are passed on.
    let (inner, receiver) = std::sync::mpsc::channel();
    let forward = {
        let events = events.clone();
        std::thread::spawn(move || {
            for e in receiver {
                if matches!(e, TrainEvent::Step { .. }) {
                    let _ = events.send(e);
                }
            }
        })
    };
    let result = train_model(inputs, all, backbone_key, &config, &dir, &inner, cancel);
    drop(inner);
    let _ = forward.join();
    let report = result?;
    if !report.cancelled {
        let mut card = read_card(out)?;
        card["refit"] = serde_json::to_value(&what).map_err(|e| TrainError::Data(e.to_string()))?;
        let json = serde_json::to_vec_pretty(&card).map_err(|e| TrainError::Data(e.to_string()))?;
        std::fs::rename(&report.checkpoint, &validated.checkpoint)
            .map_err(|source| TrainError::Io { path: validated.checkpoint.clone(), source })?;
        write_atomically(&validated.card, &json)?;
        validated.refit = Some(what);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The split's crops as cache rows: training rows (every view) with their class, validation
/// rows (the plain view: what the embedder will see) with their annotation and individual.
#[allow(clippy::type_complexity)]
fn cache_rows<'a>(cache: &TokenCache, split: &'a Split) -> (Vec<(usize, u32)>, Vec<(usize, i64, &'a str)>) {
    let mut rows_of: HashMap<i64, Vec<usize>> = HashMap::new();
    for (r, &a) in cache.annotations.iter().enumerate() {
        rows_of.entry(a).or_default().push(r);
    }
    let rows = |a: &i64| rows_of.get(a).map_or(&[][..], Vec::as_slice);
    let train = split.train.iter().flat_map(|(a, c)| rows(a).iter().map(|&r| (r, *c))).collect();
    let validation = split
        .validation
        .iter()
        .flat_map(|l| {
            rows(&l.annotation)
                .iter()
                .filter(|&&r| cache.is_plain(r))
                .map(|&r| (r, l.annotation, l.individual.as_str()))
        })
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

/// Variables on a `VarMap` whose fresh values are drawn from a seeded generator as their
/// `Init` asks (candle's own CPU random numbers cannot be seeded, and a run must be
/// repeatable from its seed); variables already in the map are handed out as they are.
struct SeededVars {
    vars: VarMap,
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl candle_nn::var_builder::SimpleBackend for SeededVars {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::init::NormalOrUniform;
        let mut data = self.vars.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!("{name} is {:?}, {:?} was asked for", var.dims(), shape.dims());
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let n = shape.elem_count();
        let normal = |rng: &mut rand_chacha::ChaCha8Rng, mean: f64, std: f64| -> candle_core::Result<Vec<f32>> {
            let d = rand_distr::Normal::new(mean, std).map_err(|e| candle_core::Error::msg(format!("{name}: {e}")))?;
            Ok((0..n).map(|_| rng.sample(d) as f32).collect())
        };
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| if up > lo { rng.random_range(lo..up) as f32 } else { lo as f32 }).collect()
        };
        let values = match init {
            candle_nn::Init::Const(c) => vec![c as f32; n],
            candle_nn::Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            candle_nn::Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev)?,
            candle_nn::Init::Kaiming { dist, fan, non_linearity } => {
                let std = non_linearity.gain() / (fan.for_shape(&shape).max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std)?,
                    NormalOrUniform::Uniform => uniform(&mut rng, -(3f64.sqrt()) * std, 3f64.sqrt() * std),
                }
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let data = self.vars.data().lock().unwrap_or_else(|p| p.into_inner());
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(device),
            None => candle_core::bail!("no variable {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.data().lock().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }
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
        var.set(&saved.to_device(var.device())?)?;
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
    device: &Device,
) -> Result<(), TrainError> {
    let mut pooled = Vec::with_capacity(train.len());
    for chunk in train.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
        pooled.extend(head.pooling.forward(&cache.batch(&rows, device)?)?.to_vec2::<f32>()?);
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
        var.set(&Tensor::from_vec(values, var.shape(), device)?)?;
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
    device: &Device,
) -> Result<(), TrainError> {
    let mut sums: Vec<Vec<f32>> = Vec::new();
    for chunk in train.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _)| *r).collect();
        let embeddings = head.forward(&cache.batch(&rows, device)?)?.to_vec2::<f32>()?;
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
        crate::jobs::search::normalise(s);
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
        var.set(&Tensor::from_vec(imprinted, (rows, dim), device)?)
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

/// `sum` plus `more`, variable by variable (gradient accumulation).
fn add_gradients(
    mut sum: candle_core::backprop::GradStore,
    more: candle_core::backprop::GradStore,
    vars: &[Var],
) -> candle_core::Result<candle_core::backprop::GradStore> {
    for v in vars {
        let total = match (sum.remove(v.as_tensor()), more.get(v.as_tensor())) {
            (Some(a), Some(b)) => (a + b)?,
            (Some(a), None) => a,
            (None, Some(b)) => b.clone(),
            (None, None) => continue,
        };
        sum.insert(v.as_tensor(), total);
    }
    Ok(sum)
}

fn scale_gradients(grads: &mut candle_core::backprop::GradStore, vars: &[Var], factor: f64) -> candle_core::Result<()> {
    if factor == 1.0 {
        return Ok(());
    }
    for v in vars {
        if let Some(g) = grads.remove(v.as_tensor()) {
            grads.insert(v.as_tensor(), (g * factor)?);
        }
    }
    Ok(())
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
        scale_gradients(grads, vars, max_norm / norm)?;
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
    feeder: &Feeder,
    validation: &[(usize, i64, &str)],
    config: &TrainConfig,
) -> Result<Validation, TrainError> {
    let (_, tokens_per_crop, _) = feeder.cache.tokens.dims3()?;
    let mut embeddings = Vec::with_capacity(validation.len());
    let mut seen = Vec::with_capacity(validation.len());
    for chunk in validation.chunks(64) {
        let rows: Vec<usize> = chunk.iter().map(|(r, _, _)| *r).collect();
        let (tokens, kept) = feeder.tokens(&rows, config, tokens_per_crop, None)?;
        if kept.is_empty() {
            continue;
        }
        embeddings.extend(head.forward(&tokens)?.detach().to_device(&Device::Cpu)?.to_vec2::<f32>()?);
        seen.extend(kept.iter().map(|&k| chunk[k]));
    }
    validation_of(&embeddings, &seen, config)
}

/// The trainable backbone of a `last-blocks` or `full` run, and how it is fed.
struct Tuning<'a> {
    /// On the run's variables (differentiable kernels).
    model: Dinov2,
    inputs: &'a TunedInputs<'a>,
    /// The tuned blocks are `from..depth`.
    from: usize,
    depth: usize,
    /// The patch grid's side at the input size.
    side: usize,
    grid: usize,
}

/// Makes the head's input, `[B, 1 + grid², D]`, for rows of the pooled cache: straight from
/// the cache, or through the tuned blocks from their cached inputs, or through the whole
/// backbone from the photos.
struct Feeder<'a> {
    cache: &'a TokenCache,
    tuning: Option<Tuning<'a>>,
    augmentation: &'a ImageAugmentation,
}

impl Feeder<'_> {
    /// The tokens of `rows` and the positions in `rows` they are of (a photo that can no
    /// longer be read is left out). With `rng` (training) the inputs are augmented.
    fn tokens(
        &self,
        rows: &[usize],
        config: &TrainConfig,
        tokens_per_crop: usize,
        mut rng: Option<&mut rand_chacha::ChaCha8Rng>,
    ) -> Result<(Tensor, Vec<usize>), TrainError> {
        let mut kept: Vec<usize> = (0..rows.len()).collect();
        let tokens = match &self.tuning {
            None => self.cache.batch(rows, &Device::Cpu)?, // head training runs on the CPU
            Some(t) => {
                let device = t.model.device().clone();
                let output = match t.inputs.source {
                    TunedSource::BlockInputs(inputs) => {
                        t.model.forward_tail(&inputs.batch(rows, &device)?, t.from, t.depth)?
                    }
                    TunedSource::Images(crops) => {
                        let seeds: Vec<Option<u64>> = match rng.as_deref_mut() {
                            Some(r) => rows.iter().map(|_| Some(r.random())).collect(),
                            None => vec![None; rows.len()],
                        };
                        let (images, ok) = self.images(crops, rows, &seeds, t.inputs.size);
                        kept = ok;
                        if kept.is_empty() {
                            return Ok((Tensor::zeros((0, tokens_per_crop, 1), DType::F32, &device)?, kept));
                        }
                        let side = t.inputs.size as usize;
                        let batch = Tensor::from_vec(images.concat(), (images.len(), 3, side, side), &device)?;
                        t.model.forward_taps(&batch, &[Tap::Output(t.depth)])?.remove(0)
                    }
                };
                pool_tokens(&output, t.side, t.side, t.grid)?
            }
        };
        let tokens = match rng {
            Some(r) => augment(&tokens, tokens_per_crop, config, r)?,
            None => tokens,
        };
        Ok((tokens, kept))
    }

    /// Decodes the crops of `rows` in parallel: augmented where a seed is given, else as for
    /// inference. Returns the inputs and the positions in `rows` they are of.
    fn images(&self, crops: &[Crop], rows: &[usize], seeds: &[Option<u64>], size: u32) -> (Vec<Vec<f32>>, Vec<usize>) {
        use rayon::prelude::*;
        let augmentation = self.augmentation;
        let prepared: Vec<Option<Vec<f32>>> = rows
            .par_iter()
            .zip(seeds)
            .map(|(&row, seed)| {
                let crop = crops.get(row)?;
                let img = crate::base::photo::decode_file(&crop.photo).ok()?;
                Some(match seed {
                    Some(seed) => {
                        augmentation.prepare(&img, crop.bbox, size, &mut rand_chacha::ChaCha8Rng::seed_from_u64(*seed))
                    }
                    None => crate::models::prepare(&img, crop.bbox, size),
                })
            })
            .collect();
        let mut inputs = Vec::with_capacity(rows.len());
        let mut kept = Vec::with_capacity(rows.len());
        for (i, p) in prepared.into_iter().enumerate() {
            if let Some(p) = p {
                inputs.push(p);
                kept.push(i);
            }
        }
        (inputs, kept)
    }
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
            .push(
                v,
                *annotation,
                Some(individual),
                crate::base::vocabulary::Part::Body,
                crate::base::vocabulary::Side::Unknown,
                None,
            )
            .map_err(TrainError::Data)?;
    }
    let (closed_set, open) =
        crate::jobs::eval::gallery_metrics(&gallery, &HashSet::new(), config.validation_fraction.min(0.5), config.seed);
    Ok(Validation { closed_set, open_set: open.map(|o| o.tuned) })
}

/// Writes every variable into the state file (for resuming), and into the model file at
/// `path` what the embedder needs: pooling, neck, the tuned backbone weights (names starting
/// with one of `tuned`), and the depth and grid the head reads.
fn save_checkpoint(vars: &VarMap, config: &TrainConfig, tuned: &[String], path: &Path) -> Result<(), TrainError> {
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
            .filter(|(name, _)| {
                name.starts_with("pooling.") || name.starts_with("neck.") || tuned.iter().any(|p| name.starts_with(p))
            })
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .collect()
    };
    // What the embedder must feed the head: the same depths and the same pooled grid.
    if !config.blocks.is_empty() {
        let depths: Vec<f32> = config.blocks.iter().map(|&d| d as f32).collect();
        tensors.insert(crate::models::BLOCKS_TENSOR.into(), Tensor::new(depths, &Device::Cpu)?);
    }
    tensors.insert(crate::models::GRID_TENSOR.into(), Tensor::new(&[config.grid as f32], &Device::Cpu)?);
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
        (TokenCache::plain((0..n as i64).collect(), tokens), labelled)
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
    fn learning_rate_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }

    #[test]
    fn accumulated_gradients_are_those_of_the_whole_batch() {
        let w = Var::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 1.], [2., 0., -1.], [1., 1., 1.]], &Device::Cpu).unwrap();
        // The loss of a batch is a mean over its rows, as every loss here is.
        let loss = |rows: &Tensor| {
            rows.broadcast_mul(w.as_tensor()).unwrap().sum(1).unwrap().sqr().unwrap().mean_all().unwrap()
        };
        let vars = [w.clone()];
        let whole = loss(&x).backward().unwrap();
        let halves = add_gradients(
            loss(&x.narrow(0, 0, 2).unwrap()).backward().unwrap(),
            loss(&x.narrow(0, 2, 2).unwrap()).backward().unwrap(),
            &vars,
        )
        .unwrap();
        let mut halves = halves;
        scale_gradients(&mut halves, &vars, 0.5).unwrap();
        let a = whole.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let b = halves.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-5, "{a:?} vs {b:?}");
        }
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

    #[test]
    fn modes_read_as_written() {
        assert_eq!("head".parse::<Mode>(), Ok(Mode::Head));
        assert_eq!("full".parse::<Mode>(), Ok(Mode::Full));
        assert_eq!("last-blocks=2".parse::<Mode>(), Ok(Mode::LastBlocks(2)));
        assert_eq!("last-blocks 3".parse::<Mode>(), Ok(Mode::LastBlocks(3)));
        assert!("last-blocks".parse::<Mode>().is_err());
        assert!("last-blocks=0".parse::<Mode>().is_err());
        assert!("everything".parse::<Mode>().unwrap_err().contains("head, last-blocks N or full"));
        assert_eq!(Mode::LastBlocks(2).to_string(), "last-blocks 2");
        assert_eq!(Mode::LastBlocks(2).tuned_prefixes(6), ["encoder.layer.4.", "encoder.layer.5.", "layernorm."]);
        assert!(Mode::Head.tuned_prefixes(12).is_empty());
        assert_eq!(Mode::Full.tuned_prefixes(2), ["embeddings.", "encoder.layer.0.", "encoder.layer.1.", "layernorm."]);
        let json = serde_json::to_string(&Mode::LastBlocks(2)).unwrap();
        assert_eq!(json, r#""last-blocks=2""#);
        assert_eq!(serde_json::from_str::<Mode>(&json).unwrap(), Mode::LastBlocks(2));
        assert_eq!(serde_json::from_str::<Mode>(r#"{"last-blocks": 3}"#).unwrap(), Mode::LastBlocks(3));
        assert!(serde_json::from_str::<Mode>(r#""sideways""#).is_err());
    }

    #[test]
    fn settings_files_are_read_as_toml_or_json_and_name_their_file_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("train.toml");
        std::fs::write(
            &toml,
            "mode = \"last-blocks=2\"\nepochs = 12\nviews = 4\n\n[loss]\nkind = \"proxy_anchor\"\n\n[augmentation]\nflip = true\n",
        )
        .unwrap();
        let config = TrainConfig::from_file(&toml).unwrap();
        assert_eq!((config.mode, config.epochs, config.views), (Mode::LastBlocks(2), 12, 4));
        assert!(matches!(config.loss, LossConfig::ProxyAnchor(_)), "{:?}", config.loss);
        assert!(config.augmentation.flip);
        assert_eq!(config.batch, TrainConfig::default().batch, "what is not given keeps its default");

        let json = dir.path().join("train.json");
        std::fs::write(&json, serde_json::to_vec(&config).unwrap()).unwrap();
        let again = TrainConfig::from_file(&json).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&config).unwrap());

        std::fs::write(&toml, "epochs = \"many\"\n").unwrap();
        let err = TrainConfig::from_file(&toml).unwrap_err().to_string();
        assert!(err.contains("train.toml") && err.contains("epochs"), "{err}");
        let err = TrainConfig::from_file(&dir.path().join("absent.toml")).unwrap_err().to_string();
        assert!(err.contains("absent.toml"), "{err}");

        // Depths: one, several (in any order), or 0 for "choose".
        for (written, depths) in [("12", vec![12]), ("[12, 9]", vec![9, 12]), ("0", vec![]), ("[]", vec![])] {
            std::fs::write(&toml, format!("blocks = {written}\n")).unwrap();
            assert_eq!(TrainConfig::from_file(&toml).unwrap().blocks, depths, "{written}");
        }
        std::fs::write(&toml, "blocks = [0, 12]\n").unwrap();
        assert!(TrainConfig::from_file(&toml).unwrap_err().to_string().contains("count from 1"));

        // The README's example reads as it says.
        let readme = include_str!("../../../README.md");
        let example = readme.split("```toml\n").nth(1).and_then(|s| s.split("```").next()).unwrap();
        std::fs::write(&toml, example).unwrap();
        let config = TrainConfig::from_file(&toml).unwrap();
        assert_eq!((config.mode, config.views), (Mode::LastBlocks(2), 4));
        assert!(matches!(config.loss, LossConfig::SubCenterArcFace(_)), "{:?}", config.loss);
    }
}
