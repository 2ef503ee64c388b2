//! What a Job's and a pod's status say, read the same way by the
//! `kubernetes` runner and the plugins' Kubernetes capability: whether the
//! Job ended (its `Complete`/`Failed` condition, as the Job controller sets
//! it), how a pod's container ended (its `terminated` state), and a client
//! error as one line.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// How a Job ended, by its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// Condition `Complete`.
    Complete,
    /// Condition `Failed`: `reason: message`.
    Failed(String),
}

/// The Job's end, by its conditions; `None` while it runs.
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for condition in conditions {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" => return Some(JobEnd::Complete),
            "Failed" => {
                return Some(JobEnd::Failed(format!(
                    "{}: {}",
                    condition.reason.clone().unwrap_or_default(),
                    condition.message.clone().unwrap_or_default()
                )));
            }
            _ => {}
        }
    }
    None
}

/// How a pod's container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// Its exit code.
    pub exit_code: i32,
    /// The kubelet's reason (`Completed`, `Error`, `OOMKilled`), empty if none.
    pub reason: String,
    /// The termination message (`terminationMessagePath`), empty if none.
    pub message: String,
}

/// How `pod`'s container `container` (its first when `container` is empty
/// or not found) ended, once it did.
pub fn terminated(pod: &Pod, container: &str) -> Option<Terminated> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses
        .iter()
        .find(|s| s.name == container)
        .or_else(|| statuses.first())?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    Some(Terminated {
        exit_code: terminated.exit_code,
        reason: terminated.reason.clone().unwrap_or_default(),
        message: terminated.message.clone().unwrap_or_default(),
    })
}

/// A client error as one line: the server's message when it sent one.
pub fn api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}
