//! launch-agent: a launch agent for ML jobs whose builders, registries and
//! environments are sandboxed WebAssembly components.
//!
//! The agent takes jobs off launch queues, prepares each through its
//! environment, registry and builder plugins, runs it and reports the
//! outcome to the queue. See `README.md` for the tour and `wit/` for the
//! plugin contract.

#![warn(missing_docs)]

pub mod agent;
pub mod capabilities;
pub mod capped_log;
pub mod clients;
pub mod config;
pub mod config_check;
pub mod deploy;
pub mod input;
pub mod json_kind;
pub mod plugins;
pub mod queue;
pub mod redact;
pub mod runners;
pub mod secret_env;
pub mod sources;
pub mod spec;
pub mod startup;
pub mod state_dir;
pub mod text;
pub mod timeouts;
pub mod wandb;
