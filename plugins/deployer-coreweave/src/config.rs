//! The launch-config.yaml the deployed agent runs with: the user's, checked
//! for what cannot work in a pod, plus what a pod on CoreWeave needs.
//!
//! | the user's config says | the deployed config | why |
//! |---|---|---|
//! | no `queue_backend` | `queue_backend: wandb` | the W&B chart deploys a W&B agent; an on-disk queue in a pod serves nobody |
//! | `queue_backend: embedded` | refused | the same |
//! | no `runners.local-process.enabled` | `false` | a queue's submitter would run processes in the agent's pod, with its service account's token |
//! | `runners.kubernetes.enabled: false` | refused | the agent could run no job on its cluster |
//! | `state_dir`, `plugin_dir`, a `plugins:` entry's `path` | refused | paths of this machine: the pod has none of them (use `oci:` plugins) |
//! | `--region`, `--gpu-class` | `runners.kubernetes.job_defaults` gets the node affinity (and `/dev/shm` in memory for GPU jobs), under what the config's own `job_defaults` says | every job lands in the region, on the GPU class |
//!
//! The deployed config is written as JSON (which is YAML) with a comment
//! naming its source: the agent reads it as it reads any launch-config.yaml.

use crate::settings::Settings;
use launch_plugin_sdk::PluginError;
use serde_json::{Map, Value, json};

/// CoreWeave's node label for the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// CoreWeave's node label for the GPU class.
pub const GPU_CLASS_LABEL: &str = "gpu.nvidia.com/class";

/// The config as the deployed agent reads it, or an error naming the key
/// that cannot work in a pod.
pub fn deployed(user: &Value, settings: &Settings) -> Result<Value, PluginError> {
    let at = &settings.config_path;
    let Some(root) = user.as_object() else {
        return Err(PluginError::agent(format!(
            "{at}: the config is not a map of keys"
        )));
    };
    if root.get("queue_backend").and_then(Value::as_str) == Some("embedded") {
        return Err(PluginError::agent(format!(
            "{at}: `queue_backend: embedded` keeps the queue on the agent's disk, which no one can submit to in a pod; use `wandb` (the default of a deployed agent) or `postgres`"
        )));
    }
    for key in ["state_dir", "plugin_dir"] {
        if root.get(key).is_some_and(|v| !v.is_null()) {
            return Err(PluginError::agent(format!(
                "{at}: `{key}` names a path of this machine, which the agent's pod does not have; remove it (the pod's state dir is an emptyDir)"
            )));
        }
    }
    if let Some(plugins) = root.get("plugins").and_then(Value::as_object) {
        for (name, entry) in plugins {
            if entry.get("path").is_some_and(|v| !v.is_null()) {
                return Err(PluginError::agent(format!(
                    "{at}: `plugins.{name}.path` names a file of this machine, which the agent's pod does not have; publish the plugin and give its `oci:` reference"
                )));
            }
        }
    }
    let runners = root.get("runners");
    if runners
        .and_then(|r| r.pointer("/kubernetes/enabled"))
        .is_some_and(|v| v == &Value::Bool(false))
    {
        return Err(PluginError::agent(format!(
            "{at}: `runners.kubernetes.enabled: false`: the deployed agent could run no job on its cluster; remove it"
        )));
    }

    let mut config = root.clone();
    config
        .entry("queue_backend")
        .or_insert_with(|| json!("wandb"));
    let runners = object_entry(&mut config, "runners", at)?;
    let local_process = object_entry(runners, "local-process", at)?;
    local_process
        .entry("enabled")
        .or_insert_with(|| json!(false));
    if let Some(defaults) = job_defaults(settings) {
        let kubernetes = object_entry(runners, "kubernetes", at)?;
        let merged = match kubernetes.remove("job_defaults") {
            Some(own) => merge_under(own, defaults),
            None => defaults,
        };
        kubernetes.insert("job_defaults".into(), merged);
    }
    Ok(Value::Object(config))
}

/// The config's text for the ConfigMap: a comment, then `config` as JSON.
pub fn text(config: &Value, settings: &Settings) -> String {
    let pretty = serde_json::to_string_pretty(config).unwrap_or_else(|_| config.to_string());
    format!(
        "# Rendered by `launch-agent deploy coreweave` from {} (JSON is YAML).\n{pretty}\n",
        settings.config_path.replace('\n', " ")
    )
}

/// `map[key]` as a map, made empty when missing; an error when it is not a map.
fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a mut Map<String, Value>, PluginError> {
    let value = map.entry(key).or_insert_with(|| json!({}));
    if value.is_null() {
        *value = json!({});
    }
    value
        .as_object_mut()
        .ok_or_else(|| PluginError::agent(format!("{at}: `{key}` must be a map")))
}

/// The job defaults the flags ask for: a partial batch/v1 Job with the
/// node affinity and, for GPU jobs, `/dev/shm` as an in-memory emptyDir.
pub fn job_defaults(settings: &Settings) -> Option<Value> {
    let mut expressions = Vec::new();
    if let Some(region) = &settings.region {
        expressions.push(json!({"key": REGION_LABEL, "operator": "In", "values": [region]}));
    }
    if !settings.gpu_classes.is_empty() {
        expressions.push(
            json!({"key": GPU_CLASS_LABEL, "operator": "In", "values": settings.gpu_classes}),
        );
    }
    if expressions.is_empty() {
        return None;
    }
    let mut pod = json!({
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }}}
    });
    if !settings.gpu_classes.is_empty() {
        // NCCL and PyTorch's data loaders use shared memory; a container's
        // default /dev/shm is 64 MiB.
        pod["volumes"] = json!([{"name": "dshm", "emptyDir": {"medium": "Memory"}}]);
        pod["containers"] = json!([{"volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]);
    }
    Some(json!({"spec": {"template": {"spec": pod}}}))
}

/// `own` merged over `defaults`: maps key by key, `own`'s values winning.
fn merge_under(own: Value, defaults: Value) -> Value {
    match (own, defaults) {
        (Value::Object(mut own), Value::Object(defaults)) => {
            for (key, default) in defaults {
                let merged = match own.remove(&key) {
                    Some(mine) => merge_under(mine, default),
                    None => default,
                };
                own.insert(key, merged);
            }
            Value::Object(own)
        }
        (own, _) => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        crate::settings::parse(&format!(r#"{{"image":"i","config_path":"c.yaml"{extra}}}"#))
            .unwrap()
    }

    #[test]
    fn a_w_and_b_config_gets_the_w_and_b_queue_and_no_local_processes() {
        let out = deployed(&json!({"queues": ["q"]}), &settings("")).unwrap();
        assert_eq!(out["queue_backend"], "wandb");
        assert_eq!(out["runners"]["local-process"]["enabled"], false);
        assert!(out["runners"].get("kubernetes").is_none());
        let kept = deployed(
            &json!({"queue_backend": "postgres", "runners": {"local-process": {"enabled": true}}}),
            &settings(""),
        )
        .unwrap();
        assert_eq!(kept["queue_backend"], "postgres");
        assert_eq!(kept["runners"]["local-process"]["enabled"], true);
    }

    #[test]
    fn what_cannot_work_in_a_pod_is_refused_naming_the_key_and_file() {
        for (config, key) in [
            (
                json!({"queue_backend": "embedded"}),
                "`queue_backend: embedded`",
            ),
            (json!({"state_dir": "/x"}), "`state_dir`"),
            (json!({"plugin_dir": "p"}), "`plugin_dir`"),
            (
                json!({"plugins": {"mine": {"path": "m.wasm"}}}),
                "`plugins.mine.path`",
            ),
            (
                json!({"runners": {"kubernetes": {"enabled": false}}}),
                "`runners.kubernetes.enabled: false`",
            ),
            (json!({"runners": []}), "`runners` must be a map"),
        ] {
            let e = deployed(&config, &settings("")).unwrap_err();
            assert!(
                e.message.starts_with("c.yaml: ") && e.message.contains(key),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn region_and_gpu_class_become_job_defaults_under_the_config_s_own() {
        let out = deployed(
            &json!({"runners": {"kubernetes": {"job_defaults": {"spec": {"template": {"spec": {"priorityClassName": "high"}}}}}}}),
            &settings(r#","region":"ORD1","gpu_classes":["A100_NVLINK_80GB","H100_NVLINK_80GB"]"#),
        )
        .unwrap();
        let pod = &out["runners"]["kubernetes"]["job_defaults"]["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], "high");
        let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        assert_eq!(
            terms[0],
            json!({"key": REGION_LABEL, "operator": "In", "values": ["ORD1"]})
        );
        assert_eq!(
            terms[1]["values"],
            json!(["A100_NVLINK_80GB", "H100_NVLINK_80GB"])
        );
        assert_eq!(pod["volumes"][0]["emptyDir"]["medium"], "Memory");
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["mountPath"],
            "/dev/shm"
        );
    }

    #[test]
    fn a_region_alone_gets_no_shared_memory_volume() {
        let defaults = job_defaults(&settings(r#","region":"LGA1""#)).unwrap();
        assert!(
            defaults["spec"]["template"]["spec"]
                .get("volumes")
                .is_none()
        );
        assert!(job_defaults(&settings("")).is_none());
    }
}
