//! A git repository (`git.repo` and `git.version` in the launch spec, or a
//! W&B repo job's remote and commit): cloned into the run dir with the
//! `git` command, without prompting for credentials, each command within
//! [`GIT_TIMEOUT`] (killed when it runs over, or when the job is stopped).
//! A repository or version that starts with `-` is refused (it would be an
//! option to git), and so is git's `ext::` transport (it runs commands).

use crate::timeouts::GIT_TIMEOUT;
use anyhow::Context as _;
use std::path::Path;

/// Clones `repo` at `version` (branch, tag or commit; default branch when
/// none) into `dest`; returns the commit checked out.
pub async fn clone(repo: &str, version: Option<&str>, dest: &Path) -> anyhow::Result<String> {
    for (what, value) in [("git.repo", Some(repo)), ("git.version", version)] {
        if let Some(value) = value {
            anyhow::ensure!(
                !value.starts_with('-'),
                "`{what}` {} starts with `-`, which git would take for an option",
                crate::text::for_log(value)
            );
        }
    }
    if dest.exists() {
        tokio::fs::remove_dir_all(dest).await.ok();
    }
    tokio::fs::create_dir_all(dest).await?;
    let git = |args: Vec<&str>| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(["-c", "protocol.ext.allow=never"])
            .args(&args)
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
    let out = output(git(vec!["rev-parse", "HEAD"]), "git rev-parse").await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a git command to its end within [`GIT_TIMEOUT`]; the command is
/// killed when it runs over or when this future is dropped.
async fn output(
    mut cmd: tokio::process::Command,
    what: &str,
) -> anyhow::Result<std::process::Output> {
    cmd.kill_on_drop(true);
    match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("{what}: cannot run git (is it installed?)")),
        Err(_) => anyhow::bail!("{what} took more than {GIT_TIMEOUT:?}: stopped it"),
    }
}

/// Runs a git command; fails with `what` and git's last line of stderr.
pub(super) async fn run(cmd: tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let out = output(cmd, what).await?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{what} failed: {}",
            stderr.lines().last().unwrap_or("").trim()
        );
    }
    Ok(())
}
