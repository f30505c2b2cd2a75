//! The one search entry point (CLI, app and evaluator alike): exact cosine similarity over
//! one contiguous matrix of L2-normalised embeddings, ranked by individual with one vote
//! per individual (its best-matching image), under filters that are always reported.
//!
//! Scanning 100,000 × 512 floats is bound by memory, so a search first reads a copy of the
//! matrix at one byte a number with a proven error bound per row, then scores exactly the
//! few rows (about 60 for a top 10) that could still hold a ranked individual's best image:
//! the answer is the exact one, at a quarter of the memory traffic.
//! `Gallery::from_catalogue` (load.rs) builds the gallery from a catalogue in one scan; the
//! arithmetic is in kernels.rs.

pub mod calibrate;
mod kernels;
mod load;
pub mod rerank;

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

pub(crate) use kernels::dot;
pub use kernels::normalise;
use kernels::{coarse_rows, quantise, score_rows};
pub use load::GalleryLoad;

use crate::base::ids::AnnotationId;
use crate::base::vocabulary::{Part, Side};
use crate::catalogue::Catalogue;

/// What is known of each gallery image besides its vector.
#[derive(Debug, Clone)]
pub struct Entry {
    pub annotation: AnnotationId,
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
    pub best_annotation: AnnotationId,
    /// What the local verification found, when the shortlist was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

/// An individual's local evidence: verified keypoint matches with its best crop.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub matches: usize,
    /// The gallery crop with the most verified matches.
    pub annotation: AnnotationId,
    /// The calibrated probability that it is the query's individual (global and local
    /// scores fused), when the model has a calibration.
    pub probability: Option<f32>,
    /// The verified matches: query x, y and gallery x, y, as fractions of each crop's size.
    pub lines: Vec<[f32; 4]>,
}

/// An unidentified crop of the catalogue near the query: perhaps the same new animal,
/// photographed again in the survey.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    pub annotation: AnnotationId,
    pub score: f32,
    /// What local verification found with the query, when the search was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub matches: Vec<Match>,
    /// The nearest unidentified crops, when the caller asked for them
    /// (`Gallery::nearest_unidentified`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unidentified: Vec<Neighbour>,
    pub filter: String,
    pub searched_images: usize,
    pub searched_individuals: usize,
    /// The catalogue's new-individual threshold, when it has one: a cosine, or a probability
    /// when `threshold_is_probability`.
    pub threshold: Option<f32>,
    pub threshold_is_probability: bool,
    /// Whether the shortlist was verified by local features (and re-ordered by them).
    pub reranked: bool,
    /// True when the best score is under the threshold: probably an individual not yet catalogued.
    pub new_individual: bool,
    /// The photo (as the catalogue stores its path) of each crop named above, when the caller
    /// looked them up ([`SearchResult::name_photos`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub photos: BTreeMap<AnnotationId, String>,
}

impl SearchResult {
    /// The crops this result names: each match's shown crop, then the unidentified ones.
    fn crops(&self) -> impl Iterator<Item = AnnotationId> + '_ {
        let shown = self.matches.iter().map(|m| m.verified.as_ref().map_or(m.best_annotation, |v| v.annotation));
        shown.chain(self.unidentified.iter().map(|n| n.annotation))
    }

    /// Looks up the photo of every crop named, so that the result names photos a biologist
    /// can open rather than the catalogue's crop numbers alone.
    pub fn name_photos(&mut self, cat: &Catalogue) -> crate::catalogue::Result<()> {
        let crops: Vec<AnnotationId> = self.crops().collect();
        for crop in crops {
            if let Some(annotation) = cat.annotation(crop)?
                && let Some(photo) = cat.photo(annotation.photo_id)?
            {
                self.photos.insert(crop, photo.stored_path);
            }
        }
        Ok(())
    }

    /// `annotation N`, with its photo when known.
    fn crop_name(&self, crop: AnnotationId) -> String {
        match self.photos.get(&crop) {
            Some(photo) => format!("annotation {crop}, {photo}"),
            None => format!("annotation {crop}"),
        }
    }
}

impl std::fmt::Display for SearchResult {
    /// What was searched, the ranked individuals, and what the threshold says.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "searched {} crop(s) of {} individual(s) ({})",
            self.searched_images, self.searched_individuals, self.filter
        )?;
        if self.reranked {
            write!(f, "; shortlist verified by local features")?;
        }
        for (i, m) in self.matches.iter().enumerate() {
            write!(f, "\n  {}. {:<24} {:.4}", i + 1, m.individual, m.score)?;
            match &m.verified {
                Some(v) => {
                    if let Some(p) = v.probability {
                        write!(f, "  p {p:.3}")?;
                    }
                    write!(f, "  {:>3} verified matches (crop: {})", v.matches, self.crop_name(v.annotation))?;
                }
                None => write!(f, "  (best crop: {})", self.crop_name(m.best_annotation))?,
            }
        }
        if !self.unidentified.is_empty() {
            write!(f, "\nnearest unidentified crops:")?;
            for n in &self.unidentified {
                write!(f, "\n  {} ({:.4})", self.crop_name(n.annotation), n.score)?;
            }
        }
        let what = if self.threshold_is_probability { "probability" } else { "score" };
        match self.threshold {
            Some(t) if self.new_individual => {
                write!(f, "\nlikely a NEW individual: best {what} under the threshold {t:.4}")
            }
            Some(t) => write!(f, "\nnew-individual threshold {t:.4} ({what}): the best match is above it"),
            None => write!(f, "\nno new-individual threshold tuned yet (whaleid eval --catalog C --save-threshold)"),
        }
    }
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
        annotation: AnnotationId,
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
        exclude: Option<AnnotationId>,
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
                verified: None,
            })
            .collect();
        let new_individual = match (threshold, matches.first()) {
            (Some(t), Some(m)) => m.score < t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        SearchResult {
            matches,
            unidentified: Vec::new(),
            photos: BTreeMap::new(),
            filter: filter.describe(),
            searched_images,
            searched_individuals,
            threshold,
            threshold_is_probability: false,
            reranked: false,
            new_individual,
        }
    }

    /// The `k` unidentified crops nearest the query (normalised here) that `filter` admits,
    /// best first, `exclude` left out: other photos of an animal not yet catalogued.
    pub fn nearest_unidentified(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
        exclude: Option<AnnotationId>,
    ) -> Vec<Neighbour> {
        let mut q = query.to_vec();
        normalise(&mut q);
        if q.len() != self.dim {
            return Vec::new();
        }
        let scores = self.scores(&q);
        let mut found: Vec<Neighbour> = self
            .entries
            .iter()
            .zip(scores)
            .filter(|(e, s)| {
                e.individual.is_none() && Some(e.annotation) != exclude && filter.admits(e) && s.is_finite()
            })
            .map(|(e, score)| Neighbour { annotation: e.annotation, score, verified: None })
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(k);
        found
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery() -> Gallery {
        let mut g = Gallery::new(3);
        g.push(&[1.0, 0.0, 0.0], AnnotationId(1), Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()))
            .unwrap();
        g.push(&[0.9, 0.1, 0.0], AnnotationId(2), Some("A"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()))
            .unwrap();
        g.push(&[0.0, 1.0, 0.0], AnnotationId(3), Some("B"), Part::Fluke, Side::Unknown, Some("humpback_whale".into()))
            .unwrap();
        g.push(
            &[0.7, 0.7, 0.0],
            AnnotationId(4),
            Some("C"),
            Part::DorsalFin,
            Side::Left,
            Some("bottlenose_dolphin".into()),
        )
        .unwrap();
        g.push(&[1.0, 0.0, 0.01], AnnotationId(5), None, Part::Fluke, Side::Unknown, None).unwrap();
        assert!(
            g.push(&[1.0, 0.0], AnnotationId(6), None, Part::Fluke, Side::Unknown, None)
                .unwrap_err()
                .contains("2 dimensions")
        );
        g
    }

    #[test]
    fn individuals_are_ranked_by_their_best_image_and_unidentified_crops_are_never_proposed() {
        let r = gallery().search(&[2.0, 0.0, 0.0], 5, &Filter::default(), None, Some(0.5));
        let names: Vec<_> = r.matches.iter().map(|m| m.individual.as_str()).collect();
        assert_eq!(names, ["A", "C", "B"]);
        assert_eq!(r.matches[0].best_annotation, AnnotationId(1));
        assert!((r.matches[0].score - 1.0).abs() < 1e-6);
        assert_eq!((r.searched_images, r.searched_individuals), (4, 3));
        assert!(!r.new_individual);
    }

    #[test]
    fn the_nearest_unidentified_crops_are_those_without_an_individual_that_the_filter_admits() {
        let mut g = gallery();
        g.push(&[0.0, 1.0, 0.1], AnnotationId(7), None, Part::Fluke, Side::Unknown, None).unwrap();
        g.push(&[0.0, 0.9, 0.4], AnnotationId(8), None, Part::DorsalFin, Side::Unknown, None).unwrap();
        let all = g.nearest_unidentified(&[0.0, 2.0, 0.0], 5, &Filter::default(), None);
        let found: Vec<i64> = all.iter().map(|n| n.annotation.0).collect();
        assert_eq!(found, [7, 8, 5], "identified crops (3 is nearer than 8) are never listed");
        assert!((all[0].score - 1.0 / 1.01f32.sqrt()).abs() < 1e-5, "{all:?}");
        let flukes = Filter { part: Some(Part::Fluke), ..Default::default() };
        let found: Vec<i64> = g
            .nearest_unidentified(&[0.0, 2.0, 0.0], 5, &flukes, Some(AnnotationId(7)))
            .iter()
            .map(|n| n.annotation.0)
            .collect();
        assert_eq!(found, [5], "the filter and the excluded query apply");
        assert!(g.nearest_unidentified(&[1.0, 0.0], 5, &Filter::default(), None).is_empty(), "another model's query");
    }

    #[test]
    fn filters_restrict_and_say_how_many_were_searched() {
        let f = Filter { part: Some(Part::Fluke), ..Default::default() };
        let r = gallery().search(&[0.7, 0.7, 0.0], 1, &f, Some(AnnotationId(1)), Some(0.95));
        assert_eq!(r.matches.len(), 1);
        assert_eq!((r.searched_images, r.searched_individuals), (2, 2));
        assert_eq!(r.filter, "part fluke");
        assert!(r.new_individual, "best score under the threshold flags a new individual");
    }

    /// The plain algorithm: every row scored exactly, best row per individual.
    fn brute_force(
        g: &Gallery,
        q: &[f32],
        top: usize,
        filter: &Filter,
        exclude: Option<AnnotationId>,
    ) -> Vec<(String, f32, AnnotationId)> {
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
        let mut ranked: Vec<(String, f32, AnnotationId)> = best
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
                g.push(&v, AnnotationId(row as i64), individual.as_deref(), Part::Fluke, side, None).unwrap();
            }
            g.push(&vec![0.0; dim], AnnotationId(9999), Some("I00"), Part::Fluke, Side::Unknown, None).unwrap();
            for trial in 0..60 {
                let c = &centres[trial % 20];
                let q: Vec<f32> = c.iter().map(|x| x + 0.05 * (rng.random::<f32>() - 0.5)).collect();
                let filter = Filter { side: [None, Some(Side::Left)][trial % 2], ..Default::default() };
                let (top, exclude) = ([1, 5, 40, 100][trial % 4], Some(AnnotationId(trial as i64)));
                let got = g.search(&q, top, &filter, exclude, None);
                let got: Vec<(String, f32, AnnotationId)> =
                    got.matches.into_iter().map(|m| (m.individual, m.score, m.best_annotation)).collect();
                let want = brute_force(&g, &q, top, &filter, exclude);
                let scores = |v: &[(String, f32, AnnotationId)]| v.iter().map(|m| m.1.to_bits()).collect::<Vec<_>>();
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
        assert!(g.push(&[f32::NAN, 1.0], AnnotationId(1), Some("A"), Part::Fluke, Side::Unknown, None).is_err());
        assert!(g.is_empty());
    }
}
