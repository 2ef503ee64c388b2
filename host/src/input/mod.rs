//! Reading the files users hand the agent (`launch-config.yaml`, launch
//! specs): a size cap, UTF-8 checked with the position of the first bad
//! byte, one set of parser limits, and every error of the YAML and JSON
//! parsers told in our words with its line and column.
//!
//! The parsers' own messages are written for the programmer who calls them
//! ("set DuplicateKeyPolicy in Options", "budget breached: Nodes { nodes:
//! 250001 }"); [`yaml::problem`] and [`json::problem`] turn each class of
//! them into a sentence for the person who wrote the file. Values quoted
//! from the file pass through [`crate::text::for_log`].
//!
//! | limit | value | why |
//! |---|---|---|
//! | file size | [`MAX_INPUT_BYTES`] | a config or spec is kilobytes; more is a mistake or an attack |
//! | nesting depth (YAML) | [`MAX_DEPTH`] | deep nesting costs stack |
//! | nesting depth (JSON) | 128 (serde_json's) | same |
//! | values (keys, items, scalars) | [`MAX_NODES`] | bounds the work of one parse |

pub mod json;
pub mod yaml;

use std::io::Read;
use std::path::Path;

/// The largest config or launch spec read, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// The deepest nesting of lists and maps a YAML input may have.
pub const MAX_DEPTH: usize = 64;
/// The most values (keys, list items and scalars) a YAML input may have.
pub const MAX_NODES: usize = 250_000;

/// What is wrong with an input, and where: `line` and `column` are 1-based,
/// 0 when the parser gave no position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, or 0.
    pub line: u32,
    /// 1-based column (in characters), or 0.
    pub column: u32,
    /// What is wrong, in our words; values from the input are escaped and cut.
    pub message: String,
}

impl Problem {
    /// A problem at a position (0, 0 when unknown).
    pub fn new(line: u64, column: u64, message: impl Into<String>) -> Self {
        Problem {
            line: clamp(line),
            column: clamp(column),
            message: message.into(),
        }
    }

    /// `file:line:column: message`, or `file: message` without a position.
    pub fn render(&self, file: &str) -> String {
        let file = crate::text::for_log(file);
        if self.line == 0 {
            format!("{file}: {}", self.message)
        } else {
            format!("{file}:{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

/// Reads at most [`MAX_INPUT_BYTES`] of the file at `path`; the error says
/// why in a few words (the caller names the file).
pub fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    read_capped_from(file)
}

/// Reads `reader` to its end, refusing more than [`MAX_INPUT_BYTES`]
/// without reading past them.
pub fn read_capped_from(reader: impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Why an input over [`MAX_INPUT_BYTES`] is refused.
pub fn too_large() -> String {
    format!(
        "it is larger than {} MiB, the most this agent reads",
        MAX_INPUT_BYTES / (1024 * 1024)
    )
}

/// `bytes` as text, or where the first byte that is not UTF-8 is.
pub fn utf8(bytes: &[u8]) -> Result<&str, Problem> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by construction.
        let before = std::str::from_utf8(good).unwrap_or_default();
        let (line, column) = position_after(before);
        Problem::new(
            line,
            column,
            format!(
                "is not UTF-8 text: byte 0x{:02x} at offset {} is not part of a UTF-8 character (save the file as UTF-8)",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        )
    })
}

/// Whether `text` holds nothing but whitespace, a byte-order mark and
/// `#` comments.
pub fn is_blank(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#'))
}

/// The 1-based line and column just after `text`.
fn position_after(text: &str) -> (u64, u64) {
    let line = text.matches('\n').count() as u64 + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() as u64 + 1)
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_utf8_is_placed_by_line_and_column() {
        let problem = utf8(b"queues: [a]\nentity: caf\xe9\n").unwrap_err();
        assert_eq!((problem.line, problem.column), (2, 12));
        assert!(problem.message.contains("0xe9"), "{}", problem.message);
        assert_eq!(utf8(b"ok").unwrap(), "ok");
    }

    #[test]
    fn blank_means_whitespace_and_comments() {
        assert!(is_blank(""));
        assert!(is_blank("\u{feff}\n  # only a comment\n\n"));
        assert!(!is_blank("# c\nqueues: []\n"));
    }

    #[test]
    fn a_file_past_the_cap_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_INPUT_BYTES as u64 + 10).unwrap();
        let err = read_capped(&path).unwrap_err();
        assert!(err.contains("larger than 16 MiB"), "{err}");
        std::fs::write(&path, "queues: []\n").unwrap();
        assert_eq!(read_capped(&path).unwrap(), b"queues: []\n");
    }

    #[test]
    fn a_problem_names_the_file_escaped() {
        let problem = Problem::new(3, 4, "bad");
        assert_eq!(problem.render("a\nb.yaml"), "a\\nb.yaml:3:4: bad");
        assert_eq!(Problem::new(0, 0, "bad").render("c.yaml"), "c.yaml: bad");
    }
}
