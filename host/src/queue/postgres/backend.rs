//! The PostgreSQL queue as a [`QueueBackend`]: every state change one
//! statement (or one transaction), the server's clock for every time.
//!
//! Item for item what the embedded queue does, with these differences,
//! each because agents may be on different machines:
//!
//! - **Only leases free a dead agent's items.** A holder's pid means
//!   nothing on another machine (and host names repeat across containers),
//!   so [`reclaim_abandoned`](QueueBackend::reclaim_abandoned) ignores
//!   `holder_is_dead` and takes back items whose lease ran out, by the
//!   server's clock. A reclaimed item keeps its run handle only when its
//!   holder ran on this host (its id's host part is this host's name); a
//!   handle from elsewhere (a process group there) is not this agent's to
//!   clean up.
//! - **Leases are renewed for the items this process claimed.** A claim
//!   whose reply was lost with its connection is held by no one who knows:
//!   its lease runs out and it is taken back, instead of being renewed
//!   forever.
//! - **A server restart is no one's lease running out.** No holder could
//!   renew while the server was down, so after it starts every holder gets
//!   one whole lease to renew before its items can be taken back
//!   (`pg_postmaster_start_time()` + the item's lease length): a restart
//!   longer than a lease does not make live agents' jobs run twice.
//! - **A server that cannot be reached is waited for.** A call whose
//!   connection failed is tried again on a new one, with backoff, for up to
//!   [`RECONNECT_PATIENCE`]; after that the error is transient
//!   ([`QueueError::Remote`]) and the agent loop tries again later.
//! - **Marking an item running twice is not an error when the second is a
//!   retry** of a first whose reply was lost with its connection.
//! - Rows are typed and checked by the server, so there is no quarantine of
//!   unreadable rows.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::listen;
use super::runtime::IoRuntime;
use super::schema;
use super::settings::{Connection, PostgresSettings};
use super::sql::{SqlContext, StoreName, is_unreachable};
use crate::json_kind;
use crate::queue::{ItemState, QueueBackend, QueueError, QueueItem, Reclaimed, RunHandle, Stage};

/// How long a call waits for an unreachable server (retrying on new
/// connections) before it fails with a transient error.
pub const RECONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// The longest sleep between two retries of a call.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long an idle agent waits before looking for work by itself
/// (notifications wake it at once; the agent loop also looks every time it
/// reclaims, see [`IDLE_RECHECK`](crate::timeouts::IDLE_RECHECK)).
pub const IDLE_FALLBACK: Duration = Duration::from_secs(30);

/// Connections per agent (claims, renewals, stop checks and outcomes share them).
const POOL_SIZE: usize = 8;

/// The columns of an item, in [`read_item`]'s order; times as RFC 3339 UTC
/// text with milliseconds.
static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let ts = |col: &str| {
        format!(r#"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#)
    };
    [
        "id".to_owned(),
        "queue".to_owned(),
        "state".to_owned(),
        "stage".to_owned(),
        "message".to_owned(),
        "exit_code".to_owned(),
        "attempts".to_owned(),
        "spec".to_owned(),
        ts("created_at"),
        ts("updated_at"),
        ts("started_at"),
        ts("finished_at"),
        "claimed_by".to_owned(),
        ts("lease_expires_at"),
        "stop_requested".to_owned(),
        "run_runner".to_owned(),
        "run_handle".to_owned(),
    ]
    .join(", ")
});

/// The PostgreSQL queue (see the module doc).
pub struct PostgresBackend {
    inner: Arc<Inner>,
    runtime: IoRuntime,
}

/// What calls share, on the backend's runtime.
struct Inner {
    pool: Pool,
    store: StoreName,
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// Items claimed through this backend and not ended or handed back yet:
    /// the ones whose leases it renews.
    held: Mutex<HashSet<String>>,
    /// Whether a listener runs already.
    listening: Mutex<bool>,
    /// This machine's host name (see the module doc on run handles).
    hostname: String,
}

impl PostgresBackend {
    /// Connects (the URL read from where `settings` say), and brings the
    /// schema up to date under the migration lock.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, QueueError> {
        let backend = Self::open_unmigrated(settings)?;
        backend
            .call("migrate the schema", |inner| async move {
                let store = inner.store.clone();
                let mut client = inner.client("migrate the schema").await?;
                schema::migrate(&mut client, &store).await.map(drop)
            })
            .await?;
        Ok(backend)
    }

    /// The pool and runtime, nothing connected yet.
    fn open_unmigrated(settings: &PostgresSettings) -> Result<Self, QueueError> {
        let conn = Connection::parse(&settings.url.read()?)?;
        let tls = super::tls::connector(&conn)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(conn.config.clone(), tls.clone(), manager_config),
            None => {
                Manager::from_config(conn.config.clone(), tokio_postgres::NoTls, manager_config)
            }
        };
        let store = StoreName(conn.store.clone());
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(RECONNECT_PATIENCE))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| QueueError::Remote(format!("queue database {store}: {e}")))?;
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                pool,
                store,
                config: conn.config,
                tls,
                held: Mutex::new(HashSet::new()),
                listening: Mutex::new(false),
                hostname: crate::agent::identity::hostname(),
            }),
            runtime: IoRuntime::start()?,
        })
    }

    /// The migrations the database lacks, without applying them (`queue
    /// migrate --dry-run`): each one's version, name and SQL.
    pub async fn pending_migrations(
        settings: &PostgresSettings,
    ) -> Result<Vec<&'static schema::Migration>, QueueError> {
        let backend = Self::open_unmigrated(settings)?;
        backend
            .call("read the schema version", |inner| async move {
                let client = inner.client("read the schema version").await?;
                schema::pending(&client, &inner.store).await
            })
            .await
    }

    /// Applies the migrations the database lacks; returns their versions.
    pub async fn migrate(settings: &PostgresSettings) -> Result<Vec<i32>, QueueError> {
        let backend = Self::open_unmigrated(settings)?;
        backend
            .call("migrate the schema", |inner| async move {
                let store = inner.store.clone();
                let mut client = inner.client("migrate the schema").await?;
                schema::migrate(&mut client, &store).await
            })
            .await
    }

    /// The server and database, as errors name them (no password).
    pub fn store(&self) -> &str {
        &self.inner.store.0
    }

    /// Runs `work` on the backend's runtime, again on a new connection
    /// while the server cannot be reached (see [`RECONNECT_PATIENCE`]).
    async fn call<T, F, Fut>(&self, op: &str, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: Fn(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, QueueError>> + Send,
    {
        let inner = self.inner.clone();
        let op = op.to_owned();
        self.runtime
            .run(async move {
                let started = Instant::now();
                let mut wait = Duration::from_millis(50);
                let mut said = false;
                loop {
                    match work(inner.clone()).await {
                        Err(error)
                            if is_unreachable(&error) && started.elapsed() < RECONNECT_PATIENCE =>
                        {
                            if !said {
                                tracing::warn!(
                                    "{error}; trying again for up to {RECONNECT_PATIENCE:?}"
                                );
                                said = true;
                            }
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                        Err(error) => return Err(error),
                        Ok(value) => {
                            if said {
                                tracing::info!(
                                    "queue database {}: {op}: the server answers again",
                                    inner.store
                                );
                            }
                            return Ok(value);
                        }
                    }
                }
            })
            .await
    }

    fn forget(&self, id: &str) {
        self.inner.held().remove(id);
    }
}

impl Inner {
    async fn client(&self, op: &str) -> Result<deadpool_postgres::Object, QueueError> {
        self.pool.get().await.ctx(&self.store, op)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one statement that returns the item it changed, if it did.
    async fn item_query(
        &self,
        op: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<QueueItem>, QueueError> {
        let client = self.client(op).await?;
        let row = client.query_opt(sql, params).await.ctx(&self.store, op)?;
        row.map(|row| read_item(&row, &self.store)).transpose()
    }

    /// Runs one statement; how many rows it changed.
    async fn execute(
        &self,
        op: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, QueueError> {
        let client = self.client(op).await?;
        client.execute(sql, params).await.ctx(&self.store, op)
    }

    /// Why a change of item `id` by `agent` matched no row: no such item
    /// (`NotFound`), a state it cannot move from (`WrongState`), or another
    /// holder (`NotHolder`), checked in that order as the embedded queue
    /// does; `None` when it now could (it changed meanwhile).
    async fn why_not(
        &self,
        id: &str,
        action: &'static str,
        allowed: &[ItemState],
        to: Option<ItemState>,
        agent: Option<&str>,
    ) -> Result<QueueError, QueueError> {
        let op = format!("{action} item {id}");
        let client = self.client(&op).await?;
        let row = client
            .query_opt(
                "SELECT state, claimed_by FROM launch_agent_items WHERE id = $1",
                &[&id],
            )
            .await
            .ctx(&self.store, &op)?;
        let Some(row) = row else {
            return Ok(QueueError::NotFound {
                store: self.store.to_string(),
                id: id.to_owned(),
            });
        };
        let state = parse_state(row.get(0), id, &self.store)?;
        let holder: Option<String> = row.get(1);
        if !allowed.contains(&state) {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Ok(QueueError::WrongState {
                store: self.store.to_string(),
                id: id.to_owned(),
                action,
                from: state,
                to: to.unwrap_or(state),
                allowed: names.join(" or "),
            });
        }
        Ok(QueueError::NotHolder {
            store: self.store.to_string(),
            id: id.to_owned(),
            action,
            holder: holder.unwrap_or_else(|| "none".to_owned()),
            agent: agent.unwrap_or("none").to_owned(),
        })
    }

    /// Whether item `id` is running, held by `agent`.
    async fn is_running_for(&self, id: &str, agent: &str) -> Result<bool, QueueError> {
        let op = format!("read item {id}");
        let client = self.client(&op).await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM launch_agent_items
                 WHERE id = $1 AND state = 'running' AND claimed_by = $2",
                &[&id, &agent],
            )
            .await
            .ctx(&self.store, &op)?;
        Ok(row.is_some())
    }

    /// Moves an item `agent` holds in one of `allowed` to a terminal state.
    #[allow(clippy::too_many_arguments)]
    async fn end(
        &self,
        id: &str,
        agent: &str,
        action: &'static str,
        allowed: &[ItemState],
        to: ItemState,
        stage: Option<Stage>,
        message: Option<&str>,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let op = format!("{action} item {id}");
        let allowed_names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        let changed = self
            .execute(
                &op,
                "UPDATE launch_agent_items SET state = $3, stage = $4, message = $5,
                     exit_code = $6, lease_expires_at = NULL, finished_at = now(),
                     updated_at = now()
                 WHERE id = $1 AND claimed_by = $2 AND state = ANY($7)",
                &[
                    &id,
                    &agent,
                    &to.as_str(),
                    &stage.map(Stage::as_str),
                    &message,
                    &exit_code,
                    &allowed_names,
                ],
            )
            .await?;
        if changed == 1 {
            return Ok(());
        }
        Err(self
            .why_not(id, action, allowed, Some(to), Some(agent))
            .await?)
    }
}

/// Reads an item row selected with [`COLUMNS`].
fn read_item(row: &Row, store: &StoreName) -> Result<QueueItem, QueueError> {
    let id: String = row.get(0);
    let stage: Option<String> = row.get(3);
    let stage = stage
        .map(|s| s.parse::<Stage>())
        .transpose()
        .map_err(|e| corrupt(&id, "stage", e, store))?;
    let attempts: i32 = row.get(6);
    let runner: Option<String> = row.get(15);
    let handle: Option<String> = row.get(16);
    Ok(QueueItem {
        state: parse_state(row.get(2), &id, store)?,
        queue: row.get(1),
        stage,
        message: row.get(4),
        exit_code: row.get(5),
        attempts: u32::try_from(attempts).unwrap_or(0),
        spec: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        started_at: row.get(10),
        finished_at: row.get(11),
        claimed_by: row.get(12),
        lease_expires_at: row.get(13),
        stop_requested: row.get(14),
        run_handle: match (runner, handle) {
            (Some(runner), Some(id)) => Some(RunHandle { runner, id }),
            _ => None,
        },
        id,
    })
}

fn parse_state(text: &str, id: &str, store: &StoreName) -> Result<ItemState, QueueError> {
    text.parse().map_err(|e| corrupt(id, "state", e, store))
}

fn corrupt(id: &str, column: &str, value: impl std::fmt::Display, store: &StoreName) -> QueueError {
    QueueError::Corrupt {
        store: store.to_string(),
        id: id.to_owned(),
        detail: format!("bad {column}: {value}"),
    }
}

/// The host part of an agent id (`<hostname>:<pid>:...`).
fn host_of(agent_id: &str) -> &str {
    agent_id.split(':').next().unwrap_or("")
}

fn lease_seconds(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

#[async_trait::async_trait]
impl QueueBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn submit(&self, queue: &str, spec: serde_json::Value) -> Result<String, QueueError> {
        crate::queue::embedded::validate_queue_name(queue)?;
        if !spec.is_object() {
            return Err(QueueError::InvalidSpec {
                kind: json_kind::of(&spec),
            });
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let op = format!("submit item {id} to queue {queue:?}");
        let (queue, id2) = (queue.to_owned(), id.clone());
        self.call(&op.clone(), move |inner| {
            let (queue, spec, id, op) = (queue.clone(), spec.clone(), id2.clone(), op.clone());
            async move {
                // A retry after a lost reply must not add the item twice.
                inner
                    .execute(
                        &op,
                        "INSERT INTO launch_agent_items
                             (id, queue, state, spec, created_at, updated_at)
                         VALUES ($1, $2, 'queued', $3, now(), now())
                         ON CONFLICT (id) DO NOTHING",
                        &[&id, &queue, &spec],
                    )
                    .await
            }
        })
        .await?;
        Ok(id)
    }

    async fn list(&self, queue: Option<&str>) -> Result<Vec<QueueItem>, QueueError> {
        let op = match queue {
            Some(queue) => format!("list queue {queue:?}"),
            None => "list items".to_owned(),
        };
        let queue = queue.map(str::to_owned);
        self.call(&op.clone(), move |inner| {
            let (queue, op) = (queue.clone(), op.clone());
            async move {
                let client = inner.client(&op).await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT {} FROM launch_agent_items
                             WHERE $1::text IS NULL OR queue = $1 ORDER BY seq",
                            *COLUMNS
                        ),
                        &[&queue],
                    )
                    .await
                    .ctx(&inner.store, &op)?;
                rows.iter()
                    .map(|row| read_item(row, &inner.store))
                    .collect()
            }
        })
        .await
    }

    async fn request_stop(&self, id: &str) -> Result<ItemState, QueueError> {
        let op = format!("request stop of item {id}");
        let id = id.to_owned();
        self.call(&op.clone(), move |inner| {
            let (id, op) = (id.clone(), op.clone());
            async move {
                let client = inner.client(&op).await?;
                let row = client
                    .query_opt(
                        "UPDATE launch_agent_items SET stop_requested = true,
                             state = CASE WHEN state = 'queued' THEN 'stopped' ELSE state END,
                             message = CASE WHEN state = 'queued'
                                 THEN 'stopped before it started' ELSE message END,
                             finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
                             updated_at = now()
                         WHERE id = $1 AND state IN ('queued', 'claimed', 'running')
                         RETURNING state",
                        &[&id],
                    )
                    .await
                    .ctx(&inner.store, &op)?;
                let state: String = match row {
                    Some(row) => row.get(0),
                    None => match client
                        .query_opt("SELECT state FROM launch_agent_items WHERE id = $1", &[&id])
                        .await
                        .ctx(&inner.store, &op)?
                    {
                        Some(row) => row.get(0),
                        None => {
                            return Err(QueueError::NotFound {
                                store: inner.store.to_string(),
                                id,
                            });
                        }
                    },
                };
                parse_state(&state, &id, &inner.store)
            }
        })
        .await
    }

    async fn claim_next(
        &self,
        queues: &[String],
        agent_id: &str,
        lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError> {
        let op = format!("claim next item for agent {agent_id}");
        let (queues, agent) = (queues.to_vec(), agent_id.to_owned());
        let sql = format!(
            "UPDATE launch_agent_items SET state = 'claimed', claimed_by = $2,
                 attempts = attempts + 1, lease_expires_at = now() + make_interval(secs => $3),
                 lease_length = make_interval(secs => $3),
                 started_at = NULL, run_runner = NULL, run_handle = NULL, updated_at = now()
             WHERE seq = (SELECT seq FROM launch_agent_items
                          WHERE queue = $1 AND state = 'queued'
                          ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING {}",
            *COLUMNS
        );
        let claimed = self
            .call(&op.clone(), move |inner| {
                let (queues, agent, sql, op) =
                    (queues.clone(), agent.clone(), sql.clone(), op.clone());
                async move {
                    for queue in &queues {
                        let item = inner
                            .item_query(&op, &sql, &[queue, &agent, &lease_seconds(lease)])
                            .await?;
                        if let Some(item) = item {
                            inner.held().insert(item.id.clone());
                            return Ok(Some(item));
                        }
                    }
                    Ok(None)
                }
            })
            .await?;
        Ok(claimed)
    }

    async fn mark_running(&self, id: &str, agent_id: &str) -> Result<(), QueueError> {
        let op = format!("mark item {id} running");
        let (id, agent) = (id.to_owned(), agent_id.to_owned());
        // Set once a try has run: later tries are retries.
        let tried = Arc::new(AtomicBool::new(false));
        self.call(&op.clone(), move |inner| {
            let (id, agent, op, tried) = (id.clone(), agent.clone(), op.clone(), tried.clone());
            async move {
                let is_retry = tried.swap(true, Ordering::SeqCst);
                let changed = inner
                    .execute(
                        &op,
                        "UPDATE launch_agent_items SET state = 'running', started_at = now(),
                             updated_at = now()
                         WHERE id = $1 AND state = 'claimed' AND claimed_by = $2",
                        &[&id, &agent],
                    )
                    .await?;
                if changed == 1 {
                    return Ok(());
                }
                // A retry whose first try committed but lost its reply
                // (the connection dropped) finds its own change.
                if is_retry && inner.is_running_for(&id, &agent).await? {
                    return Ok(());
                }
                Err(inner
                    .why_not(
                        &id,
                        "start",
                        &[ItemState::Claimed],
                        Some(ItemState::Running),
                        Some(&agent),
                    )
                    .await?)
            }
        })
        .await
    }

    async fn set_run_handle(&self, id: &str, handle: &RunHandle) -> Result<(), QueueError> {
        let op = format!("set run handle of item {id}");
        let (id, handle) = (id.to_owned(), handle.clone());
        self.call(&op.clone(), move |inner| {
            let (id, handle, op) = (id.clone(), handle.clone(), op.clone());
            async move {
                let changed = inner
                    .execute(
                        &op,
                        "UPDATE launch_agent_items SET run_runner = $2, run_handle = $3,
                             updated_at = now()
                         WHERE id = $1 AND state IN ('claimed', 'running')",
                        &[&id, &handle.runner, &handle.id],
                    )
                    .await?;
                if changed == 1 {
                    return Ok(());
                }
                let held = [ItemState::Claimed, ItemState::Running];
                Err(inner
                    .why_not(&id, "record a run handle for", &held, None, None)
                    .await?)
            }
        })
        .await
    }

    async fn renew_leases(&self, agent_id: &str, lease: Duration) -> Result<(), QueueError> {
        let op = format!("renew leases of agent {agent_id}");
        let agent = agent_id.to_owned();
        self.call(&op.clone(), move |inner| {
            let (agent, op) = (agent.clone(), op.clone());
            async move {
                let ids: Vec<String> = inner.held().iter().cloned().collect();
                if ids.is_empty() {
                    return Ok(());
                }
                inner
                    .execute(
                        &op,
                        "UPDATE launch_agent_items
                         SET lease_expires_at = now() + make_interval(secs => $2),
                             lease_length = make_interval(secs => $2)
                         WHERE claimed_by = $1 AND state IN ('claimed', 'running')
                             AND id = ANY($3)",
                        &[&agent, &lease_seconds(lease), &ids],
                    )
                    .await
                    .map(drop)
            }
        })
        .await
    }

    async fn finish(
        &self,
        id: &str,
        agent_id: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let op = format!("finish item {id}");
        let (id2, agent) = (id.to_owned(), agent_id.to_owned());
        let result = self
            .call(&op, move |inner| {
                let (id, agent) = (id2.clone(), agent.clone());
                async move {
                    inner
                        .end(
                            &id,
                            &agent,
                            "finish",
                            &[ItemState::Running],
                            ItemState::Finished,
                            None,
                            None,
                            exit_code,
                        )
                        .await
                }
            })
            .await;
        self.settled(id, result)
    }

    async fn fail(
        &self,
        id: &str,
        agent_id: &str,
        stage: Stage,
        message: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let op = format!("fail item {id}");
        let (id2, agent, message) = (id.to_owned(), agent_id.to_owned(), message.to_owned());
        let result = self
            .call(&op, move |inner| {
                let (id, agent, message) = (id2.clone(), agent.clone(), message.clone());
                async move {
                    inner
                        .end(
                            &id,
                            &agent,
                            "fail",
                            &[ItemState::Claimed, ItemState::Running],
                            ItemState::Failed,
                            Some(stage),
                            Some(&message),
                            exit_code,
                        )
                        .await
                }
            })
            .await;
        self.settled(id, result)
    }

    async fn mark_stopped(
        &self,
        id: &str,
        agent_id: &str,
        message: &str,
    ) -> Result<(), QueueError> {
        let op = format!("stop item {id}");
        let (id2, agent, message) = (id.to_owned(), agent_id.to_owned(), message.to_owned());
        let result = self
            .call(&op, move |inner| {
                let (id, agent, message) = (id2.clone(), agent.clone(), message.clone());
                async move {
                    inner
                        .end(
                            &id,
                            &agent,
                            "stop",
                            &[ItemState::Claimed, ItemState::Running],
                            ItemState::Stopped,
                            None,
                            Some(&message),
                            None,
                        )
                        .await
                }
            })
            .await;
        self.settled(id, result)
    }

    async fn release(&self, id: &str, agent_id: &str) -> Result<(), QueueError> {
        let op = format!("release item {id}");
        let (id2, agent) = (id.to_owned(), agent_id.to_owned());
        let result = self
            .call(&op.clone(), move |inner| {
                let (id, agent, op) = (id2.clone(), agent.clone(), op.clone());
                async move {
                    let stopped =
                        format!("stopped on request; agent {agent} handed it back unfinished");
                    let queued = format!("handed back unfinished by agent {agent}");
                    let changed = inner
                        .execute(
                            &op,
                            "UPDATE launch_agent_items SET
                                 state = CASE WHEN stop_requested THEN 'stopped' ELSE 'queued' END,
                                 message = CASE WHEN stop_requested THEN $3 ELSE $4 END,
                                 attempts = GREATEST(attempts - 1, 0),
                                 claimed_by = CASE WHEN stop_requested THEN claimed_by END,
                                 lease_expires_at = NULL,
                                 started_at = CASE WHEN stop_requested THEN started_at END,
                                 run_runner = CASE WHEN stop_requested THEN run_runner END,
                                 run_handle = CASE WHEN stop_requested THEN run_handle END,
                                 finished_at = CASE WHEN stop_requested THEN now() END,
                                 updated_at = now()
                             WHERE id = $1 AND claimed_by = $2
                                 AND state IN ('claimed', 'running')",
                            &[&id, &agent, &stopped, &queued],
                        )
                        .await?;
                    if changed == 1 {
                        return Ok(());
                    }
                    let held = [ItemState::Claimed, ItemState::Running];
                    Err(inner
                        .why_not(&id, "release", &held, Some(ItemState::Queued), Some(&agent))
                        .await?)
                }
            })
            .await;
        self.settled(id, result)
    }

    async fn stop_requested(&self, id: &str) -> Result<bool, QueueError> {
        let op = format!("read item {id}");
        let id = id.to_owned();
        self.call(&op.clone(), move |inner| {
            let (id, op) = (id.clone(), op.clone());
            async move {
                let client = inner.client(&op).await?;
                let row = client
                    .query_opt(
                        "SELECT stop_requested FROM launch_agent_items WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .ctx(&inner.store, &op)?;
                Ok(row.is_some_and(|row| row.get(0)))
            }
        })
        .await
    }

    async fn reclaim_abandoned(
        &self,
        _holder_is_dead: Arc<dyn for<'a> Fn(&'a str) -> bool + Send + Sync>,
        max_attempts: u32,
    ) -> Result<Vec<Reclaimed>, QueueError> {
        let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        self.call("reclaim abandoned items", move |inner| async move {
            reclaim(&inner, max).await
        })
        .await
    }

    async fn has_queued(&self, queues: &[String]) -> Result<bool, QueueError> {
        let op = "look for queued items";
        let queues = queues.to_vec();
        self.call(op, move |inner| {
            let queues = queues.clone();
            async move {
                let client = inner.client(op).await?;
                let row = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM launch_agent_items
                                        WHERE state = 'queued' AND queue = ANY($1))",
                        &[&queues],
                    )
                    .await
                    .ctx(&inner.store, op)?;
                Ok(row.get(0))
            }
        })
        .await
    }

    fn idle_wait(&self, _empty_polls: u32) -> Duration {
        IDLE_FALLBACK
    }

    fn wake_on_new_work(&self, waker: Arc<Notify>) {
        let mut listening = self
            .inner
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *listening {
            return;
        }
        *listening = true;
        let inner = &self.inner;
        self.runtime.spawn(listen::listen(
            inner.config.clone(),
            inner.tls.clone(),
            inner.store.clone(),
            waker,
        ));
    }
}

impl PostgresBackend {
    /// After an outcome or a hand-back: the item is no longer this
    /// process's to renew once it is recorded or someone else's.
    fn settled(&self, id: &str, result: Result<(), QueueError>) -> Result<(), QueueError> {
        match &result {
            Ok(()) => self.forget(id),
            Err(error) if error.is_moot() => self.forget(id),
            Err(_) => {}
        }
        result
    }
}

/// [`QueueBackend::reclaim_abandoned`] in one transaction: expired leases
/// only (see the module doc).
async fn reclaim(inner: &Inner, max_attempts: i32) -> Result<Vec<Reclaimed>, QueueError> {
    let op = "reclaim abandoned items";
    let mut client = inner.client(op).await?;
    let tx = client.transaction().await.ctx(&inner.store, op)?;
    let rows = tx
        .query(
            "SELECT id, claimed_by, run_runner, run_handle, attempts, stop_requested
             FROM launch_agent_items
             WHERE state IN ('claimed', 'running')
                 AND (lease_expires_at IS NULL OR lease_expires_at < now())
                 AND (lease_length IS NULL
                      OR pg_postmaster_start_time() + lease_length < now())
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .ctx(&inner.store, op)?;
    let reason = "stopped renewing its lease";
    let mut reclaimed = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        let holder: String = row
            .get::<_, Option<String>>(1)
            .unwrap_or_else(|| "unknown".to_owned());
        let handle = match (
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3),
        ) {
            (Some(runner), Some(id)) => Some(RunHandle { runner, id }),
            _ => None,
        };
        let attempts: i32 = row.get(4);
        let stop_requested: bool = row.get(5);
        let item_op = format!("reclaim item {id} from agent {holder}");
        let new_state = if stop_requested {
            let message = format!("stopped on request; agent {holder} {reason} before stopping it");
            tx.execute(
                "UPDATE launch_agent_items SET state = 'stopped', message = $2,
                     lease_expires_at = NULL, finished_at = now(), updated_at = now()
                 WHERE id = $1",
                &[&id, &message],
            )
            .await
            .ctx(&inner.store, &item_op)?;
            ItemState::Stopped
        } else if attempts < max_attempts {
            let message = format!(
                "returned to the queue: agent {holder} {reason} (attempt {attempts} of {max_attempts})"
            );
            tx.execute(
                "UPDATE launch_agent_items SET state = 'queued', message = $2, claimed_by = NULL,
                     lease_expires_at = NULL, started_at = NULL, run_runner = NULL,
                     run_handle = NULL, updated_at = now()
                 WHERE id = $1",
                &[&id, &message],
            )
            .await
            .ctx(&inner.store, &item_op)?;
            ItemState::Queued
        } else {
            let times = if attempts == 1 { "time" } else { "times" };
            let message = format!(
                "abandoned {attempts} {times} by agents that died (last: agent {holder}, which \
                 {reason}); giving up after {max_attempts} attempts"
            );
            tx.execute(
                "UPDATE launch_agent_items SET state = 'failed', stage = 'agent', message = $2,
                     lease_expires_at = NULL, finished_at = now(), updated_at = now()
                 WHERE id = $1",
                &[&id, &message],
            )
            .await
            .ctx(&inner.store, &item_op)?;
            ItemState::Failed
        };
        let run_handle = handle.filter(|_| host_of(&holder) == inner.hostname);
        reclaimed.push(Reclaimed {
            id,
            previous_holder: holder,
            run_handle,
            new_state,
        });
    }
    tx.commit().await.ctx(&inner.store, op)?;
    for item in &reclaimed {
        inner.held().remove(&item.id);
    }
    Ok(reclaimed)
}
