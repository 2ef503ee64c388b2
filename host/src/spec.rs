//! The W&B launch spec (`runSpec`) a queue item carries.
//!
//! Fields read here (others are kept and passed to plugins as they are):
//!
//! | field | meaning |
//! |---|---|
//! | `job` | a W&B job artifact, `entity/project/name:alias` |
//! | `docker.docker_image`, `image_uri` | the image to run (no build) |
//! | `uri` | a local directory with the job's code (local-process runs there) |
//! | `entity`, `project`, `name`, `run_id`, `sweep_id`, `author` | the run |
//! | `overrides.entry_point` | the command, a list (or a string, split on spaces) |
//! | `overrides.args` | arguments appended to the entry point (a list, or a map of `--key value`) |
//! | `overrides.run_config` | the run's config, passed as `WANDB_CONFIG` |
//! | `resource` | `local-process` (default) or `local-container`, `kubernetes`, ... |
//! | `resource_args.<resource>` | arguments for that runner |
//! | `_wandb_api_key` | the API key; never stored by the embedded queue, never logged |

use crate::input::{self, MAX_INPUT_BYTES, Problem, json, yaml};
use crate::json_kind;
use crate::text::for_log;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// The key W&B puts the API key under.
pub const API_KEY_FIELD: &str = "_wandb_api_key";

/// A launch spec that failed validation; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("launch spec: {0}")]
pub struct SpecError(pub String);

/// A validated launch spec.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    raw: Map<String, Value>,
}

/// Reads a spec file: at most [`MAX_INPUT_BYTES`], UTF-8 (the error says
/// where the first byte that is not is).
pub fn read_file(path: &Path) -> Result<String, SpecError> {
    let source = path.to_string_lossy();
    let bytes = input::read_capped(path).map_err(|reason| cannot_read(&source, &reason))?;
    decode(bytes, &source)
}

/// Reads a spec from `reader` (standard input), named `source` in errors,
/// as [`read_file`] reads a file.
pub fn read_from(reader: impl Read, source: &str) -> Result<String, SpecError> {
    let bytes = input::read_capped_from(reader).map_err(|reason| cannot_read(source, &reason))?;
    decode(bytes, source)
}

fn cannot_read(source: &str, reason: &str) -> SpecError {
    SpecError(format!(
        "cannot read launch spec {}: {}",
        for_log(source),
        for_log(reason)
    ))
}

fn decode(bytes: Vec<u8>, source: &str) -> Result<String, SpecError> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let problem = input::utf8(e.as_bytes()).err();
            Err(SpecError(problem.map_or_else(
                || format!("{}: is not UTF-8 text", for_log(source)),
                |p| p.render(source),
            )))
        }
    }
}

/// Reads spec text, JSON or YAML, and checks that it is a spec: a map
/// whose known fields have the right types. Errors name `source`, with
/// the line and column where the parser gives them.
///
/// Text that starts with `{` or `[` is JSON, and its errors are the JSON
/// parser's (in our words), unless it is YAML written in flow style; any
/// other text is YAML.
pub fn parse_text(text: &str, source: &str) -> Result<Value, SpecError> {
    let named = |message: &str| SpecError(format!("{}: {message}", for_log(source)));
    if text.len() > MAX_INPUT_BYTES {
        return Err(named(&input::too_large()));
    }
    let body = text.trim_start_matches('\u{feff}');
    if input::is_blank(body) {
        return Err(named(
            "is empty: a launch spec is a map of fields (`uri`, `docker`, `overrides`, ...), in JSON or YAML",
        ));
    }
    let at = |problem: Problem| SpecError(problem.render(source));
    let value: Value = if body.trim_start().starts_with(['{', '[']) {
        match json::from_str(body) {
            Ok(value) => value,
            Err(problem) => yaml::from_str(body).map_err(|_| at(problem))?,
        }
    } else {
        yaml::from_str(body).map_err(at)?
    };
    let Value::Object(raw) = &value else {
        return Err(named(&not_a_map(&value)));
    };
    LaunchSpec::check(raw).map_err(|e| named(&e.0))?;
    Ok(value)
}

fn not_a_map(value: &Value) -> String {
    format!("must be a map of fields, not {}", json_kind::of(value))
}

fn string_field<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(SpecError(format!(
            "`{path}` must be a string, not {}",
            json_kind::of(other)
        ))),
    }
}

impl LaunchSpec {
    /// Validates a spec value: an object whose known fields have the right types.
    pub fn from_value(value: Value) -> Result<Self, SpecError> {
        let Value::Object(raw) = value else {
            return Err(SpecError(not_a_map(&value)));
        };
        Self::check(&raw)?;
        Ok(LaunchSpec { raw })
    }

    /// Checks the known fields of a spec's map.
    fn check(raw: &Map<String, Value>) -> Result<(), SpecError> {
        for key in [
            "job",
            "image_uri",
            "uri",
            "entity",
            "project",
            "name",
            "run_id",
            "sweep_id",
            "author",
            "resource",
        ] {
            string_field(raw, key, key)?;
        }
        for (block, fields) in [
            ("git", &["repo", "version"][..]),
            ("docker", &["docker_image"][..]),
        ] {
            match raw.get(block) {
                None | Some(Value::Null) => {}
                Some(Value::Object(map)) => {
                    for field in fields {
                        string_field(map, field, &format!("{block}.{field}"))?;
                    }
                }
                Some(other) => {
                    return Err(SpecError(format!(
                        "`{block}` must be a map, not {}",
                        json_kind::of(other)
                    )));
                }
            }
        }
        command_of(raw.get("overrides").and_then(Value::as_object))?;
        Ok(())
    }

    fn overrides(&self) -> Option<&Map<String, Value>> {
        self.raw.get("overrides").and_then(Value::as_object)
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.raw
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The runner: `resource`, default `local-process`.
    pub fn resource(&self) -> &str {
        self.str("resource").unwrap_or("local-process")
    }

    /// The image the job names, if any (`docker.docker_image` or `image_uri`).
    pub fn image(&self) -> Option<&str> {
        self.raw
            .get("docker")
            .and_then(|d| d.get("docker_image"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| self.str("image_uri"))
    }

    /// The local code directory (`uri`), when it is not a URL.
    pub fn code_dir(&self) -> Option<&str> {
        self.str("uri").filter(|u| !u.contains("://"))
    }

    /// `uri` as given: a local path or a URL (see
    /// [`sources::code_dir`](crate::sources::code_dir)).
    pub fn uri(&self) -> Option<&str> {
        self.str("uri")
    }

    /// The git source: `git.repo` and `git.version`.
    pub fn git(&self) -> Option<(String, Option<String>)> {
        let git = self.raw.get("git")?.as_object()?;
        let repo = git.get("repo")?.as_str().filter(|s| !s.is_empty())?;
        let version = git
            .get("version")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        Some((repo.to_string(), version.map(str::to_string)))
    }

    /// The W&B job artifact (`job`).
    pub fn job(&self) -> Option<&str> {
        self.str("job")
    }

    /// `resource_args.<resource>` for the job's runner (null when absent).
    pub fn resource_args(&self) -> Value {
        self.raw
            .get("resource_args")
            .and_then(|r| r.get(self.resource()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The command: `overrides.entry_point` then `overrides.args`.
    pub fn entry_point(&self) -> Result<Vec<String>, SpecError> {
        command_of(self.overrides())
    }

    /// `overrides.entry_point` and `overrides.args` apart (either may be
    /// empty): a job without an entry point of its own runs its job's or
    /// image's entry point with these arguments.
    pub fn entry_point_and_args(&self) -> Result<(Vec<String>, Vec<String>), SpecError> {
        let Some(overrides) = self.overrides() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut entry_only = overrides.clone();
        entry_only.remove("args");
        let entry = command_of(Some(&entry_only))?;
        let mut with_args = overrides.clone();
        with_args.remove("entry_point");
        let args = command_of(Some(&with_args))?;
        Ok((entry, args))
    }

    /// The run id: `run_id`, or `fallback` (the queue item id).
    pub fn run_id(&self, fallback: &str) -> String {
        self.str("run_id")
            .map(str::to_string)
            .unwrap_or_else(|| fallback.chars().take(8).collect())
    }

    /// The spec as plugins and logs may see it: without the API key.
    pub fn redacted(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.remove(API_KEY_FIELD);
        Value::Object(raw)
    }

    /// The W&B environment of a run (reference §7).
    pub fn wandb_env(&self, item_id: &str, queue: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("WANDB_LAUNCH".to_string(), "True".to_string()),
            ("WANDB_RUN_ID".to_string(), self.run_id(item_id)),
            ("WANDB_LAUNCH_QUEUE_NAME".to_string(), queue.to_string()),
            ("WANDB_LAUNCH_TRACE_ID".to_string(), item_id.to_string()),
        ];
        for (key, var) in [
            ("project", "WANDB_PROJECT"),
            ("entity", "WANDB_ENTITY"),
            ("name", "WANDB_NAME"),
            ("sweep_id", "WANDB_SWEEP_ID"),
        ] {
            if let Some(value) = self.str(key) {
                env.push((var.to_string(), value.to_string()));
            }
        }
        if let Some(config) = self.overrides().and_then(|o| o.get("run_config")) {
            env.push(("WANDB_CONFIG".to_string(), config.to_string()));
        }
        if let Some(image) = self.image() {
            env.push(("WANDB_DOCKER".to_string(), image.to_string()));
        }
        for var in ["WANDB_BASE_URL", "WANDB_API_KEY"] {
            if let Some(value) = crate::secret_env::var(var) {
                env.push((var.to_string(), value));
            }
        }
        if let Some(key) = self.raw.get(API_KEY_FIELD).and_then(Value::as_str) {
            env.retain(|(k, _)| k != "WANDB_API_KEY");
            env.push(("WANDB_API_KEY".to_string(), key.to_string()));
        }
        env
    }
}

/// The command of `overrides`: `entry_point` then `args`.
fn command_of(overrides: Option<&Map<String, Value>>) -> Result<Vec<String>, SpecError> {
    let Some(overrides) = overrides else {
        return Ok(Vec::new());
    };
    let mut command: Vec<String> = match overrides.get("entry_point") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(SpecError(format!(
                    "`overrides.entry_point` items must be strings, not {}",
                    json_kind::of(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(SpecError(format!(
                "`overrides.entry_point` must be a list of strings, not {}",
                json_kind::of(other)
            )));
        }
    };
    match overrides.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                command.push(match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
        Some(Value::Object(map)) => {
            for (k, v) in map {
                command.push(format!("--{k}"));
                command.push(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
        Some(other) => {
            return Err(SpecError(format!(
                "`overrides.args` must be a list or a map, not {}",
                json_kind::of(other)
            )));
        }
    }
    Ok(command)
}

/// Removes the API key from a spec before it is stored; says whether one was there.
pub fn strip_api_key(spec: &mut Value) -> bool {
    spec.as_object_mut()
        .and_then(|m| m.remove(API_KEY_FIELD))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entry_point_and_args_make_the_command() {
        let spec = LaunchSpec::from_value(
            json!({"overrides": {"entry_point": ["python", "train.py"], "args": ["--lr", "0.1"]}}),
        )
        .unwrap();
        assert_eq!(
            spec.entry_point().unwrap(),
            ["python", "train.py", "--lr", "0.1"]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = LaunchSpec::from_value(json!({"overrides": {"entry_point": 3}})).unwrap_err();
        assert!(err.to_string().contains("overrides.entry_point"), "{err}");
        let err = LaunchSpec::from_value(json!({"docker": {"docker_image": 1}})).unwrap_err();
        assert!(err.to_string().contains("docker.docker_image"), "{err}");
        let err = LaunchSpec::from_value(json!([1])).unwrap_err();
        assert!(err.to_string().contains("map"), "{err}");
    }

    #[test]
    fn the_api_key_never_reaches_plugins() {
        let spec = LaunchSpec::from_value(json!({"_wandb_api_key": "k".repeat(40)})).unwrap();
        assert!(!spec.redacted().to_string().contains("kkkk"));
    }
}
