//! Values from configs, launch specs and plugins, made safe to put in a log
//! line or an error message.
//!
//! Such a value is text someone else wrote. Printed raw, a newline in it
//! forges a log line, a terminal escape repaints the screen, a bidi override
//! makes the line read backwards, and a 1 MB value drowns the message it sits
//! in. [`for_log`] escapes every control character and cuts long values,
//! saying how much it cut:
//!
//! | value | shown as |
//! |---|---|
//! | `a` newline `b` | `a\nb` (a backslash and an `n`) |
//! | carriage return, tab | `\r`, `\t` |
//! | other control characters (C0, DEL, C1), e.g. ESC | `\u{1b}` |
//! | line and paragraph separators, bidi controls (U+2028, U+202E, ...) | `\u{2028}`, `\u{202e}` |
//! | longer than [`LOG_VALUE_MAX_CHARS`] characters | the start, then `… (N more bytes)` |
//! | anything else, any script | itself, borrowed (no copy) |
//!
//! Backslashes are left as they are: escaping is there so a value cannot
//! break out of its line, not so it can be decoded again.

use std::borrow::Cow;
use std::fmt::Write as _;

/// How many characters of a value [`for_log`] shows before cutting it.
pub const LOG_VALUE_MAX_CHARS: usize = 256;

/// `text` as it may appear in a log line or error: control characters
/// escaped, and cut after [`LOG_VALUE_MAX_CHARS`] characters with a note of
/// how many bytes were left out.
pub fn for_log(text: &str) -> Cow<'_, str> {
    for_log_max(text, LOG_VALUE_MAX_CHARS)
}

/// Like [`for_log`], but cut after `max_chars` characters of output (escapes
/// count at their escaped length; the note about the cut comes on top).
pub fn for_log_max(text: &str, max_chars: usize) -> Cow<'_, str> {
    // Nothing to change: borrow. The scan stops at the first reason to copy.
    let mut shown = 0usize;
    let clean = text.chars().all(|c| {
        shown += 1;
        shown <= max_chars && !needs_escape(c)
    });
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)) + 24);
    let mut shown = 0usize;
    for (index, c) in text.char_indices() {
        let before = out.len();
        push_escaped(&mut out, c);
        // Escapes are ASCII and other characters are one character each.
        let width = if needs_escape(c) {
            out.len() - before
        } else {
            1
        };
        if shown + width > max_chars {
            out.truncate(before);
            let rest = text.len() - index;
            let _ = write!(out, "… ({rest} more bytes)");
            return Cow::Owned(out);
        }
        shown += width;
    }
    Cow::Owned(out)
}

/// Whether `c` must not appear raw in a log line.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators: line breaks to some readers.
            '\u{2028}' | '\u{2029}'
            // Bidirectional controls: reorder the text around them.
            | '\u{061c}' | '\u{200e}' | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "queue-1",
            "s3://bucket/dir/",
            "Grüße, 世界 🚀",
            "C:\\path\\n",
        ] {
            assert!(
                matches!(for_log(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(for_log("a\nb"), "a\\nb");
        assert_eq!(for_log("a\r\n\tb"), "a\\r\\n\\tb");
        assert_eq!(for_log("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(for_log("nul\0"), "nul\\u{0}");
        assert_eq!(for_log("del\u{7f}"), "del\\u{7f}");
        assert_eq!(for_log("c1\u{85}\u{9b}"), "c1\\u{85}\\u{9b}");
    }

    #[test]
    fn separators_and_bidi_controls_are_escaped() {
        assert_eq!(for_log("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
        assert_eq!(for_log("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(for_log("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn no_output_has_a_raw_control_character() {
        let every: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let shown = for_log_max(&every, usize::MAX);
        assert!(!shown.chars().any(needs_escape));
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn long_values_are_cut_saying_how_much() {
        let long = "x".repeat(1_000_000);
        let shown = for_log(&long);
        assert!(shown.starts_with(&"x".repeat(LOG_VALUE_MAX_CHARS)));
        assert!(
            shown.ends_with(&format!(
                "… ({} more bytes)",
                1_000_000 - LOG_VALUE_MAX_CHARS
            )),
            "{shown}"
        );
        assert!(shown.chars().count() < LOG_VALUE_MAX_CHARS + 30);
        // Exactly at the limit: kept whole.
        let exact = "y".repeat(LOG_VALUE_MAX_CHARS);
        assert!(matches!(for_log(&exact), Cow::Borrowed(_)));
    }

    #[test]
    fn the_cut_counts_escapes_and_never_splits_a_character() {
        let newlines = "\n".repeat(100);
        assert_eq!(for_log_max(&newlines, 5), "\\n\\n… (98 more bytes)");
        let wide = "é".repeat(10);
        assert_eq!(for_log_max(&wide, 3), "ééé… (14 more bytes)");
        let escapes = "\u{1b}".repeat(3);
        // `\u{1b}` is 6 characters: one fits in 10, not two.
        assert_eq!(for_log_max(&escapes, 10), "\\u{1b}… (2 more bytes)");
        assert_eq!(for_log_max("abc", 0), "… (3 more bytes)");
    }
}
