//! The engine layer of `launch:plugin/docker` (build, push, inspect) against
//! the real Docker Engine and registry of `scripts/services.sh start`, then
//! its grants through the bundled `builder-docker` plugin: the engine and
//! each push target refused without their grant and allowed with it.

mod common;

use bollard::Docker;
use common::docker::{docker, remove_images, services};
use launch_agent::capabilities::docker::{BuildNetwork, build_image, image_exists, push_image};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Collects the lines an operation logs.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn logger(&self) -> impl Fn(&str) + Send + Sync + use<> {
        let lines = self.0.clone();
        move |line: &str| lines.lock().unwrap().push(line.to_string())
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A repository in the test registry no other test (or run) uses.
fn unique_repo(test: &str) -> String {
    format!(
        "{}/launch-agent-test/{test}-{}",
        services().registry,
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes `files` (path, contents) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &[u8])]) {
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// Standard base64 of `data`, for basic auth.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `GET path` on the test registry with basic auth: (status, body).
async fn registry_get(path: &str) -> (u16, String) {
    let s = services();
    let auth = base64(format!("{}:{}", s.registry_user, s.registry_password).as_bytes());
    let mut stream = tokio::net::TcpStream::connect(&s.registry).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\r\n",
        s.registry
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Builds `FROM <base image>` + `RUN true` tagged `image`, from no source.
async fn build_minimal(docker: &Docker, image: &str) -> String {
    let dockerfile = format!("FROM {}\nRUN true\n", services().base_image);
    build_image(
        docker,
        None,
        &dockerfile,
        &[image.to_string()],
        None,
        &[],
        BuildNetwork::Off,
        &|_: &str| {},
    )
    .await
    .unwrap_or_else(|e| panic!("building {image}: {e}"))
}

#[tokio::test]
async fn build_streams_the_source_and_tags_the_image() {
    let docker = docker().await;
    let source = tempfile::tempdir().unwrap();
    let big = vec![b'x'; 300_000]; // several context chunks
    write_files(
        source.path(),
        &[
            ("hello.txt", b"hello from the job\n"),
            ("sub/dir/data.txt", b"nested\n"),
            ("big.bin", &big),
            (".git/config", b"[core]\n"),
            ("ignored.log", b"left out\n"),
            ("logs/keep.log", b"kept: the pattern is top-level only\n"),
            (".dockerignore", b"# test\n*.log\n"),
            // The source's own file of the context Dockerfile's name loses.
            (".launch-agent.Dockerfile", b"FROM scratch\nRUN exit 99\n"),
        ],
    );
    std::os::unix::fs::symlink("/etc/hostname", source.path().join("outside-link")).unwrap();

    let repo = unique_repo("build");
    let tags = vec![format!("{repo}:v1"), format!("{repo}:v2")];
    let dockerfile = format!(
        "FROM {base}\n\
         ARG GREETING\n\
         COPY . /ctx/\n\
         RUN test -f /ctx/hello.txt && test -f /ctx/sub/dir/data.txt \
             && test \"$(wc -c < /ctx/big.bin)\" -eq 300000 \
             && test ! -e /ctx/.git && test ! -e /ctx/ignored.log && test -f /ctx/logs/keep.log \
             && test -L /ctx/outside-link && test \"$(readlink /ctx/outside-link)\" = /etc/hostname \
             && test -f /ctx/.launch-agent.Dockerfile\n\
         RUN echo \"greeting=$GREETING\" && cat /ctx/hello.txt\n",
        base = services().base_image
    );
    let lines = Lines::default();
    let id = build_image(
        &docker,
        Some(source.path()),
        &dockerfile,
        &tags,
        None,
        &[("GREETING".into(), "hi-there".into())],
        BuildNetwork::Off,
        &lines.logger(),
    )
    .await
    .unwrap_or_else(|e| panic!("build failed: {e}\nlog:\n{}", lines.all().join("\n")));

    assert!(id.starts_with("sha256:"), "image id {id:?}");
    let log = lines.all();
    assert!(
        log.iter().any(|l| l.contains("greeting=hi-there")),
        "build output not logged: {log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("hello from the job")));
    for tag in &tags {
        assert!(image_exists(&docker, tag).await.unwrap(), "{tag} missing");
    }
    assert!(
        !image_exists(&docker, &format!("{repo}:never-built"))
            .await
            .unwrap()
    );
    // The source itself is left as it was.
    assert_eq!(
        std::fs::read(source.path().join(".launch-agent.Dockerfile")).unwrap(),
        b"FROM scratch\nRUN exit 99\n"
    );
    remove_images(&docker, &tags).await;
}

#[tokio::test]
async fn a_failing_step_is_the_engines_error_line() {
    let docker = docker().await;
    let source = tempfile::tempdir().unwrap();
    write_files(source.path(), &[("main.py", b"print('hi')\n")]);
    let dockerfile = format!("FROM {}\nRUN exit 7\n", services().base_image);
    let lines = Lines::default();
    let err = build_image(
        &docker,
        Some(source.path()),
        &dockerfile,
        &[format!("{}:broken", unique_repo("broken"))],
        None,
        &[],
        BuildNetwork::Off,
        &lines.logger(),
    )
    .await
    .expect_err("RUN exit 7 must fail the build");
    assert_eq!(err.operation, "build");
    assert!(!err.unauthorized);
    assert!(
        err.message.contains("exit 7") && err.message.contains("returned a non-zero code: 7"),
        "message: {:?}",
        err.message
    );
    assert!(
        lines.all().iter().any(|l| l.contains("Step 2/2")),
        "steps not logged: {:#?}",
        lines.all()
    );
}

#[tokio::test]
async fn bad_tags_are_refused_before_the_engine() {
    let docker = docker().await;
    let err = build_image(
        &docker,
        None,
        "FROM scratch\n",
        &["../containers/x?force=1".to_string()],
        None,
        &[],
        BuildNetwork::Off,
        &|_: &str| {},
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("image reference"), "{err}");
    let err = image_exists(&docker, "a/../../b").await.unwrap_err();
    assert_eq!(err.operation, "inspect");
}

#[tokio::test]
async fn push_with_the_right_credentials_reaches_the_registry() {
    let docker = docker().await;
    let s = services();
    let repo = unique_repo("push");
    let image = format!("{repo}:v1");
    build_minimal(&docker, &image).await;

    let lines = Lines::default();
    push_image(
        &docker,
        &image,
        Some((&s.registry_user, &s.registry_password)),
        &lines.logger(),
    )
    .await
    .unwrap_or_else(|e| panic!("push failed: {e}\nlog:\n{}", lines.all().join("\n")));
    let log = lines.all();
    assert!(!log.is_empty(), "push progress not logged");
    assert!(
        log.iter().all(|l| !l.contains(&s.registry_password)),
        "password logged"
    );

    let path = repo.split_once('/').unwrap().1;
    let (status, body) = registry_get(&format!("/v2/{path}/tags/list")).await;
    assert_eq!(status, 200, "tags/list: {body}");
    assert!(body.contains("\"v1\""), "tag not in the registry: {body}");

    // Gone locally, it is still in the registry; the local check says so.
    remove_images(&docker, std::slice::from_ref(&image)).await;
    assert!(!image_exists(&docker, &image).await.unwrap());
}

#[tokio::test]
async fn push_with_a_wrong_password_is_unauthorized_and_never_shows_it() {
    let docker = docker().await;
    let s = services();
    let image = format!("{}:v1", unique_repo("unauthorized"));
    build_minimal(&docker, &image).await;

    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let lines = Lines::default();
    let err = push_image(
        &docker,
        &image,
        Some((&s.registry_user, &wrong)),
        &lines.logger(),
    )
    .await
    .expect_err("a wrong password must fail the push");
    assert_eq!(err.operation, "push");
    assert!(err.unauthorized, "not flagged unauthorized: {err:?}");
    assert!(
        err.message.contains(&s.registry),
        "message names no registry: {}",
        err.message
    );
    for text in [err.message.clone(), err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(&wrong), "password in error: {text}");
    }
    let log = lines.all();
    assert!(
        log.iter().all(|l| !l.contains(&wrong)),
        "password logged: {log:#?}"
    );

    // Anonymous pushes are refused the same way.
    let err = push_image(&docker, &image, None, &|_: &str| {})
        .await
        .expect_err("an anonymous push must fail");
    assert!(err.unauthorized, "anonymous: {err:?}");
    remove_images(&docker, std::slice::from_ref(&image)).await;
}

#[tokio::test]
async fn an_unreadable_source_is_the_contexts_error() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file.txt");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let dockerfile = format!("FROM {}\nRUN true\n", services().base_image);
    let err = build_image(
        &docker,
        Some(&not_a_dir),
        &dockerfile,
        &[],
        None,
        &[],
        BuildNetwork::Off,
        &|_: &str| {},
    )
    .await
    .expect_err("a file is no build context");
    assert_eq!(err.operation, "build");
    assert!(
        err.message.starts_with("build context:") && err.message.contains("not a directory"),
        "message: {:?}",
        err.message
    );
}

/// Loads the bundled `builder-docker` with `grants_yaml` (a flow mapping).
async fn docker_builder(
    dir: &Path,
    grants_yaml: &str,
) -> std::sync::Arc<launch_agent::plugins::LoadedPlugin> {
    let wasm = common::bundle_dir().join("builder-docker.wasm");
    let yaml = format!(
        "plugins:\n  builder-under-test:\n    path: {}\n    grants: {grants_yaml}\n",
        wasm.display()
    );
    let config =
        launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).expect("config");
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load(
        "builder-under-test",
        &wasm,
        &config.plugins["builder-under-test"],
        &config.secrets,
    )
    .await
    .expect("load builder-docker")
}

/// A build request for `image` pushed to `destination`, and its plan.
fn build_request(
    image: &str,
    destination: &str,
) -> (
    launch_agent::plugins::loaded::BuildRequest,
    launch_agent::plugins::loaded::BuildPlan,
) {
    use launch_agent::plugins::bindings::Job;
    let request = launch_agent::plugins::loaded::BuildRequest {
        job: Job {
            id: "grants".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: "{}".into(),
        destination: destination.into(),
        source_dir: None,
        source_id: "grants".into(),
    };
    let plan = launch_agent::plugins::loaded::BuildPlan {
        image_uri: image.into(),
        dockerfile: format!("FROM {}\nRUN true\n", services().base_image),
        dockerfile_origin: "test".into(),
    };
    (request, plan)
}

#[tokio::test]
async fn the_engine_is_refused_to_a_plugin_without_grants_docker() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = docker_builder(dir.path(), "{ hosts: [\"http://127.0.0.1:*\"] }").await;
    let image = format!("{}:v1", unique_repo("refused-engine"));
    let (request, plan) = build_request(&image, "");
    let error = plugin
        .build(&request, &plan, None, None, None)
        .await
        .expect_err("the build is refused")
        .to_string();
    assert!(
        error.contains("refused by the plugin's grants")
            && error.contains("not granted the Docker engine (grants.docker: true)"),
        "{error}"
    );
    assert!(
        !image_exists(&docker().await, &image).await.unwrap(),
        "the refused build ran"
    );
}

#[tokio::test]
async fn a_push_reaches_only_a_registry_in_grants_hosts() {
    use launch_agent::capabilities::secrets::{CredentialScope, SecretHandle};
    use launch_agent::plugins::loaded::RegistryCredentials;
    let s = services();
    let dir = tempfile::tempdir().unwrap();
    let repo = unique_repo("push-grant");
    let image = format!("{repo}:v1");
    let (request, plan) = build_request(&image, &repo);
    let credentials = RegistryCredentials {
        username: s.registry_user.clone(),
        password: SecretHandle::opaque(
            "registry-password",
            s.registry_password.clone(),
            CredentialScope::parse(&repo).unwrap(),
        ),
    };

    // The engine is granted, the registry is not: built, then refused.
    let plugin = docker_builder(
        dir.path(),
        "{ docker: true, hosts: [\"https://example.com\"] }",
    )
    .await;
    let error = plugin
        .build(&request, &plan, Some(&credentials), None, None)
        .await
        .expect_err("the push is refused")
        .to_string();
    assert!(
        error.contains(&format!("may not push to registry {}", s.registry))
            && error.contains("grants.hosts"),
        "{error}"
    );
    let path = repo.split_once('/').unwrap().1;
    let (status, _) = registry_get(&format!("/v2/{path}/tags/list")).await;
    assert_ne!(status, 200, "the refused push reached the registry");

    // With the registry's host granted the same push goes through.
    let granted = format!("{{ docker: true, hosts: [\"http://{}\"] }}", s.registry);
    let plugin = docker_builder(dir.path(), &granted).await;
    let outcome = plugin
        .build(&request, &plan, Some(&credentials), None, None)
        .await
        .expect("the granted push succeeds");
    assert_eq!(outcome.image_uri, image);
    let (status, body) = registry_get(&format!("/v2/{path}/tags/list")).await;
    assert_eq!(status, 200, "tags/list: {body}");
    remove_images(&docker().await, std::slice::from_ref(&image)).await;
}

/// Loads the hostile builder (`tests/plugins/hostile-builder`) with
/// `grants_yaml` (a flow mapping).
async fn hostile_builder(
    dir: &Path,
    grants_yaml: &str,
) -> std::sync::Arc<launch_agent::plugins::LoadedPlugin> {
    let wasm = common::test_plugin("hostile-builder");
    let yaml = format!(
        "plugins:\n  hostile-builder:\n    path: {}\n    grants: {grants_yaml}\n",
        wasm.display()
    );
    let config =
        launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).expect("config");
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load(
        "hostile-builder",
        &wasm,
        &config.plugins["hostile-builder"],
        &config.secrets,
    )
    .await
    .expect("load hostile-builder")
}

/// The image id behind `image`, if the engine has it.
async fn image_id(docker: &Docker, image: &str) -> Option<String> {
    docker.inspect_image(image).await.ok().and_then(|i| i.id)
}

/// Issue 10, class 3: a builder granted the engine may tag only the planned
/// image's repository, and look up nothing else: another job's image is
/// neither overwritten nor probed.
#[tokio::test]
async fn a_build_tags_and_looks_up_only_the_planned_repository() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let victim = format!("{}:v1", unique_repo("victim"));
    let victim_id = build_minimal(&docker, &victim).await;
    let repo = unique_repo("tag-scope");
    let image = format!("{repo}:v1");
    let plugin = hostile_builder(dir.path(), "{ docker: true }").await;
    let (mut request, mut plan) = build_request(&image, "");
    plan.dockerfile = format!("FROM {}\nLABEL poisoned=yes\n", services().base_image);

    // Tagging another job's image is refused, before the engine builds.
    request.settings = json!({"mode": "tag-poison", "tag": victim}).to_string();
    let refused = plugin
        .build(&request, &plan, None, None, None)
        .await
        .expect_err("the poisoning tag is refused")
        .to_string();
    assert!(
        refused.contains("outside the planned image's repository") && refused.contains(&repo),
        "{refused}"
    );
    assert_eq!(
        image_id(&docker, &victim).await.as_deref(),
        Some(&*victim_id)
    );
    assert!(
        !image_exists(&docker, &image).await.unwrap(),
        "nothing was built"
    );

    // Probing another image is refused; the planned repository answers.
    request.settings = json!({"mode": "probe", "image": victim}).to_string();
    let probe = plugin
        .build(&request, &plan, None, None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        probe.contains("outside the planned image's repository"),
        "{probe}"
    );
    request.settings = json!({"mode": "probe", "image": format!("{repo}:other")}).to_string();
    let probe = plugin
        .build(&request, &plan, None, None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(probe.contains("probe: answered false"), "{probe}");

    // A second tag in the planned repository is fine.
    let second = format!("{repo}:v2");
    request.settings = json!({"mode": "tag-poison", "tag": second}).to_string();
    plugin
        .build(&request, &plan, None, None, None)
        .await
        .expect("a tag in the planned repository");
    assert!(image_exists(&docker, &second).await.unwrap());
    assert_eq!(
        image_id(&docker, &victim).await.as_deref(),
        Some(&*victim_id)
    );
    remove_images(&docker, &[victim, image, second]).await;
}

/// Issue 10, class 3: a build's steps have no network unless the builder
/// is granted `build_network` (the bundled builder is, by default).
#[tokio::test]
async fn a_builds_steps_get_the_network_only_with_grants_build_network() {
    let dir = tempfile::tempdir().unwrap();
    let repo = unique_repo("build-network");
    let image = format!("{repo}:v1");
    let (mut request, mut plan) = build_request(&image, "");
    plan.dockerfile = format!(
        "FROM {}\nRUN echo interfaces: $(ls /sys/class/net)\n",
        services().base_image
    );
    request.settings = json!({"mode": "build-network"}).to_string();
    let mut seen = Vec::new();
    for grants in ["{ docker: true }", "{ docker: true, build_network: true }"] {
        let plugin = hostile_builder(dir.path(), grants).await;
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = {
            let (lines, warnings) = (lines.clone(), lines.clone());
            Arc::new(launch_agent::capabilities::log::JobLog::new(
                Box::new(move |l: &str| lines.lock().unwrap().push(l.to_string())),
                Box::new(move |l: &str| warnings.lock().unwrap().push(l.to_string())),
            ))
        };
        plugin
            .build(&request, &plan, None, None, Some(sink))
            .await
            .unwrap_or_else(|e| panic!("{grants}: {e}"));
        let said = lines.lock().unwrap().join("\n");
        let interfaces = said
            .lines()
            .find(|l| l.contains("interfaces: ") && !l.contains("RUN"))
            .unwrap_or_else(|| panic!("{grants}: no interfaces line in {said}"))
            .to_string();
        seen.push(interfaces);
        remove_images(&docker().await, std::slice::from_ref(&image)).await;
    }
    assert!(
        seen[0].contains("lo") && !seen[0].contains("eth"),
        "without the grant only loopback: {}",
        seen[0]
    );
    assert!(
        seen[1].contains("eth"),
        "with the grant the bridge: {}",
        seen[1]
    );
}
