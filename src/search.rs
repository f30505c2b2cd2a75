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
    // `dot` keeps eight sums: a plain `.sum()` is one serial chain, and loading a gallery
    // normalises every row.
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
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

/// Whether `stored` equals `catalogue::box_key(bbox)`. Formatting four floats per row was a
/// sixth of the load time, so each stored number is compared as an integer count of
/// hundredths instead; whenever that cannot be certain (a rounding tie, an odd value, a
/// stored text not in the canonical form) the key is formatted after all.
fn box_key_matches(bbox: Option<&BoxPx>, stored: &str) -> bool {
    let Some(b) = bbox else { return stored == catalogue::box_key(None) };
    let mut parts = stored.split(',');
    for v in [b.x, b.y, b.w, b.h] {
        match (parts.next().and_then(canonical_hundredths), rounded_hundredths(v)) {
            (Some(k), Some(r)) if k == r => {}
            // Both certain and different: the formatted key cannot equal the stored one.
            (Some(_), Some(_)) => return false,
            _ => return catalogue::box_key(bbox) == stored,
        }
    }
    parts.next().is_none() || catalogue::box_key(bbox) == stored
}

/// `"123.45"` → 12345, only for the text `format!("{:.2}", v)` prints for a positive `v`
/// (no sign, no leading zero but a lone one, exactly two decimals).
fn canonical_hundredths(text: &str) -> Option<u64> {
    let (int, frac) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) || int.len() > 12 || frac.len() != 2 || !digits(frac) {
        return None;
    }
    Some(int.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

/// `v` rounded to hundredths as `{:.2}` rounds it, when that is certain: `v` positive and
/// below a million (where `v * 100` is off by far less than the margin) and not within
/// 1e-6 of a tie.
fn rounded_hundredths(v: f64) -> Option<u64> {
    if !(v > 0.0 && v < 1e6) {
        return None;
    }
    let t = v * 100.0;
    let floor = t.floor();
    let frac = t - floor;
    if (frac - 0.5).abs() < 1e-6 {
        return None;
    }
    Some(floor as u64 + u64::from(frac > 0.5))
}

impl Gallery {
    /// Every non-rejected annotation with a fresh embedding from `model`, with its individual's
    /// code (unidentified crops are kept: they can be found, never proposed), part, side and
    /// species. One scan of the embeddings table, each row's annotation, identification and
    /// individual found by primary key; the blob bytes go straight into the matrix.
    pub fn from_catalogue(cat: &Catalogue, model: &str) -> catalogue::Result<GalleryLoad> {
        // Driven by the embeddings table: read in storage order like a plain scan of it
        // (driving by annotations costs an index probe and a table seek per row).
        const SQL: &str = "SELECT a.id, a.status = 'rejected', a.part, a.side, a.species, a.x, a.y, a.w, a.h, \
                           i.individual_id, v.code, e.box_key, e.dim, e.vector \
                           FROM embeddings e \
                           JOIN annotations a ON a.id = e.annotation_id \
                           LEFT JOIN identifications i ON i.annotation_id = a.id \
                           LEFT JOIN individuals v ON v.id = i.individual_id \
                           WHERE e.model = ?1";
        // Counted through the status index, to tell how many have no embedding at all.
        const COUNTS: &str = "SELECT status = 'rejected', count(*) FROM annotations GROUP BY 1";
        let err = |e| cat.sql_err(e);
        let conv = |e: rusqlite::types::FromSqlError| cat.sql_err(e.into());
        // One read transaction: the counts and the scan see the same catalogue.
        let tx = cat.conn().unchecked_transaction().map_err(err)?;
        let mut load = GalleryLoad::default();
        let mut unrejected = 0;
        let counts: Vec<(bool, i64)> = tx
            .prepare_cached(COUNTS)
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(err)?;
        for (rejected, n) in counts {
            if rejected {
                load.rejected = n as usize;
            } else {
                unrejected = n as usize;
            }
        }
        let mut stmt = tx.prepare_cached(SQL).map_err(err)?;
        let mut rows = stmt.query([model]).map_err(err)?;
        // Usually exactly one bucket; a second only appears when a stored vector is corrupt.
        let mut buckets: HashMap<usize, Bucket> = HashMap::new();
        let mut individuals: Vec<String> = Vec::new();
        let mut index_of_id: HashMap<i64, u32> = HashMap::new();
        let mut embedded = 0;
        while let Some(r) = rows.next().map_err(err)? {
            let annotation: i64 = r.get(0).map_err(err)?;
            if r.get::<_, bool>(1).map_err(err)? {
                continue;
            }
            embedded += 1;
            let coords: [Option<f64>; 4] =
                [r.get(5).map_err(err)?, r.get(6).map_err(err)?, r.get(7).map_err(err)?, r.get(8).map_err(err)?];
            let bbox = match coords {
                [Some(x), Some(y), Some(w), Some(h)] => Some(BoxPx { x, y, w, h }),
                _ => None,
            };
            if !box_key_matches(bbox.as_ref(), r.get_ref(11).map_err(err)?.as_str().map_err(conv)?) {
                load.stale += 1;
                continue;
            }
            let bytes = r.get_ref(13).map_err(err)?.as_bytes().map_err(conv)?;
            let dim: i64 = r.get(12).map_err(err)?;
            if bytes.len() % 4 != 0 || usize::try_from(dim).ok() != Some(bytes.len() / 4) {
                // The row contradicts itself: a truncated or foreign blob.
                load.wrong_dim += 1;
                continue;
            }
            let invalid = |e: String| CatalogueError::Invalid(format!("annotation {annotation}: {e}"));
            let part = parse_name(Part::ALL, Part::as_str, r.get_ref(2).map_err(err)?.as_str().map_err(conv)?)
                .map_err(invalid)?;
            let side = parse_name(Side::ALL, Side::as_str, r.get_ref(3).map_err(err)?.as_str().map_err(conv)?)
                .map_err(invalid)?;
            let species: Option<String> = r.get(4).map_err(err)?;
            let individual = match r.get::<_, Option<i64>>(9).map_err(err)? {
                None => None,
                Some(id) => match index_of_id.get(&id) {
                    Some(&i) => Some(i),
                    None => {
                        let code: String = r.get(10).map_err(err)?;
                        let i = individuals.len() as u32;
                        individuals.push(code);
                        index_of_id.insert(id, i);
                        Some(i)
                    }
                },
            };
            let bucket = buckets.entry(bytes.len() / 4).or_default();
            let start = bucket.matrix.len();
            bucket.matrix.resize(start + bytes.len() / 4, 0.0);
            for (x, b) in bucket.matrix[start..].iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            bucket.entries.push(Entry { annotation, individual, part, side, species });
        }
        drop(rows);
        drop(stmt);
        // Read only: ending it changes nothing.
        tx.rollback().map_err(err)?;
        load.missing = unrejected.saturating_sub(embedded);
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
        // Normalised after the scan, on every core: the scan itself is one thread.
        if dim > 0 {
            chosen.matrix.par_chunks_mut(dim).for_each(normalise);
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

    #[test]
    fn the_fast_box_key_check_agrees_with_formatting_the_key() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Ties at the second decimal, values around the cut-offs, and the odd ones.
        let mut values = vec![
            0.0,
            -0.0,
            -1.0,
            0.001,
            0.005,
            0.004_999_9,
            0.125,
            10.125,
            10.135,
            2.675,
            1.005,
            99.995,
            999_999.995,
            1e6,
            1e6 + 0.125,
            123_456_789.125,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ];
        for _ in 0..2000 {
            let whole = rng.random_range(0..5000) as f64;
            values.push(whole + (rng.random_range(0..1000) as f64) / 1000.0);
            values.push(whole + rng.random::<f64>());
            values.push(rng.random::<f64>() * 1e-2);
        }
        let boxes: Vec<Option<BoxPx>> = values
            .chunks(2)
            .flat_map(|v| {
                let (a, b) = (v[0], *v.get(1).unwrap_or(&1.0));
                [Some(BoxPx::new(a, b, 3.0, 4.0)), Some(BoxPx::new(1.0, 2.0, a, b)), None]
            })
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            // Against its own key, its neighbours' keys and hand-made near misses.
            let mut keys = vec![catalogue::box_key(a.as_ref())];
            for b in boxes.iter().skip(i.saturating_sub(3)).take(6) {
                keys.push(catalogue::box_key(b.as_ref()));
            }
            keys.push(keys[0].replacen('.', ".0", 1));
            keys.push(format!("0{}", keys[0]));
            keys.push(format!("{},5.00", keys[0]));
            for key in keys {
                assert_eq!(
                    box_key_matches(a.as_ref(), &key),
                    catalogue::box_key(a.as_ref()) == key,
                    "{a:?} against {key}"
                );
            }
        }
    }
}
