//! Where a job's code comes from, fetched by the host before a build.
//!
//! | launch spec | source | source id (hashed into the image tag) |
//! |---|---|---|
//! | `docker.docker_image` / `image_uri` | none: nothing to build | the image |
//! | `uri`: a local directory | that directory, read-only | `dir:<path>@<sha256 of its files>` |
//! | `git.repo` (+ `git.version`) | a clone in the run dir | `<repo>@<commit>` |
//! | `job`: a W&B job artifact | fetched by the W&B backend: its code artifact, git repo (a clone at the job's commit, with its `diff.patch` applied and its `requirements.frozen.txt`) or image | `<entity>/<project>/<name>:v<N>` |
//!
//! A directory's id hashes its files' paths and contents, so editing the
//! code changes the image tag (W&B hashes only the name, and would reuse a
//! stale image).

use crate::queue::{FetchedJob, RepoExtras};
use crate::spec::LaunchSpec;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A W&B repo job's local changes (see [`RepoExtras`]).
const DIFF_PATCH: &str = "diff.patch";
/// A W&B job's pinned requirements.
const REQUIREMENTS: &str = "requirements.frozen.txt";

/// A job's source, ready for a build.
#[derive(Clone, Debug)]
pub struct Source {
    /// The directory with the code; none for image jobs.
    pub dir: Option<PathBuf>,
    /// What the image tag hashes.
    pub id: String,
}

/// Fetches the source of `spec` (a git clone goes to `work_dir/src`);
/// `job` is the spec's W&B job artifact, already fetched by the queue backend.
pub async fn fetch(
    spec: &LaunchSpec,
    job: Option<&FetchedJob>,
    work_dir: &Path,
) -> anyhow::Result<Source> {
    if let Some(job) = job {
        if let Some((remote, commit)) = &job.git {
            let dest = work_dir.join("src");
            let commit = git_fetch(remote, Some(commit), &dest).await?;
            add_repo_extras(&job.repo_extras, &dest, work_dir).await?;
            return Ok(Source {
                dir: Some(dest),
                id: format!("{}@{commit}", job.source_id),
            });
        }
        return Ok(Source {
            dir: job.dir.clone(),
            id: job.source_id.clone(),
        });
    }
    if let Some(dir) = spec.code_dir() {
        let dir = PathBuf::from(dir);
        anyhow::ensure!(
            dir.is_dir(),
            "`uri` {} is not a directory on this machine",
            dir.display()
        );
        let digest = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || hash_dir(&dir)
        })
        .await??;
        return Ok(Source {
            id: format!("dir:{}@{digest}", dir.display()),
            dir: Some(dir),
        });
    }
    if let Some((repo, version)) = spec.git() {
        let dest = work_dir.join("src");
        let commit = git_fetch(&repo, version.as_deref(), &dest).await?;
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

/// sha256 over the sorted relative paths and contents of a directory's
/// files (`.git` skipped; symlinks are hashed by their target text).
pub fn hash_dir(dir: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for rel in files {
        let path = dir.join(&rel);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            hasher.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            std::io::copy(&mut file, &mut hasher)?;
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// Clones `repo` at `version` (branch, tag or commit; default branch when
/// none) into `dest`; returns the commit checked out.
async fn git_fetch(repo: &str, version: Option<&str>, dest: &Path) -> anyhow::Result<String> {
    if dest.exists() {
        tokio::fs::remove_dir_all(dest).await.ok();
    }
    tokio::fs::create_dir_all(dest).await?;
    let git = |args: Vec<&str>| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(&args)
            .current_dir(dest)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null());
        cmd
    };
    run(git(vec!["init", "--quiet"]), "git init").await?;
    let wanted = version.unwrap_or("HEAD");
    let fetched = run(
        git(vec!["fetch", "--quiet", "--depth", "1", repo, wanted]),
        "git fetch",
    )
    .await;
    if let Err(shallow) = fetched {
        // Some servers refuse fetching a commit by id; fall back to a full fetch.
        run(
            git(vec![
                "fetch",
                "--quiet",
                repo,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ]),
            "git fetch",
        )
        .await
        .with_context(|| format!("{shallow:#}"))?;
        run(
            git(vec!["checkout", "--quiet", wanted]),
            &format!("git checkout {wanted}"),
        )
        .await?;
    } else {
        run(
            git(vec!["checkout", "--quiet", "FETCH_HEAD"]),
            "git checkout",
        )
        .await?;
    }
    let out = git(vec!["rev-parse", "HEAD"]).output().await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Applies a W&B repo job's `diff.patch` to its clone `dest` and copies its
/// `requirements.frozen.txt` there, as the W&B agent does (it runs
/// `patch -p1`; `git apply -p1` reads the same patches, which `wandb` makes
/// with `git diff`, and needs nothing but the git the clone needed). The
/// patch is kept in `work_dir`, outside the build context.
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
        run(
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

async fn run(mut cmd: tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("{what}: cannot run git (is it installed?)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{what} failed: {}",
            stderr.lines().last().unwrap_or("").trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_hash_follows_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)").unwrap();
        let first = hash_dir(dir.path()).unwrap();
        assert_eq!(first, hash_dir(dir.path()).unwrap());
        std::fs::write(dir.path().join("train.py"), "print(2)").unwrap();
        assert_ne!(first, hash_dir(dir.path()).unwrap());
    }
}
