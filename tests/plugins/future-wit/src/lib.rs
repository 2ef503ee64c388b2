//! A builder plugin built against a future contract, `launch:plugin@0.3.0`
//! (the real WIT with only the version changed, written by `build.rs` into
//! `$OUT_DIR/wit/`), so the host's tests can show it is refused with both
//! versions named.

wit_bindgen::generate!({
    world: "builder-plugin",
    path: concat!(env!("OUT_DIR"), "/wit"),
});

use exports::launch::plugin::builder::{BuildOutcome, BuildPlan, BuildRequest, Guest as Builder};
use exports::launch::plugin::plugin::Guest as Plugin;
use launch::plugin::secrets::Secret;
use launch::plugin::types::{PluginError, PluginInfo, Stage};

/// The plugin.
struct FutureWit;

impl Plugin for FutureWit {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "future-wit".into(),
            version: "0.1.0".into(),
            description: "Test plugin built against launch:plugin@0.3.0".into(),
        }
    }
}

impl Builder for FutureWit {
    fn plan(_request: BuildRequest) -> Result<BuildPlan, PluginError> {
        Err(refusal())
    }

    fn build(
        _request: BuildRequest,
        _plan: BuildPlan,
        _username: Option<String>,
        _password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        Err(refusal())
    }
}

/// The error every builder call returns (the host never gets this far).
fn refusal() -> PluginError {
    PluginError {
        stage: Stage::Build,
        message: "future-wit builds nothing".into(),
        retryable: false,
    }
}

export!(FutureWit);
