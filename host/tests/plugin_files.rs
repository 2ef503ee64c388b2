//! A plugin `path` that is not a plugin file — a device that never ends, a
//! FIFO with no writer, a directory — is refused at once, naming what it is,
//! by `plugins list` and by `run`; it never hangs or floods the agent.

mod common;

use common::Scratch;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, killing it (and failing) if it takes longer than `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent hung on a plugin path that is not a file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_plugin_path_that_is_not_a_regular_file_is_refused_at_once() {
    let agent = Scratch::new();
    let fifo = agent.path().join("plugin.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = agent.path().join("a-dir.wasm");
    std::fs::create_dir(&dir).unwrap();
    let cases = [
        ("/dev/zero".to_string(), "a character device"),
        ("/dev/urandom".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
        (dir.display().to_string(), "a directory"),
    ];
    for (path, kind) in cases {
        let config = agent.write_config(&format!(
            "queues: [default]\nbuilder:\n  type: mine\nplugins:\n  mine:\n    path: {path}\n"
        ));
        for args in [
            vec!["plugins", "list", "--config", config.to_str().unwrap()],
            vec![
                "run",
                "--config",
                config.to_str().unwrap(),
                "--exit-when-idle",
            ],
        ] {
            let mut cmd = agent.cmd();
            cmd.args(&args);
            let out = run_bounded(cmd, Duration::from_secs(20));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} {path}: {stderr}");
            assert!(
                stderr.contains("not a regular file") && stderr.contains(kind),
                "{args:?} {path}: {stderr}"
            );
            assert!(stderr.contains(&path), "names the path: {stderr}");
            assert!(stderr.len() < 4096, "{} bytes of error", stderr.len());
        }
    }
}
