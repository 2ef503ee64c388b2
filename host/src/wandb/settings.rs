//! Where the W&B API is and how to reach it: the server, the API key (kept
//! out of every `Debug` output, from `WANDB_API_KEY` or `~/.netrc`) and how
//! transient failures are retried.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The W&B server used when `WANDB_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

/// A W&B API key. Its `Debug` and `Display` never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding white space is dropped).
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_string())
    }

    /// The key itself, for the `Authorization` header only.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How transient failures (connection refused or reset, timeouts, HTTP 5xx
/// and 429) are retried: after the first try, up to `retries` more, waiting
/// `first_delay`, then twice as long each time, at most `max_delay`
/// (a 429's `Retry-After` is honoured up to `max_delay`). HTTP 401/403 and
/// GraphQL errors are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub retries: u32,
    /// The wait before the first retry.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

impl Default for RetryPolicy {
    /// 5 retries waiting 0.5, 1, 2, 4 and 8 s (15.5 s in all).
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// Where the W&B API is and how to talk to it: what a [`Client`] needs.
///
/// [`Client`]: super::Client
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// The server, e.g. `https://api.wandb.ai` (`WANDB_BASE_URL`); GraphQL
    /// goes to `<base_url>/graphql`.
    pub base_url: String,
    /// The API key (`WANDB_API_KEY`); when `None`, the `~/.netrc` entry of
    /// the base URL's host is used (see [`ApiSettings::netrc_path`]).
    pub api_key: Option<ApiKey>,
    /// The netrc file to read the key from when `api_key` is `None`:
    /// `None` means `$NETRC`, else `~/.netrc`.
    pub netrc_path: Option<PathBuf>,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// The limit for one HTTP request.
    pub request_timeout: Duration,
}

impl ApiSettings {
    /// The server and key from the environment (`WANDB_BASE_URL`,
    /// `WANDB_API_KEY`), default retries and 30 s requests.
    pub fn from_env() -> Self {
        let nonempty = |name: &str| crate::secret_env::var(name).filter(|v| !v.trim().is_empty());
        ApiSettings {
            base_url: nonempty("WANDB_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            api_key: nonempty("WANDB_API_KEY").map(ApiKey::new),
            netrc_path: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The API key: [`ApiSettings::api_key`], else the netrc entry for the
    /// base URL's host (`host:port` or `host`).
    pub(super) fn resolve_key(&self, host: &str, port: Option<u16>) -> Result<ApiKey, String> {
        if let Some(key) = self.api_key.as_ref().filter(|k| !k.expose().is_empty()) {
            return Ok(key.clone());
        }
        let path = self
            .netrc_path
            .clone()
            .or_else(|| std::env::var_os("NETRC").map(PathBuf::from))
            .or_else(|| dirs::home_dir().map(|home| home.join(".netrc")));
        let missing = |why: String| {
            format!(
                "no W&B API key for {}: WANDB_API_KEY is not set and {why}; \
                 set WANDB_API_KEY or run `wandb login`",
                self.base_url
            )
        };
        let Some(path) = path else {
            return Err(missing("there is no home directory for ~/.netrc".into()));
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => return Err(missing(format!("{} cannot be read ({e})", path.display()))),
        };
        let mut names = vec![host.to_string()];
        if let Some(port) = port {
            names.insert(0, format!("{host}:{port}"));
        }
        names
            .iter()
            .find_map(|name| netrc_password(&text, name))
            .map(ApiKey::new)
            .ok_or_else(|| missing(no_entry(&path, host)))
    }
}

fn no_entry(path: &Path, host: &str) -> String {
    format!(
        "{} has no `machine {host}` entry with a password",
        path.display()
    )
}

/// The password of `machine` in a netrc text (`machine M login L password
/// P` tokens, in any order; `default` and `macdef` blocks are skipped).
pub(super) fn netrc_password(text: &str, machine: &str) -> Option<String> {
    let mut tokens = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"macdef") {
            // A macro runs until the next empty line.
            for body in lines.by_ref() {
                if body.trim().is_empty() {
                    break;
                }
            }
            continue;
        }
        tokens.extend(words.into_iter().take_while(|w| !w.starts_with('#')));
    }
    let mut current: Option<&str> = None;
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i] {
            "machine" => {
                current = tokens.get(i + 1).copied();
                i += 2;
            }
            "default" => {
                current = None;
                i += 1;
            }
            "password" => {
                if current == Some(machine) {
                    return tokens.get(i + 1).map(|p| p.to_string());
                }
                i += 2;
            }
            "login" | "account" => i += 2,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_finds_the_machine() {
        let text = "machine other login x password nope\n\
                    macdef init\nmachine api.wandb.ai password fake\n\n\
                    machine api.wandb.ai\n  login user\n  password secret123\n";
        assert_eq!(
            netrc_password(text, "api.wandb.ai").as_deref(),
            Some("secret123")
        );
        assert_eq!(netrc_password(text, "other").as_deref(), Some("nope"));
        assert_eq!(netrc_password(text, "missing"), None);
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<u128> = (0..7).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn api_key_is_never_shown() {
        let key = ApiKey::new("abcdef0123456789");
        assert!(!format!("{key:?} {key}").contains("abcdef"));
    }
}
