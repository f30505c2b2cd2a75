//! Importing a dataset: photos (recursive), identity labels (CSV), boxes (YOLO, COCO).
//!
//! The format of each file is recognised from its content. Every problem is reported
//! per file (and per row) while the rest goes on; photos are committed in batches, so
//! a crash loses at most the batch in flight and running the import again finishes it
//! without duplicates.

pub mod boxes;
mod dataset;
pub mod labels;
mod photos;
mod record_boxes;
mod record_labels;
mod relink;
mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::base::ids::PhotoId;
use crate::base::photo;
use crate::base::progress::Progress;
use crate::base::vocabulary::Part;
use crate::catalogue::Catalogue;

use dataset::{Discovered, PhotoIndex, discover};
pub use relink::{RelinkReport, relink};
pub use report::{BoxCounts, FileOutcome, ImportReport, LabelCounts, PhotoCounts, Problem};

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

/// What the labels say about a photo's animal, used for boxes whose files do not say: the
/// species as its labels' row would record it (the row's, else `--species`, else the one its
/// format implies) and the part only where the row names one, so that `--part` still comes
/// before the species' usual part.
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

fn label_hints(
    index: &PhotoIndex,
    tables: &[(&PathBuf, labels::LabelTable)],
    opts: &ImportOptions,
) -> HashMap<PhotoId, Hint> {
    let mut hints = HashMap::new();
    for (csv, table) in tables {
        let base = index.relative_dir(csv);
        for row in &table.rows {
            if let Ok(photo) = index.resolve(&row.image, &base) {
                let species =
                    row.species.clone().or_else(|| opts.species.clone()).or(table.format.species().map(str::to_string));
                hints.insert(photo.id, Hint { species, part: row.part });
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
    photos::import_photos(cat, action, &found.photos, opts, progress, report)?;
    let index = PhotoIndex::build(cat, root, single_file)?;
    let mut tables = Vec::new();
    for csv in &found.csvs {
        match std::fs::read(csv).map_err(|e| format!("cannot read: {e}")).and_then(|b| labels::parse_labels(&b)) {
            Ok(table) => tables.push((csv, table)),
            Err(e) => report.problem(csv, None, e),
        }
    }
    let hints = label_hints(&index, &tables, opts);
    record_boxes::import_yolo(cat, action, &index, found, &hints, opts, report)?;
    for json in &found.jsons {
        record_boxes::import_coco(cat, action, &index, json, &hints, opts, report)?;
    }
    for (csv, table) in &tables {
        record_labels::import_labels(cat, action, &index, csv, table, opts, report)?;
    }
    Ok(())
}
