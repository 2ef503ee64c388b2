//! A small blocking HTTP client over `wasi:http/outgoing-handler`, for
//! plugins built for `wasm32-wasip2`. On any other target (a lean plugin,
//! a plugin's native unit tests) sending fails, saying so.
//!
//! Requests go only to hosts the plugin's `grants.hosts` allow; a request
//! to a host its grant marks `auth: environment` (`grants.environment_auth`,
//! contract 0.2) is authorized by the environment plugin on its way out, so
//! the plugin sends it without credentials and reads the response.
//!
//! Two layers:
//!
//! | API | errors | use it for |
//! |---|---|---|
//! | [`get`], [`head`], [`post`], [`request`] → [`Request`] | [`PluginError`] with the request's stage and `retryable` set | the common cases: headers, basic and bearer auth, JSON bodies, a timeout |
//! | [`send`] | a `String` | anything else (a signed request whose headers are computed by hand) |
//!
//! How failures map to a [`PluginError`] (stage: [`Request::stage`],
//! [`Stage::Agent`] unless set):
//!
//! | failure | retryable |
//! |---|---|
//! | status 5xx, 408 or 429 (with [`Request::send_json`] or [`Response::error_for_status`]) | yes |
//! | any other status that is not 2xx | no |
//! | no answer within the timeout (connect, first byte, between bytes, or the whole response) | yes |
//! | DNS failure, connection refused, reset or closed | yes |
//! | refused by the host (`grants.hosts` does not name the destination) | no; the message says which grant to add |
//! | TLS errors, protocol errors, a body larger than [`MAX_RESPONSE_BYTES`], JSON that does not parse | no |
//!
//! Messages name the method and the URL without its query (which may carry
//! a signature), and never a header's value (headers may carry a token).
//!
//! ```no_run
//! use launch_plugin_sdk::{PluginError, Stage};
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Tags {
//!     tags: Vec<String>,
//! }
//!
//! # fn f(token: &str) -> Result<(), PluginError> {
//! // GET with a bearer token, a JSON answer, a 10 s timeout.
//! let tags: Tags = launch_plugin_sdk::http::get("https://registry.example.com/v2/team/app/tags/list")
//!     .bearer(token)
//!     .timeout(Duration::from_secs(10))
//!     .stage(Stage::Build)
//!     .send_json()?;
//!
//! // HEAD, where 404 is an answer rather than an error.
//! let exists = launch_plugin_sdk::http::head("https://registry.example.com/v2/team/app/manifests/v1")
//!     .basic("robot", token)
//!     .header("accept", "application/vnd.oci.image.manifest.v1+json")
//!     .send()?
//!     .status
//!     == 200;
//!
//! // POST a JSON body.
//! let answer = launch_plugin_sdk::http::post("https://api.example.com/jobs")
//!     .json(&serde_json::json!({"name": "train", "tags": tags.tags}))
//!     .send()?
//!     .error_for_status(Stage::Agent)?;
//! # let _ = (exists, answer); Ok(()) }
//! ```
//!
//! The low-level [`send`]:
//!
//! ```no_run
//! # fn f() -> Result<(), String> {
//! let response = launch_plugin_sdk::http::send(
//!     "POST",
//!     "https://api.ecr.us-east-1.amazonaws.com/",
//!     &[("content-type", "application/x-amz-json-1.1")],
//!     b"{}",
//! )?;
//! assert!(response.status < 600);
//! # Ok(()) }
//! ```

use crate::{PluginError, Stage};
use std::time::Duration;

#[cfg(target_os = "wasi")]
use wasip2::http::outgoing_handler;
#[cfg(target_os = "wasi")]
use wasip2::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};

/// The largest response body read (cloud API answers are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// A response: status, headers (names lowercase) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON into `T`; a body that does not parse is an
    /// error at `stage`, not retryable.
    pub fn json<T: serde::de::DeserializeOwned>(&self, stage: Stage) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PluginError::new(
                stage,
                format!(
                    "the response (HTTP {}) is not the JSON expected: {e}",
                    self.status
                ),
            )
        })
    }
}

/// How long a [`Request`] waits for its response unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A `GET` of `url`.
pub fn get(url: impl Into<String>) -> Request {
    request("GET", url)
}

/// A `HEAD` of `url` (the response has no body).
pub fn head(url: impl Into<String>) -> Request {
    request("HEAD", url)
}

/// A `POST` to `url`; give it a body with [`Request::json`] or
/// [`Request::body`].
pub fn post(url: impl Into<String>) -> Request {
    request("POST", url)
}

/// A request with any `method` (`PUT`, `DELETE`, ...).
pub fn request(method: &str, url: impl Into<String>) -> Request {
    Request {
        method: method.to_string(),
        url: url.into(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: DEFAULT_TIMEOUT,
        stage: Stage::Agent,
        invalid: None,
    }
}

/// A request being put together; [`send`](Request::send) it,
/// or [`send_ok`](Request::send_ok) or [`send_json`](Request::send_json).
///
/// Failures are [`PluginError`]s at the request's [`stage`](Request::stage)
/// (the module's table says which are retryable).
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    stage: Stage,
    /// Why the request cannot be sent (a JSON body that did not serialize),
    /// reported by `send`.
    invalid: Option<String>,
}

impl Request {
    /// Adds a header (repeatable; a name may appear more than once).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets `authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Self {
        self.without_header("authorization")
            .header("authorization", &format!("Bearer {token}"))
    }

    /// Sets `authorization: Basic ...` for `user` and `password`.
    pub fn basic(self, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.without_header("authorization")
            .header("authorization", &format!("Basic {encoded}"))
    }

    /// Sets the body to `value` as JSON, with `content-type:
    /// application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.body("application/json", bytes),
            Err(e) => Self {
                invalid: Some(format!("the JSON body did not serialize: {e}")),
                ..self
            },
        }
    }

    /// Sets the body to `bytes`, with `content-type`.
    pub fn body(mut self, content_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = bytes.into();
        self.without_header("content-type")
            .header("content-type", content_type)
    }

    /// How long to wait for the connection, the first byte of the
    /// response, each later chunk, and the whole response
    /// ([`DEFAULT_TIMEOUT`] unless set). A request that runs out is a
    /// retryable error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The stage failures belong to ([`Stage::Agent`] unless set; a
    /// builder says [`Stage::Build`]).
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }

    /// Sends the request and returns the response, whatever its status
    /// (a `HEAD` that answers 404 is an answer). Fails when no response
    /// came (see the module's table).
    pub fn send(self) -> Result<Response, PluginError> {
        let what = format!("{} {}", self.method, shown(&self.url));
        if let Some(invalid) = &self.invalid {
            return Err(PluginError::new(self.stage, format!("{what}: {invalid}")));
        }
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        exchange(
            &self.method,
            &self.url,
            &headers,
            &self.body,
            Some(self.timeout),
        )
        .map_err(|failure| failure.into_error(self.stage, &what))
    }

    /// Sends the request; a status that is not 2xx is an error (retryable
    /// for 5xx, 408 and 429) whose message has the start of the body.
    pub fn send_ok(self) -> Result<Response, PluginError> {
        let what = format!("{} {}", self.method, shown(&self.url));
        let stage = self.stage;
        let response = self.send()?;
        match status_error(stage, &what, &response) {
            Some(error) => Err(error),
            None => Ok(response),
        }
    }

    /// Sends the request (with `accept: application/json` unless an
    /// `accept` header is set), requires a 2xx status as
    /// [`send_ok`](Request::send_ok) does, and parses the body into `T`.
    pub fn send_json<T: serde::de::DeserializeOwned>(self) -> Result<T, PluginError> {
        let request = if self.has_header("accept") {
            self
        } else {
            self.header("accept", "application/json")
        };
        let what = format!("{} {}", request.method, shown(&request.url));
        let stage = request.stage;
        let response = request.send_ok()?;
        response.json(stage).map_err(|e| PluginError {
            message: format!("{what}: {}", e.message),
            ..e
        })
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
}

/// The error for a response whose status is not 2xx, if it is not.
fn status_error(stage: Stage, what: &str, response: &Response) -> Option<PluginError> {
    if response.is_success() {
        return None;
    }
    let status = response.status;
    let retryable = status >= 500 || status == 408 || status == 429;
    let text = response.text();
    let snippet: String = text.trim().chars().take(200).collect();
    let mut message = format!("{what}: HTTP {status}");
    if !snippet.is_empty() {
        message.push_str(": ");
        message.push_str(&snippet);
    }
    let error = PluginError::new(stage, message);
    Some(if retryable { error.retryable() } else { error })
}

/// Why an exchange failed, as [`Request`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(target_os = "wasi"),
    allow(dead_code, reason = "only wasi:http fails in these ways")
)]
enum FailureKind {
    /// No answer in time: retryable.
    Timeout,
    /// DNS, refused, reset or closed connections: retryable.
    Connection,
    /// The host refused the destination (grants): not retryable.
    Denied,
    /// Anything else: not retryable.
    Other,
}

/// A failed exchange: its kind and what [`send`] reports.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    message: String,
}

impl Failure {
    fn other(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Other,
            message: message.into(),
        }
    }

    fn into_error(self, stage: Stage, what: &str) -> PluginError {
        match self.kind {
            FailureKind::Timeout => {
                PluginError::new(stage, format!("{what}: timed out ({})", self.message)).retryable()
            }
            FailureKind::Connection => PluginError::new(
                stage,
                format!("{what}: could not connect ({})", self.message),
            )
            .retryable(),
            FailureKind::Denied => PluginError::new(
                stage,
                format!(
                    "{what}: refused by the agent: add the destination (scheme://host[:port]) \
                     to this plugin's `grants.hosts` in launch-config.yaml"
                ),
            ),
            FailureKind::Other => PluginError::new(stage, format!("{what}: {}", self.message)),
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::other(message)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::other(message)
    }
}

/// Sends `method url` with `headers` and `body`: only in a `wasm32-wasip2`
/// component.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    exchange(method, url, headers, body, None).map_err(|failure| failure.message)
}

#[cfg(not(target_os = "wasi"))]
fn exchange(
    _method: &str,
    url: &str,
    _headers: &[(&str, &str)],
    _body: &[u8],
    _timeout: Option<Duration>,
) -> Result<Response, Failure> {
    Err(Failure::other(format!(
        "{}: wasi:http is only available to a plugin built for wasm32-wasip2",
        shown(url)
    )))
}

/// The kind of a wasi:http error code.
#[cfg(target_os = "wasi")]
fn kind_of(code: &wasip2::http::types::ErrorCode) -> FailureKind {
    use wasip2::http::types::ErrorCode as E;
    match code {
        E::DnsTimeout
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => FailureKind::Timeout,
        E::DnsError(_)
        | E::DestinationNotFound
        | E::DestinationUnavailable
        | E::DestinationIpUnroutable
        | E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionLimitReached
        | E::HttpResponseIncomplete => FailureKind::Connection,
        E::HttpRequestDenied | E::DestinationIpProhibited => FailureKind::Denied,
        _ => FailureKind::Other,
    }
}

/// Sends `method url` with `headers` and `body`, and waits for the whole
/// response (at most `timeout`, when given). The error says what failed
/// (never a header's value: the caller's headers may carry a token).
#[cfg(target_os = "wasi")]
fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Option<Duration>,
) -> Result<Response, Failure> {
    use wasip2::http::types::RequestOptions;

    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme {other:?} in {url:?}").into()),
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| format!("header {name:?} refused: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad host in {url:?}"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path in {url:?}"))?;
    let outgoing = request.body().map_err(|()| "the request body was taken")?;
    let nanos = timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
    let options = nanos.map(|ns| {
        let options = RequestOptions::new();
        // A host that does not support one of them still gets the overall
        // deadline below.
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
        options
    });
    let future = outgoing_handler::handle(request, options).map_err(|e| Failure {
        kind: kind_of(&e),
        message: format!("request {}: {e:?}", shown(url)),
    })?;
    // A request the host refuses closes the body stream: the response's
    // error (`HttpRequestDenied`) says why, so a write error is only
    // reported when the response has none.
    let mut written = Ok(());
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                written = Err(format!("writing the body: {e:?}"));
                break;
            }
        }
    }
    if written.is_ok() {
        written =
            OutgoingBody::finish(outgoing, None).map_err(|e| format!("finishing the body: {e:?}"));
    }
    let deadline = nanos.map(wasip2::clocks::monotonic_clock::subscribe_duration);
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => {
                let ready = future.subscribe();
                match &deadline {
                    Some(deadline) => {
                        wasip2::io::poll::poll(&[&ready, deadline]);
                        if deadline.ready() && future.get().is_none() {
                            return Err(Failure {
                                kind: FailureKind::Timeout,
                                message: format!(
                                    "no response within {} ms",
                                    timeout.unwrap_or_default().as_millis()
                                ),
                            });
                        }
                    }
                    None => ready.block(),
                }
            }
        }
    };
    let response = response
        .map_err(|()| "the response was taken".to_string())?
        .map_err(|e| Failure {
            kind: kind_of(&e),
            message: format!("{} failed: {e:?}", shown(url)),
        })?;
    written?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let incoming = response.consume().map_err(|()| "the body was taken")?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the body stream was taken")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_RESPONSE_BYTES {
                        return Err(format!(
                            "{}: the response is larger than {MAX_RESPONSE_BYTES} bytes",
                            shown(url)
                        )
                        .into());
                    }
                }
                Err(wasip2::io::streams::StreamError::Closed) => break,
                Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                    let code = wasip2::http::types::http_error_code(&e);
                    return Err(Failure {
                        kind: code.as_ref().map_or(FailureKind::Other, kind_of),
                        message: format!(
                            "{}: reading the response: {}",
                            shown(url),
                            match code {
                                Some(code) => format!("{code:?}"),
                                None => e.to_debug_string(),
                            }
                        ),
                    });
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `url` without its query (which may carry a signature).
pub fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn basic_auth_is_rfc_7617() {
        let r = get("https://x.example/").basic("Aladdin", "open sesame");
        assert_eq!(
            r.headers,
            vec![(
                "authorization".to_string(),
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_string()
            )]
        );
    }

    #[test]
    fn bearer_replaces_earlier_authorization() {
        let r = get("https://x.example/")
            .header("Authorization", "Basic old")
            .header("x-trace", "1")
            .bearer("tok");
        assert_eq!(
            r.headers,
            vec![
                ("x-trace".to_string(), "1".to_string()),
                ("authorization".to_string(), "Bearer tok".to_string())
            ]
        );
    }

    #[test]
    fn json_body_sets_content_type() {
        let r = post("https://x.example/").json(&serde_json::json!({"a": 1}));
        assert_eq!(r.body, br#"{"a":1}"#);
        assert!(r.has_header("content-type"));
        assert_eq!(r.method, "POST");
        let bad =
            post("https://x.example/").json(&std::collections::HashMap::from([(vec![1u8], 1)]));
        let e = bad.send().unwrap_err();
        assert!(e.message.contains("did not serialize"), "{}", e.message);
        assert!(!e.retryable);
    }

    #[test]
    fn statuses_map_to_retryable_or_not() {
        let what = "GET https://x.example/a";
        assert!(status_error(Stage::Agent, what, &response(204, "")).is_none());
        for (status, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (404, false),
            (401, false),
        ] {
            let e = status_error(Stage::Build, what, &response(status, " nope ")).unwrap();
            assert_eq!(e.retryable, retryable, "{status}");
            assert_eq!(e.stage, Stage::Build);
            assert_eq!(e.message, format!("{what}: HTTP {status}: nope"));
        }
    }

    #[test]
    fn failures_map_to_stage_and_retryable() {
        let what = "GET https://x.example/a";
        let cases = [
            (FailureKind::Timeout, true, "timed out"),
            (FailureKind::Connection, true, "could not connect"),
            (FailureKind::Denied, false, "grants.hosts"),
            (FailureKind::Other, false, "boom"),
        ];
        for (kind, retryable, says) in cases {
            let e = Failure {
                kind,
                message: "boom".into(),
            }
            .into_error(Stage::Run, what);
            assert_eq!(e.retryable, retryable, "{kind:?}");
            assert_eq!(e.stage, Stage::Run);
            assert!(e.message.starts_with(what), "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn errors_leave_the_query_and_the_token_out() {
        let e = get("https://x.example/a?X-Amz-Signature=abc")
            .bearer("s3cr3t")
            .stage(Stage::Build)
            .send()
            .unwrap_err();
        assert!(!e.message.contains("abc"), "{}", e.message);
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        assert_eq!(e.stage, Stage::Build);
        assert!(e.message.contains("wasm32-wasip2"), "{}", e.message);
    }

    #[test]
    fn response_json_names_the_status() {
        let e = response(200, "not json")
            .json::<serde_json::Value>(Stage::Agent)
            .unwrap_err();
        assert!(e.message.contains("HTTP 200"), "{}", e.message);
        assert!(!e.retryable);
        let v: serde_json::Value = response(200, r#"{"ok":true}"#).json(Stage::Agent).unwrap();
        assert_eq!(v["ok"], true);
    }
}
