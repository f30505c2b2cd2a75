//! `bench stats`: summarising a large catalogue, against one full scan of its annotations.

use std::time::Instant;

use serde::Serialize;

use super::{median, tempdir};
use crate::catalogue::Catalogue;
use crate::catalogue::synthetic::SyntheticCatalogue;

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

pub(super) fn bench_stats(annotations: usize, json: bool) -> anyhow::Result<()> {
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
