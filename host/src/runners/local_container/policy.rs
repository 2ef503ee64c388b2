//! What `local-container` jobs from one queue may ask the engine for beyond
//! their own container: host paths, this machine's namespaces, GPUs. The
//! operator's `runners.local-container` block (or the queue's own),
//! compiled once at start-up.
//!
//! **Host paths are denied by default.** A job may bind-mount a path only
//! when it lies at or below a path the config grants, judged on the path
//! as this machine resolves it (symlinks and `..` followed), and the engine
//! is handed that resolved path, so what was checked is what is mounted:
//!
//! | the spec's host path | result |
//! |---|---|
//! | at or below a read-only grant | mounted read-only (`:rw` asked for is refused) |
//! | a writable grant itself | mounted as asked (`:ro` or read-write) |
//! | strictly below a writable grant, as written or as resolved | refused: jobs can write symlinks there, so what it names can change between the check and the mount; mount the grant whole |
//! | below no grant (after resolving: a symlink in a grant that points out of it too) | refused, naming the config key that would allow it |
//! | a path that does not exist | refused: the agent creates no host paths (the engine would create them as root) |
//! | the engine's socket, or a directory above it | refused even when granted |
//!
//! The check runs before anything is built, and again just before the
//! container is created (a writable grant's contents can change while an
//! image builds). The grants name paths on this machine: the engine is
//! expected to be local, as the default socket is.
//!
//! Host namespaces (`network: host`, `ipc: host`, `pid: host`, `uts: host`,
//! `userns: host`, `cgroupns: host`) need their name in `host_namespaces`;
//! another container's (`container:<id>`) are always refused.

use super::super::policy::Origin;
use crate::config::runners::{HostNamespace, LocalContainerSettings, VolumeGrant, check_nesting};
use anyhow::anyhow;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The `resource` this policy is for, as config keys name it.
const RUNNER: &str = "local-container";

/// The engine's sockets: mounting one, or a directory above one, hands the
/// run the whole engine, so they are refused even under a grant.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
    "/run/buildkit/buildkitd.sock",
];

/// Sensitive trees: a grant at, above or inside one of these hands jobs
/// this machine or its engine, and start-up warns about it.
const SENSITIVE_TREES: &[&str] = &[
    "/etc",
    "/root",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
];

/// System directories a grant should not cover (a grant inside them, such
/// as `/usr/share/data`, is fine), besides [`SENSITIVE_TREES`].
const SENSITIVE_ROOTS: &[&str] = &["/", "/usr", "/bin", "/sbin", "/lib"];

/// What the jobs of one queue may ask the engine for.
#[derive(Clone, Debug)]
pub struct ContainerPolicy {
    enabled: bool,
    grants: Vec<Grant>,
    namespaces: BTreeSet<HostNamespace>,
    gpus: bool,
    origin: Origin,
}

/// A granted host path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    /// As the config writes it.
    written: PathBuf,
    /// As this machine resolves it.
    resolved: PathBuf,
    writable: bool,
}

/// A host path a job may mount, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPath {
    /// The path as this machine resolves it: what the engine is given.
    pub resolved: PathBuf,
    /// Whether the engine must mount it read-only.
    pub read_only: bool,
}

impl Default for ContainerPolicy {
    /// What a config that says nothing allows: containers, GPUs; no host
    /// paths, no host namespaces.
    fn default() -> Self {
        ContainerPolicy {
            enabled: true,
            grants: Vec::new(),
            namespaces: BTreeSet::new(),
            gpus: true,
            origin: Origin::EveryQueue,
        }
    }
}

impl ContainerPolicy {
    /// Compiles a `local-container` block (`None`: the defaults) on this
    /// machine: every granted path is resolved, and must exist.
    pub fn compile(
        settings: Option<&LocalContainerSettings>,
        origin: Origin,
    ) -> anyhow::Result<ContainerPolicy> {
        let Some(settings) = settings else {
            return Ok(ContainerPolicy {
                origin,
                ..ContainerPolicy::default()
            });
        };
        let key = match &origin {
            Origin::EveryQueue => format!("runners.{RUNNER}.volumes"),
            Origin::Queue(queue) => format!("runners.queues.{queue}.{RUNNER}.volumes"),
        };
        let mut grants = Vec::new();
        for grant in &settings.volumes {
            grants.push(resolve_grant(grant).map_err(|e| anyhow!("`{key}`: {e}"))?);
        }
        check_nesting(grants.iter().map(|g| (g.resolved.as_path(), g.writable)))
            .map_err(|e| anyhow!("`{key}`, with symlinks resolved: {e}"))?;
        Ok(ContainerPolicy {
            enabled: settings.enabled,
            grants,
            namespaces: settings.host_namespaces.iter().copied().collect(),
            gpus: settings.gpus,
            origin,
        })
    }

    /// Whether the queue's jobs may run as containers at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `Err` with the reason and the key that would allow it when the
    /// queue's jobs may not run as containers.
    pub fn check_enabled(&self, queue: &str) -> Result<(), String> {
        if self.enabled {
            return Ok(());
        }
        Err(format!(
            "jobs from queue `{queue}` may not run as containers on this machine: the agent's config turns {RUNNER} off for them; to allow them, set {} to true",
            self.origin.config_key(RUNNER, "enabled", queue)
        ))
    }

    /// Checks the host side of a bind: `written` as the spec gives it,
    /// `write` whether the spec asks for `rw` (`Some(true)`), `ro`
    /// (`Some(false)`) or says nothing. The error names the path and the
    /// key that would allow it.
    pub fn check_host_path(
        &self,
        written: &str,
        write: Option<bool>,
        queue: &str,
    ) -> Result<HostPath, String> {
        let not_granted = |shown: String| {
            let granted = if self.grants.is_empty() {
                "grants none to them".to_string()
            } else {
                let list: Vec<String> = self
                    .grants
                    .iter()
                    .map(|g| {
                        format!(
                            "{} ({})",
                            g.written.display(),
                            if g.writable { "writable" } else { "read-only" }
                        )
                    })
                    .collect();
                format!("grants them only {}", list.join(", "))
            };
            format!(
                "host path {shown} is not allowed for jobs from queue `{queue}`: this agent mounts only the host paths its config grants, and {granted}; to allow it, add it (or a directory above it) to {}",
                self.origin.config_key(RUNNER, "volumes", queue)
            )
        };
        // Paths outside every grant are refused without looking at them, so
        // errors tell nothing about this machine's other files.
        let Some(lexical) = lexically_normal(Path::new(written)) else {
            return Err(format!(
                "host path {written} must be an absolute path (or a volume name)"
            ));
        };
        let near_a_grant = self
            .grants
            .iter()
            .any(|g| lexical.starts_with(&g.written) || lexical.starts_with(&g.resolved));
        if !near_a_grant {
            return Err(not_granted(written.to_string()));
        }
        let inside_writable = |path: &Path| {
            self.grants.iter().find(|g| {
                g.writable
                    && [&g.written, &g.resolved]
                        .into_iter()
                        .any(|root| path != root.as_path() && path.starts_with(root))
            })
        };
        let writable_refusal = |shown: &str, outer: &Grant| {
            format!(
                "host path {shown} lies inside the writable grant {}: jobs can replace what is inside it with symlinks, so it is mounted only whole (mount {} and use the sub-directory inside the container)",
                outer.written.display(),
                outer.resolved.display()
            )
        };
        if let Some(outer) = inside_writable(&lexical) {
            return Err(writable_refusal(written, outer));
        }
        let resolved = std::fs::canonicalize(written).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "host path {written} does not exist on this machine: the agent mounts only existing paths (it creates none)"
            ),
            _ => format!("host path {written} cannot be resolved on this machine: {e}"),
        })?;
        let shown = if resolved == Path::new(written) {
            written.to_string()
        } else {
            format!("{written} (which resolves to {})", resolved.display())
        };
        if let Some(outer) = inside_writable(&resolved) {
            return Err(writable_refusal(&shown, outer));
        }
        let Some(grant) = self
            .grants
            .iter()
            .filter(|g| resolved.starts_with(&g.resolved))
            .max_by_key(|g| g.resolved.components().count())
        else {
            return Err(not_granted(shown));
        };
        if exposes_engine(&resolved) {
            return Err(format!(
                "mounting {shown} is refused: it would hand the run this machine's container engine"
            ));
        }
        if !grant.writable && write == Some(true) {
            return Err(format!(
                "host path {shown} is granted read-only to jobs from queue `{queue}`: drop `rw` (it is mounted read-only), or grant it with `{{ path: {}, write: true }}` in {}",
                grant.written.display(),
                self.origin.config_key(RUNNER, "volumes", queue)
            ));
        }
        Ok(HostPath {
            resolved,
            read_only: !grant.writable || write == Some(false),
        })
    }

    /// Checks `<key>: <mode>` for a namespace key: `host` needs the
    /// namespace in `host_namespaces`; another container's is refused.
    /// Other modes are the caller's to check.
    pub fn check_namespace(&self, key: &str, mode: &str, queue: &str) -> Result<(), String> {
        if mode.starts_with("container:") {
            return Err(format!(
                "`{mode}` is refused: it joins another container's namespace"
            ));
        }
        if mode != "host" {
            return Ok(());
        }
        let Some(namespace) = HostNamespace::ALL.into_iter().find(|n| n.name() == key) else {
            return Err(format!("`host` is not a mode of {key}"));
        };
        if self.namespaces.contains(&namespace) {
            return Ok(());
        }
        Err(format!(
            "`host` shares this machine's {} with the container, which the agent's config does not allow for jobs from queue `{queue}`; to allow it, add `{key}` to {}",
            describe(namespace),
            self.origin.config_key(RUNNER, "host_namespaces", queue)
        ))
    }

    /// `Err` when the queue's jobs may not ask for GPUs.
    pub fn check_gpus(&self, queue: &str) -> Result<(), String> {
        if self.gpus {
            return Ok(());
        }
        Err(format!(
            "GPUs are not allowed for jobs from queue `{queue}` by the agent's config; to allow them, set {}: true",
            self.origin.config_key(RUNNER, "gpus", queue)
        ))
    }

    /// What the operator should hear at start-up about this block: grants
    /// that cover what gives this machine away, and `pid: host`.
    pub fn warnings(&self) -> Vec<String> {
        let key = match &self.origin {
            Origin::EveryQueue => format!("runners.{RUNNER}"),
            Origin::Queue(queue) => format!("runners.queues.{queue}.{RUNNER}"),
        };
        let mut warnings = Vec::new();
        for grant in &self.grants {
            let path = &grant.resolved;
            let covered = SENSITIVE_ROOTS
                .iter()
                .chain(SENSITIVE_TREES)
                .map(Path::new)
                .find(|s| s.starts_with(path))
                .map(|s| format!("covers {}", s.display()))
                .or_else(|| {
                    SENSITIVE_TREES
                        .iter()
                        .map(Path::new)
                        .find(|s| path.starts_with(s))
                        .map(|s| format!("lies inside {}", s.display()))
                });
            if let Some(covered) = covered {
                warnings.push(format!(
                    "`{key}.volumes` grants {} ({}), which {covered}: containers that mount it can {} this machine's own files",
                    grant.written.display(),
                    if grant.writable { "writable" } else { "read-only" },
                    if grant.writable { "read and change" } else { "read" }
                ));
            }
        }
        if self.namespaces.contains(&HostNamespace::Pid) {
            warnings.push(format!(
                "`{key}.host_namespaces` has `pid`: containers with `pid: host` see this machine's processes, and a container running as root can signal them"
            ));
        }
        warnings
    }
}

/// What sharing `namespace` shares, in words.
fn describe(namespace: HostNamespace) -> &'static str {
    match namespace {
        HostNamespace::Network => "network (its interfaces, ports and local services)",
        HostNamespace::Ipc => "IPC namespace (its shared memory)",
        HostNamespace::Pid => "processes",
        HostNamespace::Uts => "hostname",
        HostNamespace::Userns => "user namespace (no remapping of the container's root)",
        HostNamespace::Cgroupns => "cgroup tree",
    }
}

/// A granted path, resolved on this machine.
fn resolve_grant(grant: &VolumeGrant) -> Result<Grant, String> {
    let written = grant.path();
    let resolved = std::fs::canonicalize(written).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{} does not exist on this machine: create it, or take it off the list",
            written.display()
        ),
        _ => format!("{} cannot be resolved: {e}", written.display()),
    })?;
    Ok(Grant {
        written: written.to_path_buf(),
        resolved,
        writable: grant.writable(),
    })
}

/// `path` with `.` and `..` taken out as text (no symlinks followed);
/// `None` unless absolute.
fn lexically_normal(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(part) => normal.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(normal)
}

/// True when resolved host path `path` is an engine socket or a directory
/// above one.
fn exposes_engine(path: &Path) -> bool {
    ENGINE_SOCKETS
        .iter()
        .any(|socket| Path::new(socket).starts_with(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy granting `grants` (path relative to `root`, writable).
    fn policy(root: &Path, grants: &[(&str, bool)]) -> ContainerPolicy {
        let settings = LocalContainerSettings {
            volumes: grants
                .iter()
                .map(|(path, write)| VolumeGrant::Full {
                    path: root.join(path),
                    write: *write,
                })
                .collect(),
            ..LocalContainerSettings::default()
        };
        ContainerPolicy::compile(Some(&settings), Origin::EveryQueue).unwrap()
    }

    fn refused(policy: &ContainerPolicy, path: &Path, write: Option<bool>) -> String {
        match policy.check_host_path(path.to_str().unwrap(), write, "q") {
            Ok(ok) => panic!("{} accepted: {ok:?}", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn nothing_granted_refuses_every_host_path_without_looking() {
        let policy = ContainerPolicy::default();
        for path in ["/etc", "/", "/proc/self/root", "/no/such/path", "/tmp"] {
            let message = refused(&policy, Path::new(path), None);
            assert!(message.contains("grants none"), "{message}");
            assert!(
                message.contains("`runners.local-container.volumes` (every queue)"),
                "{message}"
            );
            assert!(!message.contains("exist"), "{message}");
        }
    }

    #[test]
    fn paths_below_a_read_only_grant_are_mounted_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data/set")).unwrap();
        let policy = policy(&root, &[("data", false)]);
        for write in [None, Some(false)] {
            let ok = policy
                .check_host_path(root.join("data/set").to_str().unwrap(), write, "q")
                .unwrap();
            assert_eq!(ok.resolved, root.join("data/set"));
            assert!(ok.read_only);
        }
        let message = refused(&policy, &root.join("data"), Some(true));
        assert!(message.contains("read-only"), "{message}");
        assert!(message.contains("write: true"), "{message}");
    }

    #[test]
    fn symlinks_and_dot_dots_are_judged_where_they_lead() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data/etc")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("data/up")).unwrap();
        std::os::unix::fs::symlink("/", root.join("data/root")).unwrap();
        let policy = policy(&root, &[("data", false)]);
        for (path, resolves_to) in [
            (root.join("data/etc"), PathBuf::from("/etc")),
            (root.join("data/up"), root.join("secret")),
            (root.join("data/root"), PathBuf::from("/")),
        ] {
            let message = refused(&policy, &path, None);
            assert!(
                message.contains(&format!("resolves to {}", resolves_to.display())),
                "{message}"
            );
        }
        // `..` out of the grant is refused before the path is looked at.
        let message = refused(&policy, &root.join("data/../secret"), None);
        assert!(message.contains("not allowed"), "{message}");
        assert!(!message.contains("resolves"), "{message}");
    }

    #[test]
    fn a_writable_grant_is_mounted_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("scratch/run1")).unwrap();
        let policy = policy(&root, &[("scratch", true)]);
        let whole = policy
            .check_host_path(root.join("scratch").to_str().unwrap(), None, "q")
            .unwrap();
        assert!(!whole.read_only);
        let ro = policy
            .check_host_path(root.join("scratch").to_str().unwrap(), Some(false), "q")
            .unwrap();
        assert!(ro.read_only);
        let message = refused(&policy, &root.join("scratch/run1"), None);
        assert!(message.contains("inside the writable grant"), "{message}");
    }

    #[test]
    fn missing_paths_are_refused_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        let policy = policy(&root, &[("data", false)]);
        let message = refused(&policy, &root.join("data/new"), None);
        assert!(message.contains("does not exist"), "{message}");
        assert!(!root.join("data/new").exists());
    }

    #[test]
    fn grants_are_checked_at_compile_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("scratch/in")).unwrap();
        std::os::unix::fs::symlink(root.join("scratch/in"), root.join("alias")).unwrap();
        let compile = |grants: Vec<VolumeGrant>| {
            let settings = LocalContainerSettings {
                volumes: grants,
                ..LocalContainerSettings::default()
            };
            ContainerPolicy::compile(Some(&settings), Origin::Queue("q".into()))
                .unwrap_err()
                .to_string()
        };
        let missing = compile(vec![VolumeGrant::Path(root.join("nope"))]);
        assert!(
            missing.contains("runners.queues.q.local-container.volumes"),
            "{missing}"
        );
        assert!(missing.contains("does not exist"), "{missing}");
        // A read-only grant that is, through a symlink, inside a writable one.
        let nested = compile(vec![
            VolumeGrant::Full {
                path: root.join("scratch"),
                write: true,
            },
            VolumeGrant::Path(root.join("alias")),
        ]);
        assert!(nested.contains("inside the writable grant"), "{nested}");
    }

    #[test]
    fn the_engine_socket_is_refused_even_when_granted() {
        let policy = ContainerPolicy {
            grants: vec![Grant {
                written: "/".into(),
                resolved: "/".into(),
                writable: false,
            }],
            ..ContainerPolicy::default()
        };
        assert!(refused(&policy, Path::new("/"), None).contains("engine"));
        assert!(!policy.warnings().is_empty());
    }

    #[test]
    fn namespaces_need_their_name_granted() {
        let mut policy = ContainerPolicy::default();
        for ns in HostNamespace::ALL {
            let message = policy.check_namespace(ns.name(), "host", "q").unwrap_err();
            assert!(
                message.contains(&format!("add `{}`", ns.name())),
                "{message}"
            );
            assert!(message.contains("host_namespaces"), "{message}");
            assert!(
                policy
                    .check_namespace(ns.name(), "container:x", "q")
                    .is_err()
            );
        }
        policy.namespaces.insert(HostNamespace::Network);
        assert!(policy.check_namespace("network", "host", "q").is_ok());
        assert!(policy.check_namespace("ipc", "host", "q").is_err());
        assert!(
            policy
                .check_namespace("network", "container:x", "q")
                .is_err()
        );
        assert!(policy.check_namespace("network", "bridge", "q").is_ok());
    }

    #[test]
    fn lexical_normal_form() {
        assert_eq!(
            lexically_normal(Path::new("/a/./b/../c")),
            Some("/a/c".into())
        );
        assert_eq!(lexically_normal(Path::new("/../..")), Some("/".into()));
        assert_eq!(lexically_normal(Path::new("rel")), None);
    }
}
