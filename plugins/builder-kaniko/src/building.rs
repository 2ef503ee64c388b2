//! `build`: one Kaniko build carried out through the host's capabilities,
//! and cleaned up whatever happens.
//!
//! | step | capability | on failure |
//! |---|---|---|
//! | 1. the context (`<run id>.tgz`: the job's source plus the planned Dockerfile, made by the host) to the store | `blob.upload-context` (a PVC's mount is a `file://` URL) | stage `build`, retryable unless refused or the store is missing |
//! | 2. the ConfigMaps, the docker config Secret (filled by the host with the registry login), then the Job | `kubernetes.create` | stage `build`, not retryable (the manifest or a grant is wrong) |
//! | 3. wait for the Job, its pod's log streamed into the job's log | `kubernetes.wait-job` (the host's shared watch: no polling) | a timeout or a lost watch is retryable |
//! | 4. delete the Job (with its pods), the Secret, the ConfigMaps and the context, failed or not | `kubernetes.delete`, `blob.delete` | logged; the host deletes what is left when the call ends anyway |
//!
//! A failed Job fails the build at stage `build` with Kaniko's last error
//! lines (the lines of the log's tail that say `error`, else its last
//! lines), not retryable when the executor ran and exited non-zero (the
//! Dockerfile or the push failed: the same build fails again), retryable
//! when it never ran (the pod could not start).
//!
//! W&B polls the Job every 5 s, leaves its pods and Secret behind, and
//! leaves the context in the bucket; here the Job is watched and everything
//! the build made goes when it ends.

use crate::manifest::BuildObjects;
use crate::store::ContextStore;
use launch_plugin_sdk::PluginError;
use launch_plugin_sdk::builder::blob::BlobError;
use launch_plugin_sdk::kubernetes::{JobEnd, KubeError, ObjectRef};
use serde_json::Value;

/// Log lines of the build's pod returned with its end.
pub const TAIL_LINES: u32 = 40;

/// At most this many error lines go into the build's error.
pub const ERROR_LINES: usize = 5;

/// How much longer than the Job's `activeDeadlineSeconds` the build waits
/// for it (the pod's start and the controller's reaction).
pub const WAIT_SLACK_SECS: u64 = 300;

/// What the build needs of the host: the blob and kubernetes capabilities
/// (a trait so the steps can be tested without a host).
pub trait Capabilities {
    /// `blob.upload-context`: the size of what was stored.
    fn upload_context(&mut self, dockerfile: &str, url: &str) -> Result<u64, BlobError>;
    /// `blob.delete`.
    fn delete_context(&mut self, url: &str) -> Result<(), BlobError>;
    /// `kubernetes.create` of a JSON manifest.
    fn create(&mut self, manifest: &Value) -> Result<ObjectRef, KubeError>;
    /// `kubernetes.wait-job`, the log streamed, [`TAIL_LINES`] returned.
    fn wait_job(&mut self, job: &ObjectRef, timeout_seconds: u32) -> Result<JobEnd, KubeError>;
    /// `kubernetes.delete`.
    fn delete(&mut self, object: &ObjectRef) -> Result<(), KubeError>;
}

/// The host's capabilities, through the SDK.
pub struct Host;

impl Capabilities for Host {
    fn upload_context(&mut self, dockerfile: &str, url: &str) -> Result<u64, BlobError> {
        launch_plugin_sdk::builder::blob::upload_context(dockerfile, url).map(|u| u.bytes)
    }

    fn delete_context(&mut self, url: &str) -> Result<(), BlobError> {
        launch_plugin_sdk::builder::blob::delete(url)
    }

    fn create(&mut self, manifest: &Value) -> Result<ObjectRef, KubeError> {
        launch_plugin_sdk::kubernetes::create(&manifest.to_string())
    }

    fn wait_job(&mut self, job: &ObjectRef, timeout_seconds: u32) -> Result<JobEnd, KubeError> {
        launch_plugin_sdk::kubernetes::wait_job(job, timeout_seconds, true, TAIL_LINES)
    }

    fn delete(&mut self, object: &ObjectRef) -> Result<(), KubeError> {
        launch_plugin_sdk::kubernetes::delete(object)
    }
}

/// Where the host stores the context: the store's URL, or the PVC mount's
/// path as a `file://` URL.
pub fn upload_url(store: &ContextStore, objects: &BuildObjects) -> String {
    match store {
        ContextStore::Pvc { .. } => format!("file://{}", objects.upload_target),
        _ => objects.upload_target.clone(),
    }
}

/// How long to wait for the Job: its `activeDeadlineSeconds` plus
/// [`WAIT_SLACK_SECS`].
fn wait_seconds(job: &Value) -> u32 {
    let deadline = job
        .pointer("/spec/template/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(crate::manifest::BUILD_DEADLINE_SECS);
    u32::try_from(deadline.saturating_add(WAIT_SLACK_SECS)).unwrap_or(u32::MAX)
}

/// Runs the build of `objects` with `dockerfile`, the context going to
/// `store`; everything made is deleted before it returns.
pub fn run(
    caps: &mut impl Capabilities,
    store: &ContextStore,
    objects: &BuildObjects,
    dockerfile: &str,
) -> Result<(), PluginError> {
    let url = upload_url(store, objects);
    let bytes = caps.upload_context(dockerfile, &url).map_err(|e| {
        let error = PluginError::build(format!(
            "uploading the build context to {url}: {}{}",
            e.message,
            if e.denied {
                " (the plugin's `grants.blob.stores` must list the store)"
            } else {
                ""
            }
        ));
        if e.denied || e.missing {
            error
        } else {
            error.retryable()
        }
    })?;
    launch_plugin_sdk::info!("uploaded the build context ({bytes} bytes) to {url}");
    let mut made: Vec<ObjectRef> = Vec::new();
    let outcome = create_and_wait(caps, objects, &mut made);
    for object in made.iter().rev() {
        if let Err(e) = caps.delete(object) {
            launch_plugin_sdk::warn!(
                "deleting {} {}/{}: {} (the agent deletes it when the build call ends)",
                object.kind,
                object.namespace,
                object.name,
                e.message
            );
        }
    }
    if let Err(e) = caps.delete_context(&url) {
        launch_plugin_sdk::warn!("deleting the build context {url}: {}", e.message);
    }
    outcome
}

/// Creates the objects (recording each in `made`), waits for the Job, and
/// says how it ended.
fn create_and_wait(
    caps: &mut impl Capabilities,
    objects: &BuildObjects,
    made: &mut Vec<ObjectRef>,
) -> Result<(), PluginError> {
    let manifests = objects
        .config_maps
        .iter()
        .chain(objects.docker_config.iter())
        .chain(std::iter::once(&objects.job));
    let mut job = None;
    for manifest in manifests {
        let kind = manifest
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("object");
        let created = caps.create(manifest).map_err(|e| {
            PluginError::build(format!(
                "creating the build's {kind} in namespace {}: {}{}",
                objects.namespace,
                e.message,
                if e.denied {
                    " (the plugin's `grants.kubernetes.namespaces` must list the namespace)"
                } else {
                    ""
                }
            ))
        })?;
        made.push(created.clone());
        job = Some(created);
    }
    let job = job.expect("the Job is always created last");
    launch_plugin_sdk::info!(
        "the build Job {}/{} is running Kaniko",
        job.namespace,
        job.name
    );
    let end = caps
        .wait_job(&job, wait_seconds(&objects.job))
        .map_err(|e| {
            PluginError::build(format!(
                "waiting for the build Job {}/{}: {}",
                job.namespace, job.name, e.message
            ))
            .retryable()
        })?;
    if end.succeeded {
        launch_plugin_sdk::info!("the build Job {}/{} succeeded", job.namespace, job.name);
        return Ok(());
    }
    Err(failure(&job, &end))
}

/// The error of a failed build Job: its end and Kaniko's last error lines.
pub fn failure(job: &ObjectRef, end: &JobEnd) -> PluginError {
    let mut how = Vec::new();
    if let Some(code) = end.exit_code {
        how.push(format!("exit code {code}"));
    }
    if !end.reason.is_empty() {
        how.push(end.reason.clone());
    }
    if !end.condition.is_empty() {
        how.push(end.condition.clone());
    }
    let lines = error_lines(&end.log_tail);
    let mut message = format!("the Kaniko build Job {}/{} failed", job.namespace, job.name);
    if !how.is_empty() {
        message.push_str(&format!(" ({})", how.join(", ")));
    }
    if lines.is_empty() {
        if !end.message.is_empty() {
            message.push_str(&format!(": {}", end.message.trim()));
        }
    } else {
        message.push_str(": ");
        message.push_str(&lines.join(" | "));
    }
    let error = PluginError::build(message);
    if end.exit_code.is_some() {
        error
    } else {
        error.retryable()
    }
}

/// The lines of `tail` that report an error (at most [`ERROR_LINES`], the
/// last ones), else its last [`ERROR_LINES`] non-empty lines.
pub fn error_lines(tail: &[String]) -> Vec<String> {
    let lines: Vec<&str> = tail
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let skip = chosen.len().saturating_sub(ERROR_LINES);
    chosen[skip..].iter().map(|l| l.to_string()).collect()
}
