//! A crash storm: two agents serving one queue of 120 jobs, SIGKILLed at
//! random points and restarted. Afterwards every item is terminal, none is
//! lost or duplicated, no item ever ran twice at once, and a job ran to its
//! end more than once only when its agent died before recording that (the
//! README's at-least-once rule).
//!
//! Bounded in time: the storm lasts a few seconds; the seed is printed so a
//! failure can be replayed (`CRASH_STORM_SEED`).

mod common;
use common::{Scratch, shell_job};
use launch_agent::queue::embedded::EmbeddedQueue;
use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 120;
const STORM: Duration = Duration::from_secs(8);

/// A small xorshift generator: enough randomness for kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn spawn(agent: &Scratch, config: &std::path::Path, extra: &[&str]) -> Child {
    agent
        .cmd()
        .args(["run", "--config", config.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start an agent")
}

#[test]
fn agents_killed_at_random_lose_no_job_and_rerun_only_what_they_could_not_record() {
    let seed = std::env::var("CRASH_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash storm seed: {seed} (CRASH_STORM_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let agent = Scratch::new();
    let config = agent.write_config(
        "queues: [default]\nmax_jobs: 4\nmax_attempts: 1000\nshutdown_grace_seconds: 1\n",
    );
    let trace = agent.path().join("trace");
    let ids: Vec<String> = {
        let queue = EmbeddedQueue::open(&agent.state_dir()).unwrap();
        (0..JOBS)
            .map(|n| {
                let script = format!(
                    "echo \"start $WANDB_LAUNCH_TRACE_ID $PPID\" >> {t}; sleep 0.{d}; echo \"end $WANDB_LAUNCH_TRACE_ID $PPID\" >> {t}",
                    t = trace.display(),
                    d = n % 4
                );
                queue.submit("default", shell_job(&script)).unwrap()
            })
            .collect()
    };

    let mut agents = [spawn(&agent, &config, &[]), spawn(&agent, &config, &[])];
    let start = Instant::now();
    let mut killed = std::collections::HashSet::new();
    while start.elapsed() < STORM {
        std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
        let victim = rng.below(2) as usize;
        killed.insert(agents[victim].id().to_string());
        agents[victim].kill().unwrap(); // SIGKILL
        agents[victim].wait().unwrap();
        agents[victim] = spawn(&agent, &config, &[]);
    }
    for child in &mut agents {
        killed.insert(child.id().to_string());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let kills = killed.len();
    // Two agents clean up after the storm and finish the rest.
    let mut finishers = [
        spawn(&agent, &config, &["--exit-when-idle"]),
        spawn(&agent, &config, &["--exit-when-idle"]),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    for child in &mut finishers {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a finishing agent failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the queue was not drained in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // An agent that went idle while the other still held work: one more pass.
    agent.run_until_idle(&config);

    let items = agent.items();
    assert_eq!(items.len(), JOBS, "nothing lost, nothing added");
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    // Per item: what happened (start or end) and under which agent (pid).
    let mut lines: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [what, id, agent_pid] = fields[..] else {
            panic!("bad trace line {line:?}");
        };
        lines.entry(id).or_default().push((what, agent_pid));
    }
    let mut reruns = 0;
    for id in &ids {
        let item = items
            .iter()
            .find(|i| i["id"] == id.as_str())
            .unwrap_or_else(|| panic!("item {id} lost"));
        assert_eq!(item["state"], "finished", "every item ends: {item:#}");
        let trace = lines.get(id.as_str()).cloned().unwrap_or_default();
        // start (end)? repeated: never two runs of one item at once.
        let mut open = false;
        for (what, _) in &trace {
            match *what {
                "start" => open = true,
                "end" => {
                    assert!(open, "{id} ended a run it had not started: {trace:?}");
                    open = false;
                }
                other => panic!("bad trace line {other}"),
            }
        }
        let starts = trace.iter().filter(|(w, _)| *w == "start").count() as u64;
        let ends: Vec<&str> = trace
            .iter()
            .filter(|(w, _)| *w == "end")
            .map(|(_, agent_pid)| *agent_pid)
            .collect();
        let attempts = item["attempts"].as_u64().unwrap();
        assert!(
            !ends.is_empty(),
            "{id} finished without running to its end: {trace:?}"
        );
        assert!(
            starts <= attempts,
            "{id}: each run is an attempt ({attempts}): {trace:?}"
        );
        // A second completion only where an agent died after the run ended
        // and before it recorded so: every completion but the recorded
        // (last) one ran under an agent that was killed.
        assert!(
            ends.len() as u64 <= attempts,
            "{id} completed {} times in {attempts} attempts: {trace:?}",
            ends.len()
        );
        for agent_pid in &ends[..ends.len() - 1] {
            assert!(
                killed.contains(*agent_pid),
                "{id} ran to its end under agent {agent_pid}, which was never killed, and ran again: {trace:?}"
            );
        }
        if ends.len() > 1 {
            reruns += 1;
        }
    }
    eprintln!(
        "{kills} kills; {reruns} jobs completed more than once (their agent died before recording)"
    );
    assert!(kills >= 5, "the storm killed agents");
}
