//! Opt-in live tests against the real clouds: the agent's start-up (the
//! environment's credential chain, and the registry's `verify` when a
//! registry is given) and one job, with real credentials. Each test returns
//! early, printing a note, unless its variables are set, so the suite runs
//! them always and they pass without credentials. The variables are the
//! tests' own (not `GOOGLE_APPLICATION_CREDENTIALS` or `AZURE_*`), so that
//! credentials a developer has in their shell never send the suite to a
//! cloud by surprise.
//!
//! | test | runs when set | optional | checks |
//! |---|---|---|---|
//! | `aws_live` | `LAUNCH_AGENT_LIVE_AWS_ACCESS_KEY_ID`, `LAUNCH_AGENT_LIVE_AWS_SECRET_ACCESS_KEY` (and `LAUNCH_AGENT_LIVE_AWS_SESSION_TOKEN` for temporary keys): an IAM user's or role's keys | `LAUNCH_AGENT_LIVE_ECR_URI`: `ACCT.dkr.ecr.REGION.amazonaws.com/REPO`, a repository the keys can read; `LAUNCH_AGENT_LIVE_AWS_REGION` (default: the URI's region, else `us-east-1`) | start-up verifies the keys with STS `GetCallerIdentity` (and, with the URI, registry-ecr's `verify`: `DescribeRepositories` finds it); a shell job runs; no secret key or session token in the agent's output, queue records or state dir |
//! | `gcp_live` | `LAUNCH_AGENT_LIVE_GCP_KEY`: a service-account key file (JSON) | `LAUNCH_AGENT_LIVE_GCR_URI`: `REGION-docker.pkg.dev/PROJECT/REPO/IMAGE`, a repository the account can push to (Artifact Registry Writer); `LAUNCH_AGENT_LIVE_GCP_REGION` (default: the URI's region, else `us-central1`) | start-up obtains a token from Google (and, with the URI, registry-gcr's `verify`: the registry takes the lent token and Artifact Registry's API has the repository); a shell job runs; no token or key in the agent's output, queue records or state dir |
//! | `azure_live` | `LAUNCH_AGENT_LIVE_AZURE_TENANT_ID`, `LAUNCH_AGENT_LIVE_AZURE_CLIENT_ID`, `LAUNCH_AGENT_LIVE_AZURE_CLIENT_SECRET`: a service principal | `LAUNCH_AGENT_LIVE_ACR_URI`: `REG.azurecr.io/REPO`, a registry the principal can push to (AcrPush) | start-up obtains an AAD token (and, with the URI, registry-acr's `verify`: the exchange for a refresh token works and the registry takes it); a shell job runs; no secret in the agent's output, queue records or state dir |
//!
//! Run, e.g.: `LAUNCH_AGENT_LIVE_GCP_KEY=~/sa.json cargo test -p launch-agent --test cloud_live -- --nocapture`.

mod common;
use common::Scratch;
use std::process::Output;

/// The variable `name`, if set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs the agent to idle on `yaml` with `vars` set and the clouds'
/// ambient variables removed; one shell job printing `$ENV_VAR` is queued.
fn run_live(agent: &Scratch, yaml: &str, vars: &[(&str, String)], env_var: &str) -> Output {
    let id = agent.submit(
        "default",
        &common::shell_job(&format!("echo live job in ${env_var}")),
    );
    let config = agent.write_config(yaml);
    let mut cmd = agent.run_cmd(&config);
    cmd.arg("-v").env("HOME", agent.path());
    for ambient in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    ] {
        cmd.env_remove(ambient);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_eq!(agent.item(&id)["state"], "finished", "{log}");
    out
}

#[test]
fn aws_live() {
    let (Some(key_id), Some(secret)) = (
        var("LAUNCH_AGENT_LIVE_AWS_ACCESS_KEY_ID"),
        var("LAUNCH_AGENT_LIVE_AWS_SECRET_ACCESS_KEY"),
    ) else {
        println!(
            "aws_live: skipped (set LAUNCH_AGENT_LIVE_AWS_ACCESS_KEY_ID and \
             LAUNCH_AGENT_LIVE_AWS_SECRET_ACCESS_KEY to run it)"
        );
        return;
    };
    let token = var("LAUNCH_AGENT_LIVE_AWS_SESSION_TOKEN");
    let uri = var("LAUNCH_AGENT_LIVE_ECR_URI");
    let region = var("LAUNCH_AGENT_LIVE_AWS_REGION")
        .or_else(|| {
            let host = uri.as_deref()?.trim_start_matches("https://");
            let host = host.split('/').next()?;
            Some(host.split('.').nth(3)?.to_string())
        })
        .unwrap_or_else(|| "us-east-1".to_string());
    let agent = Scratch::new();
    let mut yaml = format!("queues: [default]\nenvironment:\n  type: aws\n  region: {region}\n");
    if let Some(uri) = &uri {
        yaml.push_str(&format!("registry:\n  type: ecr\n  uri: {uri}\n"));
    }
    let mut vars = vec![
        ("AWS_ACCESS_KEY_ID", key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", secret.clone()),
    ];
    if let Some(token) = &token {
        vars.push(("AWS_SESSION_TOKEN", token.clone()));
    }
    let out = run_live(&agent, &yaml, &vars, "AWS_REGION");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("credentials from environment variables verified with STS GetCallerIdentity"),
        "{log}"
    );
    if let Some(uri) = &uri {
        let repository = uri.split_once('/').map(|(_, r)| r).unwrap_or_default();
        assert!(
            log.contains(&format!("repository {repository} exists")),
            "{log}"
        );
    }
    let all = agent.everything_written(&out);
    assert!(all.contains(&format!("live job in {region}")), "{all}");
    assert!(!all.contains(&secret), "the secret key leaked");
    if let Some(token) = &token {
        assert!(!all.contains(token.as_str()), "the session token leaked");
    }
}

#[test]
fn gcp_live() {
    let Some(key) = var("LAUNCH_AGENT_LIVE_GCP_KEY") else {
        println!(
            "gcp_live: skipped (set LAUNCH_AGENT_LIVE_GCP_KEY to a service-account key file to run it)"
        );
        return;
    };
    let uri = var("LAUNCH_AGENT_LIVE_GCR_URI");
    let region = var("LAUNCH_AGENT_LIVE_GCP_REGION")
        .or_else(|| {
            let host = uri
                .as_deref()?
                .trim_start_matches("https://")
                .split('/')
                .next()?;
            host.strip_suffix("-docker.pkg.dev").map(str::to_string)
        })
        .unwrap_or_else(|| "us-central1".to_string());
    let agent = Scratch::new();
    let mut yaml = format!("queues: [default]\nenvironment:\n  type: gcp\n  region: {region}\n");
    if let Some(uri) = &uri {
        yaml.push_str(&format!("registry:\n  type: gcr\n  uri: {uri}\n"));
    }
    let out = run_live(
        &agent,
        &yaml,
        &[("GOOGLE_APPLICATION_CREDENTIALS", key.clone())],
        "GOOGLE_CLOUD_REGION",
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("access token obtained from service-account key of"),
        "{log}"
    );
    if uri.is_some() {
        assert!(
            log.contains("registry-gcr: Artifact Registry has repository"),
            "{log}"
        );
    }
    let all = agent.everything_written(&out);
    assert!(all.contains(&format!("live job in {region}")), "{all}");
    let key_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let private_key = key_json["private_key"].as_str().unwrap_or_default();
    let line = private_key.lines().nth(1).unwrap_or("no key line");
    assert!(!all.contains(line), "the key leaked");
    assert!(!all.contains("ya29."), "an access token leaked");
}

#[test]
fn azure_live() {
    let (Some(tenant), Some(client), Some(secret)) = (
        var("LAUNCH_AGENT_LIVE_AZURE_TENANT_ID"),
        var("LAUNCH_AGENT_LIVE_AZURE_CLIENT_ID"),
        var("LAUNCH_AGENT_LIVE_AZURE_CLIENT_SECRET"),
    ) else {
        println!(
            "azure_live: skipped (set LAUNCH_AGENT_LIVE_AZURE_TENANT_ID, _CLIENT_ID and \
             _CLIENT_SECRET to a service principal to run it)"
        );
        return;
    };
    let uri = var("LAUNCH_AGENT_LIVE_ACR_URI");
    let agent = Scratch::new();
    let mut yaml =
        "queues: [default]\nenvironment:\n  type: azure\n  region: live-region\n".to_string();
    if let Some(uri) = &uri {
        yaml.push_str(&format!("registry:\n  type: acr\n  uri: {uri}\n"));
    }
    let out = run_live(
        &agent,
        &yaml,
        &[
            ("AZURE_TENANT_ID", tenant.clone()),
            ("AZURE_CLIENT_ID", client.clone()),
            ("AZURE_CLIENT_SECRET", secret.clone()),
        ],
        "AZURE_REGION",
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains(&format!(
            "azure: AAD token obtained from client secret of {client} in tenant {tenant}"
        )),
        "{log}"
    );
    if uri.is_some() {
        assert!(
            log.contains("exchanged the environment's AAD token for a refresh token")
                && log.contains("takes the refresh token for"),
            "{log}"
        );
    }
    let all = agent.everything_written(&out);
    assert!(all.contains("live job in live-region"), "{all}");
    assert!(!all.contains(&secret), "the secret leaked");
    // An AAD or ACR token is a JWT: `eyJ0eXAi` / `eyJhbGci` starts its header.
    assert!(
        !all.contains("eyJ0eXAiOiJKV1Qi") && !all.contains("eyJhbGciOiJSUzI1NiIs"),
        "a token leaked"
    );
}
