//! Recording identity labels: a labels CSV names the individual in each photo (and may tag
//! it), and an identification already recorded is never overwritten.

use std::path::Path;

use super::dataset::PhotoIndex;
use super::{FileOutcome, ImportOptions, ImportReport, LabelCounts, labels, species_part};
use crate::base::ids::AnnotationId;
use crate::base::vocabulary::{How, Side, Source, Status};
use crate::catalogue::{Catalogue, Edit, NewAnnotation};

pub(super) enum Labelled {
    Applied { new_individual: bool },
    AlreadyPresent,
    Conflict(String),
}

/// Identifies an annotation as the individual with `code`, creating the individual if new.
/// A different identification already recorded is never overwritten.
pub(super) fn label_annotation(
    e: &Edit,
    annotation: AnnotationId,
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

pub(super) fn import_labels(
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
                let annotations = e.unrejected_annotations_of_photo(photo.id)?;
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
