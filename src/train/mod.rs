//! Training the embedding head: metric-learning losses and batch samplers.

pub mod sampler;

pub use sampler::{BatchSampler, PkSampler, SamplerError, ShuffledSampler};
