//! The agent's performance figures, printed as a table:
//!
//! - a plugin call: a fresh Store, instantiation from the cached
//!   `InstancePre` and one call (`environment.verify` of environment-local,
//!   a lean plugin), and the same for `info()` of builder-noop (lean) and
//!   builder-docker (which imports WASI);
//! - start-up to first poll with a warm plugin cache (the `launch-agent run`
//!   process, from spawn to its "agent polling" line);
//! - the idle RSS of an agent with the default bundle loaded.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p launch-agent --bench agent`.

use launch_agent::plugins::{LoadedPlugin, PluginHost};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Loads bundled plugin `file` into a fresh runtime and measures `call` on
/// it `n` times (after `n / 10` warm-up calls): p50, p99 and the allocator
/// the engine got.
fn measure_calls(
    bundle: &Path,
    state: &Path,
    file: &str,
    n: usize,
    call: impl AsyncFn(&LoadedPlugin),
) -> (Duration, Duration, &'static str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut host = PluginHost::new(&state.join("cache"), 128).unwrap();
        let allocator = match host.allocator() {
            launch_agent::plugins::engine::Allocator::Pooling => "pooling",
            launch_agent::plugins::engine::Allocator::OnDemand => "on-demand",
        };
        let plugin = host
            .load(
                file,
                &bundle.join(format!("{file}.wasm")),
                &Default::default(),
                &Default::default(),
            )
            .await
            .unwrap();
        for _ in 0..n / 10 {
            call(&plugin).await;
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            call(&plugin).await;
            samples.push(start.elapsed());
        }
        samples.sort();
        (
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            allocator,
        )
    })
}

/// `environment.verify` of environment-local (a lean plugin).
fn plugin_call(bundle: &Path, state: &Path, n: usize) -> (Duration, Duration, &'static str) {
    measure_calls(bundle, state, "environment-local", n, async |plugin| {
        plugin
            .verify_environment(r#"{"type":"local"}"#, None)
            .await
            .unwrap();
    })
}

/// `info()` of bundled plugin `file` (no arguments, no JSON): builder-noop
/// is the smallest lean plugin, builder-docker a plugin that imports WASI
/// (files for its build context).
fn info_call(bundle: &Path, state: &Path, file: &str, n: usize) -> (Duration, Duration) {
    let (p50, p99, _) = measure_calls(bundle, state, file, n, async |plugin| {
        plugin.describe().await.unwrap();
    });
    (p50, p99)
}

/// Spawns `launch-agent run`, returns the child and the time to its first poll.
fn start_agent(
    state: &Path,
    bundle: &Path,
    config: &Path,
    exit_when_idle: bool,
) -> (std::process::Child, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("LAUNCH_AGENT_STATE_DIR", state)
        .env("LAUNCH_AGENT_PLUGIN_DIR", bundle)
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
    let samples = if full { 20_000 } else { 200 };
    let startups_n = if full { 20 } else { 2 };
    let bundle = target_dir().join("bundle");
    assert!(bundle.is_dir(), "run scripts/build-plugins.sh first");
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let config = scratch.path().join("launch-config.yaml");
    std::fs::write(
        &config,
        "queues: [default]\nenvironment: { type: local }\nbuilder: { type: noop }\n",
    )
    .unwrap();

    let (p50, p99, allocator) = plugin_call(&bundle, &state, samples);

    // Warm the cache, then measure start-up.
    let (mut child, _) = start_agent(&state, &bundle, &config, true);
    child.wait().unwrap();
    let mut startups = Vec::new();
    for _ in 0..startups_n {
        let (mut child, elapsed) = start_agent(&state, &bundle, &config, true);
        child.wait().unwrap();
        startups.push(elapsed);
    }
    startups.sort();

    let (mut child, _) = start_agent(&state, &bundle, &config, false);
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(child.id());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

    if !full {
        println!("(smoke run: use `cargo bench` for the figures)");
    }
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| plugin call: fresh Store + instantiate + `verify` of environment-local (lean; {allocator} allocator) | p50 {:.1} µs, p99 {:.1} µs | p50 ≤ 10 µs |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    for (file, what) in [("builder-noop", "lean"), ("builder-docker", "imports WASI")] {
        let (p50, p99) = info_call(&bundle, &state, file, samples);
        println!(
            "| the same with `info()` of {file} ({what}) | p50 {:.1} µs, p99 {:.1} µs | |",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
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
