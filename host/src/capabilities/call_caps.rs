//! What one plugin call may make the host keep or write: log lines,
//! warnings, minted secrets, secret handles, and the size of its error.
//!
//! A plugin in a loop could otherwise fill the job's log (gigabytes in
//! seconds), the queue's warnings, or the host's memory (every minted value
//! is kept for scrubbing). Each cap is per call (a Store lives for one call):
//!
//! | what | cap | past the cap |
//! |---|---|---|
//! | log lines | [`MAX_LOG_LINES`] lines, [`MAX_LOG_BYTES`] bytes | dropped; one line says so |
//! | one log line | [`MAX_LINE`] bytes | cut, marked `[cut]` |
//! | warnings (to the queue) | [`MAX_WARNINGS`], each [`MAX_WARNING`] bytes | logged as plain lines; cut, marked |
//! | minted secrets | [`MAX_MINTED`] values, [`MAX_MINTED_BYTES`] bytes | the call traps, naming the cap |
//! | secret handles alive at once | [`MAX_SECRET_HANDLES`] | `open` fails; `mint` traps |
//! | the plugin's error message | [`MAX_ERROR`] bytes | cut, saying how much was left out |
//!
//! Time in `log` is the plugin's own: it counts against its deadline (see
//! [`CapabilityState::charge_to_plugin`](super::state::CapabilityState)).

/// The most log lines one call may write.
pub const MAX_LOG_LINES: u64 = 10_000;
/// The most bytes of log lines one call may write.
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// The longest log line a plugin may write; longer ones are cut.
pub const MAX_LINE: usize = 8 * 1024;
/// The most warnings one call may report to the queue.
pub const MAX_WARNINGS: u64 = 20;
/// The longest warning reported to the queue.
pub const MAX_WARNING: usize = 2 * 1024;
/// The most secrets one call may mint.
pub const MAX_MINTED: usize = 256;
/// The most bytes of minted values one call may hold.
pub const MAX_MINTED_BYTES: usize = 1024 * 1024;
/// The most secret handles alive at once in one call.
pub const MAX_SECRET_HANDLES: usize = 1024;
/// The longest error message of a plugin's that the host keeps.
pub const MAX_ERROR: usize = 8 * 1024;

/// What one call has written to the log so far.
#[derive(Debug, Default)]
pub struct LogUse {
    /// Lines written.
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Warnings reported to the queue.
    pub warnings: u64,
    /// Lines dropped past the cap.
    pub dropped: u64,
}

/// What a log line may do under the caps.
#[derive(Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it.
    Write,
    /// Write this notice instead (the first line past the cap), then drop
    /// the rest.
    Notice(String),
    /// Drop it.
    Drop,
}

impl LogUse {
    /// Counts a line of `len` bytes and says whether it may be written.
    pub fn admit(&mut self, len: usize) -> LogVerdict {
        if self.dropped > 0 {
            self.dropped += 1;
            return LogVerdict::Drop;
        }
        let bytes = self.bytes.saturating_add(len as u64);
        if self.lines >= MAX_LOG_LINES || bytes > MAX_LOG_BYTES {
            self.dropped = 1;
            return LogVerdict::Notice(format!(
                "log cap reached ({MAX_LOG_LINES} lines or {} MiB per call): further lines of \
                 this call are dropped",
                MAX_LOG_BYTES / (1024 * 1024)
            ));
        }
        self.lines += 1;
        self.bytes = bytes;
        LogVerdict::Write
    }

    /// Whether a warning may still go to the queue (counting it).
    pub fn admit_warning(&mut self) -> bool {
        self.warnings += 1;
        self.warnings <= MAX_WARNINGS
    }
}

/// What one call has minted and holds.
#[derive(Debug, Default)]
pub struct SecretUse {
    /// Values minted.
    pub minted: usize,
    /// Bytes of the values minted.
    pub minted_bytes: usize,
    /// Secret handles alive.
    pub handles: usize,
}

/// `text` cut to at most `max` bytes (on a character boundary), with a
/// marker saying how many bytes were left out; unchanged when it fits.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = char_floor(text, max);
    format!("{} [cut: {} more bytes]", &text[..end], text.len() - end)
}

/// The largest character boundary of `text` at or below `max` (its length
/// when shorter).
pub fn char_floor(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_cap_are_dropped_after_one_notice() {
        let mut used = LogUse::default();
        for _ in 0..MAX_LOG_LINES {
            assert_eq!(used.admit(10), LogVerdict::Write);
        }
        assert!(matches!(used.admit(10), LogVerdict::Notice(n) if n.contains("log cap")));
        assert_eq!(used.admit(10), LogVerdict::Drop);
        assert_eq!(used.dropped, 2);
    }

    #[test]
    fn bytes_past_the_cap_are_dropped() {
        let mut used = LogUse::default();
        assert_eq!(used.admit(MAX_LOG_BYTES as usize), LogVerdict::Write);
        assert!(matches!(used.admit(1), LogVerdict::Notice(_)));
    }

    #[test]
    fn warnings_are_counted() {
        let mut used = LogUse::default();
        for _ in 0..MAX_WARNINGS {
            assert!(used.admit_warning());
        }
        assert!(!used.admit_warning());
    }

    #[test]
    fn cut_says_what_it_left_out_and_respects_characters() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 4), "abcd [cut: 2 more bytes]");
        let text = "é".repeat(10);
        let shown = cut(&text, 5);
        assert!(shown.starts_with("éé [cut: 16 more bytes]"), "{shown}");
    }
}
