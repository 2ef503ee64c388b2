//! The PostgreSQL queue beside the embedded one, measured side by side in
//! one run:
//!
//! - submit → job start with an idle agent: a library submit (plus the
//!   wake-up `launch-agent submit` sends, for the embedded queue; the
//!   PostgreSQL queue's own `NOTIFY` wakes its agent) to the job's first
//!   instruction writing the time; the two agents take turns, at random
//!   spacing (a fixed seed);
//! - claims per second with 4 agents against one store: 4 handles (each its
//!   own connection pool and runtime thread, as 4 agents' would be) claiming
//!   as fast as they can until a queue of pre-submitted items is empty; and
//!   whole cycles (claim, mark running, finish) per second the same way.
//!
//! Needs the server `scripts/services-postgres.sh start` starts (skips
//! without it). Run: `cargo bench -p launch-agent --bench queue_postgres`,
//! or `cargo test -p launch-agent --bench queue_postgres -- --bench` for the
//! dev profile; without `--bench` it is a quick smoke run.

#[path = "../tests/common/postgres.rs"]
mod postgres_env;
#[path = "../tests/common/services_env.rs"]
#[allow(dead_code)]
mod services_env;

use launch_agent::queue::postgres::{PostgresSettings, UrlSource};
use launch_agent::queue::{BackendSettings, QueueBackend};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A tiny fixed-seed generator for the spacing between submits.
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An idle agent serving `settings`' queue from its own state dir.
fn start_agent(dir: &Path, name: &str, config: &str, url: Option<&str>) -> Child {
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let config_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
    cmd.args(["run", "--config", config_path.to_str().unwrap()])
        .env("LAUNCH_AGENT_STATE_DIR", &state)
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = url {
        cmd.env("QUEUE_DB", url);
    }
    cmd.spawn().expect("spawn the agent")
}

/// A job whose first instruction writes the time (ns) to `marker`.
fn timing_job(marker: &Path) -> serde_json::Value {
    serde_json::json!({
        "resource": "local-process",
        "project": "bench",
        "entity": "bench",
        "overrides": {"entry_point": ["sh", "-c", format!("date +%s%N > {}", marker.display())]}
    })
}

/// Waits (bounded) for the marker and returns submit → start.
fn wait_marker(marker: &Path, submitted_ns: u128) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(marker)
            && let Ok(ns) = text.trim().parse::<u128>()
        {
            return Duration::from_nanos((ns.saturating_sub(submitted_ns)) as u64);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Side {
    name: &'static str,
    queue: Arc<dyn QueueBackend>,
    wake_dir: Option<PathBuf>,
    latencies: Vec<Duration>,
}

async fn submit_to_start(dir: &Path, url: &str, rounds: usize) -> Vec<Side> {
    let embedded_state = dir.join("embedded");
    let mut agents = vec![
        start_agent(dir, "embedded", "queues: [default]\n", None),
        start_agent(
            dir,
            "postgres",
            "queues: [default]\nqueue_backend: postgres\npostgres: {url-secret: db}\n\
             secrets: {db: {env: QUEUE_DB}}\n",
            Some(url),
        ),
    ];
    let mut sides = vec![
        Side {
            name: "embedded",
            queue: launch_agent::queue::open(&BackendSettings::embedded(&embedded_state))
                .await
                .unwrap(),
            wake_dir: Some(embedded_state.join("wake")),
            latencies: Vec::new(),
        },
        Side {
            name: "postgres",
            queue: launch_agent::queue::open(&pg_settings(url)).await.unwrap(),
            wake_dir: None,
            latencies: Vec::new(),
        },
    ];
    // Both idle: warm up with one job each, then let them settle.
    let mut rng = Lcg(0x5eed);
    for round in 0..=rounds {
        for side in &mut sides {
            let marker = dir.join(format!("{}-{round}", side.name));
            let job = timing_job(&marker);
            tokio::time::sleep(Duration::from_millis(300 + (rng.next_f64() * 700.0) as u64)).await;
            let submitted = now_ns();
            side.queue.submit("default", job).await.unwrap();
            if let Some(wake) = &side.wake_dir {
                launch_agent::agent::wake::wake_all(wake);
            }
            let latency = tokio::task::block_in_place(|| wait_marker(&marker, submitted));
            if round > 0 {
                side.latencies.push(latency);
            }
        }
    }
    for agent in &mut agents {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    for side in &mut sides {
        side.latencies.sort();
    }
    sides
}

fn pg_settings(url: &str) -> BackendSettings {
    BackendSettings::Postgres(PostgresSettings {
        url: UrlSource::Literal(url.to_owned()),
    })
}

/// Claims (and, with `cycle`, whole claim → running → finish cycles) per
/// second, 4 handles against one store holding `items` queued items.
async fn claims_per_second(settings: &BackendSettings, items: usize, cycle: bool) -> f64 {
    let submitter = launch_agent::queue::open(settings).await.unwrap();
    for _ in 0..items {
        submitter
            .submit("default", serde_json::json!({}))
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(launch_agent::queue::open(settings).await.unwrap());
    }
    let queues = vec!["default".to_owned()];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, queue) in handles.into_iter().enumerate() {
        let queues = queues.clone();
        tasks.push(tokio::spawn(async move {
            let agent = format!("bench-agent-{n}");
            let mut claimed = 0usize;
            while let Some(item) = queue
                .claim_next(&queues, &agent, Duration::from_secs(60))
                .await
                .unwrap()
            {
                claimed += 1;
                if cycle {
                    queue.mark_running(&item.id, &agent).await.unwrap();
                    queue.finish(&item.id, &agent, Some(0)).await.unwrap();
                }
            }
            claimed
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, items, "every item claimed once");
    total as f64 / start.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    if postgres_env::server_url().is_none() {
        println!("no PostgreSQL server: run scripts/services-postgres.sh start");
        return;
    }
    let (rounds, items) = if full { (30, 4000) } else { (3, 200) };
    let dir = tempfile::tempdir().unwrap();

    let pg_url = postgres_env::fresh_schema_url().await.unwrap();
    let sides = submit_to_start(dir.path(), &pg_url, rounds).await;

    let mut rates = Vec::new();
    for cycle in [false, true] {
        let embedded_dir = tempfile::tempdir().unwrap();
        let embedded = claims_per_second(
            &BackendSettings::embedded(embedded_dir.path()),
            items,
            cycle,
        )
        .await;
        let url = postgres_env::fresh_schema_url().await.unwrap();
        let postgres = claims_per_second(&pg_settings(&url), items, cycle).await;
        // The same with the queue's sessions not waiting for the disk at
        // each commit (a choice for the operator; see the README).
        let url = postgres_env::fresh_schema_url().await.unwrap();
        let relaxed = format!("{url}%20-c%20synchronous_commit%3Doff");
        let postgres_async = claims_per_second(&pg_settings(&relaxed), items, cycle).await;
        rates.push((cycle, embedded, postgres, postgres_async));
    }

    println!("| measure | embedded | postgres | postgres, `synchronous_commit=off` | goal |");
    println!("|---|---|---|---|---|");
    let (emb, pg) = (&sides[0].latencies, &sides[1].latencies);
    println!(
        "| submit → job start, idle agent, {} jobs each: p50 | {} | {} | | postgres ≤ 2× embedded |",
        emb.len(),
        ms(percentile(emb, 0.5)),
        ms(percentile(pg, 0.5))
    );
    println!(
        "| the same: p90, max | {}, {} | {}, {} | | |",
        ms(percentile(emb, 0.9)),
        ms(*emb.last().unwrap()),
        ms(percentile(pg, 0.9)),
        ms(*pg.last().unwrap())
    );
    for (cycle, embedded, postgres, postgres_async) in rates {
        let what = if cycle {
            "claim → running → finish cycles per second"
        } else {
            "claims per second"
        };
        let goal = if cycle { "" } else { "postgres ≥ 500/s" };
        println!(
            "| {what}, 4 agents, {items} items | {embedded:.0} | {postgres:.0} | {postgres_async:.0} | {goal} |"
        );
    }
    if !full {
        println!("(smoke run: use `cargo bench` or `-- --bench` for the figures)");
    }
}
