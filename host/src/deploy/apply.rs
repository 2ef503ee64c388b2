//! Applying, waiting for and deleting a deployment's objects with the kube
//! client.
//!
//! | step | how |
//! |---|---|
//! | check | every namespace the objects go in, other than the agent's, must exist (named in the error) |
//! | apply | server-side apply, field manager `launch-agent`, in the rendered order; a Namespace that exists without this deployment's labels is left as it is (it is not ours: `--delete` must not remove it) |
//! | wait (`--wait`) | watches the Deployment until it has an available replica of its current generation; on timeout, says what its pods are waiting for |
//! | delete (`--delete`) | lists each kind of [`KINDS`] by the deployment's labels, in every namespace, and deletes what it finds; then the Namespace, if it is ours and holds nothing else |

use super::kinds::{KINDS, Kind};
use super::{FIELD_MANAGER, Ownership};
use anyhow::{Context as _, anyhow, bail};
use futures_util::TryStreamExt as _;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams,
};
use serde_json::Value;
use std::time::{Duration, Instant};

fn api(client: &kube::Client, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = kind.resource();
    match namespace {
        Some(ns) if kind.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// What [`apply`] did, one line per object.
pub type Report = Vec<String>;

/// Applies `objects` (checked and labelled by [`super::render`]) for
/// `owner`: see the module doc.
pub async fn apply(
    client: &kube::Client,
    owner: &Ownership,
    objects: &[Value],
    targets: &[String],
) -> anyhow::Result<Report> {
    let namespaces = api(client, &KINDS[KINDS.len() - 1], None);
    for ns in targets {
        match namespaces.get_opt(ns).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!(
                "target namespace `{ns}` (--target-namespace) does not exist: create it first (`kubectl create namespace {ns}`); the deployment only adds its job-creator Role there"
            ),
            Err(e) => bail!("cannot read namespace `{ns}`: {e}"),
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER);
    let mut report = Vec::new();
    for object in objects {
        let kind = super::kinds::of(object).map_err(anyhow::Error::msg)?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let ns = object["metadata"]["namespace"].as_str();
        let shown = match ns {
            Some(ns) => format!("{} {ns}/{name}", kind.kind),
            None => format!("{} {name}", kind.kind),
        };
        let api = api(client, kind, ns);
        if kind.kind == "Namespace"
            && let Some(existing) = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading {shown}"))?
            && !owner.owns(&serde_json::to_value(&existing)?)
        {
            report.push(format!(
                "{shown}: exists and is not this deployment's: left as it is"
            ));
            continue;
        }
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| anyhow!("applying {shown}: {e}"))?;
        report.push(format!("{shown}: applied"));
    }
    Ok(report)
}

/// Waits until the Deployment `name` in `namespace` has an available
/// replica of its current generation, for at most `timeout`.
pub async fn wait_available(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let kind = KINDS
        .iter()
        .find(|k| k.kind == "Deployment")
        .expect("Deployment is a kind");
    let api = api(client, kind, Some(namespace));
    let deadline = Instant::now() + timeout;
    let available = |object: &DynamicObject| {
        let value = serde_json::to_value(object).unwrap_or_default();
        let generation = value
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let observed = value
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        let replicas = value
            .pointer("/status/availableReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let updated = value
            .pointer("/status/updatedReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        observed >= generation && replicas >= 1 && updated >= 1
    };
    loop {
        let current = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Deployment {namespace}/{name}"))?
            .ok_or_else(|| anyhow!("Deployment {namespace}/{name} does not exist"))?;
        if available(&current) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let pods = pod_reasons(client, namespace, &current).await;
            bail!(
                "Deployment {namespace}/{name} had no available replica after {}s{}",
                timeout.as_secs(),
                if pods.is_empty() {
                    String::new()
                } else {
                    format!(": {pods}")
                }
            );
        }
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(left.as_secs().clamp(1, 290) as u32);
        let stream = api
            .watch(&params, &version)
            .await
            .context("watching the Deployment")?;
        let mut stream = std::pin::pin!(stream);
        let _ = tokio::time::timeout(left, async {
            while let Ok(Some(event)) = stream.try_next().await {
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = event
                    && available(&o)
                {
                    return;
                }
            }
        })
        .await;
    }
}

/// What the Deployment's pods wait for (`ImagePullBackOff: ...`), for a
/// timeout's message.
async fn pod_reasons(client: &kube::Client, namespace: &str, deployment: &DynamicObject) -> String {
    let value = serde_json::to_value(deployment).unwrap_or_default();
    let Some(labels) = value
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return String::new();
    };
    let selector: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
    else {
        return String::new();
    };
    let mut said = Vec::new();
    for pod in list.items {
        let name = pod.metadata.name.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let waiting = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.state.and_then(|s| s.waiting))
            .map(|w| {
                format!(
                    "{}: {}",
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                )
            })
            .next();
        let unscheduled = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| c.message.unwrap_or_default());
        let phase = status.phase.unwrap_or_default();
        said.push(format!(
            "pod {name} is {phase}{}",
            waiting
                .or(unscheduled)
                .map(|w| format!(" ({})", crate::text::for_log(&w)))
                .unwrap_or_default()
        ));
    }
    said.join("; ")
}

/// Deletes what `owner` applied: see the module doc. Returns one line per
/// object deleted or kept.
pub async fn delete(client: &kube::Client, owner: &Ownership) -> anyhow::Result<Report> {
    let selector = owner.selector();
    let mut report = Vec::new();
    let mut our_namespace = false;
    for kind in KINDS {
        let all = api(client, kind, None);
        let found = all
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing {} labelled {selector}", kind.plural))?;
        for object in found.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let ns = object.metadata.namespace.clone();
            if kind.kind == "Namespace" {
                our_namespace = name == owner.namespace;
                continue;
            }
            let shown = format!("{} {}/{name}", kind.kind, ns.as_deref().unwrap_or_default());
            match api(client, kind, ns.as_deref())
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => report.push(format!("{shown}: deleted")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => bail!("deleting {shown}: {e}"),
            }
        }
    }
    if our_namespace {
        let left = foreign_objects(client, &owner.namespace).await?;
        if left.is_empty() {
            match api(client, &KINDS[KINDS.len() - 1], None)
                .delete(&owner.namespace, &DeleteParams::background())
                .await
            {
                Ok(_) => report.push(format!("Namespace {}: deleted", owner.namespace)),
                Err(e) if is_not_found(&e) => {}
                Err(e) => bail!("deleting Namespace {}: {e}", owner.namespace),
            }
        } else {
            report.push(format!(
                "Namespace {}: kept, it holds objects this deployment did not make ({})",
                owner.namespace,
                left.join(", ")
            ));
        }
    }
    Ok(report)
}

/// Objects in `namespace` that are not the deployment's, of the kinds it
/// holds and pods and Jobs, less what the cluster makes in every namespace
/// (the `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap) and
/// what is already being deleted.
async fn foreign_objects(client: &kube::Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let extra = [
        Kind {
            group: "",
            version: "v1",
            kind: "Pod",
            plural: "pods",
            namespaced: true,
        },
        Kind {
            group: "batch",
            version: "v1",
            kind: "Job",
            plural: "jobs",
            namespaced: true,
        },
    ];
    let mut left = Vec::new();
    for kind in KINDS.iter().filter(|k| k.namespaced).chain(extra.iter()) {
        let list = api(client, kind, Some(namespace))
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing {} in {namespace}", kind.plural))?;
        for object in list.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let built_in = (kind.kind == "ServiceAccount" && name == "default")
                || (kind.kind == "ConfigMap" && name == "kube-root-ca.crt");
            let managed = object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(super::MANAGED_BY))
                .is_some_and(|v| v == FIELD_MANAGER);
            let going = object.metadata.deletion_timestamp.is_some();
            // The pods of the Deployment just deleted, not yet marked.
            let of_a_deployment = object.metadata.owner_references.as_ref().is_some_and(|r| {
                r.iter()
                    .any(|o| o.kind == "Deployment" || o.kind == "ReplicaSet")
            });
            if !(built_in || managed || going || of_a_deployment) {
                left.push(format!("{} {name}", kind.kind));
            }
        }
    }
    Ok(left)
}
