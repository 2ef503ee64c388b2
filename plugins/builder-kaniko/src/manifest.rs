//! The Kubernetes objects of one Kaniko build, as W&B's agent makes them
//! (`kaniko_builder.py`, `_create_kaniko_job`), and where we differ.
//!
//! # The Job
//!
//! `kaniko-config` is the Job the build starts from (deep-copied; its values
//! win where W&B's do), then:
//!
//! | field | value |
//! |---|---|
//! | `apiVersion`, `kind` | `batch/v1`, `Job` (always) |
//! | `metadata.name` | `<build-job-name>-<run id>` unless set |
//! | `metadata.namespace` | the plugin setting `namespace` (default `wandb`) unless set; the build's Secret and ConfigMap go there too |
//! | `metadata.labels`, pod labels | `wandb: launch` (W&B's) and [`BUILD_LABEL`]`: <queue item>` added |
//! | `spec.backoffLimit` | `0` unless set |
//! | pod `restartPolicy`, `activeDeadlineSeconds` | `Never`, `1800` unless set |
//! | pod `serviceAccountName` | the service account unless set, left out when it is `default` (W&B writes `default`, which is what an unset field means: the agent's Kubernetes capability refuses a plugin's Job that names a service account, as the `kubernetes` runner refuses one in a job's manifest) |
//! | the one container (more is an error) | name `wandb-container-build` and image `kaniko-image` unless set |
//! | its `args` | `--context=<ctx> --dockerfile=<Dockerfile> --destination=<image> --cache=true --cache-repo=<repository> --snapshot-mode=redo --compressed-caching=false` (`--custom-platform=<p>` with `platform`), then `kaniko-config`'s own `key=value` args, each replacing ours of the same key or added at the end |
//! | its `env`, `volumeMounts`, pod `volumes` | `kaniko-config`'s, then ours (below) appended |
//!
//! # What is mounted
//!
//! | when | W&B | ours |
//! |---|---|---|
//! | PVC store | volume `kaniko-pvc` (the claim) at `/context` | the same |
//! | ECR destination | env `AWS_REGION` | the same |
//! | Azure blob store | env `AZURE_STORAGE_ACCESS_KEY` from Secret `azure-storage-access-key`, key `password` | the same |
//! | `auth-secret` / `WANDB_LAUNCH_KANIKO_AUTH_SECRET` | that Secret's `.dockerconfigjson` as `/kaniko/.docker/config.json` | the same |
//! | else, a registry login | with `secret-name` only: a ConfigMap holding the password | a Secret `docker-config-<job>` (type `kubernetes.io/dockerconfigjson`) at `/kaniko/.docker/config.json`, its data [`DOCKER_CONFIG_PLACEHOLDER`], which the host fills with the login: the plugin never reads the password |
//! | else, ACR | ConfigMap `docker-config-<job>`, `credHelpers: {NAME.azurecr.io: acr-env}`, label `azure.workload.identity/use: "true"` | the same |
//! | `secret-name` + `secret-key`, ECR (else an `s3://` store) | the key as `/root/.aws/credentials` | the same, for an `s3://` store too |
//! | `secret-name` + `secret-key`, Artifact Registry (else a `gs://` store) | the key as `/kaniko/.config/gcloud/config.json`, env `GOOGLE_APPLICATION_CREDENTIALS` | the same, for a `gs://` store too |
//! | `secret-name` + `secret-key`, anything else | a warning, then a crash | an error naming the key |
//!
//! The Dockerfile is [`CONTEXT_DOCKERFILE`] at the context's root: the host
//! writes the planned Dockerfile under that name into the tarball (as it
//! does for builder-docker's builds), a name the source's own files cannot
//! take.

use crate::names::{RegistryKind, dns_part, docker_config_key, label_value, registry_kind};
use crate::settings::Config;
use crate::store::{ContextStore, POD_CONTEXT_DIR};
use launch_plugin_sdk::PluginError;
use serde_json::{Map, Value, json};

/// The build container's name (W&B's).
pub const CONTAINER_NAME: &str = "wandb-container-build";

/// The Dockerfile's name in the build context (the host's
/// `capabilities::docker::context::CONTEXT_DOCKERFILE`).
pub const CONTEXT_DOCKERFILE: &str = ".launch-agent.Dockerfile";

/// W&B's build deadline, `activeDeadlineSeconds`.
pub const BUILD_DEADLINE_SECS: u64 = 1800;

/// The label on every object of a build, with the queue item's id (not the
/// runners' `launch-agent.item`, so a run's watch never takes a build's pod
/// for the run's).
pub const BUILD_LABEL: &str = "launch-agent.build";

/// Where Kaniko reads its docker config.
pub const DOCKER_CONFIG_DIR: &str = "/kaniko/.docker";

/// The value of `stringData[".dockerconfigjson"]` in the docker config
/// Secret the plugin renders: the host replaces it with
/// `{"auths":{"<registry>":{"auth":"<base64 user:password>"}}}` from the
/// login it holds. Not JSON, so a Secret that reached the API server
/// unfilled is refused there.
pub const DOCKER_CONFIG_PLACEHOLDER: &str =
    "<launch-agent: the registry login, filled by the host>";

/// The annotation of that Secret naming the registry whose login fills it
/// (the `auths` key).
pub const DOCKER_CONFIG_REGISTRY_ANNOTATION: &str = "launch-agent/registry";

/// The key errors about `kaniko-config` start with.
const KEY: &str = "builder.kaniko-config";

/// What one build needs besides the settings.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    /// The queue item's id.
    pub item_id: &'a str,
    /// The run id (the spec's `run_id`, else the item id's start).
    pub run_id: &'a str,
    /// The image to push, `repository:tag`.
    pub image_uri: &'a str,
    /// The repository (no tag).
    pub repository: &'a str,
    /// Whether the host holds a registry login for the push.
    pub has_login: bool,
}

/// The objects of one build, for the host to create (in this order: the
/// ConfigMaps, the docker config Secret, then the Job), watch and delete.
#[derive(Debug, Clone)]
pub struct BuildObjects {
    /// The namespace of every object.
    pub namespace: String,
    /// The Job's name.
    pub job_name: String,
    /// The run id as it appears in names and the context's file name.
    pub run_id: String,
    /// Where the host puts the context tarball (see [`ContextStore::upload_target`]).
    pub upload_target: String,
    /// The Job.
    pub job: Value,
    /// The docker config Secret the host fills with the login, if any.
    pub docker_config: Option<Value>,
    /// ConfigMaps to create first (the ACR credential helper's config).
    pub config_maps: Vec<Value>,
}

/// Refuses a `kaniko-config` whose shape the build Job cannot be made from;
/// errors name the key's path.
pub fn check_kaniko_config(config: &Value) -> Result<(), PluginError> {
    let mut copy = config.clone();
    JobParts::take(&mut copy).map(|_| ())
}

/// The parts of `kaniko-config` the builder fills in, taken out of it.
struct JobParts {
    job_labels: Map<String, Value>,
    job_metadata: Map<String, Value>,
    job_spec: Map<String, Value>,
    pod_metadata: Map<String, Value>,
    pod_labels: Map<String, Value>,
    pod_spec: Map<String, Value>,
    volumes: Vec<Value>,
    container: Map<String, Value>,
    volume_mounts: Vec<Value>,
    env: Vec<Value>,
    custom_args: Vec<(String, String)>,
}

impl JobParts {
    fn take(job: &mut Value) -> Result<JobParts, PluginError> {
        let root = job
            .as_object_mut()
            .ok_or_else(|| PluginError::build(format!("`{KEY}` must be a mapping (a Job)")))?;
        for (key, want) in [("apiVersion", "batch/v1"), ("kind", "Job")] {
            if let Some(v) = root.get(key)
                && v.as_str() != Some(want)
            {
                return Err(PluginError::build(format!(
                    "`{KEY}.{key}` must be `{want}` (or left out): the build is a batch/v1 Job"
                )));
            }
        }
        let mut job_metadata = take_object(root, "metadata", KEY)?;
        let job_labels = take_labels(&mut job_metadata, &format!("{KEY}.metadata"))?;
        let mut job_spec = take_object(root, "spec", KEY)?;
        let mut template = take_object(&mut job_spec, "template", &format!("{KEY}.spec"))?;
        let at = format!("{KEY}.spec.template");
        let mut pod_metadata = take_object(&mut template, "metadata", &at)?;
        let pod_labels = take_labels(&mut pod_metadata, &format!("{at}.metadata"))?;
        let mut pod_spec = take_object(&mut template, "spec", &at)?;
        if let Some((key, _)) = template.iter().next() {
            return Err(PluginError::build(format!(
                "`{at}.{key}` is not a field of a pod template (`metadata`, `spec`)"
            )));
        }
        let at = format!("{at}.spec");
        let volumes = take_array(&mut pod_spec, "volumes", &at)?;
        let containers = take_array(&mut pod_spec, "containers", &at)?;
        if containers.len() > 1 {
            return Err(PluginError::build(format!(
                "`{at}.containers` has {} containers: the Kaniko build has one (W&B's rule); \
                 configure it as the first",
                containers.len()
            )));
        }
        let mut container = match containers.into_iter().next() {
            None => Map::new(),
            Some(Value::Object(c)) => c,
            Some(_) => {
                return Err(PluginError::build(format!(
                    "`{at}.containers[0]` must be a mapping (a container)"
                )));
            }
        };
        let at = format!("{at}.containers[0]");
        let volume_mounts = take_array(&mut container, "volumeMounts", &at)?;
        let env = take_array(&mut container, "env", &at)?;
        let mut custom_args = Vec::new();
        for (i, arg) in take_array(&mut container, "args", &at)?
            .into_iter()
            .enumerate()
        {
            let split = arg
                .as_str()
                .and_then(|a| a.split_once('='))
                .filter(|(k, _)| !k.trim().is_empty());
            match split {
                Some((k, v)) => custom_args.push((k.to_string(), v.to_string())),
                None => {
                    return Err(PluginError::build(format!(
                        "`{at}.args[{i}]` must be a string `key=value` (e.g. `--cache=false`, \
                         `--no-push=true`): the builder's own args are replaced by key"
                    )));
                }
            }
        }
        Ok(JobParts {
            job_labels,
            job_metadata,
            job_spec,
            pod_metadata,
            pod_labels,
            pod_spec,
            volumes,
            container,
            volume_mounts,
            env,
            custom_args,
        })
    }
}

/// Removes `key` (a mapping) from `parent`; absent or null is empty.
fn take_object(
    parent: &mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Map<String, Value>, PluginError> {
    match parent.remove(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(PluginError::build(format!(
            "`{at}.{key}` must be a mapping"
        ))),
    }
}

/// Removes `key` (a list) from `parent`; absent or null is empty.
fn take_array(
    parent: &mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Vec<Value>, PluginError> {
    match parent.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(PluginError::build(format!("`{at}.{key}` must be a list"))),
    }
}

/// Removes `labels` (a mapping of strings) from `metadata`.
fn take_labels(
    metadata: &mut Map<String, Value>,
    at: &str,
) -> Result<Map<String, Value>, PluginError> {
    let labels = take_object(metadata, "labels", at)?;
    if let Some((key, _)) = labels.iter().find(|(_, v)| !v.is_string()) {
        return Err(PluginError::build(format!(
            "`{at}.labels.{key}` must be a string (quote numbers and booleans)"
        )));
    }
    Ok(labels)
}

/// Renders the objects of one build. Errors have stage `build` and name the
/// setting to change.
pub fn render(config: &Config, input: &BuildInput<'_>) -> Result<BuildObjects, PluginError> {
    let run_id = dns_part(input.run_id);
    if run_id.is_empty() {
        return Err(PluginError::build(format!(
            "the run id `{}` has no letter or digit to name the build Job with",
            input.run_id
        )));
    }
    let default_name = format!("{}-{run_id}", config.build_job_name);
    if default_name.len() > 63 {
        return Err(PluginError::build(format!(
            "the build Job name `{default_name}` is longer than 63 characters: shorten \
             `builder.build-job-name` (the run id `{run_id}` takes {} of them)",
            run_id.len()
        )));
    }
    let mut job = config.kaniko_config.clone();
    let mut parts = JobParts::take(&mut job)?;
    let namespace = parts
        .job_metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(&config.namespace)
        .to_string();
    let job_name = parts
        .job_metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&default_name)
        .to_string();
    let registry = registry_kind(input.repository);
    let docker_config_name = format!("docker-config-{default_name}");
    let labels = json!({"wandb": "launch", BUILD_LABEL: label_value(input.item_id)});
    let object_metadata =
        |name: &str| json!({"name": name, "namespace": namespace, "labels": labels.clone()});

    // The context.
    if let ContextStore::Pvc { claim, .. } = &config.store {
        parts.volumes.push(json!({
            "name": "kaniko-pvc",
            "persistentVolumeClaim": {"claimName": claim},
        }));
        parts
            .volume_mounts
            .push(json!({"name": "kaniko-pvc", "mountPath": POD_CONTEXT_DIR}));
    }
    if let ContextStore::Azure { .. } = &config.store {
        parts.env.push(json!({
            "name": "AZURE_STORAGE_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "azure-storage-access-key", "key": "password"}},
        }));
    }
    if let RegistryKind::Ecr { region } = &registry {
        parts
            .env
            .push(json!({"name": "AWS_REGION", "value": region}));
    }

    // The push's credentials.
    let mut docker_config = None;
    let mut config_maps = Vec::new();
    let mount_docker_config = |parts: &mut JobParts, volume: Value| {
        parts.volumes.push(volume);
        parts.volume_mounts.push(
            json!({"name": "docker-config", "mountPath": DOCKER_CONFIG_DIR, "readOnly": true}),
        );
    };
    let dockerconfigjson_items = json!([{"key": ".dockerconfigjson", "path": "config.json"}]);
    if let Some(secret) = &config.auth_secret {
        mount_docker_config(
            &mut parts,
            json!({"name": "docker-config", "secret": {"secretName": secret, "items": dockerconfigjson_items}}),
        );
    } else if input.has_login {
        let mut metadata = object_metadata(&docker_config_name);
        metadata["annotations"] = json!({
            DOCKER_CONFIG_REGISTRY_ANNOTATION: docker_config_key(input.repository),
        });
        docker_config = Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "kubernetes.io/dockerconfigjson",
            "immutable": true,
            "stringData": {".dockerconfigjson": DOCKER_CONFIG_PLACEHOLDER},
        }));
        mount_docker_config(
            &mut parts,
            json!({"name": "docker-config", "secret": {"secretName": docker_config_name, "items": dockerconfigjson_items}}),
        );
    } else if let RegistryKind::Acr { name } = &registry {
        let helpers = json!({"credHelpers": {format!("{name}.azurecr.io"): "acr-env"}});
        config_maps.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": object_metadata(&docker_config_name),
            "immutable": true,
            "data": {"config.json": helpers.to_string()},
        }));
        mount_docker_config(
            &mut parts,
            json!({"name": "docker-config", "configMap": {"name": docker_config_name}}),
        );
        parts
            .pod_labels
            .insert("azure.workload.identity/use".into(), json!("true"));
    }

    // The cloud's credentials (`secret-name`, `secret-key`).
    if let Some(secret) = &config.cloud_secret {
        let aws = matches!(registry, RegistryKind::Ecr { .. })
            || (registry != RegistryKind::Gar && matches!(config.store, ContextStore::S3 { .. }));
        let gcp = registry == RegistryKind::Gar
            || (!aws && matches!(config.store, ContextStore::Gcs { .. }));
        let (mount_path, path) = if aws {
            ("/root/.aws", "credentials")
        } else if gcp {
            parts.env.push(json!({
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": "/kaniko/.config/gcloud/config.json",
            }));
            ("/kaniko/.config/gcloud", "config.json")
        } else {
            return Err(PluginError::build(format!(
                "`builder.secret-name` `{}` holds a cloud's credentials for an ECR or Artifact \
                 Registry destination, or an `s3://` or `gs://` build-context store; `{}` is \
                 neither, and the store is not in S3 or GCS: leave `secret-name` and \
                 `secret-key` out (the push uses the registry's login)",
                secret.name, input.repository
            )));
        };
        parts.volumes.push(json!({
            "name": "cloud-credentials",
            "secret": {"secretName": secret.name, "items": [{"key": secret.key, "path": path}]},
        }));
        parts
            .volume_mounts
            .push(json!({"name": "cloud-credentials", "mountPath": mount_path, "readOnly": true}));
    }

    // The executor's args, ours replaced by the config's of the same key.
    let strip = |s: &str| s.trim_start_matches("https://").to_string();
    let mut args: Vec<(String, String)> = vec![
        ("--context".into(), config.store.kaniko_context(&run_id)),
        ("--dockerfile".into(), CONTEXT_DOCKERFILE.into()),
        ("--destination".into(), strip(input.image_uri)),
        ("--cache".into(), "true".into()),
        ("--cache-repo".into(), strip(input.repository)),
        ("--snapshot-mode".into(), "redo".into()),
        ("--compressed-caching".into(), "false".into()),
    ];
    if let Some(platform) = &config.platform {
        args.push(("--custom-platform".into(), platform.clone()));
    }
    for (key, value) in std::mem::take(&mut parts.custom_args) {
        match args.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => args.push((key, value)),
        }
    }
    let args: Vec<String> = args.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    // W&B's defaults, then the parts put back.
    let JobParts {
        mut job_labels,
        mut job_metadata,
        mut job_spec,
        mut pod_metadata,
        mut pod_labels,
        mut pod_spec,
        volumes,
        mut container,
        volume_mounts,
        env,
        custom_args: _,
    } = parts;
    for (key, value) in labels.as_object().into_iter().flatten() {
        pod_labels.insert(key.clone(), value.clone());
        job_labels.insert(key.clone(), value.clone());
    }
    pod_spec.entry("restartPolicy").or_insert(json!("Never"));
    pod_spec
        .entry("activeDeadlineSeconds")
        .or_insert(json!(BUILD_DEADLINE_SECS));
    if config.service_account != crate::settings::DEFAULT_SERVICE_ACCOUNT {
        pod_spec
            .entry("serviceAccountName")
            .or_insert(json!(config.service_account));
    }
    job_spec.entry("backoffLimit").or_insert(json!(0));
    job_metadata.insert("namespace".into(), json!(namespace));
    job_metadata.insert("name".into(), json!(job_name));
    job_metadata.insert("labels".into(), Value::Object(job_labels));
    pod_metadata.insert("labels".into(), Value::Object(pod_labels));
    container.entry("name").or_insert(json!(CONTAINER_NAME));
    container
        .entry("image")
        .or_insert(json!(config.kaniko_image));
    container.insert("args".into(), json!(args));
    container.insert("volumeMounts".into(), Value::Array(volume_mounts));
    container.insert("env".into(), Value::Array(env));
    pod_spec.insert("containers".into(), json!([container]));
    pod_spec.insert("volumes".into(), Value::Array(volumes));
    job_spec.insert(
        "template".into(),
        json!({"metadata": pod_metadata, "spec": pod_spec}),
    );
    let root = job.as_object_mut().expect("checked to be a mapping");
    root.insert("apiVersion".into(), json!("batch/v1"));
    root.insert("kind".into(), json!("Job"));
    root.insert("metadata".into(), Value::Object(job_metadata));
    root.insert("spec".into(), Value::Object(job_spec));

    Ok(BuildObjects {
        namespace,
        job_name,
        upload_target: config.store.upload_target(&run_id),
        run_id,
        job,
        docker_config,
        config_maps,
    })
}
