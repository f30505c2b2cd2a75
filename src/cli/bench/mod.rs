//! `whaleid bench ...`: speed and memory figures, each printed with the ratio against a
//! reference measured in the same run on the same machine (never a timed test). One file per
//! benchmark; here the list of them and what they share.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;

mod detect;
mod embed;
mod embed_cnn;
mod import;
mod search;
mod stats;
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
        /// Which backbone (an EfficientNet-Lite is measured against onnxruntime running the
        /// same network built from its weights, with DINOv2's time per image beside).
        #[arg(long, value_enum, default_value = "dinov2-vits14")]
        model: crate::models::KnownModel,
        #[arg(long, default_value_t = 64)]
        images: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Side of the square input in pixels (DINOv2: a multiple of 14; default: the
        /// model's own).
        #[arg(long)]
        size: Option<usize>,
        /// Rounds of whaleid then the reference, one after the other, so that a slow spell of
        /// the machine falls on both sides: the ratio printed is the median of the rounds'.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Where the weights are (`dinov2_vits14.safetensors`, ...); the reference ONNX is cached here too.
        #[arg(long, default_value = "models")]
        models_dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Detection end to end per photo (decode, resize, backbone features, head, suppression)
    /// with detection's backbone and its long side, on the real dolphin-fin photos where they
    /// are (else synthetic 1600x1068 photos), and train-detector on them.
    /// Reference: onnxruntime running the same backbone at the detector's input size.
    Detect {
        /// The backbone to measure, by name: dinov2-vits14, efficientnet-lite0,
        /// efficientnet-lite1, efficientnet-lite2 (default: detection's own, dinov2-vits14).
        #[arg(long, value_parser = known_model)]
        backbone: Option<crate::models::KnownModel>,
        /// A YOLO dataset (`images/`, `labels/`) of dorsal fins; synthetic photos where it is absent.
        #[arg(long, default_value = "../shared/data/dolphin_fins")]
        data: std::path::PathBuf,
        /// How many of its photos (default: all; 81 synthetic ones without the data set).
        #[arg(long)]
        photos: Option<usize>,
        /// Epochs of train-detector on the photos (0: no training; an untrained head is timed).
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Rounds of the backbone alone then onnxruntime, one after the other, so that a slow
        /// spell of the machine falls on both sides: the ratio printed is the median of the
        /// rounds'.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Where the backbone's weights are (`dinov2_vits14.safetensors`, ...); the reference
        /// ONNX is cached here too.
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
        Bench::Import { photos, workdir, json } => import::bench_import(photos, workdir.as_deref(), json),
        Bench::Stats { annotations, json } => stats::bench_stats(annotations, json),
        Bench::Embed { model, images, batch, size, rounds, models_dir, json } => {
            let size = size.unwrap_or(model.default_size() as usize);
            let work = EmbedWork { images, batch, size, rounds };
            match model.efficientnet() {
                Some(config) => embed_cnn::bench_embed_cnn(&config, &work, &models_dir, json),
                None => embed::bench_embed(&work, &models_dir, json),
            }
        }
        Bench::Detect { backbone, data, photos, epochs, rounds, models_dir, json } => {
            let backbone = backbone.unwrap_or(crate::jobs::detect::DEFAULT_BACKBONE);
            let options = detect::DetectBenchOptions { backbone, data, photos, epochs, rounds, models_dir, json };
            detect::bench_detect(&options)
        }
        Bench::Train { crops, per_individual, json } => train::bench_train(crops, per_individual, json),
        Bench::Search { gallery, dim, queries, top, no_catalogue, json } => {
            search::bench_search(gallery, dim, queries, top, !no_catalogue, json)
        }
        Bench::Ui { photos, to_embed, frames, json } => ui::bench_ui(photos, to_embed, frames, json),
    }
}

/// A backbone by the name typed on the command line, or an error that names it and the
/// known ones.
fn known_model(name: &str) -> Result<crate::models::KnownModel, String> {
    use crate::models::KnownModel;
    KnownModel::parse(name).ok_or_else(|| {
        let known = KnownModel::ALL.map(KnownModel::label).join(", ");
        format!("unknown backbone {name:?}: one of {known}")
    })
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

/// A peak-memory reading as printed, `n/a` where the platform gives none.
fn mib(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} MiB")).unwrap_or_else(|| "n/a".into())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p` quantile (0..=1) of times sorted in ascending order.
fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    sorted_ms[((sorted_ms.len() - 1) as f64 * p).round() as usize]
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

/// What a reference script prints on success: its time for the same work as whaleid's side.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Reference {
    pub onnxruntime: String,
    pub threads: usize,
    pub images: usize,
    pub seconds: f64,
    pub ms_per_image: f64,
    pub images_per_second: f64,
    pub best_batch_ms_per_image: f64,
    pub peak_rss_mib: f64,
}

/// The work every reference script times: `images` random inputs of `height` x `width`
/// pixels in batches of `batch`, on `threads` threads.
pub(super) struct ReferenceWork {
    pub images: usize,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub threads: usize,
}

/// Runs the onnxruntime reference script `script` (its text, carried inside the binary, saved
/// as `name` in a scratch folder) with `args`, and reads the one JSON line it prints. `Err`
/// says why there is no reference figure.
fn run_onnxruntime_script(
    name: &str,
    script: &str,
    model: &[std::ffi::OsString],
    work: &ReferenceWork,
) -> Result<Reference, String> {
    use std::process::Command;
    let python = python_with(&["onnxruntime", "numpy", "onnx"])?;
    let scratch = tempdir("whaleid-bench-reference").map_err(|e| format!("no temporary folder for {name} ({e})"))?;
    let path = scratch.path().join(name);
    std::fs::write(&path, script).map_err(|e| format!("cannot write {} ({e})", path.display()))?;
    let output = Command::new(&python)
        .arg(&path)
        .args(model)
        .args(["--images", &work.images.to_string(), "--batch", &work.batch.to_string()])
        .args(["--height", &work.height.to_string(), "--width", &work.width.to_string()])
        .args(["--threads", &work.threads.to_string()])
        .output()
        .map_err(|e| format!("cannot run {} ({e})", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or(serde_json::Value::Null);
    if value["ok"] == serde_json::Value::Bool(true) {
        return serde_json::from_value(value).map_err(|e| format!("unexpected reference output {line:?} ({e})"));
    }
    let reason = match value["error"].as_str() {
        Some(error) => error.to_string(),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            format!("{} ({})", output.status, tail.into_iter().rev().collect::<Vec<_>>().join(" / "))
        }
    };
    Err(format!("the onnxruntime reference failed: {reason}"))
}

/// What `bench embed` times: `rounds` times, `images` random inputs of `size` pixels square in
/// batches of `batch`, by whaleid and then by the reference.
pub(super) struct EmbedWork {
    pub images: usize,
    pub batch: usize,
    pub size: usize,
    pub rounds: usize,
}

/// whaleid's time and a reference's for the same work, measured in rounds (whaleid, then the
/// reference, then whaleid again, ...), so that a slow spell of a shared machine falls on both
/// sides rather than on one: the ratio is the median of the rounds' ratios.
#[derive(serde::Serialize)]
pub(super) struct Rounds {
    /// whaleid's ms per image, round by round.
    pub ms_per_image: Vec<f64>,
    /// whaleid's fastest batch over all rounds, ms per image.
    pub best_batch_ms_per_image: f64,
    /// The reference, round by round (fewer, or none, when it failed).
    pub references: Vec<Reference>,
    /// Why the reference stopped, when it did.
    pub no_reference: Option<String>,
}

impl Rounds {
    /// `rounds` (at least one) of `ours` (ms per image, best batch ms per image) and then
    /// `reference`; after the reference fails once it is not tried again.
    pub fn run(
        rounds: usize,
        mut ours: impl FnMut() -> anyhow::Result<(f64, f64)>,
        mut reference: impl FnMut() -> Result<Reference, String>,
    ) -> anyhow::Result<Self> {
        let mut out = Rounds {
            ms_per_image: vec![],
            best_batch_ms_per_image: f64::INFINITY,
            references: vec![],
            no_reference: None,
        };
        for _ in 0..rounds.max(1) {
            let (ms, best) = ours()?;
            out.ms_per_image.push(ms);
            out.best_batch_ms_per_image = out.best_batch_ms_per_image.min(best);
            if out.no_reference.is_none() {
                match reference() {
                    Ok(r) => out.references.push(r),
                    Err(why) => out.no_reference = Some(why),
                }
            }
        }
        Ok(out)
    }

    /// whaleid's median ms per image over the rounds.
    pub fn ms_per_image(&self) -> f64 {
        median_of(self.ms_per_image.clone())
    }

    /// The median over the rounds with a reference of onnxruntime's ms per image ÷ whaleid's:
    /// >= 1.0 means whaleid is at least as fast.
    pub fn ratio(&self) -> Option<f64> {
        let ratios = self.round_ratios();
        (!ratios.is_empty()).then(|| median_of(ratios))
    }

    /// The same ratio between the fastest batches of all rounds.
    pub fn best_batch_ratio(&self) -> Option<f64> {
        (!self.references.is_empty()).then(|| self.reference_best_ms() / self.best_batch_ms_per_image)
    }

    /// Each round's ratio, for the rounds with a reference.
    fn round_ratios(&self) -> Vec<f64> {
        self.references.iter().zip(&self.ms_per_image).map(|(r, ms)| r.ms_per_image / ms).collect()
    }

    /// The reference's fastest batch over all rounds, ms per image.
    fn reference_best_ms(&self) -> f64 {
        self.references.iter().map(|r| r.best_batch_ms_per_image).fold(f64::INFINITY, f64::min)
    }

    /// The reference's lines of a bench's text: its median time and the ratios, round by round.
    pub fn describe(&self) -> String {
        match (self.references.first(), self.ratio(), self.best_batch_ratio()) {
            (Some(first), Some(ratio), Some(best)) => {
                let ms = median_of(self.references.iter().map(|r| r.ms_per_image).collect());
                let best_ms = self.reference_best_ms();
                let peak = self.references.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);
                let each: Vec<String> = self.round_ratios().iter().map(|r| format!("{r:.2}")).collect();
                format!(
                    "\n  onnxruntime {:<16} {:7.2} images/s  {:7.1} ms/image (best batch {best_ms:.1})  peak RSS {peak:.0} MiB\n  \
                     ratio onnxruntime/whaleid time per image: {ratio:.2}x (median of {} rounds: {}), best batches {best:.2}x ({})",
                    first.onnxruntime,
                    1e3 / ms,
                    ms,
                    each.len(),
                    each.join(", "),
                    if ratio >= 1.0 { "whaleid is at least as fast" } else { "onnxruntime is faster" }
                )
            }
            _ => format!(
                "\n  no ratio against onnxruntime: {}",
                self.no_reference.as_deref().unwrap_or("no reference measurement")
            ),
        }
    }
}

/// Runs `forward` over `images` inputs in batches, after one batch to warm up: (ms per image,
/// best batch ms per image).
pub(super) fn time_batches(
    images: usize,
    batch: usize,
    input: &candle_core::Tensor,
    forward: impl Fn(&candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
) -> candle_core::Result<(f64, f64)> {
    use std::time::Instant;
    drop(forward(input)?);
    let start = Instant::now();
    let (mut done, mut best) = (0, f64::INFINITY);
    while done < images {
        let n = batch.min(images - done);
        let batch_start = Instant::now();
        drop(forward(&input.narrow(0, 0, n)?)?);
        best = best.min(batch_start.elapsed().as_secs_f64() * 1e3 / n as f64);
        done += n;
    }
    Ok((start.elapsed().as_secs_f64() * 1e3 / images.max(1) as f64, best))
}

/// The median of `v` (the mean of the middle two of an even count); `v` is not empty.
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let half = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[half - 1] + v[half]) / 2.0 } else { v[half] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(ms: f64, best: f64) -> Reference {
        Reference {
            onnxruntime: "test".into(),
            threads: 2,
            images: 4,
            seconds: ms * 4e-3,
            ms_per_image: ms,
            images_per_second: 1e3 / ms,
            best_batch_ms_per_image: best,
            peak_rss_mib: 1.0,
        }
    }

    /// Each round pairs whaleid's time with the reference's measured just after it; the ratio
    /// is the median of the pairs' (the mean of the middle two for an even count), not the
    /// ratio of separate medians, and a failed reference is not run again.
    #[test]
    fn rounds_pair_each_time_with_the_reference_after_it() -> anyhow::Result<()> {
        let ours = [(10.0, 9.0), (20.0, 8.0), (10.0, 9.5)];
        let theirs = [(12.0, 11.0), (20.0, 10.0), (8.0, 7.0)];
        let (mut i, mut j) = (0, 0);
        let rounds = Rounds::run(
            3,
            || {
                i += 1;
                Ok(ours[i - 1])
            },
            || {
                j += 1;
                Ok(reference(theirs[j - 1].0, theirs[j - 1].1))
            },
        )?;
        assert_eq!(rounds.ms_per_image(), 10.0);
        // Ratios 1.2, 1.0, 0.8: the median is 1.0.
        assert!((rounds.ratio().unwrap() - 1.0).abs() < 1e-12);
        assert!((rounds.best_batch_ratio().unwrap() - 7.0 / 8.0).abs() < 1e-12);
        assert!(rounds.describe().contains("median of 3 rounds: 1.20, 1.00, 0.80"), "{}", rounds.describe());

        let mut tries = 0;
        let failing = Rounds::run(
            4,
            || Ok((5.0, 5.0)),
            || {
                tries += 1;
                match tries {
                    1 | 2 => Ok(reference(5.0 * tries as f64, 5.0)),
                    _ => Err("onnxruntime crashed".to_string()),
                }
            },
        )?;
        assert_eq!(tries, 3, "the reference is not run again after it fails");
        assert_eq!(failing.ms_per_image.len(), 4);
        // Ratios 1.0 and 2.0 from the two rounds that had one: the mean of the middle two.
        assert!((failing.ratio().unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(failing.no_reference.as_deref(), Some("onnxruntime crashed"));

        let none = Rounds::run(2, || Ok((5.0, 5.0)), || Err("no python3".to_string()))?;
        assert!(none.ratio().is_none() && none.best_batch_ratio().is_none());
        assert!(none.describe().contains("no ratio against onnxruntime: no python3"));
        Ok(())
    }
}
