//! A small GraphQL client for the W&B API: one POST per operation to
//! `<base_url>/graphql`, HTTP basic auth user `api`, transient failures
//! retried with backoff, the API key scrubbed from every error.
//!
//! The operations it sends are the texts the real W&B client (0.31.0)
//! sends, kept next to it in `operations.json` (see `operation`);
//! `tests/wandb_fake/extract_operations.py` regenerates that file from the
//! installed `wandb` package.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::settings::{ApiKey, ApiSettings, RetryPolicy};

/// The operation texts the real W&B client (0.31.0) sends, as
/// `tests/wandb_fake/extract_operations.py` records them.
const OPERATIONS_JSON: &str = include_str!("operations.json");

/// The longest piece of a server's answer quoted in an error.
const MAX_QUOTE: usize = 300;

/// The text of the operation `key` in `operations.json`: the section
/// `operations` (what the W&B launch agent sends), else the section
/// `job_artifact_fetch` (what its job-artifact fetch sends).
pub(super) fn operation(key: &str) -> Result<&'static str, ApiError> {
    static OPS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let ops = OPS.get_or_init(|| {
        let doc: Value = serde_json::from_str(OPERATIONS_JSON).unwrap_or(Value::Null);
        let mut ops: HashMap<String, String> = HashMap::new();
        // The queue operations first; the job-artifact fetch texts (section
        // `job_artifact_fetch`) fill in the names the first section lacks.
        for section in [&doc["operations"], &doc["job_artifact_fetch"]["operations"]] {
            for (k, op) in section.as_object().into_iter().flatten() {
                if let Some(query) = op["query"].as_str() {
                    ops.entry(k.clone()).or_insert_with(|| query.to_string());
                }
            }
        }
        ops
    });
    ops.get(key).map(String::as_str).ok_or_else(|| {
        ApiError::Failed(format!(
            "internal error: W&B operation {key} missing from operations.json"
        ))
    })
}

/// One mutation document with the root fields of the mutations `keys`:
/// their variable definitions joined (the texts must not define a variable
/// twice) and their selections in order, named after them joined by `_`.
pub(super) fn combined_mutation(keys: &[&str]) -> Result<(String, String), ApiError> {
    let mut names = Vec::new();
    let mut variables = Vec::new();
    let mut fields = Vec::new();
    for key in keys {
        let text = operation(key)?;
        let broken = || {
            ApiError::Failed(format!(
                "internal error: W&B operation {key} is not a mutation with variables"
            ))
        };
        let rest = text.trim().strip_prefix("mutation").ok_or_else(broken)?;
        let open = rest.find('(').ok_or_else(broken)?;
        let close = open + rest[open..].find(')').ok_or_else(broken)?;
        let body_start = close + rest[close..].find('{').ok_or_else(broken)?;
        let body_end = rest
            .rfind('}')
            .filter(|e| *e > body_start)
            .ok_or_else(broken)?;
        names.push(rest[..open].trim().to_string());
        variables.push(rest[open + 1..close].trim().to_string());
        fields.push(rest[body_start + 1..body_end].trim().to_string());
    }
    let name = names.join("_");
    let query = format!(
        "mutation {name}({}) {{\n{}\n}}",
        variables.join(", "),
        fields.join("\n")
    );
    Ok((name, query))
}

/// How a W&B API request failed. Messages name the server and the
/// operation, never the API key.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server refused the API key (HTTP 401 or 403).
    #[error(
        "W&B at {base_url} refused the API key ({status}): {message}; check \
         WANDB_API_KEY or the ~/.netrc entry (`wandb login`)"
    )]
    Unauthorized {
        /// The server.
        base_url: String,
        /// The status code.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Anything else, already worded for people.
    #[error("{0}")]
    Failed(String),
}

/// What one try ended with.
enum Attempt {
    /// The answer's `data`.
    Done(Value),
    /// A transient failure: why, how long the server asked to wait, and
    /// whether the request may have reached the server.
    Retry(String, Option<Duration>, bool),
    /// A failure not worth retrying.
    Fail(ApiError),
}

/// The GraphQL endpoint of one W&B server, with its API key. Cheap to
/// clone (the HTTP connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    base_url: String,
    key: ApiKey,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("key", &self.key)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Client {
    /// A client of the server `settings` name, with its API key (from the
    /// settings, else `~/.netrc`). Sends nothing yet.
    ///
    /// Fails when the base URL is not an `http://` or `https://` URL with a
    /// host, or when there is no API key for it.
    pub fn new(settings: &ApiSettings) -> Result<Self, ApiError> {
        let base_url = settings.base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base_url).map_err(|e| {
            ApiError::Failed(format!("W&B base URL {base_url:?} is not a URL: {e}"))
        })?;
        let host = url.host_str().unwrap_or_default().to_string();
        if !matches!(url.scheme(), "http" | "https") || host.is_empty() {
            return Err(ApiError::Failed(format!(
                "W&B base URL {base_url:?} must be an http:// or https:// URL with a host"
            )));
        }
        let key = settings
            .resolve_key(&host, url.port())
            .map_err(ApiError::Failed)?;
        crate::clients::tls::install_crypto_provider();
        let timeout = settings.request_timeout;
        let http = reqwest::Client::builder()
            .user_agent(concat!("launch-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()
            .map_err(|e| ApiError::Failed(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoint: format!("{base_url}/graphql"),
            base_url,
            key,
            retry: settings.retry,
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Runs operation `key` of `operations.json` (its section `operations`,
    /// else `job_artifact_fetch`; `name#variant` keys send operation `name`)
    /// with `variables` and returns its `data`.
    pub async fn run(&self, key: &str, variables: Value) -> Result<Value, ApiError> {
        self.run_tracked(key, variables).await.map(|(data, _)| data)
    }

    /// Like [`Client::run`], also telling whether an earlier try may have
    /// reached the server before it failed (so a mutation may have taken
    /// effect twice, e.g. an ack that now reports `success: false`).
    pub async fn run_tracked(
        &self,
        key: &str,
        variables: Value,
    ) -> Result<(Value, bool), ApiError> {
        let query = operation(key)?;
        let name = key.split('#').next().unwrap_or(key);
        self.send(name, query, variables).await
    }

    /// Runs the mutations `keys` of `operations.json` as one request (one
    /// document whose root fields are theirs, run in order by the server,
    /// as GraphQL runs a mutation's fields) with the union of their
    /// `variables`, and returns the `data` holding every field's answer.
    /// One request instead of several: the agent's heartbeat rides along
    /// with a pop.
    pub async fn run_together(&self, keys: &[&str], variables: Value) -> Result<Value, ApiError> {
        let (name, query) = combined_mutation(keys)?;
        self.send(&name, &query, variables)
            .await
            .map(|(data, _)| data)
    }

    /// Sends one GraphQL document, retrying transient failures.
    async fn send(
        &self,
        name: &str,
        query: &str,
        variables: Value,
    ) -> Result<(Value, bool), ApiError> {
        let body = json!({"query": query, "variables": variables, "operationName": name});
        let mut retry = 0;
        let mut maybe_delivered = false;
        loop {
            match self.attempt(name, &body).await {
                Attempt::Done(data) => return Ok((data, maybe_delivered)),
                Attempt::Fail(error) => return Err(self.scrub_error(error)),
                Attempt::Retry(why, after, delivered) => {
                    maybe_delivered |= delivered;
                    if retry >= self.retry.retries {
                        return Err(ApiError::Failed(self.scrub(&format!(
                            "W&B at {}: {name} failed after {} tries: {why}",
                            self.base_url,
                            retry + 1
                        ))));
                    }
                    let wait = after
                        .map(|a| a.min(self.retry.max_delay))
                        .unwrap_or_else(|| self.retry.delay(retry));
                    tracing::warn!(
                        operation = name,
                        "W&B request failed ({}); retrying in {:.1} s",
                        self.scrub(&why),
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
            }
        }
    }

    /// One try.
    async fn attempt(&self, name: &str, body: &Value) -> Attempt {
        let response = match self
            .http
            .post(&self.endpoint)
            .basic_auth("api", Some(self.key.expose()))
            .json(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(describe(&e), None, !e.is_connect()),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Attempt::Retry(describe(&e), None, true),
        };
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Attempt::Fail(ApiError::Unauthorized {
                base_url: self.base_url.clone(),
                status: status.as_u16(),
                message: error_messages(&text).unwrap_or_else(|| quote(&text)),
            });
        }
        if status.is_server_error() || status.as_u16() == 429 {
            let delivered = status.as_u16() != 429;
            return Attempt::Retry(
                format!("HTTP {status}: {}", quote(&text)),
                retry_after,
                delivered,
            );
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let message = error_messages(&text).unwrap_or_else(|| quote(&text));
            return Attempt::Fail(ApiError::Failed(format!(
                "W&B at {}: {name} got HTTP {status}: {message}",
                self.base_url
            )));
        }
        let Some(parsed) = parsed else {
            return Attempt::Fail(ApiError::Failed(format!(
                "W&B at {}: {name} answered with something that is not JSON: {}",
                self.base_url,
                quote(&text)
            )));
        };
        if let Some(messages) = error_messages(&text) {
            return Attempt::Fail(ApiError::Failed(format!(
                "W&B at {}: {name} failed: {messages}",
                self.base_url
            )));
        }
        Attempt::Done(parsed.get("data").cloned().unwrap_or(Value::Null))
    }

    /// GETs `url` and returns its body, at most `limit` bytes (more is an
    /// error). With `auth`, sends the W&B basic auth (only for URLs on the
    /// W&B server itself); pre-signed storage URLs are fetched without it,
    /// as the W&B client does. Transient failures (connection errors, HTTP
    /// 5xx and 429) are retried like GraphQL calls. Errors name the URL
    /// without its query string (which may hold a signature).
    pub async fn get_bytes(
        &self,
        url: &str,
        auth: bool,
        limit: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, ApiError> {
        let shown = url.split(['?', '#']).next().unwrap_or_default().to_string();
        let mut retry = 0;
        loop {
            let why = match self.get_once(url, auth, limit, timeout).await {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(fatal)) => {
                    return Err(ApiError::Failed(
                        self.scrub(&format!("GET {shown}: {fatal}")),
                    ));
                }
                Err(transient) => transient,
            };
            if retry >= self.retry.retries {
                return Err(ApiError::Failed(self.scrub(&format!(
                    "GET {shown} failed after {} tries: {why}",
                    retry + 1
                ))));
            }
            let wait = self.retry.delay(retry);
            tracing::warn!(
                "GET {} failed ({}); retrying in {:.1} s",
                self.scrub(&shown),
                self.scrub(&why),
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// One GET: `Err` is transient, `Ok(Err)` is not worth retrying.
    async fn get_once(
        &self,
        url: &str,
        auth: bool,
        limit: u64,
        timeout: Duration,
    ) -> Result<Result<Vec<u8>, String>, String> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
            _ => return Ok(Err("not an http:// or https:// URL".to_string())),
        };
        let mut request = self.http.get(parsed).timeout(timeout);
        if auth {
            request = request.basic_auth("api", Some(self.key.expose()));
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Err(describe(&e)),
        };
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {}", quote(&text)));
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = error_messages(&text).unwrap_or_else(|| quote(&text));
            return Ok(Err(format!("HTTP {status}: {message}")));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Ok(Err(format!(
                "the answer is larger than the expected {limit} bytes"
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Ok(Err(format!(
                            "the answer is larger than the expected {limit} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(Ok(body)),
                Err(e) => return Err(describe(&e)),
            }
        }
    }

    /// `text` with every occurrence of the API key replaced by
    /// `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        let secret = self.key.expose();
        if secret.is_empty() {
            text.to_string()
        } else {
            text.replace(secret, "<redacted>")
        }
    }

    fn scrub_error(&self, error: ApiError) -> ApiError {
        match error {
            ApiError::Unauthorized {
                base_url,
                status,
                message,
            } => ApiError::Unauthorized {
                base_url,
                status,
                message: self.scrub(&message),
            },
            ApiError::Failed(message) => ApiError::Failed(self.scrub(&message)),
        }
    }
}

/// The `errors[].message`s of a GraphQL answer, joined, if there are any.
fn error_messages(text: &str) -> Option<String> {
    let parsed: Value = serde_json::from_str(text).ok()?;
    let errors = parsed.get("errors")?.as_array()?;
    let messages: Vec<String> = errors
        .iter()
        .map(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string())
        })
        .collect();
    (!messages.is_empty()).then(|| quote(&messages.join("; ")))
}

/// At most [`MAX_QUOTE`] characters of `text`.
fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty answer)".to_string(),
        None => text.to_string(),
    }
}

/// A transport error with its causes (reqwest's own message is terse).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
