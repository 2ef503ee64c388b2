//! `deployer-coreweave`: the deployer of the default bundle that renders
//! what runs this agent on a CoreWeave cluster (`launch-agent deploy
//! coreweave`), as the W&B `launch-agent` helm chart and CoreWeave's fork of
//! it do, with what they leave out.
//!
//! | object | name | why |
//! |---|---|---|
//! | Namespace | `--namespace` | where the agent runs |
//! | ServiceAccount | `<name>` | the agent's identity in the cluster |
//! | Role + RoleBinding | `<name>` | in its namespace: pods, pods/log, configmaps, secrets, batch jobs and jobs/status (the chart's rules) |
//! | Role + RoleBinding | `<name>-job-creator` in each target namespace | what the agent needs where its jobs run: pods, pods/log, secrets, events (read), batch jobs and jobs/status |
//! | ConfigMap | `<name>-config` | `launch-config.yaml` as the agent is to read it ([`config`]) and `wandb-base-url` |
//! | PersistentVolumeClaim | `<name>-kaniko` | with `builder.type: kaniko`: the build contexts' volume (ReadWriteMany), mounted at `/home/launch_agent/kaniko`; the CoreWeave chart leaves it for the user to make |
//! | Deployment | `<name>` | one replica, `Recreate` (two agents must not serve one queue with one state), uid 1000, non-root, no capabilities, seccomp `RuntimeDefault`, read-only root with emptyDirs for the state dir and `/tmp` |
//! | PodDisruptionBudget | `<name>` | `minAvailable: 1`, as the chart: a drain waits rather than kill an agent that watches running jobs |
//!
//! The API key's Secret is not rendered here: the deployer names it
//! (`api_key_secret`) and the host, which holds the key, makes it.
//! The ownership labels that `deploy coreweave --delete` selects on are
//! added by the host to every object.

mod config;
mod settings;

use launch_plugin_sdk::deployer::{DeployRequest, Deployer};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo};
use serde_json::{Value, json};
use settings::Settings;
use sha2::{Digest, Sha256};

/// Where the ConfigMap is mounted: W&B's default config dir of the agent's user.
const CONFIG_DIR: &str = "/home/launch_agent/.config/wandb";
/// The agent's state dir in the pod (an emptyDir).
const STATE_DIR: &str = "/var/lib/launch-agent";
/// Where the build-context PVC is mounted in the agent (the chart's path).
const KANIKO_MOUNT: &str = "/home/launch_agent/kaniko";
/// The key of the API key in its Secret (the chart's).
pub const API_KEY_KEY: &str = "password";
/// The uid and gid the agent runs as (the image's `launch_agent`).
const AGENT_UID: i64 = 1000;

/// The plugin.
struct CoreWeave;

impl Plugin for CoreWeave {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "deployer-coreweave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Renders the Kubernetes objects that run launch-agent on CoreWeave".into(),
        }
    }
}

impl Deployer for CoreWeave {
    fn render(request: DeployRequest) -> Result<Vec<String>, PluginError> {
        let settings = settings::parse(&request.settings)?;
        let user: Value = serde_json::from_str(&request.launch_config_json).map_err(|e| {
            PluginError::agent(format!(
                "{}: the host sent a config that is not JSON: {e}",
                settings.config_path
            ))
        })?;
        let objects = render(&user, &settings)?;
        Ok(objects.iter().map(Value::to_string).collect())
    }
}

launch_plugin_sdk::export_deployer!(CoreWeave);

/// Every object, in the order to apply them.
fn render(user: &Value, s: &Settings) -> Result<Vec<Value>, PluginError> {
    let deployed = config::deployed(user, s)?;
    let config_text = config::text(&deployed, s);
    let kaniko = deployed
        .pointer("/builder/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == "kaniko");
    let ns = s.namespace.as_str();
    let name = s.name.as_str();
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": ns},
               "automountServiceAccountToken": true}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/log", "configmaps", "secrets"], "verbs": verbs()},
            {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": verbs()},
        ]}),
        binding(name, ns, name, ns),
    ];
    let creator = format!("{name}-job-creator");
    for target in &s.target_namespaces {
        objects.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": creator, "namespace": target},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log", "secrets"], "verbs": verbs()},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": verbs()},
            ]}),
        );
        objects.push(binding(&creator, target, name, ns));
    }
    objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-config"), "namespace": ns},
        "data": {"launch-config.yaml": config_text, "wandb-base-url": s.base_url}}));
    if kaniko {
        let mut spec = json!({"accessModes": ["ReadWriteMany"],
                              "resources": {"requests": {"storage": s.kaniko_pvc_size}}});
        if let Some(class) = &s.storage_class {
            spec["storageClassName"] = json!(class);
        }
        objects.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": format!("{name}-kaniko"), "namespace": ns}, "spec": spec}));
    }
    objects.push(deployment(s, &deployed, &config_text, kaniko));
    objects.push(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(name)}}}),
    );
    Ok(objects)
}

/// The verbs the chart grants on what the agent makes.
fn verbs() -> Value {
    json!([
        "create", "get", "watch", "list", "update", "delete", "patch"
    ])
}

/// A RoleBinding of Role `role` in `ns` to the agent's ServiceAccount.
fn binding(role: &str, ns: &str, account: &str, account_ns: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": ns},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}})
}

/// The labels the Deployment selects its pods by.
fn selector(name: &str) -> Value {
    json!({"app.kubernetes.io/name": "launch-agent", "app.kubernetes.io/instance": name})
}

/// The agent's Deployment.
fn deployment(s: &Settings, deployed: &Value, config_text: &str, kaniko: bool) -> Value {
    let name = s.name.as_str();
    let secret = s
        .api_key_secret
        .clone()
        .unwrap_or_else(|| format!("{name}-wandb-api-key"));
    let config_map = format!("{name}-config");
    let mut env = vec![
        json!({"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": API_KEY_KEY}}}),
        json!({"name": "WANDB_BASE_URL", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "wandb-base-url"}}}),
        json!({"name": "WANDB_LAUNCH_SERVICE_ACCOUNT_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}),
        json!({"name": "LAUNCH_AGENT_STATE_DIR", "value": STATE_DIR}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "state", "mountPath": STATE_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": config_map}}),
        json!({"name": "state", "emptyDir": {}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    if kaniko {
        let claim = format!("{name}-kaniko");
        env.push(json!({"name": "WANDB_LAUNCH_KANIKO_PVC_NAME", "value": claim}));
        env.push(json!({"name": "WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH", "value": KANIKO_MOUNT}));
        mounts.push(json!({"name": "kaniko", "mountPath": KANIKO_MOUNT}));
        volumes.push(json!({"name": "kaniko", "persistentVolumeClaim": {"claimName": claim}}));
    }
    // Running jobs get the config's grace to finish on SIGTERM, and the
    // agent a little more to hand them back.
    let grace = deployed
        .get("shutdown_grace_seconds")
        .and_then(Value::as_u64)
        .unwrap_or(30)
        + 30;
    let config_sha: String = Sha256::digest(config_text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut pod = json!({
        "serviceAccountName": name,
        "automountServiceAccountToken": true,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID, "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [{
            "name": "launch-agent",
            "image": s.image,
            "imagePullPolicy": s.image_pull_policy,
            "args": ["run", "--config", format!("{CONFIG_DIR}/launch-config.yaml")],
            "env": env,
            "volumeMounts": mounts,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": {
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "runAsNonRoot": true, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        }],
        "volumes": volumes,
    });
    if let Some(region) = &s.region {
        pod["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": config::REGION_LABEL, "operator": "In", "values": [region]}
            ]}]
        }}});
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": name, "namespace": s.namespace},
    "spec": {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": selector(name)},
        "template": {
            "metadata": {"labels": selector(name),
                         "annotations": {"launch-agent/config-sha256": config_sha}},
            "spec": pod
        }
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(config: Value, extra: &str) -> Vec<Value> {
        let s = settings::parse(&format!(r#"{{"image":"reg/launch-agent:1"{extra}}}"#)).unwrap();
        render(&config, &s).unwrap()
    }

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn renders_the_chart_s_objects_in_order() {
        let objects = rendered(
            json!({"queues": ["q"]}),
            r#","target_namespaces":["team-a"]"#,
        );
        assert_eq!(
            kinds(&objects),
            [
                "Namespace/wandb@",
                "ServiceAccount/launch-agent@wandb",
                "Role/launch-agent@wandb",
                "RoleBinding/launch-agent@wandb",
                "Role/launch-agent-job-creator@team-a",
                "RoleBinding/launch-agent-job-creator@team-a",
                "ConfigMap/launch-agent-config@wandb",
                "Deployment/launch-agent@wandb",
                "PodDisruptionBudget/launch-agent@wandb",
            ]
        );
    }

    #[test]
    fn a_kaniko_config_gets_its_build_context_volume() {
        let objects = rendered(
            json!({"builder": {"type": "kaniko"}}),
            r#","storage_class":"shared-vast","kaniko_pvc_size":"50Gi""#,
        );
        let pvc = objects
            .iter()
            .find(|o| o["kind"] == "PersistentVolumeClaim")
            .unwrap();
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(pvc["spec"]["storageClassName"], "shared-vast");
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "50Gi");
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("WANDB_LAUNCH_KANIKO_PVC_NAME") && env.contains("launch-agent-kaniko")
        );
    }

    #[test]
    fn the_deployment_is_locked_down_and_reads_the_key_from_its_secret() {
        let objects = rendered(json!({}), r#","api_key_secret":"my-key""#);
        let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["securityContext"]["runAsUser"], 1000);
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"],
            json!({"name": "my-key", "key": "password"})
        );
        assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
    }

    #[test]
    fn a_config_change_changes_the_pod_template() {
        let sha = |config: Value| {
            rendered(config, "")
                .into_iter()
                .find(|o| o["kind"] == "Deployment")
                .unwrap()["spec"]["template"]["metadata"]["annotations"]["launch-agent/config-sha256"]
                .clone()
        };
        assert_ne!(sha(json!({"queues": ["a"]})), sha(json!({"queues": ["b"]})));
    }
}
