//! `resource_args["local-container"]`: the `docker run` flags a job may
//! give its container, checked before anything is built or started.
//!
//! W&B passes every key of `resource_args.local-container` to `docker run`
//! as a flag (`key: value` becomes `--key value`, a list repeats the flag).
//! This runner takes the same spelling, but only the flags below: anything
//! else is an error that names the key and lists these. Flags that would
//! give a run power over this machine or other containers (`privileged`,
//! `cap-add`, `security-opt`, `device`, `volumes-from`, `runtime`, ...) are
//! refused, and the error says why. What reaches past the container to
//! this machine (host paths, host namespaces, GPUs) is checked against the
//! operator's `runners.local-container` block for the job's queue
//! ([`super::policy`]): host paths and host namespaces are refused unless it
//! grants them.
//!
//! | key (aliases) | value | engine setting |
//! |---|---|---|
//! | `env` (`e`) | `["K=V", ...]` or `{K: V}` | added to the environment; may not set a variable the agent sets (`WANDB_*` of the run) |
//! | `volume` (`volumes`, `v`) | `"SRC:DST[:ro\|rw]"` or a list | a host path the config grants (mounted at the path this machine resolves it to; read-only unless granted writable), or a named volume (`name:DST[:nocopy]`) (`HostConfig.Mounts`) |
//! | `gpus` | `all`, a count (`2`), `device=0,1`, or `count=N,driver=D,capabilities=C` | a GPU device request (`HostConfig.DeviceRequests`), unless the config sets `gpus: false` |
//! | `memory` (`m`) | a size: `512m`, `2g`, or bytes | memory limit |
//! | `cpus` | a number (`1.5`) | CPU limit (`HostConfig.NanoCpus`) |
//! | `shm-size` | a size | `/dev/shm` size (what PyTorch data loaders want instead of `ipc: host`) |
//! | `network` (`net`) | `bridge`, `none`, a network name, or `host` when the config grants it | network mode; `container:...` is refused |
//! | `ipc` | `private`, `shareable`, `none`, or `host` when granted | IPC mode; `container:...` is refused |
//! | `pid` | `host`, when granted | PID mode |
//! | `uts` | `host`, when granted | UTS mode (hostname) |
//! | `userns` | `host`, when granted | user namespace mode |
//! | `cgroupns` | `private`, or `host` when granted | cgroup namespace mode |
//! | `user` (`u`) | `uid[:gid]` or a name | the user the command runs as |
//! | `workdir` (`w`) | an absolute path | working directory |
//! | `label` (`l`, `labels`) | `["k=v", ...]` or `{k: v}` | container labels; `launch-agent.item` is the agent's |
//! | `add-host` | `"name:ip"` or a list | extra `/etc/hosts` entries |
//! | `init` | `true` or `false` | run the engine's init (tini) as PID 1, which passes the stop signal on to the command |
//!
//! A spec using it (on an agent whose config grants `/srv/cache`):
//!
//! ```yaml
//! resource: local-container
//! docker: { docker_image: "registry.example.com/team/train:v3" }
//! overrides: { entry_point: ["python", "train.py"], args: ["--epochs", "3"] }
//! resource_args:
//!   local-container:
//!     gpus: all
//!     memory: 16g
//!     shm-size: 2g
//!     env: ["HF_HOME=/cache/hf"]
//!     volume: ["/srv/cache:/cache"]
//! ```

use super::ITEM_LABEL;
use super::policy::ContainerPolicy;
use crate::json_kind;
use anyhow::{anyhow, bail};
use bollard::models::{
    DeviceRequest, HostConfigCgroupnsModeEnum, Mount, MountType, MountVolumeOptions,
};
use serde_json::Value;
use std::collections::HashMap;

/// The accepted keys, as listed in errors.
const ACCEPTED: &str = "env, volume, gpus, memory, cpus, shm-size, network, ipc, pid, uts, userns, cgroupns, user, workdir, label, add-host, init (aliases: e, v, volumes, m, net, u, w, l, labels)";

/// Keys refused because they give the run power over this machine or other
/// containers, with the reason shown.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "privileged",
        "it gives the container every device and capability of this machine",
    ),
    (
        "cap-add",
        "extra capabilities let the container act on this machine",
    ),
    (
        "security-opt",
        "it can turn off the container's seccomp and AppArmor confinement",
    ),
    (
        "cgroup-parent",
        "it moves the container out of the engine's cgroups",
    ),
    (
        "device",
        "it gives the container this machine's devices (use `gpus` for GPUs)",
    ),
    (
        "device-cgroup-rule",
        "it gives the container this machine's devices (use `gpus` for GPUs)",
    ),
    ("volumes-from", "it mounts another container's volumes"),
    (
        "runtime",
        "it picks another container runtime (`gpus` needs none)",
    ),
    ("sysctl", "it changes kernel settings"),
    (
        "group-add",
        "it adds the run's user to groups of this machine",
    ),
    (
        "oom-kill-disable",
        "a run that runs out of memory would stall this machine",
    ),
    ("mount", "use `volume` (`SRC:DST[:ro]`)"),
];

/// Keys the agent sets itself.
const AGENT_SET: &[(&str, &str)] = &[
    ("name", "the container is named launch-<item id>"),
    (
        "rm",
        "the agent removes the container after reading its exit code",
    ),
    ("entrypoint", "it comes from overrides.entry_point"),
    ("detach", "the agent waits for the run"),
    ("interactive", "runs get no input"),
    (
        "tty",
        "runs get no terminal (the log keeps stdout and stderr)",
    ),
];

/// `resource_args["local-container"]`, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ResourceArgs {
    pub(super) env: Vec<(String, String)>,
    pub(super) mounts: Vec<Mount>,
    pub(super) device_requests: Vec<DeviceRequest>,
    pub(super) memory: Option<i64>,
    pub(super) nano_cpus: Option<i64>,
    pub(super) shm_size: Option<i64>,
    pub(super) network: Option<String>,
    pub(super) ipc: Option<String>,
    pub(super) pid: Option<String>,
    pub(super) uts: Option<String>,
    pub(super) userns: Option<String>,
    pub(super) cgroupns: Option<HostConfigCgroupnsModeEnum>,
    pub(super) user: Option<String>,
    pub(super) workdir: Option<String>,
    pub(super) labels: Vec<(String, String)>,
    pub(super) extra_hosts: Vec<String>,
    pub(super) init: Option<bool>,
}

impl ResourceArgs {
    /// Checks `value` (`Null`: none given) for a job from `queue`, whose
    /// host paths and namespaces `policy` rules on; the error names the bad
    /// key and why.
    pub(super) fn parse(
        value: &Value,
        policy: &ContainerPolicy,
        queue: &str,
    ) -> anyhow::Result<ResourceArgs> {
        let mut args = ResourceArgs::default();
        let map = match value {
            Value::Null => return Ok(args),
            Value::Object(map) => map,
            other => bail!(
                "resource_args.local-container must be a mapping of docker run flags (accepted: {ACCEPTED}), not {}",
                json_kind::of(other)
            ),
        };
        let mut seen: HashMap<Key, &str> = HashMap::new();
        for (key, value) in map {
            let canonical = canonical_key(key)?;
            if let Some(earlier) = seen.insert(canonical, key) {
                bail!(
                    "resource_args.local-container has both `{earlier}` and `{key}`, which are the same flag: keep one"
                );
            }
            let at = format!("resource_args.local-container.{key}");
            if value.is_null() {
                bail!("{at} has no value");
            }
            match canonical {
                Key::Env => {
                    for (k, v) in pairs(value, &at, "K=V")? {
                        let Some(v) = v else {
                            bail!(
                                "{at}: `{k}` has no value (a bare name would copy the agent's own variable into the run): write {k}=VALUE"
                            );
                        };
                        args.env.push((k, v));
                    }
                }
                Key::Volume => {
                    for bind in strings(value, &at)? {
                        args.mounts.push(check_bind(&bind, &at, policy, queue)?);
                    }
                }
                Key::Gpus => {
                    policy.check_gpus(queue).map_err(|e| anyhow!("{at}: {e}"))?;
                    args.device_requests.push(parse_gpus(value, &at)?)
                }
                Key::Memory => args.memory = Some(parse_size(value, &at)?),
                Key::ShmSize => args.shm_size = Some(parse_size(value, &at)?),
                Key::Cpus => args.nano_cpus = Some(parse_cpus(value, &at)?),
                Key::Network => {
                    let mode = namespace_mode(value, &at, "network", policy, queue)?;
                    if !is_engine_name(&mode, 1) {
                        bail!(
                            "{at}: `{mode}` is refused: write bridge, none, host (where the agent's config grants it) or a network's name (letters, digits, `_`, `.`, `-`)"
                        );
                    }
                    args.network = Some(mode);
                }
                Key::Ipc => {
                    let mode = namespace_mode(value, &at, "ipc", policy, queue).map_err(|e| {
                        anyhow!(
                            "{e:#} (for PyTorch's shared memory, `shm-size` is enough: e.g. 2g)"
                        )
                    })?;
                    if !matches!(mode.as_str(), "private" | "shareable" | "none" | "host") {
                        bail!(
                            "{at}: `{mode}` is refused: only private, shareable, none, or host where the agent's config grants it (for PyTorch's shared memory set `shm-size`, e.g. 2g)"
                        );
                    }
                    args.ipc = Some(mode);
                }
                Key::Pid => args.pid = Some(host_only(value, &at, "pid", policy, queue)?),
                Key::Uts => args.uts = Some(host_only(value, &at, "uts", policy, queue)?),
                Key::Userns => args.userns = Some(host_only(value, &at, "userns", policy, queue)?),
                Key::Cgroupns => {
                    let mode = namespace_mode(value, &at, "cgroupns", policy, queue)?;
                    args.cgroupns = Some(match mode.as_str() {
                        "private" => HostConfigCgroupnsModeEnum::PRIVATE,
                        "host" => HostConfigCgroupnsModeEnum::HOST,
                        _ => bail!("{at}: `{mode}` is not private or host"),
                    });
                }
                Key::User => args.user = Some(scalar(value, &at)?),
                Key::Workdir => {
                    let dir = scalar(value, &at)?;
                    if !dir.starts_with('/') {
                        bail!("{at}: `{dir}` must be an absolute path in the container");
                    }
                    args.workdir = Some(dir);
                }
                Key::Label => {
                    for (k, v) in pairs(value, &at, "k=v")? {
                        if k == ITEM_LABEL {
                            bail!("{at}: the label {ITEM_LABEL} is the agent's own");
                        }
                        args.labels.push((k, v.unwrap_or_default()));
                    }
                }
                Key::Init => match value {
                    Value::Bool(b) => args.init = Some(*b),
                    other => bail!("{at} must be true or false, not {}", json_kind::of(other)),
                },
                Key::AddHost => {
                    for entry in strings(value, &at)? {
                        if !entry.contains(':') {
                            bail!("{at}: `{entry}` is not name:ip");
                        }
                        args.extra_hosts.push(entry);
                    }
                }
            }
        }
        Ok(args)
    }
}

/// An accepted key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Env,
    Volume,
    Gpus,
    Memory,
    Cpus,
    ShmSize,
    Network,
    Ipc,
    Pid,
    Uts,
    Userns,
    Cgroupns,
    User,
    Workdir,
    Label,
    AddHost,
    Init,
}

/// The accepted key `key` spells, or the error for any other.
fn canonical_key(key: &str) -> anyhow::Result<Key> {
    let stripped = key.trim_start_matches('-');
    Ok(match stripped {
        "env" | "e" => Key::Env,
        "volume" | "volumes" | "v" => Key::Volume,
        "gpus" => Key::Gpus,
        "memory" | "m" => Key::Memory,
        "cpus" => Key::Cpus,
        "shm-size" | "shm_size" => Key::ShmSize,
        "network" | "net" => Key::Network,
        "ipc" => Key::Ipc,
        "pid" => Key::Pid,
        "uts" => Key::Uts,
        "userns" => Key::Userns,
        "cgroupns" => Key::Cgroupns,
        "user" | "u" => Key::User,
        "workdir" | "w" => Key::Workdir,
        "label" | "labels" | "l" => Key::Label,
        "add-host" | "add_host" => Key::AddHost,
        "init" => Key::Init,
        _ => {
            if let Some((_, why)) = FORBIDDEN.iter().find(|(k, _)| *k == stripped) {
                bail!(
                    "resource_args.local-container.{key} is not allowed: {why}. Accepted keys: {ACCEPTED}"
                );
            }
            if let Some((_, why)) = AGENT_SET.iter().find(|(k, _)| *k == stripped) {
                bail!(
                    "resource_args.local-container.{key} is set by the agent: {why}. Accepted keys: {ACCEPTED}"
                );
            }
            bail!("unknown key `{key}` in resource_args.local-container. Accepted keys: {ACCEPTED}")
        }
    })
}

/// A string, number or boolean as text.
fn scalar(value: &Value, at: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::String(_) => bail!("{at} is empty"),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => bail!("{at} must be a single value, not {}", json_kind::of(other)),
    }
}

/// A string or a list of strings.
fn strings(value: &Value, at: &str) -> anyhow::Result<Vec<String>> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| scalar(item, &format!("{at}[{i}]")))
            .collect(),
        other => Ok(vec![scalar(other, at)?]),
    }
}

/// `["k=v", ...]`, `"k=v"` or `{k: v}` as (key, value) pairs; a bare `k` has
/// no value.
fn pairs(value: &Value, at: &str, form: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let pairs = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), Some(scalar_or_empty(v, &format!("{at}.{k}"))?))))
            .collect::<anyhow::Result<Vec<_>>>()?,
        other => strings(other, at)?
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item, None),
            })
            .collect(),
    };
    for (k, _) in &pairs {
        if k.is_empty() || k.contains(char::is_whitespace) {
            bail!("{at}: `{k}` is not a valid name (write {form})");
        }
    }
    Ok(pairs)
}

fn scalar_or_empty(value: &Value, at: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => scalar(other, at),
    }
}

/// A namespace key's mode: `host` only where `policy` grants it, never
/// another container's.
fn namespace_mode(
    value: &Value,
    at: &str,
    key: &str,
    policy: &ContainerPolicy,
    queue: &str,
) -> anyhow::Result<String> {
    let mode = scalar(value, at)?;
    policy
        .check_namespace(key, &mode, queue)
        .map_err(|e| anyhow!("{at}: {e}"))?;
    Ok(mode)
}

/// A namespace key whose only mode is `host`.
fn host_only(
    value: &Value,
    at: &str,
    key: &str,
    policy: &ContainerPolicy,
    queue: &str,
) -> anyhow::Result<String> {
    let mode = namespace_mode(value, at, key, policy, queue)?;
    if mode != "host" {
        bail!(
            "{at}: `{mode}` is not a mode this agent sets: only `host` (where its config grants it)"
        );
    }
    Ok(mode)
}

/// Checks a bind (`SRC:DST[:OPTS]`): a host path `policy` grants, mounted at
/// the path this machine resolves it to, or a named volume.
fn check_bind(
    bind: &str,
    at: &str,
    policy: &ContainerPolicy,
    queue: &str,
) -> anyhow::Result<Mount> {
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let options = parts.next();
    if source.is_empty() || target.is_empty() {
        bail!("{at}: `{bind}` is not SRC:DST[:ro]");
    }
    if !target.starts_with('/') {
        bail!("{at}: `{bind}`: the target {target} must be an absolute path in the container");
    }
    let host_path = source.starts_with('/');
    let (mut write, mut no_copy) = (None, false);
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" | "readonly" if write.is_none() => write = Some(false),
            "rw" if write.is_none() => write = Some(true),
            "ro" | "readonly" | "rw" => bail!("{at}: `{bind}` says ro or rw twice"),
            "nocopy" if !host_path => no_copy = true,
            "z" | "Z" => bail!(
                "{at}: `{bind}`: the option `{option}` is refused: it relabels the host's files"
            ),
            _ => bail!(
                "{at}: `{bind}`: the option `{option}` is refused (accepted: ro, rw, and nocopy for a named volume)"
            ),
        }
    }
    if host_path {
        let checked = policy
            .check_host_path(source, write, queue)
            .map_err(|e| anyhow!("{at}: {e}"))?;
        return Ok(Mount {
            typ: Some(MountType::BIND),
            source: Some(checked.resolved.to_string_lossy().into_owned()),
            target: Some(target.to_string()),
            read_only: Some(checked.read_only),
            ..Default::default()
        });
    }
    if !is_volume_name(source) {
        bail!(
            "{at}: `{source}` is neither an absolute host path nor a volume name (letters, digits, `_`, `.`, `-`)"
        );
    }
    Ok(Mount {
        typ: Some(MountType::VOLUME),
        source: Some(source.to_string()),
        target: Some(target.to_string()),
        read_only: Some(write == Some(false)),
        volume_options: no_copy.then(|| MountVolumeOptions {
            no_copy: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A name the engine takes as a named volume: `[A-Za-z0-9][A-Za-z0-9_.-]+`.
fn is_volume_name(name: &str) -> bool {
    is_engine_name(name, 2)
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at least `min_len` long: the engine's
/// names of volumes and networks, and nothing it reads as a mode.
fn is_engine_name(name: &str, min_len: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= min_len
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `all`, a count, `device=0,1` or `count=N,driver=D,capabilities=C[,C]`.
fn parse_gpus(value: &Value, at: &str) -> anyhow::Result<DeviceRequest> {
    let text = scalar(value, at)?;
    let mut request = DeviceRequest {
        driver: Some(String::new()),
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        ..Default::default()
    };
    let invalid =
        || anyhow!("{at}: cannot read `{text}` (write all, a count such as 2, or device=0,1)");
    if text == "all" {
        request.count = Some(-1);
        return Ok(request);
    }
    if let Ok(count) = text.parse::<i64>() {
        if count < 1 {
            return Err(invalid());
        }
        request.count = Some(count);
        return Ok(request);
    }
    let text = text.trim_matches('"');
    // `device=` takes the rest of the value: its ids are comma-separated too.
    let (options, devices) = match text.find("device=") {
        Some(i) => (&text[..i], Some(&text[i + "device=".len()..])),
        None => (text, None),
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("count", "all")) => request.count = Some(-1),
            Some(("count", n)) => {
                request.count = Some(
                    n.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(invalid)?,
                )
            }
            Some(("driver", d)) => request.driver = Some(d.to_string()),
            Some(("capabilities", c)) => {
                request.capabilities = Some(vec![c.split(',').map(str::to_string).collect()])
            }
            _ => return Err(invalid()),
        }
    }
    if let Some(devices) = devices {
        let ids: Vec<String> = devices
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Err(invalid());
        }
        request.device_ids = Some(ids);
    }
    if request.count.is_none() && request.device_ids.is_none() {
        return Err(invalid());
    }
    Ok(request)
}

/// A size as `docker run` reads it: bytes, or a number with a binary unit
/// (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `b`/`ib`).
fn parse_size(value: &Value, at: &str) -> anyhow::Result<i64> {
    let text = scalar(value, at)?;
    let invalid = || anyhow!("{at}: cannot read `{text}` as a size (e.g. 512m, 2g, or bytes)");
    let lower = text.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits_end].parse().map_err(|_| invalid())?;
    let unit = lower[digits_end..].trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0_f64.powi(4),
        "p" => 1024.0_f64.powi(5),
        _ => return Err(invalid()),
    };
    let bytes = number * multiplier;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

/// CPUs as nano-CPUs (`1.5` → 1.5e9).
fn parse_cpus(value: &Value, at: &str) -> anyhow::Result<i64> {
    let text = scalar(value, at)?;
    let cpus: f64 = text
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite() && *c > 0.0 && *c < 1e6)
        .ok_or_else(|| anyhow!("{at}: cannot read `{text}` as a number of CPUs (e.g. 2 or 0.5)"))?;
    Ok((cpus * 1e9).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::runners::{HostNamespace, LocalContainerSettings, VolumeGrant};
    use crate::runners::policy::Origin;
    use serde_json::json;

    /// Parses for queue `q` under the default policy: no host paths or
    /// namespaces.
    fn parse(value: Value) -> anyhow::Result<ResourceArgs> {
        ResourceArgs::parse(&value, &ContainerPolicy::default(), "q")
    }

    fn error(value: Value) -> String {
        match parse(value) {
            Ok(args) => panic!("accepted: {args:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A policy granting `dir` read-only and the host network.
    fn granting(dir: &std::path::Path) -> ContainerPolicy {
        let settings = LocalContainerSettings {
            volumes: vec![VolumeGrant::Path(dir.to_path_buf())],
            host_namespaces: vec![HostNamespace::Network],
            ..LocalContainerSettings::default()
        };
        ContainerPolicy::compile(Some(&settings), Origin::EveryQueue).unwrap()
    }

    #[test]
    fn null_and_empty_mean_nothing() {
        assert_eq!(parse(Value::Null).unwrap(), ResourceArgs::default());
        assert_eq!(parse(json!({})).unwrap(), ResourceArgs::default());
    }

    #[test]
    fn reads_the_docker_run_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        let args = ResourceArgs::parse(
            &json!({
                "env": ["A=1", "B=x=y"],
                "v": [format!("{}:/data:ro", data.display()), "cache:/cache:nocopy".to_string()],
                "gpus": "all",
                "memory": "512m",
                "cpus": 1.5,
                "shm-size": "2g",
                "network": "host",
                "user": 1000,
                "workdir": "/work",
                "label": {"team": "ml"},
                "add-host": ["db:10.0.0.2"],
            }),
            &granting(&data),
            "q",
        )
        .unwrap();
        assert_eq!(
            args.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(args.mounts.len(), 2);
        assert_eq!(args.mounts[0].typ, Some(MountType::BIND));
        assert_eq!(args.mounts[0].source.as_deref(), data.to_str());
        assert_eq!(args.mounts[0].target.as_deref(), Some("/data"));
        assert_eq!(args.mounts[0].read_only, Some(true));
        assert_eq!(args.mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(args.mounts[1].source.as_deref(), Some("cache"));
        assert_eq!(args.mounts[1].read_only, Some(false));
        assert_eq!(args.device_requests[0].count, Some(-1));
        assert_eq!(args.memory, Some(512 * 1024 * 1024));
        assert_eq!(args.nano_cpus, Some(1_500_000_000));
        assert_eq!(args.shm_size, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(args.network.as_deref(), Some("host"));
        assert_eq!(args.user.as_deref(), Some("1000"));
        assert_eq!(args.workdir.as_deref(), Some("/work"));
        assert_eq!(args.labels, vec![("team".into(), "ml".into())]);
        assert_eq!(args.extra_hosts, vec!["db:10.0.0.2".to_string()]);
    }

    #[test]
    fn sizes_read_like_docker() {
        let at = "x";
        assert_eq!(parse_size(&json!(1048576), at).unwrap(), 1 << 20);
        assert_eq!(parse_size(&json!("1k"), at).unwrap(), 1024);
        assert_eq!(parse_size(&json!("1.5G"), at).unwrap(), 3 << 29);
        assert_eq!(parse_size(&json!("64mb"), at).unwrap(), 64 << 20);
        assert_eq!(parse_size(&json!("64MiB"), at).unwrap(), 64 << 20);
        for bad in ["", "12q", "m", "-1g", "0"] {
            assert!(parse_size(&json!(bad), at).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn gpus_forms() {
        let at = "x";
        let two = parse_gpus(&json!(2), at).unwrap();
        assert_eq!(two.count, Some(2));
        let ids = parse_gpus(&json!("device=0,2"), at).unwrap();
        assert_eq!(ids.device_ids, Some(vec!["0".to_string(), "2".to_string()]));
        assert_eq!(ids.capabilities, Some(vec![vec!["gpu".to_string()]]));
        let driver = parse_gpus(&json!("driver=nvidia,count=1"), at).unwrap();
        assert_eq!(driver.driver.as_deref(), Some("nvidia"));
        assert_eq!(driver.count, Some(1));
        assert!(parse_gpus(&json!("some"), at).is_err());
        assert!(parse_gpus(&json!(0), at).is_err());
    }

    #[test]
    fn gpus_can_be_turned_off_per_queue() {
        let settings = LocalContainerSettings {
            gpus: false,
            ..LocalContainerSettings::default()
        };
        let policy =
            ContainerPolicy::compile(Some(&settings), Origin::Queue("public".into())).unwrap();
        let message = format!(
            "{:#}",
            ResourceArgs::parse(&json!({"gpus": 1}), &policy, "public").unwrap_err()
        );
        assert!(
            message.contains("resource_args.local-container.gpus"),
            "{message}"
        );
        assert!(
            message.contains("`runners.queues.public.local-container.gpus`"),
            "{message}"
        );
    }

    #[test]
    fn forbidden_keys_are_refused_with_the_reason() {
        for key in [
            "privileged",
            "cap-add",
            "device",
            "security-opt",
            "--runtime",
        ] {
            let message = error(json!({ key: true }));
            assert!(message.contains(key), "{message}");
            assert!(message.contains("not allowed"), "{message}");
            assert!(message.contains("Accepted keys: env"), "{message}");
        }
        assert!(error(json!({"network": "container:abc"})).contains("refused"));
        assert!(error(json!({"volume": "/var/run/docker.sock:/sock"})).contains("not allowed"));
        assert!(error(json!({"volume": ["/:/host"]})).contains("not allowed"));
        assert!(error(json!({"name": "x"})).contains("set by the agent"));
        assert!(error(json!({"label": ["launch-agent.item=x"]})).contains("agent's own"));
    }

    #[test]
    fn host_namespaces_are_refused_unless_granted() {
        for (key, mode) in [
            ("network", "host"),
            ("net", "host"),
            ("--network", "host"),
            ("ipc", "host"),
            ("pid", "host"),
            ("--pid", "host"),
            ("uts", "host"),
            ("userns", "host"),
            ("cgroupns", "host"),
        ] {
            let message = error(json!({ key: mode }));
            assert!(
                message.contains(&format!("resource_args.local-container.{key}")),
                "{message}"
            );
            assert!(message.contains("host_namespaces"), "{message}");
        }
        for (key, mode) in [
            ("pid", "container:x"),
            ("ipc", "container:x"),
            ("uts", "container:x"),
            ("pid", "private"),
            ("ipc", "everything"),
            ("cgroupns", "shared"),
        ] {
            assert!(
                parse(json!({ key: mode })).is_err(),
                "{key}: {mode} accepted"
            );
        }
        for network in [
            "ns:/proc/1/ns/net",
            "slirp4netns:port_handler=x",
            "a b",
            "-x",
        ] {
            let message = error(json!({ "network": network }));
            assert!(message.contains("network's name"), "{network}: {message}");
        }
        let args =
            parse(json!({"network": "bridge", "ipc": "shareable", "cgroupns": "private"})).unwrap();
        assert_eq!(args.cgroupns, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        let dir = tempfile::tempdir().unwrap();
        assert!(ResourceArgs::parse(&json!({"ipc": "host"}), &granting(dir.path()), "q").is_err());
    }

    #[test]
    fn binds_take_only_known_options_and_real_names() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        let policy = granting(&data);
        let refused = |bind: String| {
            format!(
                "{:#}",
                ResourceArgs::parse(&json!({ "volume": bind }), &policy, "q").unwrap_err()
            )
        };
        let d = data.display();
        assert!(refused(format!("{d}:/d:Z")).contains("relabels"));
        assert!(refused(format!("{d}:/d:rshared")).contains("refused"));
        assert!(refused(format!("{d}:/d:ro,rw")).contains("twice"));
        assert!(refused(format!("{d}:/d:rw")).contains("read-only"));
        assert!(refused(format!("{d}:/d:nocopy")).contains("refused"));
        assert!(refused(format!("{d}:rel")).contains("absolute"));
        for name in ["./data", "~/data", "..", "-x", "a"] {
            let message = refused(format!("{name}:/d"));
            assert!(message.contains("neither"), "{name}: {message}");
        }
    }

    #[test]
    fn unknown_and_malformed_values_name_the_key() {
        let message = error(json!({"frobnicate": 1}));
        assert!(message.contains("unknown key `frobnicate`"), "{message}");
        assert!(message.contains("memory"), "{message}");
        assert!(error(json!({"env": ["NOVALUE"]})).contains("NOVALUE"));
        assert!(error(json!({"memory": [1, 2]})).contains("memory"));
        assert!(error(json!({"workdir": "rel"})).contains("absolute"));
        assert!(error(json!({"e": ["A=1"], "env": ["B=2"]})).contains("same flag"));
        assert!(error(json!(["env"])).contains("mapping"));
        assert!(error(json!({"cpus": "lots"})).contains("cpus"));
    }

    #[test]
    fn every_key_in_the_module_table_is_accepted_and_listed() {
        let rows: Vec<&str> = include_str!("resource_args.rs")
            .lines()
            .filter(|line| line.starts_with("//! | `"))
            .collect();
        assert_eq!(rows.len(), 17, "{rows:#?}");
        for row in rows {
            let key = row.split('`').nth(1).unwrap();
            assert!(canonical_key(key).is_ok(), "the table's `{key}` is refused");
            assert!(ACCEPTED.contains(key), "errors do not list `{key}`");
        }
    }
}
