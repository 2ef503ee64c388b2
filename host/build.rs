//! Builds the default bundle and embeds it in the agent, so that one
//! `cargo build` or `cargo install --path host` gives a `launch-agent` that
//! runs its default plugins with no plugin dir.
//!
//! The bundle's crates are built by a nested `cargo build --release`, as
//! wasmtime's `test-programs` build script does, once per target:
//!
//! | target | plugins | why |
//! |---|---|---|
//! | `wasm32-unknown-unknown` | builder-noop, environment-local, registry-oci, registry-acr, deployer-coreweave | lean: no WASI imports, cheaper calls |
//! | `wasm32-wasip2` | builder-docker, builder-kaniko, environment-aws, registry-ecr, environment-gcp, environment-azure, registry-gcr | read files, environment variables, or make `wasi:http` requests |
//!
//! The nested cargo
//!
//! - runs in the workspace root, so the workspace's `Cargo.lock` and
//!   `.cargo/config.toml` (the plugins' stack size, the lean linker) apply;
//! - builds into `<target dir>/wasm-plugins`, never the outer target dir
//!   (the outer cargo holds its lock: sharing it would deadlock), and
//!   persistent across builds of the agent, so a warm target dir stays warm
//!   (`scripts/build-plugins.sh` builds into the same dir with the same
//!   commands, and shares the work);
//! - gets none of the outer build's settings (`CARGO_*` but the ones that
//!   say where and how to download, `RUSTFLAGS`, `RUSTC_WRAPPER`, the
//!   profile, the target...): the plugins build the same whatever builds
//!   the agent (`cargo clippy`, coverage, a cross build); it shares the
//!   outer cargo's job slots.
//!
//! The components are copied into `$OUT_DIR/bundle/` and a table of them,
//! with each one's sha256, is written to `$OUT_DIR/bundle.rs`, which
//! `src/plugins/bundle.rs` includes.
//!
//! Each component is also **precompiled** here, with the agent's own engine
//! configuration (`src/plugins/engine_config.rs`, included below), and the
//! machine code is embedded beside it with the engine's compatibility hash:
//! a first start with a fresh state dir then loads the bundle as fast as a
//! warm one, instead of compiling it (~0.2 CPU s). The agent uses that code
//! only when its own engine's hash is the same (same wasmtime, settings and
//! CPU features); otherwise it compiles, as before. A cross build (target ≠
//! host) embeds no precompiled code.

use sha2::{Digest, Sha256};

// `config` and `compatibility_hash`: the agent's engine settings.
include!("src/plugins/engine_config.rs");
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lean target: components that import nothing of WASI.
const LEAN: &str = "wasm32-unknown-unknown";
/// The WASI 0.2 target.
const WASI: &str = "wasm32-wasip2";

/// One plugin of the bundle: its package, the target it is built for, and
/// its file name in the bundle (as `src/plugins/catalog.rs` names it).
struct BundlePlugin {
    package: &'static str,
    target: &'static str,
    file: &'static str,
}

const BUNDLE: &[BundlePlugin] = &[
    BundlePlugin {
        package: "builder-noop",
        target: LEAN,
        file: "builder-noop.wasm",
    },
    BundlePlugin {
        package: "builder-docker",
        target: WASI,
        file: "builder-docker.wasm",
    },
    BundlePlugin {
        package: "builder-kaniko",
        target: WASI,
        file: "builder-kaniko.wasm",
    },
    BundlePlugin {
        package: "environment-local",
        target: LEAN,
        file: "environment-local.wasm",
    },
    BundlePlugin {
        package: "registry-oci",
        target: LEAN,
        file: "registry-oci.wasm",
    },
    BundlePlugin {
        package: "environment-aws",
        target: WASI,
        file: "environment-aws.wasm",
    },
    BundlePlugin {
        package: "registry-ecr",
        target: WASI,
        file: "registry-ecr.wasm",
    },
    BundlePlugin {
        package: "environment-gcp",
        target: WASI,
        file: "environment-gcp.wasm",
    },
    BundlePlugin {
        package: "environment-azure",
        target: WASI,
        file: "environment-azure.wasm",
    },
    BundlePlugin {
        package: "registry-gcr",
        target: WASI,
        file: "registry-gcr.wasm",
    },
    BundlePlugin {
        package: "registry-acr",
        target: LEAN,
        file: "registry-acr.wasm",
    },
    BundlePlugin {
        package: "deployer-coreweave",
        target: LEAN,
        file: "deployer-coreweave.wasm",
    },
];

/// What the bundle is built from, relative to the workspace root: a change
/// to any of it rebuilds the bundle.
const INPUTS: &[&str] = &[
    "plugins/builder-noop",
    "plugins/builder-common",
    "plugins/builder-docker",
    "plugins/builder-kaniko",
    "plugins/environment-local",
    "plugins/registry-oci",
    "plugins/environment-aws",
    "plugins/registry-ecr",
    "plugins/environment-gcp",
    "plugins/environment-azure",
    "plugins/registry-gcr",
    "plugins/registry-acr",
    "plugins/deployer-coreweave",
    "plugins/sdk",
    "wit",
    "host/src/plugins/engine_config.rs",
    "Cargo.toml",
    "Cargo.lock",
    ".cargo/config.toml",
];

/// The nested target dir's name, beside the outer build's profile dirs.
const NESTED_TARGET_DIR: &str = "wasm-plugins";

fn main() {
    if let Err(error) = run() {
        // One line per `cargo::error`; the nested cargo's own output, if
        // any, is shown above it.
        for line in error.lines() {
            println!("cargo::error={line}");
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("the host crate has no parent dir")?
        .to_path_buf();
    for input in INPUTS {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    if !root.join("plugins/sdk").is_dir() {
        return Err(format!(
            "the default bundle's sources are not in {}: build launch-agent from its repository \
             (`cargo install --path host` in a clone)",
            root.join("plugins").display()
        ));
    }
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let nested_target = nested_target_dir(&out_dir);

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_targets_installed(&rustc)?;

    for target in [LEAN, WASI] {
        let packages: Vec<&str> = BUNDLE
            .iter()
            .filter(|p| p.target == target)
            .map(|p| p.package)
            .collect();
        build(&root, &nested_target, target, &packages)?;
    }

    let bundle_dir = out_dir.join("bundle");
    std::fs::create_dir_all(&bundle_dir)
        .map_err(|e| format!("cannot create {}: {e}", bundle_dir.display()))?;
    let precompiler = precompiler()?;
    let mut table = format!(
        "/// The compatibility hash of the engine that precompiled the bundle's\n\
         /// code, if it was precompiled.\n\
         pub static PRECOMPILED_FOR: Option<&str> = {:?};\n\n\
         /// The default bundle's components, as this build of the agent embeds them.\n\
         pub static EMBEDDED: &[EmbeddedPlugin] = &[\n",
        precompiler.as_ref().map(compatibility_hash),
    );
    for plugin in BUNDLE {
        let built = nested_target
            .join(plugin.target)
            .join("release")
            .join(format!("{}.wasm", plugin.package.replace('-', "_")));
        let wasm = std::fs::read(&built)
            .map_err(|e| format!("the nested build did not produce {}: {e}", built.display()))?;
        // A copy of its own: `scripts/build-plugins.sh` may rewrite the
        // nested build's files, and the agent must not recompile for that.
        let embedded = bundle_dir.join(plugin.file);
        write_if_changed(&embedded, &wasm)?;
        let sha256: String = Sha256::digest(&wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let precompiled = match &precompiler {
            Some(engine) => {
                let code = engine.precompile_component(&wasm).map_err(|e| {
                    format!("precompiling {} for the agent's engine: {e:#}", plugin.file)
                })?;
                let path = bundle_dir.join(format!("{}.cwasm", plugin.file));
                write_if_changed(&path, &code)?;
                format!("Some(include_bytes!({:?}))", path.display().to_string())
            }
            None => "None".to_string(),
        };
        table.push_str(&format!(
            "    EmbeddedPlugin {{\n        file: {:?},\n        wasm: include_bytes!({:?}),\n        sha256: {sha256:?},\n        precompiled: {precompiled},\n    }},\n",
            plugin.file,
            embedded.display().to_string(),
        ));
    }
    table.push_str("];\n");
    write_if_changed(&out_dir.join("bundle.rs"), table.as_bytes())
}

/// The engine that precompiles the bundle, configured as the agent's, or
/// `None` for a cross build: code compiled for this machine would not run
/// on the target.
fn precompiler() -> Result<Option<wasmtime::Engine>, String> {
    if env("TARGET")? != env("HOST")? {
        return Ok(None);
    }
    wasmtime::Engine::new(&config(None))
        .map(Some)
        .map_err(|e| format!("creating the engine that precompiles the bundle: {e:#}"))
}

/// `<target dir>/wasm-plugins`, found from `$OUT_DIR`
/// (`<target dir>[/<triple>]/<profile>/build/launch-agent-<hash>/out`), or
/// `$OUT_DIR/wasm-plugins` in a layout this does not know.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let ancestors: Vec<&Path> = out_dir.ancestors().collect();
    let is_build_dir = ancestors
        .get(2)
        .is_some_and(|d| d.file_name().is_some_and(|n| n == "build"));
    let Some(mut target_dir) = ancestors.get(4).copied().filter(|_| is_build_dir) else {
        return out_dir.join(NESTED_TARGET_DIR);
    };
    // A build with `--target <triple>` has its profile dirs in `<triple>/`.
    if let Ok(triple) = std::env::var("TARGET")
        && target_dir.file_name().is_some_and(|n| *n == *triple)
        && let Some(parent) = target_dir.parent()
    {
        target_dir = parent;
    }
    target_dir.join(NESTED_TARGET_DIR)
}

/// Fails with the command to run when `rustc` lacks a wasm target.
fn check_targets_installed(rustc: &OsString) -> Result<(), String> {
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        // Let the nested build report what is wrong.
        return Ok(());
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !sysroot.is_dir() {
        return Ok(());
    }
    let missing: Vec<&str> = [WASI, LEAN]
        .into_iter()
        .filter(|t| !sysroot.join("lib/rustlib").join(t).is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "launch-agent embeds its default plugins, which are built for wasm32-wasip2 and \
         wasm32-unknown-unknown; this toolchain ({}) lacks {}.\n\
         Install them with: rustup target add wasm32-wasip2 wasm32-unknown-unknown",
        sysroot.display(),
        missing.join(" and ")
    ))
}

/// `cargo build --release --target <target> -p <package>...` in the
/// workspace root, into `nested_target`, with a clean environment.
fn build(root: &Path, nested_target: &Path, target: &str, packages: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", target])
        .arg("--target-dir")
        .arg(nested_target);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && is_outer_build_setting(name)
        {
            cmd.env_remove(name);
        }
    }
    eprintln!("building the default bundle: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "building the default bundle failed ({target}: {}): `cargo build` {status}; its output is above",
            packages.join(", ")
        ));
    }
    Ok(())
}

/// Whether the environment variable `name` is the outer build's (set by
/// the outer cargo for this script, or a setting of how it builds) rather
/// than one that says where and how to download or which toolchain to use.
fn is_outer_build_setting(name: &str) -> bool {
    const KEPT: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
    ];
    const REMOVED: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTDOC",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
    ];
    if name.starts_with("CARGO") || name.starts_with("__CARGO") {
        return !KEPT.iter().any(|k| name.starts_with(k));
    }
    REMOVED.contains(&name)
}

fn env(name: &str) -> Result<OsString, String> {
    std::env::var_os(name).ok_or_else(|| format!("cargo did not set {name}"))
}

/// Writes `bytes` to `path` unless it holds them already (an unchanged
/// file keeps its time, so the agent is not recompiled for nothing).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
