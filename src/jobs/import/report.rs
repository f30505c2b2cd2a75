//! What an import did: counts per kind of record, what each file contributed, and every
//! problem by file and line; it prints itself for the command line and the app.

use std::path::{Path, PathBuf};

use serde::Serialize;

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
    /// The photos this import added (detection runs on them next in the app).
    #[serde(skip)]
    pub added_photos: Vec<crate::base::ids::PhotoId>,
}

impl ImportReport {
    pub(super) fn problem(&mut self, file: &Path, line: Option<usize>, problem: impl Into<String>) {
        self.problems.push(Problem { file: file.to_path_buf(), line, problem: problem.into() });
    }
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
