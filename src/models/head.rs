//! What turns the backbone's tokens into an identity embedding: pooling (the CLS token beside
//! a generalised-mean over the patch tokens) and the neck (BatchNorm + Linear to 512-d), the
//! result L2-normalised.
//!
//! Until a neck has been trained on the biologist's catalogue, the neck is the identity: the
//! pooled 768-d vector itself, normalised. Search is exact cosine over any dimension, so no
//! projection is needed for it to work, and an unfitted PCA would only make embeddings depend
//! on whatever the catalogue held when it was fitted.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::backbone::{Backbone, Features};
use super::file_kind::FileKind;

/// Initial GeM exponent (Radenović et al.); trainable.
pub const GEM_P: f64 = 3.0;
/// Tokens are clamped here before the power: GeM is defined for positive activations.
const GEM_EPS: f64 = 1e-6;
const BN_EPS: f64 = 1e-5;

/// CLS + GeM pooling: `[B, 1 + N, D]` -> `[B, 2D]`.
#[derive(Debug, Clone)]
pub struct Pooling {
    /// `[1]`
    p: Tensor,
}

impl Pooling {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self { p: vb.get_with_hints(1, "gem_p", Init::Const(GEM_P))? })
    }

    /// How many of a pooled vector's `pooled_dim` features are the CLS token (the first).
    pub fn cls_dims(pooled_dim: usize) -> usize {
        pooled_dim / 2
    }

    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (_, n, _) = tokens.dims3()?;
        let cls = tokens.i((.., 0))?;
        let patches = tokens.narrow(1, 1, n - 1)?;
        // mean(x^p)^(1/p), written with exp/log so that p receives a gradient.
        let powered = patches.clamp(GEM_EPS, f64::MAX)?.log()?.broadcast_mul(&self.p)?.exp()?;
        let gem = powered.mean(1)?.log()?.broadcast_div(&self.p)?.exp()?;
        Tensor::cat(&[&cls, &gem], D::Minus1)
    }
}

/// The neck: `BatchNorm1d` then `Linear`, or nothing.
#[derive(Debug, Clone)]
pub enum Neck {
    Identity,
    Linear { bn: BatchNorm, weight: Tensor, bias: Tensor },
}

/// BatchNorm over the feature dimension, inference form (running statistics).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl BatchNorm {
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            running_mean: vb.get_with_hints(dim, "running_mean", Init::Const(0.0))?,
            running_var: vb.get_with_hints(dim, "running_var", Init::Const(1.0))?,
        })
    }

    /// Training form: normalised with the batch's own statistics (gradients flow through
    /// them). Returns the batch mean and (biased) variance for the running averages.
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let mean = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(0)?;
        let y =
            centred.broadcast_div(&(&var + BN_EPS)?.sqrt()?)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?;
        Ok((y, mean.squeeze(0)?.detach(), var.squeeze(0)?.detach()))
    }

    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let scale = (&self.running_var + BN_EPS)?.sqrt()?.recip()?.mul(&self.weight)?;
        x.broadcast_sub(&self.running_mean)?.broadcast_mul(&scale)?.broadcast_add(&self.bias)
    }
}

impl Neck {
    /// A BatchNorm + Linear neck from `in_dim` to `out_dim` under `vb` (`bn.*`, `linear.*`).
    pub fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        Ok(Neck::Linear {
            bn: BatchNorm::new(vb.pp("bn"), in_dim)?,
            weight: vb.pp("linear").get_with_hints(
                (out_dim, in_dim),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            bias: vb.pp("linear").get_with_hints(out_dim, "bias", Init::Uniform { lo: -bound, up: bound })?,
        })
    }

    /// `x` [B, in] -> [B, out], not yet normalised.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Neck::Identity => Ok(x.clone()),
            Neck::Linear { bn, weight, bias } => bn.forward_eval(x)?.matmul(&weight.t()?)?.broadcast_add(bias),
        }
    }

    /// Training form: batch statistics in the BatchNorm; also returns them.
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        match self {
            Neck::Identity => Ok((x.clone(), None)),
            Neck::Linear { bn, weight, bias } => {
                let (y, mean, var) = bn.forward_train(x)?;
                Ok((y.matmul(&weight.t()?)?.broadcast_add(bias)?, Some((mean, var))))
            }
        }
    }

    pub fn out_dim(&self, in_dim: usize) -> usize {
        match self {
            Neck::Identity => in_dim,
            Neck::Linear { weight, .. } => weight.dims().first().copied().unwrap_or(0),
        }
    }
}

/// Pooling + neck + L2 normalisation, as loaded for inference.
#[derive(Debug, Clone)]
pub struct Head {
    pub pooling: Pooling,
    pub neck: Neck,
    /// The backbone depths whose outputs the head reads, ascending, concatenated feature by
    /// feature (empty: the last block's). Stored in the head's file as `backbone.blocks`.
    pub blocks: Vec<usize>,
    /// The side of the grid the patch tokens are average-pooled to before the head, as the
    /// training cache stored them (`None`: not pooled). Stored as `pooling.grid`.
    pub grid: Option<usize>,
}

/// The name under which a head file records the backbone depth it reads.
pub const BLOCKS_TENSOR: &str = "backbone.blocks";
/// The name under which a head file records the patch grid it was trained on.
pub const GRID_TENSOR: &str = "pooling.grid";
/// The prefix of the backbone weights a head file carries when training fine-tuned them
/// (`backbone.weights.encoder.layer.11.mlp.fc1.weight`...); they replace the pretrained ones.
pub const TUNED_PREFIX: &str = "backbone.weights.";

impl Head {
    /// The untrained head: GeM with p = 3 and the identity neck.
    pub fn untrained(device: &Device) -> Result<Self> {
        Ok(Self {
            pooling: Pooling { p: Tensor::new(&[GEM_P as f32], device)? },
            neck: Neck::Identity,
            blocks: Vec::new(),
            grid: None,
        })
    }

    /// A trained head from a safetensors file: `pooling.gem_p`, `neck.bn.*`, `neck.linear.*`,
    /// for a backbone of `token_dim` features per token at every depth.
    pub fn load(path: &Path, token_dim: usize, device: &Device) -> Result<Self> {
        Self::read(path, device, |blocks| token_dim * blocks.len().max(1))
    }

    /// A trained head from a safetensors file (see [`Head::load`]), for `backbone`.
    pub fn load_for(path: &Path, backbone: &dyn Backbone, device: &Device) -> Result<Self> {
        Self::read(path, device, |blocks| read_width(backbone, blocks))
    }

    /// The backbone depths the head reads, ascending: those it was trained on, else the last.
    pub fn depths(&self, backbone: &dyn Backbone) -> Vec<usize> {
        match self.blocks.as_slice() {
            [] => vec![backbone.depth()],
            depths => depths.to_vec(),
        }
    }

    /// The length of the embeddings it makes from `backbone`'s features.
    pub fn embedding_dim(&self, backbone: &dyn Backbone) -> usize {
        self.neck.out_dim(2 * read_width(backbone, &self.depths(backbone)))
    }

    /// `in_width`: the width of the tokens the head reads, given the depths it was trained on.
    fn read(path: &Path, device: &Device, in_width: impl FnOnce(&[usize]) -> usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| candle_core::Error::msg(format!("{}: {e}", path.display())))?;
        FileKind::check_bytes(&bytes, path, FileKind::Head).map_err(candle_core::Error::wrap)?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        let out_dim = vb.pp("neck.linear").get_unchecked("weight")?.dims().first().copied().unwrap_or(0);
        let counts = |name: &str| -> Result<Vec<usize>> {
            if !vb.contains_tensor(name) {
                return Ok(Vec::new());
            }
            let values = vb.get_unchecked(name)?.flatten_all()?.to_vec1::<f32>()?;
            if values.is_empty() || values.iter().any(|n| *n < 1.0 || n.fract() != 0.0) {
                candle_core::bail!("{}: {name} is not a list of positive whole numbers: {values:?}", path.display());
            }
            Ok(values.iter().map(|n| *n as usize).collect())
        };
        let blocks = counts(BLOCKS_TENSOR)?;
        let grid = match counts(GRID_TENSOR)?.as_slice() {
            [] => None,
            [g] => Some(*g),
            more => candle_core::bail!("{}: {GRID_TENSOR} holds {} values, not one", path.display(), more.len()),
        };
        let head = Self::trainable(vb, in_width(&blocks), out_dim)?;
        Ok(Self { blocks, grid, ..head })
    }

    pub fn out_dim(&self, token_dim: usize) -> usize {
        self.neck.out_dim(2 * token_dim * self.blocks.len().max(1))
    }

    /// A trainable head on `vb` (`pooling.*`, `neck.*`), the layout [`Head::load`] reads.
    pub fn trainable(vb: VarBuilder, token_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            pooling: Pooling::new(vb.pp("pooling"))?,
            neck: Neck::linear(vb.pp("neck"), 2 * token_dim, out_dim)?,
            blocks: Vec::new(),
            grid: None,
        })
    }

    /// Training form of [`Head::forward`]; also returns the BatchNorm's batch statistics.
    pub fn forward_train(&self, tokens: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (x, stats) = self.neck.forward_train(&self.pooling.forward(tokens)?)?;
        Ok((l2_normalise(&x)?, stats))
    }

    /// Tokens `[B, 1 + N, D]` -> embeddings `[B, out]`, each of unit length.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let x = self.neck.forward(&self.pooling.forward(tokens)?)?;
        l2_normalise(&x)
    }
}

/// The width of the tokens a head reads from `backbone` at `depths`, concatenated feature
/// by feature (empty: the last depth).
fn read_width(backbone: &dyn Backbone, depths: &[usize]) -> usize {
    match depths {
        [] => backbone.width(backbone.depth()),
        depths => depths.iter().map(|&d| backbone.width(d)).sum(),
    }
}

/// Average-pools the grid of `features` as [`pool_tokens`] does.
pub fn pool_features(features: &Features, grid: usize) -> Result<Tensor> {
    pool_tokens(features.tokens(), features.rows(), features.cols(), grid)
}

/// Average-pools the patch grid of `tokens` `[B, 1 + R*C, D]` to `grid` x `grid` where it
/// divides evenly (else keeps it) and returns `[B, 1 + grid², D]`.
pub fn pool_tokens(tokens: &Tensor, rows: usize, cols: usize, grid: usize) -> candle_core::Result<Tensor> {
    let (b, n, d) = tokens.dims3()?;
    if n != 1 + rows * cols {
        candle_core::bail!("{n} tokens do not make a {rows} x {cols} grid and a CLS token");
    }
    if grid == 0 || !rows.is_multiple_of(grid) || !cols.is_multiple_of(grid) || (rows == grid && cols == grid) {
        return Ok(tokens.clone());
    }
    let cls = tokens.narrow(1, 0, 1)?;
    let patches = tokens.narrow(1, 1, rows * cols)?.reshape((b, grid, rows / grid, grid, cols / grid, d))?;
    let pooled = patches.mean(4)?.mean(2)?.reshape((b, grid * grid, d))?;
    Tensor::cat(&[&cls, &pooled], 1)
}

/// Rows of unit length (a zero row stays zero). The tiny term under the root keeps a zero
/// row's gradient free of 0/0 in training, and is negligible beside any real row.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_each_block_of_the_patch_grid_and_keeps_cls() -> candle_core::Result<()> {
        // 1 image, 4 x 4 patches, D = 1: patch value = its index.
        let mut values = vec![-1f32];
        values.extend((0..16).map(|i| i as f32));
        let tokens = Tensor::from_vec(values, (1, 17, 1), &Device::Cpu)?;
        let pooled = pool_tokens(&tokens, 4, 4, 2)?.flatten_all()?.to_vec1::<f32>()?;
        // Top-left block: 0, 1, 4, 5 -> 2.5.
        assert_eq!(pooled, vec![-1.0, 2.5, 4.5, 10.5, 12.5]);
        assert_eq!(pool_tokens(&tokens, 4, 4, 3)?.dims(), &[1, 17, 1], "3 does not divide 4: unchanged");
        Ok(())
    }

    #[test]
    fn gem_of_equal_tokens_is_that_value_and_cls_passes_through() -> Result<()> {
        let dev = Device::Cpu;
        let head = Head::untrained(&dev)?;
        // CLS = [1, 2], three patch tokens all [0.5, 4].
        let tokens = Tensor::new(&[[[1f32, 2.], [0.5, 4.], [0.5, 4.], [0.5, 4.]]], &dev)?;
        let pooled = head.pooling.forward(&tokens)?.to_vec2::<f32>()?;
        for (got, want) in pooled[0].iter().zip([1.0, 2.0, 0.5, 4.0]) {
            assert!((got - want).abs() < 1e-4, "{pooled:?}");
        }
        let e = head.forward(&tokens)?.to_vec2::<f32>()?;
        let norm: f32 = e[0].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn gem_lies_between_mean_and_max() -> Result<()> {
        let dev = Device::Cpu;
        let head = Head::untrained(&dev)?;
        let tokens = Tensor::new(&[[[0f32], [1.], [2.], [6.]]], &dev)?;
        let gem = head.pooling.forward(&tokens)?.to_vec2::<f32>()?[0][1];
        assert!(gem > 3.0 && gem < 6.0, "mean 3, max 6, GeM {gem}");
        Ok(())
    }
}
