//! `builder-kaniko` as the agent loads it (`$CARGO_TARGET_DIR/bundle/
//! builder-kaniko.wasm`, from `scripts/build-plugins.sh`; loaded here
//! without the bundle's default grants): its `plan` gives the image and Dockerfile the
//! bundled `builder-docker` gives for the same job, read from the job's
//! source through the sandbox, so a job built by either is skipped by the
//! other; its `build`, without grants, is refused its first step (the
//! context upload) naming the grant, and creates nothing. No service is
//! needed (`kaniko_builds.rs` builds on the fake cluster).

mod common;

use launch_agent::config::LaunchConfig;
use launch_agent::plugins::bindings::{Job, Stage};
use launch_agent::plugins::loaded::{BuildRequest, SOURCE_GUEST_DIR};
use launch_agent::plugins::{CallError, LoadedPlugin, PluginHost};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// Loads the plugin at `wasm` as `name`, with no grants.
async fn load(dir: &Path, name: &str, wasm: &Path) -> Arc<LoadedPlugin> {
    let yaml = format!("plugins:\n  {name}:\n    path: {}\n", wasm.display());
    let config = LaunchConfig::parse(&yaml, Path::new("t.yaml")).expect("config");
    let mut host = PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load(name, wasm, &config.plugins[name], &config.secrets)
        .await
        .unwrap_or_else(|e| panic!("load {name}: {e:#}"))
}

fn request(settings: serde_json::Value) -> BuildRequest {
    BuildRequest {
        job: Job {
            id: "kaniko-item-1".into(),
            queue: "q".into(),
            spec_json: json!({"overrides": {"entry_point": ["python", "src/train.py"]}, "run_id": "ab12cd34"})
                .to_string(),
        },
        settings: settings.to_string(),
        destination: "localhost:5000/launch".into(),
        // Where the host shows the job's source to the plugin.
        source_dir: Some(SOURCE_GUEST_DIR.to_string()),
        source_id: "entity/project/job:v3".into(),
    }
}

#[tokio::test]
async fn plans_as_builder_docker_and_build_without_grants_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("src")).unwrap();
    std::fs::write(source.join("src/train.py"), "print(1)\n").unwrap();
    std::fs::write(source.join("requirements.txt"), "numpy\n").unwrap();

    let kaniko = load(
        dir.path(),
        "kaniko",
        &common::bundle_dir().join("builder-kaniko.wasm"),
    )
    .await;
    let docker = load(
        dir.path(),
        "docker",
        &common::bundle_dir().join("builder-docker.wasm"),
    )
    .await;
    let kaniko_request = request(json!({
        "type": "kaniko",
        "build-context-store": "s3://my-bucket/contexts",
    }));
    let kaniko_plan = kaniko
        .plan(&kaniko_request, Some(&source), None)
        .await
        .expect("kaniko plan");
    let docker_plan = docker
        .plan(&request(json!({"type": "docker"})), Some(&source), None)
        .await
        .expect("docker plan");
    assert_eq!(kaniko_plan.image_uri, docker_plan.image_uri);
    assert_eq!(kaniko_plan.dockerfile, docker_plan.dockerfile);
    assert_eq!(kaniko_plan.dockerfile_origin, docker_plan.dockerfile_origin);
    assert!(
        kaniko_plan.image_uri.starts_with("localhost:5000/launch:"),
        "{}",
        kaniko_plan.image_uri
    );

    // A bad setting fails the plan, naming the key.
    let result = kaniko
        .plan(
            &request(json!({"type": "kaniko", "build-context-store": "ftp://x/y"})),
            Some(&source),
            None,
        )
        .await;
    let Err(CallError::Plugin { error, .. }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(error.stage, Stage::Build);
    assert!(
        error.message.contains("`builder.build-context-store`"),
        "{}",
        error.message
    );

    // Without `grants.blob.stores`, nothing leaves the machine.
    let result = kaniko
        .build(&kaniko_request, &kaniko_plan, None, Some(&source), None)
        .await;
    let Err(CallError::Plugin { error, .. }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(error.stage, Stage::Build);
    assert!(
        error
            .message
            .starts_with("uploading the build context to s3://my-bucket/contexts/ab12cd34.tgz: ")
            && error.message.contains("grants.blob.stores"),
        "{}",
        error.message
    );
    assert!(!error.retryable);
}
