//! The agent's performance figures, printed as a table:
//!
//! - a plugin call: a fresh Store, instantiation from the cached
//!   `InstancePre` and one call (`environment.verify` of environment-local,
//!   a lean plugin), and the same for `info()` of builder-noop (lean) and
//!   builder-docker (which imports WASI), all three in one engine, taking
//!   turns in rounds of 1 000 calls;
//! - start-up to first poll with a warm plugin cache (the `launch-agent run`
//!   process, from spawn to its "agent polling" line);
//! - the idle RSS of an agent with the default bundle loaded.
//!
//! All with the bundle the agent embeds (no plugin dir).
//!
//! Run: `cargo bench -p launch-agent --bench agent`.

use launch_agent::plugins::{LoadedPlugin, PluginHost, PluginSource, bundle};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The plugin calls measured: bundled plugin file, what it is, and the call.
const CALLS: [(&str, &str); 3] = [
    ("environment-local", "`verify` of environment-local (lean)"),
    ("builder-noop", "`info()` of builder-noop (lean)"),
    (
        "builder-docker",
        "`info()` of builder-docker (imports WASI)",
    ),
];

/// One call of [`CALLS`] entry `file`: `environment.verify` for
/// environment-local, `plugin.info` for the others (no arguments, no JSON).
async fn call(file: &str, plugin: &LoadedPlugin) {
    if file == "environment-local" {
        plugin
            .verify_environment(r#"{"type":"local"}"#, None)
            .await
            .unwrap();
    } else {
        plugin.describe().await.unwrap();
    }
}

/// What one plugin call measured: p50 and p99 over all calls, and the
/// lowest and highest p50 of a round.
struct CallFigures {
    p50: Duration,
    p99: Duration,
    round_p50s: (Duration, Duration),
}

/// Loads the plugins of [`CALLS`] into one runtime (one engine, as in the
/// agent) and measures each call `rounds` × `per_round` times, the plugins
/// taking turns round by round so that all of them see the same machine
/// (this VM's speed changes over seconds). One warm-up round first.
fn measure_calls(
    state: &Path,
    rounds: usize,
    per_round: usize,
) -> (Vec<CallFigures>, &'static str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut host = PluginHost::new(&state.join("cache"), 128).unwrap();
        let allocator = match host.allocator() {
            launch_agent::plugins::wasm_engine::Allocator::Pooling => "pooling",
            launch_agent::plugins::wasm_engine::Allocator::OnDemand => "on-demand",
        };
        let mut plugins = Vec::new();
        for (file, _) in CALLS {
            let embedded = bundle::embedded(&format!("{file}.wasm")).expect("embedded");
            let plugin = host
                .load_from(
                    file,
                    &PluginSource::Embedded(embedded),
                    &Default::default(),
                    &Default::default(),
                )
                .await
                .unwrap();
            plugins.push((file, plugin));
        }
        let mut samples = vec![Vec::with_capacity(rounds * per_round); CALLS.len()];
        let mut round_p50s = vec![Vec::with_capacity(rounds); CALLS.len()];
        for round in 0..=rounds {
            for (i, (file, plugin)) in plugins.iter().enumerate() {
                let mut this_round = Vec::with_capacity(per_round);
                for _ in 0..per_round {
                    let start = Instant::now();
                    call(file, plugin).await;
                    this_round.push(start.elapsed());
                }
                if round > 0 {
                    samples[i].extend_from_slice(&this_round);
                    this_round.sort();
                    round_p50s[i].push(percentile(&this_round, 0.5));
                }
            }
        }
        let figures = samples
            .into_iter()
            .zip(round_p50s)
            .map(|(mut all, mut p50s)| {
                all.sort();
                p50s.sort();
                CallFigures {
                    p50: percentile(&all, 0.5),
                    p99: percentile(&all, 0.99),
                    round_p50s: (p50s[0], *p50s.last().unwrap()),
                }
            })
            .collect();
        (figures, allocator)
    })
}

/// Spawns `launch-agent run`, returns the child and the time to its first poll.
fn start_agent(
    state: &Path,
    config: &Path,
    exit_when_idle: bool,
) -> (std::process::Child, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("LAUNCH_AGENT_STATE_DIR", state)
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if exit_when_idle {
        cmd.arg("--exit-when-idle");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn agent");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.expect("agent output").contains("agent polling") {
            let elapsed = start.elapsed();
            std::thread::spawn(move || for _ in lines {});
            return (child, elapsed);
        }
    }
    let status = child.wait();
    panic!("the agent never reached its first poll ({status:?})");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // As the agent does (see cli.rs): no library backtraces on the hot path.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // `cargo test --all-targets` runs this without `--bench`: a quick smoke
    // run (same code paths, few samples) that only checks it works.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if full { (30, 1_000) } else { (2, 100) };
    let startups_n = if full { 20 } else { 2 };
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let config = scratch.path().join("launch-config.yaml");
    std::fs::write(
        &config,
        "queues: [default]\nenvironment: { type: local }\nbuilder: { type: noop }\n",
    )
    .unwrap();

    let (calls, allocator) = measure_calls(&state, rounds, per_round);

    // Warm the cache, then measure start-up.
    let (mut child, _) = start_agent(&state, &config, true);
    child.wait().unwrap();
    let mut startups = Vec::new();
    for _ in 0..startups_n {
        let (mut child, elapsed) = start_agent(&state, &config, true);
        child.wait().unwrap();
        startups.push(elapsed);
    }
    startups.sort();

    let (mut child, _) = start_agent(&state, &config, false);
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(child.id());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

    if !full {
        println!("(smoke run: use `cargo bench` for the figures)");
    }
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    for (i, ((_, what), figures)) in CALLS.iter().zip(&calls).enumerate() {
        let (measure, goal) = if i == 0 {
            (
                format!("plugin call: fresh Store + instantiate + {what}; {allocator} allocator"),
                "p50 ≤ 10 µs",
            )
        } else {
            (format!("the same with {what}"), "")
        };
        println!(
            "| {measure} | p50 {:.1} µs (rounds' p50 {:.1}–{:.1}), p99 {:.1} µs | {goal} |",
            micros(figures.p50),
            micros(figures.round_p50s.0),
            micros(figures.round_p50s.1),
            micros(figures.p99)
        );
    }
    println!(
        "| start-up to first poll, warm cache (process spawn to \"agent polling\") | p50 {:.1} ms, max {:.1} ms | ≤ 50 ms |",
        percentile(&startups, 0.5).as_secs_f64() * 1e3,
        startups.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| idle RSS, default bundle loaded | {:.1} MB | ≤ 25 MB |",
        rss as f64 / 1024.0
    );
}
