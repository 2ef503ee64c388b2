//! `launch:plugin/secrets`: secrets as opaque handles held by the host.
//!
//! A plugin opens only the secrets its config entry grants
//! (`grants.secrets`); the value is read from its source (env var or file)
//! when opened and lives in the host's resource table. Neither the value nor
//! any part of it is ever logged.

use crate::plugins::bindings::imports::launch::plugin::secrets::{Host, HostSecret, SecretError};
use crate::plugins::state::PluginState;
use wasmtime::component::Resource;

/// A secret opened by a plugin; the resource behind a WIT `secret` handle.
pub struct SecretHandle {
    name: String,
    value: String,
}

impl std::fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHandle")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Host for PluginState {
    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        let Some(source) = self.secrets.get(&name) else {
            tracing::warn!(plugin = %self.plugin_name, secret = %name, "refused to open a secret that is not granted (add it to grants.secrets)");
            return Ok(Err(SecretError::NotGranted(format!(
                "secret {name:?} is not granted to plugin {}",
                self.plugin_name
            ))));
        };
        let value = match source.read() {
            Ok(value) if !value.is_empty() => value,
            Ok(_) => {
                return Ok(Err(SecretError::Unavailable(format!(
                    "secret {name:?} is empty"
                ))));
            }
            Err(reason) => {
                return Ok(Err(SecretError::Unavailable(format!(
                    "secret {name:?}: {reason}"
                ))));
            }
        };
        let handle = self.table.push(SecretHandle { name, value })?;
        Ok(Ok(handle))
    }
}

impl HostSecret for PluginState {
    fn name(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    fn reveal(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.value.clone())
    }

    fn drop(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}

impl crate::plugins::bindings::imports::launch::plugin::types::Host for PluginState {}
