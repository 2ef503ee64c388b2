//! The queue's tables and their migrations, versioned and applied under an
//! advisory lock so that agents starting together never race.
//!
//! Every applied version is a row of `launch_agent_migrations`. The tables
//! live in the connection's current schema (its `search_path`), so one
//! database can hold several queues side by side.

use tokio_postgres::Client;

use super::sql::{SqlContext, StoreName};
use crate::queue::QueueError;

/// One step of the schema.
#[derive(Debug)]
pub struct Migration {
    /// Its version: 1, 2, ... in order.
    pub version: i32,
    /// What it does, in a few words.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// The key of the advisory lock migrations run under (any agent of any
/// version takes the same one).
const LOCK_KEY: i64 = 0x6c61_756e_6368_0001; // "launch" + 1

/// Version 1: items in submission order (`seq`), the indexes claims and
/// renewals use, a trigger that keeps terminal items terminal, and one that
/// wakes listening agents whenever an item becomes `queued`: a `NOTIFY` on
/// the queue's channel, `launch_agent_` and 16 hex digits of its schema's
/// md5 ([`CHANNEL_SQL`]), so queues in other schemas do not wake them.
const V1: &str = r#"
CREATE TABLE launch_agent_items (
    seq              bigserial   PRIMARY KEY,
    id               text        NOT NULL UNIQUE,
    queue            text        NOT NULL,
    state            text        NOT NULL CHECK (state IN
                         ('queued', 'claimed', 'running', 'finished', 'failed', 'stopped')),
    stage            text        CHECK (stage IS NULL OR stage IN ('agent', 'build', 'run')),
    message          text,
    exit_code        integer,
    attempts         integer     NOT NULL DEFAULT 0,
    spec             json        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    claimed_by       text,
    lease_expires_at timestamptz,
    lease_length     interval,
    stop_requested   boolean     NOT NULL DEFAULT false,
    run_runner       text,
    run_handle       text
);
CREATE INDEX launch_agent_items_queued ON launch_agent_items (queue, seq) WHERE state = 'queued';
CREATE INDEX launch_agent_items_held ON launch_agent_items (claimed_by)
    WHERE state IN ('claimed', 'running');
CREATE INDEX launch_agent_items_by_queue ON launch_agent_items (queue, seq);
CREATE FUNCTION launch_agent_items_stay_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state IN ('finished', 'failed', 'stopped') AND NEW.state IS DISTINCT FROM OLD.state THEN
        RAISE EXCEPTION 'a finished, failed or stopped queue item cannot change state';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER launch_agent_items_terminal BEFORE UPDATE OF state ON launch_agent_items
    FOR EACH ROW EXECUTE FUNCTION launch_agent_items_stay_terminal();
CREATE FUNCTION launch_agent_channel() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT 'launch_agent_' || left(md5(current_schema()), 16)
$$;
CREATE FUNCTION launch_agent_items_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(launch_agent_channel(), '');
    RETURN NULL;
END $$;
CREATE TRIGGER launch_agent_items_queued AFTER INSERT OR UPDATE OF state ON launch_agent_items
    FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION launch_agent_items_wake();
"#;

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "items, their indexes, terminal states kept, wake-ups on new work",
    sql: V1,
}];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// The query that names the channel a new queued item of this connection's
/// queue is announced on.
pub const CHANNEL_SQL: &str = "SELECT 'launch_agent_' || left(md5(current_schema()), 16)";

const CREATE_LOG: &str = "CREATE TABLE IF NOT EXISTS launch_agent_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The version the database is at (0 when it has no queue yet).
async fn current_version(
    client: &impl tokio_postgres::GenericClient,
    store: &StoreName,
) -> Result<i32, QueueError> {
    let op = "read the schema version";
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('launch_agent_migrations') IS NOT NULL",
            &[],
        )
        .await
        .ctx(store, op)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM launch_agent_migrations",
            &[],
        )
        .await
        .ctx(store, op)?;
    Ok(row.get(0))
}

/// The migrations the database lacks; an error when it is newer than this
/// build.
pub async fn pending(
    client: &Client,
    store: &StoreName,
) -> Result<Vec<&'static Migration>, QueueError> {
    let version = current_version(client, store).await?;
    check_not_newer(version, store)?;
    Ok(MIGRATIONS.iter().filter(|m| m.version > version).collect())
}

fn check_not_newer(version: i32, store: &StoreName) -> Result<(), QueueError> {
    if version > SCHEMA_VERSION {
        return Err(QueueError::SchemaTooNew {
            store: store.to_string(),
            found: version.into(),
            supported: SCHEMA_VERSION.into(),
        });
    }
    Ok(())
}

/// Applies what is missing, in one transaction under the advisory lock: a
/// second agent starting at the same time waits, then finds nothing to do.
/// Returns the versions applied.
pub async fn migrate(client: &mut Client, store: &StoreName) -> Result<Vec<i32>, QueueError> {
    let op = "migrate the schema";
    // Quick path: nothing to do, no lock taken.
    let version = current_version(&*client, store).await?;
    check_not_newer(version, store)?;
    if version == SCHEMA_VERSION {
        return Ok(Vec::new());
    }
    let tx = client.transaction().await.ctx(store, op)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .ctx(store, op)?;
    tx.batch_execute(CREATE_LOG).await.ctx(store, op)?;
    let version = current_version(&tx, store).await?;
    check_not_newer(version, store)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
        let op = format!("apply schema version {}", migration.version);
        tx.batch_execute(migration.sql).await.ctx(store, &op)?;
        tx.execute(
            "INSERT INTO launch_agent_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .ctx(store, &op)?;
        applied.push(migration.version);
    }
    tx.commit().await.ctx(store, op)?;
    Ok(applied)
}
