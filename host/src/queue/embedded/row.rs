//! Reading items back from the database.

use std::path::Path;

use rusqlite::Row;

use super::sql::store;
use crate::queue::{ParseNameError, QueueError, QueueItem, RunHandle};

/// The columns [`RawItem::from_row`] reads, in its order.
pub(super) const COLUMNS: &str = "id, queue, state, stage, message, exit_code, attempts, spec, \
    created_at, updated_at, started_at, finished_at, claimed_by, lease_expires_at, \
    stop_requested, run_runner, run_handle";

/// A row as stored, before its values are checked.
pub(super) struct RawItem {
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

impl RawItem {
    /// Reads the [`COLUMNS`] of a row.
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawItem {
            id: row.get(0)?,
            queue: row.get(1)?,
            state: row.get(2)?,
            stage: row.get(3)?,
            message: row.get(4)?,
            exit_code: row.get(5)?,
            attempts: row.get(6)?,
            spec: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
            started_at: row.get(10)?,
            finished_at: row.get(11)?,
            claimed_by: row.get(12)?,
            lease_expires_at: row.get(13)?,
            stop_requested: row.get(14)?,
            run_runner: row.get(15)?,
            run_handle: row.get(16)?,
        })
    }

    /// Checks the values and builds the item.
    pub(super) fn into_item(self, path: &Path) -> Result<QueueItem, QueueError> {
        let id = self.id;
        let corrupt = |column: &str, detail: String| QueueError::Corrupt {
            store: store(path),
            id: id.clone(),
            detail: format!("bad {column}: {detail}"),
        };
        let state = self
            .state
            .parse()
            .map_err(|err: ParseNameError| corrupt("state", err.to_string()))?;
        let stage = self
            .stage
            .map(|stage| stage.parse())
            .transpose()
            .map_err(|err: ParseNameError| corrupt("stage", err.to_string()))?;
        let exit_code = self
            .exit_code
            .map(i32::try_from)
            .transpose()
            .map_err(|err| corrupt("exit_code", err.to_string()))?;
        let attempts =
            u32::try_from(self.attempts).map_err(|err| corrupt("attempts", err.to_string()))?;
        let run_handle = run_handle(self.run_runner, self.run_handle)
            .map_err(|detail| corrupt("run_handle", detail))?;
        let spec =
            serde_json::from_str(&self.spec).map_err(|err| corrupt("spec", err.to_string()))?;
        Ok(QueueItem {
            id,
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
