//! `launch-agent submit`: a launch spec that cannot be used is refused with
//! an error naming the file, the line and the column, in our words (the JSON
//! parser's class for a JSON spec, the YAML parser's for a YAML one), with
//! values escaped and cut (issue 11, classes 6 and 7).

mod common;
use common::Scratch;

/// Submits `bytes` as a spec file named `name`; returns (ok, stderr).
fn submit(name: &str, bytes: &[u8]) -> (bool, String) {
    let scratch = Scratch::new();
    let path = scratch.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = scratch.run(&["submit", "--queue", "q", path.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one error line, asserting there is one and it has no raw control
/// characters.
fn error_line(stderr: &str) -> &str {
    let line = stderr.trim_end_matches('\n');
    assert!(!line.contains('\n'), "more than one line: {stderr}");
    assert!(
        !line.contains('\r') && !line.contains('\u{1b}'),
        "{stderr:?}"
    );
    line
}

fn refused(name: &str, bytes: &[u8], place: &str, words: &[&str]) {
    let (ok, stderr) = submit(name, bytes);
    assert!(!ok, "accepted: {}", String::from_utf8_lossy(bytes));
    let line = error_line(&stderr);
    assert!(
        line.contains(&format!("{name}{place}")),
        "not at {place}: {line}"
    );
    for word in words {
        assert!(line.contains(word), "{word:?} missing from: {line}");
    }
    for leak in [
        "neither JSON nor YAML",
        "budget breached",
        "Depth {",
        "DuplicateKeyPolicy",
        "Options",
        "from_str",
        "at line",
        "EOF while",
    ] {
        assert!(!line.contains(leak), "library wording {leak:?} in: {line}");
    }
}

#[test]
fn a_json_spec_gets_json_wording() {
    refused(
        "spec.json",
        b"{\n  \"uri\": \"x\"\n  \"name\": \"y\"\n}\n",
        ":3:3:",
        &["invalid JSON", "expected `,` or `}`"],
    );
    refused(
        "spec.json",
        b"{\"overrides\": {\"args\": [1, 2}}",
        ":1:",
        &["invalid JSON", "`,` or `]`"],
    );
    refused(
        "spec.json",
        b"{\"uri\": \"x\"",
        ":1:",
        &["invalid JSON", "ends"],
    );
}

#[test]
fn a_deep_json_spec_is_refused_in_json_terms() {
    let deep = format!(
        "{{\"resource_args\": {}1{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    refused(
        "spec.json",
        deep.as_bytes(),
        ":1:",
        &["nested too deeply", "128"],
    );
}

#[test]
fn a_yaml_spec_gets_yaml_wording() {
    refused(
        "spec.yaml",
        b"uri: /x\nresource: local-process\nuri: /y\n",
        ":3:1:",
        &["`uri` appears twice"],
    );
    refused(
        "spec.yaml",
        b"uri: /x\n---\nuri: /y\n",
        ":3:1:",
        &["more than one YAML document"],
    );
    refused(
        "spec.yaml",
        b"overrides:\n\targs: [a]\n",
        ":2:",
        &["invalid YAML", "tab"],
    );
    let deep = format!("resource_args: {}1{}\n", "[".repeat(80), "]".repeat(80));
    refused("spec.yaml", deep.as_bytes(), ":1:", &["nested too deeply"]);
}

#[test]
fn a_flow_yaml_spec_is_still_accepted() {
    let (ok, stderr) = submit(
        "spec.yaml",
        b"{resource: local-process, overrides: {entry_point: [true]}}",
    );
    // Parsed as YAML (it is not JSON); then refused for the item type.
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("overrides.entry_point"),
        "{stderr}"
    );
    let (ok, stderr) = submit(
        "spec.yaml",
        b"{resource: local-process, overrides: {entry_point: [echo]}}",
    );
    assert!(ok, "{stderr}");
}

#[test]
fn wrong_field_types_name_the_file() {
    refused(
        "spec.json",
        b"{\"git\": [\"repo\"]}",
        ":",
        &["`git` must be a map, not a list"],
    );
    refused("spec.json", b"[1, 2]", ":", &["must be a map of fields"]);
}

#[test]
fn an_empty_spec_is_refused_as_empty() {
    for bytes in [&b""[..], b"\n  \n", b"# just a comment\n"] {
        refused("spec.yaml", bytes, ":", &["is empty"]);
    }
}

#[test]
fn bytes_that_are_not_utf8_are_placed() {
    refused(
        "spec.json",
        b"{\n  \"name\": \"caf\xe9\"\n}\n",
        ":2:15:",
        &["is not UTF-8"],
    );
}

#[test]
fn a_spec_past_the_size_cap_is_refused() {
    let mut big = b"{\"name\": \"".to_vec();
    big.resize(17 * 1024 * 1024, b'x');
    big.extend_from_slice(b"\"}");
    let (ok, stderr) = submit("spec.json", &big);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("larger than 16 MiB"),
        "{stderr}"
    );
}

#[test]
fn a_long_or_forged_uri_is_escaped_and_cut() {
    let long = format!("{{\"uri\": \"missing/{}\"}}", "x".repeat(1_000_000));
    let (ok, stderr) = submit("spec.json", long.as_bytes());
    assert!(!ok);
    assert!(stderr.len() < 2000, "{} bytes", stderr.len());
    assert!(error_line(&stderr).contains("more bytes"), "{stderr}");
    let forged = b"{\"uri\": \"missing\\nERROR forged \\u001b[2J line\"}";
    let (ok, stderr) = submit("spec.json", forged);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("missing\\nERROR forged"),
        "{stderr}"
    );
}
