//! Which backend serves the queue, and opening it: the agent (`run`) and
//! the CLI commands (`submit`, `queue list`, `queue stop`) build their
//! queue the same way.
//!
//! | `queue_backend:` | backend | needs |
//! |---|---|---|
//! | `embedded` (default) | [`EmbeddedBackend`] | the state dir |
//! | `wandb` | [`WandbBackend`] | [`WandbSettings`]: `WANDB_BASE_URL`, `WANDB_API_KEY` or `~/.netrc`, the entity and queues |
//! | `postgres` | [`PostgresBackend`] | [`PostgresSettings`]: the URL, from the secret `postgres.url-secret` names or `DATABASE_URL` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::embedded::{EmbeddedBackend, EmbeddedQueue};
use super::postgres::{PostgresBackend, PostgresSettings, UrlSource};
use super::wandb::{WandbBackend, WandbSettings};
use super::{QueueBackend, QueueError};
use crate::config::{self, LaunchConfig};
use crate::wandb::ApiSettings;

/// A queue backend and what it needs to open.
#[derive(Clone, Debug)]
pub enum BackendSettings {
    /// The embedded queue in this state directory.
    Embedded {
        /// The state directory (`queue.sqlite3` goes in it).
        state_dir: PathBuf,
    },
    /// The launch queues of a W&B server.
    Wandb(Box<WandbSettings>),
    /// A queue in a PostgreSQL database.
    Postgres(PostgresSettings),
}

impl BackendSettings {
    /// The embedded queue in `state_dir` (what the CLI commands use: they
    /// read no config).
    pub fn embedded(state_dir: &Path) -> Self {
        BackendSettings::Embedded {
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The backend `config` selects (`queue_backend`), with the state dir
    /// `state_dir`; for W&B, the server and key come from the environment
    /// and the entity, queues and `max_jobs` from the config.
    pub fn from_config(config: &LaunchConfig, state_dir: &Path) -> Self {
        match config.queue_backend {
            config::QueueBackend::Embedded => BackendSettings::embedded(state_dir),
            config::QueueBackend::Wandb => {
                let mut settings =
                    WandbSettings::from_env(config.entity.clone(), config.queue_names());
                settings.max_jobs = config.max_jobs.value;
                settings.agent_config = serde_json::json!({
                    "queues": config.queue_names(),
                    "entity": config.entity,
                    "max_jobs": config.max_jobs.value,
                    "environment": config.environment.as_ref().map(|e| e.kind.value.clone()),
                    "registry": config.registry.as_ref().map(|r| r.kind.value.clone()),
                    "builder": config.builder.as_ref().and_then(|b| b.kind().map(str::to_string)),
                });
                BackendSettings::Wandb(Box::new(settings))
            }
            config::QueueBackend::Postgres => {
                let url = match &config.postgres {
                    Some(block) => match config.secrets.get(&block.url_secret) {
                        Some(source) => UrlSource::Secret {
                            name: block.url_secret.clone(),
                            source: source.clone(),
                        },
                        // The config's validation refuses this; say so at
                        // open if it got here anyway.
                        None => UrlSource::Secret {
                            name: block.url_secret.clone(),
                            source: config::SecretSource::Env(String::new()),
                        },
                    },
                    None => UrlSource::DatabaseUrl,
                };
                BackendSettings::Postgres(PostgresSettings { url })
            }
        }
    }

    /// The backend's name, as [`QueueBackend::name`] gives it.
    pub fn name(&self) -> &'static str {
        match self {
            BackendSettings::Embedded { .. } => "embedded",
            BackendSettings::Wandb(_) => "wandb",
            BackendSettings::Postgres(_) => "postgres",
        }
    }

    /// The W&B API the backend talks to, if it is a W&B backend (the W&B
    /// job-artifact source fetches with the same server and key).
    pub fn wandb_api(&self) -> Option<&ApiSettings> {
        match self {
            BackendSettings::Embedded { .. } | BackendSettings::Postgres(_) => None,
            BackendSettings::Wandb(settings) => Some(&settings.api),
        }
    }
}

/// Opens the backend `settings` describe: the embedded queue's database
/// (created as needed), or a W&B server (the key checked, the agent
/// registered; see [`WandbBackend::connect`]).
pub async fn open(settings: &BackendSettings) -> Result<Arc<dyn QueueBackend>, QueueError> {
    Ok(match settings {
        BackendSettings::Embedded { state_dir } => {
            let state_dir = state_dir.clone();
            let queue = tokio::task::spawn_blocking(move || EmbeddedQueue::open(&state_dir))
                .await
                .map_err(|join| QueueError::Interrupted(join.to_string()))??;
            Arc::new(EmbeddedBackend::new(Arc::new(queue)))
        }
        BackendSettings::Wandb(settings) => {
            Arc::new(WandbBackend::connect(settings.as_ref().clone()).await?)
        }
        BackendSettings::Postgres(settings) => Arc::new(PostgresBackend::connect(settings).await?),
    })
}

/// Opens the backend `settings` describe for reading (`queue list`): as
/// [`open`], except that an embedded queue whose state dir cannot be
/// written (a read-only mount) is opened read-only, with a warning, instead
/// of failing.
pub async fn open_for_reading(
    settings: &BackendSettings,
) -> Result<Arc<dyn QueueBackend>, QueueError> {
    match settings {
        BackendSettings::Embedded { state_dir } => {
            let state_dir = state_dir.clone();
            let queue =
                tokio::task::spawn_blocking(move || EmbeddedQueue::open_for_reading(&state_dir))
                    .await
                    .map_err(|join| QueueError::Interrupted(join.to_string()))??;
            Ok(Arc::new(EmbeddedBackend::new(Arc::new(queue))))
        }
        BackendSettings::Wandb(_) | BackendSettings::Postgres(_) => open(settings).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> LaunchConfig {
        LaunchConfig::parse(text, Path::new("c.yaml")).unwrap()
    }

    #[test]
    fn the_config_selects_the_backend() {
        let state = Path::new("/tmp/state");
        let embedded = BackendSettings::from_config(&config("queues: [a]\n"), state);
        assert_eq!(embedded.name(), "embedded");
        assert!(embedded.wandb_api().is_none());
        assert!(
            matches!(&embedded, BackendSettings::Embedded { state_dir } if state_dir == state),
            "{embedded:?}"
        );

        let wandb = BackendSettings::from_config(
            &config("queue_backend: wandb\nentity: team\nqueues: [gpu, cpu]\nmax_jobs: 4\n"),
            state,
        );
        assert_eq!(wandb.name(), "wandb");
        assert!(wandb.wandb_api().is_some());
        let BackendSettings::Wandb(settings) = &wandb else {
            panic!("{wandb:?}");
        };
        assert_eq!(settings.entity.as_deref(), Some("team"));
        assert_eq!(settings.queues, ["gpu", "cpu"]);
        assert_eq!(settings.max_jobs, 4);
        assert_eq!(
            settings.agent_config["queues"],
            serde_json::json!(["gpu", "cpu"])
        );

        let postgres = BackendSettings::from_config(
            &config(
                "queue_backend: postgres\npostgres: {url-secret: db}\nsecrets: {db: {env: QUEUE_DB}}\n",
            ),
            state,
        );
        assert_eq!(postgres.name(), "postgres");
        let BackendSettings::Postgres(settings) = &postgres else {
            panic!("{postgres:?}");
        };
        assert!(
            matches!(&settings.url, UrlSource::Secret { name, .. } if name == "db"),
            "{settings:?}"
        );
        let from_env = BackendSettings::from_config(&config("queue_backend: postgres\n"), state);
        assert!(
            matches!(&from_env, BackendSettings::Postgres(s) if matches!(s.url, UrlSource::DatabaseUrl)),
            "{from_env:?}"
        );
    }

    #[test]
    fn a_postgres_block_needs_its_secret_and_the_postgres_backend() {
        let unknown = LaunchConfig::parse(
            "queue_backend: postgres\npostgres: {url-secret: nope}\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("postgres.url-secret") && unknown.contains("nope"),
            "{unknown}"
        );
        let wrong_backend = LaunchConfig::parse(
            "postgres: {url-secret: db}\nsecrets: {db: {env: X}}\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            wrong_backend.contains("queue_backend: postgres"),
            "{wrong_backend}"
        );
    }
}
