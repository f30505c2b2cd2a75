//! Sub-centre ArcFace (Deng et al., ECCV 2020) with dynamic per-class margins.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::arcface::{check_arcface_params, check_margin, margin_logits, smoothed_cross_entropy};
use super::shared::{check_batch, check_embeddings, class_weight, cosine, one_hot_mask};
use super::{LossError, MetricLoss, Result};

/// Per-class margin m_c = a · n_c^(−p) + b, n_c the class's training count: rare individuals get
/// larger margins. Formula and constants from Henkel & Singer's Google Landmark Recognition 2020
/// solution (arXiv:2010.05350: λ = p = 0.25, a = 0.5, b = 0.05); the Happywhale 2022 winner used
/// the same formula with its own tuned constants (field-notes.md). Gives 0.55 for a singleton,
/// 0.30 for 16 images, 0.10 for 10^4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicMargin {
    pub a: f64,
    pub p: f64,
    pub b: f64,
}

impl Default for DynamicMargin {
    fn default() -> Self {
        DynamicMargin { a: 0.5, p: 0.25, b: 0.05 }
    }
}

impl DynamicMargin {
    /// The margin of each class. A class with no training image is treated as a singleton rather
    /// than given an infinite margin.
    pub fn margins(&self, class_counts: &[usize]) -> Vec<f64> {
        class_counts.iter().map(|&n| self.a * (n.max(1) as f64).powf(-self.p) + self.b).collect()
    }
}

/// Sub-centre ArcFace (Deng et al., ECCV 2020) with dynamic per-class margins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubCenterArcFaceConfig {
    pub scale: f64,
    /// Sub-centres per class, k; 3 as in the paper (the Happywhale winner used 2).
    pub sub_centres: usize,
    pub margin: DynamicMargin,
    /// Off by default: GLR 2020 and Happywhale used the paper's θ + m > π fallback.
    pub easy_margin: bool,
    pub label_smoothing: f64,
}

impl Default for SubCenterArcFaceConfig {
    fn default() -> Self {
        SubCenterArcFaceConfig {
            scale: 30.0,
            sub_centres: 3,
            margin: DynamicMargin::default(),
            easy_margin: false,
            label_smoothing: 0.0,
        }
    }
}

/// Sub-centre ArcFace: each class has k centres and its cosine is the best of them, so noisy or
/// multi-modal classes (left and right flanks, a fluke and a dorsal fin) need not share one
/// centre. The margin is per class (see [`DynamicMargin`]).
pub struct SubCenterArcFace {
    /// `[C·k, d]`, class c's centres in rows c·k .. c·k + k.
    weight: Tensor,
    config: SubCenterArcFaceConfig,
    margins: Vec<f64>,
    dim: usize,
    classes: usize,
}

impl SubCenterArcFace {
    pub fn new(
        config: &SubCenterArcFaceConfig,
        vb: VarBuilder,
        dim: usize,
        classes: usize,
        class_counts: &[usize],
    ) -> Result<Self> {
        check_arcface_params(config.scale, config.label_smoothing, classes)?;
        if config.sub_centres == 0 {
            return Err(LossError::Config("sub-centre ArcFace needs at least one centre per class".into()));
        }
        if class_counts.len() != classes {
            return Err(LossError::ClassCounts { got: class_counts.len(), classes });
        }
        let margins = config.margin.margins(class_counts);
        for &m in &margins {
            check_margin(m)?;
        }
        let weight = class_weight(&vb, classes * config.sub_centres, dim, "weight")?;
        Ok(SubCenterArcFace { weight, config: config.clone(), margins, dim, classes })
    }

    /// The margin of each class, from its training count.
    pub fn margins(&self) -> &[f64] {
        &self.margins
    }

    fn class_cosine(&self, embeddings: &Tensor) -> candle_core::Result<Tensor> {
        let batch = embeddings.dim(0)?;
        cosine(embeddings, &self.weight)?.reshape((batch, self.classes, self.config.sub_centres))?.max(2)
    }
}

impl MetricLoss for SubCenterArcFace {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let labels = check_batch(embeddings, labels, self.dim, Some(self.classes))?;
        let cos = self.class_cosine(embeddings)?;
        let target = one_hot_mask(&labels, self.classes, embeddings.device())?;
        let margins: Vec<f64> = labels.iter().map(|&c| self.margins[c as usize]).collect();
        let logits = (margin_logits(&cos, &target, &margins, self.config.easy_margin)? * self.config.scale)?;
        Ok(smoothed_cross_entropy(&logits, &target, self.config.label_smoothing)?)
    }

    fn logits(&self, embeddings: &Tensor) -> Result<Option<Tensor>> {
        check_embeddings(embeddings, self.dim)?;
        Ok(Some(self.class_cosine(embeddings)?))
    }

    fn name(&self) -> &'static str {
        "subcenter_arcface"
    }
}
