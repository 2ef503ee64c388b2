//! The AWS credential chain (environment variables, web identity, shared
//! files, IMDSv2), with what it found kept in the host until shortly before
//! it expires.
//!
//! Kept under these keys (each value a secret; the secret's *name* carries
//! the source, which is not secret):
//!
//! | key | value |
//! |---|---|
//! | [`ID_KEY`] | the access key id |
//! | [`SECRET_KEY`] | the secret access key |
//! | [`TOKEN_KEY`] | the session token, when there is one |
//! | [`VERIFIED_KEY`] | the access key id STS last verified |

use crate::{Settings, env, sts};
use launch_plugin_sdk::{PluginError, Secret};

/// Key of the kept access key id.
pub const ID_KEY: &str = "aws/access-key-id";
/// Key of the kept secret access key.
pub const SECRET_KEY: &str = "aws/secret-access-key";
/// Key of the kept session token.
pub const TOKEN_KEY: &str = "aws/session-token";
/// Key of the marker of the last verification.
pub const VERIFIED_KEY: &str = "aws/verified";

/// How long static keys (environment, shared files) are kept before the
/// chain is read again (a rotated key is picked up within this).
const STATIC_TTL_SECONDS: u64 = 3600;
/// How long before their expiry temporary credentials are fetched again.
const EXPIRY_MARGIN_SECONDS: u64 = 300;

/// Credentials for one call; the secret parts stay host-held handles.
pub struct Credentials {
    /// Where they came from (`environment variables`, `web identity`, ...).
    pub source: String,
    /// The access key id (not secret, but kept out of logs anyway).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// What a source found, before it is kept.
struct Found {
    source: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// Seconds from now until they expire; none for static keys.
    expires_in: Option<u64>,
}

/// The credentials: those kept, else the chain's first that works, kept.
/// The error names each source tried and why it gave nothing.
pub fn credentials(settings: &Settings) -> Result<Credentials, PluginError> {
    if let (Some(id), Some(secret)) = (
        launch_plugin_sdk::recall(ID_KEY),
        launch_plugin_sdk::recall(SECRET_KEY),
    ) && let Ok(access_key_id) = id.reveal()
    {
        return Ok(Credentials {
            source: id.name(),
            access_key_id,
            secret_access_key: secret,
            session_token: launch_plugin_sdk::recall(TOKEN_KEY),
        });
    }
    let mut tried = Vec::new();
    type Source = fn(&Settings) -> Result<Found, String>;
    let sources: [(&str, Source); 4] = [
        ("environment variables", from_env),
        ("web identity", from_web_identity),
        ("shared files", from_shared_files),
        ("IMDSv2", from_imds),
    ];
    for (name, source) in sources {
        match source(settings) {
            Ok(found) => return Ok(keep(found)),
            Err(why) => tried.push(format!("{name}: {why}")),
        }
    }
    Err(PluginError::agent(format!(
        "aws: no credentials found; tried {}",
        tried.join("; ")
    )))
}

/// Mints and keeps what a source found.
fn keep(found: Found) -> Credentials {
    let ttl = match found.expires_in {
        Some(seconds) => seconds.saturating_sub(EXPIRY_MARGIN_SECONDS),
        None => STATIC_TTL_SECONDS,
    };
    let id = launch_plugin_sdk::mint(&found.source, &found.access_key_id);
    let secret = launch_plugin_sdk::mint(&found.source, &found.secret_access_key);
    let token = found
        .session_token
        .as_deref()
        .map(|t| launch_plugin_sdk::mint(&found.source, t));
    if ttl > 0 {
        let _ = launch_plugin_sdk::keep(ID_KEY, &id, ttl);
        let _ = launch_plugin_sdk::keep(SECRET_KEY, &secret, ttl);
        match &token {
            Some(token) => {
                let _ = launch_plugin_sdk::keep(TOKEN_KEY, token, ttl);
            }
            None => launch_plugin_sdk::forget(TOKEN_KEY),
        }
    }
    launch_plugin_sdk::debug!("aws: credentials from {}", found.source);
    Credentials {
        source: found.source,
        access_key_id: found.access_key_id,
        secret_access_key: secret,
        session_token: token,
    }
}

fn from_env(_: &Settings) -> Result<Found, String> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Found {
            source: "environment variables".into(),
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            expires_in: None,
        }),
        (Some(_), None) => Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into()),
        (None, Some(_)) => Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into()),
        (None, None) => Err("AWS_ACCESS_KEY_ID is not set".into()),
    }
}

fn from_web_identity(settings: &Settings) -> Result<Found, String> {
    let Some(file) = env("AWS_WEB_IDENTITY_TOKEN_FILE") else {
        return Err("AWS_WEB_IDENTITY_TOKEN_FILE is not set".into());
    };
    let Some(role) = env("AWS_ROLE_ARN") else {
        return Err("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into());
    };
    let token = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {file} (AWS_WEB_IDENTITY_TOKEN_FILE): {e}"))?;
    let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "launch-agent".into());
    let found = sts::assume_role_with_web_identity(settings, &role, &session, token.trim())?;
    Ok(Found {
        source: format!("web identity ({role})"),
        access_key_id: found.access_key_id,
        secret_access_key: found.secret_access_key,
        session_token: Some(found.session_token),
        expires_in: found.expires_in,
    })
}

/// The `[section]` of an INI text, as key/value pairs.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = false;
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            found |= inside;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    found.then_some(pairs)
}

fn from_shared_files(_: &Settings) -> Result<Found, String> {
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let home = env("HOME");
    let credentials_file = env("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| home.as_ref().map(|h| format!("{h}/.aws/credentials")));
    let config_file =
        env("AWS_CONFIG_FILE").or_else(|| home.as_ref().map(|h| format!("{h}/.aws/config")));
    let mut why = Vec::new();
    let candidates = [
        (credentials_file, profile.clone()),
        (
            config_file,
            if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            },
        ),
    ];
    for (file, section) in candidates {
        let Some(file) = file else {
            why.push("no HOME to find ~/.aws in".to_string());
            continue;
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                why.push(format!("{file}: {e}"));
                continue;
            }
        };
        let Some(pairs) = ini_section(&text, &section) else {
            why.push(format!("{file} has no [{section}]"));
            continue;
        };
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => {
                return Ok(Found {
                    source: format!("shared file {file} [{section}]"),
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: get("aws_session_token"),
                    expires_in: None,
                });
            }
            _ if get("role_arn").is_some() => why.push(format!(
                "{file} [{section}] assumes a role (role_arn), which this plugin does not do: use web identity or keys"
            )),
            _ => why.push(format!("{file} [{section}] has no aws_access_key_id and aws_secret_access_key")),
        }
    }
    Err(why.join(", "))
}

fn from_imds(settings: &Settings) -> Result<Found, String> {
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("AWS_EC2_METADATA_DISABLED is true".into());
    }
    let base = settings
        .imds_endpoint
        .clone()
        .unwrap_or_else(|| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let http = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let url = format!("{base}{path}");
        let response = launch_plugin_sdk::http::send(method, &url, headers, b"")
            .map_err(|e| format!("{base} is not reachable ({e})"))?;
        if response.status != 200 {
            return Err(format!("{method} {path} answered {}", response.status));
        }
        Ok(response.text())
    };
    let token = http(
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )?;
    let header = [("x-aws-ec2-metadata-token", token.trim())];
    let roles = http(
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &header,
    )?;
    let role = roles
        .lines()
        .next()
        .filter(|r| !r.is_empty())
        .ok_or("the instance has no IAM role")?
        .to_string();
    let body = http(
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &header,
    )?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Imds {
        access_key_id: String,
        secret_access_key: String,
        token: String,
        expiration: String,
    }
    let creds: Imds = serde_json::from_str(&body)
        .map_err(|e| format!("the instance role's credentials are not the JSON expected: {e}"))?;
    Ok(Found {
        source: format!("IMDSv2 (instance role {role})"),
        access_key_id: creds.access_key_id,
        secret_access_key: creds.secret_access_key,
        session_token: Some(creds.token),
        expires_in: sts::seconds_until(&creds.expiration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_are_read_by_name() {
        let text = "[default]\naws_access_key_id = A\n# c\n[profile dev]\naws_access_key_id=B\naws_secret_access_key = S\n";
        assert_eq!(
            ini_section(text, "default").unwrap(),
            [("aws_access_key_id".to_string(), "A".to_string())]
        );
        assert_eq!(ini_section(text, "profile dev").unwrap().len(), 2);
        assert!(ini_section(text, "nope").is_none());
    }
}
