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

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::catalogue::Catalogue;
use rand::SeedableRng;

use super::augment::ImageAugmentation;
use crate::base::ids::AnnotationId;
use crate::base::progress::Progress;
use crate::jobs::embed::Crop;
use crate::models::{Embedder, Tap, pool_tokens};

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

/// Tokens of the crops the cache could read, one row per crop and view, in `annotations`
/// order with a crop's views together.
pub struct TokenCache {
    /// The crop of each row.
    pub annotations: Vec<AnnotationId>,
    /// The view of each row: 0 is the crop as the embedder sees it, 1.. augmented copies
    /// (see [`Views`]), which only training reads.
    pub views: Vec<u8>,
    /// `[rows, 1 + grid², D]`, f16, on the CPU.
    pub tokens: Tensor,
    /// Crops that could not be read, naming their photo.
    pub problems: Vec<String>,
}

impl TokenCache {
    /// One row per crop, each as the embedder sees it.
    pub fn plain(annotations: Vec<AnnotationId>, tokens: Tensor) -> Self {
        Self { views: vec![0; annotations.len()], annotations, tokens, problems: Vec::new() }
    }

    /// Caches of the same rows side by side, feature by feature (several depths read as one).
    pub fn concatenated(parts: &[&TokenCache]) -> candle_core::Result<TokenCache> {
        let Some(first) = parts.first() else { candle_core::bail!("no token cache to concatenate") };
        if parts.iter().any(|p| p.annotations != first.annotations || p.views != first.views) {
            candle_core::bail!("token caches of different crops cannot be concatenated");
        }
        let tokens = match parts {
            [one] => one.tokens.clone(),
            many => Tensor::cat(&many.iter().map(|p| &p.tokens).collect::<Vec<_>>(), 2)?,
        };
        Ok(TokenCache {
            annotations: first.annotations.clone(),
            views: first.views.clone(),
            tokens,
            problems: first.problems.clone(),
        })
    }

    /// Whether `row` is a crop as the embedder sees it (not an augmented copy).
    pub fn is_plain(&self, row: usize) -> bool {
        self.views.get(row).is_none_or(|&v| v == 0)
    }

    /// Rows `rows` as f32 on `device`.
    pub fn batch(&self, rows: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let index = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &Device::Cpu)?;
        self.tokens.index_select(&index, 0)?.to_dtype(DType::F32)?.to_device(device)
    }
}

/// Augmented copies of each crop cached beside it (image augmentation at the cost of one
/// backbone pass per copy, once, instead of one per step): head training then learns what a
/// crop's individual keeps under another framing, rotation and light.
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    /// Views per crop, the plain one included (1 = no copies).
    pub count: usize,
    pub augmentation: &'a ImageAugmentation,
    /// Copy `v` of a crop is drawn from this seed, its annotation and `v`: the same run caches
    /// the same copies at every depth.
    pub seed: u64,
}

impl Views<'_> {
    /// The crop's inputs at `size`: plain, then the augmented copies.
    fn inputs(&self, img: &image::DynamicImage, crop: &Crop, size: u32) -> Vec<Vec<f32>> {
        let mut out = vec![crate::models::prepare(img, crop.bbox, size)];
        for v in 1..self.count.max(1) {
            let seed = self.seed ^ (crop.annotation.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((v as u64) << 48);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            out.push(self.augmentation.prepare(img, crop.bbox, size, &mut rng));
        }
        out
    }
}

/// The crops of `annotations` that `key`'s embeddings cover (not rejected, still there), in
/// order, and a problem for each one left out.
pub fn crops_of(
    cat: &Catalogue,
    key: &str,
    annotations: &[AnnotationId],
) -> Result<(Vec<Crop>, Vec<String>), CacheError> {
    let states = cat.embedding_states(key)?;
    let by_id: std::collections::HashMap<AnnotationId, &crate::catalogue::EmbeddingState> =
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

/// The crops' annotation ids as the cache file stores them: an i64 tensor.
fn annotations_tensor(annotations: &[AnnotationId]) -> candle_core::Result<Tensor> {
    let ids: Vec<i64> = annotations.iter().map(|a| a.0).collect();
    Tensor::new(ids.as_slice(), &Device::Cpu)
}

/// The crops' annotation ids read back from a cache file.
fn annotations_of_tensor(ids: &Tensor) -> candle_core::Result<Vec<AnnotationId>> {
    Ok(ids.to_vec1::<i64>()?.into_iter().map(AnnotationId).collect())
}

/// What to cache, and where.
#[derive(Debug, Clone, Copy)]
pub struct CacheSpec<'a> {
    /// The depths, ascending (one backbone pass gives them all). [`Tap::Output`] tokens are
    /// pooled to `grid` (what a head reads); [`Tap::Input`] tokens are kept whole (what
    /// fine-tuned blocks read).
    pub taps: &'a [Tap],
    /// Side of the pooled patch grid.
    pub grid: usize,
    pub views: Views<'a>,
    /// The folder of cache files.
    pub dir: &'a Path,
}

/// Whether a cache's rows hold every crop (an older cache could have been written without
/// the crops it could not read then).
fn every_crop_in(rows: &[AnnotationId], crops: &[Crop]) -> bool {
    let held: std::collections::HashSet<&AnnotationId> = rows.iter().collect();
    crops.iter().all(|c| held.contains(&c.annotation))
}

/// The backbone's tokens for `annotations` (each with its views) at each of `spec.taps`, in
/// that order; computed with `embedder` where not on disk yet.
pub fn token_caches(
    cat: &Catalogue,
    embedder: &Embedder,
    annotations: &[AnnotationId],
    spec: &CacheSpec,
    progress: &dyn Progress,
) -> Result<Vec<TokenCache>, CacheError> {
    let CacheSpec { taps, grid, views, dir } = *spec;
    let (crops, mut problems) = crops_of(cat, embedder.key(), annotations)?;
    // Views are numbered in a byte.
    let count = views.count.clamp(1, u8::MAX as usize);
    let views = Views { count, ..views };
    let mut fingerprint = blake3::Hasher::new();
    fingerprint.update(format!("{}|{grid}|{taps:?}|", embedder.key()).as_bytes());
    if count > 1 {
        fingerprint.update(format!("{count}|{:?}|{}|", views.augmentation, views.seed).as_bytes());
    }
    for c in &crops {
        fingerprint.update(format!("{}|{}|{}\n", c.annotation, c.box_key, c.photo.display()).as_bytes());
    }
    let path = dir.join(format!("tokens-{}.safetensors", &fingerprint.finalize().to_hex()[..24]));
    let name = |tap: &Tap| match tap {
        Tap::Output(d) => format!("tokens.{d}"),
        Tap::Input(d) => format!("inputs.{d}"),
    };
    if let Ok(tensors) = candle_core::safetensors::load(&path, &Device::Cpu)
        && let Some(ids) = tensors.get("annotations")
        && let Ok(ids) = annotations_of_tensor(ids)
        && every_crop_in(&ids, &crops)
        && let Some(all) = taps.iter().map(|t| tensors.get(&name(t)).cloned()).collect::<Option<Vec<_>>>()
    {
        let row_views = match tensors.get("views").map(|v| v.to_vec1::<u8>()) {
            Some(Ok(v)) if v.len() == ids.len() => v,
            _ => vec![0; ids.len()],
        };
        let caches = all
            .into_iter()
            .map(|tokens| TokenCache {
                annotations: ids.clone(),
                views: row_views.clone(),
                tokens,
                problems: problems.clone(),
            })
            .collect();
        return Ok(caches);
    }

    progress.stage("caching backbone tokens", crops.len() as u64);
    let size = embedder.size();
    let unread_before = problems.len();
    let mut kept = Vec::new();
    let mut row_views = Vec::new();
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
    for chunk in crops.chunks(BATCH.div_ceil(count)) {
        if progress.cancelled() {
            return Err(CacheError::Cancelled);
        }
        let prepared = crate::jobs::embed::prepare_each(chunk, |img, crop| views.inputs(img, crop, size));
        problems.extend(prepared.problems);
        if !prepared.inputs.is_empty() {
            let inputs: Vec<Vec<f32>> = prepared.inputs.iter().flat_map(|(_, _, v)| v.iter().cloned()).collect();
            for ((part, features), tap) in parts.iter_mut().zip(embedder.features_at(&inputs, taps)?).zip(taps) {
                let tokens = match tap {
                    Tap::Output(_) => pool_tokens(features.tokens(), features.rows(), features.cols(), grid)?,
                    Tap::Input(_) => features.into_tokens(),
                };
                part.push(tokens.to_device(&Device::Cpu)?.to_dtype(DType::F16)?);
            }
            for (a, _, v) in &prepared.inputs {
                kept.extend(std::iter::repeat_n(*a, v.len()));
                row_views.extend(0..v.len() as u8);
            }
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
    let caches = |all: Vec<Tensor>| {
        all.into_iter()
            .map(|tokens| TokenCache {
                annotations: kept.clone(),
                views: row_views.clone(),
                tokens,
                problems: problems.clone(),
            })
            .collect()
    };
    if problems.len() > unread_before {
        // Not kept: crops that could not be read now (a drive unplugged, a photo being
        // replaced) would otherwise be left out of every later run on the same crops.
        return Ok(caches(all));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Io { path: dir.to_path_buf(), source })?;
    }
    // Written beside and renamed: a crash never leaves a truncated cache that would be trusted.
    let partial = path.with_extension("partial");
    let mut tensors: std::collections::HashMap<String, Tensor> =
        taps.iter().zip(&all).map(|(t, tokens)| (name(t), tokens.clone())).collect();
    tensors.insert("annotations".into(), annotations_tensor(&kept)?);
    tensors.insert("views".into(), Tensor::new(row_views.as_slice(), &Device::Cpu)?);
    candle_core::safetensors::save(&tensors, &partial)?;
    std::fs::rename(&partial, &path).map_err(|source| CacheError::Io { path: path.clone(), source })?;
    Ok(caches(all))
}
