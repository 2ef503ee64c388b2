//! The W&B API as the agent uses it, shared by the W&B queue backend
//! ([`crate::queue::wandb`]) and the W&B job-artifact source
//! ([`crate::sources::wandb_job`]).
//!
//! | piece | what |
//! |---|---|
//! | [`ApiSettings`] | the server (`WANDB_BASE_URL`), the API key (`WANDB_API_KEY` or `~/.netrc`), retries, timeouts |
//! | [`Client`] | GraphQL over HTTP: one POST per operation, basic auth user `api`, bounded retries, the key scrubbed from errors |
//! | `operations.json` | the operation texts the real W&B client (0.31.0) sends, as `tests/wandb_fake/extract_operations.py` records them; the client sends exactly these |
//!
//! Transient failures (connection refused or reset, timeouts, HTTP 5xx and
//! 429) are retried with bounded exponential backoff ([`RetryPolicy`]); a
//! refused key (401/403) is not. The API key never appears in an error, a
//! log line or `Debug` output.

mod client;
mod settings;

pub use client::{ApiError, Client};
pub use settings::{ApiKey, ApiSettings, DEFAULT_BASE_URL, RetryPolicy};

#[cfg(test)]
mod tests {
    use super::client::operation;

    #[test]
    fn every_operation_the_agent_sends_is_there() {
        for key in [
            // The queue backend.
            "Viewer",
            "ProjectRunQueues",
            "createLaunchAgent",
            "popFromRunQueue",
            "ackRunQueueItem",
            "failRunQueueItem",
            "updateRunQueueItemWarning",
            "updateLaunchAgent",
            "RunStoppedStatus",
            "LaunchAgent",
            // The job-artifact source.
            "ArtifactMembershipByName",
            "FetchArtifactManifest",
            "GetArtifactMembershipFileUrls",
            "ArtifactByID",
        ] {
            assert!(operation(key).is_ok(), "{key}");
        }
    }
}
