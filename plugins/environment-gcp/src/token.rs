//! The access token: kept in the host until five minutes before it
//! expires, else obtained from the first source that works, in the order
//! of Google's application-default credentials (and, as they do, only the
//! key file when `GOOGLE_APPLICATION_CREDENTIALS` is set):
//!
//! | source | how |
//! |---|---|
//! | service-account key | `GOOGLE_APPLICATION_CREDENTIALS` names the key file (JSON, `type: service_account`); an RS256 JWT signed here is exchanged at the token endpoint (`token-uri` of the settings, else the key's `token_uri`) |
//! | metadata server (GKE workload identity, GCE) | `GET /computeMetadata/v1/instance/service-accounts/default/token` with `Metadata-Flavor: Google` |
//!
//! Kept under [`TOKEN_KEY`]: the access token, a secret whose *name*
//! carries what is not secret, `expires=UNIX project=PROJECT source=SOURCE`
//! (when it is fetched again, in Unix seconds; the project the source
//! named: the key file's `project_id`, the metadata server's).
//! (A project kept as a secret's value would be redacted from every log.)

use crate::Settings;
use launch_plugin_sdk::{PluginError, Secret};
use serde::Deserialize;

/// Key of the kept access token.
pub const TOKEN_KEY: &str = "gcp/access-token";
/// How long before its expiry the token is fetched again.
const EXPIRY_MARGIN_SECONDS: u64 = 300;

/// A token for one call; the token stays a host-held handle.
pub struct Token {
    /// Where it came from (`service-account key ...`, `metadata server`).
    pub source: String,
    /// The access token.
    pub token: Secret,
    /// The project the source names, if any.
    pub project: Option<String>,
    /// Seconds until it is fetched again (five minutes before it expires):
    /// how long a token lent to another plugin may be used.
    pub expires_in: u64,
}

/// A source: what it found, or why it found nothing.
type Source = fn(&Settings) -> Result<Found, String>;

/// What a source found, before it is kept.
struct Found {
    source: String,
    token: String,
    expires_in: u64,
    project: Option<String>,
}

/// The token: the kept one, else the first source's that works, kept.
/// The error names each source tried and why it gave nothing.
pub fn token(settings: &Settings) -> Result<Token, PluginError> {
    if let Some(token) = launch_plugin_sdk::recall(TOKEN_KEY) {
        let name = token.name();
        let (expires_at, rest) = name
            .strip_prefix("expires=")
            .and_then(|rest| rest.split_once(' '))
            .map(|(at, rest)| (at.parse::<u64>().unwrap_or(0), rest))
            .unwrap_or((0, name.as_str()));
        let (project, source) = rest
            .strip_prefix("project=")
            .and_then(|rest| rest.split_once(" source="))
            .unwrap_or(("", rest));
        return Ok(Token {
            source: source.to_string(),
            project: Some(project.to_string()).filter(|p| !p.is_empty()),
            expires_in: expires_at.saturating_sub(now()),
            token,
        });
    }
    let mut tried = Vec::new();
    let sources: [(&str, Source); 2] = [
        (
            "service-account key (GOOGLE_APPLICATION_CREDENTIALS)",
            from_key_file,
        ),
        ("metadata server", from_metadata),
    ];
    for (name, source) in sources {
        match source(settings) {
            Ok(found) => return Ok(keep(found)),
            Err(why) => tried.push(format!("{name}: {why}")),
        }
        // As Google's application-default credentials: a key file named
        // is the source, its failure is not covered up by another one.
        if crate::env("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
            break;
        }
    }
    Err(PluginError::agent(format!(
        "gcp: no credentials: {}",
        tried.join("; ")
    )))
}

fn keep(found: Found) -> Token {
    let ttl = found.expires_in.saturating_sub(EXPIRY_MARGIN_SECONDS);
    let name = format!(
        "expires={} project={} source={}",
        now() + ttl,
        found.project.as_deref().unwrap_or(""),
        found.source
    );
    let token = launch_plugin_sdk::mint(&name, &found.token);
    if ttl > 0 {
        let _ = launch_plugin_sdk::keep(TOKEN_KEY, &token, ttl);
    }
    Token {
        source: found.source,
        token,
        project: found.project,
        expires_in: ttl,
    }
}

/// The fields of a service-account key file that are used.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
}

/// The token endpoint's answer (RFC 6749 §5.1 / §5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `error: error_description` of a refused request, or its status.
fn refusal(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<TokenAnswer>(body) {
        Ok(TokenAnswer {
            error: Some(e),
            error_description,
            ..
        }) => match error_description {
            Some(d) => format!("{status} {e}: {d}"),
            None => format!("{status} {e}"),
        },
        _ => format!("answered {status}"),
    }
}

fn from_key_file(settings: &Settings) -> Result<Found, String> {
    let Some(path) = crate::env("GOOGLE_APPLICATION_CREDENTIALS") else {
        return Err("GOOGLE_APPLICATION_CREDENTIALS is not set".into());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the key file {path}: {e} (is its directory granted?)"))?;
    let key: KeyFile = serde_json::from_str(&text)
        .map_err(|e| format!("the key file {path} is not JSON: line {}", e.line()))?;
    if key.kind.as_deref() != Some("service_account") {
        return Err(format!(
            "the key file {path} is of type {:?}, not service_account (user credentials from \
             `gcloud auth application-default login` are not supported: use a service-account \
             key or workload identity)",
            key.kind.as_deref().unwrap_or("none")
        ));
    }
    let (Some(email), Some(pem)) = (key.client_email, key.private_key) else {
        return Err(format!(
            "the key file {path} lacks client_email or private_key"
        ));
    };
    let token_uri = settings
        .token_uri
        .clone()
        .or(key.token_uri)
        .unwrap_or_else(|| crate::DEFAULT_TOKEN_URI.to_string());
    // The audience is the key's token_uri (Google checks it), also when the
    // request goes to an overriding endpoint of the same service.
    let assertion = crate::jwt::assertion(&pem, &email, &token_uri, now())
        .map_err(|e| format!("the key file {path}: {e}"))?;
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let response = launch_plugin_sdk::http::send(
        "POST",
        &token_uri,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .map_err(|e| format!("the token endpoint {token_uri} could not be asked: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "the token endpoint {token_uri} refused {email}: {}",
            refusal(response.status, &response.body)
        ));
    }
    let answer: TokenAnswer = serde_json::from_slice(&response.body)
        .map_err(|_| format!("the token endpoint {token_uri} answered something not JSON"))?;
    let token = answer
        .access_token
        .ok_or_else(|| format!("the token endpoint {token_uri} answered no access_token"))?;
    Ok(Found {
        source: format!("service-account key of {email}"),
        token,
        expires_in: answer.expires_in.unwrap_or(3600),
        project: key.project_id,
    })
}

fn from_metadata(settings: &Settings) -> Result<Found, String> {
    let base = settings.metadata_endpoint();
    let get = |path: &str| {
        let url = format!("{base}/computeMetadata/v1/{path}");
        let response =
            launch_plugin_sdk::http::send("GET", &url, &[("metadata-flavor", "Google")], b"")
                .map_err(|e| format!("{base} could not be asked: {e}"))?;
        if response.status != 200 {
            return Err(format!("{url} answered {}", response.status));
        }
        Ok(response)
    };
    let response = get("instance/service-accounts/default/token")?;
    let answer: TokenAnswer = serde_json::from_slice(&response.body)
        .map_err(|_| format!("{base} answered a token that is not JSON"))?;
    let token = answer
        .access_token
        .ok_or_else(|| format!("{base} answered no access_token"))?;
    let project = get("project/project-id")
        .ok()
        .map(|r| r.text().trim().to_string())
        .filter(|p| !p.is_empty());
    Ok(Found {
        source: format!("metadata server {base}"),
        token,
        expires_in: answer.expires_in.unwrap_or(3600),
        project,
    })
}
