//! The plugins' Kubernetes capability (`launch:plugin/kubernetes`), on the
//! FAKE cluster of `scripts/services-kube.sh start` (a fake API server
//! whose kubelet runs pods on the local Docker engine), through the test
//! plugin `kube-user` (tests/plugins/kube-user): grants by namespace,
//! refusals, labels, the clean-up when a call ends, and a Job that really
//! runs with its log in the job's log.
//!
//! The capability connects as the agent does (`kube::Config::infer`), so
//! this binary points `KUBECONFIG` at the fake's kubeconfig before any
//! test runs.

mod common;
use common::docker::services;
use common::kube::{client, fake, namespace, requests};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams};
use launch_agent::capabilities::state::HostCall;
use launch_agent::plugins::LoadedPlugin;
use launch_agent::plugins::bindings::Job as QueueJob;
use launch_agent::plugins::loaded::{BuildPlan, BuildRequest};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// The labels the capability puts on what a plugin creates.
const ITEM_LABEL: &str = "launch-agent.item";
const PLUGIN_LABEL: &str = "launch-agent.plugin";

/// Points the capability at the fake (once, before any test connects).
fn use_the_fake() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this first, and the Once holds the others
        // until it is done; nothing in this binary reads the environment
        // concurrently.
        unsafe { std::env::set_var("KUBECONFIG", &fake().kubeconfig) };
    });
}

/// Loads `kube-user` with `grants` (a flow mapping, `{}` for none).
async fn kube_user(dir: &Path, grants: &str) -> Arc<LoadedPlugin> {
    use_the_fake();
    let wasm = common::test_plugin("kube-user");
    let yaml = format!(
        "plugins:\n  kube-user:\n    path: {}\n    grants: {grants}\n",
        wasm.display()
    );
    let config =
        launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).expect("config");
    let mut host = launch_agent::plugins::PluginHost::new(&dir.join("cache"), 128).unwrap();
    host.load(
        "kube-user",
        &wasm,
        &config.plugins["kube-user"],
        &config.secrets,
    )
    .await
    .expect("load kube-user")
}

/// A job's log, as lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn sink(&self) -> launch_agent::capabilities::log::LogSink {
        let lines = self.0.clone();
        Arc::new(launch_agent::capabilities::log::JobLog::new(
            Box::new(move |l: &str| lines.lock().unwrap().push(l.to_string())),
            Box::new(|_| {}),
        ))
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// Calls `build` of `plugin` for queue item `item` with `settings`: the
/// outcome's image (what the plugin reports), or the error's text.
async fn build(
    plugin: &LoadedPlugin,
    item: &str,
    settings: Value,
    log: Option<&Lines>,
) -> Result<String, String> {
    let request = BuildRequest {
        job: QueueJob {
            id: item.into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: settings.to_string(),
        destination: String::new(),
        source_dir: None,
        source_id: item.into(),
    };
    let plan = BuildPlan {
        image_uri: "kube-user/x:latest".into(),
        dockerfile: String::new(),
        dockerfile_origin: "test".into(),
    };
    plugin
        .build(&request, &plan, None, None, log.map(Lines::sink))
        .await
        .map(|o| o.image_uri)
        .map_err(|e| e.to_string())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The names of the `K`s in `namespace` labelled `selector`.
async fn names<K>(client: &kube::Client, namespace: &str, selector: &str) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

/// Everything labelled `selector` in `namespace`: Jobs, ConfigMaps,
/// Secrets and Pods, by kind.
async fn everything(client: &kube::Client, namespace: &str, selector: &str) -> Vec<String> {
    let mut all = Vec::new();
    for (kind, found) in [
        ("Job", names::<Job>(client, namespace, selector).await),
        (
            "ConfigMap",
            names::<ConfigMap>(client, namespace, selector).await,
        ),
        ("Secret", names::<Secret>(client, namespace, selector).await),
        ("Pod", names::<Pod>(client, namespace, selector).await),
    ] {
        all.extend(found.into_iter().map(|n| format!("{kind} {n}")));
    }
    all
}

#[tokio::test]
async fn a_plugin_granted_namespace_a_creates_there_and_not_in_b() {
    let client = client().await;
    let a = namespace(&client, "kubecap-a").await;
    let b = namespace(&client, "kubecap-b").await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = kube_user(
        dir.path(),
        &format!("{{ kubernetes: {{ namespaces: [{a}] }} }}"),
    )
    .await;
    let record = plugin.record_host_calls();
    let config_map = |ns: &str| {
        json!({"mode": "create", "manifest": {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"generateName": "cm-", "namespace": ns}, "data": {"k": "v"}}})
    };

    let refused = build(&plugin, "item-b", config_map(&b), None)
        .await
        .unwrap_err();
    assert!(
        refused.contains("create: denied=true")
            && refused.contains(&format!("namespace \"{b}\" is not granted"))
            && refused.contains(&format!("grants.kubernetes.namespaces are [\"{a}\"]")),
        "{refused}"
    );
    assert!(
        names::<ConfigMap>(&client, &b, PLUGIN_LABEL)
            .await
            .is_empty(),
        "nothing was created in {b}"
    );
    assert!(
        !requests().iter().any(|r| r["method"] == "POST"
            && r["path"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("/namespaces/{b}/"))),
        "nothing was even sent for {b}"
    );

    let created = build(&plugin, "item-a", config_map(&a), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        created.starts_with(&format!("created ConfigMap {a}/cm-")),
        "{created}"
    );
    // The plugin left it: the host deleted it when the call ended.
    assert!(
        everything(&client, &a, &format!("{ITEM_LABEL}=item-a"))
            .await
            .is_empty(),
        "left behind in {a}"
    );

    // Another kind, or a manifest without a namespace (the first granted).
    let deployment = json!({"mode": "create", "manifest": {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": a}}});
    let refused = build(&plugin, "item-a", deployment, None)
        .await
        .unwrap_err();
    assert!(
        refused.contains("denied=true") && refused.contains("may not create a Deployment"),
        "{refused}"
    );
    let no_namespace = json!({"mode": "create", "manifest": {"kind": "Secret",
        "metadata": {"generateName": "s-"}, "stringData": {"k": "v"}}});
    let created = build(&plugin, "item-a", no_namespace, None).await.unwrap();
    assert!(
        created.starts_with(&format!("created Secret {a}/s-")),
        "{created}"
    );

    let calls = record.calls();
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, HostCall::Refused { grant, message }
            if grant == "grants.kubernetes" && message.contains(&b))),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| matches!(c, HostCall::Asked { what, answer }
            if what.contains("create a ConfigMap") && answer.contains(&format!("created ConfigMap {a}/")))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn what_a_plugin_left_is_deleted_when_its_call_ends() {
    let client = client().await;
    let ns = namespace(&client, "kubecap-left").await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = kube_user(
        dir.path(),
        &format!("{{ kubernetes: {{ namespaces: [{ns}] }} }}"),
    )
    .await;
    let item = unique("left");
    let selector = format!("{ITEM_LABEL}={item}");
    let settings = json!({"mode": "leave", "namespace": ns, "image": services().base_image});
    let said = build(&plugin, &item, settings, None).await.unwrap();
    assert_eq!(said, "left 3");
    // Deleted when the call ended: Jobs, ConfigMaps and Secrets at once,
    // the Job's pod once its container stopped.
    let left: Vec<String> = everything(&client, &ns, &selector)
        .await
        .into_iter()
        .filter(|n| !n.starts_with("Pod "))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let left = everything(&client, &ns, &selector).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pods left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Each was labelled with the item and the plugin (a Job's pods too),
    // as the fake received it.
    let mut kinds = Vec::new();
    for request in requests() {
        let path = request["path"].as_str().unwrap_or_default();
        if request["method"] != "POST" || !path.contains(&format!("/namespaces/{ns}/")) {
            continue;
        }
        let body = &request["body"];
        let labels = &body["metadata"]["labels"];
        assert_eq!(labels[ITEM_LABEL], item.as_str(), "{body:#}");
        assert_eq!(labels[PLUGIN_LABEL], "kube-user", "{body:#}");
        if body["kind"] == "Job" {
            let pod_labels = &body["spec"]["template"]["metadata"]["labels"];
            assert_eq!(pod_labels[ITEM_LABEL], item.as_str(), "{body:#}");
        }
        kinds.push(body["kind"].as_str().unwrap_or_default().to_string());
    }
    for kind in ["ConfigMap", "Secret", "Job"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} created: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn a_job_runs_its_log_reaches_the_jobs_log_and_its_exit_is_reported() {
    let client = client().await;
    let ns = namespace(&client, "kubecap-run").await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = kube_user(
        dir.path(),
        &format!("{{ kubernetes: {{ namespaces: [{ns}] }} }}"),
    )
    .await;
    let image = services().base_image.clone();

    let log = Lines::default();
    let item = unique("run-ok");
    let said = build(
        &plugin,
        &item,
        json!({"mode": "run", "namespace": ns, "image": image,
            "script": "echo step one; echo step two", "tail": 1}),
        Some(&log),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log.text()));
    assert_eq!(said, "succeeded | step two");
    let text = log.text();
    assert!(
        text.contains("[kube-user pod] step one") && text.contains("[kube-user pod] step two"),
        "{text}"
    );
    assert!(
        text.contains(&format!("kubernetes: created Job {ns}/kube-user-")),
        "{text}"
    );

    let log = Lines::default();
    let item = unique("run-fail");
    let failed = build(
        &plugin,
        &item,
        json!({"mode": "run", "namespace": ns, "image": image,
            "script": "echo building; echo 'error: no such file Dockerfile' >&2; exit 3", "tail": 2}),
        Some(&log),
    )
    .await
    .unwrap_err();
    // The last two lines, whichever order the engine interleaved the
    // pod's stdout and stderr in.
    assert!(
        failed.contains("failed exit=3 reason=Error | ")
            && failed.contains("building")
            && failed.contains("error: no such file Dockerfile"),
        "{failed}\n{}",
        log.text()
    );
    assert!(
        log.text().contains("error: no such file Dockerfile"),
        "{}",
        log.text()
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    while !everything(&client, &ns, &format!("{ITEM_LABEL}={item}"))
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the failed Job's objects stayed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every manifest passed kubernetes-validate --strict (1.30 and 1.33).
    for request in requests() {
        let path = request["path"].as_str().unwrap_or_default();
        if path.contains(&format!("/namespaces/{ns}/")) {
            assert!(
                request["error"]["code"] != 422,
                "the fake refused a manifest: {request:#}"
            );
        }
    }
}

#[tokio::test]
async fn without_the_grant_every_function_is_refused() {
    let client = client().await;
    let ns = namespace(&client, "kubecap-none").await;
    let dir = tempfile::tempdir().unwrap();
    for grants in ["{}", "{ kubernetes: { namespaces: [elsewhere] } }"] {
        let plugin = kube_user(dir.path(), grants).await;
        let said = build(
            &plugin,
            "none",
            json!({"mode": "every", "namespace": ns}),
            None,
        )
        .await
        .unwrap_err();
        for function in ["create", "wait-job", "job-log", "delete"] {
            let line = said
                .lines()
                .find(|l| l.contains(&format!("{function}: ")))
                .unwrap_or_else(|| panic!("no {function} line: {said}"));
            assert!(
                line.contains("denied=true") && line.contains("grants.kubernetes"),
                "{grants}: {line}"
            );
        }
    }
    // Granted, the made-up Job is still refused: not the call's own.
    let plugin = kube_user(
        dir.path(),
        &format!("{{ kubernetes: {{ namespaces: [{ns}] }} }}"),
    )
    .await;
    let said = build(
        &plugin,
        "own",
        json!({"mode": "every", "namespace": ns}),
        None,
    )
    .await
    .unwrap_err();
    assert!(said.contains("create: ok"), "{said}");
    for function in ["wait-job", "job-log", "delete"] {
        assert!(
            said.contains(&format!(
                "{function}: denied=true: Job {ns}/not-mine was not created by this call"
            )),
            "{said}"
        );
    }
    assert!(
        names::<ConfigMap>(&client, &ns, PLUGIN_LABEL)
            .await
            .is_empty(),
        "the ConfigMap it made was deleted at the end of its call"
    );
}
