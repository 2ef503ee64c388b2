//! The image of a run: used as it is when the engine has it, else pulled,
//! with the credentials the agent gives (the configured registry's login
//! when the image lives there; anonymously otherwise). A failed pull is an
//! error naming the image and how it was pulled; the password never
//! appears in it.

use crate::capabilities::docker::{ImageRef, redact};
use crate::runners::RegistryLogin;
use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;

/// Uses the image when the engine has it; pulls it otherwise.
pub(super) async fn ensure_image(
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
    let auth = credentials.as_ref().map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: ImageRef::parse(image)
            .ok()
            .map(|r| r.registry_display().to_string()),
        ..Default::default()
    });
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
