//! Boxes without any whale training, from the backbone's feature grid alone (after LOST,
//! Siméoni et al. 2021): in a field photo most cells are sea and sky, alike each other; the
//! animal's cells resemble few others. Each cell's "degree" is the share of cells its
//! centred feature correlates with positively. The least connected cell seeds an animal; its
//! kin (the least connected cells that correlate with it) expand it to every cell that
//! correlates with them, joined to the seed; its box is taken, and the next seed among the
//! cells left gives the next animal, while seeds stand out from the sea (Otsu's cut). Good first proposals, not final ones: the learned detector replaces
//! them once the catalogue has verified boxes.

use candle_core::{D, Result, Tensor};

use super::boxes::{Detection, nms};
use super::{DetectorInput, MAX_BOXES, NMS_IOU};
use crate::base::vocabulary::{BoxPx, Part};

/// Proposals for one photo from its feature grid `[1, C, rows, cols]` (`stride` input pixels
/// per cell), labelled `part`. Scores are in 0..1: how unlike the rest of the photo the
/// region is.
pub fn propose(grid: &Tensor, stride: usize, input: &DetectorInput, part: Part) -> Result<Vec<Detection>> {
    let (_, c, rows, cols) = grid.dims4()?;
    let n = rows * cols;
    if n < 4 {
        return Ok(Vec::new());
    }
    let cells = grid.reshape((c, n))?.t()?.contiguous()?;
    let centred = cells.broadcast_sub(&cells.mean_keepdim(0)?)?;
    let norm = centred.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-6, f64::MAX)?;
    let unit = centred.broadcast_div(&norm)?;
    let similarity = unit.matmul(&unit.t()?)?;
    let degree = similarity.gt(0.0)?.to_dtype(candle_core::DType::F32)?.sum(1)?.to_vec1::<f32>()?;
    let similarity = similarity.to_vec2::<f32>()?;
    let unlike: Vec<f32> = degree.iter().map(|d| 1.0 - d / n as f32).collect();
    let threshold = otsu(&unlike);
    // Seeds are tried from the least connected cell up, as long as they stand out from the
    // sea (above Otsu's cut).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| unlike[b].total_cmp(&unlike[a]));
    let expand = ((n as f64 * EXPAND_SHARE).round() as usize).clamp(3, 100);
    let (pw, ph) = (input.photo.0 as f64, input.photo.1 as f64);
    let mut taken = vec![false; n];
    let mut found = Vec::new();
    for &seed in &order {
        if unlike[seed] <= threshold || found.len() >= MAX_BOXES {
            break;
        }
        if taken[seed] {
            continue;
        }
        taken[seed] = true;
        // The seed's kin: the least connected cells that correlate with it; the animal is
        // then every cell that correlates with them as a whole, joined to the seed.
        let kin: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&j| !taken[j] || j == seed)
            .filter(|&j| similarity[seed][j] > 0.0)
            .take(expand)
            .collect();
        let kin = if kin.contains(&seed) { kin } else { [vec![seed], kin].concat() };
        let mask: Vec<bool> = (0..n)
            .map(|j| j == seed || (!taken[j] && kin.iter().map(|&k| similarity[k][j]).sum::<f32>() > 0.0))
            .collect();
        let Some(region) = regions(&mask, rows, cols).into_iter().find(|r| r.contains(&seed)) else { continue };
        // A region as large as most of the photo is the sea's own variety, not an animal.
        // A lone cell is a wave's glint: at the detector's resolution an animal spans two
        // cells or more.
        if region.len() * 2 > n || region.len() < 2 {
            continue;
        }
        let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
        let mut sum = 0.0;
        for &i in &region {
            taken[i] = true;
            let (r, c) = (i / cols, i % cols);
            r0 = r0.min(r);
            r1 = r1.max(r);
            c0 = c0.min(c);
            c1 = c1.max(c);
            sum += unlike[i];
        }
        let s = stride as f64 / input.scale;
        let x0 = (c0 as f64 * s).clamp(0.0, pw);
        let y0 = (r0 as f64 * s).clamp(0.0, ph);
        let x1 = ((c1 + 1) as f64 * s).clamp(0.0, pw);
        let y1 = ((r1 + 1) as f64 * s).clamp(0.0, ph);
        let score = (sum / region.len() as f32).clamp(0.0, 1.0);
        found.push(Detection { bbox: BoxPx::new(x0, y0, x1 - x0, y1 - y0), score, part });
    }
    Ok(nms(found, NMS_IOU, MAX_BOXES))
}

/// The seed's kin are this share of the photo's cells (LOST's k, as a share: an animal
/// covers a few percent of a field photo).
const EXPAND_SHARE: f64 = 0.02;

/// Otsu's threshold of values in 0..1 (64 bins): the cut that best separates two groups.
fn otsu(values: &[f32]) -> f32 {
    const BINS: usize = 64;
    let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if hi - lo < 1e-6 {
        return hi;
    }
    let mut histogram = [0usize; BINS];
    for &v in values {
        let b = (((v - lo) / (hi - lo)) * (BINS - 1) as f32).round() as usize;
        histogram[b.min(BINS - 1)] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = histogram.iter().enumerate().map(|(i, &h)| i as f64 * h as f64).sum();
    let (mut best, mut best_cut) = (-1.0, 0);
    let (mut weight_below, mut sum_below) = (0.0, 0.0);
    for (i, &h) in histogram.iter().enumerate() {
        weight_below += h as f64;
        sum_below += i as f64 * h as f64;
        let weight_above = total - weight_below;
        if weight_below == 0.0 || weight_above == 0.0 {
            continue;
        }
        let mean_below = sum_below / weight_below;
        let mean_above = (sum_all - sum_below) / weight_above;
        let between = weight_below * weight_above * (mean_below - mean_above).powi(2);
        if between > best {
            best = between;
            best_cut = i;
        }
    }
    lo + (best_cut as f32 + 0.5) / (BINS - 1) as f32 * (hi - lo)
}

/// Connected regions (8-neighbourhood) of the set cells of a `rows` x `cols` mask.
fn regions(mask: &[bool], rows: usize, cols: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut region = Vec::new();
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            region.push(i);
            let (r, c) = ((i / cols) as isize, (i % cols) as isize);
            for dr in -1..=1 {
                for dc in -1..=1 {
                    let (nr, nc) = (r + dr, c + dc);
                    if nr < 0 || nc < 0 || nr >= rows as isize || nc >= cols as isize {
                        continue;
                    }
                    let j = nr as usize * cols + nc as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(region);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn an_odd_patch_on_a_uniform_sea_becomes_one_box_around_it() -> Result<()> {
        // A 12 x 16 grid of "sea" (noise around one vector) with a 2 x 3 patch of another
        // feature at rows 4..6, cols 9..12; and a second animal at rows 9..11, cols 2..4.
        let (rows, cols, c) = (12, 16, 8);
        let mut data = vec![0f32; c * rows * cols];
        let mut seed = 7u32;
        for r in 0..rows {
            for col in 0..cols {
                let animal =
                    (4..6).contains(&r) && (9..12).contains(&col) || (9..11).contains(&r) && (2..4).contains(&col);
                for k in 0..c {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let noise = ((seed >> 16) % 1000) as f32 / 1000.0 * 0.2;
                    let base = if animal {
                        if k >= 4 { 1.0 } else { 0.0 }
                    } else if k < 4 {
                        1.0
                    } else {
                        0.0
                    };
                    data[k * rows * cols + r * cols + col] = base + noise;
                }
            }
        }
        let grid = Tensor::from_vec(data, (1, c, rows, cols), &Device::Cpu)?;
        let input = DetectorInput {
            image: Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?,
            scale: 0.5,
            photo: (512, 384),
        };
        let found = propose(&grid, 16, &input, Part::DorsalFin)?;
        assert_eq!(found.len(), 2, "{found:?}");
        let mut xs: Vec<BoxPx> = found.iter().map(|d| d.bbox).collect();
        xs.sort_by(|a, b| a.x.total_cmp(&b.x));
        // 16 input pixels per cell = 32 photo pixels.
        assert_eq!(xs[0], BoxPx::new(64.0, 288.0, 64.0, 64.0));
        assert_eq!(xs[1], BoxPx::new(288.0, 128.0, 96.0, 64.0));
        assert!(found.iter().all(|d| d.score > 0.5 && d.part == Part::DorsalFin));
        Ok(())
    }
}
