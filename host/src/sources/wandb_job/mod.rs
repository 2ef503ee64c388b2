//! A W&B job artifact (`job: entity/project/name:alias` in the launch
//! spec) as a job's source: fetched over the W&B API with the W&B queue
//! backend's server and key ([`JobArtifacts`]), then turned into a
//! [`Source`] by its `source_type`:
//!
//! | `source_type` | what is fetched | the source |
//! |---|---|---|
//! | `artifact` | the code artifact's files (each checked against the manifest's size and MD5) and the job's `requirements.frozen.txt` | that directory |
//! | `repo` | the git remote and commit, the run's `diff.patch` and `requirements.frozen.txt` | a clone at the commit, the patch applied, the requirements copied in |
//! | `image` | the image | none: nothing to build |
//!
//! The source id (hashed into the image tag) is the job with its resolved
//! version, `entity/project/name:vN` (for repo jobs, `@<commit>` added).

mod fetch;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Source;
use super::git;
use crate::wandb::{ApiError, ApiSettings, Client};

/// A W&B repo job's local changes, applied to its clone.
pub const DIFF_PATCH: &str = "diff.patch";
/// A W&B job's pinned requirements, copied into its code directory.
pub const REQUIREMENTS: &str = "requirements.frozen.txt";

/// A W&B job artifact (`job: entity/project/name:alias`), fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedJob {
    /// What the image tag hashes: the job artifact with its resolved
    /// version, e.g. `team/proj/my-job:v3`.
    pub source_id: String,
    /// `wandb-job.json`'s `source_type`: `artifact` (code), `repo` or `image`.
    pub source_type: String,
    /// The code directory (for `artifact` jobs: the code artifact's files,
    /// plus the job's `requirements.frozen.txt`).
    pub dir: Option<PathBuf>,
    /// For `repo` jobs: the git remote and commit.
    pub git: Option<(String, String)>,
    /// For `repo` jobs: the job's `diff.patch` (the changes the run had on
    /// top of its commit) and `requirements.frozen.txt`; the patch is
    /// applied to the clone and the requirements are copied into it, as the
    /// W&B agent does.
    pub repo_extras: RepoExtras,
    /// For `image` jobs: the image.
    pub image: Option<String>,
    /// `source.entrypoint` of `wandb-job.json` (the command when the launch
    /// spec's `overrides.entry_point` is empty).
    pub entrypoint: Vec<String>,
}

/// What a W&B repo job adds to its clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoExtras {
    /// [`DIFF_PATCH`], applied with `-p1` at the clone's root.
    pub diff_patch: Option<Vec<u8>>,
    /// [`REQUIREMENTS`], copied to the clone's root.
    pub requirements: Option<Vec<u8>>,
}

/// Why a job artifact could not be fetched; the message names the job and
/// never the API key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(String);

/// The fetcher of job artifacts: a W&B API client when the agent serves a
/// W&B queue, else nothing (and a message saying what job artifacts need).
#[derive(Clone, Debug)]
pub struct JobArtifacts {
    client: Option<Client>,
    queue_backend: &'static str,
}

impl JobArtifacts {
    /// Fetches with `client`.
    pub fn new(client: Client) -> Self {
        JobArtifacts {
            client: Some(client),
            queue_backend: "wandb",
        }
    }

    /// Fetches nothing: the agent serves the `queue_backend` queue, which
    /// has no W&B server to fetch from.
    pub fn unavailable(queue_backend: &'static str) -> Self {
        JobArtifacts {
            client: None,
            queue_backend,
        }
    }

    /// A fetcher with a client of `api` (the W&B queue backend's settings),
    /// or, without them, [`JobArtifacts::unavailable`] for `queue_backend`.
    pub fn from_api(
        api: Option<&ApiSettings>,
        queue_backend: &'static str,
    ) -> Result<Self, ApiError> {
        Ok(match api {
            Some(api) => JobArtifacts::new(Client::new(api)?),
            None => JobArtifacts::unavailable(queue_backend),
        })
    }

    /// Fetches job artifact `job` (`entity/project/name:alias`) the way the
    /// W&B agent does (`ArtifactMembershipByName`, `FetchArtifactManifest`,
    /// `GetArtifactMembershipFileUrls`, then `ArtifactByID` for a code
    /// job's sources); a code job's files, checked against the manifest's
    /// sizes and MD5s, go into `dest` with its [`REQUIREMENTS`].
    pub async fn fetch(&self, job: &str, dest: &Path) -> Result<FetchedJob, FetchError> {
        match &self.client {
            Some(client) => fetch::fetch_job(client, job, dest).await,
            None => Err(FetchError(format!(
                "job artifact {job} needs the W&B queue backend (queue_backend: wandb); \
                 the {} queue runs image, directory (`uri`) and git jobs",
                self.queue_backend
            ))),
        }
    }
}

/// The source of a fetched job: a repo job's clone (at `work_dir/src`, its
/// extras added), else the job's code directory, else none (image jobs).
pub(super) async fn source(job: &FetchedJob, work_dir: &Path) -> anyhow::Result<Source> {
    if let Some((remote, commit)) = &job.git {
        let dest = work_dir.join("src");
        let commit = git::clone(remote, Some(commit), &dest).await?;
        add_repo_extras(&job.repo_extras, &dest, work_dir).await?;
        return Ok(Source {
            dir: Some(dest),
            id: format!("{}@{commit}", job.source_id),
        });
    }
    Ok(Source {
        dir: job.dir.clone(),
        id: job.source_id.clone(),
    })
}

/// Applies a W&B repo job's [`DIFF_PATCH`] to its clone `dest` and copies
/// its [`REQUIREMENTS`] there, as the W&B agent does (it runs `patch -p1`;
/// `git apply -p1` reads the same patches, which `wandb` makes with `git
/// diff`, and needs nothing but the git the clone needed). The patch is
/// kept in `work_dir`, outside the build context.
async fn add_repo_extras(extras: &RepoExtras, dest: &Path, work_dir: &Path) -> anyhow::Result<()> {
    if let Some(patch) = &extras.diff_patch {
        let patch_file = work_dir.join(DIFF_PATCH);
        tokio::fs::write(&patch_file, patch)
            .await
            .with_context(|| format!("writing {}", patch_file.display()))?;
        let mut apply = tokio::process::Command::new("git");
        apply
            .args(["apply", "-p1", "--whitespace=nowarn"])
            .arg(&patch_file)
            .current_dir(dest)
            .stdin(std::process::Stdio::null());
        git::run(
            apply,
            &format!("applying the job's {DIFF_PATCH} to its commit"),
        )
        .await
        .context("the job's local changes do not apply to its commit")?;
    }
    if let Some(requirements) = &extras.requirements {
        let target = dest.join(REQUIREMENTS);
        tokio::fs::write(&target, requirements)
            .await
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_w_and_b_backend_a_job_artifact_says_what_it_needs() {
        let error = JobArtifacts::unavailable("embedded")
            .fetch("team/proj/my-job:latest", Path::new("/nonexistent"))
            .await
            .unwrap_err()
            .to_string();
        for part in [
            "team/proj/my-job:latest",
            "queue_backend: wandb",
            "the embedded queue",
        ] {
            assert!(error.contains(part), "{part:?} missing from {error:?}");
        }
    }
}
