//! The one search entry point (CLI, app and evaluator alike): exact cosine similarity over
//! one contiguous matrix of L2-normalised embeddings, ranked by individual with one vote
//! per individual (its best-matching image), under filters that are always reported.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::catalogue::{self, Catalogue, CatalogueError};
use crate::model::{BoxPx, Part, Side};

/// What is known of each gallery image besides its vector.
#[derive(Debug, Clone)]
pub struct Entry {
    pub annotation: i64,
    /// Index into `Gallery::individuals`; `None` for unidentified crops (never proposed).
    pub individual: Option<u32>,
    pub part: Part,
    pub side: Side,
    pub species: Option<String>,
}

/// Restricts the candidates; `None` fields do not restrict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    pub species: Option<String>,
    pub part: Option<Part>,
    pub side: Option<Side>,
}

impl Filter {
    fn admits(&self, e: &Entry) -> bool {
        self.part.is_none_or(|p| p == e.part)
            // An unknown side is compatible with either side.
            && self.side.is_none_or(|s| s == Side::Unknown || e.side == Side::Unknown || e.side == s)
            && self.species.as_ref().is_none_or(|s| e.species.as_deref() == Some(s.as_str()))
    }

    /// Plain words for what the filter restricts, shown beside every result.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.species {
            parts.push(format!("species {s}"));
        }
        if let Some(p) = self.part {
            parts.push(format!("part {p}"));
        }
        if let Some(s) = self.side {
            parts.push(format!("side {s} (or unknown)"));
        }
        if parts.is_empty() { "no filter".into() } else { parts.join(", ") }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub individual: String,
    pub score: f32,
    /// The individual's gallery crop that matched best.
    pub best_annotation: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub matches: Vec<Match>,
    pub filter: String,
    pub searched_images: usize,
    pub searched_individuals: usize,
    /// The catalogue's new-individual threshold, when it has one.
    pub threshold: Option<f32>,
    /// True when the best score is under the threshold: probably an individual not yet catalogued.
    pub new_individual: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Gallery {
    dim: usize,
    matrix: Vec<f32>,
    entries: Vec<Entry>,
    individuals: Vec<String>,
    index_of: std::collections::HashMap<String, u32>,
}

/// L2-normalises in place; a zero vector stays zero.
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Dot products of `query` with consecutive rows of `query.len()` floats, one per `out` slot.
fn score_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked for both features.
            unsafe { score_rows_avx2(query, rows, out) };
            return;
        }
    }
    for (s, row) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
        *s = dot(query, row);
    }
}

/// Portable dot product: eight independent sums let the compiler vectorise without
/// reassociating (the default x86-64 target has SSE2 only, so this is the fallback).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The same with AVX2 + FMA, chosen at run time so the binary still runs on any x86-64.
/// Four accumulators of eight lanes hide the FMA latency; rows come from memory anyway.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn score_rows_avx2(query: &[f32], rows: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let body = dim / 32 * 32;
    for (s, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        let (q, r) = (query.as_ptr(), row.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim = query.len() = row.len().
            unsafe {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i + 8 * k)), _mm256_loadu_ps(r.add(i + 8 * k)), *a);
                }
            }
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let tail: f32 = query[body..].iter().zip(&row[body..]).map(|(x, y)| x * y).sum();
        *s = lanes.iter().sum::<f32>() + tail;
    }
}

impl Gallery {
    pub fn new(dim: usize) -> Self {
        Gallery { dim, ..Default::default() }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn individuals(&self) -> &[String] {
        &self.individuals
    }

    /// The row of a gallery image (normalised).
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.matrix[row * self.dim..(row + 1) * self.dim]
    }

    /// All rows, one after another (`len() * dim()` floats, each row normalised).
    pub fn as_matrix(&self) -> &[f32] {
        &self.matrix
    }

    /// Adds an image; the vector is normalised on the way in. A vector of another
    /// dimension (an embedding from another model) is refused.
    pub fn push(
        &mut self,
        vector: &[f32],
        annotation: i64,
        individual: Option<&str>,
        part: Part,
        side: Side,
        species: Option<String>,
    ) -> Result<(), String> {
        if vector.len() != self.dim {
            return Err(format!(
                "annotation {annotation}: embedding has {} dimensions, the gallery {}",
                vector.len(),
                self.dim
            ));
        }
        let start = self.matrix.len();
        self.matrix.extend_from_slice(vector);
        normalise(&mut self.matrix[start..]);
        let individual = individual.map(|code| {
            let next = self.individuals.len() as u32;
            *self.index_of.entry(code.to_string()).or_insert_with(|| {
                self.individuals.push(code.to_string());
                next
            })
        });
        self.entries.push(Entry { annotation, individual, part, side, species });
        Ok(())
    }

    /// Cosine similarity of a normalised query with every gallery image. A query of another
    /// dimension (another model's embedding) matches nothing: every score is 0.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        // A block is 2 MiB at 512 dimensions: big enough that the task overhead is noise,
        // small enough that two cores share the work evenly.
        const ROWS_PER_TASK: usize = 1024;
        let mut out = vec![0f32; self.entries.len()];
        if query.len() != self.dim || self.dim == 0 {
            return out;
        }
        out.par_chunks_mut(ROWS_PER_TASK)
            .zip(self.matrix.par_chunks(ROWS_PER_TASK * self.dim))
            .for_each(|(out, rows)| score_rows(query, rows, out));
        out
    }

    /// Ranks individuals for a query (normalised here). `exclude` leaves one annotation out
    /// (leave-one-out evaluation, or the query itself when it is in the gallery).
    pub fn search(
        &self,
        query: &[f32],
        top: usize,
        filter: &Filter,
        exclude: Option<i64>,
        threshold: Option<f32>,
    ) -> SearchResult {
        let mut q = query.to_vec();
        normalise(&mut q);
        // A query of another dimension searched nothing; `scores` would say 0 everywhere.
        let comparable = q.len() == self.dim;
        let scores = if comparable { self.scores(&q) } else { Vec::new() };
        let mut best: Vec<Option<(f32, usize)>> = vec![None; self.individuals.len()];
        let mut searched_images = 0;
        for (row, e) in self.entries.iter().enumerate() {
            let Some(ind) = e.individual else { continue };
            if !comparable || Some(e.annotation) == exclude || !filter.admits(e) {
                continue;
            }
            searched_images += 1;
            let s = scores[row];
            let slot = &mut best[ind as usize];
            if slot.is_none_or(|(b, _)| s > b) {
                *slot = Some((s, row));
            }
        }
        let mut ranked: Vec<(usize, f32, usize)> =
            best.iter().enumerate().filter_map(|(i, b)| b.map(|(s, row)| (i, s, row))).collect();
        let searched_individuals = ranked.len();
        let k = top.min(ranked.len());
        if k > 0 && k < ranked.len() {
            ranked.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            ranked.truncate(k);
        }
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let matches: Vec<Match> = ranked
            .into_iter()
            .take(k)
            .map(|(i, score, row)| Match {
                individual: self.individuals[i].clone(),
                score,
                best_annotation: self.entries[row].annotation,
            })
            .collect();
        let new_individual = match (threshold, matches.first()) {
            (Some(t), Some(m)) => m.score < t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        SearchResult {
            matches,
            filter: filter.describe(),
            searched_images,
            searched_individuals,
            threshold,
            new_individual,
        }
    }
}

/// A gallery read from a catalogue, with what was left out and why, so the caller can say
/// "12 embeddings are stale" instead of silently searching fewer images.
#[derive(Debug, Clone, Default)]
pub struct GalleryLoad {
    pub gallery: Gallery,
    /// Annotations whose embedding was computed from another box (moved since): re-embed them.
    pub stale: usize,
    /// Annotations with no embedding from this model yet.
    pub missing: usize,
    /// Embeddings of another length than the gallery's (corrupt, or another model's size).
    pub wrong_dim: usize,
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
        parts.join("; ")
    }
}

/// Rows of one vector length met while loading; the most common length becomes the gallery.
#[derive(Default)]
struct Bucket {
    matrix: Vec<f32>,
    entries: Vec<Entry>,
}

/// Matches the catalogue's lower-case names without the allocations of `FromStr`, which
/// also accepts spellings a catalogue never stores; falls back to it for the error message.
fn parse_name<T: Copy + std::str::FromStr<Err = String>>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    text: &str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == text).map_or_else(|| text.parse(), Ok)
}

impl Gallery {
    /// Every non-rejected annotation with a fresh embedding from `model`, with its individual's
    /// code (unidentified crops are kept: they can be found, never proposed), part, side and
    /// species. One scan of the annotations joined by key; the blob bytes go straight into
    /// the matrix, normalised on the way.
    pub fn from_catalogue(cat: &Catalogue, model: &str) -> catalogue::Result<GalleryLoad> {
        // Driven by annotations so that those without an embedding are counted in the same
        // pass; embeddings, identifications and individuals are each found by primary key.
        const SQL: &str = "SELECT a.id, a.status = 'rejected', a.part, a.side, a.species, a.x, a.y, a.w, a.h, \
                           i.individual_id, v.code, e.box_key, e.dim, e.vector \
                           FROM annotations a \
                           LEFT JOIN embeddings e ON e.annotation_id = a.id AND e.model = ?1 \
                           LEFT JOIN identifications i ON i.annotation_id = a.id \
                           LEFT JOIN individuals v ON v.id = i.individual_id";
        let mut stmt = cat.conn().prepare_cached(SQL).map_err(|e| cat.sql_err(e))?;
        let mut rows = stmt.query([model]).map_err(|e| cat.sql_err(e))?;
        let mut load = GalleryLoad::default();
        // Usually exactly one bucket; a second only appears when a stored vector is corrupt.
        let mut buckets: HashMap<usize, Bucket> = HashMap::new();
        let mut individuals: Vec<String> = Vec::new();
        let mut index_of_id: HashMap<i64, u32> = HashMap::new();
        while let Some(r) = rows.next().map_err(|e| cat.sql_err(e))? {
            let get_err = |e| cat.sql_err(e);
            let annotation: i64 = r.get(0).map_err(get_err)?;
            if r.get::<_, bool>(1).map_err(get_err)? {
                load.rejected += 1;
                continue;
            }
            let Some(stored_key) =
                r.get_ref(11).map_err(get_err)?.as_str_or_null().map_err(|e| cat.sql_err(e.into()))?
            else {
                load.missing += 1;
                continue;
            };
            let coords: [Option<f64>; 4] = [
                r.get(5).map_err(get_err)?,
                r.get(6).map_err(get_err)?,
                r.get(7).map_err(get_err)?,
                r.get(8).map_err(get_err)?,
            ];
            let bbox = match coords {
                [Some(x), Some(y), Some(w), Some(h)] => Some(BoxPx { x, y, w, h }),
                _ => None,
            };
            if catalogue::box_key(bbox.as_ref()) != stored_key {
                load.stale += 1;
                continue;
            }
            let bytes = r.get_ref(13).map_err(get_err)?.as_bytes().map_err(|e| cat.sql_err(e.into()))?;
            let dim: i64 = r.get(12).map_err(get_err)?;
            if bytes.len() % 4 != 0 || dim < 0 || bytes.len() / 4 != dim as usize {
                // The row contradicts itself: a truncated or foreign blob.
                load.wrong_dim += 1;
                continue;
            }
            let invalid = |e: String| CatalogueError::Invalid(format!("annotation {annotation}: {e}"));
            let part = parse_name(
                Part::ALL,
                Part::as_str,
                r.get_ref(2).map_err(get_err)?.as_str().map_err(|e| cat.sql_err(e.into()))?,
            )
            .map_err(invalid)?;
            let side = parse_name(
                Side::ALL,
                Side::as_str,
                r.get_ref(3).map_err(get_err)?.as_str().map_err(|e| cat.sql_err(e.into()))?,
            )
            .map_err(invalid)?;
            let species: Option<String> = r.get(4).map_err(get_err)?;
            let individual = match r.get::<_, Option<i64>>(9).map_err(get_err)? {
                None => None,
                Some(id) => match index_of_id.get(&id) {
                    Some(&i) => Some(i),
                    None => {
                        let code: String = r.get(10).map_err(get_err)?;
                        let i = individuals.len() as u32;
                        individuals.push(code);
                        index_of_id.insert(id, i);
                        Some(i)
                    }
                },
            };
            let bucket = buckets.entry(bytes.len() / 4).or_default();
            let start = bucket.matrix.len();
            bucket.matrix.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            normalise(&mut bucket.matrix[start..]);
            bucket.entries.push(Entry { annotation, individual, part, side, species });
        }
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

    /// Assembles a gallery, dropping individuals with no row left (those only seen on rows
    /// of another dimension) so that `individuals()` lists only searchable ones.
    fn from_parts(dim: usize, matrix: Vec<f32>, mut entries: Vec<Entry>, individuals: Vec<String>) -> Gallery {
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
        Gallery { dim, matrix, entries, individuals: kept, index_of }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery() -> Gallery {
        let mut g = Gallery::new(3);
        g.push(&[1.0, 0.0, 0.0], 1, Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()));
        g.push(&[0.9, 0.1, 0.0], 2, Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()));
        g.push(&[0.0, 1.0, 0.0], 3, Some("B"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()));
        g.push(&[0.7, 0.7, 0.0], 4, Some("C"), Part::DorsalFin, Side::Left, Some("bottlenose_dolphin".into()));
        g.push(&[1.0, 0.0, 0.01], 5, None, Part::Fluke, Side::Unknown, None).unwrap();
        assert!(g.push(&[1.0, 0.0], 6, None, Part::Fluke, Side::Unknown, None).unwrap_err().contains("2 dimensions"));
        g
    }

    #[test]
    fn individuals_are_ranked_by_their_best_image_and_unidentified_crops_are_never_proposed() {
        let r = gallery().search(&[2.0, 0.0, 0.0], 5, &Filter::default(), None, Some(0.5));
        let names: Vec<_> = r.matches.iter().map(|m| m.individual.as_str()).collect();
        assert_eq!(names, ["A", "C", "B"]);
        assert_eq!(r.matches[0].best_annotation, 1);
        assert!((r.matches[0].score - 1.0).abs() < 1e-6);
        assert_eq!((r.searched_images, r.searched_individuals), (4, 3));
        assert!(!r.new_individual);
    }

    #[test]
    fn filters_restrict_and_say_how_many_were_searched() {
        let f = Filter { part: Some(Part::Fluke), ..Default::default() };
        let r = gallery().search(&[0.7, 0.7, 0.0], 1, &f, Some(1), Some(0.95));
        assert_eq!(r.matches.len(), 1);
        assert_eq!((r.searched_images, r.searched_individuals), (2, 2));
        assert_eq!(r.filter, "part fluke");
        assert!(r.new_individual, "best score under the threshold flags a new individual");
    }
}
