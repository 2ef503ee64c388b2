//! Kubernetes clusters: a [`kube::Client`] per kubeconfig context, made on
//! first use and shared by every job, so that one agent holds one
//! connection pool per cluster; and what the `kubernetes` runner and the
//! plugins' Kubernetes capability
//! ([`crate::capabilities::kubernetes`]) both need of a cluster:
//!
//! | part | module |
//! |---|---|
//! | the label the agent finds its objects by, [`ITEM_LABEL`], and [`label_value`] | this one |
//! | one watch on labelled Jobs and one on their pods per namespace, shared | [`watch`] |
//! | a Job's end and a pod's exit, read from their status; a client error as one line | [`job_state`] |
//! | a pod's log, followed as it is written | [`pod_log`] |
//! | the fields no pod of the agent may ask for | [`pod_rules`] |
//!
//! | context asked for | configuration |
//! |---|---|
//! | none | [`kube::Config::infer`]: `KUBECONFIG` (or `~/.kube/config`) with its current context, else the pod's in-cluster service account |
//! | `name` | the context `name` of `KUBECONFIG` (or `~/.kube/config`); an unknown name is an error naming it |
//!
//! A cluster that cannot be reached is an error where a job needs it, never
//! at start-up: an agent that runs no `kubernetes` job needs no cluster. The
//! cluster's credentials stay in the client: they never reach a job's spec,
//! its log or a plugin.

pub mod job_state;
pub mod pod_log;
pub mod pod_rules;
pub mod watch;

use anyhow::anyhow;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::collections::HashMap;
use tokio::sync::Mutex;

/// A connected cluster: the client and the namespace its context names.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    /// The context's namespace (`default` when it names none).
    pub default_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

/// The clusters of this agent, by kubeconfig context.
#[derive(Debug, Default)]
pub struct KubeClusters {
    clients: Mutex<HashMap<Option<String>, Cluster>>,
}

impl KubeClusters {
    /// No cluster connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cluster of `context` (`None`: the inferred one), configured the
    /// first time it is asked for.
    pub async fn cluster(&self, context: Option<&str>) -> anyhow::Result<Cluster> {
        let key = context.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(cluster) = clients.get(&key) {
            return Ok(cluster.clone());
        }
        let cluster = connect(context).await?;
        clients.insert(key, cluster.clone());
        Ok(cluster)
    }
}

/// Configures a client for `context` (see the module doc); the error names
/// the context and where the configuration was looked for.
pub async fn connect(context: Option<&str>) -> anyhow::Result<Cluster> {
    // The process's rustls provider is `ring`, as for the OCI and W&B clients.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        _ = rustls::crypto::ring::default_provider().install_default();
    }
    let config = match context {
        None => kube::Config::infer().await.map_err(|e| {
            anyhow!(
                "no Kubernetes cluster configured: neither KUBECONFIG (or ~/.kube/config) nor an in-cluster service account works: {e}"
            )
        })?,
        Some(name) => {
            let options = KubeConfigOptions {
                context: Some(name.to_string()),
                ..KubeConfigOptions::default()
            };
            let kubeconfig = Kubeconfig::read().map_err(|e| {
                anyhow!("cannot read the kubeconfig (KUBECONFIG or ~/.kube/config) for context `{name}`: {e}")
            })?;
            if !kubeconfig.contexts.iter().any(|c| c.name == name) {
                let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(anyhow!(
                    "the kubeconfig has no context `{name}` (it has {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
            }
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| anyhow!("kubeconfig context `{name}`: {e}"))?
        }
    };
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow!("cannot make a Kubernetes client: {e}"))?;
    Ok(Cluster {
        client,
        default_namespace,
    })
}

/// The label every Job, pod, Secret (and a plugin's ConfigMap) the agent
/// creates carries, with the queue item id: how the shared watch, a
/// clean-up after a crash and the tests find them.
pub const ITEM_LABEL: &str = "launch-agent.item";

/// `text` as a label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending with an alphanumeric one.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}
