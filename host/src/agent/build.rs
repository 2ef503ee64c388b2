//! The build step of a job: where the image goes, the builder's plan, the
//! registry's answer to "do you have it?", and the build itself.
//!
//! The skip rule is W&B's: the image tag hashes the source and the
//! Dockerfile, and when the registry (or, with no registry, the local engine)
//! already has that tag nothing is built.

use super::job::{JobEnd, JobRun, failed, plugin_failure};
use crate::plugins::bindings::Job;
use crate::plugins::loaded::{BuildRequest, SOURCE_GUEST_DIR};
use crate::queue::Stage;
use crate::sources::{self, FetchedJob};
use crate::spec::LaunchSpec;

/// Builds (or finds) the job's image; returns its URI.
pub(super) async fn build_image(
    run: &JobRun<'_>,
    job: &Job,
    spec: &LaunchSpec,
    fetched: Option<&FetchedJob>,
) -> Result<String, JobEnd> {
    let ctx = run.ctx;
    let log = || Some(run.log.clone());
    let registry = ctx
        .registry
        .as_ref()
        .map(|r| (r, r.settings_for(ctx.registry_block.clone())));

    // Where the image goes: `builder.destination`, else the registry's repository.
    let mut destination = ctx.builder_destination.clone().unwrap_or_default();
    if let (Some((plugin, settings)), true) = (&registry, destination.is_empty()) {
        destination = plugin
            .repository_uri(settings, log())
            .await
            .map_err(|e| plugin_failure(e, Stage::Agent))?;
        run.step(&format!(
            "registry: {} gives repository {destination}",
            plugin.label()
        ));
    }

    let source = sources::fetch(spec, fetched, &run.run_dir)
        .await
        .map_err(|e| failed(Stage::Build, format!("fetching the job's source: {e:#}")))?;
    let builder = &ctx.builder;
    let request = BuildRequest {
        job: job.clone(),
        settings: builder.settings_for(ctx.builder_block.clone()),
        destination,
        source_dir: source.dir.as_ref().map(|_| SOURCE_GUEST_DIR.to_string()),
        source_id: source.id.clone(),
    };
    let plan = builder
        .plan(&request, source.dir.as_deref(), log())
        .await
        .map_err(|e| plugin_failure(e, Stage::Build))?;
    for (field, value) in [
        ("destination", request.destination.as_str()),
        ("image URI", plan.image_uri.as_str()),
    ] {
        refuse_secret(run, builder.label(), field, value)?;
    }
    let destination_repo =
        crate::capabilities::docker::reference::repositories_of([request.destination.as_str()]);
    if !destination_repo.is_empty()
        && let Err(why) =
            crate::capabilities::docker::reference::within(&plan.image_uri, &destination_repo)
    {
        return Err(failed(
            Stage::Build,
            format!("{}: the plan's {why}", builder.label()),
        ));
    }
    run.step(&format!(
        "build: {} plans image {} (Dockerfile from {})",
        builder.label(),
        plan.image_uri,
        plan.dockerfile_origin
    ));

    let exists = match &registry {
        Some((plugin, settings)) => plugin
            .image_exists(settings, &plan.image_uri, log())
            .await
            .map_err(|e| plugin_failure(e, Stage::Build))?,
        None => ctx.clients.docker.has_image(&plan.image_uri).await,
    };
    if exists {
        run.step(&format!(
            "build: skipped, {} already exists",
            plan.image_uri
        ));
        return Ok(plan.image_uri);
    }

    let credentials = match &registry {
        Some((plugin, settings)) => plugin
            .login(settings, log())
            .await
            .map_err(|e| plugin_failure(e, Stage::Build))?,
        None => None,
    };
    let outcome = builder
        .build(
            &request,
            &plan,
            credentials.as_ref(),
            source.dir.as_deref(),
            log(),
        )
        .await
        .map_err(|e| plugin_failure(e, Stage::Build))?;
    refuse_secret(run, builder.label(), "built image", &outcome.image_uri)?;
    run.step(&format!("build: built {}", outcome.image_uri));
    Ok(outcome.image_uri)
}

/// Fails the build when `value` (an image name the plan or build gave)
/// carries a secret the agent knows: an image name is written to the job's
/// log, the queue and the engine, where no redaction can follow it.
fn refuse_secret(run: &JobRun<'_>, plugin: &str, field: &str, value: &str) -> Result<(), JobEnd> {
    if run.ctx.redactor.finds_secret_in(value) {
        return Err(failed(
            Stage::Build,
            format!("{plugin}: the {field} carries a secret value; refused"),
        ));
    }
    Ok(())
}
