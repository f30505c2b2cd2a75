//! Exports for the tools biologists feed: a catalogue CSV (one row per annotation),
//! COCO JSON and YOLO labels (every photo, with or without boxes), crops as image
//! files, and Program MARK capture histories for population studies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use serde::Serialize;

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use crate::base::progress::Progress;
use crate::base::vocabulary::{BoxPx, How, Part, Status};
use crate::catalogue::{Annotation, Catalogue, Individual, Photo};
use crate::jobs::import::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// One row per annotation: photo, box, part, side, status, individual, date, position.
    Csv,
    /// COCO JSON: every photo, boxes with whaleid's attributes (individual, side, status).
    Coco,
    /// YOLO labels: one .txt per photo (empty when it has no box), classes.txt, images.txt.
    Yolo,
    /// The crops as JPEG files, one folder per individual.
    Crops,
    /// Program MARK capture histories (.inp): individual x sampling occasion, 0/1.
    Mark,
    /// embeddings.npy (f32 [n, d], one row per crop) and labels.csv with the matching rows.
    Embeddings,
}

/// The sampling occasion of a capture history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Occasion {
    #[default]
    Day,
    Month,
    Year,
}

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub occasion: Occasion,
    /// Rejected boxes are left out unless asked for.
    pub include_rejected: bool,
    /// Whose embeddings (a model key); default: the model with the most embeddings.
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub format: ExportFormat,
    pub written: Vec<PathBuf>,
    /// Rows, boxes, crops or capture histories written.
    pub items: usize,
    pub skipped: Vec<Problem>,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exported {} item(s) as {:?}:", self.items, self.format)?;
        for w in &self.written {
            write!(f, "\n  {}", w.display())?;
        }
        for p in &self.skipped {
            write!(f, "\n  skipped {p}")?;
        }
        Ok(())
    }
}

/// An annotation with its photo and identity: the unit every export writes.
struct Row {
    annotation: Annotation,
    photo_id: PhotoId,
    individual: Option<Individual>,
    how: Option<How>,
}

fn load(cat: &Catalogue, opts: &ExportOptions) -> anyhow::Result<(Vec<Photo>, Vec<Row>)> {
    let photos = cat.photos()?;
    let individuals: HashMap<IndividualId, Individual> = cat.individuals()?.into_iter().map(|i| (i.id, i)).collect();
    let mut rows = Vec::new();
    for p in &photos {
        for a in cat.annotations_of_photo(p.id)? {
            if a.status == Status::Rejected && !opts.include_rejected {
                continue;
            }
            let ident = cat.identification(a.id)?;
            rows.push(Row {
                photo_id: p.id,
                individual: ident.as_ref().and_then(|i| individuals.get(&i.individual_id).cloned()),
                how: ident.map(|i| i.how),
                annotation: a,
            });
        }
    }
    Ok((photos, rows))
}

/// `out` itself when it names a file, else `out/default_name`.
fn file_target(out: &Path, default_name: &str, extension: &str) -> PathBuf {
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case(extension)) {
        out.to_path_buf()
    } else {
        out.join(default_name)
    }
}

fn create_file(path: &Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let f = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(std::io::BufWriter::new(f))
}

pub fn export(
    cat: &Catalogue,
    format: ExportFormat,
    out: &Path,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> anyhow::Result<ExportReport> {
    let (photos, rows) = load(cat, opts)?;
    let mut report = ExportReport { format, written: Vec::new(), items: 0, skipped: Vec::new() };
    match format {
        ExportFormat::Csv => export_csv(cat, &photos, &rows, out, &mut report)?,
        ExportFormat::Coco => export_coco(&photos, &rows, out, &mut report)?,
        ExportFormat::Yolo => export_yolo(cat, &photos, &rows, out, &mut report)?,
        ExportFormat::Crops => export_crops(cat, &photos, &rows, out, progress, &mut report)?,
        ExportFormat::Mark => export_mark(&photos, &rows, out, opts.occasion, &mut report)?,
        ExportFormat::Embeddings => export_embeddings(cat, &photos, &rows, out, opts.model.as_deref(), &mut report)?,
    }
    Ok(report)
}

fn export_embeddings(
    cat: &Catalogue,
    photos: &[Photo],
    rows: &[Row],
    out: &Path,
    model: Option<&str>,
    report: &mut ExportReport,
) -> anyhow::Result<()> {
    let model = match model {
        Some(m) => m.to_string(),
        None => match cat.embedding_models()?.into_iter().next() {
            Some((m, _)) => m,
            None => anyhow::bail!("{}: no embeddings yet: run `whaleid embed` first", cat.path().display()),
        },
    };
    let load = crate::jobs::search::Gallery::from_catalogue(cat, &model)?;
    let gallery = &load.gallery;
    let row_of: HashMap<AnnotationId, &Row> = rows.iter().map(|r| (r.annotation.id, r)).collect();
    let path_of: HashMap<PhotoId, &str> = photos.iter().map(|p| (p.id, p.stored_path.as_str())).collect();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create folder {}", out.display()))?;
    let labels_path = out.join("labels.csv");
    let mut labels = csv::Writer::from_writer(create_file(&labels_path)?);
    labels.write_record(["row", "annotation", "photo", "individual", "part", "side", "species", "status"])?;
    let mut matrix: Vec<f32> = Vec::with_capacity(gallery.len() * gallery.dim());
    let mut n = 0usize;
    for (i, entry) in gallery.entries().iter().enumerate() {
        let Some(row) = row_of.get(&entry.annotation) else { continue };
        matrix.extend_from_slice(gallery.vector(i));
        labels.write_record([
            n.to_string(),
            entry.annotation.to_string(),
            path_of.get(&row.photo_id).copied().unwrap_or_default().to_string(),
            row.individual.as_ref().map(|d| d.code.clone()).unwrap_or_default(),
            row.annotation.part.to_string(),
            row.annotation.side.to_string(),
            row.annotation.species.clone().unwrap_or_default(),
            row.annotation.status.to_string(),
        ])?;
        n += 1;
    }
    labels.flush()?;
    let npy_path = out.join("embeddings.npy");
    let mut npy = create_file(&npy_path)?;
    write_npy_f32(&mut npy, &matrix, n, gallery.dim())?;
    npy.flush()?;
    report.items = n;
    if load.stale + load.missing > 0 {
        report.skipped.push(Problem {
            file: cat.path().to_path_buf(),
            line: None,
            problem: format!(
                "{} crop(s) have no up-to-date embedding from {model} (run `whaleid embed`)",
                load.stale + load.missing
            ),
        });
    }
    report.written.push(npy_path);
    report.written.push(labels_path);
    Ok(())
}

/// NumPy `.npy` version 1.0: magic, header dict padded to a multiple of 64 bytes, then the
/// row-major little-endian f32 data.
pub fn write_npy_f32(w: &mut impl Write, data: &[f32], rows: usize, cols: usize) -> std::io::Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 6 + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

fn export_csv(
    cat: &Catalogue,
    photos: &[Photo],
    rows: &[Row],
    out: &Path,
    report: &mut ExportReport,
) -> anyhow::Result<()> {
    let path = file_target(out, "catalogue.csv", "csv");
    let by_id: HashMap<PhotoId, &Photo> = photos.iter().map(|p| (p.id, p)).collect();
    let mut w = csv::Writer::from_writer(create_file(&path)?);
    w.write_record([
        "annotation_id",
        "image",
        "path",
        "photo_width",
        "photo_height",
        "x",
        "y",
        "w",
        "h",
        "part",
        "side",
        "status",
        "source",
        "species",
        "individual_id",
        "individual_name",
        "how",
        "taken_at",
        "latitude",
        "longitude",
    ])?;
    let num = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    for r in rows {
        let p = by_id[&r.photo_id];
        let a = &r.annotation;
        let b = a.bbox;
        w.write_record([
            a.id.to_string(),
            p.stored_path.clone(),
            cat.photo_file(&p.stored_path).display().to_string(),
            p.facts.width.to_string(),
            p.facts.height.to_string(),
            num(b.map(|b| b.x)),
            num(b.map(|b| b.y)),
            num(b.map(|b| b.w)),
            num(b.map(|b| b.h)),
            a.part.to_string(),
            a.side.to_string(),
            a.status.to_string(),
            a.source.to_string(),
            a.species.clone().or_else(|| r.individual.as_ref().and_then(|i| i.species.clone())).unwrap_or_default(),
            r.individual.as_ref().map(|i| i.code.clone()).unwrap_or_default(),
            r.individual.as_ref().map(|i| i.name.clone()).unwrap_or_default(),
            r.how.map(|h| h.to_string()).unwrap_or_default(),
            p.facts.taken_at.clone().unwrap_or_default(),
            p.facts.latitude.map(|v| format!("{v:.6}")).unwrap_or_default(),
            p.facts.longitude.map(|v| format!("{v:.6}")).unwrap_or_default(),
        ])?;
        report.items += 1;
    }
    w.flush()?;
    report.written.push(path);
    Ok(())
}

fn export_coco(photos: &[Photo], rows: &[Row], out: &Path, report: &mut ExportReport) -> anyhow::Result<()> {
    let path = file_target(out, "coco.json", "json");
    let images: Vec<_> = photos
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id, "file_name": p.stored_path, "width": p.facts.width, "height": p.facts.height,
                "date_captured": p.facts.taken_at,
            })
        })
        .collect();
    let by_id: HashMap<PhotoId, &Photo> = photos.iter().map(|p| (p.id, p)).collect();
    let annotations: Vec<_> = rows
        .iter()
        .map(|r| {
            let p = by_id[&r.photo_id];
            let b = r.annotation.bbox.unwrap_or_else(|| BoxPx::whole(p.facts.width, p.facts.height));
            serde_json::json!({
                "id": r.annotation.id, "image_id": r.photo_id, "category_id": part_category(r.annotation.part),
                "bbox": [b.x, b.y, b.w, b.h], "area": b.area(), "iscrowd": 0,
                "attributes": {
                    "individual_id": r.individual.as_ref().map(|i| &i.code),
                    "individual_name": r.individual.as_ref().map(|i| &i.name),
                    "side": r.annotation.side, "status": r.annotation.status, "source": r.annotation.source,
                    "how": r.how, "whole_photo": r.annotation.bbox.is_none(),
                },
            })
        })
        .collect();
    let categories: Vec<_> = Part::ALL
        .iter()
        .map(|p| serde_json::json!({"id": part_category(*p), "name": p.as_str(), "supercategory": "animal"}))
        .collect();
    let doc = serde_json::json!({
        "info": {"description": "exported by whaleid", "date_created": crate::catalogue::now()},
        "images": images, "annotations": annotations, "categories": categories,
    });
    let mut w = create_file(&path)?;
    serde_json::to_writer(&mut w, &doc)?;
    w.flush()?;
    report.items = rows.len();
    report.written.push(path);
    Ok(())
}

fn part_category(p: Part) -> usize {
    Part::ALL.iter().position(|q| *q == p).unwrap_or(0) + 1
}

fn export_yolo(
    cat: &Catalogue,
    photos: &[Photo],
    rows: &[Row],
    out: &Path,
    report: &mut ExportReport,
) -> anyhow::Result<()> {
    let labels = out.join("labels");
    std::fs::create_dir_all(&labels).with_context(|| format!("cannot create folder {}", labels.display()))?;
    let mut by_photo: HashMap<PhotoId, Vec<&Row>> = HashMap::new();
    for r in rows.iter().filter(|r| r.annotation.bbox.is_some()) {
        by_photo.entry(r.photo_id).or_default().push(r);
    }
    let mut used = BTreeSet::new();
    let mut list = create_file(&out.join("images.txt"))?;
    for p in photos {
        let stem = Path::new(&p.stored_path).file_stem().and_then(|s| s.to_str()).unwrap_or("photo").to_string();
        let name = if used.insert(stem.clone()) { stem } else { format!("{stem}_{}", p.id) };
        let mut text = String::new();
        for r in by_photo.get(&p.id).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(b) = r.annotation.bbox else { continue };
            let [cx, cy, w, h] = b.to_yolo(p.facts.width, p.facts.height);
            text.push_str(&format!("{} {cx:.6} {cy:.6} {w:.6} {h:.6}\n", part_category(r.annotation.part) - 1));
            report.items += 1;
        }
        let file = labels.join(format!("{name}.txt"));
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        writeln!(list, "{}", cat.photo_file(&p.stored_path).display())?;
    }
    list.flush()?;
    let classes: String = Part::ALL.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(out.join("classes.txt"), classes)?;
    report.written.extend([labels, out.join("classes.txt"), out.join("images.txt")]);
    Ok(())
}

/// A file-name-safe version of an individual's code.
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn export_crops(
    cat: &Catalogue,
    photos: &[Photo],
    rows: &[Row],
    out: &Path,
    progress: &dyn Progress,
    report: &mut ExportReport,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create folder {}", out.display()))?;
    let mut by_photo: BTreeMap<PhotoId, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_photo.entry(r.photo_id).or_default().push(r);
    }
    // Paths are resolved up front: the catalogue's connection stays on this thread.
    let files: HashMap<PhotoId, (PathBuf, &str)> =
        photos.iter().map(|p| (p.id, (cat.photo_file(&p.stored_path), p.stored_path.as_str()))).collect();
    progress.stage("crops", rows.len() as u64);
    let results: Vec<Result<Vec<PathBuf>, Problem>> = by_photo
        .par_iter()
        .map(|(photo_id, rows)| {
            let (file, stored) = &files[photo_id];
            let img = crate::base::photo::decode_file(file).map_err(|problem| Problem {
                file: file.clone(),
                line: None,
                problem,
            })?;
            let stem = Path::new(stored).file_stem().and_then(|s| s.to_str()).unwrap_or("photo").to_string();
            let mut written = Vec::new();
            for r in rows {
                let folder =
                    r.individual.as_ref().map(|i| safe_name(&i.code)).unwrap_or_else(|| "_unidentified".into());
                let dir = out.join(folder);
                let target = dir.join(format!("{}_a{}.jpg", safe_name(&stem), r.annotation.id));
                let crop = crate::base::crop::crop(&img, r.annotation.bbox);
                std::fs::create_dir_all(&dir)
                    .and_then(|_| crop.to_rgb8().save(&target).map_err(std::io::Error::other))
                    .map_err(|e| Problem { file: target.clone(), line: None, problem: format!("cannot write: {e}") })?;
                written.push(target);
                progress.advance(1);
            }
            Ok(written)
        })
        .collect();
    for r in results {
        match r {
            Ok(files) => {
                report.items += files.len();
            }
            Err(p) => report.skipped.push(p),
        }
    }
    report.written.push(out.to_path_buf());
    Ok(())
}

fn occasion_of(taken_at: &str, occasion: Occasion) -> Option<String> {
    let date = taken_at.get(..10)?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(match occasion {
        Occasion::Day => date.to_string(),
        Occasion::Month => date[..7].to_string(),
        Occasion::Year => date[..4].to_string(),
    })
}

fn export_mark(
    photos: &[Photo],
    rows: &[Row],
    out: &Path,
    occasion: Occasion,
    report: &mut ExportReport,
) -> anyhow::Result<()> {
    let path = file_target(out, "capture_histories.inp", "inp");
    let by_id: HashMap<PhotoId, &Photo> = photos.iter().map(|p| (p.id, p)).collect();
    let mut captures: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut undated: BTreeSet<String> = BTreeSet::new();
    for r in rows {
        // Captures are what people decided: confirmed or imported, never a model's guess.
        let (Some(ind), Some(How::Confirmed | How::Imported)) = (&r.individual, r.how) else { continue };
        match by_id[&r.photo_id].facts.taken_at.as_deref().and_then(|t| occasion_of(t, occasion)) {
            Some(o) => {
                captures.entry(ind.code.clone()).or_default().insert(o);
            }
            None => {
                undated.insert(ind.code.clone());
            }
        }
    }
    let occasions: Vec<String> = captures.values().flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let mut w = create_file(&path)?;
    writeln!(
        w,
        "/* whaleid capture histories: {} individuals, {} occasions by {:?}: {} */",
        captures.len(),
        occasions.len(),
        occasion,
        occasions.join(" ")
    )?;
    for (code, seen) in &captures {
        let history: String = occasions.iter().map(|o| if seen.contains(o) { '1' } else { '0' }).collect();
        writeln!(w, "/* {code} */ {history} 1;")?;
    }
    w.flush()?;
    let occasions_csv = path.with_extension("occasions.csv");
    let mut o = create_file(&occasions_csv)?;
    writeln!(o, "occasion,period")?;
    for (i, period) in occasions.iter().enumerate() {
        writeln!(o, "{},{period}", i + 1)?;
    }
    o.flush()?;
    for code in undated.difference(&captures.keys().cloned().collect()) {
        report.skipped.push(Problem {
            file: path.clone(),
            line: None,
            problem: format!("{code}: no sighting has a date (EXIF DateTimeOriginal); left out"),
        });
    }
    report.items = captures.len();
    report.written.extend([path, occasions_csv]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occasions_group_dates_by_day_month_or_year() {
        assert_eq!(occasion_of("2024-06-03T10:11:12", Occasion::Day).as_deref(), Some("2024-06-03"));
        assert_eq!(occasion_of("2024-06-03T10:11:12", Occasion::Month).as_deref(), Some("2024-06"));
        assert_eq!(occasion_of("2024-06-03T10:11:12", Occasion::Year).as_deref(), Some("2024"));
        assert_eq!(occasion_of("garbage", Occasion::Day), None);
    }
}
