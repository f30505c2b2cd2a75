//! Finding photos whose files have moved, by their content.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::dataset::discover;
use super::{ImportReport, Problem};
use crate::base::photo;
use crate::base::progress::Progress;
use crate::catalogue::{Catalogue, Photo};

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
        .map(|p| (p.facts.hash.clone(), p))
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

impl std::fmt::Display for RelinkReport {
    /// What `whaleid relink` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} photo(s) were missing; relinked {}, still missing {}",
            self.missing_before, self.relinked, self.still_missing
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
