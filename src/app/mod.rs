//! The desktop app. The UI never does the work: panels push `Command`s, the catalogue
//! worker (edits and queries), the image pool (decoding, thumbnails) and background jobs
//! (imports, exports, embedding, searching and training) run on their own threads and answer
//! with `Event`s, which each frame drains before it draws. No frame waits on the disk.
//!
//! - `command`: the messages (commands from panels, events from workers)
//! - `worker`: the thread that owns the open catalogue; every edit is written at once
//! - `jobs`: long work with progress and cancel, shown in the status bar
//! - `images`: decoding off the UI thread, thumbnails cached on disk
//! - `embedding`: the embedder, the embeddings kept up to date, the gallery and its map
//! - `records`: what the panels show, read from the catalogue
//! - `state`: what the window knows; `settings`: what it remembers between runs
//! - `panels`: library, annotate, individuals, identify, map, errors, train (each a `Panel`);
//!   `chrome`: menus, status bar, dialogs

mod chrome;
pub mod command;
pub mod embedding;
pub mod images;
pub mod jobs;
pub mod panels;
pub mod records;
pub mod settings;
pub mod state;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::Context as _;
use eframe::egui;

use crate::base::paths::data_dir;
use crate::catalogue::Catalogue;
use crate::jobs::demo::ensure_demo;
use crate::jobs::import::ImportOptions;

use command::{CatalogueEdit, Command, EditFailure, Event, ImportKind, Level, Notice, Pick};
pub use embedding::Embedding;
use images::ImageCache;
use jobs::{JobOutcome, Jobs};
use panels::{Panel, PanelContext, PanelId};
use settings::Settings;
use state::AppState;
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
}

impl AppOptions {
    pub fn new(home: PathBuf, catalogue: Option<PathBuf>) -> Self {
        AppOptions { home, catalogue, panel: None, embedding: Embedding::Off }
    }

    /// `data_dir()`, the first panel from `WHALEID_PANEL` (screenshots use it), and the real
    /// embedder, unless `WHALEID_EMBEDDER=tiny-random` asks for an untrained two-block model
    /// (screenshots and demos on a machine without the weights: its matches mean nothing).
    pub fn from_env(catalogue: Option<PathBuf>) -> Self {
        let embedding = match std::env::var("WHALEID_EMBEDDER").as_deref() {
            Ok("tiny-random") => tiny_random_embedder().map(Embedding::Given).unwrap_or(Embedding::Weights),
            _ => Embedding::Weights,
        };
        AppOptions { home: data_dir(), catalogue, panel: std::env::var("WHALEID_PANEL").ok(), embedding }
    }
}

/// An untrained two-block embedder at 56 px (tests, benchmarks, screenshots without weights).
pub fn tiny_random_embedder() -> Option<std::sync::Arc<crate::models::Embedder>> {
    crate::models::Embedder::random(&crate::models::Dinov2Config::tiny(), 56).ok().map(std::sync::Arc::new)
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
    out: Vec<Command>,
    chrome: chrome::Chrome,
    title: String,
    embedding: Embedding,
    model_jobs: embedding::ModelJobs,
    /// Per edit sent to the worker, in order: whether it changes the active model.
    edits_in_flight: std::collections::VecDeque<bool>,
}

impl WhaleApp {
    pub fn new(ctx: &egui::Context, options: AppOptions) -> WhaleApp {
        let (events_tx, events) = channel();
        let (settings, settings_error) = Settings::load(&options.home);
        let images = ImageCache::new(ctx.clone(), options.home.join("thumbnails"));
        let mut app = WhaleApp {
            ctx: ctx.clone(),
            state: AppState::new(options.home.clone(), settings),
            panels: panels::all(),
            worker: None,
            jobs: Jobs::new(ctx.clone(), events_tx.clone()),
            images,
            events_tx,
            events,
            out: Vec::new(),
            chrome: chrome::Chrome::default(),
            title: String::new(),
            embedding: options.embedding.clone(),
            model_jobs: Default::default(),
            edits_in_flight: Default::default(),
        };
        if !matches!(options.embedding, Embedding::Off) {
            app.state.model.status = embedding::ModelStatus::Loading;
        }
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
        let start = options.catalogue.clone().or_else(|| app.state.settings.last_catalogue().map(Path::to_path_buf));
        match start {
            Some(path) => app.open(path, false),
            None => app.run_command(Command::OpenDemo),
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

    /// Runs a command as if a panel had pushed it.
    pub fn send(&mut self, command: Command) {
        self.out.push(command);
    }

    /// Starts a background job (see `jobs`); the status bar shows it until it ends.
    pub fn spawn_job(
        &mut self,
        name: impl Into<String>,
        work: impl FnOnce(&jobs::JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> jobs::JobId {
        self.jobs.spawn(name, work)
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
        self.jobs.spawn("Tidying the thumbnail cache", move |_| {
            let (removed, kept) = images::trim_cache(&dir, limit)
                .with_context(|| format!("cannot tidy the thumbnail cache {}", dir.display()))?;
            Ok(JobOutcome::done(format!("{removed} old thumbnail(s) removed, {} MB kept", kept >> 20)).quietly())
        });
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

    fn run_command(&mut self, command: Command) {
        match command {
            Command::Edit(edit) => {
                let changes_model = matches!(edit, CatalogueEdit::SetActiveHead(_));
                if self.send_to_worker(Request::Edit(edit)) {
                    self.state.save.pending += 1;
                    self.edits_in_flight.push_back(changes_model);
                }
            }
            Command::Undo | Command::Redo => {
                let request = if matches!(command, Command::Undo) { Request::Undo } else { Request::Redo };
                if self.send_to_worker(request) {
                    self.state.save.pending += 1;
                }
            }
            Command::Reload => {
                self.images.forget_failures();
                self.send_to_worker(Request::Reload);
            }
            Command::Show(id) => self.state.active = id,
            Command::OpenPhoto(_) | Command::OpenIndividual(_) => {
                let target =
                    if matches!(command, Command::OpenPhoto(_)) { PanelId::ANNOTATE } else { PanelId::INDIVIDUALS };
                self.broadcast_command(&command);
                self.state.active = target;
            }
            Command::SetQueue(queue) => self.state.queue = queue,
            Command::WatchPhoto(id) => {
                self.send_to_worker(Request::WatchPhoto(id));
            }
            Command::WatchGallery(id) => {
                self.send_to_worker(Request::WatchGallery(id));
            }
            Command::OpenCatalogue(path) => self.open(path, false),
            Command::NewCatalogue(path) => {
                let path = if path.extension().is_some_and(|e| e == crate::catalogue::EXTENSION) {
                    path
                } else {
                    path.with_extension(crate::catalogue::EXTENSION)
                };
                self.open(path, true);
            }
            Command::OpenDemo => {
                let path = self.state.home.join("demo").join("demo.whaleid");
                let then = path.clone();
                self.jobs.spawn("Creating the demo catalogue", move |job| {
                    ensure_demo(&path, job)?;
                    Ok(JobOutcome::done(format!("ready at {}", path.display())).then(Command::OpenCatalogue(then)))
                });
            }
            Command::Import { source, what } => self.import(source, what),
            Command::Export { format, out } => self.export(format, out),
            Command::Pick(pick) => chrome::pick(pick, self.events_tx.clone(), self.ctx.clone()),
            Command::PromptPath(pick) => self.chrome.path_prompt = Some((pick, String::new())),
            Command::Job(job) => {
                self.jobs.spawn(job.name, job.work);
            }
            Command::CancelJob(id) => self.jobs.cancel(id),
            Command::SetDeviceLabel(label) => self.state.device_label = label,
            Command::Notify(notice) => self.state.notices.push(notice),
            Command::SaveSettings => {
                if let Err(e) = self.state.settings.save(&self.state.home) {
                    self.state.notices.push(Notice::error(e.to_string()));
                }
            }
            Command::LoadEmbedder => self.load_embedder(),
            Command::EmbedderLoaded(loaded) => self.embedder_loaded(*loaded),
            Command::EmbedderFailed(why) => {
                self.state.model.status = embedding::ModelStatus::Failed(why);
                self.state.device_label = Some("no identification".into());
            }
            Command::EmbedCatalogue => self.embed_catalogue(),
            Command::LoadGallery => self.load_gallery(),
            Command::GalleryLoaded(data) => self.gallery_loaded(data.0),
            Command::OpenCrop(_) => {
                self.broadcast_command(&command);
                self.state.active = PanelId::IDENTIFY;
            }
            Command::ShowPhotosInLibrary(_) => {
                self.broadcast_command(&command);
                self.state.active = PanelId::LIBRARY;
            }
            Command::Deliver(_) => self.broadcast_command(&command),
        }
    }

    fn import(&mut self, source: PathBuf, what: ImportKind) {
        let Some(catalogue) = self.catalogue_path() else { return };
        let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = match what {
            ImportKind::Folder => "photos",
            ImportKind::Labels => "labels",
            ImportKind::CocoBoxes | ImportKind::YoloBoxes => "boxes",
        };
        self.jobs.spawn(format!("Importing {kind} from {name}"), move |job| {
            let mut cat = Catalogue::open(&catalogue)?;
            let report = crate::jobs::import::import(&mut cat, &source, &ImportOptions::default(), job)?;
            let problems = report.problems.len();
            let summary = format!(
                "{} photo(s) added, {} already there, {} box(es), {} label(s) applied, {} new individual(s){}",
                report.photos.added,
                report.photos.already_present,
                report.boxes.added,
                report.labels.applied,
                report.labels.individuals_added,
                if problems > 0 { format!("; {problems} problem(s)") } else { String::new() },
            );
            let details: Vec<String> = report
                .problems
                .iter()
                .map(|p| p.to_string())
                .chain(report.to_string().lines().map(str::to_string))
                .collect();
            Ok(JobOutcome::done(summary).with_details(details).with_problems(problems).then(Command::Reload))
        });
    }

    fn export(&mut self, format: crate::jobs::export::ExportFormat, out: PathBuf) {
        let Some(catalogue) = self.catalogue_path() else { return };
        self.jobs.spawn(
            format!("Exporting {} to {}", format!("{format:?}").to_lowercase(), out.display()),
            move |job| {
                let cat = Catalogue::open(&catalogue)?;
                let report = crate::jobs::export::export(
                    &cat,
                    format,
                    &out,
                    &crate::jobs::export::ExportOptions::default(),
                    job,
                )?;
                let written: Vec<String> = report.written.iter().map(|p| p.display().to_string()).collect();
                let details: Vec<String> = written
                    .iter()
                    .map(|w| format!("wrote {w}"))
                    .chain(report.skipped.iter().map(|p| p.to_string()))
                    .collect();
                Ok(JobOutcome::done(format!("{} item(s) written, {} skipped", report.items, report.skipped.len()))
                    .with_details(details)
                    .with_problems(report.skipped.len()))
            },
        );
    }

    fn context<'a>(
        state: &'a AppState,
        images: &'a mut ImageCache,
        out: &'a mut Vec<Command>,
        keys: bool,
    ) -> PanelContext<'a> {
        PanelContext { state, images, out, keys }
    }

    fn broadcast_command(&mut self, command: &Command) {
        let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, false);
        for p in &mut self.panels {
            p.on_command(command, &mut cx);
        }
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
                self.out.push(Command::EmbedCatalogue);
            }
            Event::PhotoRows { ids, rows } => self.state.patch_rows(&ids, rows),
            Event::Individuals(rows) => self.state.set_individuals(rows),
            Event::History(actions) => self.state.history = actions,
            Event::Command(command) => self.out.push(command),
            Event::Opened { path, stats } => {
                self.state.open_error = None;
                self.state.settings.remember(&path);
                self.out.push(Command::SaveSettings);
                let event = Event::Opened { path, stats };
                self.broadcast_event(&event);
                if let Event::Opened { stats, .. } = event {
                    self.state.stats = Some(*stats);
                }
                self.out.push(Command::LoadEmbedder);
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
                        self.out.push(if changed_model { Command::LoadEmbedder } else { Command::EmbedCatalogue });
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
                if self.state.model.embedder.is_some() {
                    // The step may have changed the active model: read it again.
                    self.out.push(Command::LoadEmbedder);
                }
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
                self.model_job_finished(id);
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
            event @ (Event::Photo { .. } | Event::Gallery { .. }) => self.broadcast_event(&event),
        }
    }

    fn global_keys(&mut self, ui: &egui::Ui) {
        use egui::{Key, Modifiers};
        let typing = ui.ctx().egui_wants_keyboard_input();
        let mut commands = Vec::new();
        ui.input_mut(|i| {
            if !typing {
                if i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
                    || i.consume_key(Modifiers::COMMAND, Key::Y)
                {
                    commands.push(Command::Redo);
                }
                if i.consume_key(Modifiers::COMMAND, Key::Z) {
                    commands.push(Command::Undo);
                }
            }
            if i.consume_key(Modifiers::NONE, Key::F1) {
                self.chrome.shortcuts = !self.chrome.shortcuts;
            }
            if i.consume_key(Modifiers::COMMAND, Key::Comma) {
                self.chrome.settings = !self.chrome.settings;
            }
            if i.consume_key(Modifiers::COMMAND, Key::O) {
                commands.push(Command::Pick(Pick::OpenCatalogue));
            }
            const DIGITS: [Key; 9] =
                [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9];
            for (n, key) in DIGITS.into_iter().enumerate() {
                if i.consume_key(Modifiers::COMMAND, key)
                    && let Some(p) = self.panels.get(n)
                {
                    commands.push(Command::Show(p.id()));
                }
            }
        });
        self.out.extend(commands);
    }

    /// One frame: drain the workers, draw, run what the panels asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.images.begin_frame();
        self.drain();
        self.global_keys(ui);
        let keys = !ui.ctx().egui_wants_keyboard_input() && !self.chrome.modal_open();
        {
            let mut cx = Self::context(&self.state, &mut self.images, &mut self.out, false);
            for p in &mut self.panels {
                p.update(&mut cx);
            }
        }
        self.menu_bar(ui);
        self.status_bar(ui);
        self.notices(ui);
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
        self.windows(ui);
        // Commands may make more commands (a finished job's follow-up); run them all now.
        while !self.out.is_empty() {
            for command in std::mem::take(&mut self.out) {
                self.run_command(command);
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
