//! The fused inference path on the CPU: patch embedding, transformer blocks and final
//! LayerNorm on plain `f32` buffers.
//!
//! candle runs a ViT block as a dozen separate ops, several single-threaded (softmax, the
//! element-wise ones) and each writing a fresh tensor. Here one block is four large matrix
//! products (the `gemm` crate that candle itself uses, ~205 GFLOP/s on 2 Zen 4 cores) plus
//! attention and a few row-parallel passes:
//!
//! - LayerNorm, softmax and bias + GELU run on rayon's threads, with an exp and an erf that
//!   vectorise (errors ~1e-7, far below the parity tolerance), compiled for AVX2 / AVX-512
//!   when the CPU has them;
//! - attention is computed per (image, head) in parallel, each with single-threaded products
//!   on that head's query, key and value gathered into contiguous buffers;
//! - LayerScale is folded into the output projections' weights and biases, and the residual
//!   is accumulated by the matrix product itself.
//!
//! Inference only (no autograd) and for frozen weights: [`super::Dinov2`] falls back to
//! candle's ops for trainable weights and other devices.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::models::backbone::Tap;

/// Rows handed to one rayon task by the row-wise passes: enough work to amortise a task,
/// small enough to balance the threads.
const ROWS_PER_TASK: usize = 16;

/// A matrix inside a slice: element (i, j) is at `offset + i * row_stride + j * col_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// A contiguous row-major `rows x cols` matrix at the start of its slice.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Self { offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// One past the last element this view touches.
    fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            self.offset
        } else {
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// How a product treats its destination and its threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    /// `dst += lhs · rhs` rather than `dst = lhs · rhs`.
    pub accumulate: bool,
    /// Spread one product over rayon's threads; products that already run inside a parallel
    /// loop pass `false`.
    pub parallel: bool,
}

/// A product that overwrites its destination on the calling thread.
const SERIAL: Product = Product { accumulate: false, parallel: false };

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `how.accumulate`, with the `gemm` crate.
pub(crate) fn matmul(dst: &mut [f32], d: View, lhs: &[f32], l: View, rhs: &[f32], r: View, how: Product) {
    let Product { accumulate, parallel } = how;
    assert!(l.rows == d.rows && r.cols == d.cols && l.cols == r.rows, "matmul shapes {l:?} x {r:?} -> {d:?}");
    assert!(l.end() <= lhs.len() && r.end() <= rhs.len() && d.end() <= dst.len(), "matmul view out of bounds");
    // Distinct destination elements: the product may write them from several threads.
    assert!(d.col_stride == 1 && (d.rows <= 1 || d.row_stride >= d.cols), "matmul destination overlaps itself");
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    let parallelism = match parallel && rayon::current_num_threads() > 1 {
        true => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        false => gemm::Parallelism::None,
    };
    // SAFETY: the assertions above keep every element gemm reads or writes inside `lhs`,
    // `rhs` and `dst` respectively, the destination elements are distinct, and `dst` (a
    // `&mut`) cannot overlap the inputs.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().add(d.offset),
            d.col_stride as isize,
            d.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(l.offset),
            l.col_stride as isize,
            l.row_stride as isize,
            rhs.as_ptr().add(r.offset),
            r.col_stride as isize,
            r.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Runs a row kernel compiled for the widest vector instructions the CPU has: AVX-512
/// (x86-64-v4), else AVX2 + FMA (x86-64-v3, nearly every x86-64 CPU since 2013), else the
/// baseline the crate is built for (SSE2: 4 lanes, no fused multiply-add). Measured on one
/// thread (min of 10+, Zen 4): softmax over 96x257x257 ~7.5 ms baseline, ~3.9 ms AVX2,
/// ~3.6 ms AVX-512; bias + GELU over 4112x1536 ~4-8 ms, ~4 ms, ~2.7 ms.
macro_rules! dispatch {
    ($kernel:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (and so AVX2 and FMA), checked just above.
                return unsafe { x86_64_v4::$kernel($($arg),*) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                return unsafe { x86_64_v3::$kernel($($arg),*) };
            }
        }
        $kernel($($arg),*)
    }};
}

/// A module with the row kernels compiled for `$features` (their generic bodies are
/// `#[inline(always)]`, so they are compiled anew inside these functions).
macro_rules! row_kernels_for {
    ($module:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            #[target_feature(enable = $features)]
            pub(super) fn layer_norm_rows(x: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
                super::layer_norm_rows(x, out, weight, bias, eps)
            }

            #[target_feature(enable = $features)]
            pub(super) fn softmax_rows_generic(x: &mut [f32], width: usize) {
                super::softmax_rows_generic(x, width)
            }

            #[target_feature(enable = $features)]
            pub(super) fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
                super::bias_gelu_rows(x, bias)
            }
        }
    };
}

row_kernels_for!(x86_64_v4, "avx512f,avx2,fma");
row_kernels_for!(x86_64_v3, "avx2,fma");

/// Independent accumulators for sums and maxima: a single running sum is a chain the
/// compiler may not reorder (floating-point addition is not associative), so it would stay
/// scalar; 16 lanes become vector registers.
const LANES: usize = 16;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_of_squared_deviations(x: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// LayerNorm of each row of `x` (rows of `weight.len()` values) into `out`, on rayon's threads.
pub(crate) fn layer_norm(x: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(x.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(out, x)| dispatch!(layer_norm_rows(x, out, weight, bias, eps)));
}

#[inline(always)]
fn layer_norm_rows(x: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        let mean = sum(x) / width as f32;
        let variance = sum_of_squared_deviations(x, mean) / width as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
            *o = (v - mean) * scale * w + b;
        }
    }
}

/// `e^x` for `x <= 0` (softmax after subtracting the row maximum), Cephes' `expf` scheme:
/// `x = n ln2 + r`, a degree-5 polynomial for `e^r`, `2^n` put into the exponent bits.
/// Relative error ~1e-7. Branch-free so that loops over it vectorise.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Below this e^x leaves f32's normal range; clamping keeps 2^n representable.
    let x = x.max(-87.3);
    // Round x / ln2 to the nearest integer by adding 1.5 * 2^23 (no rounding instruction needed).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n (two's complement): build 2^n from them.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    e_r * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// Softmax of each row of `x` (rows of `width` values), in place, on the calling thread.
pub(crate) fn softmax_rows(x: &mut [f32], width: usize) {
    dispatch!(softmax_rows_generic(x, width))
}

#[inline(always)]
fn softmax_rows_generic(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = max(row);
        // Three separate passes: each one vectorises, a fused one would not (the sum).
        row.iter_mut().for_each(|v| *v = exp_nonpositive(*v - max));
        let inverse = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inverse);
    }
}

/// `erf(x)` as a rational function of x (the approximation Eigen and XLA use), absolute
/// error < 5e-7. Branch-free so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    // erf(±4) is ±1 in f32.
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// `x = gelu(x + bias)` with the exact (erf) GELU, for each row of `bias.len()` values,
/// on rayon's threads.
pub(crate) fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len() * ROWS_PER_TASK).for_each(|rows| dispatch!(bias_gelu_rows(rows, bias)));
}

#[inline(always)]
fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            let y = *v + b;
            *v = 0.5 * y * (1.0 + erf(y * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `x[row] += bias` for each row of `bias.len()` values, on rayon's threads.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_exact_mut(width) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    });
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// A linear layer `y = x W + b` with W stored `[in, out]` (transposed from PyTorch's
/// `[out, in]` once, so that the product reads it row by row).
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Linear {
    /// From PyTorch-layout `weight` [out, in] and `bias` [out], each output scaled by
    /// `scale[out]` when given (LayerScale folded in).
    fn new(weight: &Tensor, bias: &Tensor, scale: Option<&Tensor>) -> Result<Self> {
        let (weight, bias) = match scale {
            Some(s) => (weight.broadcast_mul(&s.unsqueeze(1)?)?, bias.mul(s)?),
            None => (weight.clone(), bias.clone()),
        };
        let inputs = weight.dim(1)?;
        Ok(Self { weight: to_vec(&weight.t()?.contiguous()?)?, bias: to_vec(&bias)?, inputs })
    }

    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `out = x W` for `rows` rows (no bias), or `out += x W` when `accumulate`.
    fn product(&self, x: &[f32], rows: usize, out: &mut [f32], accumulate: bool) {
        let (k, n) = (self.inputs, self.outputs());
        matmul(
            out,
            View::dense(rows, n),
            x,
            View::dense(rows, k),
            &self.weight,
            View::dense(k, n),
            Product { accumulate, parallel: true },
        );
    }
}

/// One pre-norm DINOv2 block, weights prepared for [`Block::forward`].
pub(crate) struct Block {
    norm1: (Vec<f32>, Vec<f32>),
    /// Query, key and value stacked: [D, 3D], the query part scaled by 1/sqrt(head_dim).
    qkv: Linear,
    /// The attention output projection with LayerScale 1 folded in.
    output: Linear,
    norm2: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    /// With LayerScale 2 folded in.
    fc2: Linear,
    heads: usize,
    eps: f32,
}

/// The candle tensors of one block, as [`super::dinov2`] holds them.
pub(crate) struct BlockTensors<'a> {
    pub norm1: (&'a Tensor, &'a Tensor),
    /// Stacked [3D, D] weight and [3D] bias, query part already scaled.
    pub qkv: (&'a Tensor, &'a Tensor),
    pub output: (&'a Tensor, &'a Tensor),
    pub layer_scale1: &'a Tensor,
    pub norm2: (&'a Tensor, &'a Tensor),
    pub fc1: (&'a Tensor, &'a Tensor),
    pub fc2: (&'a Tensor, &'a Tensor),
    pub layer_scale2: &'a Tensor,
    pub heads: usize,
    pub eps: f64,
}

/// Scratch buffers shared by the blocks of one forward pass.
pub(crate) struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    heads: Vec<f32>,
    context: Vec<f32>,
    hidden: Vec<f32>,
}

impl Scratch {
    pub fn new() -> Self {
        Self { normed: Vec::new(), qkv: Vec::new(), heads: Vec::new(), context: Vec::new(), hidden: Vec::new() }
    }
}

fn resize(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

impl Block {
    pub fn new(t: BlockTensors) -> Result<Self> {
        let pair = |(w, b): (&Tensor, &Tensor)| -> Result<(Vec<f32>, Vec<f32>)> { Ok((to_vec(w)?, to_vec(b)?)) };
        Ok(Self {
            norm1: pair(t.norm1)?,
            qkv: Linear::new(t.qkv.0, t.qkv.1, None)?,
            output: Linear::new(t.output.0, t.output.1, Some(t.layer_scale1))?,
            norm2: pair(t.norm2)?,
            fc1: Linear::new(t.fc1.0, t.fc1.1, None)?,
            fc2: Linear::new(t.fc2.0, t.fc2.1, Some(t.layer_scale2))?,
            heads: t.heads,
            eps: t.eps as f32,
        })
    }

    /// Updates `x` ([images * tokens, D] row-major) in place.
    pub fn forward(&self, x: &mut [f32], images: usize, tokens: usize, scratch: &mut Scratch) {
        let d = self.norm1.0.len();
        let rows = images * tokens;
        debug_assert_eq!(x.len(), rows * d);

        // Attention: x += LayerScale1 * (attention(norm1(x)) Wo + bo)
        let normed = resize(&mut scratch.normed, rows * d);
        layer_norm(x, normed, &self.norm1.0, &self.norm1.1, self.eps);
        let qkv = resize(&mut scratch.qkv, rows * 3 * d);
        self.qkv.product(normed, rows, qkv, false);
        let heads = resize(&mut scratch.heads, rows * d);
        attention(qkv, &self.qkv.bias, heads, images, tokens, self.heads, d);
        let context = resize(&mut scratch.context, rows * d);
        merge_heads(heads, context, images, tokens, self.heads, d);
        add_rows(x, &self.output.bias);
        self.output.product(context, rows, x, true);

        // MLP: x += LayerScale2 * (gelu(norm2(x) W1 + b1) W2 + b2)
        let normed = resize(&mut scratch.normed, rows * d);
        layer_norm(x, normed, &self.norm2.0, &self.norm2.1, self.eps);
        let hidden = resize(&mut scratch.hidden, rows * self.fc1.outputs());
        self.fc1.product(normed, rows, hidden, false);
        bias_gelu(hidden, &self.fc1.bias);
        add_rows(x, &self.fc2.bias);
        self.fc2.product(hidden, rows, x, true);
    }
}

/// The patch embedding: a convolution with stride = kernel = p, as one product per image
/// of its patches [N, C*p*p] with the weight [C*p*p, D].
pub(crate) struct PatchEmbedding {
    /// [C*p*p, D]
    weight: Vec<f32>,
    bias: Vec<f32>,
    cls_token: Vec<f32>,
    channels: usize,
    patch: usize,
}

impl PatchEmbedding {
    /// From the convolution weight [D, C, p, p], its bias [D] and the CLS token [1, 1, D].
    pub fn new(weight: &Tensor, bias: &Tensor, cls_token: &Tensor) -> Result<Self> {
        let (d, channels, patch, _) = weight.dims4()?;
        let weight = weight.reshape((d, channels * patch * patch))?.t()?.contiguous()?;
        Ok(Self { weight: to_vec(&weight)?, bias: to_vec(bias)?, cls_token: to_vec(cls_token)?, channels, patch })
    }

    /// `images` [B, C, H, W] (H, W multiples of p) and `position` [1 + N, D] -> tokens
    /// [B * (1 + N), D]: CLS first, then the patches row by row, position embeddings added.
    fn forward(&self, images: &[f32], height: usize, width: usize, position: &[f32]) -> Vec<f32> {
        let (c, p, d) = (self.channels, self.patch, self.bias.len());
        let (rows, cols) = (height / p, width / p);
        let (patches, k, tokens) = (rows * cols, c * p * p, 1 + rows * cols);
        let count = images.len() / (c * height * width);
        let mut x = vec![0.0f32; count * tokens * d];
        // With fewer images than threads, each product is spread over the threads instead.
        let parallel = count < rayon::current_num_threads();
        x.par_chunks_mut(tokens * d).zip(images.par_chunks(c * height * width)).for_each_init(
            Vec::new,
            |cut, (x, image)| {
                // [C, H, W] -> [N, C*p*p]: patch (r, q) holds rows r*p.. and columns q*p.. of each channel.
                cut.resize(patches * k, 0.0);
                for (index, patch) in cut.chunks_exact_mut(k).enumerate() {
                    let (r, q) = (index / cols, index % cols);
                    for (line, values) in patch.chunks_exact_mut(p).enumerate() {
                        let (channel, i) = (line / p, line % p);
                        let start = channel * height * width + (r * p + i) * width + q * p;
                        values.copy_from_slice(&image[start..start + p]);
                    }
                }
                // Start from the position embeddings (+ CLS token / + bias), then add the product.
                for ((x, position), cls) in x[..d].iter_mut().zip(&position[..d]).zip(&self.cls_token) {
                    *x = position + cls;
                }
                for (x, position) in x[d..].chunks_exact_mut(d).zip(position[d..].chunks_exact(d)) {
                    for ((x, position), bias) in x.iter_mut().zip(position).zip(&self.bias) {
                        *x = position + bias;
                    }
                }
                let dst = View { offset: d, ..View::dense(patches, d) };
                matmul(
                    x,
                    dst,
                    cut,
                    View::dense(patches, k),
                    &self.weight,
                    View::dense(k, d),
                    Product { accumulate: true, parallel },
                );
            },
        );
        x
    }
}

/// The whole backbone after the position-embedding resize: patch embedding, blocks, final
/// LayerNorm.
pub(crate) struct Backbone {
    pub embedding: PatchEmbedding,
    pub blocks: Vec<Block>,
    pub norm: (Vec<f32>, Vec<f32>),
    pub eps: f32,
}

impl Backbone {
    pub fn new(embedding: PatchEmbedding, blocks: Vec<Block>, norm: (&Tensor, &Tensor), eps: f64) -> Result<Self> {
        Ok(Self { embedding, blocks, norm: (to_vec(norm.0)?, to_vec(norm.1)?), eps: eps as f32 })
    }

    /// `images` [B, C, H, W] (f32, CPU; H and W multiples of the patch size, checked by the
    /// caller) and the position embeddings for that grid [1, 1 + N, D] -> the tokens at
    /// each of `taps` (ascending by depth, at most the block count), each [B, 1 + N, D].
    pub fn forward_taps(&self, images: &Tensor, position: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        let (count, _, height, width) = images.dims4()?;
        let (_, tokens, d) = position.dims3()?;
        let mut x = self.embedding.forward(&to_vec(images)?, height, width, &to_vec(position)?);
        let mut scratch = Scratch::new();
        let mut outputs = Vec::with_capacity(taps.len());
        let last = taps.iter().map(Tap::depth).max().unwrap_or(0).min(self.blocks.len());
        for done in 0..=last {
            if done > 0 {
                self.blocks[done - 1].forward(&mut x, count, tokens, &mut scratch);
            }
            for tap in taps.iter().filter(|t| t.depth() == done) {
                let out = match tap {
                    Tap::Output(_) => {
                        let mut out = vec![0.0; x.len()];
                        layer_norm(&x, &mut out, &self.norm.0, &self.norm.1, self.eps);
                        out
                    }
                    Tap::Input(_) => x.clone(),
                };
                outputs.push(Tensor::from_vec(out, (count, tokens, d), images.device())?);
            }
        }
        Ok(outputs)
    }
}

/// Scaled dot-product attention for every (image, head) in parallel. `qkv` is
/// [images * tokens, 3D] without its `bias` [3D] (query part already scaled); writes each
/// head's context into `out` as [images, heads, tokens, head_dim].
fn attention(qkv: &[f32], bias: &[f32], out: &mut [f32], images: usize, tokens: usize, heads: usize, d: usize) {
    let head_dim = d / heads;
    debug_assert_eq!(qkv.len(), images * tokens * 3 * d);
    out.par_chunks_mut(tokens * head_dim).enumerate().for_each_init(
        || (vec![0.0f32; 3 * tokens * head_dim], vec![0.0f32; tokens * tokens]),
        |(gathered, scores), (index, context)| {
            let (image, head) = (index / heads, index % heads);
            // This head's query, key and value, each [tokens, head_dim], made contiguous with
            // their bias added on the way: the products then read unit-stride rows (measured
            // ~20% faster for q·kᵀ than reading them strided out of `qkv`), and the QKV
            // product needs no bias pass over its whole output.
            let (q, rest) = gathered.split_at_mut(tokens * head_dim);
            let (k, v) = rest.split_at_mut(tokens * head_dim);
            let rows = qkv[image * tokens * 3 * d..][..tokens * 3 * d].chunks_exact(3 * d);
            for (t, row) in rows.enumerate() {
                for (part, dst) in [&mut *q, &mut *k, &mut *v].into_iter().enumerate() {
                    let at = part * d + head * head_dim;
                    let (src, b) = (&row[at..at + head_dim], &bias[at..at + head_dim]);
                    for ((dst, &s), &b) in dst[t * head_dim..][..head_dim].iter_mut().zip(src).zip(b) {
                        *dst = s + b;
                    }
                }
            }
            let head_view = View::dense(tokens, head_dim);
            matmul(scores, View::dense(tokens, tokens), q, head_view, k, head_view.t(), SERIAL);
            softmax_rows(scores, tokens);
            matmul(context, head_view, scores, View::dense(tokens, tokens), v, head_view, SERIAL);
        },
    );
}

/// [images, heads, tokens, head_dim] -> [images, tokens, heads * head_dim], image by image
/// on rayon's threads.
fn merge_heads(heads: &[f32], out: &mut [f32], images: usize, tokens: usize, head_count: usize, d: usize) {
    let head_dim = d / head_count;
    debug_assert_eq!(out.len(), images * tokens * d);
    out.par_chunks_mut(tokens * d).zip(heads.par_chunks(tokens * d)).for_each(|(out, heads)| {
        for (h, head) in heads.chunks_exact(tokens * head_dim).enumerate() {
            for (t, values) in head.chunks_exact(head_dim).enumerate() {
                out[t * d + h * head_dim..][..head_dim].copy_from_slice(values);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device};

    use super::*;

    fn random(shape: &[usize], scale: f64) -> Tensor {
        (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * scale).unwrap()
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn exp_matches_the_standard_library() {
        let mut worst = 0.0f32;
        for i in 0..=100_000 {
            let x = -87.3 * i as f32 / 100_000.0;
            let (fast, exact) = (exp_nonpositive(x), (x as f64).exp());
            worst = worst.max(((fast as f64 - exact) / exact).abs() as f32);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) >= 0.0 && exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn gelu_matches_candle() {
        let x = random(&[7, 300], 3.0);
        let bias = random(&[300], 1.0);
        let want = to_vec(&x.broadcast_add(&bias).unwrap().gelu_erf().unwrap()).unwrap();
        let mut got = to_vec(&x).unwrap();
        bias_gelu(&mut got, &to_vec(&bias).unwrap());
        assert!(max_difference(&got, &want) < 5e-6, "{}", max_difference(&got, &want));
        // Far tails: 0 and x.
        let mut tails = vec![-12.0, 12.0];
        bias_gelu(&mut tails, &[0.0, 0.0]);
        assert!(tails[0].abs() < 1e-5 && (tails[1] - 12.0).abs() < 1e-5, "{tails:?}");
    }

    #[test]
    fn softmax_matches_candle() {
        let x = random(&[5, 257], 8.0);
        let want = to_vec(&candle_nn::ops::softmax(&x, D::Minus1).unwrap()).unwrap();
        let mut got = to_vec(&x).unwrap();
        softmax_rows(&mut got, 257);
        assert!(max_difference(&got, &want) < 1e-6, "{}", max_difference(&got, &want));
    }

    /// The baseline, AVX2 and AVX-512 builds of the row kernels (those this CPU can run)
    /// agree; the tests above only see the one `dispatch!` picks. A build this CPU cannot run
    /// is named on stderr with the features it lacks.
    #[test]
    fn every_build_of_the_row_kernels_agrees() {
        let x = to_vec(&random(&[9, 257], 4.0)).unwrap();
        let (w, b) = (to_vec(&random(&[257], 1.0)).unwrap(), to_vec(&random(&[257], 1.0)).unwrap());
        // The CPU features each build needs that this CPU lacks.
        let lacking = |build: usize| -> Vec<&'static str> {
            #[cfg(target_arch = "x86_64")]
            {
                let features: &[(&str, bool)] = match build {
                    1 => &[
                        ("avx2", std::is_x86_feature_detected!("avx2")),
                        ("fma", std::is_x86_feature_detected!("fma")),
                    ],
                    _ => &[
                        ("avx512f", std::is_x86_feature_detected!("avx512f")),
                        ("avx2", std::is_x86_feature_detected!("avx2")),
                        ("fma", std::is_x86_feature_detected!("fma")),
                    ],
                };
                features.iter().filter(|(_, present)| !present).map(|(name, _)| *name).collect()
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = build;
                vec!["x86-64"]
            }
        };
        let run = |build: usize| -> Vec<f32> {
            let (mut normed, mut softmax, mut gelu) = (vec![0.0; x.len()], x.clone(), x.clone());
            match build {
                0 => {
                    layer_norm_rows(&x, &mut normed, &w, &b, 1e-6);
                    softmax_rows_generic(&mut softmax, 257);
                    bias_gelu_rows(&mut gelu, &b);
                }
                // SAFETY (both builds): only called when `lacking(build)` is empty.
                #[cfg(target_arch = "x86_64")]
                1 => unsafe {
                    x86_64_v3::layer_norm_rows(&x, &mut normed, &w, &b, 1e-6);
                    x86_64_v3::softmax_rows_generic(&mut softmax, 257);
                    x86_64_v3::bias_gelu_rows(&mut gelu, &b);
                },
                #[cfg(target_arch = "x86_64")]
                2 => unsafe {
                    x86_64_v4::layer_norm_rows(&x, &mut normed, &w, &b, 1e-6);
                    x86_64_v4::softmax_rows_generic(&mut softmax, 257);
                    x86_64_v4::bias_gelu_rows(&mut gelu, &b);
                },
                _ => unreachable!("build {build} exists only on x86-64"),
            }
            [normed, softmax, gelu].concat()
        };
        let baseline = run(0);
        for (build, name) in [(1, "AVX2 + FMA"), (2, "AVX-512")] {
            let lacking = lacking(build);
            if lacking.is_empty() {
                let got = run(build);
                assert!(max_difference(&got, &baseline) < 1e-5, "{name}: {}", max_difference(&got, &baseline));
            } else {
                // Straight to stderr: the test harness hides what `eprintln!` prints in a passing test.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: every_build_of_the_row_kernels_agrees: the {name} row kernels against the baseline: \
                     this CPU lacks {}",
                    lacking.join(", ")
                );
            }
        }
    }

    #[test]
    fn layer_norm_matches_candle() {
        let x = (random(&[40, 24], 2.0) + 3.0).unwrap();
        let (w, b) = (random(&[24], 1.0), random(&[24], 1.0));
        let want = to_vec(&candle_nn::ops::layer_norm(&x, &w, &b, 1e-6).unwrap()).unwrap();
        let mut got = vec![0.0; 40 * 24];
        layer_norm(&to_vec(&x).unwrap(), &mut got, &to_vec(&w).unwrap(), &to_vec(&b).unwrap(), 1e-6);
        assert!(max_difference(&got, &want) < 1e-5, "{}", max_difference(&got, &want));
    }

    #[test]
    fn matmul_reads_strided_views_and_accumulates() {
        let (a, b) = (random(&[6, 5], 1.0), random(&[4, 5], 1.0));
        let want = to_vec(&a.matmul(&b.t().unwrap()).unwrap()).unwrap();
        let (av, bv) = (to_vec(&a).unwrap(), to_vec(&b).unwrap());
        let mut got = vec![0.0; 24];
        matmul(
            &mut got,
            View::dense(6, 4),
            &av,
            View::dense(6, 5),
            &bv,
            View::dense(4, 5).t(),
            Product { accumulate: false, parallel: true },
        );
        assert!(max_difference(&got, &want) < 1e-5);
        // A 3x2 block of columns 1..3 of rows 2..5, written into a wider destination.
        let mut wide = vec![1.0; 3 * 7];
        let dst = View { offset: 2, rows: 3, cols: 2, row_stride: 7, col_stride: 1 };
        let lhs = View { offset: 2 * 5, rows: 3, cols: 5, row_stride: 5, col_stride: 1 };
        let rhs = View { offset: 5, rows: 5, cols: 2, row_stride: 1, col_stride: 5 };
        matmul(&mut wide, dst, &av, lhs, &bv, rhs, Product { accumulate: true, parallel: false });
        for i in 0..3 {
            for j in 0..2 {
                assert!((wide[i * 7 + 2 + j] - 1.0 - want[(i + 2) * 4 + j + 1]).abs() < 1e-5);
            }
        }
        assert_eq!(wide.iter().filter(|&&v| v == 1.0).count(), 3 * 7 - 6);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn matmul_refuses_a_view_past_its_slice() {
        let mut dst = vec![0.0; 4];
        matmul(&mut dst, View::dense(2, 2), &[0.0; 3], View::dense(2, 2), &[0.0; 4], View::dense(2, 2), SERIAL);
    }

    #[test]
    fn attention_matches_candle() {
        let (images, tokens, heads, head_dim) = (2, 5, 3, 4);
        let d = heads * head_dim;
        let (qkv, bias) = (random(&[images * tokens, 3 * d], 1.0), random(&[3 * d], 1.0));
        // candle: [B*T, 3D] + bias -> [3, B*H, T, hd]; softmax(q kᵀ) v -> [B, T, D]
        let parts = qkv
            .broadcast_add(&bias)
            .unwrap()
            .reshape((images, tokens, 3, heads, head_dim))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap()
            .reshape((3, images * heads, tokens, head_dim))
            .unwrap();
        let (q, k, v) = (parts.get(0).unwrap(), parts.get(1).unwrap(), parts.get(2).unwrap());
        let weights = candle_nn::ops::softmax(&q.matmul(&k.t().unwrap()).unwrap(), D::Minus1).unwrap();
        let want = weights.matmul(&v).unwrap().reshape((images, heads, tokens, head_dim)).unwrap();
        let want = to_vec(&want.transpose(1, 2).unwrap()).unwrap();

        let mut split = vec![0.0; images * tokens * d];
        attention(&to_vec(&qkv).unwrap(), &to_vec(&bias).unwrap(), &mut split, images, tokens, heads, d);
        let mut got = vec![0.0; images * tokens * d];
        merge_heads(&split, &mut got, images, tokens, heads, d);
        assert!(max_difference(&got, &want) < 1e-5, "{}", max_difference(&got, &want));
    }

    #[test]
    fn heads_merge_into_token_rows() {
        // 2 images, 3 tokens, 2 heads of 2: value = image*100 + head*10 + token + dim/10.
        let (images, tokens, heads, hd) = (2, 3, 2, 2);
        let mut split = Vec::new();
        for i in 0..images {
            for h in 0..heads {
                for t in 0..tokens {
                    for j in 0..hd {
                        split.push((i * 100 + h * 10 + t) as f32 + j as f32 / 10.0);
                    }
                }
            }
        }
        let mut merged = vec![0.0; split.len()];
        merge_heads(&split, &mut merged, images, tokens, heads, heads * hd);
        assert_eq!(&merged[..8], &[0.0, 0.1, 10.0, 10.1, 1.0, 1.1, 11.0, 11.1]);
        assert_eq!(merged[3 * 4 * 2 - 1], 112.1);
    }
}
