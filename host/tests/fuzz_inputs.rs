//! Fuzzing the parsing of `launch-config.yaml` and of launch specs.
//!
//! proptest generates inputs of three kinds, a bounded number of cases each
//! so the whole file runs in seconds inside `cargo test`:
//!
//! | kind | how |
//! |---|---|
//! | structured | a valid config or spec as a value tree, then keys dropped, values swapped for odd ones (wrong types, huge, deep, control characters, any Unicode), odd keys added; written as block YAML, flow YAML or JSON |
//! | text edits | a valid config or spec with YAML-significant and control characters inserted, ranges deleted, lines repeated |
//! | raw bytes | anything, read through the file reader (size cap, UTF-8 check) |
//!
//! For every input: no panic. For every error: it names the file, with the
//! line and column when the parser gave a position; it is at most
//! [`MAX_MESSAGE_CHARS`] characters long; it has no raw control character;
//! it has none of the parser libraries' own wording. Specs that look like
//! JSON never get YAML wording. A spec that parses is usable: every
//! accessor works on it.

use launch_agent::config::{ConfigError, LaunchConfig};
use launch_agent::spec::{self, LaunchSpec};
use launch_agent::text::needs_escape;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};
use std::path::Path;

const CONFIG_FILE: &str = "fuzz/launch-config.yaml";
const SPEC_FILE: &str = "fuzz/spec.json";
/// The longest error message accepted, in characters.
const MAX_MESSAGE_CHARS: usize = 1500;
/// Cases per property: enough to find the common mistakes, few enough to
/// take seconds in a debug build (`PROPTEST_CASES` sets another number).
const CASES: u32 = 192;

/// Wording of the parser libraries that must never reach a user.
const LIBRARY_WORDING: &[&str] = &[
    "DuplicateKeyPolicy",
    "in Options",
    "from_str",
    "budget breached",
    "Nodes {",
    "Depth {",
    "Events {",
    "invalid type:",
    "invalid value:",
    "while parsing a",
    "did not find expected",
    "EOF while parsing",
    "recursion limit exceeded",
    "struct LaunchConfig",
    "untagged enum",
    "expected i64",
    "expected u64",
    "expected u32",
    "expected u8",
    "neither JSON nor YAML",
];

fn valid_config() -> Value {
    json!({
        "queues": ["default", "gpu"],
        "queue": "extra",
        "entity": "team",
        "max_jobs": 4,
        "max_schedulers": 1,
        "secure_mode": false,
        "verbosity": 1,
        "stopped_run_timeout": 60,
        "environment": {"type": "aws", "region": "us-east-1"},
        "registry": {"type": "ecr", "uri": "123.dkr.ecr.us-east-1.amazonaws.com/launch"},
        "builder": {
            "type": "kaniko",
            "build-context-store": "s3://bucket/ctx/",
            "kaniko-config": {"spec": {"backoffLimit": 1}}
        },
        "state_dir": "/var/lib/launch-agent",
        "queue_backend": "embedded",
        "secrets": {"registry-password": {"env": "REGISTRY_PASSWORD"}},
        "plugins": {
            "my-builder": {
                "path": "/opt/plugins/b.wasm",
                "sha256": "a".repeat(64),
                "grants": {
                    "hosts": ["https://registry.example.com"],
                    "env": ["HOME"],
                    "secrets": ["registry-password"],
                    "dirs": [{"path": "/srv/cache", "write": true}, "/srv/models"]
                },
                "limits": {"deadline_ms": 60000, "timeout_ms": 600000, "memory_mb": 256},
                "config": {"any": "settings"}
            }
        },
        "lease_seconds": 30,
        "max_attempts": 3,
        "shutdown_grace_seconds": 30
    })
}

fn valid_spec() -> Value {
    json!({
        "job": "team/project/job:latest",
        "uri": "/srv/code",
        "entity": "team",
        "project": "p",
        "name": "run",
        "run_id": "abc123",
        "resource": "local-container",
        "resource_args": {"local-container": {"env": ["A=1"]}},
        "docker": {"docker_image": "python:3.12"},
        "git": {"repo": "https://github.com/x/y", "version": "main"},
        "overrides": {
            "entry_point": ["python", "train.py"],
            "args": {"lr": 0.1, "epochs": 3},
            "run_config": {"lr": 0.1}
        },
        "_wandb_api_key": "k"
    })
}

/// Characters that mean something to YAML or JSON, or to a terminal.
fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec![
            '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{202e}',
            '\u{feff}', ':', '-', '#', '"', '\'', '\\', '{', '}', '[', ']', ',', '&', '*', '!',
            '%', '|', '>', '@', '`', '?', ' ', '~', 'é', '世', '🚀',
        ]),
        2 => prop::char::range('a', 'z'),
    ]
}

fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(odd_char(), 0..24).prop_map(String::from_iter),
        1 => (0usize..20_000).prop_map(|n| "x".repeat(n)),
        1 => prop::sample::select(vec![
            "", "~", "null", "yes", "no", "0x1F", "1e999", ".nan", "-.inf", "0o17", "---", "...",
            "*alias", "&anchor x", "!!binary x", "!include f.yaml", "${HOME}", "<<", "-1",
            "18446744073709551616", "-9223372036854775809",
        ])
        .prop_map(str::to_string),
    ]
}

/// An odd value: any type, odd strings, big numbers, deep nesting.
fn odd_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        odd_string().prop_map(Value::from),
        (1usize..140).prop_map(|depth| (0..depth).fold(json!(1), |v, _| json!([v]))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(odd_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a value tree: at the `at`-th node (in depth-first order,
/// modulo their number), replace it, drop it, or add a key to it.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, Value),
    Drop(usize),
    AddKey(usize, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), odd_value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        2 => any::<usize>().prop_map(Edit::Drop),
        1 => (any::<usize>(), odd_string(), odd_value()).prop_map(|(at, k, v)| Edit::AddKey(at, k, v)),
    ]
}

fn count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `edit` to the `target`-th node below `value` (the root is 0 and
/// is never dropped). Returns how many nodes were passed.
fn apply(value: &mut Value, target: usize, edit: &Edit, seen: &mut usize) -> bool {
    let here = *seen;
    *seen += 1;
    if here == target {
        match edit {
            Edit::Replace(_, v) => *value = v.clone(),
            Edit::AddKey(_, k, v) => {
                if let Value::Object(map) = value {
                    map.insert(k.clone(), v.clone());
                }
            }
            Edit::Drop(_) => {}
        }
        return true;
    }
    match value {
        Value::Array(items) => {
            for i in 0..items.len() {
                if let Edit::Drop(_) = edit
                    && *seen == target
                {
                    items.remove(i);
                    return true;
                }
                if apply(&mut items[i], target, edit, seen) {
                    return true;
                }
            }
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let Edit::Drop(_) = edit
                    && *seen == target
                {
                    map.remove(&key);
                    return true;
                }
                if let Some(child) = map.get_mut(&key)
                    && apply(child, target, edit, seen)
                {
                    return true;
                }
            }
        }
        _ => {}
    }
    false
}

fn edited(mut value: Value, edits: &[Edit]) -> Value {
    for edit in edits {
        let at = match edit {
            Edit::Replace(at, _) | Edit::Drop(at) | Edit::AddKey(at, _, _) => *at,
        };
        let target = at % count(&value);
        apply(&mut value, target, edit, &mut 0);
    }
    value
}

/// Block-style YAML; strings double-quoted (`quoted`) or written plain.
fn block_yaml(value: &Value, indent: usize, quoted: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let scalar = |v: &Value| match v {
        Value::String(s) if !quoted => s.clone(),
        other => other.to_string(),
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if quoted {
                    Value::from(k.as_str()).to_string()
                } else {
                    k.clone()
                };
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block_yaml(v, indent + 2, quoted, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block_yaml(v, indent + 2, quoted, out);
                    }
                    other => out.push_str(&format!("{pad}{key}: {}\n", scalar(other))),
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        block_yaml(item, indent + 2, quoted, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        block_yaml(item, indent + 2, quoted, out);
                    }
                    other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// `value` written in one of the styles a user might use.
fn render(value: &Value, style: u8) -> String {
    match style % 4 {
        0 => {
            let mut out = String::new();
            block_yaml(value, 0, true, &mut out);
            out
        }
        1 => {
            let mut out = String::new();
            block_yaml(value, 0, false, &mut out);
            out
        }
        2 => value.to_string(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default(),
    }
}

/// A text edit: insert `text` at byte `at` (moved to a character
/// boundary), delete `len` bytes there, or repeat the line there.
#[derive(Clone, Debug)]
enum TextEdit {
    Insert(usize, String),
    Delete(usize, usize),
    RepeatLine(usize),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        3 => (any::<usize>(), prop::collection::vec(odd_char(), 1..6).prop_map(String::from_iter))
            .prop_map(|(at, s)| TextEdit::Insert(at, s)),
        2 => (any::<usize>(), 1usize..12).prop_map(|(at, len)| TextEdit::Delete(at, len)),
        1 => any::<usize>().prop_map(TextEdit::RepeatLine),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn text_edited(mut text: String, edits: &[TextEdit]) -> String {
    for edit in edits {
        match edit {
            TextEdit::Insert(at, s) => {
                let at = boundary(&text, *at);
                text.insert_str(at, s);
            }
            TextEdit::Delete(at, len) => {
                let start = boundary(&text, *at);
                let end = boundary(&text, start.saturating_add(*len).min(text.len()));
                text.replace_range(start..end.max(start), "");
            }
            TextEdit::RepeatLine(at) => {
                let at = boundary(&text, *at);
                let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
                let line = text[start..end].to_string();
                text.insert_str(start, &line);
            }
        }
    }
    text
}

/// The checks every error message passes.
fn check_message(message: &str, file: &str) {
    assert!(
        message.contains(file),
        "the error does not name {file}: {message}"
    );
    assert!(
        message.chars().count() <= MAX_MESSAGE_CHARS,
        "the error is {} characters long: {}",
        message.chars().count(),
        message.chars().take(300).collect::<String>()
    );
    assert!(
        !message.chars().any(needs_escape),
        "the error holds a raw control character: {message:?}"
    );
    for words in LIBRARY_WORDING {
        assert!(
            !message.contains(words),
            "library wording {words:?} in: {message}"
        );
    }
}

fn check_config_text(text: &str) {
    match LaunchConfig::parse(text, Path::new(CONFIG_FILE)) {
        Ok(config) => {
            let _ = config.queue_names();
            let summary = config.summary();
            assert!(!summary.chars().any(needs_escape), "{summary:?}");
            assert!(summary.chars().count() < 7000, "{}", summary.len());
        }
        Err(error) => {
            let message = error.to_string();
            check_message(&message, CONFIG_FILE);
            assert!(message.starts_with(CONFIG_FILE), "{message}");
            if let ConfigError::Syntax { line, column, .. } = &error
                && *line > 0
            {
                let place = format!("{CONFIG_FILE}:{line}:{column}: ");
                assert!(message.starts_with(&place), "{message}");
            }
        }
    }
}

fn check_config_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("launch-config.yaml");
    std::fs::write(&path, bytes).unwrap();
    if let Err(error) = LaunchConfig::load(&path) {
        check_message(&error.to_string(), &path.to_string_lossy());
    }
}

fn check_spec_text(text: &str) {
    match spec::parse_text(text, SPEC_FILE) {
        Ok(value) => {
            let spec = LaunchSpec::from_value(value).expect("a parsed spec is valid");
            let _ = (spec.resource(), spec.image(), spec.code_dir(), spec.git());
            let _ = (spec.job(), spec.resource_args(), spec.run_id("item-id"));
            spec.entry_point().expect("a parsed spec has a command");
            assert!(spec.redacted().get(spec::API_KEY_FIELD).is_none());
            let _ = spec.wandb_env("item-id", "queue");
        }
        Err(error) => {
            let message = error.to_string();
            check_message(&message, SPEC_FILE);
            let body = text.trim_start_matches('\u{feff}').trim_start();
            if body.starts_with(['{', '[']) {
                assert!(
                    !message.contains("YAML"),
                    "a JSON spec gets YAML wording: {message}"
                );
            }
        }
    }
}

fn check_spec_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    std::fs::write(&path, bytes).unwrap();
    let source = path.to_string_lossy().into_owned();
    match spec::read_file(&path) {
        Ok(text) => {
            if let Err(error) = spec::parse_text(&text, &source) {
                check_message(&error.to_string(), &source);
            }
        }
        Err(error) => check_message(&error.to_string(), &source),
    }
}

fn settings() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(settings())]

    #[test]
    fn configs_with_odd_values(edits in prop::collection::vec(edit(), 1..5), style in any::<u8>()) {
        check_config_text(&render(&edited(valid_config(), &edits), style));
    }

    #[test]
    fn configs_with_odd_text(edits in prop::collection::vec(text_edit(), 1..6), style in 0u8..2) {
        check_config_text(&text_edited(render(&valid_config(), style), &edits));
    }

    #[test]
    fn configs_of_raw_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_config_bytes(&bytes);
    }

    #[test]
    fn specs_with_odd_values(edits in prop::collection::vec(edit(), 1..5), style in any::<u8>()) {
        check_spec_text(&render(&edited(valid_spec(), &edits), style));
    }

    #[test]
    fn specs_with_odd_text(edits in prop::collection::vec(text_edit(), 1..6), style in any::<u8>()) {
        check_spec_text(&text_edited(render(&valid_spec(), style), &edits));
    }

    #[test]
    fn specs_of_raw_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_spec_bytes(&bytes);
    }
}

#[test]
fn the_valid_inputs_are_valid() {
    for style in 0..4 {
        let text = render(&valid_config(), style);
        LaunchConfig::parse(&text, Path::new(CONFIG_FILE))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let text = render(&valid_spec(), style);
        spec::parse_text(&text, SPEC_FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
