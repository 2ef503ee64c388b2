//! `environment-aws`: the AWS environment of the default bundle
//! (`environment: {type: aws, region}`, as W&B configures it).
//!
//! # What it does
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up, each job) | resolves the credential chain, then STS `GetCallerIdentity` (SigV4); logs which source it used and the caller's ARN; on failure names each source tried and why, or the STS error (`InvalidClientTokenId`, `SignatureDoesNotMatch`), never a secret. A success is kept 15 minutes, so jobs do not ask STS again |
//! | `run-env` | `AWS_REGION` and `AWS_DEFAULT_REGION` when a region is set |
//! | `authorizer.bearer-token` | refused: AWS has no bearer token, it signs each request |
//! | `authorizer.authorize` | SigV4 for another plugin's request to a host its grant marks `auth: environment` (ECR's API for `registry-ecr`): only AWS hosts (`*.amazonaws.com`, `*.amazonaws.com.cn`) or the `endpoint-url` |
//!
//! # The credential chain, in order (as the AWS SDKs)
//!
//! | source | how |
//! |---|---|
//! | environment variables | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` |
//! | web identity (EKS IRSA) | `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` → STS `AssumeRoleWithWebIdentity` |
//! | shared files | `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`) then `AWS_CONFIG_FILE` (`~/.aws/config`), profile `AWS_PROFILE` (`default`) |
//! | IMDSv2 (EC2) | `PUT /latest/api/token`, then the instance role's credentials |
//!
//! Credentials are kept in the host (`secrets.keep`) until five minutes
//! before they expire (an hour for static keys, so a rotated key is picked
//! up), never fetched per job; nothing here ever holds them longer than a
//! call.
//!
//! # Settings (`environment:` block plus `plugins.aws.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `region` | the region (else `AWS_REGION`, `AWS_DEFAULT_REGION`) |
//! | `endpoint-url` | one endpoint for every AWS service (a VPC endpoint, GovCloud, a stand-in such as moto) |
//! | `imds-endpoint` | the instance metadata service (default `http://169.254.169.254`) |

mod chain;
mod sign;
mod sts;

use launch_plugin_sdk::authorizer::{Authorizer, HttpRequest, LentToken};
use launch_plugin_sdk::environment::Environment;
use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, Stage};
use serde::Deserialize;

/// How long a successful `GetCallerIdentity` spares the next `verify` one.
const VERIFIED_FOR_SECONDS: u64 = 15 * 60;

/// The plugin.
struct AwsEnvironment;

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Settings {
    /// `aws` (or the name the config gave this plugin).
    #[serde(rename = "type")]
    _kind: String,
    /// The region.
    pub region: Option<String>,
    /// W&B's key for GCP, accepted and ignored.
    #[serde(rename = "project")]
    _project: Option<String>,
    /// One endpoint for every service.
    pub endpoint_url: Option<String>,
    /// The instance metadata service.
    pub imds_endpoint: Option<String>,
}

impl Settings {
    pub(crate) fn parse(settings: &str) -> Result<Settings, PluginError> {
        let mut s: Settings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        if s.region.as_deref().is_none_or(str::is_empty) {
            s.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
        }
        if let Some(url) = &s.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(PluginError::agent(format!(
                "`endpoint-url` {url:?} must be an http:// or https:// URL"
            )));
        }
        Ok(s)
    }

    /// The region, or an error naming where to set it.
    pub(crate) fn region(&self) -> Result<&str, PluginError> {
        self.region.as_deref().ok_or_else(|| {
            PluginError::agent(
                "aws: no region: set `environment.region` in launch-config.yaml (or AWS_REGION)",
            )
        })
    }

    /// `amazonaws.com`, or `amazonaws.com.cn` in a China region.
    pub(crate) fn domain(region: &str) -> &'static str {
        if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }

    /// The STS endpoint: `endpoint-url`, else the region's.
    pub(crate) fn sts_url(&self) -> Result<String, PluginError> {
        if let Some(url) = &self.endpoint_url {
            return Ok(url.trim_end_matches('/').to_string() + "/");
        }
        let region = self.region()?;
        Ok(format!("https://sts.{region}.{}/", Self::domain(region)))
    }
}

/// An environment variable the grants let the plugin see, if set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Plugin for AwsEnvironment {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "environment-aws".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "AWS: the standard credential chain, verified with STS; SigV4 for requests marked auth: environment".into(),
        }
    }
}

impl Environment for AwsEnvironment {
    fn verify(settings: String) -> Result<(), PluginError> {
        let settings = Settings::parse(&settings)?;
        settings.region()?;
        let credentials = chain::credentials(&settings)?;
        if let Some(marker) = launch_plugin_sdk::recall(chain::VERIFIED_KEY)
            && marker.reveal().ok().as_deref() == Some(credentials.access_key_id.as_str())
        {
            return Ok(());
        }
        let arn = sts::get_caller_identity(&settings, &credentials)?;
        launch_plugin_sdk::info!(
            "aws: credentials from {} verified with STS GetCallerIdentity: {arn}",
            credentials.source
        );
        let marker = launch_plugin_sdk::mint("aws-verified", &credentials.access_key_id);
        let _ = launch_plugin_sdk::keep(chain::VERIFIED_KEY, &marker, VERIFIED_FOR_SECONDS);
        Ok(())
    }

    fn run_env(settings: String, _job: Job) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        Ok(settings
            .region
            .map(|r| {
                vec![
                    ("AWS_REGION".to_string(), r.clone()),
                    ("AWS_DEFAULT_REGION".to_string(), r),
                ]
            })
            .unwrap_or_default())
    }
}

impl Authorizer for AwsEnvironment {
    fn authorize(
        settings: String,
        request: HttpRequest,
    ) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        let target = sign::Target::of(&settings, &request)?;
        let credentials = chain::credentials(&settings)?;
        sign::sign(&credentials, &target, &request)
    }

    /// AWS has no bearer token to lend: its requests are signed (SigV4),
    /// each for itself, through `authorize`.
    fn bearer_token(_settings: String, url: String) -> Result<LentToken, PluginError> {
        Err(PluginError::agent(format!(
            "aws: no bearer token to lend for {}: AWS signs each request (SigV4) instead; \
             mark the API host `auth: environment` and send the request, which the host has \
             signed on the way out",
            launch_plugin_sdk::http::shown(&url)
        )))
    }
}

launch_plugin_sdk::export_authorizing_environment!(AwsEnvironment);
