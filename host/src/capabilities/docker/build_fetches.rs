//! The rule for what a build may make the engine fetch (the images and URLs
//! [`dockerfile::fetches`](super::dockerfile::fetches) finds), checked
//! before the engine sees the build.
//!
//! | fetch | allowed when |
//! |---|---|
//! | an image in the planned image's or the destination's repository | always (the job's own image) |
//! | an image of a registry `host[:port]` | `grants.hosts` grants `https://` or `http://` that registry |
//! | a Docker Hub image (no registry part: `python:3.11`, `docker.io/...`) | `grants.hosts` grants Docker Hub (`https://registry-1.docker.io`, `https://docker.io` or `https://index.docker.io`) |
//! | a Docker Hub-shaped image otherwise | the engine has it already (an image the operator provided, e.g. the test base image), for the platform asked for |
//! | an image of a registry not granted | never, even when the engine has it (another job's private image stays its own) |
//! | `ADD <url>` | the URL is allowed by `grants.hosts`, as a plugin's own request would be |
//!
//! An image the engine has locally under a Hub-shaped name is used without
//! a pull; with a platform asked for (`FROM --platform=`, or the build's),
//! only if the local image is of that platform (else the engine would pull
//! another one from Docker Hub).

use super::dockerfile::{Fetch, FetchKind};
use super::reference::ImageRef;
use crate::capabilities::policy::GrantPolicy;

/// What the rule says of one fetch before the engine is asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the grants or the job's own repositories.
    Allowed,
    /// Allowed only if the engine already has the image (for `platform`,
    /// when one is asked for); never pulled.
    IfLocal {
        /// The platform asked for (`os/arch[/variant]`), empty for any.
        platform: String,
    },
}

/// What the rule says of `fetch` for a build with `platform` (the
/// build's own), under `policy`, whose job's repositories are
/// `repositories`; the error says why it is refused (the caller adds the
/// line and the plugin).
pub fn judge(
    fetch: &Fetch,
    build_platform: Option<&str>,
    policy: &GrantPolicy,
    repositories: &[String],
) -> Result<Verdict, String> {
    if fetch.kind == FetchKind::Url {
        let refused = || {
            format!(
                "{} is not allowed by grants.hosts (the engine downloads it itself, outside the build's network)",
                fetch.target
            )
        };
        let uri: http::Uri = fetch.target.parse().map_err(|_| refused())?;
        return policy
            .http(&uri)
            .map(|()| Verdict::Allowed)
            .map_err(|_| refused());
    }
    let reference = ImageRef::parse(&fetch.target)?;
    if repositories.contains(&reference.name) {
        return Ok(Verdict::Allowed);
    }
    let hub = reference.registry.is_none()
        || reference
            .registry
            .as_deref()
            .is_some_and(|r| crate::capabilities::policy::DOCKER_HUB_HOSTS.contains(&r));
    let registry = if hub {
        None
    } else {
        reference.registry.as_deref()
    };
    if policy.push_registry(registry).is_ok() {
        return Ok(Verdict::Allowed);
    }
    if hub {
        let platform = if fetch.platform.is_empty() {
            build_platform.unwrap_or_default().to_string()
        } else {
            fetch.platform.clone()
        };
        return Ok(Verdict::IfLocal { platform });
    }
    Err(format!(
        "registry {} is not granted (add https://{0} or http://{0} to grants.hosts); an image of a registry not granted is never used, even when the engine has it",
        reference.registry_display()
    ))
}

/// Whether a local image of `os`/`architecture`/`variant` is of `platform`
/// (`os/arch[/variant]`; empty: any).
pub fn platform_matches(platform: &str, os: &str, architecture: &str, variant: &str) -> bool {
    if platform.is_empty() {
        return true;
    }
    let mut parts = platform.split('/');
    let want_os = parts.next().unwrap_or_default();
    let want_arch = parts.next().unwrap_or_default();
    let want_variant = parts.next().unwrap_or_default();
    want_os.eq_ignore_ascii_case(os)
        && (want_arch.is_empty() || want_arch.eq_ignore_ascii_case(architecture))
        && (want_variant.is_empty() || want_variant.eq_ignore_ascii_case(variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::docker::dockerfile::fetches;

    fn judge_all(
        dockerfile: &str,
        hosts: &[&str],
        repositories: &[&str],
    ) -> Vec<Result<Verdict, String>> {
        let policy = GrantPolicy::for_hosts(hosts).unwrap();
        let repositories: Vec<String> = repositories.iter().map(|r| r.to_string()).collect();
        fetches(dockerfile, &[])
            .unwrap()
            .iter()
            .map(|f| judge(f, None, &policy, &repositories))
            .collect()
    }

    #[test]
    fn granted_registries_and_the_jobs_own_repository_are_allowed() {
        let verdicts = judge_all(
            "FROM registry.example.com/base:1\nFROM 127.0.0.1:5000/team/app:v0\nFROM 127.0.0.1:5001/other:1\nCOPY --from=evil.example.com/x /a /b\n",
            &["https://registry.example.com", "http://127.0.0.1:5001"],
            &["127.0.0.1:5000/team/app"],
        );
        assert_eq!(verdicts[0], Ok(Verdict::Allowed));
        assert_eq!(verdicts[1], Ok(Verdict::Allowed));
        assert_eq!(verdicts[2], Ok(Verdict::Allowed));
        let refused = verdicts[3].as_ref().unwrap_err();
        assert!(refused.contains("evil.example.com"), "{refused}");
    }

    #[test]
    fn docker_hub_images_need_the_hub_granted_or_a_local_copy() {
        for image in [
            "python:3.11",
            "library/busybox",
            "docker.io/library/busybox",
            "registry-1.docker.io/x/y",
        ] {
            let text = format!("FROM --platform=linux/amd64 {image}\n");
            assert_eq!(
                judge_all(&text, &[], &[]),
                [Ok(Verdict::IfLocal {
                    platform: "linux/amd64".into()
                })],
                "{image}"
            );
            assert_eq!(
                judge_all(&text, &["https://registry-1.docker.io"], &[]),
                [Ok(Verdict::Allowed)],
                "{image}"
            );
        }
        // A local copy of another registry's image is not enough.
        assert!(judge_all("FROM 127.0.0.1:5000/private:1\n", &[], &[])[0].is_err());
    }

    #[test]
    fn add_urls_need_their_host_granted() {
        let verdicts = judge_all(
            "FROM scratch\nADD http://127.0.0.1:8080/ok /ok\nADD https://evil.example.com/x /x\nADD http://user:pw@127.0.0.1:8080/x /x\n",
            &["http://127.0.0.1:8080"],
            &[],
        );
        assert_eq!(verdicts[0], Ok(Verdict::Allowed));
        assert!(
            verdicts[1]
                .as_ref()
                .unwrap_err()
                .contains("evil.example.com")
        );
        assert!(verdicts[2].is_err(), "userinfo is refused");
    }

    #[test]
    fn platforms_match_as_the_engine_has_them() {
        assert!(platform_matches("", "linux", "amd64", ""));
        assert!(platform_matches("linux/amd64", "linux", "amd64", ""));
        assert!(platform_matches("linux", "linux", "amd64", ""));
        assert!(!platform_matches("linux/arm64", "linux", "amd64", ""));
        assert!(!platform_matches("linux/arm/v7", "linux", "arm", "v6"));
    }
}
