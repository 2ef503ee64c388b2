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
    use launch_agent::capabilities::oci::{RegistryClients, manifest_exists};
    let clients = RegistryClients::default();

    // Absent before the push; the token dance itself must work for that.
    assert!(
        !manifest_exists(
            &clients,
            &local(),
            "test",
            &image,
            Some(USER),
            Some(PASSWORD),
            true
        )
        .await
        .unwrap()
    );
    let refused = manifest_exists(
        &clients,
        &local(),
        "test",
        &image,
        Some(USER),
        Some("wrong-password-1"),
        true,
    )
    .await
    .unwrap_err();
    assert!(refused.unauthorized, "{refused}");
    assert!(!refused.to_string().contains("wrong-password-1"));

    let docker = launch_agent::clients::docker::connect().await.unwrap();
    let tagged = Command::new("docker")
        .args(["tag", &services().base_image, &image])
        .status()
        .unwrap();
    assert!(tagged.success());
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
    assert!(
        manifest_exists(
            &clients,
            &local(),
            "test",
            &image,
            Some(USER),
            Some(PASSWORD),
            true
        )
        .await
        .unwrap()
    );
    for line in lines.lock().unwrap().iter() {
        assert!(
            !line.contains(PASSWORD) && !line.contains("wrong-password-2"),
            "{line}"
        );
    }
    let _ = Command::new("docker")
        .args(["rmi", "-f", &image])
        .stdout(Stdio::null())
        .status();
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
    use launch_agent::capabilities::oci::{RegistryClients, manifest_exists};
    let clients = RegistryClients::default();
    assert!(
        !manifest_exists(&clients, &local(), "test", &image, None, None, true)
            .await
            .unwrap()
    );
    let docker = launch_agent::clients::docker::connect().await.unwrap();
    assert!(
        Command::new("docker")
            .args(["tag", &services().base_image, &image])
            .status()
            .unwrap()
            .success()
    );
    launch_agent::capabilities::docker::push_image(&docker, &image, None, &|_: &str| {})
        .await
        .expect("anonymous push");
    assert!(
        manifest_exists(&clients, &local(), "test", &image, None, None, true)
            .await
            .unwrap()
    );
    let _ = Command::new("docker")
        .args(["rmi", "-f", &image])
        .stdout(Stdio::null())
        .status();
}
