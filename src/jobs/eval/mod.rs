//! `whaleid eval`: how well the embedder identifies individuals on labelled data, reported the
//! way the Kaggle humpback and Happywhale pipelines did, always beside a raw-pixel baseline.
//!
//! Protocols:
//! - closed set: every labelled crop whose individual has another crop in the gallery is a
//!   query against all the others (leave-one-out), or, when photos are tagged `role=query`
//!   (a labels CSV with a `role` column), those photos are the queries and the rest the gallery;
//! - open set: a seeded share of the individuals is held out of the gallery, so their crops
//!   (and crops whose individual has no other) must be answered `new_individual`. The
//!   threshold is tuned by sweeping for the best open-set MAP@5, and also cross-validated
//!   (tuned on one half of the individuals, applied to the other) so the figure is honest.

pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;

use crate::base::ids::AnnotationId;
use crate::base::progress::Progress;
use crate::base::vocabulary::BoxPx;
use crate::catalogue::Catalogue;
use crate::jobs::embed::EmbedOptions;
use crate::jobs::eval::metrics::{ClosedSet, OpenSet, Ranked, closed_set, open_set, tune_threshold};
use crate::jobs::import::{ImportOptions, import};
use crate::jobs::search::calibrate::{self, Calibration, Pair};
use crate::jobs::search::{Filter, Gallery, rerank};
use crate::models::local::LocalFeatures;
use crate::models::{Embedder, pixel_vector};

/// Ranks kept per query: enough for Recall@32.
const RANKS_KEPT: usize = 32;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub batch: usize,
    /// Share of individuals held out of the gallery for the open-set evaluation (0 = none).
    pub open_set_fraction: f64,
    pub seed: u64,
    /// Also verify each query's shortlist by local features, and report local and fused
    /// rankings beside the global one.
    pub rerank: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch: 16, open_set_fraction: 0.2, seed: 0, rerank: true }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: Vec<String>,
    pub model: String,
    pub device: String,
    pub photos: usize,
    /// Crops (annotations) that are not rejected.
    pub annotations: usize,
    pub labelled: usize,
    pub individuals: usize,
    pub protocol: String,
    pub closed_set: ClosedSet,
    /// The same protocol on 32 x 32 colour thumbnails.
    pub pixel_baseline: ClosedSet,
    pub open_set: Option<OpenSetReport>,
    /// The closed set again, with each query's shortlist verified by local features.
    pub local: Option<LocalReport>,
    /// Files and crops that could not be used, each naming the file.
    pub problems: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenSetReport {
    pub held_out_individuals: usize,
    /// Tuned on all queries (what `--save-threshold` stores).
    pub tuned: OpenSet,
    /// MAP@5 with the threshold tuned on the other half of the individuals.
    pub cross_validated_map5: f64,
    pub pixel_baseline: OpenSet,
    pub pixel_baseline_cross_validated_map5: f64,
}

/// The closed-set protocol ranked three ways: by the global score, by the local score
/// (verified keypoint matches) within the global shortlist, and by the two fused.
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    /// Individuals of the global ranking verified per query.
    pub shortlist: usize,
    pub local: ClosedSet,
    pub fused: ClosedSet,
    /// The fused probability's open set: its threshold is a probability.
    pub open_set: Option<OpenSetMetrics>,
    /// Same-individual pairs in the shortlists, and all pairs (the fusion's fitting data).
    pub same_pairs: usize,
    pub pairs: usize,
    /// The fusion fitted on all pairs: what `--save-threshold` stores.
    pub calibration: Option<Calibration>,
    pub seconds: f64,
}

/// Imports `datasets` into a temporary catalogue and evaluates it.
pub fn evaluate_datasets(
    datasets: &[PathBuf],
    embedder: &Embedder,
    options: &EvalOptions,
    progress: &dyn Progress,
) -> anyhow::Result<EvalReport> {
    let dir = tempfile::Builder::new().prefix("whaleid-eval").tempdir()?;
    let mut cat = Catalogue::create(&dir.path().join("eval.whaleid"))?;
    let mut problems = Vec::new();
    for dataset in datasets {
        let report = import(&mut cat, dataset, &ImportOptions::default(), progress)?;
        problems.extend(report.problems.iter().map(|p| p.to_string()));
    }
    let mut report = evaluate_catalogue(&mut cat, embedder, options, progress)?;
    report.dataset = datasets.iter().map(|d| d.display().to_string()).collect();
    problems.append(&mut report.problems);
    report.problems = problems;
    Ok(report)
}

/// Embeds what is missing in `cat` and evaluates its labelled crops.
pub fn evaluate_catalogue(
    cat: &mut Catalogue,
    embedder: &Embedder,
    options: &EvalOptions,
    progress: &dyn Progress,
) -> anyhow::Result<EvalReport> {
    let started = Instant::now();
    let (load, embedded) = Gallery::embedded(cat, embedder, &EmbedOptions { batch: options.batch }, progress)?;
    let mut problems = embedded.problems;
    let gallery = load.gallery;
    let queries: HashSet<AnnotationId> = cat.annotations_tagged("role=query")?.into_iter().collect();

    progress.stage("pixel baseline", gallery.len() as u64);
    let crops: HashMap<AnnotationId, (PathBuf, Option<BoxPx>)> = cat
        .embedding_states(embedder.key())?
        .into_iter()
        .map(|s| (s.annotation.id, (cat.photo_file(&s.photo_path), s.annotation.bbox)))
        .collect();
    let (pixels, pixel_problems) = pixel_gallery(&gallery, &crops);
    problems.extend(pixel_problems);

    let protocol = if queries.is_empty() {
        "leave-one-out over labelled crops".to_string()
    } else {
        format!("{} photos tagged role=query against the rest", queries.len())
    };
    let (closed, open) = gallery_metrics(&gallery, &queries, options.open_set_fraction, options.seed);
    let (pixel_closed, pixel_open) = gallery_metrics(&pixels, &queries, options.open_set_fraction, options.seed);
    let open = open.zip(pixel_open).map(|(model, pixels)| OpenSetReport {
        held_out_individuals: model.held_out_individuals,
        tuned: model.tuned,
        cross_validated_map5: model.cross_validated_map5,
        pixel_baseline: pixels.tuned,
        pixel_baseline_cross_validated_map5: pixels.cross_validated_map5,
    });
    let local = if options.rerank {
        let listed: Vec<AnnotationId> = gallery.entries().iter().map(|e| e.annotation).collect();
        let (features, local_problems) = rerank::catalogue_local(cat, &listed, progress)?;
        problems.extend(local_problems);
        let held_out = if options.open_set_fraction > 0.0 {
            held_out_individuals(&gallery, options.open_set_fraction, options.seed)
        } else {
            HashSet::new()
        };
        Some(local_metrics(&gallery, &queries, &features, &held_out, progress))
    } else {
        None
    };
    let labelled = gallery.entries().iter().filter(|e| e.individual.is_some()).count();
    Ok(EvalReport {
        dataset: vec![cat.path().display().to_string()],
        model: embedder.key().to_string(),
        device: embedder.device_label().to_string(),
        photos: crops.values().map(|(p, _)| p).collect::<HashSet<_>>().len(),
        annotations: embedded.annotations,
        labelled,
        individuals: gallery.individuals().len(),
        protocol,
        closed_set: closed,
        pixel_baseline: pixel_closed,
        open_set: open,
        local,
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Open-set figures of one gallery.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetMetrics {
    pub held_out_individuals: usize,
    pub tuned: OpenSet,
    pub cross_validated_map5: f64,
}

/// Closed-set metrics (leave-one-out, or `queries` against the rest when not empty) and, for
/// a positive `open_set_fraction`, open-set metrics with that share of individuals held out.
/// The one evaluation protocol, used by `whaleid eval` and by training's validation.
pub fn gallery_metrics(
    g: &Gallery,
    queries: &HashSet<AnnotationId>,
    open_set_fraction: f64,
    seed: u64,
) -> (ClosedSet, Option<OpenSetMetrics>) {
    let closed = closed_set(&closed_set_results(g, queries));
    let open = (open_set_fraction > 0.0).then(|| {
        let held_out = held_out_individuals(g, open_set_fraction, seed);
        let (tuned, cross_validated_map5) = open_set_eval(g, queries, &held_out);
        OpenSetMetrics { held_out_individuals: held_out.len(), tuned, cross_validated_map5 }
    });
    (closed, open)
}

/// The raw-pixel gallery with the same rows as `gallery`; crops whose photo cannot be read
/// are left out and reported.
fn pixel_gallery(gallery: &Gallery, crops: &HashMap<AnnotationId, (PathBuf, Option<BoxPx>)>) -> (Gallery, Vec<String>) {
    let mut by_photo: HashMap<&Path, Vec<usize>> = HashMap::new();
    for (row, e) in gallery.entries().iter().enumerate() {
        if let Some((photo, _)) = crops.get(&e.annotation) {
            by_photo.entry(photo.as_path()).or_default().push(row);
        }
    }
    let by_photo: Vec<_> = by_photo.into_iter().collect();
    let computed: Vec<Result<Vec<_>, String>> = by_photo
        .par_iter()
        .map(|(photo, rows)| {
            let img = crate::base::photo::decode_file(photo).map_err(|e| format!("{}: {e}", photo.display()))?;
            Ok(rows
                .iter()
                .map(|&row| (row, pixel_vector(&img, crops[&gallery.entries()[row].annotation].1)))
                .collect::<Vec<_>>())
        })
        .collect();
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; gallery.len()];
    let mut problems = Vec::new();
    for c in computed {
        match c {
            Ok(rows) => rows.into_iter().for_each(|(row, v)| vectors[row] = Some(v)),
            Err(e) => problems.push(e),
        }
    }
    let mut pixels =
        Gallery::new(crate::models::PIXEL_BASELINE_SIDE as usize * crate::models::PIXEL_BASELINE_SIDE as usize * 3);
    for (row, v) in vectors.into_iter().enumerate() {
        if let Some(v) = v {
            push_row(&mut pixels, gallery, row, &v);
        }
    }
    (pixels, problems)
}

fn individual_of(g: &Gallery, row: usize) -> Option<&str> {
    g.entries()[row].individual.map(|i| g.individuals()[i as usize].as_str())
}

fn images_per_individual(g: &Gallery) -> HashMap<&str, usize> {
    let mut images_of: HashMap<&str, usize> = HashMap::new();
    for row in 0..g.len() {
        if let Some(ind) = individual_of(g, row) {
            *images_of.entry(ind).or_default() += 1;
        }
    }
    images_of
}

fn push_row(target: &mut Gallery, source: &Gallery, row: usize, vector: &[f32]) {
    let e = &source.entries()[row];
    // Same dimension by construction; a refusal would only drop the row.
    let _ = target.push(vector, e.annotation, individual_of(source, row), e.part, e.side, e.species.clone());
}

/// `g` without the rows `drop` selects.
fn without(g: &Gallery, drop: impl Fn(usize) -> bool) -> Gallery {
    let mut out = Gallery::new(g.dim());
    for row in (0..g.len()).filter(|&r| !drop(r)) {
        push_row(&mut out, g, row, g.vector(row));
    }
    out
}

/// The gallery a query is searched in: all of `g` in leave-one-out, else `g` without the
/// tagged queries.
fn searched_gallery(g: &Gallery, queries: &HashSet<AnnotationId>) -> Gallery {
    if queries.is_empty() { g.clone() } else { without(g, |r| queries.contains(&g.entries()[r].annotation)) }
}

/// Query rows: the tagged queries, else every labelled row.
fn query_rows<'a>(g: &'a Gallery, queries: &'a HashSet<AnnotationId>) -> impl Iterator<Item = usize> + 'a {
    (0..g.len()).filter(move |&row| {
        individual_of(g, row).is_some() && (queries.is_empty() || queries.contains(&g.entries()[row].annotation))
    })
}

fn ranking(g: &Gallery, query: &[f32], exclude: Option<AnnotationId>) -> Vec<(String, f32)> {
    g.search(query, RANKS_KEPT, &Filter::default(), exclude, None)
        .matches
        .into_iter()
        .map(|m| (m.individual, m.score))
        .collect()
}

fn closed_set_results(g: &Gallery, queries: &HashSet<AnnotationId>) -> Vec<Ranked> {
    query_outcomes(g, queries, &crate::base::progress::Silent)
        .into_iter()
        .filter(|q| q.others > 0)
        .map(|q| Ranked {
            truth: q.truth,
            ranking: q.ranking.into_iter().map(|m| (m.individual, m.score)).collect(),
            truth_is_new: false,
        })
        .collect()
}

/// One labelled crop searched against the gallery (all the others in leave-one-out): what
/// the app's review of mistakes shows, and what the closed-set metrics are computed from.
#[derive(Debug, Clone, Serialize)]
pub struct QueryOutcome {
    pub annotation: AnnotationId,
    pub truth: String,
    /// Other gallery crops of the true individual: 0 means it should have been answered "new".
    pub others: usize,
    /// Individuals ranked by their best crop, at most `RANKS_KEPT`.
    pub ranking: Vec<crate::jobs::search::Match>,
}

impl QueryOutcome {
    pub fn top(&self) -> Option<&crate::jobs::search::Match> {
        self.ranking.first()
    }

    /// The true individual's place (0-based) and best match, when it is ranked.
    pub fn truth_match(&self) -> Option<(usize, &crate::jobs::search::Match)> {
        self.ranking.iter().enumerate().find(|(_, m)| m.individual == self.truth)
    }
}

/// Every labelled crop (or only the tagged `queries`) searched against the others, in
/// gallery order; stops early when `progress` is cancelled.
pub fn query_outcomes(g: &Gallery, queries: &HashSet<AnnotationId>, progress: &dyn Progress) -> Vec<QueryOutcome> {
    let gallery = searched_gallery(g, queries);
    let images_of = images_per_individual(&gallery);
    let rows: Vec<usize> = query_rows(g, queries).collect();
    progress.stage("searching labelled crops", rows.len() as u64);
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(512) {
        if progress.cancelled() {
            break;
        }
        out.par_extend(chunk.par_iter().filter_map(|&row| {
            let truth = individual_of(g, row)?;
            let annotation = g.entries()[row].annotation;
            // In leave-one-out the query itself is in the gallery: it needs another image.
            let others = images_of.get(truth).copied().unwrap_or(0) - usize::from(queries.is_empty());
            let ranking = gallery.search(g.vector(row), RANKS_KEPT, &Filter::default(), Some(annotation), None).matches;
            Some(QueryOutcome { annotation, truth: truth.to_string(), others, ranking })
        }));
        progress.advance(chunk.len() as u64);
    }
    out
}

/// The closed set ranked by the local score within each query's shortlist (ties by the
/// global order) and by the fused probability (cross-validated by individual), and the open
/// set on the fused probability with the same held-out individuals as the global one.
fn local_metrics(
    g: &Gallery,
    queries: &HashSet<AnnotationId>,
    features: &HashMap<AnnotationId, LocalFeatures>,
    held_out: &HashSet<String>,
    progress: &dyn crate::base::progress::Progress,
) -> LocalReport {
    let started = Instant::now();
    let outcomes = query_outcomes(g, queries, &crate::base::progress::Silent);
    let searched = searched_gallery(g, queries);
    let row_of: HashMap<AnnotationId, usize> =
        g.entries().iter().enumerate().map(|(row, e)| (e.annotation, row)).collect();
    let local_of = |a: AnnotationId| features.get(&a);
    progress.stage("verifying shortlists", outcomes.len() as u64);
    let evidence: Vec<Vec<rerank::Evidence>> = outcomes
        .par_iter()
        .map(|q| {
            progress.advance(1);
            let (Some(&row), Some(query)) = (row_of.get(&q.annotation), features.get(&q.annotation)) else {
                return Vec::new();
            };
            let shortlist = &q.ranking[..q.ranking.len().min(rerank::SHORTLIST)];
            rerank::verify_shortlist(&searched, g.vector(row), query, shortlist, &local_of, Some(q.annotation))
        })
        .collect();
    // Labelled pairs, grouped by the query's individual for the cross-validation.
    let group = |name: &str| u32::from_le_bytes(blake3::hash(name.as_bytes()).as_bytes()[..4].try_into().unwrap());
    let pairs: Vec<(u32, Pair)> = outcomes
        .iter()
        .zip(&evidence)
        .flat_map(|(q, ev)| {
            ev.iter().map(move |e| {
                (group(&q.truth), Pair { global: e.global, local: Some(e.local()), same: e.individual == q.truth })
            })
        })
        .collect();
    let fused_of = calibrate::cross_validated(&pairs, 5).ok();
    let calibration = Calibration::fit(&pairs.iter().map(|(_, p)| *p).collect::<Vec<_>>()).ok();
    // Each query's shortlist scored three ways (local as a search without a calibration ranks
    // it); the individuals after it keep the global order.
    let mut next = 0;
    let scored: Vec<Vec<(String, f32, f32, f32)>> = evidence
        .iter()
        .map(|ev| {
            ev.iter()
                .map(|e| {
                    let fused = fused_of.as_ref().map_or(e.global, |f| f[next]);
                    next += 1;
                    let local = rerank::strong_matches(e.verification.inliers.len()) as f32;
                    (e.individual.clone(), e.global, local, fused)
                })
                .collect()
        })
        .collect();
    let rank_by = |pick: fn(&(String, f32, f32, f32)) -> f32, keep: &dyn Fn(&str) -> bool| -> Vec<Vec<(String, f32)>> {
        outcomes
            .iter()
            .zip(&scored)
            .map(|(q, list)| {
                let mut ranking: Vec<(String, f32)> =
                    list.iter().filter(|s| keep(&s.0)).map(|s| (s.0.clone(), pick(s))).collect();
                // Stable: equal scores keep the global order.
                ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
                let listed: HashSet<&str> = list.iter().map(|s| s.0.as_str()).collect();
                ranking.extend(
                    q.ranking
                        .iter()
                        .filter(|m| !listed.contains(m.individual.as_str()) && keep(&m.individual))
                        .map(|m| (m.individual.clone(), 0.0)),
                );
                ranking
            })
            .collect()
    };
    let closed = |rankings: Vec<Vec<(String, f32)>>| {
        let results: Vec<Ranked> = outcomes
            .iter()
            .zip(rankings)
            .filter(|(q, _)| q.others > 0)
            .map(|(q, ranking)| Ranked { truth: q.truth.clone(), ranking, truth_is_new: false })
            .collect();
        closed_set(&results)
    };
    let everyone = |_: &str| true;
    let local = closed(rank_by(|s| s.2, &everyone));
    let fused = closed(rank_by(|s| s.3, &everyone));
    let open_set = (!held_out.is_empty() && fused_of.is_some()).then(|| {
        let results: Vec<(String, Ranked)> = outcomes
            .iter()
            .zip(rank_by(|s| s.3, &|name| !held_out.contains(name)))
            .map(|(q, ranking)| {
                let truth_is_new = held_out.contains(&q.truth) || q.others == 0;
                (q.truth.clone(), Ranked { truth: q.truth.clone(), ranking, truth_is_new })
            })
            .collect();
        let (tuned, cross_validated_map5) = tuned_and_cross_validated(&results);
        OpenSetMetrics { held_out_individuals: held_out.len(), tuned, cross_validated_map5 }
    });
    LocalReport {
        shortlist: rerank::SHORTLIST,
        local,
        fused,
        open_set,
        same_pairs: pairs.iter().filter(|(_, p)| p.same).count(),
        pairs: pairs.len(),
        calibration,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A seeded `fraction` of the individuals, at least one when there are two or more.
fn held_out_individuals(g: &Gallery, fraction: f64, seed: u64) -> HashSet<String> {
    let mut names: Vec<String> = g.individuals().to_vec();
    names.sort();
    names.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let n = ((names.len() as f64 * fraction).round() as usize).clamp(usize::from(names.len() >= 2), names.len());
    names.into_iter().take(n).collect()
}

/// Open-set results (tuned on all queries) and the MAP@5 with thresholds tuned across halves.
fn open_set_eval(g: &Gallery, queries: &HashSet<AnnotationId>, held_out: &HashSet<String>) -> (OpenSet, f64) {
    let gallery = without(g, |r| {
        individual_of(g, r).is_some_and(|i| held_out.contains(i))
            || (!queries.is_empty() && queries.contains(&g.entries()[r].annotation))
    });
    let images_of = images_per_individual(&gallery);
    let rows: Vec<usize> = query_rows(g, queries).collect();
    let results: Vec<(String, Ranked)> = rows
        .par_iter()
        .filter_map(|&row| {
            let truth = individual_of(g, row)?;
            let annotation = g.entries()[row].annotation;
            let in_gallery = images_of.get(truth).copied().unwrap_or(0);
            let others = if queries.is_empty() && !held_out.contains(truth) { in_gallery - 1 } else { in_gallery };
            Some((
                truth.to_string(),
                Ranked {
                    truth: truth.to_string(),
                    ranking: ranking(&gallery, g.vector(row), Some(annotation)),
                    truth_is_new: others == 0,
                },
            ))
        })
        .collect();
    tuned_and_cross_validated(&results)
}

/// The threshold tuned on all `(individual, result)` and the open-set MAP@5 with thresholds
/// tuned on one half of the individuals and measured on the other.
fn tuned_and_cross_validated(results: &[(String, Ranked)]) -> (OpenSet, f64) {
    let all: Vec<Ranked> = results.iter().map(|(_, r)| r.clone()).collect();
    let tuned = tune_threshold(&all);
    // Two folds by individual: tune on one, measure on the other.
    let fold = |name: &str| blake3::hash(name.as_bytes()).as_bytes()[0] % 2;
    let mut weighted = 0.0;
    for f in 0..2u8 {
        let tune_on: Vec<Ranked> = results.iter().filter(|(n, _)| fold(n) != f).map(|(_, r)| r.clone()).collect();
        let test_on: Vec<Ranked> = results.iter().filter(|(n, _)| fold(n) == f).map(|(_, r)| r.clone()).collect();
        if test_on.is_empty() {
            continue;
        }
        let threshold = if tune_on.is_empty() { tuned.threshold } else { tune_threshold(&tune_on).threshold };
        weighted += open_set(&test_on, threshold).map5 * test_on.len() as f64;
    }
    let cv = if all.is_empty() { 0.0 } else { weighted / all.len() as f64 };
    (tuned, cv)
}

/// The catalogue setting that holds the tuned new-individual threshold for a model.
pub fn threshold_setting(model: &str) -> String {
    format!("new_individual_threshold/{model}")
}

/// The stored threshold for `model`, if one was tuned.
pub fn stored_threshold(cat: &Catalogue, model: &str) -> Option<f32> {
    cat.setting(&threshold_setting(model)).ok().flatten().and_then(|v| v.parse().ok())
}

/// Stores what an evaluation fitted for `model`: the threshold on the global score, and,
/// when the shortlists were verified, the fusion and the threshold on its probability.
pub fn save_thresholds(cat: &mut Catalogue, model: &str, report: &EvalReport) -> anyhow::Result<()> {
    let Some(open) = &report.open_set else {
        anyhow::bail!("--save-threshold needs the open-set evaluation (--open-set above 0)");
    };
    cat.set_setting(&threshold_setting(model), &open.tuned.threshold.to_string())?;
    if let Some((calibration, fused)) =
        report.local.as_ref().and_then(|l| l.calibration.as_ref().zip(l.open_set.as_ref()))
    {
        let (fusion, threshold) = rerank::fusion_settings(model);
        cat.set_setting(&fusion, &calibration.to_json())?;
        cat.set_setting(&threshold, &fused.tuned.threshold.to_string())?;
    }
    Ok(())
}

/// Human-readable report, as the Kaggle notebooks printed it.
impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(f, "dataset: {}", r.dataset.join(", "))?;
        writeln!(f, "model: {} on {}", r.model, r.device)?;
        writeln!(
            f,
            "{} photos, {} crops, {} labelled, {} individuals; {}",
            r.photos, r.annotations, r.labelled, r.individuals, r.protocol
        )?;
        writeln!(f, "closed set ({} queries)      model   32x32 pixels", r.closed_set.queries)?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, a: f64, b: f64| {
            writeln!(f, "  {name:<24} {a:>6.3}   {b:>6.3}")
        };
        row(f, "top-1", r.closed_set.top1, r.pixel_baseline.top1)?;
        row(f, "top-5", r.closed_set.top5, r.pixel_baseline.top5)?;
        row(f, "MAP@5", r.closed_set.map5, r.pixel_baseline.map5)?;
        for ((k, a), (_, b)) in r.closed_set.recall_at.iter().zip(&r.pixel_baseline.recall_at) {
            row(f, &format!("R@{k}"), *a, *b)?;
        }
        row(f, "weighted precision", r.closed_set.weighted_precision, r.pixel_baseline.weighted_precision)?;
        row(f, "weighted recall", r.closed_set.weighted_recall, r.pixel_baseline.weighted_recall)?;
        row(f, "weighted F1", r.closed_set.weighted_f1, r.pixel_baseline.weighted_f1)?;
        if let Some(l) = &r.local {
            writeln!(
                f,
                "shortlist of {} verified by local features ({:.1} s)  global   local   fused",
                l.shortlist, l.seconds
            )?;
            for (name, a, b, c) in [
                ("top-1", r.closed_set.top1, l.local.top1, l.fused.top1),
                ("top-5", r.closed_set.top5, l.local.top5, l.fused.top5),
                ("MAP@5", r.closed_set.map5, l.local.map5, l.fused.map5),
            ] {
                writeln!(f, "  {name:<24} {a:>6.3}   {b:>6.3}  {c:>6.3}")?;
            }
            writeln!(f, "  fusion fitted on {} pairs, {} of the same individual", l.pairs, l.same_pairs)?;
            if let Some(o) = &l.open_set {
                writeln!(
                    f,
                    "  open set on the fused probability: MAP@5 {:.3} tuned, {:.3} cross-validated; threshold p = {:.3}",
                    o.tuned.map5, o.cross_validated_map5, o.tuned.threshold
                )?;
            }
        }
        if let Some(o) = &r.open_set {
            writeln!(
                f,
                "open set ({} queries, {} new; {} individuals held out)",
                o.tuned.queries, o.tuned.new_queries, o.held_out_individuals
            )?;
            row(f, "MAP@5 (tuned)", o.tuned.map5, o.pixel_baseline.map5)?;
            row(f, "MAP@5 (cross-validated)", o.cross_validated_map5, o.pixel_baseline_cross_validated_map5)?;
            writeln!(
                f,
                "  new_individual threshold {:.4} (pixels {:.4})",
                o.tuned.threshold, o.pixel_baseline.threshold
            )?;
        }
        if !r.problems.is_empty() {
            writeln!(f, "{} problems:", r.problems.len())?;
            for p in r.problems.iter().take(10) {
                writeln!(f, "  {p}")?;
            }
        }
        write!(f, "{:.1} s", r.seconds)
    }
}
