//! The throwaway PostgreSQL server `scripts/services-postgres.sh` starts,
//! and a fresh schema in it per test.
//!
//! Without its env file the PostgreSQL tests are skipped, with a note,
//! except in CI (`CI=true`), where a missing server is a failure.

use std::collections::HashMap;
use std::path::PathBuf;

/// The env file `scripts/services-postgres.sh` writes.
pub fn env_file() -> PathBuf {
    super::services_env::path("LAUNCH_AGENT_POSTGRES_ENV", "launch-agent-postgres.env")
}

/// The env file's values, or `None` (skip) when there is none outside CI.
pub fn env() -> Option<HashMap<String, String>> {
    let path = env_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(super::services_env::parse(&text)),
        Err(error) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !in_ci,
                "cannot read {} ({error}): the PostgreSQL tests need a server; run \
                 `scripts/services-postgres.sh start` first (scripts/test.sh does)",
                path.display()
            );
            eprintln!(
                "note: skipping a PostgreSQL test: no {} (run scripts/services-postgres.sh start)",
                path.display()
            );
            None
        }
    }
}

/// The server's URL (`None`: skip, see [`env`]).
pub fn server_url() -> Option<String> {
    env()?.get("LAUNCH_AGENT_TEST_POSTGRES_URL").cloned()
}

/// A fresh, empty schema on the server, and a URL whose connections use it
/// (`options=-c search_path=...`), so tests do not see each other's items.
pub async fn fresh_schema_url() -> Option<String> {
    let url = server_url()?;
    let schema = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create a schema");
    drop(client);
    let _ = task.await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}
