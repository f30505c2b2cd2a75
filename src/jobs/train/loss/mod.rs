//! Metric-learning losses for the embedding head: ArcFace, sub-centre ArcFace with dynamic
//! margins, ProxyAnchor and batch-hard triplet.
//!
//! Every loss takes embeddings `[B, d]` (any scale: they are L2-normalised here) and class labels
//! `[B]`, returns a scalar, and owns its trainable tensors through the `VarBuilder` it was built
//! with, so the trainer can give them their own learning rate (ProxyAnchor's paper trains its
//! proxies 100x faster than the backbone; the Happywhale winner gave its head 10x).
//!
//! Only differentiable candle ops are used: the fused `softmax_last_dim`, `layer_norm` and
//! `rms_norm` have no backward and would stop gradients silently (see candle-notes.md). The unit
//! tests check every gradient against central finite differences to keep it that way.

mod arcface;
mod proxy_anchor;
mod shared;
mod subcenter;
#[cfg(test)]
mod tests;
mod triplet;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use arcface::{ArcFace, ArcFaceConfig};
pub use proxy_anchor::{ProxyAnchor, ProxyAnchorConfig};
pub use subcenter::{DynamicMargin, SubCenterArcFace, SubCenterArcFaceConfig};
pub use triplet::{BatchHardTriplet, TripletConfig, TripletDistance};

#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("label {label} at batch position {position} is not a class index in 0..{classes}")]
    LabelOutOfRange { position: usize, label: i64, classes: usize },
    #[error("labels must be an integer tensor of shape [batch], got {dtype:?} {shape:?}")]
    Labels { dtype: DType, shape: Vec<usize> },
    #[error("embeddings must have shape [batch, {dim}], got {shape:?}")]
    EmbeddingShape { dim: usize, shape: Vec<usize> },
    #[error("{labels} labels for {embeddings} embeddings")]
    BatchMismatch { embeddings: usize, labels: usize },
    #[error("class_counts has {got} entries for {classes} classes")]
    ClassCounts { got: usize, classes: usize },
    #[error("invalid loss configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, LossError>;

/// A loss on a batch of embeddings and their class labels.
pub trait MetricLoss: Send + Sync {
    /// The scalar loss of a batch: `embeddings` `[B, d]` float, `labels` `[B]` integer class indices.
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor>;

    /// Cosine similarity `[B, C]` of each embedding to each class (for sub-centre ArcFace, to the
    /// class's nearest sub-centre), without margin or scale: argmax is the nearest class.
    /// `None` for losses without class weights (triplet).
    fn logits(&self, embeddings: &Tensor) -> Result<Option<Tensor>>;

    /// Short name for logs and reports.
    fn name(&self) -> &'static str;
}

/// Which loss to train with, and its hyper-parameters. Serialised with a `kind` tag, e.g.
/// `{"kind": "arc_face", "scale": 30.0}`; missing fields take the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossConfig {
    ArcFace(ArcFaceConfig),
    SubCenterArcFace(SubCenterArcFaceConfig),
    ProxyAnchor(ProxyAnchorConfig),
    Triplet(TripletConfig),
}

impl Default for LossConfig {
    /// The seed pipelines' classifier loss.
    fn default() -> Self {
        LossConfig::ArcFace(ArcFaceConfig::default())
    }
}

/// Builds the loss `config` describes for `dim`-dimensional embeddings and `classes` classes.
/// Its trainable tensors are created under `vb` (`weight` for the ArcFaces, `proxies` for
/// ProxyAnchor; triplet has none). `class_counts[c]` is class c's number of training images; only
/// the dynamic margins of sub-centre ArcFace use it, and then it must have `classes` entries.
pub fn build(
    config: &LossConfig,
    vb: VarBuilder,
    dim: usize,
    classes: usize,
    class_counts: &[usize],
) -> Result<Box<dyn MetricLoss>> {
    if dim == 0 {
        return Err(LossError::Config("embedding dimension must be at least 1".into()));
    }
    Ok(match config {
        LossConfig::ArcFace(c) => Box::new(ArcFace::new(c, vb, dim, classes)?),
        LossConfig::SubCenterArcFace(c) => Box::new(SubCenterArcFace::new(c, vb, dim, classes, class_counts)?),
        LossConfig::ProxyAnchor(c) => Box::new(ProxyAnchor::new(c, vb, dim, classes)?),
        LossConfig::Triplet(c) => Box::new(BatchHardTriplet::new(c, dim)?),
    })
}
