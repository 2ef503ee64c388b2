//! The image of a run: used as it is when the engine has it, else pulled,
//! with the credentials the agent gives (the configured registry's login
//! when the image lives there; anonymously otherwise). A failed pull is an
//! error naming the image and how it was pulled; the password never
//! appears in it.
//!
//! **What the engine gets.** A registry that uses tokens (a `401` with a
//! `Bearer realm=...` challenge: Docker Hub, GHCR, ACR, Artifact Registry,
//! Harbor, Quay, `docker-registry` in token mode) gets the password only at
//! its token realm, from the host ([`engine_credentials`], through
//! [`registry_auth::authorize`]); the engine gets a token scoped to pulling
//! the image's repository, never the password. The realm must be on the
//! registry's own host (any port; for Docker Hub, `auth.docker.io`): a
//! realm elsewhere is refused, naming it, and nothing is sent there. A
//! registry that takes the password itself (a `Basic` challenge, e.g. ECR
//! or htpasswd) still gets it, through the engine, as before.

use crate::capabilities::docker::{ImageRef, redact};
use crate::capabilities::policy::{GrantPolicy, Refusal};
use crate::capabilities::registry_auth::{self, Authorization, EgressError};
use crate::capabilities::secrets::CredentialScope;
use crate::runners::RegistryLogin;
use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;

/// Uses the image when the engine has it; pulls it otherwise.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    pull_login: impl AsyncFnOnce() -> anyhow::Result<Option<RegistryLogin>>,
) -> anyhow::Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => bail!("looking up image {image}: {e}"),
    }
    let credentials = pull_login()
        .await
        .with_context(|| format!("logging in to pull image {image}"))?;
    let how = match &credentials {
        Some(c) => format!("with the registry credentials of user {:?}", c.username),
        None => "anonymously".to_string(),
    };
    let password = credentials.as_ref().map(|c| c.password.as_str());
    let auth = match &credentials {
        Some(login) => Some(
            engine_credentials(image, login, &registry_auth_client()?)
                .await
                .with_context(|| format!("logging in to pull image {image} {how}"))?,
        ),
        None => None,
    };
    let (from_image, tag) = split_reference(image);
    tracing::info!("image {image} is not on this engine: pulling it {how}");
    let options = CreateImageOptionsBuilder::default()
        .from_image(from_image)
        .tag(tag)
        .build();
    let mut progress = docker.create_image(Some(options), None, auth);
    while let Some(step) = progress.next().await {
        if let Err(e) = step {
            bail!(
                "image {image} is not on this machine and pulling it {how} failed: {}",
                redact(&e.to_string(), password)
            );
        }
    }
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(e) => {
            bail!("image {image} is not on this machine and pulling it did not bring it: {e}")
        }
    }
}

/// The client the token exchange uses (no redirects of its own: the
/// exchange follows only granted ones).
fn registry_auth_client() -> anyhow::Result<reqwest::Client> {
    static CLIENTS: std::sync::OnceLock<crate::capabilities::oci::RegistryClients> =
        std::sync::OnceLock::new();
    CLIENTS
        .get_or_init(Default::default)
        .client()
        .map_err(|e| anyhow::anyhow!("registry client: {e}"))
}

/// Where a pull of an image of `registry` (as
/// [`CredentialScope::target`] normalises it) may send its credentials:
/// the registry's host on any port and scheme, and for Docker Hub its
/// registry and token realm.
fn pull_policy(registry: &str) -> anyhow::Result<GrantPolicy> {
    let mut hosts = Vec::new();
    if registry == "docker.io" {
        hosts.extend(crate::capabilities::defaults::DOCKER_HUB.map(str::to_string));
    } else {
        let host = match registry.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => registry,
        };
        hosts.push(format!("*://{host}:*"));
    }
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    GrantPolicy::for_hosts(&hosts).map_err(|e| anyhow::anyhow!("registry {registry}: {e}"))
}

/// The credentials the engine gets to pull `image` with `login`: a
/// pull-scoped registry token when the registry uses tokens (the password
/// is exchanged at its realm here), else the login itself. The error says
/// which realm was refused, or that the registry refused the login; the
/// password appears in none.
pub async fn engine_credentials(
    image: &str,
    login: &RegistryLogin,
    client: &reqwest::Client,
) -> anyhow::Result<DockerCredentials> {
    let reference = ImageRef::parse(image).map_err(|e| anyhow::anyhow!(e))?;
    let (registry, repository) = CredentialScope::target(image).map_err(|e| anyhow::anyhow!(e))?;
    let serveraddress = Some(reference.registry_display().to_string());
    let policy = pull_policy(&registry)?;
    let host = if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry.as_str()
    };
    let mut last = None;
    for scheme in ["https", "http"] {
        let Ok(base) = reqwest::Url::parse(&format!("{scheme}://{host}/")) else {
            continue;
        };
        let asked = registry_auth::authorize(
            client,
            &policy,
            &base,
            &repository,
            "pull",
            Some((&login.username, &login.password)),
        )
        .await;
        match asked {
            Ok(Authorization::Bearer(token)) => {
                return Ok(DockerCredentials {
                    registrytoken: Some(token),
                    serveraddress,
                    ..Default::default()
                });
            }
            Ok(_) => {
                return Ok(DockerCredentials {
                    username: Some(login.username.clone()),
                    password: Some(login.password.clone()),
                    serveraddress,
                    ..Default::default()
                });
            }
            Err(EgressError::Refused(Refusal::TokenRealm { registry, realm })) => bail!(
                "registry {registry} named token realm {realm}, which is not on its own host: \
                 the credentials of user {:?} were not sent there (pull the image onto this \
                 machine beforehand, or use a registry whose token realm is its own host)",
                login.username
            ),
            Err(EgressError::Refused(Refusal::Redirect { from, to })) => bail!(
                "{from} redirected the agent's login to {to}, which is not the registry's own \
                 host: the redirect was not followed"
            ),
            Err(EgressError::Refused(other)) => bail!("{}", other.message("the agent's pull")),
            Err(EgressError::Unauthorized(why)) => bail!(
                "registry {} refused the credentials of user {:?}: {why}",
                reference.registry_display(),
                login.username
            ),
            Err(EgressError::Other(why)) => last = Some(why),
        }
    }
    bail!(
        "cannot ask registry {} where its credentials go, so they were not sent: {}",
        reference.registry_display(),
        last.unwrap_or_default()
    )
}

/// Splits an image reference into the `fromImage` and `tag` of a pull
/// (a digest counts as the tag; no tag means `latest`, never "every tag").
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A FAKE registry endpoint (stands for a registry's `/v2/` or its
    /// token server) on `ip`: answers every request with `answer`, and
    /// records the request heads it got.
    async fn fake(ip: &str, answer: String) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (port, seen)
    }

    fn http(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn login() -> RegistryLogin {
        RegistryLogin {
            username: "launch".into(),
            password: "pull-Pa55word".into(),
        }
    }

    #[tokio::test]
    async fn a_token_registry_gives_the_engine_a_token_never_the_password() {
        let (token_port, token_seen) = fake(
            "127.0.0.1",
            http("200 OK", "", r#"{"token":"pull-scoped-token"}"#),
        )
        .await;
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{token_port}/token\",service=\"fake\"\r\n"
        );
        let (registry_port, _) = fake("127.0.0.1", http("401 Unauthorized", &challenge, "")).await;
        let image = format!("127.0.0.1:{registry_port}/team/app:v1");
        let client = registry_auth_client().unwrap();
        let credentials = engine_credentials(&image, &login(), &client).await.unwrap();
        assert_eq!(
            credentials.registrytoken.as_deref(),
            Some("pull-scoped-token")
        );
        assert_eq!(credentials.password, None);
        assert_eq!(credentials.username, None);
        let asked = token_seen.lock().unwrap().join("\n");
        assert!(
            asked.contains("scope=repository%3Ateam%2Fapp%3Apull"),
            "a pull-only scope: {asked}"
        );
    }

    #[tokio::test]
    async fn a_realm_on_another_host_gets_nothing() {
        // 127.0.0.2 is loopback too, but another host than 127.0.0.1.
        let (token_port, token_seen) =
            fake("127.0.0.2", http("200 OK", "", r#"{"token":"t"}"#)).await;
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.2:{token_port}/token\"\r\n");
        let (registry_port, _) = fake("127.0.0.1", http("401 Unauthorized", &challenge, "")).await;
        let image = format!("127.0.0.1:{registry_port}/app:v1");
        let client = registry_auth_client().unwrap();
        let e = engine_credentials(&image, &login(), &client)
            .await
            .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("127.0.0.2") && text.contains("not sent"),
            "{text}"
        );
        assert!(!text.contains("pull-Pa55word"));
        assert!(
            token_seen.lock().unwrap().is_empty(),
            "the realm was reached"
        );
    }

    #[tokio::test]
    async fn a_basic_registry_gets_the_login_as_before() {
        let (registry_port, _) = fake(
            "127.0.0.1",
            http(
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"Registry\"\r\n",
                "",
            ),
        )
        .await;
        let image = format!("127.0.0.1:{registry_port}/app:v1");
        let client = registry_auth_client().unwrap();
        let credentials = engine_credentials(&image, &login(), &client).await.unwrap();
        assert_eq!(credentials.password.as_deref(), Some("pull-Pa55word"));
        assert_eq!(credentials.registrytoken, None);
    }

    #[test]
    fn docker_hub_pulls_may_use_its_realm() {
        let policy = pull_policy("docker.io").unwrap();
        let realm: http::Uri = "https://auth.docker.io/token".parse().unwrap();
        assert!(policy.http(&realm).is_ok());
        let policy = pull_policy("127.0.0.1:5000").unwrap();
        let same_host: http::Uri = "http://127.0.0.1:5001/token".parse().unwrap();
        assert!(policy.http(&same_host).is_ok());
        let other: http::Uri = "https://auth.docker.io/token".parse().unwrap();
        assert!(policy.http(&other).is_err());
    }

    #[test]
    fn references_split_for_a_pull() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("a/b:1.2"), ("a/b", "1.2"));
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a:v1"),
            ("127.0.0.1:5000/a", "v1")
        );
        assert_eq!(split_reference("a/b@sha256:abc"), ("a/b", "sha256:abc"));
    }
}
