//! The embedded queue itself: a SQLite database in the agent's state
//! directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::clock::Now;
use super::row::{self, Damage, columns};
use super::schema::{QUARANTINED_COLUMNS, enable_wal, migrate};
use super::sql::{SqlContext, store};
use crate::json_kind;
use crate::queue::{ItemState, QueueError, QueueItem, Reclaimed, RunHandle, Stage};

/// The name of the database file inside the state directory.
pub const DB_FILE_NAME: &str = "queue.sqlite3";

/// How long an operation waits for another process's write to finish before
/// it fails with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default queue backend: a SQLite database (`queue.sqlite3`) in the
/// agent's state directory.
///
/// The agent process and short-lived CLI processes (`submit`, `queue list`)
/// use the same file at the same time, so the database runs in WAL mode with
/// a busy timeout of [`BUSY_TIMEOUT`], and every state change is a single
/// `BEGIN IMMEDIATE` transaction: two handles — in one process or in
/// several — never claim the same item, and a crash never leaves an item
/// half changed.
///
/// Item ids are UUID v4s in simple form (32 lowercase hex digits). Items
/// are served first in, first out within a queue.
///
/// Every call blocks (for at most about [`BUSY_TIMEOUT`] while another
/// process writes); call it from a blocking context in async code.
pub struct EmbeddedQueue {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// Opens the queue in `state_dir`, creating the directory (mode 0700 on
    /// unix; an existing directory is left as it is), the database file (mode
    /// 0600 on unix) and its schema as needed.
    ///
    /// A new database is made whole under a temporary name and then linked
    /// into place, so `queue.sqlite3` never exists half made: an existing
    /// file of 0 bytes was truncated or replaced, and is refused
    /// ([`QueueError::EmptyDatabase`]) instead of silently becoming an empty
    /// queue.
    pub fn open(state_dir: &Path) -> Result<Self, QueueError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(DB_FILE_NAME);
        if !check_existing(&path)? {
            create_new(state_dir, &path)?;
        }
        let conn = Connection::open(&path).ctx(&path, "open")?;
        Self::prepare(conn, path).map_err(|error| {
            // SQLite says "unable to open" for a directory it cannot write
            // in; say why when that is it.
            match probe_writable(state_dir) {
                Err((probe, source)) if cannot_write(&error) => QueueError::Create {
                    path: probe,
                    source,
                },
                _ => error,
            }
        })
    }

    /// Opens the queue for reading when the state dir cannot be written (a
    /// read-only mount, say): as [`open`](Self::open) when it can, else the
    /// existing database read-only, with a warning that says why. Writes
    /// through a read-only queue fail with SQLite's "readonly database".
    pub fn open_for_reading(state_dir: &Path) -> Result<Self, QueueError> {
        match Self::open(state_dir) {
            Ok(queue) => Ok(queue),
            Err(error) if cannot_write(&error) => {
                let queue = Self::open_read_only(state_dir)?;
                tracing::warn!(
                    "the state dir {} cannot be written ({error}): reading the queue without changing it",
                    state_dir.display()
                );
                Ok(queue)
            }
            Err(error) => Err(error),
        }
    }

    /// The existing database of `state_dir`, read-only. A database in WAL
    /// mode whose shared-memory file cannot be made (a read-only directory)
    /// is read as the file alone; changes still in its write-ahead log are
    /// then not seen, and a warning says so.
    pub fn open_read_only(state_dir: &Path) -> Result<Self, QueueError> {
        use rusqlite::OpenFlags;
        let path = state_dir.join(DB_FILE_NAME);
        if !check_existing(&path)? {
            return Err(QueueError::Create {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "there is no queue database there, and the state dir cannot be written to make one",
                ),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let usable = |conn: Connection| -> rusqlite::Result<Connection> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(conn)
        };
        let op = "open read-only";
        let conn = match Connection::open_with_flags(&path, flags).and_then(usable) {
            Ok(conn) => conn,
            Err(_) => {
                let uri = format!("file:{}?immutable=1", uri_path(&path));
                let conn = Connection::open_with_flags(&uri, flags)
                    .and_then(usable)
                    .ctx(&path, op)?;
                let wal = wal_path(&path);
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    tracing::warn!(
                        "queue database {}: reading the file alone: changes still in its write-ahead log {} are not shown",
                        path.display(),
                        wal.display()
                    );
                }
                conn
            }
        };
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .ctx(&path, op)?;
        if version > super::SCHEMA_VERSION {
            return Err(QueueError::SchemaTooNew {
                store: store(&path),
                found: version,
                supported: super::SCHEMA_VERSION,
            });
        }
        Ok(EmbeddedQueue {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Sets up an open connection: busy timeout, WAL, schema.
    fn prepare(mut conn: Connection, path: PathBuf) -> Result<Self, QueueError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx(&path, "set busy timeout")?;
        enable_wal(&conn, &path, BUSY_TIMEOUT)?;
        migrate(&mut conn, &path)?;
        Ok(EmbeddedQueue {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a job to `queue` in state `queued` and returns its id.
    ///
    /// The queue name must not be empty, start or end with whitespace, or
    /// contain control characters; `spec` must be a JSON object.
    pub fn submit(&self, queue: &str, spec: serde_json::Value) -> Result<String, QueueError> {
        validate_queue_name(queue)?;
        if !spec.is_object() {
            return Err(QueueError::InvalidSpec {
                kind: json_kind::of(&spec),
            });
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let op = format!("submit item {id} to queue {queue:?}");
        let spec_text = spec.to_string();
        let now = Now::get();
        let conn = self.lock();
        conn.execute(
            "INSERT INTO items (id, queue, state, spec, created_at, created_ms, updated_at, updated_ms)
             VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?4, ?5)",
            params![id, queue, spec_text, now.text, now.ms],
        )
        .ctx(&self.path, &op)?;
        Ok(id)
    }

    /// Claims the oldest queued item of the first queue in `queues` (in that
    /// order) that has one: it becomes `claimed`, held by `agent_id` with a
    /// lease until now + `lease`, and its `attempts` goes up by one.
    ///
    /// Atomic against every other handle and process. Queued items whose
    /// stop was requested are moved to `stopped` on the way instead of being
    /// claimed. Returns `None` when no listed queue has a queued item.
    ///
    /// A row that cannot be read is moved aside on the way (with a warning
    /// naming it) instead of failing every claim; indexes that no longer
    /// match the rows are rebuilt and the claim tried once more (see
    /// [`check_and_repair`](Self::check_and_repair)).
    pub fn claim_next(
        &self,
        queues: &[String],
        agent_id: &str,
        lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError> {
        self.repairing(|| self.claim_once(queues, agent_id, lease))
    }

    /// Checks the whole database (`PRAGMA integrity_check`) and rebuilds
    /// indexes that do not match their rows (`REINDEX`), which SQLite
    /// reports as "database disk image is malformed" on the next write of
    /// such a row and which make reads skip rows silently. Returns what was
    /// found and repaired (nothing when all is well); damage beyond the
    /// indexes is a [`QueueError::Damaged`] that says what to do.
    pub fn check_and_repair(&self) -> Result<Vec<String>, QueueError> {
        let op = "check the database";
        let conn = self.lock();
        let problems = integrity_problems(&conn, &self.path, op)?;
        if problems.is_empty() {
            return Ok(problems);
        }
        let damaged = |problems: &[String]| QueueError::Damaged {
            store: store(&self.path),
            op: op.to_owned(),
            source: problems.join("; ").into(),
        };
        if !problems.iter().all(|p| p.contains(" index ")) {
            return Err(damaged(&problems));
        }
        conn.execute_batch("REINDEX")
            .ctx(&self.path, "rebuild the indexes")?;
        let left = integrity_problems(&conn, &self.path, op)?;
        if !left.is_empty() {
            return Err(damaged(&left));
        }
        tracing::warn!(
            "queue database {}: its indexes did not match its rows ({}); rebuilt them",
            self.path.display(),
            problems.join("; ")
        );
        Ok(problems)
    }

    /// Runs `call`; when it finds the database damaged, repairs what can be
    /// repaired (indexes) and runs it once more.
    fn repairing<T>(&self, call: impl Fn() -> Result<T, QueueError>) -> Result<T, QueueError> {
        match call() {
            Err(QueueError::Damaged { .. }) => {
                self.check_and_repair()?;
                call()
            }
            other => other,
        }
    }

    /// One try of [`claim_next`](Self::claim_next).
    fn claim_once(
        &self,
        queues: &[String],
        agent_id: &str,
        lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError> {
        let op = format!("claim next item for agent {agent_id}");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let now = Now::get();
        let (lease_ms, lease_text) = now.plus(lease);
        let mut claimed = None;
        let mut quarantined = Vec::new();
        'queues: for queue in queues {
            loop {
                let next: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM items
                         WHERE queue = ?1 AND state = 'queued' ORDER BY seq LIMIT 1",
                        params![queue],
                        |row| row.get(0),
                    )
                    .optional()
                    .ctx(&self.path, &op)?;
                let Some(seq) = next else {
                    break;
                };
                let item = match self.read_seq(&tx, seq, &op)? {
                    Ok(item) => item,
                    Err(damage) => {
                        self.quarantine(&tx, &damage, &op)?;
                        quarantined.push(damage);
                        continue;
                    }
                };
                if item.stop_requested {
                    tx.execute(
                        "UPDATE items SET state = 'stopped', message = ?2,
                             finished_at = ?3, updated_at = ?3, updated_ms = ?4
                         WHERE seq = ?1",
                        params![seq, "stopped before it started", now.text, now.ms],
                    )
                    .ctx(&self.path, &op)?;
                    continue;
                }
                tx.execute(
                    "UPDATE items SET state = 'claimed', claimed_by = ?2, attempts = attempts + 1,
                         lease_expires_at = ?3, lease_expires_ms = ?4, started_at = NULL,
                         run_runner = NULL, run_handle = NULL, updated_at = ?5, updated_ms = ?6
                     WHERE seq = ?1",
                    params![seq, agent_id, lease_text, lease_ms, now.text, now.ms],
                )
                .ctx(&self.path, &op)?;
                claimed = Some(
                    self.read_seq(&tx, seq, &op)?
                        .map_err(|damage| damage.error(&self.path))?,
                );
                break 'queues;
            }
        }
        tx.commit().ctx(&self.path, &op)?;
        self.report_quarantined(&quarantined);
        Ok(claimed)
    }

    /// Moves a `claimed` item held by `agent_id` to `running` and records
    /// when it started.
    pub fn mark_running(&self, id: &str, agent_id: &str) -> Result<(), QueueError> {
        let op = format!("mark item {id} running");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let current = self.current(&tx, id, &op)?;
        self.check_state(
            id,
            "start",
            current.state,
            &[ItemState::Claimed],
            ItemState::Running,
        )?;
        if current.claimed_by.as_deref() != Some(agent_id) {
            return Err(QueueError::NotHolder {
                store: store(&self.path),
                id: id.to_owned(),
                action: "start",
                holder: current.claimed_by.unwrap_or_else(|| "none".to_owned()),
                agent: agent_id.to_owned(),
            });
        }
        let now = Now::get();
        tx.execute(
            "UPDATE items SET state = 'running', started_at = ?2, updated_at = ?2, updated_ms = ?3
             WHERE id = ?1",
            params![id, now.text, now.ms],
        )
        .ctx(&self.path, &op)?;
        tx.commit().ctx(&self.path, &op)
    }

    /// Records where the item's run is (see [`RunHandle`]), so that what
    /// is left of it can be cleaned up if its agent dies. Needs a `claimed`
    /// or `running` item.
    pub fn set_run_handle(&self, id: &str, handle: &RunHandle) -> Result<(), QueueError> {
        let op = format!("set run handle of item {id}");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let current = self.current(&tx, id, &op)?;
        if !current.state.is_held() {
            return Err(QueueError::WrongState {
                store: store(&self.path),
                id: id.to_owned(),
                action: "record a run handle for",
                from: current.state,
                to: current.state,
                allowed: "claimed or running".to_owned(),
            });
        }
        let now = Now::get();
        tx.execute(
            "UPDATE items SET run_runner = ?2, run_handle = ?3, updated_at = ?4, updated_ms = ?5
             WHERE id = ?1",
            params![id, handle.runner, handle.id, now.text, now.ms],
        )
        .ctx(&self.path, &op)?;
        tx.commit().ctx(&self.path, &op)
    }

    /// Extends, to now + `lease`, the lease of every claimed or running item
    /// held by `agent_id` (expired or not, as long as it was not reclaimed);
    /// returns how many.
    pub fn renew_leases(&self, agent_id: &str, lease: Duration) -> Result<usize, QueueError> {
        let op = format!("renew leases of agent {agent_id}");
        let now = Now::get();
        let (lease_ms, lease_text) = now.plus(lease);
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let renewed = tx
            .execute(
                "UPDATE items SET lease_expires_at = ?2, lease_expires_ms = ?3
                 WHERE claimed_by = ?1 AND state IN ('claimed', 'running')",
                params![agent_id, lease_text, lease_ms],
            )
            .ctx(&self.path, &op)?;
        tx.commit().ctx(&self.path, &op)?;
        Ok(renewed)
    }

    /// Moves a `running` item to `finished`, recording the exit code and
    /// clearing its lease and message. Only its holder (`holder`, the agent
    /// id that claimed it) may; so for the other outcomes below.
    pub fn finish(&self, id: &str, holder: &str, exit_code: Option<i32>) -> Result<(), QueueError> {
        self.end(
            id,
            holder,
            "finish",
            &[ItemState::Running],
            ItemState::Finished,
            None,
            None,
            exit_code,
        )
    }

    /// Moves a `claimed` or `running` item to `failed`, recording the stage
    /// that failed, a message and the exit code if there was one.
    pub fn fail(
        &self,
        id: &str,
        holder: &str,
        stage: Stage,
        message: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        self.end(
            id,
            holder,
            "fail",
            &[ItemState::Claimed, ItemState::Running],
            ItemState::Failed,
            Some(stage),
            Some(message),
            exit_code,
        )
    }

    /// Moves a `claimed` or `running` item to `stopped` with a message.
    pub fn mark_stopped(&self, id: &str, holder: &str, message: &str) -> Result<(), QueueError> {
        self.end(
            id,
            holder,
            "stop",
            &[ItemState::Claimed, ItemState::Running],
            ItemState::Stopped,
            None,
            Some(message),
            None,
        )
    }

    /// Hands a `claimed` or `running` item back unfinished (the agent is
    /// shutting down): it goes back to `queued` with its holder, lease,
    /// start time and run handle cleared, and `attempts` goes down by one so a
    /// hand-back does not count as an attempt.
    ///
    /// If a stop was requested for the item it goes to `stopped` instead,
    /// since that is where the next claim would send it.
    pub fn release(&self, id: &str, holder: &str) -> Result<(), QueueError> {
        let op = format!("release item {id}");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let current = self.current(&tx, id, &op)?;
        let to = if current.stop_requested {
            ItemState::Stopped
        } else {
            ItemState::Queued
        };
        self.check_state(
            id,
            "release",
            current.state,
            &[ItemState::Claimed, ItemState::Running],
            to,
        )?;
        self.check_holder(id, "release", current.claimed_by.as_deref(), holder)?;
        let holder = current.claimed_by.as_deref().unwrap_or("unknown");
        let now = Now::get();
        if to == ItemState::Stopped {
            tx.execute(
                "UPDATE items SET state = 'stopped', message = ?2,
                     attempts = MAX(attempts - 1, 0), lease_expires_at = NULL,
                     lease_expires_ms = NULL, finished_at = ?3, updated_at = ?3, updated_ms = ?4
                 WHERE id = ?1",
                params![
                    id,
                    format!("stopped on request; agent {holder} handed it back unfinished"),
                    now.text,
                    now.ms
                ],
            )
        } else {
            tx.execute(
                "UPDATE items SET state = 'queued', message = ?2,
                     attempts = MAX(attempts - 1, 0), claimed_by = NULL, lease_expires_at = NULL,
                     lease_expires_ms = NULL, started_at = NULL, run_runner = NULL, run_handle = NULL,
                     updated_at = ?3, updated_ms = ?4
                 WHERE id = ?1",
                params![
                    id,
                    format!("handed back unfinished by agent {holder}"),
                    now.text,
                    now.ms
                ],
            )
        }
        .ctx(&self.path, &op)?;
        tx.commit().ctx(&self.path, &op)
    }

    /// Asks for an item to be stopped and returns its state afterwards.
    ///
    /// A `queued` item goes straight to `stopped`. A `claimed` or `running`
    /// item gets its `stop_requested` flag set and keeps its state: its
    /// agent sees the flag and stops it. A terminal item is left as it is
    /// (its state is returned, so the caller can say it already ended).
    pub fn request_stop(&self, id: &str) -> Result<ItemState, QueueError> {
        let op = format!("request stop of item {id}");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let current = self.current(&tx, id, &op)?;
        let now = Now::get();
        let state = match current.state {
            ItemState::Queued => {
                tx.execute(
                    "UPDATE items SET state = 'stopped', stop_requested = 1, message = ?2,
                         finished_at = ?3, updated_at = ?3, updated_ms = ?4
                     WHERE id = ?1",
                    params![id, "stopped before it started", now.text, now.ms],
                )
                .ctx(&self.path, &op)?;
                ItemState::Stopped
            }
            ItemState::Claimed | ItemState::Running => {
                tx.execute(
                    "UPDATE items SET stop_requested = 1, updated_at = ?2, updated_ms = ?3
                     WHERE id = ?1",
                    params![id, now.text, now.ms],
                )
                .ctx(&self.path, &op)?;
                current.state
            }
            terminal => terminal,
        };
        tx.commit().ctx(&self.path, &op)?;
        Ok(state)
    }

    /// Finds claimed and running items whose holder is gone — its lease
    /// expired (now is past `lease_expires_at`), or `holder_is_dead` says so
    /// for its `claimed_by` — and deals with each in one transaction:
    ///
    /// * a stop was requested: `stopped`;
    /// * `attempts < max_attempts`: back to `queued` (holder, lease, start
    ///   time and run handle cleared; the abandoned attempt still counts);
    /// * otherwise: `failed`, stage `agent`, with a message saying it was
    ///   abandoned N times by agents that died.
    ///
    /// Returns what was done to each, with its previous holder and run handle
    /// so the caller can clean up what its run left. `holder_is_dead` is
    /// called while the database write lock is held, so it must be quick
    /// (e.g. a `kill(pid, 0)`); it is not called for expired leases.
    pub fn reclaim_abandoned(
        &self,
        holder_is_dead: &dyn Fn(&str) -> bool,
        max_attempts: u32,
    ) -> Result<Vec<Reclaimed>, QueueError> {
        let op = "reclaim abandoned items";
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, op)?;
        let now = Now::get();
        let rows: Vec<(Result<QueueItem, Damage>, Option<i64>)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {}, lease_expires_ms FROM items
                     WHERE state IN ('claimed', 'running') ORDER BY seq",
                    columns()
                ))
                .ctx(&self.path, op)?;
            stmt.query_map([], |row| {
                // An unreadable lease counts as expired.
                let lease = row.get::<_, Option<i64>>(row::COLUMN_NAMES.len() + 1);
                Ok((row::read(row), lease.unwrap_or(None)))
            })
            .ctx(&self.path, op)?
            .collect::<rusqlite::Result<_>>()
            .ctx(&self.path, op)?
        };
        let mut held = Vec::new();
        let mut quarantined = Vec::new();
        for (item, lease_expires_ms) in rows {
            match item {
                Ok(item) => held.push(Held {
                    id: item.id,
                    claimed_by: item.claimed_by,
                    run_handle: item.run_handle,
                    attempts: item.attempts,
                    stop_requested: item.stop_requested,
                    lease_expires_ms,
                }),
                Err(damage) => {
                    self.quarantine(&tx, &damage, op)?;
                    quarantined.push(damage);
                }
            }
        }

        let mut reclaimed = Vec::new();
        for item in held {
            let expired = item.lease_expires_ms.is_none_or(|lease| now.ms > lease);
            let reason = if expired {
                "stopped renewing its lease"
            } else if item.claimed_by.as_deref().is_none_or(holder_is_dead) {
                "died"
            } else {
                continue;
            };
            let holder = item.claimed_by.unwrap_or_else(|| "unknown".to_owned());
            let (run_handle, attempts) = (item.run_handle, item.attempts);
            let item_op = format!("reclaim item {} from agent {holder}", item.id);
            let new_state = if item.stop_requested {
                tx.execute(
                    "UPDATE items SET state = 'stopped', message = ?2, lease_expires_at = NULL,
                         lease_expires_ms = NULL, finished_at = ?3, updated_at = ?3, updated_ms = ?4
                     WHERE id = ?1",
                    params![
                        item.id,
                        format!("stopped on request; agent {holder} {reason} before stopping it"),
                        now.text,
                        now.ms
                    ],
                )
                .ctx(&self.path, &item_op)?;
                ItemState::Stopped
            } else if attempts < max_attempts {
                tx.execute(
                    "UPDATE items SET state = 'queued', message = ?2, claimed_by = NULL,
                         lease_expires_at = NULL, lease_expires_ms = NULL, started_at = NULL,
                         run_runner = NULL, run_handle = NULL, updated_at = ?3, updated_ms = ?4
                     WHERE id = ?1",
                    params![
                        item.id,
                        format!(
                            "returned to the queue: agent {holder} {reason} \
                             (attempt {attempts} of {max_attempts})"
                        ),
                        now.text,
                        now.ms
                    ],
                )
                .ctx(&self.path, &item_op)?;
                ItemState::Queued
            } else {
                let times = if attempts == 1 { "time" } else { "times" };
                tx.execute(
                    "UPDATE items SET state = 'failed', stage = 'agent', message = ?2,
                         lease_expires_at = NULL, lease_expires_ms = NULL,
                         finished_at = ?3, updated_at = ?3, updated_ms = ?4
                     WHERE id = ?1",
                    params![
                        item.id,
                        format!(
                            "abandoned {attempts} {times} by agents that died \
                             (last: agent {holder}, which {reason}); giving up after \
                             {max_attempts} attempts"
                        ),
                        now.text,
                        now.ms
                    ],
                )
                .ctx(&self.path, &item_op)?;
                ItemState::Failed
            };
            reclaimed.push(Reclaimed {
                id: item.id,
                previous_holder: holder,
                run_handle,
                new_state,
            });
        }
        tx.commit().ctx(&self.path, op)?;
        self.report_quarantined(&quarantined);
        Ok(reclaimed)
    }

    /// The item with this id, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<QueueItem>, QueueError> {
        let op = format!("read item {id}");
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {} FROM items WHERE id = ?1", columns()),
            params![id],
            |row| Ok(row::read(row)),
        )
        .optional()
        .ctx(&self.path, &op)?
        .map(|read| read.map_err(|damage| damage.error(&self.path)))
        .transpose()
    }

    /// Every item, or every item of `queue`, oldest first.
    ///
    /// A row that cannot be read back is moved aside (see
    /// [`quarantined`](Self::quarantined)) with a warning that names it,
    /// and the others are listed; when the database cannot be written (a
    /// read-only state dir) the row stays where it is and is only skipped.
    pub fn list(&self, queue: Option<&str>) -> Result<Vec<QueueItem>, QueueError> {
        let op = match queue {
            Some(queue) => format!("list queue {queue:?}"),
            None => "list items".to_owned(),
        };
        let rows = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {} FROM items WHERE ?1 IS NULL OR queue = ?1 ORDER BY seq",
                    columns()
                ))
                .ctx(&self.path, &op)?;
            stmt.query_map(params![queue], |row| Ok(row::read(row)))
                .ctx(&self.path, &op)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx(&self.path, &op)?
        };
        let mut items = Vec::with_capacity(rows.len());
        let mut damaged = Vec::new();
        for row in rows {
            match row {
                Ok(item) => items.push(item),
                Err(damage) => damaged.push(damage),
            }
        }
        if !damaged.is_empty() {
            self.set_aside(&damaged, &op);
        }
        Ok(items)
    }

    /// The rows moved aside because they could not be read: for each, its
    /// row number, its id (as far as it reads) and why.
    pub fn quarantined(&self) -> Result<Vec<(i64, String, String)>, QueueError> {
        let op = "list quarantined items";
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT seq, id, reason FROM quarantined_items ORDER BY seq")
            .ctx(&self.path, op)?;
        stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0).unwrap_or(-1),
                row::value_text(row.get_ref(1).ok()),
                row::value_text(row.get_ref(2).ok()),
            ))
        })
        .ctx(&self.path, op)?
        .collect::<rusqlite::Result<_>>()
        .ctx(&self.path, op)
    }

    /// The names of every queue that has (or had) an item, sorted (a name
    /// that is not UTF-8 is shown lossily).
    pub fn queue_names(&self) -> Result<Vec<String>, QueueError> {
        let op = "list queue names";
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT DISTINCT queue FROM items ORDER BY queue")
            .ctx(&self.path, op)?;
        stmt.query_map([], |row| Ok(row::value_text(row.get_ref(0).ok())))
            .ctx(&self.path, op)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .ctx(&self.path, op)
    }

    /// Whether any of `queues` has a queued item.
    pub fn has_queued(&self, queues: &[String]) -> Result<bool, QueueError> {
        let op = "look for queued items";
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT EXISTS (SELECT 1 FROM items WHERE queue = ?1 AND state = 'queued')")
            .ctx(&self.path, op)?;
        for queue in queues {
            let found: bool = stmt
                .query_row(params![queue], |row| row.get(0))
                .ctx(&self.path, op)?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How many items `agent_id` holds (claimed or running).
    pub fn count_active(&self, agent_id: &str) -> Result<usize, QueueError> {
        let op = format!("count items held by agent {agent_id}");
        let conn = self.lock();
        let count: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM items
                 WHERE claimed_by = ?1 AND state IN ('claimed', 'running')",
                params![agent_id],
                |row| row.get(0),
            )
            .ctx(&self.path, &op)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// The connection. A panic while it was held cannot have left a change
    /// half made (an open transaction rolls back when dropped), so a
    /// poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a write transaction, taking the database's write lock at once
    /// so that what it reads cannot change before it writes.
    fn begin<'c>(&self, conn: &'c mut Connection, op: &str) -> Result<Transaction<'c>, QueueError> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(&self.path, op)
    }

    /// Row `seq`, read inside `tx`: the item, or what is wrong with it.
    fn read_seq(
        &self,
        tx: &Transaction<'_>,
        seq: i64,
        op: &str,
    ) -> Result<Result<QueueItem, Damage>, QueueError> {
        tx.query_row(
            &format!("SELECT {} FROM items WHERE seq = ?1", columns()),
            params![seq],
            |row| Ok(row::read(row)),
        )
        .ctx(&self.path, op)
    }

    /// Moves a row that cannot be read into `quarantined_items`, as stored,
    /// with why: the queue goes on with the rest instead of failing on it
    /// at every read.
    fn quarantine(
        &self,
        tx: &Transaction<'_>,
        damage: &Damage,
        op: &str,
    ) -> Result<(), QueueError> {
        let now = Now::get();
        tx.execute(
            &format!(
                "INSERT INTO quarantined_items (quarantined_at, reason, {QUARANTINED_COLUMNS})
                 SELECT ?2, ?3, {QUARANTINED_COLUMNS} FROM items WHERE seq = ?1"
            ),
            params![damage.seq, now.text, damage.detail],
        )
        .ctx(&self.path, op)?;
        tx.execute("DELETE FROM items WHERE seq = ?1", params![damage.seq])
            .ctx(&self.path, op)?;
        Ok(())
    }

    /// Moves `damaged` rows aside in a transaction of their own; when the
    /// database cannot be written they are only named.
    fn set_aside(&self, damaged: &[Damage], op: &str) {
        let result = (|| {
            let mut conn = self.lock();
            let tx = self.begin(&mut conn, op)?;
            for damage in damaged {
                self.quarantine(&tx, damage, op)?;
            }
            tx.commit().ctx(&self.path, op)
        })();
        match result {
            Ok(()) => self.report_quarantined(damaged),
            Err(error) => {
                for damage in damaged {
                    tracing::warn!(
                        "queue database {}: item {} (row {}) cannot be read: {}; skipped it \
                         (it could not be moved aside: {error})",
                        self.path.display(),
                        damage.id,
                        damage.seq,
                        damage.detail
                    );
                }
            }
        }
    }

    /// Names every row just moved aside, and how to look at them.
    fn report_quarantined(&self, damaged: &[Damage]) {
        for damage in damaged {
            tracing::warn!(
                "queue database {}: item {} (row {}) cannot be read: {}; moved it aside to table \
                 `quarantined_items` and went on with the rest (see it with \
                 `sqlite3 {} 'SELECT * FROM quarantined_items'`)",
                self.path.display(),
                damage.id,
                damage.seq,
                damage.detail,
                self.path.display()
            );
        }
    }

    /// The state-related fields of item `id`, or [`QueueError::NotFound`].
    fn current(&self, tx: &Transaction<'_>, id: &str, op: &str) -> Result<Current, QueueError> {
        let row: Option<(String, Option<String>, bool)> = tx
            .query_row(
                "SELECT state, claimed_by, stop_requested FROM items WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .ctx(&self.path, op)?;
        let Some((state, claimed_by, stop_requested)) = row else {
            return Err(QueueError::NotFound {
                store: store(&self.path),
                id: id.to_owned(),
            });
        };
        Ok(Current {
            state: state
                .parse()
                .map_err(|err| self.corrupt(id, "state", err))?,
            claimed_by,
            stop_requested,
        })
    }

    /// Errs unless `from` is one of `allowed`.
    fn check_state(
        &self,
        id: &str,
        action: &'static str,
        from: ItemState,
        allowed: &[ItemState],
        to: ItemState,
    ) -> Result<(), QueueError> {
        if allowed.contains(&from) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|state| state.as_str()).collect();
        Err(QueueError::WrongState {
            store: store(&self.path),
            id: id.to_owned(),
            action,
            from,
            to,
            allowed: names.join(" or "),
        })
    }

    /// Moves an item to a terminal state.
    #[allow(clippy::too_many_arguments)]
    fn end(
        &self,
        id: &str,
        holder: &str,
        action: &'static str,
        allowed: &[ItemState],
        to: ItemState,
        stage: Option<Stage>,
        message: Option<&str>,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        self.repairing(|| self.end_once(id, holder, action, allowed, to, stage, message, exit_code))
    }

    /// One try of [`end`](Self::end).
    #[allow(clippy::too_many_arguments)]
    fn end_once(
        &self,
        id: &str,
        holder: &str,
        action: &'static str,
        allowed: &[ItemState],
        to: ItemState,
        stage: Option<Stage>,
        message: Option<&str>,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let op = format!("{action} item {id}");
        let mut conn = self.lock();
        let tx = self.begin(&mut conn, &op)?;
        let current = self.current(&tx, id, &op)?;
        self.check_state(id, action, current.state, allowed, to)?;
        self.check_holder(id, action, current.claimed_by.as_deref(), holder)?;
        let now = Now::get();
        tx.execute(
            "UPDATE items SET state = ?2, stage = ?3, message = ?4, exit_code = ?5,
                 lease_expires_at = NULL, lease_expires_ms = NULL,
                 finished_at = ?6, updated_at = ?6, updated_ms = ?7
             WHERE id = ?1",
            params![
                id,
                to.as_str(),
                stage.map(Stage::as_str),
                message,
                exit_code,
                now.text,
                now.ms
            ],
        )
        .ctx(&self.path, &op)?;
        tx.commit().ctx(&self.path, &op)
    }

    /// Refuses `action` on item `id` by `agent` unless `agent` holds it: an
    /// agent whose lease expired must not record an outcome for an item
    /// another agent has reclaimed since.
    fn check_holder(
        &self,
        id: &str,
        action: &'static str,
        claimed_by: Option<&str>,
        agent: &str,
    ) -> Result<(), QueueError> {
        if claimed_by == Some(agent) {
            return Ok(());
        }
        Err(QueueError::NotHolder {
            store: store(&self.path),
            id: id.to_owned(),
            action,
            holder: claimed_by.unwrap_or("none").to_owned(),
            agent: agent.to_owned(),
        })
    }

    /// A [`QueueError::Corrupt`] for a bad column value.
    fn corrupt(&self, id: &str, column: &str, value: impl fmt::Display) -> QueueError {
        QueueError::Corrupt {
            store: store(&self.path),
            id: id.to_owned(),
            detail: format!("bad {column}: {value}"),
        }
    }
}

/// Creates `dir` and its missing parents, readable only by the user on unix.
fn create_private_dir(dir: &Path) -> Result<(), QueueError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| QueueError::Create {
        path: dir.to_owned(),
        source,
    })
}

/// Creates the database file if it does not exist yet, readable only by the
/// user on unix (SQLite gives its WAL and shared-memory files the same mode).
fn create_private_file(path: &Path) -> Result<(), QueueError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|source| QueueError::Create {
            path: path.to_owned(),
            source,
        })
}

/// What `PRAGMA integrity_check` finds wrong (nothing when it says `ok`).
fn integrity_problems(conn: &Connection, path: &Path, op: &str) -> Result<Vec<String>, QueueError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check").ctx(path, op)?;
    let lines = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .ctx(path, op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx(path, op)?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

/// Whether the database file at `path` exists (as a file with content);
/// `false` when there is none yet. A file of 0 bytes, or something that is
/// not a file, is an error that says so.
fn check_existing(path: &Path) -> Result<bool, QueueError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(QueueError::Create {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(QueueError::Create {
            path: path.to_owned(),
            source: std::io::Error::other(
                "it exists but is not a regular file: move it aside so a queue database can be made there",
            ),
        });
    }
    if meta.len() == 0 {
        let wal = wal_path(path);
        let wal_note = match std::fs::metadata(&wal) {
            Ok(m) if m.len() > 0 => format!(
                "; the write-ahead log beside it ({}, {} bytes) may still hold recent changes: \
                 keep it with the file you move aside",
                wal.display(),
                m.len()
            ),
            _ => String::new(),
        };
        return Err(QueueError::EmptyDatabase {
            store: store(path),
            wal_note,
        });
    }
    Ok(true)
}

/// Makes a new database at `path`: built whole under a temporary name in
/// `state_dir`, then linked into place (when another process got there
/// first, its database is kept).
fn create_new(state_dir: &Path, path: &Path) -> Result<(), QueueError> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let temp = state_dir.join(format!(
        ".{DB_FILE_NAME}.new-{}-{}",
        std::process::id(),
        &nonce[..8]
    ));
    let made = (|| {
        create_private_file(&temp)?;
        let conn = Connection::open(&temp).ctx(&temp, "create")?;
        let queue = EmbeddedQueue::prepare(conn, temp.clone())?;
        drop(queue);
        match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename is atomic too.
            Err(_) if !path.exists() => {
                std::fs::rename(&temp, path).map_err(|source| QueueError::Create {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(_) => Ok(()),
        }
    })();
    for leftover in [temp.clone(), wal_path(&temp), shm_path(&temp)] {
        let _ = std::fs::remove_file(leftover);
    }
    made
}

/// Creates and removes a small file in `dir`: the error (and the file's
/// path) when `dir` cannot be written.
fn probe_writable(dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let made = std::fs::File::create(&probe);
    let _ = std::fs::remove_file(&probe);
    made.map(drop).map_err(|error| (probe, error))
}

/// Whether opening failed because the state dir or its database cannot be
/// written (a read-only mount, missing permissions).
fn cannot_write(error: &QueueError) -> bool {
    match error {
        QueueError::Create { source, .. } => {
            matches!(
                source.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            )
        }
        QueueError::Database { source, .. } => {
            let text = source.to_string();
            text.contains("readonly") || text.contains("unable to open")
        }
        _ => false,
    }
}

/// The write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The shared-memory file of the database at `path`.
fn shm_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// `path` for a SQLite `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Refuses queue names that would be confusing in a table or a shell.
pub(crate) fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    let reason = if name.trim().is_empty() {
        "it must not be empty"
    } else if name.trim() != name {
        "it must not start or end with whitespace"
    } else if name.chars().any(char::is_control) {
        "it must not contain control characters"
    } else {
        return Ok(());
    };
    Err(QueueError::InvalidQueueName {
        name: name.to_owned(),
        reason,
    })
}

/// What a transition needs to know about an item.
struct Current {
    state: ItemState,
    claimed_by: Option<String>,
    stop_requested: bool,
}

/// A claimed or running item, as [`EmbeddedQueue::reclaim_abandoned`] sees it.
struct Held {
    id: String,
    claimed_by: Option<String>,
    run_handle: Option<RunHandle>,
    attempts: u32,
    stop_requested: bool,
    lease_expires_ms: Option<i64>,
}
