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

use super::manifest::ITEM_LABEL;
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How long the server keeps one watch request open (it then ends and is
/// resumed from where it was).
const WATCH_SECONDS: u32 = 60;
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

/// The shared watches, by (context, namespace).
#[derive(Debug, Default)]
pub struct Watches {
    senders: Mutex<HashMap<Place, broadcast::Sender<Event>>>,
}

impl Watches {
    /// Listens to the agent's Jobs and pods in `namespace` of the cluster
    /// of `context`, starting the two watches when nobody listens yet.
    pub fn subscribe(
        &self,
        client: &Client,
        context: Option<&str>,
        namespace: &str,
    ) -> broadcast::Receiver<Event> {
        let key = (context.map(str::to_string), namespace.to_string());
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = senders.get(&key)
            && sender.receiver_count() > 0
        {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(CHANNEL);
        senders.insert(key, sender.clone());
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(watch_kind(
            jobs,
            sender.clone(),
            Event::Job,
            Event::JobDeleted,
        ));
        tokio::spawn(watch_kind(pods, sender, Event::Pod, Event::PodDeleted));
        receiver
    }
}

/// Lists, then watches `api`'s objects labelled [`ITEM_LABEL`] until
/// nobody listens on `sender`.
async fn watch_kind<K>(
    api: Api<K>,
    sender: broadcast::Sender<Event>,
    changed: fn(Arc<K>) -> Event,
    deleted: fn(Arc<K>) -> Event,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut retry = RETRY;
    'list: loop {
        if sender.receiver_count() == 0 {
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
            let _ = sender.send(changed(Arc::new(item)));
        }
        loop {
            if sender.receiver_count() == 0 {
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
                let sent = match event {
                    WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                        version = object.meta().resource_version.clone().unwrap_or(version);
                        sender.send(changed(Arc::new(object)))
                    }
                    WatchEvent::Deleted(object) => {
                        version = object.meta().resource_version.clone().unwrap_or(version);
                        sender.send(deleted(Arc::new(object)))
                    }
                    WatchEvent::Bookmark(bookmark) => {
                        version = bookmark.metadata.resource_version;
                        Ok(0)
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
                };
                if sent.is_err() {
                    // Nobody listens any more.
                    return;
                }
            }
        }
    }
}
