//! `launch-agent deploy coreweave`: run this agent on a CoreWeave cluster.
//!
//! The bundled deployer `deployer-coreweave` renders the objects from the
//! launch-config.yaml and the flags ([`launch_agent::deploy`]); this
//! command adds the API key's Secret and applies them to the cluster of the
//! kubeconfig (or in-cluster service account), prints them (`--dry-run`),
//! or deletes what an earlier apply made (`--delete`).
//!
//! | flag | default | |
//! |---|---|---|
//! | `-c`, `--config` | `~/.config/wandb/launch-config.yaml` | the config the agent runs with |
//! | `--image` | required (but for `--delete`) | the agent's image (`scripts/build-agent-image.sh`) |
//! | `--name`, `--namespace` | `launch-agent`, `wandb` | what the objects are called and where the agent runs |
//! | `--target-namespace` | the agent's and `default` | where its jobs may run (repeatable; must exist) |
//! | `--region`, `--gpu-class` | none | node affinity for the agent and its jobs (`--gpu-class` repeatable) |
//! | `--base-url` | `WANDB_BASE_URL`, else `https://api.wandb.ai` | the W&B server |
//! | `--api-key-file` | `WANDB_API_KEY` | the W&B API key (a file, `-` for stdin); never from the config |
//! | `--api-key-secret` | none | use this existing Secret (key `password`) and make none |
//! | `--dry-run` | | print the YAML for `kubectl apply -f -` (without the key's Secret) |
//! | `--wait`, `--timeout` | 300 s | wait until the Deployment has an available replica |
//! | `--delete` | | remove what this `--name`/`--namespace` applied, and nothing else |
//! | `--context` | the current | the kubeconfig context |

use anyhow::{Context as _, anyhow, bail};
use launch_agent::config::LaunchConfig;
use launch_agent::deploy::{self, apply};
use launch_agent::plugins::{PluginHost, PluginSource, bundle};
use launch_agent::state_dir::StateDir;
use serde_json::{Value, json};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `deploy`'s targets.
#[derive(clap::Subcommand)]
pub(super) enum DeployCommand {
    /// Run this agent on a CoreWeave Kubernetes cluster (as the W&B chart deploys it).
    Coreweave(CoreweaveArgs),
}

/// `deploy coreweave`'s flags (see the module doc).
#[derive(clap::Args)]
pub(super) struct CoreweaveArgs {
    /// The config the deployed agent runs with (default: ~/.config/wandb/launch-config.yaml).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The agent's image, as scripts/build-agent-image.sh builds it.
    #[arg(long)]
    image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[arg(long, default_value = "IfNotPresent")]
    image_pull_policy: String,
    /// The objects' name.
    #[arg(long, default_value = "launch-agent")]
    name: String,
    /// The agent's namespace (made when missing).
    #[arg(long, default_value = "wandb")]
    namespace: String,
    /// A namespace its jobs may run in (repeatable; default: the agent's and `default`).
    #[arg(long = "target-namespace")]
    target_namespaces: Vec<String>,
    /// The CoreWeave region (`topology.kubernetes.io/region`), e.g. ORD1.
    #[arg(long)]
    region: Option<String>,
    /// A GPU class for its jobs (`gpu.nvidia.com/class`), e.g. A100_NVLINK_80GB (repeatable).
    #[arg(long = "gpu-class")]
    gpu_classes: Vec<String>,
    /// The W&B server.
    #[arg(long, env = "WANDB_BASE_URL", default_value = "https://api.wandb.ai")]
    base_url: String,
    /// A file holding the W&B API key (`-`: stdin); else WANDB_API_KEY.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// An existing Secret (key `password`) holding the API key: none is made.
    #[arg(long)]
    api_key_secret: Option<String>,
    /// The build-context volume's size (with `builder.type: kaniko`).
    #[arg(long, default_value = "100Gi")]
    kaniko_pvc_size: String,
    /// The build-context volume's storage class (ReadWriteMany).
    #[arg(long)]
    storage_class: Option<String>,
    /// Print the objects as YAML for `kubectl apply -f -`, without the key's Secret.
    #[arg(long, conflicts_with_all = ["delete", "wait"])]
    dry_run: bool,
    /// Wait until the Deployment has an available replica.
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` waits.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Delete what an earlier `deploy coreweave` with this --name and --namespace applied.
    #[arg(long)]
    delete: bool,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
}

/// The deployer plugin's file in the bundle.
const DEPLOYER: &str = "deployer-coreweave.wasm";

/// Runs `deploy <target>`.
pub(super) async fn deploy(
    state_arg: Option<&Path>,
    command: DeployCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        DeployCommand::Coreweave(args) => coreweave(state_arg, args).await,
    }
}

async fn coreweave(state_arg: Option<&Path>, args: CoreweaveArgs) -> anyhow::Result<ExitCode> {
    if args.delete {
        let cluster = launch_agent::clients::kube::connect(args.context.as_deref()).await?;
        let owner = deploy::Ownership {
            name: args.name.clone(),
            namespace: args.namespace.clone(),
            target: "coreweave".into(),
        };
        let report = apply::delete(&cluster.client, &owner).await?;
        if report.is_empty() {
            eprintln!(
                "deploy coreweave --delete: nothing labelled {} was found",
                owner.selector()
            );
        }
        for line in report {
            eprintln!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config_path = match &args.config {
        Some(path) => path.clone(),
        None => dirs::home_dir()
            .map(|h| h.join(".config/wandb/launch-config.yaml"))
            .filter(|p| p.is_file())
            .ok_or_else(|| anyhow!("no config: give the agent's launch-config.yaml with --config (~/.config/wandb/launch-config.yaml does not exist)"))?,
    };
    // The agent's own checks first: what it would refuse at start-up is
    // refused here, with its location.
    let config = LaunchConfig::load(&config_path)?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config_json: Value = if launch_agent::input::is_blank(&text) {
        json!({})
    } else {
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", config_path.display()))?
    };
    let image = args
        .image
        .clone()
        .ok_or_else(|| anyhow!("--image is required: the agent's image (build it with scripts/build-agent-image.sh and push it where the cluster pulls from)"))?;
    let (secret, make_secret) = match &args.api_key_secret {
        Some(name) => (name.clone(), false),
        None => (format!("{}-wandb-api-key", args.name), true),
    };
    let api_key = if make_secret && !args.dry_run {
        Some(api_key(args.api_key_file.as_deref())?)
    } else {
        None
    };
    let mut settings = json!({
        "name": args.name,
        "namespace": args.namespace,
        "image": image,
        "image_pull_policy": args.image_pull_policy,
        "gpu_classes": args.gpu_classes,
        "base_url": args.base_url,
        "api_key_secret": secret,
        "kaniko_pvc_size": args.kaniko_pvc_size,
        "config_path": config_path.display().to_string(),
    });
    if !args.target_namespaces.is_empty() {
        settings["target_namespaces"] = json!(args.target_namespaces);
    }
    if let Some(region) = &args.region {
        settings["region"] = json!(region);
    }
    if let Some(class) = &args.storage_class {
        settings["storage_class"] = json!(class);
    }

    let state = StateDir::resolve(state_arg, Some(&config));
    let mut host = PluginHost::new(
        &state.plugin_cache(),
        launch_agent::config::Limits::default().memory_mb,
    )?;
    let embedded = bundle::embedded(DEPLOYER)
        .ok_or_else(|| anyhow!("this build of the agent does not embed {DEPLOYER}"))?;
    let deployer = host
        .load_from(
            "coreweave",
            &PluginSource::Embedded(embedded),
            &Default::default(),
            &Default::default(),
        )
        .await?;
    let rendered = deploy::render(
        &deployer,
        "coreweave",
        &text,
        &config_json,
        &settings,
        (secret, make_secret),
    )
    .await
    .map_err(|e| anyhow!("deploy coreweave: {e:#}"))?;

    if args.dry_run {
        print!(
            "{}",
            deploy::yaml::dry_run(&rendered, "launch-agent deploy coreweave --dry-run")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let objects = rendered.with_api_key(api_key.as_deref().unwrap_or_default());
    let cluster = launch_agent::clients::kube::connect(args.context.as_deref()).await?;
    let report = apply::apply(
        &cluster.client,
        &rendered.ownership,
        &objects,
        &rendered.target_namespaces(),
    )
    .await?;
    for line in report {
        eprintln!("{line}");
    }
    if args.wait {
        apply::wait_available(
            &cluster.client,
            &args.namespace,
            &args.name,
            Duration::from_secs(args.timeout),
        )
        .await?;
        eprintln!("Deployment {}/{}: available", args.namespace, args.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// The W&B API key: `--api-key-file` (`-`: stdin), else `WANDB_API_KEY`;
/// the error says where it looked, never a value.
fn api_key(file: Option<&Path>) -> anyhow::Result<String> {
    let key = match file {
        Some(path) if path == Path::new("-") => {
            let mut key = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut key)
                .context("reading the API key from stdin (--api-key-file -)")?;
            key
        }
        Some(path) => launch_agent::input::read_capped(path)
            .map_err(|e| anyhow!("--api-key-file {}: {e}", path.display()))
            .and_then(|b| {
                String::from_utf8(b)
                    .map_err(|_| anyhow!("--api-key-file {}: not UTF-8 text", path.display()))
            })?,
        None => std::env::var("WANDB_API_KEY").unwrap_or_default(),
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!(
            "no W&B API key: set WANDB_API_KEY, or give --api-key-file FILE, or --api-key-secret NAME for a Secret that holds it (the config file never holds it)"
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the W&B API key (from {}) holds whitespace",
            file.map_or("WANDB_API_KEY".into(), |p| p.display().to_string())
        );
    }
    Ok(key)
}
