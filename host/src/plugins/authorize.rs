//! The environment plugin as the lender of its credentials: the runtime's
//! side of the grant `auth: environment`
//! ([`capabilities::environment_auth`](crate::capabilities::environment_auth)).
//!
//! Every loaded plugin shares one [`SharedAuthorizer`]; start-up fills it
//! with the configured environment ([`PluginHost::lend_environment`](super::PluginHost::lend_environment))
//! when that exports `authorizer` (world `authorizing-environment-plugin`,
//! contract 0.2). Each call of a plugin then carries it in its `wasi:http`
//! hooks, which call [`EnvironmentLender::authorize`] for a request to an
//! origin the plugin's grant marks.
//!
//! The same lender answers `lent.bearer-token` (a registry's login that is
//! the environment's token) through `authorizer.bearer-token`, when the
//! environment exports it.
//!
//! The environment never authorizes its own requests this way (that would
//! recurse): it signs them itself.

use super::bindings::HttpRequest;
use super::exports::Export;
use super::loaded::LoadedPlugin;
use crate::capabilities::environment_auth::{
    AuthRequest, AuthResult, EnvironmentAuthorizer, LentResult,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// The environment that lends its credentials, shared by every plugin of
/// one [`PluginHost`](super::PluginHost); empty until start-up sets it.
#[derive(Clone, Default)]
pub struct SharedAuthorizer(Arc<RwLock<Option<Arc<dyn EnvironmentAuthorizer>>>>);

impl SharedAuthorizer {
    /// Sets the lender (`None`: requests marked `auth: environment` are refused).
    pub fn set(&self, lender: Option<EnvironmentLender>) {
        let lender = lender.map(|l| Arc::new(l) as Arc<dyn EnvironmentAuthorizer>);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = lender;
    }

    /// The lender, if any.
    pub fn get(&self) -> Option<Arc<dyn EnvironmentAuthorizer>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A loaded environment plugin that exports `authorizer`, with its settings.
pub struct EnvironmentLender {
    environment: Arc<LoadedPlugin>,
    settings: Arc<str>,
}

impl EnvironmentLender {
    /// The lender for `environment` called with `settings`; `None` when it
    /// exports no `authorizer` (`local`, any 0.1 environment).
    pub fn new(environment: &Arc<LoadedPlugin>, settings: String) -> Option<Self> {
        environment
            .exports
            .has(Export::Authorize)
            .then(|| EnvironmentLender {
                environment: environment.clone(),
                settings: Arc::from(settings),
            })
    }
}

impl EnvironmentAuthorizer for EnvironmentLender {
    fn label(&self) -> String {
        self.environment.label().to_string()
    }

    fn settings(&self) -> Option<String> {
        Some(self.settings.to_string())
    }

    fn authorize(
        &self,
        requester: &str,
        request: AuthRequest,
    ) -> Pin<Box<dyn Future<Output = AuthResult> + Send>> {
        let environment = self.environment.clone();
        let settings = self.settings.clone();
        let own = requester == environment.label();
        let requester = requester.to_string();
        Box::pin(async move {
            if own {
                return Err(
                    "the environment's own requests are never routed through itself (it signs them itself)"
                        .to_string(),
                );
            }
            let request = HttpRequest {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body_sha256: request.body_sha256,
            };
            tracing::debug!(requester, environment = %environment.label(), "authorizing a request");
            environment
                .authorize(&settings, &request)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn bearer_token(
        &self,
        requester: &str,
        url: String,
    ) -> Pin<Box<dyn Future<Output = LentResult> + Send>> {
        let environment = self.environment.clone();
        let settings = self.settings.clone();
        let own = requester == environment.label();
        let requester = requester.to_string();
        Box::pin(async move {
            if own {
                return Err("the environment does not lend its token to itself".to_string());
            }
            if !environment.exports.has(Export::BearerToken) {
                return Err(format!(
                    "environment {} exports no `authorizer.bearer-token` (built before it was \
                     added to contract 0.2)",
                    environment.label()
                ));
            }
            tracing::debug!(requester, environment = %environment.label(), "lending a bearer token");
            environment
                .bearer_token(&settings, &url)
                .await
                .map(|lent| (lent.value, lent.expires_in_seconds))
                .map_err(|e| e.to_string())
        })
    }
}
