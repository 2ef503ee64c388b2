//! `WandbBackend` against the fake W&B server of `tests/wandb_fake/`
//! (`server.py`, standard library only), started per test on 127.0.0.1 and
//! killed by its PID at the end.

use std::io::Write;
use std::time::{Duration, Instant};

mod common;
use common::wandb_fake::FakeWandbServer;
use launch_agent::queue::wandb::cadence::{self, Pace};
use launch_agent::queue::wandb::{WandbBackend, WandbSettings};
use launch_agent::queue::{ItemState, QueueBackend, QueueItem, Stage};
use launch_agent::wandb::{ApiKey, RetryPolicy};
use serde_json::{Value, json};

const ENTITY: &str = "test-entity";

/// A 40-character key, as W&B's are.
fn api_key() -> String {
    "k3y".repeat(14)[..40].to_string()
}

/// The fake server, killed when dropped.
struct Fake(FakeWandbServer);

impl std::ops::Deref for Fake {
    type Target = FakeWandbServer;
    fn deref(&self) -> &FakeWandbServer {
        &self.0
    }
}

impl Fake {
    fn start(extra: &[&str]) -> Fake {
        Fake(FakeWandbServer::start(&api_key(), ENTITY, extra))
    }

    /// Pushes `spec` to `queue` of [`ENTITY`]; the item id.
    fn push(&self, queue: &str, spec: &Value) -> String {
        self.0.push(ENTITY, queue, spec)
    }
}

/// Settings whose pace sends every call to the server (the tests drive the
/// backend call by call); [`paced_settings`] keeps the agent's own pace.
fn settings(fake: &Fake) -> WandbSettings {
    let mut settings = paced_settings(fake);
    settings.pace = Pace::every_call();
    settings
}

fn paced_settings(fake: &Fake) -> WandbSettings {
    fake.backend_settings(
        ENTITY,
        &api_key(),
        RetryPolicy {
            retries: 8,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        },
    )
}

async fn connect(fake: &Fake) -> WandbBackend {
    WandbBackend::connect(settings(fake)).await.unwrap()
}

fn queues() -> Vec<String> {
    vec!["default".to_string()]
}

/// Claims the next item of queue `default` for agent `me`, with a minute's
/// lease.
async fn claim(backend: &WandbBackend) -> Option<QueueItem> {
    backend
        .claim_next(&queues(), "me", Duration::from_secs(60))
        .await
        .unwrap()
}

/// An id made safe for a URL path segment.
fn path_segment(id: &str) -> String {
    id.replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn spec() -> Value {
    json!({"entity": ENTITY, "project": "proj", "docker": {"docker_image": "busybox:latest"}})
}

#[tokio::test]
async fn connect_claim_and_fail_send_the_w_and_b_operations_in_order() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    assert_eq!(backend.name(), "wandb");
    assert_eq!(backend.entity(), ENTITY);
    let pushed = fake.push("default", &spec());

    let item = claim(&backend).await.expect("an item");
    assert_eq!(item.id, pushed);
    assert_eq!(item.queue, "default");
    assert_eq!(item.state, ItemState::Claimed);
    assert_eq!(item.claimed_by.as_deref(), Some("me"));
    let run_name = backend.run_name(&item.id).unwrap();
    assert_eq!(item.spec["run_id"], run_name.as_str());
    assert_eq!(item.spec["docker"], spec()["docker"]);
    assert_eq!(fake.item_state(&pushed), "CLAIMED");

    backend
        .fail(&item.id, "agent", Stage::Build, "the build broke", Some(2))
        .await
        .unwrap();
    assert_eq!(fake.item_state(&pushed), "FAILED");
    assert!(backend.run_name(&item.id).is_none());

    // An empty queue: nothing, and no error.
    assert!(claim(&backend).await.is_none());

    assert_eq!(
        fake.operations(),
        [
            "Viewer",
            "ProjectRunQueues",
            "createLaunchAgent",
            "popFromRunQueue",
            "ackRunQueueItem",
            "failRunQueueItem",
            "popFromRunQueue",
        ]
    );
    assert_eq!(
        fake.variables("ProjectRunQueues")[0],
        json!({"entity": ENTITY, "projectName": "model-registry"})
    );
    let queue_id = fake.state()["queues"][0]["id"].clone();
    let created = &fake.variables("createLaunchAgent")[0];
    assert_eq!(created["entity"], ENTITY);
    assert_eq!(created["project"], "model-registry");
    assert_eq!(created["queues"], json!([queue_id]));
    assert_eq!(created["hostname"], "test-host");
    assert_eq!(created["version"], "launch-agent@test");
    let config: Value = serde_json::from_str(created["agentConfig"].as_str().unwrap()).unwrap();
    assert_eq!(config["queues"], json!(["default"]));
    let pop = &fake.variables("popFromRunQueue")[0];
    assert_eq!(
        *pop,
        json!({"entity": ENTITY, "project": "model-registry", "queueName": "default",
               "launchAgentId": backend.launch_agent_id()})
    );
    assert_eq!(
        fake.variables("ackRunQueueItem")[0],
        json!({"itemId": pushed, "runId": run_name})
    );
    let failed = &fake.variables("failRunQueueItem")[0];
    assert_eq!(failed["runQueueItemId"], pushed.as_str());
    assert_eq!(failed["stage"], "build");
    assert_eq!(failed["message"], "the build broke (exit code 2)");

    // The key shows nowhere.
    let debug = format!("{backend:?} {:?}", settings(&fake));
    assert!(!debug.contains(&api_key()), "{debug}");
}

#[tokio::test]
async fn run_spec_as_an_object_and_bad_specs_are_failed_and_skipped() {
    let fake = Fake::start(&["--pop-runspec", "object"]);
    let backend = connect(&fake).await;
    // The fake decodes a string body once more: this item's runSpec is the
    // string `plain text`, which is not JSON.
    let bad = fake.push("default", &json!("\"plain text\""));
    let good = fake.push("default", &spec());

    let item = claim(&backend).await.expect("the good item");
    assert_eq!(item.id, good);
    assert_eq!(item.spec["project"], "proj");
    assert_eq!(fake.item_state(&bad), "FAILED");
    let failed = &fake.variables("failRunQueueItem")[0];
    assert_eq!(failed["runQueueItemId"], bad.as_str());
    assert_eq!(failed["stage"], "agent");
    assert!(
        failed["message"].as_str().unwrap().contains("runSpec"),
        "{failed}"
    );
    // The bad item was never acked.
    assert_eq!(fake.variables("ackRunQueueItem").len(), 1);
}

#[tokio::test]
async fn a_string_run_spec_that_is_not_an_object_is_failed() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    let bad = fake.push("default", &json!([1, 2]));
    assert!(claim(&backend).await.is_none());
    assert_eq!(fake.item_state(&bad), "FAILED");
}

#[tokio::test]
async fn submit_list_and_stop_are_refused_naming_what_w_and_b_uses_instead() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    let pushed = fake.push("default", &spec());
    let before = fake.operations().len();

    let submit = backend.submit("default", spec()).await.unwrap_err();
    let list = backend.list(None).await.unwrap_err();
    let stop = backend.request_stop(&pushed).await.unwrap_err();
    for (error, instead) in [
        (submit, "wandb launch --queue"),
        (list, "W&B UI"),
        (stop, "W&B UI"),
    ] {
        let message = error.to_string();
        assert!(message.contains("wandb"), "{message}");
        assert!(
            message.contains(instead),
            "{instead:?} missing from {message:?}"
        );
    }
    // Nothing was sent, and the queued item is untouched.
    assert_eq!(fake.operations().len(), before);
    assert_eq!(fake.item_state(&pushed), "PENDING");
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_a_clear_message_without_the_key() {
    let fake = Fake::start(&[]);
    let mut settings = settings(&fake);
    let wrong = "w".repeat(40);
    settings.api.api_key = Some(ApiKey::new(wrong.clone()));
    let started = Instant::now();
    let error = WandbBackend::connect(settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("W&B at {} refused the API key (401)", fake.url())),
        "{error}"
    );
    assert!(
        !error.contains(&wrong) && !error.contains(&api_key()),
        "{error}"
    );
    // Not retried.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.events().len(), 1);
}

#[tokio::test]
async fn the_key_comes_from_netrc_when_not_given() {
    let fake = Fake::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let netrc = dir.path().join("netrc");
    std::fs::write(
        &netrc,
        format!(
            "machine api.wandb.ai\n  login user\n  password nope\n\
             machine 127.0.0.1:{}\n  login user\n  password {}\n",
            fake.port,
            api_key()
        ),
    )
    .unwrap();
    let mut settings = settings(&fake);
    settings.api.api_key = None;
    settings.api.netrc_path = Some(netrc);
    WandbBackend::connect(settings).await.unwrap();
}

#[tokio::test]
async fn a_missing_queue_is_named_with_its_entity() {
    let fake = Fake::start(&[]);
    let mut settings = settings(&fake);
    settings.queues = vec!["default".into(), "gpu".into()];
    let error = WandbBackend::connect(settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"gpu\"") && error.contains(ENTITY),
        "{error}"
    );
    assert!(!fake.operations().contains(&"createLaunchAgent".to_string()));
}

#[tokio::test]
async fn a_finished_job_whose_run_never_reached_w_and_b_gets_a_warning_not_a_failure() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    let claim = || async { claim(&backend).await.expect("an item") };
    let silent = fake.push("default", &spec());
    let item = claim().await;
    backend.finish(&item.id, "me", Some(0)).await.unwrap();
    let warnings = fake.variables("updateRunQueueItemWarning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["runQueueItemId"], silent.as_str());
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("wandb.init"),
        "{warnings:?}"
    );
    assert_ne!(fake.item_state(&silent), "FAILED");

    // A run that reported to W&B: no warning.
    fake.push("default", &spec());
    let item = claim().await;
    let run = backend.run_name(&item.id).unwrap();
    fake.control(
        "POST",
        &format!("/_fake/runs/{ENTITY}/proj/{run}"),
        r#"{"state": "finished"}"#,
    );
    backend.finish(&item.id, "me", Some(0)).await.unwrap();
    assert_eq!(fake.variables("updateRunQueueItemWarning").len(), 1);
    assert_eq!(
        fake.variables("RunState").last().unwrap(),
        &json!({"project": "proj", "entity": ENTITY, "name": run})
    );
}

#[tokio::test]
async fn a_project_with_no_queue_gets_its_default_queue_as_w_and_b_does() {
    let fake = Fake(FakeWandbServer::start_with_queues(
        &api_key(),
        ENTITY,
        &[],
        &[],
    ));
    let backend = connect(&fake).await;
    let created = fake.variables("CreateRunQueue");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["entity"], ENTITY);
    assert_eq!(created[0]["project"], "model-registry");
    assert_eq!(created[0]["queueName"], "default");
    assert_eq!(created[0]["access"], "PROJECT");
    // The new queue is served.
    let pushed = fake.push("default", &spec());
    let item = claim(&backend)
        .await
        .expect("the item pushed to the new queue");
    assert_eq!(item.id, pushed);

    // A named queue that does not exist is still an error saying how to
    // create it (after W&B's own default was made, as the W&B agent does).
    let fake = Fake(FakeWandbServer::start_with_queues(
        &api_key(),
        ENTITY,
        &[],
        &[],
    ));
    let mut named = settings(&fake);
    named.queues = vec!["gpu".into()];
    let error = WandbBackend::connect(named).await.unwrap_err().to_string();
    assert!(
        error.contains("\"gpu\"") && error.contains("Create queue"),
        "{error}"
    );
    // A project that has queues gets none created.
    let fake = Fake::start(&[]);
    connect(&fake).await;
    assert!(fake.variables("CreateRunQueue").is_empty());
}

#[tokio::test]
async fn dropped_connections_are_retried_and_nothing_is_lost() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    let first = fake.push("default", &spec());
    let second = fake.push("default", &spec());
    fake.control("POST", "/_fake/drop-connections?seconds=2", "");

    let started = Instant::now();
    let a = claim(&backend)
        .await
        .expect("the first item, after retries");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let b = claim(&backend).await.expect("the second item");
    assert_eq!(
        (a.id.as_str(), b.id.as_str()),
        (first.as_str(), second.as_str())
    );
    assert_eq!(fake.item_state(&first), "CLAIMED");
    assert_eq!(fake.item_state(&second), "CLAIMED");
    let dropped = fake
        .events()
        .iter()
        .filter(|e| e["kind"] == "dropped")
        .count();
    assert!(dropped >= 2, "{dropped} requests dropped");
}

#[tokio::test]
async fn unreachable_server_gives_up_after_the_retries() {
    let fake = Fake::start(&[]);
    let mut settings = settings(&fake);
    settings.api.retry = RetryPolicy {
        retries: 2,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
    };
    fake.control("POST", "/_fake/drop-connections?seconds=30", "");
    let error = WandbBackend::connect(settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("failed after 3 tries"), "{error}");
    assert!(!error.contains(&api_key()), "{error}");
}

#[tokio::test]
async fn stop_polling_stop_requests_heartbeats_and_close() {
    let fake = Fake::start(&[]);
    let backend = connect(&fake).await;
    let agent = backend.launch_agent_id().to_string();
    let agent_status = || {
        fake.state()["agents"][0]["agentStatus"]
            .as_str()
            .unwrap()
            .to_string()
    };

    backend
        .renew_leases("me", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(agent_status(), "POLLING");

    fake.push("default", &spec());
    let item = claim(&backend).await.unwrap();
    backend
        .renew_leases("me", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(agent_status(), "RUNNING");

    // A stop asked for the item's run.
    let run = backend.run_name(&item.id).unwrap();
    assert!(!backend.stop_requested(&item.id).await.unwrap());
    fake.control(
        "POST",
        &format!("/_fake/runs/{ENTITY}/proj/{run}"),
        r#"{"stopped": true}"#,
    );
    assert!(backend.stop_requested(&item.id).await.unwrap());
    assert_eq!(
        fake.variables("RunStoppedStatus")[0],
        json!({"projectName": "proj", "entityName": ENTITY, "runId": run})
    );
    backend
        .mark_stopped(&item.id, "agent", "stopped")
        .await
        .unwrap();
    assert!(!backend.stop_requested(&item.id).await.unwrap());

    assert!(!backend.should_stop().await);
    fake.control(
        "POST",
        &format!("/_fake/agents/{}/stop", path_segment(&agent)),
        "",
    );
    assert!(backend.should_stop().await);
    assert_eq!(fake.variables("LaunchAgent")[0], json!({"agentId": agent}));

    backend.close().await;
    assert_eq!(agent_status(), "KILLED");
    let updates = fake.variables("updateLaunchAgent");
    assert_eq!(
        updates.last().unwrap(),
        &json!({"agentId": agent, "agentStatus": "KILLED"})
    );

    // No server calls for these.
    let before = fake.events().len();
    backend.mark_running("x", "me").await.unwrap();
    let handle = launch_agent::queue::RunHandle {
        runner: "local-process".into(),
        id: "1".into(),
    };
    backend.set_run_handle("x", &handle).await.unwrap();
    backend.finish("x", "agent", Some(0)).await.unwrap();
    backend.release("x", "agent").await.unwrap();
    assert!(!backend.has_queued(&queues()).await.unwrap());
    assert!(
        backend
            .reclaim_abandoned(std::sync::Arc::new(|_: &str| true), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(fake.events().len(), before);
}

#[tokio::test]
async fn the_agent_s_pace_asks_the_server_only_when_due_and_heartbeats_ride_along_with_pops() {
    let fake = Fake::start(&[]);
    let backend = WandbBackend::connect(paced_settings(&fake)).await.unwrap();
    let agent = backend.launch_agent_id().to_string();
    let before = fake.events().len();
    // The first look at the queue: one request, a pop with a heartbeat.
    assert!(claim(&backend).await.is_none());
    let events = fake.events();
    let sent: Vec<&Value> = events[before..].iter().collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["fields"],
        json!(["popFromRunQueue", "updateLaunchAgent"]),
        "{sent:?}"
    );
    assert_eq!(fake.state()["agents"][0]["agentStatus"], "POLLING");
    assert_eq!(
        sent[0]["variables"]["agentId"].as_str(),
        Some(agent.as_str())
    );
    // Asked again at once: nothing is due, nothing is sent.
    let before = fake.events().len();
    assert!(claim(&backend).await.is_none());
    assert!(!backend.should_stop().await);
    assert!(!backend.should_stop().await);
    backend
        .renew_leases("me", Duration::from_secs(60))
        .await
        .unwrap();
    let sent = fake.events().len() - before;
    assert_eq!(sent, 1, "only the first stopPolling check goes out");
    assert_eq!(fake.operations().last().unwrap(), "LaunchAgent");
    // The agent sleeps until the next stop check or pop is due.
    let wait = backend.idle_wait(1);
    assert!(
        wait <= cadence::STOP_CHECK && wait >= cadence::MIN_WAKE,
        "{wait:?}"
    );
    // Work popped: the next pop is due at once (a burst drains).
    fake.push("default", &spec());
    fake.push("default", &spec());
    tokio::time::sleep(cadence::ACTIVE_POLL).await;
    for _ in 0..2 {
        assert!(claim(&backend).await.is_some());
    }
}

/// A stand-in server answering each request with the next of `answers`
/// (status, extra headers, body); the number of requests it got.
fn scripted_server(
    answers: Vec<(u16, &'static str, &'static str)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for (status, headers, body) in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            common::http_fake::read_request(&mut stream);
            seen.fetch_add(1, Ordering::SeqCst);
            _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, count)
}

#[tokio::test]
async fn server_errors_and_429_are_retried_but_401_is_not() {
    use std::sync::atomic::Ordering;
    let busy = r#"{"errors":[{"message":"busy"}]}"#;
    let (url, count) = scripted_server(vec![
        (503, "", busy),
        (429, "Retry-After: 0\r\n", busy),
        (502, "", busy),
        (
            401,
            "",
            r#"{"errors":[{"message":"user is not logged in"}]}"#,
        ),
        (200, "", r#"{"data":{"viewer":{"entity":"e"}}}"#),
    ]);
    let mut settings = WandbSettings::from_env(Some(ENTITY.into()), queues());
    settings.api.base_url = url.clone();
    settings.api.api_key = Some(ApiKey::new(api_key()));
    settings.api.retry = RetryPolicy {
        retries: 5,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };
    let error = WandbBackend::connect(settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("W&B at {url} refused the API key (401)")),
        "{error}"
    );
    assert!(!error.contains(&api_key()), "{error}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
}
