//! Which AAD scope a request's host takes: an AAD token is issued for one
//! resource (its audience), and each Azure service accepts only its own.
//!
//! | host (`https://` only) | scope |
//! |---|---|
//! | `management.azure.com` | `https://management.azure.com/.default` (Azure Resource Manager) |
//! | `management.usgovcloudapi.net`, `management.chinacloudapi.cn` | that host's `/.default` (the sovereign clouds' Resource Manager) |
//! | `*.blob.core.windows.net`, `*.dfs.core.windows.net` (and `.usgovcloudapi.net`, `.chinacloudapi.cn`) | `https://storage.azure.com/.default` |
//! | `*.azurecr.io` (`.us`, `.cn`) | Resource Manager's scope of that cloud: ACR's `/oauth2/exchange` takes an ARM-audience AAD token (what `az acr login` sends), unless the registry turned `azureADAuthenticationAsArmPolicy` off |
//! | an origin of `authorize-urls` | its `scope`, else Resource Manager's |
//!
//! Anything else gets no token.

use crate::{AuthorizeUrl, Settings};

/// Azure Resource Manager's scope (the token `verify` obtains).
pub const MANAGEMENT: &str = "https://management.azure.com/.default";
/// Azure Storage's scope.
pub const STORAGE: &str = "https://storage.azure.com/.default";

/// The scope of the token for a request to `url`, if it gets one.
pub fn for_url(settings: &Settings, url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return None;
    }
    let origin = format!("{scheme}://{authority}");
    for listed in &settings.authorize_urls {
        let (listed_url, scope) = match listed {
            AuthorizeUrl::Origin(url) => (url, MANAGEMENT),
            AuthorizeUrl::WithScope { url, scope } => (url, scope.as_str()),
        };
        if listed_url.trim_end_matches('/') == origin {
            return Some(scope.to_string());
        }
    }
    if scheme != "https" {
        return None;
    }
    let host = authority
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    for cloud in ["windows.net", "usgovcloudapi.net", "chinacloudapi.cn"] {
        for service in ["blob", "dfs"] {
            let suffix = format!(".{service}.core.{cloud}");
            if host.len() > suffix.len() && host.ends_with(&suffix) {
                return Some(STORAGE.to_string());
            }
        }
    }
    let management = |cloud_api: &str| format!("https://management.{cloud_api}/.default");
    match host.as_str() {
        "management.azure.com" => return Some(MANAGEMENT.to_string()),
        "management.usgovcloudapi.net" => return Some(management("usgovcloudapi.net")),
        "management.chinacloudapi.cn" => return Some(management("chinacloudapi.cn")),
        _ => {}
    }
    for (suffix, scope) in [
        (".azurecr.io", MANAGEMENT.to_string()),
        (".azurecr.us", management("usgovcloudapi.net")),
        (".azurecr.cn", management("chinacloudapi.cn")),
    ] {
        if host.len() > suffix.len() && host.ends_with(suffix) {
            return Some(scope);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Settings {
        Settings::parse(json).unwrap()
    }

    #[test]
    fn each_azure_host_gets_its_services_scope_and_nothing_else_gets_one() {
        let s = settings(
            r#"{"type":"azure","authorize-urls":["http://127.0.0.1:5000",{"url":"http://127.0.0.1:6000","scope":"https://storage.azure.com/.default"}]}"#,
        );
        for (url, scope) in [
            ("https://management.azure.com/subscriptions?x=1", MANAGEMENT),
            ("https://acct.blob.core.windows.net/c/b.tgz", STORAGE),
            ("https://acct.dfs.core.windows.net/c", STORAGE),
            ("https://myreg.azurecr.io/oauth2/exchange", MANAGEMENT),
            (
                "https://myreg.azurecr.us/v2/",
                "https://management.usgovcloudapi.net/.default",
            ),
            ("http://127.0.0.1:5000/oauth2/exchange", MANAGEMENT),
            ("http://127.0.0.1:6000/c/b", STORAGE),
        ] {
            assert_eq!(for_url(&s, url).as_deref(), Some(scope), "{url}");
        }
        for url in [
            "http://management.azure.com/",
            "https://evil.com/x.azurecr.io",
            "https://azurecr.io.evil.com/",
            "https://.azurecr.io/",
            "https://user@myreg.azurecr.io/",
            "https://blob.core.windows.net/",
            "http://127.0.0.1:5001/v2/",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ] {
            assert_eq!(for_url(&s, url), None, "{url}");
        }
    }
}
