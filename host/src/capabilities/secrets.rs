//! `launch:plugin/secrets`: secrets as opaque handles held by the host.
//!
//! A plugin opens only the secrets its config entry grants
//! (`grants.secrets`, checked by
//! [`GrantPolicy::secret`](super::policy::GrantPolicy::secret) first
//! thing); the value is read from its source (env var or file)
//! when opened and lives in the host's resource table. Neither the value nor
//! any part of it is ever logged: whatever the plugin itself says (log
//! lines, errors, a panic message, stderr) is scrubbed of every secret value
//! its Store held before the host records it.

use crate::capabilities::bindings::launch::plugin::secrets::{Host, HostSecret, SecretError};
use crate::capabilities::state::CapabilityState;
use wasmtime::component::Resource;

/// A secret held by the host; the resource behind a WIT `secret` handle.
pub struct SecretHandle {
    name: String,
    value: String,
    /// Whether the plugin holding the handle may read it: true for secrets
    /// it opened (granted) or minted, false for handles the host gave it.
    revealable: bool,
}

impl SecretHandle {
    /// A secret the host hands to a plugin that may pass it on but not read it.
    pub fn opaque(name: impl Into<String>, value: impl Into<String>) -> Self {
        SecretHandle {
            name: name.into(),
            value: value.into(),
            revealable: false,
        }
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value, for the host's own use (a push, a registry request).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHandle")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl CapabilityState {
    /// Puts `secret` in the Store's resource table and remembers its value,
    /// so nothing the plugin says (log lines, errors, a panic message, its
    /// stderr) can carry it out: see [`CapabilityState::scrub`].
    pub fn hold_secret(
        &mut self,
        secret: SecretHandle,
    ) -> wasmtime::Result<Resource<SecretHandle>> {
        if !secret.value.is_empty() && !self.held_secrets.contains(&secret.value) {
            self.held_secrets.push(secret.value.clone());
        }
        self.redactor().learn(&secret.value);
        Ok(self.table.push(secret)?)
    }

    /// `text` with the value of every secret this Store held (and every one
    /// the agent's redactor knows), in its common encodings, replaced by
    /// `<redacted>`: see [`crate::redact`].
    pub fn scrub(&self, text: &str) -> String {
        self.redactor().scrub(text)
    }

    /// The value behind a secret handle a plugin passed to a host capability
    /// (a push password), for the host's own use.
    pub(crate) fn secret_value(
        &self,
        handle: &Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(match handle {
            Some(handle) => Some(self.table.get(handle)?.value().to_string()),
            None => None,
        })
    }
}

impl Host for CapabilityState {
    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        let source = match self.policy.secret(&name) {
            Ok(source) => source,
            Err(refusal) => {
                return Ok(Err(SecretError::NotGranted(
                    refusal.report(&self.plugin_name),
                )));
            }
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
        let handle = self.hold_secret(SecretHandle {
            name,
            value,
            revealable: true,
        })?;
        Ok(Ok(handle))
    }

    fn mint(&mut self, name: String, value: String) -> wasmtime::Result<Resource<SecretHandle>> {
        self.hold_secret(SecretHandle {
            name,
            value,
            revealable: true,
        })
    }
}

impl HostSecret for CapabilityState {
    fn name(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    fn reveal(
        &mut self,
        secret: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<String, SecretError>> {
        let handle = self.table.get(&secret)?;
        if !handle.revealable {
            tracing::warn!(plugin = %self.plugin_name, secret = %handle.name, "refused to reveal a secret handed to the plugin by the host");
            return Ok(Err(SecretError::Opaque(format!(
                "secret {:?} was handed to plugin {} to pass on, not to read",
                handle.name, self.plugin_name
            ))));
        }
        Ok(Ok(handle.value.clone()))
    }

    fn drop(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}

impl crate::capabilities::bindings::launch::plugin::types::Host for CapabilityState {}
