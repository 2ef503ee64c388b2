//! Kubernetes names and label values, and the registry a destination
//! belongs to.

/// A DNS-1123 label (a Job, Secret or namespace name): 1 to 63 lower case
/// letters, digits and `-`, starting and ending with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A DNS-1123 subdomain (most object names): dot-separated labels, at most
/// 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// `text` made a DNS-1123 label part: lower case, runs of anything but
/// `[a-z0-9]` become one `-`, no `-` at either end.
pub fn dns_part(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// `text` as a label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending with a letter or digit (the host's runners make
/// theirs the same way).
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The registry an image repository belongs to, as the push credentials
/// depend on it (W&B decides by its registry class; we by the
/// destination's host, as W&B's `registry_from_uri` does for
/// `builder.destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryKind {
    /// Amazon ECR, `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]`.
    Ecr {
        /// The region in the host name.
        region: String,
    },
    /// Google Artifact Registry (`REGION-docker.pkg.dev`) or Container
    /// Registry (`gcr.io`, `*.gcr.io`).
    Gar,
    /// Azure Container Registry, `NAME.azurecr.io`.
    Acr {
        /// The registry's name.
        name: String,
    },
    /// Any other registry.
    Other,
}

/// The registry host of `repository` (`host[:port]/path`, no scheme); a
/// repository without one is on Docker Hub, `docker.io`.
pub fn registry_host(repository: &str) -> String {
    let repository = repository
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// The kind of the registry `repository` is in.
pub fn registry_kind(repository: &str) -> RegistryKind {
    let host = registry_host(repository);
    let host = host.split(':').next().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    if let ["dkr", "ecr", region, "amazonaws", "com", ..] = labels.get(1..).unwrap_or_default() {
        return RegistryKind::Ecr {
            region: region.to_string(),
        };
    }
    if host.ends_with("-docker.pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io") {
        return RegistryKind::Gar;
    }
    if let Some(name) = host.strip_suffix(".azurecr.io") {
        return RegistryKind::Acr {
            name: name.to_string(),
        };
    }
    RegistryKind::Other
}

/// The key of a registry in a docker config's `auths`: its host, or Docker
/// Hub's historical `https://index.docker.io/v1/`.
pub fn docker_config_key(repository: &str) -> String {
    match registry_host(repository).as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        host => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_by_host() {
        assert_eq!(
            registry_kind("123456789012.dkr.ecr.us-east-1.amazonaws.com/launch"),
            RegistryKind::Ecr {
                region: "us-east-1".into()
            }
        );
        assert_eq!(
            registry_kind("us-central1-docker.pkg.dev/proj/repo/img"),
            RegistryKind::Gar
        );
        assert_eq!(registry_kind("gcr.io/proj/img"), RegistryKind::Gar);
        assert_eq!(
            registry_kind("https://myreg.azurecr.io/launch"),
            RegistryKind::Acr {
                name: "myreg".into()
            }
        );
        assert_eq!(registry_kind("localhost:5000/launch"), RegistryKind::Other);
        assert_eq!(registry_kind("user/repo"), RegistryKind::Other);
        assert_eq!(registry_host("localhost:5000/launch"), "localhost:5000");
        assert_eq!(registry_host("user/repo"), "docker.io");
        assert_eq!(
            docker_config_key("user/repo"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(
            docker_config_key("myreg.azurecr.io/launch"),
            "myreg.azurecr.io"
        );
    }

    #[test]
    fn names() {
        assert!(is_dns_label("wandb-launch-container-build"));
        assert!(!is_dns_label("Wandb"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("a..b"));
        assert_eq!(dns_part("RunID_42!"), "runid-42");
        assert_eq!(label_value("UnVuUXVldWVJdGVtOjE="), "UnVuUXVldWVJdGVtOjE");
    }
}
