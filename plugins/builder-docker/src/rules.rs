//! The docker builder's own rules: its settings and the wording of its
//! failures. Which Dockerfile a job gets, the generated Dockerfile and the
//! image tag are the rules every builder shares, in the `builder-common`
//! crate (re-exported here), so that an image built by `builder-kaniko` is
//! reused by this builder and the other way round. Nothing here calls the
//! host (only the SDK's log macros, which print to stderr outside
//! WebAssembly), so `cargo test -p builder-docker` exercises it natively.

pub use builder_common::{
    CODE_DIR, DEFAULT_BASE_IMAGE, Dependencies, LOCAL_REPOSITORY_PREFIX, Plan, PlanInput,
    RUNTIME_UID, WANDB_DOCKERFILE, dependencies, entry_point, generate_dockerfile, image_tag,
    local_repository, pyproject_dependencies, repository, wandb_dockerfile_candidates,
};
use launch_plugin_sdk::builder::docker::DockerError;
use launch_plugin_sdk::{PluginError, Stage};
use serde::Deserialize;
use serde_json::Value;

/// The plugin's settings: the config's `builder:` block merged with the
/// plugin's `config:` block.
///
/// Unknown keys are refused, so a misspelt `base_image` is reported rather
/// than ignored; the `builder:` keys that belong to other builders (Kaniko)
/// are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `builder.type` (`docker`, or the plugin's name).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `builder.platform`: the target platform, e.g. `linux/amd64`.
    #[serde(default)]
    pub platform: Option<String>,
    /// `builder.destination`; the host passes it as the request's
    /// `destination`, which is what the plugin uses.
    #[serde(default)]
    pub destination: Option<String>,
    /// Plugin config `base-image`: the Python image of generated
    /// Dockerfiles (default [`DEFAULT_BASE_IMAGE`]).
    #[serde(rename = "base-image", default)]
    pub base_image: Option<String>,
    #[serde(rename = "build-context-store", default)]
    _build_context_store: Option<Value>,
    #[serde(rename = "build-job-name", default)]
    _build_job_name: Option<Value>,
    #[serde(rename = "secret-name", default)]
    _secret_name: Option<Value>,
    #[serde(rename = "secret-key", default)]
    _secret_key: Option<Value>,
    #[serde(rename = "kaniko-image", default)]
    _kaniko_image: Option<Value>,
    #[serde(rename = "kaniko-config", default)]
    _kaniko_config: Option<Value>,
}

impl Settings {
    /// Parses the settings JSON; errors have stage `build` and name the key.
    pub fn parse(settings: &str) -> Result<Settings, PluginError> {
        launch_plugin_sdk::parse_settings(settings, Stage::Build)
    }

    /// The base image of generated Dockerfiles.
    pub fn base_image(&self) -> &str {
        match self.base_image.as_deref().map(str::trim) {
            Some(image) if !image.is_empty() => image,
            _ => DEFAULT_BASE_IMAGE,
        }
    }

    /// The target platform, when one is set.
    pub fn platform(&self) -> Option<String> {
        self.platform
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    }
}

/// Decides the Dockerfile and image of a job (W&B's rules, see the crate
/// docs and `builder-common`), generated Dockerfiles starting from the
/// `base-image` setting. Errors have stage `build` and say what to change.
pub fn plan(input: &PlanInput<'_>, settings: &Settings) -> Result<Plan, PluginError> {
    builder_common::plan(input, settings.base_image())
}

/// The message of a failed `docker.build` or `docker.push` of `image`:
/// the engine's error line is kept; a refused login says so plainly.
/// `username` is the login's user name (never a password: the plugin cannot
/// read it).
pub fn docker_failure(error: &DockerError, image: &str, username: Option<&str>) -> PluginError {
    let operation = if error.operation.is_empty() {
        "docker"
    } else {
        error.operation.as_str()
    };
    let engine = error.message.trim();
    let message = if error.denied {
        format!(
            "docker {operation} of {image} was refused by the plugin's grants: {engine}. \
             Grant the Docker engine (`grants.docker: true`) and the registry's host \
             (`grants.hosts`) to builder-docker in launch-config.yaml"
        )
    } else if error.unauthorized {
        let who = match username {
            Some(user) => format!("for user `{user}`"),
            None => "for an anonymous push (no registry login was given)".to_string(),
        };
        format!(
            "the registry refused the credentials {who} while pushing {image}: {engine}. \
             Check the registry's login: the `registry:` block and the secret it uses"
        )
    } else {
        format!("docker {operation} of {image} failed: {engine}")
    };
    PluginError::build(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::parse(r#"{"type":"docker"}"#).unwrap()
    }

    #[test]
    fn base_image_setting() {
        assert_eq!(settings().base_image(), DEFAULT_BASE_IMAGE);
        let s = Settings::parse(r#"{"type":"docker","base-image":"local/py:3","platform":"linux/arm64","destination":null,"build-context-store":"s3://x"}"#).unwrap();
        assert_eq!(s.base_image(), "local/py:3");
        assert_eq!(s.platform().as_deref(), Some("linux/arm64"));
        let e = Settings::parse(r#"{"type":"docker","base_image":"x"}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `base_image`"),
            "{}",
            e.message
        );
        assert_eq!(e.stage, Stage::Build);
    }

    #[test]
    fn docker_failures_keep_the_engine_line() {
        let err = |unauthorized, denied| DockerError {
            operation: "push".into(),
            message: "denied: requested access to the resource is denied".into(),
            unauthorized,
            denied,
        };
        let e = docker_failure(&err(true, false), "r.example.com/x:1", Some("AWS"));
        assert_eq!(e.stage, Stage::Build);
        assert!(
            e.message
                .starts_with("the registry refused the credentials for user `AWS`"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("requested access to the resource is denied")
        );
        let e = docker_failure(&err(true, false), "r/x:1", None);
        assert!(e.message.contains("anonymous push"), "{}", e.message);
        let e = docker_failure(&err(false, true), "r/x:1", None);
        assert!(e.message.contains("grants.docker: true"), "{}", e.message);
        let build = DockerError {
            operation: "build".into(),
            message: "RUN pip install: exit code 1\n".into(),
            unauthorized: false,
            denied: false,
        };
        let e = docker_failure(&build, "launch-agent/p:1", None);
        assert_eq!(
            e.message,
            "docker build of launch-agent/p:1 failed: RUN pip install: exit code 1"
        );
    }

    #[test]
    fn plan_generates_from_the_base_image_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)\n").unwrap();
        let spec = serde_json::json!({"overrides": {"entry_point": ["python", "train.py"]}});
        let input = PlanInput {
            job_id: "q-1",
            spec: &spec,
            source_dir: Some(dir.path()),
            source_id: "s",
            destination: "",
        };
        let settings = Settings::parse(r#"{"type":"docker","base-image":"local/py:3"}"#).unwrap();
        let p = plan(&input, &settings).unwrap();
        assert!(
            p.dockerfile.contains("FROM local/py:3\n"),
            "{}",
            p.dockerfile
        );
        assert_eq!(p, builder_common::plan(&input, "local/py:3").unwrap());
    }
}
