//! Parsing the `settings` JSON string a plugin function is called with.

use crate::{PluginError, Stage};
use serde::de::DeserializeOwned;

/// Parses `settings` (the JSON object the host passes to a plugin function)
/// into `T`.
///
/// On failure the error has `stage`, is not retryable, and its message names
/// the offending key, e.g.
/// ``invalid settings: key `limits.memory`: invalid type: string "a lot", expected u64``
/// or ``invalid settings: unknown field `regoin`, expected `type` or `region` ``
/// (use `#[serde(deny_unknown_fields)]` on `T` to reject unknown keys).
/// Values are never echoed beyond what serde puts in its message, so keep
/// secrets out of settings (use the `secrets` import instead).
pub fn parse_settings<T: DeserializeOwned>(settings: &str, stage: Stage) -> Result<T, PluginError> {
    let mut de = serde_json::Deserializer::from_str(settings);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid settings: {inner}")
        } else {
            format!("invalid settings: key `{path}`: {inner}")
        };
        PluginError::new(stage, message)
    })?;
    de.end()
        .map_err(|e| PluginError::new(stage, format!("invalid settings: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(rename = "type")]
        _kind: String,
        #[serde(default)]
        limits: Limits,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Limits {
        #[serde(default)]
        memory: u64,
    }

    #[test]
    fn ok() {
        let s: S = parse_settings(r#"{"type":"x","limits":{"memory":3}}"#, Stage::Agent).unwrap();
        assert_eq!(s.limits.memory, 3);
    }

    #[test]
    fn names_the_bad_key() {
        let e = parse_settings::<S>(r#"{"type":"x","limits":{"memory":"lots"}}"#, Stage::Build)
            .unwrap_err();
        assert_eq!(e.stage, Stage::Build);
        assert!(!e.retryable);
        assert!(e.message.contains("key `limits.memory`"), "{}", e.message);
    }

    #[test]
    fn names_an_unknown_key() {
        let e = parse_settings::<S>(r#"{"type":"x","regoin":"eu"}"#, Stage::Agent).unwrap_err();
        assert!(
            e.message.contains("unknown field `regoin`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn names_a_missing_key() {
        let e = parse_settings::<S>("{}", Stage::Agent).unwrap_err();
        assert!(e.message.contains("missing field `type`"), "{}", e.message);
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(parse_settings::<S>(r#"{"type":"x"} x"#, Stage::Agent).is_err());
    }
}
