//! What every backbone gives the layers above it, whatever its architecture (a vision
//! transformer's patch tokens, a CNN's feature maps): features at chosen depths, as an
//! optional global vector beside a grid of feature vectors, and the facts that key them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::Kernels;

/// A point in the backbone to read features at, by depth: the number of blocks (a ViT) or
/// stages (a CNN) run before reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// The output of the first `n` blocks, as the architecture presents it (a ViT through its
    /// final LayerNorm, DINOv2's own intermediate-layer features; `n` = the block count is the
    /// usual output).
    Output(usize),
    /// What enters block `n` (0-based), unnormalised: the point `Dinov2::forward_tail`
    /// continues from when only the last blocks are fine-tuned.
    Input(usize),
}

impl Tap {
    pub fn depth(&self) -> usize {
        match *self {
            Tap::Output(n) | Tap::Input(n) => n,
        }
    }
}

/// Where a global vector comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// The architecture's own (a ViT's CLS token).
    Learned,
    /// The mean of the grid, for architectures without one (a CNN).
    GridMean,
}

/// A backbone's features at one depth for a batch: one global vector and a `rows` x `cols`
/// grid per image, each vector `width` wide. Stored as tokens `[B, 1 + rows*cols, width]`,
/// the global vector first and then the grid row by row, which is what the head reads.
#[derive(Debug, Clone)]
pub struct Features {
    tokens: Tensor,
    rows: usize,
    cols: usize,
    stride: usize,
    global: Global,
}

impl Features {
    /// From tokens `[B, 1 + rows*cols, D]` whose first token is the architecture's own
    /// global vector. `stride`: input pixels per grid cell.
    pub fn with_global(tokens: Tensor, rows: usize, cols: usize, stride: usize) -> Result<Self> {
        let (_, n, _) = tokens.dims3()?;
        if n != 1 + rows * cols {
            candle_core::bail!("{n} tokens do not make a {rows} x {cols} grid and a global token");
        }
        Ok(Self { tokens, rows, cols, stride, global: Global::Learned })
    }

    /// From a feature map `[B, D, rows, cols]` (a CNN stage), the grid's mean standing in for
    /// the global vector. `stride`: input pixels per grid cell.
    pub fn from_map(map: &Tensor, stride: usize) -> Result<Self> {
        let (b, d, rows, cols) = map.dims4()?;
        let grid = map.reshape((b, d, rows * cols))?.transpose(1, 2)?.contiguous()?;
        let mean = grid.mean_keepdim(1)?;
        let tokens = Tensor::cat(&[&mean, &grid], 1)?;
        Ok(Self { tokens, rows, cols, stride, global: Global::GridMean })
    }

    /// `[B, 1 + rows*cols, D]`: the global vector, then the grid row by row.
    pub fn tokens(&self) -> &Tensor {
        &self.tokens
    }

    pub fn into_tokens(self) -> Tensor {
        self.tokens
    }

    /// `[B, D]`.
    pub fn global(&self) -> Result<Tensor> {
        self.tokens.narrow(1, 0, 1)?.squeeze(1)
    }

    /// `[B, rows*cols, D]`, row by row.
    pub fn grid(&self) -> Result<Tensor> {
        self.tokens.narrow(1, 1, self.rows * self.cols)
    }

    pub fn global_kind(&self) -> Global {
        self.global
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Input pixels per grid cell along each side (a ViT's patch size, a CNN stage's total
    /// stride): where a grid cell lies in the image.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Features per vector.
    pub fn width(&self) -> Result<usize> {
        self.tokens.dim(2)
    }
}

/// A pretrained image backbone. Cheap to share between threads (`&self` forward).
pub trait Backbone: Send + Sync + 'static {
    /// Names the architecture and its weights in model keys (`dinov2_vits14`): embeddings are
    /// cached under it, so another backbone means recomputing.
    fn name(&self) -> &str;

    /// The number of blocks (or stages): the deepest [`Tap`].
    fn depth(&self) -> usize;

    /// Features per vector at `depth`.
    fn width(&self, depth: usize) -> usize;

    /// Input sides must be positive multiples of this (a ViT's patch size, a CNN's total
    /// stride).
    fn input_multiple(&self) -> usize;

    fn device(&self) -> &Device;

    /// `images` `[B, C, H, W]` (normalised) -> the features at each of `taps` (ascending by
    /// depth, at most [`Backbone::depth`]), from one pass.
    fn features(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Features>>;

    /// This backbone with some of its weights replaced (fine-tuned ones, under the names of
    /// its stored layout), frozen. Every replacement must name a weight of the same shape.
    fn with_weights(&self, replacements: &HashMap<String, Tensor>) -> Result<Arc<dyn Backbone>>;

    /// Whether it is a CNN (stages of feature maps, each with its own grid and width) rather
    /// than a ViT (blocks of tokens on one grid).
    fn is_convolutional(&self) -> bool {
        false
    }

    /// Every weight under the name of its stored layout (what `with_weights` and `trainable`
    /// take). The methods from here on are for fine-tuning; a backbone that cannot be
    /// fine-tuned keeps their defaults.
    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The same network built on `vb`'s variables (named as by `named_tensors`), running
    /// `kernels`: the copy training fine-tunes.
    fn trainable(&self, _vb: VarBuilder, _kernels: Kernels) -> Result<Arc<dyn Backbone>> {
        candle_core::bail!("the {} backbone cannot be fine-tuned; train its head alone (--mode head)", self.name())
    }

    /// Runs the blocks (stages) `from..to` on `x`, the tokens [`Tap::Input`]`(from)` gives:
    /// what [`Tap::Output`]`(to)` gives. What `last-blocks` training runs at every step.
    fn forward_tail(&self, _x: &Tensor, _from: usize, _to: usize) -> Result<Features> {
        candle_core::bail!("the {} backbone cannot be fine-tuned; train its head alone (--mode head)", self.name())
    }

    /// The names (or prefixes of names) of the weights fine-tuning trains when the head reads
    /// depth `depth` and the blocks (stages) from `from` on are tuned; with `stem`, also what
    /// comes before the first block.
    fn tuned_prefixes(&self, _from: usize, _depth: usize, _stem: bool) -> Vec<String> {
        Vec::new()
    }

    /// For callers that need the concrete network (fine-tuning it).
    fn as_any(&self) -> &dyn Any;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_map_becomes_a_grid_with_its_mean_as_the_global_vector() -> Result<()> {
        // 1 image, 2 channels, 2 x 3 cells: channel 0 = cell index, channel 1 = 10 x it.
        let values: Vec<f32> = (0..6).map(|i| i as f32).chain((0..6).map(|i| 10.0 * i as f32)).collect();
        let map = Tensor::from_vec(values, (1, 2, 2, 3), &Device::Cpu)?;
        let features = Features::from_map(&map, 32)?;
        assert_eq!((features.rows(), features.cols(), features.stride(), features.width()?), (2, 3, 32, 2));
        assert_eq!(features.global_kind(), Global::GridMean);
        assert_eq!(features.global()?.to_vec2::<f32>()?, vec![vec![2.5, 25.0]]);
        assert_eq!(features.grid()?.to_vec3::<f32>()?[0][4], vec![4.0, 40.0]);
        assert_eq!(features.tokens().dims(), &[1, 7, 2]);
        Ok(())
    }

    #[test]
    fn tokens_must_make_the_grid_they_claim() -> Result<()> {
        let tokens = Tensor::zeros((2, 5, 3), candle_core::DType::F32, &Device::Cpu)?;
        assert!(Features::with_global(tokens.clone(), 2, 2, 14).is_ok());
        assert!(Features::with_global(tokens, 2, 3, 14).is_err());
        Ok(())
    }
}
