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

    /// Rows `x` `[m, in]` into `out` `[m, out]`, every element written, `then` applied
    /// (the residual laid out as `out`).
    fn rows(&self, x: &[f32], out: &mut [MaybeUninit<f32>], then: Epilogue) {
        let (k, n) = (self.input, self.output);
        let m = x.len() / k.max(1);
        assert!(x.len() == m * k && out.len() == m * n && then.residual.is_none_or(|r| r.len() == out.len()));
        assert!(self.panels.len() == n.div_ceil(PANEL) * k * PANEL && self.bias.len() == n.div_ceil(PANEL) * PANEL);
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 and FMA (`has_avx2_fma`); the sizes were asserted.
            unsafe { avx2::product(self, x, out, then) };
            return;
        }
        for (r, (x, out)) in x.chunks(k.max(1)).zip(out.chunks_mut(n.max(1))).enumerate() {
            for (o, out) in out.iter_mut().enumerate() {
                let (p, lane) = (o / PANEL, o % PANEL);
                let panel = &self.panels[p * k * PANEL..(p + 1) * k * PANEL];
                let dot = x.iter().enumerate().map(|(kk, v)| v * panel[kk * PANEL + lane]).sum::<f32>();
                let v = dot + self.bias[o] + then.residual.map_or(0.0, |res| res[r * n + o]);
                out.write(if then.relu6 { v.clamp(0.0, 6.0) } else { v });
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Epilogue, PANEL, Pointwise, ROWS};

    /// [`Pointwise::rows`]: six rows against every panel, then the next six, when the rows
    /// are the larger operand; otherwise one panel against every row, then the next panel,
    /// so that the larger operand is read once.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and the sizes are those [`Pointwise::rows`] asserts.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product(conv: &Pointwise, x: &[f32], out: &mut [MaybeUninit<f32>], then: Epilogue) {
        let (k, n) = (conv.input, conv.output);
        let m = x.len() / k.max(1);
        let panels = n.div_ceil(PANEL);
        let mut tile = |(r0, rows): (usize, usize), p: usize| {
            let at = r0 * n + p * PANEL;
            let tile = Tile {
                x: x[r0 * k..].as_ptr(),
                k,
                panel: conv.panels[p * k * PANEL..].as_ptr(),
                bias: conv.bias[p * PANEL..].as_ptr(),
                width: PANEL.min(n - p * PANEL),
                out: out[at..].as_mut_ptr().cast::<f32>(),
                stride: n,
                residual: then.residual.map(|r| r[at..].as_ptr()),
                relu6: then.relu6,
            };
            // SAFETY: rows `r0..r0 + rows` of `x` and `out` exist, the panel holds `k * 16`
            // weights and the bias 16 (both zero-padded), and the tile writes `width` columns
            // from `p * 16` (inside a row of `out`).
            unsafe {
                match rows {
                    6 => run::<6>(tile),
                    5 => run::<5>(tile),
                    4 => run::<4>(tile),
                    3 => run::<3>(tile),
                    2 => run::<2>(tile),
                    _ => run::<1>(tile),
                }
            }
        };
        if m >= panels * PANEL {
            for rows in row_tiles(m) {
                (0..panels).for_each(|p| tile(rows, p));
            }
        } else {
            for p in 0..panels {
                row_tiles(m).for_each(|rows| tile(rows, p));
            }
        }
    }

    /// The tiles of `m` rows, as (first row, rows): six at a time, except that a remainder
    /// of one to three rows is not left alone: the last seven to nine rows go as two tiles of
    /// four or five, which keep enough sums in flight (a tile of `R` rows costs about as much
    /// as one of `max(R, 4)`).
    fn row_tiles(m: usize) -> impl Iterator<Item = (usize, usize)> {
        let left = m % ROWS;
        let (sixes, tail) = match m > ROWS && (1..=3).contains(&left) {
            true => (m / ROWS - 1, [(ROWS + left).div_ceil(2), (ROWS + left) / 2]),
            false => (m / ROWS, [left, 0]),
        };
        let tail = tail.into_iter().filter(|&rows| rows > 0).scan(sixes * ROWS, |at, rows| {
            *at += rows;
            Some((*at - rows, rows))
        });
        (0..sixes).map(|b| (b * ROWS, ROWS)).chain(tail)
    }

    /// Up to six rows of the input against one panel.
    #[derive(Clone, Copy)]
    struct Tile {
        /// The first row (`k` inputs each, one after another).
        x: *const f32,
        k: usize,
        /// The panel's `k x 16` weights and its 16 biases.
        panel: *const f32,
        bias: *const f32,
        /// The panel's real output channels (at most 16).
        width: usize,
        /// The first output of the first row; the rows are `stride` apart, here and in the
        /// residual.
        out: *mut f32,
        stride: usize,
        residual: Option<*const f32>,
        relu6: bool,
    }

    /// `R` rows of a tile: the `R x 16` sums in registers through all of `k`, then the bias,
    /// the residual and the clamp on them before `width` of them are stored per row.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the tile's pointers hold `R` rows, as [`Tile`] describes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize>(tile: Tile) {
        let Tile { x, k, panel, bias, width, out, stride, residual, relu6 } = tile;
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: as the caller promised; narrower rows than 16 go through a buffer.
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
            let bias = [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))];
            let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
            for (r, a) in acc.iter().enumerate() {
                let dst = out.add(r * stride);
                let mut v = [_mm256_add_ps(a[0], bias[0]), _mm256_add_ps(a[1], bias[1])];
                if width == PANEL {
                    if let Some(res) = residual {
                        let res = res.add(r * stride);
                        v = [
                            _mm256_add_ps(v[0], _mm256_loadu_ps(res)),
                            _mm256_add_ps(v[1], _mm256_loadu_ps(res.add(8))),
                        ];
                    }
                    if relu6 {
                        v = v.map(|v| _mm256_min_ps(_mm256_max_ps(v, zero), six));
                    }
                    _mm256_storeu_ps(dst, v[0]);
                    _mm256_storeu_ps(dst.add(8), v[1]);
                } else {
                    let mut row = [0.0f32; PANEL];
                    _mm256_storeu_ps(row.as_mut_ptr(), v[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), v[1]);
                    for (j, value) in row[..width].iter().enumerate() {
                        let s = value + residual.map_or(0.0, |res| *res.add(r * stride + j));
                        *dst.add(j) = if relu6 { s.clamp(0.0, 6.0) } else { s };
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
