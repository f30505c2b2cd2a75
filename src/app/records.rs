//! What the panels show, read from the catalogue in one query each on the catalogue
//! worker: a row per photo for the library, a row per individual, one photo with its boxes,
//! one individual's sightings. The SQL lives here, next to its only use.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::base::vocabulary::{How, Part};
use crate::catalogue::{Annotation, Catalogue, Individual, Photo, Result};

/// One photo in the library grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoRow {
    pub id: i64,
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
    pub parts: Vec<Part>,
    pub species: Vec<String>,
    /// The individuals identified in it, by id.
    pub individuals: Vec<i64>,
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
}

const PHOTO_ROW_SQL: &str = "
    SELECT p.id, p.path, p.hash, p.width, p.height, p.taken_at,
           count(a.id), count(a.x),
           coalesce(sum(a.status = 'unreviewed'), 0), coalesce(sum(a.status = 'verified'), 0),
           coalesce(sum(a.status = 'rejected'), 0),
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
        parts: list(11, ',')?.iter().filter_map(|p| p.parse().ok()).collect(),
        species: list(12, ',')?,
        individuals: list(13, ',')?.iter().filter_map(|i| i.parse().ok()).collect(),
        tags: list(14, '\u{1f}')?,
    })
}

/// Every photo, in import order.
pub fn photo_rows(cat: &Catalogue) -> Result<Vec<PhotoRow>> {
    let sql = format!("{PHOTO_ROW_SQL} GROUP BY p.id ORDER BY p.id");
    let mut stmt = cat.conn().prepare(&sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt.query_map([], |r| photo_row(cat, r)).and_then(Iterator::collect).map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}

/// The rows of some photos (after an edit touched them); photos that no longer exist are absent.
pub fn photo_rows_of(cat: &Catalogue, ids: &BTreeSet<i64>) -> Result<Vec<PhotoRow>> {
    let sql = format!("{PHOTO_ROW_SQL} WHERE p.id = ?1 GROUP BY p.id");
    let mut stmt = cat.conn().prepare_cached(&sql).map_err(|e| cat.sql_err(e))?;
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

pub fn individual_label(ind: &Individual) -> String {
    if ind.name.trim().is_empty() { ind.code.clone() } else { format!("{} \"{}\"", ind.code, ind.name) }
}

pub fn individual_rows(cat: &Catalogue) -> Result<Vec<IndividualRow>> {
    let sql =
        "SELECT v.id, v.code, v.name, v.species, v.notes, count(i.annotation_id), min(p.taken_at), max(p.taken_at)
               FROM individuals v
               LEFT JOIN identifications i ON i.individual_id = v.id
               LEFT JOIN annotations a ON a.id = i.annotation_id
               LEFT JOIN photos p ON p.id = a.photo_id
               GROUP BY v.id ORDER BY v.code";
    let mut stmt = cat.conn().prepare_cached(sql).map_err(|e| cat.sql_err(e))?;
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

/// An annotation with the individual it shows, as the annotate panel lists it.
#[derive(Debug, Clone)]
pub struct BoxRecord {
    pub annotation: Annotation,
    pub individual: Option<Individual>,
    pub how: Option<How>,
}

/// One photo with its boxes: what the annotate panel edits.
#[derive(Debug, Clone)]
pub struct PhotoDetail {
    pub photo: Photo,
    pub file: PathBuf,
    pub boxes: Vec<BoxRecord>,
    pub tags: Vec<String>,
}

pub fn photo_detail(cat: &Catalogue, photo: i64) -> Result<Option<PhotoDetail>> {
    let Some(p) = cat.photo(photo)? else { return Ok(None) };
    let mut boxes = Vec::new();
    for a in cat.annotations_of_photo(photo)? {
        let ident = cat.identification(a.id)?;
        let individual = match &ident {
            Some(i) => cat.individual(i.individual_id)?,
            None => None,
        };
        boxes.push(BoxRecord { annotation: a, individual, how: ident.map(|i| i.how) });
    }
    let mut stmt = cat
        .conn()
        .prepare_cached("SELECT tag FROM photo_tags WHERE photo_id = ?1 ORDER BY tag")
        .map_err(|e| cat.sql_err(e))?;
    let tags = stmt.query_map([photo], |r| r.get(0)).and_then(Iterator::collect).map_err(|e| cat.sql_err(e))?;
    Ok(Some(PhotoDetail { file: cat.photo_file(&p.stored_path), photo: p, boxes, tags }))
}

/// One crop of an individual, with where and when it was taken.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub annotation: Annotation,
    pub photo: Photo,
    pub file: PathBuf,
}

/// One individual and its sightings, oldest first: what the individuals panel shows.
#[derive(Debug, Clone)]
pub struct SightingHistory {
    pub individual: Individual,
    pub sightings: Vec<Sighting>,
}

impl SightingHistory {
    /// The distinct days it was seen, oldest first.
    pub fn dates(&self) -> Vec<String> {
        let days: BTreeSet<String> =
            self.sightings.iter().filter_map(|s| s.photo.taken_at.as_deref()?.get(..10).map(str::to_string)).collect();
        days.into_iter().collect()
    }
}

pub fn gallery(cat: &Catalogue, individual: i64) -> Result<Option<SightingHistory>> {
    let Some(ind) = cat.individual(individual)? else { return Ok(None) };
    let mut sightings = Vec::new();
    for a in cat.sightings(individual)? {
        if let Some(photo) = cat.photo(a.photo_id)? {
            sightings.push(Sighting { file: cat.photo_file(&photo.stored_path), photo, annotation: a });
        }
    }
    sightings.sort_by(|a, b| a.photo.taken_at.cmp(&b.photo.taken_at).then(a.annotation.id.cmp(&b.annotation.id)));
    Ok(Some(SightingHistory { individual: ind, sightings }))
}

/// The photos some annotations belong to (before an edit that may delete them).
pub fn photos_of_annotations(cat: &Catalogue, annotations: &[i64]) -> Result<BTreeSet<i64>> {
    let mut out = BTreeSet::new();
    for &a in annotations {
        if let Some(ann) = cat.annotation(a)? {
            out.insert(ann.photo_id);
        }
    }
    Ok(out)
}

/// The annotations of some photos, for edits that act on whole photos.
pub fn annotations_of_photos(cat: &Catalogue, photos: &[i64]) -> Result<Vec<Annotation>> {
    let mut out = Vec::new();
    for &p in photos {
        out.extend(cat.annotations_of_photo(p)?);
    }
    Ok(out)
}

/// One crop as the identification panels show it: where its pixels are, what it is, and who
/// it shows. Rejected crops are left out (they are never searched).
#[derive(Debug, Clone)]
pub struct CropInfo {
    pub annotation: i64,
    pub photo: i64,
    pub hash: String,
    pub file: PathBuf,
    pub stored_path: String,
    pub bbox: Option<crate::base::vocabulary::BoxPx>,
    pub photo_size: (u32, u32),
    pub part: Part,
    pub side: crate::base::vocabulary::Side,
    pub species: Option<String>,
    pub status: crate::base::vocabulary::Status,
    pub individual: Option<i64>,
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
                      a.species, a.status, i.individual_id, v.code, i.how
               FROM annotations a
               JOIN photos p ON p.id = a.photo_id
               LEFT JOIN identifications i ON i.annotation_id = a.id
               LEFT JOIN individuals v ON v.id = i.individual_id
               WHERE a.status != 'rejected'
               ORDER BY a.id";
    let mut stmt = cat.conn().prepare_cached(sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt
        .query_map([], |r| {
            let stored_path: String = r.get(3)?;
            let coords: [Option<f64>; 4] = [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?];
            let bbox = match coords {
                [Some(x), Some(y), Some(w), Some(h)] => Some(crate::base::vocabulary::BoxPx { x, y, w, h }),
                _ => None,
            };
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
                side: r.get::<_, String>(11)?.parse().unwrap_or(crate::base::vocabulary::Side::Unknown),
                species: r.get(12)?,
                status: r.get::<_, String>(13)?.parse().unwrap_or(crate::base::vocabulary::Status::Unreviewed),
                individual: r.get(14)?,
                code: r.get(15)?,
                how: how.and_then(|h| h.parse().ok()),
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}
