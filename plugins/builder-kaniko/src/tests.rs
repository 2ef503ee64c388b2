//! The manifests for each context store and cloud, the arg override, the
//! merge with `kaniko-config`, `plan` as builder-docker's, and every
//! rendered object through `kubernetes-validate --strict`.

use super::*;
use crate::manifest::{BuildInput, BuildObjects, DOCKER_CONFIG_PLACEHOLDER, render};
use crate::settings::{Settings, WandbEnv};
use launch_plugin_sdk::builder::blob::BlobError;
use launch_plugin_sdk::kubernetes::{JobEnd, KubeError, ObjectRef};
use launch_plugin_sdk::{Job, Stage};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/launch";
const GAR: &str = "us-central1-docker.pkg.dev/proj/launch/images";
const ACR: &str = "myreg.azurecr.io/launch";
const LOCAL: &str = "localhost:5000/launch";

fn config(settings: Value) -> Config {
    config_with(settings, WandbEnv::default())
}

fn config_with(settings: Value, env: WandbEnv) -> Config {
    Config::new(&Settings::parse(&settings.to_string()).unwrap(), &env).unwrap()
}

fn objects(config: &Config, repository: &str, has_login: bool) -> BuildObjects {
    render(
        config,
        &BuildInput {
            item_id: "UnVuUXVldWVJdGVtOjE=",
            run_id: "ab12cd34",
            image_uri: &format!("{repository}:0123abcd"),
            repository,
            has_login,
        },
    )
    .unwrap()
}

fn container(objects: &BuildObjects) -> &Value {
    &objects.job["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &BuildObjects) -> Vec<String> {
    serde_json::from_value(container(objects)["args"].clone()).unwrap()
}

fn env_names(objects: &BuildObjects) -> Vec<String> {
    container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn s3_store_and_ecr_as_wandb_makes_them() {
    let c = config(json!({"type": "kaniko", "build-context-store": "s3://my-bucket/contexts/"}));
    let o = objects(&c, ECR, true);
    assert_eq!(o.job_name, "wandb-launch-container-build-ab12cd34");
    assert_eq!(o.namespace, "wandb");
    assert_eq!(o.upload_target, "s3://my-bucket/contexts/ab12cd34.tgz");
    let secret_items = json!([{"key": ".dockerconfigjson", "path": "config.json"}]);
    let expected = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "wandb-launch-container-build-ab12cd34",
            "namespace": "wandb",
            "labels": {"wandb": "launch", "launch-agent.build": "UnVuUXVldWVJdGVtOjE"},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"wandb": "launch", "launch-agent.build": "UnVuUXVldWVJdGVtOjE"}},
                "spec": {
                    "restartPolicy": "Never",
                    "activeDeadlineSeconds": 1800,
                    "containers": [{
                        "name": "wandb-container-build",
                        "image": "gcr.io/kaniko-project/executor:v1.11.0",
                        "args": [
                            "--context=s3://my-bucket/contexts/ab12cd34.tgz",
                            "--dockerfile=.launch-agent.Dockerfile",
                            format!("--destination={ECR}:0123abcd"),
                            "--cache=true",
                            format!("--cache-repo={ECR}"),
                            "--snapshot-mode=redo",
                            "--compressed-caching=false",
                        ],
                        "env": [{"name": "AWS_REGION", "value": "us-east-1"}],
                        "volumeMounts": [{"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": true}],
                    }],
                    "volumes": [{
                        "name": "docker-config",
                        "secret": {"secretName": "docker-config-wandb-launch-container-build-ab12cd34", "items": secret_items},
                    }],
                },
            },
        },
    });
    assert_eq!(o.job, expected, "{:#}", o.job);
    let secret = o.docker_config.as_ref().unwrap();
    assert_eq!(
        secret,
        &json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "docker-config-wandb-launch-container-build-ab12cd34",
                "namespace": "wandb",
                "labels": {"wandb": "launch", "launch-agent.build": "UnVuUXVldWVJdGVtOjE"},
                "annotations": {"launch-agent/registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com"},
            },
            "type": "kubernetes.io/dockerconfigjson",
            "immutable": true,
            "stringData": {".dockerconfigjson": DOCKER_CONFIG_PLACEHOLDER},
        })
    );
    assert!(o.config_maps.is_empty());
}

#[test]
fn cloud_secrets_are_mounted_as_wandb_mounts_them() {
    let secret = |store: &str| {
        config(json!({"build-context-store": store, "secret-name": "cloud", "secret-key": "creds"}))
    };
    // ECR: an AWS credentials file.
    let o = objects(&secret("s3://bkt"), ECR, false);
    let spec = &o.job["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"],
        json!([{"name": "cloud-credentials", "secret": {"secretName": "cloud", "items": [{"key": "creds", "path": "credentials"}]}}])
    );
    assert_eq!(
        container(&o)["volumeMounts"],
        json!([{"name": "cloud-credentials", "mountPath": "/root/.aws", "readOnly": true}])
    );
    assert_eq!(env_names(&o), ["AWS_REGION"]);
    assert!(o.docker_config.is_none());

    // GAR: a service account key and GOOGLE_APPLICATION_CREDENTIALS.
    let o = objects(&secret("gs://bkt"), GAR, true);
    assert_eq!(
        container(&o)["volumeMounts"][1],
        json!({"name": "cloud-credentials", "mountPath": "/kaniko/.config/gcloud", "readOnly": true})
    );
    assert_eq!(
        o.job["spec"]["template"]["spec"]["volumes"][1]["secret"]["items"],
        json!([{"key": "creds", "path": "config.json"}])
    );
    assert_eq!(
        container(&o)["env"],
        json!([{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/kaniko/.config/gcloud/config.json"}])
    );
    assert_eq!(
        o.docker_config.unwrap()["metadata"]["annotations"]["launch-agent/registry"],
        "us-central1-docker.pkg.dev"
    );

    // Any registry with an S3 or GCS store: the store's credentials.
    let o = objects(&secret("s3://bkt"), LOCAL, true);
    assert_eq!(container(&o)["volumeMounts"][1]["mountPath"], "/root/.aws");
    let o = objects(&secret("gs://bkt"), LOCAL, true);
    assert_eq!(
        container(&o)["volumeMounts"][1]["mountPath"],
        "/kaniko/.config/gcloud"
    );

    // Neither: an error naming the key.
    let c = secret("https://acct.blob.core.windows.net/ctx");
    let e = render(
        &c,
        &BuildInput {
            item_id: "i",
            run_id: "r",
            image_uri: "myreg.azurecr.io/launch:1",
            repository: ACR,
            has_login: true,
        },
    )
    .unwrap_err();
    assert_eq!(e.stage, Stage::Build);
    assert!(
        e.message.contains("`builder.secret-name` `cloud`"),
        "{}",
        e.message
    );
}

#[test]
fn acr_and_azure_blob_store() {
    let c = config(json!({"build-context-store": "https://acct.blob.core.windows.net/ctx/launch"}));
    // Without a login: W&B's acr-env credential helper and workload identity.
    let o = objects(&c, ACR, false);
    assert_eq!(
        args(&o)[0],
        "--context=https://acct.blob.core.windows.net/ctx/launch/ab12cd34.tgz"
    );
    assert_eq!(
        container(&o)["env"],
        json!([{"name": "AZURE_STORAGE_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "azure-storage-access-key", "key": "password"}}}])
    );
    assert_eq!(o.config_maps.len(), 1);
    let cm = &o.config_maps[0];
    assert_eq!(
        cm["metadata"]["name"],
        "docker-config-wandb-launch-container-build-ab12cd34"
    );
    let helpers: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        helpers,
        json!({"credHelpers": {"myreg.azurecr.io": "acr-env"}})
    );
    assert_eq!(
        o.job["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(
        o.job["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "docker-config", "configMap": {"name": "docker-config-wandb-launch-container-build-ab12cd34"}}])
    );
    // With the registry plugin's login: the host-filled Secret instead.
    let o = objects(&c, ACR, true);
    assert!(o.config_maps.is_empty());
    assert!(o.docker_config.is_some());
    assert!(
        o.job["spec"]["template"]["metadata"]["labels"]
            .get("azure.workload.identity/use")
            .is_none()
    );
}

#[test]
fn pvc_store_and_a_users_docker_config_secret() {
    let env = WandbEnv {
        pvc_name: Some("kaniko-contexts".into()),
        pvc_mount_path: Some("/kaniko".into()),
        auth_secret: Some("my-dockerconfig".into()),
        service_account: Some("launch-agent".into()),
    };
    let c = config_with(json!({"type": "kaniko"}), env);
    let o = objects(&c, LOCAL, true);
    assert_eq!(o.upload_target, "/kaniko/ab12cd34.tgz");
    assert_eq!(args(&o)[0], "--context=tar:///context/ab12cd34.tgz");
    let spec = &o.job["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "launch-agent");
    assert_eq!(
        spec["volumes"],
        json!([
            {"name": "kaniko-pvc", "persistentVolumeClaim": {"claimName": "kaniko-contexts"}},
            {"name": "docker-config", "secret": {"secretName": "my-dockerconfig", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
        ])
    );
    assert_eq!(
        container(&o)["volumeMounts"],
        json!([
            {"name": "kaniko-pvc", "mountPath": "/context"},
            {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": true},
        ])
    );
    // The user's Secret replaces ours: nothing for the host to fill.
    assert!(o.docker_config.is_none());
    // An anonymous push to a plain registry mounts no docker config.
    let c = config(json!({"build-context-store": "gs://bkt"}));
    let o = objects(&c, LOCAL, false);
    assert_eq!(o.job["spec"]["template"]["spec"]["volumes"], json!([]));
    assert!(o.docker_config.is_none() && o.config_maps.is_empty());
}

#[test]
fn custom_args_replace_ours_by_key_and_add_new_ones() {
    let c = config(json!({
        "build-context-store": "s3://bkt",
        "platform": "linux/arm64",
        "kaniko-config": {"spec": {"template": {"spec": {"containers": [{
            "args": ["--cache=false", "--verbosity=debug", "--destination=other.example.com/x:y=z"],
        }]}}}},
    }));
    let o = objects(&c, LOCAL, false);
    assert_eq!(
        args(&o),
        [
            "--context=s3://bkt/ab12cd34.tgz",
            "--dockerfile=.launch-agent.Dockerfile",
            "--destination=other.example.com/x:y=z",
            "--cache=false",
            "--cache-repo=localhost:5000/launch",
            "--snapshot-mode=redo",
            "--compressed-caching=false",
            "--custom-platform=linux/arm64",
            "--verbosity=debug",
        ]
    );
    let bad = json!({"build-context-store": "s3://bkt", "kaniko-config": {"spec": {"template": {"spec": {"containers": [{"args": ["--no-push"]}]}}}}});
    let e = Config::new(
        &Settings::parse(&bad.to_string()).unwrap(),
        &WandbEnv::default(),
    )
    .unwrap_err();
    assert!(
        e.message.contains("`builder.kaniko-config.spec.template.spec.containers[0].args[0]` must be a string `key=value`"),
        "{}",
        e.message
    );
}

#[test]
fn kaniko_config_is_merged_its_values_winning_where_wandbs_do() {
    let c = config(json!({
        "build-context-store": "s3://bkt",
        "namespace": "builds",
        "kaniko-image": "registry.example.com/kaniko:v1.23.2",
        "kaniko-config": {
            "metadata": {"labels": {"team": "ml", "wandb": "mine"}, "annotations": {"a": "b"}},
            "spec": {
                "backoffLimit": 2,
                "ttlSecondsAfterFinished": 300,
                "template": {
                    "metadata": {"annotations": {"p": "q"}},
                    "spec": {
                        "activeDeadlineSeconds": 600,
                        "nodeSelector": {"pool": "builders"},
                        "volumes": [{"name": "cache", "emptyDir": {}}],
                        "containers": [{
                            "resources": {"requests": {"cpu": "2"}},
                            "env": [{"name": "MY_ENV_VAR", "value": "my-env-var-value"}],
                            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                        }],
                    },
                },
            },
        },
    }));
    let o = objects(&c, ECR, false);
    let job = &o.job;
    assert_eq!(o.namespace, "builds");
    assert_eq!(job["metadata"]["namespace"], "builds");
    assert_eq!(job["metadata"]["annotations"], json!({"a": "b"}));
    // Ours are added; `wandb: launch` replaces the config's (as W&B).
    assert_eq!(
        job["metadata"]["labels"],
        json!({"team": "ml", "wandb": "launch", "launch-agent.build": "UnVuUXVldWVJdGVtOjE"})
    );
    assert_eq!(job["spec"]["backoffLimit"], 2);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 300);
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"], json!({"p": "q"}));
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 600);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["nodeSelector"], json!({"pool": "builders"}));
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "cache", "emptyDir": {}}])
    );
    let c0 = &pod["spec"]["containers"][0];
    assert_eq!(c0["image"], "registry.example.com/kaniko:v1.23.2");
    assert_eq!(c0["name"], "wandb-container-build");
    assert_eq!(c0["resources"], json!({"requests": {"cpu": "2"}}));
    assert_eq!(env_names(&o), ["MY_ENV_VAR", "AWS_REGION"]);
    assert_eq!(
        c0["volumeMounts"],
        json!([{"name": "cache", "mountPath": "/cache"}])
    );

    // Names and images the config sets win; more than one container is refused.
    let c = config(json!({"build-context-store": "s3://bkt", "kaniko-config": {
        "metadata": {"name": "fixed", "namespace": "ns2"},
        "spec": {"template": {"spec": {"serviceAccountName": "builder", "containers": [{"name": "k", "image": "my/kaniko"}]}}},
    }}));
    let o = objects(&c, LOCAL, false);
    assert_eq!(
        (o.job_name.as_str(), o.namespace.as_str()),
        ("fixed", "ns2")
    );
    assert_eq!(
        o.job["spec"]["template"]["spec"]["serviceAccountName"],
        "builder"
    );
    assert_eq!(container(&o)["name"], "k");
    assert_eq!(container(&o)["image"], "my/kaniko");
    for (kaniko_config, needle) in [
        (
            json!({"spec": {"template": {"spec": {"containers": [{}, {}]}}}}),
            "has 2 containers",
        ),
        (
            json!({"kind": "Pod"}),
            "`builder.kaniko-config.kind` must be `Job`",
        ),
        (
            json!({"metadata": {"labels": {"n": 1}}}),
            "`builder.kaniko-config.metadata.labels.n` must be a string",
        ),
        (
            json!({"spec": {"template": {"spec": {"volumes": {}}}}}),
            "`builder.kaniko-config.spec.template.spec.volumes` must be a list",
        ),
        (
            json!({"spec": {"template": {"replicas": 1}}}),
            "`builder.kaniko-config.spec.template.replicas`",
        ),
    ] {
        let s = json!({"build-context-store": "s3://bkt", "kaniko-config": kaniko_config});
        let e = Config::new(
            &Settings::parse(&s.to_string()).unwrap(),
            &WandbEnv::default(),
        )
        .unwrap_err();
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
}

#[test]
fn names_keep_to_what_the_server_accepts() {
    let c = config(json!({"build-context-store": "s3://bkt", "build-job-name": "build"}));
    let o = render(
        &c,
        &BuildInput {
            item_id: "i",
            run_id: "Run_ID.42",
            image_uri: "https://localhost:5000/x:1",
            repository: "https://localhost:5000/x",
            has_login: false,
        },
    )
    .unwrap();
    assert_eq!(o.job_name, "build-run-id-42");
    assert_eq!(o.run_id, "run-id-42");
    assert!(args(&o).contains(&"--destination=localhost:5000/x:1".to_string()));
    assert!(args(&o).contains(&"--cache-repo=localhost:5000/x".to_string()));
    let long = "r".repeat(30);
    let e = render(
        &c,
        &BuildInput {
            item_id: "i",
            run_id: &format!("{long}{long}"),
            image_uri: "x/y:1",
            repository: "x/y",
            has_login: false,
        },
    )
    .unwrap_err();
    assert!(e.message.contains("longer than 63") && e.message.contains("builder.build-job-name"));
}

fn request(destination: &str, source: Option<&std::path::Path>) -> BuildRequest {
    BuildRequest {
        job: Job {
            id: "q-1".into(),
            queue: "default".into(),
            spec_json:
                json!({"overrides": {"entry_point": ["python", "train.py"]}, "run_id": "ab12cd34"})
                    .to_string(),
        },
        settings: json!({"type": "kaniko", "build-context-store": "s3://bkt"}).to_string(),
        destination: destination.into(),
        source_dir: source.map(|p| p.display().to_string()),
        source_id: "entity/project/job:v3".into(),
    }
}

#[test]
fn plan_is_builder_dockers() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("train.py"), "print(1)\n").unwrap();
    std::fs::write(src.path().join("requirements.txt"), "numpy\n").unwrap();
    let req = request(LOCAL, Some(src.path()));
    let plan = <KanikoBuilder as Builder>::plan(req.clone()).unwrap();
    let spec: Value = serde_json::from_str(&req.job.spec_json).unwrap();
    let docker = builder_common::plan(
        &PlanInput {
            job_id: "q-1",
            spec: &spec,
            source_dir: Some(src.path()),
            source_id: "entity/project/job:v3",
            destination: LOCAL,
        },
        builder_common::DEFAULT_BASE_IMAGE,
    )
    .unwrap();
    assert_eq!(plan.image_uri, docker.image_uri);
    assert_eq!(plan.dockerfile, docker.dockerfile);
    assert_eq!(plan.dockerfile_origin, docker.origin);
    assert!(plan.dockerfile.starts_with("# Generated by builder-docker"));

    let e = <KanikoBuilder as Builder>::plan(request("", Some(src.path()))).unwrap_err();
    assert_eq!(e.stage, Stage::Build);
    assert!(e.message.contains("set `registry:`"), "{}", e.message);
    let mut bad = request(LOCAL, Some(src.path()));
    bad.settings = json!({"type": "kaniko"}).to_string();
    let e = <KanikoBuilder as Builder>::plan(bad).unwrap_err();
    assert!(
        e.message.contains("builder.build-context-store"),
        "{}",
        e.message
    );
}

/// The capabilities as a test sees them: every call recorded, answers
/// scripted.
#[derive(Default)]
struct FakeHost {
    calls: Vec<String>,
    upload: Option<BlobError>,
    refuse_kind: Option<&'static str>,
    end: Option<Result<JobEnd, KubeError>>,
}

fn kube_error(message: &str, denied: bool) -> KubeError {
    KubeError {
        message: message.into(),
        denied,
        not_found: false,
    }
}

impl building::Capabilities for FakeHost {
    fn upload_context(&mut self, dockerfile: &str, url: &str) -> Result<u64, BlobError> {
        self.calls.push(format!(
            "upload {url} ({} bytes of Dockerfile)",
            dockerfile.len()
        ));
        match self.upload.take() {
            Some(e) => Err(e),
            None => Ok(1234),
        }
    }

    fn delete_context(&mut self, url: &str) -> Result<(), BlobError> {
        self.calls.push(format!("delete-context {url}"));
        Ok(())
    }

    fn create(&mut self, manifest: &Value) -> Result<ObjectRef, KubeError> {
        let kind = manifest["kind"].as_str().unwrap().to_string();
        self.calls.push(format!("create {kind}"));
        if self.refuse_kind == Some(manifest["kind"].as_str().unwrap()) {
            return Err(kube_error("namespace wandb is not granted", true));
        }
        Ok(ObjectRef {
            kind,
            namespace: manifest["metadata"]["namespace"].as_str().unwrap().into(),
            name: manifest["metadata"]["name"].as_str().unwrap().into(),
        })
    }

    fn wait_job(&mut self, job: &ObjectRef, timeout_seconds: u32) -> Result<JobEnd, KubeError> {
        self.calls
            .push(format!("wait {} {timeout_seconds}s", job.name));
        self.end
            .take()
            .unwrap_or_else(|| Ok(job_end(true, None, &[])))
    }

    fn delete(&mut self, object: &ObjectRef) -> Result<(), KubeError> {
        self.calls.push(format!("delete {}", object.kind));
        Ok(())
    }
}

fn job_end(succeeded: bool, exit_code: Option<i32>, tail: &[&str]) -> JobEnd {
    JobEnd {
        succeeded,
        condition: if succeeded {
            String::new()
        } else {
            "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
        },
        exit_code,
        reason: if exit_code.is_some() {
            "Error".into()
        } else {
            String::new()
        },
        message: String::new(),
        log_tail: tail.iter().map(|l| l.to_string()).collect(),
    }
}

fn pvc_objects() -> (Config, BuildObjects) {
    let config = config_with(
        json!({"type": "kaniko"}),
        WandbEnv {
            pvc_name: Some("kaniko-contexts".into()),
            pvc_mount_path: Some("/mnt/kaniko".into()),
            ..WandbEnv::default()
        },
    );
    let objects = objects(&config, LOCAL, true);
    (config, objects)
}

#[test]
fn a_build_uploads_creates_waits_and_deletes_everything_it_made() {
    let (config, objects) = pvc_objects();
    let mut host = FakeHost::default();
    building::run(&mut host, &config.store, &objects, "FROM x\n").unwrap();
    assert_eq!(
        host.calls,
        [
            "upload file:///mnt/kaniko/ab12cd34.tgz (7 bytes of Dockerfile)",
            "create Secret",
            "create Job",
            "wait wandb-launch-container-build-ab12cd34 2100s",
            "delete Job",
            "delete Secret",
            "delete-context file:///mnt/kaniko/ab12cd34.tgz",
        ]
    );
    // A bucket store's URL is the store's own.
    let s3 = config_with(
        json!({"type": "kaniko", "build-context-store": "s3://bkt/ctx"}),
        WandbEnv::default(),
    );
    let s3_objects = super::tests::objects(&s3, LOCAL, false);
    assert_eq!(
        building::upload_url(&s3.store, &s3_objects),
        "s3://bkt/ctx/ab12cd34.tgz"
    );
}

#[test]
fn a_failed_build_reports_kanikos_error_lines_and_still_cleans_up() {
    let (config, objects) = pvc_objects();
    let mut host = FakeHost {
        end: Some(Ok(job_end(
            false,
            Some(1),
            &[
                "INFO[0001] Unpacking rootfs",
                "INFO[0002] RUN no-such-command",
                "/bin/sh: 1: no-such-command: not found",
                "error building image: error building stage: failed to execute command: waiting for process to exit: exit status 127",
            ],
        ))),
        ..FakeHost::default()
    };
    let e = building::run(&mut host, &config.store, &objects, "FROM x\n").unwrap_err();
    assert_eq!(e.stage, Stage::Build);
    assert!(!e.retryable, "a Dockerfile error fails again");
    assert!(
        e.message.starts_with(
            "the Kaniko build Job wandb/wandb-launch-container-build-ab12cd34 failed (exit code 1, Error"
        ),
        "{}",
        e.message
    );
    assert!(e.message.contains("error building image"), "{}", e.message);
    assert!(host.calls.ends_with(&[
        "delete Job".to_string(),
        "delete Secret".to_string(),
        "delete-context file:///mnt/kaniko/ab12cd34.tgz".to_string(),
    ]));

    // Without an error line, the last lines; a pod that never ran is retryable.
    let lines: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
    assert_eq!(building::error_lines(&lines), lines[3..]);
    let job = ObjectRef {
        kind: "Job".into(),
        namespace: "wandb".into(),
        name: "j".into(),
    };
    assert!(building::failure(&job, &job_end(false, None, &[])).retryable);
}

#[test]
fn a_refused_object_or_upload_fails_the_build_naming_the_grant() {
    let (config, objects) = pvc_objects();
    let mut host = FakeHost {
        refuse_kind: Some("Job"),
        ..FakeHost::default()
    };
    let e = building::run(&mut host, &config.store, &objects, "FROM x\n").unwrap_err();
    assert!(
        e.message
            .contains("creating the build's Job in namespace wandb")
            && e.message.contains("grants.kubernetes.namespaces"),
        "{}",
        e.message
    );
    assert!(!host.calls.iter().any(|c| c.starts_with("wait")));
    // The Secret made before the refusal is deleted, and the context.
    assert!(host.calls.contains(&"delete Secret".to_string()));
    assert!(host.calls.last().unwrap().starts_with("delete-context"));

    let mut host = FakeHost {
        upload: Some(BlobError {
            operation: "upload-context".into(),
            url: "file:///mnt/kaniko/ab12cd34.tgz".into(),
            message: "not under a granted store".into(),
            denied: true,
            missing: false,
        }),
        ..FakeHost::default()
    };
    let e = building::run(&mut host, &config.store, &objects, "FROM x\n").unwrap_err();
    assert!(
        e.message.contains("grants.blob.stores") && !e.retryable,
        "{}",
        e.message
    );
    assert_eq!(host.calls.len(), 1, "nothing is created without a context");

    // A lost watch is worth another try.
    let mut host = FakeHost {
        end: Some(Err(kube_error("the watch of namespace wandb ended", false))),
        ..FakeHost::default()
    };
    let e = building::run(&mut host, &config.store, &objects, "FROM x\n").unwrap_err();
    assert!(e.retryable, "{}", e.message);
}

/// `kubernetes-validate` of the venv `scripts/services-kube.sh start` makes.
fn kubernetes_validate() -> PathBuf {
    let venv = std::env::var_os("LAUNCH_AGENT_KUBE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/launch-agent-kube-venv")
        });
    let tool = venv.join("bin/kubernetes-validate");
    assert!(
        tool.is_file(),
        "{} is missing: run `scripts/services-kube.sh start` (it makes the venv), or set \
         LAUNCH_AGENT_KUBE_VENV",
        tool.display()
    );
    tool
}

#[test]
fn every_rendered_object_passes_kubernetes_validate_strict() {
    let mut rendered: Vec<(String, Value)> = Vec::new();
    let cases: Vec<(&str, Config, &str, bool)> = vec![
        (
            "s3-ecr",
            config(
                json!({"build-context-store": "s3://bkt/p", "secret-name": "aws", "secret-key": "credentials"}),
            ),
            ECR,
            true,
        ),
        (
            "gs-gar",
            config(
                json!({"build-context-store": "gs://bkt", "secret-name": "gcp", "secret-key": "key.json"}),
            ),
            GAR,
            true,
        ),
        (
            "azure-acr",
            config(json!({"build-context-store": "https://acct.blob.core.windows.net/ctx"})),
            ACR,
            false,
        ),
        (
            "pvc-local",
            config_with(
                json!({"kaniko-config": {"spec": {"ttlSecondsAfterFinished": 60, "template": {"spec": {"containers": [{"args": ["--cache=false"], "env": [{"name": "A", "value": "b"}]}]}}}}}),
                WandbEnv {
                    pvc_name: Some("ctx".into()),
                    auth_secret: Some("dockercfg".into()),
                    ..Default::default()
                },
            ),
            LOCAL,
            true,
        ),
    ];
    for (name, config, repository, login) in &cases {
        let o = objects(config, repository, *login);
        rendered.push((format!("{name}-job"), o.job));
        if let Some(secret) = o.docker_config {
            rendered.push((format!("{name}-secret"), secret));
        }
        for (i, cm) in o.config_maps.into_iter().enumerate() {
            rendered.push((format!("{name}-configmap-{i}"), cm));
        }
    }
    assert!(rendered.len() >= 7, "{}", rendered.len());
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = rendered
        .iter()
        .map(|(name, object)| {
            let path = dir.path().join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(object).unwrap()).unwrap();
            path
        })
        .collect();
    let tool = kubernetes_validate();
    for version in ["1.30.0", "1.33.0"] {
        let out = Command::new(&tool)
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check can fail: a field a Job does not have is refused.
    let mut wrong = rendered[0].1.clone();
    wrong["spec"]["template"]["spec"]["containers"][0]["argz"] = json!([]);
    let path = dir.path().join("wrong.json");
    std::fs::write(&path, wrong.to_string()).unwrap();
    let out = Command::new(&tool)
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown field passed");
}
