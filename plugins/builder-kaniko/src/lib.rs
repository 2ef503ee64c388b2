//! `builder-kaniko`: the kaniko builder (`builder.type: kaniko` in
//! launch-config.yaml), W&B's way of building images inside a Kubernetes
//! cluster, with no Docker engine: the job's source and Dockerfile go to a
//! build-context store as `<run id>.tgz`, and a Kaniko Job builds the image
//! from there and pushes it.
//!
//! # What works in this build
//!
//! | part | state |
//! |---|---|
//! | `plan`: the Dockerfile and image, by the rules builder-docker uses (the `builder-common` crate), so a job built by either builder is skipped by the other | done |
//! | the settings, every bad value an error naming its key ([`settings`]) | done |
//! | the context store: S3, GCS, Azure blob, PVC ([`store`]) | done; uploads go where the host's `blob` capability serves (a store it does not serve yet fails the build naming it) |
//! | the Kaniko Job, its docker config Secret and ConfigMap, as W&B makes them ([`manifest`]) | done, checked by `kubernetes-validate --strict` (1.30, 1.33) in the unit tests |
//! | `build`: upload the context, create the objects, watch the Job, stream its log, delete what it made ([`building`]) | done, through the host's `blob` and `kubernetes` capabilities (world `cluster-builder-plugin`); the docker config Secret is filled by the host with the build's registry login |
//!
//! # `plan`
//!
//! As builder-docker's (see its crate docs): the Dockerfile by W&B's
//! priority, the tag `sha256(source-id + dockerfile)[:8]`, the image
//! `<destination>:<tag>`. Unlike builder-docker it needs a destination (a
//! `registry:` or `builder.destination`): Kaniko cannot leave an image in a
//! local engine. The settings are checked in `plan`, so a bad config fails
//! before anything is built.
//!
//! # Settings
//!
//! The W&B `builder:` keys and the plugin's own; see [`settings`].

#![warn(missing_docs)]

pub mod building;
pub mod manifest;
pub mod names;
pub mod settings;
pub mod store;

use builder_common::{PlanInput, parse_spec};
use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};
use settings::Config;
use std::path::Path;

/// The plugin.
struct KanikoBuilder;

impl Plugin for KanikoBuilder {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "builder-kaniko".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Builds job images with a Kaniko Job on Kubernetes (W&B's kaniko builder)"
                .into(),
        }
    }
}

/// The plan of a request (see the crate docs).
pub fn plan_request(request: &BuildRequest, config: &Config) -> Result<BuildPlan, PluginError> {
    if request.destination.trim().is_empty() {
        return Err(PluginError::build(
            "the kaniko builder pushes every image it builds, but no registry is configured: \
             set `registry:` (or `builder.destination`) in launch-config.yaml",
        ));
    }
    let spec = parse_spec(&request.job.id, &request.job.spec_json)?;
    let input = PlanInput {
        job_id: &request.job.id,
        spec: &spec,
        source_dir: request.source_dir.as_deref().map(Path::new),
        source_id: &request.source_id,
        destination: &request.destination,
    };
    let plan = builder_common::plan(&input, &config.base_image)?;
    Ok(BuildPlan {
        image_uri: plan.image_uri,
        dockerfile: plan.dockerfile,
        dockerfile_origin: plan.origin,
    })
}

impl Builder for KanikoBuilder {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        let config = Config::from_request(&request.settings)?;
        let plan = plan_request(&request, &config)?;
        launch_plugin_sdk::info!(
            "planned {} (Dockerfile from {})",
            plan.image_uri,
            plan.dockerfile_origin
        );
        Ok(plan)
    }

    fn build(
        request: BuildRequest,
        plan: BuildPlan,
        username: Option<String>,
        _password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let config = Config::from_request(&request.settings)?;
        let spec = parse_spec(&request.job.id, &request.job.spec_json)?;
        let run_id = builder_common::run_id(&spec, &request.job.id);
        let repository = builder_common::repository(&PlanInput {
            job_id: &request.job.id,
            spec: &spec,
            source_dir: None,
            source_id: &request.source_id,
            destination: &request.destination,
        })?;
        let objects = manifest::render(
            &config,
            &manifest::BuildInput {
                item_id: &request.job.id,
                run_id: &run_id,
                image_uri: &plan.image_uri,
                repository: &repository,
                has_login: username.is_some(),
            },
        )?;
        launch_plugin_sdk::debug!(
            "the build Job {} in namespace {}: {}",
            objects.job_name,
            objects.namespace,
            objects.job
        );
        building::run(
            &mut building::Host,
            &config.store,
            &objects,
            &plan.dockerfile,
        )?;
        launch_plugin_sdk::info!("built and pushed {}", plan.image_uri);
        Ok(BuildOutcome {
            image_uri: plan.image_uri,
            built: true,
        })
    }
}

launch_plugin_sdk::export_builder!(KanikoBuilder);

#[cfg(test)]
mod tests;
