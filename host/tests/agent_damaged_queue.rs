//! A damaged queue database never makes the agent loop or hides which item
//! is at fault: rows that cannot be read are moved aside, named, and the
//! rest is served; indexes that no longer match their rows are rebuilt.

mod common;
use common::{Scratch, shell_job};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The queue database of `agent`, opened behind the agent's back.
fn raw_db(agent: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(agent.state_dir().join("queue.sqlite3")).unwrap()
}

/// `run --exit-when-idle`, killed (and failed) if it runs over `limit`.
fn run_bounded(agent: &Scratch, limit: Duration) -> (bool, String) {
    let config = agent.write_config("queues: [default]\n");
    let log = agent.path().join("agent.log");
    let mut child = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "the agent was still going after {limit:?}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn rows_that_cannot_be_read_are_moved_aside_named_and_the_rest_is_served() {
    let agent = Scratch::new();
    let before = agent.submit("default", &shell_job("true"));
    let bad_text = agent.submit("default", &shell_job("true"));
    let bad_type = agent.submit("default", &shell_job("true"));
    let bad_flag = agent.submit("default", &shell_job("true"));
    let after = agent.submit("default", &shell_job("true"));
    let db = raw_db(&agent);
    // Text that is not UTF-8, a word where a number belongs, a blob flag.
    db.execute(
        "UPDATE items SET spec = CAST(x'7b22ff22' AS TEXT) WHERE id = ?1",
        [&bad_text],
    )
    .unwrap();
    db.execute(
        "UPDATE items SET attempts = 'several' WHERE id = ?1",
        [&bad_type],
    )
    .unwrap();
    db.execute(
        "UPDATE items SET stop_requested = x'00' WHERE id = ?1",
        [&bad_flag],
    )
    .unwrap();
    drop(db);

    let (ok, log) = run_bounded(&agent, Duration::from_secs(30));
    assert!(ok, "{log}");
    for (id, column) in [
        (&bad_text, "spec"),
        (&bad_type, "attempts"),
        (&bad_flag, "stop_requested"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("the log does not name {id}: {log}"));
        assert!(
            line.contains(column) && line.contains("moved it aside"),
            "{line}"
        );
    }
    assert_eq!(agent.item(&before)["state"], "finished");
    assert_eq!(agent.item(&after)["state"], "finished");
    let listed: Vec<String> = agent
        .items()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [before, after], "the damaged rows are set aside");
    let kept: i64 = raw_db(&agent)
        .query_row("SELECT COUNT(*) FROM quarantined_items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 3, "kept as they were, not deleted");
}

#[test]
fn queue_list_names_a_damaged_row_and_lists_the_others() {
    let agent = Scratch::new();
    let good = agent.submit("default", &shell_job("true"));
    let bad = agent.submit("default", &shell_job("true"));
    raw_db(&agent)
        .execute(
            "UPDATE items SET queue = CAST(x'64656661756c74ff' AS TEXT), exit_code = 'none' WHERE id = ?1",
            [&bad],
        )
        .unwrap();
    let out = agent.run(&["queue", "list"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&good) && !stdout.contains(&bad), "{stdout}");
    assert!(
        stderr.contains(&bad) && stderr.contains("queue") && stderr.contains("quarantined_items"),
        "{stderr}"
    );
}

#[test]
fn an_index_that_no_longer_matches_its_rows_is_rebuilt_and_nothing_is_skipped() {
    let agent = Scratch::new();
    let first = agent.submit("default", &shell_job("true"));
    let second = agent.submit("other", &shell_job("true"));
    let db = raw_db(&agent);
    // The index's definition changes while its entries stay as they were:
    // SQLite then skips rows silently and refuses writes to them.
    db.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = 'CREATE INDEX items_by_queue_state ON items (state, queue, seq)'
             WHERE name = 'items_by_queue_state';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(db);
    let config = agent.write_config("queues: [default, other]\n");
    let log = agent.run_until_idle(&config);
    assert!(log.contains("rebuilt them"), "{log}");
    assert_eq!(agent.item(&first)["state"], "finished", "{log}");
    assert_eq!(agent.item(&second)["state"], "finished", "{log}");
    let check: String = raw_db(&agent)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_database_damaged_beyond_its_indexes_stops_the_agent_saying_what_to_do() {
    let agent = Scratch::new();
    agent.submit("default", &shell_job("true"));
    // The table loses its unique constraint while its index stays: SQLite
    // finds the schema malformed.
    raw_db(&agent)
        .execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = replace(sql, 'NOT NULL UNIQUE', 'NOT NULL')
                 WHERE name = 'items';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    let (ok, log) = run_bounded(&agent, Duration::from_secs(30));
    assert!(!ok, "{log}");
    assert!(log.contains("damaged") && log.contains(".recover"), "{log}");
    let out = agent.run(&["queue", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("damaged") && stderr.contains(".recover"),
        "{stderr}"
    );
}
