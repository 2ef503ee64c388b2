//! `resource_args["local-container"]`: the `docker run` flags a job may
//! give its container, checked before anything is built or started.
//!
//! W&B passes every key of `resource_args.local-container` to `docker run`
//! as a flag (`key: value` becomes `--key value`, a list repeats the flag).
//! This runner takes the same spelling, but only the flags below: anything
//! else is an error that names the key and lists these. Flags that would
//! give a run power over this machine or other containers (`privileged`,
//! `cap-add`, `security-opt`, `pid`, `ipc: host`, `device`, `volumes-from`,
//! `runtime`, ...) are refused, and the error says why.
//!
//! | key (aliases) | value | engine setting |
//! |---|---|---|
//! | `env` (`e`) | `["K=V", ...]` or `{K: V}` | added to the environment; may not set a variable the agent sets (`WANDB_*` of the run) |
//! | `volume` (`volumes`, `v`) | `"SRC:DST[:ro]"` or a list | bind mounts / named volumes (`HostConfig.Binds`); the engine's socket is refused |
//! | `gpus` | `all`, a count (`2`), `device=0,1`, or `count=N,driver=D,capabilities=C` | a GPU device request (`HostConfig.DeviceRequests`) |
//! | `memory` (`m`) | a size: `512m`, `2g`, or bytes | memory limit |
//! | `cpus` | a number (`1.5`) | CPU limit (`HostConfig.NanoCpus`) |
//! | `shm-size` | a size | `/dev/shm` size (what PyTorch data loaders want instead of `ipc: host`) |
//! | `network` (`net`) | `bridge`, `host`, `none` or a network name | network mode; `container:...` is refused |
//! | `ipc` | `private`, `shareable` or `none` | IPC mode; `host` and `container:...` are refused |
//! | `user` (`u`) | `uid[:gid]` or a name | the user the command runs as |
//! | `workdir` (`w`) | an absolute path | working directory |
//! | `label` (`l`, `labels`) | `["k=v", ...]` or `{k: v}` | container labels; `launch-agent.item` is the agent's |
//! | `add-host` | `"name:ip"` or a list | extra `/etc/hosts` entries |
//! | `init` | `true` or `false` | run the engine's init (tini) as PID 1, which passes the stop signal on to the command |
//!
//! A spec using it:
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
use crate::json_kind;
use anyhow::{anyhow, bail};
use bollard::models::DeviceRequest;
use serde_json::Value;
use std::collections::HashMap;

/// The accepted keys, as listed in errors.
const ACCEPTED: &str = "env, volume, gpus, memory, cpus, shm-size, network, ipc, user, workdir, label, add-host, init (aliases: e, v, volumes, m, net, u, w, l, labels)";

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
        "pid",
        "it shares the process namespace of this machine or another container",
    ),
    ("uts", "it shares this machine's hostname namespace"),
    ("userns", "it can turn off user-namespace remapping"),
    ("cgroupns", "it shares this machine's cgroup namespace"),
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

/// The engine's sockets: mounting one, or a directory above one, hands the
/// run the whole engine.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

/// `resource_args["local-container"]`, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ResourceArgs {
    pub(super) env: Vec<(String, String)>,
    pub(super) binds: Vec<String>,
    pub(super) device_requests: Vec<DeviceRequest>,
    pub(super) memory: Option<i64>,
    pub(super) nano_cpus: Option<i64>,
    pub(super) shm_size: Option<i64>,
    pub(super) network: Option<String>,
    pub(super) ipc: Option<String>,
    pub(super) user: Option<String>,
    pub(super) workdir: Option<String>,
    pub(super) labels: Vec<(String, String)>,
    pub(super) extra_hosts: Vec<String>,
    pub(super) init: Option<bool>,
}

impl ResourceArgs {
    /// Checks `value` (`Null`: none given); the error names the bad key
    /// and why.
    pub(super) fn parse(value: &Value) -> anyhow::Result<ResourceArgs> {
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
                        args.binds.push(check_bind(&bind, &at)?);
                    }
                }
                Key::Gpus => args.device_requests.push(parse_gpus(value, &at)?),
                Key::Memory => args.memory = Some(parse_size(value, &at)?),
                Key::ShmSize => args.shm_size = Some(parse_size(value, &at)?),
                Key::Cpus => args.nano_cpus = Some(parse_cpus(value, &at)?),
                Key::Network => {
                    let mode = scalar(value, &at)?;
                    if mode.starts_with("container:") {
                        bail!(
                            "{at}: `{mode}` is refused: it joins another container's network namespace"
                        );
                    }
                    args.network = Some(mode);
                }
                Key::Ipc => {
                    let mode = scalar(value, &at)?;
                    if !matches!(mode.as_str(), "private" | "shareable" | "none") {
                        bail!(
                            "{at}: `{mode}` is refused: only private, shareable or none (`host` would share this machine's IPC namespace; for PyTorch's shared memory set `shm-size`, e.g. 2g)"
                        );
                    }
                    args.ipc = Some(mode);
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

/// Checks a bind (`SRC:DST[:OPTS]`); the engine's socket is refused.
fn check_bind(bind: &str, at: &str) -> anyhow::Result<String> {
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if source.is_empty() || target.is_empty() {
        bail!("{at}: `{bind}` is not SRC:DST[:ro]");
    }
    if !target.starts_with('/') {
        bail!("{at}: `{bind}`: the target {target} must be an absolute path in the container");
    }
    if source.starts_with('/') && exposes_engine(source) {
        bail!(
            "{at}: mounting {source} is refused: it would hand the run this machine's container engine"
        );
    }
    Ok(bind.to_string())
}

/// True when host path `source` (as written, and resolved when it exists
/// here) is an engine socket or a directory above one.
fn exposes_engine(source: &str) -> bool {
    let written = std::path::Path::new(source).to_path_buf();
    let resolved = std::fs::canonicalize(&written).ok();
    [Some(written), resolved].into_iter().flatten().any(|path| {
        ENGINE_SOCKETS
            .iter()
            .any(|socket| std::path::Path::new(socket).starts_with(&path))
    })
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
    use serde_json::json;

    fn parse(value: Value) -> anyhow::Result<ResourceArgs> {
        ResourceArgs::parse(&value)
    }

    fn error(value: Value) -> String {
        match parse(value) {
            Ok(args) => panic!("accepted: {args:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn null_and_empty_mean_nothing() {
        assert_eq!(parse(Value::Null).unwrap(), ResourceArgs::default());
        assert_eq!(parse(json!({})).unwrap(), ResourceArgs::default());
    }

    #[test]
    fn reads_the_docker_run_spelling() {
        let args = parse(json!({
            "env": ["A=1", "B=x=y"],
            "v": "/srv/data:/data:ro",
            "gpus": "all",
            "memory": "512m",
            "cpus": 1.5,
            "shm-size": "2g",
            "network": "host",
            "user": 1000,
            "workdir": "/work",
            "label": {"team": "ml"},
            "add-host": ["db:10.0.0.2"],
        }))
        .unwrap();
        assert_eq!(
            args.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(args.binds, vec!["/srv/data:/data:ro".to_string()]);
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
    fn forbidden_keys_are_refused_with_the_reason() {
        for key in ["privileged", "cap-add", "--pid", "device", "security-opt"] {
            let message = error(json!({ key: true }));
            assert!(message.contains(key), "{message}");
            assert!(message.contains("not allowed"), "{message}");
            assert!(message.contains("Accepted keys: env"), "{message}");
        }
        let message = error(json!({"ipc": "host"}));
        assert!(
            message.contains("ipc") && message.contains("shm-size"),
            "{message}"
        );
        assert!(error(json!({"network": "container:abc"})).contains("refused"));
        assert!(error(json!({"volume": "/var/run/docker.sock:/sock"})).contains("engine"));
        assert!(error(json!({"volume": ["/:/host"]})).contains("refused"));
        assert!(error(json!({"name": "x"})).contains("set by the agent"));
        assert!(error(json!({"label": ["launch-agent.item=x"]})).contains("agent's own"));
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
        assert_eq!(rows.len(), 13, "{rows:#?}");
        for row in rows {
            let key = row.split('`').nth(1).unwrap();
            assert!(canonical_key(key).is_ok(), "the table's `{key}` is refused");
            assert!(ACCEPTED.contains(key), "errors do not list `{key}`");
        }
    }
}
