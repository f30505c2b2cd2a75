//! The catalogue: one SQLite file (`.whaleid`) per project holding photos, boxes,
//! individuals, identifications, embeddings and the history of every edit.
//!
//! Every edit is one transaction that also records how to undo it, so a crash never
//! leaves half an edit behind and every edit can be undone and redone.

mod schema;
pub mod stats;
mod undo;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

pub use schema::SCHEMA_VERSION;
pub use undo::Direction;

use crate::base::vocabulary::{BoxPx, How, Part, Side, Source, Status};

/// The file extension of a catalogue.
pub const EXTENSION: &str = "whaleid";

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no catalogue at {0}")]
    NotFound(PathBuf),
    #[error("{0} is not a whaleid catalogue: {1}")]
    NotACatalogue(PathBuf, String),
    #[error(
        "{path} was written by a newer whaleid (catalogue schema {found}, this version reads up to {supported}); \
         it was left untouched: update whaleid to open it"
    )]
    NewerSchema { path: PathBuf, found: i32, supported: i32 },
    #[error("catalogue {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, CatalogueError>;

pub struct Catalogue {
    conn: Connection,
    path: PathBuf,
    photo_root: PathBuf,
}

/// A photo as the catalogue knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Photo {
    pub id: i64,
    /// As stored: relative to the photo root where possible.
    pub stored_path: String,
    pub hash: String,
    pub width: u32,
    pub height: u32,
    pub orientation: u16,
    pub taken_at: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// A new photo to record (see `crate::base::photo::probe`).
#[derive(Debug, Clone)]
pub struct NewPhoto {
    pub stored_path: String,
    pub hash: String,
    pub width: u32,
    pub height: u32,
    pub orientation: u16,
    pub taken_at: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub id: i64,
    pub photo_id: i64,
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

/// An annotation as the embedder sees it (see [`Catalogue::embedding_states`]).
#[derive(Debug, Clone)]
pub struct EmbeddingState {
    pub annotation: Annotation,
    pub photo_path: String,
    /// The box key of the stored embedding, if there is one.
    pub stored_box_key: Option<String>,
}

impl EmbeddingState {
    /// Missing, or computed from a box that has since moved.
    pub fn is_stale(&self) -> bool {
        self.stored_box_key.as_deref() != Some(self.annotation.box_key().as_str())
    }
}

#[derive(Debug, Clone)]
pub struct NewAnnotation {
    pub photo_id: i64,
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
    pub id: i64,
    pub code: String,
    pub name: String,
    pub species: Option<String>,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    pub annotation_id: i64,
    pub individual_id: i64,
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

pub fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn parse_enum<T: std::str::FromStr<Err = String>>(idx: usize, text: String) -> rusqlite::Result<T> {
    text.parse::<T>().map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into()))
}

const ANNOTATION_COLUMNS: &str = "id, photo_id, x, y, w, h, part, side, source, status, species, score";

fn annotation_from_row(r: &rusqlite::Row) -> rusqlite::Result<Annotation> {
    let coords: [Option<f64>; 4] = [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?];
    let bbox = match coords {
        [Some(x), Some(y), Some(w), Some(h)] => Some(BoxPx { x, y, w, h }),
        _ => None,
    };
    Ok(Annotation {
        id: r.get(0)?,
        photo_id: r.get(1)?,
        bbox,
        part: parse_enum(6, r.get(6)?)?,
        side: parse_enum(7, r.get(7)?)?,
        source: parse_enum(8, r.get(8)?)?,
        status: parse_enum(9, r.get(9)?)?,
        species: r.get(10)?,
        score: r.get(11)?,
    })
}

const INDIVIDUAL_COLUMNS: &str = "id, code, name, species, notes";

const PHOTO_COLUMNS: &str = "id, path, hash, width, height, orientation, taken_at, latitude, longitude";

fn photo_from_row(r: &rusqlite::Row) -> rusqlite::Result<Photo> {
    Ok(Photo {
        id: r.get(0)?,
        stored_path: r.get(1)?,
        hash: r.get(2)?,
        width: r.get(3)?,
        height: r.get(4)?,
        orientation: r.get(5)?,
        taken_at: r.get(6)?,
        latitude: r.get(7)?,
        longitude: r.get(8)?,
    })
}

fn individual_from_row(r: &rusqlite::Row) -> rusqlite::Result<Individual> {
    Ok(Individual { id: r.get(0)?, code: r.get(1)?, name: r.get(2)?, species: r.get(3)?, notes: r.get(4)? })
}

impl Catalogue {
    /// Opens an existing catalogue, migrating an older schema. A newer schema or a
    /// file that is not a catalogue is refused without writing to it.
    pub fn open(path: &Path) -> Result<Catalogue> {
        if !path.is_file() {
            return Err(CatalogueError::NotFound(path.to_path_buf()));
        }
        Self::check_readable(path)?;
        Self::connect(path)
    }

    /// Creates a new empty catalogue; refuses to overwrite anything.
    pub fn create(path: &Path) -> Result<Catalogue> {
        if path.exists() {
            return Err(CatalogueError::Invalid(format!("{} already exists", path.display())));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CatalogueError::Invalid(format!("cannot create folder {}: {e}", dir.display())))?;
        }
        Self::connect(path)
    }

    pub fn open_or_create(path: &Path) -> Result<Catalogue> {
        if path.exists() { Self::open(path) } else { Self::create(path) }
    }

    /// Reads the header and schema version read-only before anything may write.
    fn check_readable(path: &Path) -> Result<()> {
        let not_catalogue = |why: &str| CatalogueError::NotACatalogue(path.to_path_buf(), why.to_string());
        let mut header = [0u8; 16];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| not_catalogue(&e.to_string()))?;
            f.read(&mut header).map_err(|e| not_catalogue(&e.to_string()))?
        };
        if n == 0 {
            return Ok(()); // an empty file becomes a new catalogue
        }
        if n < 16 || &header != b"SQLite format 3\0" {
            return Err(not_catalogue("it is not an SQLite database"));
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| not_catalogue(&e.to_string()))?;
        let read = |pragma: &str| conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i32>(0));
        let app_id = read("application_id").map_err(|e| not_catalogue(&e.to_string()))?;
        let version = read("user_version").map_err(|e| not_catalogue(&e.to_string()))?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| not_catalogue(&e.to_string()))?;
        if app_id != schema::APPLICATION_ID && tables > 0 {
            return Err(not_catalogue("it is an SQLite database of another program"));
        }
        if version > SCHEMA_VERSION {
            return Err(CatalogueError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    fn connect(path: &Path) -> Result<Catalogue> {
        let sql_err = |source| CatalogueError::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql_err)?;
        // WAL + FULL: a committed edit survives a crash or power cut; readers never block the writer.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sql_err)?;
        let photo_root = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cat = Catalogue { conn, path: path.to_path_buf(), photo_root };
        cat.migrate()?;
        undo::clear_stale_recording(&cat.conn).map_err(sql_err)?;
        if let Some(root) = cat.setting("photo_root")? {
            cat.photo_root = PathBuf::from(root);
        }
        Ok(cat)
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let sql_err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(sql_err)?;
        let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_err)?;
        if version > SCHEMA_VERSION {
            return Err(CatalogueError::NewerSchema { path, found: version, supported: SCHEMA_VERSION });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        for migration in &schema::MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(sql_err)?;
        }
        undo::install_triggers(&tx).map_err(sql_err)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {}; PRAGMA user_version = {};",
            schema::APPLICATION_ID,
            SCHEMA_VERSION
        ))
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Photos under this folder are stored by relative path, so the catalogue and its
    /// photos can move together.
    pub fn photo_root(&self) -> &Path {
        &self.photo_root
    }

    pub(crate) fn sql_err(&self, source: rusqlite::Error) -> CatalogueError {
        CatalogueError::Sqlite { path: self.path.clone(), source }
    }

    /// Read access for queries that live next to their use (stats, export, search).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// How a photo's absolute path is stored.
    pub fn stored_path(&self, absolute: &Path) -> Option<String> {
        let text = match absolute.strip_prefix(&self.photo_root) {
            Ok(rel) => rel.to_str()?.replace('\\', "/"),
            Err(_) => absolute.to_str()?.to_string(),
        };
        Some(text)
    }

    /// Where a stored photo path points on this machine.
    pub fn photo_file(&self, stored: &str) -> PathBuf {
        let p = Path::new(stored);
        if p.is_absolute() { p.to_path_buf() } else { self.photo_root.join(p) }
    }

    // ---- edits ------------------------------------------------------------------

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

    pub fn set_status(&mut self, annotations: &[i64], status: Status) -> Result<()> {
        let label = format!("{} {} annotation(s)", status_verb(status), annotations.len());
        self.edit(&label, |e| {
            for &id in annotations {
                e.set_status(id, status)?;
            }
            Ok(())
        })
    }

    pub fn add_annotation(&mut self, new: &NewAnnotation) -> Result<i64> {
        self.edit(&format!("add {} box", new.part), |e| e.insert_annotation(new))
    }

    pub fn set_box(&mut self, annotation: i64, bbox: BoxPx) -> Result<()> {
        self.edit("move box", |e| e.set_box(annotation, Some(bbox)))
    }

    pub fn delete_annotation(&mut self, annotation: i64) -> Result<()> {
        self.edit("delete box", |e| e.delete_annotation(annotation))
    }

    /// Confirms that an annotation shows an individual (the biologist's decision).
    pub fn confirm(&mut self, annotation: i64, individual: i64) -> Result<()> {
        self.edit("confirm match", |e| e.identify(annotation, individual, How::Confirmed, None))
    }

    /// Creates a new individual with a fresh unique code and assigns the annotations to it.
    pub fn new_individual(&mut self, annotations: &[i64], species: Option<&str>) -> Result<Individual> {
        self.edit("new individual", |e| {
            let ind = e.create_individual(None, "", species)?;
            for &a in annotations {
                e.identify(a, ind.id, How::Confirmed, None)?;
            }
            Ok(ind)
        })
    }

    pub fn rename_individual(&mut self, individual: i64, name: &str) -> Result<()> {
        self.edit("rename individual", |e| e.rename_individual(individual, name))
    }

    /// Moves every sighting of `absorbed` to `kept` and removes `absorbed`.
    pub fn merge_individuals(&mut self, kept: i64, absorbed: i64) -> Result<()> {
        if kept == absorbed {
            return Err(CatalogueError::Invalid("cannot merge an individual with itself".into()));
        }
        self.edit("merge individuals", |e| e.merge_individuals(kept, absorbed))
    }

    /// Moves the given annotations to a new individual.
    pub fn split_individual(&mut self, annotations: &[i64]) -> Result<Individual> {
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

    // ---- derived data (not undoable) ------------------------------------------------

    pub fn put_embedding(&mut self, annotation: i64, model: &str, box_key: &str, vector: &[f32]) -> Result<()> {
        self.put_embeddings(model, &[(annotation, box_key.to_string(), vector.to_vec())])
    }

    /// Stores `(annotation, box key, vector)` rows under `model` in one transaction.
    pub fn put_embeddings(&mut self, model: &str, rows: &[(i64, String, Vec<f32>)]) -> Result<()> {
        let path = self.path.clone();
        let err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO embeddings (annotation_id, model, box_key, dim, vector) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for (annotation, box_key, vector) in rows {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                insert.execute(params![annotation, model, box_key, vector.len() as i64, bytes]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// All rows of a query, mapped.
    fn query_all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt.query_map(params, map).and_then(|rows| rows.collect()).map_err(|e| self.sql_err(e))?;
        Ok(rows)
    }

    /// The first row of a query, if any.
    fn query_one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.conn.query_row(sql, params, map).optional().map_err(|e| self.sql_err(e))
    }

    // ---- queries --------------------------------------------------------------------

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.query_one("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
    }

    pub fn photo(&self, id: i64) -> Result<Option<Photo>> {
        self.query_one(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ?1"), [id], photo_from_row)
    }

    pub fn photos(&self) -> Result<Vec<Photo>> {
        self.query_all(&format!("SELECT {PHOTO_COLUMNS} FROM photos ORDER BY id"), [], photo_from_row)
    }

    pub fn photo_id_by_path(&self, stored: &str) -> Result<Option<i64>> {
        self.query_one("SELECT id FROM photos WHERE path = ?1", [stored], |r| r.get(0))
    }

    pub fn annotation(&self, id: i64) -> Result<Option<Annotation>> {
        self.query_one(
            &format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE id = ?1"),
            [id],
            annotation_from_row,
        )
    }

    pub fn annotations_of_photo(&self, photo: i64) -> Result<Vec<Annotation>> {
        let sql = format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE photo_id = ?1 ORDER BY id");
        self.query_all(&sql, [photo], annotation_from_row)
    }

    pub fn individual(&self, id: i64) -> Result<Option<Individual>> {
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

    pub fn identification(&self, annotation: i64) -> Result<Option<Identification>> {
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
    pub fn sightings(&self, individual: i64) -> Result<Vec<Annotation>> {
        let cols = ANNOTATION_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {cols} FROM annotations a JOIN identifications i ON i.annotation_id = a.id \
             WHERE i.individual_id = ?1 ORDER BY a.id"
        );
        self.query_all(&sql, [individual], annotation_from_row)
    }

    /// Every annotation that is not rejected, with its photo's stored path and the box key of
    /// its embedding under `model` (`None` when it has none): what the embedder works from.
    pub fn embedding_states(&self, model: &str) -> Result<Vec<EmbeddingState>> {
        let cols = ANNOTATION_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {cols}, p.path, e.box_key FROM annotations a JOIN photos p ON p.id = a.photo_id \
             LEFT JOIN embeddings e ON e.annotation_id = a.id AND e.model = ?1 \
             WHERE a.status != 'rejected' ORDER BY a.photo_id, a.id"
        );
        self.query_all(&sql, [model], |r| {
            let n = ANNOTATION_COLUMNS.split(", ").count();
            Ok(EmbeddingState {
                annotation: annotation_from_row(r)?,
                photo_path: r.get(n)?,
                stored_box_key: r.get(n + 1)?,
            })
        })
    }

    /// Annotations whose photo carries `tag` (e.g. `role=query` from a labels CSV).
    pub fn annotations_tagged(&self, tag: &str) -> Result<Vec<i64>> {
        self.query_all(
            "SELECT a.id FROM annotations a JOIN photo_tags t ON t.photo_id = a.photo_id WHERE t.tag = ?1 ORDER BY a.id",
            [tag],
            |r| r.get(0),
        )
    }

    /// The models that have embeddings here, with their counts, most first.
    pub fn embedding_models(&self) -> Result<Vec<(String, usize)>> {
        self.query_all("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY COUNT(*) DESC, model", [], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as usize))
        })
    }

    /// The individual's code of every identified annotation.
    pub fn identified_annotations(&self) -> Result<Vec<(i64, String)>> {
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

    pub fn conn(&self) -> &Connection {
        &self.tx
    }

    pub fn insert_photo(&self, p: &NewPhoto) -> Result<i64> {
        self.tx
            .execute(
                "INSERT INTO photos (path, hash, width, height, orientation, taken_at, latitude, longitude, imported_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![p.stored_path, p.hash, p.width, p.height, p.orientation, p.taken_at, p.latitude, p.longitude, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.tx.last_insert_rowid())
    }

    /// A photo found at a new place (moved or renamed on disk).
    pub fn relink_photo(&self, photo: i64, stored_path: &str) -> Result<()> {
        self.tx
            .execute("UPDATE photos SET path = ?2 WHERE id = ?1", params![photo, stored_path])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn tag_photo(&self, photo: i64, tag: &str) -> Result<()> {
        self.tx
            .execute("INSERT OR IGNORE INTO photo_tags (photo_id, tag) VALUES (?1, ?2)", params![photo, tag])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn insert_annotation(&self, a: &NewAnnotation) -> Result<i64> {
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
        Ok(self.tx.last_insert_rowid())
    }

    fn expect_changed(&self, changed: usize, what: &str, id: i64) -> Result<()> {
        if changed == 0 { Err(CatalogueError::Invalid(format!("no {what} with id {id}"))) } else { Ok(()) }
    }

    pub fn set_status(&self, annotation: i64, status: Status) -> Result<()> {
        let n = self
            .tx
            .execute("UPDATE annotations SET status = ?2 WHERE id = ?1", params![annotation, status.as_str()])
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    pub fn set_box(&self, annotation: i64, bbox: Option<BoxPx>) -> Result<()> {
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

    pub fn set_part_side(&self, annotation: i64, part: Part, side: Side) -> Result<()> {
        let n = self
            .tx
            .execute(
                "UPDATE annotations SET part = ?2, side = ?3 WHERE id = ?1",
                params![annotation, part.as_str(), side.as_str()],
            )
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "annotation", annotation)
    }

    pub fn delete_annotation(&self, annotation: i64) -> Result<()> {
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
            id: self.tx.last_insert_rowid(),
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

    pub fn annotation_individual(&self, annotation: i64) -> Result<Option<Individual>> {
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

    pub fn identify(&self, annotation: i64, individual: i64, how: How, score: Option<f64>) -> Result<()> {
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

    pub fn unidentify(&self, annotation: i64) -> Result<()> {
        self.tx
            .execute("DELETE FROM identifications WHERE annotation_id = ?1", [annotation])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn rename_individual(&self, individual: i64, name: &str) -> Result<()> {
        let n = self
            .tx
            .execute("UPDATE individuals SET name = ?2 WHERE id = ?1", params![individual, name])
            .map_err(|e| self.err(e))?;
        self.expect_changed(n, "individual", individual)
    }

    pub fn merge_individuals(&self, kept: i64, absorbed: i64) -> Result<()> {
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
}
