//! The Docker Engine connection: `DOCKER_HOST` (`unix://...` or
//! `tcp://...`) when set, else `unix:///var/run/docker.sock`, with the API
//! version negotiated so that older engines (Debian's 20.10 speaks API 1.41,
//! older than bollard's default) work.
//!
//! [`DockerEngine`] connects once and hands out clones of the client (a
//! bollard client is a cheap handle on one connection pool); a failed
//! connection is retried at the next use. [`connect`] makes a fresh one.

use anyhow::anyhow;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use tokio::sync::OnceCell;

/// The engine used when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Connects to the engine (`DOCKER_HOST` honoured, unix socket default) and
/// negotiates the API version. The error names the engine it tried.
pub async fn connect() -> anyhow::Result<Docker> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
    let unreachable = |e: DockerError| {
        anyhow!(
            "cannot reach the Docker Engine at {host} (is it running? DOCKER_HOST selects another): {e}"
        )
    };
    let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// The Docker Engine, connected on first use and shared after that.
#[derive(Debug, Default)]
pub struct DockerEngine {
    client: OnceCell<Docker>,
}

impl DockerEngine {
    /// An engine not connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client, connecting (with version negotiation) the first time.
    pub async fn client(&self) -> anyhow::Result<Docker> {
        self.client.get_or_try_init(connect).await.cloned()
    }

    /// Whether the engine has `image` (`docker image inspect`); false when
    /// it is unreachable.
    pub async fn has_image(&self, image: &str) -> bool {
        match self.client().await {
            Ok(docker) => docker.inspect_image(image).await.is_ok(),
            Err(_) => false,
        }
    }
}
