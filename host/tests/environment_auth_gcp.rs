//! `auth: environment` with the GCP environment, at the capability level:
//! a request to a marked origin the environment accepts (its
//! `authorize-urls`; Google's hosts in real use) arrives with `Authorization:
//! Bearer <token>`, the token obtained with a service-account key from the
//! fake token endpoint; a marked origin that is not Google's is refused by
//! the environment and nothing is sent. The requester is the hostile test
//! plugin's `http` mode (a GET through `wasi:http`).

mod common;
use common::auth_routing::{load, recording_server};
use common::gcp::{TOKEN, fake, key_file, rsa_key};
use launch_agent::plugins::PluginHost;
use serde_json::json;

#[tokio::test]
async fn the_gcp_environment_adds_its_bearer_token_only_for_origins_it_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let pem = rsa_key(dir.path(), "trusted");
    let fake = fake(dir.path());
    let key = key_file(dir.path(), &fake, &pem);
    // Read by the GCP environment through its grants (one test in this binary).
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key) };
    let (accepted_port, accepted_heads) = recording_server();
    let (other_port, other_heads) = recording_server();
    let accepted = format!("http://127.0.0.1:{accepted_port}");
    let other = format!("http://127.0.0.1:{other_port}");
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let hostile = common::test_plugin("hostile");
    let marked = load(
        &mut host,
        "marked",
        &hostile,
        &format!("    grants: {{ environment_auth: [\"{accepted}\", \"{other}\"] }}\n"),
    )
    .await;
    let gcp = load(
        &mut host,
        "gcp",
        &common::bundle_dir().join("environment-gcp.wasm"),
        &format!(
            "    grants: {{ env: [GOOGLE_APPLICATION_CREDENTIALS], hosts: [\"{}\"], dirs: [\"{}\"] }}\n    config: {{ token-uri: \"{}/token\", authorize-urls: [\"{accepted}\"] }}\n",
            fake.url(),
            key.parent().unwrap().display(),
            fake.url()
        ),
    )
    .await;
    let settings = gcp.settings_for(Some(json!({"type": "gcp", "project": "p"})));
    host.lend_environment(&gcp, settings);
    let get = |url: String| {
        let plugin = marked.clone();
        async move {
            plugin
                .verify_environment(&json!({"mode": "http", "url": url}).to_string(), None)
                .await
        }
    };

    get(format!("{accepted}/v2/"))
        .await
        .expect("an accepted origin answers");
    let heads = accepted_heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].contains(&format!("authorization: bearer {}", TOKEN.to_lowercase())),
        "{}",
        heads[0]
    );

    let refused = get(format!("{other}/v2/")).await.unwrap_err().to_string();
    assert!(refused.contains("HttpRequestDenied"), "{refused}");
    assert!(other_heads.lock().unwrap().is_empty());
    assert!(!refused.contains(TOKEN), "{refused}");
    assert_eq!(fake.grants(), 1);
}
