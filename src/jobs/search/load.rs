//! Reading a search gallery from a catalogue: one scan of the stored embeddings, with what was
//! left out (stale, missing, of another dimension, corrupt, rejected) counted, never hidden.

use std::collections::HashMap;

use rayon::prelude::*;

use super::kernels::{normalise, quantise};
use super::{Entry, Gallery};
use crate::base::ids::IndividualId;
use crate::base::progress::Progress;
use crate::catalogue::{self, Catalogue};
use crate::jobs::embed::{EmbedOptions, EmbedReport, RefreshError, embed_catalogue};
use crate::models::Embedder;

/// A gallery read from a catalogue, with what was left out and why, so the caller can say
/// "12 embeddings are stale" instead of silently searching fewer images.
#[derive(Debug, Clone, Default)]
pub struct GalleryLoad {
    pub gallery: Gallery,
    /// Annotations whose embedding was computed from another box (moved since): re-embed them.
    pub stale: usize,
    /// Annotations with no embedding from this model yet.
    pub missing: usize,
    /// Embeddings of another length than the gallery's (another model's size).
    pub wrong_dim: usize,
    /// Embeddings whose blob contradicts its stored dimension or holds NaN or infinity.
    pub corrupt: usize,
    /// Rejected annotations: never searched, whatever their embedding.
    pub rejected: usize,
}

impl GalleryLoad {
    /// Plain words for what was left out; empty when nothing was.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        if self.stale > 0 {
            parts.push(format!("{} stale (box moved since)", plural(self.stale, "embedding is", "embeddings are")));
        }
        if self.missing > 0 {
            parts.push(format!("{} no embedding yet", plural(self.missing, "annotation has", "annotations have")));
        }
        if self.wrong_dim > 0 {
            parts.push(format!(
                "{} of another dimension than {} (skipped)",
                plural(self.wrong_dim, "embedding is", "embeddings are"),
                self.gallery.dim
            ));
        }
        if self.corrupt > 0 {
            parts.push(format!("{} corrupt (skipped)", plural(self.corrupt, "embedding is", "embeddings are")));
        }
        parts.join("; ")
    }
}

/// Rows of one vector length met while loading; the most common length becomes the gallery.
#[derive(Default)]
struct Bucket {
    matrix: Vec<f32>,
    entries: Vec<Entry>,
}

impl Gallery {
    /// Computes `cat`'s missing or stale embeddings under `embedder` (progress on `progress`),
    /// then reads the gallery: what `search`, `submit` and `eval` search, never fewer crops
    /// than the catalogue holds because nobody ran `embed` first.
    pub fn embedded(
        cat: &mut Catalogue,
        embedder: &Embedder,
        options: &EmbedOptions,
        progress: &dyn Progress,
    ) -> Result<(GalleryLoad, EmbedReport), RefreshError> {
        let embedded = embed_catalogue(cat, embedder, options, progress)?;
        Ok((Self::from_catalogue(cat, embedder.key())?, embedded))
    }

    /// Every non-rejected annotation with a fresh embedding from `model`, with its individual's
    /// code (unidentified crops are kept: they can be found, never proposed), part, side and
    /// species, in one scan of the catalogue's embeddings; the blob bytes go straight into
    /// the matrix.
    pub fn from_catalogue(cat: &Catalogue, model: &str) -> catalogue::Result<GalleryLoad> {
        let mut load = GalleryLoad::default();
        // Usually exactly one bucket; a second only appears when a stored vector is corrupt.
        let mut buckets: HashMap<usize, Bucket> = HashMap::new();
        let mut individuals: Vec<String> = Vec::new();
        let mut index_of_id: HashMap<IndividualId, u32> = HashMap::new();
        let mut embedded = 0;
        let counts = cat.scan_embeddings(model, |row| {
            embedded += 1;
            if !row.is_fresh() {
                load.stale += 1;
                return Ok(());
            }
            let bytes = row.bytes;
            if bytes.len() % 4 != 0 || usize::try_from(row.dim).ok() != Some(bytes.len() / 4) {
                // The row contradicts itself: a truncated or foreign blob.
                load.corrupt += 1;
                return Ok(());
            }
            let individual = row.individual.map(|(id, code)| {
                *index_of_id.entry(id).or_insert_with(|| {
                    individuals.push(code.to_string());
                    individuals.len() as u32 - 1
                })
            });
            let bucket = buckets.entry(bytes.len() / 4).or_default();
            let start = bucket.matrix.len();
            bucket.matrix.resize(start + bytes.len() / 4, 0.0);
            for (x, b) in bucket.matrix[start..].iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            // A NaN would poison every comparison it enters. Exponent bits all ones = NaN or
            // infinity; OR-ed without an early exit so that the check vectorises.
            let non_finite = bucket.matrix[start..]
                .iter()
                .fold(0u32, |any, x| any | u32::from(x.to_bits() & 0x7fff_ffff >= 0x7f80_0000));
            if non_finite != 0 {
                bucket.matrix.truncate(start);
                load.corrupt += 1;
                return Ok(());
            }
            let (part, side, species) = (row.part, row.side, row.species.map(str::to_string));
            bucket.entries.push(Entry { annotation: row.annotation, individual, part, side, species });
            Ok(())
        })?;
        load.rejected = counts.rejected;
        load.missing = counts.unrejected.saturating_sub(embedded);
        // The most common length is the model's; ties go to the larger for determinism.
        let Some((&dim, _)) = buckets.iter().max_by_key(|(dim, b)| (b.entries.len(), **dim)) else {
            return Ok(load);
        };
        let mut chosen = Bucket::default();
        for (d, b) in buckets {
            if d == dim {
                chosen = b;
            } else {
                load.wrong_dim += b.entries.len();
            }
        }
        load.gallery = Gallery::from_parts(dim, chosen.matrix, chosen.entries, individuals);
        Ok(load)
    }

    /// Assembles a gallery from rows not yet normalised, dropping individuals with no row
    /// left (those only seen on rows of another dimension) so that `individuals()` lists
    /// only searchable ones.
    fn from_parts(dim: usize, mut matrix: Vec<f32>, mut entries: Vec<Entry>, individuals: Vec<String>) -> Gallery {
        let mut remap: Vec<Option<u32>> = vec![None; individuals.len()];
        let mut kept = Vec::new();
        for e in &mut entries {
            if let Some(old) = e.individual {
                let new = *remap[old as usize].get_or_insert_with(|| {
                    kept.push(individuals[old as usize].clone());
                    kept.len() as u32 - 1
                });
                e.individual = Some(new);
            }
        }
        let index_of = kept.iter().enumerate().map(|(i, c)| (c.clone(), i as u32)).collect();
        let mut codes = vec![0i8; matrix.len()];
        let (scales, slack): (Vec<f32>, Vec<f32>) = if dim == 0 {
            (vec![0.0; entries.len()], vec![0.0; entries.len()])
        } else {
            // Normalised here, on every core, and quantised while the row is in cache.
            matrix
                .par_chunks_mut(dim)
                .zip(codes.par_chunks_mut(dim))
                .map(|(row, codes)| {
                    normalise(row);
                    quantise(row, codes)
                })
                .unzip()
        };
        Gallery { dim, matrix, codes, scales, slack, entries, individuals: kept, index_of }
    }
}
