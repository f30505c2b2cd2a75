//! The embedder: DINOv2 ViT-S/14 written in candle, pooling and neck, preprocessing, and the
//! worker that keeps a catalogue's embeddings up to date.
//!
//! Loaded from the safetensors file that [`crate::models::fetch_dinov2`] writes, or built on a
//! `VarMap` for training. [`Kernels`] picks differentiable or fused (inference-only) kernels.

mod active;
mod config;
mod cpu;
mod dinov2;
mod embedder;
mod head;
mod layers;
mod position;
mod preprocess;
mod worker;

pub use active::{ACTIVE_HEAD_SETTING, active_head, choose_head, set_active_head, spec_for};
pub use config::Dinov2Config;
pub use dinov2::{Dinov2, EmbedError, Tap};
pub use embedder::{DEFAULT_SIZE, DeviceChoice, Embedder, EmbedderSpec, select_device};
pub use head::{BLOCKS_TENSOR, BatchNorm, GEM_P, GRID_TENSOR, Head, TUNED_PREFIX, Neck, Pooling, l2_normalise, pool_tokens};
pub use layers::Kernels;
pub use position::bicubic_resize_matrix;
pub use preprocess::{IMAGENET_MEAN, IMAGENET_STD, PIXEL_BASELINE_SIDE, letterbox, pixel_vector, prepare};
pub use worker::{Crop, EmbedOptions, EmbedReport, Prepared, embed_catalogue, prepare_batch, prepare_each};
