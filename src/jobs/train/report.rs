//! What a run tells while it runs ([`TrainEvent`]) and what it hands back ([`TrainReport`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::baseline::Baselines;
use super::config::Mode;
use super::validation::Validation;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        train_crops: usize,
        /// Cached views trained on per crop (the crop and its augmented copies).
        views: usize,
        classes: usize,
        validation_crops: usize,
        validation_individuals: usize,
        steps_per_epoch: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        learning_rate: f64,
    },
    Epoch {
        epoch: usize,
        epochs: usize,
        loss: f64,
        validation: Validation,
        best: bool,
        eta_seconds: f64,
    },
    Finished {
        best_epoch: usize,
        best_map5: f64,
        stopped_early: bool,
        checkpoint: PathBuf,
    },
    /// The validated run is over; the model kept is being trained again on every individual
    /// (see [`TrainConfig::refit`](super::TrainConfig::refit)).
    Refitting(Refit),
}

/// A model trained again on every individual after validation chose its epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refit {
    pub individuals: usize,
    pub crops: usize,
    pub epochs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub checkpoint: PathBuf,
    /// The frozen CLS token and its LDA projection on the same split.
    pub baselines: Baselines,
    pub mode: Mode,
    /// The backbone depths trained on.
    pub blocks: Vec<usize>,
    /// When the depths were chosen: each candidate's cross-validated LDA MAP@5.
    pub depth_scores: Vec<(Vec<usize>, f64)>,
    pub card: PathBuf,
    pub best_epoch: usize,
    pub before: Validation,
    pub best: Validation,
    pub epochs_run: usize,
    pub cancelled: bool,
    /// Set when the model kept was trained again on every individual.
    pub refit: Option<Refit>,
    pub seconds: f64,
}
