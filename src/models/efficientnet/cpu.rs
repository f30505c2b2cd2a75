//! The inference path on the CPU: BatchNorm folded into every convolution, activations kept
//! channels last (`[pixels, channels]`) in plain `f32` buffers from the stem to the head.
//!
//! A 1x1 convolution is then one matrix product over an image's pixels with packed weights
//! ([`super::pointwise::Pointwise`]); the stem is such a product over 3x3x3 patches; the
//! depthwise convolutions run with [`super::depthwise::DepthwiseConv`]. candle's own ops would
//! allocate a tensor per step and make two broadcast passes for ReLU6.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::depthwise::DepthwiseConv;
use super::pointwise::{Epilogue, Pointwise};
use crate::models::backbone::Tap;

/// ReLU6 after the product, nothing added.
const RELU6: Epilogue = Epilogue { residual: None, relu6: true };

pub(super) struct Block {
    pub(super) expand: Option<Pointwise>,
    pub(super) depthwise: DepthwiseConv,
    pub(super) project: Pointwise,
    pub(super) residual: bool,
    pub(super) stage: usize,
}

/// The folded network.
pub(super) struct Network {
    /// The stem: a product over (channel, ky, kx) patches (see `stem_patches`).
    pub(super) stem: Pointwise,
    pub(super) blocks: Vec<Block>,
    pub(super) head: Pointwise,
}

impl Network {
    /// `images` `[B, 3, H, W]` -> the maps `[B, C, h, w]` at `taps` (see
    /// [`super::EfficientNet::forward_taps`]).
    ///
    /// Each image goes through the whole network on its own, so that its activations stay in
    /// the caches: with at least as many images as threads, one image per thread and every
    /// kernel single-threaded; otherwise one image after the other, each kernel spread over the
    /// threads.
    pub(super) fn forward_taps(&self, images: &Tensor, taps: &[Tap], stages: usize) -> Result<Vec<Tensor>> {
        let (batch, channels, height, width) = images.dims4()?;
        if channels != 3 {
            candle_core::bail!("the network takes 3 colour channels, got {channels}");
        }
        let pixels = images.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let per_image = |b: usize, parallel: bool| {
            let image = &pixels[b * 3 * height * width..(b + 1) * 3 * height * width];
            self.forward_image(image, (height, width), taps, stages, parallel)
        };
        let threads = rayon::current_num_threads();
        let maps: Vec<Vec<Map>> = match batch >= threads && threads > 1 {
            true => (0..batch).into_par_iter().map(|b| per_image(b, false)).collect(),
            false => (0..batch).map(|b| per_image(b, true)).collect(),
        };
        (0..taps.len())
            .map(|t| {
                let Some(first) = maps.first().map(|m| &m[t]) else {
                    candle_core::bail!("no images");
                };
                let c = first.values.len() / (first.height * first.width).max(1);
                let all: Vec<f32> = maps.iter().flat_map(|m| m[t].values.iter().copied()).collect();
                Tensor::from_vec(all, (batch, first.height, first.width, c), &candle_core::Device::Cpu)?
                    .permute((0, 3, 1, 2))?
                    .contiguous()
            })
            .collect()
    }

    /// One image `[3, H, W]` -> its maps at `taps`, channels last.
    fn forward_image(
        &self,
        image: &[f32],
        (height, width): (usize, usize),
        taps: &[Tap],
        stages: usize,
        parallel: bool,
    ) -> Vec<Map> {
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        let patches = stem_patches(image, height, width);
        let mut x = self.stem.forward(&patches, RELU6, parallel);
        drop(patches);
        let deepest = taps.iter().map(Tap::depth).max().unwrap_or(0);
        let mut outputs: Vec<Map> = Vec::with_capacity(taps.len());
        let mut blocks = self.blocks.iter().peekable();
        for done in 0..=deepest {
            if done > 0 {
                while let Some(block) = blocks.next_if(|b| b.stage == done - 1) {
                    let expanded = block.expand.as_ref().map(|e| e.forward(&x, RELU6, parallel));
                    let mid = expanded.as_deref().unwrap_or(&x);
                    let y = block.depthwise.forward(mid, 1, (h, w), true, parallel);
                    drop(expanded);
                    (h, w) = (block.depthwise.output_side(h), block.depthwise.output_side(w));
                    x = block.project.forward(
                        &y,
                        Epilogue { residual: block.residual.then_some(x.as_slice()), relu6: false },
                        parallel,
                    );
                }
            }
            for tap in taps.iter().filter(|t| t.depth() == done) {
                let values = match tap {
                    Tap::Output(n) if *n == stages => self.head.forward(&x, RELU6, parallel),
                    _ => x.clone(),
                };
                outputs.push(Map { height: h, width: w, values });
            }
        }
        outputs
    }
}

/// One image's map, channels last: `[height, width, C]`.
struct Map {
    height: usize,
    width: usize,
    values: Vec<f32>,
}

/// The stem's 3x3, stride-2, padding-1 patches of one `[3, H, W]` image, channels last:
/// `[ceil(H/2) * ceil(W/2), 27]`, each patch ordered (channel, ky, kx) as PyTorch's weights
/// are.
fn stem_patches(image: &[f32], height: usize, width: usize) -> Vec<f32> {
    let (oh, ow) = (height.div_ceil(2), width.div_ceil(2));
    let mut out = vec![0.0f32; oh * ow * 27];
    for (oy, out_row) in out.chunks_mut(ow * 27).enumerate() {
        for ox in 0..ow {
            let patch = &mut out_row[ox * 27..(ox + 1) * 27];
            for c in 0..3 {
                let plane = &image[c * height * width..(c + 1) * height * width];
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
    }
    out
}
