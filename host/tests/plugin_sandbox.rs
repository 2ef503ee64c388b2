//! Hostile plugins against the sandbox: deadlines, memory caps, and every
//! kind of grant, each shown refused without the grant and allowed with it.

mod common;
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{CallError, LoadedPlugin, PluginHost};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// Loads the hostile plugin with the `plugins.hostile` entry written in
/// `entry_yaml` (indented under it) and the config's `secrets`.
async fn hostile(state: &Path, extra_yaml: &str) -> Arc<LoadedPlugin> {
    hostile_build("hostile", state, extra_yaml).await
}

/// The same plugin built lean (for `wasm32-unknown-unknown`: no WASI).
async fn hostile_lean(state: &Path, extra_yaml: &str) -> Arc<LoadedPlugin> {
    let plugin = hostile_build("hostile-lean", state, extra_yaml).await;
    assert!(
        !plugin.description().uses_wasi,
        "{:?}",
        plugin.description().imports
    );
    plugin
}

/// Loads test plugin `file` as `plugins.hostile`.
async fn hostile_build(file: &str, state: &Path, extra_yaml: &str) -> Arc<LoadedPlugin> {
    let yaml = format!(
        "plugins:\n  hostile:\n    path: {}\n{extra_yaml}",
        common::test_plugin(file).display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    let mut host = PluginHost::new(&state.join("cache"), 256).expect("runtime");
    host.load(
        "hostile",
        &common::test_plugin(file),
        &config.plugins["hostile"],
        &config.secrets,
    )
    .await
    .expect("load hostile plugin")
}

async fn verify(plugin: &LoadedPlugin, settings: serde_json::Value) -> Result<(), CallError> {
    plugin.verify_environment(&settings.to_string(), None).await
}

fn message(result: Result<(), CallError>) -> String {
    match result {
        Ok(()) => panic!("the call succeeded but should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(dir.path(), "    limits: { deadline_ms: 300 }\n").await;
    // Ended by the deadline (not the wall-clock timeout, which would be a
    // `Timeout`): the error says which, so no clock is read here.
    let result = verify(&plugin, json!({"mode": "spin"})).await;
    assert!(
        matches!(
            result,
            Err(CallError::Deadline {
                deadline_ms: 300,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(
        message(result).contains("hostile 0.1.0"),
        "the error names the plugin and version"
    );
    // The plugin (and the runtime) still serve the next call.
    verify(&plugin, json!({"mode": "ok"}))
        .await
        .expect("next call works");
}

/// The memory bomb of `plugin` (capped at 32 MiB) hits the cap, and the
/// next call works.
async fn assert_memory_bomb_capped(plugin: &LoadedPlugin) {
    let result = verify(plugin, json!({"mode": "alloc"})).await;
    assert!(
        matches!(result, Err(CallError::MemoryCap { memory_mb: 32, .. })),
        "{result:?}"
    );
    verify(plugin, json!({"mode": "ok"}))
        .await
        .expect("next call works");
}

/// A panic of `plugin` fails the call as a trap naming the plugin, its
/// version and the panic's message.
async fn assert_panic_reported(plugin: &LoadedPlugin) {
    let result = verify(plugin, json!({"mode": "panic"})).await;
    assert!(matches!(result, Err(CallError::Trap { .. })), "{result:?}");
    let message = message(result);
    assert!(message.contains("hostile 0.1.0"), "{message}");
    assert!(
        message.contains("hostile plugin panicked on purpose"),
        "the panic message is shown: {message}"
    );
}

#[tokio::test]
async fn a_memory_bomb_hits_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(dir.path(), "    limits: { memory_mb: 32 }\n").await;
    assert_memory_bomb_capped(&plugin).await;
}

#[tokio::test]
async fn a_panic_is_the_plugins_failure_named_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    // The message comes from the plugin's stderr.
    let plugin = hostile(dir.path(), "").await;
    assert_panic_reported(&plugin).await;
}

#[tokio::test]
async fn a_lean_plugin_is_held_to_its_deadline_and_its_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile_lean(
        dir.path(),
        "    limits: { deadline_ms: 300, memory_mb: 32 }\n",
    )
    .await;
    let result = verify(&plugin, json!({"mode": "spin"})).await;
    assert!(
        matches!(result, Err(CallError::Deadline { .. })),
        "{result:?}"
    );
    assert_memory_bomb_capped(&plugin).await;
}

#[tokio::test]
async fn a_lean_plugins_panic_message_is_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // A lean plugin has no stderr: the message is left in its memory.
    let plugin = hostile_lean(dir.path(), "").await;
    assert_panic_reported(&plugin).await;
}

/// Endless recursion in `plugin` is a trap (the engine's stack limit), not
/// a crash of the host, and the next call works.
async fn assert_recursion_trapped(plugin: &LoadedPlugin) {
    let result = verify(plugin, json!({"mode": "recurse"})).await;
    assert!(matches!(result, Err(CallError::Trap { .. })), "{result:?}");
    let message = message(result);
    assert!(message.contains("hostile 0.1.0"), "{message}");
    assert!(message.contains("stack"), "{message}");
    verify(plugin, json!({"mode": "ok"}))
        .await
        .expect("next call works");
}

#[tokio::test]
async fn endless_recursion_is_a_trap_in_either_build() {
    let dir = tempfile::tempdir().unwrap();
    // The WASI build runs on a fiber's stack; the lean one, called without
    // a fiber, on the calling thread's.
    let wasi = hostile(dir.path(), "").await;
    assert_recursion_trapped(&wasi).await;
    let lean = hostile_lean(dir.path(), "").await;
    assert_recursion_trapped(&lean).await;
}

#[tokio::test]
async fn a_lean_plugin_reaches_no_file_or_variable_even_when_granted() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("data.txt"), "hello").unwrap();
    // SAFETY: tests in this file set no other variable.
    unsafe { std::env::set_var("LEAN_TEST_VISIBLE", "1") };
    let plugin = hostile_lean(
        dir.path(),
        &format!(
            "    grants:\n      dirs: [\"{}\"]\n      env: [LEAN_TEST_VISIBLE]\n",
            granted.display()
        ),
    )
    .await;
    let result = verify(
        &plugin,
        json!({"mode": "read-file", "path": granted.join("data.txt")}),
    )
    .await;
    assert!(message(result).contains("read-file"));
    let result = verify(&plugin, json!({"mode": "env", "name": "LEAN_TEST_VISIBLE"})).await;
    assert!(message(result).contains("not visible"));
}

#[tokio::test]
async fn files_outside_the_grant_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let granted = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("data.txt"), "granted").unwrap();
    std::fs::write(secret_dir.path().join("private.txt"), "private").unwrap();
    let inside = granted.path().join("data.txt").display().to_string();
    let outside = secret_dir.path().join("private.txt").display().to_string();

    // No grant: nothing is visible.
    let plugin = hostile(dir.path(), "").await;
    assert!(
        message(verify(&plugin, json!({"mode": "read-file", "path": inside})).await)
            .contains("read-file")
    );
    assert!(
        message(verify(&plugin, json!({"mode": "read-file", "path": "/etc/passwd"})).await)
            .contains("read-file")
    );

    // A read-only grant: that directory only, and no writing.
    let plugin = hostile(
        dir.path(),
        &format!("    grants:\n      dirs: [{}]\n", granted.path().display()),
    )
    .await;
    verify(&plugin, json!({"mode": "read-file", "path": inside}))
        .await
        .expect("granted dir is readable");
    assert!(
        message(verify(&plugin, json!({"mode": "read-file", "path": outside})).await)
            .contains("read-file")
    );
    assert!(message(verify(&plugin, json!({"mode": "read-file", "path": format!("{}/../{}", granted.path().display(), outside)})).await).contains("read-file"));
    let new_file = granted.path().join("new.txt").display().to_string();
    assert!(
        message(verify(&plugin, json!({"mode": "write-file", "path": new_file})).await)
            .contains("write-file")
    );
    assert!(!granted.path().join("new.txt").exists());

    // A writable grant.
    let plugin = hostile(
        dir.path(),
        &format!(
            "    grants:\n      dirs: [{{ path: {}, write: true }}]\n",
            granted.path().display()
        ),
    )
    .await;
    verify(&plugin, json!({"mode": "write-file", "path": new_file}))
        .await
        .expect("writable grant");
    assert!(granted.path().join("new.txt").exists());
}

#[tokio::test]
async fn env_vars_are_invisible_unless_granted() {
    // SAFETY: set once, before any thread of this test reads the environment.
    unsafe { std::env::set_var("HOSTILE_TEST_VISIBLE", "yes") };
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(dir.path(), "").await;
    assert!(
        message(
            verify(
                &plugin,
                json!({"mode": "env", "name": "HOSTILE_TEST_VISIBLE"})
            )
            .await
        )
        .contains("not visible")
    );
    assert!(
        message(verify(&plugin, json!({"mode": "env", "name": "PATH"})).await)
            .contains("not visible")
    );
    let plugin = hostile(
        dir.path(),
        "    grants:\n      env: [HOSTILE_TEST_VISIBLE]\n",
    )
    .await;
    verify(
        &plugin,
        json!({"mode": "env", "name": "HOSTILE_TEST_VISIBLE"}),
    )
    .await
    .expect("granted env var");
    assert!(
        message(verify(&plugin, json!({"mode": "env", "name": "PATH"})).await)
            .contains("not visible")
    );
}

#[tokio::test]
async fn secrets_open_only_when_granted_and_never_leak_into_errors() {
    let value = "s3cr3t-value-4b1d";
    // SAFETY: set once, before any thread of this test reads the environment.
    unsafe { std::env::set_var("HOSTILE_TEST_SECRET", value) };
    let dir = tempfile::tempdir().unwrap();
    let secrets = "secrets:\n  token: { env: HOSTILE_TEST_SECRET }\n";
    let plugin = hostile(dir.path(), secrets).await;
    let refused = message(
        verify(
            &plugin,
            json!({"mode": "secret", "name": "token", "expect": value}),
        )
        .await,
    );
    assert!(refused.contains("not granted"), "{refused}");
    assert!(!refused.contains(value));

    let plugin = hostile(
        dir.path(),
        &format!("    grants:\n      secrets: [token]\n{secrets}"),
    )
    .await;
    verify(
        &plugin,
        json!({"mode": "secret", "name": "token", "expect": value}),
    )
    .await
    .expect("granted secret");
    let wrong = message(
        verify(
            &plugin,
            json!({"mode": "secret", "name": "token", "expect": "other"}),
        )
        .await,
    );
    assert!(
        !wrong.contains(value),
        "a secret must never appear in an error: {wrong}"
    );
}

#[tokio::test]
async fn a_secret_the_plugin_says_is_scrubbed_from_its_log_errors_and_panics() {
    let value = "l3aked-s3cret-77e1";
    // SAFETY: set once, before any thread of this test reads the environment.
    unsafe { std::env::set_var("HOSTILE_LEAK_SECRET", value) };
    let dir = tempfile::tempdir().unwrap();
    let entry =
        "    grants:\n      secrets: [token]\nsecrets:\n  token: { env: HOSTILE_LEAK_SECRET }\n";
    for plugin in [
        hostile(dir.path(), entry).await,
        hostile_lean(dir.path(), entry).await,
    ] {
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = {
            let (lines, warnings) = (lines.clone(), lines.clone());
            Arc::new(launch_agent::capabilities::log::JobLog::new(
                Box::new(move |l: &str| lines.lock().unwrap().push(l.to_string())),
                Box::new(move |l: &str| warnings.lock().unwrap().push(l.to_string())),
            ))
        };
        let leak = |via: &str| json!({"mode": "leak", "name": "token", "via": via}).to_string();
        plugin
            .verify_environment(&leak("log"), Some(sink))
            .await
            .expect("the log route succeeds");
        let lines = lines.lock().unwrap().clone();
        assert!(
            lines.iter().any(|l| l.contains("the secret is <redacted>")),
            "{lines:?}"
        );
        for via in ["error", "panic"] {
            let said = message(plugin.verify_environment(&leak(via), None).await);
            assert!(said.contains("the secret is <redacted>"), "{via}: {said}");
            assert!(!said.contains(value), "{via}: {said}");
        }
        assert!(!lines.iter().any(|l| l.contains(value)), "{lines:?}");
    }
}

/// A one-request-at-a-time HTTP server on 127.0.0.1 answering 200.
fn http_server() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        // Serve a bounded number of connections, then stop.
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            common::http_fake::read_request(&mut stream);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, handle)
}

#[tokio::test]
async fn http_to_a_host_not_granted_is_refused() {
    let (port, _server) = http_server();
    let url = format!("http://127.0.0.1:{port}/ping");
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(dir.path(), "").await;
    let refused = message(verify(&plugin, json!({"mode": "http", "url": url})).await);
    assert!(refused.contains("HttpRequestDenied"), "{refused}");

    let plugin = hostile(
        dir.path(),
        "    grants:\n      hosts: [\"http://localhost:1\"]\n",
    )
    .await;
    let refused = message(verify(&plugin, json!({"mode": "http", "url": url})).await);
    assert!(
        refused.contains("HttpRequestDenied"),
        "another host's grant does not count: {refused}"
    );

    let plugin = hostile(
        dir.path(),
        &format!("    grants:\n      hosts: [\"http://127.0.0.1:{port}\"]\n"),
    )
    .await;
    verify(&plugin, json!({"mode": "http", "url": url}))
        .await
        .expect("granted host answers");
}

#[tokio::test]
async fn raw_sockets_are_always_refused() {
    let (port, _server) = http_server();
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(
        dir.path(),
        &format!("    grants:\n      hosts: [\"http://127.0.0.1:{port}\"]\n"),
    )
    .await;
    let refused = message(
        verify(
            &plugin,
            json!({"mode": "tcp", "addr": format!("127.0.0.1:{port}")}),
        )
        .await,
    );
    assert!(refused.contains("tcp"), "{refused}");
}

#[tokio::test]
async fn a_grant_that_does_not_compile_stops_the_load_naming_plugin_and_grant() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "secrets:\n  token: {{ env: X }}\nplugins:\n  hostile:\n    path: {}\n    grants:\n      secrets: [token]\n",
        common::test_plugin("hostile").display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    // The entry names a secret the map handed to the load does not define.
    let error = host
        .load(
            "hostile",
            &common::test_plugin("hostile"),
            &config.plugins["hostile"],
            &Default::default(),
        )
        .await
        .err()
        .expect("the load fails")
        .to_string();
    assert!(
        error.contains("plugin `hostile`")
            && error.contains("grants.secrets")
            && error.contains("\"token\""),
        "{error}"
    );
}

#[tokio::test]
async fn a_plugin_built_for_another_contract_version_is_rejected_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    let err = host
        .load(
            "future",
            &common::test_plugin("future-wit"),
            &Default::default(),
            &Default::default(),
        )
        .await
        .err()
        .expect("rejected");
    let text = err.to_string();
    assert!(text.contains("launch:plugin@0.3.0"), "{text}");
    assert!(text.contains("launch:plugin@0.2.0"), "{text}");
    assert!(text.contains("future"), "{text}");
}

#[tokio::test]
async fn a_pinned_digest_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "plugins:\n  hostile:\n    path: {}\n    sha256: \"{}\"\n",
        common::test_plugin("hostile").display(),
        "0".repeat(64)
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    let err = host
        .load(
            "hostile",
            &common::test_plugin("hostile"),
            &config.plugins["hostile"],
            &config.secrets,
        )
        .await
        .err()
        .expect("digest mismatch refused");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
}

#[tokio::test]
async fn garbage_and_tampered_cache_entries_are_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    let err = host
        .load(
            "garbage",
            &garbage,
            &Default::default(),
            &Default::default(),
        )
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("not a valid WebAssembly component"),
        "{err}"
    );

    // Warm the cache, then tamper with every entry: the next load must
    // recompile rather than run the tampered bytes.
    let plugin = common::test_plugin("hostile");
    host.load("hostile", &plugin, &Default::default(), &Default::default())
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let mut tampered = 0;
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(entry.path(), bytes).unwrap();
            tampered += 1;
        }
    }
    assert!(tampered > 0, "the cache holds compiled plugins");
    let mut host = PluginHost::new(&cache, 128).unwrap();
    let loaded = host
        .load("hostile", &plugin, &Default::default(), &Default::default())
        .await
        .unwrap();
    verify(&loaded, json!({"mode": "ok"}))
        .await
        .expect("recompiled plugin works");
}

#[tokio::test]
async fn a_builder_cannot_read_the_registry_password_it_is_handed() {
    use launch_agent::capabilities::secrets::{CredentialScope, SecretHandle};
    use launch_agent::plugins::bindings::Job;
    use launch_agent::plugins::loaded::{BuildRequest, RegistryCredentials};
    let dir = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    let plugin = host
        .load(
            "hostile-builder",
            &common::test_plugin("hostile-builder"),
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    let request = BuildRequest {
        job: Job {
            id: "j1".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: "{}".into(),
        destination: "registry.example/team/launch".into(),
        source_dir: None,
        source_id: "image".into(),
    };
    let plan = plugin.plan(&request, None, None).await.unwrap();
    let password = "registry-Pa55-never-seen";
    let credentials = RegistryCredentials {
        username: "launch".into(),
        password: SecretHandle::opaque(
            "registry-password",
            password,
            CredentialScope::parse("registry.example/team/launch").unwrap(),
        ),
    };
    let refused = plugin
        .build(&request, &plan, Some(&credentials), None, None)
        .await
        .expect_err("the hostile builder reports what happened");
    let text = refused.to_string();
    assert!(
        text.contains("reveal refused") && text.contains("Opaque"),
        "{text}"
    );
    assert!(
        !text.contains(password),
        "the builder read the password: {text}"
    );
}

/// A registry that answers every request with 404 after `delay`: a slow
/// registry with no images. Serves until the test ends.
fn slow_registry(delay: std::time::Duration) -> u16 {
    slow_server(
        delay,
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
}

/// An HTTP server that answers every request with `response` after
/// `delay`. Serves until the test ends.
fn slow_server(delay: std::time::Duration, response: &'static [u8]) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                common::http_fake::read_request(&mut stream);
                std::thread::sleep(delay);
                let _ = stream.write_all(response);
            });
        }
    });
    port
}

/// The bundled registry-oci plugin with `limits_yaml`, granted the
/// registry at `port`.
async fn oci_plugin(state: &Path, port: u16, limits_yaml: &str) -> Arc<LoadedPlugin> {
    let path = common::bundle_dir().join("registry-oci.wasm");
    let yaml = format!(
        "plugins:\n  oci:\n    path: {}\n    grants: {{ hosts: [\"http://127.0.0.1:{port}\"] }}\n    limits: {limits_yaml}\n",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    let mut host = PluginHost::new(&state.join("cache"), 256).expect("runtime");
    host.load("oci", &path, &config.plugins["oci"], &config.secrets)
        .await
        .expect("load registry-oci")
}

#[tokio::test]
async fn waiting_on_the_host_does_not_count_against_the_deadline_but_against_the_timeout() {
    let port = slow_registry(std::time::Duration::from_millis(700));
    let settings = json!({"type": "oci", "uri": format!("127.0.0.1:{port}/team/app")}).to_string();
    let image = format!("127.0.0.1:{port}/team/app:v1");
    let dir = tempfile::tempdir().unwrap();

    // The lookup waits on the registry for longer than the plugin's 200 ms
    // deadline; only the plugin's own running time counts against it.
    let plugin = oci_plugin(dir.path(), port, "{ deadline_ms: 200 }").await;
    let exists = plugin
        .image_exists(&settings, &image, None)
        .await
        .expect("a slow registry is no deadline failure");
    assert!(!exists);

    // The timeout counts every moment of the call.
    let plugin = oci_plugin(dir.path(), port, "{ deadline_ms: 200, timeout_ms: 400 }").await;
    let result = plugin.image_exists(&settings, &image, None).await;
    assert!(
        matches!(
            result,
            Err(CallError::Timeout {
                timeout_ms: 400,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(result.unwrap_err().to_string().contains("400 ms timeout"));
}

#[tokio::test]
async fn a_wasi_http_wait_does_not_count_against_the_deadline() {
    let port = slow_server(
        std::time::Duration::from_millis(700),
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    );
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(
        dir.path(),
        &format!(
            "    grants: {{ hosts: [\"http://127.0.0.1:{port}\"] }}\n    limits: {{ deadline_ms: 200 }}\n"
        ),
    )
    .await;
    verify(
        &plugin,
        json!({"mode": "http", "url": format!("http://127.0.0.1:{port}/slow")}),
    )
    .await
    .expect("the plugin blocked in wasi:io/poll for 700 ms, which is the host's time");
}

/// A job log that counts what reaches it: lines, bytes, warnings.
#[derive(Default)]
struct Counted {
    lines: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    warnings: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<String>,
}

impl Counted {
    fn sink(self: &Arc<Self>) -> launch_agent::capabilities::log::LogSink {
        use std::sync::atomic::Ordering::Relaxed;
        let (lines, warnings) = (self.clone(), self.clone());
        Arc::new(launch_agent::capabilities::log::JobLog::new(
            Box::new(move |l: &str| {
                lines.lines.fetch_add(1, Relaxed);
                lines.bytes.fetch_add(l.len() as u64, Relaxed);
                *lines.last.lock().unwrap() = l.to_string();
            }),
            Box::new(move |_: &str| {
                warnings.warnings.fetch_add(1, Relaxed);
            }),
        ))
    }

    fn get(&self, what: &std::sync::atomic::AtomicU64) -> u64 {
        what.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test]
async fn a_log_flood_is_capped_and_its_time_counts_against_the_deadline() {
    use launch_agent::capabilities::call_caps::{MAX_LOG_BYTES, MAX_LOG_LINES, MAX_WARNINGS};
    let dir = tempfile::tempdir().unwrap();
    for (file, level, bytes) in [
        ("hostile", "info", 100),
        ("hostile-lean", "info", 100),
        ("hostile", "warn", 100),
        ("hostile", "error", 60_000),
    ] {
        let plugin = hostile_build(
            file,
            dir.path(),
            "    limits: { deadline_ms: 1000, timeout_ms: 20000 }\n",
        )
        .await;
        let counted = Arc::new(Counted::default());
        let orders = json!({"mode": "log-flood", "level": level, "bytes": bytes});
        let result = plugin
            .verify_environment(&orders.to_string(), Some(counted.sink()))
            .await;
        let case = format!("{file} {level} {bytes}");
        assert!(
            matches!(result, Err(CallError::Deadline { .. })),
            "{case}: logging is the plugin's own time, so the deadline stops it (a hang would end at the 20 s timeout, as `Timeout`): {result:?}"
        );
        let lines = counted.get(&counted.lines);
        assert!(lines <= MAX_LOG_LINES + 2, "{case}: {lines} lines");
        let written = counted.get(&counted.bytes);
        assert!(
            written <= MAX_LOG_BYTES + 64 * 1024,
            "{case}: {written} bytes"
        );
        let last = counted.last.lock().unwrap().clone();
        assert!(last.contains("log cap reached"), "{case}: {last}");
        assert!(counted.get(&counted.warnings) <= MAX_WARNINGS, "{case}");
    }
}

#[tokio::test]
async fn a_mint_flood_stops_at_the_cap_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (file, bytes) in [("hostile", 16), ("hostile-lean", 16), ("hostile", 60_000)] {
        let plugin = hostile_build(
            file,
            dir.path(),
            "    limits: { deadline_ms: 5000, timeout_ms: 20000 }\n",
        )
        .await;
        let result = verify(&plugin, json!({"mode": "mint-flood", "bytes": bytes})).await;
        let case = format!("{file} {bytes}");
        // Stopped by the mint cap, a trap: not by the 5 s deadline
        // (`Deadline`) nor, had it hung, by the 20 s timeout (`Timeout`).
        assert!(
            matches!(result, Err(CallError::Trap { .. })),
            "{case}: {result:?}"
        );
        let text = message(result);
        assert!(text.contains("minted more than"), "{case}: {text}");
        verify(&plugin, json!({"mode": "ok"}))
            .await
            .expect("next call works");
    }
}

#[tokio::test]
async fn a_huge_error_is_cut_saying_so() {
    use launch_agent::capabilities::call_caps::MAX_ERROR;
    let dir = tempfile::tempdir().unwrap();
    for file in ["hostile", "hostile-lean"] {
        let plugin = hostile_build(file, dir.path(), "").await;
        let result = verify(&plugin, json!({"mode": "huge-error", "bytes": 8 << 20})).await;
        let Err(CallError::Plugin { error, .. }) = result else {
            panic!("{file}: {result:?}");
        };
        assert!(
            error.message.len() <= MAX_ERROR + 64,
            "{file}: {}",
            error.message.len()
        );
        assert!(error.message.starts_with("huge error eee"), "{file}");
        assert!(error.message.contains("[cut: "), "{file}");
        // A short error is untouched.
        let short = message(verify(&plugin, json!({"mode": "fail"})).await);
        assert!(
            short.ends_with("hostile plugin failed on purpose"),
            "{short}"
        );
    }
}

#[tokio::test]
async fn a_url_with_userinfo_is_refused_even_to_a_granted_host() {
    let (port, _server) = http_server();
    let dir = tempfile::tempdir().unwrap();
    let plugin = hostile(
        dir.path(),
        &format!("    grants:\n      hosts: [\"http://127.0.0.1:{port}\"]\n"),
    )
    .await;
    for url in [
        format!("http://x@127.0.0.1:{port}/ping"),
        format!("http://user:pw@127.0.0.1:{port}/ping"),
        format!("http://127.0.0.1:{port}@127.0.0.1:{port}/ping"),
    ] {
        let refused = message(verify(&plugin, json!({"mode": "http", "url": url})).await);
        assert!(refused.contains("HttpRequestDenied"), "{url}: {refused}");
    }
    verify(
        &plugin,
        json!({"mode": "http", "url": format!("http://127.0.0.1:{port}/ping")}),
    )
    .await
    .expect("the same host without userinfo answers");
}
