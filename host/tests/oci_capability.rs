//! `launch_agent::capabilities::oci::manifest_exists` against the real
//! registry (htpasswd basic auth, plain HTTP on 127.0.0.1) that
//! `scripts/services.sh start` brings up. The base image is pushed there
//! first as `<registry>/oci-test:v1`, through the Docker Engine.

mod common;

/// The grants of a plugin that may reach any registry on this machine.
fn local() -> launch_agent::capabilities::policy::GrantPolicy {
    launch_agent::capabilities::policy::GrantPolicy::for_hosts(&["http://127.0.0.1:*"]).unwrap()
}

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use common::docker::{docker, services};
use futures_util::StreamExt;
use launch_agent::capabilities::oci::{RegistryClients, manifest_exists};
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
        &RegistryClients::default(),
        &local(),
        "test",
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
            &RegistryClients::default(),
            &local(),
            "test",
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
    let failure = manifest_exists(
        &RegistryClients::default(),
        &local(),
        "test",
        &image,
        Some(&s.registry_user),
        Some(&wrong),
        true,
    )
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
    let failure = manifest_exists(
        &RegistryClients::default(),
        &local(),
        "test",
        &image,
        None,
        None,
        true,
    )
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
    let failure = manifest_exists(
        &RegistryClients::default(),
        &local(),
        "test",
        "UPPER/Case:!bad",
        None,
        None,
        true,
    )
    .await
    .expect_err("not a reference");
    assert!(!failure.unauthorized);
    assert!(
        failure.message.contains("UPPER/Case:!bad"),
        "{}",
        failure.message
    );
}

/// The `registry-oci` plugin, built by `scripts/build-plugins.sh` (or by
/// `cargo build --release --target wasm32-wasip2 -p registry-oci`).
fn registry_oci_wasm() -> std::path::PathBuf {
    let target = common::target_dir();
    [
        target.join("bundle/registry-oci.wasm"),
        target.join("wasm32-wasip2/release/registry_oci.wasm"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("registry-oci is not built: run scripts/build-plugins.sh first")
}

/// Loads `registry-oci` with `grants_yaml` (a flow mapping) and the secret
/// `registry-password` read from a file holding `password`.
async fn registry_plugin(
    dir: &std::path::Path,
    grants_yaml: &str,
    password: &str,
) -> std::sync::Arc<launch_agent::plugins::LoadedPlugin> {
    let secret_file = dir.join("registry-password");
    std::fs::write(&secret_file, password).unwrap();
    let wasm = registry_oci_wasm();
    let yaml = format!(
        "secrets:\n  registry-password: {{ file: {} }}\n\
         plugins:\n  oci-under-test:\n    path: {}\n    grants: {grants_yaml}\n",
        secret_file.display(),
        wasm.display()
    );
    let config = launch_agent::config::LaunchConfig::parse(&yaml, std::path::Path::new("t.yaml"))
        .expect("config");
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load(
        "oci-under-test",
        &wasm,
        &config.plugins["oci-under-test"],
        &config.secrets,
    )
    .await
    .expect("load registry-oci")
}

/// The settings the agent would pass: the `registry:` block and the
/// plugin's `config:`.
fn plugin_settings() -> String {
    let s = services();
    serde_json::json!({
        "type": "oci",
        "uri": format!("{}/{REPOSITORY}", s.registry),
        "username": s.registry_user,
        "password-secret": "registry-password",
    })
    .to_string()
}

#[tokio::test]
async fn the_plugin_checks_images_through_the_granted_capability() {
    let image = pushed_image().await;
    let s = services();
    let dir = tempfile::tempdir().unwrap();
    let plugin = registry_plugin(
        dir.path(),
        "{ hosts: [\"http://127.0.0.1:*\"], secrets: [registry-password] }",
        &s.registry_password,
    )
    .await;
    let settings = plugin_settings();
    assert_eq!(
        plugin.repository_uri(&settings, None).await.unwrap(),
        format!("{}/{REPOSITORY}", s.registry)
    );
    assert!(plugin.image_exists(&settings, &image, None).await.unwrap());
    let missing = format!("{}/{REPOSITORY}:never-pushed", s.registry);
    assert!(
        !plugin
            .image_exists(&settings, &missing, None)
            .await
            .unwrap()
    );
    let login = plugin
        .login(&settings, None)
        .await
        .unwrap()
        .expect("a login");
    assert_eq!(login.username, s.registry_user);
    assert_eq!(login.password.value(), s.registry_password);
}

#[tokio::test]
async fn the_plugin_is_denied_an_ungranted_registry() {
    let image = pushed_image().await;
    let s = services();
    let dir = tempfile::tempdir().unwrap();
    let plugin = registry_plugin(
        dir.path(),
        "{ hosts: [\"https://127.0.0.1:*\"], secrets: [registry-password] }",
        &s.registry_password,
    )
    .await;
    let error = plugin
        .image_exists(&plugin_settings(), &image, None)
        .await
        .expect_err("plain HTTP to the registry is not granted")
        .to_string();
    assert!(error.contains("grants.hosts"), "{error}");
    assert!(error.contains(&format!("http://{}", s.registry)), "{error}");
}

#[tokio::test]
async fn the_plugin_reports_a_wrong_password_without_showing_it() {
    let image = pushed_image().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let plugin = registry_plugin(
        dir.path(),
        "{ hosts: [\"http://127.0.0.1:*\"], secrets: [registry-password] }",
        &wrong,
    )
    .await;
    let error = plugin
        .image_exists(&plugin_settings(), &image, None)
        .await
        .expect_err("a wrong password must fail");
    let text = format!("{error} {error:?}");
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains(&wrong), "{text}");
}
