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
        Self { weights: laid, bias, channels, kernel, stride, avx2: has_avx2_fma() }
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
    /// row reads). Pixels whose kernel lies wholly inside the image go [`GROUP`] at a time
    /// (each weight load serves them all); the others one by one, with the taps that fall
    /// outside the image left out.
    fn output_row(&self, band: Band, oy: usize, out_row: &mut [f32], (height, width): (usize, usize), relu6: bool) {
        let c = self.channels;
        let (k, pad, stride) = (self.kernel, self.kernel / 2, self.stride);
        // The kernel rows that fall inside the image, the same for the whole output row.
        let top = (oy * stride).saturating_sub(pad);
        let bottom = (oy * stride + k - pad).min(height);
        // Every tap of pixel `ox` that falls inside the image: (offset in `band`, offset in
        // `weights`).
        let taps_of = |ox: usize, taps: &mut [(usize, usize); 49]| -> usize {
            let left = (ox * stride).saturating_sub(pad);
            let right = (ox * stride + k - pad).min(width);
            let mut n = 0;
            for y in top..bottom {
                let ky = y + pad - oy * stride;
                for x in left..right {
                    taps[n] = (((y - band.first) * width + x) * c, (ky * k + x + pad - ox * stride) * c);
                    n += 1;
                }
            }
            n
        };
        let out_w = out_row.len() / c;
        // Pixels `first..last` have the whole kernel row inside the image.
        let first = pad.div_ceil(stride).min(out_w);
        let last = ((width + pad).saturating_sub(k) / stride + 1).clamp(first, out_w);
        let mut taps = [(0usize, 0usize); 49];
        let mut ox = 0;
        while ox < out_w {
            let group = if ox >= first && ox + GROUP <= last { GROUP } else { 1 };
            let n = taps_of(ox, &mut taps);
            let out = &mut out_row[ox * c..(ox + group) * c];
            let pixels = Pixels { count: group, input_step: stride * c, output_step: c };
            self.accumulate(out, band.rows, &taps[..n], pixels, relu6);
            ox += group;
        }
    }
}

/// Output pixels computed together where the kernel lies inside the image.
const GROUP: usize = 4;

/// Consecutive rows of an image `[H, W, C]`: `rows` holds rows `first..`.
#[derive(Clone, Copy)]
pub struct Band<'a> {
    pub rows: &'a [f32],
    pub first: usize,
}

/// Output pixels computed together, `input_step` apart in the image and `output_step` apart
/// in the output.
#[derive(Clone, Copy)]
struct Pixels {
    count: usize,
    input_step: usize,
    output_step: usize,
}

impl DepthwiseConv {
    /// For each output pixel `p` of `pixels`, over every channel `j`:
    /// `out[p * output_step + j] = bias[j] + Σ image[i + p * input_step + j] * weights[w + j]`
    /// over the `(i, w)` of `taps`, clamped to `[0, 6]` when `relu6`.
    fn accumulate(&self, out: &mut [f32], image: &[f32], taps: &[(usize, usize)], pixels: Pixels, relu6: bool) {
        let (bias, weights, c) = (&self.bias, &self.weights, self.channels);
        let Pixels { count, input_step, output_step } = pixels;
        assert!(count == 1 || count == GROUP, "{count} pixels at once");
        assert!(c <= output_step && out.len() == (count - 1) * output_step + c, "output of the wrong size");
        assert!(taps.iter().all(|&(i, w)| i + (count - 1) * input_step + c <= image.len() && w + c <= weights.len()));
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 and FMA (`has_avx2_fma` said so), and every read and write
            // stays inside the slices (the assertions above).
            unsafe {
                match count {
                    1 => avx2::accumulate::<1>(out, bias, image, weights, taps, pixels, relu6),
                    _ => avx2::accumulate::<GROUP>(out, bias, image, weights, taps, pixels, relu6),
                }
            }
            return;
        }
        for p in 0..count {
            for j in 0..c {
                let sum = taps.iter().fold(bias[j], |s, &(i, w)| s + image[i + p * input_step + j] * weights[w + j]);
                out[p * output_step + j] = if relu6 { sum.clamp(0.0, 6.0) } else { sum };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Pixels;

    /// [`super::DepthwiseConv::accumulate`] for `P` pixels, the sums held in registers
    /// through all the taps: 32 channels at a time for one pixel (16 for a group), then 8, then
    /// one at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, `P` is `pixels.count`, and the sizes are those
    /// [`super::DepthwiseConv::accumulate`] asserts.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate<const P: usize>(
        out: &mut [f32],
        bias: &[f32],
        image: &[f32],
        weights: &[f32],
        taps: &[(usize, usize)],
        pixels: Pixels,
        relu6: bool,
    ) {
        let c = bias.len();
        let at = Pointers {
            out: out.as_mut_ptr(),
            bias: bias.as_ptr(),
            image: image.as_ptr(),
            weights: weights.as_ptr(),
            input_step: pixels.input_step,
            output_step: pixels.output_step,
        };
        // SAFETY: each call stays within channels `..c`, as the caller promised.
        unsafe {
            let mut j = match P {
                1 => channel_blocks::<P, 4>(at, c, 0, taps, relu6),
                _ => channel_blocks::<P, 2>(at, c, 0, taps, relu6),
            };
            j = channel_blocks::<P, 1>(at, c, j, taps, relu6);
            for p in 0..P {
                for j in j..c {
                    let mut sum = *at.bias.add(j);
                    for &(i, w) in taps {
                        sum += *at.image.add(i + p * at.input_step + j) * *at.weights.add(w + j);
                    }
                    *at.out.add(p * at.output_step + j) = if relu6 { sum.clamp(0.0, 6.0) } else { sum };
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Pointers {
        out: *mut f32,
        bias: *const f32,
        image: *const f32,
        weights: *const f32,
        input_step: usize,
        output_step: usize,
    }

    /// Channels from `j` on in blocks of `8 * R` while a whole block fits in `c`: returns the
    /// first channel not done.
    ///
    /// # Safety
    /// As [`accumulate`], for the slices behind `at`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn channel_blocks<const P: usize, const R: usize>(
        at: Pointers,
        c: usize,
        mut j: usize,
        taps: &[(usize, usize)],
        relu6: bool,
    ) -> usize {
        let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
        // SAFETY: `j + 8 * R <= c` inside the loop, so every access stays within the
        // channels the caller vouched for.
        unsafe {
            while j + 8 * R <= c {
                let mut acc = [[_mm256_setzero_ps(); R]; P];
                for pixel in acc.iter_mut() {
                    for (r, a) in pixel.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(at.bias.add(j + 8 * r));
                    }
                }
                for &(i, w) in taps {
                    for r in 0..R {
                        let weight = _mm256_loadu_ps(at.weights.add(w + j + 8 * r));
                        for (p, pixel) in acc.iter_mut().enumerate() {
                            let x = _mm256_loadu_ps(at.image.add(i + p * at.input_step + j + 8 * r));
                            pixel[r] = _mm256_fmadd_ps(x, weight, pixel[r]);
                        }
                    }
                }
                for (p, pixel) in acc.iter().enumerate() {
                    for (r, &a) in pixel.iter().enumerate() {
                        let v = if relu6 { _mm256_min_ps(_mm256_max_ps(a, zero), six) } else { a };
                        _mm256_storeu_ps(at.out.add(p * at.output_step + j + 8 * r), v);
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
        for (kernel, stride, side, channels) in
            [(3, 1, 9, 20), (5, 2, 11, 35), (3, 2, 8, 16), (5, 1, 7, 3), (3, 1, 12, 72), (5, 2, 16, 48), (5, 1, 13, 24)]
        {
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
