//! The panic message a lean plugin leaves in its own memory.
//!
//! A plugin built for `wasm32-unknown-unknown` has no stderr, and sending
//! its panic message through the `launch:plugin/log` import would make every
//! plugin import it (an import that takes a string costs two more core
//! modules per instance). So the SDK's panic hook (`launch_plugin_sdk::lean`)
//! writes the message to a record in linear memory, then the instance traps:
//!
//! | bytes | content |
//! |---|---|
//! | 16 | the marker `launch-panic-rec` |
//! | 4 | the text's length, little-endian |
//! | length | the text, UTF-8 |
//!
//! The engine keeps a core dump of every trap (`Config::coredump_on_trap`),
//! which names the Store's memories; the host reads them while the Store
//! still lives and looks for the marker. The SDK keeps the marker inverted
//! in the module's data, so the marker's bytes appear in memory only once a
//! panic has filled the record in.

use wasmtime::{AsContext, WasmCoreDump};

/// The bytes that start a filled-in record.
pub const MARKER: &[u8; 16] = b"launch-panic-rec";

/// The longest text a record holds (the SDK cuts longer messages).
pub const MAX_TEXT: usize = 2048;

/// The panic message recorded in `memory`, if a record is there.
pub fn find_in(memory: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(at) = find_marker(&memory[from..]) {
        let start = from + at + MARKER.len();
        if let Some(text) = read_record(&memory[start..]) {
            return Some(text);
        }
        from = start;
    }
    None
}

/// The panic message in the memories a trap's core dump names, if any.
pub fn from_trap(error: &wasmtime::Error, store: impl AsContext) -> Option<String> {
    let dump = error.downcast_ref::<WasmCoreDump>()?;
    let store = store.as_context();
    dump.memories()
        .iter()
        .find_map(|memory| find_in(memory.data(&store)))
}

/// Where the marker starts in `haystack` (a memory can be as large as the
/// plugin's cap, so this is the SIMD search of `memchr`).
fn find_marker(haystack: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, MARKER)
}

/// The length and text after a marker, if they make sense.
fn read_record(after_marker: &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(after_marker.get(..4)?.try_into().ok()?) as usize;
    if len == 0 || len > MAX_TEXT {
        return None;
    }
    let text = after_marker.get(4..4 + len)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Vec<u8> {
        let mut bytes = MARKER.to_vec();
        bytes.extend((text.len() as u32).to_le_bytes());
        bytes.extend(text.as_bytes());
        bytes
    }

    #[test]
    fn a_record_anywhere_in_memory_is_found() {
        let mut memory = vec![0u8; 70_000];
        let at = 65_530;
        let filled = record("plugin panicked: at src/lib.rs:3:5:\nboom");
        memory[at..at + filled.len()].copy_from_slice(&filled);
        assert_eq!(
            find_in(&memory).as_deref(),
            Some("plugin panicked: at src/lib.rs:3:5:\nboom")
        );
    }

    #[test]
    fn memory_without_a_record_has_no_message() {
        assert_eq!(find_in(&vec![0u8; 4096]), None);
        assert_eq!(find_in(b"launch-panic"), None);
    }

    #[test]
    fn a_marker_with_an_impossible_length_is_skipped() {
        let mut memory = MARKER.to_vec();
        memory.extend(u32::MAX.to_le_bytes());
        memory.extend(record("the real one"));
        assert_eq!(find_in(&memory).as_deref(), Some("the real one"));
    }

    #[test]
    fn a_record_cut_short_by_the_end_of_memory_is_ignored() {
        let mut memory = record("long enough");
        memory.truncate(memory.len() - 3);
        assert_eq!(find_in(&memory), None);
    }
}
