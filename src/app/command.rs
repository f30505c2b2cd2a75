//! The messages of the app. Panels never touch the catalogue, the disk or a decoder: they
//! push `Command`s; the app runs them (edits go to the catalogue worker, long work becomes a
//! job) and workers answer with `Event`s that the next frame drains.

use std::path::PathBuf;

use crate::base::vocabulary::{BoxPx, Part, Side, Status};
use crate::catalogue::Action;
use crate::catalogue::stats::Stats;
use crate::jobs::export::ExportFormat;

use super::embedding::{GalleryData, Shared};
use super::jobs::{JobFn, JobId, JobOutcome, JobProgress};
use super::panels::PanelId;
use super::records::{Gallery, IndividualRow, PhotoDetail, PhotoRow};

/// What a panel asks for.
#[derive(Debug)]
pub enum Command {
    /// An undoable edit; persisted at once by the catalogue worker.
    Edit(CatalogueEdit),
    Undo,
    Redo,
    /// Re-read everything from the catalogue (after an import or another job changed it).
    Reload,
    Show(PanelId),
    /// Show a photo in the annotate panel.
    OpenPhoto(i64),
    /// Show an individual in the individuals panel.
    OpenIndividual(i64),
    /// The photos the review keys walk through (the library's filtered, sorted view).
    SetQueue(Vec<i64>),
    /// Keep this photo's boxes fresh (the annotate panel's photo); `None` stops.
    WatchPhoto(Option<i64>),
    /// Keep this individual's sightings fresh (the individuals panel's gallery).
    WatchGallery(Option<i64>),
    OpenCatalogue(PathBuf),
    NewCatalogue(PathBuf),
    OpenDemo,
    Import {
        source: PathBuf,
        what: ImportKind,
    },
    Export {
        format: ExportFormat,
        out: PathBuf,
    },
    /// Ask the user for a path with a file dialog, then run the command it makes.
    Pick(Pick),
    /// Ask for the path in a window of our own (when no file dialog can be shown).
    PromptPath(Pick),
    /// Start a background job; the status bar shows it with progress and a cancel button.
    Job(JobWork),
    CancelJob(JobId),
    /// What the status bar says about where models run (set by the embedding side).
    SetDeviceLabel(Option<String>),
    Notify(Notice),
    SaveSettings,
    /// (Re)load the embedder (the catalogue's active model) and bring the embeddings up to date.
    LoadEmbedder,
    /// The embedder is ready, with the active head it was built with.
    EmbedderLoaded(Box<super::embedding::LoadedModel>),
    /// No identification, and why (weights missing and not fetched, a broken head file).
    EmbedderFailed(String),
    /// Embed the crops whose embedding is missing or stale, then read the gallery again.
    EmbedCatalogue,
    LoadGallery,
    GalleryLoaded(Shared<GalleryData>),
    /// Show a crop in the identify panel, as the query.
    OpenCrop(i64),
    /// Show only these photos in the library (a selection made on the map).
    ShowPhotosInLibrary(Vec<i64>),
    /// A panel's background result (a search, a review of mistakes), handed to every panel.
    Deliver(Delivery),
}

/// Results of background work that panels started, each tagged so its panel knows it.
#[derive(Debug)]
pub enum Delivery {
    Searched(Box<super::panels::identify::Searched>),
    Mistakes(Shared<super::panels::errors::Mistakes>),
}

/// A background job as a command: `Command::job("Embed crops", move |job| { ... })`.
pub struct JobWork {
    pub name: String,
    pub work: JobFn,
}

impl std::fmt::Debug for JobWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobWork({:?})", self.name)
    }
}

impl Command {
    /// A background job that a panel can start by pushing this command.
    pub fn job(
        name: impl Into<String>,
        work: impl FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> Command {
        Command::Job(JobWork { name: name.into(), work: Box::new(work) })
    }
}

/// Undoable catalogue edits. Each becomes one action in the catalogue's history.
#[derive(Debug, Clone)]
pub enum CatalogueEdit {
    SetStatus {
        annotations: Vec<i64>,
        status: Status,
    },
    /// Every box of the photos (bulk review from the library).
    SetStatusOfPhotos {
        photos: Vec<i64>,
        status: Status,
    },
    MoveBox {
        annotation: i64,
        bbox: BoxPx,
    },
    AddBox {
        photo: i64,
        bbox: BoxPx,
        part: Part,
        species: Option<String>,
    },
    DeleteBox {
        annotation: i64,
    },
    SetPartSide {
        annotation: i64,
        part: Part,
        side: Side,
    },
    Assign {
        annotations: Vec<i64>,
        individual: i64,
    },
    /// Every box of the photos that is not rejected; a photo without one gets a whole-photo box.
    AssignPhotos {
        photos: Vec<i64>,
        individual: i64,
    },
    /// A new individual with a fresh unique code (and this name, when not empty).
    NewIndividual {
        annotations: Vec<i64>,
        name: String,
    },
    /// Makes a trained head the catalogue's model (`None`: back to the untrained head).
    SetActiveHead(Option<PathBuf>),
    Rename {
        individual: i64,
        name: String,
    },
    /// Moves every sighting of `absorbed` to `kept` and removes `absorbed`.
    Merge {
        kept: i64,
        absorbed: i64,
    },
    /// Moves the annotations to a new individual.
    Split {
        annotations: Vec<i64>,
    },
    Tag {
        photos: Vec<i64>,
        tag: String,
    },
}

/// What is being imported (the importer recognises the content; this only picks the dialog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Folder,
    Labels,
    CocoBoxes,
    YoloBoxes,
}

/// A file dialog and the command its answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    OpenCatalogue,
    NewCatalogue,
    Import(ImportKind),
    Export(ExportFormat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// A message for the user; errors stay until dismissed.
#[derive(Debug, Clone)]
pub struct Notice {
    pub level: Level,
    pub text: String,
    pub details: Vec<String>,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Self {
        Notice { level: Level::Info, text: text.into(), details: Vec::new() }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Notice { level: Level::Error, text: text.into(), details: Vec::new() }
    }
}

/// Why an edit was not written.
#[derive(Debug, Clone)]
pub enum EditFailure {
    /// The edit does not make sense (merging an individual with itself, no boxes to verify):
    /// nothing was lost, the catalogue is as it was.
    Refused(String),
    /// The catalogue could not be written (disk full, file gone): the edit is not saved.
    NotSaved(String),
}

/// What workers send back.
#[derive(Debug)]
pub enum Event {
    Opened {
        path: PathBuf,
        stats: Box<Stats>,
    },
    OpenFailed {
        path: PathBuf,
        error: String,
    },
    /// Every photo and every individual (after opening or a reload).
    Library {
        rows: Vec<PhotoRow>,
        individuals: Vec<IndividualRow>,
    },
    /// Fresh rows of the photos an edit touched; ids listed but absent were deleted.
    PhotoRows {
        ids: Vec<i64>,
        rows: Vec<PhotoRow>,
    },
    Individuals(Vec<IndividualRow>),
    /// The watched photo, or `None` when it no longer exists.
    Photo {
        id: i64,
        detail: Option<Box<PhotoDetail>>,
    },
    Gallery {
        id: i64,
        gallery: Option<Box<Gallery>>,
    },
    History(Vec<Action>),
    /// An edit was written, or not, with the reason.
    Edited {
        label: String,
        result: Result<(), EditFailure>,
    },
    /// Undo or redo: the label of the action stepped over, `None` when there was nothing to step.
    Stepped {
        undo: bool,
        label: Result<Option<String>, String>,
    },
    JobFinished {
        id: JobId,
        result: Result<JobOutcome, String>,
        cancelled: bool,
    },
    /// Any thread may ask the app to run a command (e.g. a file dialog's answer).
    Command(Command),
}
