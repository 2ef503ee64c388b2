//! How error messages name the kind of a JSON (or YAML) value: "must be a
//! map, not a list", "a launch spec must be a JSON object, got a string".
//!
//! One wording everywhere. Launch specs, `resource_args` and config blocks
//! arrive as JSON or YAML, so the words are the ones both share:
//!
//! | value | words |
//! |---|---|
//! | `null` | `null` |
//! | `true` | `a boolean` |
//! | `1.5` | `a number` |
//! | `"x"` | `a string` |
//! | `[..]` | `a list` |
//! | `{..}` | `a map` |

use serde_json::Value;

/// The kind of `value`, with its article (`a list`, `a map`, `null`).
pub fn of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::of;
    use serde_json::json;

    #[test]
    fn every_kind_has_its_words() {
        let cases = [
            (json!(null), "null"),
            (json!(true), "a boolean"),
            (json!(1.5), "a number"),
            (json!("x"), "a string"),
            (json!([1]), "a list"),
            (json!({"a": 1}), "a map"),
        ];
        for (value, words) in cases {
            assert_eq!(of(&value), words, "{value}");
        }
    }
}
