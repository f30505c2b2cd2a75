//! Backbone outputs cached once for training the head on a CPU.
//!
//! What is cached for the head: the CLS token and the patch tokens after `blocks` blocks and
//! the final LayerNorm (see `TrainConfig::blocks` for which depth and why), the patch
//! grid average-pooled to `grid` x `grid` (16 x 16 -> 8 x 8 at 224 px), in f16. For
//! `last-blocks` training, also the whole token sequence entering the first tuned block. That keeps
//! what a trainable GeM needs (per-position activations) at a quarter of the tokens and half
//! the bytes: 10,000 crops take 0.5 GB instead of 4 GB, and an epoch over them is dominated
//! by the head, not by memory traffic. The cache is written to the data folder, keyed by the
//! model and the exact crops, so a second run starts training at once.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use crate::catalogue::Catalogue;
use crate::embed::{Crop, Embedder, Tap, pool_tokens, prepare_batch};
use crate::progress::Progress;

/// Default side of the pooled patch grid.
pub const DEFAULT_GRID: usize = 8;
const BATCH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    #[error("backbone failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cancelled")]
    Cancelled,
}

/// Tokens of the crops the cache could read, in `annotations` order.
pub struct TokenCache {
    pub annotations: Vec<i64>,
    /// `[N, 1 + grid², D]`, f16, on the CPU.
    pub tokens: Tensor,
    /// Crops that could not be read, naming their photo.
    pub problems: Vec<String>,
}

impl TokenCache {
    /// Rows `rows` as f32 on `device`.
    pub fn batch(&self, rows: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let index = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &Device::Cpu)?;
        self.tokens.index_select(&index, 0)?.to_dtype(DType::F32)?.to_device(device)
    }
}

/// The crops of `annotations` that `key`'s embeddings cover (not rejected, still there), in
/// order, and a problem for each one left out.
pub fn crops_of(cat: &Catalogue, key: &str, annotations: &[i64]) -> Result<(Vec<Crop>, Vec<String>), CacheError> {
    let states = cat.embedding_states(key)?;
    let by_id: std::collections::HashMap<i64, &crate::catalogue::EmbeddingState> =
        states.iter().map(|s| (s.annotation.id, s)).collect();
    let mut crops = Vec::new();
    let mut problems = Vec::new();
    for id in annotations {
        match by_id.get(id) {
            Some(s) => crops.push(Crop {
                annotation: *id,
                box_key: s.annotation.box_key(),
                bbox: s.annotation.bbox,
                photo: cat.photo_file(&s.photo_path),
            }),
            None => problems.push(format!("annotation {id}: rejected or gone; left out")),
        }
    }
    Ok((crops, problems))
}

/// The backbone's tokens for `annotations` at each of `taps` (ascending by depth; one
/// backbone pass gives them all), in `taps` order; computed with `embedder` where not on disk
/// yet. [`Tap::Output`] tokens are pooled to `grid` (what a head reads); [`Tap::Input`]
/// tokens are kept whole (what fine-tuned blocks read).
pub fn token_caches(
    cat: &Catalogue,
    embedder: &Embedder,
    annotations: &[i64],
    grid: usize,
    taps: &[Tap],
    progress: &dyn Progress,
) -> Result<Vec<TokenCache>, CacheError> {
    let (crops, mut problems) = crops_of(cat, embedder.key(), annotations)?;
    let mut fingerprint = blake3::Hasher::new();
    fingerprint.update(format!("{}|{grid}|{taps:?}|", embedder.key()).as_bytes());
    for c in &crops {
        fingerprint.update(format!("{}|{}|{}\n", c.annotation, c.box_key, c.photo.display()).as_bytes());
    }
    let path = crate::app::data_dir()
        .join("cache")
        .join(format!("tokens-{}.safetensors", &fingerprint.finalize().to_hex()[..24]));
    let name = |tap: &Tap| match tap {
        Tap::Output(d) => format!("tokens.{d}"),
        Tap::Input(d) => format!("inputs.{d}"),
    };
    if let Ok(tensors) = candle_core::safetensors::load(&path, &Device::Cpu)
        && let Some(ids) = tensors.get("annotations")
        && let Ok(ids) = ids.to_vec1::<i64>()
        && let Some(all) = taps.iter().map(|t| tensors.get(&name(t)).cloned()).collect::<Option<Vec<_>>>()
    {
        let caches = all
            .into_iter()
            .map(|tokens| TokenCache { annotations: ids.clone(), tokens, problems: problems.clone() })
            .collect();
        return Ok(caches);
    }

    progress.stage("caching backbone tokens", crops.len() as u64);
    let side = embedder.size() as usize / 14;
    let mut kept = Vec::new();
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
    for chunk in crops.chunks(BATCH) {
        if progress.cancelled() {
            return Err(CacheError::Cancelled);
        }
        let prepared = prepare_batch(chunk, embedder.size());
        problems.extend(prepared.problems);
        if !prepared.inputs.is_empty() {
            let inputs: Vec<Vec<f32>> = prepared.inputs.iter().map(|(_, _, i)| i.clone()).collect();
            for ((part, tokens), tap) in parts.iter_mut().zip(embedder.tokens_at(&inputs, taps)?).zip(taps) {
                let tokens = match tap {
                    Tap::Output(_) => pool_tokens(&tokens, side, side, grid)?,
                    Tap::Input(_) => tokens,
                };
                part.push(tokens.to_device(&Device::Cpu)?.to_dtype(DType::F16)?);
            }
            kept.extend(prepared.inputs.iter().map(|(a, _, _)| *a));
        }
        progress.advance(chunk.len() as u64);
    }
    let mut all = Vec::new();
    for part in &parts {
        all.push(match part.is_empty() {
            true => Tensor::zeros((0, 1 + grid * grid, 1), DType::F16, &Device::Cpu)?,
            false => Tensor::cat(part, 0)?,
        });
    }
    let ids = Tensor::new(kept.as_slice(), &Device::Cpu)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Io { path: dir.to_path_buf(), source })?;
    }
    // Written beside and renamed: a crash never leaves a truncated cache that would be trusted.
    let partial = path.with_extension("partial");
    let mut tensors: std::collections::HashMap<String, Tensor> =
        taps.iter().zip(&all).map(|(t, tokens)| (name(t), tokens.clone())).collect();
    tensors.insert("annotations".into(), ids);
    candle_core::safetensors::save(&tensors, &partial)?;
    std::fs::rename(&partial, &path).map_err(|source| CacheError::Io { path: path.clone(), source })?;
    Ok(all
        .into_iter()
        .map(|tokens| TokenCache { annotations: kept.clone(), tokens, problems: problems.clone() })
        .collect())
}
