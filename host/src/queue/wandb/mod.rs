//! The W&B Launch queues as a [`QueueBackend`]: the agent serves queues of
//! a W&B server (`wandb launch --queue ...` submits to them) the way the
//! W&B Launch agent (`wandb launch-agent`) does, over the same GraphQL
//! operations (their texts are those of the real client, wandb 0.31.0; the
//! [`crate::wandb`] client sends them).
//!
//! | when | operation | variables |
//! |---|---|---|
//! | [`WandbBackend::connect`] | `Viewer` | — (checks the key; gives the default entity) |
//! | [`WandbBackend::connect`] | `ProjectRunQueues` | entity, project `model-registry` → queue names to ids |
//! | [`WandbBackend::connect`], when the project has no queue at all | `CreateRunQueue` | entity, project, `default`, access `PROJECT` (as the W&B agent) |
//! | [`WandbBackend::connect`] | `createLaunchAgent` | entity, project, queue ids, hostname, agentConfig, version → launch agent id |
//! | `claim_next` | `popFromRunQueue` | entity, project, queueName, launchAgentId; per queue in order, first non-null wins |
//! | `claim_next` | `ackRunQueueItem` | itemId, runId (the run name) — after the item is recorded here |
//! | `claim_next` (bad runSpec), `fail` | `failRunQueueItem` | runQueueItemId, message, stage (`agent`, `build`, `run`), filePaths |
//! | `renew_leases` | `updateLaunchAgent` | agentId, agentStatus `RUNNING` (jobs held) or `POLLING`: the heartbeat |
//! | `stop_requested` | `RunStoppedStatus` | the run's entity, project and name |
//! | `should_stop` | `LaunchAgent` | agentId → `stopPolling` |
//! | `close` | `updateLaunchAgent` | agentStatus `KILLED` |
//!
//! Trait methods without a server call:
//!
//! | method | why |
//! |---|---|
//! | `mark_running`, `set_run_handle` | W&B tracks the run itself (through `wandb.init` in the job) |
//! | `finish` | W&B has no success mutation; the run reports its own end (only `RunState`, to warn about a run that never reached W&B) |
//! | `mark_stopped` | the stop was asked on the server, which marks the run stopped |
//! | `release` | W&B cannot hand an acked item back; it stays claimed by its run (the W&B agent does the same on shutdown) |
//! | `reclaim_abandoned` | the server puts popped but un-acked items back itself (after about a minute) |
//! | `has_queued` | there is no cheap peek: always `false` |
//!
//! Trait methods W&B serves elsewhere, answered with
//! [`QueueError::Unsupported`] saying where:
//!
//! | method | instead |
//! |---|---|
//! | `submit` | `wandb launch --queue QUEUE ...` (it creates the job and the run spec) |
//! | `list` | the queue's page in the W&B UI (Launch) |
//! | `request_stop` | stopping the item's run in the W&B UI |
//!
//! When it pops, asks `stopPolling`, heartbeats and asks `RunStoppedStatus`
//! is the [`cadence`] module's decision: fast while work is about, W&B's
//! 10 s when long idle, `stopPolling` within 5 s, heartbeats riding along
//! with pops. Transient failures are retried by the client
//! ([`crate::wandb::RetryPolicy`]); the API key never appears in an error,
//! a log line or `Debug` output.
//!
//! Job artifacts (`job: entity/project/name:alias`) are not the queue's
//! business: the job-artifact source ([`crate::sources::wandb_job`])
//! fetches them with a client of the same settings ([`WandbSettings::api`]).
//!
//! Nothing claimed is lost: an item is acked only once it is recorded in
//! the backend; if the ack fails, the item is forgotten and the server puts
//! it back. A retried ack that the server answers with `success: false` is
//! taken as acked by the earlier try whose answer was lost (the item is
//! kept rather than lost). A pop whose answer is lost on the way is retried;
//! the item the lost answer held goes back to the queue the same way.

pub mod cadence;
mod settings;

pub use settings::WandbSettings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cadence::Cadence;

use super::{ItemState, QueueBackend, QueueError, QueueItem, Reclaimed, Stage};
use crate::json_kind;
use crate::wandb::{ApiError, Client};

/// The project W&B keeps launch queues and agents in.
pub const LAUNCH_PROJECT: &str = "model-registry";

/// The queue W&B creates when a project has none.
pub const DEFAULT_QUEUE: &str = "default";

/// The project a run goes to when its spec names none (W&B's default).
const DEFAULT_RUN_PROJECT: &str = "uncategorized";

/// How many items with a bad runSpec one `claim_next` fails before it
/// gives up on a queue for this poll.
const MAX_BAD_SPECS: usize = 10;

/// An item this agent acked and has not yet seen end.
#[derive(Clone, Debug)]
struct HeldRun {
    /// Its queue's name.
    queue: String,
    /// The entity of its run.
    entity: String,
    /// The project of its run.
    project: String,
    /// The run name it was acked with.
    run_name: String,
}

/// A connected W&B launch agent (see the module docs).
pub struct WandbBackend {
    client: Client,
    entity: String,
    queue_ids: Vec<(String, String)>,
    agent_id: String,
    cadence: Cadence,
    held: Mutex<HashMap<String, HeldRun>>,
}

impl std::fmt::Debug for WandbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WandbBackend")
            .field("client", &self.client)
            .field("entity", &self.entity)
            .field("queue_ids", &self.queue_ids)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl WandbBackend {
    /// Checks the API key (`Viewer`), resolves the queue names to ids
    /// (`ProjectRunQueues`, project `model-registry`) and registers the
    /// agent (`createLaunchAgent`).
    ///
    /// Fails with a message naming the server when it refuses the key,
    /// naming the queue and entity when a queue does not exist, and when
    /// the server cannot be reached after the retries.
    pub async fn connect(settings: WandbSettings) -> Result<Self, QueueError> {
        if settings.queues.is_empty() {
            return Err(QueueError::Remote(
                "no W&B queue to serve: give at least one queue (-q QUEUE or `queues:`)".into(),
            ));
        }
        let client = Client::new(&settings.api).map_err(remote)?;
        let base_url = client.base_url().to_string();

        let viewer = client
            .run("Viewer", json!({}))
            .await
            .map_err(|e| match e {
                ApiError::Failed(message) => ApiError::Failed(format!(
                    "cannot check the API key with W&B at {base_url}: {message}"
                )),
                refused => refused,
            })
            .map_err(remote)?;
        let viewer = &viewer["viewer"];
        if viewer.is_null() {
            return Err(QueueError::Remote(format!(
                "W&B at {base_url} refused the API key (no viewer for it); check \
                 WANDB_API_KEY or the ~/.netrc entry (`wandb login`)"
            )));
        }
        let entity = match settings.entity.clone().filter(|e| !e.is_empty()) {
            Some(entity) => entity,
            None => viewer["entity"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    QueueError::Remote(format!(
                        "no W&B entity given and W&B at {base_url} reports none for the \
                         API key; set `entity:`, -e or WANDB_ENTITY"
                    ))
                })?,
        };

        let queues = client
            .run(
                "ProjectRunQueues",
                json!({"entity": entity, "projectName": LAUNCH_PROJECT}),
            )
            .await
            .map_err(remote)?;
        let mut known: Vec<(String, String)> = queues["project"]["runQueues"]
            .as_array()
            .map(|queues| {
                queues
                    .iter()
                    .filter_map(|q| Some((q["name"].as_str()?.into(), q["id"].as_str()?.into())))
                    .collect()
            })
            .unwrap_or_default();
        if known.is_empty() {
            // As the W&B agent does: a project with no queue at all gets
            // its `default` queue, so a user's first start works.
            known.push((
                DEFAULT_QUEUE.to_string(),
                create_default_queue(&client, &entity).await?,
            ));
        }
        let mut queue_ids = Vec::new();
        for name in &settings.queues {
            let Some((_, id)) = known.iter().find(|(known, _)| known == name) else {
                let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
                return Err(QueueError::Remote(format!(
                    "W&B queue {name:?} does not exist in entity {entity:?} at {base_url} \
                     (its launch queues: {}); create it in the W&B UI (Launch → Create queue) \
                     or fix the queue name",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            };
            if !queue_ids.iter().any(|(n, _): &(String, String)| n == name) {
                queue_ids.push((name.clone(), id.clone()));
            }
        }

        let mut config = settings.agent_config.clone();
        if let Value::Object(map) = &mut config {
            map.entry("max_jobs").or_insert(json!(settings.max_jobs));
        }
        let config_text = client.scrub(&config.to_string());
        let created = client
            .run(
                "createLaunchAgent",
                json!({
                    "entity": entity,
                    "project": LAUNCH_PROJECT,
                    "queues": queue_ids.iter().map(|(_, id)| id).collect::<Vec<_>>(),
                    "hostname": settings.hostname,
                    "agentConfig": config_text,
                    "version": settings.agent_version,
                }),
            )
            .await
            .map_err(remote)?;
        let agent_id = created["createLaunchAgent"]["launchAgentId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                QueueError::Remote(format!(
                    "W&B at {base_url}: createLaunchAgent returned no launch agent id"
                ))
            })?;
        tracing::info!(
            entity = %entity,
            launch_agent = %agent_id,
            "registered with W&B at {base_url} for queues {:?}",
            settings.queues
        );
        Ok(WandbBackend {
            client,
            entity,
            queue_ids,
            agent_id,
            cadence: Cadence::new(settings.pace, Instant::now()),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The launch agent id the server gave this agent.
    pub fn launch_agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The entity whose queues are served.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The served queues' names and W&B ids, in polling order.
    pub fn queue_ids(&self) -> &[(String, String)] {
        &self.queue_ids
    }

    /// The run name item `id` was acked with, while it is held.
    pub fn run_name(&self, id: &str) -> Option<String> {
        self.held_item(id).map(|held| held.run_name)
    }

    fn held_item(&self, id: &str) -> Option<HeldRun> {
        self.held.lock().ok()?.get(id).cloned()
    }

    /// Forgets item `id` (it ended, or was never ours): a job that ended
    /// is work, and its user may well submit the next one.
    fn forget(&self, id: &str) -> Option<HeldRun> {
        let held = self.held.lock().ok()?.remove(id);
        if held.is_some() {
            self.cadence.job_ended(Instant::now());
            self.cadence.forget_run(id);
        }
        held
    }

    /// The status a heartbeat reports: `RUNNING` while jobs are held.
    fn status(&self) -> &'static str {
        if self.holds_any() {
            "RUNNING"
        } else {
            "POLLING"
        }
    }

    /// Runs a GraphQL operation (see [`Client::run`]).
    async fn run(&self, key: &str, variables: Value) -> Result<Value, QueueError> {
        self.client.run(key, variables).await.map_err(remote)
    }

    fn holds_any(&self) -> bool {
        self.held
            .lock()
            .map(|held| !held.is_empty())
            .unwrap_or(false)
    }

    async fn set_status(&self, status: &'static str) -> Result<(), QueueError> {
        self.run(
            "updateLaunchAgent",
            json!({"agentId": self.agent_id, "agentStatus": status}),
        )
        .await?;
        self.cadence.heartbeat_sent(Instant::now(), status);
        Ok(())
    }

    async fn warn_item(&self, id: &str, stage: Stage, message: &str) -> Result<(), QueueError> {
        self.run(
            "updateRunQueueItemWarning",
            json!({
                "runQueueItemId": id,
                "message": message,
                "stage": stage.as_str(),
                "filePaths": Value::Null,
            }),
        )
        .await?;
        Ok(())
    }

    async fn fail_item(&self, id: &str, stage: Stage, message: &str) -> Result<(), QueueError> {
        let data = self
            .run(
                "failRunQueueItem",
                json!({
                    "runQueueItemId": id,
                    "message": message,
                    "stage": stage.as_str(),
                    "filePaths": Value::Null,
                }),
            )
            .await?;
        if data["failRunQueueItem"]["success"] == Value::Bool(false) {
            tracing::warn!(item = id, "W&B did not accept failing the item");
        }
        Ok(())
    }

    /// Pops the first item of `queues`, in order: (queue, item id, spec).
    async fn pop_first(
        &self,
        queues: &[String],
    ) -> Result<Option<(String, String, Value)>, QueueError> {
        for queue in queues {
            if let Some((id, spec)) = self.pop(queue).await? {
                return Ok(Some((queue.clone(), id, spec)));
            }
        }
        Ok(None)
    }

    /// `popFromRunQueue` with `variables`; when a heartbeat is due it rides
    /// along in the same request (`updateLaunchAgent` as a second field of
    /// the mutation), saving the server a request.
    async fn pop_with_heartbeat(&self, mut variables: Value) -> Result<Value, QueueError> {
        let status = self.status();
        if !self.cadence.heartbeat_rides_along(Instant::now(), status) {
            return self.run("popFromRunQueue", variables).await;
        }
        if let Value::Object(map) = &mut variables {
            map.insert("agentId".into(), json!(self.agent_id));
            map.insert("agentStatus".into(), json!(status));
        }
        let data = self
            .client
            .run_together(&["popFromRunQueue", "updateLaunchAgent"], variables)
            .await
            .map_err(remote)?;
        if data["updateLaunchAgent"]["success"] == Value::Bool(true) {
            self.cadence.heartbeat_sent(Instant::now(), status);
        }
        Ok(data)
    }

    /// Pops one item of `queue`, skipping (and failing) items whose runSpec
    /// is not a JSON object; `None` when the queue has nothing.
    async fn pop(&self, queue: &str) -> Result<Option<(String, Value)>, QueueError> {
        for _ in 0..MAX_BAD_SPECS {
            let variables = json!({
                "entity": self.entity,
                "project": LAUNCH_PROJECT,
                "queueName": queue,
                "launchAgentId": self.agent_id,
            });
            let data = self.pop_with_heartbeat(variables).await?;
            let popped = &data["popFromRunQueue"];
            if popped.is_null() {
                return Ok(None);
            }
            let Some(id) = popped["runQueueItemId"].as_str().map(str::to_string) else {
                return Err(QueueError::Remote(format!(
                    "W&B at {}: popFromRunQueue on queue {queue:?} returned an item without \
                     runQueueItemId",
                    self.client.base_url()
                )));
            };
            match parse_run_spec(&popped["runSpec"]) {
                Ok(spec) => return Ok(Some((id, spec))),
                Err(why) => {
                    let message = format!("launch-agent cannot use this item's runSpec: {why}");
                    tracing::warn!(item = %id, queue, "{message}; failing it");
                    if let Err(e) = self.fail_item(&id, Stage::Agent, &message).await {
                        tracing::warn!(item = %id, "cannot fail the item: {e}");
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Creates the entity's `default` queue (`CreateRunQueue`, access
/// `PROJECT`, as wandb-core sends it for the W&B agent); returns its id.
async fn create_default_queue(client: &Client, entity: &str) -> Result<String, QueueError> {
    let created = client
        .run(
            "CreateRunQueue",
            json!({
                "entity": entity,
                "project": LAUNCH_PROJECT,
                "queueName": DEFAULT_QUEUE,
                "access": "PROJECT",
                "prioritizationMode": Value::Null,
                "defaultResourceConfigID": Value::Null,
            }),
        )
        .await
        .map_err(remote)?;
    let answer = &created["createRunQueue"];
    match answer["queueID"].as_str() {
        Some(id) if answer["success"] != Value::Bool(false) => {
            tracing::info!(
                entity,
                "W&B had no launch queue: created the `default` queue"
            );
            Ok(id.to_string())
        }
        _ => Err(QueueError::Remote(format!(
            "W&B at {}: entity {entity:?} has no launch queue and creating its `default` queue \
             failed; create a queue in the W&B UI (Launch → Create queue)",
            client.base_url()
        ))),
    }
}

/// The runSpec of a popped item: a JSON object, or a string holding one.
fn parse_run_spec(raw: &Value) -> Result<Value, String> {
    let spec = match raw {
        Value::String(text) => serde_json::from_str(text)
            .map_err(|e| format!("it is a string that is not JSON ({e})"))?,
        other => other.clone(),
    };
    match spec {
        Value::Object(_) => Ok(spec),
        Value::Null => Err("it is missing".into()),
        other => Err(format!(
            "it is {} instead of a JSON object",
            json_kind::of(&other)
        )),
    }
}

/// A client error as a queue error.
fn remote(error: ApiError) -> QueueError {
    QueueError::Remote(error.to_string())
}

/// A W&B-style run id: 8 lowercase letters and digits.
fn new_run_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A non-empty string field of the spec.
fn spec_str(spec: &Value, key: &str) -> Option<String> {
    spec.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[async_trait::async_trait]
impl QueueBackend for WandbBackend {
    fn name(&self) -> &'static str {
        "wandb"
    }

    /// Refused: `wandb launch --queue QUEUE ...` submits to W&B queues (it
    /// also creates the job and resolves the run spec).
    async fn submit(&self, _queue: &str, _spec: Value) -> Result<String, QueueError> {
        Err(QueueError::Unsupported {
            backend: "wandb",
            action: "take submissions from launch-agent",
            instead: "submit with `wandb launch --queue QUEUE ...`",
        })
    }

    /// Refused: the W&B UI lists a queue's items (its queue page under
    /// Launch).
    async fn list(&self, _queue: Option<&str>) -> Result<Vec<QueueItem>, QueueError> {
        Err(QueueError::Unsupported {
            backend: "wandb",
            action: "list its items here",
            instead: "see them on the queue's page in the W&B UI (Launch)",
        })
    }

    /// Refused: a W&B item is stopped by stopping its run in the W&B UI
    /// (the agent then sees `RunStoppedStatus` and stops it).
    async fn request_stop(&self, _id: &str) -> Result<ItemState, QueueError> {
        Err(QueueError::Unsupported {
            backend: "wandb",
            action: "stop items from launch-agent",
            instead: "stop the item's run in the W&B UI; the agent serving it then stops it",
        })
    }

    /// `popFromRunQueue` on each queue in order; the first item is recorded,
    /// then acked (`ackRunQueueItem`) with its run name: the spec's
    /// `run_id`, else a new 8-character id that is written into the spec's
    /// `run_id`.
    async fn claim_next(
        &self,
        queues: &[String],
        agent_id: &str,
        _lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError> {
        let now = Instant::now();
        if !self.cadence.pop_due(now) {
            return Ok(None);
        }
        let popped = self.pop_first(queues).await;
        self.cadence.popped(now, matches!(popped, Ok(Some(_))));
        let Some((queue, id, mut spec)) = popped? else {
            return Ok(None);
        };
        {
            let queue = &queue;
            let run_name = spec_str(&spec, "run_id").unwrap_or_else(new_run_name);
            if let Value::Object(map) = &mut spec {
                map.entry("run_id").or_insert(json!(run_name));
            }
            let held = HeldRun {
                queue: queue.clone(),
                entity: spec_str(&spec, "entity").unwrap_or_else(|| self.entity.clone()),
                project: spec_str(&spec, "project")
                    .unwrap_or_else(|| DEFAULT_RUN_PROJECT.to_string()),
                run_name: run_name.clone(),
            };
            if let Ok(mut map) = self.held.lock() {
                map.insert(id.clone(), held);
            }
            let acked = self
                .client
                .run_tracked("ackRunQueueItem", json!({"itemId": id, "runId": run_name}))
                .await
                .map_err(remote);
            match acked {
                Ok((data, _)) if data["ackRunQueueItem"]["success"] != Value::Bool(false) => {}
                Ok((_, true)) => {
                    // An earlier try may have acked it already (its answer
                    // was lost): keep the item rather than lose it.
                    tracing::warn!(
                        item = %id,
                        queue = %queue,
                        "W&B says the item is not leased after a retried ack; \
                         assuming the first ack went through"
                    );
                }
                Ok((_, false)) => {
                    self.forget(&id);
                    tracing::warn!(
                        item = %id,
                        queue = %queue,
                        "W&B refused the ack (the lease ran out?); leaving the item to the server"
                    );
                    return Ok(None);
                }
                Err(e) => {
                    // Not acked: the server puts the item back.
                    self.forget(&id);
                    return Err(e);
                }
            }
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            return Ok(Some(QueueItem {
                id,
                queue: queue.clone(),
                state: ItemState::Claimed,
                stage: None,
                message: None,
                exit_code: None,
                attempts: 1,
                spec,
                created_at: now.clone(),
                updated_at: now,
                started_at: None,
                finished_at: None,
                claimed_by: Some(agent_id.to_string()),
                lease_expires_at: None,
                stop_requested: false,
                run_handle: None,
            }));
        }
    }

    /// No server call: W&B learns that the run started from the run itself.
    async fn mark_running(&self, _id: &str, _agent_id: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// No server call: where a run is matters only to this machine.
    async fn set_run_handle(
        &self,
        _id: &str,
        _handle: &crate::queue::RunHandle,
    ) -> Result<(), QueueError> {
        Ok(())
    }

    /// The heartbeat: `updateLaunchAgent` with `RUNNING` while jobs are
    /// held, else `POLLING` — unless a pop carried one within the pace's
    /// `heartbeat_max` and the status is the same.
    async fn renew_leases(&self, _agent_id: &str, _lease: Duration) -> Result<(), QueueError> {
        let status = self.status();
        if !self.cadence.heartbeat_needed(Instant::now(), status) {
            // A pop carried one recently enough.
            return Ok(());
        }
        self.set_status(status).await
    }

    /// W&B has no success mutation (the run reports its own end), so only
    /// `RunState`: a run that never reached W&B (the job never called
    /// `wandb.init`) gets a warning on its item. The W&B agent fails such
    /// jobs, which its users report as a bug (wandb#7444): a job that did
    /// its work and exited 0 has finished. The item is forgotten.
    async fn finish(
        &self,
        id: &str,
        _agent_id: &str,
        _exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        if let Some(held) = self.held_item(id) {
            let state = self
                .run(
                    "RunState",
                    json!({"project": held.project, "entity": held.entity, "name": held.run_name}),
                )
                .await;
            match state {
                Ok(data) if data["project"]["run"].is_null() => {
                    let message = format!(
                        "the job exited 0, but its run {}/{}/{} never reported to W&B \
                         (does it call wandb.init?); it is not failed for that",
                        held.entity, held.project, held.run_name
                    );
                    if let Err(e) = self.warn_item(id, Stage::Run, &message).await {
                        tracing::warn!(item = id, "cannot warn W&B about the run: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(item = id, "cannot ask W&B for the run's state: {e}"),
            }
        }
        self.forget(id);
        Ok(())
    }

    /// `failRunQueueItem` with the stage and message (the exit code is
    /// added to the message when it does not mention one).
    async fn fail(
        &self,
        id: &str,
        _agent_id: &str,
        stage: Stage,
        message: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let message = match exit_code {
            Some(code) if !message.contains("exit code") => {
                format!("{message} (exit code {code})")
            }
            _ => message.to_string(),
        };
        self.fail_item(id, stage, &message).await?;
        self.forget(id);
        Ok(())
    }

    /// No server call: the stop was asked on the server, which marks the
    /// run stopped; the item is forgotten.
    async fn mark_stopped(
        &self,
        id: &str,
        _agent_id: &str,
        _message: &str,
    ) -> Result<(), QueueError> {
        self.forget(id);
        Ok(())
    }

    /// W&B cannot take an acked item back, and an item left claimed would
    /// never run and never say why; so a hand-back (the agent shutting down
    /// before the run finished) fails the item at stage `agent`, saying so,
    /// and the user can re-queue it.
    /// `updateRunQueueItemWarning`: W&B shows the warning on the item.
    async fn warn(&self, id: &str, stage: Stage, message: &str) -> Result<(), QueueError> {
        self.warn_item(id, stage, message).await
    }

    async fn release(&self, id: &str, _agent_id: &str) -> Result<(), QueueError> {
        if let Some(held) = self.forget(id) {
            tracing::warn!(
                item = id,
                queue = %held.queue,
                run = %held.run_name,
                "W&B cannot take an acked item back; failing it so it does not stay claimed unseen"
            );
            self.fail_item(
                id,
                Stage::Agent,
                "the launch agent shut down before this run finished; it was stopped: re-queue it to run it again",
            )
            .await?;
        }
        Ok(())
    }

    /// `RunStoppedStatus` for the item's run, at most once per the pace's
    /// `run_stop_check` (the agent asks every half second); `false` for
    /// items not held, runs the server does not know yet, and between
    /// checks.
    async fn stop_requested(&self, id: &str) -> Result<bool, QueueError> {
        let Some(held) = self.held_item(id) else {
            return Ok(false);
        };
        if !self.cadence.take_run_stop_check(id, Instant::now()) {
            return Ok(false);
        }
        let data = self
            .run(
                "RunStoppedStatus",
                json!({
                    "projectName": held.project,
                    "entityName": held.entity,
                    "runId": held.run_name,
                }),
            )
            .await?;
        Ok(data["project"]["run"]["stopped"] == Value::Bool(true))
    }

    /// Nothing: the server puts popped but un-acked items back itself.
    async fn reclaim_abandoned(
        &self,
        _holder_is_dead: Arc<dyn for<'a> Fn(&'a str) -> bool + Send + Sync>,
        _max_attempts: u32,
    ) -> Result<Vec<Reclaimed>, QueueError> {
        Ok(Vec::new())
    }

    /// Always `false`: W&B has no cheap way to peek without popping.
    async fn has_queued(&self, _queues: &[String]) -> Result<bool, QueueError> {
        Ok(false)
    }

    /// Until the next pop or stop check is due (see [`cadence`]).
    fn idle_wait(&self, _empty_polls: u32) -> Duration {
        self.cadence.next_wake(Instant::now())
    }

    /// `LaunchAgent`'s `stopPolling`, at most once per the pace's
    /// `stop_check`; `false` when the server cannot be asked and between
    /// checks.
    async fn should_stop(&self) -> bool {
        if !self.cadence.take_stop_check(Instant::now()) {
            return false;
        }
        match self
            .run("LaunchAgent", json!({"agentId": self.agent_id}))
            .await
        {
            Ok(data) => data["launchAgent"]["stopPolling"] == Value::Bool(true),
            Err(e) => {
                tracing::warn!("cannot ask W&B whether to stop polling: {e}");
                false
            }
        }
    }

    /// `updateLaunchAgent(KILLED)`.
    async fn close(&self) {
        if let Err(e) = self.set_status("KILLED").await {
            tracing::warn!("cannot tell W&B that the agent stopped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_spec_object_or_string() {
        let object = json!({"docker": {"docker_image": "busybox"}});
        assert_eq!(parse_run_spec(&object).unwrap(), object);
        assert_eq!(
            parse_run_spec(&Value::String(object.to_string())).unwrap(),
            object
        );
        assert!(parse_run_spec(&json!("not json")).is_err());
        assert!(parse_run_spec(&json!("[1]")).is_err());
        assert!(parse_run_spec(&Value::Null).is_err());
    }
}
