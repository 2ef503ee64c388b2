//! Where the host sends a credential a plugin gave it: only to hosts the
//! plugin is granted, following the registry's token realm and redirects
//! only when they are granted too.
//!
//! A registry answers `401` with a challenge naming a token realm (any URL
//! it likes), and may redirect any request anywhere. Both are the
//! registry's word, not the config's: a client that follows them sends the
//! plugin's password (or the request itself) to a host nobody granted. So
//! every request a capability makes for a plugin goes through [`send`],
//! which checks each hop against the plugin's
//! [`GrantPolicy`] and sends the `Authorization` header to the origin it was
//! meant for only; and credentials are exchanged for a registry token by
//! [`authorize`], which refuses a realm that is not granted before anything
//! is sent to it.
//!
//! | step | checked against | a refusal names |
//! |---|---|---|
//! | the request itself | [`GrantPolicy::http`] (no userinfo, a granted origin) | the URL |
//! | each redirect | [`GrantPolicy::http`] | where from, where to ([`Refusal::Redirect`]) |
//! | the token realm of a `401` challenge | [`GrantPolicy::http`] | the registry and the realm ([`Refusal::TokenRealm`]) |
//!
//! Used by `launch:plugin/oci` (manifest lookups) and `launch:plugin/docker`
//! (a push's credentials are exchanged for a registry token here, so the
//! engine gets a token scoped to the repository, never the password, when
//! the registry uses tokens). Cloud credentials will take the same route.
//!
//! `oci-client` is not used for this: it follows the realm and redirects
//! it is given, with no hook to refuse one.

use super::policy::{GrantPolicy, Refusal};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, Method, StatusCode, Url};

/// The most redirects one request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Why a request made for a plugin failed.
#[derive(Debug)]
pub enum EgressError {
    /// The plugin's grants refused a hop (the request, a redirect, a realm).
    Refused(Refusal),
    /// The server refused the credentials (HTTP 401 or 403); the text says
    /// which server and what it answered.
    Unauthorized(String),
    /// Anything else: the server could not be reached, answered nonsense.
    Other(String),
}

/// `scheme://host[:port]` of `url`, as refusals name it (no userinfo, path
/// or query).
pub fn origin_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("{}://?", url.scheme()),
    }
}

/// Whether the plugin may send a request to `url`.
fn check(policy: &GrantPolicy, url: &Url) -> Result<(), Refusal> {
    let uri: http::Uri = url.as_str().parse().map_err(|_| Refusal::Http {
        uri: origin_of(url),
    })?;
    policy.http(&uri)
}

/// Sends `method url` with `headers`, and with `auth` as its
/// `Authorization` to `url`'s origin only; follows redirects (at most
/// [`MAX_REDIRECTS`]) only to hosts `policy` grants.
///
/// # Errors
///
/// [`EgressError::Refused`] when the request or a redirect goes to a host
/// not granted (nothing is sent there); [`EgressError::Other`] when the
/// server cannot be reached or redirects too often.
pub async fn send(
    client: &Client,
    policy: &GrantPolicy,
    method: Method,
    url: Url,
    headers: &HeaderMap,
    auth: Option<&HeaderValue>,
) -> Result<reqwest::Response, EgressError> {
    check(policy, &url).map_err(EgressError::Refused)?;
    let origin = url.origin();
    let mut url = url;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(auth) = auth
            && url.origin() == origin
        {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| EgressError::Other(error_chain(&e)))?;
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return Ok(response);
        };
        let next = url.join(location).map_err(|e| {
            EgressError::Other(format!(
                "{} redirected to {location:?}, which is not a URL: {e}",
                origin_of(&url)
            ))
        })?;
        if check(policy, &next).is_err() {
            return Err(EgressError::Refused(Refusal::Redirect {
                from: origin_of(&url),
                to: origin_of(&next),
            }));
        }
        url = next;
    }
    Err(EgressError::Other(format!(
        "{} redirected more than {MAX_REDIRECTS} times",
        origin_of(&url)
    )))
}

/// How to authorize requests to a registry, as [`authorize`] found out.
#[derive(Clone)]
pub enum Authorization {
    /// The registry asked for nothing (or there are no credentials to give).
    Anonymous,
    /// Basic credentials, sent to the registry itself.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A registry token from the granted realm, for the repository only.
    Bearer(String),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authorization::Anonymous => "Anonymous",
            Authorization::Basic { .. } => "Basic(<redacted>)",
            Authorization::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

impl Authorization {
    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<HeaderValue> {
        use base64::Engine as _;
        let text = match self {
            Authorization::Anonymous => return None,
            Authorization::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
            Authorization::Bearer(token) => format!("Bearer {token}"),
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// A registry's `401` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    /// `Bearer realm=...,service=...`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
    /// `Basic ...`, or a scheme other than Bearer.
    Basic,
}

/// The challenge in `headers`, if any.
fn challenge(headers: &HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        let Ok(challenges) = http_auth::parse_challenges(text) else {
            continue;
        };
        for c in challenges {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Some(Challenge::Bearer {
                        realm,
                        service: param("service"),
                    });
                }
            } else {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// How to authorize `actions` (`pull`, or `pull,push`) on `repository` of
/// the registry at `base` (`scheme://host[:port]`) with `login` (user name
/// and password; none for anonymous access): asks the registry's `/v2/`
/// for its challenge and, for a Bearer one, exchanges `login` at the
/// realm for a token, after checking that the realm is granted.
///
/// # Errors
///
/// A refusal of the registry, a redirect or the realm by `policy` (nothing
/// is sent to a host refused), the realm refusing the credentials
/// ([`EgressError::Unauthorized`]), or a registry or realm that cannot be
/// reached or answers nonsense.
pub async fn authorize(
    client: &Client,
    policy: &GrantPolicy,
    base: &Url,
    repository: &str,
    actions: &str,
    login: Option<(&str, &str)>,
) -> Result<Authorization, EgressError> {
    let registry = origin_of(base);
    let ping = base
        .join("/v2/")
        .map_err(|e| EgressError::Other(format!("registry {registry}: {e}")))?;
    let response = send(client, policy, Method::GET, ping, &HeaderMap::new(), None).await?;
    let basic = || match login {
        Some((username, password)) => Authorization::Basic {
            username: username.to_string(),
            password: password.to_string(),
        },
        None => Authorization::Anonymous,
    };
    let Some(Challenge::Bearer { realm, service }) = challenge(response.headers()) else {
        return Ok(basic());
    };
    let mut realm_url = Url::parse(&realm).map_err(|e| {
        EgressError::Other(format!(
            "registry {registry} named token realm {realm:?}, which is not a URL: {e}"
        ))
    })?;
    if check(policy, &realm_url).is_err() {
        return Err(EgressError::Refused(Refusal::TokenRealm {
            registry,
            realm: origin_of(&realm_url),
        }));
    }
    {
        let mut query = realm_url.query_pairs_mut();
        query.append_pair("scope", &format!("repository:{repository}:{actions}"));
        if let Some(service) = &service {
            query.append_pair("service", service);
        }
    }
    let auth = basic().header();
    let response = send(
        client,
        policy,
        Method::GET,
        realm_url.clone(),
        &HeaderMap::new(),
        auth.as_ref(),
    )
    .await?;
    let status = response.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(EgressError::Unauthorized(format!(
            "token server {} of registry {registry} answered HTTP {}",
            origin_of(&realm_url),
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(EgressError::Other(format!(
            "token server {} of registry {registry} answered HTTP {}",
            origin_of(&realm_url),
            status.as_u16()
        )));
    }
    #[derive(serde::Deserialize)]
    struct Token {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body = read_capped(response, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|why| {
            EgressError::Other(format!(
                "token server {} of registry {registry} answered no token: {why}",
                origin_of(&realm_url),
            ))
        })?;
    let token: Token = serde_json::from_slice(&body).map_err(|e| {
        EgressError::Other(format!(
            "token server {} of registry {registry} answered no token: {e}",
            origin_of(&realm_url),
        ))
    })?;
    match token.token.or(token.access_token) {
        Some(token) if !token.is_empty() => Ok(Authorization::Bearer(token)),
        _ => Err(EgressError::Other(format!(
            "token server {} of registry {registry} answered no token",
            origin_of(&realm_url)
        ))),
    }
}

/// The largest token response read (a registry token is a few KiB; a
/// realm answering more is not read into the host's memory).
pub const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// The body of `response`, at most `cap` bytes; more is an error.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is over {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its sources, `: `-separated (reqwest's top-level message
/// alone rarely says why a connection failed).
pub fn error_chain(error: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn challenges_are_read() {
        assert_eq!(
            challenge(&headers(&[
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com""#
            ])),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            challenge(&headers(&[r#"Basic realm="Registry Realm""#])),
            Some(Challenge::Basic)
        );
        assert_eq!(challenge(&HeaderMap::new()), None);
        assert_eq!(
            challenge(&headers(&[
                r#"Basic realm="x""#,
                r#"Bearer realm="http://127.0.0.1:1/t""#
            ])),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None
            })
        );
    }

    #[test]
    fn authorization_never_shows_its_secret() {
        let basic = Authorization::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(basic.header().unwrap().is_sensitive());
        assert!(!format!("{:?}", Authorization::Bearer("tok3n".into())).contains("tok3n"));
    }

    #[test]
    fn origins_are_named_without_userinfo_or_path() {
        let url = Url::parse("https://u:p@auth.example.com:8443/token?x=1").unwrap();
        assert_eq!(origin_of(&url), "https://auth.example.com:8443");
        let url = Url::parse("http://127.0.0.1/x").unwrap();
        assert_eq!(origin_of(&url), "http://127.0.0.1");
    }
}
