//! The `local-process` runner: runs the job's entry point as a process on
//! this machine, in its own process group, with the W&B environment.
//!
//! The process gets the agent's environment minus the variables that back
//! secrets, plus the run's variables. Its stdout and stderr go through one
//! pipe into the run's `output.log`, capped at `max_log_mb` ([`output`]). If the agent dies, the kernel kills the run with it
//! (`PR_SET_PDEATHSIG`), and the agent that reclaims the job kills any of
//! the process group that is left (the run handle is the group's id), so no
//! run goes on unaccounted for.
//!
//! It reads no `resource_args`: any a spec gives are ignored.
//!
//! A process on this machine can do whatever its user can, so whether a
//! queue's jobs may run here at all, and as whom, is the operator's
//! `runners.local-process` block ([`policy`]); a queue it turns off has its
//! jobs fail before anything is fetched. Whatever the user, the run cannot
//! read the agent's environment or memory ([`confine`]).
//!
//! | part | module |
//! |---|---|
//! | the process's life: spawn, wait, stop, clean up | this one |
//! | its output into the capped log | [`output`] |
//! | what a queue's jobs may do: run at all, as which user | [`policy`] |
//! | looking that user up | [`user`] |
//! | what the child gives up before `exec`: capabilities, credentials | [`confine`] |

mod confine;
pub mod output;
pub mod policy;
pub mod user;

use super::policy::PerQueue;
use super::{Control, RunHandle, RunHooks, RunOutcome, RunRequest, Runner};
use anyhow::Context as _;
use confine::Confinement;
use policy::ProcessPolicy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::process::Command;
use tokio::sync::watch;
use user::JobUser;

/// The `local-process` runner.
#[derive(Clone, Debug, Default)]
pub struct LocalProcess {
    policies: Arc<PerQueue<ProcessPolicy>>,
}

impl LocalProcess {
    /// The runner, under the operator's `policies` (per queue).
    pub fn new(policies: Arc<PerQueue<ProcessPolicy>>) -> Self {
        LocalProcess { policies }
    }
}

/// The `resource` it serves.
const NAME: &str = "local-process";

#[async_trait::async_trait]
impl Runner for LocalProcess {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_image(&self) -> bool {
        false
    }

    fn check_args(&self, queue: &str, _resource_args: &Value) -> anyhow::Result<()> {
        self.policies
            .for_queue(queue)
            .check_enabled(queue)
            .map_err(anyhow::Error::msg)
    }

    async fn run(
        &self,
        request: RunRequest,
        control: watch::Receiver<Control>,
        hooks: &dyn RunHooks,
    ) -> anyhow::Result<RunOutcome> {
        let policy = self.policies.for_queue(&request.queue);
        policy
            .check_enabled(&request.queue)
            .map_err(anyhow::Error::msg)?;
        hooks.log(&format!(
            "run: starting local-process {:?}{}",
            request.command.first().map(String::as_str).unwrap_or(""),
            policy
                .user()
                .map(|u| format!(" as {}", u.describe()))
                .unwrap_or_default()
        ));
        run(&request, policy.user(), control, |pid| {
            hooks.started(RunHandle {
                runner: NAME.to_string(),
                id: pid.to_string(),
            })
        })
        .await
    }

    async fn clean_up(&self, item_id: &str, handle: Option<&RunHandle>) {
        let Some(handle) = handle.filter(|h| h.runner == NAME) else {
            return;
        };
        match handle.id.parse::<i32>() {
            Ok(pgid) => kill_leftover(pgid),
            Err(_) => tracing::warn!(
                item = %item_id,
                "the recorded run handle {:?} is not a process group id: nothing to kill",
                handle.id
            ),
        }
    }
}

/// Runs `request` (as `user`, when given), calling `started(pid)` once the
/// process exists; ends it when `control` says so.
async fn run(
    request: &RunRequest,
    user: Option<&JobUser>,
    mut control: watch::Receiver<Control>,
    started: impl FnOnce(i32),
) -> anyhow::Result<RunOutcome> {
    let Some((program, args)) = request.command.split_first() else {
        anyhow::bail!(
            "the job has no command: set `overrides.entry_point` in the launch spec (e.g. [\"python\", \"train.py\"])"
        );
    };
    if let Some(parent) = request.log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let (output, writer) = output::start(&request.log_path, request.log_limit)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .context("sharing the run's output pipe")?,
        )
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true);
    for var in &request.env_remove {
        command.env_remove(var);
    }
    if let Some(user) = user {
        for (var, value) in [("USER", &user.name), ("LOGNAME", &user.name)] {
            if let Some(value) = value {
                command.env(var, value);
            }
        }
        if let Some(home) = &user.home {
            command.env("HOME", home);
        }
    }
    command.envs(request.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &request.workdir {
        match user {
            Some(user) => command.current_dir(work_dir_for(dir, &request.log_path, user)?),
            None => command.current_dir(dir),
        };
    }
    let confinement = Confinement::new(user);
    // The kernel kills the child when the thread that spawned it dies: a
    // worker of the agent's runtime, which lives as long as the agent. Had
    // the agent died between fork and prctl, the child's parent is already
    // another process, and it does not start. The death signal is set after
    // the change of user, which would clear it.
    let agent = std::process::id();
    // SAFETY: `apply`, prctl and getppid are async-signal-safe, and the
    // closure allocates nothing (an OS error code is not boxed).
    unsafe {
        command.pre_exec(move || {
            confinement.apply()?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() as u32 != agent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot start {program:?}{}: {e}",
            request
                .workdir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        )
    })?;
    // The command holds the agent's copies of the pipe's write end: the
    // copy of the output ends only once they are closed too.
    drop(command);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    started(pid);
    let outcome = wait_or_stop(&mut child, pid, request, &mut control).await;
    output.drained().await;
    outcome
}

/// Waits for the run to end, or stops it when `control` says so.
async fn wait_or_stop(
    child: &mut tokio::process::Child,
    pid: i32,
    request: &RunRequest,
    control: &mut watch::Receiver<Control>,
) -> anyhow::Result<RunOutcome> {
    loop {
        // The run's own end first: a run that exited just as a stop or a
        // hand-back came ended as it ended, and is recorded so.
        tokio::select! {
            biased;
            status = child.wait() => {
                let status = status.context("waiting for the run")?;
                return Ok(match status.code() {
                    Some(0) => RunOutcome::Finished,
                    Some(code) => RunOutcome::Failed { exit_code: Some(code), message: format!("the run exited with code {code}") },
                    None => {
                        use std::os::unix::process::ExitStatusExt as _;
                        let signal = status.signal().unwrap_or(0);
                        RunOutcome::Failed { exit_code: None, message: format!("the run was killed by signal {signal}") }
                    }
                });
            }
            changed = control.changed() => {
                let wanted = if changed.is_ok() { *control.borrow() } else { Control::HandBack };
                if wanted == Control::Run {
                    continue;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // It ended by itself meanwhile: report how.
                    continue;
                }
                stop_group(pid, child, request.stop_grace).await;
                return Ok(RunOutcome::Stopped);
            }
        }
    }
}

/// Where a run as `user` works: the job's code, when the agent fetched it
/// into the run's own directory (beside `log_path`), as a fresh copy that
/// `user` owns, so the run can write there; a directory the spec names
/// elsewhere is used as it is.
///
/// A copy, not the fetched tree handed over: a later attempt at the job
/// fetches into that tree again as the agent, and a run that owned it could
/// have left symlinks there for the agent to write through.
fn work_dir_for(dir: &Path, log_path: &Path, user: &JobUser) -> anyhow::Result<PathBuf> {
    let Some(run_dir) = log_path.parent() else {
        return Ok(dir.to_path_buf());
    };
    if !dir.starts_with(run_dir) {
        return Ok(dir.to_path_buf());
    }
    let work = run_dir.join(format!("work-{}", uuid::Uuid::new_v4().simple()));
    copy_tree(dir, &work).with_context(|| {
        format!(
            "copying the job's code {} to {} for {}",
            dir.display(),
            work.display(),
            user.describe()
        )
    })?;
    let mut pending = vec![work.clone()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("giving {} to {}", path.display(), user.describe()))?;
        if path.symlink_metadata()?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(work)
}

/// Copies directory `from` to the new directory `to` (which must not
/// exist): files, directories, and symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// SIGTERM to the process group, then SIGKILL after the grace period.
async fn stop_group(pid: i32, child: &mut tokio::process::Child, grace: std::time::Duration) {
    signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Sends `signal` to process group `pgid` (nothing for pid 0 or below).
fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Kills what is left of the process group of a run whose agent died.
fn kill_leftover(pgid: i32) {
    signal_group(pgid, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn a_run_as_another_user_works_in_its_own_copy_of_the_fetched_code() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("runs/item");
        let code = run_dir.join("job/code");
        std::fs::create_dir_all(code.join("pkg")).unwrap();
        std::fs::write(code.join("train.py"), "print(1)\n").unwrap();
        std::fs::write(code.join("pkg/mod.py"), "").unwrap();
        std::os::unix::fs::symlink("train.py", code.join("link.py")).unwrap();
        let log = run_dir.join("output.log");
        let user = JobUser::resolve("4242:4343").unwrap();
        // A directory the spec names elsewhere is used as it is.
        let elsewhere = dir.path().join("elsewhere");
        assert_eq!(work_dir_for(&elsewhere, &log, &user).unwrap(), elsewhere);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let error = work_dir_for(&code, &log, &user).unwrap_err();
            assert!(format!("{error:#}").contains("giving"), "{error:#}");
            return;
        }

        let work = work_dir_for(&code, &log, &user).unwrap();

        assert!(
            work.starts_with(&run_dir) && work != code,
            "{}",
            work.display()
        );
        assert_eq!(
            std::fs::read_to_string(work.join("train.py")).unwrap(),
            "print(1)\n"
        );
        assert_eq!(
            std::fs::read_link(work.join("link.py")).unwrap(),
            Path::new("train.py")
        );
        for path in [&work, &work.join("pkg/mod.py"), &work.join("link.py")] {
            let meta = path.symlink_metadata().unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{}", path.display());
        }
        // What the agent fetched stays the agent's.
        assert_eq!(code.metadata().unwrap().uid(), 0);
        assert_eq!(code.join("pkg/mod.py").metadata().unwrap().uid(), 0);
        // Each run gets a new copy.
        assert_ne!(work_dir_for(&code, &log, &user).unwrap(), work);
    }
}
