//! The architectures whaleid can run, and loading one from its weights: the one place that
//! knows them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::backbone::Backbone;
use super::dinov2::Dinov2;
use super::efficientnet::{EfficientNet, EfficientNetConfig};
use super::error::EmbedError;
use super::file_kind::FileKind;

/// The architectures whaleid can run, told apart by the tensor names of their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Dinov2,
    EfficientNet,
}

impl Architecture {
    /// The architecture whose stored layout these tensor names are.
    pub fn of_tensor_names<'a>(names: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut found = None;
        for name in names {
            match name {
                "embeddings.cls_token" => return Some(Architecture::Dinov2),
                "_conv_stem.weight" => found = Some(Architecture::EfficientNet),
                _ => {}
            }
        }
        found
    }
}

/// DINOv2's training resolution: the input side when nothing else says.
pub const DEFAULT_SIZE: u32 = 224;

/// The pretrained backbones whaleid can fetch, by the names the user types
/// (`--model efficientnet-lite0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownModel {
    /// DINOv2 ViT-S/14 (the default).
    #[value(name = "dinov2-vits14")]
    Dinov2Vits14,
    #[value(name = "efficientnet-lite0")]
    EfficientnetLite0,
    #[value(name = "efficientnet-lite1")]
    EfficientnetLite1,
    #[value(name = "efficientnet-lite2")]
    EfficientnetLite2,
}

impl KnownModel {
    pub const ALL: [KnownModel; 4] =
        [Self::Dinov2Vits14, Self::EfficientnetLite0, Self::EfficientnetLite1, Self::EfficientnetLite2];

    /// The name typed on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dinov2Vits14 => "dinov2-vits14",
            Self::EfficientnetLite0 => "efficientnet-lite0",
            Self::EfficientnetLite1 => "efficientnet-lite1",
            Self::EfficientnetLite2 => "efficientnet-lite2",
        }
    }

    /// `efficientnet-lite0` (or `efficientnet_lite0`) -> the model.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.replace('_', "-").to_ascii_lowercase();
        Self::ALL.into_iter().find(|m| m.label() == name || (name == "dinov2" && *m == Self::Dinov2Vits14))
    }

    /// The EfficientNet variant, where it is one.
    pub fn efficientnet(self) -> Option<EfficientNetConfig> {
        match self {
            Self::Dinov2Vits14 => None,
            Self::EfficientnetLite0 => Some(EfficientNetConfig::lite0()),
            Self::EfficientnetLite1 => Some(EfficientNetConfig::lite1()),
            Self::EfficientnetLite2 => Some(EfficientNetConfig::lite2()),
        }
    }

    /// Its weights in `models_dir`, as `whaleid models fetch` writes them.
    pub fn weights_path(self, models_dir: &Path) -> PathBuf {
        match self.efficientnet() {
            None => super::fetch::dinov2_safetensors_path(models_dir),
            Some(config) => super::efficientnet::efficientnet_safetensors_path(models_dir, &config),
        }
    }

    /// The input side it was trained at.
    pub fn default_size(self) -> u32 {
        match self.efficientnet() {
            None => DEFAULT_SIZE,
            Some(config) => config.resolution as u32,
        }
    }
}

/// The input side a backbone's weights file is used at by default: its training resolution
/// where the file is a known model's (by name), else DINOv2's.
pub fn default_size_for(weights: &Path) -> u32 {
    let stem = weights.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    KnownModel::parse(stem).map_or(DEFAULT_SIZE, KnownModel::default_size)
}

/// Loads the backbone in the safetensors file at `path`, for inference, choosing the
/// architecture from its tensor names.
pub fn load_backbone(path: &Path, device: &Device) -> Result<Arc<dyn Backbone>, EmbedError> {
    let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    FileKind::check_bytes(&bytes, path, FileKind::Backbone)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| EmbedError::Weights {
        path: path.to_path_buf(),
        source: candle_core::Error::msg(format!("not a readable safetensors file: {e}")),
    })?;
    let architecture = Architecture::of_tensor_names(metadata.tensors().keys().map(String::as_str))
        .ok_or_else(|| EmbedError::UnknownArchitecture { path: path.to_path_buf() })?;
    match architecture {
        Architecture::Dinov2 => Ok(Arc::new(Dinov2::from_safetensors_bytes(bytes, path, device)?)),
        Architecture::EfficientNet => Ok(Arc::new(EfficientNet::from_safetensors_bytes(bytes, path, device)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_told_apart_by_their_tensor_names() {
        let names = ["embeddings.cls_token", "encoder.layer.0.norm1.weight"];
        assert_eq!(Architecture::of_tensor_names(names.into_iter()), Some(Architecture::Dinov2));
        assert_eq!(Architecture::of_tensor_names(["features.0.0.weight"].into_iter()), None);
        let names = ["_bn0.weight", "_conv_stem.weight"];
        assert_eq!(Architecture::of_tensor_names(names.into_iter()), Some(Architecture::EfficientNet));
    }
}
