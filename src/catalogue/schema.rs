//! The catalogue's schema and its migrations.
//!
//! `PRAGMA user_version` holds the schema version; `MIGRATIONS[i]` takes a catalogue
//! from version `i` to `i + 1`. A catalogue written by a newer whaleid is refused
//! before anything is written to it.

/// Marks an SQLite file as a whaleid catalogue ("WHID").
pub const APPLICATION_ID: i32 = 0x5748_4944;

pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first catalogue.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE photos (
        id          INTEGER PRIMARY KEY,
        path        TEXT NOT NULL UNIQUE,   -- relative to the photo root where possible, '/' separated
        hash        TEXT NOT NULL,          -- blake3 of the file's bytes, hex
        width       INTEGER NOT NULL,       -- pixels, after EXIF orientation
        height      INTEGER NOT NULL,
        orientation INTEGER NOT NULL DEFAULT 1,
        taken_at    TEXT,                   -- EXIF DateTimeOriginal, 'YYYY-MM-DDTHH:MM:SS' (camera local time)
        latitude    REAL,
        longitude   REAL,
        imported_at TEXT NOT NULL
    );
    CREATE INDEX photos_hash ON photos(hash);
    CREATE TABLE photo_tags (
        photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
        tag      TEXT NOT NULL,
        PRIMARY KEY (photo_id, tag)
    );
    CREATE TABLE annotations (
        id         INTEGER PRIMARY KEY,
        photo_id   INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
        x REAL, y REAL, w REAL, h REAL,     -- photo pixels; all NULL = the whole photo
        part       TEXT NOT NULL CHECK (part IN ('fluke','dorsal_fin','head','body')),
        side       TEXT NOT NULL DEFAULT 'unknown' CHECK (side IN ('left','right','unknown')),
        source     TEXT NOT NULL CHECK (source IN ('manual','detector','imported')),
        status     TEXT NOT NULL DEFAULT 'unreviewed' CHECK (status IN ('unreviewed','verified','rejected')),
        species    TEXT,
        score      REAL,                    -- detector confidence, when a detector proposed it
        created_at TEXT NOT NULL,
        CHECK ((x IS NULL) = (w IS NULL) AND (y IS NULL) = (h IS NULL) AND (x IS NULL) = (y IS NULL))
    );
    CREATE INDEX annotations_photo ON annotations(photo_id);
    CREATE INDEX annotations_status ON annotations(status);
    CREATE TABLE individuals (
        id         INTEGER PRIMARY KEY,
        code       TEXT NOT NULL UNIQUE,    -- the catalogue id biologists quote
        name       TEXT NOT NULL DEFAULT '',
        species    TEXT,
        notes      TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE identifications (
        annotation_id INTEGER PRIMARY KEY REFERENCES annotations(id) ON DELETE CASCADE,
        individual_id INTEGER NOT NULL REFERENCES individuals(id),
        how           TEXT NOT NULL CHECK (how IN ('confirmed','imported','predicted')),
        score         REAL,
        at            TEXT NOT NULL
    );
    CREATE INDEX identifications_individual ON identifications(individual_id);
    -- Derived data: recomputed when stale, never part of undo.
    CREATE TABLE embeddings (
        annotation_id INTEGER NOT NULL REFERENCES annotations(id) ON DELETE CASCADE,
        model         TEXT NOT NULL,        -- model + neck id
        box_key       TEXT NOT NULL,        -- the box the vector was computed from
        dim           INTEGER NOT NULL,
        vector        BLOB NOT NULL,        -- f32 little-endian
        PRIMARY KEY (annotation_id, model)
    );
    -- The action log: every edit is an action; undo_log holds the statements that reverse it.
    CREATE TABLE actions (
        id     INTEGER PRIMARY KEY,
        label  TEXT NOT NULL,
        at     TEXT NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE undo_log (
        seq       INTEGER PRIMARY KEY,
        action_id INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
        stmt      TEXT NOT NULL
    );
    CREATE INDEX undo_log_action ON undo_log(action_id);
    CREATE TABLE undo_state (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        recording INTEGER                    -- the action being recorded, NULL when none
    );
    INSERT INTO undo_state (id, recording) VALUES (1, NULL);
    "#,
    // 1 -> 2: local features (keypoints and descriptors) of each crop, for the verification
    // of a search's shortlist. Derived data, like the embeddings.
    r#"
    CREATE TABLE local_features (
        annotation_id INTEGER NOT NULL REFERENCES annotations(id) ON DELETE CASCADE,
        method        TEXT NOT NULL,        -- the extractor and its version
        box_key       TEXT NOT NULL,        -- the box the features were computed from
        features      BLOB NOT NULL,
        PRIMARY KEY (annotation_id, method)
    );
    "#,
];

pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The tables whose edits can be undone. Embeddings are derived and the log itself is not logged.
pub const LOGGED_TABLES: &[&str] =
    &["settings", "photos", "photo_tags", "annotations", "individuals", "identifications"];
