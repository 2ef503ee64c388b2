//! A small blocking HTTP client over `wasi:http/outgoing-handler`, for
//! plugins built for `wasm32-wasip2`. On any other target (a lean plugin,
//! a plugin's native unit tests) [`send`] fails, saying so.
//!
//! Requests go only to hosts the plugin's `grants.hosts` allow; a request
//! to a host its grant marks `auth: environment` (`grants.environment_auth`,
//! contract 0.2) is authorized by the environment plugin on its way out, so
//! the plugin sends it without credentials and reads the response.
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
}

/// Sends `method url` with `headers` and `body`: only in a `wasm32-wasip2`
/// component.
#[cfg(not(target_os = "wasi"))]
pub fn send(
    _method: &str,
    url: &str,
    _headers: &[(&str, &str)],
    _body: &[u8],
) -> Result<Response, String> {
    Err(format!(
        "{}: wasi:http is only available to a plugin built for wasm32-wasip2",
        shown(url)
    ))
}

/// Sends `method url` with `headers` and `body`, and waits for the whole
/// response. The error says what failed (never a header's value: the
/// caller's headers may carry a token).
#[cfg(target_os = "wasi")]
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
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
        other => return Err(format!("unsupported scheme {other:?} in {url:?}")),
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
    let future = outgoing_handler::handle(request, None).map_err(|e| {
        format!(
            "{method_name} {url_shown}: {e:?}",
            method_name = "request",
            url_shown = shown(url)
        )
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
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "the response was taken".to_string())?
        .map_err(|e| format!("{} failed: {e:?}", shown(url)))?;
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
                        ));
                    }
                }
                Err(wasip2::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("{}: reading the response: {e:?}", shown(url))),
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
