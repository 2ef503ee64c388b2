//! The GCP environment against a fake of Google's OAuth2 token endpoint and
//! metadata server (`tests/gcp_fake/server.py`, started per test): a
//! service-account key (a test RSA key made with openssl here) whose RS256
//! JWT, signed inside the plugin, the fake verifies; the metadata server as
//! the other source; the token kept for many jobs; failures naming the
//! source and Google's error, never the key or the token. Then
//! `registry-gcr` (Artifact Registry) end to end: a job pushed to a
//! `docker-registry` that takes only the fake's token, run, and its build
//! skipped when resubmitted.

mod common;
use common::docker::services;
use common::gcp::{
    EMAIL, Fake, Registry, TOKEN, anonymous_status, artifact_registry, fake, key_file, rsa_key,
};
use common::{Scratch, shell_job};
use serde_json::json;
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
    let everything = agent.everything_written(&out);
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

/// The W&B-style config of `environment: gcp` and `registry: gcr`, the
/// token endpoint and the registry pointed at the stand-ins. `registry_type`
/// names the registry plugin; `plugins_extra` is added under `plugins:`.
fn gcr_config(
    agent: &Scratch,
    fake: &Fake,
    registry: &Registry,
    registry_type: &str,
    plugins_extra: &str,
) -> std::path::PathBuf {
    let address = &registry.address;
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 1\nstopped_run_timeout: 5\n\
         builder:\n  type: docker\n\
         environment:\n  type: gcp\n  region: us-central1\n\
         registry:\n  type: {registry_type}\n  uri: https://us-central1-docker.pkg.dev/fake-project/launch/app\n\
         plugins:\n  gcp:\n    config: {{ token-uri: \"{url}/token\", authorize-urls: [\"http://{address}\", \"{url}\"] }}\n\
         \x20 gcr:\n    config: {{ registry-address: \"{address}\", api-endpoint: \"{url}\" }}\n\
         \x20 docker:\n    grants: {{ hosts: [\"http://{address}\"] }}\n{plugins_extra}",
        url = fake.url(),
    ))
}

/// Runs the agent on `config` to idle with the service-account key `key`.
fn run_gcr_agent(agent: &Scratch, config: &Path, key: &Path) -> Output {
    let mut cmd = agent.run_cmd(config);
    cmd.arg("-v")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env("HOME", agent.path())
        .env("GOOGLE_APPLICATION_CREDENTIALS", key);
    cmd.output().unwrap()
}

/// A code directory whose image prints `marker` (unique per test, so its
/// tag is too).
fn code_dir(agent: &Scratch, marker: &str) -> std::path::PathBuf {
    let dir = agent.path().join("code");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!(
            "FROM {}\nCOPY job.sh /job.sh\nENTRYPOINT [\"sh\", \"/job.sh\"]\n",
            services().base_image
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("job.sh"),
        format!("echo {marker} in $GOOGLE_CLOUD_REGION\n"),
    )
    .unwrap();
    dir
}

fn code_job(dir: &Path) -> serde_json::Value {
    json!({"resource": "local-container", "project": "gcp", "uri": dir.display().to_string()})
}

fn job_log(agent: &Scratch, id: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("agent.log"))
        .unwrap_or_default()
}

#[test]
fn a_code_job_is_pushed_to_artifact_registry_with_the_lent_token_then_never_rebuilt() {
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    let registry = artifact_registry(agent.path());
    // The stand-in refuses anyone without the token.
    assert_eq!(anonymous_status(&registry.address), 401);
    let config = gcr_config(&agent, &fake, &registry, "gcr", "");
    let marker = format!("hello-gcr-{}", std::process::id());
    let dir = code_dir(&agent, &marker);
    let ids: Vec<String> = (0..3)
        .map(|_| agent.submit("default", &code_job(&dir)))
        .collect();
    let out = run_gcr_agent(&agent, &config, &key);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "registry-gcr: {} takes the environment's access token for fake-project/launch/app",
            registry.address
        )) && log.contains(
            "registry-gcr: Artifact Registry has repository projects/fake-project/locations/us-central1/repositories/launch"
        ),
        "{log}"
    );
    for id in &ids {
        let item = agent.item(id);
        assert_eq!(
            item["state"],
            "finished",
            "{item:#}\n{}",
            job_log(&agent, id)
        );
        let output =
            std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("output.log"))
                .unwrap_or_default();
        assert!(
            output.contains(&format!("{marker} in us-central1")),
            "{output}"
        );
    }
    assert!(
        job_log(&agent, &ids[0]).contains("build: built"),
        "{}",
        job_log(&agent, &ids[0])
    );
    for id in &ids[1..] {
        let log = job_log(&agent, id);
        assert!(
            log.contains("build: skipped") && log.contains("already exists"),
            "{log}"
        );
    }
    // One token for start-up, three logins and three lookups.
    assert_eq!(fake.grants(), 1, "{log}");

    // No token or key anywhere the agent writes.
    let everything = agent.everything_written(&out);
    assert!(!everything.contains(TOKEN), "the token leaked");
    assert!(!everything.contains(pem_line(&pem)), "the key leaked");
}

#[test]
fn start_up_fails_naming_a_repository_artifact_registry_does_not_have() {
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    let registry = artifact_registry(agent.path());
    let config = gcr_config(&agent, &fake, &registry, "gcr", "");
    // The same config, a repository that is not there.
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/fake-project/launch/app", "/fake-project/missing/app");
    let config = agent.write_config(&yaml);
    let out = run_gcr_agent(&agent, &config, &key);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(
            "registry-gcr: Artifact Registry has no repository missing in project fake-project, \
             location us-central1 (404 NOT_FOUND: Requested entity was not found.)"
        ) && log.contains("gcloud artifacts repositories create missing"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "{log}");
}

/// A third-party registry (the gcr component loaded by path, so it gets no
/// default grants) with `grants_yaml`.
fn third_party(registry: &Registry, grants_yaml: &str) -> String {
    format!(
        "  their-gcr:\n    path: {}\n    config: {{ registry-address: \"{}\" }}\n    grants: {grants_yaml}\n",
        common::bundle_dir().join("registry-gcr.wasm").display(),
        registry.address
    )
}

#[test]
fn a_registry_plugin_without_the_auth_environment_grant_gets_no_token() {
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    let registry = artifact_registry(agent.path());
    // It may reach the registry (hosts) but the origin is not marked
    // `auth: environment`: the host lends it nothing.
    let extra = third_party(
        &registry,
        &format!("{{ hosts: [\"http://{}\"] }}", registry.address),
    );
    let config = gcr_config(&agent, &fake, &registry, "their-gcr", &extra);
    let out = run_gcr_agent(&agent, &config, &key);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!(
            "may not have the environment's token for http://{}: its grants.environment_auth does not mark it",
            registry.address
        )) && log.contains("the registry is not usable"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "{log}");
}

#[test]
fn the_environment_lends_no_token_for_an_origin_that_is_not_googles() {
    let agent = Scratch::new();
    let pem = rsa_key(agent.path(), "trusted");
    let fake = fake(agent.path());
    let key = key_file(agent.path(), &fake, &pem);
    let registry = artifact_registry(agent.path());
    // Marked `auth: environment` by the operator, but the environment does
    // not take the origin for Google's (no `authorize-urls` for it).
    let address = &registry.address;
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: gcp\n  region: us-central1\n\
         registry:\n  type: gcr\n  uri: us-central1-docker.pkg.dev/fake-project/launch/app\n\
         plugins:\n  gcp:\n    config: {{ token-uri: \"{}/token\" }}\n\
         \x20 gcr:\n    config: {{ registry-address: \"{address}\" }}\n",
        fake.url()
    ));
    let out = run_gcr_agent(&agent, &config, &key);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("refusing to lend a Google token for") && log.contains(address.as_str()),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "{log}");
}

#[test]
fn plugins_list_shows_registry_gcrs_default_grants() {
    let agent = Scratch::new();
    let config = agent.write_config(
        "environment: { type: gcp, region: europe-west4, project: p }\n\
         registry: { type: gcr, uri: europe-west4-docker.pkg.dev/p/launch/app }\n",
    );
    let out = agent.run(&[
        "plugins",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let gcr = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "gcr")
        .unwrap_or_else(|| panic!("gcr not in {text}"));
    assert_eq!(gcr["plugin_name"], "registry-gcr");
    let origin = json!([
        "https://europe-west4-docker.pkg.dev:443",
        "https://artifactregistry.googleapis.com:443"
    ]);
    assert_eq!(gcr["environment_auth"], origin, "{gcr}");
    assert_eq!(gcr["hosts"], origin, "{gcr}");
    assert!(
        gcr["env"].as_array().unwrap().is_empty() && gcr["dirs"].as_array().unwrap().is_empty()
    );
}
