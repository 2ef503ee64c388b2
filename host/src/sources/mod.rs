//! Where a job's code comes from, fetched by the host before a build: one
//! module per kind of source.
//!
//! | launch spec | module | source | source id (hashed into the image tag) |
//! |---|---|---|---|
//! | `docker.docker_image` / `image_uri` | — | none: nothing to build | the image |
//! | `uri`: a local directory | [`local_dir`] | that directory, read-only | `dir:<path>@<sha256 of its files>` |
//! | `git.repo` (+ `git.version`) | [`git`] | a clone in the run dir | `<repo>@<commit>` |
//! | `job`: a W&B job artifact | [`wandb_job`] | fetched over the W&B API with the W&B queue backend's settings: its code artifact, git repo (a clone at the job's commit, with its `diff.patch` applied and its `requirements.frozen.txt`) or image | `<entity>/<project>/<name>:v<N>` |
//!
//! A directory's id hashes its files' paths and contents, so editing the
//! code changes the image tag (W&B hashes only the name, and would reuse a
//! stale image).
//!
//! A `uri` is a local path, or a `file://` URL of one; any other URL
//! (`https://...`, `s3://...`) is refused, naming what to use instead
//! (`git.repo`), rather than silently ignored. Sources are read with
//! bounds: only regular files, directories and symlinks (a FIFO, socket or
//! device is refused, never opened), at most [`MAX_SOURCE_BYTES`] and
//! [`MAX_SOURCE_FILES`], within
//! [`SOURCE_READ_TIMEOUT`](crate::timeouts::SOURCE_READ_TIMEOUT); each `git`
//! command within [`GIT_TIMEOUT`](crate::timeouts::GIT_TIMEOUT).

pub mod git;
pub mod local_dir;
pub mod wandb_job;

pub use wandb_job::{FetchedJob, JobArtifacts};

use crate::spec::LaunchSpec;
use std::path::{Path, PathBuf};

/// The most a code directory may hold, in bytes of its files.
pub const MAX_SOURCE_BYTES: u64 = 4 << 30;

/// The most files a code directory may hold.
pub const MAX_SOURCE_FILES: usize = 200_000;

/// The local code directory a spec's `uri` names: none without a `uri`, a
/// path as it is, a `file://` URL as its path. Any other URL is an error
/// that says what the agent can fetch instead.
pub fn code_dir(spec: &LaunchSpec) -> anyhow::Result<Option<PathBuf>> {
    let Some(uri) = spec.uri() else {
        return Ok(None);
    };
    if !uri.contains("://") {
        return Ok(Some(PathBuf::from(uri)));
    }
    let shown = crate::text::for_log(uri);
    match url::Url::parse(uri) {
        Ok(url) if url.scheme() == "file" => url.to_file_path().map(Some).map_err(|()| {
            anyhow::anyhow!(
                "`uri` {shown} is a file:// URL this machine cannot open: give a local path (`file:///path/to/code`)"
            )
        }),
        _ => anyhow::bail!(
            "`uri` {shown} is a URL, and this agent fetches no code from URLs: give a directory on this machine (`uri: /path/to/code`) or a git repository (`git.repo`, `git.version`)"
        ),
    }
}

/// A job's source, ready for a build.
#[derive(Clone, Debug)]
pub struct Source {
    /// The directory with the code; none for image jobs.
    pub dir: Option<PathBuf>,
    /// What the image tag hashes.
    pub id: String,
}

/// Fetches the source of `spec` (a git clone goes to `work_dir/src`);
/// `job` is the spec's W&B job artifact, already fetched
/// ([`JobArtifacts::fetch`]).
pub async fn fetch(
    spec: &LaunchSpec,
    job: Option<&FetchedJob>,
    work_dir: &Path,
) -> anyhow::Result<Source> {
    if let Some(job) = job {
        return wandb_job::source(job, work_dir).await;
    }
    if let Some(dir) = code_dir(spec)? {
        return local_dir::source(&dir).await;
    }
    if let Some((repo, version)) = spec.git() {
        let dest = work_dir.join("src");
        let commit = git::clone(&repo, version.as_deref(), &dest).await?;
        return Ok(Source {
            dir: Some(dest),
            id: format!("{repo}@{commit}"),
        });
    }
    if let Some(image) = spec.image() {
        return Ok(Source {
            dir: None,
            id: image.to_string(),
        });
    }
    if let Some(job) = spec.job() {
        anyhow::bail!(
            "job artifact {job} needs the W&B queue backend; the embedded queue runs image, directory (`uri`) and git jobs"
        );
    }
    Ok(Source {
        dir: None,
        id: String::new(),
    })
}
