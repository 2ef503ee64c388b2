//! The grants bundled plugins get without asking: what their job needs and
//! no more. A `plugins:` entry named like the bundled plugin adds to them;
//! the sum is compiled into the plugin's [`GrantPolicy`](super::policy::GrantPolicy).
//!
//! | bundled plugin | grants it gets |
//! |---|---|
//! | `builder-docker` | `docker: true`, `build_network: true` (W&B's Dockerfiles `pip install`); `hosts`: the configured registry's |
//! | `registry-oci` | `hosts`: the configured registry's |
//! | the others | none |
//!
//! "The configured registry's" host comes from `registry.uri` and
//! `builder.destination`: `https://HOST:PORT` (port 443 unless given), and
//! `http://HOST:PORT` (port 80 unless given) too for a registry on this
//! machine (`localhost`, `127.0.0.1`, `[::1]`).

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
            grants.hosts = registry_host_grants(config);
        }
        "registry-oci" => grants.hosts = registry_host_grants(config),
        // The cloud plugins' defaults are kept apart (issue 12).
        other => grants = super::cloud_defaults::for_bundled(other, config),
    }
    grants
}

/// `grants` with `defaults` added: a flag set in either, each host, env
/// var, secret and dir of either, once.
pub fn add(grants: &mut Grants, defaults: Grants) {
    grants.docker |= defaults.docker;
    grants.build_network |= defaults.build_network;
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

/// `scheme://host:port` patterns for the registry the config pushes to
/// (`registry.uri` or `builder.destination`): HTTPS, plus plain HTTP for a
/// registry on this machine. A URI whose registry part is not a
/// `host[:port]` grants nothing (a warning says so): the plugin is then
/// refused with a message naming the grant to add.
pub fn registry_host_patterns(config: &LaunchConfig) -> Vec<String> {
    let uris = [
        config.registry.as_ref().and_then(|r| r.uri.clone()),
        config.builder.as_ref().and_then(|b| b.destination.clone()),
    ];
    let mut patterns = Vec::new();
    for uri in uris.into_iter().flatten() {
        let rest = uri
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let registry = rest.split('/').next().unwrap_or("");
        if registry.is_empty() {
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
    patterns.dedup();
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
    fn bundled_defaults_are_only_what_the_job_needs_and_compile() {
        let c = config("registry: { type: oci, uri: \"127.0.0.1:5000/launch\" }\n");
        let docker = for_bundled("builder-docker", &c);
        assert!(docker.docker && docker.build_network);
        assert_eq!(docker.hosts.len(), 2);
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
                "http://127.0.0.1:5000"
            ]
        );
        assert!(grants.docker);
        assert_eq!(grants.env, ["HOME"]);
    }
}
