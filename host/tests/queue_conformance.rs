//! One conformance suite, written once against [`QueueBackend`], run
//! against every backend that keeps its own queue: the embedded SQLite
//! queue and the PostgreSQL queue (skipped when its server is not up,
//! except in CI; see `common/postgres.rs`).
//!
//! Each test gets a fresh queue and can open a second handle on it (as a
//! second process, or a second machine, would).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use launch_agent::queue::postgres::{PostgresSettings, UrlSource};
use launch_agent::queue::{BackendSettings, ItemState, QueueBackend, QueueError, RunHandle, Stage};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);

/// A fresh queue of one backend, and how to open more handles on it.
struct Fixture {
    settings: BackendSettings,
    queue: Arc<dyn QueueBackend>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// Another handle on the same queue (another agent's).
    async fn another(&self) -> Arc<dyn QueueBackend> {
        launch_agent::queue::open(&self.settings)
            .await
            .expect("open another handle")
    }
}

async fn embedded() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let settings = BackendSettings::embedded(dir.path());
    let queue = launch_agent::queue::open(&settings).await.unwrap();
    Some(Fixture {
        settings,
        queue,
        _dir: Some(dir),
    })
}

async fn postgres() -> Option<Fixture> {
    let url = common::postgres::fresh_schema_url().await?;
    let settings = BackendSettings::Postgres(PostgresSettings {
        url: UrlSource::Literal(url),
    });
    let queue = launch_agent::queue::open(&settings).await.unwrap();
    Some(Fixture {
        settings,
        queue,
        _dir: None,
    })
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn never_dead() -> Arc<dyn for<'a> Fn(&'a str) -> bool + Send + Sync> {
    Arc::new(|_: &str| false)
}

async fn item(q: &Arc<dyn QueueBackend>, id: &str) -> launch_agent::queue::QueueItem {
    q.list(None)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("item {id} is gone"))
}

async fn claim(q: &Arc<dyn QueueBackend>, queues: &[&str], agent: &str) -> String {
    q.claim_next(&names(queues), agent, LEASE)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("nothing to claim in {queues:?}"))
        .id
}

fn is_timestamp(text: &str) -> bool {
    // 2025-01-31T12:00:00.123Z
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

// ---------------------------------------------------------------- the suite

async fn submitted_items_are_listed_oldest_first_as_submitted(f: Fixture) {
    let q = &f.queue;
    let spec = json!({"uri": "x", "overrides": {"args": ["--lr", "0.1"]}, "n": 1.5});
    let first = q.submit("a", spec.clone()).await.unwrap();
    let second = q.submit("b", json!({})).await.unwrap();
    assert_eq!(first.len(), 32);
    assert!(
        first
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let all = q.list(None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let item = &all[0];
    assert_eq!(item.queue, "a");
    assert_eq!(item.state, ItemState::Queued);
    assert_eq!(item.spec, spec);
    assert_eq!(item.attempts, 0);
    assert!(is_timestamp(&item.created_at), "{}", item.created_at);
    assert!(is_timestamp(&item.updated_at), "{}", item.updated_at);
    assert_eq!(item.claimed_by, None);
    assert_eq!(item.lease_expires_at, None);
    assert!(!item.stop_requested);
    let only_b = q.list(Some("b")).await.unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].id, second);
}

async fn bad_queue_names_and_specs_are_refused(f: Fixture) {
    let q = &f.queue;
    for name in ["", "  ", " a", "a\n"] {
        let error = q.submit(name, json!({})).await.unwrap_err();
        assert!(
            matches!(error, QueueError::InvalidQueueName { .. }),
            "{name:?}: {error}"
        );
    }
    let error = q.submit("a", json!([1])).await.unwrap_err();
    assert!(matches!(error, QueueError::InvalidSpec { .. }), "{error}");
    assert!(q.list(None).await.unwrap().is_empty());
}

async fn claims_take_the_first_listed_queue_first_and_each_queue_in_order(f: Fixture) {
    let q = &f.queue;
    let b1 = q.submit("b", json!({})).await.unwrap();
    let a1 = q.submit("a", json!({})).await.unwrap();
    let a2 = q.submit("a", json!({})).await.unwrap();
    let claimed = q
        .claim_next(&names(&["a", "b"]), "agent-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, a1);
    assert_eq!(claimed.state, ItemState::Claimed);
    assert_eq!(claimed.claimed_by.as_deref(), Some("agent-1"));
    assert_eq!(claimed.attempts, 1);
    assert!(is_timestamp(claimed.lease_expires_at.as_deref().unwrap()));
    assert_eq!(claim(q, &["b", "a"], "agent-1").await, b1);
    assert_eq!(claim(q, &["b", "a"], "agent-1").await, a2);
    assert!(
        q.claim_next(&names(&["a", "b"]), "agent-1", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        q.claim_next(&names(&["c"]), "agent-1", LEASE)
            .await
            .unwrap()
            .is_none()
    );
}

async fn has_queued_sees_only_the_queues_asked_about(f: Fixture) {
    let q = &f.queue;
    assert!(!q.has_queued(&names(&["a"])).await.unwrap());
    q.submit("a", json!({})).await.unwrap();
    assert!(q.has_queued(&names(&["b", "a"])).await.unwrap());
    assert!(!q.has_queued(&names(&["b"])).await.unwrap());
    claim(q, &["a"], "agent").await;
    assert!(!q.has_queued(&names(&["a"])).await.unwrap());
}

async fn only_the_holder_runs_and_ends_an_item(f: Fixture) {
    let q = &f.queue;
    let id = q.submit("a", json!({})).await.unwrap();
    claim(q, &["a"], "holder").await;

    let error = q.mark_running(&id, "other").await.unwrap_err();
    assert!(matches!(error, QueueError::NotHolder { .. }), "{error}");
    assert!(error.is_moot());
    let error = q.finish(&id, "holder", Some(0)).await.unwrap_err();
    assert!(
        matches!(
            error,
            QueueError::WrongState {
                from: ItemState::Claimed,
                ..
            }
        ),
        "finish needs a running item: {error}"
    );

    q.mark_running(&id, "holder").await.unwrap();
    let running = item(q, &id).await;
    assert_eq!(running.state, ItemState::Running);
    assert!(is_timestamp(running.started_at.as_deref().unwrap()));

    for error in [
        q.finish(&id, "other", Some(0)).await.unwrap_err(),
        q.fail(&id, "other", Stage::Run, "no", Some(1))
            .await
            .unwrap_err(),
        q.mark_stopped(&id, "other", "no").await.unwrap_err(),
        q.release(&id, "other").await.unwrap_err(),
    ] {
        assert!(matches!(error, QueueError::NotHolder { .. }), "{error}");
    }
    assert_eq!(item(q, &id).await.state, ItemState::Running);

    q.finish(&id, "holder", Some(0)).await.unwrap();
    let done = item(q, &id).await;
    assert_eq!(done.state, ItemState::Finished);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.lease_expires_at, None);
    assert!(is_timestamp(done.finished_at.as_deref().unwrap()));

    // Terminal stays terminal.
    let error = q
        .fail(&id, "holder", Stage::Run, "late", None)
        .await
        .unwrap_err();
    assert!(matches!(error, QueueError::WrongState { .. }), "{error}");
    let error = q.release(&id, "holder").await.unwrap_err();
    assert!(matches!(error, QueueError::WrongState { .. }), "{error}");
    assert_eq!(item(q, &id).await.state, ItemState::Finished);

    let error = q
        .finish("0".repeat(32).as_str(), "holder", None)
        .await
        .unwrap_err();
    assert!(matches!(error, QueueError::NotFound { .. }), "{error}");
}

async fn failures_and_stops_record_stage_message_and_exit_code(f: Fixture) {
    let q = &f.queue;
    let failed = q.submit("a", json!({})).await.unwrap();
    let stopped = q.submit("a", json!({})).await.unwrap();
    claim(q, &["a"], "agent").await;
    claim(q, &["a"], "agent").await;
    q.fail(&failed, "agent", Stage::Build, "no image", Some(2))
        .await
        .unwrap();
    let item_failed = item(q, &failed).await;
    assert_eq!(item_failed.state, ItemState::Failed);
    assert_eq!(item_failed.stage, Some(Stage::Build));
    assert_eq!(item_failed.message.as_deref(), Some("no image"));
    assert_eq!(item_failed.exit_code, Some(2));
    q.mark_stopped(&stopped, "agent", "asked to").await.unwrap();
    let item_stopped = item(q, &stopped).await;
    assert_eq!(item_stopped.state, ItemState::Stopped);
    assert_eq!(item_stopped.message.as_deref(), Some("asked to"));
    assert_eq!(item_stopped.stage, None);
}

async fn a_hand_back_requeues_without_counting_an_attempt(f: Fixture) {
    let q = &f.queue;
    let id = q.submit("a", json!({})).await.unwrap();
    claim(q, &["a"], "agent").await;
    q.mark_running(&id, "agent").await.unwrap();
    q.set_run_handle(
        &id,
        &RunHandle {
            runner: "local-process".into(),
            id: "42".into(),
        },
    )
    .await
    .unwrap();
    q.release(&id, "agent").await.unwrap();
    let back = item(q, &id).await;
    assert_eq!(back.state, ItemState::Queued);
    assert_eq!(back.attempts, 0);
    assert_eq!(back.claimed_by, None);
    assert_eq!(back.lease_expires_at, None);
    assert_eq!(back.started_at, None);
    assert_eq!(back.run_handle, None);
    assert!(back.message.unwrap().contains("handed back"));

    // With a stop requested, a hand-back ends it instead.
    claim(q, &["a"], "agent").await;
    assert_eq!(q.request_stop(&id).await.unwrap(), ItemState::Claimed);
    q.release(&id, "agent").await.unwrap();
    let stopped = item(q, &id).await;
    assert_eq!(stopped.state, ItemState::Stopped);
    assert!(stopped.message.unwrap().contains("stopped on request"));
}

async fn stop_requests_stop_queued_items_at_once_and_flag_held_ones(f: Fixture) {
    let q = &f.queue;
    let queued = q.submit("a", json!({})).await.unwrap();
    let running = q.submit("b", json!({})).await.unwrap();
    claim(q, &["b"], "agent").await;
    q.mark_running(&running, "agent").await.unwrap();

    assert_eq!(q.request_stop(&queued).await.unwrap(), ItemState::Stopped);
    let stopped = item(q, &queued).await;
    assert_eq!(stopped.state, ItemState::Stopped);
    assert!(stopped.finished_at.is_some());
    assert!(
        q.claim_next(&names(&["a"]), "agent", LEASE)
            .await
            .unwrap()
            .is_none()
    );

    assert!(!q.stop_requested(&running).await.unwrap());
    assert_eq!(q.request_stop(&running).await.unwrap(), ItemState::Running);
    assert!(q.stop_requested(&running).await.unwrap());
    assert_eq!(item(q, &running).await.state, ItemState::Running);
    q.mark_stopped(&running, "agent", "stopped on request")
        .await
        .unwrap();
    // An ended item stays as it is.
    assert_eq!(q.request_stop(&running).await.unwrap(), ItemState::Stopped);
    let error = q.request_stop(&"f".repeat(32)).await.unwrap_err();
    assert!(matches!(error, QueueError::NotFound { .. }), "{error}");
    assert!(!q.stop_requested(&"f".repeat(32)).await.unwrap());
}

async fn expired_leases_are_reclaimed_up_to_max_attempts(f: Fixture) {
    let q = &f.queue;
    let short = Duration::from_millis(50);
    let id = q.submit("a", json!({})).await.unwrap();
    let live = q.submit("a", json!({})).await.unwrap();
    q.claim_next(&names(&["a"]), "dead", short).await.unwrap();
    q.mark_running(&id, "dead").await.unwrap();
    claim(q, &["a"], "alive").await; // `live`, with a long lease
    tokio::time::sleep(Duration::from_millis(150)).await;

    let reclaimed = q.reclaim_abandoned(never_dead(), 2).await.unwrap();
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed[0].id, id);
    assert_eq!(reclaimed[0].previous_holder, "dead");
    assert_eq!(reclaimed[0].new_state, ItemState::Queued);
    let back = item(q, &id).await;
    assert_eq!(back.state, ItemState::Queued);
    assert_eq!(back.attempts, 1, "the abandoned attempt counts");
    assert_eq!(back.claimed_by, None);
    assert!(back.message.unwrap().contains("attempt 1 of 2"));
    assert_eq!(item(q, &live).await.state, ItemState::Claimed);

    // The dead agent's late outcome is refused: the item is not its any more.
    let error = q.finish(&id, "dead", Some(0)).await.unwrap_err();
    assert!(error.is_moot(), "{error}");

    // Second attempt abandoned too: out of attempts.
    q.claim_next(&names(&["a"]), "dead-again", short)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reclaimed = q.reclaim_abandoned(never_dead(), 2).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].new_state, ItemState::Failed);
    let failed = item(q, &id).await;
    assert_eq!(failed.state, ItemState::Failed);
    assert_eq!(failed.stage, Some(Stage::Agent));
    assert!(failed.message.unwrap().contains("abandoned 2 times"));
}

async fn a_reclaimed_item_with_a_stop_request_is_stopped(f: Fixture) {
    let q = &f.queue;
    let id = q.submit("a", json!({})).await.unwrap();
    q.claim_next(&names(&["a"]), "dead", Duration::from_millis(50))
        .await
        .unwrap();
    q.request_stop(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reclaimed = q.reclaim_abandoned(never_dead(), 3).await.unwrap();
    assert_eq!(reclaimed[0].new_state, ItemState::Stopped);
    assert_eq!(item(q, &id).await.state, ItemState::Stopped);
}

async fn renewed_leases_are_not_reclaimed(f: Fixture) {
    let q = &f.queue;
    let id = q.submit("a", json!({})).await.unwrap();
    q.claim_next(&names(&["a"]), "agent", Duration::from_millis(300))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.renew_leases("agent", Duration::from_millis(300))
            .await
            .unwrap();
    }
    assert!(
        q.reclaim_abandoned(never_dead(), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(item(q, &id).await.state, ItemState::Claimed);
}

async fn run_handles_are_kept_for_held_items_only(f: Fixture) {
    let q = &f.queue;
    let id = q.submit("a", json!({})).await.unwrap();
    let handle = RunHandle {
        runner: "local-container".into(),
        id: "abc".into(),
    };
    let error = q.set_run_handle(&id, &handle).await.unwrap_err();
    assert!(matches!(error, QueueError::WrongState { .. }), "{error}");
    claim(q, &["a"], "agent").await;
    q.set_run_handle(&id, &handle).await.unwrap();
    assert_eq!(item(q, &id).await.run_handle, Some(handle));
}

async fn two_handles_never_claim_the_same_item(f: Fixture) {
    let total = 60;
    for _ in 0..total {
        f.queue.submit("a", json!({})).await.unwrap();
    }
    let mut tasks = Vec::new();
    for agent in 0..4 {
        let q = f.another().await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let name = format!("agent-{agent}");
            while let Some(item) = q.claim_next(&names(&["a"]), &name, LEASE).await.unwrap() {
                mine.push(item.id);
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            count += 1;
            assert!(seen.insert(id), "claimed twice");
        }
    }
    assert_eq!(count, total);
}

// ---------------------------------------------------------- instantiation

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::embedded().await.unwrap();
                    super::$test(fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(fixture) = super::postgres().await else { return };
                    super::$test(fixture).await;
                }
            )*
        }
    };
}

conformance!(
    submitted_items_are_listed_oldest_first_as_submitted,
    bad_queue_names_and_specs_are_refused,
    claims_take_the_first_listed_queue_first_and_each_queue_in_order,
    has_queued_sees_only_the_queues_asked_about,
    only_the_holder_runs_and_ends_an_item,
    failures_and_stops_record_stage_message_and_exit_code,
    a_hand_back_requeues_without_counting_an_attempt,
    stop_requests_stop_queued_items_at_once_and_flag_held_ones,
    expired_leases_are_reclaimed_up_to_max_attempts,
    a_reclaimed_item_with_a_stop_request_is_stopped,
    renewed_leases_are_not_reclaimed,
    run_handles_are_kept_for_held_items_only,
    two_handles_never_claim_the_same_item,
);
