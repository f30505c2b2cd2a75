//! Undo and redo of every edit, recorded by SQLite triggers.
//!
//! While an action is being recorded (`undo_state.recording` holds its id), each
//! insert, update and delete on a logged table appends to `undo_log` the statement
//! that reverses it. Undoing an action runs its statements newest first; the
//! triggers record their reversal as they run, which is exactly the redo.
//! Because this lives in the database, an edit and its undo record commit together.

use rusqlite::{Connection, Transaction, params};

use super::schema::LOGGED_TABLES;

/// (Re)creates the recording triggers for every logged table from its current columns.
pub fn install_triggers(conn: &Connection) -> rusqlite::Result<()> {
    for table in LOGGED_TABLES {
        let columns: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({table})"))?
            .query_map([], |row| row.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        let recording = "(SELECT recording FROM undo_state WHERE id = 1)";
        let log = |stmt: String| format!("INSERT INTO undo_log (action_id, stmt) VALUES ({recording}, {stmt});");
        let set_old =
            columns.iter().map(|c| format!("'{c}=' || quote(old.{c})")).collect::<Vec<_>>().join(" || ',' || ");
        let names = columns.join(",");
        let old_values = columns.iter().map(|c| format!("quote(old.{c})")).collect::<Vec<_>>().join(" || ',' || ");
        let sql = format!(
            "DROP TRIGGER IF EXISTS undo_{table}_insert;
             DROP TRIGGER IF EXISTS undo_{table}_update;
             DROP TRIGGER IF EXISTS undo_{table}_delete;
             CREATE TRIGGER undo_{table}_insert AFTER INSERT ON {table} WHEN {recording} IS NOT NULL BEGIN
               {insert}
             END;
             CREATE TRIGGER undo_{table}_update AFTER UPDATE ON {table} WHEN {recording} IS NOT NULL BEGIN
               {update}
             END;
             CREATE TRIGGER undo_{table}_delete BEFORE DELETE ON {table} WHEN {recording} IS NOT NULL BEGIN
               {delete}
             END;",
            insert = log(format!("'DELETE FROM {table} WHERE rowid=' || new.rowid")),
            update = log(format!("'UPDATE {table} SET ' || {set_old} || ' WHERE rowid=' || old.rowid")),
            delete = log(format!(
                "'INSERT INTO {table} (rowid,{names}) VALUES (' || old.rowid || ',' || {old_values} || ')'"
            )),
        );
        conn.execute_batch(&sql)?;
    }
    Ok(())
}

/// Starts recording into a new action, dropping whatever could still be redone:
/// a new edit after an undo ends that branch of history.
pub fn begin_action(tx: &Transaction, label: &str, at: &str) -> rusqlite::Result<i64> {
    tx.execute("DELETE FROM actions WHERE undone = 1", [])?;
    tx.execute("INSERT INTO actions (label, at) VALUES (?1, ?2)", params![label, at])?;
    let id = tx.last_insert_rowid();
    resume_action(tx, id)?;
    Ok(id)
}

/// Records the following statements into an existing action (a long import spans several transactions).
pub fn resume_action(tx: &Transaction, id: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE undo_state SET recording = ?1 WHERE id = 1", [id])?;
    Ok(())
}

/// Stops recording. An action that changed nothing is dropped from the history.
pub fn end_action(tx: &Transaction, id: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE undo_state SET recording = NULL WHERE id = 1", [])?;
    tx.execute("DELETE FROM actions WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM undo_log WHERE action_id = ?1)", [id])?;
    Ok(())
}

/// Clears a recording left behind by a process that died mid-action.
pub fn clear_stale_recording(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("UPDATE undo_state SET recording = NULL WHERE id = 1 AND recording IS NOT NULL", [])?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Undo,
    Redo,
}

/// Undoes the newest done action, or redoes the oldest undone one. Returns its label.
pub fn step(tx: &Transaction, direction: Direction) -> rusqlite::Result<Option<String>> {
    let pick = match direction {
        Direction::Undo => "SELECT id, label FROM actions WHERE undone = 0 ORDER BY id DESC LIMIT 1",
        Direction::Redo => "SELECT id, label FROM actions WHERE undone = 1 ORDER BY id ASC LIMIT 1",
    };
    let found: Option<(i64, String)> = match tx.query_row(pick, [], |r| Ok((r.get(0)?, r.get(1)?))) {
        Ok(v) => Some(v),
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(e) => return Err(e),
    };
    let Some((id, label)) = found else { return Ok(None) };
    let statements: Vec<String> = tx
        .prepare("SELECT stmt FROM undo_log WHERE action_id = ?1 ORDER BY seq DESC")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.execute("DELETE FROM undo_log WHERE action_id = ?1", [id])?;
    // Rows come back parent and child in whatever order they left; check keys at commit.
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    resume_action(tx, id)?;
    for stmt in &statements {
        tx.execute_batch(stmt)?;
    }
    tx.execute("UPDATE undo_state SET recording = NULL WHERE id = 1", [])?;
    tx.execute("UPDATE actions SET undone = ?2 WHERE id = ?1", params![id, direction == Direction::Undo])?;
    Ok(Some(label))
}
