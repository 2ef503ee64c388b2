//! The Job a `kubernetes` run creates, from `resource_args.kubernetes`, as
//! W&B's agent makes it (and a little safer).
//!
//! `resource_args.kubernetes` is one of:
//!
//! | shape | read as |
//! |---|---|
//! | a batch/v1 Job, whole or partial (`metadata`, `spec` with `template`) | the Job |
//! | a pod spec (`containers` at the top) | the Job's `spec.template.spec` |
//! | `spec` holding a pod spec (`spec.containers`) | the same |
//!
//! plus two keys of the agent's own, taken out before anything else:
//! `namespace` (else the manifest's `metadata.namespace`, else the
//! kubeconfig context's) and `context` (a kubeconfig context; else the
//! current one).
//!
//! What is filled in, as W&B does:
//!
//! | field | value |
//! |---|---|
//! | every string | W&B's macros expanded: `${project_name}` `${entity_name}` `${run_id}` `${run_name}` `${image_uri}` `${author}` (see [`Macros`]) |
//! | `metadata.generateName` (without a `name`) | `launch-<entity>-<project>-` |
//! | `metadata.labels`, the pod template's labels | `wandb.ai/run-id`, `wandb.ai/agent`, `launch-agent.item` (how the agent finds its Jobs and pods) |
//! | `spec.backoffLimit`, `spec.ttlSecondsAfterFinished` | `0`, `60` unless set |
//! | `restartPolicy` | `Never` unless set |
//! | the first container | the job's image, its command (first word) and arguments (the rest), the W&B environment (replacing variables of the same name); `WANDB_API_KEY` from a Secret, never in the manifest |
//! | every container's `securityContext` | `allowPrivilegeEscalation: false`, `capabilities.drop: [ALL]`, `seccompProfile: RuntimeDefault` unless set |
//! | `imagePullSecrets` | a Secret with the registry login, when the agent's registry holds the image |
//!
//! Refused, with the field's path (the job fails at stage `agent`): what
//! hands a pod the node or the cluster ([`FORBIDDEN`]), and any field a
//! batch/v1 Job does not have.

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Map, Value, json};

/// The label every Job, pod and Secret of a run carries, with the item id.
pub use crate::clients::kube::{ITEM_LABEL, label_value};
/// W&B's label for the run id.
pub const RUN_ID_LABEL: &str = "wandb.ai/run-id";
/// W&B's label for the agent.
pub const AGENT_LABEL: &str = "wandb.ai/agent";
/// The value of [`AGENT_LABEL`].
pub const AGENT_LABEL_VALUE: &str = "launch-agent";
/// The key of the API key in its Secret.
pub const API_KEY_SECRET_KEY: &str = "WANDB_API_KEY";

pub use crate::clients::kube::pod_rules::{FORBIDDEN, Forbidden};

/// The values W&B's macros expand to.
#[derive(Clone, Debug, Default)]
pub struct Macros {
    /// `${project_name}`: `WANDB_PROJECT`.
    pub project: String,
    /// `${entity_name}`: `WANDB_ENTITY`.
    pub entity: String,
    /// `${run_id}`: `WANDB_RUN_ID`.
    pub run_id: String,
    /// `${run_name}`: `WANDB_NAME`.
    pub run_name: String,
    /// `${image_uri}`: the image the run runs.
    pub image_uri: String,
    /// `${author}`: `WANDB_USERNAME` when the environment sets it (the
    /// runner sees no spec author), else empty.
    pub author: String,
}

impl Macros {
    /// The macros of a run with W&B environment `env` and image `image`.
    pub fn from_env(env: &[(String, String)], image: &str) -> Macros {
        let get = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Macros {
            project: get("WANDB_PROJECT"),
            entity: get("WANDB_ENTITY"),
            run_id: get("WANDB_RUN_ID"),
            run_name: get("WANDB_NAME"),
            image_uri: image.to_string(),
            author: get("WANDB_USERNAME"),
        }
    }

    fn expand(&self, text: &str) -> String {
        if !text.contains("${") {
            return text.to_string();
        }
        text.replace("${project_name}", &self.project)
            .replace("${entity_name}", &self.entity)
            .replace("${run_id}", &self.run_id)
            .replace("${run_name}", &self.run_name)
            .replace("${image_uri}", &self.image_uri)
            .replace("${author}", &self.author)
    }

    /// Expands every string of `value` (keys too: W&B's labels may name
    /// the run in a key).
    pub fn expand_all(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.expand(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.expand_all(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut value) in entries {
                    self.expand_all(&mut value);
                    map.insert(self.expand(&key), value);
                }
            }
            _ => {}
        }
    }
}

/// `resource_args.kubernetes`, read (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct KubeArgs {
    /// The namespace asked for (`namespace`, else `metadata.namespace`).
    pub namespace: Option<String>,
    /// The kubeconfig context asked for.
    pub context: Option<String>,
    /// The Job manifest, as a Job (not yet filled in).
    pub job: Value,
}

const AT: &str = "resource_args.kubernetes";

impl KubeArgs {
    /// Reads and checks `resource_args.kubernetes` (`Null`: none); the error
    /// names the field's path.
    pub fn parse(args: &Value) -> anyhow::Result<KubeArgs> {
        let mut map = match args {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            other => bail!(
                "`{AT}` must be a map (a Job manifest), not {}",
                crate::json_kind::of(other)
            ),
        };
        let mut take_string = |key: &str| -> anyhow::Result<Option<String>> {
            match map.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
                Some(other) => bail!(
                    "`{AT}.{key}` must be a non-empty string, not {}",
                    crate::json_kind::of(&other)
                ),
            }
        };
        let mut namespace = take_string("namespace")?;
        let context = take_string("context")?;
        let job = if map.contains_key("containers") {
            json!({ "spec": { "template": { "spec": Value::Object(map) } } })
        } else if map
            .get("spec")
            .and_then(Value::as_object)
            .is_some_and(|spec| spec.contains_key("containers"))
        {
            let spec = map.remove("spec").unwrap_or(Value::Null);
            map.insert("spec".into(), json!({ "template": { "spec": spec } }));
            Value::Object(map)
        } else {
            Value::Object(map)
        };
        if let Some(api_version) = job.get("apiVersion")
            && api_version != "batch/v1"
        {
            bail!("`{AT}.apiVersion` must be batch/v1 (a Job), not {api_version}");
        }
        if let Some(kind) = job.get("kind")
            && kind != "Job"
        {
            bail!("`{AT}.kind` must be Job, not {kind}");
        }
        if let Some(ns) = job.pointer("/metadata/namespace") {
            let ns = ns
                .as_str()
                .ok_or_else(|| anyhow!("`{AT}.metadata.namespace` must be a string"))?;
            match &namespace {
                Some(asked) if asked != ns => bail!(
                    "`{AT}.namespace` ({asked}) and `{AT}.metadata.namespace` ({ns}) disagree: keep one"
                ),
                _ => namespace = Some(ns.to_string()),
            }
        }
        check_forbidden(&job)?;
        check_known_fields(&job)?;
        Ok(KubeArgs {
            namespace,
            context,
            job,
        })
    }
}

/// `job` laid over `defaults` (`runners.kubernetes.job_defaults`, the
/// operator's): the job's values win, key by key.
///
/// | both have | merged |
/// |---|---|
/// | maps | key by key, recursively |
/// | `containers` lists | item by item, by position (the first is the job's own) |
/// | lists of maps that all have a `name` (volumes, mounts, env) | by name: the job's item wins over the default of its name; the other defaults are added after |
/// | anything else | the job's value |
pub fn with_defaults(job: Value, defaults: &Value) -> Value {
    merge_over(job, defaults, "")
}

fn merge_over(mine: Value, default: &Value, key: &str) -> Value {
    match (mine, default) {
        (Value::Object(mut mine), Value::Object(default)) => {
            for (k, d) in default {
                let merged = match mine.remove(k) {
                    Some(m) => merge_over(m, d, k),
                    None => d.clone(),
                };
                mine.insert(k.clone(), merged);
            }
            Value::Object(mine)
        }
        (Value::Array(mine), Value::Array(default)) if key == "containers" => {
            let mut merged: Vec<Value> = Vec::new();
            let mut mine = mine.into_iter();
            for d in default {
                merged.push(match mine.next() {
                    Some(m) => merge_over(m, d, ""),
                    None => break,
                });
            }
            merged.extend(mine);
            if merged.is_empty() {
                merged = default.clone();
            }
            Value::Array(merged)
        }
        (Value::Array(mine), Value::Array(default))
            if mine
                .iter()
                .chain(default)
                .all(|v| v.get("name").is_some_and(Value::is_string)) =>
        {
            let mut merged = mine;
            for d in default {
                if !merged.iter().any(|m| m.get("name") == d.get("name")) {
                    merged.push(d.clone());
                }
            }
            Value::Array(merged)
        }
        (mine, _) => mine,
    }
}

/// Refuses the [`FORBIDDEN`] fields and `hostPath` volumes.
fn check_forbidden(job: &Value) -> anyhow::Result<()> {
    let Some(pod) = job.pointer("/spec/template/spec") else {
        return Ok(());
    };
    crate::clients::kube::pod_rules::check_pod_spec(
        pod,
        &format!("{AT}.spec.template.spec"),
        "a launch job",
    )
}

/// Refuses fields a batch/v1 Job does not have, naming the first one's path
/// (the typed Job drops what it does not know, so what is lost is unknown).
fn check_known_fields(job: &Value) -> anyhow::Result<()> {
    let typed: Job = serde_json::from_value(job.clone())
        .map_err(|e| anyhow!("`{AT}` is not a valid batch/v1 Job: {e}"))?;
    let back = serde_json::to_value(&typed).context("serialising the Job")?;
    if let Some(path) = crate::clients::kube::pod_rules::first_unknown(job, &back, String::new()) {
        bail!("`{AT}{path}` is not a field of a batch/v1 Job: remove it or check its spelling");
    }
    Ok(())
}

/// What the runner fills into the Job besides the manifest.
#[derive(Clone, Debug)]
pub struct Fill<'a> {
    /// The queue item id.
    pub item_id: &'a str,
    /// The image to run.
    pub image: &'a str,
    /// The command and its arguments; empty runs the image's own.
    pub command: &'a [String],
    /// The W&B environment (the API key among it goes to `api_key_secret`).
    pub env: &'a [(String, String)],
    /// The macros' values.
    pub macros: &'a Macros,
    /// The Secret holding `WANDB_API_KEY`, when the run has one.
    pub api_key_secret: Option<&'a str>,
    /// The Secret to pull the image with, when the registry needs a login.
    pub pull_secret: Option<&'a str>,
    /// The namespace.
    pub namespace: &'a str,
}

/// The Job to create: `args`' manifest with W&B's defaults and the run's
/// image, command and environment filled in (see the module doc).
pub fn build_job(args: &KubeArgs, fill: &Fill<'_>) -> anyhow::Result<Job> {
    let mut job = args.job.clone();
    fill.macros.expand_all(&mut job);
    let root = job.as_object_mut().context("the manifest is a map")?;
    root.insert("apiVersion".into(), json!("batch/v1"));
    root.insert("kind".into(), json!("Job"));
    let labels = json!({
        RUN_ID_LABEL: label_value(&fill.macros.run_id),
        AGENT_LABEL: AGENT_LABEL_VALUE,
        ITEM_LABEL: label_value(fill.item_id),
    });
    {
        let metadata = object_at(root, "metadata")?;
        metadata.insert("namespace".into(), json!(fill.namespace));
        if metadata.get("name").is_none_or(Value::is_null)
            && metadata.get("generateName").is_none_or(Value::is_null)
        {
            metadata.insert(
                "generateName".into(),
                json!(generate_name(&fill.macros.entity, &fill.macros.project)),
            );
        }
        merge_labels(object_at(metadata, "labels")?, &labels);
    }
    let spec = object_at(root, "spec")?;
    spec.entry("backoffLimit").or_insert(json!(0));
    spec.entry("ttlSecondsAfterFinished").or_insert(json!(60));
    let template = object_at(spec, "template")?;
    merge_labels(
        object_at(object_at(template, "metadata")?, "labels")?,
        &labels,
    );
    let pod = object_at(template, "spec")?;
    pod.entry("restartPolicy").or_insert(json!("Never"));
    if let Some(secret) = fill.pull_secret {
        let pulls = pod.entry("imagePullSecrets").or_insert(json!([]));
        if let Some(list) = pulls.as_array_mut() {
            list.push(json!({ "name": secret }));
        }
    }
    let containers = pod.entry("containers").or_insert(json!([]));
    let containers = containers
        .as_array_mut()
        .ok_or_else(|| anyhow!("`{AT}.spec.template.spec.containers` must be a list"))?;
    if containers.is_empty() {
        containers.push(json!({ "name": "launch" }));
    }
    for (i, container) in containers.iter_mut().enumerate() {
        let container = container
            .as_object_mut()
            .ok_or_else(|| anyhow!("`{AT}.spec.template.spec.containers[{i}]` must be a map"))?;
        harden(container)?;
        if i == 0 {
            fill_first(container, fill)?;
        }
    }
    serde_json::from_value(job).map_err(|e| anyhow!("`{AT}` is not a valid batch/v1 Job: {e}"))
}

/// W&B's security context, where the manifest says nothing.
fn harden(container: &mut Map<String, Value>) -> anyhow::Result<()> {
    let security = object_at(container, "securityContext")?;
    security
        .entry("allowPrivilegeEscalation")
        .or_insert(json!(false));
    security
        .entry("capabilities")
        .or_insert(json!({ "drop": ["ALL"] }));
    security
        .entry("seccompProfile")
        .or_insert(json!({ "type": "RuntimeDefault" }));
    Ok(())
}

/// The job's image, command and environment in the first container.
fn fill_first(container: &mut Map<String, Value>, fill: &Fill<'_>) -> anyhow::Result<()> {
    container.insert("image".into(), json!(fill.image));
    if container
        .get("name")
        .is_none_or(|n| n.as_str().is_none_or(str::is_empty))
    {
        container.insert("name".into(), json!("launch"));
    }
    if let Some((program, args)) = fill.command.split_first() {
        container.insert("command".into(), json!([program]));
        container.insert("args".into(), json!(args));
    }
    let env = container.entry("env").or_insert(json!([]));
    let env = env
        .as_array_mut()
        .ok_or_else(|| anyhow!("`{AT}.spec.template.spec.containers[0].env` must be a list"))?;
    let ours = |name: &str| {
        fill.env.iter().any(|(k, _)| k == name)
            || (name == API_KEY_SECRET_KEY && fill.api_key_secret.is_some())
    };
    env.retain(|item| !item.get("name").and_then(Value::as_str).is_some_and(ours));
    for (name, value) in fill.env {
        if name == API_KEY_SECRET_KEY {
            continue;
        }
        env.push(json!({ "name": name, "value": value }));
    }
    if let Some(secret) = fill.api_key_secret {
        env.push(json!({
            "name": API_KEY_SECRET_KEY,
            "valueFrom": { "secretKeyRef": { "name": secret, "key": API_KEY_SECRET_KEY } }
        }));
    }
    Ok(())
}

/// The map under `key`, made when absent; an error when it is not a map.
fn object_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> anyhow::Result<&'a mut Map<String, Value>> {
    let entry = parent.entry(key.to_string()).or_insert(json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry
        .as_object_mut()
        .ok_or_else(|| anyhow!("`{AT}`: `{key}` must be a map"))
}

fn merge_labels(labels: &mut Map<String, Value>, ours: &Value) {
    if let Some(ours) = ours.as_object() {
        for (k, v) in ours {
            labels.insert(k.clone(), v.clone());
        }
    }
}

/// A DNS-1123 label made of `text`: lowercase alphanumerics and `-`.
pub fn dns_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// W&B's `launch-<entity>-<project>-`, made a valid name prefix (the
/// server adds 5 characters; a Job name is at most 63).
pub fn generate_name(entity: &str, project: &str) -> String {
    let parts: Vec<String> = ["launch", entity, project]
        .iter()
        .map(|p| dns_label(p))
        .filter(|p| !p.is_empty())
        .collect();
    let mut prefix: String = parts.join("-").chars().take(52).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    prefix.push('-');
    prefix
}

/// The name of the Secret holding a run's API key.
pub fn api_key_secret_name(item_id: &str) -> String {
    format!("launch-{}-api-key", short_id(item_id))
}

/// The name of the Secret holding a run's image pull login.
pub fn pull_secret_name(item_id: &str) -> String {
    format!("launch-{}-pull", short_id(item_id))
}

fn short_id(item_id: &str) -> String {
    let id = dns_label(item_id);
    id.chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_defaults_lie_under_the_job_s_own_values() {
        let defaults = json!({"spec": {"template": {"spec": {
            "affinity": {"nodeAffinity": {"x": 1}},
            "priorityClassName": "low",
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            "containers": [{"volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
        }}}});
        let job = json!({"spec": {"template": {"spec": {
            "priorityClassName": "high",
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "dshm", "emptyDir": {}}],
            "containers": [{"name": "main", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}, {"name": "side"}]
        }}}});
        let merged = with_defaults(job, &defaults);
        let pod = &merged["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], "high");
        assert_eq!(pod["affinity"]["nodeAffinity"]["x"], 1);
        assert_eq!(
            pod["volumes"],
            json!([{"name": "data", "emptyDir": {}}, {"name": "dshm", "emptyDir": {}}])
        );
        assert_eq!(pod["containers"][0]["name"], "main");
        assert_eq!(
            pod["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}, {"name": "dshm", "mountPath": "/dev/shm"}])
        );
        assert_eq!(pod["containers"][1], json!({"name": "side"}));
        let bare = with_defaults(json!({}), &defaults);
        assert_eq!(
            bare["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "dshm"
        );
    }

    fn fill<'a>(
        macros: &'a Macros,
        env: &'a [(String, String)],
        command: &'a [String],
    ) -> Fill<'a> {
        Fill {
            item_id: "item-1",
            image: "reg/img:1",
            command,
            env,
            macros,
            api_key_secret: Some("launch-item-1-api-key"),
            pull_secret: None,
            namespace: "ns",
        }
    }

    #[test]
    fn an_empty_manifest_gets_wandbs_defaults() {
        let macros = Macros {
            project: "My Project".into(),
            entity: "ent".into(),
            run_id: "abc123".into(),
            ..Macros::default()
        };
        let env = vec![
            ("WANDB_RUN_ID".to_string(), "abc123".to_string()),
            ("WANDB_API_KEY".to_string(), "k".repeat(40)),
        ];
        let command = vec!["python".to_string(), "train.py".to_string()];
        let args = KubeArgs::parse(&Value::Null).unwrap();
        let job = build_job(&args, &fill(&macros, &env, &command)).unwrap();
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(value["metadata"]["generateName"], "launch-ent-my-project-");
        assert_eq!(value["metadata"]["namespace"], "ns");
        assert_eq!(value["metadata"]["labels"][RUN_ID_LABEL], "abc123");
        assert_eq!(value["spec"]["backoffLimit"], 0);
        assert_eq!(value["spec"]["ttlSecondsAfterFinished"], 60);
        let pod = &value["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "reg/img:1");
        assert_eq!(container["command"], json!(["python"]));
        assert_eq!(container["args"], json!(["train.py"]));
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        let shown = value.to_string();
        assert!(
            !shown.contains(&"k".repeat(40)),
            "the API key is in the manifest"
        );
        assert!(shown.contains("secretKeyRef"));
    }

    #[test]
    fn macros_are_expanded_and_pod_specs_accepted() {
        let macros = Macros {
            run_id: "r1".into(),
            project: "p".into(),
            image_uri: "reg/img:1".into(),
            ..Macros::default()
        };
        let args = KubeArgs::parse(&json!({
            "namespace": "team-a",
            "containers": [{"name": "main", "env": [{"name": "RUN", "value": "${run_id}-${project_name}"}]}],
            "nodeSelector": {"pool": "${image_uri}"}
        }))
        .unwrap();
        assert_eq!(args.namespace.as_deref(), Some("team-a"));
        let job = build_job(&args, &fill(&macros, &[], &[])).unwrap();
        let value = serde_json::to_value(&job).unwrap();
        let pod = &value["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["pool"], "reg/img:1");
        assert_eq!(pod["containers"][0]["env"][0]["value"], "r1-p");
        assert!(pod["containers"][0].get("command").is_none());
    }

    #[test]
    fn forbidden_and_unknown_fields_are_named_by_path() {
        for (args, path) in [
            (
                json!({"spec": {"template": {"spec": {"hostNetwork": true}}}}),
                "resource_args.kubernetes.spec.template.spec.hostNetwork",
            ),
            (
                json!({"containers": [{"name": "a"}], "serviceAccountName": "admin"}),
                "resource_args.kubernetes.spec.template.spec.serviceAccountName",
            ),
            (
                json!({"containers": [{"name": "a"}], "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}),
                "resource_args.kubernetes.spec.template.spec.volumes[0].hostPath",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"privileged": true}}]}),
                "resource_args.kubernetes.spec.template.spec.containers[0].securityContext.privileged",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "imagePullPolcy": "x"}]}}}}),
                "resource_args.kubernetes.spec.template.spec.containers[0].imagePullPolcy",
            ),
            (
                json!({"kind": "Deployment"}),
                "resource_args.kubernetes.kind",
            ),
        ] {
            let error = format!("{:#}", KubeArgs::parse(&args).unwrap_err());
            assert!(error.contains(&format!("`{path}`")), "{args}: {error}");
        }
        assert!(
            KubeArgs::parse(&json!({"containers": [{"name": "a"}], "hostNetwork": false})).is_ok()
        );
    }

    #[test]
    fn names_and_labels_keep_to_what_the_server_accepts() {
        assert_eq!(generate_name("My_Team", "x".repeat(80).as_str()).len(), 53);
        assert_eq!(generate_name("", ""), "launch-");
        assert_eq!(label_value("-a/b c-"), "a-b-c");
        assert_eq!(api_key_secret_name("0b9f_41.X"), "launch-0b9f-41-x-api-key");
    }
}
