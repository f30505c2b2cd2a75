//! The depthwise convolution of the inference path, on the CPU, channels last.
//!
//! candle runs a grouped convolution as one convolution per group, which for a depthwise
//! layer (one group per channel) means hundreds of tiny convolutions. Channels last, every
//! tap of the kernel is one multiply-add over a contiguous run of channels instead, and the
//! BatchNorm (folded into weights and bias) and ReLU6 come for free.

use rayon::prelude::*;

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
}

impl DepthwiseConv {
    /// From PyTorch-layout weights `[C, 1, k, k]` (row-major) and a bias per channel.
    pub fn new(weights: &[f32], bias: Vec<f32>, kernel: usize, stride: usize) -> Self {
        let channels = bias.len();
        let taps = kernel * kernel;
        let mut laid = vec![0.0; taps * channels];
        for c in 0..channels {
            for t in 0..taps {
                laid[t * channels + c] = weights[c * taps + t];
            }
        }
        Self { weights: laid, bias, channels, kernel, stride }
    }

    /// The output side for an input side.
    pub fn output_side(&self, side: usize) -> usize {
        (side + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }

    /// `input` `[B, H, W, C]` (row-major) -> `[B, H', W', C]`, clamped to `[0, 6]` when
    /// `relu6`.
    pub fn forward(&self, input: &[f32], batch: usize, height: usize, width: usize, relu6: bool) -> Vec<f32> {
        let c = self.channels;
        let (out_h, out_w) = (self.output_side(height), self.output_side(width));
        let mut output = vec![0.0f32; batch * out_h * out_w * c];
        let level = Level::detect();
        output.par_chunks_mut(out_w * c).enumerate().for_each(|(row, out_row)| {
            let (b, oy) = (row / out_h, row % out_h);
            let image = &input[b * height * width * c..(b + 1) * height * width * c];
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Level::detect` saw the CPU support these instructions.
                Level::V4 => unsafe { self.output_row_v4(image, oy, out_row, height, width, relu6) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Level::V3 => unsafe { self.output_row_v3(image, oy, out_row, height, width, relu6) },
                Level::Baseline => self.output_row(image, oy, out_row, height, width, relu6),
            }
        });
        output
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn output_row_v4(&self, image: &[f32], oy: usize, out_row: &mut [f32], height: usize, width: usize, relu6: bool) {
        self.output_row(image, oy, out_row, height, width, relu6)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn output_row_v3(&self, image: &[f32], oy: usize, out_row: &mut [f32], height: usize, width: usize, relu6: bool) {
        self.output_row(image, oy, out_row, height, width, relu6)
    }

    /// Output row `oy` of one image (`[H, W, C]`): compiled anew, inlined, inside each of the
    /// functions above for the vector instructions they enable.
    #[inline(always)]
    fn output_row(&self, image: &[f32], oy: usize, out_row: &mut [f32], height: usize, width: usize, relu6: bool) {
        let c = self.channels;
        let pad = (self.kernel / 2) as isize;
        for (ox, out) in out_row.chunks_exact_mut(c).enumerate() {
            out.copy_from_slice(&self.bias);
            for ky in 0..self.kernel {
                let y = (oy * self.stride) as isize + ky as isize - pad;
                if y < 0 || y >= height as isize {
                    continue;
                }
                for kx in 0..self.kernel {
                    let x = (ox * self.stride) as isize + kx as isize - pad;
                    if x < 0 || x >= width as isize {
                        continue;
                    }
                    let at = (y as usize * width + x as usize) * c;
                    let tap = (ky * self.kernel + kx) * c;
                    multiply_add(out, &image[at..at + c], &self.weights[tap..tap + c]);
                }
            }
            if relu6 {
                for v in out.iter_mut() {
                    *v = v.clamp(0.0, 6.0);
                }
            }
        }
    }
}

/// The widest vector instructions the CPU offers.
#[derive(Clone, Copy)]
enum Level {
    #[cfg(target_arch = "x86_64")]
    V4,
    #[cfg(target_arch = "x86_64")]
    V3,
    Baseline,
}

impl Level {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Level::V4;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Level::V3;
            }
        }
        Level::Baseline
    }
}

/// `out += a * b`, elementwise, in fixed-width chunks the compiler turns into vector
/// instructions.
#[inline(always)]
fn multiply_add(out: &mut [f32], a: &[f32], b: &[f32]) {
    const LANES: usize = 16;
    let n = out.len() / LANES * LANES;
    for ((o, x), w) in out[..n].chunks_exact_mut(LANES).zip(a[..n].chunks_exact(LANES)).zip(b[..n].chunks_exact(LANES))
    {
        let o: &mut [f32; LANES] = o.try_into().expect("chunk of LANES");
        let x: &[f32; LANES] = x.try_into().expect("chunk of LANES");
        let w: &[f32; LANES] = w.try_into().expect("chunk of LANES");
        for i in 0..LANES {
            o[i] += x[i] * w[i];
        }
    }
    for ((o, x), w) in out[n..].iter_mut().zip(&a[n..]).zip(&b[n..]) {
        *o += x * w;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The kernel computes what candle's grouped convolution computes, for both kernel
    /// sizes and strides, odd sides and channel counts that are not a multiple of the lanes.
    #[test]
    fn depthwise_kernel_matches_candles_grouped_convolution() -> candle_core::Result<()> {
        let device = Device::Cpu;
        for (kernel, stride, side, channels) in [(3, 1, 9, 20), (5, 2, 11, 35), (3, 2, 8, 16), (5, 1, 7, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, channels, side, side), &device)?;
            let w = Tensor::randn(0f32, 1.0, (channels, 1, kernel, kernel), &device)?;
            let bias = Tensor::randn(0f32, 1.0, channels, &device)?;
            let expected = x
                .conv2d(&w, kernel / 2, stride, 1, channels)?
                .broadcast_add(&bias.reshape((1, channels, 1, 1))?)?
                .clamp(0f32, 6f32)?;
            let conv = DepthwiseConv::new(&w.flatten_all()?.to_vec1()?, bias.to_vec1()?, kernel, stride);
            let nhwc = x.permute((0, 2, 3, 1))?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let out_side = conv.output_side(side);
            let got =
                Tensor::from_vec(conv.forward(&nhwc, 2, side, side, true), (2, out_side, out_side, channels), &device)?
                    .permute((0, 3, 1, 2))?;
            assert_eq!(got.dims(), expected.dims());
            let diff = (got - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "k {kernel} s {stride}: {diff}");
        }
        Ok(())
    }
}
