//! The real Docker Engine, registry and base image that
//! `scripts/services.sh start` brings up, as the tests see them.
//!
//! The services write `KEY=VALUE` lines to `$LAUNCH_AGENT_SERVICES_ENV`
//! (default `${TMPDIR:-/tmp}/launch-agent-services.env`); a test that needs
//! them fails with a message saying to start them, never skips.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::InspectContainerOptions;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// What `scripts/services.sh start` wrote.
#[derive(Clone, Debug)]
pub struct Services {
    /// `127.0.0.1:PORT` of the registry (basic auth).
    pub registry: String,
    /// The registry's user.
    pub registry_user: String,
    /// The registry's password (new at each start).
    pub registry_password: String,
    /// An image the engine has, with busybox's `sh`, `echo`, `env`, `sleep`, ...
    pub base_image: String,
}

/// The env file `scripts/services.sh` writes.
pub fn env_file() -> PathBuf {
    super::services_env::path("LAUNCH_AGENT_SERVICES_ENV", "launch-agent-services.env")
}

/// The services, read once; panics (with what to do) when they are not up.
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let path = env_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): these tests need a Docker Engine and a registry; \
                 run `scripts/services.sh start` first (scripts/test.sh does)",
                path.display()
            )
        });
        let values: HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |key: &str| {
            values
                .get(key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no {key}: run `scripts/services.sh start` again",
                        path.display()
                    )
                })
                .to_string()
        };
        Services {
            registry: get("LAUNCH_AGENT_TEST_REGISTRY"),
            registry_user: get("LAUNCH_AGENT_TEST_REGISTRY_USER"),
            registry_password: get("LAUNCH_AGENT_TEST_REGISTRY_PASSWORD"),
            base_image: get("LAUNCH_AGENT_TEST_BASE_IMAGE"),
        }
    })
}

/// A client of the engine, through the agent's own `connect`.
pub async fn docker() -> Docker {
    services();
    launch_agent::clients::docker::connect()
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#}: run `scripts/services.sh start` first (scripts/test.sh does)")
        })
}

/// Whether the engine knows container `name_or_id` (inspect is not 404).
pub async fn container_exists(docker: &Docker, name_or_id: &str) -> bool {
    match docker
        .inspect_container(name_or_id, None::<InspectContainerOptions>)
        .await
    {
        Ok(_) => true,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("inspecting container {name_or_id}: {e}"),
    }
}

/// A queue item id no other test (or earlier run) uses.
pub fn unique_item_id(test: &str) -> String {
    format!("test-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// Tags the base image as `<registry>/<repo>:<tag>` and pushes it to the
/// test registry with its credentials; the image reference.
pub async fn push_base_image(repo: &str, tag: &str) -> String {
    use bollard::auth::DockerCredentials;
    use bollard::query_parameters::{PushImageOptions, TagImageOptions};
    use futures_util::StreamExt as _;
    let services = services();
    let docker = docker().await;
    let name = format!("{}/{repo}", services.registry);
    docker
        .tag_image(
            &services.base_image,
            Some(TagImageOptions {
                repo: Some(name.clone()),
                tag: Some(tag.into()),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("tagging {} as {name}:{tag}: {e}", services.base_image));
    let credentials = DockerCredentials {
        username: Some(services.registry_user.clone()),
        password: Some(services.registry_password.clone()),
        serveraddress: Some(services.registry.clone()),
        ..Default::default()
    };
    let mut push = docker.push_image(
        &name,
        Some(PushImageOptions {
            tag: Some(tag.into()),
            ..Default::default()
        }),
        Some(credentials),
    );
    while let Some(step) = push.next().await {
        let step = step.unwrap_or_else(|e| panic!("pushing {name}:{tag}: {e}"));
        if let Some(detail) = step.error_detail {
            panic!("pushing {name}:{tag}: {detail:?}");
        }
    }
    format!("{name}:{tag}")
}

/// Removes `images` (tags or ids) from the engine, keeping their untagged
/// parent layers (`noprune`).
///
/// Tests build the same Dockerfiles side by side, so the engine's build
/// cache hands one test's intermediate layers to another's build; pruning
/// them under a running build fails it with "unable to find image
/// sha256:…" (CI saw it). Every test removes images through this helper or
/// [`remove_images_blocking`], never with pruning.
pub async fn remove_images(docker: &Docker, images: &[String]) {
    use bollard::query_parameters::RemoveImageOptions;
    for image in images {
        let _ = docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: true,
                    noprune: true,
                    ..Default::default()
                }),
                None,
            )
            .await;
    }
}

/// [`remove_images`] for synchronous code (drop guards, the CLI-driven
/// tests): `docker rmi -f --no-prune`; whether the engine removed them all.
pub fn remove_images_blocking(images: &[&str]) -> bool {
    std::process::Command::new("docker")
        .args(["rmi", "-f", "--no-prune"])
        .args(images)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
