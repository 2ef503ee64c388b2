//! `launch_agent::capabilities::oci::manifest_exists` against the real
//! registry (htpasswd basic auth, plain HTTP on 127.0.0.1) that
//! `scripts/services.sh start` brings up. The base image is pushed there
//! first as `<registry>/oci-test:v1`, through the Docker Engine.

mod common;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use common::docker::{docker, services};
use futures_util::StreamExt;
use launch_agent::capabilities::oci::manifest_exists;
use tokio::sync::OnceCell;

/// The repository the tests push to.
const REPOSITORY: &str = "oci-test";

/// `<registry>/oci-test:v1`, pushed once per test binary.
async fn pushed_image() -> String {
    static PUSHED: OnceCell<String> = OnceCell::const_new();
    PUSHED
        .get_or_init(|| async {
            let services = services();
            let docker = docker().await;
            let repo = format!("{}/{REPOSITORY}", services.registry);
            docker
                .tag_image(
                    &services.base_image,
                    Some(TagImageOptions {
                        repo: Some(repo.clone()),
                        tag: Some("v1".into()),
                    }),
                )
                .await
                .unwrap_or_else(|e| panic!("tagging {} as {repo}:v1: {e}", services.base_image));
            let credentials = DockerCredentials {
                username: Some(services.registry_user.clone()),
                password: Some(services.registry_password.clone()),
                serveraddress: Some(services.registry.clone()),
                ..Default::default()
            };
            let mut push = docker.push_image(
                &repo,
                Some(PushImageOptions {
                    tag: Some("v1".into()),
                    ..Default::default()
                }),
                Some(credentials),
            );
            while let Some(step) = push.next().await {
                let step = step.unwrap_or_else(|e| panic!("pushing {repo}:v1: {e}"));
                if let Some(detail) = step.error_detail {
                    panic!("pushing {repo}:v1: {detail:?}");
                }
            }
            format!("{repo}:v1")
        })
        .await
        .clone()
}

#[tokio::test]
async fn an_existing_tag_exists() {
    let image = pushed_image().await;
    let s = services();
    let exists = manifest_exists(
        &image,
        Some(&s.registry_user),
        Some(&s.registry_password),
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{image}: {e}"));
    assert!(exists, "{image} was just pushed");
}

#[tokio::test]
async fn a_missing_tag_or_repository_does_not_exist() {
    pushed_image().await;
    let s = services();
    for image in [
        format!("{}/{REPOSITORY}:never-pushed", s.registry),
        format!("{}/no-such-repository:v1", s.registry),
    ] {
        let exists = manifest_exists(
            &image,
            Some(&s.registry_user),
            Some(&s.registry_password),
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("{image}: {e}"));
        assert!(!exists, "{image} was never pushed");
    }
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_and_never_shown() {
    let image = pushed_image().await;
    let s = services();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let failure = manifest_exists(&image, Some(&s.registry_user), Some(&wrong), true)
        .await
        .expect_err("a wrong password must fail");
    assert!(failure.unauthorized, "{failure:?}");
    assert!(failure.message.contains(&image), "{}", failure.message);
    assert!(failure.message.contains("refused"), "{}", failure.message);
    assert!(!failure.message.contains(&wrong), "{}", failure.message);
    assert!(!format!("{failure:?}").contains(&wrong), "{failure:?}");
    assert!(!failure.to_string().contains(&wrong), "{failure}");
}

#[tokio::test]
async fn anonymous_access_to_an_auth_registry_is_unauthorized() {
    let image = pushed_image().await;
    let failure = manifest_exists(&image, None, None, true)
        .await
        .expect_err("the registry wants credentials");
    assert!(failure.unauthorized, "{failure:?}");
    assert!(
        failure.message.contains("requires credentials"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_bad_reference_is_named() {
    let failure = manifest_exists("UPPER/Case:!bad", None, None, true)
        .await
        .expect_err("not a reference");
    assert!(!failure.unauthorized);
    assert!(
        failure.message.contains("UPPER/Case:!bad"),
        "{}",
        failure.message
    );
}
