//! The queue database's schema and its migrations.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::sql::{SqlContext, store};
use crate::queue::QueueError;

/// The schema version this build writes, kept in SQLite's `user_version`
/// pragma. A database with a newer version is refused; older ones are
/// migrated when opened.
pub const SCHEMA_VERSION: i64 = 3;

/// Version 1 of the schema.
///
/// `seq` orders items by submission (FIFO), independent of clock
/// resolution. Times are kept twice: RFC 3339 text for people and, where the
/// queue compares them, Unix milliseconds. The trigger makes "a terminal
/// item never changes state again" hold even against a buggy writer.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS items (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                         ('queued', 'claimed', 'running', 'finished', 'failed', 'stopped')),
    stage            TEXT    CHECK (stage IS NULL OR stage IN ('agent', 'build', 'run')),
    message          TEXT,
    exit_code        INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    spec             TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    created_ms       INTEGER NOT NULL,
    updated_at       TEXT    NOT NULL,
    updated_ms       INTEGER NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    claimed_by       TEXT,
    lease_expires_at TEXT,
    lease_expires_ms INTEGER,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    run_pid          INTEGER
);
CREATE INDEX IF NOT EXISTS items_by_queue_state ON items (queue, state, seq);
CREATE INDEX IF NOT EXISTS items_by_holder ON items (claimed_by, state);
CREATE TRIGGER IF NOT EXISTS terminal_items_stay_terminal
BEFORE UPDATE OF state ON items
WHEN OLD.state IN ('finished', 'failed', 'stopped') AND NEW.state IS NOT OLD.state
BEGIN
    SELECT RAISE(ABORT, 'a finished, failed or stopped queue item cannot change state');
END;
";

/// Version 2: a run is found again through a runner-neutral handle (which
/// runner, and that runner's own id of the run) instead of a process group
/// id. A pid recorded by version 1 becomes a `local-process` handle, which is
/// what it was.
const SCHEMA_V2: &str = "
ALTER TABLE items ADD COLUMN run_runner TEXT;
ALTER TABLE items ADD COLUMN run_handle TEXT;
UPDATE items SET run_runner = 'local-process', run_handle = CAST(run_pid AS TEXT)
    WHERE run_pid IS NOT NULL;
ALTER TABLE items DROP COLUMN run_pid;
";

/// Version 3: rows that cannot be read back (a value of the wrong type,
/// text that is not UTF-8) are moved here, as they were stored, instead of
/// stopping every reader; `reason` says what was wrong. The columns are
/// untyped so that any stored value fits.
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS quarantined_items (
    quarantined_at, reason, seq, id, queue, state, stage, message, exit_code, attempts, spec,
    created_at, created_ms, updated_at, updated_ms, started_at, finished_at, claimed_by,
    lease_expires_at, lease_expires_ms, stop_requested, run_runner, run_handle
);
";

/// The columns of `items` that [`SCHEMA_V3`]'s `quarantined_items` keeps
/// after its own two, in its order.
pub(super) const QUARANTINED_COLUMNS: &str = "seq, id, queue, state, stage, message, exit_code, \
    attempts, spec, created_at, created_ms, updated_at, updated_ms, started_at, finished_at, \
    claimed_by, lease_expires_at, lease_expires_ms, stop_requested, run_runner, run_handle";

/// Puts the database in write-ahead-log mode (a setting kept in the file),
/// so readers and one writer in different processes do not block each other.
///
/// Switching needs an exclusive lock, and SQLite does not always wait for
/// it with the busy handler (e.g. when several processes open a new
/// database at once), so a busy database is retried here for up to
/// `timeout`.
pub(super) fn enable_wal(
    conn: &Connection,
    path: &Path,
    timeout: Duration,
) -> Result<(), QueueError> {
    let op = "switch to WAL journal mode";
    let deadline = Instant::now() + timeout;
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(QueueError::NoWal {
                    store: store(path),
                    mode,
                });
            }
            Err(error)
                if matches!(
                    error.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error).ctx(path, op),
        }
    }
}

/// Creates or migrates the schema, in one transaction so that processes
/// opening a new database together do not trip over each other.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), QueueError> {
    let op = "create or migrate schema";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(path, op)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .ctx(path, op)?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::SchemaTooNew {
            store: store(path),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1).ctx(path, op)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2).ctx(path, op)?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3).ctx(path, op)?;
    }
    // Later versions: `if version < 4 { ... }` here.
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .ctx(path, op)?;
    }
    tx.commit().ctx(path, op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_pid_reads_back_as_a_local_process_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let insert = "INSERT INTO items (id, queue, state, spec, created_at, created_ms,
                          updated_at, updated_ms, claimed_by, run_pid)
                      VALUES (?1, 'q', 'running', '{}', 't', 0, 't', 0, 'agent', ?2)";
        conn.execute(insert, rusqlite::params!["with-pid", 4242])
            .unwrap();
        conn.execute(insert, rusqlite::params!["without", None::<i64>])
            .unwrap();

        migrate(&mut conn, &path).unwrap();

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let handle = |id: &str| -> (Option<String>, Option<String>) {
            conn.query_row(
                "SELECT run_runner, run_handle FROM items WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(
            handle("with-pid"),
            (Some("local-process".into()), Some("4242".into()))
        );
        assert_eq!(handle("without"), (None, None));
        let has_pid_column = conn.prepare("SELECT run_pid FROM items").is_ok();
        assert!(!has_pid_column, "run_pid outlived the migration");
    }
}
