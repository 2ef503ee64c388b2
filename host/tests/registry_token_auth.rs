//! Registry auth beyond htpasswd. Bearer tokens, as Docker Hub, ACR and Artifact Registry do
//! it: a real docker-registry in `auth.token` mode with the FAKE token server
//! of `tests/registry_token/` (it signs JWTs as a real one does). The OCI
//! capability exchanges basic credentials for a bearer token; the Docker
//! capability pushes through the engine, which does the same. And an
//! anonymous registry, which needs no credentials at all.

mod common;

/// The grants of a plugin that may reach any registry on this machine.
fn local() -> launch_agent::capabilities::policy::GrantPolicy {
    launch_agent::capabilities::policy::GrantPolicy::for_hosts(&["http://127.0.0.1:*"]).unwrap()
}
use common::docker::services;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "launch";
const PASSWORD: &str = "t0ken-Pa55word";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The base image tagged as an image to push; the tag is removed when
/// dropped.
struct Tagged(String);
impl Tagged {
    fn new(image: &str) -> Self {
        assert!(
            Command::new("docker")
                .args(["tag", &services().base_image, image])
                .status()
                .unwrap()
                .success()
        );
        Tagged(image.to_string())
    }
}
impl Drop for Tagged {
    fn drop(&mut self) {
        common::docker::remove_images_blocking(&[&self.0]);
    }
}

/// Whether `image` is in its registry, asked by the OCI capability with
/// `password` for [`USER`] (anonymously without one); an error is the
/// capability's refusal.
async fn manifest_exists(
    image: &str,
    password: Option<&str>,
) -> Result<bool, launch_agent::capabilities::oci::OciFailure> {
    launch_agent::capabilities::oci::manifest_exists(
        &launch_agent::capabilities::oci::RegistryClients::default(),
        &local(),
        "test",
        image,
        password.map(|_| USER),
        password,
        true,
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token-auth registry and its token server; returns `127.0.0.1:PORT`.
fn token_registry(dir: &Path) -> (String, Vec<Killed>) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=launch-test-token",
        ])
        .args([
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success(), "openssl req");
    let port_file = dir.join("token-port");
    let token = Command::new("python3")
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/registry_token/token_server.py"),
        )
        .args([
            "--port-file",
            port_file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .args([
            "--cert",
            cert.to_str().unwrap(),
            "--user",
            USER,
            "--password",
            PASSWORD,
        ])
        .args(["--service", "launch-test", "--issuer", "launch-test-issuer"])
        .spawn()
        .expect("start the token server");
    let token = Killed(token);
    let token_port = wait_for_file(&port_file);
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: launch-test-secret\n\
             auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: launch-test\n    issuer: launch-test-issuer\n    rootcertbundle: {}\n",
            dir.join("storage").display(),
            cert.display()
        ),
    )
    .unwrap();
    let registry = Command::new("docker-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (scripts/services.sh installs it)");
    let registry = Killed(registry);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the token registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (format!("127.0.0.1:{port}"), vec![registry, token])
}

#[tokio::test]
async fn bearer_token_auth_works_for_lookups_and_pushes_and_refuses_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _servers) = token_registry(dir.path());
    let image = format!("{registry}/token-test:v1");

    // Absent before the push; the token dance itself must work for that.
    assert!(!manifest_exists(&image, Some(PASSWORD)).await.unwrap());
    let refused = manifest_exists(&image, Some("wrong-password-1"))
        .await
        .unwrap_err();
    assert!(refused.unauthorized, "{refused}");
    assert!(!refused.to_string().contains("wrong-password-1"));

    let docker = launch_agent::clients::docker::connect().await.unwrap();
    let _tagged = Tagged::new(&image);
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let log = |line: &str| lines.lock().unwrap().push(line.to_string());
    let wrong = launch_agent::capabilities::docker::push_image(
        &docker,
        &image,
        Some((USER, "wrong-password-2")),
        &log,
    )
    .await;
    let wrong = wrong.expect_err("a wrong password is refused");
    assert!(wrong.unauthorized, "{wrong}");
    launch_agent::capabilities::docker::push_image(&docker, &image, Some((USER, PASSWORD)), &log)
        .await
        .expect("push with a bearer token");
    assert!(manifest_exists(&image, Some(PASSWORD)).await.unwrap());
    for line in lines.lock().unwrap().iter() {
        assert!(
            !line.contains(PASSWORD) && !line.contains("wrong-password-2"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn an_anonymous_registry_needs_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let _registry = Killed(
        Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry"),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = format!("127.0.0.1:{port}/anonymous-test:v1");
    assert!(!manifest_exists(&image, None).await.unwrap());
    let docker = launch_agent::clients::docker::connect().await.unwrap();
    let _tagged = Tagged::new(&image);
    launch_agent::capabilities::docker::push_image(&docker, &image, None, &|_: &str| {})
        .await
        .expect("anonymous push");
    assert!(manifest_exists(&image, None).await.unwrap());
}

// ---------------------------------------------------------------------------
// Credentials go only where they were granted (issue 10): a token realm or a
// redirect to a host not granted is refused, naming it, and nothing reaches
// that host; a registry credential handed to a builder is used only for the
// registry and repository it was issued for.

/// What a scripted server saw of one request: method, path, Authorization.
type Seen = (String, String, Option<String>);

/// A scripted HTTP server on 127.0.0.1: answers each request with
/// `answer(method, path, authorization)` (a whole HTTP response) and keeps
/// what it saw. Serves until the test ends.
struct Scripted {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn start(answer: impl Fn(&str, &str, Option<&str>) -> String + Send + Sync + 'static) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = std::sync::Arc::new(answer);
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (answer, record) = (answer.clone(), record.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut words = head.split_whitespace();
                    let method = words.next().unwrap_or("").to_string();
                    let path = words.next().unwrap_or("").to_string();
                    let auth = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_string())
                    });
                    let response = answer(&method, &path, auth.as_deref());
                    record.lock().unwrap().push((method, path, auth));
                    let _ = stream.write_all(response.as_bytes());
                });
            }
        });
        Scripted { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP response with `status` (`401 Unauthorized`), `headers` (each
/// ending in CRLF) and an empty body, or `body`.
fn response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A registry whose challenge names token realm `realm` and which takes
/// `Bearer good-token` (from any realm) for repository `app`.
fn registry_with_realm(realm: String) -> Scripted {
    Scripted::start(move |method, path, auth| {
        let challenge = format!(
            "www-authenticate: Bearer realm=\"{realm}\",service=\"launch-test\"\r\n\
             docker-distribution-api-version: registry/2.0\r\n"
        );
        match (method, path, auth) {
            (_, "/v2/", Some("Bearer good-token")) => response("200 OK", "", ""),
            ("HEAD", "/v2/app/manifests/v1", Some("Bearer good-token")) => response(
                "200 OK",
                "docker-content-digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\r\n",
                "",
            ),
            _ => response("401 Unauthorized", &challenge, ""),
        }
    })
}

/// A token server that hands `good-token` to anyone, keeping what it saw.
fn any_token_server() -> Scripted {
    Scripted::start(|_, _, _| {
        response(
            "200 OK",
            "content-type: application/json\r\n",
            r#"{"token":"good-token"}"#,
        )
    })
}

/// The bundled `registry-oci` plugin for `127.0.0.1:{port}/app` with user
/// `launch` and a password secret holding `password`, granted `hosts`.
async fn oci_plugin(
    dir: &Path,
    port: u16,
    hosts: &[String],
    password: &str,
) -> (std::sync::Arc<launch_agent::plugins::LoadedPlugin>, String) {
    let secret = dir.join("password");
    std::fs::write(&secret, password).unwrap();
    let wasm = common::bundle_dir().join("registry-oci.wasm");
    let yaml = format!(
        "secrets:\n  registry-password: {{ file: {} }}\nplugins:\n  oci:\n    path: {}\n    \
         grants: {{ hosts: {hosts:?}, secrets: [registry-password] }}\n",
        secret.display(),
        wasm.display()
    );
    let config = launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).unwrap();
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    let plugin = host
        .load("oci", &wasm, &config.plugins["oci"], &config.secrets)
        .await
        .expect("load registry-oci");
    let settings = serde_json::json!({
        "type": "oci",
        "uri": format!("127.0.0.1:{port}/app"),
        "username": "launch",
        "password-secret": "registry-password",
    })
    .to_string();
    (plugin, settings)
}

#[tokio::test]
async fn the_oci_capability_sends_no_credential_to_a_token_realm_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let password = "realm-Pa55-not-for-you";
    let evil = any_token_server();
    let realm = format!("http://127.0.0.1:{}/token", evil.port);
    let registry = registry_with_realm(realm);
    let image = format!("127.0.0.1:{}/app:v1", registry.port);

    let granted = [format!("http://127.0.0.1:{}", registry.port)];
    let (plugin, settings) = oci_plugin(dir.path(), registry.port, &granted, password).await;
    let error = plugin
        .image_exists(&settings, &image, None)
        .await
        .expect_err("the realm is not granted")
        .to_string();
    assert!(
        error.contains(&format!("token realm http://127.0.0.1:{}", evil.port))
            && error.contains("not granted"),
        "{error}"
    );
    assert!(!error.contains(password), "{error}");
    assert!(
        evil.seen().is_empty(),
        "the realm was contacted: {:?}",
        evil.seen()
    );

    // Granted, the realm gets the credentials and hands out the token.
    let granted = [
        format!("http://127.0.0.1:{}", registry.port),
        format!("http://127.0.0.1:{}", evil.port),
    ];
    let (plugin, settings) = oci_plugin(dir.path(), registry.port, &granted, password).await;
    assert!(plugin.image_exists(&settings, &image, None).await.unwrap());
    let seen = evil.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].1.contains("scope=repository%3Aapp%3Apull"),
        "{seen:?}"
    );
    assert!(
        seen[0]
            .2
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[tokio::test]
async fn the_oci_capability_follows_no_redirect_to_a_host_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let password = "redirect-Pa55-not-for-you";
    let elsewhere = Scripted::start(|_, _, _| {
        response(
            "200 OK",
            "docker-content-digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\r\n",
            "",
        )
    });
    let target = format!("http://127.0.0.1:{}/manifest", elsewhere.port);
    let registry = Scripted::start(move |method, path, auth| match (method, path, auth) {
        ("GET", "/v2/", None) => response(
            "401 Unauthorized",
            "www-authenticate: Basic realm=\"registry\"\r\n",
            "",
        ),
        ("HEAD", "/v2/app/manifests/v1", Some(_)) => response(
            "307 Temporary Redirect",
            &format!("location: {target}\r\n"),
            "",
        ),
        _ => response("401 Unauthorized", "", ""),
    });
    let image = format!("127.0.0.1:{}/app:v1", registry.port);

    let granted = [format!("http://127.0.0.1:{}", registry.port)];
    let (plugin, settings) = oci_plugin(dir.path(), registry.port, &granted, password).await;
    let error = plugin
        .image_exists(&settings, &image, None)
        .await
        .expect_err("the redirect target is not granted")
        .to_string();
    assert!(
        error.contains("redirected a request of plugin")
            && error.contains(&format!("http://127.0.0.1:{}", elsewhere.port))
            && error.contains("not granted"),
        "{error}"
    );
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());

    // Granted, the redirect is followed, without the credentials.
    let granted = [
        format!("http://127.0.0.1:{}", registry.port),
        format!("http://127.0.0.1:{}", elsewhere.port),
    ];
    let (plugin, settings) = oci_plugin(dir.path(), registry.port, &granted, password).await;
    assert!(plugin.image_exists(&settings, &image, None).await.unwrap());
    let seen = elsewhere.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].2, None, "credentials went across origins: {seen:?}");
}

/// The hostile builder granted the engine and `hosts`.
async fn hostile_builder(
    dir: &Path,
    hosts: &[String],
) -> std::sync::Arc<launch_agent::plugins::LoadedPlugin> {
    let wasm = common::test_plugin("hostile-builder");
    let yaml = format!(
        "plugins:\n  hb:\n    path: {}\n    grants: {{ docker: true, hosts: {hosts:?} }}\n",
        wasm.display()
    );
    let config = launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).unwrap();
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load("hb", &wasm, &config.plugins["hb"], &config.secrets)
        .await
        .expect("load hostile-builder")
}

/// Has the hostile builder push `image` with a credential issued for
/// `repository`; returns what it reported.
async fn push_with_handle(
    plugin: &launch_agent::plugins::LoadedPlugin,
    image: &str,
    repository: &str,
    password: &str,
) -> String {
    use launch_agent::capabilities::secrets::{CredentialScope, SecretHandle};
    use launch_agent::plugins::bindings::Job;
    use launch_agent::plugins::loaded::{BuildPlan, BuildRequest, RegistryCredentials};
    let request = BuildRequest {
        job: Job {
            id: "creds".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: serde_json::json!({"mode": "push", "image": image}).to_string(),
        destination: repository.into(),
        source_dir: None,
        source_id: "creds".into(),
    };
    let plan = BuildPlan {
        image_uri: image.into(),
        dockerfile: "FROM scratch\n".into(),
        dockerfile_origin: "test".into(),
    };
    let credentials = RegistryCredentials {
        username: USER.into(),
        password: SecretHandle::opaque(
            "registry-password",
            password,
            CredentialScope::parse(repository).unwrap(),
        ),
    };
    let said = plugin
        .build(&request, &plan, Some(&credentials), None, None)
        .await
        .expect_err("the hostile builder reports what happened")
        .to_string();
    assert!(!said.contains(password), "{said}");
    said
}

/// Tags the base image as `image` (removed when the guard drops).
#[tokio::test]
async fn a_push_sends_no_credential_to_a_token_realm_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let evil = any_token_server();
    let registry = registry_with_realm(format!("http://127.0.0.1:{}/token", evil.port));
    let repository = format!("127.0.0.1:{}/app", registry.port);
    let image = format!("{repository}:v1");
    let _tagged = Tagged::new(&image);
    let plugin =
        hostile_builder(dir.path(), &[format!("http://127.0.0.1:{}", registry.port)]).await;
    let said = push_with_handle(&plugin, &image, &repository, "push-realm-Pa55").await;
    assert!(
        said.contains("denied=true")
            && said.contains(&format!("token realm http://127.0.0.1:{}", evil.port)),
        "{said}"
    );
    assert!(evil.seen().is_empty(), "{:?}", evil.seen());
}

#[tokio::test]
async fn a_handed_credential_pushes_only_to_the_registry_and_repository_it_was_issued_for() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _servers) = token_registry(dir.path());
    let other = Scripted::start(|_, _, _| response("401 Unauthorized", "", ""));
    let repository = format!("{registry}/bound");
    let plugin = hostile_builder(dir.path(), &["http://127.0.0.1:*".to_string()]).await;
    for elsewhere in [
        format!("127.0.0.1:{}/bound:v1", other.port),
        format!("{registry}/other:v1"),
        format!("{registry}/boundless:v1"),
    ] {
        let _tagged = Tagged::new(&elsewhere);
        let said = push_with_handle(&plugin, &elsewhere, &repository, PASSWORD).await;
        assert!(
            said.contains("denied=true") && said.contains("was issued for"),
            "{elsewhere}: {said}"
        );
    }
    assert!(other.seen().is_empty(), "{:?}", other.seen());

    // Where it was issued for, the host exchanges it for a token at the
    // granted realm and the engine pushes with the token.
    let image = format!("{repository}:v1");
    let _tagged = Tagged::new(&image);
    let said = push_with_handle(&plugin, &image, &repository, PASSWORD).await;
    assert!(said.ends_with(&format!("push {image}: ok")), "{said}");
    assert!(manifest_exists(&image, Some(PASSWORD)).await.unwrap());
    // A wrong password is refused by the realm, before the engine.
    let said = push_with_handle(&plugin, &image, &repository, "wrong-Pa55").await;
    assert!(said.contains("unauthorized=true"), "{said}");
}

/// A run's pull from a registry that uses tokens: the host exchanges the
/// login at the realm, the engine pulls with a pull-scoped token (the
/// local-container runner's `ensure_image`), and a wrong password fails
/// without appearing in the error.
#[tokio::test]
async fn a_run_time_pull_from_a_token_registry_hands_the_engine_a_token() {
    use launch_agent::runners::RegistryLogin;
    use launch_agent::runners::local_container::pull::{engine_credentials, ensure_image};
    let dir = tempfile::tempdir().unwrap();
    let (registry, _servers) = token_registry(dir.path());
    let image = format!("{registry}/token-pull:v1");
    let docker = launch_agent::clients::docker::connect().await.unwrap();
    let tagged = Command::new("docker")
        .args(["tag", &services().base_image, &image])
        .status()
        .unwrap();
    assert!(tagged.success());
    launch_agent::capabilities::docker::push_image(
        &docker,
        &image,
        Some((USER, PASSWORD)),
        &|_| {},
    )
    .await
    .expect("push the image to pull");
    assert!(common::docker::remove_images_blocking(&[&image]));

    let login = |password: &str| RegistryLogin {
        username: USER.into(),
        password: password.into(),
    };
    let client = launch_agent::capabilities::oci::RegistryClients::default()
        .client()
        .unwrap();
    let credentials = engine_credentials(&image, &login(PASSWORD), &client)
        .await
        .expect("a token for the pull");
    assert!(credentials.registrytoken.is_some());
    assert_eq!(credentials.password, None, "the engine gets no password");

    let wrong = ensure_image(&docker, &image, async || Ok(Some(login("wrong-pull-pw"))))
        .await
        .expect_err("a wrong password is refused");
    let wrong = format!("{wrong:#}");
    assert!(
        wrong.contains("refused the credentials") && !wrong.contains("wrong-pull-pw"),
        "{wrong}"
    );
    ensure_image(&docker, &image, async || Ok(Some(login(PASSWORD))))
        .await
        .expect("the pull with a token");
    assert!(docker.inspect_image(&image).await.is_ok(), "pulled");
    common::docker::remove_images_blocking(&[&image]);
}
