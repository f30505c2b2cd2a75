//! Training the detector's second look (`models::detector::refine`): windows around each
//! true box, as the first look would place them (shifted and resized at random, mirrored
//! too), and around the boxes the trained first look itself puts among each photo's best,
//! each read once by the backbone and cached. The head then learns, from the cached windows,
//! to put the true box's edges back and to judge whether a window is centred on an animal's
//! box (the first look's wrong boxes are the windows that teach what is not).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Finder, PhotoProblem, with_photo};
use crate::base::progress::Progress;
use crate::base::vocabulary::BoxPx;
use crate::models::Backbone;
use crate::models::detector::{self, Detector, RefineConfig, RefineNet, Wanted, Window};

/// Windows drawn around each true box, per side of the mirror.
const DRAWS: usize = 6;
/// How far a drawn box strays from the true one: its centre by up to this share of the
/// box's sides, each side scaled by up to e^± this (what the first look's boxes do).
const SHIFT: f64 = 0.2;
const LOG_SCALE: f64 = 0.35;
const BATCH: usize = 16;
const LEARNING_RATE: f64 = 2e-3;

/// One cached window: its features (f16, `[C, rows, cols]`) and what it should teach.
pub(super) struct WindowSample {
    features: Tensor,
    wanted: Wanted,
}

/// A window drawn around `drawn` teaches the edges of the true box it overlaps most, if that
/// overlap is at least this (IoU)...
const PLACE_IOU: f32 = 0.3;
/// ...and that it is centred on an animal's box if the overlap is at least this, and that it
/// is not if the overlap is under [`PLACE_IOU`].
const JUDGE_IOU: f32 = 0.5;

/// What a window of side `input` around `drawn` should teach, given the photo's `truths`.
fn wanted(window: &Window, drawn: &BoxPx, truths: &[BoxPx], input: u32, stride: f64) -> Wanted {
    let best = truths.iter().map(|t| (t, t.iou(drawn) as f32)).max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((t, iou)) if iou >= PLACE_IOU => Wanted {
            edges: window.edges_of(t, input, stride),
            weight: 1.0,
            label: 1.0,
            label_weight: if iou >= JUDGE_IOU { 1.0 } else { 0.0 },
        },
        _ => Wanted { edges: [0.0; 4], weight: 0.0, label: 0.0, label_weight: 1.0 },
    }
}

/// Cells a window's grid has on each side.
const WINDOW_CELLS: u32 = 12;

/// How the second look reads boxes for a detector whose finest grid has `stride`-pixel cells
/// and `channels` features: windows of 12 cells a side (168 px for a ViT's 14-px patches).
pub(super) fn config_for(stride: usize, channels: usize) -> RefineConfig {
    RefineConfig {
        input: WINDOW_CELLS * stride.max(1) as u32,
        context: 2.0,
        channels,
        hidden: 32,
        boxes: 4,
        judges: true,
    }
}

/// `det` with a second look of random weights (what `bench detect` times when it trains
/// nothing: the same work per photo as a trained one).
pub fn with_untrained_second_look(backbone: &dyn Backbone, det: Detector) -> anyhow::Result<Detector> {
    let config = config_for(det.config.stride, det.config.channels.iter().sum());
    let vars = VarMap::new();
    let net = RefineNet::new(VarBuilder::from_varmap(&vars, DType::F32, backbone.device()), &config)?;
    Ok(det.with_refiner(config, net))
}

/// A box that strays from `b` as the first look's boxes do.
fn drawn_near(b: &BoxPx, rng: &mut impl Rng) -> BoxPx {
    let mut u = |r: f64| rng.random_range(-r..=r);
    let (cx, cy) = (b.x + b.w / 2.0 + u(SHIFT) * b.w, b.y + b.h / 2.0 + u(SHIFT) * b.h);
    let (w, h) = (b.w * u(LOG_SCALE).exp(), b.h * u(LOG_SCALE).exp());
    BoxPx::new(cx - w / 2.0, cy - h / 2.0, w, h)
}

/// The windows of every photo of `photos` (its file and true boxes), read and cached: around
/// each true box, drawn as the first look would place it, and around each of the boxes the
/// detector `first_look` puts among the photo's best (those the second look will be shown);
/// `stride`: input pixels per cell of the finest grid. A photo that cannot be read goes to
/// `problems`.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_windows(
    photos: &[(&Path, Vec<BoxPx>)],
    first_look: &Detector,
    finder: &Finder,
    config: &RefineConfig,
    stride: f64,
    seed: u64,
    progress: &dyn Progress,
    problems: &mut Vec<PhotoProblem>,
) -> anyhow::Result<Vec<WindowSample>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut out = Vec::new();
    for (file, truths) in photos {
        if progress.cancelled() {
            anyhow::bail!("cancelled");
        }
        let read = with_photo(file, |img| {
            let (input, features) = finder.features(&img)?;
            let candidates: Vec<BoxPx> =
                first_look.first_look(&features, &input)?.iter().take(config.boxes).map(|d| d.bbox).collect();
            let mut read = Vec::new();
            for mirrored in [false, true] {
                let shown = if mirrored { img.fliph().to_rgb8() } else { img.to_rgb8() };
                let width = shown.width() as f64;
                let place = |b: &BoxPx| if mirrored { BoxPx::new(width - b.x - b.w, b.y, b.w, b.h) } else { *b };
                let truths: Vec<BoxPx> = truths.iter().map(place).collect();
                let mut drawn: Vec<BoxPx> = Vec::new();
                for b in &truths {
                    drawn.push(*b);
                    drawn.extend((1..DRAWS).map(|_| drawn_near(b, &mut rng)));
                }
                drawn.extend(candidates.iter().map(place));
                if drawn.is_empty() {
                    continue;
                }
                let windows: Vec<Window> = drawn.iter().map(|d| Window::around(d, config.context)).collect();
                let maps =
                    detector::window_features(finder.backbone.as_ref(), &finder.taps, &shown, &windows, config.input)?
                        .to_dtype(DType::F16)?;
                for (i, (w, d)) in windows.iter().zip(&drawn).enumerate() {
                    let wanted = wanted(w, d, &truths, config.input, stride);
                    read.push(WindowSample { features: maps.get(i)?, wanted });
                }
            }
            Ok(read)
        });
        match read {
            Ok(read) => out.extend(read),
            Err(problem) => problems.push(problem),
        }
        progress.advance(1);
    }
    Ok(out)
}

/// The second look trained on `windows` for `epochs` (seeded: the same windows give the
/// same start and order), its variables under [`detector::REFINE_PREFIX`] in the map
/// returned.
pub(super) fn fit_refiner(
    windows: &[WindowSample],
    config: &RefineConfig,
    epochs: usize,
    device: &Device,
    seed: u64,
    progress: &dyn Progress,
) -> anyhow::Result<(VarMap, RefineNet)> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
    let net = RefineNet::new(vb.pp(detector::REFINE_PREFIX), config)?;
    crate::models::reseed(&vars, seed)?;
    standardise(&vars, windows, device)?;
    // The standardised cells of each window, `[cells, C]`: computed once, not every epoch.
    let (_, rows, cols) = windows[0].features.dims3()?;
    let cells = windows
        .iter()
        .map(|w| Ok(net.standardised(&w.features.unsqueeze(0)?.to_dtype(DType::F32)?)?.to_dtype(DType::F16)?))
        .collect::<anyhow::Result<Vec<Tensor>>>()?;
    let trainable: Vec<candle_core::Var> = {
        let data = vars.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        data.iter().filter(|(k, _)| !k.contains("feature_")).map(|(_, v)| v.clone()).collect()
    };
    let mut opt = AdamW::new(trainable, ParamsAdamW { lr: LEARNING_RATE, weight_decay: 1e-4, ..Default::default() })?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..windows.len()).collect();
    let steps = (epochs * windows.len().div_ceil(BATCH)).max(1);
    let mut step = 0usize;
    progress.stage("training the second look", epochs as u64);
    for _ in 0..epochs {
        if progress.cancelled() {
            anyhow::bail!("cancelled");
        }
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
            opt.set_learning_rate(LEARNING_RATE * (0.02 + 0.98 * cosine));
            let x: Vec<&Tensor> = batch.iter().map(|&i| &cells[i]).collect();
            let x = Tensor::cat(&x, 0)?.to_dtype(DType::F32)?;
            let wanted: Vec<Wanted> = batch.iter().map(|&i| windows[i].wanted).collect();
            let looked = net.forward_cells(&x, batch.len(), rows, cols)?;
            opt.backward_step(&detector::refine_loss(&looked, &wanted)?)?;
            step += 1;
        }
        progress.advance(1);
    }
    Ok((vars, net))
}

/// Sets the second look's feature standardisation to the windows' per-channel mean and
/// standard deviation.
fn standardise(vars: &VarMap, windows: &[WindowSample], device: &Device) -> anyhow::Result<()> {
    if windows.is_empty() {
        anyhow::bail!("no windows to train the second look on");
    }
    let maps = windows.iter().step_by(3).map(|w| w.features.to_dtype(DType::F32)?.flatten_from(1));
    Ok(detector::set_standardisation(vars, detector::REFINE_PREFIX, maps, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_boxes_stray_from_the_true_one_by_at_most_the_set_shift_and_scale() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let b = BoxPx::new(100.0, 200.0, 50.0, 30.0);
        let (mut smaller, mut larger) = (false, false);
        for _ in 0..200 {
            let d = drawn_near(&b, &mut rng);
            let (dx, dy) = ((d.x + d.w / 2.0) - 125.0, (d.y + d.h / 2.0) - 215.0);
            assert!(dx.abs() <= SHIFT * 50.0 + 1e-9 && dy.abs() <= SHIFT * 30.0 + 1e-9, "{d:?}");
            let (sw, sh) = ((d.w / 50.0).ln(), (d.h / 30.0).ln());
            assert!(sw.abs() <= LOG_SCALE + 1e-9 && sh.abs() <= LOG_SCALE + 1e-9, "{d:?}");
            smaller |= d.w < 45.0;
            larger |= d.w > 55.0;
            // Every true edge stays inside the window drawn around the stray box.
            let e = Window::around(&d, 2.0).edges_of(&b, 168, 14.0);
            assert!(e.iter().all(|&v| (0.0..=12.0).contains(&v)), "{e:?}");
        }
        assert!(smaller && larger);
    }

    /// A window around a true box teaches its edges and that it is one; around a box half
    /// on it, only its edges; around sea, only that it is not one.
    #[test]
    fn windows_teach_the_edges_of_the_true_box_they_overlap_and_whether_they_are_centred_on_one() {
        let truths = [BoxPx::new(100.0, 100.0, 40.0, 40.0), BoxPx::new(400.0, 100.0, 60.0, 30.0)];
        let teach = |drawn: BoxPx| wanted(&Window::around(&drawn, 2.0), &drawn, &truths, 168, 14.0);
        let on = teach(truths[1]);
        assert_eq!((on.weight, on.label, on.label_weight), (1.0, 1.0, 1.0));
        assert_eq!(on.edges, Window::around(&truths[1], 2.0).edges_of(&truths[1], 168, 14.0));
        // IoU 0.4 with the first box: placed from there, not judged.
        let half = BoxPx::new(100.0, 100.0, 40.0, 16.0);
        let near = teach(half);
        assert_eq!((near.weight, near.label_weight), (1.0, 0.0));
        assert_eq!(near.edges, Window::around(&half, 2.0).edges_of(&truths[0], 168, 14.0));
        let sea = teach(BoxPx::new(250.0, 300.0, 40.0, 40.0));
        assert_eq!((sea.weight, sea.label, sea.label_weight), (0.0, 0.0, 1.0));
        // A photo with no true box (only rejected ones): every window is sea.
        let drawn = BoxPx::new(10.0, 10.0, 20.0, 20.0);
        assert_eq!(wanted(&Window::around(&drawn, 2.0), &drawn, &[], 168, 14.0).label_weight, 1.0);
    }
}
