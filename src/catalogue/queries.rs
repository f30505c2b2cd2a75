//! Reading single records and small lists.

use super::records::{
    ANNOTATION_COLUMNS, INDIVIDUAL_COLUMNS, PHOTO_COLUMNS, annotation_columns_of_a, annotation_from_row,
    individual_from_row, parse_enum, photo_from_row,
};
use super::{Annotation, Catalogue, Identification, Individual, Photo, Result};
use crate::base::ids::{AnnotationId, IndividualId, PhotoId};

impl Catalogue {
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.query_one("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
    }

    pub fn photo(&self, id: PhotoId) -> Result<Option<Photo>> {
        self.query_one(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ?1"), [id], photo_from_row)
    }

    pub fn photos(&self) -> Result<Vec<Photo>> {
        self.query_all(&format!("SELECT {PHOTO_COLUMNS} FROM photos ORDER BY id"), [], photo_from_row)
    }

    pub fn photo_id_by_path(&self, stored: &str) -> Result<Option<PhotoId>> {
        self.query_one("SELECT id FROM photos WHERE path = ?1", [stored], |r| r.get(0))
    }

    pub fn annotation(&self, id: AnnotationId) -> Result<Option<Annotation>> {
        self.query_one(
            &format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE id = ?1"),
            [id],
            annotation_from_row,
        )
    }

    pub fn annotations_of_photo(&self, photo: PhotoId) -> Result<Vec<Annotation>> {
        let sql = format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE photo_id = ?1 ORDER BY id");
        self.query_all(&sql, [photo], annotation_from_row)
    }

    /// Every annotation of the catalogue, by id.
    pub fn annotations(&self) -> Result<Vec<Annotation>> {
        self.query_all(&format!("SELECT {ANNOTATION_COLUMNS} FROM annotations ORDER BY id"), [], annotation_from_row)
    }

    pub fn individual(&self, id: IndividualId) -> Result<Option<Individual>> {
        self.query_one(
            &format!("SELECT {INDIVIDUAL_COLUMNS} FROM individuals WHERE id = ?1"),
            [id],
            individual_from_row,
        )
    }

    pub fn individual_by_code(&self, code: &str) -> Result<Option<Individual>> {
        let sql = format!("SELECT {INDIVIDUAL_COLUMNS} FROM individuals WHERE code = ?1");
        self.query_one(&sql, [code], individual_from_row)
    }

    pub fn individuals(&self) -> Result<Vec<Individual>> {
        self.query_all(&format!("SELECT {INDIVIDUAL_COLUMNS} FROM individuals ORDER BY code"), [], individual_from_row)
    }

    pub fn identification(&self, annotation: AnnotationId) -> Result<Option<Identification>> {
        let sql = "SELECT annotation_id, individual_id, how, score, at FROM identifications WHERE annotation_id = ?1";
        self.query_one(sql, [annotation], |r| {
            Ok(Identification {
                annotation_id: r.get(0)?,
                individual_id: r.get(1)?,
                how: parse_enum(2, r.get(2)?)?,
                score: r.get(3)?,
                at: r.get(4)?,
            })
        })
    }

    /// The annotations identified as an individual.
    pub fn sightings(&self, individual: IndividualId) -> Result<Vec<Annotation>> {
        let cols = annotation_columns_of_a();
        let sql = format!(
            "SELECT {cols} FROM annotations a JOIN identifications i ON i.annotation_id = a.id \
             WHERE i.individual_id = ?1 ORDER BY a.id"
        );
        self.query_all(&sql, [individual], annotation_from_row)
    }

    /// Annotations whose photo carries `tag` (e.g. `role=query` from a labels CSV).
    pub fn annotations_tagged(&self, tag: &str) -> Result<Vec<AnnotationId>> {
        self.query_all(
            "SELECT a.id FROM annotations a JOIN photo_tags t ON t.photo_id = a.photo_id WHERE t.tag = ?1 ORDER BY a.id",
            [tag],
            |r| r.get(0),
        )
    }

    /// The individual's code of every identified annotation.
    pub fn identified_annotations(&self) -> Result<Vec<(AnnotationId, String)>> {
        self.query_all(
            "SELECT i.annotation_id, d.code FROM identifications i JOIN individuals d ON d.id = i.individual_id \
             ORDER BY i.annotation_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Checks the database file's integrity and its keys (used after crashes).
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> =
            self.query_all("PRAGMA integrity_check", [], |r| r.get(0))?.into_iter().filter(|l| l != "ok").collect();
        problems.extend(self.query_all("PRAGMA foreign_key_check", [], |r| {
            Ok(format!("foreign key broken in {} row {:?}", r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?);
        Ok(problems)
    }

    /// The tags of a photo (`role=query`, ...), sorted.
    pub fn photo_tags(&self, photo: PhotoId) -> Result<Vec<String>> {
        self.query_all("SELECT tag FROM photo_tags WHERE photo_id = ?1 ORDER BY tag", [photo], |r| r.get(0))
    }
}
