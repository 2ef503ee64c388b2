//! Deploying this agent on a cluster (`launch-agent deploy <target>`): a
//! deployer plugin renders the objects, the host labels them, adds the API
//! key's Secret, and applies, prints or deletes them.
//!
//! Why the split: the plugin holds the target's opinions (CoreWeave's node
//! labels, the chart's RBAC) and never touches the cluster or the key; the
//! host holds the client, the key, and the rule that decides what `--delete`
//! removes, so no deployer can make it remove something else.
//!
//! | step | where |
//! |---|---|
//! | render: the plugin's objects, checked (only the kinds of [`kinds::KINDS`], each named, in a namespace when namespaced) and labelled ([`ownership`]) | [`render`] |
//! | the API key's Secret (from `--api-key-file` or `WANDB_API_KEY`; never from the config) | [`Rendered::with_api_key`] |
//! | print for `kubectl apply -f -` (no Secret: a header says how to make it) | [`yaml::dry_run`] |
//! | apply (server-side apply, field manager `launch-agent`), wait, delete | [`apply`] |

pub mod apply;
pub mod kinds;
pub mod yaml;

use crate::plugins::LoadedPlugin;
use crate::plugins::bindings::DeployRequest;
use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value, json};

/// The field manager of every apply, and the `managed-by` label's value.
pub const FIELD_MANAGER: &str = "launch-agent";
/// The label every object the host applies carries, with [`FIELD_MANAGER`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label with the deployment's name (`--name`).
pub const NAME_LABEL: &str = "launch-agent.deploy/name";
/// The label with the agent's namespace (`--namespace`): objects in the
/// target namespaces belong to the deployment of that namespace.
pub const NAMESPACE_LABEL: &str = "launch-agent.deploy/namespace";
/// The label with the target (`coreweave`).
pub const TARGET_LABEL: &str = "launch-agent.deploy/target";
/// The key of the API key in its Secret (as the W&B chart's).
pub const API_KEY_KEY: &str = "password";

/// Which deployment an object belongs to: what `--delete` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The deployment's name.
    pub name: String,
    /// The agent's namespace.
    pub namespace: String,
    /// The target.
    pub target: String,
}

impl Ownership {
    /// The labels the host puts on every object.
    pub fn labels(&self) -> Value {
        json!({
            MANAGED_BY: FIELD_MANAGER,
            NAME_LABEL: self.name,
            NAMESPACE_LABEL: self.namespace,
            TARGET_LABEL: self.target,
        })
    }

    /// The label selector of exactly this deployment's objects.
    pub fn selector(&self) -> String {
        format!(
            "{MANAGED_BY}={FIELD_MANAGER},{NAME_LABEL}={},{NAMESPACE_LABEL}={}",
            self.name, self.namespace
        )
    }

    /// Whether `object` carries this deployment's labels.
    pub fn owns(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let has = |k: &str, v: &str| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .is_some_and(|x| x == v)
        };
        has(MANAGED_BY, FIELD_MANAGER)
            && has(NAME_LABEL, &self.name)
            && has(NAMESPACE_LABEL, &self.namespace)
    }
}

/// What a deployer rendered, checked and labelled.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The objects, in the order to apply them.
    pub objects: Vec<Value>,
    /// Whose they are.
    pub ownership: Ownership,
    /// The API key's Secret the Deployment reads: (name, whether the host
    /// makes it).
    pub api_key_secret: (String, bool),
}

/// Calls `deployer`'s `render` with the config (its text and, as JSON,
/// what the agent's own parser read) and `settings`, and checks and labels
/// what it returns. `target` is the deployer's name (`coreweave`).
pub async fn render(
    deployer: &LoadedPlugin,
    target: &str,
    config_text: &str,
    config_json: &Value,
    settings: &Value,
    api_key_secret: (String, bool),
) -> anyhow::Result<Rendered> {
    let request = DeployRequest {
        launch_config: config_text.to_string(),
        launch_config_json: config_json.to_string(),
        settings: settings.to_string(),
    };
    let out = deployer
        .render(&request, None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let ownership = Ownership {
        name: settings["name"].as_str().unwrap_or_default().to_string(),
        namespace: settings["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        target: target.to_string(),
    };
    let mut objects = Vec::with_capacity(out.len());
    for (i, text) in out.iter().enumerate() {
        let object: Value = serde_json::from_str(text)
            .with_context(|| format!("deployer {}: object {i} is not JSON", deployer.label()))?;
        objects.push(check(object, i, deployer.label(), &ownership)?);
    }
    Ok(Rendered {
        objects,
        ownership,
        api_key_secret,
    })
}

/// `object` checked (a kind the host applies, a name, a namespace when
/// namespaced, none otherwise) and given the ownership labels.
fn check(mut object: Value, i: usize, plugin: &str, owner: &Ownership) -> anyhow::Result<Value> {
    let kind = kinds::of(&object).map_err(|e| anyhow!("deployer {plugin}: object {i}: {e}"))?;
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        bail!(
            "deployer {plugin}: object {i} ({}) has no metadata",
            kind.kind
        );
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        bail!(
            "deployer {plugin}: object {i} ({}) has no metadata.name",
            kind.kind
        );
    }
    let namespaced = meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if namespaced != kind.namespaced {
        bail!(
            "deployer {plugin}: {} {name}: {} metadata.namespace",
            kind.kind,
            if kind.namespaced {
                "needs a"
            } else {
                "must have no"
            }
        );
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(labels) = labels.as_object_mut() else {
        bail!(
            "deployer {plugin}: {} {name}: metadata.labels is not a map",
            kind.kind
        );
    };
    if let Value::Object(ours) = owner.labels() {
        labels.extend(ours);
    }
    Ok(object)
}

impl Rendered {
    /// The objects with the API key's Secret (when the host makes it)
    /// before the first Deployment.
    pub fn with_api_key(&self, api_key: &str) -> Vec<Value> {
        let (name, make) = &self.api_key_secret;
        let mut objects = self.objects.clone();
        if *make {
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": self.ownership.namespace,
                             "labels": self.ownership.labels()},
                "type": "Opaque",
                "stringData": {API_KEY_KEY: api_key},
            });
            let at = objects
                .iter()
                .position(|o| o["kind"] == "Deployment")
                .unwrap_or(objects.len());
            objects.insert(at, secret);
        }
        objects
    }

    /// The namespaces other than the agent's that the objects go in: they
    /// must exist (the deployment does not make or remove them).
    pub fn target_namespaces(&self) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for object in &self.objects {
            if let Some(ns) = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                && ns != self.ownership.namespace
                && !found.iter().any(|f| f == ns)
            {
                found.push(ns.to_string());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Ownership {
        Ownership {
            name: "agent".into(),
            namespace: "wandb".into(),
            target: "coreweave".into(),
        }
    }

    #[test]
    fn objects_get_the_labels_and_bad_ones_are_named() {
        let ok = check(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "wandb"}}),
            0,
            "p",
            &owner(),
        )
        .unwrap();
        assert!(owner().owns(&ok));
        for (object, said) in [
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "x"}}),
                "ClusterRoleBinding",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                "needs a metadata.namespace",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}}),
                "must have no",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "x"}}),
                "no metadata.name",
            ),
        ] {
            let e = check(object, 3, "p", &owner()).unwrap_err().to_string();
            assert!(e.contains(said), "{e}");
        }
    }

    #[test]
    fn the_selector_matches_only_this_deployment() {
        let mine = json!({"metadata": {"labels": owner().labels()}});
        let other = Ownership {
            name: "other".into(),
            ..owner()
        };
        assert!(owner().owns(&mine));
        assert!(!other.owns(&mine));
        assert_eq!(
            owner().selector(),
            "app.kubernetes.io/managed-by=launch-agent,launch-agent.deploy/name=agent,launch-agent.deploy/namespace=wandb"
        );
    }
}
