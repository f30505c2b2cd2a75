//! The inference path on the CPU: BatchNorm folded into every convolution, activations kept
//! channels last (`[pixels, channels]`) in plain `f32` buffers from the stem to the head.
//!
//! A 1x1 convolution is then one matrix product over all pixels of the batch (the `gemm`
//! crate, as DINOv2's path uses), written onto the bias and clamped in the same buffer; the
//! stem is a product over 3x3x3 patches; the depthwise convolutions run with
//! [`super::depthwise::DepthwiseConv`]. candle's own ops would allocate a tensor per step and
//! make two broadcast passes for ReLU6.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::depthwise::DepthwiseConv;
use crate::models::backbone::Tap;
use crate::models::dinov2::cpu::{Product, View, matmul};

/// Rows handed to one rayon task by the element-wise passes.
const ROWS_PER_TASK: usize = 64;

/// A 1x1 convolution: `[in, out]` weights with BatchNorm folded, and the bias.
pub(super) struct Pointwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
}

impl Pointwise {
    /// From folded PyTorch weights `[out, in, 1, 1]`.
    pub(super) fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (out, input) = (weight.dim(0)?, weight.dim(1)?);
        let weight = weight.reshape((out, input))?.t()?.contiguous()?.flatten_all()?.to_vec1()?;
        Ok(Self { weight, bias: bias.to_vec1()?, input })
    }

    /// `x` `[pixels, in]` -> `[pixels, out]`, plus `residual` when given, clamped to `[0, 6]`
    /// when `relu6`: the product, then one parallel pass for the bias, the residual and the
    /// clamp.
    fn forward(&self, x: &[f32], residual: Option<&[f32]>, relu6: bool) -> Vec<f32> {
        let out = self.bias.len();
        let pixels = x.len() / self.input;
        let mut y = vec![0f32; pixels * out];
        let how = Product { accumulate: false, parallel: true };
        matmul(
            &mut y,
            View::dense(pixels, out),
            x,
            View::dense(pixels, self.input),
            &self.weight,
            View::dense(self.input, out),
            how,
        );
        let bias = &self.bias;
        y.par_chunks_mut(out * ROWS_PER_TASK).enumerate().for_each(|(task, rows)| {
            let start = task * out * ROWS_PER_TASK;
            let residual = residual.map(|r| &r[start..start + rows.len()]);
            for (r, row) in rows.chunks_mut(out).enumerate() {
                let skip = residual.map(|res| &res[r * out..(r + 1) * out]);
                for (j, v) in row.iter_mut().enumerate() {
                    let mut s = *v + bias[j];
                    if let Some(skip) = skip {
                        s += skip[j];
                    }
                    *v = if relu6 { s.clamp(0.0, 6.0) } else { s };
                }
            }
        });
        y
    }
}

pub(super) struct Block {
    pub(super) expand: Option<Pointwise>,
    pub(super) depthwise: DepthwiseConv,
    pub(super) project: Pointwise,
    pub(super) residual: bool,
    pub(super) stage: usize,
}

/// The folded network.
pub(super) struct Network {
    /// Stem weights `[27, out]` over (channel, ky, kx) patches, and bias.
    pub(super) stem: Pointwise,
    pub(super) blocks: Vec<Block>,
    pub(super) head: Pointwise,
}

impl Network {
    /// `images` `[B, 3, H, W]` -> the maps `[B, C, h, w]` at `taps` (see
    /// [`super::EfficientNet::forward_taps`]).
    pub(super) fn forward_taps(&self, images: &Tensor, taps: &[Tap], stages: usize) -> Result<Vec<Tensor>> {
        let (batch, channels, height, width) = images.dims4()?;
        if channels != 3 {
            candle_core::bail!("the network takes 3 colour channels, got {channels}");
        }
        let pixels = images.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        let patches = stem_patches(&pixels, batch, height, width);
        let mut x = self.stem.forward(&patches, None, true);
        drop(patches);

        let as_map = |x: &[f32], h: usize, w: usize| -> Result<Tensor> {
            let c = x.len() / (batch * h * w);
            Tensor::from_slice(x, (batch, h, w, c), &candle_core::Device::Cpu)?.permute((0, 3, 1, 2))?.contiguous()
        };
        let deepest = taps.iter().map(Tap::depth).max().unwrap_or(0);
        let mut outputs = Vec::with_capacity(taps.len());
        let mut blocks = self.blocks.iter().peekable();
        for done in 0..=deepest {
            if done > 0 {
                while let Some(block) = blocks.next_if(|b| b.stage == done - 1) {
                    let expanded = block.expand.as_ref().map(|e| e.forward(&x, None, true));
                    let mid = expanded.as_deref().unwrap_or(&x);
                    let y = block.depthwise.forward(mid, batch, h, w, true);
                    drop(expanded);
                    (h, w) = (block.depthwise.output_side(h), block.depthwise.output_side(w));
                    x = block.project.forward(&y, block.residual.then_some(x.as_slice()), false);
                }
            }
            for tap in taps.iter().filter(|t| t.depth() == done) {
                outputs.push(match tap {
                    Tap::Output(n) if *n == stages => as_map(&self.head.forward(&x, None, true), h, w)?,
                    _ => as_map(&x, h, w)?,
                });
            }
        }
        Ok(outputs)
    }
}

/// The stem's 3x3, stride-2, padding-1 patches of `[B, 3, H, W]` images, channels last:
/// `[B * ceil(H/2) * ceil(W/2), 27]`, each patch ordered (channel, ky, kx) as PyTorch's
/// weights are.
fn stem_patches(images: &[f32], batch: usize, height: usize, width: usize) -> Vec<f32> {
    let (oh, ow) = (height.div_ceil(2), width.div_ceil(2));
    let mut out = vec![0.0f32; batch * oh * ow * 27];
    out.par_chunks_mut(ow * 27).enumerate().for_each(|(row, out_row)| {
        let (b, oy) = (row / oh, row % oh);
        for ox in 0..ow {
            let patch = &mut out_row[ox * 27..(ox + 1) * 27];
            for c in 0..3 {
                let plane = &images[(b * 3 + c) * height * width..(b * 3 + c + 1) * height * width];
                for ky in 0..3 {
                    let y = (2 * oy + ky) as isize - 1;
                    if y < 0 || y >= height as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let x = (2 * ox + kx) as isize - 1;
                        if x >= 0 && x < width as isize {
                            patch[c * 9 + ky * 3 + kx] = plane[y as usize * width + x as usize];
                        }
                    }
                }
            }
        }
    });
    out
}
