//! `auth: environment` with the GCP environment, at the capability level:
//! a request to a marked origin the environment accepts (its
//! `authorize-urls`; Google's hosts in real use) arrives with `Authorization:
//! Bearer <token>`, the token obtained with a service-account key from the
//! fake token endpoint; a marked origin that is not Google's is refused by
//! the environment and nothing is sent. The requester is the hostile test
//! plugin's `http` mode (a GET through `wasi:http`).

mod common;
use common::gcp::{TOKEN, fake, key_file, rsa_key};
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A server on 127.0.0.1 answering 200 to everything and keeping each
/// request's head (lowercased).
fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = vec![0u8; 16384];
            let n = stream.read(&mut buf).unwrap_or(0);
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, heads)
}

async fn load(
    host: &mut PluginHost,
    name: &str,
    path: &Path,
    entry_yaml: &str,
) -> Arc<LoadedPlugin> {
    let yaml = format!(
        "plugins:\n  {name}:\n    path: {}\n{entry_yaml}",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    host.load(name, path, &config.plugins[name], &config.secrets)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

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
