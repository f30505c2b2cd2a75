//! A summary of a catalogue: what `whaleid stats` prints and the app's header shows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalogue::{Catalogue, Result};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub catalogue: String,
    pub schema_version: i32,
    pub photos: i64,
    pub photos_with_boxes: i64,
    pub photos_identified: i64,
    pub annotations: i64,
    /// Annotations with a drawn box (the rest cover their whole photo).
    pub boxes: i64,
    pub annotations_by_status: BTreeMap<String, i64>,
    pub annotations_by_part: BTreeMap<String, i64>,
    pub annotations_by_source: BTreeMap<String, i64>,
    pub individuals: i64,
    pub identified_annotations: i64,
    pub identifications_by_how: BTreeMap<String, i64>,
    /// Individuals seen in only one annotation.
    pub individuals_seen_once: i64,
    pub species: BTreeMap<String, i64>,
    pub embeddings: i64,
    pub first_photo_date: Option<String>,
    pub last_photo_date: Option<String>,
    pub edits: i64,
}

fn grouped(cat: &Catalogue, sql: &str) -> Result<BTreeMap<String, i64>> {
    let mut stmt = cat.conn.prepare(sql).map_err(|e| cat.sql_err(e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_else(|| "unknown".into()), r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
        .map_err(|e| cat.sql_err(e))?;
    Ok(rows)
}

fn count(cat: &Catalogue, sql: &str) -> Result<i64> {
    cat.conn.query_row(sql, [], |r| r.get(0)).map_err(|e| cat.sql_err(e))
}

pub fn stats(cat: &Catalogue) -> Result<Stats> {
    let (first, last): (Option<String>, Option<String>) = cat
        .conn
        .query_row("SELECT min(taken_at), max(taken_at) FROM photos", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| cat.sql_err(e))?;
    Ok(Stats {
        catalogue: cat.path().display().to_string(),
        schema_version: crate::catalogue::SCHEMA_VERSION,
        photos: count(cat, "SELECT count(*) FROM photos")?,
        photos_with_boxes: count(cat, "SELECT count(DISTINCT photo_id) FROM annotations WHERE x IS NOT NULL")?,
        photos_identified: count(
            cat,
            "SELECT count(DISTINCT a.photo_id) FROM annotations a JOIN identifications i ON i.annotation_id = a.id",
        )?,
        annotations: count(cat, "SELECT count(*) FROM annotations")?,
        boxes: count(cat, "SELECT count(*) FROM annotations WHERE x IS NOT NULL")?,
        annotations_by_status: grouped(cat, "SELECT status, count(*) FROM annotations GROUP BY status")?,
        annotations_by_part: grouped(cat, "SELECT part, count(*) FROM annotations GROUP BY part")?,
        annotations_by_source: grouped(cat, "SELECT source, count(*) FROM annotations GROUP BY source")?,
        individuals: count(cat, "SELECT count(*) FROM individuals")?,
        identified_annotations: count(cat, "SELECT count(*) FROM identifications")?,
        identifications_by_how: grouped(cat, "SELECT how, count(*) FROM identifications GROUP BY how")?,
        individuals_seen_once: count(
            cat,
            "SELECT count(*) FROM (SELECT individual_id FROM identifications GROUP BY individual_id HAVING count(*) = 1)",
        )?,
        species: grouped(cat, "SELECT species, count(*) FROM individuals GROUP BY species")?,
        embeddings: count(cat, "SELECT count(*) FROM embeddings")?,
        first_photo_date: first,
        last_photo_date: last,
        edits: count(cat, "SELECT count(*) FROM actions WHERE undone = 0")?,
    })
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |m: &BTreeMap<String, i64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        writeln!(f, "catalogue    {}", self.catalogue)?;
        writeln!(
            f,
            "photos       {} ({} with boxes, {} identified)",
            self.photos, self.photos_with_boxes, self.photos_identified
        )?;
        writeln!(f, "annotations  {} ({} boxes; {})", self.annotations, self.boxes, list(&self.annotations_by_status))?;
        writeln!(f, "  parts      {}", list(&self.annotations_by_part))?;
        writeln!(f, "individuals  {} ({} seen once)", self.individuals, self.individuals_seen_once)?;
        writeln!(f, "  species    {}", list(&self.species))?;
        writeln!(
            f,
            "identified   {} annotations ({})",
            self.identified_annotations,
            list(&self.identifications_by_how)
        )?;
        writeln!(f, "embeddings   {}", self.embeddings)?;
        if let (Some(a), Some(b)) = (&self.first_photo_date, &self.last_photo_date) {
            writeln!(f, "dates        {a} .. {b}")?;
        }
        write!(f, "edits        {} (undoable)", self.edits)
    }
}
