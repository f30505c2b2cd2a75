//! Validation on individuals never trained on.

use std::collections::{HashMap, HashSet};

use candle_core::Device;
use serde::Serialize;

use super::cache::TokenCache;
use super::config::TrainConfig;
use super::data::Split;
use super::error::TrainError;
use super::feeder::Feeder;
use crate::base::ids::AnnotationId;
use crate::base::vocabulary::{Part, Side};
use crate::jobs::eval::metrics::{ClosedSet, OpenSet};
use crate::jobs::search::Gallery;
use crate::models::Head;

/// Validation on held-out individuals: leave-one-out among their crops.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub closed_set: ClosedSet,
    pub open_set: Option<OpenSet>,
}

/// A training row of the token cache (one view of a crop) and its individual's class.
#[derive(Debug, Clone, Copy)]
pub struct TrainingRow {
    pub row: usize,
    pub class: u32,
}

/// A validation row of the token cache (the plain view: what the embedder will see).
#[derive(Debug, Clone, Copy)]
pub struct ValidationRow<'a> {
    pub row: usize,
    pub annotation: AnnotationId,
    pub individual: &'a str,
}

/// A split's crops as rows of a token cache.
pub struct SplitRows<'a> {
    /// Every view of every training crop.
    pub train: Vec<TrainingRow>,
    pub validation: Vec<ValidationRow<'a>>,
}

/// The rows of `cache` that hold `split`'s crops.
pub fn cache_rows<'a>(cache: &TokenCache, split: &'a Split) -> SplitRows<'a> {
    let mut rows_of: HashMap<AnnotationId, Vec<usize>> = HashMap::new();
    for (r, &a) in cache.annotations.iter().enumerate() {
        rows_of.entry(a).or_default().push(r);
    }
    let rows = |a: &AnnotationId| rows_of.get(a).map_or(&[][..], Vec::as_slice);
    let train =
        split.train.iter().flat_map(|(a, c)| rows(a).iter().map(|&row| TrainingRow { row, class: *c })).collect();
    let validation = split
        .validation
        .iter()
        .flat_map(|l| {
            rows(&l.annotation).iter().filter(|&&r| cache.is_plain(r)).map(|&row| ValidationRow {
                row,
                annotation: l.annotation,
                individual: l.individual.as_str(),
            })
        })
        .collect();
    SplitRows { train, validation }
}

/// Embeds the `validation` rows through `head` as training feeds it (without augmentation)
/// and scores them; a photo that can no longer be read is left out.
pub(super) fn validate_head(
    head: &Head,
    feeder: &Feeder,
    validation: &[ValidationRow],
    config: &TrainConfig,
) -> Result<Validation, TrainError> {
    let (_, tokens_per_crop, _) = feeder.cache.tokens.dims3()?;
    let mut embeddings = Vec::with_capacity(validation.len());
    let mut seen = Vec::with_capacity(validation.len());
    for chunk in validation.chunks(64) {
        let rows: Vec<usize> = chunk.iter().map(|v| v.row).collect();
        let (tokens, kept) = feeder.tokens(&rows, config, tokens_per_crop, None)?;
        if kept.is_empty() {
            continue;
        }
        embeddings.extend(head.forward(&tokens)?.detach().to_device(&Device::Cpu)?.to_vec2::<f32>()?);
        seen.extend(kept.iter().map(|&k| chunk[k]));
    }
    validation_of(&embeddings, &seen, config)
}

/// Leave-one-out among the validation crops (never trained on), and the open-set figure
/// with part of their individuals left out of the gallery; `embeddings` in `validation` order.
pub fn validation_of(
    embeddings: &[Vec<f32>],
    validation: &[ValidationRow],
    config: &TrainConfig,
) -> Result<Validation, TrainError> {
    let mut gallery = Gallery::new(embeddings.first().map_or(1, Vec::len));
    for (v, e) in validation.iter().zip(embeddings) {
        gallery.push(e, v.annotation, Some(v.individual), Part::Body, Side::Unknown, None).map_err(TrainError::Data)?;
    }
    let (closed_set, open) =
        crate::jobs::eval::gallery_metrics(&gallery, &HashSet::new(), config.validation_fraction.min(0.5), config.seed);
    Ok(Validation { closed_set, open_set: open.map(|o| o.tuned) })
}
