//! ProxyAnchor (Kim et al., CVPR 2020).

use std::collections::BTreeSet;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::shared::{check_batch, check_embeddings, class_weight, cosine, one_hot_mask, positive};
use super::{LossError, MetricLoss, Result};

/// ProxyAnchor (Kim et al., CVPR 2020); α = 32 and δ = 0.1 are the paper's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyAnchorConfig {
    pub alpha: f64,
    pub delta: f64,
}

impl Default for ProxyAnchorConfig {
    fn default() -> Self {
        ProxyAnchorConfig { alpha: 32.0, delta: 0.1 }
    }
}

/// Stands in for "not in the set" before a log-sum-exp: exp of it underflows to exactly 0.
const MASKED_OUT: f64 = -1e30;

/// Per column c of `z` `[B, C]`: log(1 + Σ_{i: mask[i,c]} exp z[i,c]), as a log-sum-exp over the
/// column with a 0 prepended — softplus(logsumexp) without overflow, and exactly 0 for a column
/// whose mask is empty.
fn log1p_sum_exp_masked(z: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let z = mask.where_cond(z, &z.ones_like()?.affine(0.0, MASKED_OUT)?)?;
    let zero_row = Tensor::zeros((1, z.dim(1)?), z.dtype(), z.device())?;
    Tensor::cat(&[&zero_row, &z], 0)?.log_sum_exp(0)
}

/// ProxyAnchor: each class proxy is an anchor pulling its batch positives within δ of it and
/// pushing negatives beyond −δ, weighted by a softmax of hardness at temperature 1/α.
///
/// L = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)})
/// with P all proxies and P⁺ those with a positive in the batch.
pub struct ProxyAnchor {
    proxies: Tensor,
    config: ProxyAnchorConfig,
    dim: usize,
    classes: usize,
}

impl ProxyAnchor {
    pub fn new(config: &ProxyAnchorConfig, vb: VarBuilder, dim: usize, classes: usize) -> Result<Self> {
        if !positive(config.alpha) {
            return Err(LossError::Config(format!("ProxyAnchor α must be positive, got {}", config.alpha)));
        }
        if classes == 0 {
            return Err(LossError::Config("a class-weighted loss needs at least one class".into()));
        }
        let proxies = class_weight(&vb, classes, dim, "proxies")?;
        Ok(ProxyAnchor { proxies, config: config.clone(), dim, classes })
    }
}

impl MetricLoss for ProxyAnchor {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let labels = check_batch(embeddings, labels, self.dim, Some(self.classes))?;
        let (alpha, delta) = (self.config.alpha, self.config.delta);
        let cos = cosine(embeddings, &self.proxies)?;
        let positive = one_hot_mask(&labels, self.classes, embeddings.device())?;
        let negative = positive.eq(0u8)?;
        let pull = log1p_sum_exp_masked(&cos.affine(-alpha, alpha * delta)?, &positive)?;
        let push = log1p_sum_exp_masked(&cos.affine(alpha, alpha * delta)?, &negative)?;
        let classes_present = labels.iter().collect::<BTreeSet<_>>().len();
        let loss = ((pull.sum_all()? / classes_present as f64)? + (push.sum_all()? / self.classes as f64)?)?;
        Ok(loss)
    }

    fn logits(&self, embeddings: &Tensor) -> Result<Option<Tensor>> {
        check_embeddings(embeddings, self.dim)?;
        Ok(Some(cosine(embeddings, &self.proxies)?))
    }

    fn name(&self) -> &'static str {
        "proxy_anchor"
    }
}
