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

use super::bindings::launch::plugin::lent::Host;
use super::bindings::launch::plugin::secrets::SecretError;
use super::policy::Refusal;
use super::registry_auth::origin_of;
use super::secrets::{CredentialScope, SecretHandle};
use super::state::{CapabilityState, HostCall};
use wasmtime::component::Resource;

impl Host for CapabilityState {
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
        let spanned = |v: &&str| Spanned::new(v.to_string(), Location::UNKNOWN, Location::UNKNOWN);
        let grants = Grants {
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
}
