//! `whaleid bench ...`: speed and memory figures, each printed with the ratio against a
//! reference measured in the same run on the same machine (never a timed test).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Subcommand;
use rayon::prelude::*;
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::catalogue::synthetic::SyntheticCatalogue;
use crate::jobs::import::ImportOptions;
use crate::base::{console::Console, progress::Progress};

mod embed;
mod train;
mod ui;

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Import N synthetic photos with labels and boxes into a fresh catalogue.
    /// Reference: decoding and hashing the same files alone (the work an import cannot avoid).
    Import {
        #[arg(long, default_value_t = 20_000)]
        photos: usize,
        /// Keep the generated photos here (reused when present) instead of a temporary folder.
        #[arg(long)]
        workdir: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The DINOv2 ViT-S/14 backbone (fused kernels, CPU) on N random normalised images.
    /// Reference: onnxruntime (CPU, same thread count) on the same backbone's ONNX graph.
    Embed {
        #[arg(long, default_value_t = 64)]
        images: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Side of the square input in pixels (a multiple of 14).
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Where `dinov2_vits14.safetensors` is; the reference ONNX is cached here too.
        #[arg(long, default_value = "models")]
        models_dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One head-mode training epoch over N cached crops (random tokens of the real cache's
    /// shape). Reference: PyTorch training the same head and loss (benches/train_reference.py).
    Train {
        #[arg(long, default_value_t = 10_000)]
        crops: usize,
        #[arg(long, default_value_t = 10)]
        per_individual: usize,
        #[arg(long)]
        json: bool,
    },
    /// `stats` on a catalogue of N annotations. Reference: one full scan of the annotations table.
    Stats {
        #[arg(long, default_value_t = 100_000)]
        annotations: usize,
        #[arg(long)]
        json: bool,
    },
    /// Exact search of a synthetic clustered gallery (20 images per individual), and opening a
    /// catalogue of that many embeddings search-ready. References: numpy's matrix-vector
    /// product + top-k with the same thread count; one plain scan of the embedding blobs.
    Search {
        #[arg(long, default_value_t = 100_000)]
        gallery: usize,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Time the search only, not the catalogue loading (which writes gallery × dim × 4 bytes).
        #[arg(long)]
        no_catalogue: bool,
        #[arg(long)]
        json: bool,
    },
    /// The window's frame time (headless: ui + tessellation on the CPU) and time to first frame
    /// on a catalogue of N photos while crops are embedded in the background.
    /// Reference: the same frames with identification off.
    Ui {
        #[arg(long, default_value_t = 100_000)]
        photos: usize,
        /// Crops left without an embedding, embedded while the frames are measured (enough that
        /// a release build is still embedding when the frames are counted, ~15 s in).
        #[arg(long, default_value_t = 95_000)]
        to_embed: usize,
        /// Frames measured per run, shared among six panels.
        #[arg(long, default_value_t = 600)]
        frames: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Import { photos, workdir, json } => bench_import(photos, workdir.as_deref(), json),
        Bench::Stats { annotations, json } => bench_stats(annotations, json),
        Bench::Embed { images, batch, size, models_dir, json } => {
            embed::bench_embed(images, batch, size, &models_dir, json)
        }
        Bench::Train { crops, per_individual, json } => train::bench_train(crops, per_individual, json),
        Bench::Search { gallery, dim, queries, top, no_catalogue, json } => {
            bench_search(gallery, dim, queries, top, !no_catalogue, json)
        }
        Bench::Ui { photos, to_embed, frames, json } => ui::bench_ui(photos, to_embed, frames, json),
    }
}

/// Peak resident memory of this process since the last reset, in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak-memory mark so the next reading covers only what follows (Linux).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(Serialize)]
struct ImportBench {
    photos: usize,
    import_seconds: f64,
    import_photos_per_second: f64,
    reference_seconds: f64,
    reference_photos_per_second: f64,
    /// import time / reference time: the catalogue's overhead over decoding and hashing alone.
    ratio_vs_reference: f64,
    peak_rss_mib: Option<f64>,
    reference_peak_rss_mib: Option<f64>,
    threads: usize,
}

fn bench_import(photos: usize, workdir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let temp;
    let dir = match workdir {
        Some(d) => d.to_path_buf(),
        None => {
            temp = tempdir("whaleid-bench-import")?;
            temp.path().to_path_buf()
        }
    };
    let data = dir.join("data");
    let per = 10;
    let individuals = photos.div_ceil(per);
    let console = Console::new(json);
    if !data.join("labels.csv").exists() {
        let opts = crate::jobs::synth::SynthOptions::new(&data, individuals, per, 7);
        console.stage("rendering", (individuals * per) as u64);
        crate::jobs::synth::generate(&opts, &|| console.advance(1))?;
    }
    let files: Vec<_> = walkdir::WalkDir::new(data.join("images"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| crate::base::photo::is_photo(e.path()))
        .map(|e| e.into_path())
        .collect();
    let n = files.len();

    // Reference: read, hash and decode every photo, nothing else.
    reset_peak_rss();
    let start = Instant::now();
    let decoded = files
        .par_iter()
        .filter(|f| std::fs::read(f).ok().and_then(|b| crate::base::photo::probe_bytes(&b).ok()).is_some())
        .count();
    let reference = start.elapsed();
    let reference_peak = peak_rss_mib();
    anyhow::ensure!(decoded == n, "only {decoded} of {n} synthetic photos decoded");

    let catalogue = dir.join("bench.whaleid");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", catalogue.display()));
    }
    reset_peak_rss();
    let start = Instant::now();
    let mut cat = Catalogue::create(&catalogue)?;
    let report = crate::jobs::import::import(&mut cat, &data, &ImportOptions::default(), &console)?;
    let import = start.elapsed();
    let peak = peak_rss_mib();
    drop(console);
    anyhow::ensure!(report.photos.added == n, "imported {} of {n} photos", report.photos.added);
    anyhow::ensure!(
        report.problems.is_empty(),
        "import problems: {:?}",
        &report.problems[..report.problems.len().min(5)]
    );

    let out = ImportBench {
        photos: n,
        import_seconds: import.as_secs_f64(),
        import_photos_per_second: n as f64 / import.as_secs_f64(),
        reference_seconds: reference.as_secs_f64(),
        reference_photos_per_second: n as f64 / reference.as_secs_f64(),
        ratio_vs_reference: import.as_secs_f64() / reference.as_secs_f64(),
        peak_rss_mib: peak,
        reference_peak_rss_mib: reference_peak,
        threads: rayon::current_num_threads(),
    };
    crate::base::console::emit(json, &out, |o| {
        format!(
            "import of {} synthetic photos with labels and boxes into a fresh catalogue ({} threads)\n  \
             whaleid import      {:8.1} photos/s  ({:.2} s)  peak RSS {}\n  \
             reference (decode+hash only) {:8.1} photos/s  ({:.2} s)  peak RSS {}\n  \
             ratio import/reference: {:.2}x the time",
            o.photos,
            o.threads,
            o.import_photos_per_second,
            o.import_seconds,
            mib(o.peak_rss_mib),
            o.reference_photos_per_second,
            o.reference_seconds,
            mib(o.reference_peak_rss_mib),
            o.ratio_vs_reference
        )
    })
}

fn mib(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} MiB")).unwrap_or_else(|| "n/a".into())
}

#[derive(Serialize)]
struct StatsBench {
    annotations: usize,
    photos: usize,
    individuals: usize,
    stats_ms_median: f64,
    stats_ms_max: f64,
    target_ms: f64,
    ratio_vs_target: f64,
    reference_scan_ms_median: f64,
    ratio_vs_reference: f64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_stats(annotations: usize, json: bool) -> anyhow::Result<()> {
    let dir = tempdir("whaleid-bench-stats")?;
    let path = dir.path().join("big.whaleid");
    let photos = annotations.div_ceil(2);
    let individuals = (annotations / 20).max(1);
    {
        let mut cat = Catalogue::create(&path)?;
        let bbox = crate::base::vocabulary::BoxPx::new(10.0, 20.0, 300.0, 200.0);
        cat.fill_synthetic(&SyntheticCatalogue { photos, annotations, individuals, bbox })?;
    }
    // A fresh open, as a user running `whaleid stats` gets.
    let cat = Catalogue::open(&path)?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let start = Instant::now();
        last = Some(crate::catalogue::stats::stats(&cat)?);
        times.push(start.elapsed());
    }
    let stats = last.expect("ran at least once");
    anyhow::ensure!(stats.annotations as usize == annotations, "catalogue has {} annotations", stats.annotations);
    let max = *times.iter().max().expect("ran at least once");
    let mut reference = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        cat.scan_annotations()?;
        reference.push(start.elapsed());
    }
    let (t, r) = (median(times).as_secs_f64() * 1e3, median(reference).as_secs_f64() * 1e3);
    let out = StatsBench {
        annotations,
        photos,
        individuals,
        stats_ms_median: t,
        stats_ms_max: max.as_secs_f64() * 1e3,
        target_ms: 200.0,
        ratio_vs_target: t / 200.0,
        reference_scan_ms_median: r,
        ratio_vs_reference: t / r.max(1e-6),
    };
    crate::base::console::emit(json, &out, |o| {
        format!(
            "stats on a catalogue of {} annotations, {} photos, {} individuals\n  \
             stats: median {:.1} ms, max {:.1} ms  (target < {:.0} ms: {:.2}x of the target)\n  \
             reference (one full scan of the annotations): median {:.2} ms  (stats = {:.1}x the reference)",
            o.annotations,
            o.photos,
            o.individuals,
            o.stats_ms_median,
            o.stats_ms_max,
            o.target_ms,
            o.ratio_vs_target,
            o.reference_scan_ms_median,
            o.ratio_vs_reference
        )
    })
}

fn tempdir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir()?)
}

/// A Python interpreter with `packages` installed from PyPI, for reference measurements
/// (onnxruntime, numpy, torch). The virtual environment lives in the data folder
/// (`bench-python/`) and is created on first use. `Err` says why none could be had, so that
/// a benchmark can still print its own figures.
pub fn python_with(packages: &[&str]) -> Result<std::path::PathBuf, String> {
    use std::process::{Command, Stdio};
    let venv = crate::base::paths::data_dir().join("bench-python");
    let python = venv.join("bin").join("python");
    let has_all = |python: &Path| {
        let imports = packages.iter().map(|p| p.replace('-', "_")).collect::<Vec<_>>().join(", ");
        Command::new(python)
            .args(["-c", &format!("import {imports}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_all(&python) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("creating a Python environment for the reference in {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("python3 not found ({e}); no reference measurement"))?;
        if !status.success() {
            return Err(format!("python3 -m venv {} failed; no reference measurement", venv.display()));
        }
    }
    eprintln!("installing {} for the reference", packages.join(", "));
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .map_err(|e| format!("pip failed to start ({e}); no reference measurement"))?;
    if !status.success() || !has_all(&python) {
        return Err(format!("pip could not install {}; no reference measurement", packages.join(", ")));
    }
    Ok(python)
}

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

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    sorted_ms[((sorted_ms.len() - 1) as f64 * p).round() as usize]
}

fn bench_search(n: usize, dim: usize, queries: usize, top: usize, catalogue: bool, json: bool) -> anyhow::Result<()> {
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
            .push(v, r as i64 + 1, Some(&code(r / per)), Part::Fluke, Side::Unknown, None)
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
        our_top1_rows.push(best.map(|m| m.best_annotation as usize - 1));
    }
    times.sort_by(f64::total_cmp);
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
            let batch: Vec<(i64, String, Vec<f32>)> = chunk
                .chunks_exact(dim)
                .enumerate()
                .map(|(k, v)| {
                    let r = b * BATCH + k;
                    let key = if r % 100 == 13 { "0.00,0.00,1.00,1.00" } else { fresh.as_str() };
                    (r as i64 + 1, key.to_string(), v.to_vec())
                })
                .collect();
            cat.put_embeddings(model, &batch)?;
        }
        let rejected: Vec<i64> = (0..n).filter(|r| r % 100 == 7).map(|r| r as i64 + 1).collect();
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
