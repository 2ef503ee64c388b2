//! The rules the image builders share (`builder-docker`, `builder-kaniko`):
//! which Dockerfile a job gets, the generated Dockerfile, the image tag and
//! URI.
//!
//! Why one crate: a job built once by either builder must be skipped by the
//! other, so both must decide the same Dockerfile text and the same tag for
//! the same job, byte for byte. The generated Dockerfile's first line names
//! `builder-docker` for that reason: it is part of the hashed text, and
//! changing it would rebuild every image already pushed.
//!
//! | rule | function |
//! |---|---|
//! | which Dockerfile (W&B's priority), and the image URI | [`plan`] |
//! | the image tag, `sha256(source-id + dockerfile)[:8]` | [`image_tag`] |
//! | the generated Dockerfile of a Python code job | [`generate_dockerfile`], [`dependencies`] |
//! | the launch spec of a request, the run id | [`parse_spec`], [`run_id`] |
//!
//! Nothing here calls the host (only the SDK's log macros, which print to
//! stderr outside WebAssembly), so `cargo test -p builder-common` exercises
//! it natively; the job's source is read with `std::fs`, which is WASI's
//! preopened (read-only) source directory in a plugin.

#![warn(missing_docs)]

use launch_plugin_sdk::PluginError;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The Python image generated Dockerfiles start from, unless the plugin's
/// `base-image` setting names another.
pub const DEFAULT_BASE_IMAGE: &str = "python:3.11-slim";

/// The Dockerfile name W&B looks for beside a job's entry point.
pub const WANDB_DOCKERFILE: &str = "Dockerfile.wandb";

/// Where generated Dockerfiles put the job's code, and the image's workdir.
pub const CODE_DIR: &str = "/src";

/// The uid generated images run as (W&B's non-root user), with gid 0.
pub const RUNTIME_UID: u32 = 1000;

/// The repository prefix of images built without a registry destination.
pub const LOCAL_REPOSITORY_PREFIX: &str = "launch-agent";

/// What `plan` needs from a build request, without the WIT types.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The queue item's id.
    pub job_id: &'a str,
    /// The launch spec (a JSON object).
    pub spec: &'a Value,
    /// Where the job's source is readable, if it has one.
    pub source_dir: Option<&'a Path>,
    /// The source as the tag hashes it (the request's `source-id`).
    pub source_id: &'a str,
    /// The registry repository (no tag); empty for a local-only build.
    pub destination: &'a str,
}

/// A decided build: the plugin's view of the WIT `build-plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `repository:tag`.
    pub image_uri: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Where the Dockerfile came from, for the job log.
    pub origin: String,
    /// Whether the image goes to a registry (else it stays in the local
    /// engine).
    pub push: bool,
}

/// Where a job's dependencies come from, in a generated Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependencies {
    /// `pip install -r <file>`, a file at the source root.
    Requirements(String),
    /// `pip install <packages>`, from `pyproject.toml`'s `[project].dependencies`.
    Packages(Vec<String>),
    /// Nothing to install.
    None,
}

impl Dependencies {
    /// How the dependencies are installed, for `dockerfile-origin`.
    pub fn describe(&self) -> String {
        match self {
            Dependencies::Requirements(file) => format!("dependencies from {file}"),
            Dependencies::Packages(_) => "dependencies from pyproject.toml".to_string(),
            Dependencies::None => "no dependencies".to_string(),
        }
    }
}

/// Decides the Dockerfile and image of a job (W&B's rules, see the crate
/// docs); `base_image` is the Python image of generated Dockerfiles (the
/// plugin's `base-image` setting, else [`DEFAULT_BASE_IMAGE`]). Errors have
/// stage `build` and say what to change.
pub fn plan(input: &PlanInput<'_>, base_image: &str) -> Result<Plan, PluginError> {
    let (dockerfile, origin) = choose_dockerfile(input, base_image)?;
    let repository = repository(input)?;
    let source_id = if input.source_id.is_empty() {
        // Without a source id the tag would depend on the Dockerfile alone,
        // and two jobs with different code could share an image: key it to
        // the job instead (no reuse, but never the wrong code).
        launch_plugin_sdk::warn!(
            "no source id for job {}: the image tag is keyed to the job, so it is never reused",
            input.job_id
        );
        format!("job:{}", input.job_id)
    } else {
        input.source_id.to_string()
    };
    let tag = image_tag(&source_id, &dockerfile);
    Ok(Plan {
        image_uri: format!("{repository}:{tag}"),
        dockerfile,
        origin,
        push: !input.destination.trim().is_empty(),
    })
}

/// W&B's image tag: the first 8 hex digits of
/// `sha256(source_id + dockerfile)`.
pub fn image_tag(source_id: &str, dockerfile: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source_id.as_bytes());
    hasher.update(dockerfile.as_bytes());
    let digest = hasher.finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The repository the image is tagged into: the destination, or
/// `launch-agent/<project or job name>` for a local-only build.
pub fn repository(input: &PlanInput<'_>) -> Result<String, PluginError> {
    let destination = input.destination.trim();
    if destination.is_empty() {
        return Ok(local_repository(input.spec));
    }
    let last = destination.rsplit('/').next().unwrap_or(destination);
    if last.contains(':') || destination.contains('@') {
        return Err(PluginError::build(format!(
            "the image destination `{destination}` names a tag or digest; give a repository \
             only (`builder.destination` or the registry's URI), the builder adds the tag"
        )));
    }
    Ok(destination.trim_end_matches('/').to_string())
}

/// `launch-agent/<name>` where name is the spec's `project`, else the name
/// in its `job` (`entity/project/name:alias`), else `job`, made a valid
/// repository component (lower case, `[a-z0-9-]`).
pub fn local_repository(spec: &Value) -> String {
    let project = spec.get("project").and_then(Value::as_str);
    let job_name = spec.get("job").and_then(Value::as_str).map(|job| {
        let name = job.rsplit('/').next().unwrap_or(job);
        name.split(':').next().unwrap_or(name)
    });
    let name = [project, job_name]
        .into_iter()
        .flatten()
        .map(sanitize_component)
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "job".to_string());
    format!("{LOCAL_REPOSITORY_PREFIX}/{name}")
}

/// `raw` as a repository path component: lower case, runs of anything but
/// `[a-z0-9]` become one `-`, no `-` at either end, at most 64 characters.
fn sanitize_component(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(64);
    out.trim_end_matches('-').to_string()
}

/// The Dockerfile text and its origin, by W&B's priority.
fn choose_dockerfile(
    input: &PlanInput<'_>,
    base_image: &str,
) -> Result<(String, String), PluginError> {
    let overrides = input.spec.get("overrides");
    if let Some(path) = string_at(overrides, "dockerfile", "overrides.dockerfile")? {
        let text = read_named(input, &path, "overrides.dockerfile")?;
        return Ok((text, format!("overrides.dockerfile: {path}")));
    }
    if let Some(path) = string_at(Some(input.spec), "dockerfile", "dockerfile")? {
        let text = read_named(input, &path, "the job's `dockerfile`")?;
        return Ok((text, format!("job dockerfile: {path}")));
    }
    let entry_point = entry_point(input.spec)?;
    let Some(source) = input.source_dir else {
        return Err(PluginError::build(format!(
            "job {} has no source and no Dockerfile, so there is nothing to build an image from. \
             Give the job an image (`docker.docker_image` or `image_uri` in the launch spec), \
             or code to build (a `job` artifact, `git.repo` or a `uri` directory)",
            input.job_id
        )));
    };
    for candidate in wandb_dockerfile_candidates(&entry_point) {
        if let Some(text) = read_optional(source, &candidate)? {
            if candidate
                .parent()
                .is_some_and(|p| !p.as_os_str().is_empty())
            {
                launch_plugin_sdk::warn!(
                    "{} is used with the source root as build context (W&B uses its directory)",
                    candidate.display()
                );
            }
            check_not_empty(&text, &candidate.display().to_string())?;
            return Ok((text, format!("Dockerfile.wandb: {}", candidate.display())));
        }
    }
    if entry_point.is_empty() {
        return Err(PluginError::build(format!(
            "job {} has no Dockerfile and no entry point, so no Dockerfile can be generated: \
             set `overrides.entry_point` (e.g. [\"python\", \"train.py\"]), or add a Dockerfile \
             (`overrides.dockerfile`, or `{WANDB_DOCKERFILE}` in the source)",
            input.job_id
        )));
    }
    let deps = dependencies(source)?;
    if deps == Dependencies::None {
        launch_plugin_sdk::warn!(
            "no requirements.txt, pyproject.toml dependencies or requirements.frozen.txt in the \
             source: no packages will be installed"
        );
    }
    let text = generate_dockerfile(base_image, &deps, &entry_point);
    Ok((text, format!("generated ({})", deps.describe())))
}

/// The string at `key` of `object`, if set; `name` is the key's full name
/// for the error when it is not a string.
fn string_at(object: Option<&Value>, key: &str, name: &str) -> Result<Option<String>, PluginError> {
    match object.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(PluginError::build(format!(
            "`{name}` in the launch spec must be a path (a string) relative to the job's source"
        ))),
    }
}

/// The job's entry point, `overrides.entry_point` as a list (or a string
/// split on spaces); empty when it is not set.
pub fn entry_point(spec: &Value) -> Result<Vec<String>, PluginError> {
    match spec.get("overrides").and_then(|o| o.get("entry_point")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_string).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(PluginError::build(
                    "`overrides.entry_point` items must be strings",
                )),
            })
            .collect(),
        Some(_) => Err(PluginError::build(
            "`overrides.entry_point` must be a list of strings",
        )),
    }
}

/// Where `Dockerfile.wandb` may be, in order: beside the entry point's
/// script (its first argument that is not an option, e.g. `src/train.py` in
/// `python -u src/train.py`) when that is in a subdirectory, then the
/// source root.
pub fn wandb_dockerfile_candidates(entry_point: &[String]) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    let script = entry_point.iter().skip(1).find(|a| !a.starts_with('-'));
    if let Some(dir) = script
        .and_then(|s| relative_path(s).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| !d.as_os_str().is_empty())
    {
        candidates.push(dir.join(WANDB_DOCKERFILE));
    }
    candidates.push(PathBuf::from(WANDB_DOCKERFILE));
    candidates
}

/// `raw` as a path inside the source: relative, without `..`.
fn relative_path(raw: &str) -> Result<PathBuf, String> {
    let path = Path::new(raw);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{raw}` must be a path inside the job's source (relative, without `..`)"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("`{raw}` does not name a file"));
    }
    Ok(out)
}

/// Reads the Dockerfile at `raw` (relative to the source) that `name` (a
/// spec key) points at; a missing source or file is an error.
fn read_named(input: &PlanInput<'_>, raw: &str, name: &str) -> Result<String, PluginError> {
    let Some(source) = input.source_dir else {
        return Err(PluginError::build(format!(
            "{name} is `{raw}`, a path in the job's source, but job {} has no source",
            input.job_id
        )));
    };
    let path = relative_path(raw).map_err(|e| PluginError::build(format!("{name}: {e}")))?;
    match read_optional(source, &path)? {
        Some(text) => {
            check_not_empty(&text, raw)?;
            Ok(text)
        }
        None => Err(PluginError::build(format!(
            "{name} is `{raw}`, but the job's source has no such file"
        ))),
    }
}

/// The text of `source/path`, or none when there is no such file.
fn read_optional(source: &Path, path: &Path) -> Result<Option<String>, PluginError> {
    let full = source.join(path);
    if !full.is_file() {
        return Ok(None);
    }
    std::fs::read_to_string(&full).map(Some).map_err(|e| {
        PluginError::build(format!(
            "cannot read {} in the job's source: {e}",
            path.display()
        ))
    })
}

/// Refuses an empty Dockerfile.
fn check_not_empty(text: &str, name: &str) -> Result<(), PluginError> {
    if text.trim().is_empty() {
        return Err(PluginError::build(format!(
            "the Dockerfile {name} is empty"
        )));
    }
    Ok(())
}

/// The job's Python dependencies, from files at the source root, first
/// found: `requirements.txt`, `pyproject.toml`'s `[project].dependencies`,
/// `requirements.frozen.txt` (what W&B saves from a run).
pub fn dependencies(source: &Path) -> Result<Dependencies, PluginError> {
    if source.join("requirements.txt").is_file() {
        return Ok(Dependencies::Requirements("requirements.txt".into()));
    }
    if let Some(text) = read_optional(source, Path::new("pyproject.toml"))? {
        let packages = pyproject_dependencies(&text)?;
        if !packages.is_empty() {
            return Ok(Dependencies::Packages(packages));
        }
    }
    if source.join("requirements.frozen.txt").is_file() {
        return Ok(Dependencies::Requirements("requirements.frozen.txt".into()));
    }
    Ok(Dependencies::None)
}

/// `[project].dependencies` of a `pyproject.toml`.
pub fn pyproject_dependencies(text: &str) -> Result<Vec<String>, PluginError> {
    #[derive(Deserialize)]
    struct Pyproject {
        project: Option<Project>,
    }
    #[derive(Deserialize)]
    struct Project {
        #[serde(default)]
        dependencies: Vec<String>,
    }
    let parsed: Pyproject = toml::from_str(text).map_err(|e| {
        PluginError::build(format!(
            "pyproject.toml in the job's source cannot be read: {}",
            e.message()
        ))
    })?;
    Ok(parsed
        .project
        .map(|p| p.dependencies)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect())
}

/// A Dockerfile for a Python code job (the build context is the job's
/// source):
///
/// * a `deps` stage that makes a venv at `/env` and installs the
///   dependencies into it (skipped when there are none);
/// * the runtime stage from the same `base_image`, with `/env` copied in and
///   first on `PATH`, a user `launch` (uid 1000, gid 0, home
///   `/home/launch`), the source copied to `/src` (owned by that user, and
///   the workdir), `USER 1000` and the entry point as a JSON `ENTRYPOINT`.
///
/// Commands use the exec (JSON) form, so no value is ever parsed by a shell.
pub fn generate_dockerfile(
    base_image: &str,
    deps: &Dependencies,
    entry_point: &[String],
) -> String {
    let json = |items: &[&str]| serde_json::to_string(items).expect("strings serialize");
    let pip = "/env/bin/pip";
    let mut out = String::from("# Generated by builder-docker for a Python code job.\n");
    if *deps != Dependencies::None {
        out.push_str(&format!("FROM {base_image} AS deps\n"));
        out.push_str(
            "ENV PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1\n",
        );
        out.push_str(&format!(
            "RUN {}\n",
            json(&["python", "-m", "venv", "/env"])
        ));
        match deps {
            Dependencies::Requirements(file) => {
                out.push_str(&format!("COPY {file} /tmp/deps/{file}\n"));
                let target = format!("/tmp/deps/{file}");
                out.push_str(&format!("RUN {}\n", json(&[pip, "install", "-r", &target])));
            }
            Dependencies::Packages(packages) => {
                let mut args = vec![pip, "install"];
                args.extend(packages.iter().map(String::as_str));
                out.push_str(&format!("RUN {}\n", json(&args)));
            }
            Dependencies::None => {}
        }
        out.push('\n');
        out.push_str(&format!("FROM {base_image}\n"));
        out.push_str("COPY --from=deps /env /env\n");
        out.push_str("ENV PATH=\"/env/bin:$PATH\"\n");
    } else {
        out.push_str(&format!("FROM {base_image}\n"));
    }
    out.push_str("ENV PYTHONUNBUFFERED=1\n");
    out.push_str(&format!(
        "RUN {}\n",
        json(&[
            "useradd",
            "--create-home",
            "--no-log-init",
            "--uid",
            &RUNTIME_UID.to_string(),
            "--gid",
            "0",
            "launch",
        ])
    ));
    out.push_str(&format!("WORKDIR {CODE_DIR}\n"));
    out.push_str(&format!("COPY --chown={RUNTIME_UID}:0 . {CODE_DIR}\n"));
    out.push_str(&format!("USER {RUNTIME_UID}\n"));
    let entry: Vec<&str> = entry_point.iter().map(String::as_str).collect();
    out.push_str(&format!("ENTRYPOINT {}\n", json(&entry)));
    out
}

/// The launch spec of job `job_id` (`spec_json`) as a JSON object; errors
/// have stage `build`.
pub fn parse_spec(job_id: &str, spec_json: &str) -> Result<Value, PluginError> {
    let spec: Value = serde_json::from_str(spec_json).map_err(|e| {
        PluginError::build(format!("the launch spec of job {job_id} is not JSON: {e}"))
    })?;
    if !spec.is_object() {
        return Err(PluginError::build(format!(
            "the launch spec of job {job_id} is not a JSON object"
        )));
    }
    Ok(spec)
}

/// The run id, as the host gives it to the run (`WANDB_RUN_ID`): the spec's
/// `run_id`, else the first 8 characters of the queue item's id.
pub fn run_id(spec: &Value, job_id: &str) -> String {
    match spec.get("run_id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => job_id.chars().take(8).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use launch_plugin_sdk::Stage;
    use serde_json::json;
    use std::fs;

    fn settings() -> &'static str {
        DEFAULT_BASE_IMAGE
    }

    struct Source(tempfile::TempDir);

    impl Source {
        fn new(files: &[(&str, &str)]) -> Source {
            let dir = tempfile::tempdir().unwrap();
            for (path, text) in files {
                let full = dir.path().join(path);
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(full, text).unwrap();
            }
            Source(dir)
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    fn input<'a>(spec: &'a Value, source: Option<&'a Path>, destination: &'a str) -> PlanInput<'a> {
        PlanInput {
            job_id: "q-1",
            spec,
            source_dir: source,
            source_id: "entity/project/job:v3",
            destination,
        }
    }

    const ALL: &[(&str, &str)] = &[
        ("custom/Dockerfile", "FROM override\n"),
        ("Dockerfile", "FROM job-own\n"),
        ("src/Dockerfile.wandb", "FROM beside-entrypoint\n"),
        ("Dockerfile.wandb", "FROM root-wandb\n"),
        ("requirements.txt", "numpy\n"),
        ("src/train.py", "print(1)\n"),
    ];

    fn spec_with(overrides_dockerfile: bool, job_dockerfile: bool) -> Value {
        let mut spec = json!({"overrides": {"entry_point": ["python", "-u", "src/train.py"]}});
        if overrides_dockerfile {
            spec["overrides"]["dockerfile"] = json!("custom/Dockerfile");
        }
        if job_dockerfile {
            spec["dockerfile"] = json!("Dockerfile");
        }
        spec
    }

    #[test]
    fn priority_overrides_then_job_then_wandb_then_generated() {
        let src = Source::new(ALL);
        let cases = [
            (
                spec_with(true, true),
                "FROM override\n",
                "overrides.dockerfile: custom/Dockerfile",
            ),
            (
                spec_with(false, true),
                "FROM job-own\n",
                "job dockerfile: Dockerfile",
            ),
            (
                spec_with(false, false),
                "FROM beside-entrypoint\n",
                "Dockerfile.wandb: src/Dockerfile.wandb",
            ),
        ];
        for (spec, text, origin) in cases {
            let plan = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap();
            assert_eq!(plan.dockerfile, text);
            assert_eq!(plan.origin, origin);
        }

        // Without the one beside the entry point, the root's Dockerfile.wandb.
        fs::remove_file(src.path().join("src/Dockerfile.wandb")).unwrap();
        let spec = spec_with(false, false);
        let p = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap();
        assert_eq!(p.dockerfile, "FROM root-wandb\n");
        assert_eq!(p.origin, "Dockerfile.wandb: Dockerfile.wandb");

        // Without any, a generated one.
        fs::remove_file(src.path().join("Dockerfile.wandb")).unwrap();
        let p = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap();
        assert_eq!(p.origin, "generated (dependencies from requirements.txt)");
        assert!(p.dockerfile.starts_with("# Generated by builder-docker"));
    }

    #[test]
    fn tag_is_sha256_of_source_id_and_dockerfile() {
        // printf '%s' 'entity/project/job:v3FROM python:3.11-slim
        // ' | sha256sum  ->  af11dccc...
        assert_eq!(
            image_tag("entity/project/job:v3", "FROM python:3.11-slim\n"),
            "af11dccc"
        );
        // printf '%s' 'abc' | sha256sum -> ba7816bf...
        assert_eq!(image_tag("a", "bc"), "ba7816bf");
    }

    #[test]
    fn image_uri_uses_the_destination_or_a_local_repository() {
        let src = Source::new(&[("Dockerfile", "FROM python:3.11-slim\n")]);
        let spec = json!({"dockerfile": "Dockerfile", "project": "My Project!"});
        let pushed = plan(
            &input(&spec, Some(src.path()), "registry.example.com/launch"),
            settings(),
        )
        .unwrap();
        assert_eq!(pushed.image_uri, "registry.example.com/launch:af11dccc");
        assert!(pushed.push);

        let local = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap();
        assert_eq!(local.image_uri, "launch-agent/my-project:af11dccc");
        assert!(!local.push);
    }

    #[test]
    fn local_repository_names() {
        assert_eq!(
            local_repository(&json!({"job": "ent/proj/My_Job:latest"})),
            "launch-agent/my-job"
        );
        assert_eq!(
            local_repository(&json!({"project": "--"})),
            "launch-agent/job"
        );
        assert_eq!(local_repository(&json!({})), "launch-agent/job");
    }

    #[test]
    fn destination_with_a_tag_is_refused() {
        let src = Source::new(&[("Dockerfile", "FROM x\n")]);
        let spec = json!({"dockerfile": "Dockerfile"});
        let e = plan(
            &input(&spec, Some(src.path()), "localhost:5000/repo:v1"),
            settings(),
        )
        .unwrap_err();
        assert_eq!(e.stage, Stage::Build);
        assert!(e.message.contains("tag or digest"), "{}", e.message);
        // A registry port is not a tag.
        let ok = plan(
            &input(&spec, Some(src.path()), "localhost:5000/repo"),
            settings(),
        )
        .unwrap();
        assert!(ok.image_uri.starts_with("localhost:5000/repo:"));
    }

    #[test]
    fn empty_source_id_keys_the_tag_to_the_job() {
        let src = Source::new(&[("Dockerfile", "FROM x\n")]);
        let spec = json!({"dockerfile": "Dockerfile"});
        let mut i = input(&spec, Some(src.path()), "");
        i.source_id = "";
        let p = plan(&i, settings()).unwrap();
        assert!(p.image_uri.ends_with(&image_tag("job:q-1", "FROM x\n")));
    }

    #[test]
    fn generated_dockerfile_with_requirements() {
        let text = generate_dockerfile(
            "python:3.11-slim",
            &Dependencies::Requirements("requirements.txt".into()),
            &["python".into(), "train.py".into()],
        );
        let expected = "\
# Generated by builder-docker for a Python code job.
FROM python:3.11-slim AS deps
ENV PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN [\"python\",\"-m\",\"venv\",\"/env\"]
COPY requirements.txt /tmp/deps/requirements.txt
RUN [\"/env/bin/pip\",\"install\",\"-r\",\"/tmp/deps/requirements.txt\"]

FROM python:3.11-slim
COPY --from=deps /env /env
ENV PATH=\"/env/bin:$PATH\"
ENV PYTHONUNBUFFERED=1
RUN [\"useradd\",\"--create-home\",\"--no-log-init\",\"--uid\",\"1000\",\"--gid\",\"0\",\"launch\"]
WORKDIR /src
COPY --chown=1000:0 . /src
USER 1000
ENTRYPOINT [\"python\",\"train.py\"]
";
        assert_eq!(text, expected);
    }

    #[test]
    fn generated_dockerfile_from_pyproject_and_without_dependencies() {
        let src = Source::new(&[(
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"torch>=2\", \"numpy ; python_version > '3'\"]\n",
        )]);
        let deps = dependencies(src.path()).unwrap();
        assert_eq!(
            deps,
            Dependencies::Packages(vec![
                "torch>=2".into(),
                "numpy ; python_version > '3'".into()
            ])
        );
        let text = generate_dockerfile("my/python:3", &deps, &["python".into(), "a b.py".into()]);
        assert!(text.contains(
            "RUN [\"/env/bin/pip\",\"install\",\"torch>=2\",\"numpy ; python_version > '3'\"]\n"
        ));
        assert!(text.ends_with("ENTRYPOINT [\"python\",\"a b.py\"]\n"));

        let none =
            generate_dockerfile("py", &Dependencies::None, &["python".into(), "t.py".into()]);
        assert!(
            !none.contains("AS deps") && !none.contains("/env"),
            "{none}"
        );
        assert!(none.contains("FROM py\n") && none.contains("USER 1000\n"));
    }

    #[test]
    fn dependency_sources_in_order() {
        let both = Source::new(&[
            ("requirements.txt", "a\n"),
            ("pyproject.toml", "[project]\ndependencies = [\"b\"]\n"),
        ]);
        assert_eq!(
            dependencies(both.path()).unwrap(),
            Dependencies::Requirements("requirements.txt".into())
        );
        let poetry = Source::new(&[
            ("pyproject.toml", "[tool.poetry]\nname = \"x\"\n"),
            ("requirements.frozen.txt", "c==1\n"),
        ]);
        assert_eq!(
            dependencies(poetry.path()).unwrap(),
            Dependencies::Requirements("requirements.frozen.txt".into())
        );
        let broken = Source::new(&[("pyproject.toml", "[project\n")]);
        let e = dependencies(broken.path()).unwrap_err();
        assert!(e.message.contains("pyproject.toml"), "{}", e.message);
        assert_eq!(
            dependencies(Source::new(&[]).path()).unwrap(),
            Dependencies::None
        );
    }

    #[test]
    fn no_source_and_no_dockerfile_is_a_clear_error() {
        let spec = json!({"overrides": {"entry_point": ["python", "t.py"]}});
        let e = plan(&input(&spec, None, ""), settings()).unwrap_err();
        assert_eq!(e.stage, Stage::Build);
        assert!(!e.retryable);
        for needle in [
            "q-1",
            "no source and no Dockerfile",
            "docker.docker_image",
            "image_uri",
        ] {
            assert!(
                e.message.contains(needle),
                "{needle} missing from {}",
                e.message
            );
        }
    }

    #[test]
    fn dockerfile_path_errors() {
        let src = Source::new(&[("Dockerfile", "  \n")]);
        let spec = json!({"overrides": {"dockerfile": "missing/Dockerfile"}});
        let e = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap_err();
        assert!(e.message.contains("overrides.dockerfile is `missing/Dockerfile`, but the job's source has no such file"), "{}", e.message);

        let spec = json!({"overrides": {"dockerfile": "../etc/passwd"}});
        let e = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap_err();
        assert!(
            e.message.contains("inside the job's source"),
            "{}",
            e.message
        );

        let spec = json!({"dockerfile": "Dockerfile"});
        let e = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap_err();
        assert!(e.message.contains("is empty"), "{}", e.message);

        let e = plan(&input(&spec, None, ""), settings()).unwrap_err();
        assert!(e.message.contains("has no source"), "{}", e.message);

        let spec = json!({"overrides": {"dockerfile": 3}});
        let e = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap_err();
        assert!(e.message.contains("must be a path"), "{}", e.message);
    }

    #[test]
    fn generated_needs_an_entry_point() {
        let src = Source::new(&[("train.py", "")]);
        let spec = json!({});
        let e = plan(&input(&spec, Some(src.path()), ""), settings()).unwrap_err();
        assert!(e.message.contains("overrides.entry_point"), "{}", e.message);
    }

    #[test]
    fn wandb_dockerfile_candidates_follow_the_script() {
        let ep = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            wandb_dockerfile_candidates(&ep(&["python", "-u", "a/b/train.py", "--lr"])),
            vec![
                PathBuf::from("a/b/Dockerfile.wandb"),
                PathBuf::from("Dockerfile.wandb")
            ]
        );
        assert_eq!(
            wandb_dockerfile_candidates(&ep(&["python", "train.py"])),
            vec![PathBuf::from("Dockerfile.wandb")]
        );
        assert_eq!(
            wandb_dockerfile_candidates(&ep(&["python", "../x/train.py"])),
            vec![PathBuf::from("Dockerfile.wandb")]
        );
        assert_eq!(
            entry_point(&json!({"overrides": {"entry_point": "python  t.py"}})).unwrap(),
            ep(&["python", "t.py"])
        );
    }

    #[test]
    fn spec_and_run_id() {
        assert_eq!(parse_spec("q", r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        let e = parse_spec("q-9", "[1]").unwrap_err();
        assert!(e.message.contains("job q-9") && e.message.contains("not a JSON object"));
        let e = parse_spec("q-9", "{").unwrap_err();
        assert!(e.message.contains("not JSON"), "{}", e.message);
        assert_eq!(
            run_id(&json!({"run_id": "abc123"}), "itemid-long"),
            "abc123"
        );
        assert_eq!(run_id(&json!({}), "itemid-long"), "itemid-l");
    }
}
