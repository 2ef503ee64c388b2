//! The grant `auth: environment` (`grants.environment_auth`) at the
//! capability level, with a server that records what arrives: only a
//! request to a marked host is authorized by the environment (here
//! `environment-aws`, SigV4), a host granted plainly gets no credential,
//! and without an environment that lends credentials a marked request is
//! not sent at all. The requester is the hostile test plugin's `http` mode
//! (a GET through `wasi:http`).

mod common;
use common::auth_routing::{load, recording_server};
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn only_marked_hosts_get_the_environments_authorization() {
    // The AWS environment reads these through its grants (one test in this
    // binary, set before any plugin runs).
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAENVAUTHTEST00000");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-auth-test-secret-value");
    }
    let (port, heads) = recording_server();
    let origin = format!("http://127.0.0.1:{port}");
    let url = format!("{origin}/v2/");
    let dir = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let hostile = common::test_plugin("hostile");
    let plain = load(
        &mut host,
        "plain",
        &hostile,
        &format!("    grants: {{ hosts: [\"{origin}\"] }}\n"),
    )
    .await;
    let marked = load(
        &mut host,
        "marked",
        &hostile,
        &format!("    grants: {{ environment_auth: [\"{origin}\"] }}\n"),
    )
    .await;
    let get = |plugin: Arc<LoadedPlugin>| {
        let url = url.clone();
        async move {
            plugin
                .verify_environment(&json!({"mode": "http", "url": url}).to_string(), None)
                .await
        }
    };

    // No environment lends credentials yet: the marked request is not sent.
    let refused = get(marked.clone()).await.unwrap_err().to_string();
    assert!(refused.contains("HttpRequestDenied"), "{refused}");
    assert!(heads.lock().unwrap().is_empty());

    // The AWS environment lends them, for its endpoint (this server).
    let aws = load(
        &mut host,
        "aws",
        &common::bundle_dir().join("environment-aws.wasm"),
        &format!(
            "    grants: {{ env: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY] }}\n    config: {{ endpoint-url: \"{origin}\" }}\n"
        ),
    )
    .await;
    // As start-up does: the `environment:` block with the entry's `config:`.
    let settings = aws.settings_for(Some(json!({"type": "aws", "region": "us-east-1"})));
    host.lend_environment(&aws, settings);

    get(plain).await.expect("a plainly granted host answers");
    get(marked).await.expect("a marked host answers");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(!heads[0].contains("authorization:"), "plain: {}", heads[0]);
    assert!(
        heads[1].contains("authorization: aws4-hmac-sha256 credential=akiaenvauthtest00000/")
            && heads[1].contains("/us-east-1/sts/aws4_request")
            && heads[1].contains("x-amz-date:"),
        "marked: {}",
        heads[1]
    );
    assert!(!heads[1].contains("env-auth-test-secret-value"));
}
