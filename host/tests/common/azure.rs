//! The fake of Azure AD's token endpoint and of IMDS's managed-identity
//! token (`tests/azure_fake/server.py`) as the tests start it: one per
//! test, with a tenant, an app (client) with its secret, and a federated
//! token for workload identity.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The tenant the fake knows.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The app (client) id the fake knows.
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The app's secret.
pub const SECRET: &str = "fake~client~secret~Q8x7Z0aBcDeFgHiJkLmNoPqRs";
/// A federated token (the JWT AKS projects into the pod), as the fake
/// expects it: claims `iss`, `sub`, `aud: api://AzureADTokenExchange`.
pub const FEDERATED_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwiaXNzIjoiaHR0cHM6Ly9vaWRjLmV4YW1wbGUvIiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OndhbmRiOmxhdW5jaC1hZ2VudCJ9.ZmFrZS1zaWduYXR1cmUtb2YtdGhlLWt1YmVsZXQ";

/// A running fake (killed on drop), its port and grant log.
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

    /// The grants it made: (source `secret`|`federated`|`imds`, scope or
    /// resource, token).
    pub fn grants(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.count_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }
}

/// Starts the fake, its grant log in `dir`.
pub fn fake(dir: &Path) -> Fake {
    start(dir, &[])
}

/// Starts the fake with `extra` arguments, its grant log in `dir`.
fn start(dir: &Path, extra: &[&OsStr]) -> Fake {
    let count_file = dir.join("aad-grants.log");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/azure_fake/server.py");
    let mut command = Command::new("python3");
    command
        .arg(server)
        .args([
            "--tenant",
            TENANT,
            "--client-id",
            CLIENT_ID,
            "--secret",
            SECRET,
        ])
        .args(["--federated-token", FEDERATED_TOKEN, "--count-file"])
        .arg(&count_file)
        .args(extra);
    let server = super::port_server::PortServer::spawn(command);
    Fake {
        port: server.port,
        _server: server,
        count_file,
    }
}

/// A federated token file (as AKS projects it) holding `token`.
pub fn federated_token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("azure-tokens").join("azure-identity-token");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, token).unwrap();
    path
}

/// The service name of the ACR stand-in (a real registry's login server).
pub const ACR_SERVICE: &str = "launchtest.azurecr.io";
/// The user of an ACR refresh token.
pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";

/// The ACR stand-in: the fake with its ACR token server, in front of a
/// docker-registry in token-auth mode whose realm it is; one origin
/// (`http://127.0.0.1:PORT`, the fake's) serves `/oauth2/...` and, passed
/// on to the registry, `/v2/...`, as `https://launchtest.azurecr.io` does.
/// Both stopped on drop.
pub struct Acr {
    /// AAD, IMDS, ACR's `/oauth2/...` and the registry's `/v2/`.
    pub fake: Fake,
    registry: Child,
    /// `127.0.0.1:PORT` of the stand-in (the fake's port).
    pub registry_address: String,
}

impl Drop for Acr {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

impl Acr {
    /// How many times the ACR token server exchanged an AAD token for a
    /// refresh token.
    pub fn exchanges(&self) -> usize {
        self.fake
            .grants()
            .iter()
            .filter(|(source, _, _)| source == "acr-refresh")
            .count()
    }
}

/// Starts the ACR stand-in in `dir` (a key and certificate made with
/// openssl, the registry's storage and config); needs Debian's
/// `docker-registry` (`scripts/services.sh start` installs it).
pub fn acr(dir: &Path) -> Acr {
    let key = dir.join("acr-key.pem");
    let cert = dir.join("acr-cert.pem");
    let done = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=acr-token-issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(done.status.success(), "openssl req: {done:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("127.0.0.1:{port}");
    let fake = start(
        dir,
        &[
            OsStr::new("--acr-service"),
            OsStr::new(ACR_SERVICE),
            OsStr::new("--acr-key"),
            key.as_os_str(),
            OsStr::new("--acr-cert"),
            cert.as_os_str(),
            OsStr::new("--acr-upstream"),
            OsStr::new(&upstream),
        ],
    );
    let config = dir.join("acr-registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n\
             http:\n  addr: {upstream}\n  secret: acr-stand-in-http-secret\n\
             auth:\n  token:\n    realm: {realm}/oauth2/token\n    service: {ACR_SERVICE}\n\
             \x20   issuer: Azure Container Registry\n    rootcertbundle: {cert}\n",
            data = dir.join("acr-data").display(),
            realm = fake.url(),
            cert = cert.display(),
        ),
    )
    .unwrap();
    let registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (run scripts/services.sh start first: it installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&upstream).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let registry_address = format!("127.0.0.1:{}", fake.port);
    Acr {
        fake,
        registry,
        registry_address,
    }
}
