//! Image references (`[registry/]repository[:tag][@digest]`), checked before
//! they reach the engine's API.
//!
//! A reference is put into the engine's URL paths (`/images/{name}/push`),
//! so only Docker's own alphabet is accepted: no `?`, `#`, `%`, spaces, and
//! no `.`/`..` path components. IPv6 registry hosts (`[::1]:5000`) are not
//! accepted.
//!
//! The registry is the first component when it has a `.` or a `:` or is
//! `localhost` (Docker's rule); otherwise the image is on Docker Hub.
//!
//! Which registries a push may reach is the plugin's policy's to say:
//! [`GrantPolicy::push_registry`](crate::capabilities::policy::GrantPolicy::push_registry),
//! given [`ImageRef::registry`].

/// The longest reference accepted.
const MAX_REFERENCE: usize = 1024;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` of the registry; `None` for Docker Hub.
    pub registry: Option<String>,
    /// The name without tag or digest, registry included (`127.0.0.1:5000/app`).
    pub name: String,
    /// The tag, when given.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), when given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and checks `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("image reference {text:?} {why}");
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        if text.len() > MAX_REFERENCE {
            return Err(bad("is too long"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let (algo, hex) = digest
                    .split_once(':')
                    .ok_or_else(|| bad("has a digest without `algorithm:`"))?;
                let ok = !algo.is_empty()
                    && algo
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                    && !hex.is_empty()
                    && hex.chars().all(|c| c.is_ascii_hexdigit());
                if !ok {
                    return Err(bad("has a malformed digest"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(bad("has a malformed tag"));
            }
        }
        let components: Vec<&str> = name.split('/').collect();
        let registry = match components.as_slice() {
            [first, _, ..]
                if first.contains('.') || first.contains(':') || *first == "localhost" =>
            {
                check_registry_host(first).map_err(|why| bad(&why))?;
                Some(first.to_string())
            }
            _ => None,
        };
        let path = if registry.is_some() {
            &components[1..]
        } else {
            &components[..]
        };
        for component in path {
            let ok = !component.is_empty()
                && *component != "."
                && *component != ".."
                && component
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            if !ok {
                return Err(bad(
                    "has a malformed repository (lowercase letters, digits, `._-` and `/`)",
                ));
            }
        }
        Ok(ImageRef {
            registry,
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry as people write it, for messages.
    pub fn registry_display(&self) -> &str {
        self.registry.as_deref().unwrap_or("docker.io")
    }
}

/// Checks `host[:port]` of a registry.
fn check_registry_host(text: &str) -> Result<(), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let host_ok = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && !host.contains("..")
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    if !host_ok {
        return Err(format!("has a malformed registry host {host:?}"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("has a malformed registry port {port:?}"));
    }
    Ok(())
}

/// The repositories (names without tag or digest) of `images`, the ones
/// that do not parse or are empty left out: what a build call may tag and
/// look up (the planned image's repository and the destination's).
pub fn repositories_of<'a>(images: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = images
        .into_iter()
        .filter(|image| !image.trim().is_empty())
        .filter_map(|image| ImageRef::parse(image.trim()).ok())
        .map(|r| r.name)
        .collect();
    names.dedup();
    names
}

/// Checks that `image` lies in one of `repositories` (see
/// [`repositories_of`]); the error names the image and what is allowed.
pub fn within(image: &str, repositories: &[String]) -> Result<(), String> {
    let reference = ImageRef::parse(image)?;
    if repositories.contains(&reference.name) {
        return Ok(());
    }
    Err(if repositories.is_empty() {
        format!(
            "image {image:?} is outside this call: only a builder's build call may tag or look up images, and only the planned image's repository"
        )
    } else {
        format!(
            "image {image:?} is outside the planned image's repository ({})",
            repositories.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_within_the_planned_repositories_only() {
        let repos = repositories_of(["127.0.0.1:5000/app:v1", "", "127.0.0.1:5000/app"]);
        assert_eq!(repos, vec!["127.0.0.1:5000/app".to_string()]);
        assert!(within("127.0.0.1:5000/app:other", &repos).is_ok());
        let refused = within("busybox:latest", &repos).unwrap_err();
        assert!(
            refused.contains("busybox") && refused.contains("127.0.0.1:5000/app"),
            "{refused}"
        );
        assert!(within("127.0.0.1:5000/app-evil:v1", &repos).is_err());
        assert!(
            within("anything:v1", &[])
                .unwrap_err()
                .contains("build call")
        );
    }

    #[test]
    fn splits_registry_name_tag_and_digest() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.name, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        assert_eq!(r.tag, None);
        let r = ImageRef::parse("library/busybox:latest").unwrap();
        assert_eq!(r.registry, None);
        let r = ImageRef::parse("app@sha256:abcdef").unwrap();
        assert_eq!(r.digest.as_deref(), Some("sha256:abcdef"));
        assert_eq!(r.name, "app");
    }

    #[test]
    fn refuses_what_could_escape_the_api_path() {
        for bad in [
            "",
            "../containers/x",
            "a/../../b",
            "app?force=1",
            "app#x",
            "app%2f",
            "App",
            "app:",
            "app:-x",
            "reg.io:port/app",
            "a//b",
            "app@sha256",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
