//! The GCP environment against a fake of Google's OAuth2 token endpoint and
//! metadata server (`tests/gcp_fake/server.py`, started per test): a
//! service-account key (a test RSA key made with openssl here) whose RS256
//! JWT, signed inside the plugin, the fake verifies; the metadata server as
//! the other source; the token kept for many jobs; failures naming the
//! source and Google's error, never the key or the token.
//!
//! Not done yet: `registry-gcr` (Artifact Registry) and its end-to-end job.

mod common;
use common::gcp::{EMAIL, Fake, TOKEN, fake, key_file, rsa_key};
use common::{Scratch, shell_job};
use std::path::Path;
use std::process::Output;

/// Runs the agent to idle with `environment: gcp` and `gcp_config` under
/// `plugins.gcp.config`, with `GOOGLE_APPLICATION_CREDENTIALS` = `key`.
fn run_agent(agent: &Scratch, gcp_config: &str, key: Option<&Path>) -> Output {
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: gcp\n  region: us-central1\n\
         plugins:\n  gcp:\n    config: {{ {gcp_config} }}\n"
    ));
    let mut cmd = agent.run_cmd(&config);
    cmd.arg("-v")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env("HOME", agent.path());
    if let Some(key) = key {
        cmd.env("GOOGLE_APPLICATION_CREDENTIALS", key);
    }
    cmd.output().unwrap()
}

/// The plugin setting pointing the token endpoint at the fake (what
/// grants the fake's origin; the key file's `token_uri` alone does not).
fn token_uri(fake: &Fake) -> String {
    format!("token-uri: \"{}/token\"", fake.url())
}

/// Every file under `dir`, as text (lossy).
fn all_text(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_text(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

/// The base64 body of a PEM (a line of it is what a leak would show).
fn pem_line(pem: &str) -> &str {
    pem.lines().nth(1).unwrap()
}

#[test]
fn a_service_account_key_gets_a_token_kept_for_many_jobs_and_never_shown() {
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    for i in 0..3 {
        agent.submit(
            "default",
            &shell_job(&format!("echo job {i} in $GOOGLE_CLOUD_REGION")),
        );
    }
    let out = run_agent(&agent, &token_uri(&fake), Some(&key));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "access token obtained from service-account key of {EMAIL}; project fake-project"
        )),
        "{log}"
    );
    // Start-up and three jobs' verifies: one grant.
    assert_eq!(fake.grants(), 1, "{log}");
    let items = agent.items();
    assert_eq!(items.len(), 3);
    let mut everything = log.clone() + &String::from_utf8_lossy(&out.stdout);
    everything.push_str(&String::from_utf8_lossy(
        &agent.run(&["queue", "list", "--json"]).stdout,
    ));
    all_text(&agent.state_dir(), &mut everything);
    assert!(everything.contains("in us-central1"), "the jobs ran");
    assert!(!everything.contains(TOKEN), "the token leaked");
    assert!(!everything.contains(pem_line(&pem)), "the key leaked");
}

#[test]
fn a_wrong_key_fails_start_up_with_googles_error_and_never_shows_it() {
    let agent = Scratch::new();
    rsa_key(agent.path(), "trusted");
    let wrong = rsa_key(agent.path(), "wrong");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &wrong);
    let out = run_agent(&agent, &token_uri(&fake), Some(&key));
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("service-account key (GOOGLE_APPLICATION_CREDENTIALS)")
            && log.contains(&format!(
                "refused {EMAIL}: 400 invalid_grant: Invalid JWT Signature."
            )),
        "{log}"
    );
    assert!(!log.contains(pem_line(&wrong)), "{log}");
    assert_eq!(fake.grants(), 0);
}

#[test]
fn start_up_without_credentials_names_every_source_tried() {
    let agent = Scratch::new();
    let out = run_agent(&agent, "metadata-endpoint: \"http://127.0.0.1:1\"", None);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    for said in [
        "gcp: no credentials",
        "service-account key (GOOGLE_APPLICATION_CREDENTIALS): GOOGLE_APPLICATION_CREDENTIALS is not set",
        "metadata server: http://127.0.0.1:1 could not be asked",
    ] {
        assert!(log.contains(said), "{said:?} missing from {log}");
    }
}

#[test]
fn the_metadata_server_is_a_source_when_no_key_is_set() {
    let agent = Scratch::new();
    rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let out = run_agent(
        &agent,
        &format!("metadata-endpoint: \"{}\"", fake.url()),
        None,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "access token obtained from metadata server {}; project fake-project",
            fake.url()
        )),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "{log}");
}

#[test]
fn a_key_file_outside_the_default_grants_is_not_read_without_the_variable() {
    // Without GOOGLE_APPLICATION_CREDENTIALS the key's directory is not
    // granted: a key lying in HOME is not a source.
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    key_file(agent.path(), &fake, &pem);
    let out = run_agent(&agent, "metadata-endpoint: \"http://127.0.0.1:1\"", None);
    assert!(!out.status.success());
    assert_eq!(fake.grants(), 0);
}

#[test]
fn a_token_endpoint_that_is_not_granted_is_refused() {
    // The key file names the fake as its token_uri, but only
    // oauth2.googleapis.com (or the configured `token-uri`) is granted.
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    let out = run_agent(&agent, "", Some(&key));
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!(
            "refused an outbound HTTP request to {}/token: not granted",
            fake.url()
        )) && log.contains("the token endpoint")
            && !log.contains("metadata server:"),
        "{log}"
    );
    assert_eq!(fake.grants(), 0);
}
