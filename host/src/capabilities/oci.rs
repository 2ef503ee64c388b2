//! `launch:plugin/oci`: OCI distribution registries for registry plugins.
//!
//! Two layers:
//!
//! * [`manifest_exists`], plain Rust over a `reqwest` client: whether a
//!   registry has a manifest for `registry/repository:tag`, with basic
//!   credentials (exchanged for a bearer token where the registry asks for
//!   it) or anonymously, over HTTPS or, when `insecure`, plain HTTP. Every
//!   request, redirect and token realm goes through
//!   [`registry_auth`]: only to hosts the policy
//!   grants, the credentials only to the origin they are meant for.
//! * the WIT `Host` impl for [`CapabilityState`]: the reference's registry must
//!   be allowed by the plugin's `grants.hosts` (`https://HOST[:PORT]`, or
//!   `http://HOST[:PORT]` when `insecure`; ports default to 443 and 80;
//!   [`GrantPolicy::registry`](super::policy::GrantPolicy::registry), checked
//!   first thing), else the call fails with `denied: true`. The password is the value of
//!   the secret handle the plugin passes (a credential handed on to the
//!   plugin only for the registry it was issued for); the plugin never needs
//!   to read it.
//!
//! No message, log line or error ever contains the password.

use super::policy::GrantPolicy;
use super::registry_auth::{self, Authorization, EgressError, error_chain};
use crate::capabilities::bindings::launch::plugin::oci::{Host, OciError, OciLogin};
use crate::capabilities::secrets::SecretHandle;
use crate::capabilities::state::{CapabilityState, HostCall};
use oci_client::Reference;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use std::time::Duration;
use wasmtime::component::Resource;

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one [`manifest_exists`] may take in all (token exchange, HEAD,
/// and the GET some registries need).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The manifest types a lookup accepts (Docker's and OCI's, single and
/// lists).
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// A failure talking to a registry; never contains the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciFailure {
    /// What went wrong, naming the reference, in the registry's words where
    /// it gave any.
    pub message: String,
    /// Whether the registry refused the credentials (or asked for some and
    /// none were given): HTTP 401 or 403.
    pub unauthorized: bool,
    /// Whether the plugin's grants refused a request (the registry, a
    /// redirect, a token realm); nothing was sent there.
    pub denied: bool,
}

impl OciFailure {
    fn other(message: String) -> Self {
        OciFailure {
            message,
            unauthorized: false,
            denied: false,
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
/// asked with the client of `clients`, every request held to `policy`
/// (the registry, each redirect, the token realm; `plugin` names the
/// plugin in a refusal).
///
/// A missing tag or repository is `Ok(false)`. `username` with `password`
/// logs in with basic credentials; no `username` is anonymous access (a
/// password without a user name is an error). `insecure` speaks plain HTTP
/// instead of HTTPS.
///
/// # Errors
///
/// A reference that does not parse (the message names it), a registry
/// that cannot be reached or answers with an error, a request the policy
/// refuses (`denied`, naming the host), and — with `unauthorized` set — a
/// registry that refuses the credentials or wants some (401/403).
pub async fn manifest_exists(
    clients: &RegistryClients,
    policy: &GrantPolicy,
    plugin: &str,
    reference: &str,
    username: Option<&str>,
    password: Option<&str>,
    insecure: bool,
) -> Result<bool, OciFailure> {
    let redact = |message: String| match password {
        Some(p) if !p.is_empty() => message.replace(p, "<redacted>"),
        _ => message,
    };
    let outcome = async {
        let image: Reference = reference.parse().map_err(|e| {
            OciFailure::other(format!("invalid image reference {reference:?}: {e}"))
        })?;
        let login = match (username, password) {
            (Some(user), password) => Some((user, password.unwrap_or_default())),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(OciFailure::other(format!(
                    "checking {reference}: a password was given without a user name"
                )));
            }
        };
        let client = clients.client().map_err(|e| {
            OciFailure::other(format!(
                "checking {reference}: cannot create the registry client: {e}"
            ))
        })?;
        let registry = image.resolve_registry().to_string();
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
            OciFailure::other(format!(
                "checking {reference}: registry {registry:?} is not a host: {e}"
            ))
        })?;
        let fail = |error: EgressError| match error {
            EgressError::Refused(refusal) => OciFailure {
                message: format!("checking {reference}: {}", refusal.report(plugin)),
                unauthorized: false,
                denied: true,
            },
            EgressError::Unauthorized(why) => unauthorized(reference, &registry, username, &why),
            EgressError::Other(why) => OciFailure::other(format!(
                "checking {reference} at registry {registry}: {why}"
            )),
        };
        let auth =
            registry_auth::authorize(&client, policy, &base, image.repository(), "pull", login)
                .await
                .map_err(fail)?;
        let target = image
            .digest()
            .or(image.tag())
            .unwrap_or("latest")
            .to_string();
        let url = base
            .join(&format!("/v2/{}/manifests/{target}", image.repository()))
            .map_err(|e| OciFailure::other(format!("checking {reference}: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
        let header = auth.header();
        let response = registry_auth::send(
            &client,
            policy,
            Method::HEAD,
            url,
            &headers,
            header.as_ref(),
        )
        .await
        .map_err(fail)?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                let why = format!("HTTP {}", status.as_u16());
                Err(match auth {
                    // Credentials were asked for and none given.
                    Authorization::Anonymous => unauthorized(reference, &registry, None, &why),
                    _ => unauthorized(reference, &registry, username, &why),
                })
            }
            status => Err(OciFailure::other(format!(
                "checking {reference}: registry {registry} answered with an error: HTTP {}",
                status.as_u16()
            ))),
        }
    };
    let outcome = tokio::time::timeout(CALL_TIMEOUT, outcome)
        .await
        .unwrap_or_else(|_| {
            Err(OciFailure::other(format!(
                "checking {reference}: the registry did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))
        });
    outcome.map_err(|f| OciFailure {
        message: redact(f.message),
        ..f
    })
}

/// The failure of a registry that refused the credentials of `username`
/// (or wants some, without one), answering `why`.
fn unauthorized(reference: &str, registry: &str, username: Option<&str>, why: &str) -> OciFailure {
    let message = match username {
        Some(user) => format!(
            "checking {reference}: registry {registry} refused the credentials of user \
             {user:?} ({why}); check the user name and the password secret"
        ),
        None => format!(
            "checking {reference}: registry {registry} requires credentials ({why}) and none \
             were given"
        ),
    };
    OciFailure {
        message,
        unauthorized: true,
        denied: false,
    }
}

/// The plugin host's HTTP client for registries: building one loads the
/// TLS roots (tens of milliseconds), so it is made once and shared. It
/// keeps no credentials or tokens and follows no redirect by itself
/// ([`registry_auth::send`] follows granted ones).
///
/// A client's pooled connections belong to the async runtime they were
/// made on, so it belongs to a plugin host (one per runtime), not to the
/// process.
#[derive(Default)]
pub struct RegistryClients {
    client: std::sync::OnceLock<reqwest::Client>,
}

impl RegistryClients {
    /// The client, made on first use.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        crate::clients::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(CALL_TIMEOUT)
            .user_agent(concat!("launch-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(self.client.get_or_init(|| client).clone())
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
                message: self.refused(&refusal),
                unauthorized: false,
                denied: true,
            }));
        }
        let password = match self.secret_for(&password, &reference)? {
            Ok(password) => password,
            Err(refusal) => {
                return Ok(Err(OciError {
                    message: self.refused(&refusal),
                    unauthorized: false,
                    denied: true,
                }));
            }
        };
        let outcome = manifest_exists(
            &self.registry_clients,
            &self.policy,
            &self.plugin_name,
            &reference,
            login.username.as_deref(),
            password.as_deref(),
            login.insecure,
        )
        .await;
        self.record(|| match &outcome {
            // A hop the grants refused (a token realm, a redirect): only
            // `grants.hosts` refuses those.
            Err(failure) if failure.denied => HostCall::Refused {
                message: failure.message.clone(),
                grant: "grants.hosts".to_string(),
            },
            _ => HostCall::Asked {
                what: format!("registry {scheme}://{registry} whether {reference} exists"),
                answer: match &outcome {
                    Ok(true) => "it exists".to_string(),
                    Ok(false) => "it does not exist".to_string(),
                    Err(failure) => format!("failed: {}", failure.message),
                },
            },
        });
        Ok(outcome.map_err(|failure| OciError {
            message: failure.message,
            unauthorized: failure.unauthorized,
            denied: failure.denied,
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
            &GrantPolicy::default(),
            "test",
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
            &GrantPolicy::for_hosts(&["http://127.0.0.1:9"]).unwrap(),
            "test",
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
