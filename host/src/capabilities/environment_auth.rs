//! The grant `auth: environment` (`grants.environment_auth`): requests of
//! a plugin to the hosts it names are authorized by the environment plugin
//! before they leave (since contract 0.2.0).
//!
//! Why: a registry or builder plugin needs the cloud's credentials to call
//! the cloud's API (ECR's `GetAuthorizationToken`, Artifact Registry's
//! repositories) but must never hold the long-lived key. So the plugin
//! sends its request unauthenticated through `wasi:http`; the host's
//! [`GrantedHttpHooks`](super::http::GrantedHttpHooks) see that its origin
//! is marked, buffer its body (at most [`MAX_AUTHORIZED_BODY`]), hand the
//! method, URL, headers and the body's SHA-256 to the environment's
//! `authorizer.authorize` ([`EnvironmentAuthorizer`]), set the headers it
//! returns, and send it. The plugin sees the response, never the headers.
//!
//! | the requesting plugin's grant for the origin | what is sent |
//! |---|---|
//! | `environment_auth` | the request with the environment's headers (SigV4, a bearer token) |
//! | `hosts` only | the request as the plugin wrote it: no credential |
//! | neither | nothing (`HTTP-request-denied`) |
//! | `environment_auth`, and the environment has no `authorizer` or refuses | nothing (`HTTP-request-denied`), with a warning naming the environment and why |
//!
//! The same grant lets a registry or builder plugin have the environment's
//! bearer token for a marked origin as an opaque handle
//! ([`lent`](super::lent), `EnvironmentAuthorizer::bearer_token`): the
//! login of a registry whose password is that token (Artifact Registry).
//!
//! The capabilities sit below the plugin runtime, so the environment is
//! reached through the [`EnvironmentAuthorizer`] trait, which the runtime
//! implements for its loaded environment plugin.

use std::future::Future;
use std::pin::Pin;

/// The largest request body the host buffers to have it authorized (the
/// cloud APIs' JSON and form bodies are a few KiB).
pub const MAX_AUTHORIZED_BODY: usize = 8 << 20;

/// A request as the environment sees it to authorize it.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `scheme://host[:port]/path?query`.
    pub url: String,
    /// The request's headers, names lowercase, `host` included.
    pub headers: Vec<(String, String)>,
    /// Lowercase hex SHA-256 of the body.
    pub body_sha256: String,
}

/// What authorizing returns: the headers to set, or why not (never a
/// secret: the environment's error, scrubbed).
pub type AuthResult = Result<Vec<(String, String)>, String>;

/// What lending a bearer token returns: the token and how many seconds it
/// stays good, or why not (never a secret).
pub type LentResult = Result<(String, u64), String>;

/// The environment plugin, as the capabilities reach it.
pub trait EnvironmentAuthorizer: Send + Sync {
    /// `name version` of the environment, for messages.
    fn label(&self) -> String;

    /// The environment's settings (the `environment:` block merged with
    /// its plugin's `config:`), a JSON object: the host's own clients read
    /// where the cloud's endpoints are from it (`region`, `endpoint-url`,
    /// see [`blob`](super::blob)). `None` when unknown.
    fn settings(&self) -> Option<String> {
        None
    }

    /// Authorizes `request` for the plugin `requester` (`name version`).
    fn authorize(
        &self,
        requester: &str,
        request: AuthRequest,
    ) -> Pin<Box<dyn Future<Output = AuthResult> + Send>>;

    /// The environment's bearer token for `url`'s origin, lent to the
    /// plugin `requester` (`name version`).
    fn bearer_token(
        &self,
        requester: &str,
        url: String,
    ) -> Pin<Box<dyn Future<Output = LentResult> + Send>>;
}
