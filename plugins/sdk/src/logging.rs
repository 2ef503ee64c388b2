//! Logging into the agent's log through the `launch:plugin/log` import.

use crate::Level;

/// Writes one line to the agent's log at `level`.
///
/// The host tags the line with the plugin's name and also writes it to the
/// job's log when the call belongs to a job. Never log a secret.
///
/// Outside WebAssembly (unit tests of a plugin's logic on the build machine)
/// the line goes to stderr instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::common::launch::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs a formatted line at level `trace`: `trace!("read {} bytes", n)`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Trace, &::std::format!($($arg)+))
    };
}

/// Logs a formatted line at level `debug`: `debug!("read {} bytes", n)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs a formatted line at level `info`: `info!("pushed {image}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs a formatted line at level `warn`: `warn!("retrying after {e}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs a formatted line at level `error`: `error!("push failed: {e}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Error, &::std::format!($($arg)+))
    };
}
