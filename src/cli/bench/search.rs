//! `bench search`: exact search of a synthetic clustered gallery against numpy's
//! matrix-vector product and top-k, and opening a catalogue of that many embeddings
//! search-ready against one plain scan of the embedding blobs.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{median, percentile, python_with, tempdir};
use crate::base::ids::AnnotationId;
use crate::catalogue::Catalogue;
use crate::catalogue::synthetic::SyntheticCatalogue;

#[derive(Serialize)]
struct SearchBench {
    gallery: usize,
    individuals: usize,
    dim: usize,
    queries: usize,
    top: usize,
    threads: usize,
    search_ms_p50: f64,
    search_ms_p95: f64,
    target_ms_p50: f64,
    /// Queries whose best individual is the one the query was drawn from.
    top1_correct: usize,
    /// `EmbeddingMap::new` of the whole gallery (PCA + k-d tree), for the app's map view.
    map_ms: f64,
    /// The same queries with the shortlist verified by local features.
    rerank: RerankBench,
    numpy: Option<NumpyReference>,
    /// Why there is no numpy reference, when there is none.
    numpy_missing: Option<String>,
    /// numpy p50 / whaleid p50: above 1 means whaleid is faster.
    ratio_numpy_over_whaleid: Option<f64>,
    catalogue: Option<LoadBench>,
}

#[derive(Serialize, serde::Deserialize)]
struct NumpyReference {
    p50_ms: f64,
    p95_ms: f64,
    version: String,
    threads: usize,
    /// Queries whose top-scoring image is the same row as whaleid's best individual's image.
    #[serde(default)]
    same_top1: usize,
    top1_rows: Vec<usize>,
}

#[derive(Serialize)]
struct RerankBench {
    shortlist: usize,
    crops_per_individual: usize,
    /// Distinct sets of local features (synthetic whales' flukes) the gallery rows share.
    feature_sets: usize,
    mean_keypoints: f64,
    /// Search, verification of the shortlist and re-ordering, per query.
    p50_ms: f64,
    p95_ms: f64,
    target_ms_p95: f64,
    /// The global search of the same shortlist length alone.
    global_p50_ms: f64,
    /// Re-ranked p50 / global-only p50.
    ratio_over_global: f64,
    /// Queries whose first individual after re-ranking is the one their features come from.
    top1_correct: usize,
}

#[derive(Serialize)]
struct LoadBench {
    embeddings: usize,
    gallery_rows: usize,
    stale: usize,
    rejected: usize,
    file_mib: f64,
    /// `Catalogue::open` to a ready `Gallery`, median of 3.
    open_to_gallery_ms: f64,
    target_ms: f64,
    /// One plain `SELECT vector FROM embeddings` scan touching every blob, median of 3.
    reference_scan_ms: f64,
    ratio_vs_reference: f64,
}

/// The synthetic galleries' annotations are numbered from 1 in row order, as the catalogue's
/// filler creates them.
fn annotation_of_row(row: usize) -> AnnotationId {
    AnnotationId(row as i64 + 1)
}

fn row_of_annotation(annotation: AnnotationId) -> usize {
    (annotation.0 - 1) as usize
}

/// A clustered gallery like a real one: each individual a random direction, each image that
/// direction plus noise of the same size (cosine ≈ 0.5 within an individual, ≈ 0 between).
fn synthetic_vector(centre: &[f32], rng: &mut rand_chacha::ChaCha8Rng, out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(centre) {
        *o = c + gaussian(rng);
    }
    crate::jobs::search::normalise(out);
}

/// Box-Muller: the benchmark's vectors need a real normal distribution, not the synthetic
/// photos' cheap approximation.
fn gaussian(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    use rand::Rng;
    let u: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn synthetic_centres(individuals: usize, dim: usize) -> Vec<Vec<f32>> {
    use rand::SeedableRng;
    (0..individuals)
        .into_par_iter()
        .map(|i| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EA_0000 + i as u64);
            (0..dim).map(|_| gaussian(&mut rng)).collect()
        })
        .collect()
}

pub(super) fn bench_search(
    n: usize,
    dim: usize,
    queries: usize,
    top: usize,
    catalogue: bool,
    json: bool,
) -> anyhow::Result<()> {
    use crate::base::vocabulary::{Part, Side};
    use crate::jobs::search::{Filter, Gallery};
    use rand::SeedableRng;
    anyhow::ensure!(n > 0 && dim > 0 && queries > 0 && top > 0, "gallery, dim, queries and top must be positive");
    let per = 20;
    let individuals = n.div_ceil(per);
    let centres = synthetic_centres(individuals, dim);
    let code = |i: usize| format!("HW-{i:05}");
    let rows: Vec<f32> = (0..n)
        .into_par_iter()
        .flat_map_iter(|r| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xA11_0000 + r as u64);
            let mut v = vec![0f32; dim];
            synthetic_vector(&centres[r / per], &mut rng, &mut v);
            v
        })
        .collect();
    let mut gallery = Gallery::new(dim);
    for (r, v) in rows.chunks_exact(dim).enumerate() {
        gallery
            .push(v, annotation_of_row(r), Some(&code(r / per)), Part::Fluke, Side::Unknown, None)
            .map_err(anyhow::Error::msg)?;
    }
    // New photos of known individuals, spread over the gallery.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0E_0000);
    let truth: Vec<usize> = (0..queries).map(|q| q * individuals / queries).collect();
    let qs: Vec<f32> = truth
        .iter()
        .flat_map(|&i| {
            let mut v = vec![0f32; dim];
            synthetic_vector(&centres[i], &mut rng, &mut v);
            v
        })
        .collect();
    drop(centres);

    // Warm-up: the first queries pay for page faults and the thread pool starting.
    for q in qs.chunks_exact(dim).take(3) {
        gallery.search(q, top, &Filter::default(), None, None);
    }
    let mut times = Vec::with_capacity(queries);
    let mut top1_correct = 0;
    let mut our_top1_rows = Vec::with_capacity(queries);
    for (q, &t) in qs.chunks_exact(dim).zip(&truth) {
        let start = Instant::now();
        let result = gallery.search(q, top, &Filter::default(), None, None);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let best = result.matches.first();
        top1_correct += usize::from(best.is_some_and(|m| m.individual == code(t)));
        our_top1_rows.push(best.map(|m| row_of_annotation(m.best_annotation)));
    }
    times.sort_by(f64::total_cmp);
    let rerank = bench_rerank(&gallery, &qs, &truth, individuals, per);
    let start = Instant::now();
    let map = crate::jobs::map::EmbeddingMap::new(&gallery);
    let map_ms = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(map.len() == n, "the map has {} points", map.len());
    drop(map);

    let (numpy, numpy_missing) = match numpy_search(gallery.as_matrix(), &qs, dim, top) {
        Ok(mut r) => {
            r.same_top1 = r.top1_rows.iter().zip(&our_top1_rows).filter(|(a, b)| Some(**a) == **b).count();
            (Some(r), None)
        }
        Err(why) => (None, Some(why)),
    };
    drop(gallery);
    let load = if catalogue { Some(bench_gallery_load(&rows, dim, per)?) } else { None };

    let p50 = percentile(&times, 0.5);
    let out = SearchBench {
        gallery: n,
        individuals,
        dim,
        queries,
        top,
        threads: rayon::current_num_threads(),
        search_ms_p50: p50,
        search_ms_p95: percentile(&times, 0.95),
        target_ms_p50: 5.0,
        top1_correct,
        map_ms,
        rerank,
        ratio_numpy_over_whaleid: numpy.as_ref().map(|r| r.p50_ms / p50.max(1e-9)),
        numpy,
        numpy_missing,
        catalogue: load,
    };
    crate::base::console::emit(json, &out, |o| {
        let mut text = format!(
            "exact search, {} images of {} individuals, {} dimensions, top {} ({} threads, {} queries)\n  \
             whaleid Gallery::search  p50 {:.2} ms  p95 {:.2} ms  (target p50 < {:.0} ms)  top-1 correct {}/{}\n",
            o.gallery,
            o.individuals,
            o.dim,
            o.top,
            o.threads,
            o.queries,
            o.search_ms_p50,
            o.search_ms_p95,
            o.target_ms_p50,
            o.top1_correct,
            o.queries
        );
        match (&o.numpy, &o.numpy_missing) {
            (Some(r), _) => {
                text += &format!(
                    "  numpy {} matvec+top-k  p50 {:.2} ms  p95 {:.2} ms  ({} threads; same top-1 image {}/{})\n  \
                 ratio numpy/whaleid (p50): {:.2}x\n",
                    r.version,
                    r.p50_ms,
                    r.p95_ms,
                    r.threads,
                    r.same_top1,
                    o.queries,
                    o.ratio_numpy_over_whaleid.unwrap_or(f64::NAN)
                )
            }
            (None, Some(why)) => text += &format!("  no numpy reference: {why}\n"),
            (None, None) => {}
        }
        let r = &o.rerank;
        text += &format!(
            "re-ranked: top {} individuals verified by local features ({} crops each; {} feature sets, {:.0} keypoints each)\n  \
             search + verification  p50 {:.1} ms  p95 {:.1} ms  (target p95 < {:.0} ms)  top-1 correct {}/{}\n  \
             global search alone   p50 {:.2} ms  (re-ranked = {:.0}x the global time)\n",
            r.shortlist,
            r.crops_per_individual,
            r.feature_sets,
            r.mean_keypoints,
            r.p50_ms,
            r.p95_ms,
            r.target_ms_p95,
            r.top1_correct,
            o.queries,
            r.global_p50_ms,
            r.ratio_over_global
        );
        text += &format!("  map of the gallery (PCA + k-d tree): {:.0} ms\n", o.map_ms);
        if let Some(l) = &o.catalogue {
            text += &format!(
                "catalogue of {} embeddings ({:.0} MiB): open to search-ready gallery of {} rows ({} stale, {} rejected skipped)\n  \
                 whaleid open + Gallery::from_catalogue  {:.0} ms  (target < {:.0} ms)\n  \
                 reference (one plain scan of the vector blobs)  {:.0} ms  (whaleid = {:.2}x the reference)\n",
                l.embeddings,
                l.file_mib,
                l.gallery_rows,
                l.stale,
                l.rejected,
                l.open_to_gallery_ms,
                l.target_ms,
                l.reference_scan_ms,
                l.ratio_vs_reference
            );
        }
        text.trim_end().to_string()
    })
}

/// Local features of synthetic flukes: `SETS_INDIVIDUALS` whales, `SETS_PHOTOS` photos each,
/// the last photo kept for the queries.
const SETS_INDIVIDUALS: usize = 20;
const SETS_PHOTOS: usize = 4;

fn synthetic_local(individual: usize, photo: usize) -> crate::models::local::LocalFeatures {
    let (img, b) = crate::jobs::synth::render_photo(7, individual, photo, 640, 480);
    let bbox = crate::base::vocabulary::BoxPx { x: b[0] as f64, y: b[1] as f64, w: b[2] as f64, h: b[3] as f64 };
    crate::models::local::LocalFeatures::of_crop(&crate::base::crop::crop(
        &image::DynamicImage::ImageRgb8(img),
        Some(bbox),
    ))
}

/// Each query searched for a shortlist, verified and re-ordered, as `whaleid search` does;
/// gallery row `r` holds the features of synthetic whale `(r / per) % SETS_INDIVIDUALS`, so
/// that a query's own individual has matching crops among its shortlist's.
fn bench_rerank(
    gallery: &crate::jobs::search::Gallery,
    qs: &[f32],
    truth: &[usize],
    individuals: usize,
    per: usize,
) -> RerankBench {
    use crate::jobs::search::{Filter, rerank};
    let sets: Vec<Vec<crate::models::local::LocalFeatures>> = (0..SETS_INDIVIDUALS.min(individuals))
        .into_par_iter()
        .map(|i| (0..=SETS_PHOTOS).map(|p| synthetic_local(i, p)).collect())
        .collect();
    let wrap = sets.len();
    let local_of = |a: AnnotationId| {
        let r = row_of_annotation(a);
        Some(&sets[(r / per) % wrap][r % SETS_PHOTOS])
    };
    let dim = gallery.dim();
    let shortlist = rerank::SHORTLIST;
    let mut times = Vec::new();
    let mut global = Vec::new();
    let mut top1_correct = 0;
    for (q, &t) in qs.chunks_exact(dim).zip(truth) {
        let query = &sets[t % wrap][SETS_PHOTOS];
        let start = Instant::now();
        let mut result = gallery.search(q, shortlist, &Filter::default(), None, None);
        global.push(start.elapsed().as_secs_f64() * 1e3);
        let evidence = rerank::verify_shortlist(gallery, q, query, &result.matches, &local_of, None);
        rerank::apply(&mut result, &evidence, None, None);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        top1_correct += usize::from(result.matches.first().is_some_and(|m| m.individual == format!("HW-{t:05}")));
    }
    times.sort_by(f64::total_cmp);
    global.sort_by(f64::total_cmp);
    let p50 = percentile(&times, 0.5);
    let global_p50 = percentile(&global, 0.5);
    let features: Vec<&crate::models::local::LocalFeatures> = sets.iter().flatten().collect();
    RerankBench {
        shortlist,
        crops_per_individual: rerank::CROPS_PER_INDIVIDUAL,
        feature_sets: features.len(),
        mean_keypoints: features.iter().map(|f| f.len() as f64).sum::<f64>() / features.len().max(1) as f64,
        p50_ms: p50,
        p95_ms: percentile(&times, 0.95),
        target_ms_p95: 300.0,
        global_p50_ms: global_p50,
        ratio_over_global: p50 / global_p50.max(1e-9),
        top1_correct,
    }
}

/// Runs `benches/search_reference.py` on the same gallery and queries with the same thread count.
fn numpy_search(matrix: &[f32], queries: &[f32], dim: usize, top: usize) -> Result<NumpyReference, String> {
    let python = python_with(&["numpy"])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("search_reference.py");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let dir = tempdir("whaleid-bench-search").map_err(|e| e.to_string())?;
    let write = |name: &str, v: &[f32]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map(|_| path).map_err(|e| format!("cannot write {name}: {e}"))
    };
    let (g, q) = (write("gallery.f32", matrix)?, write("queries.f32", queries)?);
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([g.as_os_str(), q.as_os_str()])
        .args([dim.to_string(), top.to_string(), threads.clone()])
        // BLAS reads these when it loads: the reference gets the threads whaleid gets, no more.
        .envs(["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"].map(|k| (k, threads.as_str())))
        .output()
        .map_err(|e| format!("{} did not start: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("the numpy reference failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the numpy reference printed no result ({e})"))
}

/// Writes a catalogue holding `rows` as embeddings (1 in 100 rejected, 1 in 100 with a moved
/// box), then times a fresh open to a ready gallery against one plain scan of the blobs.
fn bench_gallery_load(rows: &[f32], dim: usize, per: usize) -> anyhow::Result<LoadBench> {
    let n = rows.len() / dim;
    let dir = tempdir("whaleid-bench-gallery")?;
    let path = dir.path().join("gallery.whaleid");
    let model = "bench-model";
    {
        let mut cat = Catalogue::create(&path)?;
        let bbox = crate::base::vocabulary::BoxPx::new(10.0, 20.0, 300.0, 200.0);
        cat.fill_synthetic(&SyntheticCatalogue::one_box_per_photo(n, n.div_ceil(per), bbox))?;
        let fresh = crate::catalogue::box_key(Some(&bbox));
        const BATCH: usize = 10_000;
        for (b, chunk) in rows.chunks(BATCH * dim).enumerate() {
            let batch: Vec<(AnnotationId, String, Vec<f32>)> = chunk
                .chunks_exact(dim)
                .enumerate()
                .map(|(k, v)| {
                    let r = b * BATCH + k;
                    let key = if r % 100 == 13 { "0.00,0.00,1.00,1.00" } else { fresh.as_str() };
                    (annotation_of_row(r), key.to_string(), v.to_vec())
                })
                .collect();
            cat.put_embeddings(model, &batch)?;
        }
        let rejected: Vec<AnnotationId> = (0..n).filter(|r| r % 100 == 7).map(annotation_of_row).collect();
        cat.set_status(&rejected, crate::base::vocabulary::Status::Rejected)?;
    }
    let file_mib = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    let mut last = None;
    // Alternated so both see the same page cache; the first round also warms it.
    for _ in 0..4 {
        let start = Instant::now();
        let cat = Catalogue::open(&path)?;
        let load = crate::jobs::search::Gallery::from_catalogue(&cat, model)?;
        ours.push(start.elapsed());
        drop(cat);
        last = Some(load);

        let start = Instant::now();
        let total = crate::catalogue::synthetic::scan_embedding_blobs(&path)?;
        reference.push(start.elapsed());
        anyhow::ensure!(total >= n * dim * 4, "the reference scan read {total} bytes");
    }
    let load = last.expect("ran at least once");
    let (t, r) = (median(ours[1..].to_vec()).as_secs_f64() * 1e3, median(reference[1..].to_vec()).as_secs_f64() * 1e3);
    Ok(LoadBench {
        embeddings: n,
        gallery_rows: load.gallery.len(),
        stale: load.stale,
        rejected: load.rejected,
        file_mib,
        open_to_gallery_ms: t,
        target_ms: 1000.0,
        reference_scan_ms: r,
        ratio_vs_reference: t / r.max(1e-6),
    })
}
