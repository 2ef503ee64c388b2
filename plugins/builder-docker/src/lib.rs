//! `builder-docker`: the docker builder of the default bundle
//! (`builder.type: docker` in launch-config.yaml). It follows the W&B docker
//! builder's rules and builds and pushes through the host's Docker engine
//! (the `launch:plugin/docker` import, granted by `grants.docker: true`).
//!
//! # `plan`: which Dockerfile, which image
//!
//! The first rule that applies gives the Dockerfile (paths are relative to
//! the job's source, which the host shows at `request.source-dir`):
//!
//! | # | rule | `dockerfile-origin` |
//! |---|---|---|
//! | 1 | `overrides.dockerfile` in the launch spec (the file must exist) | `overrides.dockerfile: <path>` |
//! | 2 | the job's own Dockerfile, spec key `dockerfile` (the file must exist) | `job dockerfile: <path>` |
//! | 3 | `Dockerfile.wandb` beside the entry point's script (`src/` for `python src/train.py`), else at the source root | `Dockerfile.wandb: <path>` |
//! | 4 | a generated Dockerfile for Python code (needs `overrides.entry_point`) | `generated (dependencies from requirements.txt)`, ... |
//! | — | no source and none of 1–3 | error: nothing to build |
//!
//! | what | rule |
//! |---|---|
//! | image tag | first 8 hex digits of `sha256(source-id + dockerfile)` (W&B's); an empty `source-id` is replaced by `job:<item id>` so two sources never share a tag |
//! | repository | `request.destination` (registry URI or `builder.destination`; a tag or digest in it is an error) |
//! | no destination | a local-only build: repository `launch-agent/<project>` (else the `job`'s name, else `job`), not pushed |
//! | image URI | `<repository>:<tag>` |
//!
//! These rules live in the `builder-common` crate, shared with
//! `builder-kaniko`, so a job built by either builder is skipped by the other.
//!
//! The generated Dockerfile (rule 4), from the plugin config's `base-image`
//! (default `python:3.11-slim`; set it to an image the engine already has
//! where nothing can be pulled):
//!
//! | part | content |
//! |---|---|
//! | dependencies | stage `deps`: a venv at `/env`, then `pip install -r requirements.txt`, else `pip install` of `pyproject.toml`'s `[project].dependencies`, else `pip install -r requirements.frozen.txt`; no stage when there are none |
//! | runtime | the same base, `/env` copied in and first on `PATH`, `PYTHONUNBUFFERED=1` |
//! | user | `launch`, uid 1000, gid 0, home `/home/launch` (`useradd`, so the base must be Debian-like, as the official Python images are) |
//! | code | `COPY --chown=1000:0 . /src`, `WORKDIR /src` (the whole source; a `.dockerignore` in it applies) |
//! | command | `USER 1000`, `ENTRYPOINT` = `overrides.entry_point` as JSON |
//!
//! Every `RUN` uses the exec (JSON) form, so no spec value meets a shell.
//! The build context is always the job's source root (the host streams it
//! and adds the Dockerfile), also for a `Dockerfile.wandb` in a
//! subdirectory, where W&B would use that directory: its `COPY` lines must
//! be written relative to the source root.
//!
//! # `build`
//!
//! `docker.build` of the plan's Dockerfile, tagged with the plan's image
//! URI, for `builder.platform` when set; then, when the request has a
//! registry destination, `docker.push` with the login the host passes on
//! (the password is a handle the plugin cannot read). Failures have stage
//! `build` and keep the engine's error line; a refused login says that the
//! registry refused the credentials.
//!
//! # Settings
//!
//! The config's `builder:` block (`type`, `platform`, `destination`; the
//! Kaniko keys are accepted and ignored) plus the plugin config key
//! `base-image`. Unknown keys are errors.

#![warn(missing_docs)]

pub mod rules;

use launch_plugin_sdk::builder::docker::{self, BuildSpec};
use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};
use rules::{PlanInput, Settings};
use serde_json::Value;
use std::path::Path;

/// The plugin.
struct DockerBuilder;

impl Plugin for DockerBuilder {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "builder-docker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Builds job images with the host's Docker engine (W&B's Dockerfile rules) and pushes them"
                    .into(),
        }
    }
}

impl Builder for DockerBuilder {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        let settings = Settings::parse(&request.settings)?;
        let spec = parse_spec(&request)?;
        let input = PlanInput {
            job_id: &request.job.id,
            spec: &spec,
            source_dir: request.source_dir.as_deref().map(Path::new),
            source_id: &request.source_id,
            destination: &request.destination,
        };
        let plan = rules::plan(&input, &settings)?;
        launch_plugin_sdk::info!(
            "planned {} (Dockerfile from {}){}",
            plan.image_uri,
            plan.origin,
            if plan.push {
                ""
            } else {
                " (no registry: local-only image, not pushed)"
            }
        );
        Ok(BuildPlan {
            image_uri: plan.image_uri,
            dockerfile: plan.dockerfile,
            dockerfile_origin: plan.origin,
        })
    }

    fn build(
        request: BuildRequest,
        plan: BuildPlan,
        username: Option<String>,
        password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let settings = Settings::parse(&request.settings)?;
        let image = plan.image_uri;
        launch_plugin_sdk::info!(
            "building {image} (Dockerfile from {}{})",
            plan.dockerfile_origin,
            settings
                .platform()
                .map(|p| format!(", platform {p}"))
                .unwrap_or_default()
        );
        let spec = BuildSpec {
            dockerfile: plan.dockerfile,
            tags: vec![image.clone()],
            platform: settings.platform(),
            build_args: Vec::new(),
        };
        let id = docker::build(&spec).map_err(|e| {
            let failure = rules::docker_failure(&e, &image, None);
            launch_plugin_sdk::error!("{}", failure.message);
            failure
        })?;
        launch_plugin_sdk::info!("built {image} ({id})");

        if request.destination.trim().is_empty() {
            launch_plugin_sdk::info!("no registry configured: {image} stays in the local engine");
        } else {
            launch_plugin_sdk::info!(
                "pushing {image}{}",
                match &username {
                    Some(user) => format!(" as `{user}`"),
                    None => " anonymously".to_string(),
                }
            );
            docker::push(&image, username.as_deref(), password).map_err(|e| {
                let failure = rules::docker_failure(&e, &image, username.as_deref());
                launch_plugin_sdk::error!("{}", failure.message);
                failure
            })?;
            launch_plugin_sdk::info!("pushed {image}");
        }
        Ok(BuildOutcome {
            image_uri: image,
            built: true,
        })
    }
}

/// The request's launch spec as a JSON object.
fn parse_spec(request: &BuildRequest) -> Result<Value, PluginError> {
    builder_common::parse_spec(&request.job.id, &request.job.spec_json)
}

launch_plugin_sdk::export_builder!(DockerBuilder);
