//! Importing a dataset: photos (recursive), identity labels (CSV), boxes (YOLO, COCO).
//!
//! The format of each file is recognised from its content. Every problem is reported
//! per file (and per row) while the rest goes on; photos are committed in batches, so
//! a crash loses at most the batch in flight and running the import again finishes it
//! without duplicates.

pub mod boxes;
pub mod labels;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::base::photo;
use crate::base::progress::Progress;
use crate::base::vocabulary::{BoxPx, Fit, How, Part, Side, Source, Status};
use crate::catalogue::{Catalogue, Edit, NewAnnotation, NewPhoto, Photo};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The part shown when the files do not say (default: from the species, else `body`).
    pub part: Option<Part>,
    /// The species when the files do not say.
    pub species: Option<String>,
    /// Photos decoded and committed per transaction.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { part: None, species: None, batch_size: 256 }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PhotoCounts {
    pub found: usize,
    pub added: usize,
    pub already_present: usize,
    pub relinked: usize,
    pub duplicates: usize,
    pub failed: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct BoxCounts {
    pub added: usize,
    pub already_present: usize,
    pub clipped: usize,
    pub failed: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LabelCounts {
    pub applied: usize,
    pub already_present: usize,
    pub unlabelled: usize,
    pub duplicate_rows: usize,
    pub individuals_added: usize,
    pub failed: usize,
}

/// One problem, naming the file (and the line or item, when there is one).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.problem),
            None => write!(f, "{}: {}", self.file.display(), self.problem),
        }
    }
}

/// What happened to one labels or boxes file.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub file: PathBuf,
    pub kind: String,
    pub applied: usize,
    pub skipped: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportReport {
    pub dataset: PathBuf,
    pub photos: PhotoCounts,
    pub boxes: BoxCounts,
    pub labels: LabelCounts,
    pub files: Vec<FileOutcome>,
    /// Photos skipped because their content is already in the catalogue, and where.
    pub skipped: Vec<Problem>,
    pub problems: Vec<Problem>,
}

impl ImportReport {
    fn problem(&mut self, file: &Path, line: Option<usize>, problem: impl Into<String>) {
        self.problems.push(Problem { file: file.to_path_buf(), line, problem: problem.into() });
    }
}

/// The files of a dataset folder, sorted so imports are repeatable.
#[derive(Debug, Default)]
struct Discovered {
    photos: Vec<PathBuf>,
    csvs: Vec<PathBuf>,
    jsons: Vec<PathBuf>,
    /// Text files that may be YOLO labels (in a `labels` folder, or beside photos).
    texts: Vec<PathBuf>,
    class_files: Vec<PathBuf>,
}

fn discover(root: &Path, report: &mut ImportReport) -> Discovered {
    let mut found = Discovered::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(|n| n.starts_with('.')));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                report.problem(&path, None, format!("cannot read: {e}"));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.into_path();
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
        if photo::is_photo(&path) {
            found.photos.push(path);
        } else if ext == "csv" {
            found.csvs.push(path);
        } else if ext == "json" {
            found.jsons.push(path);
        } else if name == "classes.txt" || name == "data.yaml" || name == "dataset.yaml" {
            found.class_files.push(path);
        } else if ext == "txt" {
            found.texts.push(path);
        }
    }
    found
}

/// The catalogue's photos by the names label and box files use for them: the path
/// relative to the dataset folder, the catalogue's stored path, or a unique file name.
struct PhotoIndex {
    root: PathBuf,
    photos: Vec<Photo>,
    by_relative: HashMap<String, usize>,
    by_stored: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl PhotoIndex {
    /// File names are matched among the photos under `root`, or among all photos of the
    /// catalogue when a single labels or boxes file is imported on its own.
    fn build(cat: &Catalogue, root: &Path, names_from_whole_catalogue: bool) -> crate::catalogue::Result<PhotoIndex> {
        let mut index = PhotoIndex {
            root: root.to_path_buf(),
            photos: Vec::new(),
            by_relative: HashMap::new(),
            by_stored: HashMap::new(),
            by_name: HashMap::new(),
        };
        for p in cat.photos()? {
            let i = index.photos.len();
            let file = cat.photo_file(&p.stored_path);
            let relative = file.strip_prefix(root).ok().and_then(|r| r.to_str()).map(|s| s.replace('\\', "/"));
            if relative.is_some() || names_from_whole_catalogue {
                let name = p.stored_path.rsplit('/').next().unwrap_or(&p.stored_path).to_string();
                index.by_name.entry(name).or_default().push(i);
            }
            if let Some(rel) = relative {
                index.by_relative.insert(rel, i);
            }
            index.by_stored.insert(p.stored_path.clone(), i);
            index.photos.push(p);
        }
        Ok(index)
    }

    /// Photos under the dataset folder, by their path relative to it.
    fn under_root(&self) -> impl Iterator<Item = (&String, &Photo)> {
        self.by_relative.iter().map(|(rel, &i)| (rel, &self.photos[i]))
    }

    /// Finds the photo a file names. `base` is the naming file's folder relative to the root.
    fn resolve(&self, name: &str, base: &str) -> Result<&Photo, String> {
        let name = name.trim().replace('\\', "/");
        if name.is_empty() {
            return Err("empty image name".into());
        }
        if Path::new(&name).is_absolute() || name.starts_with('/') {
            return Err(format!("image name '{name}' is an absolute path; names must be inside the dataset folder"));
        }
        let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
        for c in Path::new(&name).components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(format!("image name '{name}' climbs out of the dataset folder"));
                    }
                }
                _ => return Err(format!("image name '{name}' is not a relative path")),
            }
        }
        let joined = parts.join("/");
        let exact = [self.by_relative.get(&joined), self.by_relative.get(&name), self.by_stored.get(&name)];
        if let Some(&i) = exact.into_iter().flatten().next() {
            return Ok(&self.photos[i]);
        }
        let file_name = name.rsplit('/').next().unwrap_or(&name);
        match self.by_name.get(file_name).map(Vec::as_slice) {
            Some([one]) => Ok(&self.photos[*one]),
            Some(many) if !many.is_empty() => Err(format!(
                "'{name}' is ambiguous: {} photos of that name ({})",
                many.len(),
                many.iter().take(3).map(|&i| self.photos[i].stored_path.as_str()).collect::<Vec<_>>().join(", ")
            )),
            _ => Err(format!("no photo '{name}' under {}", self.root.display())),
        }
    }

    fn relative_dir(&self, file: &Path) -> String {
        file.parent()
            .and_then(|d| d.strip_prefix(&self.root).ok())
            .and_then(|d| d.to_str())
            .map(|s| s.replace('\\', "/"))
            .unwrap_or_default()
    }
}

/// What the labels say about a photo's animal, used for boxes whose files do not say.
#[derive(Debug, Clone, Default)]
struct Hint {
    species: Option<String>,
    part: Option<Part>,
}

fn species_part(species: Option<&str>, explicit: Option<Part>, opts: &ImportOptions) -> Part {
    explicit.or(opts.part).unwrap_or_else(|| species.map(Part::usual_for_species).unwrap_or(Part::Body))
}

/// Imports a dataset folder (or a single labels CSV, COCO JSON or photo) into the catalogue.
pub fn import(
    cat: &mut Catalogue,
    dataset: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> anyhow::Result<ImportReport> {
    let dataset =
        dataset.canonicalize().map_err(|e| anyhow::anyhow!("cannot open dataset {}: {e}", dataset.display()))?;
    let mut report = ImportReport { dataset: dataset.clone(), ..Default::default() };
    let (root, found) = if dataset.is_dir() {
        let found = discover(&dataset, &mut report);
        (dataset.clone(), found)
    } else {
        let root = dataset.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let mut found = Discovered::default();
        let ext = dataset.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        match ext.as_str() {
            "csv" => found.csvs.push(dataset.clone()),
            "json" => found.jsons.push(dataset.clone()),
            _ if photo::is_photo(&dataset) => found.photos.push(dataset.clone()),
            _ => anyhow::bail!(
                "{}: not a dataset whaleid imports (a folder, a labels .csv, a COCO .json or a photo)",
                dataset.display()
            ),
        }
        (root, found)
    };

    let action = cat.begin_long_action(&format!("import {}", dataset.display()))?;
    let single_file = !dataset.is_dir();
    let result = import_found(cat, action, &root, single_file, &found, opts, progress, &mut report);
    cat.end_long_action(action)?;
    result?;
    Ok(report)
}

fn label_hints(index: &PhotoIndex, tables: &[(&PathBuf, labels::LabelTable)]) -> HashMap<i64, Hint> {
    let mut hints = HashMap::new();
    for (csv, table) in tables {
        let base = index.relative_dir(csv);
        for row in &table.rows {
            if let Ok(photo) = index.resolve(&row.image, &base) {
                let species = row.species.clone().or(table.format.species().map(str::to_string));
                let part = row.part.or(species.as_deref().map(Part::usual_for_species));
                hints.insert(photo.id, Hint { species, part });
            }
        }
    }
    hints
}

#[allow(clippy::too_many_arguments)]
fn import_found(
    cat: &mut Catalogue,
    action: i64,
    root: &Path,
    single_file: bool,
    found: &Discovered,
    opts: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    import_photos(cat, action, &found.photos, opts, progress, report)?;
    let index = PhotoIndex::build(cat, root, single_file)?;
    let mut tables = Vec::new();
    for csv in &found.csvs {
        match std::fs::read(csv).map_err(|e| format!("cannot read: {e}")).and_then(|b| labels::parse_labels(&b)) {
            Ok(table) => tables.push((csv, table)),
            Err(e) => report.problem(csv, None, e),
        }
    }
    let hints = label_hints(&index, &tables);
    import_yolo(cat, action, &index, found, &hints, opts, report)?;
    for json in &found.jsons {
        import_coco(cat, action, &index, json, &hints, opts, report)?;
    }
    for (csv, table) in &tables {
        import_labels(cat, action, &index, csv, table, opts, report)?;
    }
    Ok(())
}

fn import_photos(
    cat: &mut Catalogue,
    action: i64,
    files: &[PathBuf],
    opts: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    report.photos.found = files.len();
    let known: HashSet<String> = cat.photos()?.into_iter().map(|p| p.stored_path).collect();
    let mut todo = Vec::new();
    for file in files {
        match cat.stored_path(file) {
            None => {
                report.photos.failed += 1;
                report.problem(file, None, "the file name is not valid UTF-8; rename the file");
            }
            Some(stored) if known.contains(&stored) => report.photos.already_present += 1,
            Some(stored) => todo.push((file.clone(), stored)),
        }
    }
    progress.stage("photos", todo.len() as u64);
    let total = todo.len() as u64;
    let mut done = 0u64;
    for batch in todo.chunks(opts.batch_size.max(1)) {
        if progress.cancelled() {
            report.problem(Path::new(""), None, "import cancelled; run it again to finish");
            break;
        }
        let probed: Vec<Result<photo::PhotoInfo, String>> = batch
            .par_iter()
            .map(|(file, _)| {
                let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
                let info = photo::probe_bytes(&bytes);
                progress.advance(1);
                info
            })
            .collect();
        let outcomes = cat.edit_in(action, |e| {
            let mut outcomes = Vec::with_capacity(batch.len());
            for ((file, stored), info) in batch.iter().zip(probed) {
                let info = match info {
                    Ok(i) => i,
                    Err(problem) => {
                        outcomes.push(PhotoOutcome::Failed(file.clone(), problem));
                        continue;
                    }
                };
                outcomes.push(record_photo(e, file, stored, info)?);
            }
            Ok(outcomes)
        })?;
        for outcome in outcomes {
            match outcome {
                PhotoOutcome::Added => report.photos.added += 1,
                PhotoOutcome::Relinked(file, from) => {
                    report.photos.relinked += 1;
                    report.skipped.push(Problem {
                        file,
                        line: None,
                        problem: format!("moved photo: relinked from {from}"),
                    });
                }
                PhotoOutcome::Duplicate(file, of) => {
                    report.photos.duplicates += 1;
                    report.skipped.push(Problem {
                        file,
                        line: None,
                        problem: format!("same content as {of}, already in the catalogue"),
                    });
                }
                PhotoOutcome::Failed(file, problem) => {
                    report.photos.failed += 1;
                    report.problem(&file, None, problem);
                }
            }
        }
        done += batch.len() as u64;
        progress.committed(done, total);
    }
    Ok(())
}

enum PhotoOutcome {
    Added,
    Relinked(PathBuf, String),
    Duplicate(PathBuf, String),
    Failed(PathBuf, String),
}

/// Records a probed photo, recognising one already catalogued elsewhere by its content.
fn record_photo(e: &Edit, file: &Path, stored: &str, info: photo::PhotoInfo) -> crate::catalogue::Result<PhotoOutcome> {
    let same: Option<(i64, String)> = e
        .conn()
        .prepare_cached("SELECT id, path FROM photos WHERE hash = ?1 ORDER BY id LIMIT 1")
        .and_then(|mut s| {
            let mut rows = s.query([&info.hash])?;
            rows.next()?.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
        })
        .map_err(|err| crate::catalogue::CatalogueError::Invalid(format!("{}: {err}", file.display())))?;
    if let Some((id, old_path)) = same {
        let old_file = resolve_stored(file, stored, &old_path);
        if !old_file.exists() {
            e.relink_photo(id, stored)?;
            return Ok(PhotoOutcome::Relinked(file.to_path_buf(), old_path));
        }
        return Ok(PhotoOutcome::Duplicate(file.to_path_buf(), old_path));
    }
    e.insert_photo(&NewPhoto {
        stored_path: stored.to_string(),
        hash: info.hash,
        width: info.width,
        height: info.height,
        orientation: info.orientation,
        taken_at: info.taken_at,
        latitude: info.latitude,
        longitude: info.longitude,
    })?;
    Ok(PhotoOutcome::Added)
}

/// The absolute location of another stored path, given one file whose absolute and stored
/// paths are both known (they share the photo root).
fn resolve_stored(file: &Path, stored: &str, other: &str) -> PathBuf {
    if Path::new(other).is_absolute() {
        return PathBuf::from(other);
    }
    let depth = Path::new(stored).components().count();
    let mut root = file.to_path_buf();
    for _ in 0..depth {
        root.pop();
    }
    root.join(other)
}

/// The YOLO label file of each photo: `labels/NAME.txt` in the usual layouts, or `NAME.txt` beside it.
fn import_yolo(
    cat: &mut Catalogue,
    action: i64,
    index: &PhotoIndex,
    found: &Discovered,
    hints: &HashMap<i64, Hint>,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let mut by_stem: HashMap<String, Vec<&String>> = HashMap::new();
    for (rel, _) in index.under_root() {
        let stem = Path::new(rel).file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        by_stem.entry(stem).or_default().push(rel);
    }
    let class_names: Vec<String> = found
        .class_files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| boxes::parse_class_names(&t))
        .find(|names| !names.is_empty())
        .unwrap_or_default();
    let mut jobs = Vec::new();
    for txt in &found.texts {
        let in_labels_dir = txt.components().any(|c| c.as_os_str().eq_ignore_ascii_case("labels"));
        let stem = txt.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let candidates = by_stem.get(stem).map(Vec::as_slice).unwrap_or(&[]);
        let rel_dir = index.relative_dir(txt);
        // Prefer the photo in the mirrored images folder, then one beside the file.
        let mirrored = rel_dir.replacen("labels", "images", 1);
        let pick = candidates
            .iter()
            .find(|rel| parent_of(rel) == mirrored)
            .or_else(|| candidates.iter().find(|rel| parent_of(rel) == rel_dir))
            .or(if in_labels_dir && candidates.len() == 1 { candidates.first() } else { None });
        match pick {
            Some(rel) => jobs.push((txt.clone(), (*rel).clone())),
            None if in_labels_dir => {
                report.boxes.failed += 1;
                report.problem(txt, None, "YOLO labels for a photo that is not in the dataset");
            }
            None => {} // an unrelated text file
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let mut outcome =
        FileOutcome { file: index.root.join("labels"), kind: "YOLO boxes".into(), applied: 0, skipped: 0 };
    for chunk in jobs.chunks(500) {
        let mut problems = Vec::new();
        let counts = cat.edit_in(action, |e| {
            let mut counts = BoxCounts::default();
            for (txt, rel) in chunk {
                let photo = &index.photos[index.by_relative[rel]];
                let hint = hints.get(&photo.id).cloned().unwrap_or_default();
                let species = opts.species.clone().or(hint.species);
                let text = match std::fs::read(txt) {
                    Ok(b) => match String::from_utf8(b) {
                        Ok(t) => t,
                        Err(_) => {
                            counts.failed += 1;
                            problems.push((txt.clone(), None, "not UTF-8 text".to_string()));
                            continue;
                        }
                    },
                    Err(err) => {
                        counts.failed += 1;
                        problems.push((txt.clone(), None, format!("cannot read: {err}")));
                        continue;
                    }
                };
                let (lines, bad) = boxes::parse_yolo(&text);
                for p in bad {
                    counts.failed += 1;
                    problems.push((txt.clone(), Some(p.line), p.problem));
                }
                for (i, b) in lines.iter().enumerate() {
                    let named = class_names.get(b.class).and_then(|n| n.parse::<Part>().ok());
                    let part = species_part(species.as_deref(), named.or(hint.part), opts);
                    let bbox = BoxPx::from_yolo(b.cx, b.cy, b.w, b.h, photo.width, photo.height);
                    let new = BoxToAdd {
                        photo,
                        bbox,
                        part,
                        side: Side::Unknown,
                        species: species.clone(),
                        status: Status::Verified,
                    };
                    match add_box(e, &new)? {
                        BoxAdded::Added => counts.added += 1,
                        BoxAdded::Clipped(from) => {
                            counts.added += 1;
                            counts.clipped += 1;
                            problems.push((
                                txt.clone(),
                                Some(i + 1),
                                format!(
                                    "box {from} reaches outside the {}x{} photo; clipped",
                                    photo.width, photo.height
                                ),
                            ));
                        }
                        BoxAdded::AlreadyPresent => counts.already_present += 1,
                        BoxAdded::Outside => {
                            counts.failed += 1;
                            problems.push((
                                txt.clone(),
                                Some(i + 1),
                                format!("box {bbox} lies outside the {}x{} photo", photo.width, photo.height),
                            ));
                        }
                    }
                }
            }
            Ok(counts)
        })?;
        for (file, line, problem) in problems {
            report.problem(&file, line, problem);
        }
        outcome.applied += counts.added;
        outcome.skipped += counts.already_present + counts.failed;
        report.boxes.added += counts.added;
        report.boxes.clipped += counts.clipped;
        report.boxes.already_present += counts.already_present;
        report.boxes.failed += counts.failed;
    }
    report.files.push(outcome);
    Ok(())
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

struct BoxToAdd<'a> {
    photo: &'a Photo,
    bbox: BoxPx,
    part: Part,
    side: Side,
    species: Option<String>,
    status: Status,
}

enum BoxAdded {
    Added,
    Clipped(BoxPx),
    AlreadyPresent,
    Outside,
}

/// Adds an imported box unless the photo already has the same one.
fn add_box(e: &Edit, new: &BoxToAdd) -> crate::catalogue::Result<BoxAdded> {
    let fitted = match new.bbox.fit(new.photo.width, new.photo.height) {
        Fit::Outside => return Ok(BoxAdded::Outside),
        Fit::Inside(b) | Fit::Clipped(b) => b,
    };
    if find_same_box(e, new.photo.id, &fitted, new.part)?.is_some() {
        return Ok(BoxAdded::AlreadyPresent);
    }
    e.insert_annotation(&NewAnnotation {
        photo_id: new.photo.id,
        bbox: Some(fitted),
        part: new.part,
        side: new.side,
        source: Source::Imported,
        status: new.status,
        species: new.species.clone(),
        score: None,
    })?;
    Ok(if matches!(new.bbox.fit(new.photo.width, new.photo.height), Fit::Clipped(_)) {
        BoxAdded::Clipped(new.bbox)
    } else {
        BoxAdded::Added
    })
}

fn find_same_box(e: &Edit, photo: i64, bbox: &BoxPx, part: Part) -> crate::catalogue::Result<Option<i64>> {
    let mut stmt = e
        .conn()
        .prepare_cached("SELECT id, x, y, w, h FROM annotations WHERE photo_id = ?1 AND part = ?2 AND x IS NOT NULL")
        .map_err(|err| crate::catalogue::CatalogueError::Invalid(err.to_string()))?;
    let rows: Vec<(i64, BoxPx)> = stmt
        .query_map(rusqlite::params![photo, part.as_str()], |r| {
            Ok((r.get(0)?, BoxPx::new(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        })
        .and_then(|rows| rows.collect())
        .map_err(|err| crate::catalogue::CatalogueError::Invalid(err.to_string()))?;
    Ok(rows.into_iter().find(|(_, b)| b.iou(bbox) > 0.95).map(|(id, _)| id))
}

fn import_coco(
    cat: &mut Catalogue,
    action: i64,
    index: &PhotoIndex,
    json: &Path,
    hints: &HashMap<i64, Hint>,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let bytes = match std::fs::read(json) {
        Ok(b) => b,
        Err(e) => {
            report.problem(json, None, format!("cannot read: {e}"));
            return Ok(());
        }
    };
    let coco = match boxes::parse_coco(&bytes) {
        Ok(c) => c,
        Err(e) => {
            report.problem(json, None, e);
            return Ok(());
        }
    };
    let base = index.relative_dir(json);
    let mut problems: Vec<(Option<usize>, String)> =
        coco.problems.iter().map(|p| (Some(p.line), p.problem.clone())).collect();
    let mut images: HashMap<i64, &Photo> = HashMap::new();
    for img in &coco.images {
        match index.resolve(&img.file_name, &base) {
            Ok(p) => {
                images.insert(img.id, p);
            }
            Err(e) => problems.push((None, format!("image {}: {e}", img.id))),
        }
    }
    let mut outcome = FileOutcome { file: json.to_path_buf(), kind: "COCO boxes".into(), applied: 0, skipped: 0 };
    let counts = cat.edit_in(action, |e| {
        let mut counts = (BoxCounts::default(), LabelCounts::default());
        for (i, b) in coco.boxes.iter().enumerate() {
            let Some(photo) = images.get(&b.image_id) else {
                counts.0.failed += 1;
                problems.push((
                    Some(i + 1),
                    format!("annotation {} refers to image {} which is not in the dataset", i + 1, b.image_id),
                ));
                continue;
            };
            let hint = hints.get(&photo.id).cloned().unwrap_or_default();
            let species = opts.species.clone().or(hint.species);
            let part = b.category.as_deref().and_then(|c| c.parse::<Part>().ok()).or(hint.part);
            let part = species_part(species.as_deref(), part, opts);
            let side = b.side.as_deref().and_then(|s| s.parse().ok()).unwrap_or(Side::Unknown);
            let status = b.status.as_deref().and_then(|s| s.parse().ok()).unwrap_or(Status::Verified);
            let bbox = BoxPx::new(b.bbox[0], b.bbox[1], b.bbox[2], b.bbox[3]);
            let new = BoxToAdd { photo, bbox, part, side, species: species.clone(), status };
            let added = add_box(e, &new)?;
            match added {
                BoxAdded::Added => counts.0.added += 1,
                BoxAdded::Clipped(from) => {
                    counts.0.added += 1;
                    counts.0.clipped += 1;
                    problems.push((
                        Some(i + 1),
                        format!("box {from} reaches outside the {}x{} photo; clipped", photo.width, photo.height),
                    ));
                }
                BoxAdded::AlreadyPresent => counts.0.already_present += 1,
                BoxAdded::Outside => {
                    counts.0.failed += 1;
                    problems.push((
                        Some(i + 1),
                        format!("box {bbox} lies outside the {}x{} photo", photo.width, photo.height),
                    ));
                    continue;
                }
            }
            if let Some(code) = &b.individual
                && let Some(fitted) = match bbox.fit(photo.width, photo.height) {
                    Fit::Inside(f) | Fit::Clipped(f) => Some(f),
                    Fit::Outside => None,
                }
                && let Some(annotation) = find_same_box(e, photo.id, &fitted, part)?
            {
                match label_annotation(e, annotation, code, species.as_deref())? {
                    Labelled::Applied { new_individual } => {
                        counts.1.applied += 1;
                        counts.1.individuals_added += new_individual as usize;
                    }
                    Labelled::AlreadyPresent => counts.1.already_present += 1,
                    Labelled::Conflict(p) => {
                        counts.1.failed += 1;
                        problems.push((Some(i + 1), p));
                    }
                }
            }
        }
        Ok(counts)
    })?;
    outcome.applied = counts.0.added;
    outcome.skipped = counts.0.already_present + counts.0.failed;
    report.boxes.added += counts.0.added;
    report.boxes.clipped += counts.0.clipped;
    report.boxes.already_present += counts.0.already_present;
    report.boxes.failed += counts.0.failed;
    report.labels.applied += counts.1.applied;
    report.labels.already_present += counts.1.already_present;
    report.labels.individuals_added += counts.1.individuals_added;
    report.labels.failed += counts.1.failed;
    for (line, p) in problems {
        report.problem(json, line, p);
    }
    report.files.push(outcome);
    Ok(())
}

enum Labelled {
    Applied { new_individual: bool },
    AlreadyPresent,
    Conflict(String),
}

/// Identifies an annotation as the individual with `code`, creating the individual if new.
/// A different identification already recorded is never overwritten.
fn label_annotation(
    e: &Edit,
    annotation: i64,
    code: &str,
    species: Option<&str>,
) -> crate::catalogue::Result<Labelled> {
    let current = e.annotation_individual(annotation)?;
    if let Some(current) = current {
        return Ok(if current.code == code {
            Labelled::AlreadyPresent
        } else {
            Labelled::Conflict(format!("already identified as {}; not changed to {code}", current.code))
        });
    }
    let (individual, new_individual) = match e.individual_by_code(code)? {
        Some(i) => (i, false),
        None => (e.create_individual(Some(code), "", species)?, true),
    };
    e.identify(annotation, individual.id, How::Imported, None)?;
    Ok(Labelled::Applied { new_individual })
}

fn import_labels(
    cat: &mut Catalogue,
    action: i64,
    index: &PhotoIndex,
    csv: &Path,
    table: &labels::LabelTable,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let base = index.relative_dir(csv);
    let mut problems: Vec<(usize, String)> = table.problems.iter().map(|p| (p.line, p.problem.clone())).collect();
    let mut counts =
        LabelCounts { duplicate_rows: table.duplicates, failed: table.problems.len(), ..Default::default() };
    for chunk in table.rows.chunks(1000) {
        let chunk_counts = cat.edit_in(action, |e| {
            let mut c = LabelCounts::default();
            for row in chunk {
                let photo = match index.resolve(&row.image, &base) {
                    Ok(p) => p,
                    Err(err) => {
                        c.failed += 1;
                        problems.push((row.line, err));
                        continue;
                    }
                };
                for (k, v) in &row.extra {
                    e.tag_photo(photo.id, &format!("{k}={v}"))?;
                }
                let Some(code) = &row.individual else {
                    c.unlabelled += 1;
                    continue;
                };
                let species =
                    row.species.clone().or_else(|| opts.species.clone()).or(table.format.species().map(str::to_string));
                let part = species_part(species.as_deref(), row.part, opts);
                let annotations = cat_annotations(e, photo.id)?;
                let annotation = match annotations.as_slice() {
                    [] => e.insert_annotation(&NewAnnotation {
                        photo_id: photo.id,
                        bbox: None,
                        part,
                        side: row.side.unwrap_or(Side::Unknown),
                        source: Source::Imported,
                        status: Status::Verified,
                        species: species.clone(),
                        score: None,
                    })?,
                    [one] => *one,
                    many => {
                        c.failed += 1;
                        problems.push((
                            row.line,
                            format!(
                                "{} has {} boxes and a per-photo label cannot say which one is {code}; not applied",
                                row.image,
                                many.len()
                            ),
                        ));
                        continue;
                    }
                };
                match label_annotation(e, annotation, code, species.as_deref())? {
                    Labelled::Applied { new_individual } => {
                        c.applied += 1;
                        c.individuals_added += new_individual as usize;
                    }
                    Labelled::AlreadyPresent => c.already_present += 1,
                    Labelled::Conflict(p) => {
                        c.failed += 1;
                        problems.push((row.line, format!("{}: {p}", row.image)));
                    }
                }
            }
            Ok(c)
        })?;
        counts.applied += chunk_counts.applied;
        counts.already_present += chunk_counts.already_present;
        counts.unlabelled += chunk_counts.unlabelled;
        counts.individuals_added += chunk_counts.individuals_added;
        counts.failed += chunk_counts.failed;
    }
    problems.sort_by_key(|(line, _)| *line);
    for (line, p) in problems {
        report.problem(csv, Some(line), p);
    }
    report.files.push(FileOutcome {
        file: csv.to_path_buf(),
        kind: format!("labels, {}", table.format.name()),
        applied: counts.applied,
        skipped: counts.already_present + counts.unlabelled + counts.duplicate_rows + counts.failed,
    });
    let l = &mut report.labels;
    l.applied += counts.applied;
    l.already_present += counts.already_present;
    l.unlabelled += counts.unlabelled;
    l.duplicate_rows += counts.duplicate_rows;
    l.individuals_added += counts.individuals_added;
    l.failed += counts.failed;
    Ok(())
}

fn cat_annotations(e: &Edit, photo: i64) -> crate::catalogue::Result<Vec<i64>> {
    e.conn()
        .prepare_cached("SELECT id FROM annotations WHERE photo_id = ?1 AND status != 'rejected' ORDER BY id")
        .and_then(|mut s| s.query_map([photo], |r| r.get(0))?.collect())
        .map_err(|err| crate::catalogue::CatalogueError::Invalid(err.to_string()))
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RelinkReport {
    pub missing_before: usize,
    pub relinked: usize,
    pub still_missing: usize,
    pub problems: Vec<Problem>,
}

/// Finds photos whose files have moved by their content under `folder` and records their new paths.
pub fn relink(cat: &mut Catalogue, folder: &Path, progress: &dyn Progress) -> anyhow::Result<RelinkReport> {
    let folder = folder.canonicalize().map_err(|e| anyhow::anyhow!("cannot open {}: {e}", folder.display()))?;
    let missing: HashMap<String, Photo> = cat
        .photos()?
        .into_iter()
        .filter(|p| !cat.photo_file(&p.stored_path).exists())
        .map(|p| (p.hash.clone(), p))
        .collect();
    let mut report = RelinkReport { missing_before: missing.len(), ..Default::default() };
    if missing.is_empty() {
        return Ok(report);
    }
    let mut throwaway = ImportReport::default();
    let files = discover(&folder, &mut throwaway).photos;
    progress.stage("hashing", files.len() as u64);
    let found: Vec<(PathBuf, Result<String, String>)> = files
        .par_iter()
        .map(|f| {
            let h = std::fs::read(f).map(|b| photo::hash_bytes(&b)).map_err(|e| format!("cannot read: {e}"));
            progress.advance(1);
            (f.clone(), h)
        })
        .collect();
    let mut moves = Vec::new();
    for (file, hash) in found {
        match hash {
            Ok(h) => {
                if let Some(p) = missing.get(&h) {
                    match cat.stored_path(&file) {
                        Some(stored) => moves.push((p.id, stored)),
                        None => {
                            report.problems.push(Problem { file, line: None, problem: "file name is not UTF-8".into() })
                        }
                    }
                }
            }
            Err(problem) => report.problems.push(Problem { file, line: None, problem }),
        }
    }
    let mut seen = HashSet::new();
    moves.retain(|(id, _)| seen.insert(*id));
    report.relinked = moves.len();
    report.still_missing = report.missing_before - moves.len();
    cat.edit(&format!("relink photos from {}", folder.display()), |e| {
        for (id, stored) in &moves {
            e.relink_photo(*id, stored)?;
        }
        Ok(())
    })?;
    Ok(report)
}

impl std::fmt::Display for ImportReport {
    /// What `whaleid import` prints and the app shows after an import.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let r = self;
        let mut s = format!(
            "{}\n  photos: {} found, {} added, {} already in the catalogue, {} relinked, {} duplicate content, {} failed\n  \
         boxes: {} added ({} clipped), {} already present, {} failed\n  \
         labels: {} applied, {} already present, {} unlabelled, {} duplicate rows, {} failed; {} new individuals",
            r.dataset.display(),
            r.photos.found,
            r.photos.added,
            r.photos.already_present,
            r.photos.relinked,
            r.photos.duplicates,
            r.photos.failed,
            r.boxes.added,
            r.boxes.clipped,
            r.boxes.already_present,
            r.boxes.failed,
            r.labels.applied,
            r.labels.already_present,
            r.labels.unlabelled,
            r.labels.duplicate_rows,
            r.labels.failed,
            r.labels.individuals_added,
        );
        for f in &r.files {
            s.push_str(&format!("\n  {} ({}): {} applied, {} skipped", f.file.display(), f.kind, f.applied, f.skipped));
        }
        for p in &r.skipped {
            s.push_str(&format!("\n  skipped {p}"));
        }
        if !r.problems.is_empty() {
            s.push_str(&format!("\n  {} problem(s):", r.problems.len()));
            for p in &r.problems {
                s.push_str(&format!("\n    {p}"));
            }
        }
        f.write_str(&s)
    }
}
