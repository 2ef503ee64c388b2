//! Secret values out of everything the agent records: one [`Redactor`] per
//! agent knows every secret value a plugin held (opened, minted or handed
//! in) and replaces it, and its common encodings, by `<redacted>`.
//!
//! Why one per agent, not per plugin call: a value held in one call can come
//! back in another (written to a granted writable directory and logged in a
//! later call, returned by an environment plugin's `run-env`, quoted in the
//! agent's own lines about a build plan). Redaction is the last fence, not
//! the wall: the wall is the grants. It only makes sure nothing the agent
//! records (job log, warnings, queue messages) widens them.
//!
//! | form of a secret `v` | caught |
//! |---|---|
//! | `v` itself | always |
//! | base64 (standard and URL-safe, padded or not) | when `v` has at least [`MIN_ENCODED`] bytes, also inside a longer base64 string (the three alignments) |
//! | hex, lower and upper case | same |
//! | URL-encoded (`%XX`, either case; `+` for a space) | same, when it differs from `v` |
//! | `v` reversed | same |
//! | `v` split across consecutive lines | through [`SplitGuard`], which holds back a line that ends in the start of a secret until the next one shows whether it completes it |
//!
//! Matching is one Aho-Corasick automaton over every form of every value,
//! rebuilt lazily: learning only records the value (a plugin minting in a
//! loop costs a hash insert per value), and the next scrub rebuilds the
//! automaton once. A value longer than [`MAX_ENCODED`] is matched as itself
//! only, so a flood of large values cannot make the automaton huge.

use crate::config::SecretSource;
use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// What a secret (or any of its forms) is replaced by.
pub const REDACTED: &str = "<redacted>";

/// The shortest secret whose encodings are matched too; a shorter value is
/// matched only as itself (its encodings would match too much else).
pub const MIN_ENCODED: usize = 6;

/// The longest secret whose encodings are matched too (real credentials
/// are far shorter); a longer value is matched only as itself.
pub const MAX_ENCODED: usize = 1024;

/// The shortest start of a secret form at the end of a line that makes
/// [`SplitGuard`] hold the line back.
const MIN_HELD_PREFIX: usize = 4;

/// At most this many lines are held back at once; then they go out anyway.
const MAX_HELD_LINES: usize = 16;

/// The secret values an agent knows, and the automaton matching their forms.
#[derive(Default)]
pub struct Redactor {
    inner: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    values: std::collections::HashSet<String>,
    forms: std::collections::HashSet<String>,
    matcher: Option<std::sync::Arc<AhoCorasick>>,
    /// Values were learnt since the matcher was built.
    stale: bool,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.inner.read().map(|k| k.values.len()).unwrap_or(0);
        f.debug_struct("Redactor").field("secrets", &known).finish()
    }
}

impl Redactor {
    /// A redactor that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A redactor that knows the value of each of the config's `secrets:`
    /// that can be read now, so a value an earlier agent let a plugin stash
    /// is still scrubbed.
    pub fn knowing(secrets: &BTreeMap<String, SecretSource>) -> Self {
        let redactor = Self::new();
        for value in secrets.values().filter_map(|s| s.read().ok()) {
            redactor.learn(&value);
        }
        redactor
    }

    /// Remembers `value` (an empty one is ignored), so that it and its
    /// forms are redacted from now on.
    pub fn learn(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        if self
            .inner
            .read()
            .map(|k| k.values.contains(value))
            .unwrap_or(false)
        {
            return;
        }
        let Ok(mut known) = self.inner.write() else {
            return;
        };
        if !known.values.insert(value.to_string()) {
            return;
        }
        if value.len() > MAX_ENCODED {
            known.forms.insert(value.to_string());
        } else {
            known.forms.extend(forms_of(value));
        }
        known.stale = true;
    }

    /// The automaton over every known form, rebuilt first if values were
    /// learnt since; `None` while no secret is known.
    fn matcher(&self) -> Option<std::sync::Arc<AhoCorasick>> {
        {
            let known = self.inner.read().ok()?;
            if !known.stale {
                return known.matcher.clone();
            }
        }
        let mut known = self.inner.write().ok()?;
        if known.stale {
            let forms: Vec<&String> = known.forms.iter().collect();
            known.matcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(forms)
                .ok()
                .map(std::sync::Arc::new);
            known.stale = false;
        }
        known.matcher.clone()
    }

    /// Whether `value` is a secret this redactor knows (as itself).
    pub fn knows(&self, value: &str) -> bool {
        self.inner
            .read()
            .map(|k| k.values.contains(value))
            .unwrap_or(false)
    }

    /// `text` with every known secret, in each of its forms, replaced by
    /// [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        match self.matcher() {
            Some(matcher) => {
                let mut out = String::with_capacity(text.len());
                let mut last = 0;
                for m in matcher.find_iter(text) {
                    out.push_str(&text[last..m.start()]);
                    out.push_str(REDACTED);
                    last = m.end();
                }
                out.push_str(&text[last..]);
                out
            }
            None => text.to_string(),
        }
    }

    /// Whether `text` carries a known secret in any of its forms.
    pub fn finds_secret_in(&self, text: &str) -> bool {
        self.matcher().is_some_and(|m| m.is_match(text))
    }

    /// The byte ranges of `text` that are a known secret form.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        self.matcher()
            .map(|m| m.find_iter(text).map(|m| (m.start(), m.end())).collect())
            .unwrap_or_default()
    }

    /// The length of the longest proper start (at least
    /// [`MIN_HELD_PREFIX`] bytes) of a secret form that `text` ends with.
    fn trailing_prefix(&self, text: &str) -> usize {
        let Ok(known) = self.inner.read() else {
            return 0;
        };
        let bytes = text.as_bytes();
        let mut longest = 0;
        for form in &known.forms {
            let form = form.as_bytes();
            let most = (form.len() - 1).min(bytes.len());
            for k in (MIN_HELD_PREFIX.max(longest + 1)..=most).rev() {
                if bytes.ends_with(&form[..k]) {
                    longest = k;
                    break;
                }
            }
        }
        longest
    }
}

/// Every form of `value` the redactor matches.
fn forms_of(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let bytes = value.as_bytes();
    if bytes.len() < MIN_ENCODED {
        return forms;
    }
    // Base64: the characters that depend only on `value`'s bytes, for each
    // of the three alignments it may have inside a longer encoded string.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            let start = (8 * offset).div_ceil(6);
            let end = 8 * (offset + bytes.len()) / 6;
            if end > start && end - start >= MIN_ENCODED {
                forms.push(encoded[start..end].to_string());
            }
        }
    }
    forms.push(hex::encode(bytes));
    forms.push(hex::encode_upper(bytes));
    for (upper, plus) in [(true, false), (false, false), (true, true)] {
        let encoded = url_encode(bytes, upper, plus);
        if encoded != value {
            forms.push(encoded);
        }
    }
    forms.push(value.chars().rev().collect());
    forms.dedup();
    forms
}

/// `bytes` percent-encoded (every byte but the URL's unreserved ones), with
/// upper- or lower-case hex digits, and a space as `+` when `plus`.
fn url_encode(bytes: &[u8], upper: bool, plus: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' && plus {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Lines on their way out, scrubbed and checked for a secret split across
/// consecutive ones: a line ending in the start of a secret form is held
/// back until the next line shows whether the two (or more) together carry
/// it. Each line is a prefix (who says it, e.g. `[plugin] `, left out of the
/// check) and a body, and carries a tag `T` (its kind) through.
#[derive(Debug)]
pub struct SplitGuard<T> {
    held: Vec<(T, String, String)>,
}

impl<T> Default for SplitGuard<T> {
    fn default() -> Self {
        SplitGuard { held: Vec::new() }
    }
}

impl<T> SplitGuard<T> {
    /// Takes the line `prefix` + `body` (tagged `tag`); returns the lines
    /// now safe to write, in order, each scrubbed by `redactor`.
    pub fn push(
        &mut self,
        redactor: &Redactor,
        tag: T,
        prefix: &str,
        body: &str,
    ) -> Vec<(T, String)> {
        self.held
            .push((tag, redactor.scrub(prefix), redactor.scrub(body)));
        // The held bodies joined, each trimmed (a split value is often
        // indented or padded), with where each piece starts.
        let mut joined = String::new();
        let mut pieces = Vec::with_capacity(self.held.len());
        for (index, (_, _, text)) in self.held.iter().enumerate() {
            let trimmed = text.trim();
            let offset = text.len() - text.trim_start().len();
            pieces.push((index, joined.len(), offset, trimmed.len()));
            joined.push_str(trimmed);
        }
        let matches = redactor.matches(&joined);
        if !matches.is_empty() {
            // Cut each match out of the lines it spans (back to front, so
            // offsets stay right).
            let mut cuts: Vec<(usize, usize, usize)> = Vec::new();
            for (start, end) in matches {
                for &(index, at, offset, len) in &pieces {
                    let (from, to) = (start.max(at), end.min(at + len));
                    if from < to {
                        cuts.push((index, offset + from - at, offset + to - at));
                    }
                }
            }
            for (index, from, to) in cuts.into_iter().rev() {
                let text = &mut self.held[index].2;
                if text.is_char_boundary(from) && text.is_char_boundary(to) {
                    text.replace_range(from..to, REDACTED);
                }
            }
            joined = self.held.iter().map(|(_, _, t)| t.trim()).collect();
        }
        if self.held.len() < MAX_HELD_LINES && redactor.trailing_prefix(&joined) > 0 {
            return Vec::new();
        }
        Self::lines(std::mem::take(&mut self.held))
    }

    /// The lines still held back (the stream ended), with a trailing start
    /// of a secret cut off.
    pub fn finish(&mut self, redactor: &Redactor) -> Vec<(T, String)> {
        let mut held = std::mem::take(&mut self.held);
        if let Some((_, _, last)) = held.last_mut() {
            let end = last.trim_end().len();
            let cut = redactor.trailing_prefix(&last[..end]);
            if cut > 0 && last.is_char_boundary(end - cut) {
                last.replace_range(end - cut..end, REDACTED);
            }
        }
        Self::lines(held)
    }

    fn lines(held: Vec<(T, String, String)>) -> Vec<(T, String)> {
        held.into_iter()
            .map(|(tag, prefix, body)| (tag, prefix + &body))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-s3cret/value+42";

    fn redactor() -> Redactor {
        let r = Redactor::new();
        r.learn(SECRET);
        r
    }

    #[test]
    fn the_value_and_its_encodings_are_redacted() {
        let r = redactor();
        let encoded = [
            SECRET.to_string(),
            base64::engine::general_purpose::STANDARD.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
            hex::encode(SECRET),
            hex::encode_upper(SECRET),
            url_encode(SECRET.as_bytes(), true, false),
            url_encode(SECRET.as_bytes(), false, false),
            SECRET.chars().rev().collect(),
        ];
        for form in encoded {
            let said = r.scrub(&format!("token={form} end"));
            assert!(said.contains(REDACTED), "{form}: {said}");
            assert!(!said.contains(&form), "{form}: {said}");
        }
    }

    #[test]
    fn base64_inside_a_longer_string_is_redacted_at_each_alignment() {
        let r = redactor();
        for prefix in ["", "a", "ab", "abc", "user:"] {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{prefix}{SECRET}-and-more"));
            let said = r.scrub(&encoded);
            assert!(said.contains(REDACTED), "prefix {prefix:?}: {said}");
        }
    }

    #[test]
    fn plain_text_and_short_values_stay() {
        let r = redactor();
        assert_eq!(r.scrub("nothing to see here"), "nothing to see here");
        let short = Redactor::new();
        short.learn("ab");
        assert_eq!(short.scrub("YWI= 6162 ba"), "YWI= 6162 ba");
        assert_eq!(short.scrub("xaby"), "x<redacted>y");
        Redactor::new().learn("");
    }

    #[test]
    fn a_secret_split_across_lines_is_caught() {
        let r = redactor();
        let mut guard = SplitGuard::default();
        let (first, second) = SECRET.split_at(9);
        assert!(
            guard
                .push(&r, 1, "[p] ", &format!("the secret is {first}"))
                .is_empty()
        );
        let out = guard.push(&r, 2, "[p] ", &format!("  {second}"));
        assert_eq!(out.len(), 2);
        let all: String = out.iter().map(|(_, l)| l.as_str()).collect();
        assert!(!all.contains(first) && !all.contains(second), "{out:?}");
        assert!(out[0].1.starts_with("[p] the secret is "), "{out:?}");
        assert!(out[0].1.contains(REDACTED), "{out:?}");
        // In three pieces.
        let (a, rest) = SECRET.split_at(6);
        let (b, c) = rest.split_at(6);
        assert!(guard.push(&r, 1, "", a).is_empty());
        assert!(guard.push(&r, 2, "", b).is_empty());
        let out = guard.push(&r, 3, "", c);
        assert!(out.iter().all(|(_, l)| l.trim() == REDACTED), "{out:?}");
    }

    #[test]
    fn lines_without_a_secret_start_pass_at_once() {
        let r = redactor();
        let mut guard = SplitGuard::default();
        assert_eq!(guard.push(&r, (), "", "step 1/3").len(), 1);
        assert_eq!(guard.push(&r, (), "", "hun").len(), 1, "too short to hold");
    }

    #[test]
    fn a_held_start_is_cut_when_the_stream_ends() {
        let r = redactor();
        let mut guard = SplitGuard::default();
        assert!(guard.push(&r, (), "", "leaking hunter2-s3").is_empty());
        let out = guard.finish(&r);
        assert_eq!(out, vec![((), format!("leaking {REDACTED}"))]);
    }
}
