//! What training is measured against, on the same split: the frozen backbone's CLS token,
//! and a linear projection (LDA) of it fitted on the training individuals. A trained head
//! that does not beat the LDA line is not worth its training time; a biologist sees both
//! beside the trained figures in the report and the model card.

use serde::Serialize;

use super::cache::TokenCache;
use super::config::TrainConfig;
use super::data::Split;
use super::error::TrainError;
use super::lda::Lda;
use super::validation::{SplitRows, TrainingRow, Validation, ValidationRow, cache_rows, validation_of};

#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Cosine on the frozen backbone's CLS token.
    pub frozen_cls: Validation,
    /// The same tokens projected by LDA fitted on the training crops (absent when fewer
    /// than two training individuals have two crops).
    pub lda: Option<Validation>,
    /// Dimensions the LDA projection keeps.
    pub lda_dim: usize,
}

/// Fits and scores both baselines: fitted on the `train` rows, scored on the `validation`
/// rows (individuals never trained on).
pub fn baselines(
    cache: &TokenCache,
    train: &[TrainingRow],
    validation: &[ValidationRow],
    config: &TrainConfig,
) -> Result<Baselines, TrainError> {
    let cls = |rows: &[usize]| -> Result<Vec<Vec<f32>>, TrainError> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(512) {
            let batch = cache.batch(chunk, &candle_core::Device::Cpu)?;
            out.extend(batch.narrow(1, 0, 1)?.squeeze(1)?.to_vec2::<f32>()?);
        }
        Ok(out)
    };
    let val_rows: Vec<usize> = validation.iter().map(|v| v.row).collect();
    let val_cls = cls(&val_rows)?;
    let frozen_cls = validation_of(&val_cls, validation, config)?;
    let train_rows: Vec<usize> = train.iter().map(|t| t.row).collect();
    let labels: Vec<u32> = train.iter().map(|t| t.class).collect();
    let (lda, lda_dim) = match Lda::fit(&cls(&train_rows)?, &labels, config.lda_ridge) {
        Some(lda) => {
            let projected: Vec<Vec<f32>> = val_cls.iter().map(|v| lda.project(v)).collect();
            (Some(validation_of(&projected, validation, config)?), lda.dim())
        }
        None => (None, 0),
    };
    Ok(Baselines { frozen_cls, lda, lda_dim })
}

/// The LDA baseline's validation MAP@5 on `cache` (how well this depth's tokens separate
/// individuals never trained on); 0 without validation individuals.
pub fn lda_score(cache: &TokenCache, split: &Split, config: &TrainConfig) -> Result<f64, TrainError> {
    let SplitRows { train, validation } = cache_rows(cache, split);
    if validation.is_empty() {
        return Ok(0.0);
    }
    let b = baselines(cache, &train, &validation, config)?;
    Ok(b.lda.map_or(b.frozen_cls.closed_set.map5, |l| l.closed_set.map5))
}
