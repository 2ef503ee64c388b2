//! `environment-local`: the environment of the default bundle for running
//! jobs on the agent's own machine (`environment.type: local` in
//! launch-config.yaml).
//!
//! There are no credentials to check, so `verify` only checks the settings:
//! `type` (required) and the W&B environment keys `region` and `project`
//! (optional, accepted for compatibility and ignored, as the W&B agent's local
//! environment ignores them). Any other key is an error naming it, so a typo
//! is not silently ignored.
//!
//! `run-env` adds no variables: a local run gets only what the runner gives
//! every run.

use launch_plugin_sdk::environment::Environment;
use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, Stage};
use serde::Deserialize;

/// The settings `verify` accepts. They are only checked, never used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the fields are checked by parsing; a local run uses none"
)]
struct Settings {
    /// The block's `type` (`local`, or the name of a `plugins:` entry that
    /// points at this plugin).
    #[serde(rename = "type")]
    kind: String,
    /// Ignored: a local environment has no region.
    #[serde(default)]
    region: Option<String>,
    /// Ignored: a local environment has no project.
    #[serde(default)]
    project: Option<String>,
}

/// Parses and checks `settings`; errors have stage `agent`.
fn parse(settings: &str) -> Result<Settings, PluginError> {
    launch_plugin_sdk::parse_settings::<Settings>(settings, Stage::Agent).map_err(|e| {
        PluginError::agent(format!(
            "environment `local`: {}; it accepts `type` and, ignored, `region` and `project`",
            e.message
        ))
    })
}

/// The plugin.
struct LocalEnvironment;

impl Plugin for LocalEnvironment {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "environment-local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Runs jobs on the agent's own machine; no credentials needed".into(),
        }
    }
}

impl Environment for LocalEnvironment {
    fn verify(settings: String) -> Result<(), PluginError> {
        // `region` and `project` are checked and ignored, with no log line
        // to say so: a plugin that never logs does not import
        // `launch:plugin/log`, and each call into it costs less (see the
        // SDK's `lean` module).
        parse(&settings).map(|_| ())
    }

    fn run_env(_settings: String, _job: Job) -> Result<Vec<(String, String)>, PluginError> {
        Ok(Vec::new())
    }
}

launch_plugin_sdk::export_environment!(LocalEnvironment);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_type_and_the_wandb_keys() {
        assert!(parse(r#"{"type":"local"}"#).is_ok());
        assert!(parse(r#"{"type":"local","region":"us-east-1","project":"p"}"#).is_ok());
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let e = parse(r#"{"type":"local","regoin":"x"}"#).unwrap_err();
        assert_eq!(e.stage, Stage::Agent);
        assert!(!e.retryable);
        assert!(e.message.contains("`regoin`"), "{}", e.message);
    }

    #[test]
    fn rejects_a_missing_type_and_bad_values() {
        assert!(parse("{}").unwrap_err().message.contains("`type`"));
        assert!(
            parse(r#"{"type":"local","region":3}"#)
                .unwrap_err()
                .message
                .contains("`region`")
        );
        assert!(parse("[]").is_err());
    }
}
