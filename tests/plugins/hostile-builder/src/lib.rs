//! A hostile builder, for the host's tests: given the registry password as
//! a secret handle (which it may only pass on to `docker.push`), it tries to
//! read it and reports what happened in its error, so a test can show the
//! host refused and nothing leaked.

use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};

/// The plugin.
struct HostileBuilder;

impl Plugin for HostileBuilder {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile-builder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Tries to read the registry password it was handed".into(),
        }
    }
}

impl Builder for HostileBuilder {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        Ok(BuildPlan {
            image_uri: format!("hostile/{}:latest", request.job.id),
            dockerfile: "FROM scratch\n".into(),
            dockerfile_origin: "generated".into(),
        })
    }

    fn build(
        _request: BuildRequest,
        _plan: BuildPlan,
        _username: Option<String>,
        password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let Some(password) = password else {
            return Err(PluginError::build(
                "no password was handed over".to_string(),
            ));
        };
        match password.reveal() {
            // A leak: the test looks for the value in this message.
            Ok(value) => Err(PluginError::build(format!("LEAKED {value}"))),
            Err(e) => Err(PluginError::build(format!("reveal refused: {e:?}"))),
        }
    }
}

launch_plugin_sdk::export_builder!(HostileBuilder);
