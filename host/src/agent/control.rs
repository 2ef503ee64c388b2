//! The agent loop, on a thread of its own with its own small runtime (see
//! the [agent's module doc](super)): claims, lease renewals, stop requests,
//! outcomes and signals never wait for a worker of the runtime the jobs run
//! on.

use super::job::{self, JobEnd};
use super::outcomes::{Outcomes, Recorded};
use super::reclaim::reclaim;
use super::signals::FINAL_SIGNAL;
use super::storage::StorageGate;
use super::{AgentOptions, JobContext, RunSummary, wake};
use crate::queue::{QueueItem, RunHandle};
use crate::runners::Control;
use crate::state_dir::StorageProblem;
use crate::timeouts::{
    FINAL_STOP_WAIT, IDLE_RECHECK, LEASE_RENEW_DIVISOR, OUTCOME_FLUSH_LIMIT, OUTCOME_RETRY,
    STOP_POLL,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinSet};

/// A running job as the loop tracks it.
struct Running {
    item_id: String,
    control: Arc<watch::Sender<Control>>,
    /// Turns a stop request on the item into [`Control::Stop`].
    watcher: tokio::task::JoinHandle<()>,
}

/// Why the loop stopped claiming.
enum Ending {
    /// A signal.
    Signal,
    /// The queue server asked.
    ServerAsked,
    /// `--exit-when-idle` and nothing to do.
    Idle,
    /// The agent cannot go on: its state dir or its queue failed it.
    Fatal(String),
}

/// How far a shutdown went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Winding {
    /// Running jobs get the grace period.
    Waiting,
    /// Every run was asked to stop and hand its job back.
    HandingBack,
    /// The last signal: everything was killed and handed back.
    Final,
}

/// The loop's state.
struct Loop {
    ctx: Arc<JobContext>,
    options: AgentOptions,
    jobs_runtime: Handle,
    shutdown: watch::Receiver<u32>,
    /// Whether the signal counter is still there.
    signals_open: bool,
    jobs: JoinSet<(String, JobEnd)>,
    running: HashMap<tokio::task::Id, Running>,
    outcomes: Outcomes,
    storage: StorageGate,
    summary: RunSummary,
    queues: Vec<String>,
    empty_polls: u32,
    fatal: Option<String>,
    last_reclaim: Instant,
}

/// Serves the queues (see [`super::run`]); `jobs_runtime` runs the jobs.
pub(super) async fn serve(
    ctx: Arc<JobContext>,
    options: AgentOptions,
    shutdown: watch::Receiver<u32>,
    jobs_runtime: Handle,
) -> anyhow::Result<RunSummary> {
    ctx.queue.check_and_repair().await?;
    let reclaimed = match reclaim(&ctx, options.max_attempts).await {
        Ok(n) => n,
        Err(error) => match error.downcast_ref::<crate::queue::QueueError>() {
            Some(e) if e.is_transient() => {
                tracing::error!(%error, "cannot take back abandoned items now; trying again later");
                0
            }
            _ => return Err(error),
        },
    };
    let mut agent = Loop {
        storage: StorageGate::new(ctx.state.clone()),
        queues: options.queues.clone(),
        ctx,
        options,
        jobs_runtime,
        shutdown,
        signals_open: true,
        jobs: JoinSet::new(),
        running: HashMap::new(),
        outcomes: Outcomes::default(),
        summary: RunSummary {
            reclaimed,
            ..RunSummary::default()
        },
        empty_polls: 0,
        fatal: None,
        last_reclaim: Instant::now(),
    };
    let renewer = tokio::spawn(renew_leases(agent.ctx.clone(), agent.options.lease));
    let ending = agent.serve().await;
    let winding = agent.wind_down().await;
    agent.flush_outcomes(winding).await;
    renewer.abort();
    agent.ctx.queue.close().await;
    agent.finish(ending)
}

impl Loop {
    fn signals(&self) -> u32 {
        *self.shutdown.borrow()
    }

    /// Claims and runs jobs until something ends it.
    async fn serve(&mut self) -> Ending {
        let notify = Arc::new(Notify::new());
        let _wake = match wake::WakeSocket::listen(&self.ctx.state.wake_dir(), notify.clone()) {
            Ok(socket) => Some(socket),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for submits; new work is noticed within {IDLE_RECHECK:?}");
                None
            }
        };
        self.ctx.queue.wake_on_new_work(notify.clone());
        tracing::info!(agent = %self.ctx.agent_id, queues = ?self.queues, max_jobs = ?self.options.max_jobs, "agent polling");
        loop {
            if self.signals() > 0 {
                return Ending::Signal;
            }
            if let Some(fatal) = self.fatal.take() {
                return Ending::Fatal(fatal);
            }
            if self.ctx.queue.should_stop().await {
                tracing::info!(
                    backend = self.ctx.queue.name(),
                    "the queue server asked this agent to stop polling"
                );
                return Ending::ServerAsked;
            }
            self.retry_outcomes().await;
            self.claim().await;
            if let Some(fatal) = self.fatal.take() {
                return Ending::Fatal(fatal);
            }
            if self.options.exit_when_idle
                && self.running.is_empty()
                && self.outcomes.is_empty()
                && !self.storage.is_full()
            {
                match self.ctx.queue.has_queued(&self.queues).await {
                    Ok(false) => {
                        tracing::info!("queues empty and no job running: exiting");
                        return Ending::Idle;
                    }
                    Ok(true) => {}
                    Err(error) if error.is_transient() => {
                        tracing::warn!(%error, "cannot tell whether the queues are empty; looking again shortly");
                    }
                    Err(error) => {
                        return Ending::Fatal(format!(
                            "cannot tell whether the queues are empty: {error}"
                        ));
                    }
                }
            }
            if self.last_reclaim.elapsed() >= IDLE_RECHECK {
                self.reclaim().await;
            }
            let wait = self.wait();
            tokio::select! {
                _ = notify.notified() => {}
                Some(done) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    self.job_ended(done).await;
                }
                _ = tokio::time::sleep(wait) => {}
                changed = self.shutdown.changed(), if self.signals_open => {
                    self.signals_open = changed.is_ok();
                }
            }
        }
    }

    /// How long to sleep when nothing happens.
    fn wait(&self) -> Duration {
        let mut wait = self
            .ctx
            .queue
            .idle_wait(self.empty_polls)
            .min(IDLE_RECHECK.saturating_sub(self.last_reclaim.elapsed()));
        if let Some(at) = self.outcomes.next_try() {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(recheck) = self.storage.recheck_in() {
            wait = wait.min(recheck);
        }
        wait.max(Duration::from_millis(10))
    }

    async fn reclaim(&mut self) {
        self.last_reclaim = Instant::now();
        match reclaim(&self.ctx, self.options.max_attempts).await {
            Ok(n) => self.summary.reclaimed += n,
            Err(error) => tracing::error!(%error, "cannot reclaim abandoned items"),
        }
    }

    /// Claims while there is room and the state dir takes writes.
    async fn claim(&mut self) {
        if !self.has_room() {
            return;
        }
        match self.storage.open().await {
            Ok(true) => {}
            Ok(false) => return,
            Err(why) => {
                self.fatal = Some(why);
                return;
            }
        }
        while self.has_room() {
            let claimed = self
                .ctx
                .queue
                .claim_next(&self.queues, &self.ctx.agent_id, self.options.lease)
                .await;
            let item = match claimed {
                Ok(Some(item)) => {
                    self.empty_polls = 0;
                    item
                }
                Ok(None) => {
                    self.empty_polls = self.empty_polls.saturating_add(1);
                    return;
                }
                Err(error) if error.is_storage_full() => {
                    self.storage.queue_full(&error);
                    return;
                }
                Err(error) if error.is_transient() => {
                    tracing::error!(%error, "cannot claim from the queue; retrying shortly");
                    return;
                }
                Err(error) => {
                    self.fatal = Some(format!("cannot claim from the queue: {error}"));
                    return;
                }
            };
            // Round robin: the queue that yielded goes to the end.
            if let Some(pos) = self.queues.iter().position(|q| *q == item.queue) {
                let q = self.queues.remove(pos);
                self.queues.push(q);
            }
            self.start(item);
        }
    }

    fn has_room(&self) -> bool {
        self.options
            .max_jobs
            .is_none_or(|max| self.running.len() < max)
    }

    /// Starts a claimed job on the jobs' runtime, and its stop watcher here.
    fn start(&mut self, item: QueueItem) {
        let (tx, rx) = watch::channel(Control::Run);
        let control = Arc::new(tx);
        let item_id = item.id.clone();
        let watcher = tokio::spawn(watch_stop(
            self.ctx.clone(),
            item_id.clone(),
            control.clone(),
        ));
        let ctx = self.ctx.clone();
        let handle = self.jobs.spawn_on(
            async move {
                let id = item.id.clone();
                (id, job::run_job(ctx, item, rx).await)
            },
            &self.jobs_runtime,
        );
        self.running.insert(
            handle.id(),
            Running {
                item_id,
                control,
                watcher,
            },
        );
    }

    /// A job task ended: counts and records its outcome.
    async fn job_ended(&mut self, done: Result<(tokio::task::Id, (String, JobEnd)), JoinError>) {
        let (item_id, end) = match done {
            Ok((id, (item_id, end))) => {
                if let Some(job) = self.running.remove(&id) {
                    job.watcher.abort();
                }
                (item_id, end)
            }
            Err(join_error) => {
                let Some(job) = self.running.remove(&join_error.id()) else {
                    return;
                };
                job.watcher.abort();
                (
                    job.item_id,
                    JobEnd::Failed {
                        stage: crate::queue::Stage::Agent,
                        message: format!("the agent's job task failed: {join_error}"),
                        exit_code: None,
                    },
                )
            }
        };
        if let Ok(mut handles) = self.ctx.run_handles.lock() {
            handles.remove(&item_id);
        }
        match &end {
            JobEnd::Finished => self.summary.finished += 1,
            JobEnd::Failed { stage, message, .. } => {
                self.summary.failed += 1;
                tracing::warn!(item = %item_id, %stage, "job failed: {message}");
            }
            JobEnd::Stopped => self.summary.stopped += 1,
            JobEnd::HandedBack => self.summary.handed_back += 1,
            JobEnd::Unstarted(problem) => {
                self.summary.handed_back += 1;
                tracing::error!(item = %item_id, "the job could not start: {problem}; handing it back");
                match problem {
                    StorageProblem::Full(why) => self.storage.disk_full(why),
                    StorageProblem::Unwritable(why) => {
                        self.fatal.get_or_insert_with(|| {
                            format!(
                                "the state dir {} cannot be written ({why}): the agent stops rather than fail jobs for it",
                                self.ctx.state.root().display()
                            )
                        });
                    }
                }
            }
        }
        if let Recorded::Kept(error) = self.outcomes.record(&self.ctx, item_id, end).await
            && error.is_storage_full()
        {
            self.storage.queue_full(&error);
        }
    }

    async fn retry_outcomes(&mut self) {
        if let Some(error) = self.outcomes.retry(&self.ctx).await
            && error.is_storage_full()
        {
            self.storage.queue_full(&error);
        }
    }

    /// Waits for running jobs as the signals say (see the agent's signal
    /// table); returns how far it went.
    async fn wind_down(&mut self) -> Winding {
        if self.running.is_empty() {
            return Winding::Waiting;
        }
        tracing::info!(
            running = self.running.len(),
            grace = ?self.options.shutdown_grace,
            "shutting down: no new work; waiting for running jobs (signal again to hand them back now, a third time to stop at once)"
        );
        let mut seen = self.signals();
        let mut winding = Winding::Waiting;
        let deadline = tokio::time::sleep(self.options.shutdown_grace);
        tokio::pin!(deadline);
        while !self.jobs.is_empty() {
            let retry_in = self.outcomes.next_try().map_or(OUTCOME_RETRY, |at| {
                at.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                Some(done) = self.jobs.join_next_with_id() => self.job_ended(done).await,
                _ = &mut deadline, if winding == Winding::Waiting => {
                    winding = Winding::HandingBack;
                    self.hand_back_all();
                }
                changed = self.shutdown.changed(), if self.signals_open => {
                    self.signals_open = changed.is_ok();
                    let now = self.signals();
                    if now <= seen {
                        continue;
                    }
                    seen = now;
                    if winding == Winding::Waiting && now < FINAL_SIGNAL {
                        winding = Winding::HandingBack;
                        self.hand_back_all();
                    } else {
                        self.final_stop().await;
                        return Winding::Final;
                    }
                }
                _ = tokio::time::sleep(retry_in), if !self.outcomes.is_empty() => {
                    self.retry_outcomes().await;
                }
            }
        }
        winding
    }

    fn hand_back_all(&self) {
        tracing::info!(
            jobs = self.running.len(),
            "stopping running jobs and handing them back to the queue"
        );
        for job in self.running.values() {
            job.control.send_if_modified(|wanted| {
                let change = *wanted == Control::Run;
                if change {
                    *wanted = Control::HandBack;
                }
                change
            });
        }
    }

    /// The last signal: kills every run through its runner at once, hands
    /// every job still held back, and leaves the job tasks behind.
    async fn final_stop(&mut self) {
        tracing::warn!(
            jobs = self.running.len(),
            "final signal: killing every run now and handing its job back"
        );
        while let Some(done) = self.jobs.try_join_next_with_id() {
            self.job_ended(done).await;
        }
        let handles: Vec<(String, RunHandle)> = match self.ctx.run_handles.lock() {
            Ok(mut handles) => handles.drain().collect(),
            Err(_) => Vec::new(),
        };
        let kills = handles.into_iter().filter_map(|(id, handle)| {
            let runner = self.ctx.runners.get(&handle.runner).ok()?;
            Some(async move { runner.clean_up(&id, Some(&handle)).await })
        });
        if tokio::time::timeout(FINAL_STOP_WAIT, futures_util::future::join_all(kills))
            .await
            .is_err()
        {
            tracing::warn!("killing the runs takes more than {FINAL_STOP_WAIT:?}: exiting anyway");
        }
        self.jobs.abort_all();
        self.jobs.detach_all();
        for (_, job) in self.running.drain() {
            job.watcher.abort();
            self.summary.handed_back += 1;
            if let Recorded::Kept(error) = self
                .outcomes
                .record(&self.ctx, job.item_id, JobEnd::HandedBack)
                .await
                && error.is_storage_full()
            {
                self.storage.queue_full(&error);
            }
        }
    }

    /// Tries to record what is still unrecorded, for a bounded time (a
    /// further signal cuts it short).
    async fn flush_outcomes(&mut self, winding: Winding) {
        if self.outcomes.is_empty() {
            return;
        }
        let limit = if winding == Winding::Final {
            FINAL_STOP_WAIT
        } else {
            OUTCOME_FLUSH_LIMIT
        };
        tracing::warn!(
            pending = ?self.outcomes.unrecorded(),
            "trying to record the outcomes still unrecorded for up to {limit:?} before exiting"
        );
        let seen = self.signals();
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            self.retry_outcomes().await;
            if self.outcomes.is_empty() {
                return;
            }
            tokio::select! {
                _ = &mut deadline => return,
                _ = tokio::time::sleep(OUTCOME_RETRY) => {}
                changed = self.shutdown.changed(), if self.signals_open => {
                    self.signals_open = changed.is_ok();
                    if self.signals() > seen {
                        return;
                    }
                }
            }
        }
    }

    /// The result of the run: an error when outcomes are unrecorded or the
    /// agent could not go on.
    fn finish(self, ending: Ending) -> anyhow::Result<RunSummary> {
        let summary = self.summary;
        if !self.outcomes.is_empty() {
            let items = self.outcomes.unrecorded();
            anyhow::bail!(
                "could not record the outcomes of {} job(s) before exiting: {}. The queue still shows them held by this agent; the next agent takes them back and runs them again (delivery is at least once){}",
                items.len(),
                items.join(", "),
                match &ending {
                    Ending::Fatal(why) => format!(". The agent stopped because {why}"),
                    _ => String::new(),
                }
            );
        }
        match ending {
            Ending::Fatal(why) => {
                tracing::info!(
                    finished = summary.finished,
                    failed = summary.failed,
                    stopped = summary.stopped,
                    handed_back = summary.handed_back,
                    "agent stopped"
                );
                Err(anyhow::anyhow!(why))
            }
            Ending::Signal | Ending::ServerAsked | Ending::Idle => Ok(summary),
        }
    }
}

/// Turns a stop request on item `id` into [`Control::Stop`] (unless the
/// job is already being stopped or handed back).
async fn watch_stop(ctx: Arc<JobContext>, id: String, control: Arc<watch::Sender<Control>>) {
    loop {
        tokio::time::sleep(STOP_POLL).await;
        if let Ok(true) = ctx.queue.stop_requested(&id).await {
            control.send_if_modified(|wanted| {
                let change = *wanted == Control::Run;
                if change {
                    *wanted = Control::Stop;
                }
                change
            });
            return;
        }
    }
}

/// Renews this agent's leases every lease / [`LEASE_RENEW_DIVISOR`]; a
/// failure is said once (and its end), not at every try.
async fn renew_leases(ctx: Arc<JobContext>, lease: Duration) {
    let every = lease / LEASE_RENEW_DIVISOR;
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match ctx.queue.renew_leases(&ctx.agent_id, lease).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("renewing job leases works again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::error!(%error, "cannot renew job leases; trying again every {every:?}");
            }
            Err(error) => tracing::debug!(%error, "still cannot renew job leases"),
        }
    }
}
