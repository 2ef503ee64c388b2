//! The grants the bundled cloud plugins get without asking: the hosts of
//! their cloud's region, and the environment variables and files of their
//! credential chain; nothing else. (Kept apart from [`super::defaults`],
//! which calls [`for_bundled`] for every component it does not know.)
//!
//! | bundled plugin | `hosts` | `environment_auth` (`auth: environment`) | `env` | `dirs` |
//! |---|---|---|---|---|
//! | `environment-aws` | `https://sts.REGION.amazonaws.com`; IMDS (`http://169.254.169.254`, or the `imds-endpoint` of its `config:`) only when no other source is set up (no `AWS_ACCESS_KEY_ID`, `AWS_WEB_IDENTITY_TOKEN_FILE` or shared file); the `endpoint-url` of its `config:` | — | [`AWS_ENV`] | the shared credentials/config files' dir(s) and the web identity token's, when they exist |
//! | `registry-ecr` | the registry's host (`registry.uri`) and its `registry-address` | `https://api.ecr.REGION.amazonaws.com` (REGION from `registry.uri`) and the `endpoint-url` of its `config:` | — | — |
//! | `environment-gcp` | `https://oauth2.googleapis.com` (or the `token-uri` of its `config:`) when `GOOGLE_APPLICATION_CREDENTIALS` is set; else the metadata server (`http://169.254.169.254`, or the `metadata-endpoint` of its `config:`) | — | [`GCP_ENV`] | the key file's dir, when it exists |
//! | `environment-azure` | AAD's authority (the `authority-host` of its `config:`, else `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com`) when a client secret or workload identity is set up (`AZURE_TENANT_ID` and `AZURE_CLIENT_ID` with `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`); else IMDS (`http://169.254.169.254`, or the `imds-endpoint` of its `config:`) | — | [`AZURE_ENV`] | the federated token file's dir, when it exists |
//! | `registry-gcr` | `https://REGION-docker.pkg.dev` (from `registry.uri`, else `registry.region`) and its `registry-address`; Artifact Registry's API (`https://artifactregistry.googleapis.com`, or the `api-endpoint` of its `config:`) | the same: the registry's origin is where the environment's token is lent for (`lent.bearer-token`), the API's is where `verify` asks whether the repository exists | — | — |
//! | `registry-acr` | `https://REG.azurecr.io` (`.us`, `.cn`; from `registry.uri`) and its `registry-address` | the same: the AAD token is lent for the registry's origin and posted to its `/oauth2/exchange` (`lent.post-form`) | — | — |
//!
//! The region is the `environment:` block's `region`, else `AWS_REGION`,
//! else `AWS_DEFAULT_REGION` (for the environment), and the one in
//! `registry.uri` (for the registry). A `china` region (`cn-...`) uses
//! `amazonaws.com.cn`. A `plugins:` entry of the plugin's name adds to
//! these.

use crate::config::{DirGrant, Grants, LaunchConfig};
use serde_saphyr::{Location, Spanned};
use std::path::PathBuf;

/// The environment variables of the AWS credential chain (and the region).
pub const AWS_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "HOME",
];

/// The environment variables of Google's application-default credentials
/// (and the project).
pub const GCP_ENV: &[&str] = &["GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"];

/// The environment variables of the Azure SDKs' `DefaultAzureCredential`
/// (the sources environment-azure takes).
pub const AZURE_ENV: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

/// AAD's authority in Azure's public cloud.
pub const AZURE_AUTHORITY: &str = "https://login.microsoftonline.com:443";

/// Azure's instance metadata service (managed identity).
pub const AZURE_IMDS: &str = "http://169.254.169.254:80";

/// Google's OAuth2 token endpoint.
pub const GCP_TOKEN_ORIGIN: &str = "https://oauth2.googleapis.com:443";

/// Artifact Registry's API (registry-gcr's repository check).
pub const GCP_ARTIFACT_REGISTRY_API: &str = "https://artifactregistry.googleapis.com:443";

/// Google's metadata server (GCE, GKE workload identity).
pub const GCP_METADATA: &str = "http://169.254.169.254:80";

/// The instance metadata service (IMDSv2).
pub const AWS_IMDS: &str = "http://169.254.169.254:80";

/// The grants of bundled component `component` under `config`; none for a
/// component that is not a bundled cloud plugin.
pub fn for_bundled(component: &str, config: &LaunchConfig) -> Grants {
    match component {
        "environment-aws" => aws_environment(config, &|var| std::env::var_os(var)),
        "registry-ecr" => ecr_registry(config),
        "environment-gcp" => gcp_environment(config, &|var| std::env::var_os(var)),
        "environment-azure" => azure_environment(config, &|var| std::env::var_os(var)),
        "registry-gcr" => gcr_registry(config),
        "registry-acr" => acr_registry(config),
        _ => Grants::default(),
    }
}

fn spanned(values: impl IntoIterator<Item = String>) -> Vec<Spanned<String>> {
    let mut out: Vec<Spanned<String>> = Vec::new();
    for v in values {
        if !out.iter().any(|s| s.value == v) {
            out.push(Spanned::new(v, Location::UNKNOWN, Location::UNKNOWN));
        }
    }
    out
}

/// The `config:` key `key` of the `plugins:` entry `name`, as a string.
fn plugin_setting(config: &LaunchConfig, name: &str, key: &str) -> Option<String> {
    config
        .plugins
        .get(name)?
        .config
        .as_ref()?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// `scheme://host:port` of a URL (`endpoint-url`), for a grant; none when
/// it is not one.
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    Some(format!("{scheme}://{host}:{port}"))
}

/// `amazonaws.com`, or `amazonaws.com.cn` for a China region.
pub fn aws_domain(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

fn aws_environment(
    config: &LaunchConfig,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Grants {
    let text = |name: &str| {
        var(name)
            .and_then(|v| v.into_string().ok())
            .filter(|v| !v.is_empty())
    };
    let region = config
        .environment
        .as_ref()
        .and_then(|e| e.region.clone())
        .or_else(|| text("AWS_REGION"))
        .or_else(|| text("AWS_DEFAULT_REGION"));
    let mut hosts = Vec::new();
    if let Some(region) = &region {
        hosts.push(format!("https://sts.{region}.{}:443", aws_domain(region)));
    }
    if let Some(origin) = plugin_setting(config, "aws", "endpoint-url").and_then(|u| origin_of(&u))
    {
        hosts.push(origin);
    }
    let home = text("HOME").map(PathBuf::from);
    let shared: Vec<PathBuf> = [
        text("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials"))),
        text("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config"))),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.is_file())
    .collect();
    let token_file = text("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from);
    let mut dirs: Vec<DirGrant> = Vec::new();
    for file in shared
        .iter()
        .chain(token_file.iter().filter(|p| p.is_file()))
    {
        if let Some(dir) = file.parent().filter(|d| d.is_absolute()) {
            let dir = dir.to_path_buf();
            if !dirs.iter().any(|d| d.host_path() == dir) {
                dirs.push(DirGrant::Path(dir));
            }
        }
    }
    let other_source =
        text("AWS_ACCESS_KEY_ID").is_some() || token_file.is_some() || !shared.is_empty();
    let imds_off =
        text("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !other_source && !imds_off {
        // The configured metadata service (`imds-endpoint`), else AWS's.
        let imds = plugin_setting(config, "aws", "imds-endpoint")
            .and_then(|u| origin_of(&u))
            .unwrap_or_else(|| AWS_IMDS.to_string());
        hosts.push(imds);
    }
    Grants {
        hosts: spanned(hosts),
        env: AWS_ENV.iter().map(|v| v.to_string()).collect(),
        dirs,
        ..Grants::default()
    }
}

fn gcp_environment(
    config: &LaunchConfig,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Grants {
    let key_file = var("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    if let Some(file) = &key_file {
        hosts.push(
            plugin_setting(config, "gcp", "token-uri")
                .and_then(|u| origin_of(&u))
                .unwrap_or_else(|| GCP_TOKEN_ORIGIN.to_string()),
        );
        if let Some(dir) = file.parent().filter(|d| d.is_absolute() && file.is_file()) {
            dirs.push(DirGrant::Path(dir.to_path_buf()));
        }
    } else {
        hosts.push(
            plugin_setting(config, "gcp", "metadata-endpoint")
                .and_then(|u| origin_of(&u))
                .unwrap_or_else(|| GCP_METADATA.to_string()),
        );
    }
    Grants {
        hosts: spanned(hosts),
        env: GCP_ENV.iter().map(|v| v.to_string()).collect(),
        dirs,
        ..Grants::default()
    }
}

fn azure_environment(
    config: &LaunchConfig,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Grants {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    let token_file = var("AZURE_FEDERATED_TOKEN_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let app = set("AZURE_TENANT_ID") && set("AZURE_CLIENT_ID");
    let secret = app && set("AZURE_CLIENT_SECRET");
    let workload = app && token_file.is_some();
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    if secret || workload {
        hosts.push(
            plugin_setting(config, "azure", "authority-host")
                .or_else(|| {
                    var("AZURE_AUTHORITY_HOST")
                        .and_then(|v| v.into_string().ok())
                        .filter(|v| !v.is_empty())
                })
                .and_then(|u| origin_of(&u))
                .unwrap_or_else(|| AZURE_AUTHORITY.to_string()),
        );
    } else {
        hosts.push(
            plugin_setting(config, "azure", "imds-endpoint")
                .and_then(|u| origin_of(&u))
                .unwrap_or_else(|| AZURE_IMDS.to_string()),
        );
    }
    if let Some(file) = token_file.filter(|_| workload)
        && let Some(dir) = file.parent().filter(|d| d.is_absolute() && file.is_file())
    {
        dirs.push(DirGrant::Path(dir.to_path_buf()));
    }
    Grants {
        hosts: spanned(hosts),
        env: AZURE_ENV.iter().map(|v| v.to_string()).collect(),
        dirs,
        ..Grants::default()
    }
}

/// The account, region and domain of an ECR `registry.uri`
/// (`ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY`, a leading
/// `https://` dropped), if it is one.
pub fn ecr_registry_host(uri: &str) -> Option<(String, String, String)> {
    let bare = uri.trim().trim_start_matches("https://");
    let host = bare.split('/').next()?;
    let mut labels = host.splitn(5, '.');
    let account = labels.next()?;
    let (dkr, ecr, region, domain) = (
        labels.next()?,
        labels.next()?,
        labels.next()?,
        labels.next()?,
    );
    (dkr == "dkr" && ecr == "ecr" && (domain == "amazonaws.com" || domain == "amazonaws.com.cn"))
        .then(|| (account.to_string(), region.to_string(), domain.to_string()))
}

fn ecr_registry(config: &LaunchConfig) -> Grants {
    let uri = config.registry.as_ref().and_then(|r| r.uri.clone());
    let mut hosts = super::defaults::registry_host_patterns(config);
    if let Some(address) = plugin_setting(config, "ecr", "registry-address") {
        let local = address.starts_with("127.0.0.1") || address.starts_with("localhost");
        hosts.push(format!("https://{address}"));
        if local {
            hosts.push(format!("http://{address}"));
        }
    }
    let mut auth = Vec::new();
    if let Some((_, region, domain)) = uri.as_deref().and_then(ecr_registry_host) {
        auth.push(format!("https://api.ecr.{region}.{domain}:443"));
    }
    if let Some(origin) = plugin_setting(config, "ecr", "endpoint-url").and_then(|u| origin_of(&u))
    {
        auth.push(origin);
    }
    Grants {
        hosts: spanned(hosts),
        environment_auth: spanned(auth),
        ..Grants::default()
    }
}

/// The Artifact Registry host of the config's registry
/// (`REGION-docker.pkg.dev`): `registry.uri`'s (a leading `https://`
/// dropped), else the one of `registry.region`.
pub fn gcr_registry_host(config: &LaunchConfig) -> Option<String> {
    let registry = config.registry.as_ref()?;
    match &registry.uri {
        Some(uri) => uri
            .trim()
            .trim_start_matches("https://")
            .split('/')
            .next()
            .filter(|host| host.ends_with("-docker.pkg.dev"))
            .map(str::to_string),
        None => registry
            .region
            .as_ref()
            .map(|region| format!("{region}-docker.pkg.dev")),
    }
}

fn gcr_registry(config: &LaunchConfig) -> Grants {
    let mut origins = Vec::new();
    if let Some(host) = gcr_registry_host(config) {
        origins.push(format!("https://{host}:443"));
    }
    if let Some(address) = plugin_setting(config, "gcr", "registry-address") {
        let local = address.starts_with("127.0.0.1") || address.starts_with("localhost");
        let scheme = if local { "http" } else { "https" };
        origins.push(format!("{scheme}://{address}"));
    }
    // Artifact Registry's API, for `verify`'s repository check (none for
    // a `registry.uri` that is not Artifact Registry's: it is refused).
    if !origins.is_empty() {
        origins.push(
            plugin_setting(config, "gcr", "api-endpoint")
                .and_then(|u| origin_of(&u))
                .unwrap_or_else(|| GCP_ARTIFACT_REGISTRY_API.to_string()),
        );
    }
    Grants {
        hosts: spanned(origins.clone()),
        environment_auth: spanned(origins),
        ..Grants::default()
    }
}

/// The ACR login server of the config's registry (`REG.azurecr.io`, or
/// `.azurecr.us`, `.azurecr.cn`): `registry.uri`'s host (a leading
/// `https://` dropped), lowercase.
pub fn acr_registry_host(config: &LaunchConfig) -> Option<String> {
    let uri = config.registry.as_ref()?.uri.as_ref()?;
    uri.trim()
        .trim_start_matches("https://")
        .split('/')
        .next()
        .map(str::to_ascii_lowercase)
        .filter(|host| {
            [".azurecr.io", ".azurecr.us", ".azurecr.cn"]
                .iter()
                .any(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
        })
}

fn acr_registry(config: &LaunchConfig) -> Grants {
    let mut origins = Vec::new();
    if let Some(host) = acr_registry_host(config) {
        origins.push(format!("https://{host}:443"));
    }
    if let Some(address) = plugin_setting(config, "acr", "registry-address") {
        let local = address.starts_with("127.0.0.1") || address.starts_with("localhost");
        let scheme = if local { "http" } else { "https" };
        origins.push(format!("{scheme}://{address}"));
    }
    Grants {
        hosts: spanned(origins.clone()),
        environment_auth: spanned(origins),
        ..Grants::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(yaml: &str) -> LaunchConfig {
        LaunchConfig::parse(yaml, Path::new("test.yaml")).unwrap()
    }

    fn values(list: &[Spanned<String>]) -> Vec<&str> {
        list.iter().map(|s| s.value.as_str()).collect()
    }

    #[test]
    fn aws_gets_its_regions_sts_and_imds_only_without_another_source() {
        let c = config("environment: { type: aws, region: eu-west-1 }\n");
        let none = |_: &str| None;
        let grants = aws_environment(&c, &none);
        assert_eq!(
            values(&grants.hosts),
            ["https://sts.eu-west-1.amazonaws.com:443", AWS_IMDS]
        );
        assert!(grants.env.contains(&"AWS_SECRET_ACCESS_KEY".to_string()));
        assert!(grants.environment_auth.is_empty() && !grants.docker);
        let keys = |v: &str| (v == "AWS_ACCESS_KEY_ID").then(|| "AKIA".into());
        let grants = aws_environment(&c, &keys);
        assert_eq!(
            values(&grants.hosts),
            ["https://sts.eu-west-1.amazonaws.com:443"]
        );
        let c = config("environment: { type: aws, region: cn-north-1 }\n");
        assert_eq!(
            values(&aws_environment(&c, &keys).hosts),
            ["https://sts.cn-north-1.amazonaws.com.cn:443"]
        );
    }

    #[test]
    fn gcp_gets_the_token_endpoint_with_a_key_file_else_the_metadata_server() {
        let c = config("environment: { type: gcp, project: p }\n");
        let none = |_: &str| None;
        let grants = gcp_environment(&c, &none);
        assert_eq!(values(&grants.hosts), [GCP_METADATA]);
        assert!(grants.dirs.is_empty() && grants.environment_auth.is_empty());
        let dir = std::env::temp_dir();
        let key = dir.join("cloud-defaults-gcp-key.json");
        std::fs::write(&key, "{}").unwrap();
        let with_key =
            |v: &str| (v == "GOOGLE_APPLICATION_CREDENTIALS").then(|| key.clone().into());
        let grants = gcp_environment(&c, &with_key);
        assert_eq!(values(&grants.hosts), [GCP_TOKEN_ORIGIN]);
        assert_eq!(grants.dirs.len(), 1);
        assert_eq!(grants.dirs[0].host_path(), dir.as_path());
        assert!(
            grants
                .env
                .contains(&"GOOGLE_APPLICATION_CREDENTIALS".to_string())
        );
        let c = config(
            "environment: { type: gcp }\nplugins:\n  gcp:\n    config: { token-uri: \"http://127.0.0.1:9/token\" }\n",
        );
        assert_eq!(
            values(&gcp_environment(&c, &with_key).hosts),
            ["http://127.0.0.1:9"]
        );
        let _ = std::fs::remove_file(&key);
    }

    #[test]
    fn azure_gets_the_authority_with_a_secret_or_federated_token_else_imds() {
        let c = config("environment: { type: azure }\n");
        let none = |_: &str| None;
        let grants = azure_environment(&c, &none);
        assert_eq!(values(&grants.hosts), [AZURE_IMDS]);
        assert!(grants.dirs.is_empty() && grants.environment_auth.is_empty());
        assert!(grants.env.contains(&"AZURE_CLIENT_SECRET".to_string()));
        let secret = |v: &str| {
            matches!(
                v,
                "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" | "AZURE_CLIENT_SECRET"
            )
            .then(|| "x".into())
        };
        assert_eq!(
            values(&azure_environment(&c, &secret).hosts),
            [AZURE_AUTHORITY]
        );
        // A secret without its tenant is not a source: IMDS is.
        let half = |v: &str| (v == "AZURE_CLIENT_SECRET").then(|| "x".into());
        assert_eq!(values(&azure_environment(&c, &half).hosts), [AZURE_IMDS]);
        let dir = std::env::temp_dir();
        let file = dir.join("cloud-defaults-azure-token");
        std::fs::write(&file, "jwt").unwrap();
        let workload = |v: &str| match v {
            "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" => Some("x".into()),
            "AZURE_FEDERATED_TOKEN_FILE" => Some(file.clone().into()),
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.us".into()),
            _ => None,
        };
        let grants = azure_environment(&c, &workload);
        assert_eq!(
            values(&grants.hosts),
            ["https://login.microsoftonline.us:443"]
        );
        assert_eq!(grants.dirs.len(), 1);
        assert_eq!(grants.dirs[0].host_path(), dir.as_path());
        let c = config(
            "environment: { type: azure }\nplugins:\n  azure:\n    config: { authority-host: \"http://127.0.0.1:9\", imds-endpoint: \"http://127.0.0.1:8\" }\n",
        );
        assert_eq!(
            values(&azure_environment(&c, &workload).hosts),
            ["http://127.0.0.1:9"]
        );
        assert_eq!(
            values(&azure_environment(&c, &none).hosts),
            ["http://127.0.0.1:8"]
        );
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn acr_gets_its_registry_marked_auth_environment() {
        let c = config("registry: { type: acr, uri: \"https://MyReg.azurecr.io/launch\" }\n");
        let grants = acr_registry(&c);
        assert_eq!(values(&grants.hosts), ["https://myreg.azurecr.io:443"]);
        assert_eq!(
            values(&grants.environment_auth),
            ["https://myreg.azurecr.io:443"]
        );
        let c = config(
            "registry: { type: acr, uri: reg.azurecr.cn/launch }\n\
             plugins:\n  acr:\n    config: { registry-address: \"127.0.0.1:5000\" }\n",
        );
        assert_eq!(
            values(&acr_registry(&c).environment_auth),
            ["https://reg.azurecr.cn:443", "http://127.0.0.1:5000"]
        );
        let c = config("registry: { type: acr, uri: \"registry.example.com/launch\" }\n");
        assert!(acr_registry(&c).environment_auth.is_empty());
        let c = config("registry: { type: acr, uri: \"evil.com/x.azurecr.io\" }\n");
        assert!(acr_registry(&c).hosts.is_empty());
    }

    #[test]
    fn gcr_gets_its_regions_registry_marked_auth_environment() {
        let c = config(
            "registry: { type: gcr, uri: \"https://europe-west4-docker.pkg.dev/p/launch/app\" }\n",
        );
        let grants = gcr_registry(&c);
        let expected = [
            "https://europe-west4-docker.pkg.dev:443",
            GCP_ARTIFACT_REGISTRY_API,
        ];
        assert_eq!(values(&grants.hosts), expected);
        assert_eq!(values(&grants.environment_auth), expected);
        let c = config(
            "registry: { type: gcr, repository: launch, image-name: app, region: us-east1, project: p }\n\
             plugins:\n  gcr:\n    config: { registry-address: \"127.0.0.1:5000\", api-endpoint: \"http://127.0.0.1:5001\" }\n",
        );
        assert_eq!(
            values(&gcr_registry(&c).environment_auth),
            [
                "https://us-east1-docker.pkg.dev:443",
                "http://127.0.0.1:5000",
                "http://127.0.0.1:5001"
            ]
        );
        let c = config("registry: { type: gcr, uri: \"registry.example.com/a/b/c\" }\n");
        assert!(gcr_registry(&c).environment_auth.is_empty());
    }

    #[test]
    fn ecr_gets_its_registry_and_its_regions_api_marked_auth_environment() {
        let c = config(
            "registry: { type: ecr, uri: \"https://123456789012.dkr.ecr.us-east-2.amazonaws.com/launch\" }\n",
        );
        let grants = ecr_registry(&c);
        assert_eq!(
            values(&grants.hosts),
            ["https://123456789012.dkr.ecr.us-east-2.amazonaws.com:443"]
        );
        assert_eq!(
            values(&grants.environment_auth),
            ["https://api.ecr.us-east-2.amazonaws.com:443"]
        );
        assert_eq!(
            ecr_registry_host("1.dkr.ecr.cn-north-1.amazonaws.com.cn/x"),
            Some(("1".into(), "cn-north-1".into(), "amazonaws.com.cn".into()))
        );
        assert_eq!(ecr_registry_host("registry.example.com/x"), None);
    }
}
