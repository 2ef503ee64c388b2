//! What only the PostgreSQL queue has: wake-ups by `NOTIFY` that survive a
//! dropped connection, migrations under a lock, run handles kept only for
//! this host's holders, the URL kept out of errors, and the CLI reaching
//! the queue through a config. The semantics it shares with the embedded
//! queue are in `queue_conformance.rs`.
//!
//! Skipped without the server, except in CI (see `common/postgres.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use launch_agent::queue::postgres::{
    MIGRATIONS, PostgresBackend, PostgresSettings, SCHEMA_VERSION, UrlSource,
};
use launch_agent::queue::{BackendSettings, ItemState, QueueBackend, QueueError, RunHandle};
use serde_json::json;
use tokio::sync::Notify;

fn settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: UrlSource::Literal(url.to_owned()),
    }
}

async fn open(url: &str) -> Arc<dyn QueueBackend> {
    launch_agent::queue::open(&BackendSettings::Postgres(settings(url)))
        .await
        .expect("open the queue")
}

/// A plain client on `url` (for what the tests do behind the queue's back).
async fn sql(url: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap();
    drop(client);
    let _ = task.await;
}

async fn woken_within(notify: &Notify, limit: Duration) -> bool {
    tokio::time::timeout(limit, notify.notified()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_wakes_a_listening_agent_even_after_its_connection_dropped() {
    let Some(url) = common::postgres::fresh_schema_url().await else {
        return;
    };
    let agent = open(&url).await;
    let submitter = open(&url).await;
    let notify = Arc::new(Notify::new());
    agent.wake_on_new_work(notify.clone());
    // The listener wakes the loop once it listens (anything submitted before
    // it was there is looked for).
    assert!(woken_within(&notify, Duration::from_secs(10)).await);
    assert!(
        !woken_within(&notify, Duration::from_millis(300)).await,
        "woken for nothing"
    );

    submitter.submit("q", json!({})).await.unwrap();
    assert!(
        woken_within(&notify, Duration::from_secs(2)).await,
        "a submit woke it"
    );

    // Cut every listening connection: the listener comes back by itself.
    sql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN \"launch_agent_%' AND pid <> pg_backend_pid()",
    )
    .await;
    assert!(
        woken_within(&notify, Duration::from_secs(10)).await,
        "woken again once listening again"
    );
    submitter.submit("q", json!({})).await.unwrap();
    assert!(
        woken_within(&notify, Duration::from_secs(2)).await,
        "a submit woke it again"
    );

    // A hand-back announces its item too.
    let item = agent
        .claim_next(&["q".to_owned()], "a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    while woken_within(&notify, Duration::from_millis(200)).await {}
    agent.release(&item.id, "a").await.unwrap();
    assert!(
        woken_within(&notify, Duration::from_secs(2)).await,
        "a hand-back woke it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_under_the_lock_and_show_in_a_dry_run() {
    let Some(url) = common::postgres::fresh_schema_url().await else {
        return;
    };
    let pending = PostgresBackend::pending_migrations(&settings(&url))
        .await
        .unwrap();
    assert_eq!(pending.len(), MIGRATIONS.len());
    assert_eq!(pending[0].version, 1);
    assert!(pending[0].sql.contains("CREATE TABLE launch_agent_items"));

    // Agents starting together: every one opens, the schema is made once.
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresBackend::connect(&settings(&url)).await.map(drop) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    assert!(
        PostgresBackend::pending_migrations(&settings(&url))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        PostgresBackend::migrate(&settings(&url))
            .await
            .unwrap()
            .is_empty()
    );

    // A database a newer launch-agent migrated is refused, saying so.
    sql(
        &url,
        "INSERT INTO launch_agent_migrations (version, name) VALUES (99, 'from the future')",
    )
    .await;
    let error = PostgresBackend::connect(&settings(&url))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, QueueError::SchemaTooNew { found: 99, supported, .. } if supported == i64::from(SCHEMA_VERSION)),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_item_keeps_its_run_handle_only_for_a_holder_on_this_host() {
    let Some(url) = common::postgres::fresh_schema_url().await else {
        return;
    };
    let queue = open(&url).await;
    let host = launch_agent::agent::identity::hostname();
    let here = queue.submit("q", json!({})).await.unwrap();
    let elsewhere = queue.submit("q", json!({})).await.unwrap();
    let handle = RunHandle {
        runner: "local-process".into(),
        id: "4242".into(),
    };
    let short = Duration::from_millis(50);
    for (id, holder) in [
        (&here, format!("{host}:1:2:abcd")),
        (&elsewhere, "another-machine:1:2:abcd".to_owned()),
    ] {
        queue
            .claim_next(&["q".to_owned()], &holder, short)
            .await
            .unwrap()
            .unwrap();
        queue.set_run_handle(id, &handle).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // `holder_is_dead` is not asked: only leases count.
    let reclaimed = queue
        .reclaim_abandoned(Arc::new(|_: &str| panic!("no pid checks")), 3)
        .await
        .unwrap();
    let find = |id: &str| reclaimed.iter().find(|r| r.id == id).unwrap();
    assert_eq!(find(&here).run_handle, Some(handle));
    assert_eq!(find(&elsewhere).run_handle, None);
    assert!(reclaimed.iter().all(|r| r.new_state == ItemState::Queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_error_naming_the_server_not_the_password() {
    let Some(url) = common::postgres::server_url() else {
        return;
    };
    let (before, after) = url.split_once('@').unwrap();
    let user = before.rsplit_once(':').unwrap().0;
    let wrong = format!("{user}:not-the-password-x9@{after}");
    let error = launch_agent::queue::open(&BackendSettings::Postgres(settings(&wrong)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(!error.contains("not-the-password-x9"), "{error}");
    assert!(error.contains("postgres://launch@127.0.0.1:"), "{error}");
    assert!(error.contains("password"), "says what failed: {error}");
}

#[test]
fn the_cli_submits_lists_and_stops_through_a_postgres_config() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = runtime.block_on(common::postgres::fresh_schema_url()) else {
        return;
    };
    let scratch = common::Scratch::new();
    let config = scratch.write_config(
        "queue_backend: postgres\npostgres: {url-secret: db}\nsecrets: {db: {env: QUEUE_DB}}\n",
    );
    let config = config.to_str().unwrap();
    let spec = scratch.write("job.json", &common::shell_job("true").to_string());
    let run = |args: &[&str]| {
        let out = scratch
            .cmd()
            .args(args)
            .env("QUEUE_DB", &url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {log}");
        assert!(
            !log.contains(&url) && !text.contains(&url),
            "the URL leaked: {log}{text}"
        );
        text
    };
    let id = run(&[
        "submit",
        "--config",
        config,
        "-q",
        "gpu",
        spec.to_str().unwrap(),
    ]);
    let id = id.trim();
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["queue", "list", "--config", config, "--json"])).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["queue"], "gpu");
    assert_eq!(
        run(&["queue", "stop", "--config", config, id]).trim(),
        format!("{id}: stopped")
    );
    let dry = run(&["queue", "migrate", "--config", config, "--dry-run"]);
    assert!(dry.contains("up to date"), "{dry}");
    // Nothing went to the embedded queue of the state dir.
    let embedded = scratch.run(&["queue", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&embedded.stdout).trim(), "[]");
}

/// Whether a connection of this test's queue (its schema in the URL) is
/// encrypted, as the server sees it.
async fn encrypted_sessions(url: &str, schema_url: &str) -> (i64, i64) {
    let schema = schema_url
        .rsplit_once("search_path%3D")
        .map(|(_, s)| s.to_owned())
        .unwrap();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    // Sessions are told apart by the application name the test gives them.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&schema],
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_as_libpq_does() {
    let Some(env) = common::postgres::env() else {
        return;
    };
    let Some(ca) = env.get("LAUNCH_AGENT_POSTGRES_CA").cloned() else {
        panic!("the server's env file names no CA: restart scripts/services-postgres.sh");
    };
    let server = common::postgres::server_url().unwrap();
    let schema_url = common::postgres::fresh_schema_url().await.unwrap();
    let schema = schema_url
        .rsplit_once("search_path%3D")
        .unwrap()
        .1
        .to_owned();
    let with_mode = |mode: &str| {
        schema_url.replace("sslmode=disable", mode) + &format!("&application_name={schema}")
    };

    // `disable`: plain.
    let plain = open(&with_mode("sslmode=disable")).await;
    plain.list(None).await.unwrap();
    assert_eq!(encrypted_sessions(&server, &schema_url).await, (0, 1));
    drop(plain);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `require`: encrypted, the certificate not checked.
    let required = open(&with_mode("sslmode=require")).await;
    required.list(None).await.unwrap();
    assert_eq!(encrypted_sessions(&server, &schema_url).await, (1, 0));
    drop(required);

    // `verify-full` against the test CA: encrypted and checked.
    let verified = open(&with_mode(&format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    verified.submit("q", json!({})).await.unwrap();
    drop(verified);

    // `verify-ca` and `verify-full` against roots that did not sign it: refused.
    for mode in ["sslmode=verify-full", "sslmode=verify-ca"] {
        let error =
            launch_agent::queue::open(&BackendSettings::Postgres(settings(&with_mode(mode))))
                .await
                .err()
                .expect("an unknown issuer is refused");
        let text = error.to_string();
        assert!(
            text.contains("cert") || text.contains("issuer") || text.contains("root"),
            "{mode}: {text}"
        );
    }
}
