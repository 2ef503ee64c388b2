//! `launch-agent plugins push` and `plugins pull`: plugins as OCI artifacts
//! ([`launch_agent::plugins::oci_source`]).
//!
//! ```sh
//! launch-agent plugins push my-registry.wasm registry.example.com/plugins/my-registry:1.0 \
//!     --username bot --password-env REGISTRY_PASSWORD --sign signing-key.pem
//! launch-agent plugins pull --config launch-config.yaml --update
//! ```

use launch_agent::plugins::oci_source::{self, OciCache, RegistryAccess};
use launch_agent::plugins::signature::SigningKey;
use launch_agent::startup;
use launch_agent::state_dir::StateDir;
use oci_client::secrets::RegistryAuth;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `plugins push`'s arguments.
#[derive(clap::Args)]
pub(crate) struct PushArgs {
    /// The component file (`.wasm`).
    file: PathBuf,
    /// Where to push it: `REGISTRY/REPOSITORY:TAG`.
    reference: String,
    /// The registry user (anonymous without one).
    #[arg(long)]
    username: Option<String>,
    /// The environment variable holding the registry password or token.
    #[arg(long, requires = "username")]
    password_env: Option<String>,
    /// Plain HTTP instead of HTTPS (a registry on this machine).
    #[arg(long)]
    insecure: bool,
    /// Sign it: an unencrypted ECDSA P-256 key in PKCS#8 PEM; the signature
    /// is stored as cosign stores it.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
}

/// `plugins pull`'s arguments.
#[derive(clap::Args)]
pub(crate) struct PullArgs {
    /// The config file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Resolve tags again, even those the state dir has a digest for.
    #[arg(long)]
    update: bool,
}

/// `plugins push FILE REF`: prints `REF@DIGEST`.
pub(super) async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let reference = oci_source::parse_reference(&args.reference).map_err(anyhow::Error::msg)?;
    if reference.digest().is_some() {
        anyhow::bail!("push to a tag (`:TAG`), not a digest: the registry gives the digest");
    }
    let wasm = std::fs::read(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    if !wasm.starts_with(b"\0asm") {
        anyhow::bail!("{} is not WebAssembly", args.file.display());
    }
    let signing_key = args
        .sign
        .as_deref()
        .map(SigningKey::read)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let auth = match &args.username {
        None => RegistryAuth::Anonymous,
        Some(user) => {
            let password = match &args.password_env {
                Some(var) => std::env::var(var).map_err(|_| {
                    anyhow::anyhow!("--password-env: environment variable {var} is not set")
                })?,
                None => String::new(),
            };
            RegistryAuth::Basic(user.clone(), password)
        }
    };
    let access = RegistryAccess::with_auth(&reference, args.insecure, auth);
    let digest = oci_source::push(wasm, &reference, &access, signing_key.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    );
    if let Some(key) = &args.sign {
        eprintln!("signed with {}", key.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `plugins pull`: pulls and checks every `oci` plugin of the config.
pub(super) async fn pull(state_arg: Option<&Path>, args: PullArgs) -> anyhow::Result<ExitCode> {
    let config = super::super::load_config(args.config.as_deref())?;
    let state = StateDir::resolve(state_arg, Some(&config));
    let cache = OciCache::new(state.oci_plugins());
    let mut pulled = 0;
    for (name, entry) in &config.plugins {
        if entry.oci.is_none() {
            continue;
        }
        let source = startup::pull(&config, name, &cache, args.update).await?;
        println!("{name}\t{source}");
        pulled += 1;
    }
    if pulled == 0 {
        eprintln!("the config has no `oci` plugins");
    }
    Ok(ExitCode::SUCCESS)
}
