//! The architectures whaleid can run, and loading one from its weights: the one place that
//! knows them all.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use super::backbone::Backbone;
use super::dinov2::Dinov2;
use super::error::EmbedError;

/// The architectures whaleid can run, told apart by the tensor names of their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Dinov2,
}

impl Architecture {
    /// The architecture whose stored layout these tensor names are.
    pub fn of_tensor_names<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<Self> {
        names.any(|name| name == "embeddings.cls_token").then_some(Architecture::Dinov2)
    }
}

/// Loads the backbone in the safetensors file at `path`, for inference, choosing the
/// architecture from its tensor names.
pub fn load_backbone(path: &Path, device: &Device) -> Result<Arc<dyn Backbone>, EmbedError> {
    let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| EmbedError::Weights {
        path: path.to_path_buf(),
        source: candle_core::Error::msg(format!("not a readable safetensors file: {e}")),
    })?;
    let architecture = Architecture::of_tensor_names(metadata.tensors().keys().map(String::as_str))
        .ok_or_else(|| EmbedError::UnknownArchitecture { path: path.to_path_buf() })?;
    match architecture {
        Architecture::Dinov2 => Ok(Arc::new(Dinov2::from_safetensors_bytes(bytes, path, device)?)),
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
    }
}
