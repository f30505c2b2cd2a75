//! The messages of the app. Panels never touch the catalogue, the disk or a decoder: they
//! push `Intent`s; the app runs them (edits go to the catalogue worker, long work becomes a
//! job whose body is in `tasks`) and workers and jobs answer with `Event`s that the next frame
//! drains. Everything here sits below the panels, so that panels, jobs and the app all name
//! the same messages without naming each other.

use std::path::PathBuf;
use std::sync::Arc;

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use crate::base::vocabulary::{BoxPx, Hundredths, Part, Side, Status};
use crate::catalogue::Action;
use crate::catalogue::stats::Stats;
use crate::jobs::detect::DetectorStatus;
use crate::jobs::eval::QueryOutcome;
use crate::jobs::export::ExportFormat;
use crate::jobs::search::{Filter, SearchResult};
use crate::jobs::train::{TrainConfig, TrainEvent};

use super::embedding::{GalleryData, LoadedModel};
use super::map_picture::{MapDrawing, MapPicture};
use super::records::{CropInfo, IndividualRow, PhotoDetail, PhotoRow, SightingHistory};
use super::settings::SettingChange;

/// A panel's name, as the `WHALEID_PANEL` variable and the View menu use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PanelId(pub &'static str);

impl PanelId {
    pub const LIBRARY: PanelId = PanelId("library");
    pub const ANNOTATE: PanelId = PanelId("annotate");
    pub const INDIVIDUALS: PanelId = PanelId("individuals");
    pub const IDENTIFY: PanelId = PanelId("identify");
    pub const MAP: PanelId = PanelId("map");
    pub const ERRORS: PanelId = PanelId("errors");
    pub const TRAIN: PanelId = PanelId("train");
}

impl Default for PanelId {
    fn default() -> Self {
        PanelId::LIBRARY
    }
}

/// What a panel, a menu or a finished job asks the app to do.
#[derive(Debug)]
pub enum Intent {
    /// An undoable edit; persisted at once by the catalogue worker.
    Edit(CatalogueEdit),
    Undo,
    Redo,
    /// Re-read everything from the catalogue (after an import or another job changed it).
    Reload,
    Show(PanelId),
    /// Show a photo in the annotate panel.
    OpenPhoto(PhotoId),
    /// Show an individual in the individuals panel.
    OpenIndividual(IndividualId),
    /// The photos the review keys walk through (the library's filtered, sorted view).
    SetQueue(Vec<PhotoId>),
    /// Keep this photo's boxes fresh (the annotate panel's photo); `None` stops.
    WatchPhoto(Option<PhotoId>),
    /// Keep this individual's sightings fresh (the individuals panel); `None` stops.
    WatchSightings(Option<IndividualId>),
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
    /// Ask the user for a path with a file dialog, then run the intent it makes.
    Pick(Pick),
    /// Ask for the path in a window of our own (when no file dialog can be shown).
    PromptPath(Pick),
    CancelJob(JobId),
    Notify(Notice),
    /// Change a setting from a panel; it is written once the change is finished.
    ChangeSetting(SettingChange),
    /// Write the settings (a change is finished: a drag released, a field committed).
    SaveSettings,
    /// (Re)load the embedder (the catalogue's active model) and bring the embeddings up to date.
    LoadEmbedder,
    /// Embed the crops whose embedding is missing or stale, then read the gallery again.
    EmbedCatalogue,
    LoadGallery,
    /// Show a crop in the identify panel, as the query.
    OpenCrop(AnnotationId),
    /// Show only these photos in the library (a selection made on the map).
    ShowPhotosInLibrary(Vec<PhotoId>),
    /// Rank the gallery's individuals for one crop (Identify); answered by `Event::Searched`.
    Search(Box<SearchRequest>),
    /// Search every labelled crop against the others (Errors); answered by `Event::Reviewed`.
    ReviewLabelledCrops {
        gallery: Arc<GalleryData>,
        generation: u64,
    },
    /// Draw the points of the embedding map (Map); answered by `Event::MapDrawn`.
    DrawMap(Box<MapDrawing>),
    /// Train a head on the catalogue's labelled crops with the embedder in use; the run's
    /// progress comes as `Event::Training`.
    Train(Box<TrainConfig>),
    /// Stop the training run, keeping the model in use.
    CancelTraining,
    /// Propose boxes with the catalogue's detector (zero-shot without one) on these photos
    /// (those an import added), or on every photo that has no box.
    Detect(Option<Vec<PhotoId>>),
    /// Train the catalogue's detector on its true boxes, make it active and propose again on
    /// the photos without a reviewed box.
    RetrainDetector,
    /// Read which detector is active and how many boxes it and the catalogue have.
    ReadDetectorStatus,
}

/// Which of the query's own attributes restrict the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterChoice {
    pub species: bool,
    pub part: bool,
    pub side: bool,
}

impl Default for FilterChoice {
    fn default() -> Self {
        FilterChoice { species: true, part: true, side: false }
    }
}

impl FilterChoice {
    pub fn filter(self, crop: &CropInfo) -> Filter {
        Filter {
            species: if self.species { crop.species.clone() } else { None },
            part: self.part.then_some(crop.part),
            side: (self.side && crop.side != Side::Unknown).then_some(crop.side),
        }
    }
}

/// One crop to identify: its gallery row searched against the others under a filter.
#[derive(Debug)]
pub struct SearchRequest {
    pub gallery: Arc<GalleryData>,
    pub annotation: AnnotationId,
    pub row: usize,
    pub generation: u64,
    pub choice: FilterChoice,
    pub filter: Filter,
    /// How many individuals to rank.
    pub candidates: usize,
    pub threshold: f32,
    /// Where the threshold came from, in words.
    pub threshold_source: &'static str,
}

/// A finished search, tagged with what it was for.
#[derive(Debug, Clone)]
pub struct Searched {
    pub annotation: AnnotationId,
    pub generation: u64,
    pub choice: FilterChoice,
    pub result: SearchResult,
    /// Where the threshold came from, in words.
    pub threshold_source: &'static str,
}

/// Every labelled crop of one gallery searched against the others (leave-one-out). Which of
/// them are mistakes depends on the threshold, which the Errors panel applies as it changes.
#[derive(Debug, Default)]
pub struct Review {
    pub generation: u64,
    pub outcomes: Vec<QueryOutcome>,
    pub cancelled: bool,
}

/// A background job's number, as the status bar's Cancel names it.
pub type JobId = u64;

/// What a finished job tells the user, and what the app should do next.
#[derive(Debug)]
pub struct JobOutcome {
    pub summary: String,
    /// Lines worth reading (problems with files, skipped rows); shown on request.
    pub details: Vec<String>,
    /// How many things went wrong; the notice is shown as an error when any did.
    pub problems: usize,
    /// Housekeeping: no notice unless something went wrong.
    pub quiet: bool,
    /// Run when the job is done, e.g. `Intent::Reload` after the catalogue changed.
    pub then: Vec<Intent>,
}

impl JobOutcome {
    pub fn done(summary: impl Into<String>) -> Self {
        JobOutcome { summary: summary.into(), details: Vec::new(), problems: 0, quiet: false, then: Vec::new() }
    }

    /// Housekeeping that has nothing to say.
    pub fn silent() -> Self {
        JobOutcome::done("").quietly()
    }

    pub fn then(mut self, intent: Intent) -> Self {
        self.then.push(intent);
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn quietly(mut self) -> Self {
        self.quiet = true;
        self
    }

    pub fn with_problems(mut self, problems: usize) -> Self {
        self.problems = problems;
        self
    }
}

/// Undoable catalogue edits. Each becomes one action in the catalogue's history.
#[derive(Debug, Clone)]
pub enum CatalogueEdit {
    SetStatus {
        annotations: Vec<AnnotationId>,
        status: Status,
    },
    /// Every box of the photos (bulk review from the library).
    SetStatusOfPhotos {
        photos: Vec<PhotoId>,
        status: Status,
    },
    /// Verifies every unreviewed detector proposal of the photos that scores at least `at_least`.
    VerifyProposals {
        photos: Vec<PhotoId>,
        at_least: Hundredths,
    },
    MoveBox {
        annotation: AnnotationId,
        bbox: BoxPx,
    },
    AddBox {
        photo: PhotoId,
        bbox: BoxPx,
        part: Part,
        species: Option<String>,
    },
    DeleteBox {
        annotation: AnnotationId,
    },
    SetPartSide {
        annotation: AnnotationId,
        part: Part,
        side: Side,
    },
    Assign {
        annotations: Vec<AnnotationId>,
        individual: IndividualId,
    },
    /// Every box of the photos that is not rejected; a photo without one gets a whole-photo box.
    AssignPhotos {
        photos: Vec<PhotoId>,
        individual: IndividualId,
    },
    /// A new individual with a fresh unique code (and this name, when not empty).
    NewIndividual {
        annotations: Vec<AnnotationId>,
        name: String,
    },
    /// Makes a trained head the catalogue's model (`None`: back to the untrained head).
    SetActiveHead(Option<PathBuf>),
    /// The catalogue's backbone (with the head it had last).
    SetActiveBackbone(crate::models::KnownModel),
    Rename {
        individual: IndividualId,
        name: String,
    },
    /// Moves every sighting of `absorbed` to `kept` and removes `absorbed`.
    Merge {
        kept: IndividualId,
        absorbed: IndividualId,
    },
    /// Moves the annotations to a new individual.
    Split {
        annotations: Vec<AnnotationId>,
    },
    Tag {
        photos: Vec<PhotoId>,
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

/// A file dialog and the intent its answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    OpenCatalogue,
    NewCatalogue,
    Import(ImportKind),
    Export(ExportFormat),
}

impl Pick {
    /// What the path chosen (or typed) for this dialog becomes.
    pub fn intent(self, path: PathBuf) -> Intent {
        match self {
            Pick::OpenCatalogue => Intent::OpenCatalogue(path),
            Pick::NewCatalogue => Intent::NewCatalogue(path),
            Pick::Import(what) => Intent::Import { source: path, what },
            Pick::Export(format) => Intent::Export { format, out: path },
        }
    }
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

/// What the catalogue worker and the jobs send back.
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
        ids: Vec<PhotoId>,
        rows: Vec<PhotoRow>,
    },
    Individuals(Vec<IndividualRow>),
    /// The watched photo, or `None` when it no longer exists.
    Photo {
        id: PhotoId,
        detail: Option<Box<PhotoDetail>>,
    },
    /// The watched individual's sightings, or `None` when it no longer exists.
    Sightings {
        id: IndividualId,
        history: Option<Box<SightingHistory>>,
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
    /// The embedder is ready, with the active head it was built with.
    ModelLoaded(Box<LoadedModel>),
    /// No identification, and why (weights missing and not fetched, a broken head file),
    /// with the catalogue's backbone (when readable) and the backbones Settings can switch to.
    ModelFailed {
        why: String,
        backbone: Option<crate::models::KnownModel>,
        choices: Vec<super::embedding::BackboneChoice>,
    },
    /// The gallery read from the catalogue under the embedder's key.
    GalleryRead(Arc<GalleryData>),
    Searched(Box<Searched>),
    Reviewed(Arc<Review>),
    MapDrawn(MapPicture),
    /// A step, an epoch or the end of the training run.
    Training(Box<TrainEvent>),
    /// Which of the recent catalogues are still there.
    RecentChecked(Vec<(PathBuf, bool)>),
    /// The catalogue's detector and its true boxes, for Annotate's retraining notice.
    DetectorStatus(Box<DetectorStatus>),
    /// Any thread may ask the app to run an intent (e.g. a read that failed asks for a notice).
    Intent(Intent),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_restricts_to_the_query_s_species_and_part_and_its_side_only_when_known() {
        let crop = CropInfo {
            annotation: AnnotationId(1),
            photo: PhotoId(1),
            hash: "00".into(),
            file: "a.jpg".into(),
            stored_path: "a.jpg".into(),
            bbox: None,
            photo_size: (10, 10),
            part: Part::DorsalFin,
            side: Side::Unknown,
            species: Some("bottlenose_dolphin".into()),
            source: crate::base::vocabulary::Source::Imported,
            status: Status::Verified,
            score: None,
            individual: None,
            code: None,
            how: None,
        };
        let all = FilterChoice { species: true, part: true, side: true };
        let f = all.filter(&crop);
        assert_eq!(f.species.as_deref(), Some("bottlenose_dolphin"));
        assert_eq!(f.part, Some(Part::DorsalFin));
        assert_eq!(f.side, None, "an unknown side restricts nothing");
        assert_eq!(f.describe(), "species bottlenose_dolphin, part dorsal_fin");
        let left = CropInfo { side: Side::Left, ..crop };
        assert_eq!(all.filter(&left).side, Some(Side::Left));
        assert_eq!(FilterChoice::default().filter(&left).side, None);
    }
}
