//! The detector's second look at its best boxes. A photo is read small enough that a
//! distant fin is one or two grid cells wide, and a close-up fills more of the grid than
//! any box the head was trained on; either way the box's edges are placed coarsely. Each of
//! a photo's best boxes is therefore read again on its own: a square window around it,
//! twice its longer side, resized so that the box spans half the window's grid whatever its
//! size in the photo. A small head marks on that grid where each of the box's four edges
//! lies, and the box is moved there.
//!
//! The head works cell by cell (a projection, then each cell's 3 x 3 neighbourhood), and
//! each edge is read as a distribution over the grid's columns (left, right) or rows (top,
//! bottom), whose mean is the edge's position: the same cells answer wherever the box sits
//! in its window, so a few dozen boxes, each seen through shifted windows, teach it.
//!
//! The same cells also judge the window: their votes over its middle half give the
//! probability that it is centred on an animal's box. Seen this close, a splash, a wave or a
//! breaching body that the first look scored high is told from a fin; a box's final score is
//! the geometric mean of the two looks' scores.

use candle_core::{Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::base::vocabulary::BoxPx;

/// How the second look reads boxes; recorded in the detector file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefineConfig {
    /// The window's side in input pixels (a multiple of the grid's stride).
    pub input: u32,
    /// The window's side as a multiple of the box's longer side.
    pub context: f64,
    /// Width of the features read (the taps' maps side by side).
    pub channels: usize,
    pub hidden: usize,
    /// At most this many boxes of a photo get a second look, the best-scoring first.
    pub boxes: usize,
    /// Whether the second look also judges each window: how likely it is that an animal's
    /// box is centred there (a detector written before it was learned does not).
    #[serde(default)]
    pub judges: bool,
}

/// The window's side is at least this many photo pixels (a box of a few pixels is not
/// blown up into a blur).
const MIN_SIDE: f64 = 24.0;

/// A square window in photo pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x0: f64,
    pub y0: f64,
    pub side: f64,
}

impl Window {
    /// The window centred on `b`, `context` times its longer side.
    pub fn around(b: &BoxPx, context: f64) -> Window {
        let side = (b.w.max(b.h) * context).max(MIN_SIDE);
        Window { x0: b.x + b.w / 2.0 - side / 2.0, y0: b.y + b.h / 2.0 - side / 2.0, side }
    }

    /// `b`'s edges (left, top, right, bottom) in grid cells of this window read at `input`
    /// pixels with `stride`-pixel cells.
    pub fn edges_of(&self, b: &BoxPx, input: u32, stride: f64) -> [f32; 4] {
        let cell = self.side / input as f64 * stride;
        [(b.x - self.x0) / cell, (b.y - self.y0) / cell, (b.x + b.w - self.x0) / cell, (b.y + b.h - self.y0) / cell]
            .map(|v| v as f32)
    }

    /// The box whose edges are `edges` (as [`Window::edges_of`] gives them), inside a photo
    /// of `photo` pixels.
    pub fn box_at(&self, edges: [f32; 4], input: u32, stride: f64, photo: (u32, u32)) -> BoxPx {
        let cell = self.side / input as f64 * stride;
        let (pw, ph) = (photo.0 as f64, photo.1 as f64);
        let x0 = (self.x0 + edges[0] as f64 * cell).clamp(0.0, pw);
        let y0 = (self.y0 + edges[1] as f64 * cell).clamp(0.0, ph);
        let x1 = (self.x0 + edges[2] as f64 * cell).clamp(0.0, pw);
        let y1 = (self.y0 + edges[3] as f64 * cell).clamp(0.0, ph);
        BoxPx::new(x0, y0, (x1 - x0).max(0.0), (y1 - y0).max(0.0))
    }

    /// The window's pixels of `photo`, `input` pixels a side; what lies beyond the photo is
    /// the mean colour (zero once normalised).
    pub fn pixels(&self, photo: &RgbImage, input: u32) -> RgbImage {
        let mean = super::super::preprocess::IMAGENET_MEAN.map(|m| (m * 255.0).round() as u8);
        let mut canvas = RgbImage::from_pixel(input, input, image::Rgb(mean));
        let scale = input as f64 / self.side;
        let (pw, ph) = (photo.width() as f64, photo.height() as f64);
        let (ix0, iy0) = (self.x0.max(0.0).floor(), self.y0.max(0.0).floor());
        let (ix1, iy1) = ((self.x0 + self.side).min(pw).ceil(), (self.y0 + self.side).min(ph).ceil());
        if ix1 - ix0 < 1.0 || iy1 - iy0 < 1.0 {
            return canvas;
        }
        let (iw, ih) = ((ix1 - ix0) as u32, (iy1 - iy0) as u32);
        let part = image::imageops::crop_imm(photo, ix0 as u32, iy0 as u32, iw, ih).to_image();
        let (tw, th) = (((iw as f64 * scale).round() as u32).max(1), ((ih as f64 * scale).round() as u32).max(1));
        let resized = if scale < 1.0 {
            image::imageops::thumbnail(&part, tw, th)
        } else {
            image::imageops::resize(&part, tw, th, image::imageops::FilterType::Triangle)
        };
        let (tx, ty) = (((ix0 - self.x0) * scale).round() as i64, ((iy0 - self.y0) * scale).round() as i64);
        image::imageops::overlay(&mut canvas, &resized, tx, ty);
        canvas
    }
}

pub struct RefineNet {
    mean: Tensor,
    std: Tensor,
    project: Linear,
    context: Linear,
    edges: Linear,
    judge: Option<Linear>,
}

/// What the second look makes of a batch of windows.
pub struct Looked {
    /// `[B, 4]`: the box's left, top, right and bottom edges in grid cells from the window's
    /// top-left corner.
    pub edges: Tensor,
    /// `[B]`: the logit that the window is centred on an animal's box (with a judge).
    pub judged: Option<Tensor>,
}

impl RefineNet {
    pub fn new(vb: VarBuilder, config: &RefineConfig) -> Result<Self> {
        let (c, h) = (config.channels, config.hidden);
        Ok(RefineNet {
            mean: vb.get_with_hints(c, "feature_mean", Init::Const(0.0))?,
            std: vb.get_with_hints(c, "feature_std", Init::Const(1.0))?,
            project: candle_nn::linear(c, h, vb.pp("project"))?,
            context: candle_nn::linear(9 * h, h, vb.pp("context"))?,
            edges: candle_nn::linear(h, 4, vb.pp("edges"))?,
            judge: if config.judges { Some(candle_nn::linear(h, 1, vb.pp("judge"))?) } else { None },
        })
    }

    /// `maps` `[B, C, rows, cols]`, one window each -> the edges placed in each (and its
    /// judgement).
    pub fn forward(&self, maps: &Tensor) -> Result<Looked> {
        let (b, _, rows, cols) = maps.dims4()?;
        self.forward_cells(&self.standardised(maps)?, b, rows, cols)
    }

    /// `[B, C, rows, cols]` -> `[B * rows * cols, C]`: each cell's features, standardised as
    /// the training windows were (the part of [`RefineNet::forward`] that training computes
    /// once per window).
    pub fn standardised(&self, maps: &Tensor) -> Result<Tensor> {
        let (b, c, rows, cols) = maps.dims4()?;
        let x = maps.reshape((b, c, rows * cols))?.transpose(1, 2)?.reshape((b * rows * cols, c))?;
        x.broadcast_sub(&self.mean.unsqueeze(0)?)?.broadcast_div(&self.std.unsqueeze(0)?)
    }

    /// The rest of [`RefineNet::forward`], from `b` windows' standardised cells.
    pub fn forward_cells(&self, x: &Tensor, b: usize, rows: usize, cols: usize) -> Result<Looked> {
        let x = self.project.forward(x)?.relu()?;
        let h = x.dim(1)?;
        let grid = x.reshape((b, rows * cols, h))?.transpose(1, 2)?.reshape((b, h, rows, cols))?;
        let x = (self.context.forward(&super::network::neighbourhoods(&grid)?)?.relu()? + x)?;
        // [B, rows, cols, 4]: each cell's vote for each edge lying in its column or row.
        let logits = self.edges.forward(&x)?.reshape((b, rows, cols, 4))?;
        // Left and right edges by column, top and bottom by row: [B, 2] each.
        let (by_column, by_row) = (logits.mean(1)?, logits.mean(2)?);
        let across = positions(&by_column.narrow(2, 0, 1)?, &by_column.narrow(2, 2, 1)?)?;
        let down = positions(&by_row.narrow(2, 1, 1)?, &by_row.narrow(2, 3, 1)?)?;
        let edges = Tensor::stack(
            &[across.narrow(1, 0, 1)?, down.narrow(1, 0, 1)?, across.narrow(1, 1, 1)?, down.narrow(1, 1, 1)?],
            1,
        )?
        .squeeze(2)?;
        // The judgement: the cells' votes over the window's middle half, where a box the
        // first look placed well lies.
        let judged = match &self.judge {
            Some(judge) => {
                let votes = judge.forward(&x)?.reshape((b, rows, cols))?;
                let middle =
                    votes.narrow(1, rows / 4, rows - 2 * (rows / 4))?.narrow(2, cols / 4, cols - 2 * (cols / 4))?;
                Some(middle.flatten_from(1)?.mean(1)?)
            }
            None => None,
        };
        Ok(Looked { edges, judged })
    }
}

/// Two edges' logits `[B, n, 1]` over the same n cells -> `[B, 2]`: each edge's mean cell
/// centre (in cells) under the softmax of its logits (written out: candle's fused softmax has
/// no gradient).
fn positions(first: &Tensor, second: &Tensor) -> Result<Tensor> {
    let logits = Tensor::cat(&[first, second], 2)?.transpose(1, 2)?; // [B, 2, n]
    let (b, _, n) = logits.dims3()?;
    let shifted = logits.broadcast_sub(&logits.max_keepdim(2)?.detach())?;
    let e = shifted.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(2)?)?.reshape((b * 2, n))?;
    let centres: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
    let centres = Tensor::from_vec(centres, (n, 1), logits.device())?.to_dtype(logits.dtype())?;
    p.matmul(&centres)?.reshape((b, 2))
}

/// What a training window should teach: where the true box's edges lie (`weight` 0 where
/// no true box is near enough to place) and whether the window is centred on one
/// (`label_weight` 0 where it is neither clearly so nor clearly not).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanted {
    pub edges: [f32; 4],
    pub weight: f32,
    pub label: f32,
    pub label_weight: f32,
}

/// The training loss over a batch: the mean distance, in grid cells, between the edges given
/// and the true ones, over the windows with a true box to place; plus, with a judge, the
/// binary cross-entropy of its judgement.
pub fn loss(looked: &Looked, wanted: &[Wanted]) -> Result<Tensor> {
    let device = looked.edges.device();
    let n = wanted.len();
    let column = |f: &dyn Fn(&Wanted) -> f32| Tensor::from_vec(wanted.iter().map(f).collect::<Vec<f32>>(), n, device);
    let edges = Tensor::from_vec(wanted.iter().flat_map(|w| w.edges).collect::<Vec<f32>>(), (n, 4), device)?;
    let weight = column(&|w| w.weight)?;
    let placed = (weight.sum_all()?.to_scalar::<f32>()?).max(1.0) as f64;
    let distance = (&looked.edges - edges)?.abs()?.mean(1)?;
    let mut total = ((distance * weight)?.sum_all()? / placed)?;
    if let Some(judged) = &looked.judged {
        let labels = column(&|w| w.label)?;
        let label_weight = column(&|w| w.label_weight)?;
        let judged_n = (label_weight.sum_all()?.to_scalar::<f32>()?).max(1.0) as f64;
        let bce = super::network::bce_with_logits(judged, &labels)?;
        total = (total + ((bce * label_weight)?.sum_all()? / judged_n)?)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

    #[test]
    fn a_window_centres_its_box_and_edges_go_there_and_back() {
        let b = BoxPx::new(100.0, 50.0, 40.0, 20.0);
        let w = Window::around(&b, 2.0);
        assert_eq!(w, Window { x0: 80.0, y0: 20.0, side: 80.0 });
        // Read at 168 px with 14-px cells: 12 cells a side, 6.67 photo px a cell.
        let e = w.edges_of(&b, 168, 14.0);
        assert!((e[0] - 3.0).abs() < 1e-5 && (e[2] - 9.0).abs() < 1e-5, "{e:?}");
        assert!((e[1] - 4.5).abs() < 1e-5 && (e[3] - 7.5).abs() < 1e-5, "{e:?}");
        let back = w.box_at(e, 168, 14.0, (1000, 1000));
        assert!(back.iou(&b) > 0.999, "{back:?}");
        // Clamped to the photo.
        let out = w.box_at([-13.0, -4.0, 9.0, 9.0], 168, 14.0, (100, 70));
        assert_eq!((out.x, out.y), (0.0, 0.0));
        assert!((out.w - 100.0).abs() < 1e-9 && (out.h - 70.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn a_window_over_the_photo_s_edge_shows_the_photo_where_it_lies_and_grey_beyond() {
        // A white photo with a black square at its top-left corner.
        let mut photo = RgbImage::from_pixel(100, 80, image::Rgb([255, 255, 255]));
        for y in 0..20 {
            for x in 0..20 {
                photo.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        // A window from (-20, -20), 80 px a side, read at 40 px: 2 photo px per pixel.
        let w = Window { x0: -20.0, y0: -20.0, side: 80.0 };
        let px = w.pixels(&photo, 40);
        assert_eq!(px.dimensions(), (40, 40));
        let grey = super::super::super::preprocess::IMAGENET_MEAN.map(|m| (m * 255.0).round() as u8);
        assert_eq!(px.get_pixel(2, 2).0, grey, "beyond the photo");
        assert_eq!(px.get_pixel(15, 15).0, [0, 0, 0], "the black square at photo (10, 10)");
        assert_eq!(px.get_pixel(30, 30).0, [255, 255, 255], "white at photo (40, 40)");
        // A window wholly outside the photo is all grey.
        let away = Window { x0: 500.0, y0: 500.0, side: 50.0 }.pixels(&photo, 14);
        assert!(away.pixels().all(|p| p.0 == grey));
    }

    /// Windows of a synthetic grid: "animal" cells (a block) on "sea", with some noise.
    fn window(rows: usize, cols: usize, block: [usize; 4], seed: u32) -> Vec<f32> {
        let [c0, r0, c1, r1] = block;
        let mut data = vec![0f32; 4 * rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let inside = r >= r0 && r < r1 && c >= c0 && c < c1;
                for k in 0..4 {
                    let noise = (((r * 31 + c * 17 + k * 7) as u32 ^ seed) % 11) as f32 / 11.0 - 0.5;
                    let base = if inside { [1.5, -1.0, 0.5, 1.0][k] } else { [0.0, 0.4, -0.3, 0.0][k] };
                    data[k * rows * cols + r * cols + c] = base + 0.3 * noise;
                }
            }
        }
        data
    }

    #[test]
    fn the_head_learns_to_place_the_edges_of_a_block_wherever_it_sits_in_the_window_and_to_judge_it() -> Result<()> {
        let dev = Device::Cpu;
        let config = RefineConfig { input: 168, context: 2.0, channels: 4, hidden: 16, boxes: 4, judges: true };
        let vars = VarMap::new();
        let net = RefineNet::new(VarBuilder::from_varmap(&vars, DType::F32, &dev), &config)?;
        crate::models::reseed(&vars, 3)?;
        let (rows, cols) = (12, 12);
        // Blocks about the window's middle are boxes to place; a small block in a corner, or
        // none, is a window the first look put in the wrong place.
        let centred = |b: [usize; 4]| Wanted { edges: b.map(|v| v as f32), weight: 1.0, label: 1.0, label_weight: 1.0 };
        let astray = Wanted { edges: [0.0; 4], weight: 0.0, label: 0.0, label_weight: 1.0 };
        // `(block, whether it is a box to place)`; no block is sea.
        let batch = |blocks: &[(Option<[usize; 4]>, bool)], seed: u32| -> Result<(Tensor, Vec<Wanted>)> {
            let data: Vec<f32> = blocks
                .iter()
                .enumerate()
                .flat_map(|(i, (b, _))| window(rows, cols, b.unwrap_or([0, 0, 0, 0]), seed + i as u32))
                .collect();
            let wanted = blocks.iter().map(|&(b, placed)| if placed { b.map(centred) } else { None }.unwrap_or(astray));
            Ok((Tensor::from_vec(data, (blocks.len(), 4, rows, cols), &dev)?, wanted.collect()))
        };
        let blocks = [
            (Some([3, 3, 9, 9]), true),
            (Some([2, 4, 8, 8]), true),
            (Some([4, 2, 10, 7]), true),
            (Some([3, 5, 7, 10]), true),
            (Some([5, 3, 11, 9]), true),
            (Some([0, 0, 3, 2]), false),
            (Some([1, 9, 3, 12]), false),
            (None, false),
        ];
        let (x, wanted) = batch(&blocks, 1)?;
        // The edges' part of the loss alone: the mean edge error in cells.
        let edge_error = |looked: &Looked, wanted: &[Wanted]| -> Result<f32> {
            loss(&Looked { edges: looked.edges.clone(), judged: None }, wanted)?.to_scalar::<f32>()
        };
        let before = edge_error(&net.forward(&x)?, &wanted)?;
        let mut opt = AdamW::new(vars.all_vars(), ParamsAdamW { lr: 1e-2, ..Default::default() })?;
        for _ in 0..300 {
            opt.backward_step(&loss(&net.forward(&x)?, &wanted)?)?;
        }
        // A block never trained on, placed elsewhere: its edges to within half a cell, and
        // judged a box; sea and a stray corner block judged not.
        let (x, wanted) = batch(&[(Some([1, 6, 6, 11]), true), (None, false), (Some([10, 0, 12, 3]), false)], 77)?;
        let looked = net.forward(&x)?;
        let after = edge_error(&looked, &wanted)?;
        assert!(after < 0.5, "mean edge error {after} cells (untrained: {before})");
        assert!(before > 1.0, "the untrained head should not already know: {before}");
        let judged = candle_nn::ops::sigmoid(looked.judged.as_ref().expect("a judge"))?.to_vec1::<f32>()?;
        assert!(judged[0] > 0.8 && judged[1] < 0.2 && judged[2] < 0.2, "{judged:?}");
        Ok(())
    }

    /// A detector file written before the second look judged has no `judges` in its
    /// config and no judge's weights: it reads as a second look that places boxes only.
    #[test]
    fn a_second_look_written_before_judging_places_boxes_without_judging_them() -> Result<()> {
        let config: RefineConfig =
            serde_json::from_str(r#"{"input": 168, "context": 2.0, "channels": 4, "hidden": 8, "boxes": 4}"#)
                .expect("an older config");
        assert!(!config.judges);
        let vars = VarMap::new();
        let net = RefineNet::new(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu), &config)?;
        assert!(vars.data().lock().unwrap().keys().all(|k| !k.starts_with("judge")));
        let looked = net.forward(&Tensor::zeros((2, 4, 12, 12), DType::F32, &Device::Cpu)?)?;
        assert_eq!(looked.edges.dims(), &[2, 4]);
        assert!(looked.judged.is_none());
        Ok(())
    }
}
