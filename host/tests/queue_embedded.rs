//! The embedded queue, as the agent and the CLI use it: a SQLite database in
//! a state directory, shared by several handles (processes) at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use launch_agent::queue::embedded::{DB_FILE_NAME, EmbeddedQueue, SCHEMA_VERSION};
use launch_agent::queue::{
    BackendSettings, ItemState, QueueError, QueueItem, RunHandle, Stage, format_table,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);

fn open(dir: &Path) -> EmbeddedQueue {
    match EmbeddedQueue::open(dir) {
        Ok(queue) => queue,
        Err(error) => panic!("cannot open the queue in {}: {error}", dir.display()),
    }
}

fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn item(queue: &EmbeddedQueue, id: &str) -> QueueItem {
    queue
        .get(id)
        .unwrap()
        .unwrap_or_else(|| panic!("item {id} is gone"))
}

fn claim(queue: &EmbeddedQueue, names: &[&str], agent: &str) -> QueueItem {
    queue
        .claim_next(&queues(names), agent, LEASE)
        .unwrap()
        .unwrap_or_else(|| panic!("nothing to claim in {names:?}"))
}

/// Submits an item and has `agent` claim it with a 5 ms lease and start it;
/// returns its id.
fn running_with_short_lease(queue: &EmbeddedQueue, agent: &str) -> String {
    let id = queue.submit("default", json!({})).unwrap();
    queue
        .claim_next(&queues(&["default"]), agent, Duration::from_millis(5))
        .unwrap()
        .expect("claimed");
    queue.mark_running(&id, agent).unwrap();
    id
}

/// The handle a local-process run with process group `pgid` records.
fn pid(pgid: i32) -> RunHandle {
    RunHandle {
        runner: "local-process".to_owned(),
        id: pgid.to_string(),
    }
}

fn never_dead(_: &str) -> bool {
    false
}

#[test]
fn queue_handles_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EmbeddedQueue>();
}

#[test]
fn open_creates_a_private_state_dir_with_a_wal_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state").join("agent");
    let queue = open(&dir);
    assert_eq!(queue.path(), dir.join(DB_FILE_NAME));
    assert!(queue.path().is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "state dir mode {mode:o}");
        let mode = std::fs::metadata(queue.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "database file mode {mode:o}");
    }
    let conn = rusqlite::Connection::open(queue.path()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn processes_opening_a_new_state_dir_at_once_all_work() {
    // E.g. `launch-agent submit` while the agent starts for the first time.
    for round in 0..10 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let start = Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let dir = dir.clone();
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    EmbeddedQueue::open(&dir)?.submit("default", json!({}))
                })
            })
            .collect();
        for opener in openers {
            if let Err(error) = opener.join().unwrap() {
                panic!("round {round}: {error}");
            }
        }
        assert_eq!(open(&dir).list(None).unwrap().len(), 6);
    }
}

#[test]
fn items_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let id = open(tmp.path())
        .submit("default", json!({"entry_point": ["python", "train.py"]}))
        .unwrap();
    let reopened = open(tmp.path());
    assert_eq!(item(&reopened, &id).state, ItemState::Queued);
}

#[test]
fn a_database_from_a_newer_agent_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = open(tmp.path()).path().to_owned();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let error = EmbeddedQueue::open(tmp.path()).unwrap_err();
    assert!(
        matches!(error, QueueError::SchemaTooNew { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("upgrade"), "{message}");
}

#[test]
fn submit_and_list_round_trip_preserves_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let spec = json!({
        "job": "wandb/project/train:v3",
        "overrides": {"run_config": {"lr": 0.001, "layers": [64, 64]}, "args": ["--fast"]},
        "resource": "local-process",
        "note": "ünïcode ✓",
    });
    let id = queue.submit("gpu", spec.clone()).unwrap();
    assert_eq!(id.len(), 32, "id {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "id {id:?}");

    let items = queue.list(None).unwrap();
    assert_eq!(items.len(), 1);
    let listed = &items[0];
    assert_eq!(listed.id, id);
    assert_eq!(listed.queue, "gpu");
    assert_eq!(listed.state, ItemState::Queued);
    assert_eq!(listed.spec, spec);
    assert_eq!(listed.attempts, 0);
    assert_eq!(listed.stage, None);
    assert_eq!(listed.claimed_by, None);
    assert!(!listed.stop_requested);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&listed.created_at).is_ok(),
        "{}",
        listed.created_at
    );
    assert_eq!(listed.created_at, listed.updated_at);
    assert_eq!(item(&queue, &id), *listed);

    // The JSON form a `queue list --json` would print uses lowercase names.
    let value = serde_json::to_value(listed).unwrap();
    assert_eq!(value["state"], "queued");
    assert_eq!(value["spec"], spec);
}

#[test]
fn submit_rejects_bad_queue_names_and_non_object_specs() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    for name in ["", "  ", " gpu", "gpu\n"] {
        let error = queue.submit(name, json!({})).unwrap_err();
        assert!(
            matches!(error, QueueError::InvalidQueueName { .. }),
            "{name:?}: {error:?}"
        );
    }
    let error = queue.submit("default", json!(["python"])).unwrap_err();
    assert!(matches!(error, QueueError::InvalidSpec { .. }), "{error:?}");
    assert!(error.to_string().contains("JSON object"), "{error}");
    assert!(queue.submit("default", json!("train.py")).is_err());
    assert!(queue.submit("default", serde_json::Value::Null).is_err());
    assert!(queue.list(None).unwrap().is_empty());
}

#[test]
fn claims_are_fifo_within_a_queue_and_follow_the_queue_order() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let low1 = queue.submit("low", json!({"n": 1})).unwrap();
    let high1 = queue.submit("high", json!({"n": 2})).unwrap();
    let low2 = queue.submit("low", json!({"n": 3})).unwrap();
    let high2 = queue.submit("high", json!({"n": 4})).unwrap();
    let other = queue.submit("other", json!({"n": 5})).unwrap();

    let order = ["high", "low"];
    let mut claimed = Vec::new();
    while let Some(next) = queue.claim_next(&queues(&order), "agent-1", LEASE).unwrap() {
        assert_eq!(next.state, ItemState::Claimed);
        assert_eq!(next.claimed_by.as_deref(), Some("agent-1"));
        assert_eq!(next.attempts, 1);
        assert!(next.lease_expires_at.is_some());
        claimed.push(next.id);
    }
    assert_eq!(claimed, [high1, high2, low1, low2]);
    // A queue the agent does not serve is left alone.
    assert_eq!(item(&queue, &other).state, ItemState::Queued);
    assert!(queue.claim_next(&[], "agent-1", LEASE).unwrap().is_none());
}

#[test]
fn two_handles_never_claim_the_same_item() {
    const ITEMS: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let first = Arc::new(open(tmp.path()));
    let second = Arc::new(open(tmp.path()));
    let mut submitted = Vec::new();
    for n in 0..ITEMS {
        let name = if n % 2 == 0 { "a" } else { "b" };
        submitted.push(first.submit(name, json!({ "n": n })).unwrap());
    }

    let mut workers = Vec::new();
    for (worker, handle) in [&first, &second, &first, &second].into_iter().enumerate() {
        let handle = Arc::clone(handle);
        workers.push(thread::spawn(move || {
            let agent = format!("agent-{worker}");
            let mut mine = Vec::new();
            while let Some(claimed) = handle
                .claim_next(&queues(&["a", "b"]), &agent, LEASE)
                .unwrap()
            {
                handle.mark_running(&claimed.id, &agent).unwrap();
                handle.finish(&claimed.id, &agent, Some(0)).unwrap();
                mine.push(claimed.id);
            }
            mine
        }));
    }
    let mut times_claimed: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        for id in worker.join().unwrap() {
            *times_claimed.entry(id).or_default() += 1;
        }
    }
    assert_eq!(times_claimed.len(), ITEMS);
    for id in &submitted {
        assert_eq!(times_claimed.get(id), Some(&1), "item {id}");
    }
    for listed in second.list(None).unwrap() {
        assert_eq!(listed.state, ItemState::Finished, "item {}", listed.id);
        assert_eq!(listed.attempts, 1, "item {}", listed.id);
    }
}

#[test]
fn a_full_run_records_start_finish_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "agent-1");
    assert_eq!(queue.count_active("agent-1").unwrap(), 1);
    queue.mark_running(&id, "agent-1").unwrap();
    queue.set_run_handle(&id, &pid(4242)).unwrap();
    let running = item(&queue, &id);
    assert_eq!(running.state, ItemState::Running);
    assert!(running.started_at.is_some());
    assert_eq!(running.run_handle, Some(pid(4242)));

    queue.finish(&id, "agent-1", Some(0)).unwrap();
    let done = item(&queue, &id);
    assert_eq!(done.state, ItemState::Finished);
    assert_eq!(done.exit_code, Some(0));
    assert!(done.finished_at.is_some());
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(done.claimed_by.as_deref(), Some("agent-1"));
    assert_eq!(queue.count_active("agent-1").unwrap(), 0);
}

#[test]
fn a_failure_records_its_stage_message_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let build = queue.submit("default", json!({})).unwrap();
    let run = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "agent-1");
    claim(&queue, &["default"], "agent-1");
    queue
        .fail(&build, "agent-1", Stage::Build, "docker build failed", None)
        .unwrap();
    queue.mark_running(&run, "agent-1").unwrap();
    queue
        .fail(
            &run,
            "agent-1",
            Stage::Run,
            "train.py exited with 3",
            Some(3),
        )
        .unwrap();

    let build = item(&queue, &build);
    assert_eq!(build.state, ItemState::Failed);
    assert_eq!(build.stage, Some(Stage::Build));
    assert_eq!(build.message.as_deref(), Some("docker build failed"));
    let run = item(&queue, &run);
    assert_eq!(run.stage, Some(Stage::Run));
    assert_eq!(run.exit_code, Some(3));
}

#[test]
fn an_expired_lease_puts_the_item_back_in_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = running_with_short_lease(&queue, "agent-1");
    queue.set_run_handle(&id, &pid(31337)).unwrap();
    thread::sleep(Duration::from_millis(50));

    let reclaimed = queue.reclaim_abandoned(&never_dead, 3).unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, id);
    assert_eq!(reclaimed[0].previous_holder, "agent-1");
    assert_eq!(reclaimed[0].run_handle, Some(pid(31337)));
    assert_eq!(reclaimed[0].new_state, ItemState::Queued);

    let back = item(&queue, &id);
    assert_eq!(back.state, ItemState::Queued);
    assert_eq!(back.claimed_by, None);
    assert_eq!(back.lease_expires_at, None);
    assert_eq!(back.run_handle, None);
    assert_eq!(back.attempts, 1, "the abandoned attempt counts");
    assert!(back.message.unwrap().contains("agent-1"));
    assert_eq!(queue.count_active("agent-1").unwrap(), 0);

    // Another agent picks it up again.
    let again = claim(&queue, &["default"], "agent-2");
    assert_eq!(again.id, id);
    assert_eq!(again.attempts, 2);
}

#[test]
fn a_live_holder_with_a_valid_lease_keeps_its_items() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    queue
        .claim_next(&queues(&["default"]), "agent-1", Duration::from_millis(5))
        .unwrap()
        .unwrap();
    // Renewing keeps the item although the first lease would have run out.
    assert_eq!(queue.renew_leases("agent-1", LEASE).unwrap(), 1);
    assert_eq!(queue.renew_leases("agent-2", LEASE).unwrap(), 0);
    thread::sleep(Duration::from_millis(50));
    assert!(queue.reclaim_abandoned(&never_dead, 3).unwrap().is_empty());
    assert_eq!(item(&queue, &id).state, ItemState::Claimed);
}

#[test]
fn a_dead_holder_is_reclaimed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let dead = queue.submit("default", json!({})).unwrap();
    let alive = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "dead-agent");
    claim(&queue, &["default"], "live-agent");

    let reclaimed = queue
        .reclaim_abandoned(&|holder| holder == "dead-agent", 3)
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, dead);
    assert_eq!(reclaimed[0].previous_holder, "dead-agent");
    assert_eq!(reclaimed[0].new_state, ItemState::Queued);
    assert_eq!(item(&queue, &dead).state, ItemState::Queued);
    assert_eq!(item(&queue, &alive).state, ItemState::Claimed);
}

#[test]
fn an_item_abandoned_max_attempts_times_fails_at_stage_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    let max_attempts = 3;
    for attempt in 1..=max_attempts {
        let claimed = claim(&queue, &["default"], &format!("agent-{attempt}"));
        assert_eq!(claimed.attempts, attempt);
        let reclaimed = queue.reclaim_abandoned(&|_| true, max_attempts).unwrap();
        assert_eq!(reclaimed.len(), 1);
        let expected = if attempt < max_attempts {
            ItemState::Queued
        } else {
            ItemState::Failed
        };
        assert_eq!(reclaimed[0].new_state, expected, "attempt {attempt}");
    }
    let failed = item(&queue, &id);
    assert_eq!(failed.state, ItemState::Failed);
    assert_eq!(failed.stage, Some(Stage::Agent));
    let message = failed.message.unwrap();
    assert!(message.contains("abandoned 3 times"), "{message}");
    assert!(message.contains("died"), "{message}");
    // Nothing more to claim or reclaim, and it stays failed.
    assert!(
        queue
            .claim_next(&queues(&["default"]), "agent-9", LEASE)
            .unwrap()
            .is_none()
    );
    assert!(queue.reclaim_abandoned(&|_| true, 10).unwrap().is_empty());
    assert_eq!(item(&queue, &id).state, ItemState::Failed);
}

#[test]
fn release_does_not_count_an_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "agent-1");
    queue.mark_running(&id, "agent-1").unwrap();
    queue.set_run_handle(&id, &pid(99)).unwrap();
    queue.release(&id, "agent-1").unwrap();

    let back = item(&queue, &id);
    assert_eq!(back.state, ItemState::Queued);
    assert_eq!(back.attempts, 0);
    assert_eq!(back.claimed_by, None);
    assert_eq!(back.lease_expires_at, None);
    assert_eq!(back.started_at, None);
    assert_eq!(back.run_handle, None);

    // Handing back again and again never exhausts the attempts.
    for _ in 0..5 {
        claim(&queue, &["default"], "agent-2");
        queue.release(&id, "agent-2").unwrap();
    }
    assert_eq!(claim(&queue, &["default"], "agent-3").attempts, 1);
}

#[test]
fn wrong_transitions_are_errors_naming_both_states() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let path = queue.path().display().to_string();
    let id = queue.submit("default", json!({})).unwrap();

    let error = queue.finish(&id, "agent-1", Some(0)).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            QueueError::WrongState {
                from: ItemState::Queued,
                to: ItemState::Finished,
                ..
            }
        ),
        "{error:?}"
    );
    for part in [path.as_str(), id.as_str(), "queued", "finished"] {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }
    assert!(queue.mark_running(&id, "agent-1").is_err());
    assert!(queue.release(&id, "agent-1").is_err());
    assert!(queue.set_run_handle(&id, &pid(1)).is_err());
    assert!(queue.mark_stopped(&id, "agent-1", "no").is_err());

    claim(&queue, &["default"], "agent-1");
    // Finishing needs a started run; starting needs the holder.
    assert!(queue.finish(&id, "agent-1", Some(0)).is_err());
    let error = queue.mark_running(&id, "agent-2").unwrap_err();
    assert!(matches!(error, QueueError::NotHolder { .. }), "{error:?}");
    assert!(error.to_string().contains("agent-1"), "{error}");
    queue.mark_running(&id, "agent-1").unwrap();
    assert!(queue.mark_running(&id, "agent-1").is_err());
    queue
        .fail(&id, "agent-1", Stage::Run, "boom", Some(1))
        .unwrap();

    // A terminal item never changes state again.
    assert!(queue.finish(&id, "agent-1", Some(0)).is_err());
    assert!(
        queue
            .fail(&id, "agent-1", Stage::Agent, "again", None)
            .is_err()
    );
    assert!(queue.mark_stopped(&id, "agent-1", "late").is_err());
    assert!(queue.release(&id, "agent-1").is_err());
    assert_eq!(queue.request_stop(&id).unwrap(), ItemState::Failed);
    assert!(queue.reclaim_abandoned(&|_| true, 10).unwrap().is_empty());
    let failed = item(&queue, &id);
    assert_eq!(failed.state, ItemState::Failed);
    assert_eq!(failed.message.as_deref(), Some("boom"));
    assert!(!failed.stop_requested);

    let error = queue
        .finish("0123456789abcdef", "agent-1", None)
        .unwrap_err();
    assert!(matches!(error, QueueError::NotFound { .. }), "{error:?}");
    assert!(
        error.to_string().contains("no queue item 0123456789abcdef"),
        "{error}"
    );
    assert!(queue.get("0123456789abcdef").unwrap().is_none());
    assert!(queue.request_stop("0123456789abcdef").is_err());
}

#[test]
fn request_stop_of_a_queued_item_stops_it_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    assert_eq!(queue.request_stop(&id).unwrap(), ItemState::Stopped);
    let stopped = item(&queue, &id);
    assert_eq!(stopped.state, ItemState::Stopped);
    assert!(stopped.stop_requested);
    assert!(stopped.finished_at.is_some());
    assert!(!queue.has_queued(&queues(&["default"])).unwrap());
    assert!(
        queue
            .claim_next(&queues(&["default"]), "agent-1", LEASE)
            .unwrap()
            .is_none()
    );
}

#[test]
fn request_stop_of_a_running_item_flags_it_for_its_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "agent-1");
    queue.mark_running(&id, "agent-1").unwrap();
    assert_eq!(queue.request_stop(&id).unwrap(), ItemState::Running);
    let flagged = item(&queue, &id);
    assert_eq!(flagged.state, ItemState::Running);
    assert!(flagged.stop_requested);
    queue
        .mark_stopped(&id, "agent-1", "stopped on request")
        .unwrap();
    assert_eq!(item(&queue, &id).state, ItemState::Stopped);
}

#[test]
fn an_item_whose_stop_was_requested_is_not_requeued() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let released = queue.submit("default", json!({})).unwrap();
    let abandoned = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["default"], "agent-1");
    claim(&queue, &["default"], "agent-2");
    queue.request_stop(&released).unwrap();
    queue.request_stop(&abandoned).unwrap();

    queue.release(&released, "agent-1").unwrap();
    assert_eq!(item(&queue, &released).state, ItemState::Stopped);
    let reclaimed = queue
        .reclaim_abandoned(&|holder| holder == "agent-2", 3)
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].new_state, ItemState::Stopped);
    assert_eq!(item(&queue, &abandoned).state, ItemState::Stopped);
}

#[test]
fn list_filters_by_queue_and_reports_queue_names() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let cpu1 = queue.submit("cpu", json!({"n": 1})).unwrap();
    let gpu = queue.submit("gpu", json!({"n": 2})).unwrap();
    let cpu2 = queue.submit("cpu", json!({"n": 3})).unwrap();

    let ids = |items: Vec<QueueItem>| items.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(queue.list(Some("cpu")).unwrap()), [cpu1, cpu2.clone()]);
    assert_eq!(ids(queue.list(Some("gpu")).unwrap()), [gpu]);
    assert!(queue.list(Some("tpu")).unwrap().is_empty());
    assert_eq!(queue.list(None).unwrap().len(), 3);
    assert_eq!(queue.queue_names().unwrap(), ["cpu", "gpu"]);

    assert!(queue.has_queued(&queues(&["tpu", "gpu"])).unwrap());
    assert!(!queue.has_queued(&queues(&["tpu"])).unwrap());
    assert!(!queue.has_queued(&[]).unwrap());
    claim(&queue, &["gpu"], "agent-1");
    assert!(!queue.has_queued(&queues(&["gpu"])).unwrap());
    assert_eq!(queue.count_active("agent-1").unwrap(), 1);
    assert_eq!(queue.count_active("agent-2").unwrap(), 0);
}

#[test]
fn format_table_shows_one_aligned_row_per_item() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let failed = queue.submit("gpu", json!({})).unwrap();
    let waiting = queue.submit("default", json!({})).unwrap();
    claim(&queue, &["gpu"], "agent-1");
    queue.mark_running(&failed, "agent-1").unwrap();
    let long_message = format!("Traceback:\n  line 1\n{}", "x".repeat(200));
    queue
        .fail(&failed, "agent-1", Stage::Run, &long_message, Some(137))
        .unwrap();

    let items = queue.list(None).unwrap();
    let table = format_table(&items);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header = lines[0];
    for column in [
        "ID", "QUEUE", "STATE", "STAGE", "EXIT", "ATTEMPTS", "UPDATED", "MESSAGE",
    ] {
        assert!(header.contains(column), "{column} missing from {header:?}");
    }

    let failed_row = lines[1];
    for value in [
        failed.as_str(),
        "gpu",
        "failed",
        "run",
        "137",
        "Traceback: line 1 xxx",
    ] {
        assert!(
            failed_row.contains(value),
            "{value:?} missing from {failed_row:?}"
        );
    }
    assert!(
        failed_row.contains(&items[0].updated_at[..10]),
        "{failed_row}"
    );
    assert!(failed_row.chars().count() < header.chars().count() + 70);
    assert!(failed_row.ends_with('…'), "{failed_row}");

    let waiting_row = lines[2];
    for value in [waiting.as_str(), "default", "queued"] {
        assert!(
            waiting_row.contains(value),
            "{value:?} missing from {waiting_row:?}"
        );
    }
    // Columns line up: each header starts where its values start.
    let column = |line: &str, value: &str| line.find(value).unwrap();
    assert_eq!(column(header, "STATE"), column(failed_row, "failed"));
    assert_eq!(column(header, "STATE"), column(waiting_row, "queued"));
    assert_eq!(column(header, "EXIT"), column(failed_row, "137"));

    assert_eq!(format_table(&[]).lines().count(), 1);
}

#[test]
fn stage_and_state_names_round_trip() {
    for stage in [Stage::Agent, Stage::Build, Stage::Run] {
        assert_eq!(stage.to_string().parse::<Stage>().unwrap(), stage);
    }
    for state in [
        ItemState::Queued,
        ItemState::Claimed,
        ItemState::Running,
        ItemState::Finished,
        ItemState::Failed,
        ItemState::Stopped,
    ] {
        assert_eq!(state.to_string().parse::<ItemState>().unwrap(), state);
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            json!(state.to_string())
        );
    }
    assert!(ItemState::Stopped.is_terminal());
    assert!(!ItemState::Running.is_terminal());
    assert!("done".parse::<ItemState>().is_err());
    assert!("Build".parse::<Stage>().is_err());
}

#[test]
fn an_agent_whose_claim_was_taken_back_cannot_record_an_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let id = running_with_short_lease(&queue, "agent-1");
    std::thread::sleep(Duration::from_millis(20));
    // agent-1 stalled past its lease; the item is reclaimed and agent-2 runs it.
    let reclaimed = queue.reclaim_abandoned(&never_dead, 3).unwrap();
    assert_eq!(reclaimed.len(), 1);
    claim(&queue, &["default"], "agent-2");
    queue.mark_running(&id, "agent-2").unwrap();

    // agent-1 wakes up and reports its stale run: every outcome is refused,
    // naming both agents.
    let error = queue.finish(&id, "agent-1", Some(0)).unwrap_err();
    assert!(matches!(error, QueueError::NotHolder { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("agent-1") && message.contains("agent-2"),
        "{message}"
    );
    assert!(
        queue
            .fail(&id, "agent-1", Stage::Run, "stale", Some(1))
            .is_err()
    );
    assert!(queue.mark_stopped(&id, "agent-1", "stale").is_err());
    assert!(queue.release(&id, "agent-1").is_err());
    let running = item(&queue, &id);
    assert_eq!(running.state, ItemState::Running);
    assert_eq!(running.claimed_by.as_deref(), Some("agent-2"));

    // The holder records its outcome.
    queue.finish(&id, "agent-2", Some(0)).unwrap();
    assert_eq!(item(&queue, &id).state, ItemState::Finished);
}

#[tokio::test]
async fn the_cli_operations_work_through_the_queue_trait() {
    // `submit`, `queue list` and `queue stop` open the queue with
    // `queue::open` and use only the trait.
    let tmp = tempfile::tempdir().unwrap();
    let settings = BackendSettings::embedded(tmp.path());
    let backend = launch_agent::queue::open(&settings).await.unwrap();
    assert_eq!(backend.name(), "embedded");
    let first = backend.submit("default", json!({"a": 1})).await.unwrap();
    let second = backend.submit("gpu", json!({"b": 2})).await.unwrap();

    let all = backend.list(None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|item| item.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let gpu = backend.list(Some("gpu")).await.unwrap();
    assert_eq!(gpu.len(), 1);
    assert_eq!(gpu[0].spec, json!({"b": 2}));

    assert_eq!(
        backend.request_stop(&first).await.unwrap(),
        ItemState::Stopped
    );
    let error = backend.request_stop("no-such-item").await.unwrap_err();
    assert!(matches!(error, QueueError::NotFound { .. }), "{error:?}");
    let error = backend.submit("default", json!([1])).await.unwrap_err();
    assert!(matches!(error, QueueError::InvalidSpec { .. }), "{error:?}");

    // Another handle (another process, in real use) sees the same queue.
    assert_eq!(item(&open(tmp.path()), &first).state, ItemState::Stopped);
}

#[test]
fn a_row_that_cannot_be_read_is_moved_aside_and_the_claim_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = open(tmp.path());
    let bad_id = queue.submit("default", json!({"n": 1})).unwrap();
    let bad_state = queue.submit("default", json!({"n": 2})).unwrap();
    let good = queue.submit("default", json!({"n": 3})).unwrap();
    let raw = rusqlite::Connection::open(tmp.path().join(DB_FILE_NAME)).unwrap();
    raw.execute(
        "UPDATE items SET id = CAST(x'6964ff' AS TEXT) WHERE id = ?1",
        [&bad_id],
    )
    .unwrap();
    raw.execute_batch(&format!(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE items SET stage = 'lunch' WHERE id = '{bad_state}';"
    ))
    .unwrap();

    let claimed = claim(&queue, &["default"], "agent-1");
    assert_eq!(claimed.id, good);
    let quarantined = queue.quarantined().unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        quarantined[0].1.contains("id\u{fffd}") && quarantined[0].2.contains("`id`"),
        "{quarantined:?}"
    );
    assert!(
        quarantined[1].1 == bad_state && quarantined[1].2.contains("stage"),
        "{quarantined:?}"
    );
    assert!(
        queue
            .claim_next(&queues(&["default"]), "agent-1", LEASE)
            .unwrap()
            .is_none()
    );
    assert_eq!(queue.list(None).unwrap().len(), 1);
}

#[test]
fn mismatched_indexes_are_found_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let id = open(tmp.path()).submit("default", json!({})).unwrap();
    let raw = rusqlite::Connection::open(tmp.path().join(DB_FILE_NAME)).unwrap();
    raw.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = 'CREATE INDEX items_by_holder ON items (state, claimed_by)'
             WHERE name = 'items_by_holder';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(raw);
    let queue = open(tmp.path());
    let found = queue.check_and_repair().unwrap();
    assert!(
        found.iter().any(|p| p.contains("items_by_holder")),
        "{found:?}"
    );
    assert!(queue.check_and_repair().unwrap().is_empty(), "repaired");
    assert_eq!(claim(&queue, &["default"], "agent-1").id, id);
}

#[test]
fn an_existing_empty_database_file_is_refused_naming_its_write_ahead_log() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(DB_FILE_NAME), "").unwrap();
    std::fs::write(tmp.path().join(format!("{DB_FILE_NAME}-wal")), "frames").unwrap();
    let error = EmbeddedQueue::open(tmp.path()).unwrap_err();
    assert!(matches!(error, QueueError::EmptyDatabase { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("0 bytes")
            && message.contains("-wal")
            && message.contains("Move it aside"),
        "{message}"
    );
    // A directory where the file belongs is named too.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join(DB_FILE_NAME)).unwrap();
    let message = EmbeddedQueue::open(tmp.path()).unwrap_err().to_string();
    assert!(message.contains("not a regular file"), "{message}");
}
