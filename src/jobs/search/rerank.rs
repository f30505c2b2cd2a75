//! Local verification of the shortlist: the individuals the global score ranks highest are
//! checked against the query by keypoint matches that one similarity transform explains
//! (see `models::local`), the way photo-identification has long confirmed a candidate.
//!
//! Each shortlisted individual is verified through its crops nearest the query by the global
//! score (up to `CROPS_PER_INDIVIDUAL`: the more views, the likelier one matches the query's
//! side and pose), and keeps the best.

use crate::base::ids::AnnotationId;
use crate::catalogue::Catalogue;
use crate::models::local::{LOCAL_METHOD, LocalFeatures, Verification, verify};

use super::calibrate::Calibration;
use super::{Gallery, Match, SearchResult, Verified};

/// Individuals of the global ranking that are verified locally.
pub const SHORTLIST: usize = 30;
/// Crops of each shortlisted individual verified, the nearest by the global score. More crops
/// find more of an animal's views: on right-whale heads never trained on (1,407 queries,
/// frozen DINOv2) local-only MAP@5 went 0.393 / 0.448 / 0.461 with 3 / 10 / 20 crops, for
/// 31 / 71 / 105 ms a query on two cores.
pub const CROPS_PER_INDIVIDUAL: usize = 20;
/// Without a calibration, verified matches re-order the shortlist only from this many: two
/// fit a similarity exactly and three agree by chance between unrelated crops often enough to
/// put a wrong animal first. (Calibrated, every count counts, at the probability it earned.)
pub const STRONG_MATCHES: usize = 4;

/// The verified matches that re-order a shortlist without a calibration: `n` from
/// `STRONG_MATCHES` on, else none.
pub fn strong_matches(n: usize) -> usize {
    if n >= STRONG_MATCHES { n } else { 0 }
}

/// What the local check found for one shortlisted individual.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub individual: String,
    /// Its global score (best crop's cosine).
    pub global: f32,
    /// Its crop with the most verified matches, and those matches.
    pub annotation: AnnotationId,
    pub verification: Verification,
    /// The verified matches as lines: query x, y and gallery x, y, as fractions of each crop.
    pub lines: Vec<[f32; 4]>,
}

impl Evidence {
    /// The local score: verified matches with the individual's best crop.
    pub fn local(&self) -> f32 {
        self.verification.score()
    }
}

/// The gallery crops of each shortlisted individual nearest the query by the global score
/// (at most `CROPS_PER_INDIVIDUAL`, best first), in shortlist order; `exclude` leaves one
/// crop out (the query itself in leave-one-out).
pub fn nearest_crops(
    g: &Gallery,
    query_vector: &[f32],
    shortlist: &[Match],
    exclude: Option<AnnotationId>,
) -> Vec<Vec<AnnotationId>> {
    let mut q = query_vector.to_vec();
    super::normalise(&mut q);
    let scores = g.scores(&q);
    let index: std::collections::HashMap<&str, usize> =
        shortlist.iter().enumerate().map(|(i, m)| (m.individual.as_str(), i)).collect();
    let mut nearest: Vec<Vec<(f32, AnnotationId)>> = vec![Vec::new(); shortlist.len()];
    for (row, e) in g.entries().iter().enumerate() {
        let Some(i) = e.individual else { continue };
        if Some(e.annotation) == exclude {
            continue;
        }
        if let Some(&slot) = index.get(g.individuals()[i as usize].as_str()) {
            nearest[slot].push((scores[row], e.annotation));
        }
    }
    nearest
        .into_iter()
        .map(|mut crops| {
            crops.sort_by(|a, b| b.0.total_cmp(&a.0));
            crops.into_iter().take(CROPS_PER_INDIVIDUAL).map(|(_, a)| a).collect()
        })
        .collect()
}

/// The verified matches of `query` with `gallery` (`v`) as lines: query x, y and gallery
/// x, y, as fractions of each crop.
fn lines_of(query: &LocalFeatures, gallery: &LocalFeatures, v: &Verification) -> Vec<[f32; 4]> {
    v.inliers
        .iter()
        .map(|p| {
            let (qx, qy) = query.relative(p.query);
            let (gx, gy) = gallery.relative(p.gallery);
            [qx, qy, gx, gy]
        })
        .collect()
}

/// Verifies the `shortlist` (a global ranking of `g`, best first) against the query's local
/// features through each individual's `nearest_crops`; `local_of` gives a gallery crop's
/// features (crops without are skipped). In shortlist order.
pub fn verify_shortlist<'f>(
    g: &Gallery,
    query_vector: &[f32],
    query: &LocalFeatures,
    shortlist: &[Match],
    local_of: &(dyn Fn(AnnotationId) -> Option<&'f LocalFeatures> + Sync),
    exclude: Option<AnnotationId>,
) -> Vec<Evidence> {
    use rayon::prelude::*;
    shortlist
        .par_iter()
        .zip(nearest_crops(g, query_vector, shortlist, exclude))
        .map(|(m, crops)| {
            let mut best = Evidence {
                individual: m.individual.clone(),
                global: m.score,
                annotation: m.best_annotation,
                verification: Verification::default(),
                lines: Vec::new(),
            };
            for annotation in crops {
                let Some(features) = local_of(annotation) else { continue };
                let v = verify(query, features);
                if v.inliers.len() > best.verification.inliers.len() {
                    best.lines = lines_of(query, features, &v);
                    best.annotation = annotation;
                    best.verification = v;
                }
            }
            best
        })
        .collect()
}

/// Re-orders `result`'s shortlist by the `evidence` found for it (same order as its first
/// matches): by the calibrated probability when there is a calibration, else by verified
/// matches where there are at least `STRONG_MATCHES` (the rest, and ties, in the global
/// order). The matches after the shortlist keep their place; with a calibration and a
/// `threshold` (a probability), the new-individual verdict is taken on the best probability.
pub fn apply(
    result: &mut SearchResult,
    evidence: &[Evidence],
    calibration: Option<&Calibration>,
    threshold: Option<f32>,
) {
    let n = evidence.len().min(result.matches.len());
    for (m, e) in result.matches.iter_mut().zip(evidence) {
        m.verified = Some(Verified {
            matches: e.verification.inliers.len(),
            annotation: e.annotation,
            probability: calibration.map(|c| c.probability(e.global, Some(e.local()))),
            lines: e.lines.clone(),
        });
    }
    let strong = |n: usize| if calibration.is_some() { n } else { strong_matches(n) };
    let key = |m: &Match| m.verified.as_ref().map_or((0.0, 0), |v| (v.probability.unwrap_or(0.0), strong(v.matches)));
    // Stable: equal keys keep the global order.
    result.matches[..n].sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1))
    });
    result.reranked = true;
    if let (Some(_), Some(t)) = (calibration, threshold) {
        result.threshold = Some(t);
        result.threshold_is_probability = true;
        result.new_individual =
            result.matches.first().and_then(|m| m.verified.as_ref()?.probability).is_none_or(|p| p < t);
    }
}

/// The catalogue settings that hold a model's fusion of global and local scores and the
/// new-individual threshold on the fused probability (`whaleid eval --save-threshold`).
pub fn fusion_settings(model: &str) -> (String, String) {
    (format!("fusion/{model}"), format!("fused_threshold/{model}"))
}

/// The stored fusion for `model` and its threshold; `Err` names a stored fusion that is damaged.
pub fn stored_fusion(cat: &Catalogue, model: &str) -> Result<Option<(Calibration, Option<f32>)>, String> {
    let (fusion, threshold) = fusion_settings(model);
    let Some(text) = cat.setting(&fusion).ok().flatten() else { return Ok(None) };
    let calibration = Calibration::from_json(&text)
        .map_err(|e| format!("{}: the stored setting {fusion}: {e}", cat.path().display()))?;
    let threshold = cat.setting(&threshold).ok().flatten().and_then(|v| v.parse().ok());
    Ok(Some((calibration, threshold)))
}

/// The query of a search to verify: features computed from its photo, or a catalogue crop.
pub enum QueryCrop<'a> {
    Features(&'a LocalFeatures),
    Annotation(AnnotationId),
}

/// Verifies the shortlist of `result` (a search of `g` for `query_vector` under `model`)
/// by local features, with the gallery crops' features from the catalogue (computed and
/// stored where missing), and re-orders it by the stored fusion (see `apply`). Returns
/// whether the new-individual verdict is now on the fused probability, and the problems met
/// (photos that cannot be read, a damaged stored fusion).
pub fn rerank_search(
    cat: &mut Catalogue,
    model: &str,
    g: &Gallery,
    query_vector: &[f32],
    query: QueryCrop<'_>,
    result: &mut SearchResult,
    progress: &dyn crate::base::progress::Progress,
) -> anyhow::Result<(bool, Vec<String>)> {
    let mut problems = Vec::new();
    let fusion = stored_fusion(cat, model).unwrap_or_else(|e| {
        problems.push(format!("{e}; ranked by verified matches instead"));
        None
    });
    let exclude = match query {
        QueryCrop::Annotation(a) => Some(a),
        QueryCrop::Features(_) => None,
    };
    let short = &result.matches[..result.matches.len().min(SHORTLIST)];
    let crops = nearest_crops(g, query_vector, short, exclude);
    let mut wanted: Vec<AnnotationId> = crops.iter().flatten().copied().collect();
    wanted.extend(exclude);
    wanted.extend(result.unidentified.iter().map(|n| n.annotation));
    let (local, failed) = catalogue_local(cat, &wanted, progress)?;
    problems.extend(failed);
    let query = match query {
        QueryCrop::Features(f) => Some(f),
        QueryCrop::Annotation(a) => local.get(&a),
    };
    let Some(query) = query else {
        problems.push("the query crop's photo could not be read: not verified".into());
        return Ok((false, problems));
    };
    let evidence = verify_shortlist(g, query_vector, query, short, &|a| local.get(&a), exclude);
    let (calibration, threshold) = fusion.map_or((None, None), |(c, t)| (Some(c), t));
    apply(result, &evidence, calibration.as_ref(), threshold);
    // The nearest unidentified crops are verified the same way (their order stays the
    // global one): the evidence for naming two photos as one new animal.
    for n in &mut result.unidentified {
        let Some(features) = local.get(&n.annotation) else { continue };
        let v = verify(query, features);
        n.verified = Some(Verified {
            matches: v.inliers.len(),
            annotation: n.annotation,
            probability: calibration.as_ref().map(|c| c.probability(n.score, Some(v.score()))),
            lines: lines_of(query, features, &v),
        });
    }
    Ok((result.threshold_is_probability, problems))
}

/// Local features of `annotations` from the catalogue where they are stored fresh; the rest
/// computed from their photos (each decoded once) and stored. Photos that cannot be read
/// are named in the problems and their crops left out.
pub fn catalogue_local(
    cat: &mut Catalogue,
    annotations: &[AnnotationId],
    progress: &dyn crate::base::progress::Progress,
) -> anyhow::Result<(std::collections::HashMap<AnnotationId, LocalFeatures>, Vec<String>)> {
    let mut stored = cat.fresh_local_features(LOCAL_METHOD)?;
    let mut out = std::collections::HashMap::new();
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for &a in annotations {
        if out.contains_key(&a) {
            continue;
        }
        match stored.remove(&a).map(|bytes| LocalFeatures::from_bytes(&bytes)) {
            Some(Ok(f)) => {
                out.insert(a, f);
            }
            // Damaged or absent: computed again.
            Some(Err(_)) | None => {
                let Some(annotation) = cat.annotation(a)? else { continue };
                let Some(photo) = cat.photo(annotation.photo_id)? else { continue };
                missing.push((a, cat.photo_file(&photo.stored_path), annotation.bbox));
            }
        }
    }
    if !missing.is_empty() {
        let (computed, failed) = compute_local(&missing, progress);
        problems.extend(failed);
        let rows: Vec<(AnnotationId, String, Vec<u8>)> = missing
            .iter()
            .filter_map(|(a, _, bbox)| {
                computed.get(a).map(|f| (*a, crate::catalogue::box_key(bbox.as_ref()), f.to_bytes()))
            })
            .collect();
        cat.put_local_features(LOCAL_METHOD, &rows)?;
        out.extend(computed);
    }
    Ok((out, problems))
}

/// Local features of crops `(annotation, photo file, box)`, each photo decoded once, on
/// every core; photos that cannot be read are named in the problems and their crops left out.
pub fn compute_local(
    crops: &[(AnnotationId, std::path::PathBuf, Option<crate::base::vocabulary::BoxPx>)],
    progress: &dyn crate::base::progress::Progress,
) -> (std::collections::HashMap<AnnotationId, LocalFeatures>, Vec<String>) {
    use rayon::prelude::*;
    let mut by_photo: std::collections::BTreeMap<&std::path::Path, Vec<usize>> = Default::default();
    for (i, (_, photo, _)) in crops.iter().enumerate() {
        by_photo.entry(photo.as_path()).or_default().push(i);
    }
    let by_photo: Vec<_> = by_photo.into_iter().collect();
    progress.stage("local features", by_photo.len() as u64);
    let mut features = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for chunk in by_photo.chunks(64) {
        if progress.cancelled() {
            break;
        }
        let done: Vec<Result<Vec<(AnnotationId, LocalFeatures)>, String>> = chunk
            .par_iter()
            .map(|(photo, indices)| {
                let img = crate::base::photo::decode_file(photo).map_err(|e| format!("{}: {e}", photo.display()))?;
                Ok(indices
                    .iter()
                    .map(|&i| (crops[i].0, LocalFeatures::of_crop(&crate::base::crop::crop(&img, crops[i].2))))
                    .collect())
            })
            .collect();
        for d in done {
            match d {
                Ok(rows) => features.extend(rows),
                Err(e) => problems.push(e),
            }
        }
        progress.advance(chunk.len() as u64);
    }
    (features, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::local::MatchPair;

    fn result(names: &[&str]) -> SearchResult {
        let matches = names
            .iter()
            .enumerate()
            .map(|(k, n)| Match {
                individual: n.to_string(),
                score: 0.9 - k as f32 * 0.01,
                best_annotation: AnnotationId(k as i64),
                verified: None,
            })
            .collect();
        SearchResult {
            matches,
            unidentified: Vec::new(),
            photos: Default::default(),
            filter: String::new(),
            searched_images: names.len(),
            searched_individuals: names.len(),
            threshold: None,
            threshold_is_probability: false,
            reranked: false,
            new_individual: false,
        }
    }

    fn evidence(r: &SearchResult, inliers: &[usize]) -> Vec<Evidence> {
        r.matches
            .iter()
            .zip(inliers)
            .map(|(m, &n)| Evidence {
                individual: m.individual.clone(),
                global: m.score,
                annotation: m.best_annotation,
                verification: Verification {
                    tentative: n,
                    inliers: (0..n).map(|i| MatchPair { query: i, gallery: i }).collect(),
                },
                lines: Vec::new(),
            })
            .collect()
    }

    fn order(r: &SearchResult) -> Vec<&str> {
        r.matches.iter().map(|m| m.individual.as_str()).collect()
    }

    #[test]
    fn without_a_calibration_only_strong_verified_matches_reorder_the_shortlist() {
        // Three matches by chance do not overtake the global order...
        let mut r = result(&["A", "B", "C"]);
        let e = evidence(&r, &[0, STRONG_MATCHES - 1, 0]);
        apply(&mut r, &e, None, None);
        assert_eq!(order(&r), ["A", "B", "C"]);
        assert!(r.reranked);
        assert_eq!(r.matches[1].verified.as_ref().unwrap().matches, STRONG_MATCHES - 1, "still shown");
        // ...enough do, and more beat fewer.
        let mut r = result(&["A", "B", "C"]);
        let e = evidence(&r, &[STRONG_MATCHES, 2, STRONG_MATCHES + 5]);
        apply(&mut r, &e, None, None);
        assert_eq!(order(&r), ["C", "A", "B"]);
    }
}
