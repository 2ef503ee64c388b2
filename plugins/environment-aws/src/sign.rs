//! SigV4, inside the plugin (`aws-sigv4`): for the plugin's own STS calls
//! and for other plugins' requests the host routes through `authorize`.
//!
//! Which service and region a request is signed for comes from its host,
//! as AWS names them (`api.ecr.us-east-1.amazonaws.com` → `ecr`,
//! `us-east-1`); for the `endpoint-url` (one endpoint for every service)
//! from its `x-amz-target` header (`AmazonEC2ContainerRegistry_...` →
//! `ecr`), S3 for a request carrying `x-amz-content-sha256` (which only S3
//! requires: the host's blob capability sets it), or, for the query
//! protocol, STS. Any other host is refused: the
//! environment signs only for AWS.

use crate::Settings;
use crate::chain::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings};
use aws_sigv4::sign::v4;
use launch_plugin_sdk::PluginError;
use launch_plugin_sdk::authorizer::HttpRequest;

/// What a request is signed for.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The signing name of the service (`ecr`, `sts`, `s3`).
    pub service: String,
    /// The region.
    pub region: String,
}

/// `x-amz-target` prefixes of the JSON-protocol services, and their
/// signing names.
const TARGETS: &[(&str, &str)] = &[
    ("AmazonEC2ContainerRegistry", "ecr"),
    ("AWSSecurityTokenServiceV", "sts"),
];

/// `host[:port]` of `url`.
pub fn host_of(url: &str) -> Result<String, String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no host (or has userinfo)"));
    }
    Ok(authority.to_ascii_lowercase())
}

/// `scheme://host[:port]` of `url`, the port left out when it is the
/// scheme's default.
fn origin(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let host = host_of(url).ok()?;
    let host = match (scheme, host.rsplit_once(':')) {
        ("https", Some((h, "443"))) | ("http", Some((h, "80"))) => h.to_string(),
        _ => host,
    };
    Some(format!("{scheme}://{host}"))
}

impl Target {
    /// What `request` is signed for; an error for a host that is not AWS's
    /// nor the `endpoint-url`.
    pub fn of(settings: &Settings, request: &HttpRequest) -> Result<Target, PluginError> {
        let host = host_of(&request.url).map_err(PluginError::agent)?;
        let name = host.split(':').next().unwrap_or("");
        for domain in [".amazonaws.com", ".amazonaws.com.cn"] {
            if let Some(labels) = name.strip_suffix(domain) {
                let labels: Vec<&str> = labels.split('.').filter(|l| *l != "api").collect();
                // service.region, or region.service for a few old names.
                if let [service, region] = labels.as_slice() {
                    return Ok(Target {
                        service: (*service).to_string(),
                        region: (*region).to_string(),
                    });
                }
            }
        }
        let configured = settings.endpoint_url.as_deref().and_then(origin);
        if configured.is_some() && configured == origin(&request.url) {
            let target = request
                .headers
                .iter()
                .find(|(k, _)| k == "x-amz-target")
                .map(|(_, v)| v.as_str());
            let service = match target {
                Some(t) => TARGETS
                    .iter()
                    .find(|(prefix, _)| t.starts_with(prefix))
                    .map(|(_, s)| *s)
                    .ok_or_else(|| {
                        PluginError::agent(format!(
                            "aws: cannot tell which service x-amz-target {t:?} is"
                        ))
                    })?,
                None if request
                    .headers
                    .iter()
                    .any(|(k, _)| k == "x-amz-content-sha256") =>
                {
                    "s3"
                }
                None => "sts",
            };
            return Ok(Target {
                service: service.to_string(),
                region: settings.region()?.to_string(),
            });
        }
        Err(PluginError::agent(format!(
            "aws: refusing to sign a request to {host}: it is neither an AWS host nor the `endpoint-url`"
        )))
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`,
/// `x-amz-security-token`) for `request`.
pub fn sign(
    credentials: &Credentials,
    target: &Target,
    request: &HttpRequest,
) -> Result<Vec<(String, String)>, PluginError> {
    signed_headers(
        credentials,
        &target.service,
        &target.region,
        &request.method,
        &request.url,
        &request.headers,
        SignableBody::Precomputed(request.body_sha256.clone()),
    )
}

/// The SigV4 headers for a request the plugin makes itself.
pub fn sign_parts(
    credentials: &Credentials,
    service: &str,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>, PluginError> {
    signed_headers(
        credentials,
        service,
        region,
        method,
        url,
        headers,
        SignableBody::Bytes(body),
    )
}

fn signed_headers(
    credentials: &Credentials,
    service: &str,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: SignableBody<'_>,
) -> Result<Vec<(String, String)>, PluginError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        PluginError::agent(format!("aws: cannot sign the request ({what}): {e}"))
    };
    let secret = credentials
        .secret_access_key
        .reveal()
        .map_err(|_| PluginError::agent("aws: the secret access key cannot be read"))?;
    let token = match &credentials.session_token {
        Some(t) => Some(
            t.reveal()
                .map_err(|_| PluginError::agent("aws: the session token cannot be read"))?,
        ),
        None => None,
    };
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        secret,
        token,
        None,
        "launch-agent",
    )
    .into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed("parameters", &e))?
        .into();
    // Headers a proxy or the client may change on the way are not signed.
    let signed: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "content-length" | "user-agent" | "connection"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signable = SignableRequest::new(method, url, signed.into_iter(), body)
        .map_err(|e| failed("request", &e))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| failed("signature", &e))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, target: Option<&str>) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: target
                .map(|t| vec![("x-amz-target".to_string(), t.to_string())])
                .unwrap_or_default(),
            body_sha256: String::new(),
        }
    }

    fn settings(endpoint: Option<&str>) -> Settings {
        Settings {
            region: Some("us-west-2".into()),
            endpoint_url: endpoint.map(str::to_string),
            ..Settings::default()
        }
    }

    #[test]
    fn aws_hosts_name_their_service_and_region() {
        let t = Target::of(
            &settings(None),
            &request("https://api.ecr.eu-west-1.amazonaws.com/", None),
        )
        .unwrap();
        assert_eq!(
            (t.service.as_str(), t.region.as_str()),
            ("ecr", "eu-west-1")
        );
        let t = Target::of(
            &settings(None),
            &request("https://sts.cn-north-1.amazonaws.com.cn/", None),
        )
        .unwrap();
        assert_eq!(
            (t.service.as_str(), t.region.as_str()),
            ("sts", "cn-north-1")
        );
    }

    #[test]
    fn other_hosts_are_refused_unless_they_are_the_endpoint() {
        for url in [
            "https://evil.example.com/",
            "https://amazonaws.com.evil.io/",
            "http://user@127.0.0.1:5000/",
        ] {
            assert!(
                Target::of(&settings(None), &request(url, None)).is_err(),
                "{url}"
            );
        }
        let s = settings(Some("http://127.0.0.1:5000"));
        let t = Target::of(
            &s,
            &request(
                "http://127.0.0.1:5000/",
                Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"),
            ),
        )
        .unwrap();
        assert_eq!(
            (t.service.as_str(), t.region.as_str()),
            ("ecr", "us-west-2")
        );
        assert!(Target::of(&s, &request("http://127.0.0.1:5001/", None)).is_err());
    }

    #[test]
    fn an_endpoint_request_with_a_payload_hash_is_s3s() {
        let s = settings(Some("http://127.0.0.1:5000"));
        let mut r = request("http://127.0.0.1:5000/bucket/key", None);
        assert_eq!(Target::of(&s, &r).unwrap().service, "sts");
        r.headers
            .push(("x-amz-content-sha256".into(), "e3b0c442".into()));
        let t = Target::of(&s, &r).unwrap();
        assert_eq!((t.service.as_str(), t.region.as_str()), ("s3", "us-west-2"));
    }
}
