//! The kinds a deployment may hold: the host applies these and no other
//! (a deployer cannot make a ClusterRoleBinding), and `--delete` lists
//! exactly these.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// A kind the host applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// Its plural, as URLs spell it.
    pub plural: &'static str,
    /// Whether its objects live in a namespace.
    pub namespaced: bool,
}

/// Every kind a deployment may hold, in the order `--delete` removes them
/// (what runs first, the Namespace last).
pub const KINDS: &[Kind] = &[
    k("apps", "v1", "Deployment", "deployments", true),
    k(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    k(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    k("", "v1", "ConfigMap", "configmaps", true),
    k("", "v1", "Secret", "secrets", true),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    k("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    k("", "v1", "ServiceAccount", "serviceaccounts", true),
    k("", "v1", "Namespace", "namespaces", false),
];

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

impl Kind {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kube resource.
    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// The kind of `object` (its `apiVersion` and `kind`), if the host applies it.
pub fn of(object: &Value) -> Result<&'static Kind, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
        .ok_or_else(|| {
            let known: Vec<String> = KINDS
                .iter()
                .map(|k| format!("{} {}", k.api_version(), k.kind))
                .collect();
            format!(
                "{api_version} {kind} is not a kind a deployment may hold ({})",
                known.join(", ")
            )
        })
}
