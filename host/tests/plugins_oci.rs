//! Plugins pulled from OCI registries (`plugins:` entries with `oci:`),
//! published with `plugins push`, by tag and by digest, kept for offline
//! restarts, refused when tampered with or not signed by the configured key.
//!
//! Each test but one runs its own `docker-registry` (Debian's, as the
//! services script installs it; no auth, plain HTTP on 127.0.0.1), so it can
//! stop it or edit its storage; the last pulls from the shared services
//! registry with basic auth.

mod common;

use common::Scratch;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` of the test's own, stopped when dropped.
struct OwnRegistry {
    child: Child,
    addr: String,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("data");
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                storage.display()
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
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < until, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRegistry {
            child,
            addr,
            storage,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The component the tests publish: the bundle's noop builder.
fn component() -> PathBuf {
    common::bundle_dir().join("builder-noop.wasm")
}

/// `plugins push FILE REF --insecure [extra]`; returns `REPO@DIGEST`.
fn push(scratch: &Scratch, reference: &str, extra: &[&str]) -> String {
    let out = scratch
        .cmd()
        .args(["plugins", "push"])
        .arg(component())
        .args([reference, "--insecure"])
        .args(extra)
        .output()
        .unwrap();
    common::assert_success(&out);
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(printed.contains("@sha256:"), "{printed}");
    printed
}

/// A config whose builder is plugin `pulled`, from `reference`.
fn config_for(scratch: &Scratch, reference: &str, extra: &str) -> PathBuf {
    scratch.write_config(&format!(
        "builder: {{ type: pulled }}\nplugins:\n  pulled:\n    oci: {reference}\n    pull: {{ insecure: true }}\n{extra}"
    ))
}

/// `plugins list --config CONFIG` on the embedded bundle (precompiled: the
/// compiled-code cache then holds only what the pulled plugin put there).
fn plugins_list(scratch: &Scratch, config: &Path) -> Output {
    scratch
        .cmd()
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .args(["plugins", "list", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// The compiled-code cache's entries for the published component (its
/// entries are named by the component's sha256).
fn compiled_entries(scratch: &Scratch) -> usize {
    let component = common::sha256_of(&component());
    std::fs::read_dir(scratch.state_dir().join("cache/plugins"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(&component) && name.ends_with(".cwasm")
                })
                .count()
        })
        .unwrap_or(0)
}

/// An ECDSA P-256 key pair made with openssl: (private PKCS#8 PEM, public PEM).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl");
    assert!(status.success());
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success());
    (private, public)
}

#[test]
fn a_pushed_plugin_loads_by_tag_and_by_digest_and_offline_from_the_cache() {
    let mut registry = OwnRegistry::start();
    let scratch = Scratch::new();
    let tag_ref = format!("{}/plugins/noop:1.0", registry.addr);
    let pinned = push(&scratch, &tag_ref, &[]);

    for reference in [tag_ref.as_str(), pinned.as_str()] {
        let config = config_for(&scratch, reference, "");
        let out = plugins_list(&scratch, &config);
        common::assert_success(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("origin:      oci"), "{stdout}");
        assert!(stdout.contains(&pinned), "the digest is shown: {stdout}");
    }

    // The registry gone, a restart loads the same plugin from the state dir.
    registry.stop();
    for reference in [tag_ref.as_str(), pinned.as_str()] {
        let config = config_for(&scratch, reference, "");
        let out = plugins_list(&scratch, &config);
        common::assert_success(&out);
    }
    // A fresh state dir cannot: it says which reference it could not pull.
    let fresh = Scratch::new();
    let config = config_for(&fresh, &tag_ref, "");
    let err = common::refused(&plugins_list(&fresh, &config));
    assert!(
        err.contains("plugins.pulled.oci") && err.contains(&tag_ref),
        "{err}"
    );
}

#[test]
fn a_tampered_component_in_the_registry_is_refused_before_compiling() {
    let registry = OwnRegistry::start();
    let scratch = Scratch::new();
    let reference = format!("{}/plugins/noop:tampered", registry.addr);
    push(&scratch, &reference, &[]);
    let digest = format!("sha256:{}", common::sha256_of(&component()));
    let blob = registry.blob_file(&digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let config = config_for(&scratch, &reference, "");
    let err = common::refused(&plugins_list(&scratch, &config));
    assert!(
        err.contains("tampered or corrupt") && err.contains(&digest),
        "{err}"
    );
    assert_eq!(compiled_entries(&scratch), 0, "nothing was compiled");
}

#[test]
fn a_plugin_signed_by_the_configured_key_loads() {
    let registry = OwnRegistry::start();
    let scratch = Scratch::new();
    let (private, public) = key_pair(scratch.path(), "ours");
    let reference = format!("{}/plugins/noop:signed", registry.addr);
    push(&scratch, &reference, &["--sign", private.to_str().unwrap()]);
    assert_eq!(compiled_entries(&scratch), 0);
    let config = config_for(
        &scratch,
        &reference,
        &format!("    verify: {{ key: {} }}\n", public.display()),
    );
    let out = plugins_list(&scratch, &config);
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("signature:   verified with {}", public.display())),
        "{stdout}"
    );
    assert_eq!(compiled_entries(&scratch), 1, "compiled once verified");
}

#[test]
fn an_unsigned_plugin_is_refused_when_a_signature_is_required() {
    let registry = OwnRegistry::start();
    let scratch = Scratch::new();
    let (_, public) = key_pair(scratch.path(), "ours");
    let reference = format!("{}/plugins/noop:unsigned", registry.addr);
    let pinned = push(&scratch, &reference, &[]);
    let config = config_for(
        &scratch,
        &reference,
        &format!("    verify: {{ key: {} }}\n", public.display()),
    );
    let err = common::refused(&plugins_list(&scratch, &config));
    let digest = pinned.split('@').nth(1).unwrap();
    assert!(
        err.contains("no signature")
            && err.contains(&public.display().to_string())
            && err.contains(digest),
        "{err}"
    );
    assert_eq!(compiled_entries(&scratch), 0, "checked before compiling");
}

#[test]
fn a_plugin_signed_by_another_key_is_refused() {
    let registry = OwnRegistry::start();
    let scratch = Scratch::new();
    let (_, ours) = key_pair(scratch.path(), "ours");
    let (theirs, _) = key_pair(scratch.path(), "theirs");
    let reference = format!("{}/plugins/noop:theirs", registry.addr);
    push(&scratch, &reference, &["--sign", theirs.to_str().unwrap()]);
    let config = config_for(
        &scratch,
        &reference,
        &format!("    verify: {{ key: {} }}\n", ours.display()),
    );
    let err = common::refused(&plugins_list(&scratch, &config));
    assert!(
        err.contains("does not verify with this key") && err.contains(&ours.display().to_string()),
        "{err}"
    );
    assert_eq!(compiled_entries(&scratch), 0, "checked before compiling");
}

#[test]
fn a_private_registry_is_pulled_from_with_the_configured_secret() {
    let services = common::docker::services();
    let scratch = Scratch::new();
    let reference = format!("{}/plugins/noop:private", services.registry);
    let out = scratch
        .cmd()
        .env("PLUGIN_REGISTRY_PASSWORD", &services.registry_password)
        .args(["plugins", "push"])
        .arg(component())
        .args([
            reference.as_str(),
            "--insecure",
            "--username",
            &services.registry_user,
            "--password-env",
            "PLUGIN_REGISTRY_PASSWORD",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let config = scratch.write_config(&format!(
        "builder: {{ type: pulled }}\nsecrets:\n  plugins-password: {{ env: PLUGIN_REGISTRY_PASSWORD }}\n\
         plugins:\n  pulled:\n    oci: {reference}\n    pull: {{ insecure: true, username: {}, password-secret: plugins-password }}\n",
        services.registry_user
    ));
    let out = scratch
        .cmd()
        .env("PLUGIN_REGISTRY_PASSWORD", &services.registry_password)
        .args(["plugins", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    common::assert_success(&out);
    // Without the password the registry refuses, and the message says so
    // without any secret in it.
    let fresh = Scratch::new();
    let config = fresh.write_config(&format!(
        "builder: {{ type: pulled }}\nsecrets:\n  plugins-password: {{ env: PLUGIN_REGISTRY_PASSWORD }}\n\
         plugins:\n  pulled:\n    oci: {reference}\n    pull: {{ insecure: true, username: {}, password-secret: plugins-password }}\n",
        services.registry_user
    ));
    let out = fresh
        .cmd()
        .env("PLUGIN_REGISTRY_PASSWORD", "not-the-password")
        .args(["plugins", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = common::refused(&out);
    assert!(err.contains(&reference), "{err}");
    assert!(!err.contains(&services.registry_password) && !err.contains("not-the-password"));
}
