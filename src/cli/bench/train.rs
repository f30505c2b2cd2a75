//! `whaleid bench train`: one head-mode epoch over N cached crops, against PyTorch training
//! the same head with the same loss, optimiser and augmentation (benches/train_reference.py).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::{peak_rss_mib, python_with, reset_peak_rss};
use crate::base::ids::AnnotationId;
use crate::jobs::train::cache::TokenCache;
use crate::jobs::train::data::Split;
use crate::jobs::train::{Inputs, TrainConfig, TrainEvent, train_model};

#[derive(Serialize)]
struct Report {
    crops: usize,
    tokens_per_crop: usize,
    width: usize,
    individuals: usize,
    threads: usize,
    whaleid_epoch_seconds: f64,
    whaleid_crops_per_second: f64,
    whaleid_peak_rss_mib: Option<f64>,
    target_epoch_seconds: f64,
    pytorch_epoch_seconds: Option<f64>,
    pytorch_version: Option<String>,
    /// PyTorch's epoch time over whaleid's (above 1: whaleid is faster).
    ratio: Option<f64>,
    reference_problem: Option<String>,
}

/// The cache's shape at 224 px: CLS + an 8 x 8 pooled grid of ViT-S/14 tokens.
const TOKENS_PER_CROP: usize = 65;
const WIDTH: usize = 384;
const TARGET_SECONDS: f64 = 30.0;

pub fn bench_train(crops: usize, per_individual: usize, json: bool) -> anyhow::Result<()> {
    let crops = crops.max(64);
    let individuals = (crops / per_individual.max(2)).max(2);
    let threads = rayon::current_num_threads();
    if !json {
        eprintln!("generating {crops} cached crops of {individuals} individuals");
    }
    let tokens = Tensor::randn(0f32, 1.0, (crops, TOKENS_PER_CROP, WIDTH), &Device::Cpu)?.to_dtype(DType::F16)?;
    let cache = TokenCache::plain((0..crops as i64).map(AnnotationId).collect(), tokens);
    let split = Split {
        train: (0..crops).map(|i| (AnnotationId(i as i64), (i % individuals) as u32)).collect(),
        classes: (0..individuals).map(|i| format!("ind{i}")).collect(),
        validation: Vec::new(),
        validation_individuals: Vec::new(),
    };
    let config = TrainConfig { epochs: 1, validation_fraction: 0.0, ..Default::default() };
    let out = tempfile::Builder::new().prefix("whaleid-bench-train").tempdir()?;
    let (sender, receiver) = std::sync::mpsc::channel();
    let cancel = AtomicBool::new(false);
    reset_peak_rss();
    let (mut started, mut last_step) = (None, None);
    let mut steps = 0;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let run =
            s.spawn(|| train_model(&Inputs::head(&cache), &split, "bench", &config, out.path(), &sender, &cancel));
        // Timestamps as the events arrive: from the start of the first step to the end of
        // the last (the validation and checkpoint around them are not the epoch).
        for event in &receiver {
            match event {
                TrainEvent::Started { .. } => started = Some(Instant::now()),
                TrainEvent::Step { .. } => {
                    steps += 1;
                    last_step = Some(Instant::now());
                }
                TrainEvent::Epoch { .. } | TrainEvent::Finished { .. } | TrainEvent::Refitting(_) => break,
            }
        }
        run.join().map_err(|_| anyhow::anyhow!("the training thread panicked"))??;
        Ok(())
    })?;
    let (Some(started), Some(last_step)) = (started, last_step) else {
        anyhow::bail!("the epoch ran no step");
    };
    let seconds = last_step.duration_since(started).as_secs_f64();
    let trained = steps * config.batch.min(crops);
    let rss = peak_rss_mib();
    let (reference, problem) = match pytorch_epoch(crops, individuals, config.embedding_dim, threads) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let report = Report {
        crops,
        tokens_per_crop: TOKENS_PER_CROP,
        width: WIDTH,
        individuals,
        threads,
        whaleid_epoch_seconds: seconds,
        whaleid_crops_per_second: trained as f64 / seconds,
        whaleid_peak_rss_mib: rss,
        target_epoch_seconds: TARGET_SECONDS,
        pytorch_epoch_seconds: reference.as_ref().map(|r| r.0),
        pytorch_version: reference.as_ref().map(|r| r.1.clone()),
        ratio: reference.as_ref().map(|r| r.0 / seconds),
        reference_problem: problem,
    };
    crate::base::console::emit(json, &report, |r| {
        let mut s = format!(
            "head-mode epoch over {} cached crops ({} tokens x {}, f16) of {} individuals, ArcFace, batch 32, {} threads\n  \
             whaleid (candle)   {:>6.2} s  {:>7.0} crops/s  peak RSS {}  (target < {:.0} s)",
            r.crops,
            r.tokens_per_crop,
            r.width,
            r.individuals,
            r.threads,
            r.whaleid_epoch_seconds,
            r.whaleid_crops_per_second,
            r.whaleid_peak_rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
            r.target_epoch_seconds
        );
        match (&r.pytorch_epoch_seconds, &r.pytorch_version, &r.ratio) {
            (Some(t), Some(v), Some(ratio)) => s.push_str(&format!(
                "\n  PyTorch {v:<10} {t:>6.2} s  {:>7.0} crops/s\n  ratio PyTorch/whaleid epoch time: {ratio:.2}x{}",
                r.crops as f64 / t,
                if *ratio >= 1.0 { " (whaleid is faster)" } else { " (PyTorch is faster)" }
            )),
            _ => s.push_str(&format!("\n  no PyTorch reference: {}", r.reference_problem.as_deref().unwrap_or("?"))),
        }
        s
    })
}

/// PyTorch's epoch time and version, from `benches/train_reference.py` with the same shapes.
fn pytorch_epoch(crops: usize, classes: usize, dim: usize, threads: usize) -> Result<(f64, String), String> {
    let python = python_with(&["torch"])?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("train_reference.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .args([crops, TOKENS_PER_CROP, WIDTH, classes, dim, threads].map(|v| v.to_string()))
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr).trim()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{}: unreadable output ({e})", script.display()))?;
    match (value["seconds"].as_f64(), value["version"].as_str()) {
        (Some(s), Some(v)) => Ok((s, v.to_string())),
        _ => Err(format!("{}: no timing in its output", script.display())),
    }
}
