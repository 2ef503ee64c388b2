//! `launch-agent plugins call NAME EXPORT`: one export of a plugin, with
//! its answer or error and every host call it made (issue 15, item 3),
//! against the test registry of `scripts/services.sh` (basic auth, plain
//! HTTP on 127.0.0.1).

mod common;
use common::Scratch;
use common::docker::{push_base_image, services};
use std::process::Output;

/// A config whose registry is the test registry's `repo`, with the
/// bundled `oci` plugin logged in (the password from the environment).
fn registry_config(agent: &Scratch, repo: &str) -> std::path::PathBuf {
    let s = services();
    agent.write_config(&format!(
        "registry:\n  type: oci\n  uri: {}/{repo}\n\
         secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  oci:\n    config: {{ username: {}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n",
        s.registry, s.registry_user
    ))
}

/// Runs `plugins call` with `args` and the registry's password in the
/// environment; its output, stdout as text.
fn call(agent: &Scratch, args: &[&str]) -> (Output, String) {
    let out = agent
        .cmd()
        .args(["plugins", "call"])
        .args(args)
        .env("TEST_REGISTRY_PASSWORD", &services().registry_password)
        .output()
        .expect("run launch-agent");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[tokio::test]
async fn image_exists_prints_the_answer_and_the_hosts_asked() {
    let image = push_base_image("plugins-call", "v1").await;
    let registry = &services().registry;
    let agent = Scratch::new();
    let config = registry_config(&agent, "plugins-call");
    let config = config.to_str().unwrap();

    let (out, stdout) = call(
        &agent,
        &["oci", "image-exists", "--arg", &image, "-c", config],
    );
    common::assert_success(&out);
    assert!(
        stdout.starts_with(&format!("oci image-exists: {image} exists\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("opened secret \"registry-password\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "asked registry http://{registry} whether {image} exists: it exists"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&services().registry_password), "{stdout}");

    let absent = format!("{registry}/plugins-call:absent");
    let (out, stdout) = call(
        &agent,
        &["oci", "image-exists", "--arg", &absent, "-c", config],
    );
    common::assert_success(&out);
    assert!(
        stdout.contains(&format!("{absent} does not exist")),
        "{stdout}"
    );
    assert!(stdout.contains("it does not exist"), "{stdout}");
}

#[tokio::test]
async fn without_the_host_grant_the_refusal_is_printed_with_the_grant_to_add() {
    let image = push_base_image("plugins-call", "v1").await;
    let registry = &services().registry;
    let agent = Scratch::new();
    // No `registry:` block: the bundled plugin gets no host by default,
    // and its settings come from the flag.
    let config =
        agent.write_config("secrets:\n  registry-password: { env: TEST_REGISTRY_PASSWORD }\n");
    let settings = format!(
        r#"{{"type":"oci","uri":"{registry}/plugins-call","username":"{}","password-secret":"registry-password"}}"#,
        services().registry_user
    );
    let base = [
        "oci",
        "image-exists",
        "--arg",
        &image,
        "--settings",
        &settings,
        "-c",
        config.to_str().unwrap(),
        "--grant-secret",
        "registry-password",
    ];
    let (out, stdout) = call(&agent, &base);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.starts_with("oci image-exists failed: "), "{stdout}");
    let refusal = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("REFUSED"))
        .unwrap_or_else(|| panic!("no refusal printed: {stdout}"));
    assert!(refusal.contains("grants.hosts would allow it"), "{refusal}");
    assert!(
        refusal.contains(&format!("add \"http://{registry}\" to its grants.hosts")),
        "{refusal}"
    );
    assert!(
        !stdout.contains("asked registry"),
        "nothing was asked: {stdout}"
    );

    // The grant from the flag lets it through.
    let host = format!("http://{registry}");
    let granted: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--grant-host", &host])
        .collect();
    let (out, stdout) = call(&agent, &granted);
    common::assert_success(&out);
    assert!(stdout.contains(&format!("{image} exists")), "{stdout}");
    assert!(!stdout.contains("REFUSED"), "{stdout}");
}

#[test]
fn a_secret_not_granted_is_printed_as_a_refusal() {
    let registry = &services().registry;
    let agent = Scratch::new();
    let config =
        agent.write_config("secrets:\n  registry-password: { env: TEST_REGISTRY_PASSWORD }\n");
    let settings = format!(
        r#"{{"type":"oci","uri":"{registry}/plugins-call","username":"u","password-secret":"registry-password"}}"#
    );
    let host = format!("http://{registry}");
    let image = format!("{registry}/plugins-call:v1");
    let (out, stdout) = call(
        &agent,
        &[
            "oci",
            "image-exists",
            "--arg",
            &image,
            "--settings",
            &settings,
            "-c",
            config.to_str().unwrap(),
            "--grant-host",
            &host,
        ],
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("REFUSED refused (grants.secrets would allow it)")
            && stdout.contains("\"registry-password\""),
        "{stdout}"
    );
    assert!(!stdout.contains("opened secret"), "{stdout}");
}

#[test]
fn an_unknown_plugin_or_export_is_named() {
    let agent = Scratch::new();
    let out = agent.run(&["plugins", "call", "buildpacks", "info"]);
    let stderr = common::refused(&out);
    assert!(stderr.contains("no plugin `buildpacks`"), "{stderr}");
    assert!(
        stderr.contains("bundled: noop, docker, kaniko, oci, local"),
        "{stderr}"
    );

    let out = agent.run(&["plugins", "call", "noop", "fly"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cannot call `fly`"), "{stdout}");
    assert!(stdout.contains("host calls: none"), "{stdout}");

    let out = agent.run(&["plugins", "call", "noop", "info"]);
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("noop info: builder-noop "), "{stdout}");
}

/// A FAKE registry (standing for a registry's `/v2/` API) that answers
/// every request with a 401 whose challenge names token realm `realm`; its
/// port.
fn challenging_registry(realm: String) -> u16 {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            common::http_fake::read_request(&mut stream);
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"launch-test\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn a_token_realm_not_granted_is_printed_as_a_refusal() {
    // The realm: a listener that must never be contacted.
    let realm = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    realm.set_nonblocking(true).unwrap();
    let realm_port = realm.local_addr().unwrap().port();
    let registry = challenging_registry(format!("http://127.0.0.1:{realm_port}/token"));
    let agent = Scratch::new();
    let config =
        agent.write_config("secrets:\n  registry-password: { env: TEST_REGISTRY_PASSWORD }\n");
    let settings = format!(
        r#"{{"type":"oci","uri":"127.0.0.1:{registry}/app","username":"u","password-secret":"registry-password"}}"#
    );
    let host = format!("http://127.0.0.1:{registry}");
    let image = format!("127.0.0.1:{registry}/app:v1");
    let (out, stdout) = call(
        &agent,
        &[
            "oci",
            "image-exists",
            "--arg",
            &image,
            "--settings",
            &settings,
            "-c",
            config.to_str().unwrap(),
            "--grant-host",
            &host,
            "--grant-secret",
            "registry-password",
        ],
    );
    assert!(!out.status.success(), "{stdout}");
    let refusal = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("REFUSED"))
        .unwrap_or_else(|| panic!("no refusal printed: {stdout}"));
    assert!(
        refusal.contains("grants.hosts would allow it")
            && refusal.contains(&format!("token realm http://127.0.0.1:{realm_port}")),
        "{refusal}"
    );
    assert!(
        stdout.contains("opened secret \"registry-password\""),
        "{stdout}"
    );
    assert!(
        realm.accept().is_err(),
        "the realm was contacted, though not granted"
    );
}
