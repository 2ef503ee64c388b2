//! `launch:plugin/docker`: the host's Docker engine for builder plugins.
//!
//! Granted by `grants.docker: true`; without it every call fails with
//! `denied: true` (each starts with
//! [`GrantPolicy::docker`](crate::capabilities::policy::GrantPolicy::docker)).
//! A build's context is always the current job's source (streamed by
//! [`context`]); a build may tag, and `image-exists` look up, only the
//! repositories of the planned image and the destination (set for the
//! builder's build call, [`CapabilityState::build_repositories`]: no other
//! job's image can be overwritten or probed); the images and URLs a build's
//! Dockerfile makes the engine fetch (`FROM`, `COPY --from`, `# syntax=`,
//! `ADD <url>`, found by [`dockerfile`]) must be the job's own, from a
//! granted registry, or an image the engine already has (the rule is
//! [`build_fetches`]), checked before the engine sees the build; pushes go only to registries in `grants.hosts` (the rule is
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

pub mod build_fetches;
pub mod build_network;
pub mod build_proxy;
pub mod caps;
pub mod context;
pub mod dockerfile;
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
use build_fetches::Verdict;
use build_network::Firewall;
use build_proxy::BuildProxy;
use dockerfile::Fetch;
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

/// The build arguments that point a build's steps at its proxy (the
/// engine's predefined proxy arguments, left out of the image's history).
const PROXY_ARGS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// A granted build's network mode, with the proxy and firewall rule it
/// holds while the build runs.
type ProxiedNetwork = (engine::BuildNetwork, Option<BuildProxy>, Option<Firewall>);

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

    /// Checks a build against the per-call caps of [`caps`]: builds, tags,
    /// build arguments.
    fn within_build_caps(&self, spec: &BuildSpec) -> Result<(), String> {
        if self.docker_use.builds >= caps::MAX_BUILDS {
            return Err(caps::past("docker build", caps::MAX_BUILDS));
        }
        if spec.tags.len() > caps::MAX_TAGS {
            return Err(format!(
                "{} tags: at most {} per build",
                spec.tags.len(),
                caps::MAX_TAGS
            ));
        }
        let arg_bytes: usize = spec.build_args.iter().map(|(k, v)| k.len() + v.len()).sum();
        if spec.build_args.len() > caps::MAX_BUILD_ARGS || arg_bytes > caps::MAX_BUILD_ARG_BYTES {
            return Err(format!(
                "{} build arguments of {arg_bytes} bytes: at most {} of {} bytes per build",
                spec.build_args.len(),
                caps::MAX_BUILD_ARGS,
                caps::MAX_BUILD_ARG_BYTES
            ));
        }
        Ok(())
    }

    /// Checks what the build's Dockerfile makes the engine fetch against
    /// [`build_fetches`]'s rule; returns the images allowed only if the
    /// engine has them (with the platform asked for). A refusal names the
    /// line, the instruction and the image or URL.
    fn check_fetches(&self, spec: &BuildSpec) -> Result<Vec<(Fetch, String)>, DockerError> {
        const OP: &str = "build";
        let fetches = dockerfile::fetches(&spec.dockerfile, &spec.build_args).map_err(|why| {
            self.out_of_scope(OP, format!("its Dockerfile cannot be checked: {why}"))
        })?;
        let mut local_only = Vec::new();
        for fetch in fetches {
            match build_fetches::judge(
                &fetch,
                spec.platform.as_deref(),
                &self.policy,
                &self.build_repositories,
            ) {
                Ok(Verdict::Allowed) => {}
                Ok(Verdict::IfLocal { platform }) => local_only.push((fetch, platform)),
                Err(why) => {
                    return Err(self.out_of_scope(
                        OP,
                        format!(
                            "line {}: {} {}: {why}",
                            fetch.line, fetch.instruction, fetch.target
                        ),
                    ));
                }
            }
        }
        Ok(local_only)
    }

    /// The network of a build granted `build_network`: the internal
    /// [`build_network`] with a [`BuildProxy`] for this plugin's grants on
    /// its gateway (and the firewall rule keeping the host's other services
    /// out of reach, when the host can install it); `build_args` get the
    /// proxy variables.
    async fn proxied_network(
        &mut self,
        docker: &Docker,
        build_args: &mut Vec<(String, String)>,
    ) -> Result<ProxiedNetwork, DockerError> {
        const OP: &str = "build";
        let network = build_network::ensure(docker)
            .await
            .map_err(|e| EngineError::new(OP, e))?;
        let warn = self.warning_log();
        let proxy = BuildProxy::start(
            network.gateway,
            network.subnet,
            self.policy.clone(),
            self.plugin_name.clone(),
            warn.clone(),
        )
        .await
        .map_err(|e| {
            EngineError::new(
                OP,
                format!(
                    "cannot run the build proxy on the build network's gateway {}: {e}",
                    network.gateway
                ),
            )
        })?;
        let port = proxy.port();
        let firewall = match tokio::task::spawn_blocking(move || Firewall::guard(port)).await {
            Ok(Ok(firewall)) => Some(firewall),
            Ok(Err(why)) => {
                warn(&format!(
                    "{}: the host could not firewall the build network ({why}): the build's steps can reach host services listening on all addresses",
                    self.plugin_name
                ));
                None
            }
            Err(join) => return Err(EngineError::new(OP, format!("firewall: {join}")).into()),
        };
        let url = proxy.url();
        build_args.retain(|(name, _)| !PROXY_ARGS.contains(&name.as_str()));
        for name in PROXY_ARGS {
            let value = if name.eq_ignore_ascii_case("no_proxy") {
                "localhost,127.0.0.1".to_string()
            } else {
                url.clone()
            };
            build_args.push((name.to_string(), value));
        }
        Ok((
            engine::BuildNetwork::Named(network.name),
            Some(proxy),
            firewall,
        ))
    }

    /// Where warnings about a build go: tracing and the job's log.
    fn warning_log(&self) -> build_proxy::RefusalLog {
        let sink = self.log_sink.clone();
        Arc::new(move |line: &str| {
            tracing::warn!("{line}");
            if let Some(sink) = &sink {
                sink.warning(line);
            }
        })
    }

    /// Where the engine's lines of `operation` go.
    fn docker_log(&self, operation: &'static str) -> EngineLog {
        let plugin = self.plugin_name.clone();
        let sink = self.log_sink.clone();
        let redactor = self.redactor().clone();
        let output = self.docker_use.output.clone();
        Arc::new(move |line: &str| {
            let line = match output.admit(line.len()) {
                caps::OutputVerdict::Write => line.to_string(),
                caps::OutputVerdict::Notice(notice) => notice,
                caps::OutputVerdict::Drop => return,
            };
            let shown = redactor.scrub(&line);
            tracing::info!(plugin = %plugin, "docker {operation}: {shown}");
            if let Some(sink) = &sink {
                sink.said(false, &format!("[{plugin}] docker {operation}: "), &line);
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

/// Checks that the engine has `fetch`'s image (a Docker Hub image the
/// plugin is not granted) for `platform`, so the build uses it without a
/// pull: `Err(Ok(why))` is a refusal (the caller names the line), and
/// `Err(Err(e))` an engine failure.
async fn check_local_image(
    docker: &Docker,
    fetch: &Fetch,
    platform: &str,
) -> Result<(), Result<String, DockerError>> {
    const OP: &str = "build";
    match docker.inspect_image(&fetch.target).await {
        Ok(image) => {
            let field = |f: &Option<String>| f.clone().unwrap_or_default();
            if build_fetches::platform_matches(
                platform,
                &field(&image.os),
                &field(&image.architecture),
                &field(&image.variant),
            ) {
                return Ok(());
            }
            Err(Ok(format!(
                "the engine's copy is {}/{}, not {platform}, and Docker Hub is not granted (add https://registry-1.docker.io to grants.hosts)",
                field(&image.os),
                field(&image.architecture)
            )))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(Ok(
            "Docker Hub is not granted (add https://registry-1.docker.io to grants.hosts) and the engine has no copy of it".to_string(),
        )),
        Err(e) => Err(Err(EngineError::new(
            OP,
            format!("looking up {}: {e}", fetch.target),
        )
        .into())),
    }
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
        if let Err(why) = self.within_build_caps(&spec) {
            return Ok(Err(self.out_of_scope(OP, why)));
        }
        self.docker_use.builds += 1;
        for tag in &spec.tags {
            if let Err(why) = reference::within(tag, &self.build_repositories) {
                return Ok(Err(self.out_of_scope(OP, why)));
            }
        }
        let local_only = match self.check_fetches(&spec) {
            Ok(local_only) => local_only,
            Err(e) => return Ok(Err(e)),
        };
        let docker = match connect(OP).await {
            Ok(docker) => docker,
            Err(e) => return Ok(Err(e)),
        };
        for (fetch, platform) in &local_only {
            match check_local_image(&docker, fetch, platform).await {
                Ok(()) => {}
                Err(Ok(why)) => {
                    let why = format!(
                        "line {}: {} {}: {why}",
                        fetch.line, fetch.instruction, fetch.target
                    );
                    return Ok(Err(self.out_of_scope(OP, why)));
                }
                Err(Err(e)) => return Ok(Err(e)),
            }
        }
        let log = self.docker_log(OP);
        let source = self.job_source.clone();
        let mut build_args = spec.build_args.clone();
        // Held for the build: the proxy and the firewall's rule for it end
        // when they are dropped.
        let (network, _proxy, _firewall) = if self.policy.build_network() {
            match self.proxied_network(&docker, &mut build_args).await {
                Ok(held) => held,
                Err(e) => return Ok(Err(e)),
            }
        } else {
            (engine::BuildNetwork::Off, None, None)
        };
        Ok(engine::build_image(
            &docker,
            source.as_deref(),
            &spec.dockerfile,
            &spec.tags,
            spec.platform.as_deref(),
            &build_args,
            network,
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
        if self.docker_use.pushes >= caps::MAX_PUSHES {
            return Ok(Err(
                self.out_of_scope(OP, caps::past("docker push", caps::MAX_PUSHES))
            ));
        }
        self.docker_use.pushes += 1;
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
        if self.docker_use.lookups >= caps::MAX_LOOKUPS {
            return Ok(Err(
                self.out_of_scope(OP, caps::past("image-exists", caps::MAX_LOOKUPS))
            ));
        }
        self.docker_use.lookups += 1;
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
