//! The 1x1 convolution of the inference path, on the CPU, channels last: a matrix product
//! `[pixels, in] x [in, out]` with the weights packed once, when the network is prepared, and
//! the bias, the residual and ReLU6 applied in registers before the sums are stored.
//!
//! A general product (the `gemm` crate) packs its right-hand side on every call; for one
//! image's late layers (49 pixels against 1152 x 192 weights) that packing costs as much as
//! the arithmetic, and a separate pass for the bias and the clamp reads and writes the whole
//! output again.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::base::cpu::has_avx2_fma;

/// Output channels of one packed panel: two 8-lane registers.
const PANEL: usize = 16;
/// Pixels whose sums one call of the kernel holds in registers (6 x 2 accumulators).
const ROWS: usize = 6;
/// Pixels handed to one rayon task.
const ROWS_PER_TASK: usize = 16 * ROWS;

/// A 1x1 convolution with BatchNorm folded into its weights and bias.
#[derive(Debug, Clone)]
pub struct Pointwise {
    /// Panel `p` holds, for each input channel `k`, the weights of output channels
    /// `16p..16p + 16` (zero past the last): `[panels, in, 16]`.
    panels: Vec<f32>,
    /// The bias, zero-padded to whole panels.
    bias: Vec<f32>,
    input: usize,
    output: usize,
    /// Whether the AVX2 + FMA kernel runs (the CPU has them); otherwise plain loops.
    avx2: bool,
}

/// What is added to the product, and whether it is clamped.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// `[pixels, out]` added after the bias (a block's skip connection).
    pub residual: Option<&'a [f32]>,
    /// ReLU6: clamp to `[0, 6]`.
    pub relu6: bool,
}

impl Pointwise {
    /// From weights `[out, in]` (row-major, PyTorch's layout) and a bias per output channel.
    pub fn new(weights: &[f32], bias: &[f32]) -> Self {
        let output = bias.len();
        let input = weights.len() / output.max(1);
        assert_eq!(input * output, weights.len(), "pointwise weights are not [out, in]");
        let count = output.div_ceil(PANEL);
        let mut panels = vec![0.0; count * input * PANEL];
        for o in 0..output {
            let (p, lane) = (o / PANEL, o % PANEL);
            for k in 0..input {
                panels[(p * input + k) * PANEL + lane] = weights[o * input + k];
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(count * PANEL, 0.0);
        Self { panels, bias: padded, input, output, avx2: has_avx2_fma() }
    }

    /// The output channels.
    pub fn output(&self) -> usize {
        self.output
    }

    /// `x` `[pixels, in]` -> `[pixels, out]`, with `then` applied; pixels spread over rayon's
    /// threads when `parallel`.
    pub fn forward(&self, x: &[f32], then: Epilogue, parallel: bool) -> Vec<f32> {
        let pixels = x.len() / self.input.max(1);
        let mut y = Vec::with_capacity(pixels * self.output);
        self.forward_into(x, &mut y.spare_capacity_mut()[..pixels * self.output], then, parallel);
        // SAFETY: `forward_into` wrote every element of the first `pixels * output`.
        unsafe { y.set_len(pixels * self.output) };
        y
    }

    /// As [`Pointwise::forward`], into `out` (`[pixels, out]`), every element of which is
    /// written.
    pub fn forward_into(&self, x: &[f32], out: &mut [MaybeUninit<f32>], then: Epilogue, parallel: bool) {
        let (k, n) = (self.input, self.output);
        let pixels = x.len() / k.max(1);
        assert_eq!(pixels * k, x.len(), "pointwise input is not [pixels, {k}]");
        assert_eq!(out.len(), pixels * n, "pointwise output is not [pixels, {n}]");
        if let Some(r) = then.residual {
            assert_eq!(r.len(), pixels * n, "the residual is not [pixels, {n}]");
        }
        // The tiles of `rows` cover every row and every output channel, and each writes all of
        // its elements.
        let task = |(t, out): (usize, &mut [MaybeUninit<f32>])| {
            let first = t * ROWS_PER_TASK;
            let rows = out.len() / n.max(1);
            let x = &x[first * k..(first + rows) * k];
            let residual = then.residual.map(|r| &r[first * n..(first + rows) * n]);
            self.rows(x, out, Epilogue { residual, ..then });
        };
        match parallel && pixels > ROWS_PER_TASK {
            true => out.par_chunks_mut((ROWS_PER_TASK * n).max(1)).enumerate().for_each(task),
            false => task((0, out)),
        }
    }

    /// Rows `x` `[m, in]` into `out` `[m, out]`: six rows against every panel, then the next
    /// six, when the rows are the larger operand; otherwise one panel against every row, then
    /// the next panel, so that the larger operand is read once.
    fn rows(&self, x: &[f32], out: &mut [MaybeUninit<f32>], then: Epilogue) {
        let (k, n, panels) = (self.input, self.output, self.output.div_ceil(PANEL));
        let m = x.len() / k.max(1);
        let blocks = m.div_ceil(ROWS);
        let mut tile = |b: usize, p: usize| {
            let (r0, r1) = (b * ROWS, ((b + 1) * ROWS).min(m));
            let (c0, c1) = (p * PANEL, ((p + 1) * PANEL).min(n));
            let tile = Tile {
                x: &x[r0 * k..r1 * k],
                k,
                panel: &self.panels[p * k * PANEL..(p + 1) * k * PANEL],
                bias: &self.bias[c0..c0 + PANEL],
                width: c1 - c0,
                avx2: self.avx2,
            };
            let at = r0 * n + c0;
            let end = (r1 - 1) * n + c1;
            let residual = then.residual.map(|r| &r[at..end]);
            tile.run(&mut out[at..end], n, Epilogue { residual, ..then });
        };
        if m >= panels * PANEL {
            (0..blocks).for_each(|b| (0..panels).for_each(|p| tile(b, p)));
        } else {
            (0..panels).for_each(|p| (0..blocks).for_each(|b| tile(b, p)));
        }
    }
}

/// At most [`ROWS`] rows of the input against one panel, and what to add: the bias of the
/// panel's 16 channels, of which the first `width` are real.
struct Tile<'a> {
    x: &'a [f32],
    k: usize,
    panel: &'a [f32],
    bias: &'a [f32],
    width: usize,
    avx2: bool,
}

impl Tile<'_> {
    /// Writes row `r`'s `width` results at `out[r * stride..]` (`out` starts at the tile's
    /// first element and ends after its last), with `then` applied (the residual laid out as
    /// `out`).
    fn run(&self, out: &mut [MaybeUninit<f32>], stride: usize, then: Epilogue) {
        let rows = self.x.len() / self.k.max(1);
        assert!((1..=ROWS).contains(&rows) && self.x.len() == rows * self.k && self.panel.len() == self.k * PANEL);
        assert!(self.width <= PANEL && self.bias.len() == PANEL && out.len() == (rows - 1) * stride + self.width);
        assert!(then.residual.is_none_or(|r| r.len() == out.len()));
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 and FMA (`has_avx2_fma`); the sizes were asserted.
            unsafe {
                match rows {
                    6 => avx2::tile::<6>(self, out, stride, then),
                    5 => avx2::tile::<5>(self, out, stride, then),
                    4 => avx2::tile::<4>(self, out, stride, then),
                    3 => avx2::tile::<3>(self, out, stride, then),
                    2 => avx2::tile::<2>(self, out, stride, then),
                    _ => avx2::tile::<1>(self, out, stride, then),
                }
            }
            return;
        }
        for r in 0..rows {
            for j in 0..self.width {
                let dot = (0..self.k).map(|kk| self.x[r * self.k + kk] * self.panel[kk * PANEL + j]).sum::<f32>();
                let v = dot + self.bias[j] + then.residual.map_or(0.0, |res| res[r * stride + j]);
                out[r * stride + j].write(if then.relu6 { v.clamp(0.0, 6.0) } else { v });
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Epilogue, PANEL, Tile};

    /// [`Tile::run`] for `R` rows: the `R x 16` sums in registers through all of `k`, then
    /// the bias, the residual and the clamp on them before they are stored.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and the sizes are those [`Tile::run`] asserts, with `R` rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(
        tile: &Tile,
        out: &mut [MaybeUninit<f32>],
        stride: usize,
        then: Epilogue,
    ) {
        let (x, panel, k) = (tile.x.as_ptr(), tile.panel.as_ptr(), tile.k);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: `kk < k` and `r < R`: element `r * k + kk` is inside `x` and the 16 weights at
        // `kk * 16` inside `panel`; the 16 biases exist; the stores and residual loads of full
        // width stay inside row `r` of `out` (`r * stride + 16 <= out.len()` when `width` is 16),
        // and narrower rows go through a buffer.
        unsafe {
            for kk in 0..k {
                let w0 = _mm256_loadu_ps(panel.add(kk * PANEL));
                let w1 = _mm256_loadu_ps(panel.add(kk * PANEL + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_broadcast_ss(&*x.add(r * k + kk));
                    a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                }
            }
            let bias = [_mm256_loadu_ps(tile.bias.as_ptr()), _mm256_loadu_ps(tile.bias.as_ptr().add(8))];
            let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
            for (r, a) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add(r * stride).cast::<f32>();
                let mut v = [_mm256_add_ps(a[0], bias[0]), _mm256_add_ps(a[1], bias[1])];
                if tile.width == PANEL {
                    if let Some(res) = then.residual {
                        let res = res.as_ptr().add(r * stride);
                        v = [
                            _mm256_add_ps(v[0], _mm256_loadu_ps(res)),
                            _mm256_add_ps(v[1], _mm256_loadu_ps(res.add(8))),
                        ];
                    }
                    if then.relu6 {
                        v = v.map(|v| _mm256_min_ps(_mm256_max_ps(v, zero), six));
                    }
                    _mm256_storeu_ps(dst, v[0]);
                    _mm256_storeu_ps(dst.add(8), v[1]);
                } else {
                    let mut row = [0.0f32; PANEL];
                    _mm256_storeu_ps(row.as_mut_ptr(), v[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), v[1]);
                    for (j, value) in row[..tile.width].iter().enumerate() {
                        let s = value + then.residual.map_or(0.0, |res| res[r * stride + j]);
                        *dst.add(j) = if then.relu6 { s.clamp(0.0, 6.0) } else { s };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `n` numbers in `[-2, 2)`, the same for the same seed (the kernels' tests' data).
    pub(in crate::models::efficientnet) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Every shape the kernel splits differently (rows not a multiple of six, of a task's
    /// rows, outputs not a multiple of a panel, either loop order) gives the plain product
    /// with the bias, the residual and the clamp, on one thread and on several, with the
    /// vector kernel and with the plain loops.
    #[test]
    fn the_packed_product_is_the_plain_one() {
        for (pixels, input, output) in [(1, 3, 5), (7, 27, 32), (13, 16, 24), (49, 40, 200), (200, 24, 40), (6, 8, 16)]
        {
            let (w, b, x, res) =
                (random(output * input, 1), random(output, 2), random(pixels * input, 3), random(pixels * output, 4));
            let mut conv = Pointwise::new(&w, &b);
            let cases = [
                (false, false, false, true),
                (true, false, true, true),
                (false, true, true, true),
                (true, true, false, false),
            ];
            for (residual, relu6, parallel, avx2) in cases {
                conv.avx2 = avx2 && has_avx2_fma();
                let then = Epilogue { residual: residual.then_some(res.as_slice()), relu6 };
                let got = conv.forward(&x, then, parallel);
                for p in 0..pixels {
                    for o in 0..output {
                        let mut want = b[o] + (0..input).map(|k| x[p * input + k] * w[o * input + k]).sum::<f32>();
                        if residual {
                            want += res[p * output + o];
                        }
                        if relu6 {
                            want = want.clamp(0.0, 6.0);
                        }
                        let g = got[p * output + o];
                        assert!((g - want).abs() < 1e-4, "{pixels}x{input}->{output} at ({p}, {o}): {g} vs {want}");
                    }
                }
            }
        }
    }
}
