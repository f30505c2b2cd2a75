//! ArcFace (Deng et al., CVPR 2019), and the margin arithmetic the sub-centre variant shares.

use std::f64::consts::PI;

use candle_core::{D, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::shared::{check_batch, check_embeddings, class_weight, column, cosine, one_hot_mask, positive};
use super::{LossError, MetricLoss, Result};

/// ArcFace (Deng et al., CVPR 2019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArcFaceConfig {
    /// Scale s of the cosine logits. 30 as in the seed pipeline and the Kaggle ArcFace kernels
    /// (the paper uses 64 for faces with ~10^5 classes).
    pub scale: f64,
    /// Additive angular margin m in radians; 0.5 as in the paper and the seed pipeline.
    pub margin: f64,
    /// Apply the margin only where cos θ > 0 (the seed pipeline's choice) instead of the paper's
    /// fallback `cos θ − sin(π − m)·m` once θ + m passes π.
    pub easy_margin: bool,
    /// Label smoothing ε on the one-hot target (Szegedy et al. 2016); 0 = none.
    pub label_smoothing: f64,
}

impl Default for ArcFaceConfig {
    fn default() -> Self {
        ArcFaceConfig { scale: 30.0, margin: 0.5, easy_margin: true, label_smoothing: 0.0 }
    }
}

/// ArcFace: softmax cross-entropy over s·cos θ with an additive angular margin on the target.
pub struct ArcFace {
    weight: Tensor,
    config: ArcFaceConfig,
    dim: usize,
    classes: usize,
}

impl ArcFace {
    pub fn new(config: &ArcFaceConfig, vb: VarBuilder, dim: usize, classes: usize) -> Result<Self> {
        check_arcface_params(config.scale, config.label_smoothing, classes)?;
        check_margin(config.margin)?;
        let weight = class_weight(&vb, classes, dim, "weight")?;
        Ok(ArcFace { weight, config: config.clone(), dim, classes })
    }
}

impl MetricLoss for ArcFace {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let labels = check_batch(embeddings, labels, self.dim, Some(self.classes))?;
        let cos = cosine(embeddings, &self.weight)?;
        let target = one_hot_mask(&labels, self.classes, embeddings.device())?;
        let margins = vec![self.config.margin; labels.len()];
        let logits = (margin_logits(&cos, &target, &margins, self.config.easy_margin)? * self.config.scale)?;
        Ok(smoothed_cross_entropy(&logits, &target, self.config.label_smoothing)?)
    }

    fn logits(&self, embeddings: &Tensor) -> Result<Option<Tensor>> {
        check_embeddings(embeddings, self.dim)?;
        Ok(Some(cosine(embeddings, &self.weight)?))
    }

    fn name(&self) -> &'static str {
        "arcface"
    }
}

/// Keeps cos θ off ±1 where sin θ = sqrt(1 − cos²θ) is taken: its derivative is infinite there.
pub(super) const COS_CLAMP: f64 = 1e-7;

/// ArcFace logits before scaling: the target column gets cos(θ + m_i), with m_i the margin of
/// sample i's class, every other column keeps cos θ.
///
/// Past θ + m = π, cos(θ + m) would rise again and reward moving away from the class, so the
/// paper's code switches to the linear fallback cos θ − sin(π − m)·m there (threshold
/// th = cos(π − m)); `easy_margin` instead applies the margin only where cos θ > 0.
pub(super) fn margin_logits(
    cos: &Tensor,
    target: &Tensor,
    margins: &[f64],
    easy_margin: bool,
) -> candle_core::Result<Tensor> {
    let (dtype, device) = (cos.dtype(), cos.device());
    let cos_m = column(margins.iter().map(|m| m.cos()), dtype, device)?;
    let sin_m = column(margins.iter().map(|m| m.sin()), dtype, device)?;
    let clamped = cos.clamp(-1.0 + COS_CLAMP, 1.0 - COS_CLAMP)?;
    let sin = clamped.sqr()?.affine(-1.0, 1.0)?.sqrt()?;
    let phi = (clamped.broadcast_mul(&cos_m)? - sin.broadcast_mul(&sin_m)?)?;
    let phi = if easy_margin {
        cos.gt(0.0)?.where_cond(&phi, cos)?
    } else {
        let th = column(margins.iter().map(|m| (PI - m).cos()), dtype, device)?;
        let mm = column(margins.iter().map(|m| (PI - m).sin() * m), dtype, device)?;
        cos.broadcast_gt(&th)?.where_cond(&phi, &cos.broadcast_sub(&mm)?)?
    };
    target.where_cond(&phi, cos)
}

/// Mean cross-entropy of `logits` `[B, C]` against the one-hot `target` smoothed to
/// (1 − ε)·onehot + ε/C.
pub(super) fn smoothed_cross_entropy(logits: &Tensor, target: &Tensor, smoothing: f64) -> candle_core::Result<Tensor> {
    let classes = logits.dim(1)? as f64;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let target = target.to_dtype(logits.dtype())?.affine(1.0 - smoothing, smoothing / classes)?;
    (target * log_p)?.sum(1)?.mean(0)?.neg()
}

pub(super) fn check_arcface_params(scale: f64, label_smoothing: f64, classes: usize) -> Result<()> {
    if !positive(scale) {
        return Err(LossError::Config(format!("scale must be positive, got {scale}")));
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(LossError::Config(format!("label smoothing must be in [0, 1), got {label_smoothing}")));
    }
    if classes == 0 {
        return Err(LossError::Config("a class-weighted loss needs at least one class".into()));
    }
    Ok(())
}

pub(super) fn check_margin(margin: f64) -> Result<()> {
    if !(0.0..PI).contains(&margin) {
        return Err(LossError::Config(format!("angular margin must be in [0, π), got {margin}")));
    }
    Ok(())
}
