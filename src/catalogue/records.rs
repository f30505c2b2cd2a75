//! The records a catalogue holds, as Rust values: photos, annotations (boxes), individuals,
//! identifications and the edit history, and how each is read from its row.

use serde::Serialize;

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use crate::base::photo::PhotoFacts;
use crate::base::vocabulary::{BoxPx, How, Part, Side, Source, Status};

/// A photo as the catalogue knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Photo {
    pub id: PhotoId,
    /// As stored: relative to the photo root where possible.
    pub stored_path: String,
    #[serde(flatten)]
    pub facts: PhotoFacts,
}

/// A new photo to record (its facts from `crate::base::photo::probe_bytes`).
#[derive(Debug, Clone)]
pub struct NewPhoto {
    pub stored_path: String,
    pub facts: PhotoFacts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub id: AnnotationId,
    pub photo_id: PhotoId,
    /// `None` is the whole photo.
    pub bbox: Option<BoxPx>,
    pub part: Part,
    pub side: Side,
    pub source: Source,
    pub status: Status,
    pub species: Option<String>,
    pub score: Option<f64>,
}

impl Annotation {
    /// What an embedding of this annotation was computed from; a stored embedding whose key
    /// differs is stale (the box was moved since).
    pub fn box_key(&self) -> String {
        box_key(self.bbox.as_ref())
    }
}

/// `whole` for the whole photo, else the box to a hundredth of a pixel.
pub fn box_key(bbox: Option<&BoxPx>) -> String {
    match bbox {
        None => "whole".into(),
        Some(b) => format!("{:.2},{:.2},{:.2},{:.2}", b.x, b.y, b.w, b.h),
    }
}

#[derive(Debug, Clone)]
pub struct NewAnnotation {
    pub photo_id: PhotoId,
    pub bbox: Option<BoxPx>,
    pub part: Part,
    pub side: Side,
    pub source: Source,
    pub status: Status,
    pub species: Option<String>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Individual {
    pub id: IndividualId,
    pub code: String,
    pub name: String,
    pub species: Option<String>,
    pub notes: String,
}

/// `SYN-0003 "Salt"`, or just the code when it has no name.
pub fn individual_label(ind: &Individual) -> String {
    if ind.name.trim().is_empty() { ind.code.clone() } else { format!("{} \"{}\"", ind.code, ind.name) }
}

#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    pub annotation_id: AnnotationId,
    pub individual_id: IndividualId,
    pub how: How,
    pub score: Option<f64>,
    pub at: String,
}

/// One entry of the edit history.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub id: i64,
    pub label: String,
    pub at: String,
    pub undone: bool,
}

/// The time an edit or a record is stamped with.
pub fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

pub(super) fn parse_enum<T: std::str::FromStr<Err = String>>(idx: usize, text: String) -> rusqlite::Result<T> {
    text.parse::<T>().map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into()))
}

/// A box from its four nullable columns; `None` (the whole photo) unless all four are set.
pub(super) fn bbox_from_columns(coords: [Option<f64>; 4]) -> Option<BoxPx> {
    match coords {
        [Some(x), Some(y), Some(w), Some(h)] => Some(BoxPx { x, y, w, h }),
        _ => None,
    }
}

pub(super) const ANNOTATION_COLUMNS: &str = "id, photo_id, x, y, w, h, part, side, source, status, species, score";

/// `ANNOTATION_COLUMNS` of the table aliased `a`.
pub(super) fn annotation_columns_of_a() -> String {
    ANNOTATION_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
}

pub(super) fn annotation_from_row(r: &rusqlite::Row) -> rusqlite::Result<Annotation> {
    Ok(Annotation {
        id: r.get(0)?,
        photo_id: r.get(1)?,
        bbox: bbox_from_columns([r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]),
        part: parse_enum(6, r.get(6)?)?,
        side: parse_enum(7, r.get(7)?)?,
        source: parse_enum(8, r.get(8)?)?,
        status: parse_enum(9, r.get(9)?)?,
        species: r.get(10)?,
        score: r.get(11)?,
    })
}

pub(super) const INDIVIDUAL_COLUMNS: &str = "id, code, name, species, notes";

pub(super) fn individual_from_row(r: &rusqlite::Row) -> rusqlite::Result<Individual> {
    Ok(Individual { id: r.get(0)?, code: r.get(1)?, name: r.get(2)?, species: r.get(3)?, notes: r.get(4)? })
}

pub(super) const PHOTO_COLUMNS: &str = "id, path, hash, width, height, orientation, taken_at, latitude, longitude";

pub(super) fn photo_from_row(r: &rusqlite::Row) -> rusqlite::Result<Photo> {
    Ok(Photo {
        id: r.get(0)?,
        stored_path: r.get(1)?,
        facts: PhotoFacts {
            hash: r.get(2)?,
            width: r.get(3)?,
            height: r.get(4)?,
            orientation: r.get(5)?,
            taken_at: r.get(6)?,
            latitude: r.get(7)?,
            longitude: r.get(8)?,
        },
    })
}

/// The record ids are stored as SQLite integers.
macro_rules! id_sql {
    ($($name:ty),*) => {$(
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }
        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(value).map(Self)
            }
        }
    )*};
}
id_sql!(PhotoId, AnnotationId, IndividualId);
