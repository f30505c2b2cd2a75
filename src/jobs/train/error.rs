//! What can go wrong in training.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Loss(#[from] super::loss::LossError),
    #[error(transparent)]
    Sampler(#[from] super::sampler::SamplerError),
}
