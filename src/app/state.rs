//! What the window knows, changed only by the app as it drains worker events and runs
//! intents. Panels read it; they change it by pushing intents.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::base::ids::{IndividualId, PhotoId};
use crate::catalogue::Action;
use crate::catalogue::stats::Stats;
use crate::jobs::detect::DetectorStatus;

use super::embedding::ModelState;
use super::messages::{JobId, Notice, PanelId};
use super::records::{IndividualRow, PhotoRow};
use super::settings::Settings;

/// Whether every edit the user made is on disk.
#[derive(Debug, Default, Clone)]
pub struct SaveState {
    /// Edits sent to the catalogue worker and not yet confirmed.
    pub pending: usize,
    /// The last edit that could not be written, until a later one succeeds.
    pub error: Option<String>,
    /// What the last written edit did ("verified 1 box").
    pub last: Option<String>,
}

impl SaveState {
    pub fn is_saved(&self) -> bool {
        self.pending == 0 && self.error.is_none()
    }
}

/// The training run in progress (one at a time).
#[derive(Debug, Clone)]
pub struct TrainingState {
    pub job: JobId,
    /// The folder its head is written into.
    pub out: PathBuf,
    /// Cancel was pressed (in the Train panel or the status bar); the run stops after its step.
    pub stopping: bool,
}

#[derive(Default)]
pub struct AppState {
    /// `data_dir()` (or a test's own folder): settings and the thumbnail cache.
    pub home: PathBuf,
    /// The catalogue being opened or open.
    pub catalogue: Option<PathBuf>,
    /// Set once the catalogue worker has opened it.
    pub stats: Option<Stats>,
    pub open_error: Option<String>,
    pub rows: Vec<PhotoRow>,
    row_of: HashMap<PhotoId, usize>,
    /// Bumped whenever `rows` change, so panels can recompute what they derive from them.
    pub rows_generation: u64,
    pub library_loaded: bool,
    pub individuals: Vec<IndividualRow>,
    individual_of: HashMap<IndividualId, usize>,
    pub individuals_generation: u64,
    /// The photos the review keys walk through, in order.
    pub queue: Vec<PhotoId>,
    pub history: Vec<Action>,
    pub settings: Settings,
    pub save: SaveState,
    pub notices: Vec<Notice>,
    /// Where models run, as the status bar says it; set by the embedding side.
    pub device_label: Option<String>,
    pub active: PanelId,
    /// The embedder, the gallery and the map (see `embedding`).
    pub model: ModelState,
    pub training: Option<TrainingState>,
    /// Whether boxes can be proposed in this window (a detector backbone was given).
    pub detection_on: bool,
    /// The detection or detector-training job running (one at a time).
    pub detecting: Option<JobId>,
    /// The catalogue's detector and its true boxes, once read.
    pub detector: Option<DetectorStatus>,
}

impl AppState {
    pub fn new(home: PathBuf, settings: Settings) -> Self {
        AppState { home, settings, ..Default::default() }
    }

    pub fn set_rows(&mut self, rows: Vec<PhotoRow>) {
        self.row_of = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        self.rows = rows;
        self.rows_generation += 1;
        self.library_loaded = true;
    }

    /// Replaces the rows of `ids` with `fresh`; ids without a fresh row were deleted.
    pub fn patch_rows(&mut self, ids: &[PhotoId], fresh: Vec<PhotoRow>) {
        let mut fresh: HashMap<PhotoId, PhotoRow> = fresh.into_iter().map(|r| (r.id, r)).collect();
        let deleted: std::collections::HashSet<PhotoId> =
            ids.iter().copied().filter(|id| !fresh.contains_key(id)).collect();
        let mut reindex = !deleted.is_empty();
        for id in ids {
            if let Some(row) = fresh.remove(id) {
                match self.row_of.get(id) {
                    Some(&i) => self.rows[i] = row,
                    None => {
                        self.rows.push(row);
                        reindex = true;
                    }
                }
            }
        }
        if reindex {
            self.rows.retain(|r| !deleted.contains(&r.id));
            self.row_of = self.rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        }
        self.rows_generation += 1;
    }

    pub fn row(&self, photo: PhotoId) -> Option<&PhotoRow> {
        self.row_of.get(&photo).map(|&i| &self.rows[i])
    }

    pub fn row_mut(&mut self, photo: PhotoId) -> Option<&mut PhotoRow> {
        self.rows_generation += 1;
        self.row_of.get(&photo).map(|&i| &mut self.rows[i])
    }

    pub fn set_individuals(&mut self, individuals: Vec<IndividualRow>) {
        self.individual_of = individuals.iter().enumerate().map(|(i, r)| (r.individual.id, i)).collect();
        self.individuals = individuals;
        self.individuals_generation += 1;
    }

    pub fn individual(&self, id: IndividualId) -> Option<&IndividualRow> {
        self.individual_of.get(&id).map(|&i| &self.individuals[i])
    }

    /// Finds an individual by its code (exactly, ignoring case) or else by a unique part of
    /// its code or name.
    pub fn find_individual(&self, text: &str) -> Result<&IndividualRow, String> {
        let wanted = text.trim().to_lowercase();
        if wanted.is_empty() {
            return Err("type an individual's code or name".into());
        }
        if let Some(exact) = self.individuals.iter().find(|i| i.individual.code.to_lowercase() == wanted) {
            return Ok(exact);
        }
        let matches: Vec<&IndividualRow> = self
            .individuals
            .iter()
            .filter(|i| {
                i.individual.code.to_lowercase().contains(&wanted) || i.individual.name.to_lowercase().contains(&wanted)
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no individual matches \"{}\"", text.trim())),
            many => Err(format!(
                "\"{}\" matches {} individuals ({}{}); type more of the code",
                text.trim(),
                many.len(),
                many.iter().take(4).map(|i| i.individual.code.as_str()).collect::<Vec<_>>().join(", "),
                if many.len() > 4 { ", ..." } else { "" }
            )),
        }
    }

    pub fn clear_catalogue(&mut self) {
        self.stats = None;
        self.open_error = None;
        self.set_rows(Vec::new());
        self.library_loaded = false;
        self.set_individuals(Vec::new());
        self.queue.clear();
        self.history.clear();
        self.model.gallery = None;
        self.model.generation += 1;
        self.detector = None;
    }
}
