//! A pod's log, followed as the container writes it (`pods/log` with
//! `follow=true`), handed chunk by chunk to whoever copies it: the
//! `kubernetes` runner into `output.log`, the plugins' Kubernetes capability
//! into the job's log. Both write through a size cap
//! ([`CappedLog`](crate::capped_log::CappedLog)).

use futures_util::AsyncReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use std::time::Duration;

/// How often the log of a container still being created is asked for again.
const NOT_YET: Duration = Duration::from_millis(300);

/// Follows the log of pod `name`'s `container` (its only one when `None`)
/// until the container ends, handing each chunk read to `write`. A
/// container that is still being created (the server answers 400) is asked
/// again every [`NOT_YET`]; any other failure ends the copy with a warning
/// in the agent's log.
pub async fn follow(
    pods: Api<Pod>,
    name: &str,
    container: Option<String>,
    mut write: impl FnMut(&[u8]) + Send,
) {
    let params = LogParams {
        follow: true,
        container,
        ..LogParams::default()
    };
    let mut stream = loop {
        match pods.log_stream(name, &params).await {
            Ok(stream) => break stream,
            Err(kube::Error::Api(status)) if status.code == 400 => {
                tokio::time::sleep(NOT_YET).await;
            }
            Err(error) => {
                tracing::warn!("kubernetes: reading the log of pod {name}: {error}");
                return;
            }
        }
    };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => write(&buffer[..read]),
            Err(error) => {
                tracing::warn!("kubernetes: reading the log of pod {name}: {error}");
                break;
            }
        }
    }
}
