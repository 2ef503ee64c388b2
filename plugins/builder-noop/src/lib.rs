//! `builder-noop`: the builder of the default bundle for agents that cannot
//! build images (`builder.type: noop` in launch-config.yaml, and the default
//! when no Docker engine is configured).
//!
//! Jobs that already name an image never reach a builder, so every call to
//! `plan` (and to `build`, should a host call it anyway) here is a job that
//! needed one: it fails (stage `build`, not retryable) with a message saying
//! how to fix the job or the config. Both calls give the same message.

use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};

/// The plugin.
struct NoopBuilder;

impl Plugin for NoopBuilder {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "builder-noop".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Builds nothing: jobs must name an image, or the config must choose the docker or kaniko builder"
                .into(),
        }
    }
}

impl Builder for NoopBuilder {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        Err(PluginError::build(message(&request.job.id)))
    }

    fn build(
        request: BuildRequest,
        _plan: BuildPlan,
        _username: Option<String>,
        _password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        Err(PluginError::build(message(&request.job.id)))
    }
}

/// The failure message for job `job_id`.
fn message(job_id: &str) -> String {
    format!(
        "job {job_id} needs an image built, but nothing can be built with the noop builder. \
         Either give the job an image (`docker.docker_image` or `image_uri` in the launch spec), \
         or set `builder.type` to `docker` or `kaniko` in launch-config.yaml"
    )
}

launch_plugin_sdk::export_builder!(NoopBuilder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_job_and_the_fixes() {
        let m = message("q-42");
        for needle in [
            "q-42",
            "noop builder",
            "docker.docker_image",
            "image_uri",
            "builder.type",
            "kaniko",
        ] {
            assert!(m.contains(needle), "{needle} missing from {m}");
        }
    }
}
