//! Taking back items whose agent died, and cleaning up what their runs left.

use super::{JobContext, identity};
use crate::queue::Reclaimed;
use crate::runners::{Runner, Runners};
use std::sync::Arc;
use std::time::Duration;

/// How long reclaiming waits for the runners to clean up after the agents
/// that died (kill a process group, remove a container).
const CLEAN_UP_WAIT: Duration = Duration::from_secs(30);

/// Takes back items whose holder died; cleans up what is left of their runs.
pub(super) async fn reclaim(ctx: &Arc<JobContext>, max_attempts: u32) -> anyhow::Result<usize> {
    let me = ctx.agent_id.clone();
    let holder_is_dead: Arc<dyn Fn(&str) -> bool + Send + Sync> =
        Arc::new(move |holder: &str| identity::holder_is_dead(holder, &me));
    let reclaimed = ctx
        .queue
        .reclaim_abandoned(holder_is_dead, max_attempts)
        .await?;
    let mut cleanups = Vec::new();
    for item in &reclaimed {
        tracing::warn!(
            item = %item.id,
            holder = %item.previous_holder,
            state = %item.new_state,
            "took back a job whose agent died"
        );
        cleanups.extend(clean_up_after(&ctx.runners, item));
    }
    // Before anything is claimed again (a retry reuses the container name),
    // and before an agent that is about to exit does; a cleanup that hangs
    // goes on in the background.
    if !cleanups.is_empty()
        && tokio::time::timeout(CLEAN_UP_WAIT, futures_util::future::join_all(cleanups))
            .await
            .is_err()
    {
        tracing::warn!(
            "cleaning up after the agents that died takes more than {CLEAN_UP_WAIT:?}: carrying on while it finishes"
        );
    }
    Ok(reclaimed.len())
}

/// Has the runner that recorded the item's run handle remove what the run
/// left (a process group, a container that may hold GPUs); with no handle
/// recorded (the agent died before the run started, or before the handle
/// reached the queue), every runner looks for the item's leftovers.
fn clean_up_after(runners: &Runners, item: &Reclaimed) -> Option<tokio::task::JoinHandle<()>> {
    let cleaners: Vec<Arc<dyn Runner>> = match &item.run_handle {
        Some(handle) => match runners.get(&handle.runner) {
            Ok(runner) => vec![runner],
            Err(_) => {
                tracing::warn!(
                    item = %item.id,
                    runner = %handle.runner,
                    "the run of a job whose agent died was started by a runner this agent does not have: it cannot clean it up"
                );
                return None;
            }
        },
        None => runners.all().cloned().collect(),
    };
    let (id, handle) = (item.id.clone(), item.run_handle.clone());
    Some(tokio::spawn(async move {
        for runner in cleaners {
            runner.clean_up(&id, handle.as_ref()).await;
        }
    }))
}
