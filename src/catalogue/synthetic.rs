//! Large synthetic catalogues for benchmarks and scale tests, written in a few statements
//! (no photo files are needed), and the plain scans the benchmarks measure against.

use std::path::Path;

use rusqlite::TransactionBehavior;

use super::{Catalogue, CatalogueError, Result};
use crate::base::vocabulary::BoxPx;

/// The shape of a synthetic catalogue: `photos` photos (`photos/p000000.jpg`...; 512 x 384,
/// dated through a year), `individuals` humpback whales, and `annotations` fluke boxes dealt
/// to the photos in turn, a third of them unreviewed and the rest verified, each identified.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticCatalogue {
    pub photos: usize,
    pub annotations: usize,
    pub individuals: usize,
    /// The box every annotation has.
    pub bbox: BoxPx,
}

impl SyntheticCatalogue {
    /// One box per photo.
    pub fn one_box_per_photo(photos: usize, individuals: usize, bbox: BoxPx) -> Self {
        SyntheticCatalogue { photos, annotations: photos, individuals, bbox }
    }
}

impl Catalogue {
    /// Fills an empty catalogue with the records of `shape` in one transaction. Not an edit:
    /// there is nothing to undo.
    pub fn fill_synthetic(&mut self, shape: &SyntheticCatalogue) -> Result<()> {
        let SyntheticCatalogue { photos, annotations, individuals, bbox } = *shape;
        let (photos, individuals) = (photos.max(1), individuals.max(1));
        let fill = format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last_individual})
             INSERT INTO individuals (code, name, species, notes, created_at)
                 SELECT printf('IND-%05d', i), '', 'humpback_whale', '', '2024-01-01T00:00:00' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last_photo})
             INSERT INTO photos (path, hash, width, height, orientation, taken_at, imported_at)
                 SELECT printf('photos/p%06d.jpg', i), printf('%064x', i), 512, 384, 1,
                        printf('2024-%02d-%02dT10:00:00', 1 + i % 12, 1 + i % 28), '2024-01-01T00:00:00' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {annotations})
             INSERT INTO annotations (id, photo_id, x, y, w, h, part, side, source, status, species, created_at)
                 SELECT i, 1 + (i - 1) % {photos}, {x}, {y}, {w}, {h}, 'fluke', 'unknown', 'imported',
                        CASE WHEN i % 3 = 0 THEN 'unreviewed' ELSE 'verified' END, 'humpback_whale',
                        '2024-01-01T00:00:00'
                 FROM n;
             INSERT INTO identifications (annotation_id, individual_id, how, at)
                 SELECT id, 1 + id % {individuals}, 'imported', '2024-01-01T00:00:00' FROM annotations;",
            last_individual = individuals - 1,
            last_photo = photos - 1,
            x = bbox.x,
            y = bbox.y,
            w = bbox.w,
            h = bbox.h,
        );
        if annotations == 0 {
            return Err(CatalogueError::Invalid("a synthetic catalogue needs at least one annotation".into()));
        }
        // The statements number photos and annotations from 1.
        if self.query_one("SELECT 1 FROM photos LIMIT 1", [], |r| r.get::<_, i64>(0))?.is_some() {
            return Err(CatalogueError::Invalid("a synthetic catalogue is filled into an empty one".into()));
        }
        let path = self.path.clone();
        let err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute_batch(&fill).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Sums the length of every annotation's status: one full scan of the annotations table,
    /// the least any summary of them must read.
    pub fn scan_annotations(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT sum(length(status)) FROM annotations", [], |r| r.get(0))
            .map_err(|e| self.sql_err(e))
    }
}

/// Reads every stored embedding blob once on a fresh connection, without opening the file as a
/// catalogue: the least any gallery load must do. Returns the bytes touched.
pub fn scan_embedding_blobs(path: &Path) -> Result<usize> {
    let err = |source| CatalogueError::Sqlite { path: path.to_path_buf(), source };
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    let mut stmt = conn.prepare("SELECT vector FROM embeddings").map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut total = 0usize;
    while let Some(r) = rows.next().map_err(err)? {
        let blob = r.get_ref(0).map_err(err)?.as_blob().map_err(|e| err(e.into()))?;
        total += blob.len() + blob.first().copied().unwrap_or(0) as usize;
    }
    Ok(total)
}
