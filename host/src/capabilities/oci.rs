//! `launch:plugin/oci`: OCI distribution registries for registry plugins.
//!
//! Requests go only to registries the plugin's `grants.hosts` allow.

use crate::capabilities::secrets::SecretHandle;
use crate::plugins::bindings::imports::launch::plugin::oci::{Host, OciError, OciLogin};
use crate::plugins::state::PluginState;
use wasmtime::component::Resource;

impl Host for PluginState {
    async fn manifest_exists(
        &mut self,
        _reference: String,
        _login: OciLogin,
        _password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<bool, OciError>> {
        Ok(Err(OciError {
            message: "not implemented yet".into(),
            unauthorized: false,
            denied: true,
        }))
    }
}
