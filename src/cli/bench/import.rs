//! `bench import`: importing synthetic photos with labels and boxes into a fresh catalogue,
//! against decoding and hashing the same files alone (the work an import cannot avoid).

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{mib, peak_rss_mib, reset_peak_rss, tempdir};
use crate::base::{console::Console, progress::Progress};
use crate::catalogue::Catalogue;
use crate::jobs::import::ImportOptions;

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

pub(super) fn bench_import(photos: usize, workdir: Option<&Path>, json: bool) -> anyhow::Result<()> {
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
