//! The depthwise convolution of the inference path, on the CPU, channels last.
//!
//! candle runs a grouped convolution as one convolution per group, which for a depthwise
//! layer (one group per channel) means hundreds of tiny convolutions. Channels last, every
//! tap of the kernel is one multiply-add over a contiguous run of channels instead, and the
//! BatchNorm (folded into weights and bias) and ReLU6 come for free.

use rayon::prelude::*;

use crate::base::cpu::has_avx2_fma;

/// A depthwise `k` x `k` convolution with symmetric padding `k / 2`, weights and bias with
/// BatchNorm folded in, laid out for [`DepthwiseConv::forward`].
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    /// `[k, k, C]`: tap-major, channels contiguous.
    weights: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    /// `C` zeros, read by taps that fall outside the image.
    zeros: Vec<f32>,
    /// Whether the AVX2 + FMA kernel runs (the CPU has them); otherwise plain loops.
    avx2: bool,
}

impl DepthwiseConv {
    /// From PyTorch-layout weights `[C, 1, k, k]` (row-major) and a bias per channel.
    /// `kernel` is odd and at most 7 (EfficientNet uses 3 and 5).
    pub fn new(weights: &[f32], bias: Vec<f32>, kernel: usize, stride: usize) -> Self {
        assert!(kernel % 2 == 1 && kernel <= 7, "depthwise kernel {kernel}: odd and at most 7");
        let channels = bias.len();
        let taps = kernel * kernel;
        let mut laid = vec![0.0; taps * channels];
        for c in 0..channels {
            for t in 0..taps {
                laid[t * channels + c] = weights[c * taps + t];
            }
        }
        Self { weights: laid, bias, channels, kernel, stride, zeros: vec![0.0; channels], avx2: has_avx2_fma() }
    }

    /// The output side for an input side.
    pub fn output_side(&self, side: usize) -> usize {
        (side + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }

    /// The channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// `input` `[B, H, W, C]` (row-major) -> `[B, H', W', C]`, clamped to `[0, 6]` when
    /// `relu6`; output rows spread over rayon's threads when `parallel`.
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        (height, width): (usize, usize),
        relu6: bool,
        parallel: bool,
    ) -> Vec<f32> {
        let c = self.channels;
        assert_eq!(input.len(), batch * height * width * c, "depthwise input of the wrong size");
        let (out_h, out_w) = (self.output_side(height), self.output_side(width));
        let mut output = vec![0.0f32; batch * out_h * out_w * c];
        let row = |(row, out_row): (usize, &mut [f32])| {
            let (b, oy) = (row / out_h, row % out_h);
            let image = &input[b * height * width * c..(b + 1) * height * width * c];
            self.output_row(Band { rows: image, first: 0 }, oy, out_row, (height, width), relu6);
        };
        match parallel {
            true => output.par_chunks_mut(out_w * c).enumerate().for_each(row),
            false => output.chunks_mut(out_w * c).enumerate().for_each(row),
        }
        output
    }

    /// How many input rows `rows` consecutive output rows read away from the image's edges.
    pub fn span(&self, rows: usize) -> usize {
        (rows.max(1) - 1) * self.stride + self.kernel
    }

    /// The input rows that output rows `rows` read, within an image of `height` rows.
    pub fn input_rows(&self, rows: std::ops::Range<usize>, height: usize) -> std::ops::Range<usize> {
        let (k, pad, stride) = (self.kernel, self.kernel / 2, self.stride);
        if rows.is_empty() {
            return 0..0;
        }
        (rows.start * stride).saturating_sub(pad)..((rows.end - 1) * stride + k - pad).min(height)
    }

    /// Output rows `rows` of one image `[height, width, C]`, of which `band` holds (at least)
    /// the rows [`DepthwiseConv::input_rows`] names, into `out` (`[rows, W', C]`).
    pub fn band_forward(
        &self,
        band: Band,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        (height, width): (usize, usize),
        relu6: bool,
    ) {
        let c = self.channels;
        let need = self.input_rows(rows.clone(), height);
        let held = band.first..band.first + band.rows.len() / (width * c).max(1);
        assert!(need.is_empty() || (held.start <= need.start && need.end <= held.end), "the band lacks input rows");
        let out_w = self.output_side(width);
        assert_eq!(out.len(), rows.len() * out_w * c, "depthwise band output of the wrong size");
        for (oy, out_row) in rows.zip(out.chunks_mut((out_w * c).max(1))) {
            self.output_row(band, oy, out_row, (height, width), relu6);
        }
    }

    /// Output row `oy` of one image (`[H, W, C]`, of which `band` holds the rows the output
    /// row reads), up to [`GROUP`] pixels at a time: each weight load serves every pixel of
    /// the group. Where the kernel lies inside the image for the whole group, the pixels read
    /// at one stride from each other; the pixels left over at the edges go in groups too, a
    /// tap that falls outside the image reading zeros for a pixel (and left out if it does so
    /// for every pixel of the group), so that no pixel is computed alone with too few sums in
    /// flight.
    fn output_row(&self, band: Band, oy: usize, out_row: &mut [f32], (height, width): (usize, usize), relu6: bool) {
        let c = self.channels;
        let (k, pad, stride) = (self.kernel, self.kernel / 2, self.stride);
        // The kernel rows that fall inside the image, the same for the whole output row.
        let top = (oy * stride).saturating_sub(pad);
        let bottom = (oy * stride + k - pad).min(height);
        let row = |y: usize| &band.rows[(y - band.first) * width * c..(y - band.first + 1) * width * c];
        let out_w = out_row.len() / c.max(1);
        // Pixels `inside` have their whole kernel row inside the image. Their taps, as
        // (offset in `band` for pixel `inside.start`, offset in `weights`), serve every group
        // of them, its input shifted.
        let inside = pad.div_ceil(stride).min(out_w)..((width + pad).saturating_sub(k) / stride + 1).min(out_w);
        let mut taps = [(0usize, 0usize); 49];
        let mut n = 0;
        for y in top..bottom {
            for kx in 0..k {
                let x = (inside.start * stride + kx).saturating_sub(pad);
                taps[n] = (((y - band.first) * width + x) * c, ((y + pad - oy * stride) * k + kx) * c);
                n += 1;
            }
        }
        let strided = Strided::new(&taps[..n], stride * c, c);
        // Groups of pixels inside from `inside.start` on (if one group fits), and the pixels
        // left over at either edge in groups of their own.
        let whole = (inside.len() / GROUP) * GROUP;
        let start = if whole == 0 { 0 } else { inside.start };
        let (left, middle) = out_row.split_at_mut(start * c);
        let (middle, right) = middle.split_at_mut(whole * c);
        for (group, out) in middle.chunks_mut((GROUP * c).max(1)).enumerate() {
            let image = &band.rows[group * GROUP * stride * c..];
            self.accumulate(out, GROUP, Taps::Strided(image, strided), relu6);
        }
        let zeros = &self.zeros[..];
        let mut edge = [Tap { weights: 0, inputs: [zeros; GROUP] }; 49];
        let left = left.chunks_mut((GROUP * c).max(1)).enumerate().map(|(group, out)| (group * GROUP, out));
        let right = right.chunks_mut((GROUP * c).max(1)).enumerate();
        let right = right.map(|(group, out)| (start + whole + group * GROUP, out));
        for (first, out) in left.chain(right) {
            let count = out.len() / c.max(1);
            let mut n = 0;
            for y in top..bottom {
                for kx in 0..k {
                    let mut inputs = [zeros; GROUP];
                    let mut any = false;
                    for (p, input) in inputs.iter_mut().enumerate().take(count) {
                        // The input column this tap reads for pixel `first + p`, if in the image.
                        if let Some(x) = ((first + p) * stride + kx).checked_sub(pad).filter(|&x| x < width) {
                            *input = &row(y)[x * c..(x + 1) * c];
                            any = true;
                        }
                    }
                    if any {
                        edge[n] = Tap { weights: ((y + pad - oy * stride) * k + kx) * c, inputs };
                        n += 1;
                    }
                }
            }
            self.accumulate(out, count, Taps::Edge(&edge[..n]), relu6);
        }
    }

    /// For each output pixel `p` of `out` (`[pixels, C]`, at most [`GROUP`] pixels) and each
    /// channel `j`: `out[p * C + j] = bias[j] + Σ input(tap, p)[j] * weights[tap's offset + j]`
    /// over the taps, clamped to `[0, 6]` when `relu6`.
    fn accumulate(&self, out: &mut [f32], count: usize, taps: Taps, relu6: bool) {
        let (bias, weights, c) = (&self.bias, &self.weights, self.channels);
        assert!((1..=GROUP).contains(&count) && out.len() == count * c, "output of the wrong size");
        match taps {
            Taps::Strided(image, taps) => assert!(
                count == GROUP && taps.channels == c && taps.reach <= image.len() && taps.weights <= weights.len()
            ),
            Taps::Edge(taps) => {
                assert!(taps.iter().all(|t| t.weights + c <= weights.len() && t.inputs.iter().all(|i| i.len() == c)))
            }
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 and FMA (`has_avx2_fma` said so), and every read and write
            // stays inside the slices (the assertions above).
            unsafe {
                match taps {
                    Taps::Strided(image, Strided { taps, step, .. }) => {
                        let image = image.as_ptr();
                        let input = |&(i, _): &(usize, usize), p: usize| image.add(i + p * step);
                        avx2::accumulate::<GROUP, _>(out, bias, weights, taps, input, |&(_, w)| w, relu6)
                    }
                    Taps::Edge(taps) => {
                        let (input, weights_at) = (|t: &Tap, p: usize| t.inputs[p].as_ptr(), |t: &Tap| t.weights);
                        match count {
                            1 => avx2::accumulate::<1, _>(out, bias, weights, taps, input, weights_at, relu6),
                            2 => avx2::accumulate::<2, _>(out, bias, weights, taps, input, weights_at, relu6),
                            3 => avx2::accumulate::<3, _>(out, bias, weights, taps, input, weights_at, relu6),
                            _ => avx2::accumulate::<GROUP, _>(out, bias, weights, taps, input, weights_at, relu6),
                        }
                    }
                }
            }
            return;
        }
        for (p, out) in out.chunks_mut(c).enumerate() {
            for (j, out) in out.iter_mut().enumerate() {
                let sum = match taps {
                    Taps::Strided(image, Strided { taps, step, .. }) => {
                        taps.iter().fold(bias[j], |s, &(i, w)| s + image[i + p * step + j] * weights[w + j])
                    }
                    Taps::Edge(taps) => taps.iter().fold(bias[j], |s, t| s + t.inputs[p][j] * weights[t.weights + j]),
                };
                *out = if relu6 { sum.clamp(0.0, 6.0) } else { sum };
            }
        }
    }
}

/// The taps of a group of output pixels.
#[derive(Clone, Copy)]
enum Taps<'t, 'a> {
    /// [`GROUP`] pixels `step` apart in an image.
    Strided(&'a [f32], Strided<'t>),
    /// Each pixel's channels named apart.
    Edge(&'t [Tap<'a>]),
}

/// Taps `(i, w)` that read pixel `p`'s `channels` at `image[i + p * step..]` and their
/// weights at `weights[w..]`, for [`GROUP`] pixels, and how far they reach into each.
#[derive(Clone, Copy)]
struct Strided<'t> {
    taps: &'t [(usize, usize)],
    step: usize,
    channels: usize,
    /// The image elements they read, from the start: `max(i) + (GROUP - 1) * step + channels`.
    reach: usize,
    /// The weights they read: `max(w) + channels`.
    weights: usize,
}

impl<'t> Strided<'t> {
    fn new(taps: &'t [(usize, usize)], step: usize, channels: usize) -> Self {
        let reach = taps.iter().map(|&(i, _)| i + (GROUP - 1) * step + channels).max().unwrap_or(0);
        let weights = taps.iter().map(|&(_, w)| w + channels).max().unwrap_or(0);
        Self { taps, step, channels, reach, weights }
    }
}

/// Output pixels computed together.
const GROUP: usize = 4;

/// Consecutive rows of an image `[H, W, C]`: `rows` holds rows `first..`.
#[derive(Clone, Copy)]
pub struct Band<'a> {
    pub rows: &'a [f32],
    pub first: usize,
}

/// One tap of the kernel for a group of output pixels: where its `C` weights start, and the
/// `C` input channels it multiplies for each pixel (zeros where it falls outside the image).
#[derive(Clone, Copy)]
struct Tap<'a> {
    weights: usize,
    inputs: [&'a [f32]; GROUP],
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::DepthwiseConv::accumulate`] for `P` pixels, the sums held in registers
    /// through all the taps: 16 channels at a time for three or four pixels (32 for fewer),
    /// then 8, then one at a time. `input(tap, p)` is where pixel `p`'s channels are for a tap,
    /// `weights_at(tap)` where its weights start.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, `out` holds `P` pixels, and every input holds `C` channels
    /// and every weight offset `C` weights, as [`super::DepthwiseConv::accumulate`] asserts.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate<const P: usize, T>(
        out: &mut [f32],
        bias: &[f32],
        weights: &[f32],
        taps: &[T],
        input: impl Fn(&T, usize) -> *const f32 + Copy,
        weights_at: impl Fn(&T) -> usize + Copy,
        relu6: bool,
    ) {
        let c = bias.len();
        let at = Pointers { out: out.as_mut_ptr(), bias: bias.as_ptr(), weights: weights.as_ptr(), c };
        // SAFETY: each call stays within channels `..c`, as the caller promised.
        unsafe {
            let mut j = match P {
                1 | 2 => channel_blocks::<P, 4, T>(at, 0, taps, input, weights_at, relu6),
                _ => channel_blocks::<P, 2, T>(at, 0, taps, input, weights_at, relu6),
            };
            j = channel_blocks::<P, 1, T>(at, j, taps, input, weights_at, relu6);
            for p in 0..P {
                for j in j..c {
                    let mut sum = *at.bias.add(j);
                    for tap in taps {
                        sum += *input(tap, p).add(j) * *at.weights.add(weights_at(tap) + j);
                    }
                    *at.out.add(p * c + j) = if relu6 { sum.clamp(0.0, 6.0) } else { sum };
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Pointers {
        out: *mut f32,
        bias: *const f32,
        weights: *const f32,
        c: usize,
    }

    /// Channels from `j` on in blocks of `8 * R` while a whole block fits in `c`: returns the
    /// first channel not done.
    ///
    /// # Safety
    /// As [`accumulate`], for the slices behind `at` and the taps.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn channel_blocks<const P: usize, const R: usize, T>(
        at: Pointers,
        mut j: usize,
        taps: &[T],
        input: impl Fn(&T, usize) -> *const f32,
        weights_at: impl Fn(&T) -> usize,
        relu6: bool,
    ) -> usize {
        let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
        // SAFETY: `j + 8 * R <= c` inside the loop, so every access stays within the
        // channels the caller vouched for.
        unsafe {
            while j + 8 * R <= at.c {
                let mut acc = [[_mm256_setzero_ps(); R]; P];
                for pixel in acc.iter_mut() {
                    for (r, a) in pixel.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(at.bias.add(j + 8 * r));
                    }
                }
                for tap in taps {
                    let w = weights_at(tap);
                    for r in 0..R {
                        let weight = _mm256_loadu_ps(at.weights.add(w + j + 8 * r));
                        for (p, pixel) in acc.iter_mut().enumerate() {
                            let x = _mm256_loadu_ps(input(tap, p).add(j + 8 * r));
                            pixel[r] = _mm256_fmadd_ps(x, weight, pixel[r]);
                        }
                    }
                }
                for (p, pixel) in acc.iter().enumerate() {
                    for (r, &a) in pixel.iter().enumerate() {
                        let v = if relu6 { _mm256_min_ps(_mm256_max_ps(a, zero), six) } else { a };
                        _mm256_storeu_ps(at.out.add(p * at.c + j + 8 * r), v);
                    }
                }
                j += 8 * R;
            }
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The kernel computes what candle's grouped convolution computes, for both kernel
    /// sizes and strides, odd sides, channel counts that exercise each width of the vector
    /// path (32, 8, then single channels), on one thread and on several, with the vector
    /// kernel and with the plain loops.
    #[test]
    fn depthwise_kernel_matches_candles_grouped_convolution() -> candle_core::Result<()> {
        let device = Device::Cpu;
        for (kernel, stride, side, channels) in [
            (3, 1, 9, 20),
            (5, 2, 11, 35),
            (3, 2, 8, 16),
            (5, 1, 7, 3),
            (3, 1, 12, 72),
            (5, 2, 16, 48),
            (5, 1, 13, 24),
            (5, 1, 2, 9),
            (3, 2, 3, 40),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, channels, side, side), &device)?;
            let w = Tensor::randn(0f32, 1.0, (channels, 1, kernel, kernel), &device)?;
            let bias = Tensor::randn(0f32, 1.0, channels, &device)?;
            let expected = x
                .conv2d(&w, kernel / 2, stride, 1, channels)?
                .broadcast_add(&bias.reshape((1, channels, 1, 1))?)?
                .clamp(0f32, 6f32)?;
            let mut conv = DepthwiseConv::new(&w.flatten_all()?.to_vec1()?, bias.to_vec1()?, kernel, stride);
            let nhwc = x.permute((0, 2, 3, 1))?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let out_side = conv.output_side(side);
            for avx2 in [true, false] {
                conv.avx2 = avx2 && has_avx2_fma();
                let got = Tensor::from_vec(
                    conv.forward(&nhwc, 2, (side, side), true, channels % 2 == 0),
                    (2, out_side, out_side, channels),
                    &device,
                )?
                .permute((0, 3, 1, 2))?;
                assert_eq!(got.dims(), expected.dims());
                let diff = (got - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "k {kernel} s {stride} avx2 {avx2}: {diff}");
            }
        }
        Ok(())
    }
}
