//! What a `local-process` run can reach of its agent and of this machine:
//! not the agent's environment or memory, whatever user the agent runs as;
//! and nothing at all when the operator turns `local-process` off for its
//! queue.

mod common;
use common::{Scratch, shell_job};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable a config secret reads, and what every secret value here
/// starts with (what an attacker would search the agent's memory for).
const SECRET_VAR: &str = "SANDBOX_TEST_SECRET";
const SECRET_PREFIX: &str = "sandbox-secret-";

/// A secret value of this test run.
fn secret_value() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{SECRET_PREFIX}{:x}{nanos:x}", std::process::id())
}

/// A config whose secret `token` comes from [`SECRET_VAR`], plus `extra`.
fn config_with_secret(extra: &str) -> String {
    format!("queues: [default]\nsecrets:\n  token: {{ env: {SECRET_VAR} }}\n{extra}")
}

/// Runs the agent until idle with the secret in its environment.
fn run_agent(agent: &Scratch, config: &std::path::Path, secret: &str) -> Output {
    agent
        .cmd()
        .env(SECRET_VAR, secret)
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .output()
        .expect("run launch-agent")
}

fn output_of(agent: &Scratch, id: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("output.log"))
        .unwrap_or_default()
}

/// A real Python (not a shim that needs the caller's home).
fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("these tests need python3 on PATH");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// What a run does to get at its agent's secrets: read the agent's
/// environment block and scan its memory for [`SECRET_PREFIX`], printing
/// every hit; it scans its own memory first, to show the scan works.
const PROBE: &str = r#"
import re, sys
pid, needle = sys.argv[1], sys.argv[2].encode()

def scan(pid):
    hits, regions = [], 0
    maps = open(f"/proc/{pid}/maps").read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            start, end = (int(x, 16) for x in addr.split("-"))
            if perms[0] != "r" or end - start > 1 << 28:
                continue
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            regions += 1
            for m in re.finditer(re.escape(needle), data):
                hits.append(data[m.start():m.start() + 64].split(b"\0")[0].decode(errors="replace"))
    return regions, hits

print("probe: started", flush=True)
regions, hits = scan("self")
print(f"self: {regions} regions, {len(hits)} hits", flush=True)
try:
    env = open(f"/proc/{pid}/environ", "rb").read()
    print(f"environ: read {len(env)} bytes", flush=True)
    for entry in env.split(b"\0"):
        if needle in entry:
            print("environ-hit:", entry.decode(errors="replace"), flush=True)
except OSError as e:
    print("environ: refused:", e.strerror, flush=True)
try:
    regions, hits = scan(pid)
    print(f"mem: read {regions} regions", flush=True)
    for hit in hits:
        print("mem-hit:", hit, flush=True)
except OSError as e:
    print("mem: refused:", e.strerror, flush=True)
for line in open("/proc/self/status"):
    if line.startswith(("CapBnd", "CapEff", "NoNewPrivs", "Uid")):
        print(line.strip(), flush=True)
print("probe: done", flush=True)
"#;

#[test]
fn a_local_process_run_cannot_read_the_agents_environment_or_memory() {
    let agent = Scratch::new();
    let config = agent.write_config(&config_with_secret(""));
    let probe = agent.write("probe.py", PROBE);
    let script = format!(
        "{} {} $PPID {SECRET_PREFIX}",
        python().display(),
        probe.display()
    );
    let id = agent.submit("default", &shell_job(&script));
    let secret = secret_value();

    let out = run_agent(&agent, &config, &secret);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {log}");

    let output = output_of(&agent, &id);
    assert!(
        output.contains("probe: done"),
        "the probe did not finish: {output}"
    );
    let self_hits: usize = output
        .lines()
        .find_map(|l| l.strip_prefix("self: "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|h| h.strip_suffix(" hits"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no self scan: {output}"));
    assert!(
        self_hits > 0,
        "the scan finds nothing even in the probe's own memory: {output}"
    );
    assert!(
        !output.contains(&secret),
        "the run read the agent's secret:\n{output}"
    );
    assert!(
        output.contains("environ: refused") || output.contains("environ: read"),
        "{output}"
    );
    assert!(
        output.contains("mem: refused"),
        "the run could open the agent's memory:\n{output}"
    );
    assert!(!log.contains(&secret), "the agent logged the secret: {log}");
    // The run itself inherits no secret variable either.
    assert_eq!(agent.item(&id)["state"], "finished");
}

#[test]
fn a_run_of_a_root_agent_has_no_capability_that_reads_other_processes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the agent's runs have no capabilities to drop");
        return;
    }
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let id = agent.submit(
        "default",
        &shell_job("grep -E '^Cap(Bnd|Inh|Eff|Amb)' /proc/self/status"),
    );
    agent.run_until_idle(&config);
    let output = output_of(&agent, &id);
    for line in output.lines() {
        let (name, hex) = line.split_once(':').unwrap();
        let caps = u64::from_str_radix(hex.trim(), 16).unwrap();
        for (cap, what) in [
            (19, "SYS_PTRACE"),
            (21, "SYS_ADMIN"),
            (17, "SYS_RAWIO"),
            (16, "SYS_MODULE"),
        ] {
            assert_eq!(
                caps & (1 << cap),
                0,
                "{name} still has CAP_{what}: {output}"
            );
        }
    }
    assert!(output.contains("CapBnd"), "{output}");
}

#[test]
fn the_agents_environment_block_holds_no_secret_once_it_runs() {
    let agent = Scratch::new();
    let config = agent.write_config(&config_with_secret(""));
    let secret = secret_value();
    let id = agent.submit("default", &shell_job("sleep 30"));
    let mut child = agent
        .cmd()
        .env(SECRET_VAR, &secret)
        .env("SANDBOX_TEST_VISIBLE", "visible-value")
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the agent");
    agent.wait_for_item(&id, Duration::from_secs(30), |i| i["state"] == "running");

    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();

    match environ {
        // A reader that may (root: CAP_SYS_PTRACE) sees the block without
        // the secret, the other variables intact.
        Ok(block) => {
            let text = String::from_utf8_lossy(&block);
            assert!(
                text.contains("SANDBOX_TEST_VISIBLE=visible-value"),
                "{text}"
            );
            assert!(!text.contains(&secret), "{text}");
            assert!(!text.contains(SECRET_VAR), "{text}");
        }
        // One that may not is refused: the agent is not dumpable.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
    }
}

#[test]
fn a_secret_from_the_environment_still_works_after_it_left_the_environment() {
    // The run's own environment never had it; the agent still has it for
    // what the config grants it to. Here: a spec asking for the W&B key
    // variable of the agent gets the agent's value (W&B's behaviour).
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let id = agent.submit("default", &shell_job("echo key=$WANDB_API_KEY"));
    let out = agent
        .cmd()
        .env("WANDB_API_KEY", "k-12345")
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output_of(&agent, &id).contains("key=k-12345"));
}

#[test]
fn a_queue_whose_local_process_is_off_fails_its_jobs_before_they_run() {
    let agent = Scratch::new();
    let config = agent.write_config(
        "queues: [default, trusted]\nrunners:\n  local-process: { enabled: false }\n  queues:\n    trusted:\n      local-process: { enabled: true }\n",
    );
    let marker = agent.path().join("ran");
    let script = format!("touch {}", marker.display());
    let refused = agent.submit("default", &shell_job(&script));
    let allowed = agent.submit("trusted", &shell_job("echo trusted ran"));

    let log = agent.run_until_idle(&config);

    let item = agent.item(&refused);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent", "{item:#}");
    let message = item["message"].as_str().unwrap();
    assert!(message.contains("queue `default`"), "{message}");
    assert!(
        message.contains("`runners.local-process.enabled` (every queue) or `runners.queues.default.local-process.enabled`"),
        "{message}"
    );
    assert!(!marker.exists(), "the refused job ran");
    assert_eq!(agent.item(&allowed)["state"], "finished");
    assert!(output_of(&agent, &allowed).contains("trusted ran"));
    // Turned off for every queue but one the operator named: no warning
    // about the rest, a warning only where it is on as root.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(
        log.contains("jobs from queue `trusted`: local-process is on"),
        root,
        "{log}"
    );
    assert!(!log.contains("every queue without its own"), "{log}");
}

#[test]
fn a_config_that_says_nothing_warns_that_it_trusts_the_queue_with_this_machine() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let log = agent.run_until_idle(&config);
    assert!(log.contains("runs any command on this machine"), "{log}");
    assert!(
        log.contains("runners.local-process.enabled: false"),
        "{log}"
    );

    let quiet = Scratch::new();
    let config =
        quiet.write_config("queues: [default]\nrunners:\n  local-process: { enabled: false }\n");
    let log = quiet.run_until_idle(&config);
    assert!(!log.contains("runs any command"), "{log}");
}

#[test]
fn jobs_can_run_as_another_user_who_cannot_read_the_agent() {
    let agent = Scratch::new();
    let config = agent.write_config(&config_with_secret(
        "runners:\n  local-process: { user: \"65534:65534\" }\n",
    ));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let out = run_agent(&agent, &config, "x");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(log.contains("runners.local-process.user"), "{log}");
        assert!(log.contains("needs the agent to run as root"), "{log}");
        return;
    }
    let id = agent.submit(
        "default",
        &shell_job(
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
             grep NoNewPrivs /proc/self/status; \
             cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ=read || echo environ=refused; \
             head -c1 /proc/$PPID/mem >/dev/null 2>&1 && echo mem=read || echo mem=refused",
        ),
    );
    let secret = secret_value();
    let out = run_agent(&agent, &config, &secret);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let output = output_of(&agent, &id);
    assert!(
        output.contains("uid=65534 gid=65534 groups=65534\n"),
        "{output}"
    );
    assert!(output.contains("NoNewPrivs:\t1"), "{output}");
    assert!(output.contains("environ=refused"), "{output}");
    assert!(output.contains("mem=refused"), "{output}");
    assert!(!output.contains(&secret), "{output}");
    assert!(!log.contains("runs any command on this machine"), "{log}");
}
