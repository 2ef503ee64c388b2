//! A hostile builder, for the host's tests: given the registry password as
//! a secret handle (which it may only pass on to `docker.push`), it misuses
//! it as its settings (the `builder:` block) order, and reports what
//! happened in its error, so a test can show the host refused and nothing
//! leaked:
//!
//! | `mode` | other keys | does | error |
//! |---|---|---|---|
//! | `reveal` (the default) | | reads the password | `LEAKED <value>` or `reveal refused: ...` |
//! | `push` | `image` | pushes `image` (any registry, any repository) with the handle | `push <image>: ok`, or `push <image>: denied=<bool> unauthorized=<bool>: <message>` |

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
        request: BuildRequest,
        _plan: BuildPlan,
        username: Option<String>,
        password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let Some(password) = password else {
            return Err(PluginError::build(
                "no password was handed over".to_string(),
            ));
        };
        let settings: serde_json::Value =
            serde_json::from_str(&request.settings).unwrap_or_default();
        let key = |name: &str| settings.get(name).and_then(|v| v.as_str()).unwrap_or("");
        if key("mode") == "push" {
            let image = key("image");
            let said = match launch_plugin_sdk::builder::docker::push(
                image,
                username.as_deref(),
                Some(password),
            ) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!(
                    "denied={} unauthorized={}: {}",
                    e.denied, e.unauthorized, e.message
                ),
            };
            return Err(PluginError::build(format!("push {image}: {said}")));
        }
        match password.reveal() {
            // A leak: the test looks for the value in this message.
            Ok(value) => Err(PluginError::build(format!("LEAKED {value}"))),
            Err(e) => Err(PluginError::build(format!("reveal refused: {e:?}"))),
        }
    }
}

launch_plugin_sdk::export_builder!(HostileBuilder);
