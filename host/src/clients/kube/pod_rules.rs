//! What no pod the agent creates may ask for, whoever wrote its manifest
//! (a `kubernetes` job's `resource_args`, a plugin through the Kubernetes
//! capability): the fields W&B refuses in user manifests, because each
//! hands the pod the node or the cluster's identity.
//!
//! | refused | where |
//! |---|---|
//! | [`FORBIDDEN`] fields | the pod spec |
//! | [`FORBIDDEN_CONTAINER`] fields, `capabilities.add` | each container's `securityContext` |
//! | `hostPath` volumes | the pod spec's `volumes` |
//! | `runAsUser: 0` with `runAsNonRoot: true` | the pod's `securityContext` |

use anyhow::bail;
use serde_json::{Value, json};

/// Pod-spec fields W&B refuses in user manifests: each hands the job the
/// node or the cluster's identity. (`path` under the pod spec; `refused`
/// says which values: any, or only `true`.)
pub const FORBIDDEN: &[(&str, Forbidden)] = &[
    ("hostNetwork", Forbidden::True),
    ("hostPID", Forbidden::True),
    ("hostIPC", Forbidden::True),
    ("hostUsers", Forbidden::False),
    ("serviceAccountName", Forbidden::Any),
    ("serviceAccount", Forbidden::Any),
    ("automountServiceAccountToken", Forbidden::True),
    ("nodeName", Forbidden::Any),
];

/// Container fields refused (under `securityContext`).
pub const FORBIDDEN_CONTAINER: &[(&str, Forbidden)] = &[
    ("privileged", Forbidden::True),
    ("allowPrivilegeEscalation", Forbidden::True),
    ("procMount", Forbidden::Any),
];

/// Which values of a forbidden field are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forbidden {
    /// Any value.
    Any,
    /// `true` only.
    True,
    /// `false` only.
    False,
}

/// Refuses the [`FORBIDDEN`] fields, [`FORBIDDEN_CONTAINER`] fields,
/// added capabilities and `hostPath` volumes of pod spec `pod`, which is at
/// path `at`; `what` names the object in the message (`a launch job`).
pub fn check_pod_spec(pod: &Value, at: &str, what: &str) -> anyhow::Result<()> {
    let refused = |value: &Value, rule: Forbidden| match rule {
        Forbidden::Any => !value.is_null(),
        Forbidden::True => value == &Value::Bool(true),
        Forbidden::False => value == &Value::Bool(false),
    };
    for (field, rule) in FORBIDDEN {
        if let Some(value) = pod.get(*field)
            && refused(value, *rule)
        {
            bail!(
                "`{at}.{field}` is not allowed in {what} ({value}): it hands the job the node or the cluster's identity"
            );
        }
    }
    for (i, volume) in pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if volume.get("hostPath").is_some() {
            bail!(
                "`{at}.volumes[{i}].hostPath` is not allowed in {what}: it hands the job the node's files"
            );
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for (i, container) in pod
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(security) = container.get("securityContext") else {
                continue;
            };
            for (field, rule) in FORBIDDEN_CONTAINER {
                if let Some(value) = security.get(*field)
                    && refused(value, *rule)
                {
                    bail!(
                        "`{at}.{list}[{i}].securityContext.{field}` is not allowed in {what} ({value})"
                    );
                }
            }
            if let Some(add) = security.pointer("/capabilities/add")
                && add.as_array().is_some_and(|a| !a.is_empty())
            {
                bail!(
                    "`{at}.{list}[{i}].securityContext.capabilities.add` is not allowed in {what} ({add})"
                );
            }
        }
    }
    if let Some(value) = pod.pointer("/securityContext/runAsUser")
        && value == &json!(0)
        && pod.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true))
    {
        bail!("`{at}.securityContext` asks for user 0 and runAsNonRoot: pick one");
    }
    Ok(())
}

/// The path (`.spec.template...`, after `at`) of the first field of
/// `given` missing from `kept`: what a typed object dropped when it read a
/// manifest, so an unknown or misspelt field is named instead of lost.
pub fn first_unknown(given: &Value, kept: &Value, at: String) -> Option<String> {
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => given.iter().find_map(|(key, value)| {
            let path = format!("{at}.{key}");
            match kept.get(key) {
                None if !value.is_null() => Some(path),
                None => None,
                Some(kept) => first_unknown(value, kept, path),
            }
        }),
        (Value::Array(given), Value::Array(kept)) => given
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (g, k))| first_unknown(g, k, format!("{at}[{i}]"))),
        _ => None,
    }
}
