//! Issue 10, class 5: what one plugin call can make the host hold, beyond
//! secret handles: outgoing `wasi:http` requests in flight (the hostile
//! environment plugin's `http-flood`), and Docker builds and tags (the
//! hostile builder's `build-flood`), each capped per call.

mod common;

use common::docker::{docker, remove_images, services};
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Loads test plugin `file` as `plugins.<name>` with `grants_yaml`.
async fn load(file: &str, name: &str, state: &Path, grants_yaml: &str) -> Arc<LoadedPlugin> {
    let path = common::test_plugin(file);
    let yaml = format!(
        "plugins:\n  {name}:\n    path: {}\n    grants: {grants_yaml}\n",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    let mut host = PluginHost::new(&state.join("cache"), 256).expect("runtime");
    host.load(name, &path, &config.plugins[name], &config.secrets)
        .await
        .unwrap_or_else(|e| panic!("load {file}: {e}"))
}

/// A loopback server that answers each request after `delay`; counts the
/// connections it got.
async fn slow_server(delay: std::time::Duration) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, hits)
}

#[tokio::test]
async fn a_call_has_at_most_64_http_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hits) = slow_server(std::time::Duration::from_millis(1500)).await;
    let plugin = load(
        "hostile",
        "hostile",
        dir.path(),
        &format!("{{ hosts: [\"http://127.0.0.1:{port}\"] }}"),
    )
    .await;
    let settings =
        json!({"mode": "http-flood", "url": format!("http://127.0.0.1:{port}/"), "count": 200});
    let said = plugin
        .verify_environment(&settings.to_string(), None)
        .await
        .expect_err("http-flood reports by failing")
        .to_string();
    assert!(
        said.contains("http-flood: 64 answered, 136 denied, 0 failed"),
        "{said}"
    );
    assert!(
        hits.load(Ordering::SeqCst) <= 64,
        "{}",
        hits.load(Ordering::SeqCst)
    );

    // The cap is on requests in flight, not on requests: the next call
    // (and a call whose requests are done) may send again.
    let settings =
        json!({"mode": "http-flood", "url": format!("http://127.0.0.1:{port}/"), "count": 10});
    let said = plugin
        .verify_environment(&settings.to_string(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(said.contains("http-flood: 10 answered, 0 denied"), "{said}");
}

/// A repository in the test registry no other test (or run) uses.
fn unique_repo(test: &str) -> String {
    format!(
        "{}/launch-agent-test/{test}-{}",
        services().registry,
        uuid::Uuid::new_v4().simple()
    )
}

/// Has the hostile builder run `build-flood` with `count` builds of
/// `tags` extra tags each: its report.
async fn build_flood(plugin: &LoadedPlugin, image: &str, count: u64, tags: u64) -> String {
    use launch_agent::plugins::bindings::Job;
    let request = launch_agent::plugins::loaded::BuildRequest {
        job: Job {
            id: "caps".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: json!({"mode": "build-flood", "count": count, "tags": tags}).to_string(),
        destination: String::new(),
        source_dir: None,
        source_id: "caps".into(),
    };
    let plan = launch_agent::plugins::loaded::BuildPlan {
        image_uri: image.into(),
        dockerfile: format!("FROM {}\nLABEL flood=yes\n", services().base_image),
        dockerfile_origin: "test".into(),
    };
    plugin
        .build(&request, &plan, None, None, None)
        .await
        .expect_err("build-flood reports by failing")
        .to_string()
}

#[tokio::test]
async fn a_call_runs_at_most_8_builds_of_at_most_16_tags() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = load(
        "hostile-builder",
        "hostile-builder",
        dir.path(),
        "{ docker: true }",
    )
    .await;
    let repo = unique_repo("build-flood");
    let image = format!("{repo}:v1");

    let said = build_flood(&plugin, &image, 1, 20).await;
    assert!(
        said.contains("build-flood: 0 built, then:") && said.contains("21 tags: at most 16"),
        "{said}"
    );
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "nothing was built"
    );

    let said = build_flood(&plugin, &image, 12, 2).await;
    assert!(
        said.contains("build-flood: 8 built, then:") && said.contains("docker build cap reached"),
        "{said}"
    );
    remove_images(
        &docker,
        &[
            image.clone(),
            format!("{repo}:flood-0"),
            format!("{repo}:flood-1"),
        ],
    )
    .await;
}
