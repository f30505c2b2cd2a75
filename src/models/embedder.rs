//! The embedder: backbone + head on a device, with the key under which its embeddings are
//! cached in the catalogue.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::backbone::Tap;
use super::dinov2::{Dinov2, EmbedError};
use super::head::{Head, TUNED_PREFIX};

/// Where the embedder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
}

/// The device for `choice`, and a notice for the user when CUDA was asked for but the CPU is
/// used instead (not built with `--features cuda`, or no usable GPU).
pub fn select_device(choice: DeviceChoice) -> (Device, Option<String>) {
    match choice {
        DeviceChoice::Cpu => (Device::Cpu, None),
        DeviceChoice::Cuda if !cfg!(feature = "cuda") => {
            (Device::Cpu, Some("this whaleid was built without CUDA (--features cuda); using the CPU".into()))
        }
        DeviceChoice::Cuda => match Device::new_cuda(0) {
            Ok(device) => (device, None),
            Err(e) => (Device::Cpu, Some(format!("CUDA is not usable ({e}); using the CPU"))),
        },
    }
}

/// Which embedder to build.
#[derive(Debug, Clone)]
pub struct EmbedderSpec {
    /// The backbone's safetensors (see `whaleid models fetch`).
    pub weights: PathBuf,
    /// A trained head (pooling + neck); `None` is the untrained head.
    pub neck: Option<PathBuf>,
    pub device: DeviceChoice,
    /// Input side in pixels, a multiple of 14.
    pub size: u32,
}

impl EmbedderSpec {
    pub fn new(weights: PathBuf) -> Self {
        Self { weights, neck: None, device: DeviceChoice::Cpu, size: DEFAULT_SIZE }
    }
}

/// DINOv2's training resolution.
pub const DEFAULT_SIZE: u32 = 224;

pub struct Embedder {
    /// Shared by the embedders that differ only in their head (see [`Embedder::with_head_file`]).
    backbone: Arc<Dinov2>,
    /// The backbone and input size part of the key (`dinov2_vits14@224`); a trained head's key
    /// is this, `/`, and the head's.
    backbone_key: String,
    head: Head,
    device: Device,
    size: u32,
    key: String,
    notice: Option<String>,
}

impl Embedder {
    pub fn load(spec: &EmbedderSpec) -> Result<Self, EmbedError> {
        if spec.size == 0 || !spec.size.is_multiple_of(14) {
            return Err(EmbedError::Config(format!("input size {} is not a positive multiple of 14", spec.size)));
        }
        let (device, notice) = select_device(spec.device);
        let backbone = Arc::new(Dinov2::load(&spec.weights, &device)?);
        let head = Head::untrained(&device).map_err(|source| weights_error(&spec.weights, source))?;
        let backbone_key = format!("dinov2_vits14@{}", spec.size);
        let key = format!("{backbone_key}/cls+gem");
        let untrained = Self { backbone, backbone_key, head, device, size: spec.size, key, notice };
        match &spec.neck {
            None => Ok(untrained),
            Some(path) => untrained.with_head_file(path),
        }
    }

    /// This backbone with the trained model in `path` (a `head.safetensors` written by
    /// training): its pooling and neck, and the backbone blocks it fine-tuned where it carries
    /// any (else the backbone is shared, not copied). Its key, wherever it is used: the
    /// backbone's, then `neck-` and a hash of the file, so another run means recomputing.
    pub fn with_head_file(&self, path: &Path) -> Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
        let head = Head::load(path, self.backbone.config().hidden_size, &self.device)
            .map_err(|source| weights_error(path, source))?;
        let tuned: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, &self.device)
            .map_err(|source| weights_error(path, source))?
            .into_iter()
            .filter_map(|(name, t)| name.strip_prefix(TUNED_PREFIX).map(|n| (n.to_string(), t)))
            .collect();
        let backbone = match tuned.is_empty() {
            true => self.backbone.clone(),
            false => Arc::new(self.backbone.with_weights(&tuned).map_err(|source| weights_error(path, source))?),
        };
        let key = format!("{}/neck-{}", self.backbone_key, &blake3::hash(&bytes).to_hex()[..12]);
        Ok(Self {
            backbone,
            backbone_key: self.backbone_key.clone(),
            head,
            device: self.device.clone(),
            size: self.size,
            key,
            notice: self.notice.clone(),
        })
    }

    /// An embedder from parts: a randomly initialised or freshly trained model. `key` is also
    /// the backbone part of the keys of the heads put on it with [`Embedder::with_head_file`].
    pub fn from_parts(backbone: Dinov2, head: Head, size: u32, key: String) -> Self {
        let device = backbone.device().clone();
        Self { backbone: Arc::new(backbone), backbone_key: key.clone(), head, device, size, key, notice: None }
    }

    /// A small randomly initialised embedder (unit tests, benchmarks of the plumbing): the
    /// real architecture at `config`'s size, untrained head.
    pub fn random(config: &super::Dinov2Config, size: u32) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let vars = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &device);
        let backbone = Dinov2::new(config, vb)?.with_kernels(super::Kernels::Fused);
        let head = Head::untrained(&device)?;
        Ok(Self::from_parts(backbone, head, size, format!("random-{}d@{size}", config.hidden_size)))
    }

    /// Identifies the embeddings this embedder makes: backbone, input size and head. The
    /// catalogue caches embeddings under it; another key means recomputing.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn dim(&self) -> usize {
        self.head.out_dim(self.backbone.config().hidden_size)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Set when the device asked for could not be used.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    pub fn device_label(&self) -> &'static str {
        if self.device.is_cuda() { "CUDA" } else { "CPU" }
    }

    /// Inputs from [`super::prepare`] at this embedder's size -> unit-length embeddings.
    pub fn embed(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let side = self.size as usize;
        if let Some(bad) = inputs.iter().find(|i| i.len() != 3 * side * side) {
            candle_core::bail!("an input has {} values, expected 3 x {side} x {side}", bad.len());
        }
        self.head.forward(&self.tokens(inputs)?)?.to_vec2()
    }

    /// The tokens the head reads for a batch, `[B, 1 + N, D x depths]`: the outputs of the
    /// blocks the head was trained on (the last for the untrained head), the patch grid pooled
    /// as in its training, several depths concatenated feature by feature.
    pub fn tokens(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Tensor> {
        let taps: Vec<Tap> = match self.head.blocks.as_slice() {
            [] => vec![Tap::Output(self.backbone.config().num_layers)],
            depths => depths.iter().map(|&d| Tap::Output(d)).collect(),
        };
        let side = self.size as usize / self.backbone.config().patch_size;
        let pooled = self
            .tokens_at(inputs, &taps)?
            .into_iter()
            .map(|tokens| match self.head.grid {
                Some(grid) => super::pool_tokens(&tokens, side, side, grid),
                None => Ok(tokens),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        match pooled.as_slice() {
            [one] => Ok(one.clone()),
            many => Tensor::cat(many, 2),
        }
    }

    /// The backbone's tokens at each of `taps` (ascending by depth), each `[B, 1 + N, D]`
    /// (cached for training).
    pub fn tokens_at(&self, inputs: &[Vec<f32>], taps: &[Tap]) -> candle_core::Result<Vec<Tensor>> {
        let side = self.size as usize;
        let batch = Tensor::from_vec(inputs.concat(), (inputs.len(), 3, side, side), &self.device)?;
        self.backbone.forward_taps(&batch, taps)
    }

    /// The backbone (frozen; training builds its own trainable copy from its weights).
    pub fn backbone(&self) -> &Dinov2 {
        &self.backbone
    }

    /// The backbone's block count.
    pub fn blocks(&self) -> usize {
        self.backbone.config().num_layers
    }
}

fn weights_error(path: &Path, source: candle_core::Error) -> EmbedError {
    EmbedError::Weights { path: path.to_path_buf(), source }
}
