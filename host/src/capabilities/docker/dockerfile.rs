//! What a Dockerfile makes the engine fetch by itself, found before the
//! engine sees the build: the images it pulls and the URLs `ADD` downloads.
//!
//! The engine pulls a build's base images and `ADD`s its URLs itself, on
//! the host's network, whatever network mode the build's steps get. So the
//! capability reads the Dockerfile first ([`fetches`]) and holds each fetch
//! to the builder's grants (see [`super`]): a Dockerfile the capability
//! cannot read with certainty is refused, never guessed at.
//!
//! | where | what is fetched |
//! |---|---|
//! | `# syntax=<image>` (a parser directive) | the BuildKit frontend image |
//! | `FROM [--platform=...] <image> [AS <name>]` | a base image (not a stage named earlier, not `scratch`) |
//! | `COPY --from=<image>`, `ADD --from=...` | an image (not a stage's name or index) |
//! | `RUN --mount=...,from=<image>` | an image (not a stage) |
//! | `ADD <http(s) URL> ...` | the URL |
//! | `ONBUILD <instruction>` | what the instruction fetches (in a later build) |
//!
//! Variables are substituted as the engine does: `$NAME`, `${NAME}`,
//! `${NAME:-default}` and `${NAME:+alternative}`, with the `ARG`s declared
//! before the first `FROM` (their defaults, overridden by the build's
//! arguments) for `FROM`, and every `ARG` seen so far elsewhere; an unknown
//! variable is empty. Any other `${...}` form is refused. Line
//! continuations follow the `# escape=` directive (`\` by default).

use std::collections::{BTreeMap, BTreeSet};

/// The longest Dockerfile read (the engine's own limit is far larger; a
/// builder's Dockerfile is a few KiB).
pub const MAX_DOCKERFILE: usize = 1024 * 1024;

/// One thing a Dockerfile makes the engine fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The (first) line of the instruction, from 1.
    pub line: usize,
    /// The instruction, as refusals name it (`FROM`, `COPY --from`, ...).
    pub instruction: &'static str,
    /// What is fetched: an image reference, or a URL for
    /// [`FetchKind::Url`].
    pub target: String,
    /// An image or a URL.
    pub kind: FetchKind,
    /// The platform asked for by a `FROM --platform=`, after substitution
    /// (empty when none).
    pub platform: String,
}

/// What kind of thing a [`Fetch`] fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchKind {
    /// An image the engine pulls (or finds locally).
    Image,
    /// A URL the engine downloads (`ADD <url>`).
    Url,
}

/// One logical line: its first physical line and its text, continuations
/// joined.
struct Logical {
    line: usize,
    text: String,
}

/// The fetches of `dockerfile` built with `build_args`, in order; the error
/// names the line and what could not be read.
pub fn fetches(dockerfile: &str, build_args: &[(String, String)]) -> Result<Vec<Fetch>, String> {
    if dockerfile.len() > MAX_DOCKERFILE {
        return Err(format!(
            "the Dockerfile is {} bytes, more than the {MAX_DOCKERFILE} read",
            dockerfile.len()
        ));
    }
    let overrides: BTreeMap<&str, &str> = build_args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (directives, escape, body_start) = directives(dockerfile)?;
    let mut out = Vec::new();
    for (line, name, value) in directives {
        if name == "syntax" {
            out.push(Fetch {
                line,
                instruction: "# syntax=",
                target: value,
                kind: FetchKind::Image,
                platform: String::new(),
            });
        }
    }
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut stage_count = 0usize;
    let mut global_args: BTreeMap<String, String> = BTreeMap::new();
    for logical in logical_lines(dockerfile, escape, body_start) {
        let line = logical.line;
        let at = |why: String| format!("line {line}: {why}");
        let (keyword, rest) = split_word(&logical.text);
        let keyword = keyword.to_ascii_uppercase();
        let (keyword, rest, onbuild) = if keyword == "ONBUILD" {
            let (inner, inner_rest) = split_word(rest);
            (inner.to_ascii_uppercase(), inner_rest, true)
        } else {
            (keyword, rest, false)
        };
        match keyword.as_str() {
            // An ARG before the first FROM is global: FROM lines see it.
            // ARGs inside a stage (and ENV) reach no checked value: `$`
            // in a `--from` or an `ADD` source is refused instead.
            "ARG" if !onbuild && stage_count == 0 => {
                for (name, default) in arg_declarations(rest).map_err(at)? {
                    let value = match overrides.get(name.as_str()) {
                        Some(v) => Some(v.to_string()),
                        None => match default {
                            Some(d) => Some(substitute(&d, &global_args).map_err(at)?),
                            None => None,
                        },
                    };
                    match value {
                        Some(value) => global_args.insert(name, value),
                        None => global_args.remove(&name),
                    };
                }
            }
            "FROM" if !onbuild => {
                let words = shell_words(rest);
                let mut platform = String::new();
                let mut positional = Vec::new();
                for word in &words {
                    match word.strip_prefix("--") {
                        Some(flag) => match flag.split_once('=') {
                            Some(("platform", value)) => {
                                platform = substitute(value, &global_args).map_err(at)?
                            }
                            _ => return Err(at(format!("FROM has an unknown flag {word:?}"))),
                        },
                        None => positional.push(word.as_str()),
                    }
                }
                let (image, name) = match positional.as_slice() {
                    [image] => (*image, None),
                    [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                        (*image, Some(name.to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(at(format!(
                            "FROM must be `FROM [--platform=...] <image> [AS <name>]`, not {:?}",
                            rest.trim()
                        )));
                    }
                };
                let image = substitute(image, &global_args).map_err(at)?;
                if image.is_empty() {
                    return Err(at("FROM names no image".into()));
                }
                let lowered = image.to_ascii_lowercase();
                if !stages.contains(&lowered) && lowered != "scratch" {
                    out.push(Fetch {
                        line,
                        instruction: "FROM",
                        target: image,
                        kind: FetchKind::Image,
                        platform,
                    });
                }
                if let Some(name) = name {
                    stages.insert(name);
                }
                stage_count += 1;
            }
            "COPY" | "ADD" => {
                let instruction = match (keyword.as_str(), onbuild) {
                    ("COPY", false) => "COPY --from",
                    ("COPY", true) => "ONBUILD COPY --from",
                    (_, false) => "ADD --from",
                    (_, true) => "ONBUILD ADD --from",
                };
                let (flags, args) = leading_flags(rest);
                for flag in &flags {
                    if let Some(from) = flag.strip_prefix("--from=") {
                        let from = no_variables(from, instruction).map_err(at)?;
                        if !is_stage(&from, &stages, stage_count) {
                            out.push(Fetch {
                                line,
                                instruction,
                                target: from,
                                kind: FetchKind::Image,
                                platform: String::new(),
                            });
                        }
                    }
                }
                if keyword == "ADD" {
                    let instruction = if onbuild { "ONBUILD ADD" } else { "ADD" };
                    let sources = add_sources(&args);
                    for source in sources {
                        let source = no_variables(&source, instruction).map_err(at)?;
                        if is_remote(&source) {
                            out.push(Fetch {
                                line,
                                instruction,
                                target: source,
                                kind: FetchKind::Url,
                                platform: String::new(),
                            });
                        }
                    }
                }
            }
            "RUN" => {
                let (flags, _) = leading_flags(rest);
                for flag in &flags {
                    let Some(mount) = flag.strip_prefix("--mount=") else {
                        continue;
                    };
                    for field in mount.split(',') {
                        if let Some(from) = field.strip_prefix("from=") {
                            let from = no_variables(from, "RUN --mount from").map_err(at)?;
                            if !is_stage(&from, &stages, stage_count) {
                                out.push(Fetch {
                                    line,
                                    instruction: if onbuild {
                                        "ONBUILD RUN --mount from"
                                    } else {
                                        "RUN --mount from"
                                    },
                                    target: from,
                                    kind: FetchKind::Image,
                                    platform: String::new(),
                                });
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `text` itself, when it has no variable (`$`): the values a stage's
/// ARGs and ENVs give are not followed, so such a value is refused.
fn no_variables(text: &str, instruction: &str) -> Result<String, String> {
    if text.contains('$') {
        return Err(format!(
            "{instruction} {text:?} uses a variable, which the host does not resolve there: write the value itself"
        ));
    }
    Ok(text.to_string())
}

/// Whether `from` names a stage: an earlier stage's name, or the index of
/// an earlier stage.
fn is_stage(from: &str, stages: &BTreeSet<String>, stage_count: usize) -> bool {
    stages.contains(&from.to_ascii_lowercase())
        || from.parse::<usize>().is_ok_and(|i| i < stage_count)
}

/// Whether an `ADD` source is downloaded by the engine (a URL or a git
/// remote) rather than taken from the context.
fn is_remote(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.contains("://") || lower.starts_with("git@")
}

/// The parser directives at the top (`# name=value`, before anything
/// else): their lines, names (lowercase) and values, the escape character,
/// and the byte offset where the body starts.
#[allow(clippy::type_complexity, reason = "a private helper's plain tuple")]
fn directives(text: &str) -> Result<(Vec<(usize, String, String)>, char, usize), String> {
    let mut found = Vec::new();
    let mut escape = '\\';
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim();
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let Some((name, value)) = comment.split_once('=') else {
            break;
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            break;
        }
        let value = value.trim().to_string();
        if found.iter().any(|(_, n, _)| *n == name) {
            return Err(format!(
                "line {}: the parser directive {name:?} is given twice",
                i + 1
            ));
        }
        if name == "escape" {
            escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(format!(
                        "line {}: escape directive {other:?} is not \\ or `",
                        i + 1
                    ));
                }
            };
        }
        found.push((i + 1, name, value));
        offset += raw.len();
    }
    Ok((found, escape, offset))
}

/// The instructions of the body, comments and blank lines left out,
/// continuation lines (ending with `escape`) joined.
fn logical_lines(text: &str, escape: char, start: usize) -> Vec<Logical> {
    let first_line = text[..start].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    for (i, raw) in text[start..].lines().enumerate() {
        let number = first_line + i;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || (current.is_some() && trimmed.trim().is_empty()) {
            continue;
        }
        let body = raw.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(body) => (body, true),
            None => (body, false),
        };
        let logical = current.get_or_insert_with(|| Logical {
            line: number,
            text: String::new(),
        });
        logical.text.push_str(body);
        if continues {
            logical.text.push(' ');
        } else if let Some(done) = current.take()
            && !done.text.trim().is_empty()
        {
            out.push(done);
        }
    }
    if let Some(done) = current
        && !done.text.trim().is_empty()
    {
        out.push(done);
    }
    out
}

/// The first word of `text` and the rest.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    }
}

/// The whitespace-separated words of `text`, quotes (`"` and `'`) removed.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `--flag[=value]` words at the start of an instruction's arguments,
/// and the rest of the text.
fn leading_flags(text: &str) -> (Vec<String>, String) {
    let mut rest = text.trim_start();
    let mut flags = Vec::new();
    while rest.starts_with("--") {
        let (word, after) = split_word(rest);
        flags.push(shell_words(word).concat());
        rest = after.trim_start();
    }
    (flags, rest.to_string())
}

/// The sources of an `ADD` (every argument but the last), in its JSON or
/// its plain form.
fn add_sources(args: &str) -> Vec<String> {
    let args = args.trim();
    let words: Vec<String> = if args.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(args) {
            Ok(words) => words,
            Err(_) => shell_words(args),
        }
    } else {
        shell_words(args)
    };
    match words.split_last() {
        Some((_, sources)) => sources.to_vec(),
        None => Vec::new(),
    }
}

/// The `ARG` declarations of `text`: names and defaults (`ARG A=1 B`).
fn arg_declarations(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    shell_words(text)
        .into_iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((name, default)) => (name.to_string(), Some(default.to_string())),
                None => (word, None),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("ARG {name:?} is not a variable name"));
            }
            Ok((name, default))
        })
        .collect()
}

/// `text` with its variables replaced by their values in `vars` (an
/// unknown one is empty, as the engine has it); a form other than `$NAME`,
/// `${NAME}`, `${NAME:-word}` and `${NAME:+word}` is an error.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('{') => {
                let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') else {
                    return Err(format!("{text:?} has an unclosed `${{`"));
                };
                let inner: String = chars[i + 2..i + 2 + end].iter().collect();
                let name_end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
                let (name, modifier) = inner.split_at(name_end);
                if name.is_empty() {
                    return Err(format!("{text:?} has an empty variable name"));
                }
                let value = vars.get(name).filter(|v| !v.is_empty());
                let replaced = if modifier.is_empty() {
                    value.cloned().unwrap_or_default()
                } else if let Some(word) = modifier.strip_prefix(":-") {
                    match value {
                        Some(v) => v.clone(),
                        None => substitute(word, vars)?,
                    }
                } else if let Some(word) = modifier.strip_prefix(":+") {
                    match value {
                        Some(_) => substitute(word, vars)?,
                        None => String::new(),
                    }
                } else {
                    return Err(format!(
                        "{text:?} uses `${{{inner}}}`, a substitution the host does not read (use $NAME, ${{NAME}}, ${{NAME:-word}} or ${{NAME:+word}})"
                    ));
                };
                out.push_str(&replaced);
                i += end + 3;
            }
            Some(&n) if is_name(n) => {
                let len = chars[i + 1..]
                    .iter()
                    .position(|&c| !is_name(c))
                    .unwrap_or(chars.len() - i - 1);
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i += len + 1;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(dockerfile: &str, args: &[(&str, &str)]) -> Vec<(usize, &'static str, String)> {
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fetches(dockerfile, &args)
            .unwrap()
            .into_iter()
            .map(|f| (f.line, f.instruction, f.target))
            .collect()
    }

    #[test]
    fn base_images_stages_and_scratch() {
        let found = images(
            "FROM python:3.11 AS deps\nRUN pip install x\n\nFROM deps\nFROM Deps AS again\nFROM scratch\nCOPY --from=deps /a /b\nCOPY --from=0 /a /b\nCOPY --from=evil.example.com/x:1 /a /b\nCOPY --from=7 /a /b\n",
            &[],
        );
        assert_eq!(
            found,
            [
                (1, "FROM", "python:3.11".to_string()),
                (9, "COPY --from", "evil.example.com/x:1".to_string()),
                (10, "COPY --from", "7".to_string()),
            ]
        );
    }

    #[test]
    fn platform_flags_args_and_overrides() {
        let text = "ARG REG=registry.example.com\nARG NAME\nARG TAG=1\nFROM --platform=linux/arm64 ${REG}/${NAME:-app}:$TAG AS build\nARG INNER=x\nFROM ${REG:+mirror.example.com/}busybox\n";
        assert_eq!(
            images(text, &[]),
            [
                (4, "FROM", "registry.example.com/app:1".to_string()),
                (6, "FROM", "mirror.example.com/busybox".to_string()),
            ]
        );
        let found = fetches(text, &[("REG".into(), "evil.example.com".into())]).unwrap();
        assert_eq!(found[0].target, "evil.example.com/app:1");
        assert_eq!(found[0].platform, "linux/arm64");
        // An ARG declared only after FROM does not reach a later FROM.
        assert_eq!(
            images("FROM a\nARG X=evil.io/b\nFROM ${X:-c}\n", &[]),
            [(1, "FROM", "a".to_string()), (3, "FROM", "c".to_string())]
        );
    }

    #[test]
    fn undeclared_variables_are_empty_and_odd_forms_refused() {
        assert!(
            fetches("FROM $UNDECLARED\n", &[("UNDECLARED".into(), "x".into())])
                .unwrap_err()
                .contains("no image")
        );
        let e = fetches("ARG A=x\nFROM ${A#x}evil.io/b\n", &[]).unwrap_err();
        assert!(e.contains("line 2") && e.contains("substitution"), "{e}");
        for hidden in [
            "FROM a\nENV I=evil.io/x\nCOPY --from=${I:-0} /a /b\n",
            "FROM a\nENV U=http://evil.io/x\nADD $U /x\n",
            "FROM a\nARG I=evil.io/x\nRUN --mount=from=$I,target=/x true\n",
        ] {
            let e = fetches(hidden, &[]).unwrap_err();
            assert!(e.contains("line 3") && e.contains("variable"), "{e}");
        }
        let e = fetches("FROM --network=host busybox\n", &[]).unwrap_err();
        assert!(e.contains("unknown flag"), "{e}");
        let e = fetches("FROM a b c d\n", &[]).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn directives_continuations_and_comments() {
        let text = "# syntax=docker.io/docker/dockerfile:1\n# escape=`\nFROM `\n  # a comment inside\n  evil.example.com/base:1 `\n  AS base\nRUN --mount=type=bind,from=other.example.com/x,target=/x true\nADD https://evil.example.com/payload /p\nADD [\"http://a.example.com/x\", \"local\", \"/dst\"]\nADD local.tar /dst\nONBUILD COPY --from=later.example.com/y /a /b\n";
        assert_eq!(
            images(text, &[]),
            [
                (1, "# syntax=", "docker.io/docker/dockerfile:1".to_string()),
                (3, "FROM", "evil.example.com/base:1".to_string()),
                (7, "RUN --mount from", "other.example.com/x".to_string()),
                (8, "ADD", "https://evil.example.com/payload".to_string()),
                (9, "ADD", "http://a.example.com/x".to_string()),
                (11, "ONBUILD COPY --from", "later.example.com/y".to_string()),
            ]
        );
        // A directive after the first instruction is a comment.
        assert_eq!(
            images("FROM a\n# syntax=evil.io/f\n", &[]),
            [(1, "FROM", "a".to_string())]
        );
        assert!(fetches("# escape=x\nFROM a\n", &[]).is_err());
        // Quoted image names are read without their quotes.
        assert_eq!(
            images("FROM \"evil.io/q\"\n", &[]),
            [(1, "FROM", "evil.io/q".to_string())]
        );
    }
}
