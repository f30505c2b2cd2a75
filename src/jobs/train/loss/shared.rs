//! Pieces every loss shares: checks of a batch, cosine to class weights, masks.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{LossError, Result};
use crate::models::l2_normalise;

/// Cosine similarity `[B, C]` of embeddings `[B, d]` to class weights `[C, d]`.
pub(super) fn cosine(embeddings: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    l2_normalise(embeddings)?.matmul(&l2_normalise(weight)?.t()?)
}

/// True for a finite x > 0 (false for NaN).
pub(super) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// The batch size of float embeddings `[B, dim]`.
pub(super) fn check_embeddings(embeddings: &Tensor, dim: usize) -> Result<usize> {
    match embeddings.dims() {
        &[b, d] if d == dim && embeddings.dtype().is_float() => Ok(b),
        shape => Err(LossError::EmbeddingShape { dim, shape: shape.to_vec() }),
    }
}

/// Validates a batch and returns its labels on the host (needed for masks and margins).
/// `classes: None` accepts any label in 0..2³² (triplet compares labels only).
pub(super) fn check_batch(
    embeddings: &Tensor,
    labels: &Tensor,
    dim: usize,
    classes: Option<usize>,
) -> Result<Vec<u32>> {
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
pub(super) fn one_hot_mask(labels: &[u32], classes: usize, device: &Device) -> candle_core::Result<Tensor> {
    let labels = Tensor::from_slice(labels, labels.len(), device)?;
    labels.unsqueeze(1)?.broadcast_eq(&Tensor::arange(0u32, classes as u32, device)?.unsqueeze(0)?)
}

/// One `[B, 1]` column from a per-sample value, in `dtype`.
pub(super) fn column(values: impl Iterator<Item = f64>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f64> = values.collect();
    let rows = values.len();
    Tensor::from_vec(values, (rows, 1), device)?.to_dtype(dtype)
}

/// Initial class weights: rows of norm ≈ 1, so AdamW's steps (≈ lr in absolute units) move
/// them by the same angle whatever d is. Their scale does not enter the loss (normalised).
pub(super) fn class_weight(vb: &VarBuilder, rows: usize, dim: usize, name: &str) -> candle_core::Result<Tensor> {
    vb.get_with_hints((rows, dim), name, Init::Randn { mean: 0.0, stdev: 1.0 / (dim as f64).sqrt() })
}
