//! The embedder: backbone + head on a device, with the key under which its embeddings are
//! cached in the catalogue.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::architecture::load_backbone;
use super::backbone::{Backbone, Features, Tap};
use super::dinov2::{Dinov2, Dinov2Config};
use super::error::EmbedError;
use super::file_kind::FileKind;
use super::head::{Head, TUNED_PREFIX, pool_features};
use super::layers::Kernels;

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
    /// The backbone's safetensors (see `whaleid models fetch`); its tensor names say which
    /// architecture it is.
    pub weights: PathBuf,
    /// A trained head (pooling + neck); `None` is the untrained head.
    pub neck: Option<PathBuf>,
    pub device: DeviceChoice,
    /// Input side in pixels, a multiple of the backbone's patch size (14 for DINOv2).
    pub size: u32,
}

impl EmbedderSpec {
    pub fn new(weights: PathBuf) -> Self {
        Self { weights, neck: None, device: DeviceChoice::Cpu, size: DEFAULT_SIZE }
    }
}

pub use super::architecture::DEFAULT_SIZE;

/// A backbone and a head on a device: crops in, unit-length embeddings out. It works through
/// the [`Backbone`] interface, whatever the architecture.
pub struct Embedder {
    /// Shared by the embedders that differ only in their head (see [`Embedder::with_head_file`]).
    backbone: Arc<dyn Backbone>,
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
        let (device, notice) = select_device(spec.device);
        let backbone = load_backbone(&spec.weights, &device)?;
        let multiple = backbone.input_multiple() as u32;
        if spec.size == 0 || !spec.size.is_multiple_of(multiple) {
            return Err(EmbedError::Config(format!(
                "input size {} is not a positive multiple of {multiple}",
                spec.size
            )));
        }
        let head = Head::untrained(&device).map_err(|source| weights_error(&spec.weights, source))?;
        let backbone_key = format!("{}@{}", backbone.name(), spec.size);
        let key = format!("{backbone_key}/cls+gem");
        let untrained = Self { backbone, backbone_key, head, device, size: spec.size, key, notice };
        match &spec.neck {
            None => Ok(untrained),
            Some(path) => untrained.with_head_file(path),
        }
    }

    /// This backbone with the trained model in `path` (a `head.safetensors` written by
    /// training): its pooling and neck, and the backbone weights it fine-tuned where it carries
    /// any (else the backbone is shared, not copied). Its key, wherever it is used: the
    /// backbone's, then `neck-` and a hash of the file, so another run means recomputing.
    pub fn with_head_file(&self, path: &Path) -> Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
        FileKind::check_bytes(&bytes, path, FileKind::Head)?;
        let ours = backbone_name(&self.backbone_key);
        if let Some(theirs) = head_backbone(path)
            && theirs != ours
        {
            return Err(EmbedError::Config(format!(
                "{}: a head trained on the {theirs} backbone, not on {ours}: choose that backbone, or a head trained on {ours}",
                path.display()
            )));
        }
        let head =
            Head::load_for(path, self.backbone.as_ref(), &self.device).map_err(|source| weights_error(path, source))?;
        let tuned: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, &self.device)
            .map_err(|source| weights_error(path, source))?
            .into_iter()
            .filter_map(|(name, t)| name.strip_prefix(TUNED_PREFIX).map(|n| (n.to_string(), t)))
            .collect();
        let backbone = match tuned.is_empty() {
            true => self.backbone.clone(),
            false => self.backbone.with_weights(&tuned).map_err(|source| weights_error(path, source))?,
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
    pub fn from_parts(backbone: impl Backbone, head: Head, size: u32, key: String) -> Self {
        let device = backbone.device().clone();
        Self { backbone: Arc::new(backbone), backbone_key: key.clone(), head, device, size, key, notice: None }
    }

    /// A small randomly initialised embedder (unit tests, benchmarks of the plumbing): the
    /// real architecture at `config`'s size, untrained head; the same draw every time, so a
    /// test sees the same model on every run.
    pub fn random(config: &Dinov2Config, size: u32) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let backbone = crate::models::layers::seeded(&device, 1, |vb| Dinov2::new(config, vb))?;
        let head = Head::untrained(&device)?;
        let key = format!("random-{}d@{size}", config.hidden_size);
        Ok(Self::from_parts(backbone.with_kernels(Kernels::Fused), head, size, key))
    }

    /// An untrained two-stage EfficientNet at 64 px, the same draw every time (tests and
    /// demos that need a CNN without weights on disk: its matches mean nothing).
    pub fn tiny_random_cnn() -> candle_core::Result<Self> {
        use crate::models::efficientnet::{EfficientNetConfig, seeded};
        let device = Device::Cpu;
        let backbone = seeded(&EfficientNetConfig::tiny(), &device, 2)?;
        Ok(Self::from_parts(backbone, Head::untrained(&device)?, 64, "efficientnet_tiny@64".into()))
    }

    /// An untrained two-block DINOv2 at 56 px, in milliseconds and without weights on disk
    /// (tests, benchmarks, screenshots and demos: its matches mean nothing).
    pub fn tiny_random() -> candle_core::Result<Self> {
        Self::random(&Dinov2Config::tiny(), 56)
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
        self.head.embedding_dim(self.backbone.as_ref())
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
        self.head.forward(&self.tokens(inputs)?)?.to_vec2()
    }

    /// The tokens the head reads for a batch, `[B, 1 + N, D x depths]`: the features at the
    /// depths the head was trained on (the last for the untrained head), the grid pooled as in
    /// its training, several depths concatenated feature by feature.
    pub fn tokens(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Tensor> {
        let taps: Vec<Tap> = self.head.depths(self.backbone.as_ref()).into_iter().map(Tap::Output).collect();
        let pooled = self
            .features_at(inputs, &taps)?
            .into_iter()
            .map(|features| match self.head.grid {
                Some(grid) => pool_features(&features, grid),
                None => Ok(features.into_tokens()),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        match pooled.as_slice() {
            [one] => Ok(one.clone()),
            many => Tensor::cat(many, 2),
        }
    }

    /// The backbone's features at each of `taps` (ascending by depth).
    pub fn features_at(&self, inputs: &[Vec<f32>], taps: &[Tap]) -> candle_core::Result<Vec<Features>> {
        let side = self.size as usize;
        if let Some(bad) = inputs.iter().find(|i| i.len() != 3 * side * side) {
            candle_core::bail!("an input has {} values, expected 3 x {side} x {side}", bad.len());
        }
        let batch = Tensor::from_vec(inputs.concat(), (inputs.len(), 3, side, side), &self.device)?;
        self.backbone.features(&batch, taps)
    }

    /// The backbone's tokens at each of `taps` (ascending by depth), each `[B, 1 + N, D]`
    /// (cached for training).
    pub fn tokens_at(&self, inputs: &[Vec<f32>], taps: &[Tap]) -> candle_core::Result<Vec<Tensor>> {
        Ok(self.features_at(inputs, taps)?.into_iter().map(Features::into_tokens).collect())
    }

    /// The DINOv2 network, where the backbone is one (what training fine-tunes).
    pub fn dinov2(&self) -> Option<&Dinov2> {
        self.backbone.as_any().downcast_ref()
    }

    /// The backbone (frozen; training builds its own trainable copy from its weights).
    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    /// The backbone's block (or stage) count.
    pub fn blocks(&self) -> usize {
        self.backbone.depth()
    }
}

/// `dinov2_vits14@224/neck-…` -> `dinov2_vits14`.
pub fn backbone_name(key: &str) -> &str {
    key.split(['@', '/']).next().unwrap_or(key)
}

/// The backbone a head was trained on, by name, as its card beside it says (`None` without a
/// readable card: a head copied alone is checked by its shapes only).
pub fn head_backbone(head: &Path) -> Option<String> {
    // `head.safetensors` -> `head.json` (HEAD_CARD_FILE), as for a head renamed with its card.
    let card = head.with_extension("json");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(card).ok()?).ok()?;
    card.get("backbone")?.as_str().map(|key| backbone_name(key).to_string())
}

fn weights_error(path: &Path, source: candle_core::Error) -> EmbedError {
    EmbedError::Weights { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;

    fn inputs(count: usize, side: usize) -> Vec<Vec<f32>> {
        (0..count).map(|i| (0..3 * side * side).map(|j| ((i * 7 + j) % 23) as f32 / 11.0 - 1.0).collect()).collect()
    }

    /// Through the `Backbone` interface, the embedder computes exactly what the untrained head
    /// computes on the network's own output tokens.
    #[test]
    fn embeddings_are_the_head_on_the_backbone_output_bit_for_bit() -> candle_core::Result<()> {
        let embedder = Embedder::tiny_random()?;
        let batch = inputs(3, 56);
        let images = Tensor::from_vec(batch.concat(), (3, 3, 56, 56), &Device::Cpu)?;
        let direct = Head::untrained(&Device::Cpu)?.forward(&embedder.dinov2().unwrap().forward(&images)?)?;
        assert_eq!(embedder.embed(&batch)?, direct.to_vec2::<f32>()?);
        assert_eq!(embedder.dim(), 2 * 32);
        assert_eq!(embedder.blocks(), 2);

        let features = embedder.features_at(&batch, &[Tap::Output(1), Tap::Input(2)])?;
        assert_eq!((features[0].rows(), features[0].cols(), features[0].stride()), (4, 4, 14));
        assert_eq!(embedder.tokens_at(&batch, &[Tap::Output(1)])?[0].dims(), &[3, 17, 32]);
        assert!(embedder.embed(&inputs(1, 28)).is_err(), "an input of the wrong size is refused");
        Ok(())
    }

    #[test]
    fn weights_of_an_unknown_architecture_are_refused_by_name() -> candle_core::Result<()> {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("cnn.safetensors");
        let tensors = HashMap::from([("features.0.0.weight".to_string(), Tensor::zeros(4, DType::F32, &Device::Cpu)?)]);
        candle_core::safetensors::save(&tensors, &path)?;
        let err = Embedder::load(&EmbedderSpec::new(path.clone())).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cnn.safetensors") && err.contains("not the weights of a backbone"), "{err}");

        std::fs::write(&path, b"not safetensors").map_err(candle_core::Error::wrap)?;
        let err = Embedder::load(&EmbedderSpec::new(path)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not a safetensors file"), "{err}");
        Ok(())
    }

    #[test]
    fn a_head_trained_on_another_backbone_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let head = dir.path().join("head.safetensors");
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        safetensors::serialize_to_file([("neck.linear.bias", &t)], Some(FileKind::Head.metadata()), &head).unwrap();
        std::fs::write(dir.path().join("head.json"), r#"{"backbone": "efficientnet_lite0@224/cls+gem"}"#).unwrap();
        let embedder = Embedder::tiny_random().unwrap();
        let err = embedder.with_head_file(&head).err().expect("refused").to_string();
        assert!(
            err.contains("head.safetensors") && err.contains("efficientnet_lite0") && err.contains("random-32d"),
            "{err}"
        );
        assert_eq!(head_backbone(&head).as_deref(), Some("efficientnet_lite0"));
    }
}
