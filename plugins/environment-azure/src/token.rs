//! AAD tokens, one per scope: kept in the host until five minutes before
//! they expire, else obtained from the first source of the chain that is
//! set up, in the order of the Azure SDKs' `DefaultAzureCredential`:
//!
//! | source | set up by | how |
//! |---|---|---|
//! | client secret | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` | `POST {authority}/{tenant}/oauth2/v2.0/token`, `grant_type=client_credentials` with `client_secret` |
//! | workload identity (AKS) | `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` | the same endpoint, the file's token as `client_assertion` (`urn:ietf:params:oauth:client-assertion-type:jwt-bearer`); the file is read again for each token (the kubelet rotates it) |
//! | managed identity | — | IMDS: `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with `Metadata: true` (`client_id=AZURE_CLIENT_ID` for a user-assigned identity) |
//!
//! As `DefaultAzureCredential`: a source that is not set up is skipped,
//! one that is set up and fails ends the chain with its error (a wrong
//! secret is not covered up by the next source).
//!
//! Kept under [`key_of`]`(scope)`: the token, a secret whose *name* is the
//! source (not secret: a value would be redacted from every log).

use crate::Settings;
use launch_plugin_sdk::{PluginError, Secret};
use serde::Deserialize;
use std::time::Duration;

/// How long before its expiry a token is fetched again.
const EXPIRY_MARGIN_SECONDS: u64 = 300;
/// How long IMDS gets to answer (it is not there off Azure).
const IMDS_TIMEOUT: Duration = Duration::from_secs(5);
/// The client assertion type of a federated (workload identity) token.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token for one call; the token stays a host-held handle.
pub struct Token {
    /// Where it came from (`client secret of CLIENT in tenant TENANT`, ...).
    pub source: String,
    /// The AAD access token.
    pub token: Secret,
    /// Seconds until it is fetched again (five minutes before it expires):
    /// how long a token lent to another plugin may be used.
    pub expires_in: u64,
}

/// The key a scope's token is kept under.
pub fn key_of(scope: &str) -> String {
    format!("azure/token {scope}")
}

/// What a source found, before it is kept.
struct Found {
    source: String,
    token: String,
    expires_in: u64,
}

/// Why a source gave nothing: it is not set up (the chain goes on), or it
/// is and failed (the chain ends).
enum Miss {
    NotSetUp(String),
    Failed(String),
}

/// A source of the chain.
type Source = fn(&Settings, &str) -> Result<Found, Miss>;

/// The token for `scope`: the kept one, else the first source's that is
/// set up, kept. The error names each source tried and why it gave nothing.
pub fn token_for(settings: &Settings, scope: &str) -> Result<Token, PluginError> {
    let key = key_of(scope);
    if let Some(token) = launch_plugin_sdk::recall(&key) {
        // The kept handle's name is `expires=<unix seconds> <source>`.
        let name = token.name();
        let (expires_at, source) = name
            .strip_prefix("expires=")
            .and_then(|rest| rest.split_once(' '))
            .map(|(at, source)| (at.parse::<u64>().unwrap_or(0), source.to_string()))
            .unwrap_or((0, name.clone()));
        return Ok(Token {
            source,
            token,
            expires_in: expires_at.saturating_sub(now()),
        });
    }
    let sources: [(&str, Source); 3] = [
        ("client secret (AZURE_CLIENT_SECRET)", from_client_secret),
        (
            "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            from_workload_identity,
        ),
        ("managed identity (IMDS)", from_managed_identity),
    ];
    let mut tried = Vec::new();
    for (name, source) in sources {
        match source(settings, scope) {
            Ok(found) => return Ok(keep(&key, found)),
            Err(Miss::NotSetUp(why)) => tried.push(format!("{name}: {why}")),
            Err(Miss::Failed(why)) => {
                tried.push(format!("{name}: {why}"));
                return Err(PluginError::agent(format!(
                    "azure: no AAD token for {scope}: {}",
                    tried.join("; ")
                )));
            }
        }
    }
    Err(PluginError::agent(format!(
        "azure: no credentials: {}",
        tried.join("; ")
    )))
}

fn keep(key: &str, found: Found) -> Token {
    let ttl = found.expires_in.saturating_sub(EXPIRY_MARGIN_SECONDS);
    let name = format!("expires={} {}", now() + ttl, found.source);
    let token = launch_plugin_sdk::mint(&name, &found.token);
    if ttl > 0 {
        let _ = launch_plugin_sdk::keep(key, &token, ttl);
    }
    Token {
        source: found.source,
        token,
        expires_in: ttl,
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token endpoint's answer: AAD's (RFC 6749 §5.1 / §5.2, `expires_in` a
/// number) or IMDS's (`expires_in` a string).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenAnswer {
    fn expires_in(&self) -> u64 {
        match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(3600),
            _ => 3600,
        }
    }
}

/// `STATUS error: the first line of error_description` (AAD's has a trace
/// id and timestamps on later lines), or the status alone.
fn refusal(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<TokenAnswer>(body) {
        Ok(TokenAnswer {
            error: Some(e),
            error_description,
            ..
        }) => match error_description
            .as_deref()
            .and_then(|d| d.lines().next())
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            Some(d) => format!("{status} {e}: {d}"),
            None => format!("{status} {e}"),
        },
        _ => format!("answered {status}"),
    }
}

/// `AZURE_TENANT_ID`, checked to be a tenant id or domain (it goes into
/// the URL's path).
fn tenant() -> Result<Option<String>, Miss> {
    let Some(tenant) = crate::env("AZURE_TENANT_ID") else {
        return Ok(None);
    };
    if tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        Ok(Some(tenant))
    } else {
        Err(Miss::Failed(format!(
            "AZURE_TENANT_ID {tenant:?} is not a tenant id or domain (letters, digits, '-' and '.' only)"
        )))
    }
}

/// Names the variables of `vars` that are not set, or `None` when all are.
fn missing(vars: &[&str]) -> Option<String> {
    let unset: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| crate::env(v).is_none())
        .collect();
    match unset.as_slice() {
        [] => None,
        [one] => Some(format!("{one} is not set")),
        many => Some(format!("{} are not set", many.join(", "))),
    }
}

/// Asks AAD's token endpoint of `tenant` with the form `fields`; `who` names
/// the client in errors.
fn ask_aad(
    settings: &Settings,
    tenant: &str,
    who: &str,
    source: String,
    fields: &[(&str, &str)],
) -> Result<Found, Miss> {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", settings.authority());
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let response = launch_plugin_sdk::http::send(
        "POST",
        &url,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ],
        body.as_bytes(),
    )
    .map_err(|e| {
        Miss::Failed(format!(
            "AAD's token endpoint {url} could not be asked: {e}"
        ))
    })?;
    if response.status != 200 {
        return Err(Miss::Failed(format!(
            "AAD ({url}) refused {who}: {}",
            refusal(response.status, &response.body)
        )));
    }
    let answer: TokenAnswer = serde_json::from_slice(&response.body)
        .map_err(|_| Miss::Failed(format!("AAD ({url}) answered something not JSON")))?;
    let expires_in = answer.expires_in();
    let token = answer
        .access_token
        .ok_or_else(|| Miss::Failed(format!("AAD ({url}) answered no access_token")))?;
    Ok(Found {
        source,
        token,
        expires_in,
    })
}

fn from_client_secret(settings: &Settings, scope: &str) -> Result<Found, Miss> {
    if let Some(why) = missing(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]) {
        return Err(Miss::NotSetUp(why));
    }
    let (Some(tenant), Some(client), Some(secret)) = (
        tenant()?,
        crate::env("AZURE_CLIENT_ID"),
        crate::env("AZURE_CLIENT_SECRET"),
    ) else {
        return Err(Miss::NotSetUp("not set".into()));
    };
    ask_aad(
        settings,
        &tenant,
        &format!("client {client}"),
        format!("client secret of {client} in tenant {tenant}"),
        &[
            ("client_id", client.as_str()),
            ("client_secret", secret.as_str()),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ],
    )
}

fn from_workload_identity(settings: &Settings, scope: &str) -> Result<Found, Miss> {
    if let Some(why) = missing(&[
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
    ]) {
        return Err(Miss::NotSetUp(why));
    }
    let (Some(tenant), Some(client), Some(file)) = (
        tenant()?,
        crate::env("AZURE_CLIENT_ID"),
        crate::env("AZURE_FEDERATED_TOKEN_FILE"),
    ) else {
        return Err(Miss::NotSetUp("not set".into()));
    };
    let assertion = std::fs::read_to_string(&file).map_err(|e| {
        Miss::Failed(format!(
            "cannot read the federated token file {file}: {e} (is its directory granted?)"
        ))
    })?;
    let assertion = assertion.trim();
    if assertion.is_empty() {
        return Err(Miss::Failed(format!(
            "the federated token file {file} is empty"
        )));
    }
    ask_aad(
        settings,
        &tenant,
        &format!("client {client}"),
        format!("workload identity of {client} in tenant {tenant} ({file})"),
        &[
            ("client_id", client.as_str()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ],
    )
}

fn from_managed_identity(settings: &Settings, scope: &str) -> Result<Found, Miss> {
    let base = settings.imds_endpoint();
    // IMDS takes the v1 `resource`, the scope without `/.default`.
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("api-version", "2018-02-01");
    query.append_pair("resource", resource);
    let client = crate::env("AZURE_CLIENT_ID");
    if let Some(client) = &client {
        query.append_pair("client_id", client);
    }
    let url = format!("{base}/metadata/identity/oauth2/token?{}", query.finish());
    let response = launch_plugin_sdk::http::get(&url)
        .header("metadata", "true")
        .timeout(IMDS_TIMEOUT)
        .send()
        .map_err(|e| Miss::NotSetUp(format!("{base} could not be asked: {}", e.message)))?;
    if response.status != 200 {
        return Err(Miss::Failed(format!(
            "IMDS ({base}) refused: {}",
            refusal(response.status, &response.body)
        )));
    }
    let answer: TokenAnswer = serde_json::from_slice(&response.body)
        .map_err(|_| Miss::Failed(format!("IMDS ({base}) answered something not JSON")))?;
    let expires_in = answer.expires_in();
    let token = answer
        .access_token
        .ok_or_else(|| Miss::Failed(format!("IMDS ({base}) answered no access_token")))?;
    let identity = match &client {
        Some(client) => format!("user-assigned identity {client}"),
        None => "system-assigned identity".to_string(),
    };
    Ok(Found {
        source: format!("managed identity ({identity}, IMDS {base})"),
        token,
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aads_refusal_is_its_error_and_the_first_line_of_its_description() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[7000215]}"#;
        assert_eq!(
            refusal(401, body),
            "401 invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(refusal(502, b"<html>"), "answered 502");
    }

    #[test]
    fn imds_expires_in_is_a_string_and_aads_a_number() {
        let imds: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":"86399"}"#).unwrap();
        assert_eq!(imds.expires_in(), 86399);
        let aad: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":3599}"#).unwrap();
        assert_eq!(aad.expires_in(), 3599);
    }
}
