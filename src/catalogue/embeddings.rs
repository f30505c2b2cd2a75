//! Embeddings: the vectors computed for each annotation under a model, keyed by the box
//! they were computed from, and the one scan a search gallery is read with.

use crate::base::ids::{AnnotationId, IndividualId};
use rusqlite::{TransactionBehavior, params};

use super::records::{ANNOTATION_COLUMNS, annotation_columns_of_a, annotation_from_row, bbox_from_columns};
use super::{Annotation, Catalogue, CatalogueError, Result, box_key};
use crate::base::vocabulary::{BoxPx, Part, Side};

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

/// One stored embedding of an annotation that is not rejected, borrowed from the row being
/// read (see [`Catalogue::scan_embeddings`]).
#[derive(Debug, Clone, Copy)]
pub struct StoredEmbedding<'r> {
    pub annotation: AnnotationId,
    pub part: Part,
    pub side: Side,
    pub species: Option<&'r str>,
    /// The annotation's box now.
    pub bbox: Option<BoxPx>,
    /// The individual it is identified as: id and code.
    pub individual: Option<(IndividualId, &'r str)>,
    /// The box the vector was computed from.
    pub box_key: &'r str,
    /// The stored dimension, which a damaged row may contradict.
    pub dim: i64,
    /// The vector as stored: little-endian f32.
    pub bytes: &'r [u8],
}

impl StoredEmbedding<'_> {
    /// Computed from the box the annotation has now (not moved since).
    pub fn is_fresh(&self) -> bool {
        box_key_matches(self.bbox.as_ref(), self.box_key)
    }
}

/// How many annotations there are, rejected or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnnotationCounts {
    pub unrejected: usize,
    pub rejected: usize,
}

impl Catalogue {
    /// Every annotation that is not rejected, with its photo's stored path and the box key of
    /// its embedding under `model` (`None` when it has none): what the embedder works from.
    pub fn embedding_states(&self, model: &str) -> Result<Vec<EmbeddingState>> {
        let cols = annotation_columns_of_a();
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

    /// The models that have embeddings here, with their counts, most first.
    pub fn embedding_models(&self) -> Result<Vec<(String, usize)>> {
        self.query_all("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY COUNT(*) DESC, model", [], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as usize))
        })
    }

    /// Calls `visit` with every embedding under `model` of an annotation that is not rejected,
    /// and returns the annotation counts seen by the same read transaction.
    ///
    /// Driven by the embeddings table, read in storage order like a plain scan of it (driving
    /// by annotations costs an index probe and a table seek per row); each row's annotation,
    /// identification and individual are found by primary key, and nothing is copied.
    pub fn scan_embeddings(
        &self,
        model: &str,
        mut visit: impl FnMut(StoredEmbedding<'_>) -> Result<()>,
    ) -> Result<AnnotationCounts> {
        const SQL: &str = "SELECT a.id, a.status = 'rejected', a.part, a.side, a.species, a.x, a.y, a.w, a.h, \
                           i.individual_id, v.code, e.box_key, e.dim, e.vector \
                           FROM embeddings e \
                           JOIN annotations a ON a.id = e.annotation_id \
                           LEFT JOIN identifications i ON i.annotation_id = a.id \
                           LEFT JOIN individuals v ON v.id = i.individual_id \
                           WHERE e.model = ?1";
        // Counted through the status index.
        const COUNTS: &str = "SELECT status = 'rejected', count(*) FROM annotations GROUP BY 1";
        let err = |e| self.sql_err(e);
        let conv = |e: rusqlite::types::FromSqlError| self.sql_err(e.into());
        // One read transaction: the counts and the scan see the same catalogue.
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        let mut counts = AnnotationCounts::default();
        let grouped: Vec<(bool, i64)> = tx
            .prepare_cached(COUNTS)
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(err)?;
        for (rejected, n) in grouped {
            if rejected {
                counts.rejected = n as usize;
            } else {
                counts.unrejected = n as usize;
            }
        }
        let mut stmt = tx.prepare_cached(SQL).map_err(err)?;
        let mut rows = stmt.query([model]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            if r.get::<_, bool>(1).map_err(err)? {
                continue;
            }
            let annotation: AnnotationId = r.get(0).map_err(err)?;
            let invalid = |e: String| CatalogueError::Invalid(format!("annotation {annotation}: {e}"));
            let text = move |i: usize| r.get_ref(i).map_err(err)?.as_str().map_err(conv);
            let text_or_null = move |i: usize| r.get_ref(i).map_err(err)?.as_str_or_null().map_err(conv);
            let individual = match r.get::<_, Option<IndividualId>>(9).map_err(err)? {
                Some(id) => Some((id, text(10)?)),
                None => None,
            };
            visit(StoredEmbedding {
                annotation,
                part: parse_name(Part::ALL, Part::as_str, text(2)?).map_err(invalid)?,
                side: parse_name(Side::ALL, Side::as_str, text(3)?).map_err(invalid)?,
                species: text_or_null(4)?,
                bbox: bbox_from_columns([
                    r.get(5).map_err(err)?,
                    r.get(6).map_err(err)?,
                    r.get(7).map_err(err)?,
                    r.get(8).map_err(err)?,
                ]),
                individual,
                box_key: text(11)?,
                dim: r.get(12).map_err(err)?,
                bytes: r.get_ref(13).map_err(err)?.as_bytes().map_err(conv)?,
            })?;
        }
        drop(rows);
        drop(stmt);
        // Read only: ending it changes nothing.
        tx.rollback().map_err(err)?;
        Ok(counts)
    }

    // Derived data: not undoable.

    pub fn put_embedding(
        &mut self,
        annotation: AnnotationId,
        model: &str,
        box_key: &str,
        vector: &[f32],
    ) -> Result<()> {
        self.put_embeddings(model, &[(annotation, box_key.to_string(), vector.to_vec())])
    }

    /// Stores `(annotation, box key, vector)` rows under `model` in one transaction.
    pub fn put_embeddings(&mut self, model: &str, rows: &[(AnnotationId, String, Vec<f32>)]) -> Result<()> {
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

    /// The stored local features under `method` that were computed from their annotation's
    /// box as it is now, as stored bytes, by annotation.
    pub fn fresh_local_features(&self, method: &str) -> Result<std::collections::HashMap<AnnotationId, Vec<u8>>> {
        let rows = self.query_all(
            "SELECT l.annotation_id, l.box_key, l.features, a.x, a.y, a.w, a.h FROM local_features l \
             JOIN annotations a ON a.id = l.annotation_id WHERE l.method = ?1",
            [method],
            |r| {
                let bbox = bbox_from_columns([r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?]);
                let stored: String = r.get(1)?;
                Ok((box_key_matches(bbox.as_ref(), &stored), r.get::<_, AnnotationId>(0)?, r.get::<_, Vec<u8>>(2)?))
            },
        )?;
        let out = rows.into_iter().filter(|(fresh, _, _)| *fresh).map(|(_, id, f)| (id, f)).collect();
        Ok(out)
    }

    /// Stores `(annotation, box key, features)` rows under `method` in one transaction.
    pub fn put_local_features(&mut self, method: &str, rows: &[(AnnotationId, String, Vec<u8>)]) -> Result<()> {
        let path = self.path.clone();
        let err = |source| CatalogueError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO local_features (annotation_id, method, box_key, features) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for (annotation, box_key, features) in rows {
                insert.execute(params![annotation, method, box_key, features]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

/// Matches the catalogue's lower-case names without the allocations of `FromStr`, which
/// also accepts spellings a catalogue never stores; falls back to it for the error message.
fn parse_name<T: Copy + std::str::FromStr<Err = String>>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    text: &str,
) -> std::result::Result<T, String> {
    all.iter().copied().find(|&v| name(v) == text).map_or_else(|| text.parse(), Ok)
}

/// Whether `stored` equals `box_key(bbox)`. Formatting four floats per row was a
/// sixth of the load time, so each stored number is compared as an integer count of
/// hundredths instead; whenever that cannot be certain (a rounding tie, an odd value, a
/// stored text not in the canonical form) the key is formatted after all.
fn box_key_matches(bbox: Option<&BoxPx>, stored: &str) -> bool {
    let Some(b) = bbox else { return stored == box_key(None) };
    let mut parts = stored.split(',');
    for v in [b.x, b.y, b.w, b.h] {
        match (parts.next().and_then(canonical_hundredths), rounded_hundredths(v)) {
            (Some(k), Some(r)) if k == r => {}
            // Both certain and different: the formatted key cannot equal the stored one.
            (Some(_), Some(_)) => return false,
            _ => return box_key(bbox) == stored,
        }
    }
    parts.next().is_none() || box_key(bbox) == stored
}

/// `"123.45"` → 12345, only for the text `format!("{:.2}", v)` prints for a positive `v`
/// (no sign, no leading zero but a lone one, exactly two decimals).
fn canonical_hundredths(text: &str) -> Option<u64> {
    let (int, frac) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) || int.len() > 12 || frac.len() != 2 || !digits(frac) {
        return None;
    }
    Some(int.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

/// `v` rounded to hundredths as `{:.2}` rounds it, when that is certain: `v` positive and
/// below a million (where `v * 100` is off by far less than the margin) and not within
/// 1e-6 of a tie.
fn rounded_hundredths(v: f64) -> Option<u64> {
    if !(v > 0.0 && v < 1e6) {
        return None;
    }
    let t = v * 100.0;
    let floor = t.floor();
    let frac = t - floor;
    if (frac - 0.5).abs() < 1e-6 {
        return None;
    }
    Some(floor as u64 + u64::from(frac > 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_box_key_check_agrees_with_formatting_the_key() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Ties at the second decimal, values around the cut-offs, and the odd ones.
        let mut values = vec![
            0.0,
            -0.0,
            -1.0,
            0.001,
            0.005,
            0.004_999_9,
            0.125,
            10.125,
            10.135,
            2.675,
            1.005,
            99.995,
            999_999.995,
            1e6,
            1e6 + 0.125,
            123_456_789.125,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ];
        for _ in 0..2000 {
            let whole = rng.random_range(0..5000) as f64;
            values.push(whole + (rng.random_range(0..1000) as f64) / 1000.0);
            values.push(whole + rng.random::<f64>());
            values.push(rng.random::<f64>() * 1e-2);
        }
        let boxes: Vec<Option<BoxPx>> = values
            .chunks(2)
            .flat_map(|v| {
                let (a, b) = (v[0], *v.get(1).unwrap_or(&1.0));
                [Some(BoxPx::new(a, b, 3.0, 4.0)), Some(BoxPx::new(1.0, 2.0, a, b)), None]
            })
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            // Against its own key, its neighbours' keys and hand-made near misses.
            let mut keys = vec![box_key(a.as_ref())];
            for b in boxes.iter().skip(i.saturating_sub(3)).take(6) {
                keys.push(box_key(b.as_ref()));
            }
            keys.push(keys[0].replacen('.', ".0", 1));
            keys.push(format!("0{}", keys[0]));
            keys.push(format!("{},5.00", keys[0]));
            for key in keys {
                assert_eq!(box_key_matches(a.as_ref(), &key), box_key(a.as_ref()) == key, "{a:?} against {key}");
            }
        }
    }
}
