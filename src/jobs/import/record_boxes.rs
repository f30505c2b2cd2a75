//! Recording the boxes of YOLO label files and COCO JSON files (COCO may also name the
//! individual in each box).

use std::collections::HashMap;
use std::path::Path;

use super::dataset::{Discovered, PhotoIndex};
use super::record_labels::{Labelled, label_annotation};
use super::{BoxCounts, FileOutcome, Hint, ImportOptions, ImportReport, LabelCounts, boxes, species_part};
use crate::base::ids::{AnnotationId, PhotoId};
use crate::base::vocabulary::{BoxPx, Fit, Part, Side, Source, Status};
use crate::catalogue::{Catalogue, Edit, NewAnnotation, Photo};

/// The YOLO label file of each photo: `labels/NAME.txt` in the usual layouts, or `NAME.txt` beside it.
pub(super) fn import_yolo(
    cat: &mut Catalogue,
    action: i64,
    index: &PhotoIndex,
    found: &Discovered,
    hints: &HashMap<PhotoId, Hint>,
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
                let species = hint.species.or_else(|| opts.species.clone());
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
                    let bbox = BoxPx::from_yolo(b.cx, b.cy, b.w, b.h, photo.facts.width, photo.facts.height);
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
                                    photo.facts.width, photo.facts.height
                                ),
                            ));
                        }
                        BoxAdded::AlreadyPresent => counts.already_present += 1,
                        BoxAdded::Outside => {
                            counts.failed += 1;
                            problems.push((
                                txt.clone(),
                                Some(i + 1),
                                format!(
                                    "box {bbox} lies outside the {}x{} photo",
                                    photo.facts.width, photo.facts.height
                                ),
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
    let fitted = match new.bbox.fit(new.photo.facts.width, new.photo.facts.height) {
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
    Ok(if matches!(new.bbox.fit(new.photo.facts.width, new.photo.facts.height), Fit::Clipped(_)) {
        BoxAdded::Clipped(new.bbox)
    } else {
        BoxAdded::Added
    })
}

fn find_same_box(e: &Edit, photo: PhotoId, bbox: &BoxPx, part: Part) -> crate::catalogue::Result<Option<AnnotationId>> {
    Ok(e.boxes_of_photo(photo, part)?.into_iter().find(|(_, b)| b.iou(bbox) > 0.95).map(|(id, _)| id))
}

pub(super) fn import_coco(
    cat: &mut Catalogue,
    action: i64,
    index: &PhotoIndex,
    json: &Path,
    hints: &HashMap<PhotoId, Hint>,
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
    // Keyed by the COCO file's own image ids.
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
            let species = hint.species.or_else(|| opts.species.clone());
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
                        format!(
                            "box {from} reaches outside the {}x{} photo; clipped",
                            photo.facts.width, photo.facts.height
                        ),
                    ));
                }
                BoxAdded::AlreadyPresent => counts.0.already_present += 1,
                BoxAdded::Outside => {
                    counts.0.failed += 1;
                    problems.push((
                        Some(i + 1),
                        format!("box {bbox} lies outside the {}x{} photo", photo.facts.width, photo.facts.height),
                    ));
                    continue;
                }
            }
            if let Some(code) = &b.individual
                && let Some(fitted) = match bbox.fit(photo.facts.width, photo.facts.height) {
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
