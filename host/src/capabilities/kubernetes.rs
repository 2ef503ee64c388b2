//! `launch:plugin/kubernetes`: a Kubernetes cluster for plugins that work
//! there (the Kaniko builder first), granted by namespace.
//!
//! Why the host does it: it holds the cluster's client and token (the
//! agent's: `KUBECONFIG`, `~/.kube/config` or its in-cluster service
//! account, through [`crate::clients::kube`]), so a plugin only passes
//! manifests and never sees a credential; and it knows everything a call
//! created, so nothing is orphaned (W&B's agent orphans Kaniko pods).
//!
//! | function | checks, in order | what the host does |
//! |---|---|---|
//! | `create` | `grants.kubernetes` holds the manifest's namespace (none named: the first granted); kind Job (batch/v1), ConfigMap or Secret (v1); every field known to the kind; a Job's pod asks for nothing [`pod_rules`] refuses | adds the labels below (metadata and a Job's pod template), creates it, remembers it for this call |
//! | `wait-job` | a Job this call created | follows it with the watch the `kubernetes` runner shares ([`Watches`]), its pod's log into the job's log when asked (capped at [`MAX_POD_LOG_BYTES`] per call), until its `Complete`/`Failed` condition; the last pod's exit and the log's last lines |
//! | `job-log` | a Job this call created | the last lines of its newest pod's log |
//! | `delete` | an object this call created | deletes it (a Job with its pods) |
//! | (the call ends: returned, failed, trapped, deadline, timeout) | — | deletes every object of the call the plugin left ([`KubeCall::clean_up`]; when the call's future is dropped, on a task) |
//!
//! A refusal is `denied: true` with a message naming the grant (or the
//! rule), recorded for `plugins call`; nothing reaches the cluster.
//!
//! **The registry login in a docker config Secret.** A builder that pushes
//! from the cluster (Kaniko) needs the registry's login in the build pod,
//! but a plugin never reads the password. So it creates a Secret of type
//! `kubernetes.io/dockerconfigjson` whose `stringData[".dockerconfigjson"]`
//! is [`DOCKER_CONFIG_PLACEHOLDER`] and whose annotation
//! [`DOCKER_CONFIG_REGISTRY_ANNOTATION`] names the registry; `create` fills
//! it with `{"auths": {REGISTRY: {"auth": base64(user:password)}}}` from the
//! login the host holds for the current build ([`BuildLogin`], set for a
//! builder's `build` call only), after checking that the registry named is
//! both the login's and the build's destination's. Anything else is
//! refused (`denied`), naming why. The filled value and the `auth` string
//! are learnt by the redactor first, so neither appears in a log line, a
//! queue record or an error.
//!
//! Labels on everything a plugin creates:
//!
//! | label | value |
//! |---|---|
//! | [`ITEM_LABEL`] (`launch-agent.item`) | the job's queue item id (the call's id for a call made for no job), so a crashed agent's successor cleans it up with the item's other objects |
//! | [`PLUGIN_LABEL`] (`launch-agent.plugin`) | the plugin's name |
//! | [`CALL_LABEL`] (`launch-agent.plugin-call`) | the call's id |
//!
//! The pod rules are the `kubernetes` runner's (the fields W&B refuses in
//! user manifests: host namespaces, host paths, service accounts,
//! privileged containers). W&B's security context is *not* injected:
//! Kaniko's executor runs as root with the default capabilities to unpack
//! images, and a plugin's Job is the plugin's to shape.

use super::state::{CapabilityState, HostCall};
use crate::capabilities::bindings::launch::plugin::kubernetes::{
    Host, JobEnd as WitJobEnd, KubeError, ObjectRef,
};
use crate::capabilities::secrets::{CredentialScope, SecretHandle};
use crate::capped_log::CappedLog;
use crate::clients::kube::job_state::{JobEnd, api_error, job_end, terminated};
use crate::clients::kube::watch::{Event, Watches};
use crate::clients::kube::{ITEM_LABEL, KubeClusters, label_value, pod_rules};
use base64::Engine as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// The label naming the plugin that created an object.
pub const PLUGIN_LABEL: &str = "launch-agent.plugin";
/// The label naming the plugin call that created an object.
pub const CALL_LABEL: &str = "launch-agent.plugin-call";
/// The most bytes of pod logs one call copies into the job's log.
pub const MAX_POD_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// The most log lines `wait-job` and `job-log` return.
pub const MAX_TAIL_LINES: u32 = 200;
/// The field manager a plugin's objects are written as.
const FIELD_MANAGER: &str = "launch-agent-plugin";
/// How long a failed Job's pod status may lag behind the Job's.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the log of a pod that ended may take to drain.
const DRAIN: Duration = Duration::from_secs(5);

/// The value of `stringData[".dockerconfigjson"]` in a docker config
/// Secret that asks the host to fill in the build's registry login (what
/// builder-kaniko renders). Not JSON, so a Secret that reached the API
/// server unfilled would be useless rather than wrong.
pub const DOCKER_CONFIG_PLACEHOLDER: &str =
    "<launch-agent: the registry login, filled by the host>";

/// The annotation of such a Secret naming the registry (the `auths` key:
/// `host[:port]`, or Docker Hub's `https://index.docker.io/v1/`).
pub const DOCKER_CONFIG_REGISTRY_ANNOTATION: &str = "launch-agent/registry";

/// The registry login of the build a builder's `build` call is making:
/// what fills a docker config Secret (see the module docs). Set by the
/// host for that call only; the plugin holds the password as an opaque
/// handle at most.
pub struct BuildLogin {
    username: String,
    password: String,
    /// The registry the login was issued for (its binding).
    registry: String,
    /// The registry of the build's destination, if it names one.
    destination_registry: Option<String>,
}

impl BuildLogin {
    /// The login `username`/`password` (a registry plugin's, bound to its
    /// repository) for a build pushing to `destination` (a repository, no
    /// tag); `None` when the password is bound to no registry.
    pub fn new(username: &str, password: &SecretHandle, destination: &str) -> Option<BuildLogin> {
        let registry = password.scope()?.registry().to_string();
        let destination_registry = CredentialScope::parse(destination)
            .ok()
            .map(|scope| scope.registry().to_string());
        Some(BuildLogin {
            username: username.to_string(),
            password: password.value().to_string(),
            registry,
            destination_registry,
        })
    }
}

impl std::fmt::Debug for BuildLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("registry", &self.registry)
            .field("destination_registry", &self.destination_registry)
            .finish()
    }
}

/// The registry an `auths` key names, as credential scopes write it
/// (`host[:port]` lowercase, `docker.io` for Docker Hub).
fn auths_registry(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if super::policy::DOCKER_HUB_HOSTS.contains(&host.as_str()) {
        "docker.io".to_string()
    } else {
        host
    }
}

/// Fills a docker config Secret that asks for the build's login (see the
/// module docs): `Ok(Some(values))` with the values to learn as secrets
/// once filled, `Ok(None)` for any other Secret, `Err(why)` (a refusal)
/// for one that asks wrongly or for a login the call does not hold.
fn fill_docker_config(
    manifest: &mut Value,
    login: Option<&BuildLogin>,
) -> Result<Option<Vec<String>>, String> {
    let asks = manifest
        .pointer("/stringData/.dockerconfigjson")
        .is_some_and(|v| v == DOCKER_CONFIG_PLACEHOLDER);
    let named = manifest
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DOCKER_CONFIG_REGISTRY_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_string);
    let key = match (asks, named) {
        (false, None) => return Ok(None),
        (false, Some(_)) => {
            return Err(format!(
                "a Secret annotated `{DOCKER_CONFIG_REGISTRY_ANNOTATION}` must carry the \
                 placeholder {DOCKER_CONFIG_PLACEHOLDER:?} as its \
                 `stringData[\".dockerconfigjson\"]`: the host fills it, the plugin writes \
                 no login"
            ));
        }
        (true, None) => {
            return Err(format!(
                "a docker config Secret to be filled with the registry login must name the \
                 registry in its annotation `{DOCKER_CONFIG_REGISTRY_ANNOTATION}`"
            ));
        }
        (true, Some(key)) => key,
    };
    if manifest.get("type").and_then(Value::as_str) != Some("kubernetes.io/dockerconfigjson") {
        return Err("a Secret filled with the registry login must have `type: \
                    kubernetes.io/dockerconfigjson`"
            .to_string());
    }
    if manifest.pointer("/data/.dockerconfigjson").is_some() {
        return Err("a Secret filled with the registry login must not also set \
                    `data[\".dockerconfigjson\"]`"
            .to_string());
    }
    let Some(login) = login else {
        return Err(format!(
            "the Secret asks for the registry login of {key}, but this call holds none: \
             the host fills a docker config Secret only during a builder's `build`, with \
             the login of the build's registry (configure `registry:`)"
        ));
    };
    let registry = auths_registry(&key);
    if registry != login.registry {
        return Err(format!(
            "the Secret asks for the login of registry {registry}, but this build's login is \
             for {}: the host fills a docker config Secret only with the login of the \
             registry it was issued for",
            login.registry
        ));
    }
    if login.destination_registry.as_deref() != Some(registry.as_str()) {
        return Err(format!(
            "the Secret asks for the login of registry {registry}, which is not the build's \
             destination ({}): the host fills a docker config Secret only for the registry \
             the build pushes to",
            login.destination_registry.as_deref().unwrap_or("none")
        ));
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", login.username, login.password));
    let config = json!({"auths": {key: {"auth": auth}}}).to_string();
    manifest["stringData"][".dockerconfigjson"] = json!(config);
    Ok(Some(vec![login.password.clone(), auth, config]))
}

/// The cluster and the shared watches, one per plugin host, shared by
/// every call of every plugin loaded there.
#[derive(Debug, Default)]
pub struct KubeAccess {
    /// The agent's clusters (the inferred one only, for plugins).
    pub clusters: KubeClusters,
    /// One watch on labelled Jobs and one on pods per namespace.
    pub watches: Watches,
}

/// An object one call created.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Created {
    kind: Kind,
    namespace: String,
    name: String,
    uid: String,
}

/// The kinds a plugin may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Job,
    ConfigMap,
    Secret,
}

impl Kind {
    fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "Job" => Some(Kind::Job),
            "ConfigMap" => Some(Kind::ConfigMap),
            "Secret" => Some(Kind::Secret),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            Kind::ConfigMap | Kind::Secret => "v1",
        }
    }
}

/// One call's Kubernetes state: whom to label its objects with, and what
/// it created (deleted when the call ends).
pub struct KubeCall {
    /// The cluster and watches of the plugin host.
    pub access: Arc<KubeAccess>,
    /// The queue item the call is made for, if any.
    pub item_id: Option<String>,
    /// This call's id, as [`CALL_LABEL`] holds it.
    call_id: String,
    /// What the call created and has not deleted.
    created: Vec<Created>,
    /// The client the call used, for the clean-up.
    client: Option<kube::Client>,
    /// The pod logs copied into the job's log, shared by the copying tasks.
    pod_log: Option<Arc<Mutex<CappedLog<SinkLines>>>>,
    /// The registry login of the build this call makes (a builder's
    /// `build` with a registry login only): what fills a docker config
    /// Secret.
    pub build_login: Option<BuildLogin>,
}

impl Default for KubeCall {
    fn default() -> Self {
        KubeCall {
            access: Arc::default(),
            item_id: None,
            call_id: uuid::Uuid::new_v4().simple().to_string(),
            created: Vec::new(),
            client: None,
            pod_log: None,
            build_login: None,
        }
    }
}

impl std::fmt::Debug for KubeCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCall")
            .field("item_id", &self.item_id)
            .field("call_id", &self.call_id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl KubeCall {
    /// Deletes every object of the call the plugin left (a Job with its
    /// pods), logging what it deleted: called when the call ends.
    pub async fn clean_up(&mut self) {
        let (Some(client), created) = (self.client.clone(), std::mem::take(&mut self.created))
        else {
            return;
        };
        delete_all(client, created, &self.call_id).await;
    }
}

impl Drop for KubeCall {
    /// A call whose future was dropped (the agent gave up on the job)
    /// still leaves nothing: the clean-up runs on a task.
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let (Some(client), Ok(runtime)) =
            (self.client.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let created = std::mem::take(&mut self.created);
        let call = self.call_id.clone();
        runtime.spawn(async move { delete_all(client, created, &call).await });
    }
}

async fn delete_all(client: kube::Client, created: Vec<Created>, call: &str) {
    for object in created {
        match delete_object(&client, &object).await {
            Ok(()) => tracing::info!(
                call,
                "kubernetes: deleted {} {}/{} a plugin left at the end of its call",
                object.kind.name(),
                object.namespace,
                object.name
            ),
            Err(error) => tracing::warn!(
                call,
                "kubernetes: deleting {} {}/{} a plugin left: {}",
                object.kind.name(),
                object.namespace,
                object.name,
                api_error(&error)
            ),
        }
    }
}

/// Deletes `object` (a Job in the background, with its pods); a 404 is
/// done.
async fn delete_object(client: &kube::Client, object: &Created) -> Result<(), kube::Error> {
    let params = DeleteParams::background();
    let result = match object.kind {
        Kind::Job => Api::<Job>::namespaced(client.clone(), &object.namespace)
            .delete(&object.name, &params)
            .await
            .map(drop),
        Kind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), &object.namespace)
            .delete(&object.name, &params)
            .await
            .map(drop),
        Kind::Secret => Api::<Secret>::namespaced(client.clone(), &object.namespace)
            .delete(&object.name, &params)
            .await
            .map(drop),
    };
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

/// A writer that hands complete lines to the job's log, each prefixed
/// with the pod's name: what [`CappedLog`] caps.
struct SinkLines {
    sink: super::log::LogSink,
    prefix: String,
    partial: Vec<u8>,
}

impl SinkLines {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.sink
            .said(false, &self.prefix, text.trim_end_matches('\r'));
    }
}

impl Write for SinkLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkLines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
    }
}

/// A refused call's error.
fn denied(message: String) -> KubeError {
    KubeError {
        message,
        denied: true,
        not_found: false,
    }
}

/// A failed call's error, from the client's.
fn failed(what: &str, error: &kube::Error) -> KubeError {
    KubeError {
        message: format!("{what}: {}", api_error(error)),
        denied: false,
        not_found: matches!(error, kube::Error::Api(status) if status.code == 404),
    }
}

/// A manifest that cannot be created, with why (`denied`: a rule refused
/// it; else it is malformed).
fn bad_manifest(message: String, denied: bool) -> KubeError {
    KubeError {
        message,
        denied,
        not_found: false,
    }
}

/// The manifest checked and labelled, ready to create: its kind and
/// namespace, or why not.
fn prepare(
    manifest_json: &str,
    labels: &Map<String, Value>,
    namespace_for: impl FnOnce(Option<&str>) -> Result<String, KubeError>,
) -> Result<(Kind, String, Value), KubeError> {
    let mut manifest: Value = serde_json::from_str(manifest_json)
        .map_err(|e| bad_manifest(format!("the manifest is not JSON: {e}"), false))?;
    let shape = crate::json_kind::of(&manifest);
    let root = manifest.as_object_mut().ok_or_else(|| {
        bad_manifest(
            format!("the manifest must be a JSON object, not {shape}"),
            false,
        )
    })?;
    let kind_name = root.get("kind").and_then(Value::as_str).unwrap_or_default();
    let kind = Kind::parse(kind_name).ok_or_else(|| {
        bad_manifest(
            if kind_name.is_empty() {
                "the manifest has no `kind`: a plugin may create a Job, a ConfigMap or a Secret"
                    .to_string()
            } else {
                format!(
                    "a plugin may not create a {kind_name}: only a Job, a ConfigMap or a Secret"
                )
            },
            true,
        )
    })?;
    match root.get("apiVersion") {
        None | Some(Value::Null) => {
            root.insert("apiVersion".into(), json!(kind.api_version()));
        }
        Some(version) if version == kind.api_version() => {}
        Some(version) => {
            return Err(bad_manifest(
                format!(
                    "`apiVersion` of a {} must be {}, not {version}",
                    kind.name(),
                    kind.api_version()
                ),
                false,
            ));
        }
    }
    let metadata = object_at(root, "metadata")?;
    let asked = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) => Some(ns.clone()),
        Some(other) => {
            return Err(bad_manifest(
                format!(
                    "`metadata.namespace` must be a string, not {}",
                    crate::json_kind::of(other)
                ),
                false,
            ));
        }
    };
    let namespace = namespace_for(asked.as_deref())?;
    metadata.insert("namespace".into(), json!(namespace));
    merge(object_at(metadata, "labels")?, labels);
    if kind == Kind::Job {
        let template = object_at(object_at(root, "spec")?, "template")?;
        merge(
            object_at(object_at(template, "metadata")?, "labels")?,
            labels,
        );
        if let Some(pod) = manifest.pointer("/spec/template/spec") {
            pod_rules::check_pod_spec(pod, "manifest.spec.template.spec", "a plugin's Job")
                .map_err(|e| bad_manifest(e.to_string(), true))?;
        }
    }
    let known = match kind {
        Kind::Job => round_trip::<Job>(&manifest),
        Kind::ConfigMap => round_trip::<ConfigMap>(&manifest),
        Kind::Secret => round_trip::<Secret>(&manifest),
    }
    .map_err(|e| {
        bad_manifest(
            format!("the manifest is not a valid {}: {e}", kind.name()),
            false,
        )
    })?;
    if let Some(path) = pod_rules::first_unknown(&manifest, &known, String::new()) {
        return Err(bad_manifest(
            format!(
                "`manifest{path}` is not a field of a {} {}: remove it or check its spelling",
                kind.api_version(),
                kind.name()
            ),
            false,
        ));
    }
    Ok((kind, namespace, manifest))
}

/// `manifest` read as a `K` and written back: what the typed object keeps.
fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(
    manifest: &Value,
) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<K>(manifest.clone())?)
}

/// The map under `key`, made when absent.
fn object_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, KubeError> {
    let entry = parent.entry(key.to_string()).or_insert(json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry
        .as_object_mut()
        .ok_or_else(|| bad_manifest(format!("`{key}` must be a map"), false))
}

fn merge(into: &mut Map<String, Value>, labels: &Map<String, Value>) {
    for (k, v) in labels {
        into.insert(k.clone(), v.clone());
    }
}

impl CapabilityState {
    /// The plugin's name without its version, as labels and messages use it.
    fn plugin_only(&self) -> &str {
        self.plugin_name
            .split_once(' ')
            .map_or(&*self.plugin_name, |(name, _)| name)
    }

    /// The labels of this call's objects.
    fn kube_labels(&self) -> Map<String, Value> {
        let item = self
            .kube
            .item_id
            .clone()
            .unwrap_or_else(|| self.kube.call_id.clone());
        let mut labels = Map::new();
        labels.insert(ITEM_LABEL.into(), json!(label_value(&item)));
        labels.insert(PLUGIN_LABEL.into(), json!(label_value(self.plugin_only())));
        labels.insert(CALL_LABEL.into(), json!(self.kube.call_id));
        labels
    }

    /// The cluster's client, connected on first use.
    async fn kube_client(&mut self) -> Result<kube::Client, KubeError> {
        if let Some(client) = &self.kube.client {
            return Ok(client.clone());
        }
        let cluster = self
            .kube
            .access
            .clusters
            .cluster(None)
            .await
            .map_err(|e| KubeError {
                message: format!("{e:#}"),
                denied: false,
                not_found: false,
            })?;
        self.kube.client = Some(cluster.client.clone());
        Ok(cluster.client)
    }

    /// The grant check of a call about `object`: its namespace granted, and
    /// (for every function but `create`) created by this call.
    fn kube_own(&self, object: &ObjectRef, kind: Option<Kind>) -> Result<Created, KubeError> {
        if let Err(refusal) = self.policy.kubernetes(Some(&object.namespace)) {
            return Err(denied(self.refused(&refusal)));
        }
        let found = self.kube.created.iter().find(|c| {
            c.kind.name() == object.kind
                && c.namespace == object.namespace
                && c.name == object.name
                && kind.is_none_or(|k| k == c.kind)
        });
        match found {
            Some(created) => Ok(created.clone()),
            None => {
                let message = format!(
                    "{} {}/{} was not created by this call of plugin {}: a plugin may only \
                     wait for, read and delete what it created in the same call{}",
                    object.kind,
                    object.namespace,
                    object.name,
                    self.plugin_name,
                    if kind.is_some() && object.kind != "Job" {
                        " (and only a Job has pods and logs)"
                    } else {
                        ""
                    }
                );
                tracing::warn!(plugin = %self.plugin_name, "kubernetes: {message}");
                self.record(|| HostCall::Refused {
                    message: message.clone(),
                    grant: "the call's own objects".to_string(),
                });
                Err(denied(message))
            }
        }
    }

    /// Records a Kubernetes request and its answer.
    fn kube_asked<T>(
        &self,
        what: String,
        outcome: &Result<T, KubeError>,
        ok: impl Fn(&T) -> String,
    ) {
        // A refusal was recorded where it was made.
        if outcome.as_ref().is_err_and(|e| e.denied) {
            return;
        }
        self.record(|| HostCall::Asked {
            what: format!("kubernetes: {what}"),
            answer: match outcome {
                Ok(value) => ok(value),
                Err(error) => format!("failed: {}", error.message),
            },
        });
    }

    async fn kube_create(&mut self, manifest_json: &str) -> Result<ObjectRef, KubeError> {
        let labels = self.kube_labels();
        let policy = self.policy.clone();
        let refusal = std::cell::RefCell::new(None);
        let prepared = prepare(manifest_json, &labels, |asked| {
            policy.kubernetes(asked).map_err(|r| {
                let message = r.message(&self.plugin_name);
                *refusal.borrow_mut() = Some(r);
                denied(message)
            })
        });
        if let Some(refusal) = refusal.into_inner() {
            return Err(denied(self.refused(&refusal)));
        }
        let (kind, namespace, mut manifest) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                if error.denied {
                    tracing::warn!(plugin = %self.plugin_name, "kubernetes: refused a manifest: {}", error.message);
                    self.record(|| HostCall::Refused {
                        message: error.message.clone(),
                        grant: "the host's rules for plugin manifests".to_string(),
                    });
                }
                return Err(error);
            }
        };
        let filled = match kind {
            Kind::Secret => fill_docker_config(&mut manifest, self.kube.build_login.as_ref()),
            _ => Ok(None),
        };
        let filled = match filled {
            Ok(Some(values)) => {
                for value in &values {
                    self.redactor().learn(value);
                }
                true
            }
            Ok(None) => false,
            Err(message) => {
                tracing::warn!(plugin = %self.plugin_name, "kubernetes: refused a Secret: {message}");
                self.record(|| HostCall::Refused {
                    message: message.clone(),
                    grant: "the build's registry login".to_string(),
                });
                return Err(denied(message));
            }
        };
        let client = self.kube_client().await?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let what = format!("creating a {} in namespace {namespace}", kind.name());
        let meta = match kind {
            Kind::Job => create::<Job>(&client, &namespace, &params, manifest)
                .await
                .map(|o| o.metadata),
            Kind::ConfigMap => create::<ConfigMap>(&client, &namespace, &params, manifest)
                .await
                .map(|o| o.metadata),
            Kind::Secret => create::<Secret>(&client, &namespace, &params, manifest)
                .await
                .map(|o| o.metadata),
        }
        .map_err(|e| {
            let mut error = match e {
                Ok(error) => failed(&what, &error),
                Err(error) => bad_manifest(format!("{what}: {error}"), false),
            };
            if filled {
                error.message = self.scrub(&error.message);
            }
            error
        })?;
        let created = Created {
            kind,
            namespace: namespace.clone(),
            name: meta.name.unwrap_or_default(),
            uid: meta.uid.unwrap_or_default(),
        };
        self.kube.created.push(created.clone());
        if let Some(sink) = &self.log_sink {
            sink.line(&format!(
                "[{}] kubernetes: created {} {}/{}",
                self.plugin_name,
                kind.name(),
                namespace,
                created.name
            ));
        }
        Ok(ObjectRef {
            kind: kind.name().to_string(),
            namespace,
            name: created.name,
        })
    }

    async fn kube_wait(
        &mut self,
        job: &ObjectRef,
        timeout: Duration,
        stream_log: bool,
        tail_lines: u32,
    ) -> Result<WitJobEnd, KubeError> {
        let created = self.kube_own(job, Some(Kind::Job))?;
        let client = self.kube_client().await?;
        // Listening before reading the Job: no event of it is missed.
        let mut events = self
            .kube
            .access
            .watches
            .subscribe(&client, None, &created.namespace);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &created.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &created.namespace);
        let mut follow = Following {
            created: &created,
            pods: pods.clone(),
            stream: stream_log.then(|| self.pod_log_writer()).flatten(),
            logging: Vec::new(),
            tasks: Vec::new(),
            last_pod: None,
            exit: None,
        };
        let current = jobs.get_opt(&created.name).await.map_err(|e| {
            failed(
                &format!("reading Job {}/{}", created.namespace, created.name),
                &e,
            )
        })?;
        let mut end = match current {
            Some(current) => job_end(&current),
            None => {
                return Err(KubeError {
                    message: format!("Job {}/{} is gone", created.namespace, created.name),
                    denied: false,
                    not_found: true,
                });
            }
        };
        if end.is_some() {
            follow.read_pods().await;
        }
        let waited = tokio::time::timeout(timeout, async {
            while end.is_none() {
                match events.recv().await {
                    Ok(Event::Job(j)) if j.metadata.uid.as_deref() == Some(&created.uid) => {
                        end = job_end(&j);
                    }
                    Ok(Event::JobDeleted(j)) if j.metadata.uid.as_deref() == Some(&created.uid) => {
                        return Err(KubeError {
                            message: format!(
                                "Job {}/{} was deleted while it ran (not by this plugin)",
                                created.namespace, created.name
                            ),
                            denied: false,
                            not_found: true,
                        });
                    }
                    Ok(Event::Pod(pod) | Event::PodDeleted(pod)) => follow.on_pod(&pod),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(Some(j)) = jobs.get_opt(&created.name).await {
                            end = job_end(&j);
                        }
                        follow.read_pods().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(KubeError {
                            message: format!("the watch of namespace {} ended", created.namespace),
                            denied: false,
                            not_found: false,
                        });
                    }
                }
            }
            Ok(())
        })
        .await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(KubeError {
                    message: format!(
                        "Job {}/{} did not end within {}s",
                        created.namespace,
                        created.name,
                        timeout.as_secs()
                    ),
                    denied: false,
                    not_found: false,
                });
            }
        }
        // The Job's watch can be ahead of the pods'.
        let settle = tokio::time::Instant::now() + SETTLE;
        while follow.exit.is_none() {
            match tokio::time::timeout_at(settle, events.recv()).await {
                Ok(Ok(Event::Pod(pod) | Event::PodDeleted(pod))) => follow.on_pod(&pod),
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        if follow.exit.is_none() {
            follow.read_pods().await;
        }
        follow.drain().await;
        let log_tail = match &follow.last_pod {
            Some(pod) => tail(&pods, pod, tail_lines).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let exit = follow.exit.take();
        let (succeeded, condition) = match end {
            Some(JobEnd::Complete) | None => (true, String::new()),
            Some(JobEnd::Failed(condition)) => (false, condition),
        };
        let scrub = |text: String| self.scrub(&text);
        Ok(WitJobEnd {
            succeeded,
            condition,
            exit_code: exit.as_ref().map(|t| t.exit_code),
            reason: exit.as_ref().map(|t| t.reason.clone()).unwrap_or_default(),
            message: scrub(exit.map(|t| t.message).unwrap_or_default()),
            log_tail: log_tail.into_iter().map(scrub).collect(),
        })
    }

    /// The writer pod logs go to (into the job's log), made once per call;
    /// `None` without a job log.
    fn pod_log_writer(&mut self) -> Option<Arc<Mutex<CappedLog<SinkLines>>>> {
        let sink = self.log_sink.clone()?;
        let prefix = format!("[{} pod] ", self.plugin_only());
        Some(
            self.kube
                .pod_log
                .get_or_insert_with(|| {
                    Arc::new(Mutex::new(CappedLog::new(
                        SinkLines {
                            sink,
                            prefix,
                            partial: Vec::new(),
                        },
                        Path::new("the plugin's pod logs"),
                        MAX_POD_LOG_BYTES,
                    )))
                })
                .clone(),
        )
    }

    async fn kube_job_log(
        &mut self,
        job: &ObjectRef,
        lines: u32,
    ) -> Result<Vec<String>, KubeError> {
        let created = self.kube_own(job, Some(Kind::Job))?;
        let client = self.kube_client().await?;
        let pods: Api<Pod> = Api::namespaced(client, &created.namespace);
        let mut follow = Following {
            created: &created,
            pods: pods.clone(),
            stream: None,
            logging: Vec::new(),
            tasks: Vec::new(),
            last_pod: None,
            exit: None,
        };
        follow.read_pods().await;
        let lines = match follow.last_pod.clone() {
            Some(pod) => tail(&pods, &pod, lines).await.map_err(|e| {
                failed(
                    &format!("reading the log of pod {}/{pod}", created.namespace),
                    &e,
                )
            })?,
            None => Vec::new(),
        };
        Ok(lines.into_iter().map(|l| self.scrub(&l)).collect())
    }

    async fn kube_delete(&mut self, object: &ObjectRef) -> Result<(), KubeError> {
        let created = self.kube_own(object, None)?;
        let client = self.kube_client().await?;
        delete_object(&client, &created).await.map_err(|e| {
            failed(
                &format!(
                    "deleting {} {}/{}",
                    object.kind, object.namespace, object.name
                ),
                &e,
            )
        })?;
        self.kube.created.retain(|c| *c != created);
        Ok(())
    }
}

/// Creates `manifest` as a `K` in `namespace`: the object created, the
/// client's error, or why the manifest is no `K`.
async fn create<K>(
    client: &kube::Client,
    namespace: &str,
    params: &PostParams,
    manifest: Value,
) -> Result<K, Result<kube::Error, String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(manifest).map_err(|e| Err(e.to_string()))?;
    Api::<K>::namespaced(client.clone(), namespace)
        .create(params, &object)
        .await
        .map_err(Ok)
}

/// The last `lines` lines (at most [`MAX_TAIL_LINES`]) of pod `name`'s log.
async fn tail(pods: &Api<Pod>, name: &str, lines: u32) -> Result<Vec<String>, kube::Error> {
    let lines = lines.min(MAX_TAIL_LINES);
    if lines == 0 {
        return Ok(Vec::new());
    }
    let params = LogParams {
        tail_lines: Some(i64::from(lines)),
        ..LogParams::default()
    };
    let text = pods.logs(name, &params).await?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Following one Job's pods: their logs, the last one's exit.
struct Following<'a> {
    created: &'a Created,
    pods: Api<Pod>,
    stream: Option<Arc<Mutex<CappedLog<SinkLines>>>>,
    logging: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    last_pod: Option<String>,
    exit: Option<crate::clients::kube::job_state::Terminated>,
}

impl Following<'_> {
    fn owns(&self, pod: &Pod) -> bool {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == self.created.uid)
    }

    fn on_pod(&mut self, pod: &Pod) {
        if !self.owns(pod) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.last_pod = Some(name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Running" | "Succeeded" | "Failed"))
            && !self.logging.contains(&name)
            && let Some(stream) = &self.stream
        {
            self.logging.push(name.clone());
            let (pods, stream) = (self.pods.clone(), stream.clone());
            self.tasks.push(tokio::spawn(async move {
                crate::clients::kube::pod_log::follow(pods, &name, None, |chunk| {
                    if let Ok(mut log) = stream.lock() {
                        let _ = log.write_all(chunk);
                    }
                })
                .await;
            }));
        }
        if let Some(exit) = terminated(pod, "") {
            self.exit = Some(exit);
        }
    }

    /// Reads the Job's pods as they are now (after missed events).
    async fn read_pods(&mut self) {
        if let Ok(list) = self
            .pods
            .list(&ListParams::default().labels(CALL_LABEL))
            .await
        {
            let mut pods: Vec<Pod> = list.items.into_iter().filter(|p| self.owns(p)).collect();
            pods.sort_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
            for pod in &pods {
                self.on_pod(pod);
            }
        }
    }

    /// Waits for the logs being copied to end, [`DRAIN`] at most.
    async fn drain(&mut self) {
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Host for CapabilityState {
    async fn create(
        &mut self,
        manifest_json: String,
    ) -> wasmtime::Result<Result<ObjectRef, KubeError>> {
        let outcome = self.kube_create(&manifest_json).await;
        let kind = serde_json::from_str::<Value>(&manifest_json)
            .ok()
            .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "an object".into());
        self.kube_asked(format!("create a {kind}"), &outcome, |o| {
            format!("created {} {}/{}", o.kind, o.namespace, o.name)
        });
        Ok(outcome)
    }

    async fn wait_job(
        &mut self,
        job: ObjectRef,
        timeout_seconds: u32,
        stream_log: bool,
        tail_lines: u32,
    ) -> wasmtime::Result<Result<WitJobEnd, KubeError>> {
        let timeout = Duration::from_secs(u64::from(timeout_seconds));
        let outcome = self.kube_wait(&job, timeout, stream_log, tail_lines).await;
        self.kube_asked(
            format!("wait for Job {}/{}", job.namespace, job.name),
            &outcome,
            |end| match (end.succeeded, end.exit_code) {
                (true, _) => "it succeeded".to_string(),
                (false, Some(code)) => format!("it failed, exit code {code}"),
                (false, None) => format!("it failed: {}", end.condition),
            },
        );
        Ok(outcome)
    }

    async fn job_log(
        &mut self,
        job: ObjectRef,
        tail_lines: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KubeError>> {
        let outcome = self.kube_job_log(&job, tail_lines).await;
        self.kube_asked(
            format!("the log of Job {}/{}", job.namespace, job.name),
            &outcome,
            |lines| format!("{} lines", lines.len()),
        );
        Ok(outcome)
    }

    async fn delete(&mut self, object: ObjectRef) -> wasmtime::Result<Result<(), KubeError>> {
        let outcome = self.kube_delete(&object).await;
        self.kube_asked(
            format!(
                "delete {} {}/{}",
                object.kind, object.namespace, object.name
            ),
            &outcome,
            |()| "deleted".to_string(),
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Map<String, Value> {
        let mut labels = Map::new();
        labels.insert(CALL_LABEL.into(), json!("c1"));
        labels
    }

    fn granted(asked: Option<&str>) -> Result<String, KubeError> {
        match asked {
            None | Some("a") => Ok("a".into()),
            Some(other) => Err(denied(format!("{other} not granted"))),
        }
    }

    #[test]
    fn only_jobs_config_maps_and_secrets_are_created() {
        let error = prepare(
            r#"{"kind":"Deployment","apiVersion":"apps/v1"}"#,
            &labels(),
            granted,
        )
        .unwrap_err();
        assert!(
            error.denied && error.message.contains("Deployment"),
            "{}",
            error.message
        );
        let error = prepare(r#"{"apiVersion":"v1"}"#, &labels(), granted).unwrap_err();
        assert!(error.message.contains("no `kind`"), "{}", error.message);
        let (kind, ns, value) = prepare(
            r#"{"kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"v"}}"#,
            &labels(),
            granted,
        )
        .unwrap();
        assert_eq!((kind, ns.as_str()), (Kind::ConfigMap, "a"));
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["metadata"]["labels"][CALL_LABEL], "c1");
    }

    #[test]
    fn a_jobs_pod_is_labelled_and_held_to_the_runners_rules() {
        let job = |pod: Value| {
            json!({"kind":"Job","metadata":{"name":"j"},"spec":{"template":{"spec":pod}}})
                .to_string()
        };
        let (_, _, value) = prepare(
            &job(json!({"restartPolicy":"Never","containers":[{"name":"c","image":"busybox"}]})),
            &labels(),
            granted,
        )
        .unwrap();
        assert_eq!(
            value["spec"]["template"]["metadata"]["labels"][CALL_LABEL],
            "c1"
        );
        let error = prepare(
            &job(json!({"hostNetwork":true,"containers":[{"name":"c","image":"busybox"}]})),
            &labels(),
            granted,
        )
        .unwrap_err();
        assert!(
            error.denied
                && error
                    .message
                    .contains("`manifest.spec.template.spec.hostNetwork`"),
            "{}",
            error.message
        );
        let error = prepare(
            &job(json!({"containers":[{"name":"c","image":"busybox","imagePullPolcy":"x"}]})),
            &labels(),
            granted,
        )
        .unwrap_err();
        assert!(
            !error.denied
                && error
                    .message
                    .contains("`manifest.spec.template.spec.containers[0].imagePullPolcy`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_namespace_is_the_grants() {
        let manifest =
            |ns: &str| json!({"kind":"Secret","metadata":{"name":"s","namespace":ns}}).to_string();
        let error = prepare(&manifest("b"), &labels(), granted).unwrap_err();
        assert!(error.denied && error.message.contains("b not granted"));
        assert!(prepare(&manifest("a"), &labels(), granted).is_ok());
    }

    fn login(registry: &str, destination: Option<&str>) -> BuildLogin {
        BuildLogin {
            username: "launch".into(),
            password: "s3cret-pass".into(),
            registry: registry.into(),
            destination_registry: destination.map(str::to_string),
        }
    }

    fn docker_config_secret(registry: Option<&str>) -> Value {
        let mut secret = json!({
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "docker-config-x"},
            "stringData": {".dockerconfigjson": DOCKER_CONFIG_PLACEHOLDER},
        });
        if let Some(registry) = registry {
            secret["metadata"]["annotations"] =
                json!({DOCKER_CONFIG_REGISTRY_ANNOTATION: registry});
        }
        secret
    }

    #[test]
    fn the_host_fills_a_docker_config_secret_with_the_builds_login() {
        let mut secret = docker_config_secret(Some("127.0.0.1:5000"));
        let held = login("127.0.0.1:5000", Some("127.0.0.1:5000"));
        let learnt = fill_docker_config(&mut secret, Some(&held))
            .unwrap()
            .unwrap();
        let text = secret["stringData"][".dockerconfigjson"].as_str().unwrap();
        let config: Value = serde_json::from_str(text).unwrap();
        let auth = config["auths"]["127.0.0.1:5000"]["auth"].as_str().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(auth)
                .unwrap(),
            b"launch:s3cret-pass"
        );
        assert!(learnt.contains(&"s3cret-pass".to_string()));
        assert!(learnt.contains(&auth.to_string()) && learnt.contains(&text.to_string()));
        // The round trip the create makes keeps it a valid Secret.
        assert!(round_trip::<Secret>(&secret).is_ok());

        // Docker Hub's historical key is Docker Hub's login.
        let mut hub = docker_config_secret(Some("https://index.docker.io/v1/"));
        let held = login("docker.io", Some("docker.io"));
        assert!(fill_docker_config(&mut hub, Some(&held)).unwrap().is_some());

        // Any other Secret is left alone.
        let mut plain = json!({"kind": "Secret", "stringData": {"k": "v"}});
        assert_eq!(fill_docker_config(&mut plain, None).unwrap(), None);
    }

    #[test]
    fn a_docker_config_secret_is_refused_for_another_registry_or_without_a_login() {
        let held = login("127.0.0.1:5000", Some("127.0.0.1:5000"));
        let cases = [
            (
                docker_config_secret(Some("evil.example.com")),
                Some(&held),
                "this build's login is for 127.0.0.1:5000",
            ),
            (
                docker_config_secret(Some("127.0.0.1:5000")),
                None,
                "this call holds none",
            ),
            (
                docker_config_secret(None),
                Some(&held),
                "must name the registry",
            ),
        ];
        for (mut secret, login, why) in cases {
            let error = fill_docker_config(&mut secret, login).unwrap_err();
            assert!(error.contains(why), "{error}");
            assert!(!error.contains("s3cret-pass"), "{error}");
        }
        // The login's registry, but not where the build pushes.
        let elsewhere = login("127.0.0.1:5000", Some("ghcr.io"));
        let mut secret = docker_config_secret(Some("127.0.0.1:5000"));
        let error = fill_docker_config(&mut secret, Some(&elsewhere)).unwrap_err();
        assert!(
            error.contains("not the build's destination (ghcr.io)"),
            "{error}"
        );
        // The annotation without the placeholder, or the wrong type.
        let mut secret = docker_config_secret(Some("127.0.0.1:5000"));
        secret["stringData"][".dockerconfigjson"] = json!("{}");
        let error = fill_docker_config(&mut secret, Some(&held)).unwrap_err();
        assert!(error.contains("placeholder"), "{error}");
        let mut secret = docker_config_secret(Some("127.0.0.1:5000"));
        secret["type"] = json!("Opaque");
        let error = fill_docker_config(&mut secret, Some(&held)).unwrap_err();
        assert!(error.contains("kubernetes.io/dockerconfigjson"), "{error}");
    }

    #[test]
    fn pod_log_lines_reach_the_sink_whole() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let sink = Arc::new(super::super::log::JobLog::new(
            Box::new(move |l: &str| seen.lock().unwrap().push(l.to_string())),
            Box::new(|_| {}),
        ));
        let mut writer = SinkLines {
            sink,
            prefix: "[p pod] ".into(),
            partial: Vec::new(),
        };
        writer.write_all(b"one\ntw").unwrap();
        writer.write_all(b"o\nthree").unwrap();
        drop(writer);
        assert_eq!(
            *lines.lock().unwrap(),
            ["[p pod] one", "[p pod] two", "[p pod] three"]
        );
    }
}
