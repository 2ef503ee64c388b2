//! The `kubernetes` runner end to end, on the FAKE cluster of
//! `tests/kube_fake/` (`scripts/services-kube.sh start`: a fake API server
//! whose kubelet runs pods on the local Docker engine of
//! `scripts/services.sh start`), and the fake itself speaking the protocol.
//!
//! Every test uses a namespace of its own. Every manifest the fake receives
//! is checked with `kubernetes-validate --strict` by the fake (a failure is
//! a 422 the run would report); [`no_manifest_was_refused`] checks the
//! fake's request log for them.

mod common;
use common::Scratch;
use common::docker::services;
use common::kube::{client, fake, namespace, requests};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The label the runner puts on its Jobs, pods and Secrets.
const ITEM_LABEL: &str = "launch-agent.item";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A config for `queues: [default]` with `extra` appended.
fn config(agent: &Scratch, extra: &str) -> PathBuf {
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 2\nstopped_run_timeout: 2\n{extra}"
    ))
}

/// A config that builds with builder-docker and pushes to the test registry.
fn build_config(agent: &Scratch, repo: &str) -> PathBuf {
    let s = services();
    config(
        agent,
        &format!(
            "builder:\n  type: docker\nregistry:\n  type: oci\n  uri: {}/{repo}\n\
             secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
             plugins:\n  oci:\n    config: {{ username: {}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n",
            s.registry, s.registry_user
        ),
    )
}

/// A `launch-agent` command on the fake cluster.
fn agent_cmd(agent: &Scratch, config: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = agent.cmd();
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .args(extra)
        .env("KUBECONFIG", &fake().kubeconfig)
        .env("TEST_REGISTRY_PASSWORD", &services().registry_password);
    cmd
}

fn run_until_idle(agent: &Scratch, config: &Path) -> String {
    let out = agent_cmd(agent, config, &["--exit-when-idle", "-v"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

/// An agent in the background, killed when dropped: a test that fails
/// leaves no agent behind (holding the test's output open).
struct Background(Child);

impl Background {
    /// SIGTERM; whether it then exited 0.
    fn stop(mut self) -> bool {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap().success()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(agent: &Scratch, config: &Path) -> Background {
    Background(
        agent_cmd(agent, config, &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn run_file(agent: &Scratch, id: &str, file: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join(file)).unwrap_or_default()
}

/// A spec running `sh -c script` in the base image on the fake cluster, in
/// `namespace`, with `extra_pod` merged into the pod spec.
fn shell_job(namespace: &str, script: &str, extra_pod: Value) -> Value {
    let mut pod = json!({
        "containers": [{"name": "main", "imagePullPolicy": "IfNotPresent"}]
    });
    if let (Some(pod), Some(extra)) = (pod.as_object_mut(), extra_pod.as_object()) {
        for (k, v) in extra {
            pod.insert(k.clone(), v.clone());
        }
    }
    json!({
        "resource": "kubernetes",
        "project": "kube-tests",
        "entity": "team",
        "docker": {"docker_image": services().base_image},
        "overrides": {"entry_point": ["sh", "-c", script]},
        "resource_args": {"kubernetes": {"namespace": namespace, "spec": {"template": {"spec": pod}}}}
    })
}

/// The Jobs of item `id` in `namespace` (that are not being deleted).
async fn jobs_of(client: &kube::Client, namespace: &str, id: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(&format!("{ITEM_LABEL}={id}")))
        .await
        .unwrap()
        .items
}

/// Waits (bounded) until `check` holds.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No manifest the fake received was refused by its validation
/// (kubernetes-validate --strict and the server's own checks).
fn no_manifest_was_refused(namespace: &str) {
    for request in requests() {
        let path = request["path"].as_str().unwrap_or_default();
        if !path.contains(&format!("/namespaces/{namespace}/")) {
            continue;
        }
        assert!(
            request["error"]["code"] != 422,
            "the fake refused a manifest: {request:#}"
        );
    }
}

#[test]
fn the_fake_speaks_the_api_servers_protocol() {
    runtime().block_on(async {
        let client = client().await;
        let ns = namespace(&client, "protocol").await;
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "one", "labels": {"app": "a"}}, "data": {"k": "v"}
        }))
        .unwrap();
        let created = maps.create(&PostParams::default(), &map).await.unwrap();
        assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
        // 409 AlreadyExists, 404 NotFound, as the real server answers.
        match maps.create(&PostParams::default(), &map).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
                assert_eq!(s.message, "configmaps \"one\" already exists");
            }
            other => panic!("{other:?}"),
        }
        match maps.get("two").await {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.message.as_str()), (404, "configmaps \"two\" not found")),
            other => panic!("{other:?}"),
        }
        // 422 for a manifest kubernetes-validate --strict refuses.
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let bad: Job = serde_json::from_value(json!({
            "metadata": {"name": "bad"},
            "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        match jobs.create(&PostParams::default(), &bad).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422);
                assert!(s.message.contains("spec.template.spec.restartPolicy"), "{}", s.message);
            }
            other => panic!("{other:?}"),
        }
        // Label selectors, merge patch, server-side apply.
        let other: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "two", "labels": {"app": "b"}}})).unwrap();
        maps.create(&PostParams::default(), &other).await.unwrap();
        let listed = maps.list(&ListParams::default().labels("app in (a),app!=b")).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        let patched = maps
            .patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": null, "n": "2"}})))
            .await
            .unwrap();
        assert_eq!(patched.data.unwrap().get("n").map(String::as_str), Some("2"));
        let applied = maps
            .patch(
                "three",
                &PatchParams::apply("tests"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "three"}, "data": {"x": "y"}})),
            )
            .await
            .unwrap();
        assert_eq!(applied.metadata.name.as_deref(), Some("three"));
        // A watch from the list's resourceVersion sees what comes after it...
        let version = maps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
        let mut stream = maps.watch(&WatchParams::default().timeout(10), &version).await.unwrap().boxed();
        maps.delete("two", &DeleteParams::default()).await.unwrap();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Deleted(map)) => assert_eq!(map.metadata.name.as_deref(), Some("two")),
            other => panic!("{other:?}"),
        }
        // ...and one from an expired version gets 410 Gone.
        common::kube::hook("POST", "/fake/compact");
        let mut stream = maps.watch(&WatchParams::default().timeout(10), &version).await.unwrap().boxed();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_code_job_is_built_pushed_and_run_on_the_cluster_and_an_exit_code_fails_it_at_run() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "code-job"));
    let repo = format!("launch-kube-{}", std::process::id());
    let config = build_config(&agent, &repo);
    let dir = agent.path().join("code");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!(
            "FROM {}\nCOPY job.sh /job.sh\nENTRYPOINT [\"sh\", \"/job.sh\"]\n",
            services().base_image
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("job.sh"),
        "echo hello from the cluster run $WANDB_RUN_ID key-set-${WANDB_API_KEY:+yes}\nexit ${EXIT_WITH:-0}\n",
    )
    .unwrap();
    let spec = |exit: u8| {
        json!({
            "resource": "kubernetes", "project": "kube-code", "entity": "team",
            "uri": dir.display().to_string(),
            "resource_args": {"kubernetes": {"namespace": ns, "spec": {"template": {"spec": {"containers": [
                {"name": "main", "env": [{"name": "EXIT_WITH", "value": exit.to_string()}]}
            ]}}}}}
        })
    };
    let ok = agent.submit("default", &spec(0));
    let three = agent.submit("default", &spec(3));
    let log = run_until_idle(&agent, &config);

    let item = agent.item(&ok);
    assert_eq!(
        item["state"],
        "finished",
        "{item:#}\n{}\n{log}",
        run_file(&agent, &ok, "agent.log")
    );
    let output = run_file(&agent, &ok, "output.log");
    assert!(output.contains("hello from the cluster run"), "{output}");
    let agent_log = run_file(&agent, &ok, "agent.log");
    assert!(
        agent_log.contains("build: built") && agent_log.contains("created Job"),
        "{agent_log}"
    );

    let item = agent.item(&three);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "run");
    assert_eq!(item["exit_code"], 3, "{item:#}");
    assert!(run_file(&agent, &three, "output.log").contains("hello from the cluster run"));
    no_manifest_was_refused(&ns);
}

#[test]
fn queue_stop_deletes_the_job() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "stop"));
    let config = config(&agent, "");
    let id = agent.submit(
        "default",
        &shell_job(&ns, "echo started; sleep 300", json!({})),
    );
    let child = spawn_agent(&agent, &config);
    agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "running");
    wait_until("the pod's output", Duration::from_secs(60), || {
        run_file(&agent, &id, "output.log").contains("started")
    });
    assert_eq!(rt.block_on(jobs_of(&client, &ns, &id)).len(), 1);
    let out = agent.run(&["queue", "stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "stopped");
    assert!(
        rt.block_on(jobs_of(&client, &ns, &id)).is_empty(),
        "the Job outlived the stop"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    assert!(
        rt.block_on(pods.list(&ListParams::default()))
            .unwrap()
            .items
            .is_empty()
    );
    assert!(child.stop(), "the agent did not stop cleanly");
    no_manifest_was_refused(&ns);
}

#[test]
fn sigkill_of_the_agent_mid_job_then_a_new_agent_ends_it_with_no_job_left() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "sigkill"));
    let config = config(&agent, "max_attempts: 1\n");
    let id = agent.submit(
        "default",
        &shell_job(&ns, "echo started; sleep 300", json!({})),
    );
    let mut first = spawn_agent(&agent, &config);
    let running = agent.wait_for_item(&id, Duration::from_secs(60), |i| {
        i["state"] == "running" && !i["run_handle"].is_null()
    });
    assert_eq!(running["run_handle"]["runner"], "kubernetes");
    assert_eq!(rt.block_on(jobs_of(&client, &ns, &id)).len(), 1);
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();

    let log = run_until_idle(&agent, &config);
    assert!(log.contains("took back a job whose agent died"), "{log}");
    let item = agent.item(&id);
    assert!(
        ["failed", "finished", "stopped"].contains(&item["state"].as_str().unwrap()),
        "{item:#}"
    );
    wait_until(
        "the dead agent's Job to go",
        Duration::from_secs(30),
        || rt.block_on(jobs_of(&client, &ns, &id)).is_empty(),
    );
}

#[test]
fn an_unschedulable_pod_is_a_warning_within_seconds_then_fails_after_the_pending_timeout() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "pending"));
    let config = config(&agent, "runners:\n  kubernetes: { pending_timeout: 8 }\n");
    let id = agent.submit(
        "default",
        &shell_job(
            &ns,
            "echo never",
            json!({"nodeSelector": {"pool": "gpu-that-nobody-has"}}),
        ),
    );
    let child = spawn_agent(&agent, &config);
    // When the fake's scheduler says so...
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut reported = None;
    wait_until(
        "the fake to report the pod unschedulable",
        Duration::from_secs(60),
        || {
            let list = rt.block_on(pods.list(&ListParams::default())).unwrap();
            let unschedulable = list.items.iter().any(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| {
                        c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                    })
            });
            if unschedulable {
                reported = Some(Instant::now());
            }
            unschedulable
        },
    );
    // ...the job's log has the warning within 5 s, with the scheduler's reason.
    let reported = reported.unwrap();
    wait_until("the warning", Duration::from_secs(5), || {
        run_file(&agent, &id, "agent.log").contains("Unschedulable")
    });
    assert!(reported.elapsed() < Duration::from_secs(5));
    let log = run_file(&agent, &id, "agent.log");
    assert!(
        log.contains("didn't match Pod's node affinity/selector"),
        "{log}"
    );
    let item = agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "failed");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("Pending for more than 8s") && message.contains("Unschedulable"),
        "{message}"
    );
    assert!(
        rt.block_on(jobs_of(&client, &ns, &id)).is_empty(),
        "the pending Job was left behind"
    );
    assert!(child.stop(), "the agent did not stop cleanly");
}

#[test]
fn a_run_survives_its_watch_expiring_410_and_sees_its_end() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "gone"));
    let config = config(&agent, "");
    let id = agent.submit(
        "default",
        &shell_job(
            &ns,
            "echo started; sleep 4; echo after the expiry",
            json!({}),
        ),
    );
    let child = spawn_agent(&agent, &config);
    wait_until("the pod's output", Duration::from_secs(60), || {
        run_file(&agent, &id, "output.log").contains("started")
    });
    let watched_before = requests()
        .iter()
        .filter(|r| {
            r["path"] == format!("/apis/batch/v1/namespaces/{ns}/jobs")
                && r["query"]["watch"].is_null()
        })
        .count();
    // Every resourceVersion so far expires and open watches end: the
    // runner's resumed watch gets 410 Gone and must list again.
    common::kube::hook("POST", "/fake/compact");
    let item = agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "finished");
    assert_eq!(item["state"], "finished");
    assert!(run_file(&agent, &id, "output.log").contains("after the expiry"));
    let listed_after = requests()
        .iter()
        .filter(|r| {
            r["path"] == format!("/apis/batch/v1/namespaces/{ns}/jobs")
                && r["query"]["watch"].is_null()
        })
        .count();
    assert!(
        listed_after > watched_before,
        "the watch was not listed again after 410"
    );
    assert!(child.stop(), "the agent did not stop cleanly");
}

#[test]
fn a_preempted_pod_is_reported_as_a_preemption() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "preempt"));
    let config = config(&agent, "");
    let id = agent.submit(
        "default",
        &shell_job(&ns, "echo started; sleep 300", json!({})),
    );
    let child = spawn_agent(&agent, &config);
    wait_until("the pod's output", Duration::from_secs(60), || {
        run_file(&agent, &id, "output.log").contains("started")
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = rt
        .block_on(pods.list(&ListParams::default()))
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    common::kube::hook("POST", &format!("/fake/evict?namespace={ns}&name={pod}"));
    let item = agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "failed");
    assert_eq!(item["stage"], "run");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("preempted") && message.contains("PreemptionByScheduler"),
        "{message}"
    );
    assert!(child.stop(), "the agent did not stop cleanly");
}

#[test]
fn an_image_that_cannot_be_pulled_is_a_warning_naming_the_back_off() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "pull"));
    let config = config(&agent, "runners:\n  kubernetes: { pending_timeout: 6 }\n");
    let mut spec = shell_job(&ns, "true", json!({}));
    spec["docker"]["docker_image"] = json!("127.0.0.1:9/no-such-image:1");
    let id = agent.submit("default", &spec);
    let started = Instant::now();
    run_until_idle(&agent, &config);
    let log = run_file(&agent, &id, "agent.log");
    assert!(log.contains("ErrImagePull"), "{log}");
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("Pending for more than 6s"),
        "{item:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
    assert!(rt.block_on(jobs_of(&client, &ns, &id)).is_empty());
}

#[test]
fn a_forbidden_field_fails_at_stage_agent_naming_its_path() {
    let agent = Scratch::new();
    let config = config(&agent, "");
    let id = agent.submit(
        "default",
        &shell_job("default", "true", json!({"hostNetwork": true})),
    );
    run_until_idle(&agent, &config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("`resource_args.kubernetes.spec.template.spec.hostNetwork`"),
        "{message}"
    );
}

#[test]
fn the_kubeconfig_context_is_the_one_resource_args_names() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "context"));
    let config = config(&agent, "");
    let mut named = shell_job(&ns, "echo in context", json!({}));
    named["resource_args"]["kubernetes"]["context"] = json!("launch-agent-fake");
    let mut unknown = shell_job(&ns, "true", json!({}));
    unknown["resource_args"]["kubernetes"]["context"] = json!("no-such-context");
    let named = agent.submit("default", &named);
    let unknown = agent.submit("default", &unknown);
    run_until_idle(&agent, &config);
    let item = agent.item(&named);
    assert_eq!(item["state"], "finished", "{item:#}");
    assert!(run_file(&agent, &named, "output.log").contains("in context"));
    let item = agent.item(&unknown);
    assert_eq!(item["state"], "failed", "{item:#}");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("no context `no-such-context`") && message.contains("launch-agent-fake"),
        "{message}"
    );
}

/// A pod's log is copied into `output.log` up to `max_log_mb`, the cut
/// said in the log, as the other runners' logs are; the run still ends as
/// its pod did.
#[test]
fn a_pods_log_is_capped_at_max_log_mb_and_the_cut_said() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "logcap"));
    let config = config(&agent, "max_log_mb: 1\n");
    let id = agent.submit(
        "default",
        &shell_job(
            &ns,
            "yes 0123456789abcdef0123456789abcdef | head -c 3000000; echo; sleep 5; exit 3",
            json!({}),
        ),
    );
    run_until_idle(&agent, &config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["exit_code"], 3, "{item:#}");
    let log = run_file(&agent, &id, "output.log");
    let (kept, notice) = log
        .split_once("\n[launch-agent] this log was cut here")
        .unwrap_or_else(|| panic!("no cut notice in a log of {} bytes", log.len()));
    assert_eq!(kept.len(), 1024 * 1024, "the log holds its cap");
    assert!(notice.contains("1048576 bytes"), "{notice}");
}

#[test]
fn the_operators_config_can_keep_a_queues_jobs_off_the_cluster() {
    let agent = Scratch::new();
    let config = config(&agent, "runners:\n  kubernetes: { enabled: false }\n");
    let id = agent.submit("default", &shell_job("default", "true", json!({})));
    run_until_idle(&agent, &config);
    let item = agent.item(&id);
    assert_eq!(
        (item["state"].as_str(), item["stage"].as_str()),
        (Some("failed"), Some("agent"))
    );
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("runners.kubernetes.enabled"),
        "{item:#}"
    );
}

#[test]
fn macros_are_expanded_in_the_manifest_the_cluster_receives_and_the_key_is_a_secret() {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "macros"));
    let config = config(&agent, "");
    let mut spec = shell_job(&ns, "echo run=$RUN_LABEL", json!({}));
    spec["run_id"] = json!("macrorun1");
    spec["name"] = json!("my-run");
    spec["resource_args"]["kubernetes"]["metadata"] = json!({
        "labels": {"run": "${run_id}", "project": "${project_name}", "entity": "${entity_name}"},
        "annotations": {"image": "${image_uri}", "name": "${run_name}"}
    });
    spec["resource_args"]["kubernetes"]["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "RUN_LABEL", "value": "${run_id}"}]);
    let key = "kubekey0kubekey1kubekey2kubekey3kubekey4";
    let id = agent.submit("default", &spec);
    let out = agent_cmd(&agent, &config, &["--exit-when-idle"])
        .env("WANDB_API_KEY", key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let item = agent.item(&id);
    assert_eq!(
        item["state"],
        "finished",
        "{item:#}\n{}",
        run_file(&agent, &id, "agent.log")
    );
    assert!(run_file(&agent, &id, "output.log").contains("run=macrorun1"));

    let created: Vec<Value> = requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"] == format!("/apis/batch/v1/namespaces/{ns}/jobs")
        })
        .map(|r| r["body"].clone())
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    let job = &created[0];
    assert_eq!(job["metadata"]["labels"]["run"], "macrorun1");
    assert_eq!(job["metadata"]["labels"]["project"], "kube-tests");
    assert_eq!(job["metadata"]["labels"]["entity"], "team");
    assert_eq!(job["metadata"]["labels"]["wandb.ai/run-id"], "macrorun1");
    assert_eq!(
        job["metadata"]["annotations"]["image"],
        services().base_image
    );
    assert_eq!(job["metadata"]["annotations"]["name"], "my-run");
    assert_eq!(job["metadata"]["generateName"], "launch-team-kube-tests-");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 60);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    // The API key reached the pod through a Secret, never the manifest.
    let text = job.to_string();
    assert!(!text.contains(key), "the API key is in the manifest");
    assert!(text.contains("secretKeyRef"), "{text}");
    assert!(
        !requests()
            .iter()
            .any(|r| r["body"].to_string().contains(key)),
        "the key was sent as plain text"
    );
    no_manifest_was_refused(&ns);
}

#[test]
fn a_job_popped_from_the_wandb_server_runs_on_the_cluster() {
    use common::wandb_fake::FakeWandbServer;
    let api_key = "kubewandb0kubewandb1kubewandb2kubewandb3";
    let wandb = FakeWandbServer::start(api_key, "team", &[]);
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "wandb"));
    let config =
        agent.write_config("queue_backend: wandb\nentity: team\nqueues: [default]\nmax_jobs: 1\n");
    let spec = shell_job(&ns, "echo popped from wandb $WANDB_PROJECT", json!({}));
    wandb.control(
        "POST",
        "/_fake/queues/team/default/items",
        &spec.to_string(),
    );
    let out = agent_cmd(&agent, &config, &["--exit-when-idle"])
        .env("WANDB_BASE_URL", wandb.url())
        .env("WANDB_API_KEY", api_key)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let outputs: Vec<String> = std::fs::read_dir(agent.state_dir().join("runs"))
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("output.log")).ok())
        .collect();
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("popped from wandb kube-tests")),
        "{outputs:?}\n{log}"
    );
    let ops = wandb.operations();
    assert!(ops.iter().any(|op| op == "ackRunQueueItem"), "{ops:?}");
    assert!(!ops.iter().any(|op| op == "failRunQueueItem"), "{ops:?}");
    no_manifest_was_refused(&ns);
}

#[test]
fn a_pending_pod_is_a_warning_on_the_wandb_queue_item() {
    use common::wandb_fake::FakeWandbServer;
    let rt = runtime();
    let api_key = "kubewarn0kubewarn1kubewarn2kubewarn3kubewarn4";
    let wandb = FakeWandbServer::start(api_key, "team", &[]);
    let agent = Scratch::new();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "wandb-warn"));
    let config = agent.write_config(
        "queue_backend: wandb\nentity: team\nqueues: [default]\nrunners:\n  kubernetes: { pending_timeout: 4 }\n",
    );
    let spec = shell_job(&ns, "true", json!({"nodeSelector": {"pool": "none"}}));
    wandb.control(
        "POST",
        "/_fake/queues/team/default/items",
        &spec.to_string(),
    );
    let out = agent_cmd(&agent, &config, &["--exit-when-idle"])
        .env("WANDB_BASE_URL", wandb.url())
        .env("WANDB_API_KEY", api_key)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let warnings: Vec<Value> = wandb
        .events()
        .into_iter()
        .filter(|e| e["operation"] == "updateRunQueueItemWarning")
        .map(|e| e["variables"].clone())
        .filter(|v| {
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("Unschedulable")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}\n{log}");
    assert_eq!(warnings[0]["stage"], "run");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("didn't match Pod's node affinity/selector"),
        "{warnings:?}"
    );
    let ops = wandb.operations();
    assert!(ops.iter().any(|op| op == "failRunQueueItem"), "{ops:?}");
}

/// Opt-in: runs a job on a real cluster when `LAUNCH_AGENT_LIVE_KUBECONFIG`
/// names its kubeconfig (`LAUNCH_AGENT_LIVE_NAMESPACE`, default `default`;
/// the image is `busybox:1.36` unless `LAUNCH_AGENT_LIVE_IMAGE` says).
#[test]
fn live_a_job_runs_on_a_real_cluster_when_one_is_configured() {
    let Some(kubeconfig) = std::env::var_os("LAUNCH_AGENT_LIVE_KUBECONFIG") else {
        eprintln!("LAUNCH_AGENT_LIVE_KUBECONFIG is not set: the live cluster test does nothing");
        return;
    };
    let namespace =
        std::env::var("LAUNCH_AGENT_LIVE_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image = std::env::var("LAUNCH_AGENT_LIVE_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
    let agent = Scratch::new();
    let config = config(&agent, "");
    let id = agent.submit(
        "default",
        &json!({
            "resource": "kubernetes", "project": "live", "entity": "team",
            "docker": {"docker_image": image},
            "overrides": {"entry_point": ["sh", "-c", "echo hello from a real cluster"]},
            "resource_args": {"kubernetes": {"namespace": namespace}}
        }),
    );
    let out = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let item = agent.item(&id);
    assert_eq!(
        item["state"],
        "finished",
        "{item:#}\n{}",
        run_file(&agent, &id, "agent.log")
    );
    assert!(run_file(&agent, &id, "output.log").contains("hello from a real cluster"));
}

/// The README's benchmark (`cargo test -p launch-agent --test kubernetes
/// -- --ignored bench --nocapture`): 20 jobs one after another on the fake
/// cluster; queue pop to Job created, Job created to the agent seeing the
/// pod running (p50, max), and the API requests per job.
#[test]
#[ignore = "a benchmark: run it with --ignored"]
fn bench_twenty_jobs_on_the_fake_cluster() {
    const JOBS: usize = 20;
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "bench"));
    let config = agent.write_config("queues: [default]\nmax_jobs: 1\n");
    let ids: Vec<String> = (0..JOBS)
        .map(|_| agent.submit("default", &shell_job(&ns, "echo hi", json!({}))))
        .collect();
    let started = Instant::now();
    run_until_idle(&agent, &config);
    let wall = started.elapsed();
    let at = |log: &str, needle: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {log}"));
        let time = line.split_whitespace().next().unwrap();
        let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let (mut to_created, mut to_running) = (Vec::new(), Vec::new());
    for id in &ids {
        assert_eq!(agent.item(id)["state"], "finished");
        let log = run_file(&agent, id, "agent.log");
        let (claimed, created, running) = (
            at(&log, "job claimed from queue"),
            at(&log, "run: created Job"),
            at(&log, "running on node"),
        );
        to_created.push((created - claimed) * 1000.0);
        to_running.push((running - created) * 1000.0);
    }
    let stats = |values: &mut Vec<f64>| {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (values[values.len() / 2], values[values.len() - 1])
    };
    let (created_p50, created_max) = stats(&mut to_created);
    let (running_p50, running_max) = stats(&mut to_running);
    let all: Vec<Value> = requests()
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("/namespaces/{ns}/"))
        })
        .collect();
    let count = |pred: &dyn Fn(&Value) -> bool| all.iter().filter(|r| pred(r)).count();
    let watches = count(&|r| r["query"]["watch"] == "true" || r["query"]["watch"] == "1");
    let logs = count(&|r| r["path"].as_str().unwrap().ends_with("/log"));
    let writes = count(&|r| r["method"] != "GET");
    println!("{JOBS} jobs in {:.1}s", wall.as_secs_f64());
    println!("queue pop -> Job created: p50 {created_p50:.0} ms, max {created_max:.0} ms");
    println!("Job created -> pod running seen: p50 {running_p50:.0} ms, max {running_max:.0} ms");
    println!(
        "API requests: {} in all, {:.2} per job ({writes} writes, {logs} log streams, {watches} watch requests, {} lists/gets)",
        all.len(),
        all.len() as f64 / JOBS as f64,
        all.len() - writes - logs - watches
    );
}
