//! `launch-agent plugins list`, `plugins inspect`, `plugins new` (in
//! [`new`](self::new)), `plugins call` (in
//! [`super::plugins_call`]), and (in [`oci`](self::oci)) `plugins push` and
//! `plugins pull`.

#[path = "plugins_new.rs"]
mod new;
#[path = "plugins_oci.rs"]
mod oci;

use launch_agent::plugins::PluginHost;
use launch_agent::startup;
use launch_agent::state_dir::StateDir;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `plugins`' subcommands.
#[derive(clap::Subcommand)]
pub(super) enum PluginsCommand {
    /// The plugins a config loads: name, kind, version, WIT version, origin, sha256, grants.
    List {
        /// The config file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// A dir whose plugin files override the default bundle's embedded ones.
        #[arg(long, env = "LAUNCH_AGENT_PLUGIN_DIR")]
        plugin_dir: Option<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call one export of a plugin and print its answer and every host call it made.
    Call {
        /// The plugin: a `plugins:` entry with a `path`, or a bundled plugin (`oci`, `docker`, ...).
        name: String,
        /// The export, as the WIT names it: info, verify, repository-uri, image-exists, login.
        export: String,
        /// The settings (JSON); default: the config's block of the plugin's kind when it names it.
        #[arg(long)]
        settings: Option<String>,
        /// An argument of the export after the settings (`image-exists` takes the image); repeatable.
        #[arg(long = "arg")]
        args: Vec<String>,
        /// The config file (grants, secrets, `plugins:` entries).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// A dir whose plugin files override the default bundle's embedded ones.
        #[arg(long, env = "LAUNCH_AGENT_PLUGIN_DIR")]
        plugin_dir: Option<PathBuf>,
        /// Grant an outbound destination (`scheme://host[:port]`) on top of the config's; repeatable.
        #[arg(long = "grant-host")]
        grant_hosts: Vec<String>,
        /// Grant an environment variable on top of the config's; repeatable.
        #[arg(long = "grant-env")]
        grant_env: Vec<String>,
        /// Grant a secret of the config's `secrets:` on top of the config's grants; repeatable.
        #[arg(long = "grant-secret")]
        grant_secrets: Vec<String>,
    },
    /// Load one component file and describe it.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish a component to an OCI registry (as a Wasm component
    /// artifact), optionally with a cosign signature.
    Push(oci::PushArgs),
    /// Write a new plugin crate (registry, builder or environment) that builds as it is.
    New(new::NewArgs),
    /// Pull (and check) the config's `oci` plugins now; `--update` follows
    /// their tags to what the registry holds today.
    Pull(oci::PullArgs),
}

/// Runs one `plugins` subcommand.
pub(super) async fn plugins(
    state_arg: Option<&Path>,
    command: PluginsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::List {
            config,
            plugin_dir,
            json,
        } => {
            let config = super::load_config(config.as_deref())?;
            let state = StateDir::resolve(state_arg, Some(&config));
            let host = startup::load_plugins(&config, plugin_dir.as_deref(), &state).await?;
            print_plugins(&host, json)?;
        }
        PluginsCommand::Call {
            name,
            export,
            settings,
            args,
            config,
            plugin_dir,
            grant_hosts,
            grant_env,
            grant_secrets,
        } => {
            let args = super::plugins_call::CallArgs {
                name,
                export,
                settings,
                args,
                config,
                plugin_dir,
                grant_hosts,
                grant_env,
                grant_secrets,
            };
            return super::plugins_call::call(state_arg, args).await;
        }
        PluginsCommand::New(args) => return new::run(args),
        PluginsCommand::Push(args) => return oci::push(args).await,
        PluginsCommand::Pull(args) => return oci::pull(state_arg, args).await,
        PluginsCommand::Inspect { file, json } => {
            let state = StateDir::resolve(state_arg, None);
            let mut host = PluginHost::new(
                &state.plugin_cache(),
                launch_agent::config::Limits::default().memory_mb,
            )?;
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            host.load(&name, &file, &Default::default(), &Default::default())
                .await?;
            print_plugins(&host, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plugins(host: &PluginHost, json: bool) -> anyhow::Result<()> {
    let plugins: Vec<_> = host.all().map(|p| p.description().clone()).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    for p in plugins {
        println!("{} ({} plugin)", p.name, p.kind);
        println!(
            "  plugin:      {} {}  {}",
            p.plugin_name, p.version, p.description
        );
        println!("  wit:         launch:plugin@{}", p.wit_version);
        let kind = if p.uses_wasi {
            "WASI 0.2"
        } else {
            "lean, no WASI"
        };
        println!("  imports:     ({kind}) {}", p.imports.join(", "));
        println!("  origin:      {}", p.origin);
        println!("  file:        {}", p.path.display());
        println!("  sha256:      {}", p.sha256);
        if let Some(key) = &p.signed_by {
            println!("  signature:   verified with {}", key.display());
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        println!("  hosts:       {}", list(&p.hosts));
        if !p.environment_auth.is_empty() {
            println!("  auth: environment: {}", list(&p.environment_auth));
        }
        if !p.blob_stores.is_empty() {
            println!("  blob stores: {}", list(&p.blob_stores));
        }
        println!("  env:         {}", list(&p.env));
        println!("  secrets:     {}", list(&p.secrets));
        println!("  dirs:        {}", list(&p.dirs));
        println!(
            "  docker:      {}",
            match (p.docker, p.build_network) {
                (true, true) => "granted, build steps with network (build_network: true)",
                (true, false) => "granted, build steps without network",
                _ => "(none)",
            }
        );
        println!("  kubernetes:  {}", list(&p.kubernetes));
        println!(
            "  limits:      {} ms of its own running time per call, {} ms in all, {} MiB",
            p.deadline_ms, p.timeout_ms, p.memory_mb
        );
    }
    Ok(())
}
