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

/// W&B's config for AWS: environment `aws`, registry `ecr`, builder
/// `kaniko` with its keys.
const WANDB_AWS_CONFIG: &str = "queues:\n  - gpu-queue\nentity: my-team\nmax_jobs: -1\nmax_schedulers: 1\nsecure_mode: false\nverbosity: 1\n\
     environment:\n  type: aws\n  region: us-east-1\n\
     registry:\n  type: ecr\n  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/launch\n\
     builder:\n  type: kaniko\n  build-context-store: s3://my-bucket/build-contexts/\n  build-job-name: wandb-image-build\n  secret-name: aws-secret\n  secret-key: credentials\n  kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - args: [\"--cache=false\"]\n";

/// The `error:` lines of a check's stderr (warnings left out).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect()
}

#[test]
fn every_key_of_a_wandb_config_is_understood() {
    // Every block names a bundled plugin (builder-kaniko since it joined
    // the bundle), and every key is understood.
    let (ok, _, stderr) = check(WANDB_AWS_CONFIG);
    assert!(ok, "{stderr}");
    assert!(error_lines(&stderr).is_empty(), "{stderr}");
    assert!(!stderr.contains("unknown key"), "{stderr}");
}

#[test]
fn a_wandb_config_with_the_plugins_this_agent_has_passes() {
    let (ok, stdout, stderr) = check(
        "queues:\n  - gpu-queue\nentity: my-team\nmax_jobs: -1\nmax_schedulers: 1\nsecure_mode: false\nverbosity: 1\nstopped_run_timeout: 30\n\
         environment:\n  type: local\n\
         registry:\n  type: oci\n  uri: 127.0.0.1:5000/launch\n\
         builder:\n  type: docker\n  platform: linux/amd64\n  destination: 127.0.0.1:5000/launch\n",
    );
    assert!(ok, "{stderr}");
    assert!(error_lines(&stderr).is_empty(), "{stderr}");
    assert!(
        stdout.contains("ok") && stdout.contains("builder: docker"),
        "{stdout}"
    );
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

// Issue 11, class 6: what a config says cannot forge log lines or flood the
// terminal, and big configs are checked in linear time.

/// The error line of a failed `config check`, asserting there is one line.
fn one_error_line(stderr: &str) -> &str {
    let line = stderr.trim_end_matches('\n');
    assert!(!line.contains('\n'), "more than one line: {stderr}");
    assert!(
        !line.contains('\r') && !line.contains('\u{1b}'),
        "{stderr:?}"
    );
    line
}

#[test]
fn control_characters_in_a_config_cannot_forge_lines() {
    // An unknown key holding a newline, as a double-quoted YAML escape.
    let (ok, _, stderr) = check("queues: [a]\n\"max_jobs\\nERROR forged line\": 1\n");
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(line.contains("max_jobs\\nERROR forged line"), "{line}");
    // A plugin name with a terminal escape, echoed as part of a key path.
    let (ok, _, stderr) =
        check("plugins:\n  \"ev\\e[31mil\\u2028x\":\n    path: x.wasm\n    sha256: abc\n");
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(line.contains("ev\\u{1b}[31mil\\u{2028}x"), "{line}");
    // A wrong value with a carriage return and a bidi override.
    let (ok, _, stderr) = check("max_jobs: \"1\\r\\u202eERROR\"\n");
    assert!(!ok);
    one_error_line(&stderr);
}

#[test]
fn a_file_name_with_control_characters_is_escaped() {
    let scratch = Scratch::new();
    let path = scratch.path().join("evil\nERROR forged.yaml");
    std::fs::write(&path, "max_jobs: 0\n").unwrap();
    let out = scratch.run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = one_error_line(&stderr);
    assert!(line.contains("evil\\nERROR forged.yaml:1:11"), "{line}");
    let missing = scratch.path().join("gone\u{1b}[2J.yaml");
    let out = scratch.run(&["config", "check", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        one_error_line(&stderr).contains("gone\\u{1b}[2J.yaml"),
        "{stderr}"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let huge = "x".repeat(1_000_000);
    for yaml in [
        format!("max_jobs: {huge}\n"),
        format!("queue_backend: {huge}\n"),
        format!("plugins:\n  mine:\n    path: /x.wasm\n    sha256: {huge}\n"),
        format!("environment:\n  type: local\n  \"{huge}\": 1\n"),
    ] {
        let (ok, _, stderr) = check(&yaml);
        assert!(!ok);
        assert!(
            stderr.len() < 2000,
            "{} bytes: {}",
            stderr.len(),
            &stderr[..300]
        );
        assert!(stderr.contains("launch-config.yaml:"), "{stderr}");
    }
}

#[test]
fn a_config_check_summary_stays_one_short_line() {
    let names: Vec<String> = (0..5000).map(|i| format!("q{i}")).collect();
    // A long environment type: a plugin of the config's own, by path (YAML
    // keys are at most 1024 characters).
    let long = "e".repeat(1000);
    let (ok, stdout, stderr) = check(&format!(
        "queues: [{}, \"new\\nline\"]\nenvironment:\n  type: \"{long}\"\nplugins:\n  \"{long}\":\n    path: {}\n",
        names.join(", "),
        common::bundle_dir()
            .join("environment-local.wasm")
            .display()
    ));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.len() < 2000, "{} bytes", stdout.len());
    assert!(
        stdout.contains("q0, q1") && stdout.contains("and 4981 more"),
        "{stdout}"
    );
}

#[test]
fn a_hundred_thousand_queue_names_are_checked() {
    let names: Vec<String> = (0..100_000).map(|i| format!("q{i}")).collect();
    let yaml = format!("queues: [{}]\nqueue: q5\n", names.join(", "));
    // No clock here: tests assert behaviour, and how fast this is belongs
    // in a benchmark (quadratic de-duplication once took 22 s for it).
    let (ok, stdout, stderr) = check(&yaml);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("and 99980 more"), "{stdout}");
}

// Issue 11, class 7: each class of parser error in our words, naming the
// file, the line and the column.

/// Asserts `config check` refuses `yaml` with an error at `place`
/// (`:line:column:`, or its start) that contains every one of `words`.
fn refused(yaml: &str, place: &str, words: &[&str]) {
    let (ok, _, stderr) = check(yaml);
    assert!(!ok, "accepted: {yaml}");
    let line = one_error_line(&stderr);
    assert!(
        line.contains(&format!("launch-config.yaml{place}")),
        "not at {place}: {line}"
    );
    for word in words {
        assert!(line.contains(word), "{word:?} missing from: {line}");
    }
    for leak in [
        "DuplicateKeyPolicy",
        "Options",
        "from_str",
        "budget breached",
        "{ ",
        "i64",
        "u64",
        "u32",
        "invalid type",
        "while parsing",
        "untagged enum",
        "struct ",
    ] {
        assert!(!line.contains(leak), "library wording {leak:?} in: {line}");
    }
}

#[test]
fn duplicate_keys_are_named_where_they_repeat() {
    refused(
        "queues: [a]\nmax_jobs: 2\nmax_jobs: 3\n",
        ":3:1:",
        &["`max_jobs` appears twice"],
    );
    refused(
        "builder:\n  type: docker\n  platform: a\n  platform: b\n",
        ":4:3:",
        &["`platform` appears twice"],
    );
    refused(
        "secrets: { a: { env: X }, a: { env: Y } }\n",
        ":1:",
        &["`a` appears twice"],
    );
}

#[test]
fn several_documents_are_refused_in_our_words() {
    refused(
        "queues: [a]\n---\nqueues: [b]\n",
        ":3:1:",
        &["more than one YAML document", "---"],
    );
}

#[test]
fn too_many_values_are_refused_by_the_limit() {
    let items = "q,".repeat(260_000);
    refused(
        &format!("queues: [{items}]\n"),
        ":1:",
        &["too large", "250000 values"],
    );
}

#[test]
fn too_deep_nesting_is_refused_by_the_limit() {
    let deep = format!("{}1{}", "[".repeat(80), "]".repeat(80));
    refused(
        &format!("builder:\n  kaniko-config: {deep}\n"),
        ":2:",
        &["nested too deeply", "64 levels"],
    );
    let block: String = (0..70)
        .map(|i| format!("{}k{i}:\n", " ".repeat(6 + 2 * i)))
        .collect();
    refused(
        &format!("plugins:\n  p:\n    config:\n{block}"),
        ":",
        &["nested too deeply"],
    );
}

#[test]
fn wrong_types_name_the_key_and_what_it_must_be() {
    refused(
        "max_jobs: lots\n",
        ":1:11:",
        &["`max_jobs` must be a whole number", "`lots`"],
    );
    refused(
        "lease_seconds: -5\n",
        ":1:16:",
        &["`lease_seconds` must be a whole number, 0 or more", "`-5`"],
    );
    refused(
        "secure_mode: maybe\n",
        ":1:14:",
        &["`secure_mode` must be true or false"],
    );
    refused("builder: [docker]\n", ":1:", &["`builder` must be a map"]);
    refused(
        "plugins:\n  p:\n    grants:\n      hosts: https://x\n",
        ":4:",
        &["`plugins.p.grants.hosts` must be a list"],
    );
    refused("queues: [a, ~]\n", ":1:", &["`queues`", "null"]);
    refused(
        "plugins:\n  p:\n    limits:\n      memory_mb: 1.5\n",
        ":4:",
        &["`plugins.p.limits.memory_mb` must be a whole number"],
    );
}

#[test]
fn unknown_keys_list_the_keys_accepted_there() {
    refused(
        "builder:\n  type: docker\n  buidl-context-store: s3://x\n",
        ":3:3:",
        &[
            "unknown key `builder.buidl-context-store`",
            "`build-context-store`",
        ],
    );
    refused(
        "plugins:\n  p:\n    grants:\n      network: true\n",
        ":4:7:",
        &["unknown key `plugins.p.grants.network`", "`hosts`"],
    );
}

#[test]
fn choices_and_required_keys_are_named() {
    refused(
        "queue_backend: kafka\n",
        ":1:16:",
        &[
            "`queue_backend` must be one of `embedded`, `wandb`",
            "`kafka`",
        ],
    );
    refused(
        "environment:\n  region: us-east-1\n",
        ":2:",
        &["`environment` needs the key `type`"],
    );
    refused("secrets:\n  s: { vault: x }\n", ":2:", &["`env`", "`file`"]);
    refused(
        "secrets:\n  s: { env: X, file: /y }\n",
        ":2:",
        &["exactly one"],
    );
    refused(
        "plugins:\n  p:\n    grants:\n      dirs: [{ where: /x }]\n",
        ":4:",
        &["`plugins.p.grants.dirs`", "a path, or a map with `path`"],
    );
}

#[test]
fn bytes_that_are_not_utf8_are_placed() {
    let scratch = Scratch::new();
    let path = scratch.config_path();
    std::fs::write(&path, b"queues: [a]\nentity: caf\xe9\n").unwrap();
    let out = scratch.run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = one_error_line(&stderr);
    assert!(
        line.contains("launch-config.yaml:2:12: is not UTF-8"),
        "{line}"
    );
}

#[test]
fn an_empty_or_comment_only_config_is_the_default_config() {
    for yaml in ["", "\n\n", "# nothing yet\n", "\u{feff}# nothing\n   \n"] {
        let (ok, stdout, stderr) = check(yaml);
        assert!(ok, "{yaml:?}: {stderr}");
        assert!(stdout.contains("queues: default"), "{stdout}");
    }
}

#[test]
fn syntax_errors_say_what_to_fix_and_where() {
    refused("queues:\n\t- a\n", ":2:2:", &["invalid YAML", "tab"]);
    refused("entity: \"team\n", ":", &["invalid YAML", "never closed"]);
    refused(
        "queues: [a, b\n",
        ":1:9:",
        &["invalid YAML", "`[` is never closed"],
    );
    refused(
        "builder:\n  type: docker\n platform: x\n",
        ":3:",
        &["invalid YAML"],
    );
    refused("queues: *nowhere\n", ":1:", &["anchor"]);
}

// Issue 11, class 7: `config check` checks what `run` checks, loading (not
// running) every plugin the config names, and lists every problem at once.

/// The one `error:` line of a failed check's `out`, asserting there is one.
fn one_problem_in(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

/// The one problem `config check` finds in `yaml`.
fn the_one_problem(yaml: &str) -> String {
    let scratch = Scratch::new();
    let path = scratch.write_config(yaml);
    one_problem_in(&scratch.run(&["config", "check", path.to_str().unwrap()]))
}

/// Asserts exactly one of `errors` contains every one of `words`.
fn one_error_with(errors: &[&str], words: &[&str]) {
    let matching: Vec<&&str> = errors
        .iter()
        .filter(|line| words.iter().all(|word| line.contains(word)))
        .collect();
    assert_eq!(matching.len(), 1, "{words:?} in: {errors:#?}");
}

#[test]
fn every_problem_is_listed_at_once_with_its_key() {
    let scratch = Scratch::new();
    scratch.write("notes.wasm", "hello, not a plugin");
    // The smallest core module: the magic bytes and version 1.
    std::fs::write(scratch.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let path = scratch.write_config(&format!(
        "queues: [a]\n\
         environment:\n  type: mars\n\
         registry:\n  type: quay\n\
         builder:\n  type: mine\n\
         runners:\n  local-process:\n    user: no-such-user-of-this-test\n\
         plugins:\n\
         \x20 mine:\n    path: missing.wasm\n\
         \x20 notes:\n    path: notes.wasm\n\
         \x20 core:\n    path: core.wasm\n\
         \x20 future:\n    path: {}\n\
         \x20 docker:\n    grants: {{ env: [HOME] }}\n\
         \x20 dockr:\n    grants: {{ env: [HOME] }}\n",
        common::test_plugin("future-wit").display()
    ));
    let out = scratch.run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 8, "{stderr}");
    one_error_with(
        &errors,
        &[
            "launch-config.yaml:3:9: `environment.type` `mars`",
            "no bundled environment plugin has this name (bundled: ",
            "local",
        ],
    );
    one_error_with(
        &errors,
        &[
            "launch-config.yaml:5:9: `registry.type` `quay`",
            "no bundled registry plugin",
            "oci",
        ],
    );
    one_error_with(
        &errors,
        &[
            "launch-config.yaml:7:9: `builder.type` cannot be loaded: plugin `mine`",
            "missing.wasm",
            "cannot read the file",
        ],
    );
    one_error_with(
        &errors,
        &[
            "`runners`",
            "no-such-user-of-this-test",
            "runners.local-process.user",
        ],
    );
    one_error_with(
        &errors,
        &[
            "`plugins.notes.path` cannot be loaded",
            "notes.wasm",
            "`\\0asm`",
        ],
    );
    one_error_with(
        &errors,
        &[
            "`plugins.core.path` cannot be loaded",
            "a core module",
            "wasm32-wasip2",
        ],
    );
    one_error_with(
        &errors,
        &[
            "`plugins.future.path` cannot be loaded",
            "launch:plugin@0.2.0",
        ],
    );
    one_error_with(
        &errors,
        &["`plugins.dockr` has no `path`", "configures nothing"],
    );
    // An entry that configures a bundled plugin is no problem.
    assert!(!stderr.contains("`plugins.docker`"), "{stderr}");
    // `run` refuses the same config.
    assert!(!scratch.run_once(&path).status.success());
}

#[test]
fn a_plugin_of_another_kind_is_refused_for_its_block() {
    let problem = the_one_problem(&format!(
        "builder:\n  type: mine\nplugins:\n  mine:\n    path: {}\n",
        common::bundle_dir().join("registry-oci.wasm").display()
    ));
    assert!(
        problem.contains(":2:9: `builder.type` names plugin `mine`")
            && problem.contains("a registry plugin; the builder must be a builder plugin"),
        "{problem}"
    );
}

#[test]
fn a_sha256_pin_is_checked_against_the_plugin_the_config_loads() {
    let pinned =
        |sha256: &str| format!("builder:\n  type: noop\nplugins:\n  noop:\n    sha256: {sha256}\n");
    let problem = the_one_problem(&pinned(&"0".repeat(64)));
    assert!(
        problem.contains(":2:9: `builder.type` cannot be loaded: plugin `noop`")
            && problem.contains("sha256 mismatch"),
        "{problem}"
    );
    // The right pin passes.
    let noop = common::bundle_dir().join("builder-noop.wasm");
    let (ok, _, stderr) = check(&pinned(&common::sha256_of(&noop)));
    assert!(ok, "{stderr}");
}

#[test]
fn an_entry_without_a_path_names_what_it_would_need() {
    let problem = the_one_problem(
        "builder:\n  type: buildpacks\nplugins:\n  buildpacks:\n    grants: { env: [HOME] }\n",
    );
    assert!(
        problem.contains(":2:9: `builder.type` `buildpacks`: no bundled builder plugin")
            && problem.contains("its `plugins:` entry has no `path`"),
        "{problem}"
    );
}

#[test]
fn a_plugin_dir_that_is_not_a_directory_is_named() {
    let scratch = Scratch::new();
    let path = scratch.write_config("queues: [a]\n");
    let out = scratch
        .cmd()
        .args(["config", "check", path.to_str().unwrap()])
        .env("LAUNCH_AGENT_PLUGIN_DIR", "/no/such/plugin/dir")
        .output()
        .unwrap();
    let problem = one_problem_in(&out);
    assert!(
        problem.contains("`plugin_dir` `/no/such/plugin/dir`: not a directory"),
        "{problem}"
    );
}

#[test]
fn a_long_unknown_type_is_cut_in_its_error() {
    let problem = the_one_problem(&format!(
        "environment:\n  type: \"{}\\nERROR forged\"\n",
        "e".repeat(100_000)
    ));
    assert!(problem.len() < 2000, "{} bytes", problem.len());
    assert!(
        problem.contains("`environment.type` `eee") && problem.contains("(bundled: "),
        "{problem}"
    );
}

#[test]
fn a_check_writes_nothing_and_leaves_no_state_dir() {
    let scratch = Scratch::new();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let path = scratch.write_config("builder:\n  type: docker\n");
    let out = scratch
        .cmd()
        .args(["config", "check", path.to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    common::assert_success(&out);
    assert!(!scratch.state_dir().exists());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "its throwaway cache is gone"
    );
}

#[test]
fn a_plugin_path_to_a_fifo_or_a_device_is_refused_without_hanging() {
    let scratch = Scratch::new();
    let fifo = scratch.path().join("plugin.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let path = scratch.write_config(&format!(
        "plugins:\n  fifo:\n    path: {}\n  zero:\n    path: /dev/zero\n",
        fifo.display()
    ));
    let started = std::time::Instant::now();
    let out = scratch.run(&["config", "check", path.to_str().unwrap()]);
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 2, "{stderr}");
    one_error_with(
        &errors,
        &["`plugins.fifo.path`", "not a regular file (a FIFO)"],
    );
    one_error_with(
        &errors,
        &[
            "`plugins.zero.path`",
            "not a regular file (a character device)",
        ],
    );
}
