//! The catalogue: one SQLite file (`.whaleid`) per project holding photos, boxes,
//! individuals, identifications, embeddings and the history of every edit. This is the only
//! module that speaks SQL; every other floor reads and writes through typed records.
//!
//! Every edit is one transaction that also records how to undo it, so a crash never
//! leaves half an edit behind and every edit can be undone and redone.

mod edit;
mod embeddings;
mod open;
mod queries;
mod records;
pub mod rows;
mod schema;
pub mod stats;
pub mod synthetic;
mod undo;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

pub use edit::Edit;
pub use embeddings::{AnnotationCounts, EmbeddingState, StoredEmbedding};
pub use open::{CatalogueError, EXTENSION, Result};
pub use records::{
    Action, Annotation, Identification, Individual, NewAnnotation, NewPhoto, Photo, box_key, individual_label, now,
};
pub use schema::SCHEMA_VERSION;
pub use undo::Direction;

pub struct Catalogue {
    conn: Connection,
    path: PathBuf,
    photo_root: PathBuf,
}

impl Catalogue {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Photos under this folder are stored by relative path, so the catalogue and its
    /// photos can move together.
    pub fn photo_root(&self) -> &Path {
        &self.photo_root
    }

    fn sql_err(&self, source: rusqlite::Error) -> CatalogueError {
        CatalogueError::Sqlite { path: self.path.clone(), source }
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
}
