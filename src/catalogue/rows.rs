//! The lists that show thousands of records, each read in one query: a row per photo for the
//! library, a row per individual, a row per crop for identification.

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use std::collections::BTreeSet;
use std::path::PathBuf;

use super::records::bbox_from_columns;
use super::{Catalogue, Individual, Result, individual_label};
use crate::base::vocabulary::{BoxPx, How, Hundredths, Part, Side, Source, Status};

/// One photo in the library grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoRow {
    pub id: PhotoId,
    pub stored_path: String,
    /// Where the file is on this machine.
    pub file: PathBuf,
    pub hash: String,
    pub width: u32,
    pub height: u32,
    pub taken_at: Option<String>,
    pub annotations: u32,
    /// Annotations with a drawn box (the others cover the whole photo).
    pub boxes: u32,
    pub unreviewed: u32,
    pub verified: u32,
    pub rejected: u32,
    /// The scores of its detector proposals still unreviewed (those that have a score).
    pub proposal_scores: Vec<f64>,
    pub parts: Vec<Part>,
    pub species: Vec<String>,
    /// The individuals identified in it, by id.
    pub individuals: Vec<IndividualId>,
    pub tags: Vec<String>,
}

impl PhotoRow {
    pub fn file_name(&self) -> &str {
        self.stored_path.rsplit('/').next().unwrap_or(&self.stored_path)
    }

    /// `YYYY-MM-DD` of the photo, when the camera recorded it.
    pub fn date(&self) -> Option<&str> {
        self.taken_at.as_deref().map(|t| t.get(..10).unwrap_or(t))
    }

    /// Unreviewed boxes left to review when proposals scoring under `threshold` are hidden.
    pub fn unreviewed_shown(&self, threshold: Hundredths) -> u32 {
        let hidden = self.proposal_scores.iter().filter(|&&s| !threshold.reached_by(s)).count();
        self.unreviewed.saturating_sub(hidden as u32)
    }

    /// The lowest score of its proposals that are shown at `threshold`: how doubtful the photo is.
    pub fn most_doubtful(&self, threshold: Hundredths) -> Option<f64> {
        self.proposal_scores.iter().copied().filter(|&s| threshold.reached_by(s)).min_by(f64::total_cmp)
    }
}

const PHOTO_ROW_SQL: &str = "
    SELECT p.id, p.path, p.hash, p.width, p.height, p.taken_at,
           count(a.id), count(a.x),
           coalesce(sum(a.status = 'unreviewed'), 0), coalesce(sum(a.status = 'verified'), 0),
           coalesce(sum(a.status = 'rejected'), 0),
           group_concat(CASE WHEN a.source = 'detector' AND a.status = 'unreviewed' THEN a.score END),
           group_concat(DISTINCT a.part), group_concat(DISTINCT a.species), group_concat(DISTINCT i.individual_id),
           (SELECT group_concat(t.tag, char(31)) FROM photo_tags t WHERE t.photo_id = p.id)
    FROM photos p
    LEFT JOIN annotations a ON a.photo_id = p.id
    LEFT JOIN identifications i ON i.annotation_id = a.id";

fn photo_row(cat: &Catalogue, r: &rusqlite::Row) -> rusqlite::Result<PhotoRow> {
    let list = |i: usize, sep: char| -> rusqlite::Result<Vec<String>> {
        Ok(r.get::<_, Option<String>>(i)?
            .map(|s| s.split(sep).filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default())
    };
    let stored_path: String = r.get(1)?;
    Ok(PhotoRow {
        id: r.get(0)?,
        file: cat.photo_file(&stored_path),
        stored_path,
        hash: r.get(2)?,
        width: r.get(3)?,
        height: r.get(4)?,
        taken_at: r.get(5)?,
        annotations: r.get(6)?,
        boxes: r.get(7)?,
        unreviewed: r.get(8)?,
        verified: r.get(9)?,
        rejected: r.get(10)?,
        proposal_scores: list(11, ',')?.iter().filter_map(|s| s.parse().ok()).collect(),
        parts: list(12, ',')?.iter().filter_map(|p| p.parse().ok()).collect(),
        species: list(13, ',')?,
        individuals: list(14, ',')?.iter().filter_map(|i| i.parse().ok().map(IndividualId)).collect(),
        tags: list(15, '\u{1f}')?,
    })
}

/// Every photo, in import order.
pub fn photo_rows(cat: &Catalogue) -> Result<Vec<PhotoRow>> {
    let sql = format!("{PHOTO_ROW_SQL} GROUP BY p.id ORDER BY p.id");
    let mut stmt = cat.conn.prepare(&sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt.query_map([], |r| photo_row(cat, r)).and_then(Iterator::collect).map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}

/// The rows of some photos (after an edit touched them); photos that no longer exist are absent.
pub fn photo_rows_of(cat: &Catalogue, ids: &BTreeSet<PhotoId>) -> Result<Vec<PhotoRow>> {
    let sql = format!("{PHOTO_ROW_SQL} WHERE p.id = ?1 GROUP BY p.id");
    let mut stmt = cat.conn.prepare_cached(&sql).map_err(|e| cat.sql_err(e))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = stmt.query_map([id], |r| photo_row(cat, r)).map_err(|e| cat.sql_err(e))?;
        if let Some(row) = rows.next() {
            out.push(row.map_err(|e| cat.sql_err(e))?);
        }
    }
    Ok(out)
}

/// One individual in the individuals list.
#[derive(Debug, Clone, PartialEq)]
pub struct IndividualRow {
    pub individual: Individual,
    pub sightings: u32,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

impl IndividualRow {
    /// `SYN-0003 "Salt"` or just the code.
    pub fn label(&self) -> String {
        individual_label(&self.individual)
    }
}

pub fn individual_rows(cat: &Catalogue) -> Result<Vec<IndividualRow>> {
    let sql =
        "SELECT v.id, v.code, v.name, v.species, v.notes, count(i.annotation_id), min(p.taken_at), max(p.taken_at)
               FROM individuals v
               LEFT JOIN identifications i ON i.individual_id = v.id
               LEFT JOIN annotations a ON a.id = i.annotation_id
               LEFT JOIN photos p ON p.id = a.photo_id
               GROUP BY v.id ORDER BY v.code";
    let mut stmt = cat.conn.prepare_cached(sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(IndividualRow {
                individual: Individual {
                    id: r.get(0)?,
                    code: r.get(1)?,
                    name: r.get(2)?,
                    species: r.get(3)?,
                    notes: r.get(4)?,
                },
                sightings: r.get(5)?,
                first_seen: r.get(6)?,
                last_seen: r.get(7)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}

/// One crop as the identification panels show it: where its pixels are, what it is, and who
/// it shows. Rejected crops are left out (they are never searched).
#[derive(Debug, Clone)]
pub struct CropInfo {
    pub annotation: AnnotationId,
    pub photo: PhotoId,
    pub hash: String,
    pub file: PathBuf,
    pub stored_path: String,
    pub bbox: Option<BoxPx>,
    pub photo_size: (u32, u32),
    pub part: Part,
    pub side: Side,
    pub species: Option<String>,
    pub source: Source,
    pub status: Status,
    /// The detector's confidence, for a box a detector proposed.
    pub score: Option<f64>,
    pub individual: Option<IndividualId>,
    pub code: Option<String>,
    pub how: Option<How>,
}

impl CropInfo {
    pub fn file_name(&self) -> &str {
        self.stored_path.rsplit('/').next().unwrap_or(&self.stored_path)
    }

    /// What identification still owes this crop: unidentified, or a label nobody confirmed.
    pub fn needs_identification(&self) -> bool {
        self.individual.is_none() || self.how != Some(How::Confirmed)
    }
}

/// Every crop that is not rejected, in annotation order, in one query.
pub fn crop_infos(cat: &Catalogue) -> Result<Vec<CropInfo>> {
    let sql = "SELECT a.id, a.photo_id, p.hash, p.path, p.width, p.height, a.x, a.y, a.w, a.h, a.part, a.side,
                      a.species, a.status, i.individual_id, v.code, i.how, a.source, a.score
               FROM annotations a
               JOIN photos p ON p.id = a.photo_id
               LEFT JOIN identifications i ON i.annotation_id = a.id
               LEFT JOIN individuals v ON v.id = i.individual_id
               WHERE a.status != 'rejected'
               ORDER BY a.id";
    let mut stmt = cat.conn.prepare_cached(sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt
        .query_map([], |r| {
            let stored_path: String = r.get(3)?;
            let bbox = bbox_from_columns([r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?]);
            let how: Option<String> = r.get(16)?;
            Ok(CropInfo {
                annotation: r.get(0)?,
                photo: r.get(1)?,
                hash: r.get(2)?,
                file: cat.photo_file(&stored_path),
                stored_path,
                bbox,
                photo_size: (r.get(4)?, r.get(5)?),
                part: r.get::<_, String>(10)?.parse().unwrap_or(Part::Body),
                side: r.get::<_, String>(11)?.parse().unwrap_or(Side::Unknown),
                species: r.get(12)?,
                source: r.get::<_, String>(17)?.parse().unwrap_or(Source::Manual),
                status: r.get::<_, String>(13)?.parse().unwrap_or(Status::Unreviewed),
                score: r.get(18)?,
                individual: r.get(14)?,
                code: r.get(15)?,
                how: how.and_then(|h| h.parse().ok()),
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}
