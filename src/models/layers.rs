//! The two building blocks of the transformer that need care: a linear layer and a
//! LayerNorm, each with a differentiable form and (for LayerNorm) a fused inference form.

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder, init};

/// Which kernels the forward pass uses.
///
/// candle's fused `layer_norm` and `softmax_last_dim` have no backward pass: gradients
/// silently stop at them. Anything that is trained must use [`Kernels::Differentiable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// LayerNorm composed from basic ops, `candle_nn::ops::softmax`: gradients flow.
    #[default]
    Differentiable,
    /// As `Differentiable`, with the matrix products in bf16 (mixed precision, for training
    /// on a GPU's tensor cores): their operands are rounded to bf16 at every forward pass and
    /// their results widened back, so weights, gradients, the residual stream, LayerNorm,
    /// softmax and the loss all stay f32.
    Bf16,
    /// candle's fused LayerNorm and last-dim softmax: inference only.
    Fused,
}

/// `a` times `b` (broadcast over leading dimensions), in bf16 under [`Kernels::Bf16`].
pub(crate) fn product(a: &Tensor, b: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Bf16 => {
            let dtype = a.dtype();
            a.to_dtype(DType::BF16)?.broadcast_matmul(&b.to_dtype(DType::BF16)?)?.to_dtype(dtype)
        }
        _ => a.broadcast_matmul(b),
    }
}

/// `y = x Wᵀ + b` with W stored as [out, in] (PyTorch layout).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

impl Linear {
    pub(crate) fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init::DEFAULT_KAIMING_NORMAL)?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Uniform { lo: -bound, up: bound })?;
        Ok(Self { weight, bias })
    }

    /// `x`: [..., in] -> [..., out]. A batched `x` meets the weight broadcast with stride 0,
    /// which candle runs as one matrix product over all rows.
    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        product(x, &self.weight.t()?, kernels)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", init::ONE)?,
            bias: vb.get_with_hints(dim, "bias", init::ZERO)?,
            eps,
        })
    }

    /// Normalises over the last dimension.
    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        match kernels {
            Kernels::Fused => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32),
            Kernels::Differentiable | Kernels::Bf16 => {
                let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
                centred
                    .broadcast_div(&(variance + self.eps)?.sqrt()?)?
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)
            }
        }
    }
}

/// Exact (erf) GELU. candle runs element-wise ops on one thread; on the fused path a large
/// CPU tensor is cut into row blocks that rayon's threads activate in parallel.
pub(crate) fn gelu_erf(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let width = x.dim(D::Minus1)?;
    let rows = x.elem_count() / width.max(1);
    if kernels != Kernels::Fused
        || !x.device().is_cpu()
        || threads < 2
        || rows < 2 * threads
        || x.elem_count() < 1 << 16
    {
        return x.gelu_erf();
    }
    let blocks = x.reshape((rows, width))?.chunk(threads, 0)?;
    let activated = blocks.par_iter().map(|block| block.gelu_erf()).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&activated, 0)?.reshape(x.shape())
}

/// Softmax over the last dimension with the chosen kernels.
pub(crate) fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Fused => candle_nn::ops::softmax_last_dim(x),
        Kernels::Differentiable | Kernels::Bf16 => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// A network `build` makes on fresh variables, randomly initialised from `seed`: built once
/// to create the variables, drawn again from the seed ([`reseed`]), built again from them.
pub fn seeded<T>(
    device: &candle_core::Device,
    seed: u64,
    build: impl Fn(candle_nn::VarBuilder) -> Result<T>,
) -> Result<T> {
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, device);
    build(vb.clone())?;
    reseed(&vars, seed)?;
    build(vb)
}

/// Draws every randomly initialised variable of `vars` again from a generator seeded with
/// `seed`, with the mean and spread it was drawn with; constants (norms, biases set to a
/// prior) stay. candle's CPU generator cannot be seeded, so this is what makes a random
/// network, or a trained one's starting point, the same from run to run.
pub fn reseed(vars: &candle_nn::VarMap, seed: u64) -> Result<()> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let data = vars.data().lock().map_err(|_| candle_core::Error::msg("the variables are poisoned"))?;
    // By name, so the draws do not depend on the map's order.
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let values = var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        if std == 0.0 {
            continue;
        }
        let normal = rand_distr::Normal::new(mean, std).map_err(candle_core::Error::wrap)?;
        let drawn: Vec<f32> = (0..values.len()).map(|_| normal.sample(&mut rng) as f32).collect();
        let t = Tensor::from_vec(drawn, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
