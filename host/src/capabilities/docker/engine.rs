//! The Docker engine operations behind `launch:plugin/docker`, as plain
//! async Rust over a bollard client (no WebAssembly involved).

use super::context::{self, CONTEXT_DOCKERFILE};
use super::reference::ImageRef;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions, TagImageOptions};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// How long the engine may take to start answering a build or push (the
/// client's default of 2 minutes is too short for a large context).
const LONG_REQUEST: Duration = Duration::from_secs(3600);

/// How long to wait for the context thread once the build request ended.
const CONTEXT_DRAIN: Duration = Duration::from_secs(5);

/// A failure of the engine or a registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("docker {operation}: {message}")]
pub struct EngineError {
    /// What was being done: `build`, `push` or `inspect`.
    pub operation: String,
    /// The engine's error line (for a build, the failing step's error).
    pub message: String,
    /// Whether the registry refused the credentials.
    pub unauthorized: bool,
}

impl EngineError {
    /// An error of `operation` saying `message`.
    pub fn new(operation: &str, message: impl Into<String>) -> Self {
        EngineError {
            operation: operation.to_string(),
            message: message.into(),
            unauthorized: false,
        }
    }
}

/// The engine's own words for a bollard error.
fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerStreamError { error } => error.trim().to_string(),
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether a build's steps (`RUN`, `ADD <url>`) get the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildNetwork {
    /// Network mode `none`: no step reaches any host, loopback and the
    /// engine's bridge included.
    Off,
    /// The engine's default network: steps reach any host the engine can.
    On,
    /// The named network (the capability's internal
    /// [`build_network`](super::build_network), where only its proxy is
    /// reachable).
    Named(String),
}

/// Builds an image from `source` (none: an empty context) with the
/// Dockerfile text `dockerfile`, tags it with each of `tags`, and returns its
/// id (`sha256:...`); its steps get the network `network` says.
///
/// The context is a tar streamed to the engine as it is written (see
/// [`context`](super::context) for what it holds). Each line of the build's
/// output goes to `log`. A failing step is an error whose message is the
/// engine's line, e.g. `The command '/bin/sh -c exit 7' returned a non-zero
/// code: 7`.
#[allow(
    clippy::too_many_arguments,
    reason = "one per build option of the engine; callers name each"
)]
pub async fn build_image(
    docker: &Docker,
    source: Option<&Path>,
    dockerfile: &str,
    tags: &[String],
    platform: Option<&str>,
    build_args: &[(String, String)],
    network: BuildNetwork,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<String, EngineError> {
    const OP: &str = "build";
    let refs = tags
        .iter()
        .map(|tag| ImageRef::parse(tag))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::new(OP, e))?;
    if let Some(r) = refs.iter().find(|r| r.digest.is_some()) {
        return Err(EngineError::new(
            OP,
            format!("tag {:?} has a digest; tags are `repository:tag`", r.name),
        ));
    }
    if let Some(platform) = platform
        && !platform
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
    {
        return Err(EngineError::new(
            OP,
            format!("platform {platform:?} is malformed"),
        ));
    }
    let options = BuildImageOptions {
        dockerfile: CONTEXT_DOCKERFILE.to_string(),
        t: tags.first().cloned(),
        platform: platform.unwrap_or_default().to_string(),
        buildargs: (!build_args.is_empty())
            .then(|| build_args.iter().cloned().collect::<HashMap<_, _>>()),
        rm: true,
        forcerm: true,
        networkmode: match network {
            BuildNetwork::Off => Some("none".to_string()),
            BuildNetwork::On => None,
            BuildNetwork::Named(name) => Some(name),
        },
        ..Default::default()
    };

    let (chunks, producer) = context::spawn(source.map(Path::to_path_buf), dockerfile.to_string());
    let body = bollard::body_try_stream(futures_util::stream::unfold(chunks, |mut rx| async {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let docker = docker.clone().with_timeout(LONG_REQUEST);
    let mut stream = docker.build_image(options, None, Some(body));
    let mut image_id = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                for line in info.stream.iter().chain(info.status.iter()) {
                    for line in line.lines().map(str::trim_end) {
                        if !line.trim().is_empty() {
                            log(line);
                        }
                    }
                }
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    image_id = Some(id);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(stream);
    // The context thread ends once the body is consumed or dropped; its own
    // error (an unreadable file) explains a failed upload better than the
    // engine's broken request.
    let context_result = tokio::time::timeout(CONTEXT_DRAIN, producer).await;
    let context_error = match context_result {
        Ok(Ok(Err(e))) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Some(format!("build context: {e}"))
        }
        Ok(Err(join)) => Some(format!("build context: {join}")),
        _ => None,
    };
    if let Some(e) = failure {
        let message = match (&e, context_error) {
            (BollardError::DockerStreamError { .. }, _) => engine_message(&e),
            (_, Some(context)) => context,
            _ => engine_message(&e),
        };
        log(&message);
        return Err(EngineError::new(OP, message));
    }
    if let Some(context) = context_error {
        return Err(EngineError::new(OP, context));
    }
    let id = match image_id {
        Some(id) => id,
        None => match tags.first() {
            Some(tag) => docker
                .inspect_image(tag)
                .await
                .ok()
                .and_then(|image| image.id)
                .ok_or_else(|| EngineError::new(OP, "the engine reported no image id"))?,
            None => return Err(EngineError::new(OP, "the engine reported no image id")),
        },
    };
    for r in refs.iter().skip(1) {
        let options = TagImageOptions {
            repo: Some(r.name.clone()),
            tag: r.tag.clone(),
        };
        docker.tag_image(&id, Some(options)).await.map_err(|e| {
            EngineError::new(OP, format!("tagging {}: {}", r.name, engine_message(&e)))
        })?;
    }
    Ok(id)
}

/// Whether a registry's error line means it refused the credentials.
fn is_unauthorized(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "requested access to the resource is denied",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// `text` with every occurrence of `secret` replaced by `***`.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_string(),
    }
}

/// Pushes `image` (`repository[:tag]`, tag `latest` when none) to its
/// registry, logging in with `credentials` (`(username, password)`) when
/// given. Progress lines go to `log`. A refusal of the credentials is an
/// error with `unauthorized: true`. The password appears in no message and
/// no log line.
///
/// The engine sends the password wherever the registry's challenge says
/// (its token realm): this layer trusts its caller. The capability checks
/// the realm first and passes a token instead ([`push_image_as`]).
pub async fn push_image(
    docker: &Docker,
    image: &str,
    credentials: Option<(&str, &str)>,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), EngineError> {
    let auth = credentials.map(|(username, password)| PushAuth::Password { username, password });
    push_image_as(docker, image, auth, log).await
}

/// How a push logs in to its registry.
#[derive(Clone, Copy)]
pub enum PushAuth<'a> {
    /// Basic credentials, which the engine sends to the registry (and to
    /// whatever token realm the registry names).
    Password {
        /// The user name.
        username: &'a str,
        /// The password.
        password: &'a str,
    },
    /// A registry token the host obtained for the repository (see
    /// [`registry_auth`](crate::capabilities::registry_auth)): the engine
    /// sends it to the registry as a bearer token and never sees the
    /// password. `username` names the login in messages.
    Token {
        /// The user name the token was obtained for.
        username: &'a str,
        /// The token.
        token: &'a str,
    },
}

/// [`push_image`] with `auth` (a password or a registry token).
pub async fn push_image_as(
    docker: &Docker,
    image: &str,
    auth: Option<PushAuth<'_>>,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), EngineError> {
    const OP: &str = "push";
    let (password, credentials) = match auth {
        Some(PushAuth::Password { username, password }) => {
            (Some(password), Some((username, password)))
        }
        Some(PushAuth::Token { username, token }) => (Some(token), Some((username, token))),
        None => (None, None),
    };
    let reference = ImageRef::parse(image).map_err(|e| EngineError::new(OP, e))?;
    if reference.digest.is_some() {
        return Err(EngineError::new(
            OP,
            format!("{image:?} has a digest: push a `repository:tag`"),
        ));
    }
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    let serveraddress = Some(reference.registry_display().to_string());
    let auth = auth.map(|auth| match auth {
        PushAuth::Password { username, password } => DockerCredentials {
            username: Some(username.to_string()),
            password: Some(password.to_string()),
            serveraddress,
            ..Default::default()
        },
        PushAuth::Token { token, .. } => DockerCredentials {
            registrytoken: Some(token.to_string()),
            serveraddress,
            ..Default::default()
        },
    });
    let options = PushImageOptions {
        tag: Some(tag),
        ..Default::default()
    };
    let docker = docker.clone().with_timeout(LONG_REQUEST);
    let mut stream = docker.push_image(&reference.name, Some(options), auth);
    let mut last_line = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let Some(status) = info.status else { continue };
                let line = redact(status.trim(), password);
                // Each layer repeats "Pushing" with byte counts; log changes only.
                if !line.is_empty() && line != last_line {
                    log(&line);
                    last_line = line;
                }
            }
            Err(e) => {
                let status = match &e {
                    BollardError::DockerResponseServerError { status_code, .. } => {
                        Some(*status_code)
                    }
                    _ => None,
                };
                let engine = redact(&engine_message(&e), password);
                let unauthorized = status == Some(401) || is_unauthorized(&engine);
                let message = if unauthorized {
                    format!(
                        "registry {} refused the credentials{}: {engine}",
                        reference.registry_display(),
                        match credentials {
                            Some((user, _)) => format!(" of user {user:?}"),
                            None => " (anonymous push)".to_string(),
                        }
                    )
                } else {
                    engine
                };
                log(&message);
                return Err(EngineError {
                    operation: OP.to_string(),
                    message,
                    unauthorized,
                });
            }
        }
    }
    Ok(())
}

/// Whether the engine has `image` locally.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, EngineError> {
    const OP: &str = "inspect";
    ImageRef::parse(image).map_err(|e| EngineError::new(OP, e))?;
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(EngineError::new(OP, engine_message(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_lines_are_recognised() {
        assert!(is_unauthorized("unauthorized: authentication required"));
        assert!(is_unauthorized("no basic auth credentials"));
        assert!(!is_unauthorized("manifest blob unknown"));
    }

    #[test]
    fn redaction_hides_the_secret() {
        assert_eq!(redact("a hunter2 b", Some("hunter2")), "a *** b");
        assert_eq!(redact("a b", Some("")), "a b");
    }
}
