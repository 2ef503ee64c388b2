//! The grants bundled plugins get without asking: what their job needs and
//! no more. A `plugins:` entry named like the bundled plugin adds to them;
//! the sum is compiled into the plugin's [`GrantPolicy`](super::policy::GrantPolicy).
//!
//! | bundled plugin | grants it gets |
//! |---|---|
//! | `builder-docker` | `docker: true`, `build_network: true` (W&B's Dockerfiles `pip install`); `hosts`: the configured registry's, Docker Hub's (its generated Dockerfiles are `FROM python:...`) and PyPI's ([`BUILD_HOSTS`]) |
//! | `registry-oci` | `hosts`: the configured registry's |
//! | `builder-kaniko` | `kubernetes.namespaces`: the build's namespace (`builder.kaniko-config.metadata.namespace`, else the `namespace` of its `plugins: kaniko: config:`, else W&B's `wandb`); `blob.stores`: `builder.build-context-store` (as a prefix, ending in `/`, when the blob capability serves its scheme), and with a PVC (`pvc-name` of its config or `WANDB_LAUNCH_KANIKO_PVC_NAME`) the PVC's mount, `file://<pvc-mount-path or WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH or /kaniko>/`; `env`: [`KANIKO_ENV`] ([`kaniko_builder`]) |
//! | the others | none |
//!
//! "The configured registry's" host comes from `registry.uri` and
//! `builder.destination`: `https://HOST:PORT` (port 443 unless given), and
//! `http://HOST:PORT` (port 80 unless given) too for a registry on this
//! machine (`localhost`, `127.0.0.1`, `[::1]`). A registry on Docker Hub
//! (`docker.io/...`, `index.docker.io/...`, `registry-1.docker.io/...`, or
//! no registry part at all, `user/app`) is [`DOCKER_HUB`]: the registry
//! and its token realm, without which no credential is sent.
//! For the docker builder the
//! agent puts the repository the registry plugin gives (`repository-uri`,
//! asked once at start-up) in place of `registry.uri` ([`push_host_grants`]),
//! so that pushes follow a registry plugin that computes its repository.

use crate::config::{Grants, LaunchConfig};
use http::uri::Authority;
use serde_saphyr::{Location, Spanned};

/// The grants the bundled plugin whose component is `component` (its file
/// name without `.wasm`: `builder-docker`) gets under `config`.
pub fn for_bundled(component: &str, config: &LaunchConfig) -> Grants {
    let mut grants = Grants::default();
    match component {
        "builder-docker" => {
            grants.docker = true;
            // W&B's generated Dockerfiles `pip install` the job's
            // requirements: the bundled builder's steps need the network.
            grants.build_network = true;
            grants.hosts = with_build_hosts(registry_host_grants(config));
        }
        "registry-oci" => grants.hosts = registry_host_grants(config),
        "builder-kaniko" => grants = kaniko_builder(config, &|var| std::env::var(var).ok()),
        // The cloud plugins' defaults are kept apart (issue 12).
        other => grants = super::cloud_defaults::for_bundled(other, config),
    }
    grants
}

/// The docker builder's hosts: `registry` (where it pushes), plus what its
/// generated Dockerfiles reach ([`BUILD_HOSTS`]) and Docker Hub, where their
/// base images come from.
fn with_build_hosts(mut hosts: Vec<Spanned<String>>) -> Vec<Spanned<String>> {
    for host in BUILD_HOSTS.iter().chain(DOCKER_HUB.iter()) {
        if !hosts.iter().any(|h| h.value == *host) {
            hosts.push(Spanned::new(
                host.to_string(),
                Location::UNKNOWN,
                Location::UNKNOWN,
            ));
        }
    }
    hosts
}

/// Docker Hub as grants: its registry, and its token realm (a push or a
/// lookup with credentials exchanges them there first; without the realm
/// granted the host sends them nowhere).
pub const DOCKER_HUB: [&str; 2] = [
    "https://registry-1.docker.io:443",
    "https://auth.docker.io:443",
];

/// What the bundled docker builder's generated Dockerfiles' steps reach
/// through the build proxy: PyPI's index and its files (`pip install`).
pub const BUILD_HOSTS: [&str; 2] = ["https://pypi.org:443", "https://files.pythonhosted.org:443"];

/// `grants` with `defaults` added: a flag set in either, each host, env
/// var, secret and dir of either, once.
pub fn add(grants: &mut Grants, defaults: Grants) {
    grants.docker |= defaults.docker;
    grants.build_network |= defaults.build_network;
    if grants.kubernetes.is_none() {
        grants.kubernetes = defaults.kubernetes;
    }
    for host in defaults.hosts {
        if !grants.hosts.iter().any(|h| h.value == host.value) {
            grants.hosts.push(host);
        }
    }
    for host in defaults.environment_auth {
        if !grants
            .environment_auth
            .iter()
            .any(|h| h.value == host.value)
        {
            grants.environment_auth.push(host);
        }
    }
    for store in defaults.blob.stores {
        if !grants.blob.stores.iter().any(|s| s.value == store.value) {
            grants.blob.stores.push(store);
        }
    }
    for name in defaults.env {
        if !grants.env.contains(&name) {
            grants.env.push(name);
        }
    }
    for name in defaults.secrets {
        if !grants.secrets.contains(&name) {
            grants.secrets.push(name);
        }
    }
    for dir in defaults.dirs {
        if !grants.dirs.iter().any(|d| d.host_path() == dir.host_path()) {
            grants.dirs.push(dir);
        }
    }
}

/// W&B's environment variables for the Kaniko builder (what its helm chart
/// sets on the agent's pod), which builder-kaniko reads.
pub const KANIKO_ENV: &[&str] = &[
    "WANDB_LAUNCH_KANIKO_PVC_NAME",
    "WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH",
    "WANDB_LAUNCH_KANIKO_AUTH_SECRET",
    "WANDB_LAUNCH_SERVICE_ACCOUNT_NAME",
];

/// The bundled kaniko builder's grants under `config`, with `env` the
/// agent's environment (see the module docs): the cluster namespace its
/// build goes to, its context store, and W&B's variables.
pub fn kaniko_builder(config: &LaunchConfig, env: &dyn Fn(&str) -> Option<String>) -> Grants {
    let builder = config.builder.as_ref();
    let plugin_config = config
        .plugins
        .get("kaniko")
        .and_then(|entry| entry.config.as_ref());
    let setting = |key: &str| {
        plugin_config
            .and_then(|c| c.get(key))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let namespace = builder
        .and_then(|b| b.kaniko_config.as_ref())
        .and_then(|k| k.pointer("/metadata/namespace"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| setting("namespace"))
        .unwrap_or_else(|| "wandb".to_string());
    let mut stores = Vec::new();
    if let Some(store) = builder
        .and_then(|b| b.build_context_store.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        stores.push(format!("{}/", store.trim_end_matches('/')));
    }
    let set = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    if set(setting("pvc-name"))
        .or_else(|| set(env("WANDB_LAUNCH_KANIKO_PVC_NAME")))
        .is_some()
    {
        let mount = set(setting("pvc-mount-path"))
            .or_else(|| set(env("WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH")))
            .unwrap_or_else(|| "/kaniko".to_string());
        stores.push(format!("file://{}/", mount.trim_end_matches('/')));
    }
    Grants {
        kubernetes: Some(crate::config::KubernetesGrant {
            namespaces: vec![namespace],
        }),
        blob: crate::config::BlobGrant {
            stores: stores
                .into_iter()
                // A store the blob capability does not serve (yet) is not
                // granted: the build then fails naming it, and start-up
                // is not refused for a grant it cannot compile.
                .filter(|s| super::blob::StorePrefix::parse(s).is_ok())
                .map(|s| Spanned::new(s, Location::UNKNOWN, Location::UNKNOWN))
                .collect(),
        },
        env: KANIKO_ENV.iter().map(|v| v.to_string()).collect(),
        ..Grants::default()
    }
}

/// `scheme://host:port` patterns for the registry the config pushes to
/// (`registry.uri` or `builder.destination`): HTTPS, plus plain HTTP for a
/// registry on this machine. A URI whose registry part is not a
/// `host[:port]` grants nothing (a warning says so): the plugin is then
/// refused with a message naming the grant to add.
pub fn registry_host_patterns(config: &LaunchConfig) -> Vec<String> {
    host_patterns([
        config.registry.as_ref().and_then(|r| r.uri.clone()),
        config.builder.as_ref().and_then(|b| b.destination.clone()),
    ])
}

/// The bundled docker builder's host grants when the registry plugin gives
/// `repository` (its `repository-uri`): that repository's registry, and
/// `builder.destination`'s, instead of `registry.uri`'s, with its build
/// hosts as [`for_bundled`] gives them (issue 15: push
/// grants follow the registry, whatever key its repository came from).
pub fn push_host_grants(config: &LaunchConfig, repository: &str) -> Vec<Spanned<String>> {
    with_build_hosts(
        host_patterns([
            Some(repository.to_string()),
            config.builder.as_ref().and_then(|b| b.destination.clone()),
        ])
        .into_iter()
        .map(|p| Spanned::new(p, Location::UNKNOWN, Location::UNKNOWN))
        .collect(),
    )
}

/// The patterns of each registry URI of `uris` (see
/// [`registry_host_patterns`]).
fn host_patterns(uris: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    let mut patterns = Vec::new();
    for uri in uris.into_iter().flatten() {
        let rest = uri
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let mut components = rest.split('/');
        let registry = components.next().unwrap_or("");
        if registry.is_empty() {
            continue;
        }
        // Docker's rule: the first component is a registry only when it
        // has a `.` or a `:` or is `localhost`, and there is more after it.
        let names_registry = components.next().is_some()
            && (registry.contains('.') || registry.contains(':') || registry == "localhost");
        let on_hub =
            !names_registry || crate::capabilities::policy::DOCKER_HUB_HOSTS.contains(&registry);
        if on_hub {
            patterns.extend(DOCKER_HUB.iter().map(|p| p.to_string()));
            continue;
        }
        let authority = match registry.parse::<Authority>() {
            // `http` takes any text after the last `:` as the host's end:
            // a registry is `host` or `host:PORT`, nothing else.
            Ok(a) if !a.host().is_empty() && (a.port_u16().is_some() || a.as_str() == a.host()) => {
                a
            }
            _ => {
                tracing::warn!(
                    uri,
                    "the registry's host is not a host[:port]; the bundled plugins get no grant for it"
                );
                continue;
            }
        };
        let host = authority.host();
        let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
        let port = authority.port_u16();
        patterns.push(format!("https://{host}:{}", port.unwrap_or(443)));
        if local {
            patterns.push(format!("http://{host}:{}", port.unwrap_or(80)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    patterns.retain(|p| seen.insert(p.clone()));
    patterns
}

/// [`registry_host_patterns`] as grants (they have no place in the file).
fn registry_host_grants(config: &LaunchConfig) -> Vec<Spanned<String>> {
    registry_host_patterns(config)
        .into_iter()
        .map(|p| Spanned::new(p, Location::UNKNOWN, Location::UNKNOWN))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::policy::GrantPolicy;
    use std::path::Path;

    fn config(yaml: &str) -> LaunchConfig {
        LaunchConfig::parse(yaml, Path::new("test.yaml")).unwrap()
    }

    #[test]
    fn the_kaniko_builder_gets_its_namespace_and_context_stores() {
        let stores =
            |g: &Grants| -> Vec<String> { g.blob.stores.iter().map(|s| s.value.clone()).collect() };
        let none = |_: &str| None;
        let c = config("builder: { type: kaniko, build-context-store: s3://bkt/ctx }\n");
        let g = kaniko_builder(&c, &none);
        assert_eq!(g.kubernetes.as_ref().unwrap().namespaces, ["wandb"]);
        assert_eq!(stores(&g), ["s3://bkt/ctx/"]);
        assert!(g.env.contains(&"WANDB_LAUNCH_KANIKO_PVC_NAME".to_string()));
        assert!(!g.docker && g.hosts.is_empty() && g.secrets.is_empty());

        // The namespace of `kaniko-config` wins over the plugin's setting.
        let c = config(
            "builder:\n  type: kaniko\n  kaniko-config: { metadata: { namespace: builds } }\n\
             plugins:\n  kaniko:\n    config: { namespace: other, pvc-name: ctx }\n",
        );
        let g = kaniko_builder(&c, &none);
        assert_eq!(g.kubernetes.as_ref().unwrap().namespaces, ["builds"]);
        assert_eq!(stores(&g), ["file:///kaniko/"]);

        // W&B's PVC variables, from the agent's environment.
        let c = config(
            "builder: { type: kaniko }\nplugins:\n  kaniko:\n    config: { namespace: ns1 }\n",
        );
        let env = |var: &str| match var {
            "WANDB_LAUNCH_KANIKO_PVC_NAME" => Some("ctx".to_string()),
            "WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH" => Some("/mnt/contexts/".to_string()),
            _ => None,
        };
        let g = kaniko_builder(&c, &env);
        assert_eq!(g.kubernetes.as_ref().unwrap().namespaces, ["ns1"]);
        assert_eq!(stores(&g), ["file:///mnt/contexts/"]);
        // No PVC and no store: nothing to write to.
        let c = config("builder: { type: kaniko }\n");
        assert!(stores(&kaniko_builder(&c, &none)).is_empty());
    }

    #[test]
    fn the_registry_host_is_granted_https_and_locally_http() {
        let c = config("registry: { type: oci, uri: registry.example.com/team/launch }\n");
        assert_eq!(
            registry_host_patterns(&c),
            ["https://registry.example.com:443"]
        );
        let c = config("registry: { type: oci, uri: \"http://127.0.0.1:5000/launch\" }\n");
        assert_eq!(
            registry_host_patterns(&c),
            ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
        );
        let c = config("builder: { type: docker, destination: \"localhost/app\" }\n");
        assert_eq!(
            registry_host_patterns(&c),
            ["https://localhost:443", "http://localhost:80"]
        );
        let c = config("registry: { type: oci, uri: \"[::1]:5000/app\" }\n");
        assert_eq!(
            registry_host_patterns(&c),
            ["https://[::1]:5000", "http://[::1]:5000"]
        );
        let c = config(
            "registry: { type: oci, uri: r.example.com/a }\nbuilder: { type: docker, destination: r.example.com/a }\n",
        );
        assert_eq!(registry_host_patterns(&c), ["https://r.example.com:443"]);
        let c = config("registry: { type: oci, uri: \"r.example.com:port/a\" }\n");
        assert!(registry_host_patterns(&c).is_empty());
        let c = config("registry: { type: oci, uri: \"user@r.example.com/a\" }\n");
        assert!(registry_host_patterns(&c).is_empty());
    }

    #[test]
    fn a_docker_hub_registry_grants_its_token_realm() {
        for uri in [
            "docker.io/team/app",
            "index.docker.io/team/app",
            "registry-1.docker.io/team/app",
            "https://registry-1.docker.io/team/app",
            "team/app",
            "app",
        ] {
            let c = config(&format!("registry: {{ type: oci, uri: \"{uri}\" }}\n"));
            assert_eq!(registry_host_patterns(&c), DOCKER_HUB, "{uri}");
            let grants = for_bundled("registry-oci", &c);
            let policy = GrantPolicy::compile(&grants, &Default::default()).unwrap();
            assert!(policy.push_registry(None).is_ok(), "{uri}");
            let realm: http::Uri = "https://auth.docker.io/token?scope=x".parse().unwrap();
            assert!(policy.http(&realm).is_ok(), "{uri}: the realm is granted");
            let other: http::Uri = "https://auth.example.com/token".parse().unwrap();
            assert!(policy.http(&other).is_err(), "{uri}");
        }
        // A registry that merely mentions docker.io is not Docker Hub.
        let c = config("registry: { type: oci, uri: \"docker.io.example.com/app\" }\n");
        assert_eq!(
            registry_host_patterns(&c),
            ["https://docker.io.example.com:443"]
        );
    }

    #[test]
    fn bundled_defaults_are_only_what_the_job_needs_and_compile() {
        let c = config("registry: { type: oci, uri: \"127.0.0.1:5000/launch\" }\n");
        let docker = for_bundled("builder-docker", &c);
        assert!(docker.docker && docker.build_network);
        let hosts: Vec<&str> = docker.hosts.iter().map(|h| h.value.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "https://127.0.0.1:5000",
                "http://127.0.0.1:5000",
                "https://pypi.org:443",
                "https://files.pythonhosted.org:443",
                "https://registry-1.docker.io:443",
                "https://auth.docker.io:443"
            ]
        );
        let oci = for_bundled("registry-oci", &c);
        assert!(!oci.docker);
        assert_eq!(oci.hosts.len(), 2);
        for other in ["builder-noop", "environment-local", "my-plugin"] {
            let grants = for_bundled(other, &c);
            assert!(
                !grants.docker && !grants.build_network && grants.hosts.is_empty(),
                "{other}"
            );
        }
        let policy = GrantPolicy::compile(&docker, &Default::default()).unwrap();
        assert!(policy.push_registry(Some("127.0.0.1:5000")).is_ok());
        assert!(policy.push_registry(Some("127.0.0.1:5001")).is_err());
    }

    #[test]
    fn defaults_add_to_the_configured_grants_once() {
        let c = config(
            "registry: { type: oci, uri: \"127.0.0.1:5000/launch\" }\nplugins:\n  docker:\n    grants: { hosts: [\"https://127.0.0.1:5000\", \"https://example.com\"], env: [HOME] }\n",
        );
        let mut grants = c.plugins["docker"].grants.clone();
        add(&mut grants, for_bundled("builder-docker", &c));
        let hosts: Vec<&str> = grants.hosts.iter().map(|h| h.value.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "https://127.0.0.1:5000",
                "https://example.com",
                "http://127.0.0.1:5000",
                "https://pypi.org:443",
                "https://files.pythonhosted.org:443",
                "https://registry-1.docker.io:443",
                "https://auth.docker.io:443"
            ]
        );
        assert!(grants.docker);
        assert_eq!(grants.env, ["HOME"]);
    }
}
