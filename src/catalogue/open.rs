//! Opening a catalogue: creating it, refusing what is not one (or is newer) without writing
//! to it, and migrating an older schema in one transaction.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::schema::{self, SCHEMA_VERSION};
use super::{Catalogue, undo};

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
}
