//! JSON input: serde_json's errors in our words.
//!
//! serde_json keeps its error codes private, so the class is read from the
//! message text, which serde_json has kept stable for years; a message we do
//! not know is passed on (escaped, cut) after `invalid JSON:`.
//!
//! | serde_json says | we say |
//! |---|---|
//! | `EOF while parsing a list/an object/a string/a value` | the JSON ends before its list/object/string/value is complete |
//! | ``expected `:` ``, ``expected `,` or `]` ``, `expected value`, `expected ident` | what was expected, in full |
//! | `trailing comma`, `trailing characters` | where the extra text is |
//! | `control character ... while parsing a string` | a string holds a raw control character; escape it |
//! | `invalid escape`, `... surrogate ...`, `invalid unicode code point` | a `\` escape is not valid |
//! | `invalid number`, `number out of range` | the number is not valid / too large |
//! | `recursion limit exceeded` | nested more than 128 levels |

use super::Problem;
use crate::text::for_log;

/// Parses one JSON value.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Problem> {
    serde_json::from_str(text).map_err(|e| problem(&e))
}

/// The error `error` in our words, at serde_json's line and column.
pub fn problem(error: &serde_json::Error) -> Problem {
    let (line, column) = (error.line() as u64, error.column() as u64);
    let full = error.to_string();
    let suffix = format!(" at line {line} column {column}");
    let said = full.strip_suffix(&suffix).unwrap_or(&full);
    let says = match said {
        "EOF while parsing a list" => "the JSON ends before its list `[...]` is closed",
        "EOF while parsing an object" => "the JSON ends before its object `{...}` is closed",
        "EOF while parsing a string" => "the JSON ends inside a string (a `\"` is missing)",
        "EOF while parsing a value" => "the JSON ends where a value was expected",
        "expected `:`" => "expected `:` after the key",
        "expected `,` or `]`" => "expected `,` or `]` after a list item",
        "expected `,` or `}`" => "expected `,` or `}` after a value",
        "expected `\"`" => "expected a `\"`: object keys are strings in double quotes",
        "expected value" => {
            "expected a value: a string in double quotes, a number, a list, an object, true, false or null"
        }
        "expected ident" => "expected `true`, `false` or `null`",
        "invalid escape" => "a `\\` escape in a string is not valid (write `\\\\` for a backslash)",
        "invalid number" => "a number is not valid",
        "number out of range" => "a number is too large",
        "invalid unicode code point"
        | "unexpected end of hex escape"
        | "lone leading surrogate in hex escape" => "a `\\u` escape is not a valid character",
        "control character (\\u0000-\\u001F) found while parsing a string" => {
            "a string holds a raw control character (a newline or tab must be written `\\n` or `\\t`)"
        }
        "key must be a string" => "object keys must be strings in double quotes",
        "trailing comma" => "a comma comes right before a closing bracket",
        "trailing characters" => "more text follows the end of the JSON value",
        "recursion limit exceeded" => {
            "is nested too deeply: lists and objects may be nested at most 128 levels"
        }
        other => return Problem::new(line, column, format!("invalid JSON: {}", for_log(other))),
    };
    let message = if says.starts_with("is ") {
        says.to_string()
    } else {
        format!("invalid JSON: {says}")
    };
    Problem::new(line, column, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn said(text: &str) -> Problem {
        from_str::<Value>(text).unwrap_err()
    }

    #[test]
    fn syntax_errors_are_placed_and_worded() {
        let p = said("{\n  \"a\": 1,\n}");
        assert_eq!(p.line, 3);
        assert!(
            p.message.contains("comma comes right before"),
            "{}",
            p.message
        );
        let p = said("{\"a\" 1}");
        assert!(p.message.contains("expected `:`"), "{}", p.message);
        let p = said("[1, 2");
        assert!(p.message.contains("list"), "{}", p.message);
        let p = said("{\"a\": \"x\ny\"}");
        assert!(p.message.contains("raw control character"), "{}", p.message);
        let p = said("{} x");
        assert!(p.message.contains("more text follows"), "{}", p.message);
    }

    #[test]
    fn deep_nesting_is_told_in_our_words() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let p = said(&deep);
        assert!(p.message.contains("nested too deeply"), "{}", p.message);
        assert_eq!(p.line, 1);
    }

    #[test]
    fn no_message_keeps_the_position_suffix() {
        for text in ["", "{", "[1,]", "{\"a\":}", "tru", "\"\\q\"", "1e999999"] {
            let p = said(text);
            assert!(!p.message.contains(" at line "), "{text}: {}", p.message);
            assert!(p.message.starts_with("invalid JSON: ") || p.message.starts_with("is "));
        }
    }
}
