//! The real clients the host holds: connections to services outside the
//! process, made in one place and shared by whatever uses them, so that no
//! runner, capability or agent step opens its own (and none of them has to
//! import another to get one).
//!
//! | client | connects to | used by | connected |
//! |---|---|---|---|
//! | [`docker`] | the Docker Engine `DOCKER_HOST` names (unix socket default), API version negotiated | the `local-container` runner, the build step's "does the engine have it?", the `launch:plugin/docker` capability | [`Clients::docker`]: once, on first use; the capability connects per call with [`docker::connect`] |
//! | [`kube`] | Kubernetes clusters, by kubeconfig context (`KUBECONFIG`, `~/.kube/config` or the in-cluster service account, as `kube::Config::infer`) | the `kubernetes` runner | [`Clients::kube`]: once per context, on first use |
//!
//! [`tls`] installs the process's rustls provider for the HTTP clients.
//!
//! A client that cannot connect is an error where it is used, never at
//! start-up: an agent that only runs `local-process` jobs needs no engine.

pub mod docker;
pub mod kube;
pub mod tls;

use std::sync::Arc;

/// The clients an agent holds, built once at start-up and shared by its
/// jobs and runners.
#[derive(Clone, Debug, Default)]
pub struct Clients {
    /// The Docker Engine, connected on first use.
    pub docker: Arc<docker::DockerEngine>,
    /// Kubernetes clusters, configured on first use.
    pub kube: Arc<kube::KubeClusters>,
}

impl Clients {
    /// Clients that connect on first use.
    pub fn new() -> Self {
        Self::default()
    }
}
