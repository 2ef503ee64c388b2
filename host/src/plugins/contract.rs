//! Which version of the WIT contract a component was built against, and
//! which kind of plugin it is.
//!
//! A component names every interface it imports or exports with its package
//! and version, e.g. `launch:plugin/builder@0.1.0`. The host reads those
//! names before instantiating anything, so a plugin built for another
//! contract fails with both versions named instead of wasmtime's "import
//! not found".
//!
//! | host contract | accepts plugins built against |
//! |---|---|
//! | 0.1.0 | 0.1.x |
//! | 0.2.0 | 0.1.x (the frozen `wit/0.1/`, served by an adapter) and 0.2.x |

use semver::{Version, VersionReq};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package of the contract.
pub const PACKAGE: &str = "launch:plugin";
/// The contract version this host is built against.
pub const HOST_VERSION: &str = "0.2.0";
/// The contract versions this host accepts, as a semver requirement.
pub const ACCEPTED: &str = ">=0.1.0, <0.3.0";
/// [`ACCEPTED`] as messages say it.
pub const ACCEPTED_SHOWN: &str = "0.1.x or 0.2.x";

/// The kind of a plugin: which world's interface it exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Exports `launch:plugin/builder`.
    Builder,
    /// Exports `launch:plugin/registry`.
    Registry,
    /// Exports `launch:plugin/environment`.
    Environment,
    /// Exports `launch:plugin/deployer` (0.2): `launch-agent deploy`.
    Deployer,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Builder => "builder",
            PluginKind::Registry => "registry",
            PluginKind::Environment => "environment",
            PluginKind::Deployer => "deployer",
        })
    }
}

/// What the component's type says about the contract.
#[derive(Clone, Debug)]
pub struct ContractInfo {
    /// The contract version the component was built against.
    pub version: Version,
    /// The plugin's kind.
    pub kind: PluginKind,
    /// The interfaces the component imports (`launch:plugin/log@0.1.0`,
    /// `wasi:filesystem/types@0.2.6`, ...), sorted.
    pub imports: Vec<String>,
}

impl ContractInfo {
    /// Whether the component imports any WASI interface. A lean plugin
    /// (built for `wasm32-unknown-unknown`) imports only the contract.
    pub fn uses_wasi(&self) -> bool {
        self.imports.iter().any(|name| name.starts_with("wasi:"))
    }

    /// Whether any imported function may wait on the host (they are async
    /// on the host side): WASI's, and the Docker and OCI capabilities'.
    /// A plugin that imports only [`SYNC_INTERFACES`] is called without a
    /// fiber.
    pub fn imports_can_wait(&self) -> bool {
        !self.imports.iter().all(|name| {
            SYNC_INTERFACES
                .iter()
                .any(|sync| name.starts_with(&format!("{PACKAGE}/{sync}@")))
        })
    }
}

/// The contract's interfaces whose host functions never wait.
pub const SYNC_INTERFACES: [&str; 3] = ["types", "log", "secrets"];

/// Reads the contract version and kind from `component`, refusing versions
/// outside [`ACCEPTED`] with a message naming both.
pub fn inspect(engine: &Engine, component: &Component) -> Result<ContractInfo, String> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .chain(ty.exports(engine).map(|(name, _)| name.to_string()))
        .collect();
    let accepted = VersionReq::parse(ACCEPTED).map_err(|e| e.to_string())?;
    let mut version: Option<Version> = None;
    for name in &names {
        let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let Some((_, v)) = rest.split_once('@') else {
            return Err(format!(
                "uses {name} without a version; this host accepts {PACKAGE}@{ACCEPTED_SHOWN} (it is {PACKAGE}@{HOST_VERSION})"
            ));
        };
        let v = Version::parse(v).map_err(|e| format!("{name}: bad version: {e}"))?;
        if !accepted.matches(&v) {
            return Err(format!(
                "was built against {PACKAGE}@{v}, but this host accepts {PACKAGE}@{ACCEPTED_SHOWN} (it is {PACKAGE}@{HOST_VERSION}); rebuild the plugin against {PACKAGE}@{HOST_VERSION}"
            ));
        }
        if version.as_ref().is_some_and(|known| *known != v) {
            return Err(format!(
                "mixes contract versions {} and {v}",
                version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
        }
        version = Some(v);
    }
    let version = version.ok_or_else(|| {
        format!(
            "is not a launch-agent plugin: it neither imports nor exports any {PACKAGE} interface"
        )
    })?;
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let exported = |iface: &str| {
        exports
            .iter()
            .any(|n| n.starts_with(&format!("{PACKAGE}/{iface}@")))
    };
    let kinds: Vec<PluginKind> = [
        ("builder", PluginKind::Builder),
        ("registry", PluginKind::Registry),
        ("environment", PluginKind::Environment),
        ("deployer", PluginKind::Deployer),
    ]
    .into_iter()
    .filter(|(iface, _)| exported(iface))
    .map(|(_, kind)| kind)
    .collect();
    match kinds.as_slice() {
        [kind] if exported("plugin") => {
            let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
            imports.sort();
            Ok(ContractInfo {
                version,
                kind: *kind,
                imports,
            })
        }
        [_] => Err(format!(
            "does not export {PACKAGE}/plugin (its `info` function)"
        )),
        [] => Err(format!(
            "exports none of {PACKAGE}/builder, /registry, /environment or /deployer"
        )),
        _ => Err("exports more than one plugin kind; build one component per kind".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn importing(imports: &[&str]) -> ContractInfo {
        ContractInfo {
            version: Version::new(0, 1, 0),
            kind: PluginKind::Environment,
            imports: imports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_log_secrets_and_types_never_wait() {
        assert!(!importing(&[]).imports_can_wait());
        assert!(
            !importing(&[
                "launch:plugin/types@0.1.0",
                "launch:plugin/log@0.1.0",
                "launch:plugin/secrets@0.1.0"
            ])
            .imports_can_wait()
        );
        for waits in [
            "launch:plugin/docker@0.1.0",
            "launch:plugin/oci@0.1.0",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:filesystem/types@0.2.6",
            "launch:plugin/logger@0.1.0",
        ] {
            assert!(
                importing(&["launch:plugin/log@0.1.0", waits]).imports_can_wait(),
                "{waits}"
            );
        }
    }
}
