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
//!
//! Since contract 0.2.0 a plugin may also keep a secret between its calls
//! (`keep`, `recall`, `forget`: a token with a lifetime), in its own
//! [`KeptSecrets`](super::kept::KeptSecrets), which no other plugin reaches.
//!
//! A call may mint at most [`MAX_MINTED`] values ([`MAX_MINTED_BYTES`] in
//! all) and hold [`MAX_SECRET_HANDLES`] handles at once (see
//! [`call_caps`](super::call_caps)).

use crate::capabilities::bindings::launch::plugin::secrets::{Host, HostSecret, SecretError};
use crate::capabilities::call_caps::{MAX_MINTED, MAX_MINTED_BYTES, MAX_SECRET_HANDLES};
use crate::capabilities::state::CapabilityState;
use wasmtime::component::Resource;

/// A secret held by the host; the resource behind a WIT `secret` handle.
pub struct SecretHandle {
    name: String,
    value: String,
    /// Whether the plugin holding the handle may read it: true for secrets
    /// it opened (granted) or minted, false for handles the host gave it.
    revealable: bool,
    /// The registry (and repository prefix) a registry credential was
    /// issued for: the host uses it there only.
    bound_to: Option<CredentialScope>,
    /// Whether an opaque handle may be kept (`secrets.keep`), staying
    /// opaque and bound: a token a `lent.post-form` answered, which the
    /// plugin obtained and so may cache; never a lent token (the
    /// environment keeps those) nor a password handed on.
    keepable: bool,
}

/// The registry and repository prefix a registry credential was issued
/// for (the registry plugin's repository): a push or lookup with it must go
/// to that registry, to that repository or one under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    /// `host[:port]`, lowercase; `docker.io` for Docker Hub.
    registry: String,
    /// The repository prefix (`team/launch`); Docker Hub's official images
    /// are under `library/`. `None`: every repository of the registry (a
    /// token lent for the registry's origin, before a registry plugin's
    /// login binds it to its repository).
    repository: Option<String>,
}

impl CredentialScope {
    /// The scope of `repository_uri` (`registry/repository`, no tag; a
    /// leading `https://` or `http://` and a trailing `/` are ignored).
    pub fn parse(repository_uri: &str) -> Result<Self, String> {
        let bare = repository_uri
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let (registry, repository) = Self::target(bare)?;
        Ok(CredentialScope {
            registry,
            repository: Some(repository),
        })
    }

    /// The scope of every repository of the registry at `url`'s origin
    /// (`scheme://host[:port]`): `host[:port]`, the port left out when it
    /// is the scheme's default, as image references write it.
    pub fn origin(url: &reqwest::Url) -> Result<Self, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("{:?} has no host", url.as_str()))?;
        let registry = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(CredentialScope {
            registry: registry.to_ascii_lowercase(),
            repository: None,
        })
    }

    /// The registry (`host[:port]`, lowercase).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry and repository of `image` (`[registry/]repository[:tag]`),
    /// normalised as a scope's are.
    pub fn target(image: &str) -> Result<(String, String), String> {
        let reference = super::docker::ImageRef::parse(image)?;
        let registry = match &reference.registry {
            Some(host) if !super::policy::DOCKER_HUB_HOSTS.contains(&host.as_str()) => {
                host.to_ascii_lowercase()
            }
            _ => "docker.io".to_string(),
        };
        let path = match &reference.registry {
            Some(host) => &reference.name[host.len() + 1..],
            None => reference.name.as_str(),
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok((registry, repository))
    }

    /// Whether `registry`/`repository` (normalised by
    /// [`CredentialScope::target`]) is inside the scope.
    pub fn covers(&self, registry: &str, repository: &str) -> bool {
        let Some(prefix) = &self.repository else {
            return registry == self.registry;
        };
        registry == self.registry
            && (repository == prefix
                || repository
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl std::fmt::Display for CredentialScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.repository {
            Some(repository) => write!(f, "{}/{repository}", self.registry),
            None => write!(f, "{} (every repository)", self.registry),
        }
    }
}

impl SecretHandle {
    /// A registry credential the host hands to a plugin that may pass it on
    /// (to a push into `scope`) but not read it.
    pub fn opaque(
        name: impl Into<String>,
        value: impl Into<String>,
        scope: CredentialScope,
    ) -> Self {
        SecretHandle {
            name: name.into(),
            value: value.into(),
            revealable: false,
            bound_to: Some(scope),
            keepable: false,
        }
    }

    /// A token a service answered to a host-made request of the plugin
    /// (`lent.post-form`): opaque and bound to `scope` as
    /// [`SecretHandle::opaque`], but the plugin may keep it
    /// (`secrets.keep`), and recalls it as opaque and bound.
    pub fn obtained(
        name: impl Into<String>,
        value: impl Into<String>,
        scope: CredentialScope,
    ) -> Self {
        SecretHandle {
            keepable: true,
            ..SecretHandle::opaque(name, value, scope)
        }
    }

    /// Whether the plugin holding it may read it.
    pub fn revealable(&self) -> bool {
        self.revealable
    }

    /// This secret, bound to the registry it was issued for; refused (the
    /// error says why) when it is already bound to another registry (a
    /// token lent for one registry returned as the login of another).
    pub fn bound(self, scope: CredentialScope) -> Result<Self, String> {
        if let Some(lent) = &self.bound_to
            && lent.registry != scope.registry
        {
            return Err(format!(
                "its password {:?} was lent for registry {}, not for its repository {scope}",
                self.name, lent.registry
            ));
        }
        Ok(SecretHandle {
            bound_to: Some(scope),
            ..self
        })
    }

    /// A copy to hand to another plugin, which may pass it on but not read
    /// it; it keeps its binding.
    pub fn handed_on(&self) -> Self {
        SecretHandle {
            name: self.name.clone(),
            value: self.value.clone(),
            revealable: false,
            bound_to: self.bound_to.clone(),
            keepable: false,
        }
    }

    /// The registry it was issued for, if it is bound to one.
    pub fn scope(&self) -> Option<&CredentialScope> {
        self.bound_to.as_ref()
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
    ///
    /// Past [`MAX_SECRET_HANDLES`] handles alive at once the call traps
    /// (the host gives a plugin a handle or two; a plugin that opens
    /// thousands is in a loop).
    pub fn hold_secret(
        &mut self,
        secret: SecretHandle,
    ) -> wasmtime::Result<Resource<SecretHandle>> {
        if self.secret_use.handles >= MAX_SECRET_HANDLES {
            wasmtime::bail!(
                "plugin {} holds {MAX_SECRET_HANDLES} secret handles at once, the cap of one \
                 call: drop the handles it no longer needs",
                self.plugin_name
            );
        }
        if !secret.value.is_empty() && !self.held_index.contains(&secret.value) {
            self.longest_secret = self.longest_secret.max(secret.value.len());
            self.held_index.insert(secret.value.clone());
            self.held_secrets.push(secret.value.clone());
        }
        self.redactor().learn(&secret.value);
        let handle = self.table.push(secret)?;
        self.secret_use.handles += 1;
        Ok(handle)
    }

    /// `text` with the value of every secret this Store held (and every one
    /// the agent's redactor knows), in its common encodings, replaced by
    /// `<redacted>`: see [`crate::redact`].
    pub fn scrub(&self, text: &str) -> String {
        self.redactor().scrub(text)
    }

    /// The value behind a secret handle a plugin passed to a host capability
    /// (a push password) to use for `image` (`registry/repository[:tag]`),
    /// for the host's own use; refused when the handle is a credential bound
    /// to another registry or repository (or, handed on, to none).
    pub(crate) fn secret_for(
        &self,
        handle: &Option<Resource<SecretHandle>>,
        image: &str,
    ) -> wasmtime::Result<Result<Option<String>, super::policy::Refusal>> {
        let Some(handle) = handle else {
            return Ok(Ok(None));
        };
        let secret = self.table.get(handle)?;
        let refuse = |bound_to: String, target: String| {
            Ok(Err(super::policy::Refusal::CredentialScope {
                secret: secret.name.clone(),
                bound_to,
                target,
            }))
        };
        match (&secret.bound_to, secret.revealable) {
            (Some(scope), _) => match CredentialScope::target(image) {
                Ok((registry, repository)) if scope.covers(&registry, &repository) => {}
                Ok((registry, repository)) => {
                    return refuse(scope.to_string(), format!("{registry}/{repository}"));
                }
                Err(_) => return refuse(scope.to_string(), format!("{image:?}")),
            },
            // A plugin's own secret: it can read it, so binding adds nothing.
            (None, true) => {}
            (None, false) => return refuse("no registry".into(), image.to_string()),
        }
        Ok(Ok(Some(secret.value().to_string())))
    }
}

impl Host for CapabilityState {
    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        if self.secret_use.handles >= MAX_SECRET_HANDLES {
            return Ok(Err(SecretError::Unavailable(format!(
                "secret {name:?}: plugin {} already holds {MAX_SECRET_HANDLES} secret handles, \
                 the cap of one call",
                self.plugin_name
            ))));
        }
        let source = match self.policy.secret(&name) {
            Ok(source) => source,
            Err(refusal) => {
                return Ok(Err(SecretError::NotGranted(self.refused(&refusal))));
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
        self.record(|| crate::capabilities::state::HostCall::SecretOpened { name: name.clone() });
        let handle = self.hold_secret(SecretHandle {
            name,
            value,
            revealable: true,
            bound_to: None,
            keepable: false,
        })?;
        Ok(Ok(handle))
    }

    fn mint(&mut self, name: String, value: String) -> wasmtime::Result<Resource<SecretHandle>> {
        // `mint` returns no error: a plugin past the caps is in a loop, and
        // the call stops with a trap that names the cap.
        let used = &mut self.secret_use;
        if used.minted >= MAX_MINTED
            || used.minted_bytes.saturating_add(value.len()) > MAX_MINTED_BYTES
        {
            wasmtime::bail!(
                "plugin {} minted more than one call may ({MAX_MINTED} secrets or {} KiB of \
                 values); it was stopped",
                self.plugin_name,
                MAX_MINTED_BYTES / 1024
            );
        }
        used.minted += 1;
        used.minted_bytes += value.len();
        self.hold_secret(SecretHandle {
            name,
            value,
            revealable: true,
            bound_to: None,
            keepable: false,
        })
    }

    fn keep(
        &mut self,
        key: String,
        value: Resource<SecretHandle>,
        ttl_seconds: u64,
    ) -> wasmtime::Result<Result<(), SecretError>> {
        let secret = self.table.get(&value)?;
        let bound_to = match (secret.revealable, secret.keepable) {
            (true, _) => None,
            (false, true) => secret.bound_to.clone(),
            (false, false) => {
                return Ok(Err(SecretError::Opaque(format!(
                    "secret {:?} was handed to plugin {} to pass on, not to keep",
                    secret.name, self.plugin_name
                ))));
            }
        };
        Ok(self
            .kept
            .keep_bound(
                &key,
                &secret.name,
                &secret.value,
                bound_to,
                std::time::Duration::from_secs(ttl_seconds),
            )
            .map_err(SecretError::Unavailable))
    }

    fn recall(&mut self, key: String) -> wasmtime::Result<Option<Resource<SecretHandle>>> {
        let Some((name, value, bound_to)) = self.kept.recall_bound(&key) else {
            return Ok(None);
        };
        // A kept `post-form` token comes back as it was kept: opaque and
        // bound to its registry.
        let handle = match bound_to {
            Some(scope) => SecretHandle::obtained(name, value, scope),
            None => SecretHandle {
                name,
                value,
                revealable: true,
                bound_to: None,
                keepable: false,
            },
        };
        Ok(Some(self.hold_secret(handle)?))
    }

    fn forget(&mut self, key: String) -> wasmtime::Result<()> {
        self.kept.forget(&key);
        Ok(())
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
        self.secret_use.handles = self.secret_use.handles.saturating_sub(1);
        Ok(())
    }
}

impl crate::capabilities::bindings::launch::plugin::types::Host for CapabilityState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_its_registry_and_repositories_under_it_only() {
        let scope = CredentialScope::parse("127.0.0.1:5000/team/launch").unwrap();
        let covers = |image: &str| {
            let (registry, repository) = CredentialScope::target(image).unwrap();
            scope.covers(&registry, &repository)
        };
        assert!(covers("127.0.0.1:5000/team/launch:v1"));
        assert!(covers("127.0.0.1:5000/team/launch/sub:v1"));
        assert!(!covers("127.0.0.1:5000/team/launcher:v1"));
        assert!(!covers("127.0.0.1:5000/team/other:v1"));
        assert!(!covers("127.0.0.1:5001/team/launch:v1"));
        assert!(!covers("localhost:5000/team/launch:v1"));
        assert!(!covers("team/launch:v1"));
    }

    #[test]
    fn a_scope_may_be_written_as_a_url() {
        assert_eq!(
            CredentialScope::parse("https://registry.example.com/team/launch/").unwrap(),
            CredentialScope::parse("registry.example.com/team/launch").unwrap()
        );
        assert!(CredentialScope::parse("Not A Repository").is_err());
    }

    #[test]
    fn docker_hub_is_one_registry_under_every_name() {
        let scope = CredentialScope::parse("docker.io/acme/app").unwrap();
        for image in [
            "acme/app:v1",
            "index.docker.io/acme/app:v1",
            "registry-1.docker.io/acme/app",
        ] {
            let (registry, repository) = CredentialScope::target(image).unwrap();
            assert!(scope.covers(&registry, &repository), "{image}");
        }
        let (registry, repository) = CredentialScope::target("busybox").unwrap();
        assert_eq!(
            (registry.as_str(), repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert!(!scope.covers(&registry, &repository));
    }
}
