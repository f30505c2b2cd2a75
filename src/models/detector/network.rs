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

/// One tap's input layer: the tap's features standardised (per channel, measured on the
/// training photos) and projected to the head's width on the tap's own grid.
struct TapInput {
    mean: Tensor,
    std: Tensor,
    linear: Linear,
}

pub struct DetectorNet {
    taps: Vec<TapInput>,
    /// Reads each cell's 3 x 3 neighbourhood of the first layer: where the edges of the
    /// animal lie around the cell, which the box's sides are measured from.
    context: Linear,
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
    /// `channels`: the width of each tap's features; `hidden`: the head's; `parts`: the
    /// classes.
    ///
    /// Each tap is projected on its own grid and the coarser ones are brought to the finest
    /// afterwards (a linear map commutes with repeating cells, so this is the same as
    /// projecting the upsampled features, at a fraction of the cost); one layer then reads
    /// each cell's neighbourhood. Matrix products throughout: they train fast on a CPU where
    /// convolutions' gradients do not.
    pub fn new(vb: VarBuilder, channels: &[usize], hidden: usize, parts: usize) -> Result<Self> {
        let taps = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let vb = vb.pp(format!("tap{i}"));
                Ok(TapInput {
                    mean: vb.get_with_hints(c, "feature_mean", Init::Const(0.0))?,
                    std: vb.get_with_hints(c, "feature_std", Init::Const(1.0))?,
                    linear: candle_nn::linear(c, hidden, vb.pp("linear"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let context = candle_nn::linear(9 * hidden, hidden, vb.pp("context"))?;
        let bias_prior = -((1.0 - OBJECT_PRIOR) / OBJECT_PRIOR).ln();
        let objectness = {
            let vb = vb.pp("objectness");
            let w = vb.get_with_hints((1, hidden), "weight", Init::Randn { mean: 0.0, stdev: 0.01 })?;
            let b = vb.get_with_hints(1, "bias", Init::Const(bias_prior))?;
            Linear::new(w, Some(b))
        };
        let regression = candle_nn::linear(hidden, 4 + parts, vb.pp("regression"))?;
        Ok(Self { taps, context, objectness, regression, parts })
    }

    /// `maps`: one `[1, C, rows, cols]` map per tap -> the head's outputs on the finest
    /// grid, cell by cell, row by row.
    pub fn forward(&self, maps: &[Tensor]) -> Result<HeadOutput> {
        if maps.len() != self.taps.len() {
            candle_core::bail!("the detector reads {} feature maps, got {}", self.taps.len(), maps.len());
        }
        let (rows, cols) = finest_grid(maps);
        let cells = rows * cols;
        let mut first: Option<Tensor> = None;
        for (tap, map) in self.taps.iter().zip(maps) {
            let (_, c, r, k) = map.dims4()?;
            let x = map.reshape((c, r * k))?.t()?;
            let x = x.broadcast_sub(&tap.mean.unsqueeze(0)?)?.broadcast_div(&tap.std.unsqueeze(0)?)?;
            let y = tap.linear.forward(&x)?.t()?.reshape((1, (), r, k))?;
            let y = upsample_nearest(&y, rows, cols)?;
            first = Some(match first {
                Some(sum) => (sum + y)?,
                None => y,
            });
        }
        let first = first.ok_or_else(|| candle_core::Error::Msg("no feature maps".into()))?.relu()?;
        let hidden = first.dim(1)?;
        let flat = first.reshape((hidden, cells))?.t()?;
        let x = (self.context.forward(&neighbourhoods(&first)?)?.relu()? + flat)?;
        let objectness = self.objectness.forward(&x)?.reshape(cells)?;
        let regression = self.regression.forward(&x)?;
        let distances = regression.narrow(1, 0, 4)?.contiguous()?;
        let parts = regression.narrow(1, 4, self.parts)?.contiguous()?;
        Ok(HeadOutput { objectness, distances, parts })
    }
}

/// The rows and columns of the finest of `[1, C, rows, cols]` maps.
pub fn finest_grid(maps: &[Tensor]) -> (usize, usize) {
    maps.iter().filter_map(|m| m.dims4().ok().map(|(_, _, r, k)| (r, k))).max_by_key(|(r, k)| r * k).unwrap_or((0, 0))
}

/// `[1, C, r, k]` -> `[1, C, rows, cols]`, each cell taking the value of the cell it falls
/// in (index selection, so gradients flow back through it whatever the ratio).
fn upsample_nearest(map: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let (_, _, r, k) = map.dims4()?;
    if (r, k) == (rows, cols) {
        return Ok(map.clone());
    }
    let index =
        |from: usize, to: usize| -> Vec<u32> { (0..to).map(|i| ((i * from) / to).min(from - 1) as u32).collect() };
    let dev = map.device();
    let row_index = Tensor::from_vec(index(r, rows), rows, dev)?;
    let col_index = Tensor::from_vec(index(k, cols), cols, dev)?;
    map.index_select(&row_index, 2)?.index_select(&col_index, 3)
}

/// `[B, C, rows, cols]` -> `[B * rows * cols, 9 C]`: each cell's 3 x 3 neighbourhood (zeros
/// beyond the border), neighbour by neighbour; maps one after the other.
pub(super) fn neighbourhoods(map: &Tensor) -> Result<Tensor> {
    let (b, c, rows, cols) = map.dims4()?;
    let padded = map.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut shifted = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            shifted.push(padded.narrow(2, dy, rows)?.narrow(3, dx, cols)?);
        }
    }
    Tensor::cat(&shifted, 1)?.reshape((b, 9 * c, rows * cols))?.transpose(1, 2)?.reshape((b * rows * cols, 9 * c))
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

/// Binary cross-entropy of logits `x` against targets `t` (same shape), element by element,
/// written to stay finite for large |x|: max(x, 0) - x t + log(1 + exp(-|x|)).
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    (x.relu()? - (x * t)?)? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}

/// The training loss of one photo: focal loss on objectness over the cells that count,
/// normalised by the number of positives; L1 on the log distances and cross-entropy on the
/// part at the positives.
pub fn loss(out: &HeadOutput, t: &Targets, device: &Device) -> Result<Tensor> {
    let cells = t.objectness.len();
    let target = Tensor::from_slice(&t.objectness, cells, device)?;
    let weight = Tensor::from_slice(&t.weight, cells, device)?;
    let x = &out.objectness;
    let bce = bce_with_logits(x, &target)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

    #[test]
    fn upsampling_repeats_each_cell_and_passes_gradients_back_to_it() -> Result<()> {
        let map = candle_core::Var::from_vec((0..6).map(|v| v as f32).collect::<Vec<_>>(), (1, 1, 2, 3), &Device::Cpu)?;
        let up = upsample_nearest(map.as_tensor(), 4, 6)?;
        let rows = up.reshape((4, 6))?.to_vec2::<f32>()?;
        assert_eq!(rows[0], [0., 0., 1., 1., 2., 2.]);
        assert_eq!(rows[3], [3., 3., 4., 4., 5., 5.]);
        // An uneven ratio still maps every cell to the cell it falls in.
        let odd = upsample_nearest(map.as_tensor(), 3, 5)?.reshape((3, 5))?.to_vec2::<f32>()?;
        assert_eq!(odd[0], [0., 0., 1., 1., 2.]);
        assert_eq!(odd[2], [3., 3., 4., 4., 5.]);
        let grads = up.sum_all()?.backward()?;
        let g = grads.get(map.as_tensor()).expect("a gradient").flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(g, vec![4.0; 6]);
        Ok(())
    }

    #[test]
    fn a_cells_neighbourhood_lists_its_eight_neighbours_and_zeros_beyond_the_border() -> Result<()> {
        // A 3 x 4 map whose value is its cell's index.
        let map = Tensor::from_vec((0..12).map(|v| v as f32).collect::<Vec<_>>(), (1, 1, 3, 4), &Device::Cpu)?;
        let n = neighbourhoods(&map)?.to_vec2::<f32>()?;
        assert_eq!(n.len(), 12);
        // Cell (1, 1) = index 5: rows 0..2, columns 0..2 around it.
        assert_eq!(n[5], [0., 1., 2., 4., 5., 6., 8., 9., 10.]);
        // Cell (0, 0): the row above and the column to the left are beyond the border.
        assert_eq!(n[0], [0., 0., 0., 0., 0., 1., 0., 4., 5.]);
        Ok(())
    }

    #[test]
    fn targets_mark_the_cells_near_a_box_centre_and_leave_out_unreviewed_boxes() {
        // An 8 x 10 grid of 16-px cells; a box centred on cell (3, 4), 4 cells wide.
        let b = BoxPx::new(40.0, 24.0, 64.0, 64.0);
        let unreviewed = BoxPx::new(128.0, 96.0, 16.0, 16.0);
        let t = targets(8, 10, 16.0, &[(b, 0)], &[unreviewed]);
        let positive: Vec<usize> = (0..80).filter(|&i| t.objectness[i] == 1.0).collect();
        assert_eq!(positive, vec![23, 24, 25, 33, 34, 35, 43, 44, 45]);
        // The centre cell (3, 4): its centre (72, 56) is 32 px from each side = log(2) cells.
        let centre = t.positives.iter().find(|p| p.0 == 34).expect("the centre cell");
        for d in centre.1 {
            assert!((d - 2f32.ln()).abs() < 1e-5, "{d}");
        }
        assert_eq!(t.weight[6 * 10 + 8], 0.0, "the unreviewed box's cell is left out");
        assert_eq!(t.weight[0], 1.0);
    }

    /// A synthetic photo's features: `[1, 6, rows, cols]` of "sea" with an "animal" block (at
    /// most 3 cells a side, so that its centre's neighbourhood sees its edges: a uniform block
    /// has nothing else to tell its size by).
    fn photo(rows: usize, cols: usize, block: (usize, usize, usize, usize), seed: u32) -> Tensor {
        let (r0, c0, h, w) = block;
        let mut data = vec![0f32; 6 * rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let inside = r >= r0 && r < r0 + h && c >= c0 && c < c0 + w;
                let noise = |k: usize| (((r * 31 + c * 17 + k * 7) as u32 ^ seed) % 13) as f32 / 13.0 - 0.5;
                for k in 0..6 {
                    let base =
                        if inside { [2.0, -1.0, 1.5, 0.0, 0.5, 1.0][k] } else { [0.0, 0.5, -0.5, 0.2, 0.0, -0.3][k] };
                    data[k * rows * cols + r * cols + c] = base + 0.3 * noise(k);
                }
            }
        }
        Tensor::from_vec(data, (1, 6, rows, cols), &Device::Cpu).expect("a map")
    }

    #[test]
    fn the_head_learns_to_box_an_animal_it_then_finds_elsewhere_in_another_photo() -> Result<()> {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let net = DetectorNet::new(VarBuilder::from_varmap(&vars, DType::F32, &dev), &[6], 16, 1)?;
        // A seeded start, as train-detector seeds it: the same test every run.
        crate::models::reseed(&vars, 1)?;
        let stride = 16.0;
        let training: Vec<(Tensor, Targets)> = [(2, 3, 3, 3), (6, 9, 2, 3), (1, 10, 3, 2)]
            .iter()
            .enumerate()
            .map(|(i, &(r, c, h, w))| {
                let truth = BoxPx::new(c as f64 * stride, r as f64 * stride, w as f64 * stride, h as f64 * stride);
                (photo(12, 16, (r, c, h, w), i as u32), targets(12, 16, stride, &[(truth, 0)], &[]))
            })
            .collect();
        let mut opt = AdamW::new(vars.all_vars(), ParamsAdamW { lr: 1e-2, ..Default::default() })?;
        for step in 0..600 {
            let (x, t) = &training[step % training.len()];
            let out = net.forward(std::slice::from_ref(x))?;
            opt.backward_step(&loss(&out, t, &dev)?)?;
        }
        // A photo never trained on, the animal somewhere else.
        let (r, c, h, w) = (7, 2, 3, 3);
        let truth = BoxPx::new(c as f64 * stride, r as f64 * stride, w as f64 * stride, h as f64 * stride);
        let out = net.forward(&[photo(12, 16, (r, c, h, w), 99)])?;
        let found = super::super::nms(decode(&out, 12, 16, stride, 1.0, (256, 192), &[Part::Fluke], 0.05)?, 0.5, 5);
        let best = found.first().expect("a box");
        assert!(best.bbox.iou(&truth) > 0.5, "best box {:?} against {truth:?}", best.bbox);
        assert!(best.score > 0.5, "score {}", best.score);
        Ok(())
    }
}
