//! What a run leaves in its output folder: the model file the embedder loads, every
//! variable for resuming, and the JSON card, each written atomically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Serialize;

use super::baseline::Baselines;
use super::config::TrainConfig;
use super::error::TrainError;
use super::validation::Validation;
use crate::models::FileKind;

/// File names inside the output folder.
pub const CHECKPOINT: &str = crate::models::HEAD_FILE;
pub const CARD: &str = crate::models::HEAD_CARD_FILE;
/// Every trained variable (the loss's class weights too), for resuming.
pub const STATE: &str = crate::models::TRAIN_STATE_FILE;

/// The JSON card written beside a trained model: how it was trained and how it validated
/// (not the card of the pretrained weights in `models`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainingCard<'a> {
    pub kind: &'a str,
    pub backbone: &'a str,
    pub config: &'a TrainConfig,
    pub epoch: usize,
    pub validation: &'a Validation,
    pub before_training: &'a Validation,
    pub baselines: &'a Baselines,
    /// blake3 of the training crops and their individuals.
    pub data_fingerprint: String,
    pub classes: usize,
    pub validation_individuals: &'a [String],
    pub written_at: String,
}

/// Writes every variable into the state file (for resuming), and into the model file at
/// `path` what the embedder needs: pooling, neck, the tuned backbone weights (names starting
/// with one of `tuned`), and the depth and grid the head reads.
pub fn save_checkpoint(vars: &VarMap, config: &TrainConfig, tuned: &[String], path: &Path) -> Result<(), TrainError> {
    let state: HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter().map(|(name, v)| (name.clone(), v.as_tensor().clone())).collect()
    };
    let state_path = path.with_file_name(STATE);
    let partial = state_path.with_extension("partial");
    safetensors::serialize_to_file(&state, Some(FileKind::TrainState.metadata()), &partial)
        .map_err(|e| TrainError::Io { path: partial.clone(), source: std::io::Error::other(e) })?;
    std::fs::rename(&partial, &state_path).map_err(|source| TrainError::Io { path: state_path.clone(), source })?;
    let mut tensors: HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter()
            .filter(|(name, _)| {
                name.starts_with("pooling.") || name.starts_with("neck.") || tuned.iter().any(|p| name.starts_with(p))
            })
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .collect()
    };
    // What the embedder must feed the head: the same depths and the same pooled grid.
    if !config.blocks.is_empty() {
        let depths: Vec<f32> = config.blocks.iter().map(|&d| d as f32).collect();
        tensors.insert(crate::models::BLOCKS_TENSOR.into(), Tensor::new(depths, &Device::Cpu)?);
    }
    tensors.insert(crate::models::GRID_TENSOR.into(), Tensor::new(&[config.grid as f32], &Device::Cpu)?);
    let partial = path.with_extension("partial");
    safetensors::serialize_to_file(&tensors, Some(FileKind::Head.metadata()), &partial)
        .map_err(|e| TrainError::Io { path: partial.clone(), source: std::io::Error::other(e) })?;
    std::fs::rename(&partial, path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|source| TrainError::Io { path: partial.clone(), source })?;
    std::fs::rename(&partial, path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

/// The card a run wrote into `dir`, as JSON.
pub fn read_card(dir: &Path) -> Result<serde_json::Value, TrainError> {
    let path = dir.join(CARD);
    let text = std::fs::read(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&text).map_err(|e| TrainError::Data(format!("{}: not a training card: {e}", path.display())))
}

/// Loads a run's saved variables into `vars` and returns the epoch they were saved at. The
/// run must have been on the same training data (its card's fingerprint).
pub fn load_state(vars: &VarMap, dir: &Path, fingerprint: &str) -> Result<usize, TrainError> {
    let card_path = dir.join(CARD);
    let card = read_card(dir)?;
    let (Some(epoch), Some(saved)) = (card["epoch"].as_u64(), card["data_fingerprint"].as_str()) else {
        return Err(TrainError::Data(format!("{}: no epoch or data fingerprint in it", card_path.display())));
    };
    if saved != fingerprint {
        return Err(TrainError::Data(format!(
            "{}: written for other training data (crops or labels changed since); start a new run",
            card_path.display()
        )));
    }
    let state_path = dir.join(STATE);
    let bad = |e: String| TrainError::Data(format!("{}: {e}", state_path.display()));
    let bytes = std::fs::read(&state_path).map_err(|source| TrainError::Io { path: state_path.clone(), source })?;
    FileKind::check_bytes(&bytes, &state_path, FileKind::TrainState).map_err(|e| TrainError::Data(e.to_string()))?;
    let state = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in data.iter() {
        let saved = state.get(name).ok_or_else(|| bad(format!("no {name} in it (other settings?)")))?;
        if saved.shape() != var.shape() {
            return Err(bad(format!("{name} is {:?}, this run's is {:?} (other settings?)", saved.dims(), var.dims())));
        }
        var.set(&saved.to_device(var.device())?)?;
    }
    Ok(epoch as usize)
}
