//! The two STS calls: `GetCallerIdentity` (signed: is this key valid, and
//! whose is it) and `AssumeRoleWithWebIdentity` (unsigned: a web identity
//! token for a role's temporary credentials). STS speaks the query
//! protocol: a form-encoded POST, an XML answer.

use crate::Settings;
use crate::chain::Credentials;
use crate::sign;
use launch_plugin_sdk::PluginError;

/// The form content type STS expects.
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The text of the first `<tag>` of `xml`.
pub fn xml_tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// `Code: Message` of an AWS XML error answer (`InvalidClientTokenId: The
/// security token included in the request is invalid.`), or the status.
pub fn aws_error(status: u16, body: &str) -> String {
    match (xml_tag(body, "Code"), xml_tag(body, "Message")) {
        (Some(code), Some(message)) => format!("{status} {code}: {message}"),
        (Some(code), None) => format!("{status} {code}"),
        _ => format!("HTTP {status}"),
    }
}

/// Seconds from now until `iso` (`2026-11-30T18:00:00Z`); none when it
/// cannot be read or is past.
pub fn seconds_until(iso: &str) -> Option<u64> {
    let at =
        aws_smithy_types::DateTime::from_str(iso, aws_smithy_types::date_time::Format::DateTime)
            .ok()?
            .secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    u64::try_from(at - now).ok()
}

/// Calls STS `GetCallerIdentity` with `credentials` and returns the
/// caller's ARN; the error names the source and STS's answer.
pub fn get_caller_identity(
    settings: &Settings,
    credentials: &Credentials,
) -> Result<String, PluginError> {
    let url = settings.sts_url()?;
    let region = settings.region()?;
    let body = b"Action=GetCallerIdentity&Version=2011-06-15";
    let host = sign::host_of(&url).map_err(PluginError::agent)?;
    let mut headers = vec![
        ("host".to_string(), host),
        ("content-type".to_string(), FORM.to_string()),
    ];
    let signed = sign::sign_parts(credentials, "sts", region, "POST", &url, &headers, body)?;
    headers.extend(signed);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "host")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let response = launch_plugin_sdk::http::send("POST", &url, &headers, body).map_err(|e| {
        PluginError::agent(format!(
            "aws: STS GetCallerIdentity at {} could not be asked: {e}",
            launch_plugin_sdk::http::shown(&url)
        ))
        .retryable()
    })?;
    let text = response.text();
    if response.status != 200 {
        return Err(PluginError::agent(format!(
            "aws: STS GetCallerIdentity refused the credentials from {}: {}",
            credentials.source,
            aws_error(response.status, &text)
        )));
    }
    Ok(xml_tag(&text, "Arn")
        .unwrap_or("(no ARN in the answer)")
        .to_string())
}

/// Temporary credentials from STS.
pub struct Temporary {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Seconds until they expire.
    pub expires_in: Option<u64>,
}

/// Percent-encodes a form value.
fn form_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Calls STS `AssumeRoleWithWebIdentity` (unsigned: the token is the
/// proof); the error says what STS answered.
pub fn assume_role_with_web_identity(
    settings: &Settings,
    role: &str,
    session: &str,
    token: &str,
) -> Result<Temporary, String> {
    let url = settings.sts_url().map_err(|e| e.message)?;
    let body = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
        form_value(role),
        form_value(session),
        form_value(token)
    );
    let response =
        launch_plugin_sdk::http::send("POST", &url, &[("content-type", FORM)], body.as_bytes())
            .map_err(|e| {
                format!(
                    "STS at {} could not be asked: {e}",
                    launch_plugin_sdk::http::shown(&url)
                )
            })?;
    let text = response.text();
    if response.status != 200 {
        return Err(format!(
            "STS AssumeRoleWithWebIdentity refused: {}",
            aws_error(response.status, &text)
        ));
    }
    let field = |tag: &str| {
        xml_tag(&text, tag)
            .map(str::to_string)
            .ok_or_else(|| format!("STS's answer has no {tag}"))
    };
    Ok(Temporary {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("SessionToken")?,
        expires_in: xml_tag(&text, "Expiration").and_then(seconds_until),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_are_named_by_code_and_message() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>";
        assert_eq!(
            aws_error(403, body),
            "403 InvalidClientTokenId: The security token included in the request is invalid."
        );
        assert_eq!(aws_error(500, "oops"), "HTTP 500");
        assert_eq!(form_value("a b/c"), "a%20b%2Fc");
    }
}
