//! What plugins may import, one module per capability.
//!
//! Each capability is checked at the host boundary against the plugin's
//! grants, and denies by default:
//!
//! | capability | WIT / WASI interface | granted by |
//! |---|---|---|
//! | logging | `launch:plugin/log` | always (tagged with the plugin's name) |
//! | secrets | `launch:plugin/secrets` | `grants.secrets` |
//! | outbound HTTP | `wasi:http/outgoing-handler` | `grants.hosts` |
//! | environment variables | `wasi:cli/environment` | `grants.env` |
//! | directories | `wasi:filesystem` | `grants.dirs` |
//! | sockets | `wasi:sockets` | never |

pub mod docker;
pub mod http;
pub mod log;
pub mod oci;
pub mod secrets;
pub mod wasi;
