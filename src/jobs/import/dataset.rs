//! The files of a dataset folder, and the catalogue's photos by the names label and box files
//! use for them.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::ImportReport;
use crate::base::photo;
use crate::catalogue::{Catalogue, Photo};

/// The files of a dataset folder, sorted so imports are repeatable.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    pub(super) photos: Vec<PathBuf>,
    pub(super) csvs: Vec<PathBuf>,
    pub(super) jsons: Vec<PathBuf>,
    /// Text files that may be YOLO labels (in a `labels` folder, or beside photos).
    pub(super) texts: Vec<PathBuf>,
    pub(super) class_files: Vec<PathBuf>,
}

pub(super) fn discover(root: &Path, report: &mut ImportReport) -> Discovered {
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
pub(super) struct PhotoIndex {
    pub(super) root: PathBuf,
    pub(super) photos: Vec<Photo>,
    pub(super) by_relative: HashMap<String, usize>,
    by_stored: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl PhotoIndex {
    /// File names are matched among the photos under `root`, or among all photos of the
    /// catalogue when a single labels or boxes file is imported on its own.
    pub(super) fn build(
        cat: &Catalogue,
        root: &Path,
        names_from_whole_catalogue: bool,
    ) -> crate::catalogue::Result<PhotoIndex> {
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
    pub(super) fn under_root(&self) -> impl Iterator<Item = (&String, &Photo)> {
        self.by_relative.iter().map(|(rel, &i)| (rel, &self.photos[i]))
    }

    /// Finds the photo a file names. `base` is the naming file's folder relative to the root.
    pub(super) fn resolve(&self, name: &str, base: &str) -> Result<&Photo, String> {
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

    pub(super) fn relative_dir(&self, file: &Path) -> String {
        file.parent()
            .and_then(|d| d.strip_prefix(&self.root).ok())
            .and_then(|d| d.to_str())
            .map(|s| s.replace('\\', "/"))
            .unwrap_or_default()
    }
}
