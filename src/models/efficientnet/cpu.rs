//! The inference path on the CPU: BatchNorm folded into every convolution, activations kept
//! channels last (`[pixels, channels]`) in plain `f32` buffers from the stem to the head.
//!
//! A 1x1 convolution is then one matrix product over an image's pixels with packed weights
//! ([`super::pointwise::Pointwise`]); the stem is such a product over 3x3x3 patches; the
//! depthwise convolutions run with [`super::depthwise::DepthwiseConv`]. candle's own ops would
//! allocate a tensor per step and make two broadcast passes for ReLU6. A block's three layers
//! run band by band of output rows ([`Block::forward`]).

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::depthwise::{Band, DepthwiseConv};
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

/// Bytes of expanded rows one band of a block holds (see [`Block::forward`]): with the
/// depthwise output of the band, well inside a core's L2.
const BAND_BYTES: usize = 96 * 1024;

impl Block {
    /// One image's map `x` `[h * w, in]` -> `[h' * w', out]`.
    ///
    /// The expanded map (six times the input's channels) is never made whole: output rows go
    /// in bands, each expanding only the input rows it reads that the band before it had not
    /// (the overlap is kept), running the depthwise convolution on them and projecting its
    /// rows at once, so that each intermediate is read back from the cache it was written to.
    /// With `parallel`, the output rows are split among the threads, each running its own bands.
    fn forward(&self, x: &[f32], (h, w): (usize, usize), parallel: bool) -> Vec<f32> {
        let (oh, ow) = (self.depthwise.output_side(h), self.depthwise.output_side(w));
        let out_c = self.project.output();
        let mut y = Vec::with_capacity(oh * ow * out_c);
        let out = &mut y.spare_capacity_mut()[..oh * ow * out_c];
        // Output rows per band: as many as keep the expanded rows they read within the budget.
        let band = (BAND_BYTES / (4 * w * self.depthwise.channels() * self.depthwise.stride()).max(1)).max(1);
        let threads = if parallel { rayon::current_num_threads().min(oh) } else { 1 };
        if threads > 1 {
            let rows_each = oh.div_ceil(threads);
            out.par_chunks_mut((rows_each * ow * out_c).max(1))
                .enumerate()
                .for_each(|(t, out)| self.rows(x, (h, w), t * rows_each..((t + 1) * rows_each).min(oh), out, band));
        } else {
            self.rows(x, (h, w), 0..oh, out, band);
        }
        // SAFETY: the calls of `rows` cover every output row, and each writes all of its rows.
        unsafe { y.set_len(oh * ow * out_c) };
        y
    }

    /// Output rows `rows` of the block into `out` (`[rows, w', out]`), `band_rows` at a time.
    fn rows(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [MaybeUninit<f32>],
        band_rows: usize,
    ) {
        let (in_c, mid_c, out_c) = (x.len() / (h * w).max(1), self.depthwise.channels(), self.project.output());
        let ow = self.depthwise.output_side(w);
        // The expanded input rows held: `held.start..held.end`, in `expanded`, which grows
        // band by band up to twice a band's rows before the rows still needed move to its front.
        let row_len = w * mid_c;
        let most = 2 * self.depthwise.span(band_rows) * row_len;
        let mut expanded: Vec<f32> = Vec::with_capacity(most);
        let mut held = 0..0;
        let mut mid = vec![0.0f32; band_rows.min(rows.len()) * ow * mid_c];
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + band_rows).min(rows.end);
            let need = self.depthwise.input_rows(start..end, h);
            let band = match &self.expand {
                None => Band { rows: &x[need.start * w * in_c..need.end * w * in_c], first: need.start },
                Some(expand) => {
                    if !(held.start <= need.start && need.start <= held.end) {
                        expanded.clear();
                        held = need.start..need.start;
                    } else if expanded.len() + (need.end - held.end) * row_len > most {
                        // Keep the rows the last band expanded that this one reads too.
                        expanded.drain(..(need.start - held.start) * row_len);
                        held.start = need.start;
                    }
                    let new = held.end..need.end;
                    let at = expanded.len();
                    expanded.reserve(new.len() * row_len);
                    let source = &x[new.start * w * in_c..new.end * w * in_c];
                    expand.forward_into(
                        source,
                        &mut expanded.spare_capacity_mut()[..new.len() * row_len],
                        RELU6,
                        false,
                    );
                    // SAFETY: `forward_into` wrote every element of the new rows.
                    unsafe { expanded.set_len(at + new.len() * row_len) };
                    held.end = need.end;
                    Band { rows: &expanded, first: held.start }
                }
            };
            let mid = &mut mid[..(end - start) * ow * mid_c];
            self.depthwise.band_forward(band, start..end, mid, (h, w), true);
            let residual = self.residual.then(|| &x[start * ow * out_c..end * ow * out_c]);
            let dst = &mut out[(start - rows.start) * ow * out_c..(end - rows.start) * ow * out_c];
            self.project.forward_into(mid, dst, Epilogue { residual, relu6: false }, false);
            start = end;
        }
    }
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
                let pixels = first.height * first.width;
                let c = first.values.len() / pixels.max(1);
                // Channels last -> channels first, image by image.
                let mut all = vec![0.0f32; batch * c * pixels];
                for (map, out) in maps.iter().zip(all.chunks_exact_mut((c * pixels).max(1))) {
                    for (p, pixel) in map[t].values.chunks_exact(c.max(1)).enumerate() {
                        for (channel, &v) in pixel.iter().enumerate() {
                            out[channel * pixels + p] = v;
                        }
                    }
                }
                Tensor::from_vec(all, (batch, c, first.height, first.width), &candle_core::Device::Cpu)
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
                    x = block.forward(&x, (h, w), parallel);
                    (h, w) = (block.depthwise.output_side(h), block.depthwise.output_side(w));
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
    for (oy, out_row) in out.chunks_mut((ow * 27).max(1)).enumerate() {
        for (c, plane) in image.chunks_exact((height * width).max(1)).take(3).enumerate() {
            for ky in 0..3 {
                // Input row `y` feeds kernel row `ky` of output row `oy`; rows outside stay 0.
                let Some(y) = (2 * oy + ky).checked_sub(1).filter(|&y| y < height) else { continue };
                let row = &plane[y * width..(y + 1) * width];
                let at = c * 9 + ky * 3;
                for (ox, patch) in out_row.chunks_exact_mut(27).enumerate() {
                    // Columns `2 ox - 1 ..= 2 ox + 1`, those outside the image left 0.
                    match (2 * ox).checked_sub(1).filter(|&x| x + 3 <= width) {
                        Some(x) => patch[at..at + 3].copy_from_slice(&row[x..x + 3]),
                        None => {
                            for kx in 0..3 {
                                if let Some(x) = (2 * ox + kx).checked_sub(1).filter(|&x| x < width) {
                                    patch[at + kx] = row[x];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` as memory to write `f32`s into.
    fn as_uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the slice's elements are
        // initialised; the writers given the slice write only initialised values.
        unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len()) }
    }

    /// `n` numbers in `[-1, 1)`, the same for the same seed.
    fn random(n: usize, seed: u64) -> Vec<f32> {
        super::super::pointwise::tests::random(n, seed).iter().map(|v| v * 0.5).collect()
    }

    /// A block run in bands of any height (one row, a few, more than the image), on one
    /// thread or split among several, computes what its three layers compute one after the
    /// other on whole maps: with and without an expansion, strided or not, with the skip
    /// connection or without, on sides the stride does not divide.
    #[test]
    fn a_block_in_bands_is_its_layers_on_whole_maps() {
        // (in, expand ratio, out, kernel, stride, h, w)
        for (seed, (in_c, ratio, out_c, kernel, stride, h, w)) in
            [(8, 1, 8, 3, 1, 9, 7), (8, 3, 8, 5, 1, 11, 6), (6, 4, 10, 3, 2, 13, 9), (5, 6, 12, 5, 2, 8, 11)]
                .into_iter()
                .enumerate()
        {
            let seed = seed as u64 * 10;
            let mid_c = in_c * ratio;
            let expand = (ratio > 1).then(|| Pointwise::new(&random(mid_c * in_c, seed), &random(mid_c, seed + 1)));
            let depthwise =
                DepthwiseConv::new(&random(mid_c * kernel * kernel, seed + 2), random(mid_c, seed + 3), kernel, stride);
            let project = Pointwise::new(&random(out_c * mid_c, seed + 4), &random(out_c, seed + 5));
            let residual = stride == 1 && in_c == out_c;
            let block = Block { expand, depthwise, project, residual, stage: 0 };
            let x: Vec<f32> = random(h * w * in_c, seed + 6).iter().map(|v| v * 3.0).collect();

            let expanded = block.expand.as_ref().map(|e| e.forward(&x, RELU6, false));
            let mid = block.depthwise.forward(expanded.as_deref().unwrap_or(&x), 1, (h, w), true, false);
            let then = Epilogue { residual: residual.then_some(x.as_slice()), relu6: false };
            let want = block.project.forward(&mid, then, false);

            let (oh, ow) = (block.depthwise.output_side(h), block.depthwise.output_side(w));
            let check = |got: &[f32], how: &str| {
                assert_eq!(got.len(), want.len(), "{how}");
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "block {seed}, {how}: differs by {diff}");
            };
            for band in [1, 2, 3, oh + 5] {
                let mut got = vec![f32::NAN; oh * ow * out_c];
                block.rows(&x, (h, w), 0..oh, as_uninit(&mut got), band);
                check(&got, &format!("bands of {band} rows"));
                // The lower half alone, as a thread given it would run it.
                let half = oh / 2;
                let mut lower = vec![f32::NAN; (oh - half) * ow * out_c];
                block.rows(&x, (h, w), half..oh, as_uninit(&mut lower), band);
                check(&[&got[..half * ow * out_c], &lower[..]].concat(), &format!("lower half in bands of {band}"));
            }
            check(&block.forward(&x, (h, w), true), "split among the threads");
            check(&block.forward(&x, (h, w), false), "one thread");
        }
    }
}
