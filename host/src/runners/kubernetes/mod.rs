//! The `kubernetes` runner: runs the job's image as a batch/v1 Job on a
//! Kubernetes cluster, as W&B's agent does, watching instead of polling.
//!
//! A run:
//!
//! 1. reads `resource_args.kubernetes` ([`manifest::KubeArgs`]: a Job, a
//!    partial one or a pod spec, plus `namespace` and `context`), refusing
//!    forbidden and unknown fields with their path (at stage `agent`, in
//!    [`Runner::check_args`]);
//! 2. puts the run's `WANDB_API_KEY` in a Secret (never in the manifest)
//!    and, when the agent's registry holds the image, its login in an image
//!    pull Secret;
//! 3. creates the Job ([`manifest::build_job`]: W&B's defaults, macros,
//!    labels, security context, the job's image, command and environment);
//!    the run handle names the context, namespace and Job;
//! 4. follows it through the namespace's shared watch ([`watch`]): a pod
//!    stuck Pending is a queue warning with the scheduler's or kubelet's
//!    reason as soon as the watch says so, and fails the job after
//!    `runners.kubernetes.pending_timeout`; a running pod's log is streamed
//!    into `output.log`; the Job's `Complete`/`Failed` condition ends the
//!    run, with the exit code of the pod's terminated container, and a pod
//!    condition `DisruptionTarget` is reported as a preemption;
//! 5. on a stop (or the agent's shutdown) deletes the Job with foreground
//!    propagation (its pods get `stopped_run_timeout` to stop), and waits
//!    for it to go;
//! 6. deletes its Secrets (and, when the agent drops the run, its Job). A
//!    finished Job stays `ttlSecondsAfterFinished` (60 s, as W&B) for
//!    `kubectl`, then the cluster removes it.
//!
//! After a crash, [`Runner::clean_up`] deletes the item's Jobs and Secrets
//! (found by the handle, and by the label [`manifest::ITEM_LABEL`] in every
//! namespace the agent may list).
//!
//! | part | module |
//! |---|---|
//! | the run's life: secrets, create, follow, stop, clean up | this one |
//! | the manifest: shapes, defaults, macros, refusals | [`manifest`] |
//! | one watch on Jobs and one on pods per namespace, shared by every run (and the plugins' Kubernetes capability) | [`watch`] (in [`crate::clients::kube`], with the Job and pod status readers and the log follower both use) |
//! | what the operator lets a queue's jobs do | [`policy`] |
//!
//! The cluster is [`crate::clients::kube`]'s: `KUBECONFIG` or
//! `~/.kube/config` (the context `resource_args.kubernetes.context` names,
//! else the current one), else the in-cluster service account.

pub mod manifest;
pub mod policy;

/// The shared watches (in [`crate::clients::kube`], which the plugins'
/// Kubernetes capability shares too).
pub use crate::clients::kube::watch;

use super::policy::PerQueue;
use super::{Control, RunHandle, RunHooks, RunOutcome, RunRequest, Runner};
use crate::capped_log::CappedLog;
use crate::clients::Clients;
use crate::clients::kube::KubeClusters;
use crate::clients::kube::job_state::{JobEnd, api_error, job_end};
use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use manifest::{Fill, ITEM_LABEL, KubeArgs, Macros, label_value};
use policy::KubernetesPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch as control_watch};

/// A run's output log, shared by the tasks that copy its pods' logs.
type SharedLog = Arc<std::sync::Mutex<CappedLog<std::fs::File>>>;
use tokio::time::Instant;
use watch::{Event, Watches};

/// The `resource` it serves.
const NAME: &str = "kubernetes";

/// How long the log of a pod that ended may take to drain into `output.log`.
const DRAIN_AFTER_END: Duration = Duration::from_secs(5);
/// How long a stop waits for the deleted Job to go, past the pods' grace.
const DELETION_WAIT: Duration = Duration::from_secs(30);
/// How long a failed Job's pod events may lag behind the Job's.
const SETTLE: Duration = Duration::from_secs(3);
/// The grace period of pods a clean-up after a crash deletes.
const CLEAN_UP_GRACE: u32 = 10;
/// The field manager the agent writes as.
const FIELD_MANAGER: &str = "launch-agent";

/// The `kubernetes` runner.
#[derive(Clone, Debug)]
pub struct Kubernetes {
    clusters: Arc<KubeClusters>,
    policies: Arc<PerQueue<KubernetesPolicy>>,
    watches: Arc<Watches>,
}

impl Kubernetes {
    /// The runner, on `clients`' clusters, under the operator's `policies`.
    pub fn new(clients: &Clients, policies: Arc<PerQueue<KubernetesPolicy>>) -> Self {
        Kubernetes {
            clusters: clients.kube.clone(),
            policies,
            watches: Arc::new(Watches::default()),
        }
    }
}

/// Where a run's Job is: what its [`RunHandle`] id holds (as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHandle {
    /// The kubeconfig context; `None`: the inferred cluster.
    pub context: Option<String>,
    /// The namespace.
    pub namespace: String,
    /// The Job's name.
    pub job: String,
}

#[async_trait::async_trait]
impl Runner for Kubernetes {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_image(&self) -> bool {
        true
    }

    fn check_args(&self, queue: &str, resource_args: &Value) -> anyhow::Result<()> {
        self.policies
            .for_queue(queue)
            .check_enabled(queue)
            .map_err(anyhow::Error::msg)?;
        KubeArgs::parse(resource_args).map(|_| ())
    }

    async fn run(
        &self,
        request: RunRequest,
        control: control_watch::Receiver<Control>,
        hooks: &dyn RunHooks,
    ) -> anyhow::Result<RunOutcome> {
        let policy = self.policies.for_queue(&request.queue).clone();
        policy
            .check_enabled(&request.queue)
            .map_err(anyhow::Error::msg)?;
        let mut args = KubeArgs::parse(&request.resource_args)?;
        if let Some(defaults) = policy.job_defaults() {
            args.job = manifest::with_defaults(args.job, defaults);
        }
        let cluster = self.clusters.cluster(args.context.as_deref()).await?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| cluster.default_namespace.clone());
        let run = KubeRun {
            client: cluster.client,
            context: args.context.clone(),
            namespace,
            watches: self.watches.clone(),
            pending_timeout: policy.pending_timeout(),
        };
        run.run(&request, &args, control, hooks).await
    }

    async fn clean_up(&self, item_id: &str, handle: Option<&RunHandle>) {
        let handle: Option<JobHandle> = handle
            .filter(|h| h.runner == NAME)
            .and_then(|h| serde_json::from_str(&h.id).ok());
        let context = handle.as_ref().and_then(|h| h.context.clone());
        let cluster = match self.clusters.cluster(context.as_deref()).await {
            Ok(cluster) => cluster,
            Err(error) => {
                // No cluster configured: nothing of this runner can be left.
                tracing::debug!(item = %item_id, "kubernetes: no clean-up: {error:#}");
                return;
            }
        };
        clean_up(
            &cluster.client,
            item_id,
            handle.as_ref(),
            &cluster.default_namespace,
        )
        .await;
    }
}

/// Deletes what a run of `item_id` left: the handle's Job, and every Job and
/// Secret labelled with the item (in every namespace when the agent may list
/// them all, else in the handle's and the default namespace).
pub async fn clean_up(
    client: &kube::Client,
    item_id: &str,
    handle: Option<&JobHandle>,
    default_namespace: &str,
) {
    let delete = DeleteParams::foreground().grace_period(CLEAN_UP_GRACE);
    if let Some(handle) = handle {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &handle.namespace);
        match jobs.delete(&handle.job, &delete).await {
            Ok(_) => {
                tracing::info!(item = %item_id, "kubernetes: deleted Job {}/{} of a run whose agent died", handle.namespace, handle.job)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(item = %item_id, "kubernetes: deleting Job {}/{}: {error}", handle.namespace, handle.job)
            }
        }
    }
    let selector = format!("{ITEM_LABEL}={}", label_value(item_id));
    let mut namespaces = vec![default_namespace.to_string()];
    if let Some(handle) = handle {
        namespaces.push(handle.namespace.clone());
    }
    let params = ListParams::default().labels(&selector);
    let jobs = match Api::<Job>::all(client.clone()).list(&params).await {
        Ok(list) => list.items,
        Err(_) => {
            let mut items = Vec::new();
            for namespace in &namespaces {
                if let Ok(list) = Api::<Job>::namespaced(client.clone(), namespace)
                    .list(&params)
                    .await
                {
                    items.extend(list.items);
                }
            }
            items
        }
    };
    for job in jobs {
        let (Some(namespace), Some(name)) = (job.metadata.namespace, job.metadata.name) else {
            continue;
        };
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match Api::<Job>::namespaced(client.clone(), &namespace)
            .delete(&name, &delete)
            .await
        {
            Ok(_) => {
                tracing::info!(item = %item_id, "kubernetes: deleted Job {namespace}/{name} of a run whose agent died")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(item = %item_id, "kubernetes: deleting Job {namespace}/{name}: {error}")
            }
        }
    }
    let secrets = match Api::<Secret>::all(client.clone()).list(&params).await {
        Ok(list) => list.items,
        Err(_) => {
            let mut items = Vec::new();
            for namespace in &namespaces {
                if let Ok(list) = Api::<Secret>::namespaced(client.clone(), namespace)
                    .list(&params)
                    .await
                {
                    items.extend(list.items);
                }
            }
            items
        }
    };
    for secret in secrets {
        if let (Some(namespace), Some(name)) = (secret.metadata.namespace, secret.metadata.name) {
            let _ = Api::<Secret>::namespaced(client.clone(), &namespace)
                .delete(&name, &DeleteParams::default())
                .await;
        }
    }
}

/// One run on one cluster and namespace.
pub struct KubeRun {
    /// The cluster.
    pub client: kube::Client,
    /// The kubeconfig context it came from (`None`: inferred).
    pub context: Option<String>,
    /// The namespace the Job goes in.
    pub namespace: String,
    /// The shared watches.
    pub watches: Arc<Watches>,
    /// How long a pod may stay Pending.
    pub pending_timeout: Duration,
}

impl KubeRun {
    /// Creates the run's Secrets and Job, follows it to its end (or a
    /// stop), and deletes the Secrets.
    pub async fn run(
        &self,
        request: &RunRequest,
        args: &KubeArgs,
        control: control_watch::Receiver<Control>,
        hooks: &dyn RunHooks,
    ) -> anyhow::Result<RunOutcome> {
        let Some(image) = request.image.clone() else {
            bail!(
                "the job needs an image: name one (`docker.docker_image`) or give it source to build"
            );
        };
        if let Some(parent) = request.log_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // Capped at `max_log_mb`, the cut said in the log, as the other
        // runners' logs are.
        let log = CappedLog::create(&request.log_path, request.log_limit)
            .with_context(|| format!("creating run log {}", request.log_path.display()))?;
        let log = Arc::new(std::sync::Mutex::new(log));
        // Listening before the Job exists: no event of it is missed.
        let events = self
            .watches
            .subscribe(&self.client, self.context.as_deref(), &self.namespace);
        let mut secrets = Vec::new();
        // A run whose future is dropped (the agent gave up on it) leaves no
        // Job or Secret behind.
        let mut guard = CleanUpOnDrop {
            client: self.client.clone(),
            item_id: Some(request.item_id.clone()),
            namespace: self.namespace.clone(),
        };
        let outcome = self
            .create_and_follow(
                request,
                args,
                &image,
                control,
                hooks,
                events,
                log,
                &mut secrets,
            )
            .await;
        guard.item_id = None;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for name in secrets {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    tracing::warn!(item = %request.item_id, "kubernetes: deleting Secret {}/{name}: {error}", self.namespace)
                }
            }
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_and_follow(
        &self,
        request: &RunRequest,
        args: &KubeArgs,
        image: &str,
        control: control_watch::Receiver<Control>,
        hooks: &dyn RunHooks,
        events: broadcast::Receiver<Event>,
        log: SharedLog,
        secrets: &mut Vec<String>,
    ) -> anyhow::Result<RunOutcome> {
        let item = &request.item_id;
        let api_key = request
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == manifest::API_KEY_SECRET_KEY)
            .map(|(_, v)| v.clone());
        let api_key_secret = match api_key {
            Some(key) => {
                let name = manifest::api_key_secret_name(item);
                let data = BTreeMap::from([(manifest::API_KEY_SECRET_KEY.to_string(), key)]);
                self.put_secret(&name, item, "Opaque", data).await?;
                secrets.push(name.clone());
                Some(name)
            }
            None => None,
        };
        // A node pulls the image itself: the registry's login goes with the
        // pod when the agent's registry holds the image.
        let login = match hooks.pull_credentials(image).await {
            Ok(login) => login,
            Err(error) => {
                hooks.warning(&format!(
                    "kubernetes: no registry login for {image} ({error:#}): the cluster pulls it anonymously"
                ));
                None
            }
        };
        let pull_secret = match login {
            Some(login) => {
                let name = manifest::pull_secret_name(item);
                let config = docker_config(image, &login.username, &login.password);
                let data = BTreeMap::from([(".dockerconfigjson".to_string(), config)]);
                self.put_secret(&name, item, "kubernetes.io/dockerconfigjson", data)
                    .await?;
                secrets.push(name.clone());
                Some(name)
            }
            None => None,
        };
        let macros = Macros::from_env(&request.env, image);
        let job = manifest::build_job(
            args,
            &Fill {
                item_id: item,
                image,
                command: &request.command,
                env: &request.env,
                macros: &macros,
                api_key_secret: api_key_secret.as_deref(),
                pull_secret: pull_secret.as_deref(),
                namespace: &self.namespace,
            },
        )?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let created = jobs.create(&params, &job).await.map_err(|e| {
            anyhow!(
                "creating the Job in namespace {}: {}",
                self.namespace,
                api_error(&e)
            )
        })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let uid = created.metadata.uid.clone().unwrap_or_default();
        hooks.log(&format!("run: created Job {}/{name}", self.namespace));
        let handle = JobHandle {
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            job: name.clone(),
        };
        hooks.started(RunHandle {
            runner: NAME.to_string(),
            id: serde_json::to_string(&handle).unwrap_or_default(),
        });
        let mut follow = Follow {
            run: self,
            job: name,
            uid,
            item_label: label_value(item),
            hooks,
            log,
            first_container: job
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            warned: HashSet::new(),
            running: HashSet::new(),
            logging: HashSet::new(),
            log_tasks: Vec::new(),
            pending_since: None,
            pending_reason: None,
            exit: None,
            preempted: None,
        };
        let outcome = follow.follow(events, control, request.stop_grace).await;
        follow.drain_logs().await;
        outcome
    }

    /// Creates Secret `name` (replacing one an earlier attempt left).
    async fn put_secret(
        &self,
        name: &str,
        item: &str,
        kind: &str,
        data: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (ITEM_LABEL.to_string(), label_value(item)),
                    (
                        manifest::AGENT_LABEL.to_string(),
                        manifest::AGENT_LABEL_VALUE.to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some(kind.to_string()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        for attempt in 0..2 {
            match api.create(&params, &secret).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt == 0 => {
                    let _ = api.delete(name, &DeleteParams::default()).await;
                }
                Err(error) => {
                    bail!(
                        "creating Secret {}/{name}: {}",
                        self.namespace,
                        api_error(&error)
                    )
                }
            }
        }
        bail!(
            "creating Secret {}/{name}: it exists and could not be replaced",
            self.namespace
        )
    }
}

/// Deletes an item's Jobs and Secrets on drop unless `item_id` was taken.
struct CleanUpOnDrop {
    client: kube::Client,
    item_id: Option<String>,
    namespace: String,
}

impl Drop for CleanUpOnDrop {
    fn drop(&mut self) {
        let Some(item_id) = self.item_id.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, namespace) = (self.client.clone(), self.namespace.clone());
            runtime.spawn(async move { clean_up(&client, &item_id, None, &namespace).await });
        }
    }
}

/// A `kubernetes.io/dockerconfigjson` document for `image`'s registry.
fn docker_config(image: &str, username: &str, password: &str) -> String {
    use base64::Engine as _;
    let registry = crate::capabilities::docker::ImageRef::parse(image)
        .ok()
        .and_then(|r| r.registry)
        .unwrap_or_else(|| "https://index.docker.io/v1/".to_string());
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    serde_json::json!({
        "auths": { registry: { "username": username, "password": password, "auth": auth } }
    })
    .to_string()
}

/// Following one Job to its end.
struct Follow<'a> {
    run: &'a KubeRun,
    job: String,
    uid: String,
    item_label: String,
    hooks: &'a dyn RunHooks,
    log: SharedLog,
    first_container: String,
    /// The Pending reasons already warned about (once each).
    warned: HashSet<String>,
    running: HashSet<String>,
    logging: HashSet<String>,
    log_tasks: Vec<tokio::task::JoinHandle<()>>,
    pending_since: Option<Instant>,
    pending_reason: Option<String>,
    /// The exit code and reason of the last pod's terminated container.
    exit: Option<(i32, String)>,
    preempted: Option<String>,
}

/// Why following a Job stopped.
enum Ended {
    /// The Job says it ended.
    Job(JobEnd),
    /// The Job is gone (someone else deleted it).
    Deleted(RunOutcome),
}

impl Follow<'_> {
    async fn follow(
        &mut self,
        mut events: broadcast::Receiver<Event>,
        mut control: control_watch::Receiver<Control>,
        stop_grace: Duration,
    ) -> anyhow::Result<RunOutcome> {
        loop {
            let deadline = self
                .pending_since
                .map(|since| since + self.run.pending_timeout);
            let pending_over = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Some(outcome) = self.on_event(event) {
                            return Ok(match outcome {
                                Ended::Job(end) => {
                                    self.settle(&mut events).await;
                                    self.outcome(end).await
                                }
                                Ended::Deleted(outcome) => outcome,
                            });
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(outcome) = self.resync().await? {
                            return Ok(outcome);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        bail!("the watch of namespace {} ended", self.run.namespace)
                    }
                },
                changed = control.changed() => {
                    let wanted = if changed.is_ok() { *control.borrow() } else { Control::HandBack };
                    if wanted == Control::Run {
                        continue;
                    }
                    self.hooks.log(&format!("run: deleting Job {}/{}", self.run.namespace, self.job));
                    self.delete_and_wait(&mut events, stop_grace).await;
                    return Ok(RunOutcome::Stopped);
                }
                () = pending_over => {
                    let seconds = self.run.pending_timeout.as_secs();
                    let reason = self.pending_reason.clone().unwrap_or_else(|| "no reason given".into());
                    self.hooks.log(&format!("run: the pod stayed Pending for {seconds}s: deleting Job {}/{}", self.run.namespace, self.job));
                    self.delete_and_wait(&mut events, Duration::ZERO).await;
                    return Ok(RunOutcome::Failed {
                        exit_code: None,
                        message: format!("the job's pod stayed Pending for more than {seconds}s (runners.kubernetes.pending_timeout): {reason}"),
                    });
                }
            }
        }
    }

    /// Handles one watch event; `Some` when the run ended.
    fn on_event(&mut self, event: Event) -> Option<Ended> {
        match event {
            Event::Job(job) if self.is_ours(&job.metadata) => job_end(&job).map(Ended::Job),
            Event::JobDeleted(job) if self.is_ours(&job.metadata) => {
                Some(Ended::Deleted(RunOutcome::Failed {
                    exit_code: None,
                    message: format!(
                        "Job {}/{} was deleted while it ran (not by this agent)",
                        self.run.namespace, self.job
                    ),
                }))
            }
            // A deleted pod's last state is news too (its exit, a preemption).
            Event::Pod(pod) | Event::PodDeleted(pod) if self.owns(&pod) => {
                self.on_pod(&pod);
                None
            }
            _ => None,
        }
    }

    /// The Job's watch can be ahead of the pods': once the Job failed, the
    /// pod events already on their way are read (a moment at most) so that
    /// its exit code and a preemption are known.
    async fn settle(&mut self, events: &mut broadcast::Receiver<Event>) {
        let deadline = Instant::now() + SETTLE;
        while self.exit.is_none() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(Event::Pod(pod) | Event::PodDeleted(pod))) if self.owns(&pod) => {
                    self.on_pod(&pod)
                }
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return,
            }
        }
    }

    fn is_ours(&self, meta: &ObjectMeta) -> bool {
        meta.uid.as_deref() == Some(self.uid.as_str())
    }

    fn owns(&self, pod: &Pod) -> bool {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ITEM_LABEL))
            .is_some_and(|v| *v == self.item_label)
            && pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == self.uid)
    }

    /// A pod's news: Pending reasons as warnings, the start of its log, its
    /// exit.
    fn on_pod(&mut self, pod: &Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(status) = &pod.status else { return };
        match status.phase.as_deref() {
            Some("Pending") => {
                self.pending_since.get_or_insert_with(Instant::now);
                for (reason, message) in pending_reasons(pod) {
                    let shown = format!("{reason}: {message}");
                    self.pending_reason = Some(shown.clone());
                    if self.warned.insert(reason.clone()) {
                        self.hooks.warning(&format!(
                            "kubernetes: pod {}/{name} is Pending: {shown}",
                            self.run.namespace
                        ));
                    }
                }
            }
            Some("Running") => {
                self.pending_since = None;
                if self.running.insert(name.clone()) {
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    self.hooks.log(&format!(
                        "run: pod {}/{name} running on node {node}",
                        self.run.namespace
                    ));
                }
                self.stream_log(&name);
            }
            Some("Succeeded") | Some("Failed") => {
                self.pending_since = None;
                self.stream_log(&name);
            }
            _ => {}
        }
        if let Some(exit) = self.terminated(pod) {
            self.exit = Some(exit);
        }
        if let Some(disruption) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        {
            self.preempted = Some(format!(
                "{}: {}",
                disruption.reason.clone().unwrap_or_default(),
                disruption.message.clone().unwrap_or_default()
            ));
        }
    }

    /// The exit code and reason of `pod`'s job container, when it ended.
    fn terminated(&self, pod: &Pod) -> Option<(i32, String)> {
        crate::clients::kube::job_state::terminated(pod, &self.first_container)
            .map(|t| (t.exit_code, t.reason))
    }

    /// Starts copying pod `name`'s log into `output.log` (once per pod).
    fn stream_log(&mut self, name: &str) {
        if !self.logging.insert(name.to_string()) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.run.client.clone(), &self.run.namespace);
        let (name, log) = (name.to_string(), self.log.clone());
        let container = self.first_container.clone();
        self.log_tasks.push(tokio::spawn(async move {
            let container = (!container.is_empty()).then_some(container);
            crate::clients::kube::pod_log::follow(pods, &name, container, |chunk| {
                // A capped log never fails a write: past its cap, or after
                // a write error (said once in the agent's log), what comes
                // is read and dropped.
                if let Ok(mut file) = log.lock() {
                    let _ = file.write_all(chunk).and_then(|()| file.flush());
                }
            })
            .await;
        }));
    }

    /// Waits for the logs to end (the pods ended), a few seconds at most.
    async fn drain_logs(&mut self) {
        for task in self.log_tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN_AFTER_END, task).await.is_err() {
                abort.abort();
                tracing::warn!(
                    "the log of a pod did not end with it: the run log may miss its last lines"
                );
            }
        }
    }

    /// How the run ended, once the Job says it did.
    async fn outcome(&mut self, end: JobEnd) -> RunOutcome {
        let message = match end {
            JobEnd::Complete => return RunOutcome::Finished,
            JobEnd::Failed(message) => message,
        };
        if self.exit.is_none() {
            // The Job's watch can be ahead of the pods': read them once.
            let pods: Api<Pod> = Api::namespaced(self.run.client.clone(), &self.run.namespace);
            let selector = format!("{ITEM_LABEL}={}", self.item_label);
            if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                for pod in &list.items {
                    if self.owns(pod) {
                        self.on_pod(pod);
                    }
                }
            }
        }
        let exit_code = self.exit.as_ref().map(|(code, _)| *code);
        let mut text = match &self.exit {
            Some((code, reason)) if reason == "OOMKilled" => format!(
                "the pod's container exited with code {code} (killed for going over its memory limit)"
            ),
            Some((code, _)) => format!("the pod's container exited with code {code}"),
            None => format!("the Job failed: {message}"),
        };
        if let Some(preempted) = &self.preempted {
            text = format!("the pod was preempted ({preempted}); {text}");
        }
        RunOutcome::Failed {
            exit_code,
            message: text,
        }
    }

    /// After events were missed: the Job and its pods as they are now.
    async fn resync(&mut self) -> anyhow::Result<Option<RunOutcome>> {
        let jobs: Api<Job> = Api::namespaced(self.run.client.clone(), &self.run.namespace);
        let Some(job) = jobs.get_opt(&self.job).await? else {
            return Ok(Some(RunOutcome::Failed {
                exit_code: None,
                message: format!("Job {}/{} is gone", self.run.namespace, self.job),
            }));
        };
        let pods: Api<Pod> = Api::namespaced(self.run.client.clone(), &self.run.namespace);
        let selector = format!("{ITEM_LABEL}={}", self.item_label);
        for pod in pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            if self.owns(&pod) {
                self.on_pod(&pod);
            }
        }
        Ok(match job_end(&job) {
            Some(end) => Some(self.outcome(end).await),
            None => None,
        })
    }

    /// Deletes the Job (foreground: its pods first, each given `grace`)
    /// and waits until it is gone.
    async fn delete_and_wait(&mut self, events: &mut broadcast::Receiver<Event>, grace: Duration) {
        let jobs: Api<Job> = Api::namespaced(self.run.client.clone(), &self.run.namespace);
        let params = DeleteParams::foreground()
            .grace_period(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX));
        match jobs.delete(&self.job, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(error) => {
                self.hooks.warning(&format!(
                    "kubernetes: deleting Job {}/{}: {}",
                    self.run.namespace,
                    self.job,
                    api_error(&error)
                ));
                return;
            }
        }
        let gone = async {
            loop {
                match events.recv().await {
                    Ok(Event::JobDeleted(job)) if self.is_ours(&job.metadata) => return,
                    Ok(Event::Pod(pod)) if self.owns(&pod) => self.on_pod(&pod),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if matches!(jobs.get_opt(&self.job).await, Ok(None)) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        if tokio::time::timeout(grace + DELETION_WAIT, gone)
            .await
            .is_err()
        {
            self.hooks.warning(&format!(
                "kubernetes: Job {}/{} was not gone {}s after its deletion",
                self.run.namespace,
                self.job,
                (grace + DELETION_WAIT).as_secs()
            ));
        }
    }
}

/// Why a Pending pod does not run: the scheduler's `PodScheduled=False`
/// reason, and the kubelet's waiting reasons (image pulls, missing config),
/// as (reason, message).
pub fn pending_reasons(pod: &Pod) -> Vec<(String, String)> {
    let mut reasons = Vec::new();
    let Some(status) = &pod.status else {
        return reasons;
    };
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled" && condition.status == "False" {
            reasons.push((
                condition
                    .reason
                    .clone()
                    .unwrap_or_else(|| "Unschedulable".into()),
                condition.message.clone().unwrap_or_default(),
            ));
        }
    }
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if matches!(
                reason.as_str(),
                "" | "ContainerCreating" | "PodInitializing"
            ) {
                continue;
            }
            reasons.push((reason, waiting.message.clone().unwrap_or_default()));
        }
    }
    reasons
}
