//! The embedder's backbone: DINOv2 ViT-S/14 written in candle.
//!
//! Loaded from the safetensors file that [`crate::models::fetch_dinov2`] writes, or built on a
//! `VarMap` for training. [`Kernels`] picks differentiable or fused (inference-only) kernels.

mod config;
mod cpu;
mod dinov2;
mod layers;
mod position;

pub use config::Dinov2Config;
pub use dinov2::{Dinov2, EmbedError};
pub use layers::Kernels;
pub use position::bicubic_resize_matrix;
