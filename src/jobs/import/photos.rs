//! Importing photo files: probed in parallel, committed in batches, and recognised by their
//! content when they are already catalogued elsewhere (a moved photo is relinked).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{ImportOptions, ImportReport, Problem};
use crate::base::photo::{self, PhotoFacts};
use crate::base::progress::Progress;
use crate::catalogue::{Catalogue, Edit, NewPhoto};

pub(super) fn import_photos(
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
        let probed: Vec<Result<PhotoFacts, String>> = batch
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
                PhotoOutcome::Added(id) => {
                    report.photos.added += 1;
                    report.added_photos.push(id);
                }
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
    Added(crate::base::ids::PhotoId),
    Relinked(PathBuf, String),
    Duplicate(PathBuf, String),
    Failed(PathBuf, String),
}

/// Records a probed photo, recognising one already catalogued elsewhere by its content.
fn record_photo(e: &Edit, file: &Path, stored: &str, info: PhotoFacts) -> crate::catalogue::Result<PhotoOutcome> {
    let same = e.photo_with_hash(&info.hash)?;
    if let Some((id, old_path)) = same {
        let old_file = resolve_stored(file, stored, &old_path);
        if !old_file.exists() {
            e.relink_photo(id, stored)?;
            return Ok(PhotoOutcome::Relinked(file.to_path_buf(), old_path));
        }
        return Ok(PhotoOutcome::Duplicate(file.to_path_buf(), old_path));
    }
    let id = e.insert_photo(&NewPhoto { stored_path: stored.to_string(), facts: info })?;
    Ok(PhotoOutcome::Added(id))
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
