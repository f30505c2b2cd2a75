//! The one search entry point (CLI, app and evaluator alike): exact cosine similarity over
//! one contiguous matrix of L2-normalised embeddings, ranked by individual with one vote
//! per individual (its best-matching image), under filters that are always reported.

use rayon::prelude::*;
use serde::Serialize;

use crate::model::{Part, Side};

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

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums let the compiler vectorise without reassociation.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
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

    /// Cosine similarity of a normalised query with every gallery image.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        const ROWS_PER_TASK: usize = 2048;
        let mut out = vec![0f32; self.entries.len()];
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            for (i, s) in chunk.iter_mut().enumerate() {
                *s = dot(query, self.vector(first + i));
            }
        });
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
        let scores = self.scores(&q);
        let mut best: Vec<Option<(f32, usize)>> = vec![None; self.individuals.len()];
        let mut searched_images = 0;
        for (row, e) in self.entries.iter().enumerate() {
            let Some(ind) = e.individual else { continue };
            if Some(e.annotation) == exclude || !filter.admits(e) {
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
