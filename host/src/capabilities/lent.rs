//! `launch:plugin/lent`: the environment's bearer token lent to a registry
//! or builder plugin as an opaque handle (since contract 0.2.0).
//!
//! Why: Artifact Registry's docker login is the environment's OAuth2
//! access token itself (user `oauth2accesstoken`). The registry plugin must
//! return it as its login's password, yet must never hold a credential of
//! the environment's. So the host asks the environment
//! (`authorizer.bearer-token`, reached through the
//! [`EnvironmentAuthorizer`](super::environment_auth::EnvironmentAuthorizer)
//! that also authorizes `auth: environment` requests) and puts the token in
//! the plugin's table as a handle it cannot `reveal` or `keep`, bound to the
//! origin's registry ([`CredentialScope::origin`]): a push or `oci` lookup
//! with it goes to that registry only, and returned as a login it is bound
//! to the plugin's repository as every login is.
//!
//! | check, in order | refused with |
//! |---|---|
//! | `url` parses, `http`/`https`, no userinfo | `unavailable` naming the URL |
//! | the plugin's grant marks the origin (`grants.environment_auth`) | `not-granted` naming the origin and that grant ([`Refusal::EnvironmentAuth`]) |
//! | an environment lends credentials | `unavailable` naming that none does |
//! | the environment gives a token for the origin | `unavailable` with its reason |
//!
//! The token is cached where it already is: in the environment (GCP's is
//! kept until five minutes before its expiry), so each call is one call
//! into the environment and no round trip to the cloud.
//!
//! # `post-form`
//!
//! Why: Azure Container Registry's login is a refresh token that
//! `POST /oauth2/exchange` gives for the AAD token *in its form body*. The
//! plugin cannot write a lent handle into a body, and must not read the
//! refresh token either. So the host makes the form POST: it fills in the
//! handles the plugin passes as fields, sends each only to the registry it
//! is bound to, and answers the JSON members the plugin names
//! (`refresh_token`) as handles bound to the same registry
//! ([`SecretHandle::obtained`]: opaque, keepable), the rest of the body
//! scrubbed.
//!
//! | check, in order | refused with |
//! |---|---|
//! | `url` parses, `http`/`https`, a host, no userinfo | `unavailable` naming the URL |
//! | `grants.hosts` (or `grants.environment_auth`) allows `url` | `not-granted` ([`Refusal::Http`]) |
//! | each secret field is the plugin's own, or bound to `url`'s registry | `not-granted` ([`Refusal::CredentialScope`]) |
//!
//! The client is the `oci` capability's: no redirect followed, ten seconds
//! to connect, a minute to answer; at most [`MAX_FORM_RESPONSE`] of body.

use super::bindings::launch::plugin::lent::{FormResponse, FormValue, Host};
use super::bindings::launch::plugin::secrets::SecretError;
use super::policy::Refusal;
use super::registry_auth::{error_chain, origin_of, read_capped};
use super::secrets::{CredentialScope, SecretHandle};
use super::state::{CapabilityState, HostCall};
use wasmtime::component::Resource;

/// The largest answer to a `post-form` the host reads (a token server
/// answers a few KiB).
pub const MAX_FORM_RESPONSE: usize = 1 << 20;

/// `url` if it is an absolute `http`/`https` URL with a host and no
/// userinfo.
fn plain_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

/// `body` without the string members of a JSON object named in `wanted`,
/// and those members, in `wanted`'s order; a body that is not a JSON
/// object is left as it is, with no member.
fn take_fields(body: &str, wanted: &[String]) -> (String, Vec<(String, String)>) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(body) else {
        return (body.to_string(), Vec::new());
    };
    let mut taken = Vec::new();
    for field in wanted {
        if taken.iter().any(|(name, _)| name == field) {
            continue;
        }
        if let Some(serde_json::Value::String(_)) = object.get(field)
            && let Some(serde_json::Value::String(value)) = object.remove(field)
        {
            taken.push((field.clone(), value));
        }
    }
    if taken.is_empty() {
        return (body.to_string(), taken);
    }
    (serde_json::Value::Object(object).to_string(), taken)
}

/// `form` as `application/x-www-form-urlencoded`, the secrets' values
/// filled in; refused for a secret bound to another registry than
/// `target` (the URL's, whose origin is `origin`), or handed on bound to
/// none.
fn encode_form(
    form: &[(String, Result<String, SecretHandle>)],
    target: &CredentialScope,
    origin: &str,
) -> Result<String, Refusal> {
    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        let value = match value {
            Ok(text) => text.as_str(),
            Err(secret) => {
                let allowed = match secret.scope() {
                    Some(scope) => scope.registry() == target.registry(),
                    None => secret.revealable(),
                };
                if !allowed {
                    return Err(Refusal::CredentialScope {
                        secret: secret.name().to_string(),
                        bound_to: secret
                            .scope()
                            .map_or_else(|| "no registry".to_string(), |s| s.to_string()),
                        target: origin.to_string(),
                    });
                }
                secret.value()
            }
        };
        encoded.append_pair(name, value);
    }
    Ok(encoded.finish())
}

impl CapabilityState {
    /// Takes the handle `secret` out of the table (the plugin passed it
    /// owned), counting it as no longer held.
    fn take_secret(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<SecretHandle> {
        let handle = self.table.delete(secret)?;
        self.secret_use.handles = self.secret_use.handles.saturating_sub(1);
        Ok(handle)
    }
}

impl Host for CapabilityState {
    async fn post_form(
        &mut self,
        url: String,
        fields: Vec<(String, FormValue)>,
        secret_fields: Vec<String>,
    ) -> wasmtime::Result<Result<FormResponse, SecretError>> {
        // The plugin handed its handles over: take them out first, so
        // none is left behind whatever is refused below.
        let mut form: Vec<(String, Result<String, SecretHandle>)> = Vec::new();
        for (name, value) in fields {
            let value = match value {
                FormValue::Text(text) => Ok(text),
                FormValue::Secret(secret) => Err(self.take_secret(secret)?),
            };
            form.push((name, value));
        }
        let Some(parsed) = plain_url(&url) else {
            return Ok(Err(SecretError::Unavailable(format!(
                "lent.post-form: {:?} is not an http:// or https:// URL with a host (and no \
                 user name or password)",
                crate::text::for_log(&url)
            ))));
        };
        let origin = origin_of(&parsed);
        let uri = match parsed.as_str().parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => {
                return Ok(Err(SecretError::Unavailable(format!(
                    "lent.post-form: {origin}{}: {e}",
                    parsed.path()
                ))));
            }
        };
        if let Err(refusal) = self.policy.http(&uri) {
            return Ok(Err(SecretError::NotGranted(self.refused(&refusal))));
        }
        let target = match CredentialScope::origin(&parsed) {
            Ok(scope) => scope,
            Err(e) => return Ok(Err(SecretError::Unavailable(e))),
        };
        let body = match encode_form(&form, &target, &origin) {
            Ok(body) => body,
            Err(refusal) => return Ok(Err(SecretError::NotGranted(self.refused(&refusal)))),
        };
        let what = format!("POST {origin}{} (a form)", parsed.path());
        let client = match self.registry_clients.client() {
            Ok(client) => client,
            Err(e) => return Ok(Err(SecretError::Unavailable(format!("{what}: {e}")))),
        };
        let sent = client
            .post(parsed.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let why = self.scrub(&error_chain(&e));
                self.record(|| HostCall::Asked {
                    what: what.clone(),
                    answer: format!("failed: {why}"),
                });
                return Ok(Err(SecretError::Unavailable(format!("{what}: {why}"))));
            }
        };
        let status = response.status().as_u16();
        let text = match read_capped(response, MAX_FORM_RESPONSE).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(why) => {
                let why = self.scrub(&why);
                return Ok(Err(SecretError::Unavailable(format!("{what}: {why}"))));
            }
        };
        let (rest, taken) = take_fields(&text, &secret_fields);
        let mut secrets = Vec::new();
        for (field, value) in taken {
            let handle =
                SecretHandle::obtained(format!("{field} from {origin}"), value, target.clone());
            secrets.push((field, self.hold_secret(handle)?));
        }
        // Scrubbed after the tokens were held: the redactor knows them too.
        let body = self.scrub(&rest);
        self.record(|| HostCall::Asked {
            what,
            answer: format!("{status}, {} token(s) as opaque handles", secrets.len()),
        });
        Ok(Ok(FormResponse {
            status,
            body,
            secrets,
        }))
    }

    async fn bearer_token(
        &mut self,
        url: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        let parsed = match reqwest::Url::parse(&url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                u
            }
            _ => {
                return Ok(Err(SecretError::Unavailable(format!(
                    "lent.bearer-token: {:?} is not an http:// or https:// URL with a host (and \
                     no user name or password)",
                    crate::text::for_log(&url)
                ))));
            }
        };
        let origin = origin_of(&parsed);
        let marked = format!("{origin}/")
            .parse::<http::Uri>()
            .is_ok_and(|uri| self.policy.environment_auth(&uri));
        if !marked {
            let refusal = Refusal::EnvironmentAuth { origin };
            return Ok(Err(SecretError::NotGranted(self.refused(&refusal))));
        }
        let Some(lender) = self.hooks.authorizer.clone() else {
            let message = format!(
                "the environment's token for {origin}: the configured environment lends no \
                 credentials (it exports no `authorizer`; a cloud environment such as gcp does)"
            );
            tracing::warn!(plugin = %self.plugin_name, "refused {message}");
            return Ok(Err(SecretError::Unavailable(message)));
        };
        let scope = match CredentialScope::origin(&parsed) {
            Ok(scope) => scope,
            Err(e) => return Ok(Err(SecretError::Unavailable(e))),
        };
        let lent = lender
            .bearer_token(&self.plugin_name, format!("{origin}/"))
            .await;
        let what = format!("environment {} for a token for {origin}", lender.label());
        let (token, _expires_in) = match lent {
            Ok(lent) if !lent.0.is_empty() => lent,
            Ok(_) => {
                self.record(|| HostCall::Asked {
                    what: what.clone(),
                    answer: "an empty token".into(),
                });
                return Ok(Err(SecretError::Unavailable(format!(
                    "environment {} lent an empty token for {origin}",
                    lender.label()
                ))));
            }
            Err(why) => {
                let why = self.scrub(&why);
                tracing::warn!(plugin = %self.plugin_name, environment = %lender.label(), "no token lent for {origin}: {why}");
                self.record(|| HostCall::Asked {
                    what: what.clone(),
                    answer: format!("refused: {why}"),
                });
                return Ok(Err(SecretError::Unavailable(format!(
                    "environment {} lends no token for {origin}: {why}",
                    lender.label()
                ))));
            }
        };
        self.record(|| HostCall::Asked {
            what,
            answer: "lent (an opaque handle)".into(),
        });
        let handle = SecretHandle::opaque(format!("lent-token {origin}"), token, scope);
        Ok(Ok(self.hold_secret(handle)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::bindings::launch::plugin::secrets::HostSecret;
    use crate::capabilities::environment_auth::{
        AuthRequest, AuthResult, EnvironmentAuthorizer, LentResult,
    };
    use crate::capabilities::policy::GrantPolicy;
    use crate::config::Grants;
    use serde_saphyr::{Location, Spanned};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    const TOKEN: &str = "ya29.lent-token-for-the-test";

    /// An environment that lends [`TOKEN`] for every origin and records
    /// which it was asked for.
    #[derive(Default)]
    struct Lender(Mutex<Vec<String>>);

    impl EnvironmentAuthorizer for Lender {
        fn label(&self) -> String {
            "environment-test 0.1.0".into()
        }
        fn authorize(
            &self,
            _: &str,
            _: AuthRequest,
        ) -> Pin<Box<dyn Future<Output = AuthResult> + Send>> {
            Box::pin(async { Err("not here".to_string()) })
        }
        fn bearer_token(
            &self,
            _: &str,
            url: String,
        ) -> Pin<Box<dyn Future<Output = LentResult> + Send>> {
            self.0.lock().unwrap().push(url);
            Box::pin(async { Ok((TOKEN.to_string(), 3000)) })
        }
    }

    fn state(marked: &[&str], lender: &Arc<Lender>) -> CapabilityState {
        state_with(&[], marked, lender)
    }

    fn state_with(hosts: &[&str], marked: &[&str], lender: &Arc<Lender>) -> CapabilityState {
        let spanned = |v: &&str| Spanned::new(v.to_string(), Location::UNKNOWN, Location::UNKNOWN);
        let grants = Grants {
            hosts: hosts.iter().map(spanned).collect(),
            environment_auth: marked.iter().map(spanned).collect(),
            ..Grants::default()
        };
        let policy = GrantPolicy::compile(&grants, &Default::default()).unwrap();
        let mut state = CapabilityState::new(
            Arc::from("registry-test 0.1.0"),
            Arc::new(policy),
            None,
            Arc::default(),
        );
        state.hooks.authorizer = Some(lender.clone() as Arc<dyn EnvironmentAuthorizer>);
        state
    }

    #[tokio::test]
    async fn a_lent_token_is_opaque_and_bound_to_its_registry() {
        let lender = Arc::new(Lender::default());
        let mut state = state(&["http://127.0.0.1:5000"], &lender);
        let handle = state
            .bearer_token("http://127.0.0.1:5000/v2/".into())
            .await
            .unwrap()
            .expect("lent");
        assert_eq!(
            *lender.0.lock().unwrap(),
            ["http://127.0.0.1:5000/".to_string()]
        );
        // The token is used for its registry only.
        let lent = Some(handle);
        assert_eq!(
            state
                .secret_for(&lent, "127.0.0.1:5000/p/r/i:v1")
                .unwrap()
                .unwrap()
                .as_deref(),
            Some(TOKEN)
        );
        assert!(
            state
                .secret_for(&lent, "127.0.0.1:5001/p/r/i:v1")
                .unwrap()
                .is_err()
        );
        // It cannot be read, nor kept, and what the plugin says is scrubbed of it.
        let Some(handle) = lent else {
            unreachable!("set above")
        };
        let borrowed = Resource::<SecretHandle>::new_borrow(handle.rep());
        match state.reveal(borrowed).unwrap() {
            Err(SecretError::Opaque(m)) => assert!(!m.contains(TOKEN), "{m}"),
            other => panic!("revealed: {other:?}"),
        }
        let borrowed = Resource::<SecretHandle>::new_borrow(handle.rep());
        assert!(matches!(
            crate::capabilities::bindings::launch::plugin::secrets::Host::keep(
                &mut state,
                "k".into(),
                borrowed,
                60
            )
            .unwrap(),
            Err(SecretError::Opaque(_))
        ));
        assert!(!state.scrub(&format!("said {TOKEN}")).contains(TOKEN));
    }

    #[tokio::test]
    async fn no_token_is_lent_for_an_origin_not_marked_auth_environment() {
        let lender = Arc::new(Lender::default());
        let mut state = state(&["https://us-docker.pkg.dev"], &lender);
        for url in [
            "http://127.0.0.1:5000/",
            "https://eu-docker.pkg.dev/",
            "http://us-docker.pkg.dev/",
        ] {
            match state.bearer_token(url.into()).await.unwrap() {
                Err(SecretError::NotGranted(m)) => {
                    assert!(m.contains("grants.environment_auth"), "{m}")
                }
                Err(other) => panic!("{url}: {other:?}"),
                Ok(_) => panic!("{url}: lent"),
            }
        }
        for url in ["not a url", "https://u:p@us-docker.pkg.dev/", "ftp://x/"] {
            assert!(
                matches!(
                    state.bearer_token(url.into()).await.unwrap(),
                    Err(SecretError::Unavailable(_))
                ),
                "{url}"
            );
        }
        assert!(
            lender.0.lock().unwrap().is_empty(),
            "the environment was asked"
        );
        // Without a lending environment, nothing either.
        state.hooks.authorizer = None;
        assert!(matches!(
            state
                .bearer_token("https://us-docker.pkg.dev/".into())
                .await
                .unwrap(),
            Err(SecretError::Unavailable(_))
        ));
    }

    /// A token server on 127.0.0.1 answering every request with `answer`
    /// (status 200, JSON); its port and the requests it got (head and body).
    fn token_server(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    request.push_str(&line);
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                request.push_str(&String::from_utf8_lossy(&body));
                seen.lock().unwrap().push(request);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        (port, got)
    }

    const REFRESH: &str = "eyJhbGciOiJSUzI1NiJ9.refresh-token-of-the-test";

    fn text(value: &str) -> FormValue {
        FormValue::Text(value.into())
    }

    #[tokio::test]
    async fn post_form_fills_a_lent_token_in_for_its_origin_and_answers_tokens_as_kept_handles() {
        let lender = Arc::new(Lender::default());
        let answer =
            r#"{"refresh_token":"eyJhbGciOiJSUzI1NiJ9.refresh-token-of-the-test","note":"hi"}"#;
        let (port, got) = token_server(answer);
        let origin = format!("http://127.0.0.1:{port}");
        let mut state = state(&[&origin], &lender);
        let lent = state
            .bearer_token(format!("{origin}/"))
            .await
            .unwrap()
            .expect("lent");
        let response = state
            .post_form(
                format!("{origin}/oauth2/exchange"),
                vec![
                    ("grant_type".into(), text("access_token")),
                    ("service".into(), text("reg.azurecr.io")),
                    ("access_token".into(), FormValue::Secret(lent)),
                ],
                vec!["refresh_token".into(), "access_token".into()],
            )
            .await
            .unwrap()
            .expect("sent");
        let requests = got.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].starts_with("POST /oauth2/exchange "),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains("application/x-www-form-urlencoded")
                && requests[0].ends_with(&format!(
                    "grant_type=access_token&service=reg.azurecr.io&access_token={TOKEN}"
                )),
            "{}",
            requests[0]
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.body, r#"{"note":"hi"}"#);
        assert_eq!(response.secrets.len(), 1);
        let (field, handle) = response.secrets.into_iter().next().unwrap();
        assert_eq!(field, "refresh_token");
        // Opaque, bound to the origin's registry, kept and recalled so.
        let borrowed = Resource::<SecretHandle>::new_borrow(handle.rep());
        assert!(matches!(
            state.reveal(borrowed).unwrap(),
            Err(SecretError::Opaque(_))
        ));
        let registry = format!("127.0.0.1:{port}");
        let handle = Some(handle);
        assert_eq!(
            state
                .secret_for(&handle, &format!("{registry}/r:v1"))
                .unwrap()
                .unwrap()
                .as_deref(),
            Some(REFRESH)
        );
        assert!(
            state
                .secret_for(&handle, "127.0.0.1:1/r:v1")
                .unwrap()
                .is_err()
        );
        let Some(handle) = handle else {
            unreachable!("set above")
        };
        use crate::capabilities::bindings::launch::plugin::secrets::Host as Secrets;
        let borrowed = Resource::<SecretHandle>::new_borrow(handle.rep());
        Secrets::keep(&mut state, "acr".into(), borrowed, 60)
            .unwrap()
            .expect("kept");
        let recalled = Secrets::recall(&mut state, "acr".into()).unwrap().unwrap();
        let rep = recalled.rep();
        let recalled = Some(recalled);
        assert_eq!(
            state
                .secret_for(&recalled, &format!("{registry}/r:v1"))
                .unwrap()
                .unwrap()
                .as_deref(),
            Some(REFRESH)
        );
        assert!(
            state
                .secret_for(&recalled, "127.0.0.1:1/r:v1")
                .unwrap()
                .is_err()
        );
        let borrowed = Resource::<SecretHandle>::new_borrow(rep);
        assert!(matches!(
            state.reveal(borrowed).unwrap(),
            Err(SecretError::Opaque(_))
        ));
        assert!(!state.scrub(&format!("said {REFRESH}")).contains(REFRESH));
    }

    #[tokio::test]
    async fn post_form_refuses_what_is_not_granted_and_sends_nothing() {
        let lender = Arc::new(Lender::default());
        let (port, got) = token_server("{}");
        let (other_port, other_got) = token_server("{}");
        let origin = format!("http://127.0.0.1:{port}");
        let other = format!("http://127.0.0.1:{other_port}");
        // The plugin may reach both; only `origin` is marked.
        let mut state = state_with(&[&other], &[&origin], &lender);
        let refused = |r: Result<FormResponse, SecretError>| match r {
            Err(e) => e,
            Ok(_) => panic!("sent"),
        };
        // A lent token to another origin than its own.
        let lent = state
            .bearer_token(format!("{origin}/"))
            .await
            .unwrap()
            .unwrap();
        let e = refused(
            state
                .post_form(
                    format!("{other}/oauth2/exchange"),
                    vec![("access_token".into(), FormValue::Secret(lent))],
                    vec![],
                )
                .await
                .unwrap(),
        );
        match e {
            SecretError::NotGranted(m) => {
                assert!(m.contains("lent-token") && m.contains(&other), "{m}");
                assert!(!m.contains(TOKEN), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // A host not in the grants.
        let e = refused(
            state
                .post_form(
                    "http://127.0.0.1:1/oauth2/exchange".into(),
                    vec![("a".into(), text("b"))],
                    vec![],
                )
                .await
                .unwrap(),
        );
        assert!(
            matches!(&e, SecretError::NotGranted(m) if m.contains("grants.hosts")),
            "{e:?}"
        );
        // Userinfo, another scheme, no URL at all.
        for url in [
            format!("http://u:p@127.0.0.1:{port}/oauth2/exchange"),
            format!("ftp://127.0.0.1:{port}/x"),
            "oauth2/exchange".to_string(),
        ] {
            let lent = state
                .bearer_token(format!("{origin}/"))
                .await
                .unwrap()
                .unwrap();
            let e = refused(
                state
                    .post_form(
                        url.clone(),
                        vec![("access_token".into(), FormValue::Secret(lent))],
                        vec![],
                    )
                    .await
                    .unwrap(),
            );
            assert!(matches!(e, SecretError::Unavailable(_)), "{url}: {e:?}");
        }
        assert!(got.lock().unwrap().is_empty(), "sent to the origin");
        assert!(other_got.lock().unwrap().is_empty(), "sent to the other");
        // Every handle passed in was taken out of the table.
        assert_eq!(state.secret_use.handles, 0);
        // The plugin's own secret goes wherever it may send.
        let mine = crate::capabilities::bindings::launch::plugin::secrets::Host::mint(
            &mut state,
            "mine".into(),
            "v".into(),
        )
        .unwrap();
        let answered = state
            .post_form(
                format!("{other}/x"),
                vec![("v".into(), FormValue::Secret(mine))],
                vec![],
            )
            .await
            .unwrap()
            .expect("sent");
        assert_eq!(answered.status, 200);
        assert_eq!(other_got.lock().unwrap().len(), 1);
    }

    #[test]
    fn only_named_string_members_of_a_json_object_are_taken() {
        let wanted = ["refresh_token".to_string(), "n".to_string()];
        let (rest, taken) = take_fields(r#"{"refresh_token":"t","n":1,"x":"y"}"#, &wanted);
        assert_eq!(rest, r#"{"n":1,"x":"y"}"#);
        assert_eq!(taken, [("refresh_token".to_string(), "t".to_string())]);
        let (rest, taken) = take_fields("not json refresh_token", &wanted);
        assert_eq!((rest.as_str(), taken.len()), ("not json refresh_token", 0));
        let (rest, taken) = take_fields(r#"["refresh_token"]"#, &wanted);
        assert_eq!((rest.as_str(), taken.len()), (r#"["refresh_token"]"#, 0));
    }
}
