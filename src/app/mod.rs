//! The desktop app. The UI never does the work: panels and menus push `Intent`s; the
//! catalogue worker (edits and queries), the image pool (decoding, thumbnails) and background
//! jobs (everything else: imports, exports, embedding, searching, training, drawing the map,
//! writing the settings) run on their own threads and answer with `Event`s, which each frame
//! drains before it draws. No frame waits on the disk.
//!
//! The files, from the ground up (each names only those above it in this list):
//! - `settings`: what the window remembers between runs; `records`: what the panels show,
//!   read from the catalogue; `images`: decoding off the UI thread, thumbnails cached on disk
//! - `embedding`: the embedder in use, the model's status, the gallery and its map;
//!   `detection`: the backbone boxes are proposed with
//! - `map_picture`: the embedding map's view, colours and drawing
//! - `messages`: intents (from panels, menus and finished jobs) and events (from workers and jobs)
//! - `state`: what the window knows; `worker`: the thread that owns the open catalogue, every
//!   edit written at once; `jobs`: long work with progress and cancel, shown in the status bar
//! - `tasks`: the body of every job; `widgets`: what the panels share
//! - `panels`: library, annotate, individuals, identify, map, errors, train (each a `Panel`)
//! - `chrome`: menus, status bar, notices and windows around the panels
//! - this file: `WhaleApp`, which runs the intents and drains the events

mod chrome;
pub mod detection;
pub mod embedding;
pub mod images;
pub mod jobs;
pub mod map_picture;
pub mod messages;
pub mod panels;
pub mod records;
pub mod settings;
pub mod state;
pub mod tasks;
pub mod widgets;
pub mod worker;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use eframe::egui;

use crate::base::ids::PhotoId;
use crate::base::paths::data_dir;

use chrome::{Chrome, ChromeContext};
pub use detection::{Detection, tiny_random_detection};
pub use embedding::Embedding;
use embedding::{GalleryData, LoadedModel, ModelStatus, device_choice, heads_dir, short_key};
use images::ImageCache;
use jobs::{Jobs, OneAtATime};
use messages::{CatalogueEdit, EditFailure, Event, ImportKind, Intent, JobId, Level, Notice, PanelId};
use panels::{Panel, PanelContext};
use settings::Settings;
use state::{AppState, TrainingState};
use worker::{CatalogueWorker, Request};

/// How the window starts.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Settings and the thumbnail cache live here (`data_dir()` unless a test gives its own).
    pub home: PathBuf,
    /// The catalogue to open; else the last one used; else the demo catalogue (created on first run).
    pub catalogue: Option<PathBuf>,
    /// The panel shown first (`WHALEID_PANEL`: library, annotate, individuals, identify, map,
    /// errors, train).
    pub panel: Option<String>,
    /// Which embedder identifies crops: off unless asked for (the window's `run` uses the
    /// real weights; tests give a tiny random one).
    pub embedding: Embedding,
    /// Which backbone proposes boxes: off unless asked for (the window's `run` uses the
    /// EfficientNet-Lite0 weights; tests give a tiny random one).
    pub detection: Detection,
}

impl AppOptions {
    pub fn new(home: PathBuf, catalogue: Option<PathBuf>) -> Self {
        AppOptions { home, catalogue, panel: None, embedding: Embedding::Off, detection: Detection::Off }
    }

    /// `data_dir()`, the first panel from `WHALEID_PANEL` (screenshots use it), and the real
    /// embedder and detector backbone, unless `WHALEID_EMBEDDER=tiny-random` asks for untrained
    /// tiny models (screenshots and demos on a machine without the weights: their matches and
    /// boxes mean nothing).
    pub fn from_env(catalogue: Option<PathBuf>) -> Self {
        let weights = || Embedding::Weights(crate::models::default_dir());
        let detector_weights = || Detection::Weights(crate::models::default_dir());
        let (embedding, detection) = match std::env::var("WHALEID_EMBEDDER").as_deref() {
            Ok("tiny-random") => {
                (tiny_random_models().unwrap_or_else(weights), tiny_random_detection().unwrap_or_else(detector_weights))
            }
            _ => (weights(), detector_weights()),
        };
        AppOptions { home: data_dir(), catalogue, panel: std::env::var("WHALEID_PANEL").ok(), embedding, detection }
    }
}

/// An untrained two-block embedder at 56 px (tests, benchmarks, screenshots without weights).
pub fn tiny_random_embedder() -> Option<std::sync::Arc<crate::models::Embedder>> {
    crate::models::Embedder::tiny_random().ok().map(std::sync::Arc::new)
}

/// Untrained tiny stand-ins for DINOv2 and EfficientNet-Lite0, the same random draw every
/// time (tests, screenshots and demos without weights: their matches mean nothing).
pub fn tiny_random_models() -> Option<Embedding> {
    use crate::models::{Embedder, KnownModel};
    let cnn = Embedder::tiny_random_cnn().ok()?;
    Some(Embedding::Given(vec![
        (KnownModel::Dinov2Vits14, tiny_random_embedder()?),
        (KnownModel::EfficientnetLite0, std::sync::Arc::new(cnn)),
    ]))
}

/// A detection run asked for: on these photos (an import's) or every photo without a box,
/// or a retraining of the detector followed by detection.
#[derive(Debug)]
enum DetectionAsk {
    Detect(Option<Vec<PhotoId>>),
    Retrain,
}

/// The panels in the order of the tab bar.
fn all_panels() -> Vec<Box<dyn Panel>> {
    vec![
        Box::new(panels::library::LibraryPanel::default()),
        Box::new(panels::annotate::AnnotatePanel::default()),
        Box::new(panels::individuals::IndividualsPanel::default()),
        Box::new(panels::identify::IdentifyPanel::default()),
        Box::new(panels::map::MapPanel::default()),
        Box::new(panels::errors::ErrorsPanel::default()),
        Box::new(panels::train::TrainPanel::default()),
    ]
}

/// The window: state, panels, and the threads doing the work.
pub struct WhaleApp {
    ctx: egui::Context,
    state: AppState,
    panels: Vec<Box<dyn Panel>>,
    worker: Option<CatalogueWorker>,
    jobs: Jobs,
    images: ImageCache,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    out: Vec<Intent>,
    chrome: Chrome,
    title: String,
    embedding: Embedding,
    detection: Detection,
    /// Detection runs asked for while one ran (an import's photos, Retrain): run in turn.
    detection_queue: VecDeque<DetectionAsk>,
    /// Jobs of which one runs at a time; asked for again meanwhile, they run once more after.
    embedding_run: OneAtATime,
    detector_status_read: OneAtATime,
    gallery_read: OneAtATime,
    settings_write: OneAtATime,
    /// Per edit sent to the worker, in order: whether it changes the active model.
    edits_in_flight: VecDeque<bool>,
}

impl WhaleApp {
    pub fn new(ctx: &egui::Context, options: AppOptions) -> WhaleApp {
        let (events_tx, events) = channel();
        let (settings, settings_error) = Settings::load(&options.home);
        let images = ImageCache::new(ctx.clone(), options.home.join("thumbnails"));
        let mut app = WhaleApp {
            ctx: ctx.clone(),
            state: AppState::new(options.home.clone(), settings),
            panels: all_panels(),
            worker: None,
            jobs: Jobs::new(ctx.clone(), events_tx.clone()),
            images,
            events_tx,
            events,
            out: Vec::new(),
            chrome: Chrome::default(),
            title: String::new(),
            embedding: options.embedding.clone(),
            detection: options.detection.clone(),
            detection_queue: VecDeque::new(),
            embedding_run: OneAtATime::default(),
            detector_status_read: OneAtATime::default(),
            gallery_read: OneAtATime::default(),
            settings_write: OneAtATime::default(),
            edits_in_flight: VecDeque::new(),
        };
        if !matches!(options.embedding, Embedding::Off) {
            app.state.model.status = ModelStatus::Loading;
        }
        app.state.detection_on = options.detection.is_on();
        if let Some(e) = settings_error {
            app.state.notices.push(Notice::error(e.to_string()));
        }
        if let Some(name) = &options.panel {
            match app.panels.iter().find(|p| p.id().0 == name.as_str()) {
                Some(p) => app.state.active = p.id(),
                None => app.state.notices.push(Notice::error(format!(
                    "no panel \"{name}\" (there are: {})",
                    app.panels.iter().map(|p| p.id().0).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
        app.trim_thumbnails();
        app.check_recent();
        let start = options.catalogue.clone().or_else(|| app.state.settings.last_catalogue().map(Path::to_path_buf));
        match start {
            Some(path) => app.open(path, false),
            None => app.run_intent(Intent::OpenDemo),
        }
        app
    }

    /// What the window knows (tests read it to wait for workers).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn active_panel(&self) -> PanelId {
        self.state.active
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Pictures asked for and not decoded yet.
    pub fn pictures_pending(&self) -> usize {
        self.images.pending()
    }

    /// Runs an intent as if a panel had pushed it.
    pub fn send(&mut self, intent: Intent) {
        self.out.push(intent);
    }

    /// Nothing in flight: the catalogue is open and read, every edit is written, no job runs.
    pub fn is_settled(&self) -> bool {
        self.state.stats.is_some()
            && self.state.library_loaded
            && self.state.save.pending == 0
            && self.jobs.is_idle()
            && self.out.is_empty()
    }

    fn trim_thumbnails(&mut self) {
        let dir = self.images.cache_dir().to_path_buf();
        if !dir.exists() {
            return;
        }
        let limit = self.state.settings.thumbnail_cache_mb.saturating_mul(1 << 20);
        self.jobs.spawn("Tidying the thumbnail cache", move |_| tasks::trim_thumbnails(&dir, limit));
    }

    /// Checks in the background which recent catalogues still exist, for the File menu.
    fn check_recent(&mut self) {
        let recent = self.state.settings.recent.clone();
        self.jobs.spawn_housekeeping("Checking the recent catalogues", move |job| tasks::check_recent(recent, job));
    }

    fn save_settings(&mut self) {
        if !self.settings_write.may_start() {
            return;
        }
        let (settings, home) = (self.state.settings.clone(), self.state.home.clone());
        let id = self.jobs.spawn_housekeeping("Saving the settings", move |_| tasks::save_settings(&settings, &home));
        self.settings_write.started(id);
    }

    fn open(&mut self, path: PathBuf, create: bool) {
        // Dropping the old worker waits until its edits are written.
        self.worker = None;
        self.state.clear_catalogue();
        self.images.forget_failures();
        self.state.catalogue = Some(path.clone());
        self.worker = Some(CatalogueWorker::start(path, create, self.events_tx.clone(), self.ctx.clone()));
    }

    fn send_to_worker(&mut self, request: Request) -> bool {
        match &self.worker {
            Some(w) if self.state.stats.is_some() || !matches!(request, Request::Edit(_)) => {
                w.send(request);
                true
            }
            _ => {
                self.state.notices.push(Notice::error("No catalogue is open: File > Open catalogue…"));
                false
            }
        }
    }

    fn catalogue_path(&mut self) -> Option<PathBuf> {
        let path = self.state.stats.as_ref().and(self.state.catalogue.clone());
        if path.is_none() {
            self.state.notices.push(Notice::error("Open a catalogue first: File > Open catalogue…"));
        }
        path
    }

    /// The open catalogue, without a word when there is none (background work that waits for one).
    fn open_catalogue(&self) -> Option<PathBuf> {
        self.state.stats.as_ref().and(self.state.catalogue.clone())
    }

    fn run_intent(&mut self, intent: Intent) {
        match intent {
            Intent::Edit(edit) => {
                let changes_model =
                    matches!(edit, CatalogueEdit::SetActiveHead(_) | CatalogueEdit::SetActiveBackbone(_));
                if self.send_to_worker(Request::Edit(edit)) {
                    self.state.save.pending += 1;
                    self.edits_in_flight.push_back(changes_model);
                }
            }
            Intent::Undo | Intent::Redo => {
                let request = if matches!(intent, Intent::Undo) { Request::Undo } else { Request::Redo };
                if self.send_to_worker(request) {
                    self.state.save.pending += 1;
                }
            }
            Intent::Reload => {
                self.images.forget_failures();
                self.send_to_worker(Request::Reload);
            }
            Intent::Show(id) => self.state.active = id,
            Intent::OpenPhoto(_) => self.show_in(PanelId::ANNOTATE, &intent),
            Intent::OpenIndividual(_) => self.show_in(PanelId::INDIVIDUALS, &intent),
            Intent::OpenCrop(_) => self.show_in(PanelId::IDENTIFY, &intent),
            Intent::ShowPhotosInLibrary(_) => self.show_in(PanelId::LIBRARY, &intent),
            Intent::SetQueue(queue) => self.state.queue = queue,
            Intent::WatchPhoto(id) => {
                self.send_to_worker(Request::WatchPhoto(id));
            }
            Intent::WatchSightings(id) => {
                self.send_to_worker(Request::WatchSightings(id));
            }
            Intent::OpenCatalogue(path) => self.open(path, false),
            Intent::NewCatalogue(path) => {
                let path = if path.extension().is_some_and(|e| e == crate::catalogue::EXTENSION) {
                    path
                } else {
                    path.with_extension(crate::catalogue::EXTENSION)
                };
                self.open(path, true);
            }
            Intent::OpenDemo => {
                let path = self.state.home.join("demo").join("demo.whaleid");
                self.jobs.spawn("Creating the demo catalogue", move |job| tasks::make_demo(path, job));
            }
            Intent::Import { source, what } => self.import(source, what),
            Intent::Export { format, out } => self.export(format, out),
            Intent::Pick(pick) => {
                self.jobs.spawn_dialog("Choosing a file", move |_| tasks::pick_path(pick));
            }
            Intent::PromptPath(pick) => self.chrome.path_prompt = Some((pick, String::new())),
            Intent::CancelJob(id) => {
                self.jobs.cancel(id);
                if let Some(run) = self.state.training.as_mut().filter(|r| r.job == id) {
                    run.stopping = true;
                }
            }
            Intent::Notify(notice) => self.state.notices.push(notice),
            Intent::ChangeSetting(change) => {
                self.state.settings.change(change);
                self.chrome.settings_changed();
            }
            Intent::SaveSettings => self.save_settings(),
            Intent::LoadEmbedder => self.load_embedder(),
            Intent::EmbedCatalogue => self.embed_catalogue(),
            Intent::LoadGallery => self.load_gallery(),
            Intent::Search(request) => {
                let catalogue = self.open_catalogue();
                self.jobs
                    .spawn("Searching the catalogue", move |job| tasks::search(*request, catalogue.as_deref(), job));
            }
            Intent::ReviewLabelledCrops { gallery, generation } => {
                self.jobs.spawn("Reviewing labelled crops", move |job| {
                    tasks::review_labelled_crops(&gallery, generation, job)
                });
            }
            Intent::DrawMap(drawing) => {
                self.jobs.spawn_housekeeping("Drawing the map", move |job| tasks::draw_map(&drawing, job));
            }
            Intent::Train(config) => self.train(*config),
            Intent::CancelTraining => {
                if let Some(run) = self.state.training.as_mut() {
                    run.stopping = true;
                    self.jobs.cancel(run.job);
                }
            }
            Intent::Detect(photos) => self.detect(DetectionAsk::Detect(photos)),
            Intent::RetrainDetector => self.detect(DetectionAsk::Retrain),
            Intent::ReadDetectorStatus => self.read_detector_status(),
        }
    }

    /// Starts a detection (or retraining) job, or queues it behind the one running. Without a
    /// detector backbone, asking from Annotate says so; an import's photos simply get none.
    fn detect(&mut self, ask: DetectionAsk) {
        if !self.detection.is_on() {
            if !matches!(ask, DetectionAsk::Detect(Some(_))) {
                self.state
                    .notices
                    .push(Notice::error("Detection is off in this window: no detector backbone was given"));
            }
            return;
        }
        if self.state.detecting.is_some() {
            if matches!(ask, DetectionAsk::Retrain | DetectionAsk::Detect(None)) {
                self.state.notices.push(Notice::info("Boxes are being detected already: this runs when that ends"));
            }
            self.detection_queue.push_back(ask);
            return;
        }
        let Some(catalogue) = self.catalogue_path() else { return };
        let device = device_choice(&self.state.settings.device);
        let detection = self.detection.clone();
        let id = match ask {
            DetectionAsk::Detect(photos) => {
                let name = match &photos {
                    Some(p) => format!("Detecting boxes on {} imported photo(s)", p.len()),
                    None => "Detecting boxes".to_string(),
                };
                let run = tasks::DetectionRun { catalogue, detection, device, photos };
                self.jobs.spawn(name, move |job| tasks::detect(run, job))
            }
            DetectionAsk::Retrain => {
                let run = tasks::DetectionRun { catalogue, detection, device, photos: None };
                self.jobs.spawn("Retraining the detector", move |job| tasks::retrain_detector(run, job))
            }
        };
        self.state.detecting = Some(id);
    }

    /// Reads the catalogue's detector and its true boxes (Annotate's retraining notice).
    fn read_detector_status(&mut self) {
        let Some(catalogue) = self.open_catalogue() else { return };
        if !self.detector_status_read.may_start() {
            return;
        }
        let id = self.jobs.spawn_housekeeping("Reading the detector's status", move |job| {
            tasks::read_detector_status(&catalogue, job)
        });
        self.detector_status_read.started(id);
    }

    /// Hands an intent addressed to panels (`OpenPhoto`, ...) to every panel, then shows `panel`.
    fn show_in(&mut self, panel: PanelId, intent: &Intent) {
        let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, false);
        for p in &mut self.panels {
            p.on_intent(intent, &mut cx);
        }
        self.state.active = panel;
    }

    fn import(&mut self, source: PathBuf, what: ImportKind) {
        let Some(catalogue) = self.catalogue_path() else { return };
        let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = match what {
            ImportKind::Folder => "photos",
            ImportKind::Labels => "labels",
            ImportKind::CocoBoxes | ImportKind::YoloBoxes => "boxes",
        };
        self.jobs.spawn(format!("Importing {kind} from {name}"), move |job| tasks::import(&catalogue, &source, job));
    }

    fn export(&mut self, format: crate::jobs::export::ExportFormat, out: PathBuf) {
        let Some(catalogue) = self.catalogue_path() else { return };
        let name = format!("Exporting {} to {}", format!("{format:?}").to_lowercase(), out.display());
        self.jobs.spawn(name, move |job| tasks::export(&catalogue, format, &out, job));
    }

    /// (Re)loads the embedder for the open catalogue (its active head, the trained heads beside
    /// it); the embeddings are brought up to date after. All of it in a job: it reads files.
    fn load_embedder(&mut self) {
        let Some(catalogue) = self.open_catalogue() else { return };
        if matches!(self.embedding, Embedding::Off) {
            return;
        }
        let source = self.embedding.clone();
        if self.state.model.embedder.is_none() {
            self.state.model.status = ModelStatus::Loading;
        }
        let device = device_choice(&self.state.settings.device);
        self.jobs.spawn("Preparing identification", move |job| {
            tasks::prepare_identification(&catalogue, source, device, job)
        });
    }

    fn model_loaded(&mut self, loaded: LoadedModel) {
        let LoadedModel { embedder, backbone, choices, head, heads } = loaded;
        let label = format!("{} · {}", embedder.device_label(), short_key(embedder.key()));
        self.state.device_label = Some(label);
        let changed = self.state.model.key() != Some(embedder.key());
        self.state.settings.model = embedder.key().to_string();
        self.state.model.status = ModelStatus::Ready;
        self.state.model.embedder = Some(embedder);
        self.state.model.backbone = Some(backbone);
        self.state.model.choices = choices;
        self.state.model.head = head;
        self.state.model.heads = heads;
        if changed {
            self.state.model.gallery = None;
            self.state.model.generation += 1;
        }
        self.embed_catalogue();
    }

    /// Embeds what is missing or stale, then reads the gallery again.
    fn embed_catalogue(&mut self) {
        let Some(embedder) = self.state.model.embedder.clone() else { return };
        let Some(catalogue) = self.open_catalogue() else { return };
        if !self.embedding_run.may_start() {
            return;
        }
        let name = format!("Embedding crops ({})", embedder.device_label());
        let id = self.jobs.spawn(name, move |job| tasks::embed_catalogue(&catalogue, &embedder, job));
        self.embedding_run.started(id);
    }

    fn load_gallery(&mut self) {
        let Some(key) = self.state.model.key().map(str::to_string) else { return };
        let Some(catalogue) = self.open_catalogue() else { return };
        if !self.gallery_read.may_start() {
            return;
        }
        let id = self.jobs.spawn("Reading embeddings", move |job| tasks::read_gallery(&catalogue, &key, job));
        self.gallery_read.started(id);
    }

    fn gallery_arrived(&mut self, data: Arc<GalleryData>) {
        // A gallery of a model no longer in use (the head changed while it was read) is dropped.
        if self.state.model.key() == Some(data.key.as_str()) {
            let old = self.state.model.gallery.replace(data);
            self.state.model.generation += 1;
            if let Some(old) = old {
                self.jobs.spawn_housekeeping("Freeing the old gallery", move |_| tasks::let_go(old));
            }
        }
    }

    fn train(&mut self, config: crate::jobs::train::TrainConfig) {
        if self.state.training.is_some() {
            self.state.notices.push(Notice::error("A training run is going on already"));
            return;
        }
        let Some(embedder) = self.state.model.embedder.clone() else { return };
        let Some(catalogue) = self.catalogue_path() else { return };
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let out = heads_dir(&catalogue).join(format!("head-{stamp}"));
        let config = crate::jobs::train::TrainConfig { cache_dir: Some(self.state.home.join("cache")), ..config };
        let run = tasks::TrainingRun { catalogue, embedder, config, out: out.clone() };
        let job = self.jobs.spawn("Training", move |job| tasks::train(run, job));
        self.state.training = Some(TrainingState { job, out, stopping: false });
    }

    /// A job ended: the one-at-a-time jobs asked for again while it ran run now.
    fn job_ended(&mut self, id: JobId) {
        if self.embedding_run.finished(id) {
            self.out.push(Intent::EmbedCatalogue);
        }
        if self.gallery_read.finished(id) {
            self.out.push(Intent::LoadGallery);
        }
        if self.settings_write.finished(id) {
            self.out.push(Intent::SaveSettings);
        }
        if self.state.training.as_ref().is_some_and(|r| r.job == id) {
            self.state.training = None;
        }
        if self.detector_status_read.finished(id) {
            self.out.push(Intent::ReadDetectorStatus);
        }
        if self.state.detecting == Some(id) {
            self.state.detecting = None;
            if let Some(next) = self.detection_queue.pop_front() {
                self.detect(next);
            }
        }
    }

    fn context<'a>(
        state: &'a AppState,
        images: &'a mut ImageCache,
        out: &'a mut Vec<Intent>,
        keys: bool,
    ) -> PanelContext<'a> {
        PanelContext { state, images, out, keys }
    }

    /// The chrome, and the parts of the window it reads and changes.
    fn split_chrome(&mut self) -> (&mut Chrome, ChromeContext<'_>) {
        let WhaleApp { chrome, state, jobs, panels, out, .. } = self;
        (chrome, ChromeContext { state, jobs, panels: panels.as_slice(), out })
    }

    fn broadcast_event(&mut self, event: &Event) {
        let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, false);
        for p in &mut self.panels {
            p.on_event(event, &mut cx);
        }
    }

    /// Takes in everything the workers sent since the last frame.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Library { rows, individuals } => {
                self.state.set_rows(rows);
                self.state.set_individuals(individuals);
                // A reload follows imports, undo and redo: embed what they brought.
                self.out.push(Intent::EmbedCatalogue);
                self.out.push(Intent::ReadDetectorStatus);
            }
            Event::PhotoRows { ids, rows } => self.state.patch_rows(&ids, rows),
            Event::Individuals(rows) => self.state.set_individuals(rows),
            Event::History(actions) => self.state.history = actions,
            Event::Intent(intent) => self.out.push(intent),
            Event::Opened { path, stats } => {
                self.state.open_error = None;
                self.state.settings.remember(&path);
                self.out.push(Intent::SaveSettings);
                self.check_recent();
                let event = Event::Opened { path, stats };
                self.broadcast_event(&event);
                if let Event::Opened { stats, .. } = event {
                    self.state.stats = Some(*stats);
                }
                self.out.push(Intent::LoadEmbedder);
            }
            Event::OpenFailed { path, error } => {
                self.worker = None;
                self.state.catalogue = None;
                self.state.open_error = Some(error.clone());
                self.state.notices.push(Notice::error(format!("Cannot open {}: {error}", path.display())));
            }
            Event::Edited { label, result } => {
                self.state.save.pending = self.state.save.pending.saturating_sub(1);
                let changed_model = self.edits_in_flight.pop_front().unwrap_or(false);
                match result {
                    Ok(()) => {
                        self.state.save.error = None;
                        self.state.save.last = Some(label);
                        // A moved or new box needs its embedding; a new model needs them all.
                        self.out.push(if changed_model { Intent::LoadEmbedder } else { Intent::EmbedCatalogue });
                        // A verified or drawn box counts towards retraining the detector.
                        self.out.push(Intent::ReadDetectorStatus);
                    }
                    Err(EditFailure::Refused(why)) => {
                        self.state.notices.push(Notice::error(format!("Not done ({label}): {why}")));
                    }
                    Err(EditFailure::NotSaved(e)) => {
                        self.state.notices.push(Notice::error(format!("NOT SAVED ({label}): {e}")));
                        self.state.save.error = Some(e);
                    }
                }
            }
            Event::Stepped { undo, label } => {
                self.state.save.pending = self.state.save.pending.saturating_sub(1);
                if self.state.model.embedder.is_some() || matches!(self.state.model.status, ModelStatus::Failed(_)) {
                    // The step may have changed the active model (or undone the change that
                    // made it fail): read it again.
                    self.out.push(Intent::LoadEmbedder);
                }
                self.out.push(Intent::ReadDetectorStatus);
                let verb = if undo { "Undid" } else { "Redid" };
                match label {
                    Ok(Some(l)) => {
                        self.state.save.error = None;
                        self.state.save.last = Some(format!("{verb}: {l}"));
                        self.state.notices.push(Notice::info(format!("{verb}: {l}")));
                    }
                    Ok(None) => {
                        self.state.notices.push(Notice::info(if undo { "Nothing to undo" } else { "Nothing to redo" }))
                    }
                    Err(e) => self.state.notices.push(Notice::error(format!("{verb} failed: {e}"))),
                }
            }
            Event::JobFinished { id, result, cancelled } => {
                let name = self.jobs.finished(id).unwrap_or_else(|| "A job".into());
                self.job_ended(id);
                match result {
                    Ok(outcome) => {
                        let stopped = if cancelled { " (cancelled)" } else { "" };
                        if !outcome.quiet || outcome.problems > 0 {
                            self.state.notices.push(Notice {
                                level: if outcome.problems == 0 { Level::Info } else { Level::Error },
                                text: format!("{name}{stopped}: {}", outcome.summary),
                                details: outcome.details,
                            });
                        }
                        self.out.extend(outcome.then);
                    }
                    Err(e) => self.state.notices.push(Notice::error(format!("{name} failed: {e}"))),
                }
            }
            Event::ModelLoaded(loaded) => self.model_loaded(*loaded),
            Event::ModelFailed { why, backbone, choices } => {
                self.state.model.status = ModelStatus::Failed(why);
                self.state.model.backbone = backbone;
                self.state.model.choices = choices;
                self.state.device_label = Some("no identification".into());
                // Nothing identifies with the model that was there before: its embedder and
                // gallery go, so that no panel goes on proposing from them.
                self.state.model.embedder = None;
                if self.state.model.gallery.take().is_some() {
                    self.state.model.generation += 1;
                }
            }
            Event::GalleryRead(data) => self.gallery_arrived(data),
            Event::RecentChecked(checked) => self.chrome.recent_checked(checked),
            Event::DetectorStatus(status) => self.state.detector = Some(*status),
            event @ (Event::Photo { .. }
            | Event::Sightings { .. }
            | Event::Searched(_)
            | Event::Reviewed(_)
            | Event::MapDrawn(_)
            | Event::Training(_)) => self.broadcast_event(&event),
        }
    }

    /// One frame: drain the workers, draw, run what the panels asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.images.begin_frame();
        self.drain();
        let (chrome, mut frame) = self.split_chrome();
        chrome.global_keys(ui, &mut frame);
        let keys = !ui.ctx().egui_wants_keyboard_input() && !self.chrome.modal_open();
        {
            let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, false);
            for p in &mut self.panels {
                p.update(&mut cx);
            }
        }
        let (chrome, mut frame) = self.split_chrome();
        chrome.menu_bar(ui, &mut frame);
        chrome.status_bar(ui, &mut frame);
        chrome.notices(ui, &mut frame);
        let active = self.state.active;
        egui::CentralPanel::default().frame(egui::Frame::NONE).show(ui, |ui| {
            let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, keys);
            match self.panels.iter_mut().find(|p| p.id() == active) {
                Some(panel) => panel.ui(ui, &mut cx),
                None => {
                    ui.label(format!("No panel \"{}\"", active.0));
                }
            }
        });
        let (chrome, mut frame) = self.split_chrome();
        chrome.windows(ui, &mut frame);
        // Intents may make more intents (a finished job's follow-up); run them all now.
        while !self.out.is_empty() {
            for intent in std::mem::take(&mut self.out) {
                self.run_intent(intent);
            }
        }
        self.update_title();
        if !self.jobs.is_idle() || self.state.save.pending > 0 || self.images.pending() > 0 {
            // Workers ask for a repaint when they answer; this only keeps progress bars moving.
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    fn update_title(&mut self) {
        let name = self
            .state
            .catalogue
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let title = match (&self.state.stats, name.is_empty()) {
            (_, true) => "whaleid".to_string(),
            (Some(_), false) => format!("whaleid - {name}"),
            (None, false) => format!("whaleid - opening {name}"),
        };
        if title != self.title {
            self.ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }
}

impl eframe::App for WhaleApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        WhaleApp::ui(self, ui);
    }
}

/// Opens the window on `catalogue`, else on the last catalogue used, else on the demo
/// catalogue (created on first run).
pub fn run(catalogue: Option<PathBuf>) -> anyhow::Result<()> {
    let options = AppOptions::from_env(catalogue);
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([640.0, 400.0])
            .with_title("whaleid"),
        ..Default::default()
    };
    eframe::run_native("whaleid", native, Box::new(move |cc| Ok(Box::new(WhaleApp::new(&cc.egui_ctx, options)))))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
