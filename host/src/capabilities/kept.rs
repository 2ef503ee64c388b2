//! `launch:plugin/secrets.keep`, `.recall`, `.forget`: secrets a plugin
//! keeps in the host between its calls (since contract 0.2.0).
//!
//! Every call of a plugin gets a fresh instance, so without this a plugin
//! would fetch a token with a lifetime of hours (an ECR authorization
//! token, an OAuth2 access token, STS session credentials) for every job.
//! Each loaded plugin has one [`KeptSecrets`]: only that plugin's calls
//! reach it, nothing of it is written anywhere, and each value is dropped
//! at its expiry.
//!
//! | limit | value | past it |
//! |---|---|---|
//! | keys per plugin | [`MAX_KEPT`] | the key closest to its expiry is dropped |
//! | bytes of one value | [`MAX_KEPT_BYTES`] | `keep` fails with `unavailable` |
//! | time to live | [`MAX_KEPT_TTL`] | cut to it |

use super::secrets::CredentialScope;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys one plugin keeps at once.
pub const MAX_KEPT: usize = 64;
/// The largest value one key keeps (a JWT-sized token is a few KiB).
pub const MAX_KEPT_BYTES: usize = 64 * 1024;
/// The longest a value is kept, whatever the plugin asks (a day: no cloud
/// token lives longer).
pub const MAX_KEPT_TTL: Duration = Duration::from_secs(24 * 3600);

/// One kept value.
struct Kept {
    /// The secret's name, as the handle recalled says it.
    name: String,
    value: String,
    /// The registry an opaque token is bound to (a `lent.post-form`
    /// token): recalled opaque and bound. `None`: the plugin's own value.
    bound_to: Option<CredentialScope>,
    expires: Instant,
}

/// The secrets one plugin keeps, by key.
#[derive(Default)]
pub struct KeptSecrets {
    entries: Mutex<HashMap<String, Kept>>,
}

impl std::fmt::Debug for KeptSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("KeptSecrets").field("keys", &keys).finish()
    }
}

impl KeptSecrets {
    /// Keeps `value` (the secret `name`) under `key` for `ttl` (at most
    /// [`MAX_KEPT_TTL`]); a value over [`MAX_KEPT_BYTES`] is refused, saying
    /// why (never the value).
    pub fn keep(&self, key: &str, name: &str, value: &str, ttl: Duration) -> Result<(), String> {
        self.keep_bound(key, name, value, None, ttl)
    }

    /// As [`KeptSecrets::keep`], for an opaque token bound to `bound_to`
    /// (recalled as it was by [`KeptSecrets::recall_bound`]).
    pub fn keep_bound(
        &self,
        key: &str,
        name: &str,
        value: &str,
        bound_to: Option<CredentialScope>,
        ttl: Duration,
    ) -> Result<(), String> {
        if value.len() > MAX_KEPT_BYTES {
            return Err(format!(
                "secret {name:?} is {} bytes, more than the {MAX_KEPT_BYTES} a kept secret may be",
                value.len()
            ));
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, kept| kept.expires > now);
        if !entries.contains_key(key)
            && entries.len() >= MAX_KEPT
            && let Some(soonest) = entries
                .iter()
                .min_by_key(|(_, kept)| kept.expires)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&soonest);
        }
        entries.insert(
            key.to_string(),
            Kept {
                name: name.to_string(),
                value: value.to_string(),
                bound_to,
                expires: now + ttl.min(MAX_KEPT_TTL),
            },
        );
        Ok(())
    }

    /// The name and value kept under `key`, unless it expired.
    pub fn recall(&self, key: &str) -> Option<(String, String)> {
        self.recall_bound(key).map(|(name, value, _)| (name, value))
    }

    /// The name, value and binding kept under `key`, unless it expired.
    pub fn recall_bound(&self, key: &str) -> Option<(String, String, Option<CredentialScope>)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(kept) if kept.expires > Instant::now() => {
                Some((kept.name.clone(), kept.value.clone(), kept.bound_to.clone()))
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Drops what is kept under `key`.
    pub fn forget(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_value_is_recalled_until_it_expires() {
        let kept = KeptSecrets::default();
        kept.keep("token", "ecr-token", "v1", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            kept.recall("token"),
            Some(("ecr-token".into(), "v1".into()))
        );
        kept.keep("short", "s", "v", Duration::ZERO).unwrap();
        assert_eq!(kept.recall("short"), None);
        kept.forget("token");
        assert_eq!(kept.recall("token"), None);
    }

    #[test]
    fn keys_and_sizes_are_capped() {
        let kept = KeptSecrets::default();
        for i in 0..MAX_KEPT + 10 {
            kept.keep(
                &format!("k{i}"),
                "n",
                "v",
                Duration::from_secs(60 + i as u64),
            )
            .unwrap();
        }
        assert_eq!(kept.entries.lock().unwrap().len(), MAX_KEPT);
        // The ones closest to expiry went first.
        assert_eq!(kept.recall("k0"), None);
        assert!(kept.recall(&format!("k{}", MAX_KEPT + 9)).is_some());
        let err = kept
            .keep(
                "big",
                "big",
                &"x".repeat(MAX_KEPT_BYTES + 1),
                Duration::from_secs(1),
            )
            .unwrap_err();
        assert!(!err.contains("xxx"), "{err}");
    }
}
