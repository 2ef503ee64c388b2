//! An agent whose address space is too small for a plugin instance says so
//! (issue 11, class 7), instead of reporting that the plugin crashed.

mod common;
use common::Scratch;

/// Runs `launch-agent ARGS` under `ulimit -v KIB`; returns (success, stderr).
fn under_address_limit(agent: &Scratch, kib: u64, args: &str) -> (bool, String) {
    let script = format!(
        "ulimit -v {kib} && exec {} {args}",
        common::agent_bin().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("LAUNCH_AGENT_STATE_DIR", agent.state_dir())
        .env("LAUNCH_AGENT_PLUGIN_DIR", common::bundle_dir())
        .env_remove("LAUNCH_AGENT_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_failed_address_space_reservation_is_named_not_a_crash() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    // 2 GiB: room for the agent, not for a plugin instance's 4 GiB
    // reservation.
    for args in [
        format!("run --config {} --exit-when-idle", config.display()),
        format!("plugins list --config {}", config.display()),
    ] {
        let (ok, stderr) = under_address_limit(&agent, 2 << 20, &args);
        assert!(!ok, "{args}: {stderr}");
        assert!(
            stderr.contains("MiB of address space for plugin local")
                && stderr.contains("the agent's address-space limit (`ulimit -v`) is 2048 MiB")
                && stderr.contains("did not run"),
            "{args}: {stderr}"
        );
        assert!(!stderr.contains("crashed"), "{args}: {stderr}");
    }
}
