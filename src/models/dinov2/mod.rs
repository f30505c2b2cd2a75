//! DINOv2 vision transformer (Oquab et al. 2023), Hugging Face `Dinov2Model` layout:
//! patch embedding, CLS token, bicubically resized position embeddings, pre-norm blocks with
//! LayerScale, final LayerNorm. Output: all tokens, CLS first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder, init};

mod config;
pub(crate) mod cpu;
mod position;
mod weights;

pub use weights::{Dinov2Weights, WeightTensor};

use super::backbone::{Backbone, Features, Tap};
use super::error::EmbedError;
use super::layers::{Kernels, LayerNorm, Linear, gelu_erf, product, softmax_last_dim};
pub use config::Dinov2Config;
pub use position::bicubic_resize_matrix;

/// The DINOv2 backbone. Cheap to share between threads (`&self` forward).
pub struct Dinov2 {
    /// Its name in model keys.
    name: String,
    config: Dinov2Config,
    kernels: Kernels,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    layernorm: LayerNorm,
    /// The weights laid out for the fused CPU kernels, prepared by the first fused forward
    /// pass on the CPU; `None` when the weights are trainable (they may change).
    cpu_backbone: OnceLock<Option<cpu::Backbone>>,
}

impl Dinov2 {
    /// Builds the backbone from `vb` (Hugging Face names without prefix). With a `VarMap`
    /// behind `vb`, missing tensors are created with the usual ViT initialisation, so the
    /// same code serves loading and training. Starts with [`Kernels::Differentiable`].
    pub fn new(config: &Dinov2Config, vb: VarBuilder) -> Result<Self> {
        if config.num_heads == 0 || !config.hidden_size.is_multiple_of(config.num_heads) {
            candle_core::bail!("hidden size {} is not divisible into {} heads", config.hidden_size, config.num_heads);
        }
        let embeddings = Embeddings::new(config, vb.pp("embeddings"))?;
        let blocks = (0..config.num_layers)
            .map(|i| Block::new(config, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let layernorm = LayerNorm::new(vb.pp("layernorm"), config.hidden_size, config.layer_norm_eps)?;
        Ok(Self {
            name: config.name(),
            config: config.clone(),
            kernels: Kernels::default(),
            embeddings,
            blocks,
            layernorm,
            cpu_backbone: OnceLock::new(),
        })
    }

    /// Loads ViT-S/14 weights written by [`crate::models::fetch_dinov2`], for inference
    /// ([`Kernels::Fused`]).
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
        Self::from_safetensors_bytes(bytes, path, device)
    }

    /// [`Dinov2::load`] from the bytes of the file at `path`.
    pub(crate) fn from_safetensors_bytes(
        bytes: Vec<u8>,
        path: &Path,
        device: &Device,
    ) -> std::result::Result<Self, EmbedError> {
        let weights_error = |source| EmbedError::Weights { path: path.to_path_buf(), source };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(weights_error)?;
        let model = Self::new(&Dinov2Config::vits14(), vb).map_err(weights_error)?;
        Ok(model.with_kernels(Kernels::Fused))
    }

    pub fn device(&self) -> &Device {
        self.embeddings.cls_token.device()
    }

    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// `images` [B, C, H, W] (normalised; H and W multiples of the patch size) ->
    /// tokens [B, 1 + (H/p)(W/p), hidden] after the final LayerNorm, CLS first, then
    /// patches row by row.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let mut out = self.forward_taps(images, &[Tap::Output(self.blocks.len())])?;
        Ok(out.remove(0))
    }

    /// The tokens at each of `taps` (by ascending depth, at most the block count), each
    /// [B, 1 + N, D], from one pass.
    pub fn forward_taps(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        if let Some(bad) = taps.iter().find(|t| t.depth() > self.blocks.len()) {
            candle_core::bail!("block {} asked for, the backbone has {}", bad.depth(), self.blocks.len());
        }
        if self.kernels == Kernels::Fused
            && images.device().is_cpu()
            && images.dtype() == DType::F32
            && let Some(backbone) = self.cpu_backbone()?
        {
            let (rows, cols) = self.embeddings.patch_grid(images, &self.config)?;
            let position = self.embeddings.position_table(rows, cols, &self.config)?;
            return backbone.forward_taps(images, &position, taps);
        }
        let mut x = self.embeddings.forward(images, &self.config, self.kernels)?;
        let mut outputs = Vec::with_capacity(taps.len());
        for done in 0..=taps.iter().map(Tap::depth).max().unwrap_or(0) {
            if done > 0 {
                x = self.blocks[done - 1].forward(&x, self.kernels)?;
            }
            for tap in taps.iter().filter(|t| t.depth() == done) {
                outputs.push(match tap {
                    Tap::Output(_) => self.layernorm.forward(&x, self.kernels)?,
                    Tap::Input(_) => x.clone(),
                });
            }
        }
        Ok(outputs)
    }

    /// Runs blocks `from..to` (0-based, `to` exclusive) on `x`, a [`Tap::Input`] at depth
    /// `from`, and applies the final LayerNorm: what [`Tap::Output`]`(to)` would give.
    /// The tail of the backbone that `last-blocks` training fine-tunes on cached inputs.
    pub fn forward_tail(&self, x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        if from > to || to > self.blocks.len() {
            candle_core::bail!("blocks {from}..{to} asked for, the backbone has {}", self.blocks.len());
        }
        let mut x = x.clone();
        for block in &self.blocks[from..to] {
            x = block.forward(&x, self.kernels)?;
        }
        self.layernorm.forward(&x, self.kernels)
    }

    /// Every weight under its Hugging Face name (the names of `Dinov2Config::tensor_shapes`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let e = &self.embeddings;
        let mut out = vec![
            ("embeddings.cls_token".to_string(), e.cls_token.clone()),
            ("embeddings.position_embeddings".to_string(), e.position_embeddings.clone()),
            ("embeddings.patch_embeddings.projection.weight".to_string(), e.patch_weight.clone()),
            ("embeddings.patch_embeddings.projection.bias".to_string(), e.patch_bias.clone()),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let a = &b.attention;
            let linears = [
                ("attention.attention.query", &a.query),
                ("attention.attention.key", &a.key),
                ("attention.attention.value", &a.value),
                ("attention.output.dense", &a.output),
                ("mlp.fc1", &b.fc1),
                ("mlp.fc2", &b.fc2),
            ];
            let mut push = |name: &str, t: &Tensor| out.push((format!("encoder.layer.{i}.{name}"), t.clone()));
            for (name, norm) in [("norm1", &b.norm1), ("norm2", &b.norm2)] {
                push(&format!("{name}.weight"), &norm.weight);
                push(&format!("{name}.bias"), &norm.bias);
            }
            for (name, l) in linears {
                push(&format!("{name}.weight"), &l.weight);
                push(&format!("{name}.bias"), &l.bias);
            }
            push("layer_scale1.lambda1", &b.layer_scale1);
            push("layer_scale2.lambda1", &b.layer_scale2);
        }
        out.push(("layernorm.weight".to_string(), self.layernorm.weight.clone()));
        out.push(("layernorm.bias".to_string(), self.layernorm.bias.clone()));
        out
    }

    /// This backbone with some of its weights replaced (fine-tuned blocks), as frozen
    /// weights with the same kernels. Every replacement must name a weight of the same shape.
    pub fn with_weights(&self, replacements: &HashMap<String, Tensor>) -> Result<Self> {
        let mut tensors: HashMap<String, Tensor> = self.named_tensors().into_iter().collect();
        for (name, t) in replacements {
            match tensors.get(name) {
                Some(old) if old.shape() == t.shape() => {
                    tensors.insert(name.clone(), t.to_device(self.device())?.to_dtype(DType::F32)?.detach());
                }
                Some(old) => candle_core::bail!("{name} is {:?}, the backbone's is {:?}", t.dims(), old.dims()),
                None => candle_core::bail!("the backbone has no weight {name}"),
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, self.device());
        Ok(Self::new(&self.config, vb)?.with_kernels(self.kernels))
    }
}

impl Dinov2 {
    /// The fused CPU kernels' weights, prepared once; `None` for trainable weights.
    fn cpu_backbone(&self) -> Result<Option<&cpu::Backbone>> {
        if let Some(prepared) = self.cpu_backbone.get() {
            return Ok(prepared.as_ref());
        }
        let e = &self.embeddings;
        let trainable = [&e.cls_token, &e.position_embeddings, &e.patch_weight, &e.patch_bias]
            .iter()
            .chain([&self.layernorm.weight, &self.layernorm.bias].iter())
            .any(|t| t.track_op())
            || self.blocks.iter().any(Block::trainable);
        let prepared = match trainable {
            true => None,
            false => Some(cpu::Backbone::new(
                cpu::PatchEmbedding::new(&e.patch_weight, &e.patch_bias, &e.cls_token)?,
                self.blocks.iter().map(|b| b.cpu_block(&self.config)).collect::<Result<Vec<_>>>()?,
                (&self.layernorm.weight, &self.layernorm.bias),
                self.config.layer_norm_eps,
            )?),
        };
        // Two threads may race to prepare it; either result is the same.
        let _ = self.cpu_backbone.set(prepared);
        Ok(self.cpu_backbone.get().and_then(Option::as_ref))
    }
}

impl Backbone for Dinov2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn depth(&self) -> usize {
        self.blocks.len()
    }

    fn width(&self, _depth: usize) -> usize {
        self.config.hidden_size
    }

    fn input_multiple(&self) -> usize {
        self.config.patch_size
    }

    fn device(&self) -> &Device {
        Dinov2::device(self)
    }

    fn features(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Features>> {
        let (rows, cols) = self.embeddings.patch_grid(images, &self.config)?;
        let patch = self.config.patch_size;
        self.forward_taps(images, taps)?
            .into_iter()
            .map(|tokens| Features::with_global(tokens, rows, cols, patch))
            .collect()
    }

    fn with_weights(&self, replacements: &HashMap<String, Tensor>) -> Result<std::sync::Arc<dyn Backbone>> {
        Ok(std::sync::Arc::new(Dinov2::with_weights(self, replacements)?))
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        Dinov2::named_tensors(self)
    }

    fn trainable(&self, vb: VarBuilder, kernels: Kernels) -> Result<std::sync::Arc<dyn Backbone>> {
        Ok(std::sync::Arc::new(Dinov2::new(&self.config, vb)?.with_kernels(kernels)))
    }

    fn forward_tail(&self, x: &Tensor, from: usize, to: usize) -> Result<Features> {
        let tokens = Dinov2::forward_tail(self, x, from, to)?;
        // Square crops: the patch grid is the square of what follows the CLS token.
        let side = (tokens.dim(1)?.saturating_sub(1) as f64).sqrt().round() as usize;
        Features::with_global(tokens, side, side, self.config.patch_size)
    }

    fn tuned_prefixes(&self, from: usize, depth: usize, stem: bool) -> Vec<String> {
        let mut prefixes: Vec<String> = stem.then(|| "embeddings.".to_string()).into_iter().collect();
        prefixes.extend((from..depth).map(|i| format!("encoder.layer.{i}.")));
        prefixes.push("layernorm.".into());
        prefixes
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Module for Dinov2 {
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        Dinov2::forward(self, images)
    }
}

struct Embeddings {
    cls_token: Tensor,
    /// [1, 1 + G*G, D]: CLS position first, then the G x G grid.
    position_embeddings: Tensor,
    /// Conv weight [D, C, p, p]; patches are cut out and multiplied directly, which is the
    /// same convolution (stride = kernel, no padding) without an im2col buffer.
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// Per (rows, cols) of patches: the resize matrices, and for frozen weights the resized
    /// table itself.
    position_cache: Mutex<HashMap<(usize, usize), PositionCacheEntry>>,
}

#[derive(Clone)]
struct PositionCacheEntry {
    rows: Tensor,
    cols: Tensor,
    table: Option<Tensor>,
}

impl Embeddings {
    fn new(config: &Dinov2Config, vb: VarBuilder) -> Result<Self> {
        let d = config.hidden_size;
        let p = config.patch_size;
        let grid = config.position_grid;
        let trunc_normal = Init::Randn { mean: 0.0, stdev: 0.02 };
        let fan_in = (config.in_channels * p * p) as f64;
        Ok(Self {
            cls_token: vb.get_with_hints((1, 1, d), "cls_token", trunc_normal)?,
            position_embeddings: vb.get_with_hints((1, 1 + grid * grid, d), "position_embeddings", trunc_normal)?,
            patch_weight: vb.get_with_hints(
                (d, config.in_channels, p, p),
                "patch_embeddings.projection.weight",
                init::DEFAULT_KAIMING_NORMAL,
            )?,
            patch_bias: vb.get_with_hints(
                d,
                "patch_embeddings.projection.bias",
                Init::Uniform { lo: -1.0 / fan_in.sqrt(), up: 1.0 / fan_in.sqrt() },
            )?,
            position_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `images` [B, C, H, W] and returns its grid of patches (rows, columns).
    fn patch_grid(&self, images: &Tensor, config: &Dinov2Config) -> Result<(usize, usize)> {
        let p = config.patch_size;
        match images.dims() {
            &[_, c, h, w] if c == config.in_channels && h.is_multiple_of(p) && w.is_multiple_of(p) && h * w > 0 => {
                Ok((h / p, w / p))
            }
            dims => candle_core::bail!(
                "DINOv2 expects [B, {}, H, W] with H and W positive multiples of {p}, got {dims:?}",
                config.in_channels,
            ),
        }
    }

    fn forward(&self, images: &Tensor, config: &Dinov2Config, kernels: Kernels) -> Result<Tensor> {
        let (rows, cols) = self.patch_grid(images, config)?;
        let (b, c, _, _) = images.dims4()?;
        let p = config.patch_size;
        let d = config.hidden_size;
        // [B, C, rows, p, cols, p] -> [B, rows, cols, C, p, p] -> [B, N, C*p*p]
        let patches = images.reshape((b, c, rows, p, cols, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((
            b,
            rows * cols,
            c * p * p,
        ))?;
        let projection = self.patch_weight.reshape((d, c * p * p))?;
        let patches = product(&patches, &projection.t()?, kernels)?.broadcast_add(&self.patch_bias)?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?.contiguous()?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?;
        tokens.broadcast_add(&self.position_table(rows, cols, config)?)
    }

    /// The position embeddings for a `rows` x `cols` patch grid: [1, 1 + rows*cols, D].
    fn position_table(&self, rows: usize, cols: usize, config: &Dinov2Config) -> Result<Tensor> {
        let grid = config.position_grid;
        let d = config.hidden_size;
        let table = &self.position_embeddings;
        // Trainable embeddings change between steps, so only a frozen table may be cached.
        let frozen = !table.track_op();
        let mut cache = self.position_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(PositionCacheEntry { table: Some(cached), .. }) = cache.get(&(rows, cols)) {
            return Ok(cached.clone());
        }
        let entry = match cache.get(&(rows, cols)) {
            Some(entry) => entry.clone(),
            None => {
                let device = table.device();
                let dtype = table.dtype();
                PositionCacheEntry {
                    rows: Tensor::from_vec(bicubic_resize_matrix(grid, rows), (rows, grid), device)?.to_dtype(dtype)?,
                    cols: Tensor::from_vec(bicubic_resize_matrix(grid, cols), (cols, grid), device)?.to_dtype(dtype)?,
                    table: None,
                }
            }
        };
        let resized = if (rows, cols) == (grid, grid) {
            table.clone()
        } else {
            let cls = table.narrow(1, 0, 1)?;
            let patch_grid = table.i((0, 1..))?.reshape((grid, grid * d))?;
            // Resize along rows: [rows, G] x [G, G*D] -> [rows, G, D]
            let by_rows = entry.rows.matmul(&patch_grid)?.reshape((rows, grid, d))?;
            // then along columns, one small product per row: [rows, cols, G] x [rows, G, D]
            let resized = entry.cols.broadcast_left(rows)?.matmul(&by_rows)?.reshape((1, rows * cols, d))?;
            Tensor::cat(&[&cls, &resized], 1)?
        };
        let table_to_keep = frozen.then(|| resized.clone());
        cache.insert((rows, cols), PositionCacheEntry { table: table_to_keep, ..entry });
        Ok(resized)
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    num_heads: usize,
    head_dim: usize,
    /// Query, key and value stacked into one [3D, D] weight and [3D] bias, the query part
    /// pre-multiplied by 1/sqrt(head_dim). Precomputed for frozen weights; rebuilt on every
    /// forward for trainable ones so that gradients reach the separate tensors.
    frozen_qkv: Option<(Tensor, Tensor)>,
}

impl Attention {
    fn new(config: &Dinov2Config, vb: VarBuilder) -> Result<Self> {
        let d = config.hidden_size;
        let inner = vb.pp("attention");
        let mut attention = Self {
            query: Linear::new(inner.pp("query"), d, d)?,
            key: Linear::new(inner.pp("key"), d, d)?,
            value: Linear::new(inner.pp("value"), d, d)?,
            output: Linear::new(vb.pp("output.dense"), d, d)?,
            num_heads: config.num_heads,
            head_dim: config.head_dim(),
            frozen_qkv: None,
        };
        let trainable = [&attention.query, &attention.key, &attention.value]
            .iter()
            .any(|l| l.weight.track_op() || l.bias.track_op());
        if !trainable {
            attention.frozen_qkv = Some(attention.stacked_qkv()?);
        }
        Ok(attention)
    }

    fn stacked_qkv(&self) -> Result<(Tensor, Tensor)> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let weight = Tensor::cat(&[&self.query.weight.affine(scale, 0.0)?, &self.key.weight, &self.value.weight], 0)?;
        let bias = Tensor::cat(&[&self.query.bias.affine(scale, 0.0)?, &self.key.bias, &self.value.bias], 0)?;
        Ok((weight, bias))
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.num_heads, self.head_dim);
        let (weight, bias) = match &self.frozen_qkv {
            Some(stacked) => stacked.clone(),
            None => self.stacked_qkv()?,
        };
        // [B, T, 3D] -> [3, B, H, T, hd], one copy for all three.
        let qkv = product(x, &weight.t()?, kernels)?
            .broadcast_add(&bias)?
            .reshape((b, t, 3, h, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = qkv.i(0)?.reshape((b * h, t, hd))?;
        let k = qkv.i(1)?.reshape((b * h, t, hd))?;
        let v = qkv.i(2)?.reshape((b * h, t, hd))?;
        let scores = product(&q, &k.t()?, kernels)?;
        let weights = softmax_last_dim(&scores, kernels)?;
        let context = product(&weights, &v, kernels)?.reshape((b, h, t, hd))?.transpose(1, 2)?.reshape((b, t, d))?;
        self.output.forward(&context, kernels)
    }
}

struct Block {
    norm1: LayerNorm,
    attention: Attention,
    layer_scale1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_scale2: Tensor,
}

impl Block {
    fn new(config: &Dinov2Config, vb: VarBuilder) -> Result<Self> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), d, eps)?,
            attention: Attention::new(config, vb.pp("attention"))?,
            layer_scale1: vb.get_with_hints(d, "layer_scale1.lambda1", init::ONE)?,
            norm2: LayerNorm::new(vb.pp("norm2"), d, eps)?,
            fc1: Linear::new(vb.pp("mlp.fc1"), d, config.mlp_size)?,
            fc2: Linear::new(vb.pp("mlp.fc2"), config.mlp_size, d)?,
            layer_scale2: vb.get_with_hints(d, "layer_scale2.lambda1", init::ONE)?,
        })
    }

    /// Whether any weight of the block is a training variable.
    fn trainable(&self) -> bool {
        let a = &self.attention;
        [&a.query, &a.key, &a.value, &a.output, &self.fc1, &self.fc2]
            .iter()
            .flat_map(|l| [&l.weight, &l.bias])
            .chain([&self.layer_scale1, &self.layer_scale2])
            .chain([&self.norm1.weight, &self.norm1.bias, &self.norm2.weight, &self.norm2.bias])
            .any(|t| t.track_op())
    }

    fn cpu_block(&self, config: &Dinov2Config) -> Result<cpu::Block> {
        let (qkv_weight, qkv_bias) = match &self.attention.frozen_qkv {
            Some(stacked) => stacked.clone(),
            None => self.attention.stacked_qkv()?,
        };
        cpu::Block::new(cpu::BlockTensors {
            norm1: (&self.norm1.weight, &self.norm1.bias),
            qkv: (&qkv_weight, &qkv_bias),
            output: (&self.attention.output.weight, &self.attention.output.bias),
            layer_scale1: &self.layer_scale1,
            norm2: (&self.norm2.weight, &self.norm2.bias),
            fc1: (&self.fc1.weight, &self.fc1.bias),
            fc2: (&self.fc2.weight, &self.fc2.bias),
            layer_scale2: &self.layer_scale2,
            heads: config.num_heads,
            eps: config.layer_norm_eps,
        })
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let attended = self.attention.forward(&self.norm1.forward(x, kernels)?, kernels)?;
        let x = (x + attended.broadcast_mul(&self.layer_scale1)?)?;
        let hidden = gelu_erf(&self.fc1.forward(&self.norm2.forward(&x, kernels)?, kernels)?, kernels)?;
        let x = (&x + self.fc2.forward(&hidden, kernels)?.broadcast_mul(&self.layer_scale2)?)?;
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use candle_core::D;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// A tiny backbone with random frozen weights (LayerScale included, so that folding it
    /// into the projections is checked).
    fn tiny_frozen_backbone() -> Dinov2 {
        let config = Dinov2Config::tiny();
        let device = Device::Cpu;
        let tensors: HashMap<String, Tensor> = config
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| (name, (Tensor::randn(0f32, 1.0, shape, &device).unwrap() * 0.3).unwrap()))
            .collect();
        Dinov2::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &device)).unwrap()
    }

    /// Mixed precision: the bf16 products stay close to f32, and gradients still reach every
    /// weight, in f32.
    #[test]
    fn bf16_products_stay_close_to_f32_and_every_weight_still_gets_an_f32_gradient() {
        let config = Dinov2Config::tiny();
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = Dinov2::new(&config, vb).unwrap();
        let images = Tensor::randn(0f32, 1.0, (2, 3, 28, 42), &Device::Cpu).unwrap();
        let exact = model.forward(&images).unwrap();
        let model = model.with_kernels(Kernels::Bf16);
        let mixed = model.forward(&images).unwrap();
        assert_eq!(mixed.dtype(), DType::F32);
        let cosine = (&exact * &mixed).unwrap().sum(D::Minus1).unwrap()
            / (exact.sqr().unwrap().sum(D::Minus1).unwrap() * mixed.sqr().unwrap().sum(D::Minus1).unwrap())
                .unwrap()
                .sqrt()
                .unwrap();
        let worst = cosine.unwrap().flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(worst > 0.99, "per-token cosine {worst}");
        assert!(max_diff(&exact, &mixed) > 0.0, "the products really ran in bf16");

        let grads = mixed.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vars.data().lock().unwrap();
        for (name, var) in data.iter().filter(|(n, _)| *n != "mask_token") {
            let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            assert_eq!(grad.dtype(), DType::F32, "{name}");
            let size = grad.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(size > 0.0 && size.is_finite(), "{name}: gradient {size}");
        }
    }

    #[test]
    fn fused_cpu_kernels_compute_what_the_differentiable_ones_do() {
        let mut model = tiny_frozen_backbone();
        for (batch, h, w) in [(3, 28, 42), (1, 14, 14), (2, 56, 28)] {
            let images = Tensor::randn(0f32, 1.0, (batch, 3, h, w), &Device::Cpu).unwrap();
            model.set_kernels(Kernels::Differentiable);
            let differentiable = model.forward(&images).unwrap();
            model.set_kernels(Kernels::Fused);
            let fused = model.forward(&images).unwrap();
            assert!(matches!(model.cpu_backbone.get(), Some(Some(_))), "the fused CPU kernels did not run");
            assert_eq!(fused.dims(), differentiable.dims());
            let diff = (fused - differentiable).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "batch {batch}, {h}x{w}: max difference {diff}");
        }
        // The fused path refuses what the differentiable one refuses.
        for dims in [(1, 3, 30, 42), (1, 4, 28, 28), (1, 3, 0, 28)] {
            assert!(model.forward(&Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap()).is_err(), "{dims:?}");
        }
    }

    #[test]
    fn intermediate_blocks_agree_on_both_paths_and_the_last_is_the_output() {
        let mut model = tiny_frozen_backbone();
        let blocks = model.config().num_layers;
        let images = Tensor::randn(0f32, 1.0, (2, 3, 28, 28), &Device::Cpu).unwrap();
        let taps = [Tap::Output(0), Tap::Output(1), Tap::Input(1), Tap::Output(blocks)];
        model.set_kernels(Kernels::Differentiable);
        let differentiable = model.forward_taps(&images, &taps).unwrap();
        model.set_kernels(Kernels::Fused);
        let fused = model.forward_taps(&images, &taps).unwrap();
        assert_eq!(fused.len(), 4);
        for (f, d) in fused.iter().zip(&differentiable) {
            assert!(max_diff(f, d) < 1e-4);
        }
        assert!(max_diff(&fused[3], &model.forward(&images).unwrap()) == 0.0);
        assert!(max_diff(&fused[0], &fused[1]) > 1e-3, "a block changes the tokens");
        assert!(model.forward_taps(&images, &[Tap::Output(blocks + 1)]).is_err());
        // The tail continues from a block's input to the same output.
        model.set_kernels(Kernels::Differentiable);
        let tail = model.forward_tail(&differentiable[2], 1, blocks).unwrap();
        assert!(max_diff(&tail, &differentiable[3]) < 1e-5);
    }

    #[test]
    fn named_weights_are_the_stored_layout_and_replacing_one_changes_only_it() {
        let model = tiny_frozen_backbone();
        let named = model.named_tensors();
        let shapes: Vec<(String, Vec<usize>)> = named.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
        let mut expected = model.config().tensor_shapes();
        let mut got = shapes.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        let images = Tensor::randn(0f32, 1.0, (1, 3, 28, 28), &Device::Cpu).unwrap();
        let same = model.with_weights(&HashMap::new()).unwrap();
        assert_eq!(
            same.forward(&images).unwrap().to_vec3::<f32>().unwrap(),
            model.forward(&images).unwrap().to_vec3::<f32>().unwrap()
        );
        let name = "encoder.layer.1.mlp.fc2.bias".to_string();
        let bias = named.iter().find(|(n, _)| *n == name).unwrap().1.ones_like().unwrap();
        let changed = model.with_weights(&HashMap::from([(name.clone(), bias)])).unwrap();
        let diff = (changed.forward(&images).unwrap() - model.forward(&images).unwrap()).unwrap().abs().unwrap();
        assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-3);
        let wrong = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(model.with_weights(&HashMap::from([(name, wrong)])).is_err(), "a wrong shape is refused");
        assert!(
            model
                .with_weights(&HashMap::from([(
                    "nope".to_string(),
                    Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()
                )]))
                .is_err()
        );
    }
}
