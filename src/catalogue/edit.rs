//! Edits: every change to the catalogue is one undoable action in one transaction (or, for a
//! long import, one action over several transactions), recorded so it can be undone and redone.

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use std::path::PathBuf;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::records::{INDIVIDUAL_COLUMNS, individual_from_row, now};
use super::undo::{self, Direction};
use super::{Action, Catalogue, CatalogueError, Individual, NewAnnotation, NewPhoto, Result};
use crate::base::vocabulary::{BoxPx, How, Part, Side, Status};

impl Catalogue {
    /// Runs `f` as one undoable action in one transaction.
    pub fn edit<T>(&mut self, label: &str, f: impl FnOnce(&Edit) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
        let id = undo::begin_action(&tx, label, &now()).map_err(sql_err)?;
        let edit = Edit { tx, path: path.clone() };
        let out = f(&edit)?;
        undo::end_action(&edit.tx, id).map_err(sql_err)?;
        edit.tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Starts an action that several transactions add to (`edit_in`), e.g. an import
    /// that commits in batches. Returns its id.
    pub fn begin_long_action(&mut self, label: &str) -> Result<i64> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
        let id = undo::begin_action(&tx, label, &now()).map_err(sql_err)?;
        tx.execute("UPDATE undo_state SET recording = NULL WHERE id = 1", []).map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        Ok(id)
    }

    /// One transaction of a long action.
    pub fn edit_in<T>(&mut self, action: i64, f: impl FnOnce(&Edit) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
        undo::resume_action(&tx, action).map_err(sql_err)?;
        let edit = Edit { tx, path: path.clone() };
        let out = f(&edit)?;
        edit.tx.execute("UPDATE undo_state SET recording = NULL WHERE id = 1", []).map_err(sql_err)?;
        edit.tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Ends a long action; drops it from the history if it changed nothing.
    pub fn end_long_action(&mut self, action: i64) -> Result<()> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
        undo::end_action(&tx, action).map_err(sql_err)?;
        tx.commit().map_err(sql_err)
    }

    /// Undoes the newest edit; returns its label, or `None` when there is nothing to undo.
    pub fn undo(&mut self) -> Result<Option<String>> {
        self.step(Direction::Undo)
    }

    /// Redoes the last undone edit.
    pub fn redo(&mut self) -> Result<Option<String>> {
        self.step(Direction::Redo)
    }

    fn step(&mut self, direction: Direction) -> Result<Option<String>> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
        let label = undo::step(&tx, direction).map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        Ok(label)
    }

    /// The edit history, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<Action>> {
        self.query_all("SELECT id, label, at, undone FROM actions ORDER BY id DESC LIMIT ?1", [limit as i64], |r| {
            Ok(Action { id: r.get(0)?, label: r.get(1)?, at: r.get(2)?, undone: r.get(3)? })
        })
    }

    // ---- common edits, each one undoable action ------------------------------------

    /// Sets the annotations' status; verifying goes through [`Edit::verify`].
    pub fn set_status(&mut self, annotations: &[AnnotationId], status: Status) -> Result<()> {
        let label = format!("{} {} annotation(s)", status_verb(status), annotations.len());
        self.edit(&label, |e| {
            for &id in annotations {
                if status == Status::Verified { e.verify(id)? } else { e.set_status(id, status)? }
            }
            Ok(())
        })
    }

    pub fn add_annotation(&mut self, new: &NewAnnotation) -> Result<AnnotationId> {
        self.edit(&format!("add {} box", new.part), |e| e.insert_annotation(new))
    }

    pub fn set_box(&mut self, annotation: AnnotationId, bbox: BoxPx) -> Result<()> {
        self.edit("move box", |e| e.set_box(annotation, Some(bbox)))
    }

    pub fn delete_annotation(&mut self, annotation: AnnotationId) -> Result<()> {
        self.edit("delete box", |e| e.delete_annotation(annotation))
    }

    /// Confirms that an annotation shows an individual (the biologist's decision).
    pub fn confirm(&mut self, annotation: AnnotationId, individual: IndividualId) -> Result<()> {
        self.edit("confirm match", |e| e.identify(annotation, individual, How::Confirmed, None))
    }

    /// Creates a new individual with a fresh unique code and assigns the annotations to it.
    pub fn new_individual(&mut self, annotations: &[AnnotationId], species: Option<&str>) -> Result<Individual> {
        self.edit("new individual", |e| {
            let ind = e.create_individual(None, "", species)?;
            for &a in annotations {
                e.identify(a, ind.id, How::Confirmed, None)?;
            }
            Ok(ind)
        })
    }

    pub fn rename_individual(&mut self, individual: IndividualId, name: &str) -> Result<()> {
        self.edit("rename individual", |e| e.rename_individual(individual, name))
    }

    /// Moves every sighting of `absorbed` to `kept` and removes `absorbed`.
    pub fn merge_individuals(&mut self, kept: IndividualId, absorbed: IndividualId) -> Result<()> {
        if kept == absorbed {
            return Err(CatalogueError::Invalid("cannot merge an individual with itself".into()));
        }
        self.edit("merge individuals", |e| e.merge_individuals(kept, absorbed))
    }

    /// Moves the given annotations to a new individual.
    pub fn split_individual(&mut self, annotations: &[AnnotationId]) -> Result<Individual> {
        if annotations.is_empty() {
            return Err(CatalogueError::Invalid("select the crops to split off first".into()));
        }
        self.edit("split individual", |e| {
            let species = e.annotation_individual(annotations[0])?.and_then(|i| i.species);
            let ind = e.create_individual(None, "", species.as_deref())?;
            for &a in annotations {
                e.identify(a, ind.id, How::Confirmed, None)?;
            }
            Ok(ind)
        })
    }

    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        self.edit(&format!("set {key}"), |e| e.set_setting(key, value))
    }
}

fn status_verb(status: Status) -> &'static str {
    match status {
        Status::Verified => "verify",
        Status::Rejected => "reject",
        Status::Unreviewed => "reopen",
    }
}

/// The statements an edit is made of; only available inside `Catalogue::edit`.
pub struct Edit<'c> {
    tx: Transaction<'c>,
    path: PathBuf,
}

impl Edit<'_> {
    fn err(&self, source: rusqlite::Error) -> CatalogueError {
        CatalogueError::Sqlite { path: self.path.clone(), source }
    }

    pub fn insert_photo(&self, p: &NewPhoto) -> Result<PhotoId> {
        let f = &p.facts;
        self.tx
            .execute(
                "INSERT INTO photos (path, hash, width, height, orientation, taken_at, latitude, longitude, imported_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    p.stored_path,
                    f.hash,
                    f.width,
                    f.height,
                    f.orientation,
                    f.taken_at,
                    f.latitude,
                    f.longitude,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(PhotoId(self.tx.last_insert_rowid()))
    }

    /// A photo found at a new place (moved or renamed on disk).
    pub fn relink_photo(&self, photo: PhotoId, stored_path: &str) -> Result<()> {
        self.tx
            .execute("UPDATE photos SET path = ?2 WHERE id = ?1", params![photo, stored_path])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn tag_photo(&self, photo: PhotoId, tag: &str) -> Result<()> {
        self.tx
            .execute("INSERT OR IGNORE INTO photo_tags (photo_id, tag) VALUES (?1, ?2)", params![photo, tag])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn insert_annotation(&self, a: &NewAnnotation) -> Result<AnnotationId> {
        let (x, y, w, h) = match a.bbox {
            Some(b) => (Some(b.x), Some(b.y), Some(b.w), Some(b.h)),
            None => (None, None, None, None),
        };
        self.tx
            .execute(
                "INSERT INTO annotations (photo_id, x, y, w, h, part, side, source, status, species, score, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    a.photo_id,
                    x,
                    y,
                    w,
                    h,
                    a.part.as_str(),
                    a.side.as_str(),
                    a.source.as_str(),
                    a.status.as_str(),
                    a.species,
                    a.score,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(AnnotationId(self.tx.last_insert_rowid()))
    }

    fn expect_changed(&self, changed: usize, what: &str, id: impl std::fmt::Display) -> Result<()> {
        if changed == 0 { Err(CatalogueError::Invalid(format!("no {what} with id {id}"))) } else { Ok(()) }
    }

    pub fn set_status(&self, annotation: AnnotationId, status: Status) -> Result<()> {
        let n = self
            .tx
            .execute("UPDATE annotations SET status = ?2 WHERE id = ?1", params![annotation, status.as_str()])
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    /// Marks an annotation verified. A box verified on a photo whose individual was recorded
    /// for the whole photo (labels imported before any box was drawn) takes that individual
    /// over, and the whole-photo annotation goes: it is the same sighting, seen closer. Only
    /// when the photo has exactly one identified whole-photo annotation and the box has no
    /// individual of its own.
    pub fn verify(&self, annotation: AnnotationId) -> Result<()> {
        self.set_status(annotation, Status::Verified)?;
        let (photo, has_box): (PhotoId, bool) = self
            .tx
            .query_row("SELECT photo_id, x IS NOT NULL FROM annotations WHERE id = ?1", [annotation], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        if !has_box || self.annotation_individual(annotation)?.is_some() {
            return Ok(());
        }
        let whole: Vec<(AnnotationId, IndividualId, String)> = self
            .tx
            .prepare_cached(
                "SELECT a.id, i.individual_id, i.how FROM annotations a JOIN identifications i ON i.annotation_id = a.id \
                 WHERE a.photo_id = ?1 AND a.x IS NULL AND a.status != 'rejected'",
            )
            .and_then(|mut st| st.query_map([photo], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(|e| self.err(e))?;
        let [(whole_photo, individual, how)] = whole.as_slice() else { return Ok(()) };
        let how = how.parse::<How>().map_err(CatalogueError::Invalid)?;
        self.identify(annotation, *individual, how, None)?;
        self.delete_annotation(*whole_photo)
    }

    pub fn set_box(&self, annotation: AnnotationId, bbox: Option<BoxPx>) -> Result<()> {
        let (x, y, w, h) = match bbox {
            Some(b) => (Some(b.x), Some(b.y), Some(b.w), Some(b.h)),
            None => (None, None, None, None),
        };
        let n = self
            .tx
            .execute(
                "UPDATE annotations SET x = ?2, y = ?3, w = ?4, h = ?5 WHERE id = ?1",
                params![annotation, x, y, w, h],
            )
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    pub fn set_part_side(&self, annotation: AnnotationId, part: Part, side: Side) -> Result<()> {
        let n = self
            .tx
            .execute(
                "UPDATE annotations SET part = ?2, side = ?3 WHERE id = ?1",
                params![annotation, part.as_str(), side.as_str()],
            )
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    pub fn delete_annotation(&self, annotation: AnnotationId) -> Result<()> {
        let n = self.tx.execute("DELETE FROM annotations WHERE id = ?1", [annotation]).map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    /// Creates an individual. Without a code, a fresh unique one (`WID-00001`, ...) is made.
    pub fn create_individual(&self, code: Option<&str>, name: &str, species: Option<&str>) -> Result<Individual> {
        let code = match code {
            Some(c) if !c.trim().is_empty() => c.trim().to_string(),
            _ => self.next_individual_code()?,
        };
        self.tx
            .execute(
                "INSERT INTO individuals (code, name, species, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![code, name, species, now()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    CatalogueError::Invalid(format!("an individual with code '{code}' already exists"))
                }
                e => self.err(e),
            })?;
        Ok(Individual {
            id: IndividualId(self.tx.last_insert_rowid()),
            code,
            name: name.to_string(),
            species: species.map(str::to_string),
            notes: String::new(),
        })
    }

    fn next_individual_code(&self) -> Result<String> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT code FROM individuals WHERE code GLOB 'WID-[0-9]*'")
            .map_err(|e| self.err(e))?;
        let max = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .filter_map(|c| c.ok()?.strip_prefix("WID-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok(format!("WID-{:05}", max + 1))
    }

    pub fn individual_by_code(&self, code: &str) -> Result<Option<Individual>> {
        self.tx
            .prepare_cached(&format!("SELECT {INDIVIDUAL_COLUMNS} FROM individuals WHERE code = ?1"))
            .and_then(|mut s| s.query_row([code], individual_from_row).optional())
            .map_err(|e| self.err(e))
    }

    pub fn annotation_individual(&self, annotation: AnnotationId) -> Result<Option<Individual>> {
        self.tx
            .query_row(
                "SELECT v.id, v.code, v.name, v.species, v.notes FROM identifications i \
                 JOIN individuals v ON v.id = i.individual_id WHERE i.annotation_id = ?1",
                [annotation],
                individual_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn identify(
        &self,
        annotation: AnnotationId,
        individual: IndividualId,
        how: How,
        score: Option<f64>,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO identifications (annotation_id, individual_id, how, score, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (annotation_id) DO UPDATE SET individual_id = excluded.individual_id, how = excluded.how, \
                 score = excluded.score, at = excluded.at",
                params![annotation, individual, how.as_str(), score, now()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    CatalogueError::Invalid(format!("annotation {annotation} or individual {individual} does not exist"))
                }
                e => self.err(e),
            })?;
        Ok(())
    }

    pub fn unidentify(&self, annotation: AnnotationId) -> Result<()> {
        self.tx
            .execute("DELETE FROM identifications WHERE annotation_id = ?1", [annotation])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn rename_individual(&self, individual: IndividualId, name: &str) -> Result<()> {
        let n = self
            .tx
            .execute("UPDATE individuals SET name = ?2 WHERE id = ?1", params![individual, name])
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "individual", individual)
    }

    pub fn merge_individuals(&self, kept: IndividualId, absorbed: IndividualId) -> Result<()> {
        for id in [kept, absorbed] {
            let exists: bool = self
                .tx
                .query_row("SELECT EXISTS (SELECT 1 FROM individuals WHERE id = ?1)", [id], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if !exists {
                return Err(CatalogueError::Invalid(format!("no individual with id {id}")));
            }
        }
        self.tx
            .execute("UPDATE identifications SET individual_id = ?1 WHERE individual_id = ?2", params![kept, absorbed])
            .map_err(|e| self.err(e))?;
        self.tx.execute("DELETE FROM individuals WHERE id = ?1", [absorbed]).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The first photo recorded with this content hash, with its stored path.
    pub fn photo_with_hash(&self, hash: &str) -> Result<Option<(PhotoId, String)>> {
        self.tx
            .prepare_cached("SELECT id, path FROM photos WHERE hash = ?1 ORDER BY id LIMIT 1")
            .and_then(|mut s| s.query_row([hash], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(|e| self.err(e))
    }

    /// The drawn boxes of one part on a photo.
    pub fn boxes_of_photo(&self, photo: PhotoId, part: Part) -> Result<Vec<(AnnotationId, BoxPx)>> {
        self.tx
            .prepare_cached(
                "SELECT id, x, y, w, h FROM annotations WHERE photo_id = ?1 AND part = ?2 AND x IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map(params![photo, part.as_str()], |r| {
                    Ok((r.get(0)?, BoxPx::new(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The annotations of a photo that are not rejected, by id.
    pub fn unrejected_annotations_of_photo(&self, photo: PhotoId) -> Result<Vec<AnnotationId>> {
        self.tx
            .prepare_cached("SELECT id FROM annotations WHERE photo_id = ?1 AND status != 'rejected' ORDER BY id")
            .and_then(|mut s| s.query_map([photo], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }
}
