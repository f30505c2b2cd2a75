//! The depthwise convolution of the differentiable path as one candle operation with its own
//! gradient, on the CPU (NCHW, f32).
//!
//! Written as k² shifted products, a 5x5 depthwise layer is 25 broadcast products and sums,
//! and its backward pass 25 reductions over batch and space (candle reduces a broadcast
//! operand's gradient element by element): `last-blocks` training of a CNN then spent most of
//! its time there. Here the forward pass and both gradients are plain loops over each
//! channel's plane.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` `[B, C, H, W]` with one odd `k x k` filter per channel (`weight` `[C, 1, k, k]`), zero
/// padding `k / 2`, the given stride.
#[derive(Debug, Clone, Copy)]
pub(super) struct Depthwise {
    pub stride: usize,
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], stride: usize) -> Result<Self> {
        let (&[batch, channels, height, width], &[wc, 1, kernel, k2]) = (x, weight) else {
            candle_core::bail!("depthwise: input {x:?} and weight {weight:?} are not [B, C, H, W] and [C, 1, k, k]");
        };
        if wc != channels || k2 != kernel || kernel % 2 == 0 || stride == 0 {
            candle_core::bail!("depthwise: weight {weight:?} does not fit input {x:?} with stride {stride}");
        }
        let pad = kernel / 2;
        let side = |n: usize| (n + 2 * pad - kernel) / stride + 1;
        Ok(Self { batch, channels, height, width, kernel, stride, out_h: side(height), out_w: side(width) })
    }

    fn pad(&self) -> usize {
        self.kernel / 2
    }

    /// Calls `f(oy, ox, iy, ix, tap)` for every output pixel and kernel tap that lands inside
    /// the input, inner loop over `ox`.
    #[inline(always)]
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (k, s, p) = (self.kernel, self.stride, self.pad() as isize);
        for oy in 0..self.out_h {
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= self.height as isize {
                    continue;
                }
                for kx in 0..k {
                    // ix = ox * s + kx - p must lie in 0..width.
                    let offset = kx as isize - p;
                    let first = if offset >= 0 { 0 } else { ((-offset) as usize).div_ceil(s) };
                    let last = match self.width as isize - 1 - offset {
                        n if n < 0 => 0,
                        n => (n as usize / s + 1).min(self.out_w),
                    };
                    for ox in first..last {
                        let ix = (ox * s) as isize + offset;
                        f(oy, ox, iy as usize, ix as usize, ky * k + kx);
                    }
                }
            }
        }
    }
}

/// The contiguous f32 data of a storage, or an error naming the operation.
fn data<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("depthwise: the {what} is not f32");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => candle_core::bail!("depthwise: the {what} is not contiguous"),
    }
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride)?;
        let (x, w) = (data(s1, l1, "input")?, data(s2, l2, "weight")?);
        let (plane_in, plane_out, taps) = (g.height * g.width, g.out_h * g.out_w, g.kernel * g.kernel);
        let mut out = vec![0f32; g.batch * g.channels * plane_out];
        out.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(bc, y)| {
            let (x, c) = (&x[bc * plane_in..(bc + 1) * plane_in], bc % g.channels);
            let w = &w[c * taps..(c + 1) * taps];
            g.for_each_tap(|oy, ox, iy, ix, t| y[oy * g.out_w + ox] += w[t] * x[iy * g.width + ix]);
        });
        Ok((CpuStorage::F32(out), Shape::from((g.batch, g.channels, g.out_h, g.out_w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = x.dims4()?;
        let grad_x = grad.apply_op2_no_bwd(weight, &InputGradient { stride: self.stride, input: dims })?;
        let grad_w = x.apply_op2_no_bwd(&grad, &WeightGradient { stride: self.stride, kernel: weight.dim(3)? })?;
        Ok((Some(grad_x), Some(grad_w)))
    }
}

/// The gradient with respect to the input: each output gradient spread back over the input
/// pixels its taps read. Arguments: the output's gradient and the weight.
struct InputGradient {
    stride: usize,
    input: (usize, usize, usize, usize),
}

impl CustomOp2 for InputGradient {
    fn name(&self) -> &'static str {
        "depthwise-conv-input-gradient"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = self.input;
        let g = Geometry::new(&[b, c, h, w], l2.dims(), self.stride)?;
        if l1.dims() != [b, c, g.out_h, g.out_w] {
            candle_core::bail!("depthwise: gradient {:?} does not fit input {:?}", l1.dims(), self.input);
        }
        let (grad, weight) = (data(s1, l1, "gradient")?, data(s2, l2, "weight")?);
        let (plane_in, plane_out, taps) = (h * w, g.out_h * g.out_w, g.kernel * g.kernel);
        let mut out = vec![0f32; b * c * plane_in];
        out.par_chunks_mut(plane_in.max(1)).enumerate().for_each(|(bc, gx)| {
            let (gy, ch) = (&grad[bc * plane_out..(bc + 1) * plane_out], bc % c);
            let wt = &weight[ch * taps..(ch + 1) * taps];
            g.for_each_tap(|oy, ox, iy, ix, t| gx[iy * w + ix] += wt[t] * gy[oy * g.out_w + ox]);
        });
        Ok((CpuStorage::F32(out), Shape::from(self.input)))
    }
}

/// The gradient with respect to the weight: per channel and tap, the sum over the batch and
/// the output pixels of the output gradient times the input pixel the tap read. Arguments:
/// the input and the output's gradient.
struct WeightGradient {
    stride: usize,
    kernel: usize,
}

impl CustomOp2 for WeightGradient {
    fn name(&self) -> &'static str {
        "depthwise-conv-weight-gradient"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let channels = dims.get(1).copied().unwrap_or(0);
        let g = Geometry::new(dims, &[channels, 1, self.kernel, self.kernel], self.stride)?;
        if l2.dims() != [g.batch, channels, g.out_h, g.out_w] {
            candle_core::bail!("depthwise: gradient {:?} does not fit input {dims:?}", l2.dims());
        }
        let (x, grad) = (data(s1, l1, "input")?, data(s2, l2, "gradient")?);
        let (plane_in, plane_out, taps) = (g.height * g.width, g.out_h * g.out_w, g.kernel * g.kernel);
        let mut out = vec![0f32; channels * taps];
        out.par_chunks_mut(taps).enumerate().for_each(|(c, gw)| {
            for b in 0..g.batch {
                let bc = b * channels + c;
                let (x, gy) = (&x[bc * plane_in..(bc + 1) * plane_in], &grad[bc * plane_out..(bc + 1) * plane_out]);
                g.for_each_tap(|oy, ox, iy, ix, t| gw[t] += gy[oy * g.out_w + ox] * x[iy * g.width + ix]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((channels, 1, self.kernel, self.kernel))))
    }
}

/// Whether the op serves these tensors (CPU, f32); elsewhere the shifted products do.
pub(super) fn serves(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}
