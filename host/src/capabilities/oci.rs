//! `launch:plugin/oci`: OCI distribution registries for registry plugins.
//!
//! Two layers:
//!
//! * [`manifest_exists`], plain Rust over [`oci_client`]: whether a registry
//!   has a manifest for `registry/repository:tag`, with basic credentials
//!   (exchanged for a bearer token where the registry asks for it) or
//!   anonymously, over HTTPS or, when `insecure`, plain HTTP.
//! * the WIT `Host` impl for [`CapabilityState`]: the reference's registry must
//!   be allowed by the plugin's `grants.hosts` (`https://HOST[:PORT]`, or
//!   `http://HOST[:PORT]` when `insecure`; ports default to 443 and 80;
//!   [`GrantPolicy::registry`](super::policy::GrantPolicy::registry), checked
//!   first thing), else the call fails with `denied: true`. The password is the value of
//!   the secret handle the plugin passes; the plugin never needs to read it.
//!
//! No message, log line or error ever contains the password.

use crate::capabilities::bindings::launch::plugin::oci::{Host, OciError, OciLogin};
use crate::capabilities::secrets::SecretHandle;
use crate::capabilities::state::CapabilityState;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::time::Duration;
use wasmtime::component::Resource;

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one [`manifest_exists`] may take in all (token exchange, HEAD,
/// and the GET some registries need).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failure talking to a registry; never contains the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciFailure {
    /// What went wrong, naming the reference, in the registry's words where
    /// it gave any.
    pub message: String,
    /// Whether the registry refused the credentials (or asked for some and
    /// none were given): HTTP 401 or 403.
    pub unauthorized: bool,
}

impl OciFailure {
    fn other(message: String) -> Self {
        OciFailure {
            message,
            unauthorized: false,
        }
    }
}

impl std::fmt::Display for OciFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OciFailure {}

/// Whether the registry has a manifest for `reference`
/// (`registry/repository[:tag|@digest]`; the tag defaults to `latest`),
/// asked with a client from `clients`.
///
/// A missing tag or repository is `Ok(false)`. `username` with `password`
/// logs in with basic credentials; no `username` is anonymous access (a
/// password without a user name is an error). `insecure` speaks plain HTTP
/// instead of HTTPS.
///
/// # Errors
///
/// A reference that does not parse (the message names it), a registry
/// that cannot be reached or answers with an error, and — with
/// `unauthorized` set — a registry that refuses the credentials or wants
/// some (401/403).
pub async fn manifest_exists(
    clients: &RegistryClients,
    reference: &str,
    username: Option<&str>,
    password: Option<&str>,
    insecure: bool,
) -> Result<bool, OciFailure> {
    let redact = |message: String| match password {
        Some(p) if !p.is_empty() => message.replace(p, "<redacted>"),
        _ => message,
    };
    let image: Reference = reference.parse().map_err(|e| {
        OciFailure::other(redact(format!(
            "invalid image reference {reference:?}: {e}"
        )))
    })?;
    let auth = match (username, password) {
        (Some(user), password) => {
            RegistryAuth::Basic(user.to_string(), password.unwrap_or_default().to_string())
        }
        (None, None) => RegistryAuth::Anonymous,
        (None, Some(_)) => {
            return Err(OciFailure::other(format!(
                "checking {reference}: a password was given without a user name"
            )));
        }
    };
    let client = clients
        .client_for(insecure, username, password)
        .map_err(|e| {
            OciFailure::other(redact(format!(
                "checking {reference}: cannot create the registry client: {e}"
            )))
        })?;
    let registry = image.resolve_registry().to_string();
    let outcome = tokio::time::timeout(CALL_TIMEOUT, client.fetch_manifest_digest(&image, &auth))
        .await
        .map_err(|_| {
            OciFailure::other(format!(
                "checking {reference}: registry {registry} did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))
        })?;
    match outcome {
        Ok(_digest) => Ok(true),
        Err(e) => classify(e, reference, &registry, username).map_err(|f| OciFailure {
            message: redact(f.message),
            ..f
        }),
    }
}

/// Registry clients, one per (protocol, credentials): building one loads
/// the TLS roots (tens of milliseconds), and its token cache may only ever
/// serve the credentials it was created for, so clients are shared by calls
/// with the same credentials and never across different ones.
///
/// A client's pooled connections belong to the async runtime they were
/// made on, so the cache belongs to a plugin host (one per runtime), not
/// to the process.
#[derive(Default)]
pub struct RegistryClients {
    clients: std::sync::Mutex<std::collections::HashMap<ClientKey, Client>>,
}

/// Protocol, user name and the password's sha256.
type ClientKey = (bool, Option<String>, [u8; 32]);

impl RegistryClients {
    /// The client for these credentials, made on first use.
    fn client_for(
        &self,
        insecure: bool,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Client, String> {
        use sha2::Digest as _;
        let key: ClientKey = (
            insecure,
            username.map(str::to_string),
            sha2::Sha256::digest(password.unwrap_or_default().as_bytes()).into(),
        );
        if let Ok(map) = self.clients.lock()
            && let Some(client) = map.get(&key)
        {
            return Ok(client.clone());
        }
        install_crypto_provider();
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(CALL_TIMEOUT),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        if let Ok(mut map) = self.clients.lock() {
            map.insert(key, client.clone());
        }
        Ok(client)
    }
}

/// Turns a client error into "absent" (`Ok(false)`) or a failure.
fn classify(
    error: OciDistributionError,
    reference: &str,
    registry: &str,
    username: Option<&str>,
) -> Result<bool, OciFailure> {
    let unauthorized = |status: &str| {
        let message = match username {
            Some(user) => format!(
                "checking {reference}: registry {registry} refused the credentials of user \
                 {user:?} ({status}); check the user name and the password secret"
            ),
            None => format!(
                "checking {reference}: registry {registry} requires credentials ({status}) and \
                 none were given"
            ),
        };
        Err(OciFailure {
            message,
            unauthorized: true,
        })
    };
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => Ok(false),
        OciDistributionError::ServerError { code: 404, .. } => Ok(false),
        OciDistributionError::UnauthorizedError { .. } => unauthorized("HTTP 401"),
        OciDistributionError::AuthenticationFailure(_) => unauthorized("authentication failed"),
        OciDistributionError::ServerError { code: 401, .. } => unauthorized("HTTP 401"),
        OciDistributionError::ServerError { code: 403, .. } => unauthorized("HTTP 403"),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Ok(false)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized(&format!("registry error: {envelope}"))
            } else {
                Err(OciFailure::other(format!(
                    "checking {reference}: registry {registry} answered with an error: {envelope}"
                )))
            }
        }
        other => Err(OciFailure::other(format!(
            "checking {reference} at registry {registry}: {}",
            error_chain(&other)
        ))),
    }
}

/// The error and its sources, `: `-separated (reqwest's top-level message
/// alone rarely says why a connection failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Makes `ring` the process's rustls provider (the one the rest of the host
/// already links) unless one is installed; the registry client needs one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way one is installed.
        _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The scheme and registry (`host[:port]`) a request for `reference` goes
/// to, for the grant check; `None` when the reference does not parse.
fn registry_of(reference: &str, insecure: bool) -> Option<(&'static str, String)> {
    let image: Reference = reference.parse().ok()?;
    let scheme = if insecure { "http" } else { "https" };
    Some((scheme, image.resolve_registry().to_string()))
}

impl Host for CapabilityState {
    async fn manifest_exists(
        &mut self,
        reference: String,
        login: OciLogin,
        password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<bool, OciError>> {
        let Some((scheme, registry)) = registry_of(&reference, login.insecure) else {
            return Ok(Err(OciError {
                message: format!("invalid image reference {reference:?}"),
                unauthorized: false,
                denied: false,
            }));
        };
        if let Err(refusal) = self.policy.registry(scheme, &registry) {
            return Ok(Err(OciError {
                message: refusal.report(&self.plugin_name),
                unauthorized: false,
                denied: true,
            }));
        }
        let password = self.secret_value(&password)?;
        let outcome = manifest_exists(
            &self.registry_clients,
            &reference,
            login.username.as_deref(),
            password.as_deref(),
            login.insecure,
        )
        .await;
        Ok(outcome.map_err(|failure| OciError {
            message: failure.message,
            unauthorized: failure.unauthorized,
            denied: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_reference_is_named() {
        let failure = manifest_exists(
            &RegistryClients::default(),
            "Not A Reference!",
            None,
            None,
            true,
        )
        .await
        .unwrap_err();
        assert!(failure.message.contains("Not A Reference!"), "{failure}");
        assert!(!failure.unauthorized);
    }

    #[tokio::test]
    async fn the_password_is_redacted_from_messages() {
        // Nothing listens on port 9 of 127.0.0.1: a connection error whose
        // message is made to contain the password (in the reference).
        let failure = manifest_exists(
            &RegistryClients::default(),
            "127.0.0.1:9/hunter2x:v1",
            Some("u"),
            Some("hunter2x"),
            true,
        )
        .await
        .unwrap_err();
        assert!(!failure.message.contains("hunter2x"), "{failure}");
        assert!(failure.message.contains("<redacted>"), "{failure}");
    }

    #[test]
    fn the_grant_check_uses_the_references_registry_and_scheme() {
        assert_eq!(
            registry_of("registry.example.com/team/app:v1", false),
            Some(("https", "registry.example.com".to_string()))
        );
        assert_eq!(
            registry_of("127.0.0.1:5000/app:v1", true),
            Some(("http", "127.0.0.1:5000".to_string()))
        );
        assert_eq!(
            registry_of("team/app", false),
            Some(("https", "index.docker.io".to_string()))
        );
        assert_eq!(registry_of("Not A Reference!", false), None);
    }
}
