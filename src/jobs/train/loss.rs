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

use std::collections::BTreeSet;
use std::f64::consts::PI;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Configuration

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

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Rows scaled to unit length. The tiny term under the root keeps a zero row finite (and its
/// gradient free of 0/0) instead of NaN.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Cosine similarity `[B, C]` of embeddings `[B, d]` to class weights `[C, d]`.
fn cosine(embeddings: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    l2_normalize(embeddings)?.matmul(&l2_normalize(weight)?.t()?)
}

/// True for a finite x > 0 (false for NaN).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// The batch size of float embeddings `[B, dim]`.
fn check_embeddings(embeddings: &Tensor, dim: usize) -> Result<usize> {
    match embeddings.dims() {
        &[b, d] if d == dim && embeddings.dtype().is_float() => Ok(b),
        shape => Err(LossError::EmbeddingShape { dim, shape: shape.to_vec() }),
    }
}

/// Validates a batch and returns its labels on the host (needed for masks and margins).
/// `classes: None` accepts any label in 0..2³² (triplet compares labels only).
fn check_batch(embeddings: &Tensor, labels: &Tensor, dim: usize, classes: Option<usize>) -> Result<Vec<u32>> {
    let batch = check_embeddings(embeddings, dim)?;
    if labels.rank() != 1 || !labels.dtype().is_int() {
        return Err(LossError::Labels { dtype: labels.dtype(), shape: labels.dims().to_vec() });
    }
    let host = labels.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if host.len() != batch {
        return Err(LossError::BatchMismatch { embeddings: batch, labels: host.len() });
    }
    let bound = classes.map_or(1 << 32, |c| c as i64);
    host.iter()
        .enumerate()
        .map(|(position, &label)| {
            if (0..bound).contains(&label) {
                Ok(label as u32)
            } else {
                Err(LossError::LabelOutOfRange { position, label, classes: bound as usize })
            }
        })
        .collect()
}

/// `[B, C]` u8 mask, 1 at each sample's class.
fn one_hot_mask(labels: &[u32], classes: usize, device: &Device) -> candle_core::Result<Tensor> {
    let labels = Tensor::from_slice(labels, labels.len(), device)?;
    labels.unsqueeze(1)?.broadcast_eq(&Tensor::arange(0u32, classes as u32, device)?.unsqueeze(0)?)
}

/// One `[B, 1]` column from a per-sample value, in `dtype`.
fn column(values: impl Iterator<Item = f64>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f64> = values.collect();
    let rows = values.len();
    Tensor::from_vec(values, (rows, 1), device)?.to_dtype(dtype)
}

/// Keeps cos θ off ±1 where sin θ = sqrt(1 − cos²θ) is taken: its derivative is infinite there.
const COS_CLAMP: f64 = 1e-7;

/// ArcFace logits before scaling: the target column gets cos(θ + m_i), with m_i the margin of
/// sample i's class, every other column keeps cos θ.
///
/// Past θ + m = π, cos(θ + m) would rise again and reward moving away from the class, so the
/// paper's code switches to the linear fallback cos θ − sin(π − m)·m there (threshold
/// th = cos(π − m)); `easy_margin` instead applies the margin only where cos θ > 0.
fn margin_logits(cos: &Tensor, target: &Tensor, margins: &[f64], easy_margin: bool) -> candle_core::Result<Tensor> {
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
fn smoothed_cross_entropy(logits: &Tensor, target: &Tensor, smoothing: f64) -> candle_core::Result<Tensor> {
    let classes = logits.dim(1)? as f64;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let target = target.to_dtype(logits.dtype())?.affine(1.0 - smoothing, smoothing / classes)?;
    (target * log_p)?.sum(1)?.mean(0)?.neg()
}

fn check_arcface_params(scale: f64, label_smoothing: f64, classes: usize) -> Result<()> {
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

fn check_margin(margin: f64) -> Result<()> {
    if !(0.0..PI).contains(&margin) {
        return Err(LossError::Config(format!("angular margin must be in [0, π), got {margin}")));
    }
    Ok(())
}

/// Initial class weights: rows of norm ≈ 1, so AdamW's steps (≈ lr in absolute units) move
/// them by the same angle whatever d is. Their scale does not enter the loss (normalised).
fn class_weight(vb: &VarBuilder, rows: usize, dim: usize, name: &str) -> candle_core::Result<Tensor> {
    vb.get_with_hints((rows, dim), name, Init::Randn { mean: 0.0, stdev: 1.0 / (dim as f64).sqrt() })
}

// ---------------------------------------------------------------------------------------------
// ArcFace

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

// ---------------------------------------------------------------------------------------------
// Sub-centre ArcFace with dynamic margins

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

// ---------------------------------------------------------------------------------------------
// ProxyAnchor

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

// ---------------------------------------------------------------------------------------------
// Batch-hard triplet

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
        let e = l2_normalize(embeddings)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use candle_nn::{Module, Optimizer, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const CPU: Device = Device::Cpu;

    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        // Box–Muller: rand 0.9 has no normal distribution without rand_distr.
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    /// Overwrites every variable with seeded normal values: candle's CPU initialisers cannot be
    /// seeded, and tests must not depend on luck.
    fn fill_seeded(varmap: &VarMap, seed: u64, stdev: f64) {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for name in names {
            let var = &data[name];
            let values: Vec<f64> = (0..var.elem_count()).map(|_| normal(&mut rng) * stdev).collect();
            var.set(&Tensor::from_vec(values, var.shape(), &CPU).unwrap().to_dtype(var.dtype()).unwrap()).unwrap();
        }
    }

    fn set(varmap: &VarMap, name: &str, rows: &[&[f64]]) {
        let cols = rows[0].len();
        let t = Tensor::from_vec(rows.concat(), (rows.len(), cols), &CPU).unwrap();
        varmap.data().lock().unwrap()[name].set(&t).unwrap();
    }

    fn labels(values: &[u32]) -> Tensor {
        Tensor::from_slice(values, values.len(), &CPU).unwrap()
    }

    fn embeddings(rows: &[&[f64]]) -> Tensor {
        Tensor::from_vec(rows.concat(), (rows.len(), rows[0].len()), &CPU).unwrap()
    }

    /// A loss in f64 with its own VarMap.
    fn build_f64(config: &LossConfig, dim: usize, classes: usize, counts: &[usize]) -> (VarMap, Box<dyn MetricLoss>) {
        let varmap = VarMap::new();
        let loss = build(config, VarBuilder::from_varmap(&varmap, DType::F64, &CPU), dim, classes, counts).unwrap();
        (varmap, loss)
    }

    fn value(loss: &dyn MetricLoss, e: &Tensor, y: &Tensor) -> f64 {
        loss.forward(e, y).unwrap().to_scalar::<f64>().unwrap()
    }

    fn arcface(margin: f64, easy_margin: bool) -> LossConfig {
        LossConfig::ArcFace(ArcFaceConfig { scale: 10.0, margin, easy_margin, label_smoothing: 0.0 })
    }

    /// The configurations every generic test runs through: each option at a non-default value
    /// somewhere.
    fn all_configs() -> Vec<(&'static str, LossConfig)> {
        vec![
            ("arcface", LossConfig::ArcFace(ArcFaceConfig { label_smoothing: 0.1, ..Default::default() })),
            ("arcface hard margin", arcface(0.5, false)),
            ("subcenter", LossConfig::SubCenterArcFace(SubCenterArcFaceConfig::default())),
            (
                "subcenter easy margin, smoothing",
                LossConfig::SubCenterArcFace(SubCenterArcFaceConfig {
                    easy_margin: true,
                    label_smoothing: 0.1,
                    ..Default::default()
                }),
            ),
            ("proxy anchor", LossConfig::ProxyAnchor(ProxyAnchorConfig::default())),
            ("triplet euclidean", LossConfig::Triplet(TripletConfig { margin: 1.0, ..Default::default() })),
            (
                "triplet cosine",
                LossConfig::Triplet(TripletConfig {
                    margin: 1.0,
                    distance: TripletDistance::Cosine,
                    soft_margin: false,
                }),
            ),
            ("triplet soft", LossConfig::Triplet(TripletConfig { soft_margin: true, ..Default::default() })),
        ]
    }

    /// The tiny case of the gradient tests: B = 6, d = 3, C = 3, two images per class (every
    /// triplet anchor has a positive), class counts uneven so the dynamic margins differ.
    const B: usize = 6;
    const DIM: usize = 3;
    const C: usize = 3;
    const LABELS: [u32; B] = [0, 0, 1, 1, 2, 2];
    const COUNTS: [usize; C] = [1, 5, 40];

    fn tiny_case(config: &LossConfig, seed: u64) -> (VarMap, Box<dyn MetricLoss>, Var) {
        let (varmap, loss) = build_f64(config, DIM, C, &COUNTS);
        fill_seeded(&varmap, seed, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
        let values: Vec<f64> = (0..B * DIM).map(|_| normal(&mut rng)).collect();
        (varmap, loss, Var::from_vec(values, (B, DIM), &CPU).unwrap())
    }

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug in assertion messages
    struct Mismatch {
        param: String,
        index: usize,
        analytic: f64,
        numeric: f64,
    }

    /// Compares `backward()` with central differences (f64, h = 1e-6) for the embeddings and
    /// every variable of `varmap`; returns the entries that disagree.
    fn gradient_mismatches(loss: &dyn MetricLoss, varmap: &VarMap, emb: &Var, y: &Tensor) -> Vec<Mismatch> {
        let grads = loss.forward(emb.as_tensor(), y).unwrap().backward().unwrap();
        let mut params: Vec<(String, Var)> = vec![("embeddings".into(), emb.clone())];
        let mut vars: Vec<(String, Var)> =
            varmap.data().lock().unwrap().iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        params.extend(vars);
        let h = 1e-6;
        let mut mismatches = Vec::new();
        for (name, var) in params {
            let shape = var.shape().clone();
            let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
                None => vec![0.0; shape.elem_count()],
            };
            let original: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
            for index in 0..original.len() {
                let at = |delta: f64| {
                    let mut v = original.clone();
                    v[index] += delta;
                    var.set(&Tensor::from_vec(v, &shape, &CPU).unwrap()).unwrap();
                    value(loss, emb.as_tensor(), y)
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(original.clone(), &shape, &CPU).unwrap()).unwrap();
                let a = analytic[index];
                if (a - numeric).abs() > 1e-6 + 1e-4 * a.abs().max(numeric.abs()) {
                    mismatches.push(Mismatch { param: name.clone(), index, analytic: a, numeric });
                }
            }
        }
        mismatches
    }

    #[test]
    fn every_loss_gradient_matches_finite_differences() {
        for (name, config) in all_configs() {
            for seed in 0..3 {
                let (varmap, loss, emb) = tiny_case(&config, seed);
                let mismatches = gradient_mismatches(loss.as_ref(), &varmap, &emb, &labels(&LABELS));
                assert!(mismatches.is_empty(), "{name}, seed {seed}: {mismatches:#?}");
            }
        }
    }

    /// A loss written with the fused softmax, which has no backward: the checker must catch it,
    /// or the test above proves nothing.
    struct FusedSoftmaxLoss {
        weight: Tensor,
        fused: bool,
    }

    impl MetricLoss for FusedSoftmaxLoss {
        fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor> {
            let logits = embeddings.matmul(&self.weight.t()?)?;
            let p = if self.fused {
                candle_nn::ops::softmax_last_dim(&logits)?
            } else {
                candle_nn::ops::softmax(&logits, D::Minus1)?
            };
            let labels = check_batch(embeddings, labels, DIM, Some(C))?;
            let mask = one_hot_mask(&labels, C, &CPU)?.to_dtype(DType::F64)?;
            Ok((p * mask)?.sum(1)?.log()?.mean(0)?.neg()?)
        }
        fn logits(&self, _: &Tensor) -> Result<Option<Tensor>> {
            Ok(None)
        }
        fn name(&self) -> &'static str {
            "fused"
        }
    }

    #[test]
    fn gradient_check_catches_a_loss_built_on_the_fused_softmax() {
        for fused in [false, true] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &CPU);
            let weight = class_weight(&vb, C, DIM, "weight").unwrap();
            fill_seeded(&varmap, 5, 1.0);
            let loss = FusedSoftmaxLoss { weight, fused };
            let emb = Var::from_vec((0..B * DIM).map(|i| (i as f64 * 0.37).sin()).collect(), (B, DIM), &CPU).unwrap();
            let mismatches = gradient_mismatches(&loss, &varmap, &emb, &labels(&LABELS));
            assert_eq!(!mismatches.is_empty(), fused, "fused = {fused}: {mismatches:?}");
        }
    }

    #[test]
    fn every_trainable_tensor_and_the_embeddings_receive_a_nonzero_gradient() {
        for (name, config) in all_configs() {
            let (varmap, loss, emb) = tiny_case(&config, 11);
            let grads = loss.forward(emb.as_tensor(), &labels(&LABELS)).unwrap().backward().unwrap();
            let mut vars: Vec<(String, Var)> = varmap.data().lock().unwrap().clone().into_iter().collect();
            vars.push(("embeddings".into(), emb));
            let expected_vars = if matches!(config, LossConfig::Triplet(_)) { 1 } else { 2 };
            assert_eq!(vars.len(), expected_vars, "{name}: trainable tensors {vars:?}");
            for (var_name, var) in vars {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient for {var_name}"));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
                assert!(norm > 1e-12 && norm.is_finite(), "{name}: gradient of {var_name} has norm² {norm}");
            }
        }
    }

    /// Class weights along the axes of R³.
    fn axis_weights(varmap: &VarMap) {
        set(varmap, "weight", &[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
    }

    #[test]
    fn arcface_loss_is_lower_on_the_own_class_weight_than_on_another() {
        let (varmap, loss) = build_f64(&LossConfig::default(), 3, 3, &[]);
        axis_weights(&varmap);
        let y = labels(&[0]);
        let on_own = value(loss.as_ref(), &embeddings(&[&[2.0, 0.0, 0.0]]), &y);
        let on_other = value(loss.as_ref(), &embeddings(&[&[0.0, 2.0, 0.0]]), &y);
        assert!(on_own < on_other, "own {on_own} other {on_other}");
        assert!(on_own < 0.1, "s = 30, m = 0.5 on the own weight: {on_own}");
    }

    #[test]
    fn arcface_margin_increases_the_loss() {
        let e = embeddings(&[&[1.0, 0.3, 0.1], &[0.2, 1.0, -0.4]]);
        let y = labels(&[0, 1]);
        let mut values = Vec::new();
        for margin in [0.0, 0.2, 0.5] {
            let (varmap, loss) = build_f64(&arcface(margin, false), 3, 3, &[]);
            axis_weights(&varmap);
            values.push(value(loss.as_ref(), &e, &y));
        }
        assert!(values[0] < values[1] && values[1] < values[2], "{values:?}");
    }

    /// Loss of one sample at angle θ from its class weight (class 0) with the other two classes
    /// orthogonal to it, computed directly from the paper's definition.
    fn arcface_reference(theta: f64, scale: f64, m: f64, easy_margin: bool) -> f64 {
        let cos = theta.cos();
        let target = if easy_margin {
            if cos > 0.0 { (theta + m).cos() } else { cos }
        } else if theta + m <= PI {
            (theta + m).cos()
        } else {
            cos - m * m.sin() // sin(π − m) = sin m
        };
        // The other classes' cosines: the sample lies in the plane of axes 0 and 1.
        let others = [theta.sin(), 0.0];
        let z = [target * scale, others[0] * scale, others[1] * scale];
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        lse - z[0]
    }

    #[test]
    fn arcface_matches_the_paper_on_both_sides_of_theta_plus_m_equals_pi() {
        let m = 0.5;
        for easy_margin in [false, true] {
            let (varmap, loss) = build_f64(&arcface(m, easy_margin), 3, 3, &[]);
            axis_weights(&varmap);
            for theta in [0.3, 1.2, 2.0, PI - 0.7, PI - 0.3, PI - 0.1] {
                let e = embeddings(&[&[theta.cos(), theta.sin(), 0.0]]);
                let got = value(loss.as_ref(), &e, &labels(&[0]));
                let want = arcface_reference(theta, 10.0, m, easy_margin);
                assert!((got - want).abs() < 1e-5, "easy {easy_margin} θ {theta}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn easy_margin_matters_only_where_the_target_angle_is_obtuse() {
        let (hard_vars, hard) = build_f64(&arcface(0.5, false), 3, 3, &[]);
        let (easy_vars, easy) = build_f64(&arcface(0.5, true), 3, 3, &[]);
        axis_weights(&hard_vars);
        axis_weights(&easy_vars);
        let at = |theta: f64| {
            let e = embeddings(&[&[theta.cos(), theta.sin(), 0.0]]);
            (value(hard.as_ref(), &e, &labels(&[0])), value(easy.as_ref(), &e, &labels(&[0])))
        };
        let (h, e) = at(0.8);
        assert!((h - e).abs() < 1e-9, "acute θ: same loss, {h} vs {e}");
        // θ + m > π: the paper's fallback subtracts m·sin m, easy margin leaves cos θ alone.
        let (h, e) = at(PI - 0.2);
        assert!(h > e + 1.0, "θ + m > π: hard {h} should exceed easy {e}");
    }

    #[test]
    fn label_smoothing_raises_the_loss_of_a_confident_prediction() {
        let e = embeddings(&[&[1.0, 0.0, 0.0]]);
        let mut values = Vec::new();
        for label_smoothing in [0.0, 0.1] {
            let config = LossConfig::ArcFace(ArcFaceConfig { label_smoothing, ..Default::default() });
            let (varmap, loss) = build_f64(&config, 3, 3, &[]);
            axis_weights(&varmap);
            values.push(value(loss.as_ref(), &e, &labels(&[0])));
        }
        assert!(values[1] > values[0] + 0.5, "{values:?}");
    }

    #[test]
    fn subcenter_class_score_is_the_best_of_its_centres() {
        let config = SubCenterArcFaceConfig { sub_centres: 3, ..Default::default() };
        let (varmap, loss) = build_f64(&LossConfig::SubCenterArcFace(config), 2, 2, &[10, 10]);
        let deg = |a: f64| [a.to_radians().cos(), a.to_radians().sin()];
        // Class 0's centres at 90°, 10°, 200°; class 1's at 150°, 250°, 200°.
        let rows: Vec<[f64; 2]> = [90.0, 10.0, 200.0, 150.0, 250.0, 200.0].into_iter().map(deg).collect();
        set(&varmap, "weight", &rows.iter().map(|r| &r[..]).collect::<Vec<_>>());
        let logits = loss.logits(&embeddings(&[&[1.0, 0.0]])).unwrap().unwrap();
        let got: Vec<f64> = logits.flatten_all().unwrap().to_vec1().unwrap();
        let want = [10f64.to_radians().cos(), 250f64.to_radians().cos()];
        assert!((got[0] - want[0]).abs() < 1e-9 && (got[1] - want[1]).abs() < 1e-9, "{got:?} vs {want:?}");
    }

    #[test]
    fn subcenter_with_one_centre_and_equal_counts_is_arcface() {
        let (a_vars, arc) = build_f64(&arcface(0.3, false), DIM, C, &[]);
        let margin = DynamicMargin { a: 0.5, p: 0.5, b: 0.05 }; // 0.5 · 4^−0.5 + 0.05 = 0.3
        let config = SubCenterArcFaceConfig { scale: 10.0, sub_centres: 1, margin, ..Default::default() };
        let (s_vars, sub) = build_f64(&LossConfig::SubCenterArcFace(config), DIM, C, &[4, 4, 4]);
        fill_seeded(&a_vars, 3, 1.0);
        fill_seeded(&s_vars, 3, 1.0);
        let (_, _, emb) = tiny_case(&LossConfig::default(), 3);
        let y = labels(&LABELS);
        let (a, s) = (value(arc.as_ref(), emb.as_tensor(), &y), value(sub.as_ref(), emb.as_tensor(), &y));
        assert!((a - s).abs() < 1e-12, "{a} vs {s}");
    }

    #[test]
    fn dynamic_margins_are_larger_for_rare_classes() {
        let margins = DynamicMargin::default().margins(&[1, 2, 16, 10_000, 0]);
        assert!((margins[0] - 0.55).abs() < 1e-12, "singleton: a + b, got {}", margins[0]);
        assert!((margins[2] - 0.30).abs() < 1e-12, "16 images: 0.5/2 + 0.05, got {}", margins[2]);
        assert!(margins[0] > margins[1] && margins[1] > margins[2] && margins[2] > margins[3], "{margins:?}");
        assert_eq!(margins[4], margins[0], "an empty class counts as a singleton");

        // And in the loss: the same geometry costs more for the rare class.
        let config = LossConfig::SubCenterArcFace(SubCenterArcFaceConfig { sub_centres: 1, ..Default::default() });
        let (varmap, loss) = build_f64(&config, 2, 2, &[1, 1000]);
        set(&varmap, "weight", &[&[1.0, 0.0], &[0.0, 1.0]]);
        let rare = value(loss.as_ref(), &embeddings(&[&[1.0, 0.6]]), &labels(&[0]));
        let common = value(loss.as_ref(), &embeddings(&[&[0.6, 1.0]]), &labels(&[1]));
        assert!(rare > common, "rare {rare} common {common}");
    }

    /// ProxyAnchor written as loops over the paper's sums.
    fn proxy_anchor_reference(e: &[Vec<f64>], proxies: &[Vec<f64>], y: &[u32], alpha: f64, delta: f64) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let cos = |a: &Vec<f64>, b: &Vec<f64>| unit(a).iter().zip(unit(b)).map(|(x, y)| x * y).sum::<f64>();
        let (mut pos, mut neg, mut with_positives) = (0.0, 0.0, 0);
        for (c, p) in proxies.iter().enumerate() {
            let (mut sp, mut sn, mut any) = (0.0, 0.0, false);
            for (x, &label) in e.iter().zip(y) {
                if label as usize == c {
                    sp += (-alpha * (cos(x, p) - delta)).exp();
                    any = true;
                } else {
                    sn += (alpha * (cos(x, p) + delta)).exp();
                }
            }
            if any {
                pos += (1.0 + sp).ln();
                with_positives += 1;
            }
            neg += (1.0 + sn).ln();
        }
        pos / with_positives as f64 + neg / proxies.len() as f64
    }

    #[test]
    fn proxy_anchor_matches_the_paper_and_skips_absent_classes_in_the_positive_term() {
        let config = ProxyAnchorConfig { alpha: 8.0, delta: 0.1 };
        let (varmap, loss) = build_f64(&LossConfig::ProxyAnchor(config.clone()), 3, 4, &[]);
        fill_seeded(&varmap, 21, 1.0);
        let proxies: Vec<Vec<f64>> = varmap.data().lock().unwrap()["proxies"].to_vec2().unwrap();
        let e = vec![vec![0.3, -1.0, 0.2], vec![1.0, 0.5, 0.0], vec![-0.4, 0.1, 0.9], vec![0.2, 0.2, -0.8]];
        let y = [0u32, 2, 2, 1]; // class 3 has no positive in the batch
        let rows: Vec<&[f64]> = e.iter().map(Vec::as_slice).collect();
        let got = value(loss.as_ref(), &embeddings(&rows), &labels(&y));
        let want = proxy_anchor_reference(&e, &proxies, &y, config.alpha, config.delta);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn proxy_anchor_is_finite_when_similarities_are_extreme() {
        let config = ProxyAnchorConfig { alpha: 1000.0, delta: 0.1 };
        let (varmap, loss) = build_f64(&LossConfig::ProxyAnchor(config), 2, 2, &[]);
        set(&varmap, "proxies", &[&[1.0, 0.0], &[-1.0, 0.0]]);
        let l = loss.forward(&embeddings(&[&[-1.0, 0.0]]), &labels(&[0])).unwrap();
        let v = l.to_scalar::<f64>().unwrap();
        assert!(v.is_finite() && v > 1000.0, "e^1100 must not overflow: {v}");
    }

    fn triplet(margin: f64, distance: TripletDistance) -> Box<dyn MetricLoss> {
        let config = LossConfig::Triplet(TripletConfig { margin, soft_margin: false, distance });
        build_f64(&config, 2, 0, &[]).1
    }

    #[test]
    fn triplet_is_zero_when_classes_are_separated_by_more_than_the_margin() {
        // Two tight clusters at right angles: d_ap ≈ 0.02, d_an ≈ 1 (cosine) or 1.41 (Euclidean).
        let e = embeddings(&[&[1.0, 0.01], &[1.0, -0.01], &[0.01, 1.0], &[-0.01, 1.0]]);
        let y = labels(&[0, 0, 1, 1]);
        for distance in [TripletDistance::Cosine, TripletDistance::Euclidean] {
            assert_eq!(value(triplet(0.3, distance).as_ref(), &e, &y), 0.0, "{distance:?}");
            assert!(value(triplet(1.5, distance).as_ref(), &e, &y) > 0.0, "{distance:?}: margin beyond the gap");
        }
    }

    #[test]
    fn triplet_uses_the_hardest_pairs_and_leaves_out_anchors_without_positive() {
        // Anchors 0 and 1 (class 0) have a positive; 2 and 3 are singletons (left out as anchors,
        // still negatives). Cosine distances are read off the angles.
        let deg = |a: f64| [a.to_radians().cos(), a.to_radians().sin()];
        let angles = [0.0, 60.0, 100.0, 170.0];
        let rows: Vec<[f64; 2]> = angles.into_iter().map(deg).collect();
        let e = embeddings(&rows.iter().map(|r| &r[..]).collect::<Vec<_>>());
        let d = |a: f64, b: f64| 1.0 - (a - b).to_radians().cos();
        let margin = 0.3;
        // Anchor 0: positive at 60°, hardest negative at 100°; anchor 1: positive at 0°, negative at 100°.
        let want = ((d(0.0, 60.0) - d(0.0, 100.0) + margin).max(0.0)
            + (d(60.0, 0.0) - d(60.0, 100.0) + margin).max(0.0))
            / 2.0;
        let got = value(triplet(margin, TripletDistance::Cosine).as_ref(), &e, &labels(&[0, 0, 1, 2]));
        assert!(want > 0.0 && (got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn triplet_without_valid_anchors_is_zero_not_nan() {
        let e = embeddings(&[&[1.0, 0.0], &[0.0, 1.0], &[1.0, 1.0]]);
        let loss = triplet(0.3, TripletDistance::Euclidean);
        for y in [[0u32, 1, 2], [4, 4, 4]] {
            let l = loss.forward(&e, &labels(&y)).unwrap();
            assert_eq!(l.to_scalar::<f64>().unwrap(), 0.0, "labels {y:?}");
            assert!(l.backward().is_ok());
        }
    }

    #[test]
    fn bad_labels_and_shapes_are_errors_not_panics() {
        for (name, config) in all_configs() {
            let (_, loss) = build_f64(&config, 3, 3, &[1, 2, 3]);
            let e = embeddings(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]);
            let class_weighted = !matches!(config, LossConfig::Triplet(_));
            let out_of_range = loss.forward(&e, &labels(&[0, 3]));
            assert_eq!(class_weighted, matches!(out_of_range, Err(LossError::LabelOutOfRange { position: 1, .. })));
            let negative = Tensor::new(&[0i64, -1], &CPU).unwrap();
            assert!(matches!(loss.forward(&e, &negative), Err(LossError::LabelOutOfRange { label: -1, .. })), "{name}");
            let float = Tensor::new(&[0f32, 1.0], &CPU).unwrap();
            assert!(matches!(loss.forward(&e, &float), Err(LossError::Labels { .. })), "{name}");
            assert!(matches!(loss.forward(&e, &labels(&[0])), Err(LossError::BatchMismatch { .. })), "{name}");
            let wide = embeddings(&[&[1.0, 0.0, 0.0, 0.0]]);
            assert!(matches!(loss.forward(&wide, &labels(&[0])), Err(LossError::EmbeddingShape { .. })), "{name}");
            assert!(class_weighted == loss.logits(&wide).is_err(), "{name}: logits of the wrong width");
        }
        let sub = LossConfig::SubCenterArcFace(SubCenterArcFaceConfig::default());
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &CPU);
        assert!(matches!(build(&sub, vb, 3, 3, &[1, 2]), Err(LossError::ClassCounts { got: 2, classes: 3 })));
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &CPU);
        assert!(matches!(build(&arcface(4.0, false), vb, 3, 3, &[]), Err(LossError::Config(_))));
    }

    #[test]
    fn config_round_trips_through_json_and_missing_fields_take_the_defaults() {
        for (_, config) in all_configs() {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), config, "{json}");
        }
        let sub: LossConfig = serde_json::from_str(r#"{"kind": "sub_center_arc_face", "sub_centres": 2}"#).unwrap();
        assert_eq!(sub, LossConfig::SubCenterArcFace(SubCenterArcFaceConfig { sub_centres: 2, ..Default::default() }));
        let arc: LossConfig = serde_json::from_str(r#"{"kind": "arc_face"}"#).unwrap();
        assert_eq!(arc, LossConfig::default());
    }

    /// 3 Gaussian clusters in d = 8, 20 points each, sharing a large common offset so that a random
    /// head first maps them to similar directions (nothing is solved before training).
    fn three_clusters() -> (Tensor, Tensor, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for class in 0..3u32 {
            for _ in 0..20 {
                for j in 0..8 {
                    let mean = 3.0 + if j == class as usize { 2.5 } else { 0.0 };
                    x.push((mean + 0.3 * normal(&mut rng)) as f32);
                }
                y.push(class);
            }
        }
        let n = y.len();
        (Tensor::from_vec(x, (n, 8), &CPU).unwrap(), labels(&y), y)
    }

    /// Leave-one-out 1-nearest-neighbour accuracy by cosine.
    fn nearest_neighbour_accuracy(emb: &Tensor, y: &[u32]) -> f64 {
        let e = l2_normalize(emb).unwrap();
        let sim: Vec<Vec<f32>> = e.matmul(&e.t().unwrap()).unwrap().to_vec2().unwrap();
        let hits = (0..y.len())
            .filter(|&i| {
                let best = (0..y.len()).filter(|&j| j != i).max_by(|&a, &b| sim[i][a].total_cmp(&sim[i][b])).unwrap();
                y[best] == y[i]
            })
            .count();
        hits as f64 / y.len() as f64
    }

    #[test]
    fn a_linear_head_trained_under_each_loss_separates_three_clusters() {
        let (x, y_tensor, y) = three_clusters();
        for (name, config) in all_configs() {
            let model_vars = VarMap::new();
            let head = candle_nn::linear(8, 8, VarBuilder::from_varmap(&model_vars, DType::F32, &CPU)).unwrap();
            fill_seeded(&model_vars, 1, 0.35);
            let loss_vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&loss_vars, DType::F32, &CPU);
            let loss = build(&config, vb, 8, 3, &[20, 20, 20]).unwrap();
            fill_seeded(&loss_vars, 2, 0.35);
            // Separate optimisers: the loss's tensors get their own learning rate.
            let mut model_opt = candle_nn::AdamW::new_lr(model_vars.all_vars(), 1e-2).unwrap();
            let mut loss_opt = candle_nn::AdamW::new_lr(loss_vars.all_vars(), 3e-2).unwrap();
            let current = || loss.forward(&head.forward(&x).unwrap(), &y_tensor).unwrap().to_scalar::<f32>().unwrap();
            let first = current();
            for _ in 0..300 {
                let grads = loss.forward(&head.forward(&x).unwrap(), &y_tensor).unwrap().backward().unwrap();
                model_opt.step(&grads).unwrap();
                loss_opt.step(&grads).unwrap();
            }
            let last = current();
            assert!(first > 0.0 && last < 0.5 * first, "{name}: loss {first} -> {last}");
            let emb = head.forward(&x).unwrap();
            assert_eq!(nearest_neighbour_accuracy(&emb, &y), 1.0, "{name}: 1-NN accuracy");
            if let Some(logits) = loss.logits(&emb).unwrap() {
                let predicted: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
                assert_eq!(predicted, y, "{name}: nearest-proxy predictions");
            }
        }
    }
}
