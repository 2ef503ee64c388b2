//! A registry plugin built against the frozen contract
//! `launch:plugin@0.1.0` (`wit/0.1/`), straight from the WIT rather than
//! through the SDK (which follows the current contract), so the host's
//! tests show that a 0.1 plugin still loads and that its imports (`log`,
//! `secrets`, `oci`) reach the current capabilities through the adapter.
//!
//! | call | what it does |
//! |---|---|
//! | `repository-uri` | logs a line, returns the settings' `uri` |
//! | `login` | mints `v01-token` and returns it as user `v01`'s password |
//! | `image-exists` | asks `oci.manifest-exists` for the image: the host's grants decide |

wit_bindgen::generate!({
    world: "registry-plugin",
    path: "../../../wit/0.1",
});

use exports::launch::plugin::plugin::Guest as Plugin;
use exports::launch::plugin::registry::{Guest as Registry, RegistryLogin};
use launch::plugin::types::{PluginError, PluginInfo, Stage};
use launch::plugin::{log, oci, secrets};

/// The plugin.
struct ContractV01;

impl Plugin for ContractV01 {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "contract-v0-1".into(),
            version: "0.1.0".into(),
            description: "Test registry built against launch:plugin@0.1.0".into(),
        }
    }
}

/// The `uri` of the settings object (no serde: a test plugin).
fn uri(settings: &str) -> String {
    settings
        .split("\"uri\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

impl Registry for ContractV01 {
    fn repository_uri(settings: String) -> Result<String, PluginError> {
        log::log(
            log::Level::Info,
            "contract 0.1 plugin asked for its repository",
        );
        Ok(uri(&settings))
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let login = oci::OciLogin {
            username: None,
            insecure: uri(&settings).starts_with("127.0.0.1"),
        };
        oci::manifest_exists(&image_uri, &login, None).map_err(|e| PluginError {
            stage: Stage::Build,
            message: format!(
                "oci: {} (denied: {}, unauthorized: {})",
                e.message, e.denied, e.unauthorized
            ),
            retryable: false,
        })
    }

    fn login(_settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        let password = secrets::mint("v01-password", "v01-token");
        Ok(Some(RegistryLogin {
            username: "v01".into(),
            password,
        }))
    }
}

export!(ContractV01);
