//! Reading rows back from the database.
//!
//! A row that cannot be read (a value of the wrong type, text that is not
//! UTF-8, an unknown state) does not stop the reader: it becomes a
//! [`Damage`] that names the item and what is wrong, so the queue can move
//! the row aside ([quarantine](super::EmbeddedQueue)) and go on with the
//! rest.

use std::path::Path;

use rusqlite::Row;
use rusqlite::types::{FromSql, ValueRef};

use super::sql::store;
use crate::queue::{ParseNameError, QueueError, QueueItem, RunHandle};
use crate::text::for_log;

/// The columns [`read`] reads after `seq`, in its order.
pub(super) const COLUMN_NAMES: [&str; 17] = [
    "id",
    "queue",
    "state",
    "stage",
    "message",
    "exit_code",
    "attempts",
    "spec",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "claimed_by",
    "lease_expires_at",
    "stop_requested",
    "run_runner",
    "run_handle",
];

/// `seq` and the [`COLUMN_NAMES`], for a `SELECT`.
pub(super) fn columns() -> String {
    format!("seq, {}", COLUMN_NAMES.join(", "))
}

/// A row that cannot be read back as an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Damage {
    /// The row's `seq` (SQLite's rowid).
    pub(super) seq: i64,
    /// The item's id as far as it can be read (escaped for logs).
    pub(super) id: String,
    /// What is wrong, naming the column.
    pub(super) detail: String,
}

impl Damage {
    /// The damage as a [`QueueError::Corrupt`].
    pub(super) fn error(&self, path: &Path) -> QueueError {
        QueueError::Corrupt {
            store: store(path),
            id: self.id.clone(),
            detail: format!("row {}: {}", self.seq, self.detail),
        }
    }
}

/// Reads a row selected with [`columns`]: the item, or what is wrong with it.
pub(super) fn read(row: &Row<'_>) -> Result<QueueItem, Damage> {
    let seq = row.get::<_, i64>(0).unwrap_or(-1);
    let damage = |detail: String| Damage {
        seq,
        id: id_text(row),
        detail,
    };
    let raw = RawItem::from_row(row).map_err(damage)?;
    raw.into_item().map_err(damage)
}

/// The id column of a row selected with [`columns`], however it is stored,
/// as text fit for a log line.
pub(super) fn id_text(row: &Row<'_>) -> String {
    value_text(row.get_ref(1).ok())
}

/// A stored value as text fit for a log line: text as it is (lossily
/// decoded and escaped), a blob in hex, a number as digits.
pub(super) fn value_text(value: Option<ValueRef<'_>>) -> String {
    match value {
        Some(ValueRef::Text(bytes)) => for_log(&String::from_utf8_lossy(bytes)).into_owned(),
        Some(ValueRef::Blob(bytes)) => format!("x'{}'", hex::encode(bytes)),
        Some(ValueRef::Integer(n)) => n.to_string(),
        Some(ValueRef::Real(x)) => x.to_string(),
        Some(ValueRef::Null) | None => "(no id)".to_owned(),
    }
}

/// A row as stored, before its values are checked.
struct RawItem {
    id: String,
    queue: String,
    state: String,
    stage: Option<String>,
    message: Option<String>,
    exit_code: Option<i64>,
    attempts: i64,
    spec: String,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    claimed_by: Option<String>,
    lease_expires_at: Option<String>,
    stop_requested: bool,
    run_runner: Option<String>,
    run_handle: Option<String>,
}

/// Column `index` (counting `seq` as 0) as a `T`, or what is wrong with
/// it: `wanted` says what belongs there.
fn get<T: FromSql>(row: &Row<'_>, index: usize, wanted: &str) -> Result<T, String> {
    row.get::<_, T>(index).map_err(|_| {
        let stored = match row.get_ref(index) {
            Ok(ValueRef::Null) => "no value (NULL)",
            Ok(ValueRef::Integer(_)) => "an integer",
            Ok(ValueRef::Real(_)) => "a real number",
            Ok(ValueRef::Text(bytes)) if std::str::from_utf8(bytes).is_err() => {
                "text that is not UTF-8"
            }
            Ok(ValueRef::Text(_)) => "text",
            Ok(ValueRef::Blob(_)) => "a blob",
            Err(_) => "nothing readable",
        };
        format!(
            "column `{}` holds {stored} where {wanted} belongs",
            COLUMN_NAMES[index - 1]
        )
    })
}

/// What belongs in a text column that must have a value.
const TEXT: &str = "UTF-8 text";
/// What belongs in a text column that may be empty.
const TEXT_OR_NULL: &str = "UTF-8 text or NULL";
/// What belongs in an integer column that must have a value.
const INTEGER: &str = "an integer";
/// What belongs in an integer column that may be empty.
const INTEGER_OR_NULL: &str = "an integer or NULL";
/// What belongs in a flag column.
const FLAG: &str = "0 or 1";

impl RawItem {
    /// Reads the [`COLUMN_NAMES`] of a row selected with [`columns`].
    fn from_row(row: &Row<'_>) -> Result<Self, String> {
        Ok(RawItem {
            id: get(row, 1, TEXT)?,
            queue: get(row, 2, TEXT)?,
            state: get(row, 3, TEXT)?,
            stage: get(row, 4, TEXT_OR_NULL)?,
            message: get(row, 5, TEXT_OR_NULL)?,
            exit_code: get(row, 6, INTEGER_OR_NULL)?,
            attempts: get(row, 7, INTEGER)?,
            spec: get(row, 8, TEXT)?,
            created_at: get(row, 9, TEXT)?,
            updated_at: get(row, 10, TEXT)?,
            started_at: get(row, 11, TEXT_OR_NULL)?,
            finished_at: get(row, 12, TEXT_OR_NULL)?,
            claimed_by: get(row, 13, TEXT_OR_NULL)?,
            lease_expires_at: get(row, 14, TEXT_OR_NULL)?,
            stop_requested: get(row, 15, FLAG)?,
            run_runner: get(row, 16, TEXT_OR_NULL)?,
            run_handle: get(row, 17, TEXT_OR_NULL)?,
        })
    }

    /// Checks the values and builds the item.
    fn into_item(self) -> Result<QueueItem, String> {
        let bad = |column: &str, detail: String| format!("bad {column}: {detail}");
        let state = self
            .state
            .parse()
            .map_err(|err: ParseNameError| bad("state", err.to_string()))?;
        let stage = self
            .stage
            .map(|stage| stage.parse())
            .transpose()
            .map_err(|err: ParseNameError| bad("stage", err.to_string()))?;
        let exit_code = self
            .exit_code
            .map(i32::try_from)
            .transpose()
            .map_err(|err| bad("exit_code", err.to_string()))?;
        let attempts =
            u32::try_from(self.attempts).map_err(|err| bad("attempts", err.to_string()))?;
        let run_handle =
            run_handle(self.run_runner, self.run_handle).map_err(|d| bad("run_handle", d))?;
        let spec = serde_json::from_str::<serde_json::Value>(&self.spec)
            .map_err(|err| bad("spec", err.to_string()))?;
        Ok(QueueItem {
            id: self.id,
            queue: self.queue,
            state,
            stage,
            message: self.message,
            exit_code,
            attempts,
            spec,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            claimed_by: self.claimed_by,
            lease_expires_at: self.lease_expires_at,
            stop_requested: self.stop_requested,
            run_handle,
        })
    }
}

/// The run handle of a row: both columns set, or neither.
pub(super) fn run_handle(
    runner: Option<String>,
    id: Option<String>,
) -> Result<Option<RunHandle>, String> {
    match (runner, id) {
        (Some(runner), Some(id)) => Ok(Some(RunHandle { runner, id })),
        (None, None) => Ok(None),
        (Some(runner), None) => Err(format!("runner {runner:?} without an id")),
        (None, Some(_)) => Err("an id without a runner".to_owned()),
    }
}
