//! A builder that uses the Kubernetes capability, for the host's tests
//! (world `cluster-builder-plugin`). Its `build` does what its settings
//! (the `builder:` block) say and reports in its outcome or error, so a test
//! can check what the host allowed, refused and cleaned up:
//!
//! | `mode` | other keys | does | result |
//! |---|---|---|---|
//! | `create` | `manifest` (an object) | creates it | Ok, image `created <Kind> <ns>/<name>`, or Err `create: denied=<bool>: <message>` |
//! | `leave` | `namespace`, `image` | creates a ConfigMap, a Secret and a Job (`image` sleeping 300 s) in `namespace` and returns, leaving them | Ok, image `left <n>` |
//! | `run` | `namespace`, `image`, `script`, `tail` | runs `sh -c script` as a Job in `namespace`, waits for it with its log streamed, deletes it | Ok, image `succeeded | <tail lines joined by ` | `>`, or Err `failed exit=<code> reason=<reason> | <tail>` |
//! | `every` | `namespace` | calls every function (`create`, then `wait-job`, `job-log` and `delete` on a made-up Job) | Err with one line per function: `<function>: denied=<bool>: <message>` |

use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::kubernetes::{self, KubeError, ObjectRef};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};
use serde_json::{Value, json};

/// The plugin.
struct KubeUser;

impl Plugin for KubeUser {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "kube-user".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Uses the Kubernetes capability as its settings say".into(),
        }
    }
}

fn said(function: &str, error: &KubeError) -> String {
    format!("{function}: denied={}: {}", error.denied, error.message)
}

fn fail(message: String) -> PluginError {
    PluginError::build(message)
}

fn outcome(image_uri: String) -> Result<BuildOutcome, PluginError> {
    Ok(BuildOutcome {
        image_uri,
        built: true,
    })
}

fn job(namespace: &str, image: &str, script: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "kube-user-", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "work",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", script]
                }]
            }}
        }
    })
}

impl Builder for KubeUser {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        Ok(BuildPlan {
            image_uri: format!("kube-user/{}:latest", request.job.id),
            dockerfile: "FROM scratch\n".into(),
            dockerfile_origin: "generated".into(),
        })
    }

    fn build(
        request: BuildRequest,
        _plan: BuildPlan,
        _username: Option<String>,
        _password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let settings: Value = serde_json::from_str(&request.settings).unwrap_or_default();
        let text = |key: &str| {
            settings
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let namespace = text("namespace");
        match text("mode").as_str() {
            "create" => {
                let manifest = settings.get("manifest").cloned().unwrap_or_default();
                match kubernetes::create(&manifest.to_string()) {
                    Ok(o) => outcome(format!("created {} {}/{}", o.kind, o.namespace, o.name)),
                    Err(e) => Err(fail(said("create", &e))),
                }
            }
            "leave" => {
                let manifests = [
                    json!({"kind": "ConfigMap", "metadata": {"generateName": "kube-user-", "namespace": namespace}, "data": {"k": "v"}}),
                    json!({"kind": "Secret", "metadata": {"generateName": "kube-user-", "namespace": namespace}, "stringData": {"k": "v"}}),
                    job(&namespace, &text("image"), "sleep 300"),
                ];
                for manifest in &manifests {
                    kubernetes::create(&manifest.to_string())
                        .map_err(|e| fail(said("create", &e)))?;
                }
                outcome(format!("left {}", manifests.len()))
            }
            "run" => {
                let tail = settings.get("tail").and_then(Value::as_u64).unwrap_or(5) as u32;
                let created = kubernetes::create(
                    &job(&namespace, &text("image"), &text("script")).to_string(),
                )
                .map_err(|e| fail(said("create", &e)))?;
                let end = kubernetes::wait_job(&created, 120, true, tail)
                    .map_err(|e| fail(said("wait-job", &e)))?;
                kubernetes::delete(&created).map_err(|e| fail(said("delete", &e)))?;
                let lines = end.log_tail.join(" | ");
                if end.succeeded {
                    outcome(format!("succeeded | {lines}"))
                } else {
                    Err(fail(format!(
                        "failed exit={} reason={} | {lines}",
                        end.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                        end.reason
                    )))
                }
            }
            "every" => {
                let made_up = ObjectRef {
                    kind: "Job".into(),
                    namespace: namespace.clone(),
                    name: "not-mine".into(),
                };
                let manifest =
                    json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": namespace}});
                let lines = [
                    kubernetes::create(&manifest.to_string())
                        .map(|_| "create: ok".to_string())
                        .unwrap_or_else(|e| said("create", &e)),
                    kubernetes::wait_job(&made_up, 1, false, 1)
                        .map(|_| "wait-job: ok".to_string())
                        .unwrap_or_else(|e| said("wait-job", &e)),
                    kubernetes::job_log(&made_up, 1)
                        .map(|_| "job-log: ok".to_string())
                        .unwrap_or_else(|e| said("job-log", &e)),
                    kubernetes::delete(&made_up)
                        .map(|_| "delete: ok".to_string())
                        .unwrap_or_else(|e| said("delete", &e)),
                ];
                Err(fail(lines.join("\n")))
            }
            other => Err(fail(format!("unknown mode {other:?}"))),
        }
    }
}

launch_plugin_sdk::export_builder!(KubeUser);
