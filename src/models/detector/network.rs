//! The learned detector's head: a small network over the backbone's feature grid that give,
//! per cell, an objectness logit, the distances from the cell's centre to the four sides of
//! the box it belongs to (FCOS-style, log-encoded in grid cells) and the part's logits.

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};

use super::boxes::Detection;
use crate::base::vocabulary::{BoxPx, Part};

/// Objectness starts at this prior probability everywhere (most cells are sea), so the
/// first steps are not spent learning that.
const OBJECT_PRIOR: f64 = 0.01;

pub struct DetectorNet {
    /// Per-channel standardisation of the features, measured on the training photos.
    mean: Tensor,
    std: Tensor,
    hidden: [Linear; 2],
    objectness: Linear,
    regression: Linear,
    parts: usize,
}

/// What the head gives for one photo's grid: `[rows * cols]` objectness logits, `[rows *
/// cols, 4]` log distances, `[rows * cols, parts]` part logits.
pub struct HeadOutput {
    pub objectness: Tensor,
    pub distances: Tensor,
    pub parts: Tensor,
}

impl DetectorNet {
    /// `channels`: the feature grid's width; `hidden`: the head's; `parts`: the classes.
    ///
    /// The head looks at each cell on its own (two hidden layers): the backbone's deep
    /// features already see far beyond their cell, and matrix products train fast on a CPU
    /// where convolutions' gradients do not.
    pub fn new(vb: VarBuilder, channels: usize, hidden: usize, parts: usize) -> Result<Self> {
        let mean = vb.get_with_hints(channels, "feature_mean", Init::Const(0.0))?;
        let std = vb.get_with_hints(channels, "feature_std", Init::Const(1.0))?;
        let hidden_layers = [
            candle_nn::linear(channels, hidden, vb.pp("hidden0"))?,
            candle_nn::linear(hidden, hidden, vb.pp("hidden1"))?,
        ];
        let bias_prior = -((1.0 - OBJECT_PRIOR) / OBJECT_PRIOR).ln();
        let objectness = {
            let vb = vb.pp("objectness");
            let w = vb.get_with_hints((1, hidden), "weight", Init::Randn { mean: 0.0, stdev: 0.01 })?;
            let b = vb.get_with_hints(1, "bias", Init::Const(bias_prior))?;
            Linear::new(w, Some(b))
        };
        let regression = candle_nn::linear(hidden, 4 + parts, vb.pp("regression"))?;
        Ok(Self { mean, std, hidden: hidden_layers, objectness, regression, parts })
    }

    /// `features` `[1, C, rows, cols]` -> the head's outputs, cell by cell, row by row.
    pub fn forward(&self, features: &Tensor) -> Result<HeadOutput> {
        let (_, c, rows, cols) = features.dims4()?;
        let cells = rows * cols;
        let x = features.reshape((c, cells))?.t()?;
        let x = x.broadcast_sub(&self.mean.unsqueeze(0)?)?.broadcast_div(&self.std.unsqueeze(0)?)?;
        let mut x = self.hidden[0].forward(&x)?.relu()?;
        x = (self.hidden[1].forward(&x)?.relu()? + &x)?;
        let objectness = self.objectness.forward(&x)?.reshape(cells)?;
        let regression = self.regression.forward(&x)?;
        let distances = regression.narrow(1, 0, 4)?.contiguous()?;
        let parts = regression.narrow(1, 4, self.parts)?.contiguous()?;
        Ok(HeadOutput { objectness, distances, parts })
    }
}

/// Turns one photo's head outputs into boxes in photo pixels: every cell whose objectness is
/// at least `min_score` gives a box around its centre. `stride`: input pixels per cell;
/// `scale`: input pixels per photo pixel.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    out: &HeadOutput,
    rows: usize,
    cols: usize,
    stride: f64,
    scale: f64,
    photo: (u32, u32),
    part_names: &[Part],
    min_score: f32,
) -> Result<Vec<Detection>> {
    let scores = candle_nn::ops::sigmoid(&out.objectness)?.to_vec1::<f32>()?;
    let distances = out.distances.exp()?.to_vec2::<f32>()?;
    let parts = out.parts.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let (pw, ph) = (photo.0 as f64, photo.1 as f64);
    let mut found = Vec::new();
    for (i, &score) in scores.iter().enumerate() {
        if score < min_score || !score.is_finite() {
            continue;
        }
        let (r, c) = ((i / cols) as f64, (i % cols) as f64);
        let (cx, cy) = ((c + 0.5) * stride, (r + 0.5) * stride);
        let d = &distances[i];
        let x0 = ((cx - d[0] as f64 * stride) / scale).clamp(0.0, pw);
        let y0 = ((cy - d[1] as f64 * stride) / scale).clamp(0.0, ph);
        let x1 = ((cx + d[2] as f64 * stride) / scale).clamp(0.0, pw);
        let y1 = ((cy + d[3] as f64 * stride) / scale).clamp(0.0, ph);
        if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
            continue;
        }
        let part = part_names.get(parts[i] as usize).copied().unwrap_or(Part::Body);
        found.push(Detection { bbox: BoxPx::new(x0, y0, x1 - x0, y1 - y0), score, part });
    }
    debug_assert!(rows * cols == scores.len());
    Ok(found)
}

/// What one photo teaches: per cell, whether it belongs to a true box (and which), and which
/// cells are left out of the loss (inside boxes nobody has reviewed yet).
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[cells]`: 1 for a cell near a true box's centre, else 0.
    pub objectness: Vec<f32>,
    /// `[cells]`: 0 where the cell is not known to be sea or animal, else 1.
    pub weight: Vec<f32>,
    /// The positive cells, their log distances (in cells) and part index.
    pub positives: Vec<(u32, [f32; 4], u32)>,
}

/// Cells whose centres lie within this many cells of a true box's centre (and inside the
/// box) are its positives: a small fin still gets a few, a large fluke not hundreds.
const CENTRE_RADIUS: f64 = 1.5;

/// Targets for a `rows` x `cols` grid of `stride`-pixel cells from boxes in input pixels.
/// `truths`: (box, part index); `ignored`: boxes whose cells are left out (unreviewed).
pub fn targets(rows: usize, cols: usize, stride: f64, truths: &[(BoxPx, u32)], ignored: &[BoxPx]) -> Targets {
    let cells = rows * cols;
    let mut objectness = vec![0f32; cells];
    let mut weight = vec![1f32; cells];
    // The smallest box claims a cell two boxes share.
    let mut owner: Vec<Option<(f64, [f32; 4], u32)>> = vec![None; cells];
    let centre = |i: usize| (((i % cols) as f64 + 0.5) * stride, ((i / cols) as f64 + 0.5) * stride);
    for b in ignored {
        for (i, w) in weight.iter_mut().enumerate() {
            let (x, y) = centre(i);
            if x >= b.x && x <= b.x + b.w && y >= b.y && y <= b.y + b.h {
                *w = 0.0;
            }
        }
    }
    for &(b, part) in truths {
        let (bx, by) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
        let radius = CENTRE_RADIUS * stride;
        let mut nearest: Option<(usize, f64)> = None;
        for (i, slot) in owner.iter_mut().enumerate() {
            let (x, y) = centre(i);
            let dist = (x - bx).abs().max((y - by).abs());
            if nearest.is_none_or(|(_, d)| dist < d) {
                nearest = Some((i, dist));
            }
            let inside = x > b.x && x < b.x + b.w && y > b.y && y < b.y + b.h;
            if inside && (x - bx).abs() <= radius && (y - by).abs() <= radius {
                claim(slot, b, (x, y), stride, part);
            }
        }
        // A box smaller than a cell still owns the cell its centre falls in.
        if let Some((i, _)) = nearest.filter(|(i, _)| owner[*i].is_none()) {
            claim(&mut owner[i], b, centre(i), stride, part);
        }
    }
    let mut positives = Vec::new();
    for (i, o) in owner.into_iter().enumerate() {
        if let Some((_, d, part)) = o {
            objectness[i] = 1.0;
            weight[i] = 1.0;
            positives.push((i as u32, d, part));
        }
    }
    Targets { objectness, weight, positives }
}

fn claim(slot: &mut Option<(f64, [f32; 4], u32)>, b: BoxPx, (x, y): (f64, f64), stride: f64, part: u32) {
    let area = b.area();
    if slot.is_some_and(|(a, _, _)| a <= area) {
        return;
    }
    let side = |v: f64| ((v / stride).max(0.05)).ln() as f32;
    let d = [side(x - b.x), side(y - b.y), side(b.x + b.w - x), side(b.y + b.h - y)];
    *slot = Some((area, d, part));
}

/// The training loss of one photo: focal loss on objectness over the cells that count,
/// normalised by the number of positives; L1 on the log distances and cross-entropy on the
/// part at the positives.
pub fn loss(out: &HeadOutput, t: &Targets, device: &Device) -> Result<Tensor> {
    let cells = t.objectness.len();
    let target = Tensor::from_slice(&t.objectness, cells, device)?;
    let weight = Tensor::from_slice(&t.weight, cells, device)?;
    let x = &out.objectness;
    // Binary cross-entropy with logits, stably: max(x, 0) - x t + log(1 + exp(-|x|)).
    let bce = ((x.relu()? - (x * &target)?)? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let p = candle_nn::ops::sigmoid(x)?;
    // p_t = p t + (1 - p)(1 - t); focal factor (1 - p_t)^2; alpha 0.25 on positives.
    let one_minus_t = target.affine(-1.0, 1.0)?;
    let p_t = ((&p * &target)? + (p.affine(-1.0, 1.0)? * &one_minus_t)?)?;
    let focal = p_t.affine(-1.0, 1.0)?.sqr()?;
    // Alpha: 0.75 on positives, 0.25 on the (far more numerous) negatives.
    let alpha = target.affine(0.5, 0.25)?;
    let per_cell = (((bce * focal)? * alpha)? * weight)?;
    let positives = t.positives.len().max(1) as f64;
    let mut total = (per_cell.sum_all()? / positives)?;
    if !t.positives.is_empty() {
        let index: Vec<u32> = t.positives.iter().map(|p| p.0).collect();
        let index = Tensor::from_vec(index, t.positives.len(), device)?;
        let wanted: Vec<f32> = t.positives.iter().flat_map(|p| p.1).collect();
        let wanted = Tensor::from_vec(wanted, (t.positives.len(), 4), device)?;
        let got = out.distances.index_select(&index, 0)?;
        let l1 = (got - wanted)?.abs()?.mean_all()?;
        total = (total + l1)?;
        let parts = out.parts.dim(1)?;
        if parts > 1 {
            let logits = out.parts.index_select(&index, 0)?;
            let classes: Vec<u32> = t.positives.iter().map(|p| p.2).collect();
            let classes = Tensor::from_vec(classes, t.positives.len(), device)?;
            let max = logits.max_keepdim(1)?.detach();
            let shifted = logits.broadcast_sub(&max)?;
            let log_sum = shifted.exp()?.sum_keepdim(1)?.log()?;
            let log_p = shifted.broadcast_sub(&log_sum)?;
            let picked = log_p.gather(&classes.unsqueeze(1)?, 1)?;
            total = (total - picked.mean_all()?)?;
        }
    }
    Ok(total)
}
