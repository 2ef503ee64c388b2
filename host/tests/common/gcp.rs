//! The fake of Google's OAuth2 token endpoint and metadata server
//! (`tests/gcp_fake/server.py`) as the tests start it: one per test, with a
//! test RSA key made by openssl and a service-account key file for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The service account's e-mail in the test key file.
pub const EMAIL: &str = "launch-agent@fake-project.iam.gserviceaccount.com";
/// The access token the fake issues.
pub const TOKEN: &str = "ya29.fake-access-token-0123456789abcdefghijklmnop";

/// A running fake (killed on drop), its port and grant counter.
pub struct Fake {
    _server: super::port_server::PortServer,
    /// Its port on 127.0.0.1.
    pub port: u16,
    count_file: PathBuf,
}

impl Fake {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// How many grants it has issued.
    pub fn grants(&self) -> usize {
        std::fs::read_to_string(&self.count_file)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// A fresh RSA key (PKCS#8 PEM) at `dir/name.pem`, its public half at
/// `dir/name.pub.pem`; returns the private PEM.
pub fn rsa_key(dir: &Path, name: &str) -> String {
    let key = dir.join(format!("{name}.pem"));
    let done = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(done.status.success(), "openssl genpkey: {done:?}");
    let done = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join(format!("{name}.pub.pem")))
        .output()
        .unwrap();
    assert!(done.status.success(), "openssl pkey: {done:?}");
    std::fs::read_to_string(key).unwrap()
}

/// Starts the fake trusting `dir/trusted.pub.pem`.
pub fn fake(dir: &Path) -> Fake {
    let count_file = dir.join("grants.count");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/gcp_fake/server.py");
    let mut command = Command::new("python3");
    command
        .arg(server)
        .arg(dir.join("trusted.pub.pem"))
        .args([EMAIL, TOKEN])
        .arg(&count_file);
    let server = super::port_server::PortServer::spawn(command);
    Fake {
        port: server.port,
        _server: server,
        count_file,
    }
}

/// A service-account key file (as the console downloads it) with `pem`.
pub fn key_file(dir: &Path, fake: &Fake, pem: &str) -> PathBuf {
    let path = dir.join("keys").join("sa.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "fake-project",
        "private_key_id": "0123abcd",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1234567890",
        "token_uri": format!("{}/token", fake.url()),
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// A running stand-in for Artifact Registry (killed on drop): Debian's
/// `docker-registry` with htpasswd auth taking user `oauth2accesstoken`
/// and the fake's [`TOKEN`] only, as Artifact Registry takes the OAuth2
/// access token, so a push or lookup without the token is refused.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Artifact Registry stand-in with its storage under `dir`
/// (`docker-registry` and `htpasswd` are installed by `scripts/services.sh`).
pub fn artifact_registry(dir: &Path) -> Registry {
    let htpasswd = dir.join("gar.htpasswd");
    let done = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["oauth2accesstoken", TOKEN])
        .stderr(Stdio::null())
        .output()
        .expect("htpasswd (scripts/services.sh installs apache2-utils)");
    assert!(done.status.success(), "htpasswd: {done:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("gar.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: launch-test-secret\n\
             auth:\n  htpasswd:\n    realm: fake-artifact-registry\n    path: {}\n",
            dir.join("gar-storage").display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (scripts/services.sh installs it)");
    let registry = Registry {
        child,
        address: format!("127.0.0.1:{port}"),
    };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the Artifact Registry stand-in did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    registry
}

/// The HTTP status of an anonymous `GET /v2/` at `address`.
pub fn anonymous_status(address: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
