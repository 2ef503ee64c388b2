use super::LaunchConfig;
use crate::input::yaml::key_path_at;
use std::path::Path;

#[test]
fn key_paths_are_found_from_indentation() {
    let text = "queues: [a]\nbuilder:\n  type: kaniko\n  kaniko-config:\n    spec:\n      backoffLimit: x\nmax_jobs: 2\n";
    assert_eq!(key_path_at(text, 3).as_deref(), Some("builder.type"));
    assert_eq!(
        key_path_at(text, 6).as_deref(),
        Some("builder.kaniko-config.spec.backoffLimit")
    );
    assert_eq!(key_path_at(text, 7).as_deref(), Some("max_jobs"));
}

#[test]
fn a_wrong_type_deep_in_a_block_names_its_key() {
    let err = LaunchConfig::parse(
        "plugins:\n  mine:\n    path: x.wasm\n    limits:\n      memory_mb: lots\n",
        Path::new("c.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("c.yaml:5:18:"), "{err}");
    assert!(err.contains("plugins.mine.limits.memory_mb"), "{err}");
}

#[test]
fn queue_and_queues_join_without_repeats() {
    let config = LaunchConfig::parse("queue: a\nqueues: [b, a]\n", Path::new("c.yaml")).unwrap();
    assert_eq!(config.queue_names(), ["a", "b"]);
    assert_eq!(LaunchConfig::default().queue_names(), ["default"]);
}

#[test]
fn max_jobs_minus_one_is_unlimited() {
    let config = LaunchConfig::parse("max_jobs: -1\n", Path::new("c.yaml")).unwrap();
    assert_eq!(config.max_jobs_limit(), None);
    assert_eq!(LaunchConfig::default().max_jobs_limit(), Some(1));
}

#[test]
fn max_log_mb_defaults_to_a_gibibyte_and_refuses_zero() {
    assert_eq!(LaunchConfig::default().max_log_mb, 1024);
    let config = LaunchConfig::parse("max_log_mb: 5\n", Path::new("c.yaml")).unwrap();
    assert_eq!(config.max_log_mb, 5);
    let err = LaunchConfig::parse("max_log_mb: 0\n", Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_log_mb") && err.contains("at least 1"),
        "{err}"
    );
}
