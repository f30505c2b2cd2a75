//! Batch-hard triplet loss (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss").

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::shared::check_batch;
use super::{LossError, MetricLoss, Result};
use crate::models::l2_normalise;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripletDistance {
    /// 1 − cos, in [0, 2].
    Cosine,
    /// ‖a − b‖ of the normalised embeddings, in [0, 2] (Hermans et al. use Euclidean).
    Euclidean,
}

/// Batch-hard triplet loss (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TripletConfig {
    /// Hinge margin; 0.3 as in the re-identification "bag of tricks" baseline (Luo et al. 2019).
    pub margin: f64,
    /// Use softplus(d_ap − d_an) instead of the hinge (Hermans et al.'s soft margin).
    pub soft_margin: bool,
    pub distance: TripletDistance,
}

impl Default for TripletConfig {
    fn default() -> Self {
        TripletConfig { margin: 0.3, soft_margin: false, distance: TripletDistance::Euclidean }
    }
}

/// Fill values outside every distance between unit vectors ([0, 2]), so a masked entry never wins
/// the hardest-positive max or the hardest-negative min.
const NO_POSITIVE: f64 = -1e4;
const NO_NEGATIVE: f64 = 1e4;

/// Batch-hard triplet: for each anchor, its farthest positive and nearest negative in the batch,
/// hinge max(0, d_ap − d_an + margin) or softplus(d_ap − d_an), averaged over anchors that have
/// both. Needs P×K batches (see `sampler::PkSampler`). Has no trainable tensors.
pub struct BatchHardTriplet {
    config: TripletConfig,
    dim: usize,
}

impl BatchHardTriplet {
    pub fn new(config: &TripletConfig, dim: usize) -> Result<Self> {
        if !(config.margin.is_finite() && config.margin >= 0.0) {
            return Err(LossError::Config(format!("triplet margin must be non-negative, got {}", config.margin)));
        }
        Ok(BatchHardTriplet { config: config.clone(), dim })
    }

    /// Pairwise distances `[B, B]` of the normalised embeddings.
    fn distances(&self, embeddings: &Tensor) -> candle_core::Result<Tensor> {
        let e = l2_normalise(embeddings)?;
        let sim = e.matmul(&e.t()?)?;
        match self.config.distance {
            TripletDistance::Cosine => sim.affine(-1.0, 1.0),
            // ‖a − b‖² = 2 − 2 cos for unit vectors; the floor keeps sqrt's gradient finite on the
            // diagonal and for duplicates.
            TripletDistance::Euclidean => sim.affine(-2.0, 2.0)?.maximum(1e-12)?.sqrt(),
        }
    }
}

impl MetricLoss for BatchHardTriplet {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let labels = check_batch(embeddings, labels, self.dim, None)?;
        let (batch, device) = (labels.len(), embeddings.device());
        let mut positive = vec![0u8; batch * batch];
        let mut negative = vec![0u8; batch * batch];
        for (i, a) in labels.iter().enumerate() {
            for (j, b) in labels.iter().enumerate() {
                positive[i * batch + j] = u8::from(a == b && i != j);
                negative[i * batch + j] = u8::from(a != b);
            }
        }
        let anchors: Vec<u32> = (0..batch)
            .filter(|&i| {
                let row = i * batch..(i + 1) * batch;
                positive[row.clone()].contains(&1) && negative[row].contains(&1)
            })
            .map(|i| i as u32)
            .collect();
        if anchors.is_empty() {
            // Nothing to learn from this batch; a constant zero carries no gradient.
            return Ok(Tensor::zeros((), embeddings.dtype(), device)?);
        }
        let positive = Tensor::from_vec(positive, (batch, batch), device)?;
        let negative = Tensor::from_vec(negative, (batch, batch), device)?;
        let d = self.distances(embeddings)?;
        let hardest_positive = positive.where_cond(&d, &d.ones_like()?.affine(0.0, NO_POSITIVE)?)?.max(1)?;
        let hardest_negative = negative.where_cond(&d, &d.ones_like()?.affine(0.0, NO_NEGATIVE)?)?.min(1)?;
        let anchors = Tensor::from_slice(&anchors, anchors.len(), device)?;
        let gap = (hardest_positive - hardest_negative)?.index_select(&anchors, 0)?;
        let per_anchor = if self.config.soft_margin {
            // softplus(x) = max(x, 0) + log(1 + e^−|x|), stable for large |x|
            (gap.relu()? + gap.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?
        } else {
            (gap + self.config.margin)?.relu()?
        };
        Ok(per_anchor.mean_all()?)
    }

    fn logits(&self, _embeddings: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    fn name(&self) -> &'static str {
        "batch_hard_triplet"
    }
}
