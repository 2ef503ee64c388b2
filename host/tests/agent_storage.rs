//! The agent's own storage failing: a full disk, a damaged or read-only
//! state dir, an emptied queue database. Nothing is lost or silently
//! replaced, the agent says what happened, and a full disk only pauses it.
//!
//! The tests that mount a small tmpfs need root; they skip (saying so)
//! otherwise.

mod common;
use common::{Scratch, shell_job};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `dir`; `None` (with a
    /// message) when that is not possible here.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, options: &str) {
        common::assert_success(
            &Command::new("mount")
                .args(["-o", &format!("remount,{options}")])
                .arg(&self.0)
                .output()
                .unwrap(),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Starts `run --config CONFIG --exit-when-idle`, its log going to `log`.
fn spawn_logged(agent: &Scratch, config: &Path, log: &Path) -> Child {
    agent
        .run_cmd(config)
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_log(log: &Path, text: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let now = std::fs::read_to_string(log).unwrap_or_default();
        if now.contains(text) {
            return now;
        }
        assert!(
            start.elapsed() < limit,
            "the log never said {text:?}: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a file in `dir` until the file system is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    let small = vec![7u8; 4096];
    while file.write_all(&small).is_ok() {}
    let byte = [7u8];
    while file.write_all(&byte).is_ok() {}
    path
}

#[test]
fn a_full_disk_pauses_the_agent_and_loses_no_outcome() {
    let agent = Scratch::new();
    let Some(_tmpfs) = Tmpfs::mount(&agent.state_dir(), "16m") else {
        return;
    };
    let config = agent.write_config("queues: [default]\nmax_jobs: 1\n");
    let (go, marks) = (agent.path().join("go"), agent.path().join("marks"));
    let (go, marks) = (go.display(), marks.display());
    let first = agent.submit(
        "default",
        &shell_job(&format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; echo first >> {marks}"
        )),
    );
    let second = agent.submit("default", &shell_job(&format!("echo second >> {marks}")));
    let third = agent.submit("default", &shell_job("exit 4"));
    let log = agent.path().join("agent.log");
    let mut child = spawn_logged(&agent, &config, &log);
    agent.wait_for_item(&first, Duration::from_secs(20), |i| i["state"] == "running");

    let filler = fill(&agent.state_dir());
    std::fs::write(agent.path().join("go"), "").unwrap();
    wait_for_log(&log, "is full", Duration::from_secs(15));
    // Full: the first job's outcome waits, nothing new is claimed.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.item(&second)["state"], "queued");
    assert_eq!(agent.item(&third)["state"], "queued");
    assert!(child.try_wait().unwrap().is_none(), "the agent kept going");

    std::fs::remove_file(filler).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("takes writes again"), "{text}");
    assert!(
        (1..=2).contains(&text.matches("the disk of the state dir is").count()),
        "said once, then at a slow interval: {text}"
    );
    let item = agent.item(&first);
    assert_eq!(item["state"], "finished", "{item:#}\n{text}");
    assert_eq!(item["attempts"], 1, "{item:#}");
    assert_eq!(agent.item(&second)["state"], "finished");
    let failed = agent.item(&third);
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["exit_code"], 4);
    let marks = std::fs::read_to_string(agent.path().join("marks")).unwrap();
    assert_eq!(marks, "first\nsecond\n", "each job ran once");
}

#[test]
fn an_agent_asked_to_stop_while_the_disk_is_full_exits_non_zero_naming_the_outcome() {
    let agent = Scratch::new();
    let Some(_tmpfs) = Tmpfs::mount(&agent.state_dir(), "16m") else {
        return;
    };
    let config = agent.write_config("queues: [default]\n");
    let go = agent.path().join("go");
    let id = agent.submit(
        "default",
        &shell_job(&format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            go.display()
        )),
    );
    let log = agent.path().join("agent.log");
    let mut child = agent
        .cmd()
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "running");
    let filler = fill(&agent.state_dir());
    std::fs::write(&go, "").unwrap();
    wait_for_log(&log, "is full", Duration::from_secs(15));
    // Two signals: the second cuts the retries short.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "never exit 0 with an unrecorded outcome: {text}"
    );
    assert!(
        text.contains(&id) && text.contains("could not record the outcomes"),
        "{text}"
    );
    std::fs::remove_file(filler).unwrap();
    // The next agent takes the job back and runs it again (at least once).
    agent.run_until_idle(&config);
    assert_eq!(agent.item(&id)["state"], "finished");
}

#[test]
fn a_state_dir_whose_runs_dir_is_a_file_stops_the_agent_instead_of_failing_jobs() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let runs = agent.state_dir().join("runs");
    // The first job breaks the agent's storage; the second must not pay for it.
    let breaker = agent.submit(
        "default",
        &shell_job(&format!("rm -rf {0}; echo not a dir > {0}", runs.display())),
    );
    let victim = agent.submit("default", &shell_job("true"));
    let log = agent.run_refused(&config);
    assert!(
        log.contains(&runs.display().to_string()) && log.contains("not a directory"),
        "{log}"
    );
    assert_eq!(agent.item(&breaker)["state"], "finished");
    let item = agent.item(&victim);
    assert_eq!(item["state"], "queued", "{item:#}");
    assert_eq!(item["attempts"], 0, "{item:#}");

    // Damaged before the agent starts: it stops at once, failing nothing.
    agent.run_refused(&config);
    assert_eq!(agent.item(&victim)["state"], "queued");

    std::fs::remove_file(&runs).unwrap();
    agent.run_until_idle(&config);
    assert_eq!(agent.item(&victim)["state"], "finished");
}

#[test]
fn an_empty_queue_database_is_refused_not_taken_for_a_new_queue() {
    let agent = Scratch::new();
    let id = agent.submit("default", &shell_job("true"));
    assert_eq!(agent.items().len(), 1);
    let db = agent.state_dir().join("queue.sqlite3");
    std::fs::write(&db, "").unwrap();
    let spec = agent.write("spec.json", &shell_job("true").to_string());
    for args in [
        &["queue", "list"][..],
        &["submit", "--queue", "default", spec.to_str().unwrap()][..],
    ] {
        let stderr = common::refused(
            &agent
                .cmd()
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        );
        assert!(
            stderr.contains("0 bytes") && stderr.contains("queue.sqlite3"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
    let config = agent.write_config("queues: [default]\n");
    assert!(agent.run_refused(&config).contains("0 bytes"));

    // Moved aside, a new queue starts.
    std::fs::rename(&db, agent.path().join("old.sqlite3")).unwrap();
    assert!(agent.items().is_empty(), "{id} is gone with the old file");
}

#[test]
fn a_read_only_state_dir_can_still_be_listed_and_says_why_it_cannot_be_written() {
    let agent = Scratch::new();
    let Some(tmpfs) = Tmpfs::mount(&agent.state_dir(), "16m") else {
        return;
    };
    let config = agent.write_config("queues: [default]\n");
    let done = agent.submit("default", &shell_job("true"));
    agent.run_until_idle(&config);
    let waiting = agent.submit("default", &shell_job("true"));
    tmpfs.remount("ro");

    let out = agent.run(&["queue", "list", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["state"].clone())
    };
    assert_eq!(state(&done), Some("finished".into()));
    assert_eq!(state(&waiting), Some("queued".into()));
    assert!(stderr.contains("cannot be written"), "{stderr}");

    let spec = agent.write("spec.json", &shell_job("true").to_string());
    let stderr =
        common::refused(&agent.run(&["submit", "--queue", "default", spec.to_str().unwrap()]));
    assert!(stderr.contains("Read-only"), "{stderr}");
    let stderr = agent.run_refused(&config);
    assert!(stderr.contains("Read-only"), "{stderr}");
    tmpfs.remount("rw");
}
