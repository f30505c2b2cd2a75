//! The settings of a training run: how much of the model it trains ([`Mode`]), at which
//! depths, with which loss, schedule and augmentation. Read from TOML or JSON and written
//! into the run's card.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::augment::ImageAugmentation;
use super::cache::DEFAULT_GRID;
use super::error::TrainError;
use super::lda::LDA_RIDGE;
use super::loss::LossConfig;
use crate::models::Kernels;

/// Everything that decides a run (also written into its card).
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
    /// cross-validated over folds of individuals: no one depth suits every catalogue (middle
    /// blocks won on right-whale heads, the deep ones on flukes).
    #[serde(deserialize_with = "depths")]
    pub blocks: Vec<usize>,
    /// Start the neck from Fisher's linear discriminant of the pooled training features
    /// (closed form, no overfitting to few photos per individual) instead of at random; the
    /// loss then refines it.
    pub lda_init: bool,
    /// LDA's ridge, as a share of the mean within-individual variance (see [`LDA_RIDGE`]).
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
            // Small: it refines an LDA start rather than learning from scratch.
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
            lda_ridge: LDA_RIDGE,
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
    /// When the head reads the output of `depth` blocks (stages): the first block trained
    /// besides the head, and whether what comes before the first block is trained too
    /// (`depth` and no: nothing of the backbone is trained).
    pub fn tuned_from(&self, depth: usize) -> (usize, bool) {
        match *self {
            Mode::Head => (depth, false),
            Mode::LastBlocks(n) => (depth.saturating_sub(n.max(1)), false),
            Mode::Full => (0, true),
        }
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

/// Cached views (crops x views per crop) that `views = 0` allows: a few minutes of caching
/// on a laptop's CPU.
pub const VIEW_BUDGET: usize = 4000;

/// The depths tried when choosing (one backbone pass caches them all); on equal scores the
/// later one is taken.
pub const CANDIDATE_BLOCKS: [&[usize]; 4] = [&[6], &[9], &[12], &[9, 12]];

/// The depths tried when none are given, for a backbone `depth` deep: a ViT's are
/// [`CANDIDATE_BLOCKS`] (clamped to its depth); a CNN's are its last stage and the one
/// before (a CNN's earlier stages have other grids and widths, and its middle stages see
/// too little of the crop to tell individuals apart).
pub fn candidate_blocks(depth: usize, convolutional: bool) -> Vec<Vec<usize>> {
    let depth = depth.max(1);
    match convolutional {
        false => CANDIDATE_BLOCKS.iter().map(|c| c.iter().map(|&d| d.clamp(1, depth)).collect()).collect(),
        true => (depth.saturating_sub(1).max(1)..=depth).map(|d| vec![d]).collect(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vit_tries_its_middle_and_late_blocks_and_a_cnn_its_last_two_stages() {
        assert_eq!(candidate_blocks(12, false), [vec![6], vec![9], vec![12], vec![9, 12]]);
        assert_eq!(candidate_blocks(2, false), [vec![2], vec![2], vec![2], vec![2, 2]], "clamped, deduplicated later");
        assert_eq!(candidate_blocks(7, true), [vec![6], vec![7]]);
        assert_eq!(candidate_blocks(1, true), [vec![1]]);
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
        assert_eq!(Mode::LastBlocks(2).tuned_from(6), (4, false));
        assert_eq!(Mode::Head.tuned_from(12), (12, false));
        assert_eq!(Mode::Full.tuned_from(2), (0, true));
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
