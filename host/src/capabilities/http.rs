//! Outbound HTTP through `wasi:http`, allowed only to granted hosts.
//!
//! A grant is a `scheme://host[:port]` pattern, as Spin's
//! `allowed_outbound_hosts`:
//!
//! | pattern | allows |
//! |---|---|
//! | `https://api.example.com` | that host on port 443 |
//! | `http://127.0.0.1:5000` | that host and port |
//! | `https://*.amazonaws.com` | any subdomain (one or more labels), port 443 |
//! | `http://localhost:*` | any port of that host |
//! | `*://registry.local:5000` | http or https on that port |
//!
//! [`HostPattern::parse`] is the one parser of these patterns: config
//! validation uses it (for errors at the pattern's line and column) and the
//! plugin's [`GrantPolicy`] is compiled with it at load; no call parses a
//! pattern.

use super::environment_auth::{AuthRequest, EnvironmentAuthorizer, MAX_AUTHORIZED_BODY};
use super::policy::GrantPolicy;
use super::state::{HostCall, HostCallRecord};
use std::sync::Arc;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// What `send_request` resolves to.
type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

/// One allowed destination pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `scheme://host[:port]`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("must look like scheme://host[:port], e.g. https://example.com")?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_string()),
            other => return Err(format!("scheme {other:?} is not http, https or *")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err("must not have a path".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("port {port:?} is not a number or *"))?,
                ),
            ),
            None => {
                let default = match scheme.as_deref() {
                    Some("http") => Some(80),
                    Some("https") => Some(443),
                    _ => return Err("with scheme * the port must be given".into()),
                };
                (rest, default)
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let wildcard_ok = match host.strip_prefix("*.") {
            Some(rest) => !rest.contains('*'),
            None => host == "*" || !host.contains('*'),
        };
        if !wildcard_ok {
            return Err("a wildcard may only be the whole host or a leading `*.`".into());
        }
        Ok(HostPattern {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if let Some(s) = &self.scheme
            && s != scheme
        {
            return false;
        }
        if let Some(p) = self.port
            && p != port
        {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.host == "*" {
            return true;
        }
        match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        }
    }
}

/// The hosts one plugin may reach.
#[derive(Clone, Debug, Default)]
pub struct HostAllowList {
    patterns: Vec<HostPattern>,
}

impl HostAllowList {
    /// Builds the list from grant strings; the error names the bad one.
    pub fn new(grants: &[String]) -> Result<Self, String> {
        let patterns = grants
            .iter()
            .map(|g| HostPattern::parse(g).map_err(|e| format!("{g:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(HostAllowList { patterns })
    }

    /// Whether the URI may be requested. A URI with userinfo
    /// (`user[:password]@host`) never may: the allowlist and the
    /// connection would not agree on which host it names.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        if has_userinfo(uri) {
            return false;
        }
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.patterns.iter().any(|p| p.allows(scheme, host, port))
    }
}

/// Whether `uri`'s authority carries userinfo (`user[:password]@`).
pub fn has_userinfo(uri: &http::Uri) -> bool {
    uri.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// The most outgoing requests one call may have in flight at once
/// (`handle` does not wait: without a cap a plugin could open connections
/// in a loop until the host runs out).
pub const MAX_HTTP_IN_FLIGHT: usize = 64;

/// `wasi:http` hooks that refuse requests the plugin's policy does not
/// allow ([`GrantPolicy::http`]), and requests past
/// [`MAX_HTTP_IN_FLIGHT`]; have the environment authorize those to origins
/// its grant marks `auth: environment`
/// ([`environment_auth`](super::environment_auth)).
pub struct GrantedHttpHooks {
    /// The plugin's grants.
    pub policy: Arc<GrantPolicy>,
    /// The plugin's name, for the log and the refusal.
    pub plugin: Arc<str>,
    /// Requests of this call in flight (sent and not yet done, response
    /// body included).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Where the call's host calls are recorded, when they are (see
    /// [`HostCallRecord`]).
    pub host_calls: Option<HostCallRecord>,
    /// The environment that authorizes requests to `environment_auth`
    /// origins; none when the agent has none that can (those requests are
    /// then refused).
    pub authorizer: Option<Arc<dyn EnvironmentAuthorizer>>,
}

/// One request in flight, counted until dropped.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WasiHttpHooks for GrantedHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if let Err(refusal) = self.policy.http(request.uri()) {
            let message = refusal.report(&self.plugin);
            if let Some(record) = &self.host_calls {
                record.push(HostCall::Refused {
                    message,
                    grant: refusal.grant().to_string(),
                });
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        let open = self
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        if open >= MAX_HTTP_IN_FLIGHT {
            tracing::warn!(
                plugin = %self.plugin,
                "refused an outbound HTTP request: {MAX_HTTP_IN_FLIGHT} are in flight already (the per-call cap)"
            );
            drop(guard);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // What is recorded leaves the query out (it may carry signatures or
        // tokens), as refusals do.
        let asked = self.host_calls.clone().map(|record| {
            let uri = request.uri();
            let shown = format!(
                "HTTP {} {}://{}{}",
                request.method(),
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map(|a| a.as_str()).unwrap_or(""),
                uri.path()
            );
            (record, shown)
        });
        let authorize = if self.policy.environment_auth(request.uri()) {
            match &self.authorizer {
                Some(authorizer) => Some(authorizer.clone()),
                None => {
                    tracing::warn!(
                        plugin = %self.plugin,
                        uri = %shown_uri(request.uri()),
                        "refused a request marked `auth: environment` (grants.environment_auth):                          the configured environment lends no credentials (it exports no                          `authorizer`)"
                    );
                    return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
                }
            }
        } else {
            None
        };
        let plugin = self.plugin.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            let request = match authorize {
                Some(authorizer) => authorized(request, &*authorizer, &plugin).await?,
                None => request,
            };
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            if let Some((record, what)) = asked {
                let answer = match &sent {
                    Ok((response, _)) => format!("status {}", response.status()),
                    Err(error) => format!("failed: {error}"),
                };
                record.push(HostCall::Asked { what, answer });
            }
            let (response, io) = sent?;
            let io = async move {
                let done = io.await;
                drop(guard);
                done
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// `scheme://host[:port]/path` of `uri`, its query left out (it may carry
/// a signature).
fn shown_uri(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?"),
        uri.path()
    )
}

/// `request` with the headers `authorizer` returns for it set; its body is
/// buffered (at most [`MAX_AUTHORIZED_BODY`]) to hash it. A refusal is
/// logged, naming the environment and its reason, and the request is not
/// sent.
async fn authorized(
    request: http::Request<WasiBody>,
    authorizer: &dyn EnvironmentAuthorizer,
    plugin: &str,
) -> Result<http::Request<WasiBody>, wasmtime_wasi_http::Error> {
    use http_body_util::BodyExt;
    use sha2::Digest;
    let (mut parts, body) = request.into_parts();
    let shown = shown_uri(&parts.uri);
    let refused = |why: &str| {
        tracing::warn!(
            plugin,
            uri = %shown,
            environment = %authorizer.label(),
            "refused a request marked `auth: environment`: {why}"
        );
        wasmtime_wasi_http::Error::HttpRequestDenied
    };
    let body = http_body_util::Limited::new(body, MAX_AUTHORIZED_BODY)
        .collect()
        .await
        .map_err(|e| {
            refused(&format!(
                "its body could not be read to be signed (at most {MAX_AUTHORIZED_BODY} bytes): {e}"
            ))
        })?
        .to_bytes();
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push(("host".into(), authority.as_str().to_string()));
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority.as_str())
                .map_err(|_| refused("its host is not a valid header"))?,
        );
    }
    let request = AuthRequest {
        method: parts.method.as_str().to_string(),
        url: parts.uri.to_string(),
        headers,
        body_sha256: hex::encode(sha2::Sha256::digest(&body)),
    };
    let extra = authorizer
        .authorize(plugin, request)
        .await
        .map_err(|why| refused(&why))?;
    for (name, value) in extra {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            refused(&format!(
                "the environment returned a bad header name {name:?}"
            ))
        })?;
        let value = http::HeaderValue::from_str(&value)
            .map_err(|_| refused(&format!("the environment returned a bad value for {name}")))?;
        parts.headers.insert(name, value);
    }
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let p = HostPattern::parse("https://*.amazonaws.com").unwrap();
        assert!(p.allows("https", "ecr.us-east-1.amazonaws.com", 443));
        assert!(!p.allows("https", "amazonaws.com", 443));
        assert!(!p.allows("http", "s3.amazonaws.com", 443));
        assert!(!p.allows("https", "evilamazonaws.com", 443));
        let p = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(p.allows("http", "127.0.0.1", 5000));
        assert!(!p.allows("http", "127.0.0.2", 5000));
        let p = HostPattern::parse("http://localhost:8080").unwrap();
        assert!(!p.allows("http", "localhost", 8081));
    }

    #[test]
    fn a_url_with_userinfo_is_never_allowed() {
        let list =
            HostAllowList::new(&["http://127.0.0.1:*".to_string(), "*://*:*".to_string()]).unwrap();
        assert!(list.allows_uri(&"http://127.0.0.1:5000/".parse().unwrap()));
        for uri in [
            "http://x@127.0.0.1:5000/",
            "http://user:pw@127.0.0.1:5000/v2/",
            "http://127.0.0.1:80@127.0.0.1:5000/",
            "http://@127.0.0.1:5000/",
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert!(!list.allows_uri(&uri), "{uri}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            HostPattern::parse("example.com")
                .unwrap_err()
                .contains("scheme://")
        );
        assert!(HostPattern::parse("ftp://x").unwrap_err().contains("ftp"));
        assert!(
            HostPattern::parse("https://a.*.com")
                .unwrap_err()
                .contains("wildcard")
        );
        assert!(
            HostPattern::parse("https://x/path")
                .unwrap_err()
                .contains("path")
        );
    }
}
