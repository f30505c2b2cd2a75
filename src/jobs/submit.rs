//! `whaleid submit`: a Kaggle-style `submission.csv` for a folder of query photos, as the
//! humpback competition scored it: `Image,Id` with five space-separated predictions and
//! `new_whale` placed where the best remaining score falls under the new-individual threshold.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::base::progress::Progress;
use crate::catalogue::Catalogue;
use crate::jobs::embed::EmbedOptions;
use crate::jobs::search::{Filter, Gallery, rerank as search_rerank};
use crate::models::local::LocalFeatures;
use crate::models::{Embedder, prepare};

/// A query photo ready to search: its embedder input and, when re-ranking, its local features.
type PreparedQuery = (Vec<f32>, Option<LocalFeatures>);

/// The label the Kaggle humpback competition used for "not in the catalogue".
pub const NEW_WHALE: &str = "new_whale";
const PREDICTIONS: usize = 5;
const BATCH: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub out: PathBuf,
    pub queries: usize,
    /// The new-individual threshold applied: on the cosine, or on the fused probability
    /// when `reranked` and the model has a stored fusion.
    pub threshold: Option<f32>,
    pub threshold_is_probability: bool,
    /// Whether each query's shortlist was verified by local features.
    pub reranked: bool,
    pub searched_individuals: usize,
    /// Query photos that could not be read (listed in the CSV with `new_whale` only), and
    /// catalogue crops that could not be embedded.
    pub problems: Vec<String>,
}

impl std::fmt::Display for SubmitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verified = if self.reranked { ", shortlists verified by local features" } else { "" };
        write!(f, "wrote {} ({} queries{verified}, threshold ", self.out.display(), self.queries)?;
        match self.threshold {
            Some(t) if self.threshold_is_probability => write!(f, "p {t:.4})")?,
            Some(t) => write!(f, "{t:.4})")?,
            None => write!(f, "none: no new_whale)")?,
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Five predictions with `new_whale` inserted before the first score under `threshold`.
pub fn predictions(ranking: &[(String, f32)], threshold: Option<f32>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(PREDICTIONS);
    let mut placed_new = threshold.is_none();
    for (id, score) in ranking {
        if !placed_new && threshold.is_some_and(|t| *score < t) {
            out.push(NEW_WHALE.into());
            placed_new = true;
        }
        out.push(id.clone());
    }
    if !placed_new {
        out.push(NEW_WHALE.into());
    }
    out.truncate(PREDICTIONS);
    out
}

/// Computes what is missing of `cat`'s embeddings, then ranks its individuals for each photo
/// under `queries`; with `rerank`, each shortlist is verified by local features and ranked
/// by the fused probability (see `search::rerank`).
pub fn submit(
    cat: &mut Catalogue,
    embedder: &Embedder,
    queries: &Path,
    out: &Path,
    rerank: bool,
    progress: &dyn Progress,
) -> anyhow::Result<SubmitReport> {
    let photos = crate::base::photo::photos_under(queries);
    if photos.is_empty() {
        anyhow::bail!("{}: no photos found", queries.display());
    }
    let (load, embedded) = Gallery::embedded(cat, embedder, &EmbedOptions::default(), progress)?;
    if embedded.cancelled {
        anyhow::bail!("cancelled while embedding {}", cat.path().display());
    }
    if load.gallery.is_empty() {
        anyhow::bail!("{}: no crop could be embedded to search", cat.path().display());
    }
    let global_threshold = crate::jobs::eval::stored_threshold(cat, embedder.key());
    let mut threshold = global_threshold;
    let mut threshold_is_probability = false;
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["Image", "Id"])?;
    let mut problems = embedded.problems;
    let mut searched_individuals = 0;
    progress.stage("searching", photos.len() as u64);
    for chunk in photos.chunks(BATCH) {
        let inputs: Vec<Result<PreparedQuery, String>> = chunk
            .par_iter()
            .map(|p| {
                crate::base::photo::decode_file(p)
                    .map(|img| (prepare(&img, None, embedder.size()), rerank.then(|| LocalFeatures::of_crop(&img))))
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect();
        let good: Vec<Vec<f32>> = inputs.iter().filter_map(|r| r.as_ref().ok().map(|(v, _)| v.clone())).collect();
        let mut vectors = embedder.embed(&good)?.into_iter();
        for (photo, input) in chunk.iter().zip(inputs) {
            let name = photo.strip_prefix(queries).unwrap_or(photo).to_string_lossy().replace('\\', "/");
            let ids = match input {
                Ok((_, local)) => {
                    let Some(v) = vectors.next() else { anyhow::bail!("the embedder returned too few vectors") };
                    let listed = if rerank { PREDICTIONS.max(search_rerank::SHORTLIST) } else { PREDICTIONS };
                    let mut r = load.gallery.search(&v, listed, &Filter::default(), None, global_threshold);
                    searched_individuals = r.searched_individuals;
                    if let Some(local) = &local {
                        let query = search_rerank::QueryCrop::Features(local);
                        let (on_probability, found) = search_rerank::rerank_search(
                            cat,
                            embedder.key(),
                            &load.gallery,
                            &v,
                            query,
                            &mut r,
                            &crate::base::progress::Silent,
                        )?;
                        for p in found {
                            if !problems.contains(&p) {
                                problems.push(p);
                            }
                        }
                        if on_probability {
                            threshold = r.threshold;
                            threshold_is_probability = true;
                        }
                    }
                    let ranking: Vec<(String, f32)> = r
                        .matches
                        .into_iter()
                        .map(|m| match (&m.verified, threshold_is_probability) {
                            (Some(v), true) => (m.individual, v.probability.unwrap_or(0.0)),
                            (None, true) => (m.individual, 0.0),
                            (_, false) => (m.individual, m.score),
                        })
                        .collect();
                    predictions(&ranking, threshold)
                }
                Err(problem) => {
                    problems.push(problem);
                    vec![NEW_WHALE.to_string()]
                }
            };
            writer.write_record([name, ids.join(" ")])?;
        }
        progress.advance(chunk.len() as u64);
    }
    let bytes = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    write_atomically(out, &bytes)?;
    Ok(SubmitReport {
        out: out.to_path_buf(),
        queries: photos.len(),
        threshold,
        threshold_is_probability,
        reranked: rerank,
        searched_individuals,
        problems,
    })
}

/// Writes through a temporary file in the same folder, so a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(scores: &[(&str, f32)]) -> Vec<(String, f32)> {
        scores.iter().map(|(i, s)| (i.to_string(), *s)).collect()
    }

    #[test]
    fn new_whale_goes_where_scores_fall_under_the_threshold() {
        let r = ranking(&[("A", 0.9), ("B", 0.8), ("C", 0.4), ("D", 0.3), ("E", 0.2)]);
        assert_eq!(predictions(&r, Some(0.5)), ["A", "B", "new_whale", "C", "D"]);
        assert_eq!(predictions(&r, Some(0.95)), ["new_whale", "A", "B", "C", "D"]);
        assert_eq!(predictions(&r, Some(0.1)), ["A", "B", "C", "D", "E"]);
        assert_eq!(predictions(&r[..2], Some(0.1)), ["A", "B", "new_whale"]);
        assert_eq!(predictions(&r, None), ["A", "B", "C", "D", "E"]);
        assert_eq!(predictions(&[], Some(0.5)), ["new_whale"]);
    }
}
