//! An idle agent costs nothing: the clock behind plugin deadlines stands
//! still while no plugin call is in flight, and runs while one is.

mod common;

use launch_agent::plugins::PluginHost;
use launch_agent::plugins::epoch::LINGER;
use std::time::{Duration, Instant};

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_clock_ticks_only_while_a_plugin_call_is_in_flight() {
    let state = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&state.path().join("cache"), 128).unwrap();
    let hostile = common::test_plugin("hostile");
    let mut entry = launch_agent::config::PluginEntry::default();
    entry.limits.deadline_ms = 400;
    let plugin = host
        .load("hostile", &hostile, &entry, &Default::default())
        .await
        .unwrap();
    let clock = host.epoch_clock().clone();

    // Loading called the plugin (`info`); once that lingered out, the clock
    // parks and its tick counter stands still.
    assert!(
        eventually(LINGER * 5, || clock.is_parked()),
        "the clock did not park while idle"
    );
    let idle_from = clock.ticks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(clock.ticks(), idle_from, "the clock ticked while idle");

    // A call that spins until its deadline: the clock runs (else the
    // deadline could never fire) and the call is stopped.
    let settings = serde_json::json!({"mode": "spin"}).to_string();
    let error = plugin
        .verify_environment(&settings, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("400 ms deadline"), "{error}");
    assert!(
        clock.ticks() > idle_from + 10,
        "{} ticks during a 400 ms call",
        clock.ticks() - idle_from
    );

    // And it parks again after the call.
    assert!(
        eventually(LINGER * 5, || clock.is_parked()),
        "the clock did not park after the call"
    );
    let parked_at = clock.ticks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(clock.ticks(), parked_at);
}
