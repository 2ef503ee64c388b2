//! The Azure environment against a fake of Azure AD's token endpoint and
//! of IMDS's managed-identity token (`tests/azure_fake/server.py`, started
//! per test): each source of the chain (client secret, workload identity,
//! managed identity) works and is named at start-up; without credentials
//! start-up names each source tried; a wrong secret fails with AAD's
//! `invalid_client` and never shows the secret; the token is kept for many
//! jobs and authorizations; a plugin gets the token only for an origin the
//! environment accepts.
//!
//! Then `registry-acr` against the ACR stand-in (the fake's
//! `/oauth2/exchange` and `/oauth2/token`, the realm of a docker-registry in
//! token-auth mode that the fake serves `/v2/` of, on one origin as
//! `REG.azurecr.io`): a code job built by the docker builder is pushed with
//! the refresh token the host exchanged for the AAD token, run, and its
//! build skipped when resubmitted; one exchange for many jobs; no AAD,
//! refresh or access token, nor the client secret, anywhere the agent
//! writes; a registry without `auth: environment` gets no token; a
//! third-party plugin cannot have the host post a lent token elsewhere.

mod common;
use common::Scratch;
use common::auth_routing::{load, recording_server};
use common::azure::{CLIENT_ID, FEDERATED_TOKEN, Fake, SECRET, TENANT, fake, federated_token_file};
use launch_agent::plugins::PluginHost;
use serde_json::json;
use std::path::Path;
use std::process::Output;

/// The variables of the chain, removed from the agent's environment
/// before a test sets its own.
const AZURE_VARS: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

/// Runs the agent to idle with `environment: azure`, `azure_config` under
/// `plugins.azure.config` and `vars` as its Azure environment variables.
fn run_agent(agent: &Scratch, azure_config: &str, vars: &[(&str, &str)]) -> Output {
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: azure\n  region: westeurope\n\
         plugins:\n  azure:\n    config: {{ {azure_config} }}\n"
    ));
    let mut cmd = agent.run_cmd(&config);
    cmd.arg("-v").env("HOME", agent.path());
    for var in AZURE_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The settings pointing AAD's authority at the fake, IMDS nowhere.
fn authority(fake: &Fake) -> String {
    format!(
        "authority-host: \"{}\", imds-endpoint: \"http://127.0.0.1:1\"",
        fake.url()
    )
}

fn secret_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]
}

#[test]
fn a_client_secret_gets_a_token_kept_for_many_jobs_and_never_shown() {
    let agent = Scratch::new();
    let fake = fake(agent.path());
    for i in 0..3 {
        agent.submit(
            "default",
            &common::shell_job(&format!("echo job {i} in $AZURE_REGION")),
        );
    }
    let out = run_agent(&agent, &authority(&fake), &secret_vars());
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "azure: AAD token obtained from client secret of {CLIENT_ID} in tenant {TENANT}"
        )),
        "{log}"
    );
    // Start-up and three jobs' verifies: one grant, for Resource Manager.
    let grants = fake.grants();
    assert_eq!(grants.len(), 1, "{grants:?}\n{log}");
    assert_eq!(grants[0].0, "secret");
    assert_eq!(grants[0].1, "https://management.azure.com/.default");
    assert_eq!(agent.items().len(), 3);
    let all = agent.everything_written(&out);
    assert!(all.contains("in westeurope"), "the jobs ran: {all}");
    assert!(!all.contains(&grants[0].2), "the token leaked");
    assert!(!all.contains(SECRET), "the secret leaked");
}

#[test]
fn a_wrong_secret_fails_start_up_with_aads_error_and_never_shows_it() {
    let agent = Scratch::new();
    let fake = fake(agent.path());
    let wrong = "wrong~secret~0123456789abcdefghijklmnopq";
    let out = run_agent(
        &agent,
        &authority(&fake),
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", wrong),
        ],
    );
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("client secret (AZURE_CLIENT_SECRET): AAD")
            && log.contains(&format!(
                "refused client {CLIENT_ID}: 401 invalid_client: AADSTS7000215: Invalid client secret provided."
            )),
        "{log}"
    );
    // The chain ends there: a wrong secret is not covered up by IMDS.
    assert!(!log.contains("managed identity (IMDS):"), "{log}");
    assert!(fake.grants().is_empty());
    let all = agent.everything_written(&out);
    assert!(!all.contains(wrong), "the secret leaked");
}

#[test]
fn workload_identity_is_a_source() {
    let agent = Scratch::new();
    let fake = fake(agent.path());
    let file = federated_token_file(agent.path(), FEDERATED_TOKEN);
    let file = file.to_str().unwrap();
    let out = run_agent(
        &agent,
        &authority(&fake),
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_FEDERATED_TOKEN_FILE", file),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "AAD token obtained from workload identity of {CLIENT_ID} in tenant {TENANT} ({file})"
        )),
        "{log}"
    );
    let grants = fake.grants();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].0, "federated");
    assert!(!log.contains(FEDERATED_TOKEN) && !log.contains(&grants[0].2));
}

#[test]
fn a_federated_token_aad_does_not_know_fails_with_its_error() {
    let agent = Scratch::new();
    let fake = fake(agent.path());
    // A JWT for AAD's token exchange, but not the one the fake trusts.
    let other = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly9BenVyZUFEVG9rZW5FeGNoYW5nZSJ9.b3RoZXI";
    let file = federated_token_file(agent.path(), other);
    let out = run_agent(
        &agent,
        &authority(&fake),
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ],
    );
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("workload identity (AZURE_FEDERATED_TOKEN_FILE): AAD")
            && log
                .contains("400 invalid_client: AADSTS70021: No matching federated identity record"),
        "{log}"
    );
    assert!(!log.contains(other), "{log}");
}

#[test]
fn managed_identity_is_a_source_when_nothing_else_is_set_up() {
    let agent = Scratch::new();
    let fake = fake(agent.path());
    let out = run_agent(&agent, &format!("imds-endpoint: \"{}\"", fake.url()), &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "AAD token obtained from managed identity (system-assigned identity, IMDS {})",
            fake.url()
        )),
        "{log}"
    );
    let grants = fake.grants();
    assert_eq!(grants.len(), 1, "{grants:?}");
    // IMDS takes the resource, not the v2 scope.
    assert_eq!(
        (grants[0].0.as_str(), grants[0].1.as_str()),
        ("imds", "https://management.azure.com")
    );
    assert!(!log.contains(&grants[0].2), "{log}");
}

#[test]
fn start_up_without_credentials_names_every_source_tried() {
    let agent = Scratch::new();
    let out = run_agent(&agent, "imds-endpoint: \"http://127.0.0.1:1\"", &[]);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    for said in [
        "azure: no credentials",
        "client secret (AZURE_CLIENT_SECRET): AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET are not set",
        "workload identity (AZURE_FEDERATED_TOKEN_FILE): AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID are not set",
        "managed identity (IMDS): http://127.0.0.1:1 could not be asked",
    ] {
        assert!(log.contains(said), "{said:?} missing from {log}");
    }
}

#[test]
fn azure_authority_host_names_the_authority_and_its_grant() {
    // As for a sovereign cloud: AZURE_AUTHORITY_HOST (no setting) is where
    // the token is asked, and the origin the environment is granted.
    let agent = Scratch::new();
    let fake = fake(agent.path());
    let url = fake.url();
    let mut vars: Vec<(&str, &str)> = secret_vars();
    vars.push(("AZURE_AUTHORITY_HOST", url.as_str()));
    let out = run_agent(&agent, "imds-endpoint: \"http://127.0.0.1:1\"", &vars);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(fake.grants().len(), 1);
}

#[test]
fn plugins_list_shows_the_azure_environments_default_grants() {
    let agent = Scratch::new();
    let config = agent.write_config("environment: { type: azure, region: null }\n");
    let list = |vars: &[(&str, &str)]| {
        let mut cmd = agent.cmd();
        cmd.args([
            "plugins",
            "list",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ]);
        for var in AZURE_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "azure")
            .unwrap_or_else(|| panic!("azure not in {text}"))
            .clone()
    };
    let azure = list(&[]);
    assert_eq!(azure["plugin_name"], "environment-azure");
    assert_eq!(azure["hosts"], json!(["http://169.254.169.254:80"]));
    for var in AZURE_VARS {
        assert!(azure["env"].to_string().contains(var), "{azure}");
    }
    assert!(azure["environment_auth"].as_array().unwrap().is_empty());
    let file = federated_token_file(agent.path(), FEDERATED_TOKEN);
    let azure = list(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
    ]);
    assert_eq!(
        azure["hosts"],
        json!(["https://login.microsoftonline.com:443"])
    );
    assert!(
        azure["dirs"]
            .to_string()
            .contains(file.parent().unwrap().to_str().unwrap()),
        "{azure}"
    );
}

#[tokio::test]
async fn a_plugin_gets_the_token_only_for_origins_the_environment_accepts_and_it_is_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake(dir.path());
    let (accepted_port, accepted_heads) = recording_server();
    let (other_port, other_heads) = recording_server();
    let accepted = format!("http://127.0.0.1:{accepted_port}");
    let other = format!("http://127.0.0.1:{other_port}");
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    // A third-party plugin whose grant marks both origins `auth: environment`.
    let marked = load(
        &mut host,
        "marked",
        &common::test_plugin("hostile"),
        &format!("    grants: {{ environment_auth: [\"{accepted}\", \"{other}\"] }}\n"),
    )
    .await;
    // Managed identity (IMDS at the fake): no variable of the test process
    // is granted to the environment.
    let azure = load(
        &mut host,
        "azure",
        &common::bundle_dir().join("environment-azure.wasm"),
        &format!(
            "    grants: {{ hosts: [\"{url}\"] }}\n    config: {{ imds-endpoint: \"{url}\", authorize-urls: [\"{accepted}\"] }}\n",
            url = fake.url()
        ),
    )
    .await;
    let settings = azure.settings_for(Some(json!({"type": "azure"})));
    host.lend_environment(&azure, settings);
    let get = |url: String| {
        let plugin = marked.clone();
        async move {
            plugin
                .verify_environment(&json!({"mode": "http", "url": url}).to_string(), None)
                .await
        }
    };

    for _ in 0..3 {
        get(format!("{accepted}/oauth2/exchange"))
            .await
            .expect("an accepted origin answers");
    }
    let grants = fake.grants();
    assert_eq!(grants.len(), 1, "one token for three requests: {grants:?}");
    let token = &grants[0].2;
    let heads = accepted_heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for head in &heads {
        assert!(
            head.contains(&format!("authorization: bearer {}", token.to_lowercase())),
            "{head}"
        );
    }

    let refused = get(format!("{other}/v2/")).await.unwrap_err().to_string();
    assert!(refused.contains("HttpRequestDenied"), "{refused}");
    assert!(other_heads.lock().unwrap().is_empty());
    assert!(!refused.contains(token.as_str()), "{refused}");
    assert_eq!(fake.grants().len(), 1);
}

/// `POST url` with the form `fields`; the status and the JSON answer.
async fn post_form(url: &str, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = common::http_client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Percent-encodes a form value.
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `docker ARGS` with the client config in `config_dir`, `stdin` piped in.
fn docker(config_dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .arg("--config")
        .arg(config_dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_acr_stand_in_exchanges_an_aad_token_and_lets_docker_push_with_the_refresh_token() {
    // The ground for registry-acr: AAD token -> ACR refresh token
    // (/oauth2/exchange) -> access token (/oauth2/token), and `docker push`
    // with user 00000000-... and the refresh token, as `az acr login` does.
    let services = common::docker::services();
    let dir = tempfile::tempdir().unwrap();
    let acr = common::azure::acr(dir.path());
    let url = acr.fake.url();
    let (status, aad) = post_form(
        &format!("{url}/{TENANT}/oauth2/v2.0/token"),
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://management.azure.com/.default"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{aad}");
    let aad_token = aad["access_token"].as_str().unwrap();
    let exchange = |token: String| {
        let url = url.clone();
        async move {
            post_form(
                &format!("{url}/oauth2/exchange"),
                &[
                    ("grant_type", "access_token"),
                    ("service", common::azure::ACR_SERVICE),
                    ("tenant", TENANT),
                    ("access_token", token.as_str()),
                ],
            )
            .await
        }
    };
    // A token AAD did not issue, and one for another audience, are refused.
    let (status, refused) = exchange("eyJ0eXAiOiJKV1QifQ.forged".into()).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["errors"][0]["code"], "UNAUTHORIZED");
    let (_, storage) = post_form(
        &format!("{url}/{TENANT}/oauth2/v2.0/token"),
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://storage.azure.com/.default"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    let (status, _) = exchange(storage["access_token"].as_str().unwrap().into()).await;
    assert_eq!(status, 401);

    let (status, answer) = exchange(aad_token.into()).await;
    assert_eq!(status, 200, "{answer}");
    let refresh = answer["refresh_token"].as_str().unwrap().to_string();
    let (status, access) = post_form(
        &format!("{url}/oauth2/token"),
        &[
            ("grant_type", "refresh_token"),
            ("service", common::azure::ACR_SERVICE),
            ("scope", "repository:launch:pull,push"),
            ("refresh_token", refresh.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(
        access["access_token"].as_str().unwrap().split('.').count(),
        3,
        "a JWT: {access}"
    );

    let config_dir = dir.path().join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let registry = acr.registry_address.as_str();
    let login = |password: &str| {
        docker(
            &config_dir,
            &[
                "login",
                registry,
                "--username",
                common::azure::ACR_USER,
                "--password-stdin",
            ],
            password,
        )
    };
    let wrong = login("eyJhbGciOiJSUzI1NiJ9.not-a-refresh-token");
    assert!(!wrong.status.success(), "{wrong:?}");
    let right = login(&refresh);
    assert!(right.status.success(), "{right:?}");
    let image = format!("{registry}/launch:acr-stand-in");
    let tag = docker(
        &config_dir,
        &["tag", services.base_image.as_str(), image.as_str()],
        "",
    );
    assert!(tag.status.success(), "{tag:?}");
    let push = docker(&config_dir, &["push", image.as_str()], "");
    let _ = docker(&config_dir, &["rmi", "--no-prune", image.as_str()], "");
    assert!(
        push.status.success(),
        "{}{}",
        String::from_utf8_lossy(&push.stdout),
        String::from_utf8_lossy(&push.stderr)
    );
    // The push's token came from the fake's realm, with the refresh token.
    let manifest = common::http_client()
        .get(format!(
            "http://{registry}/v2/launch/manifests/acr-stand-in"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manifest.status().as_u16(),
        401,
        "the registry wants a token"
    );
}

/// The W&B-style config of `environment: azure` and `registry: acr`, AAD
/// and the registry pointed at the ACR stand-in. `registry_type` names the
/// registry plugin; `plugins_extra` is added under `plugins:`.
fn acr_config(
    agent: &Scratch,
    acr: &common::azure::Acr,
    registry_type: &str,
    plugins_extra: &str,
) -> std::path::PathBuf {
    let address = &acr.registry_address;
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 1\nstopped_run_timeout: 5\n\
         builder:\n  type: docker\n\
         environment:\n  type: azure\n  region: westeurope\n\
         registry:\n  type: {registry_type}\n  uri: https://{service}/launch\n\
         plugins:\n  azure:\n    config: {{ authority-host: \"{url}\", imds-endpoint: \"http://127.0.0.1:1\", authorize-urls: [\"http://{address}\"] }}\n\
         \x20 acr:\n    config: {{ registry-address: \"{address}\", tenant: \"{TENANT}\" }}\n\
         \x20 docker:\n    grants: {{ hosts: [\"http://{address}\"] }}\n{plugins_extra}",
        service = common::azure::ACR_SERVICE,
        url = acr.fake.url(),
    ))
}

/// Runs the agent on `config` to idle with `vars` as its Azure variables.
fn run_acr_agent(agent: &Scratch, config: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = agent.run_cmd(config);
    cmd.arg("-v").env("HOME", agent.path());
    for var in AZURE_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
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
            common::docker::services().base_image
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("job.sh"),
        format!("echo {marker} in $AZURE_REGION\n"),
    )
    .unwrap();
    dir
}

fn job_log(agent: &Scratch, id: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("agent.log"))
        .unwrap_or_default()
}

#[test]
fn a_code_job_is_pushed_to_acr_with_the_exchanged_refresh_token_then_never_rebuilt() {
    let agent = Scratch::new();
    let acr = common::azure::acr(agent.path());
    let config = acr_config(&agent, &acr, "acr", "");
    let marker = format!("hello-acr-{}", std::process::id());
    let dir = code_dir(&agent, &marker);
    let job = json!({"resource": "local-container", "project": "azure", "uri": dir.display().to_string()});
    let ids: Vec<String> = (0..3).map(|_| agent.submit("default", &job)).collect();
    let out = run_acr_agent(&agent, &config, &secret_vars());
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    for said in [
        format!(
            "registry-acr: {} exchanged the environment's AAD token for a refresh token",
            common::azure::ACR_SERVICE
        ),
        format!(
            "registry-acr: {} takes the refresh token for launch",
            acr.registry_address
        ),
    ] {
        assert!(log.contains(&said), "{said:?} missing from {log}");
    }
    for id in &ids {
        let item = agent.item(id);
        assert_eq!(
            item["state"],
            "finished",
            "{item:#}\n{}",
            job_log(&agent, id)
        );
        let output = agent.run_file(id, "output.log");
        assert!(
            output.contains(&format!("{marker} in westeurope")),
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
    // The image is in the stand-in, under the repository of `registry.uri`.
    let tags = std::fs::read_dir(
        agent
            .path()
            .join("acr-data/docker/registry/v2/repositories/launch/_manifests/tags"),
    )
    .map(|d| d.count())
    .unwrap_or(0);
    assert_eq!(tags, 1, "one image pushed");
    // One AAD token and one exchange for start-up, three logins, three
    // lookups and the push.
    let grants = acr.fake.grants();
    let count = |source: &str| grants.iter().filter(|g| g.0 == source).count();
    assert_eq!(count("secret"), 1, "{grants:?}");
    assert_eq!(acr.exchanges(), 1, "{grants:?}");
    assert!(
        count("acr-access") >= 2,
        "the registry was asked: {grants:?}"
    );

    // No AAD token, refresh token, access token or secret anywhere the
    // agent writes.
    let all = agent.everything_written(&out);
    for (source, _, token) in &grants {
        assert!(!all.contains(token.as_str()), "a {source} token leaked");
    }
    assert!(!all.contains(SECRET), "the secret leaked");
    // The job's image, built and pulled here, is removed (never pruned).
    let listed = std::process::Command::new("docker")
        .args([
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
        ])
        .arg(format!("reference={}/launch", acr.registry_address))
        .output()
        .unwrap();
    let images = String::from_utf8_lossy(&listed.stdout).into_owned();
    let images: Vec<&str> = images.split_whitespace().collect();
    assert!(!images.is_empty(), "the job's image is here");
    common::docker::remove_images_blocking(&images);
}

#[test]
fn with_acr_a_wrong_client_secret_fails_start_up_naming_aads_error_and_exchanges_nothing() {
    let agent = Scratch::new();
    let acr = common::azure::acr(agent.path());
    let config = acr_config(&agent, &acr, "acr", "");
    let wrong = "wrong~secret~acr~0123456789abcdefghijklm";
    let out = run_acr_agent(
        &agent,
        &config,
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", wrong),
        ],
    );
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("401 invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{log}"
    );
    assert_eq!(acr.exchanges(), 0);
    let all = agent.everything_written(&out);
    assert!(!all.contains(wrong), "the secret leaked");
}

#[test]
fn registry_acr_without_the_auth_environment_grant_gets_no_token() {
    let agent = Scratch::new();
    let acr = common::azure::acr(agent.path());
    // The acr component loaded by path (a third-party plugin: no default
    // grants), which may reach the stand-in but not have its token.
    let extra = format!(
        "  their-acr:\n    path: {}\n    config: {{ registry-address: \"{address}\" }}\n    grants: {{ hosts: [\"http://{address}\"] }}\n",
        common::bundle_dir().join("registry-acr.wasm").display(),
        address = acr.registry_address
    );
    let config = acr_config(&agent, &acr, "their-acr", &extra);
    let out = run_acr_agent(&agent, &config, &secret_vars());
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!(
            "may not have the environment's token for http://{}: its grants.environment_auth does not mark it",
            acr.registry_address
        )) && log.contains("the registry is not usable"),
        "{log}"
    );
    assert_eq!(acr.exchanges(), 0);
    let all = agent.everything_written(&out);
    for (source, _, token) in acr.fake.grants() {
        assert!(!all.contains(token.as_str()), "a {source} token leaked");
    }
}

#[tokio::test]
async fn a_third_party_plugin_cannot_have_a_lent_token_posted_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let acr = common::azure::acr(dir.path());
    let stand_in = acr.fake.url();
    let (other_port, other_heads) = recording_server();
    let other = format!("http://127.0.0.1:{other_port}");
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    // A third-party builder that may reach both origins, and have the
    // environment's token for the stand-in's.
    let builder = load(
        &mut host,
        "their-builder",
        &common::test_plugin("hostile-builder"),
        &format!("    grants: {{ hosts: [\"{other}\"], environment_auth: [\"{stand_in}\"] }}\n"),
    )
    .await;
    let azure = load(
        &mut host,
        "azure",
        &common::bundle_dir().join("environment-azure.wasm"),
        &format!(
            "    grants: {{ hosts: [\"{stand_in}\"] }}\n    config: {{ imds-endpoint: \"{stand_in}\", authorize-urls: [\"{stand_in}\"] }}\n"
        ),
    )
    .await;
    let settings = azure.settings_for(Some(json!({"type": "azure"})));
    host.lend_environment(&azure, settings);
    let post = |url: String| {
        let builder = builder.clone();
        let stand_in = stand_in.clone();
        async move {
            use launch_agent::plugins::bindings::Job;
            let request = launch_agent::plugins::loaded::BuildRequest {
                job: Job {
                    id: "post-form".into(),
                    queue: "q".into(),
                    spec_json: "{}".into(),
                },
                settings:
                    json!({"mode": "post-form", "lent-origin": format!("{stand_in}/"), "url": url})
                        .to_string(),
                destination: String::new(),
                source_dir: None,
                source_id: "post-form".into(),
            };
            let plan = launch_agent::plugins::loaded::BuildPlan {
                image_uri: "hostile/post-form:latest".into(),
                dockerfile: String::new(),
                dockerfile_origin: "test".into(),
            };
            builder
                .build(&request, &plan, None, None, None)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let refused = post(format!("{other}/oauth2/exchange")).await;
    assert!(
        refused.contains("NotGranted")
            && refused.contains("may not be used by plugin")
            && refused.contains(&other),
        "{refused}"
    );
    assert!(other_heads.lock().unwrap().is_empty(), "sent elsewhere");
    // To its own origin it goes (the fake wants more fields than these).
    let sent = post(format!("{stand_in}/oauth2/exchange")).await;
    assert!(sent.contains("status=400 secrets=0"), "{sent}");
    assert_eq!(acr.exchanges(), 0);
    for (source, _, token) in acr.fake.grants() {
        assert!(
            !refused.contains(token.as_str()) && !sent.contains(token.as_str()),
            "a {source} token leaked"
        );
    }
}

#[test]
fn plugins_list_shows_registry_acrs_default_grants() {
    let agent = Scratch::new();
    let config = agent.write_config(
        "environment: { type: azure }\nregistry: { type: acr, uri: https://myreg.azurecr.io/launch }\n",
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
    let acr = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "acr")
        .unwrap_or_else(|| panic!("acr not in {text}"));
    assert_eq!(acr["plugin_name"], "registry-acr");
    let origin = json!(["https://myreg.azurecr.io:443"]);
    assert_eq!(acr["environment_auth"], origin, "{acr}");
    assert_eq!(acr["hosts"], origin, "{acr}");
    assert!(
        acr["env"].as_array().unwrap().is_empty() && acr["dirs"].as_array().unwrap().is_empty()
    );
}
