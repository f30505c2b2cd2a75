//! Training once more on every individual after validation has chosen the number of epochs.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use super::checkpoint::{read_card, write_atomically};
use super::config::TrainConfig;
use super::data::Split;
use super::error::TrainError;
use super::feeder::Inputs;
use super::report::{Refit, TrainEvent, TrainReport};
use super::trainer::train_model;

/// Trains again on `all` (every individual: no validation) for the validated run's best
/// number of epochs, then puts that model in place of the validated one in `out` and notes
/// it in the card. Nothing changes when the validated run had no validation individuals (it
/// trained on all of them already), was cancelled, or when this run is cancelled.
#[allow(clippy::too_many_arguments)]
pub fn refit(
    inputs: &Inputs,
    validated: &mut TrainReport,
    all: &Split,
    backbone_key: &str,
    config: &TrainConfig,
    out: &Path,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> Result<(), TrainError> {
    if !config.refit || validated.cancelled || validated.best.closed_set.queries == 0 {
        return Ok(());
    }
    let what = Refit { individuals: all.classes.len(), crops: all.train.len(), epochs: validated.best_epoch };
    let _ = events.send(TrainEvent::Refitting(what.clone()));
    let dir = out.join("refit");
    let config = TrainConfig { epochs: what.epochs, resume: None, refit: false, ..config.clone() };
    // The refit's own events would read as a second run: only its steps are passed on.
    let (inner, receiver) = std::sync::mpsc::channel();
    let forward = {
        let events = events.clone();
        std::thread::spawn(move || {
            for e in receiver {
                if matches!(e, TrainEvent::Step { .. }) {
                    let _ = events.send(e);
                }
            }
        })
    };
    let result = train_model(inputs, all, backbone_key, &config, &dir, &inner, cancel);
    drop(inner);
    let _ = forward.join();
    let report = result?;
    if !report.cancelled {
        let mut card = read_card(out)?;
        card["refit"] = serde_json::to_value(&what).map_err(|e| TrainError::Data(e.to_string()))?;
        let json = serde_json::to_vec_pretty(&card).map_err(|e| TrainError::Data(e.to_string()))?;
        std::fs::rename(&report.checkpoint, &validated.checkpoint)
            .map_err(|source| TrainError::Io { path: validated.checkpoint.clone(), source })?;
        write_atomically(&validated.card, &json)?;
        validated.refit = Some(what);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
