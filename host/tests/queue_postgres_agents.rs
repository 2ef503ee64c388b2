//! Agents in separate processes with separate state dirs (as two machines
//! would be) sharing one PostgreSQL queue: every job runs once to a
//! terminal state, an agent killed with SIGKILL loses nothing (its jobs
//! are taken back after their lease), and a restart of the server is
//! survived.
//!
//! Each job appends a line to a marker file of its own when it completes,
//! so the files count completions. Skipped without the server, except in
//! CI (see `common/postgres.rs`). The tests take turns: one restarts the
//! server.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Scratch;
use launch_agent::queue::postgres::{PostgresSettings, UrlSource};
use launch_agent::queue::{BackendSettings, ItemState, QueueBackend, QueueItem};

const JOBS: usize = 200;
/// The bound on any one test's wait for the queue to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An agent's config: the PostgreSQL queue, its URL in `QUEUE_DB`, short leases.
const CONFIG: &str = "queues: [default]
queue_backend: postgres
postgres: {url-secret: queue-db}
secrets:
  queue-db: {env: QUEUE_DB}
lease_seconds: 3
";

struct Setup {
    url: String,
    queue: Arc<dyn QueueBackend>,
    markers: tempfile::TempDir,
}

async fn setup() -> Option<Setup> {
    let url = common::postgres::fresh_schema_url().await?;
    let queue = launch_agent::queue::open(&BackendSettings::Postgres(PostgresSettings {
        url: UrlSource::Literal(url.clone()),
    }))
    .await
    .expect("open the queue");
    Some(Setup {
        url,
        queue,
        markers: tempfile::tempdir().unwrap(),
    })
}

impl Setup {
    fn marker(&self, n: usize) -> PathBuf {
        self.markers.path().join(format!("job-{n}"))
    }

    /// Submits `JOBS` jobs; jobs in `first_attempt_hangs` hang on their first
    /// attempt (so that an agent killed while holding them is killed mid-run,
    /// not just after a run ended). Returns the ids by job number.
    async fn submit_all(&self, first_attempt_hangs: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for n in 0..JOBS {
            let marker = self.marker(n);
            let script = if n < first_attempt_hangs {
                let started = self.markers.path().join(format!("started-{n}"));
                format!(
                    "if [ ! -e {s} ]; then touch {s}; sleep 60; fi; echo done >> {m}",
                    s = started.display(),
                    m = marker.display()
                )
            } else {
                format!("sleep 0.05; echo done >> {}", marker.display())
            };
            ids.push(
                self.queue
                    .submit("default", common::shell_job(&script))
                    .await
                    .unwrap(),
            );
        }
        ids
    }

    async fn items(&self) -> HashMap<String, QueueItem> {
        self.queue
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect()
    }

    /// Waits (bounded) until `pred` holds for the items.
    async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&HashMap<String, QueueItem>) -> bool,
    ) -> HashMap<String, QueueItem> {
        let start = Instant::now();
        loop {
            let items = self.items().await;
            if pred(&items) {
                return items;
            }
            let mut states: HashMap<ItemState, usize> = HashMap::new();
            for item in items.values() {
                *states.entry(item.state).or_default() += 1;
            }
            assert!(
                start.elapsed() < limit,
                "never got to: {what}; states now: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every job finished, each marker written exactly once.
    fn assert_each_completed_once(&self, items: &HashMap<String, QueueItem>) {
        assert_eq!(items.len(), JOBS, "nothing lost, nothing added");
        for item in items.values() {
            assert_eq!(item.state, ItemState::Finished, "{item:#?}");
        }
        for n in 0..JOBS {
            let text = std::fs::read_to_string(self.marker(n)).unwrap_or_default();
            assert_eq!(text.lines().count(), 1, "job {n} completed {text:?}");
        }
    }
}

/// One agent: its own scratch dir (state dir, config, log).
struct Agent {
    scratch: Scratch,
    child: Child,
}

impl Agent {
    fn start(url: &str, extra: &[&str]) -> Agent {
        let scratch = Scratch::new();
        let config = scratch.write_config(CONFIG);
        let log = std::fs::File::create(scratch.path().join("agent.log")).unwrap();
        let child = scratch
            .cmd()
            .args(["run", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("QUEUE_DB", url)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        Agent { scratch, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits (bounded) for the agent to exit; its exit status and log.
    fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the agent did not exit; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(self) -> (std::process::ExitStatus, String) {
        // SAFETY: a plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(Duration::from_secs(60))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn held_by(items: &HashMap<String, QueueItem>, agent_pid: u32) -> Vec<&QueueItem> {
    let needle = format!(":{agent_pid}:");
    items
        .values()
        .filter(|i| i.state.is_held())
        .filter(|i| i.claimed_by.as_deref().is_some_and(|h| h.contains(&needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_every_job_exactly_once() {
    let _turn = TURNS.lock().await;
    let Some(setup) = setup().await else { return };
    setup.submit_all(0).await;
    let a = Agent::start(&setup.url, &["--exit-when-idle", "-j", "8"]);
    let b = Agent::start(&setup.url, &["--exit-when-idle", "-j", "8"]);
    let items = setup
        .wait_until("every job ended", DRAIN_LIMIT, |items| {
            items.values().all(|i| i.state.is_terminal())
        })
        .await;
    setup.assert_each_completed_once(&items);
    let mut by_agent: HashMap<&str, usize> = HashMap::new();
    for item in items.values() {
        *by_agent
            .entry(item.claimed_by.as_deref().unwrap_or("none"))
            .or_default() += 1;
        assert_eq!(item.attempts, 1, "{item:#?}");
    }
    assert_eq!(by_agent.len(), 2, "both agents took jobs: {by_agent:?}");
    for agent in [a, b] {
        let (status, log) = agent.wait(Duration::from_secs(60));
        assert!(status.success(), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_loses_nothing_and_nothing_completes_twice() {
    let _turn = TURNS.lock().await;
    let Some(setup) = setup().await else { return };
    let hanging = 4;
    let ids = setup.submit_all(hanging).await;
    // The first agent takes the hanging jobs (first in the queue) and is full.
    let a = Agent::start(&setup.url, &["-j", "4"]);
    let a_pid = a.child.id();
    setup
        .wait_until(
            "the first agent runs 4 jobs",
            Duration::from_secs(60),
            |items| {
                held_by(items, a_pid)
                    .iter()
                    .filter(|i| i.state == ItemState::Running)
                    .count()
                    == hanging
            },
        )
        .await;
    let b = Agent::start(&setup.url, &["-j", "8"]);
    setup
        .wait_until("50 jobs finished", DRAIN_LIMIT, |items| {
            items
                .values()
                .filter(|i| i.state == ItemState::Finished)
                .count()
                >= 50
        })
        .await;

    // SIGKILL mid-way: its runs die with it (their first attempt never completes).
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let items = setup.items().await;
    let abandoned: Vec<String> = held_by(&items, a_pid)
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(
        abandoned.len(),
        hanging,
        "the dead agent still holds its jobs"
    );
    // No pid checks (the other agent, on this very host, could make them):
    // only the lease (3 s) frees its jobs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let items = setup.items().await;
    assert_eq!(
        held_by(&items, a_pid).len(),
        hanging,
        "taken back before the lease ran out"
    );

    let items = setup
        .wait_until("every job ended", DRAIN_LIMIT, |items| {
            items.values().all(|i| i.state.is_terminal())
        })
        .await;
    setup.assert_each_completed_once(&items);
    for id in &abandoned {
        let item = &items[id];
        assert_eq!(item.attempts, 2, "reclaimed once: {item:#?}");
        assert!(
            !item
                .claimed_by
                .as_deref()
                .unwrap()
                .contains(&format!(":{a_pid}:")),
            "{item:#?}"
        );
        assert!(ids[..hanging].contains(id));
    }
    let (_, log) = b.stop();
    assert!(log.contains("took back a job whose agent died"), "{log}");
}

/// Restarts the test server (fast shutdown: every session is cut).
fn restart_server() {
    let env = common::postgres::env().expect("the server's env file");
    let bin = Path::new(&env["LAUNCH_AGENT_POSTGRES_BIN"]).join("pg_ctl");
    let data = Path::new(&env["LAUNCH_AGENT_POSTGRES_DIR"]).join("data");
    let user = &env["LAUNCH_AGENT_POSTGRES_OS_USER"];
    let pg_ctl = |cmd: &mut Command| {
        cmd.arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "restart"])
            .stdout(Stdio::null());
    };
    let mut command = if nix_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    pg_ctl(&mut command);
    let status = command.status().expect("run pg_ctl restart");
    assert!(status.success(), "pg_ctl restart failed");
}

fn nix_is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_carry_on_after_the_server_restarts() {
    let _turn = TURNS.lock().await;
    let Some(setup) = setup().await else { return };
    setup.submit_all(0).await;
    let a = Agent::start(&setup.url, &["-j", "8"]);
    let b = Agent::start(&setup.url, &["-j", "8"]);
    setup
        .wait_until("40 jobs finished", DRAIN_LIMIT, |items| {
            items
                .values()
                .filter(|i| i.state == ItemState::Finished)
                .count()
                >= 40
        })
        .await;
    restart_server();
    // After the restart the agents reconnect by themselves; the last
    // jobs, submitted now, are announced to them on new connections.
    let items = setup
        .wait_until("every job ended", DRAIN_LIMIT, |items| {
            items.values().all(|i| i.state.is_terminal())
        })
        .await;
    setup.assert_each_completed_once(&items);
    let late = setup
        .queue
        .submit("default", common::shell_job("true"))
        .await
        .unwrap();
    setup
        .wait_until(
            "a job submitted after the restart ended",
            Duration::from_secs(30),
            |items| items[&late].state == ItemState::Finished,
        )
        .await;
    let mut reconnected = 0;
    for agent in [a, b] {
        let (status, log) = agent.stop();
        assert!(status.success(), "{log}");
        reconnected += usize::from(log.contains("listening for new work again"));
    }
    assert_eq!(
        reconnected, 2,
        "both agents saw the restart and reconnected"
    );
}
