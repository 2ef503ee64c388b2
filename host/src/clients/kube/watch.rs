//! One watch for all jobs: per cluster and namespace, one watch on the
//! agent's Jobs and one on their pods (by the label [`ITEM_LABEL`]), shared
//! by every run there. W&B users' clusters see no polling loop: a run waits
//! for events, never asks.
//!
//! Each watch lists once, then watches from the list's `resourceVersion`,
//! resumes from the last one it saw (events and bookmarks) when the server
//! ends the stream, and lists again when the server answers 410 Gone (its
//! history no longer reaches back that far). After a list, every object is
//! sent again, so a run that missed events sees the current state. A watch
//! ends when no run listens any more.

use super::ITEM_LABEL;
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How long the server keeps one watch request open (it then ends and is
/// resumed from where it was).
const WATCH_SECONDS: u32 = 60;
/// How long a watch goes on after its last run ended, for the next one.
const LINGER: Duration = Duration::from_secs(60);
/// How many events a slow run may fall behind before it re-reads its state.
const CHANNEL: usize = 1024;
/// The first wait after a failed list or watch; doubled up to 30 s.
const RETRY: Duration = Duration::from_millis(500);

/// What a run hears.
#[derive(Clone, Debug)]
pub enum Event {
    /// A Job of the agent's was added or changed (or listed again).
    Job(Arc<Job>),
    /// A Job was deleted.
    JobDeleted(Arc<Job>),
    /// A pod of the agent's was added or changed (or listed again).
    Pod(Arc<Pod>),
    /// A pod was deleted.
    PodDeleted(Arc<Pod>),
}

/// A kubeconfig context (`None`: the inferred cluster) and a namespace.
type Place = (Option<String>, String);

/// The watches running, by place.
type Running = Arc<Mutex<HashMap<Place, Entry>>>;

/// One place's watches: their channel, and the flag that ends both.
#[derive(Debug)]
struct Entry {
    sender: broadcast::Sender<Event>,
    stop: Arc<AtomicBool>,
}

/// The shared watches, by (context, namespace).
#[derive(Debug, Default)]
pub struct Watches {
    running: Running,
}

impl Watches {
    /// Listens to the agent's Jobs and pods in `namespace` of the cluster
    /// of `context`, starting the two watches when none run there.
    pub fn subscribe(
        &self,
        client: &Client,
        context: Option<&str>,
        namespace: &str,
    ) -> broadcast::Receiver<Event> {
        let key = (context.map(str::to_string), namespace.to_string());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = running.get(&key)
            && !entry.stop.load(Ordering::SeqCst)
        {
            return entry.sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(CHANNEL);
        let stop = Arc::new(AtomicBool::new(false));
        running.insert(
            key.clone(),
            Entry {
                sender: sender.clone(),
                stop: stop.clone(),
            },
        );
        let life = |sender| Life {
            running: self.running.clone(),
            key: key.clone(),
            sender,
            stop: stop.clone(),
            idle_since: None,
        };
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(watch_kind(
            jobs,
            life(sender.clone()),
            Event::Job,
            Event::JobDeleted,
        ));
        tokio::spawn(watch_kind(
            pods,
            life(sender),
            Event::Pod,
            Event::PodDeleted,
        ));
        receiver
    }
}

/// When a watch task ends: [`LINGER`] after its last listener left (so
/// that runs one after another share one watch), together with its sibling.
struct Life {
    running: Running,
    key: Place,
    sender: broadcast::Sender<Event>,
    stop: Arc<AtomicBool>,
    idle_since: Option<Instant>,
}

impl Life {
    fn send(&self, event: Event) {
        // Nobody listening right now is fine: the watch lingers.
        let _ = self.sender.send(event);
    }

    fn should_end(&mut self) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            return true;
        }
        if self.sender.receiver_count() > 0 {
            self.idle_since = None;
            return false;
        }
        if self.idle_since.get_or_insert_with(Instant::now).elapsed() < LINGER {
            return false;
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if self.sender.receiver_count() > 0 {
            self.idle_since = None;
            return false;
        }
        self.stop.store(true, Ordering::SeqCst);
        if running
            .get(&self.key)
            .is_some_and(|entry| Arc::ptr_eq(&entry.stop, &self.stop))
        {
            running.remove(&self.key);
        }
        true
    }
}

/// Lists, then watches `api`'s objects labelled [`ITEM_LABEL`] until
/// `life` says to end.
async fn watch_kind<K>(
    api: Api<K>,
    mut life: Life,
    changed: fn(Arc<K>) -> Event,
    deleted: fn(Arc<K>) -> Event,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut retry = RETRY;
    'list: loop {
        if life.should_end() {
            return;
        }
        let listed = match api.list(&ListParams::default().labels(ITEM_LABEL)).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!("kubernetes: listing {}: {error}", api.resource_url());
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut version = listed.metadata.resource_version.clone().unwrap_or_default();
        for item in listed.items {
            life.send(changed(Arc::new(item)));
        }
        loop {
            if life.should_end() {
                return;
            }
            let params = WatchParams::default()
                .labels(ITEM_LABEL)
                .timeout(WATCH_SECONDS);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.code == 410 => continue 'list,
                Err(error) => {
                    tracing::warn!("kubernetes: watching {}: {error}", api.resource_url());
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(30));
                    continue 'list;
                }
            };
            let mut stream = stream.boxed();
            loop {
                let event = match stream.try_next().await {
                    Ok(Some(event)) => event,
                    // The server ended the watch: resume from `version`.
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(
                            "kubernetes: the watch of {} broke: {error}",
                            api.resource_url()
                        );
                        break;
                    }
                };
                retry = RETRY;
                match event {
                    WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                        version = object.meta().resource_version.clone().unwrap_or(version);
                        life.send(changed(Arc::new(object)));
                    }
                    WatchEvent::Deleted(object) => {
                        version = object.meta().resource_version.clone().unwrap_or(version);
                        life.send(deleted(Arc::new(object)));
                    }
                    WatchEvent::Bookmark(bookmark) => {
                        version = bookmark.metadata.resource_version;
                    }
                    WatchEvent::Error(status) if status.code == 410 => {
                        tracing::debug!(
                            "kubernetes: {} expired ({}): listing again",
                            api.resource_url(),
                            status.message
                        );
                        continue 'list;
                    }
                    WatchEvent::Error(status) => {
                        tracing::warn!(
                            "kubernetes: the watch of {} says: {}",
                            api.resource_url(),
                            status.message
                        );
                        tokio::time::sleep(retry).await;
                        continue 'list;
                    }
                }
                if life.should_end() {
                    return;
                }
            }
        }
    }
}
