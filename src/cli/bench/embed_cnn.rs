//! `whaleid bench embed --model efficientnet-lite*`: the EfficientNet-Lite backbone's speed and
//! memory on the CPU, against onnxruntime running the same network (built from the same
//! weights) with the same thread count, and DINOv2 ViT-S/14's time per image in the same run.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::{
    EmbedWork, Reference, ReferenceWork, Rounds, peak_rss_mib, reset_peak_rss, run_onnxruntime_script, time_batches,
};
use crate::models::{Dinov2, EfficientNet, EfficientNetConfig, Kernels, efficientnet_safetensors_path};

/// The reference script, carried inside the binary so that the bench runs from anywhere.
const REFERENCE_SCRIPT: &str = include_str!("../../../benches/efficientnet_reference.py");

#[derive(Serialize)]
struct CnnBench {
    model: String,
    images: usize,
    batch: usize,
    size: usize,
    threads: usize,
    /// The median round's.
    ms_per_image: f64,
    images_per_second: f64,
    best_batch_ms_per_image: f64,
    /// Weights plus everything one batch needs (the mark is reset after loading the model).
    peak_rss_mib: Option<f64>,
    /// The same work through candle tensors (the differentiable path training and the GPU
    /// run).
    stock_candle_ms_per_image: f64,
    /// onnxruntime ms/image ÷ whaleid ms/image, the median of the rounds': >= 1.0 means
    /// whaleid is at least as fast.
    ratio_vs_onnxruntime: Option<f64>,
    best_batch_ratio_vs_onnxruntime: Option<f64>,
    /// Each round's figures, whaleid's and onnxruntime's.
    rounds: Rounds,
    /// DINOv2 ViT-S/14 at 224 px, same batches, whaleid's fused kernels.
    dinov2_ms_per_image: Option<f64>,
    /// DINOv2 ms/image ÷ this model's ms/image.
    speedup_vs_dinov2: Option<f64>,
}

pub(super) fn bench_embed_cnn(
    config: &EfficientNetConfig,
    work: &EmbedWork,
    models_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let &EmbedWork { images, batch, size, rounds } = work;
    anyhow::ensure!(images > 0 && batch > 0 && size > 0, "--images, --batch and --size must be positive");
    let weights = efficientnet_safetensors_path(models_dir, config);
    let label = config.name.replace('_', "-");
    anyhow::ensure!(
        weights.is_file(),
        "{} is absent: run `whaleid models fetch --model {label}` first",
        weights.display()
    );
    let threads = rayon::current_num_threads();
    let device = Device::Cpu;
    let mut model = EfficientNet::load(&weights, &device)?;
    let input = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;

    reset_peak_rss();
    let rounds = Rounds::run(
        rounds,
        || Ok(time_batches(images, batch, &input, |x| model.forward(x))?),
        || onnxruntime_reference(&weights, images, batch, (size, size), threads),
    )?;
    let peak = peak_rss_mib();
    model.set_kernels(Kernels::Differentiable);
    let stock_images = images.min(2 * batch);
    let (stock_ms, _) = time_batches(stock_images, batch, &input, |x| model.forward(x))?;
    drop(model);

    let dinov2_ms = match Dinov2::load(&crate::models::dinov2_safetensors_path(models_dir), &device) {
        Ok(dinov2) => {
            let input = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device)?;
            let n = images.min(2 * batch);
            Some(time_batches(n, batch, &input, |x| dinov2.forward(x))?.0)
        }
        Err(_) => None,
    };
    let ms_per_image = rounds.ms_per_image();
    let out = CnnBench {
        model: label,
        images,
        batch,
        size,
        threads,
        ms_per_image,
        images_per_second: 1e3 / ms_per_image,
        best_batch_ms_per_image: rounds.best_batch_ms_per_image,
        peak_rss_mib: peak,
        stock_candle_ms_per_image: stock_ms,
        ratio_vs_onnxruntime: rounds.ratio(),
        best_batch_ratio_vs_onnxruntime: rounds.best_batch_ratio(),
        rounds,
        dinov2_ms_per_image: dinov2_ms,
        speedup_vs_dinov2: dinov2_ms.map(|d| d / ms_per_image),
    };
    crate::base::console::emit(json, &out, |o| {
        let mut text = format!(
            "{} on {} random images of {}x{} px, batch {}, {} threads, CPU, {} rounds\n  \
             whaleid (candle, fused kernels) {:7.2} images/s  {:7.1} ms/image (best batch {:.1})  peak RSS {}\n  \
             candle ops (the training path) {:.1} ms/image: the fused path is {:.1}x faster",
            o.model,
            o.images,
            o.size,
            o.size,
            o.batch,
            o.threads,
            o.rounds.ms_per_image.len(),
            o.images_per_second,
            o.ms_per_image,
            o.best_batch_ms_per_image,
            super::mib(o.peak_rss_mib),
            o.stock_candle_ms_per_image,
            o.stock_candle_ms_per_image / o.ms_per_image,
        );
        text.push_str(&o.rounds.describe());
        if let (Some(d), Some(s)) = (o.dinov2_ms_per_image, o.speedup_vs_dinov2) {
            text.push_str(&format!(
                "\n  DINOv2 ViT-S/14 at 224 px (whaleid): {d:.1} ms/image; this model is {s:.1}x faster"
            ));
        }
        text
    })
}

/// Runs `benches/efficientnet_reference.py` on the same weights, work (`images` inputs of
/// `(height, width)` pixels in batches of `batch`) and thread count.
pub(super) fn onnxruntime_reference(
    weights: &Path,
    images: usize,
    batch: usize,
    (height, width): (usize, usize),
    threads: usize,
) -> Result<Reference, String> {
    eprintln!("measuring onnxruntime on the same network ({})", weights.display());
    let args = ["--weights".into(), weights.as_os_str().to_owned()];
    run_onnxruntime_script(
        "efficientnet_reference.py",
        REFERENCE_SCRIPT,
        &args,
        &ReferenceWork { images, batch, height, width, threads },
    )
}
