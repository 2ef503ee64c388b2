//! `launch-agent config check`: W&B configs are accepted; mistakes are
//! reported with the key, the line and the column.

mod common;
use common::Scratch;

fn check(yaml: &str) -> (bool, String, String) {
    let scratch = Scratch::new();
    let path = scratch.write_config(yaml);
    let out = scratch.run(&["config", "check", path.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_wandb_config_is_accepted_unchanged() {
    let (ok, stdout, stderr) = check(
        "queues:\n  - gpu-queue\nentity: my-team\nmax_jobs: -1\nmax_schedulers: 1\nsecure_mode: false\nverbosity: 1\n\
         environment:\n  type: aws\n  region: us-east-1\n\
         registry:\n  type: ecr\n  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/launch\n\
         builder:\n  type: kaniko\n  build-context-store: s3://my-bucket/build-contexts/\n  build-job-name: wandb-image-build\n  secret-name: aws-secret\n  secret-key: credentials\n  kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - args: [\"--cache=false\"]\n",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn an_unknown_key_names_key_line_and_column() {
    let (ok, _, stderr) = check(
        "queues: [default]\nmax_jobs: 2\nbuilder:\n  type: docker\n  buidl-context-store: s3://x\n",
    );
    assert!(!ok);
    assert!(stderr.contains("buidl-context-store"), "{stderr}");
    assert!(stderr.contains("launch-config.yaml:5:3"), "{stderr}");
}

#[test]
fn an_unknown_top_level_key_is_refused_as_wandb_does() {
    let (ok, _, stderr) = check("queues: [default]\nmax_job: 2\n");
    assert!(!ok);
    assert!(stderr.contains("max_job"), "{stderr}");
    assert!(stderr.contains(":2:1"), "{stderr}");
}

#[test]
fn a_wrong_type_names_key_line_and_column() {
    let (ok, _, stderr) = check("queues: [default]\nmax_jobs: lots\n");
    assert!(!ok);
    assert!(stderr.contains(":2:11"), "{stderr}");
    assert!(
        stderr.contains("lots") || stderr.contains("integer") || stderr.contains("i64"),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_names_key_line_and_column() {
    let (ok, _, stderr) = check("queues: [default]\nmax_jobs: 0\n");
    assert!(!ok);
    assert!(
        stderr.contains("max_jobs") && stderr.contains(":2:11"),
        "{stderr}"
    );
}

#[test]
fn plugin_grants_are_checked() {
    let (ok, _, stderr) =
        check("plugins:\n  mine:\n    path: x.wasm\n    grants:\n      hosts: [\"example.com\"]\n");
    assert!(!ok);
    assert!(
        stderr.contains("plugins.mine.grants.hosts") && stderr.contains("scheme://"),
        "{stderr}"
    );
    let (ok, _, stderr) =
        check("plugins:\n  mine:\n    path: x.wasm\n    grants:\n      secrets: [nope]\n");
    assert!(!ok);
    assert!(
        stderr.contains("nope") && stderr.contains("secrets:"),
        "{stderr}"
    );
    let (ok, _, stderr) = check("plugins:\n  mine:\n    path: x.wasm\n    sha256: abc\n");
    assert!(!ok);
    assert!(
        stderr.contains("plugins.mine.sha256") && stderr.contains(":4:13"),
        "{stderr}"
    );
}

#[test]
fn plugin_limits_of_zero_are_refused_by_name() {
    for key in ["deadline_ms", "timeout_ms"] {
        let (ok, _, stderr) = check(&format!(
            "plugins:\n  mine:\n    path: x.wasm\n    limits: {{ {key}: 0 }}\n"
        ));
        assert!(!ok);
        assert!(
            stderr.contains(&format!("plugins.mine.limits.{key}")) && stderr.contains("above 0"),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let scratch = Scratch::new();
    let out = scratch.run(&["config", "check", "/no/such/launch-config.yaml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/launch-config.yaml"), "{stderr}");
}

#[test]
fn the_agent_refuses_to_start_with_an_unknown_environment_type() {
    let scratch = Scratch::new();
    let path = scratch.write_config("environment:\n  type: mars\n");
    let out = scratch.run(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--exit-when-idle",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("environment.type `mars`"), "{stderr}");
}
