//! The fake of Google's OAuth2 token endpoint and metadata server
//! (`tests/gcp_fake/server.py`) as the tests start it: one per test, with a
//! test RSA key made by openssl and a service-account key file for it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The service account's e-mail in the test key file.
pub const EMAIL: &str = "launch-agent@fake-project.iam.gserviceaccount.com";
/// The access token the fake issues.
pub const TOKEN: &str = "ya29.fake-access-token-0123456789abcdefghijklmnop";

/// A running fake (killed on drop), its port and grant counter.
pub struct Fake {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    count_file: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut child = Command::new("python3")
        .arg(server)
        .arg(dir.join("trusted.pub.pem"))
        .args([EMAIL, TOKEN])
        .arg(&count_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the fake's port");
    Fake {
        child,
        port,
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
