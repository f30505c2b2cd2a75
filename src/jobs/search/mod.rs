//! The one search entry point (CLI, app and evaluator alike): exact cosine similarity over
//! one contiguous matrix of L2-normalised embeddings, ranked by individual with one vote
//! per individual (its best-matching image), under filters that are always reported.
//!
//! Scanning 100,000 × 512 floats is bound by memory, so a search first reads a copy of the
//! matrix at one byte a number with a proven error bound per row, then scores exactly the
//! few rows (about 60 for a top 10) that could still hold a ranked individual's best image:
//! the answer is the exact one, at a quarter of the memory traffic.
//! `Gallery::from_catalogue` builds the gallery from a catalogue in one scan.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::base::vocabulary::{BoxPx, Part, Side};
use crate::catalogue::{self, Catalogue, CatalogueError};

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
    /// The matrix again, one byte a number: `matrix[r] ≈ scales[r] * codes[r]`. Searching reads
    /// a quarter of the memory through it, then rescores exactly the rows that can matter.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Per row, a bound on |exact score - coarse score| for any unit query.
    slack: Vec<f32>,
    entries: Vec<Entry>,
    individuals: Vec<String>,
    index_of: std::collections::HashMap<String, u32>,
}

/// Quantises a normalised row to `codes` (symmetric, one scale per row) and returns the scale
/// and the slack: by Cauchy-Schwarz, |q·x - scale·(q·codes)| ≤ |q|·|x - scale·codes|, plus a
/// margin for the rounding of both f32 sums (each within dim·ε of the real one for unit vectors).
fn quantise(row: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        codes.fill(0);
        return (0.0, 0.0);
    }
    let (scale, inv) = (max / 127.0, 127.0 / max);
    // Rounded by adding 1.5·2^23, which leaves the nearest integer in the low mantissa bits:
    // `round` is a libm call on baseline x86-64 and `as i32` a scalar saturating conversion,
    // and either stops this loop vectorising (it was a sixth of the load time). Clamped as
    // floats first, so the integer is within ±127.
    const MAGIC: f32 = 12_582_912.0;
    for (c, &x) in codes.iter_mut().zip(row) {
        let v = (x * inv).clamp(-127.0, 127.0);
        *c = ((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8;
    }
    let mut residual = [0f32; 8];
    let (c8, x8) = (codes.chunks_exact(8), row.chunks_exact(8));
    let tail: f32 = c8.remainder().iter().zip(x8.remainder()).map(|(&c, &x)| (x - scale * f32::from(c)).powi(2)).sum();
    for (c, x) in c8.zip(x8) {
        for j in 0..8 {
            let d = x[j] - scale * f32::from(c[j]);
            residual[j] += d * d;
        }
    }
    // Summing in f32 is off by far less than the 1.001, which also covers a query whose
    // norm after `normalise` is a hair above 1; the margin covers the two scores' roundings.
    let margin = 2.0 * row.len() as f32 * f32::EPSILON;
    (scale, (residual.iter().sum::<f32>() + tail).sqrt() * 1.001 + margin)
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
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// Coarse scores: `scales[r] * (query · codes[r])` for consecutive rows.
fn coarse_rows(query: &[f32], codes: &[i8], scales: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked for both features.
            unsafe { coarse_rows_avx2(query, codes, scales, out) };
            return;
        }
    }
    for ((s, row), scale) in out.iter_mut().zip(codes.chunks_exact(query.len())).zip(scales) {
        let mut acc = [0f32; 8];
        let (q8, c8) = (query.chunks_exact(8), row.chunks_exact(8));
        let tail: f32 = q8.remainder().iter().zip(c8.remainder()).map(|(q, &c)| q * f32::from(c)).sum();
        for (q, c) in q8.zip(c8) {
            for j in 0..8 {
                acc[j] += q[j] * f32::from(c[j]);
            }
        }
        *s = scale * (acc.iter().sum::<f32>() + tail);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn coarse_rows_avx2(query: &[f32], codes: &[i8], scales: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let body = dim / 32 * 32;
    for ((s, row), scale) in out.iter_mut().zip(codes.chunks_exact(dim)).zip(scales) {
        let (q, c) = (query.as_ptr(), row.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim = query.len() = row.len(); each load reads 8 bytes.
            unsafe {
                for (k, a) in acc.iter_mut().enumerate() {
                    let bytes = _mm_loadl_epi64(c.add(i + 8 * k) as *const __m128i);
                    let codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i + 8 * k)), codes, *a);
                }
            }
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let tail: f32 = query[body..].iter().zip(&row[body..]).map(|(q, &c)| q * f32::from(c)).sum();
        *s = scale * (lanes.iter().sum::<f32>() + tail);
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
        if !vector.iter().all(|x| x.is_finite()) {
            return Err(format!("annotation {annotation}: embedding holds a number that is not finite"));
        }
        let start = self.matrix.len();
        self.matrix.extend_from_slice(vector);
        normalise(&mut self.matrix[start..]);
        self.codes.resize(start + self.dim, 0);
        let (scale, slack) = quantise(&self.matrix[start..], &mut self.codes[start..]);
        self.scales.push(scale);
        self.slack.push(slack);
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
        // A query of another dimension (another model's) searches nothing.
        let comparable = q.len() == self.dim;
        let admitted: Vec<(usize, u32)> = if comparable {
            let ok = |e: &Entry| Some(e.annotation) != exclude && filter.admits(e);
            self.entries
                .iter()
                .enumerate()
                .filter_map(|(row, e)| e.individual.filter(|_| ok(e)).map(|i| (row, i)))
                .collect()
        } else {
            Vec::new()
        };
        let searched_images = admitted.len();
        let best = self.best_per_individual(&q, &admitted, top);
        let searched_individuals = best.iter().filter(|b| b.is_some()).count();
        let mut ranked: Vec<(usize, f32, usize)> = best
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.and_then(|(s, row)| s.is_finite().then_some((i, s, row))))
            .collect();
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

    /// For each individual among the `admitted` `(row, individual)`, its best row and exact
    /// score, exact for at least the `top` best individuals (and any tied with the last);
    /// others hold `-inf` or a lower score, never a higher one.
    ///
    /// The quantised rows give every score within its row's slack. The `top`-th best lower
    /// bound `t` is then a floor for the exact `top`-th best individual, so only rows whose
    /// upper bound reaches `t` can hold a ranked individual's best image: those alone are
    /// scored exactly (tens of rows, against reading the whole f32 matrix).
    fn best_per_individual(&self, q: &[f32], admitted: &[(usize, u32)], top: usize) -> Vec<Option<(f32, usize)>> {
        let mut best: Vec<Option<(f32, usize)>> = vec![None; self.individuals.len()];
        if admitted.is_empty() || top == 0 {
            // Every admitted individual is still searched, only none is ranked.
            for &(row, i) in admitted {
                best[i as usize].get_or_insert((f32::NEG_INFINITY, row));
            }
            return best;
        }
        let coarse = self.coarse_scores(q);
        let mut floor = vec![f32::NEG_INFINITY; self.individuals.len()];
        for &(row, i) in admitted {
            let f = &mut floor[i as usize];
            *f = f.max(coarse[row] - self.slack[row]);
            best[i as usize].get_or_insert((f32::NEG_INFINITY, row));
        }
        let mut floors: Vec<f32> = best.iter().zip(&floor).filter(|(b, _)| b.is_some()).map(|(_, &f)| f).collect();
        let t = if floors.len() > top {
            *floors.select_nth_unstable_by(top - 1, |a, b| b.total_cmp(a)).1
        } else {
            f32::NEG_INFINITY
        };
        let mut exact = [0f32];
        for &(row, i) in admitted {
            if coarse[row] + self.slack[row] < t {
                continue;
            }
            score_rows(q, self.vector(row), &mut exact);
            let slot = &mut best[i as usize];
            if slot.is_none_or(|(b, _)| exact[0] > b) {
                *slot = Some((exact[0], row));
            }
        }
        best
    }

    /// Scores within each row's slack, from the quantised rows, on every core.
    fn coarse_scores(&self, q: &[f32]) -> Vec<f32> {
        // 1024 rows of 512 bytes: 512 KiB a task.
        const ROWS_PER_TASK: usize = 1024;
        let mut out = vec![0f32; self.entries.len()];
        out.par_chunks_mut(ROWS_PER_TASK)
            .zip(self.codes.par_chunks(ROWS_PER_TASK * self.dim))
            .zip(self.scales.par_chunks(ROWS_PER_TASK))
            .for_each(|((out, codes), scales)| coarse_rows(q, codes, scales, out));
        out
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
                load.corrupt += 1;
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
            // A NaN would poison every comparison it enters. Exponent bits all ones = NaN or
            // infinity; OR-ed without an early exit so that the check vectorises.
            let non_finite = bucket.matrix[start..]
                .iter()
                .fold(0u32, |any, x| any | u32::from(x.to_bits() & 0x7fff_ffff >= 0x7f80_0000));
            if non_finite != 0 {
                bucket.matrix.truncate(start);
                load.corrupt += 1;
                continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery() -> Gallery {
        let mut g = Gallery::new(3);
        g.push(&[1.0, 0.0, 0.0], 1, Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into())).unwrap();
        g.push(&[0.9, 0.1, 0.0], 2, Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into())).unwrap();
        g.push(&[0.0, 1.0, 0.0], 3, Some("B"), Part::Fluke, Side::Unknown, Some("humpback_whale".into())).unwrap();
        g.push(&[0.7, 0.7, 0.0], 4, Some("C"), Part::DorsalFin, Side::Left, Some("bottlenose_dolphin".into())).unwrap();
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

    /// The plain algorithm: every row scored exactly, best row per individual.
    fn brute_force(
        g: &Gallery,
        q: &[f32],
        top: usize,
        filter: &Filter,
        exclude: Option<i64>,
    ) -> Vec<(String, f32, i64)> {
        let mut q = q.to_vec();
        normalise(&mut q);
        let scores = g.scores(&q);
        let mut best: Vec<Option<(f32, usize)>> = vec![None; g.individuals.len()];
        for (row, e) in g.entries.iter().enumerate() {
            let Some(i) = e.individual else { continue };
            if Some(e.annotation) == exclude || !filter.admits(e) {
                continue;
            }
            if best[i as usize].is_none_or(|(b, _)| scores[row] > b) {
                best[i as usize] = Some((scores[row], row));
            }
        }
        let mut ranked: Vec<(String, f32, i64)> = best
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|(s, row)| (g.individuals[i].clone(), s, g.entries[row].annotation)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        ranked
    }

    #[test]
    fn the_quantised_first_pass_never_changes_the_answer() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        // 37 and 100 dimensions exercise the kernels' tails; near-duplicate rows make close calls.
        for dim in [37, 100, 256] {
            let mut g = Gallery::new(dim);
            let centres: Vec<Vec<f32>> =
                (0..40).map(|_| (0..dim).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
            for row in 0..800 {
                // Individuals 2m and 2m+1 are near-twins: their best rows differ in the third
                // decimal, the quantisation's own scale, so the cut at `top` is a close call.
                let c = &centres[row % 40 / 2];
                let noise = if row % 7 < 3 { 2e-3 } else { 0.8 };
                let v: Vec<f32> = c.iter().map(|x| x + noise * (rng.random::<f32>() - 0.5)).collect();
                let side = [Side::Left, Side::Right, Side::Unknown][row % 3];
                let individual = (row % 13 != 0).then(|| format!("I{:02}", row % 40));
                g.push(&v, row as i64, individual.as_deref(), Part::Fluke, side, None).unwrap();
            }
            g.push(&vec![0.0; dim], 9999, Some("I00"), Part::Fluke, Side::Unknown, None).unwrap();
            for trial in 0..60 {
                let c = &centres[trial % 20];
                let q: Vec<f32> = c.iter().map(|x| x + 0.05 * (rng.random::<f32>() - 0.5)).collect();
                let filter = Filter { side: [None, Some(Side::Left)][trial % 2], ..Default::default() };
                let (top, exclude) = ([1, 5, 40, 100][trial % 4], Some(trial as i64));
                let got = g.search(&q, top, &filter, exclude, None);
                let got: Vec<(String, f32, i64)> =
                    got.matches.into_iter().map(|m| (m.individual, m.score, m.best_annotation)).collect();
                let want = brute_force(&g, &q, top, &filter, exclude);
                let scores = |v: &[(String, f32, i64)]| v.iter().map(|m| m.1.to_bits()).collect::<Vec<_>>();
                assert_eq!(scores(&got), scores(&want), "dim {dim} trial {trial}");
                // Equal scores may come in either order; everything else must agree.
                let mut sorted = got.clone();
                sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                assert_eq!(sorted, want, "dim {dim} trial {trial}");
            }
        }
    }

    #[test]
    fn a_vector_with_nan_is_refused() {
        let mut g = Gallery::new(2);
        assert!(g.push(&[f32::NAN, 1.0], 1, Some("A"), Part::Fluke, Side::Unknown, None).is_err());
        assert!(g.is_empty());
    }
}
