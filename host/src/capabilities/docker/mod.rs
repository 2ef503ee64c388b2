//! `launch:plugin/docker`: the host's Docker engine for builder plugins.
//!
//! Granted by `grants.docker: true`; without it every call fails with
//! `denied: true` (each starts with
//! [`GrantPolicy::docker`](crate::capabilities::policy::GrantPolicy::docker)).
//! A build's context is always the current job's source (streamed by
//! [`context`]); a build may tag, and `image-exists` look up, only the
//! repositories of the planned image and the destination (set for the
//! builder's build call, [`CapabilityState::build_repositories`]: no other
//! job's image can be overwritten or probed); pushes go only to registries in `grants.hosts` (the rule is
//! [`GrantPolicy::push_registry`](crate::capabilities::policy::GrantPolicy::push_registry)); the password of a push comes from a
//! secret handle and never appears in a message or log line. A registry
//! credential handed to the builder is used only for the registry and
//! repository it was issued for; the host itself exchanges it for a
//! registry token at a granted token realm and the engine gets the token,
//! not the password (see [`registry_auth`](crate::capabilities::registry_auth)). Build and push
//! progress goes to the job's log and to tracing, tagged with the plugin.
//!
//! The engine operations themselves are plain async Rust in [`engine`],
//! usable without WebAssembly.
//!
//! **Client.** Each call connects to the engine anew
//! ([`clients::docker::connect`], which negotiates the API version): it
//! costs one `/version` round trip on a local socket, negligible beside a
//! build or a push, and needs no state in [`CapabilityState`] (which lives for
//! one call anyway), nor a process-wide client bound to one Tokio runtime or
//! to an engine that may have restarted since.
//!
//! [`clients::docker::connect`]: crate::clients::docker::connect

pub mod context;
pub mod engine;
pub mod reference;

pub use engine::{
    BuildNetwork, EngineError, PushAuth, build_image, image_exists, push_image, push_image_as,
    redact,
};
pub use reference::ImageRef;

use crate::capabilities::bindings::launch::plugin::docker::{BuildSpec, DockerError, Host};
use crate::capabilities::oci::RegistryClients;
use crate::capabilities::policy::GrantPolicy;
use crate::capabilities::registry_auth::{Authorization, EgressError, authorize};
use crate::capabilities::secrets::SecretHandle;
use crate::capabilities::state::CapabilityState;
use bollard::Docker;
use std::sync::Arc;
use wasmtime::component::Resource;

/// The error of `operation` refused by the plugin's policy.
fn denied(operation: &str, message: String) -> DockerError {
    DockerError {
        operation: operation.to_string(),
        message,
        unauthorized: false,
        denied: true,
    }
}

impl From<EngineError> for DockerError {
    fn from(e: EngineError) -> Self {
        DockerError {
            operation: e.operation,
            message: e.message,
            unauthorized: e.unauthorized,
            denied: false,
        }
    }
}

/// A log function for engine output: tracing (tagged with the plugin) and
/// the job's log.
type EngineLog = Arc<dyn Fn(&str) + Send + Sync>;

impl CapabilityState {
    /// The policy's check of every engine call ([`GrantPolicy::docker`]);
    /// logs a refusal.
    ///
    /// [`GrantPolicy::docker`]: crate::capabilities::policy::GrantPolicy::docker
    fn docker_granted(&self, operation: &str) -> Result<(), DockerError> {
        self.policy
            .docker()
            .map_err(|refusal| denied(operation, self.refused(&refusal)))
    }

    /// The refusal of an image outside the call's repositories, logged as
    /// a warning.
    fn out_of_scope(&self, operation: &str, why: String) -> DockerError {
        let message = format!("{}: docker {operation} refused: {why}", self.plugin_name);
        tracing::warn!("{message}");
        if let Some(sink) = &self.log_sink {
            sink.warning(&message);
        }
        denied(operation, message)
    }

    /// Where the engine's lines of `operation` go.
    fn docker_log(&self, operation: &'static str) -> EngineLog {
        let plugin = self.plugin_name.clone();
        let sink = self.log_sink.clone();
        let redactor = self.redactor().clone();
        Arc::new(move |line: &str| {
            let shown = redactor.scrub(line);
            tracing::info!(plugin = %plugin, "docker {operation}: {shown}");
            if let Some(sink) = &sink {
                sink.said(false, &format!("[{plugin}] docker {operation}: "), line);
            }
        })
    }
}

/// The registry token to push `reference` with `login`, when its
/// registry uses tokens (`None` when it takes the password itself), for
/// plugin `plugin` under `policy`. The registry is asked over each scheme
/// the policy grants it (https first, as the engine does); its token realm
/// must be granted (see [`registry_auth`](crate::capabilities::registry_auth)).
async fn push_token(
    policy: &GrantPolicy,
    plugin: &str,
    clients: &RegistryClients,
    reference: &ImageRef,
    login: (&str, &str),
) -> Result<Option<String>, DockerError> {
    const OP: &str = "push";
    let registry = reference
        .registry
        .as_deref()
        .unwrap_or("registry-1.docker.io");
    let repository = match crate::capabilities::secrets::CredentialScope::target(&reference.name) {
        Ok((_, repository)) => repository,
        Err(e) => return Err(EngineError::new(OP, e).into()),
    };
    let client = clients
        .client()
        .map_err(|e| EngineError::new(OP, format!("registry client: {e}")))?;
    let mut last = None;
    for scheme in ["https", "http"] {
        let Ok(base) = reqwest::Url::parse(&format!("{scheme}://{registry}/")) else {
            continue;
        };
        let uri: Result<http::Uri, _> = base.as_str().parse();
        if !uri.is_ok_and(|uri| policy.http(&uri).is_ok()) {
            continue;
        }
        match authorize(
            &client,
            policy,
            &base,
            &repository,
            "pull,push",
            Some(login),
        )
        .await
        {
            Ok(Authorization::Bearer(token)) => return Ok(Some(token)),
            Ok(_) => return Ok(None),
            Err(EgressError::Refused(refusal)) => {
                return Err(denied(OP, refusal.report(plugin)));
            }
            Err(EgressError::Unauthorized(why)) => {
                return Err(DockerError {
                    operation: OP.into(),
                    message: format!(
                        "registry {} refused the credentials of user {:?}: {why}",
                        reference.registry_display(),
                        login.0
                    ),
                    unauthorized: true,
                    denied: false,
                });
            }
            Err(EgressError::Other(why)) => last = Some(why),
        }
    }
    Err(EngineError::new(
        OP,
        format!(
            "cannot ask registry {} where its credentials go, so they were not sent: {}",
            reference.registry_display(),
            last.unwrap_or_else(|| "no scheme of it is granted".into())
        ),
    )
    .into())
}

/// Connects to the engine for one call.
async fn connect(operation: &str) -> Result<Docker, DockerError> {
    crate::clients::docker::connect()
        .await
        .map_err(|e| EngineError::new(operation, format!("{e:#}")).into())
}

impl Host for CapabilityState {
    async fn build(&mut self, spec: BuildSpec) -> wasmtime::Result<Result<String, DockerError>> {
        const OP: &str = "build";
        if let Err(e) = self.docker_granted(OP) {
            return Ok(Err(e));
        }
        for tag in &spec.tags {
            if let Err(why) = reference::within(tag, &self.build_repositories) {
                return Ok(Err(self.out_of_scope(OP, why)));
            }
        }
        let docker = match connect(OP).await {
            Ok(docker) => docker,
            Err(e) => return Ok(Err(e)),
        };
        let log = self.docker_log(OP);
        let source = self.job_source.clone();
        Ok(engine::build_image(
            &docker,
            source.as_deref(),
            &spec.dockerfile,
            &spec.tags,
            spec.platform.as_deref(),
            &spec.build_args,
            if self.policy.build_network() {
                engine::BuildNetwork::On
            } else {
                engine::BuildNetwork::Off
            },
            &*log,
        )
        .await
        .map_err(DockerError::from))
    }

    async fn push(
        &mut self,
        image: String,
        username: Option<String>,
        password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<(), DockerError>> {
        const OP: &str = "push";
        if let Err(e) = self.docker_granted(OP) {
            return Ok(Err(e));
        }
        let reference = match ImageRef::parse(&image) {
            Ok(reference) => reference,
            Err(e) => return Ok(Err(EngineError::new(OP, e).into())),
        };
        if let Err(refusal) = self.policy.push_registry(reference.registry.as_deref()) {
            return Ok(Err(denied(OP, self.refused(&refusal))));
        }
        let password = match self.secret_for(&password, &image)? {
            Ok(password) => password,
            Err(refusal) => return Ok(Err(denied(OP, self.refused(&refusal)))),
        };
        let credentials = match (&username, &password) {
            (Some(user), Some(password)) => Some((user.as_str(), password.as_str())),
            (None, None) => None,
            _ => {
                return Ok(Err(EngineError::new(
                    OP,
                    "a push logs in with both a username and a password, or neither",
                )
                .into()));
            }
        };
        // The credentials go where the registry says only once the host
        // has checked it: a token realm is exchanged here, and the engine
        // gets the token.
        let token = match credentials {
            Some(login) => match push_token(
                &self.policy,
                &self.plugin_name,
                &self.registry_clients,
                &reference,
                login,
            )
            .await
            {
                Ok(token) => token,
                Err(e) => return Ok(Err(e)),
            },
            None => None,
        };
        let auth = match (credentials, &token) {
            (Some((username, _)), Some(token)) => Some(PushAuth::Token { username, token }),
            (Some((username, password)), None) => Some(PushAuth::Password { username, password }),
            (None, _) => None,
        };
        let docker = match connect(OP).await {
            Ok(docker) => docker,
            Err(e) => return Ok(Err(e)),
        };
        let log = self.docker_log(OP);
        Ok(engine::push_image_as(&docker, &image, auth, &*log)
            .await
            .map_err(DockerError::from))
    }

    async fn image_exists(&mut self, image: String) -> wasmtime::Result<Result<bool, DockerError>> {
        const OP: &str = "inspect";
        if let Err(e) = self.docker_granted(OP) {
            return Ok(Err(e));
        }
        if let Err(why) = reference::within(&image, &self.build_repositories) {
            return Ok(Err(self.out_of_scope(OP, why)));
        }
        let docker = match connect(OP).await {
            Ok(docker) => docker,
            Err(e) => return Ok(Err(e)),
        };
        Ok(engine::image_exists(&docker, &image)
            .await
            .map_err(DockerError::from))
    }
}
