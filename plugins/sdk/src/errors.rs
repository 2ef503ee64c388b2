//! Constructors for [`PluginError`], one per stage.

use crate::{PluginError, Stage};

impl PluginError {
    /// A failure at `stage` with `message`, not retryable.
    ///
    /// `message` is shown to the user on the queue item: say what went wrong
    /// and what to do about it, and never include a secret.
    pub fn new(stage: Stage, message: impl Into<String>) -> Self {
        PluginError {
            stage,
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure while setting the job up (stage `agent`): environment
    /// checks, credentials, registries. Not retryable.
    pub fn agent(message: impl Into<String>) -> Self {
        Self::new(Stage::Agent, message)
    }

    /// A failure while building or pushing the job's image (stage `build`).
    /// Not retryable.
    pub fn build(message: impl Into<String>) -> Self {
        Self::new(Stage::Build, message)
    }

    /// A failure while running the job (stage `run`). Not retryable.
    pub fn run(message: impl Into<String>) -> Self {
        Self::new(Stage::Run, message)
    }

    /// Marks the failure as retryable: the same call could succeed later
    /// (a timeout, a 503), as opposed to one that needs a fix.
    #[must_use]
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_stage_and_retryable() {
        let e = PluginError::build("no image");
        assert_eq!(e.stage, Stage::Build);
        assert_eq!(e.message, "no image");
        assert!(!e.retryable);
        assert!(PluginError::agent("x").retryable().retryable);
        assert_eq!(PluginError::run("x").stage, Stage::Run);
    }
}
