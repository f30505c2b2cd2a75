//! `whaleid bench ...`: speed and memory figures, each printed with the ratio against a
//! reference measured in the same run on the same machine (never a timed test).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Subcommand;
use rayon::prelude::*;
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::import::ImportOptions;
use crate::progress::{Console, Progress};

mod embed;

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
    /// `stats` on a catalogue of N annotations. Reference: one full scan of the annotations table.
    Stats {
        #[arg(long, default_value_t = 100_000)]
        annotations: usize,
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
        let opts = crate::synth::SynthOptions::new(&data, individuals, per, 7);
        console.stage("rendering", (individuals * per) as u64);
        crate::synth::generate(&opts, &|| console.advance(1))?;
    }
    let files: Vec<_> = walkdir::WalkDir::new(data.join("images"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| crate::photo::is_photo(e.path()))
        .map(|e| e.into_path())
        .collect();
    let n = files.len();

    // Reference: read, hash and decode every photo, nothing else.
    reset_peak_rss();
    let start = Instant::now();
    let decoded = files
        .par_iter()
        .filter(|f| std::fs::read(f).ok().and_then(|b| crate::photo::probe_bytes(&b).ok()).is_some())
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
    let report = crate::import::import(&mut cat, &data, &ImportOptions::default(), &console)?;
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
    crate::cli::emit(json, &out, |o| {
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
        let cat = Catalogue::create(&path)?;
        populate(&cat, photos, annotations, individuals)?;
    }
    // A fresh open, as a user running `whaleid stats` gets.
    let cat = Catalogue::open(&path)?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let start = Instant::now();
        last = Some(crate::stats::stats(&cat)?);
        times.push(start.elapsed());
    }
    let stats = last.expect("ran at least once");
    anyhow::ensure!(stats.annotations as usize == annotations, "catalogue has {} annotations", stats.annotations);
    let max = *times.iter().max().expect("ran at least once");
    let mut reference = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let _: i64 = cat.conn().query_row("SELECT sum(length(status)) FROM annotations", [], |r| r.get(0))?;
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
    crate::cli::emit(json, &out, |o| {
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

/// Fills a catalogue with plausible rows directly (no photos on disk are needed for `stats`).
fn populate(cat: &Catalogue, photos: usize, annotations: usize, individuals: usize) -> anyhow::Result<()> {
    let conn = cat.conn();
    conn.execute_batch("BEGIN")?;
    {
        let mut p = conn.prepare(
            "INSERT INTO photos (id, path, hash, width, height, taken_at, imported_at) VALUES (?1, ?2, ?3, 1600, 1067, ?4, '2026-01-01T00:00:00')",
        )?;
        for i in 0..photos {
            let day = format!("2024-{:02}-{:02}T10:00:00", 6 + i % 4, 1 + i % 28);
            p.execute(rusqlite::params![i as i64 + 1, format!("photos/p{i:06}.jpg"), format!("{i:064x}"), day])?;
        }
        let mut v = conn.prepare(
            "INSERT INTO individuals (id, code, species, created_at) VALUES (?1, ?2, 'humpback_whale', '2026-01-01')",
        )?;
        for i in 0..individuals {
            v.execute(rusqlite::params![i as i64 + 1, format!("HW-{i:05}")])?;
        }
        let mut a = conn.prepare(
            "INSERT INTO annotations (id, photo_id, x, y, w, h, part, source, status, created_at) \
             VALUES (?1, ?2, 10, 20, 300, 200, ?3, 'detector', ?4, '2026-01-01')",
        )?;
        let mut id = conn.prepare(
            "INSERT INTO identifications (annotation_id, individual_id, how, at) VALUES (?1, ?2, ?3, '2026-01-01')",
        )?;
        for i in 0..annotations {
            let part = ["fluke", "dorsal_fin", "head", "body"][i % 4];
            let status = ["unreviewed", "verified", "rejected"][i % 3];
            a.execute(rusqlite::params![i as i64 + 1, (i % photos) as i64 + 1, part, status])?;
            if i % 5 != 0 {
                let how = ["confirmed", "imported", "predicted"][i % 3];
                id.execute(rusqlite::params![i as i64 + 1, (i % individuals) as i64 + 1, how])?;
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
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
    let venv = crate::app::data_dir().join("bench-python");
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
