//! The AWS environment and the ECR registry end to end, against moto
//! (STS and ECR's API, SigV4 checked) and a registry that takes ECR's token
//! (`scripts/services-moto.sh start`), with the real Docker engine
//! (`scripts/services.sh start`): build with builder-docker, push with the
//! ECR token the environment's credentials obtained, run with
//! local-container; no plugin but `environment-aws` ever holds the key.
//!
//! The tests take turns (one moto, and some count its calls).

mod common;
use common::Scratch;
use common::docker::services;
use common::moto::moto;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The W&B-style config: `environment: aws`, `registry: ecr`, the
/// endpoints pointed at the stand-ins. `registry_yaml` replaces the
/// registry block and `plugins_extra` is added under `plugins:`.
fn config(agent: &Scratch, registry_type: &str, plugins_extra: &str) -> PathBuf {
    let m = moto();
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 1\nstopped_run_timeout: 5\n\
         builder:\n  type: docker\n\
         environment:\n  type: aws\n  region: {region}\n\
         registry:\n  type: {registry_type}\n  uri: {uri}\n\
         plugins:\n  aws:\n    config: {{ endpoint-url: \"{url}\" }}\n\
         \x20 ecr:\n    config: {{ endpoint-url: \"{url}\", registry-address: \"{registry}\" }}\n\
         \x20 docker:\n    grants: {{ hosts: [\"http://{registry}\"] }}\n{plugins_extra}",
        region = m.region,
        uri = m.ecr_uri(),
        url = m.url,
        registry = m.ecr_registry,
    ))
}

/// Runs the agent to idle with `aws` as the AWS environment variables
/// (nothing else of AWS: a scratch HOME, no shared files, no IMDS).
fn run_agent(agent: &Scratch, config: &Path, aws: &[(&str, &str)]) -> Output {
    let mut cmd = agent.cmd();
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
        "-v",
    ]);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", agent.path());
    for (k, v) in aws {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn keys() -> Vec<(&'static str, &'static str)> {
    let m = moto();
    vec![
        ("AWS_ACCESS_KEY_ID", m.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", m.secret_access_key.as_str()),
    ]
}

/// A code directory whose image prints `marker` (unique per test, so its
/// tag is too).
fn code_dir(agent: &Scratch, marker: &str) -> PathBuf {
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
        format!("echo {marker} in $AWS_REGION\n"),
    )
    .unwrap();
    dir
}

fn job(dir: &Path) -> serde_json::Value {
    json!({"resource": "local-container", "project": "aws", "uri": dir.display().to_string()})
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn job_log(agent: &Scratch, id: &str) -> String {
    read(agent.state_dir().join("runs").join(id).join("agent.log"))
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_code_job_is_pushed_to_ecr_and_run_then_rebuilt_never_and_the_token_is_fetched_once() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    let config = config(&agent, "ecr", "");
    let marker = format!("hello-ecr-{}", uuid_like());
    let dir = code_dir(&agent, &marker);
    let first = agent.submit("default", &job(&dir));
    let second = agent.submit("default", &job(&dir));
    let third = agent.submit("default", &job(&dir));
    let before = m.token_count();
    let out = run_agent(&agent, &config, &keys());
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    // Start-up named the credential source and checked the repository.
    assert!(
        log.contains("credentials from environment variables verified with STS")
            && log.contains("arn:aws:iam::123456789012:user/launch"),
        "{log}"
    );
    assert!(log.contains("repository launch exists"), "{log}");
    for id in [&first, &second, &third] {
        let item = agent.item(id);
        assert_eq!(
            item["state"],
            "finished",
            "{item:#}\n{}",
            job_log(&agent, id)
        );
        let output = read(agent.state_dir().join("runs").join(id).join("output.log"));
        assert!(
            output.contains(&format!("{marker} in us-east-1")),
            "{output}"
        );
    }
    assert!(
        job_log(&agent, &first).contains("build: built"),
        "{}",
        job_log(&agent, &first)
    );
    for id in [&second, &third] {
        let log = job_log(&agent, id);
        assert!(
            log.contains("build: skipped") && log.contains("already exists"),
            "{log}"
        );
    }
    // One token for the whole agent: three logins and three lookups.
    assert_eq!(m.token_count() - before, 1, "{log}");

    // No key, token or password anywhere the agent writes.
    let token_password = format!("{}-auth-token", m.account);
    let records = agent.run(&["queue", "list", "--json"]).stdout;
    let mut files = Vec::new();
    all_files(&agent.state_dir(), &mut files);
    files.push(("agent stderr".into(), out.stderr.clone()));
    files.push(("agent stdout".into(), out.stdout.clone()));
    files.push(("queue records".into(), records));
    for (what, bytes) in &files {
        for secret in [
            m.secret_access_key.as_str(),
            m.access_key_id.as_str(),
            token_password.as_str(),
        ] {
            assert!(
                !contains(bytes, secret),
                "a secret leaked into {}",
                what.display()
            );
        }
    }
}

#[test]
fn start_up_without_credentials_names_every_source_tried() {
    let _turn = turn();
    let agent = Scratch::new();
    let config = config(&agent, "ecr", "");
    let out = run_agent(&agent, &config, &[]);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    for said in [
        "the environment is not usable",
        "no credentials found",
        "environment variables: AWS_ACCESS_KEY_ID is not set",
        "web identity: AWS_WEB_IDENTITY_TOKEN_FILE is not set",
        "shared files:",
        "IMDSv2:",
    ] {
        assert!(log.contains(said), "{said:?} missing from {log}");
    }
}

#[test]
fn a_wrong_secret_fails_start_up_with_the_clouds_error_and_never_shows_it() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    let config = config(&agent, "ecr", "");
    let wrong = "wr0ngSecretKeyValue/abcdefghijklmnopqrstu";
    let out = run_agent(
        &agent,
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", m.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", wrong),
        ],
    );
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("STS GetCallerIdentity refused the credentials from environment variables")
            && log.contains("403 SignatureDoesNotMatch"),
        "{log}"
    );
    assert!(!log.contains(wrong), "{log}");
    let unknown = run_agent(
        &agent,
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00"),
            ("AWS_SECRET_ACCESS_KEY", wrong),
        ],
    );
    let log = String::from_utf8_lossy(&unknown.stderr);
    assert!(log.contains("InvalidClientTokenId"), "{log}");
    assert!(!log.contains(wrong), "{log}");
}

/// The start-up log of an agent with `environment: aws` and no registry,
/// its AWS variables `aws`, `aws_config` under `plugins.aws`.
fn start_up(agent: &Scratch, aws_config: &str, aws: &[(&str, &str)]) -> (bool, String) {
    let m = moto();
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: aws\n  region: {}\nplugins:\n  aws:\n{aws_config}",
        m.region
    ));
    let out = run_agent(agent, &config, aws);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shared_credentials_file_is_a_source() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    std::fs::create_dir_all(agent.path().join(".aws")).unwrap();
    std::fs::write(
        agent.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = wrong\n[launch]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            m.access_key_id, m.secret_access_key
        ),
    )
    .unwrap();
    let (ok, log) = start_up(
        &agent,
        &format!("    config: {{ endpoint-url: \"{}\" }}\n", m.url),
        &[("AWS_PROFILE", "launch")],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("credentials from shared file") && log.contains("[launch]"),
        "{log}"
    );
    assert!(!log.contains(&m.secret_access_key));
}

/// A fake of EC2's instance metadata service (IMDSv2, what
/// `http://169.254.169.254` answers on an instance with a role): a session
/// token for `PUT /latest/api/token`, then, with that token only, the
/// role's name and its temporary credentials (moto's, so STS takes them).
fn fake_imds() -> u16 {
    use std::io::Write;
    let m = moto().clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let head = common::http_fake::read_request_text(&mut stream);
            let lower = head.to_lowercase();
            let with_token = lower.contains("x-aws-ec2-metadata-token: imds-session-token");
            let (status, body) = if head.starts_with("PUT /latest/api/token")
                && lower.contains("x-aws-ec2-metadata-token-ttl-seconds:")
            {
                ("200 OK", "imds-session-token".to_string())
            } else if !with_token {
                ("401 Unauthorized", String::new())
            } else if head
                .starts_with("GET /latest/meta-data/iam/security-credentials/launch-role ")
            {
                (
                    "200 OK",
                    format!(
                        r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"2099-01-01T00:00:00Z"}}"#,
                        m.session.0, m.session.1, m.session.2
                    ),
                )
            } else if head.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                ("200 OK", "launch-role".to_string())
            } else {
                ("404 Not Found", String::new())
            };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

#[test]
fn imdsv2_is_a_source_when_nothing_else_is_set_up() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    let port = fake_imds();
    let (ok, log) = start_up(
        &agent,
        &format!(
            "    config: {{ endpoint-url: \"{}\", imds-endpoint: \"http://127.0.0.1:{port}\" }}\n",
            m.url
        ),
        &[],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("credentials from IMDSv2 (instance role launch-role)"),
        "{log}"
    );
    assert!(
        !log.contains(&m.session.1) && !log.contains(&m.session.2),
        "{log}"
    );
}

/// A third-party registry (the ECR component loaded by path, so it gets
/// no default grants) with `grants_yaml`.
fn third_party(grants_yaml: &str) -> String {
    let m = moto();
    format!(
        "  their-ecr:\n    path: {}\n    config: {{ endpoint-url: \"{}\", registry-address: \"{}\" }}\n    grants: {grants_yaml}\n",
        common::bundle_dir().join("registry-ecr.wasm").display(),
        m.url,
        m.ecr_registry
    )
}

#[test]
fn a_registry_plugin_without_the_auth_environment_grant_gets_no_credential() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    // It may reach moto (hosts), but its requests are not marked: they go
    // out unsigned, and moto refuses them.
    let config = config(
        &agent,
        "their-ecr",
        &third_party(&format!("{{ hosts: [\"{}\"] }}", m.url)),
    );
    let before = m.token_count();
    let out = run_agent(&agent, &config, &keys());
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // The request left without an `Authorization` header: AWS answers
    // that with 403 MissingAuthenticationTokenException, moto with a 500
    // (its KeyError on the missing header). Either way nothing was signed.
    assert!(
        log.contains("the registry is not usable")
            && (log.contains("DescribeRepositories answered 500")
                || log.contains("DescribeRepositories answered 403")),
        "{log}"
    );
    assert!(!log.contains("repository launch exists"), "{log}");
    assert_eq!(m.token_count(), before);
}

#[test]
fn a_plugin_cannot_have_the_environment_sign_for_a_host_that_is_not_the_clouds() {
    let _turn = turn();
    let m = moto();
    let agent = Scratch::new();
    // Marked `auth: environment`, but the host is not AWS's nor the
    // environment's endpoint: the environment refuses to sign, and the
    // host sends nothing.
    let other = format!("http://{}", m.ecr_registry);
    let extra = format!(
        "  their-ecr:\n    path: {}\n    config: {{ endpoint-url: \"{other}\", registry-address: \"{}\" }}\n    grants: {{ environment_auth: [\"{other}\"] }}\n",
        common::bundle_dir().join("registry-ecr.wasm").display(),
        m.ecr_registry
    );
    let config = config(&agent, "their-ecr", &extra);
    let out = run_agent(&agent, &config, &keys());
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("refusing to sign a request to") && log.contains("the registry is not usable"),
        "{log}"
    );
}

#[test]
fn plugins_list_shows_the_cloud_plugins_default_grants() {
    let agent = Scratch::new();
    let config = agent.write_config(
        "environment: { type: aws, region: eu-west-1 }\nregistry: { type: ecr, uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/launch }\n",
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
    let find = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .clone()
    };
    let aws = find("aws");
    assert_eq!(aws["plugin_name"], "environment-aws");
    assert!(
        aws["hosts"]
            .to_string()
            .contains("https://sts.eu-west-1.amazonaws.com:443"),
        "{aws}"
    );
    assert!(
        aws["env"].to_string().contains("AWS_SECRET_ACCESS_KEY"),
        "{aws}"
    );
    let ecr = find("ecr");
    assert_eq!(
        ecr["environment_auth"],
        json!(["https://api.ecr.eu-west-1.amazonaws.com:443"])
    );
    assert_eq!(
        ecr["hosts"],
        json!(["https://123456789012.dkr.ecr.eu-west-1.amazonaws.com:443"])
    );
    assert!(
        ecr["env"].as_array().unwrap().is_empty() && ecr["secrets"].as_array().unwrap().is_empty()
    );
}

/// A value unique to this run.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
