//! `launch-agent plugins new`: writes a plugin crate that builds as it is.
//!
//! Why: a plugin author's first hour goes on the target, the stack-size
//! flag, the SDK dependency and the shape of the traits. The template gets
//! all of them right, outside any workspace, with a unit test and a README
//! saying how to build, configure, grant and test the plugin.
//!
//! | file written | from |
//! |---|---|
//! | `Cargo.toml` | `plugin_templates/Cargo.toml.tmpl` (its own `[workspace]`, the SDK from `--sdk`, `--sdk-git`, or this agent's checkout) |
//! | `.cargo/config.toml` | `plugin_templates/cargo-config.toml.tmpl` (target wasm32-wasip2, 128 KiB stack) |
//! | `src/lib.rs` | `plugin_templates/{registry,builder,environment}.rs.tmpl` |
//! | `README.md` | `plugin_templates/README.md.tmpl` with a config example for the kind |
//! | `.gitignore` | `plugin_templates/gitignore.tmpl` |
//!
//! Placeholders are `{{name}}` (the crate and plugin name), `{{crate}}` (the
//! name with `_` for `-`: the `.wasm` file's stem), `{{kind}}`,
//! `{{env_prefix}}`, `{{sdk_dependency}}`, `{{config_example}}` and
//! `{{call_example}}`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The kinds of plugin a template exists for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(in crate::cli) enum Kind {
    /// `registry.type`: where images go, whether one exists, the login.
    Registry,
    /// `builder.type`: turns a job into an image.
    Builder,
    /// `environment.type`: the variables (and checks) of the place jobs run.
    Environment,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Registry => "registry",
            Kind::Builder => "builder",
            Kind::Environment => "environment",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Kind::Registry => include_str!("plugin_templates/registry.rs.tmpl"),
            Kind::Builder => include_str!("plugin_templates/builder.rs.tmpl"),
            Kind::Environment => include_str!("plugin_templates/environment.rs.tmpl"),
        }
    }
}

/// `plugins new`'s arguments.
#[derive(clap::Args)]
pub(in crate::cli) struct NewArgs {
    /// The kind of plugin.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The plugin's (and its crate's) name: lowercase letters, digits and `-`.
    name: String,
    /// Where to write the crate (default: `./NAME`); must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The SDK as a path dependency: a `plugins/sdk` directory.
    #[arg(long, conflicts_with = "sdk_git")]
    sdk: Option<PathBuf>,
    /// The SDK as a git dependency: the launch-agent repository's URL.
    #[arg(long)]
    sdk_git: Option<String>,
}

/// Runs `plugins new`.
pub(in crate::cli) fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: give `--dir` a new directory",
            dir.display()
        );
    }
    let sdk_dependency = sdk_dependency(args.sdk.as_deref(), args.sdk_git.as_deref())?;
    std::fs::create_dir_all(dir.join("src"))
        .and_then(|()| std::fs::create_dir_all(dir.join(".cargo")))
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let values = Values::new(args.kind, &args.name, &dir, sdk_dependency);
    let files: [(&str, &str); 5] = [
        (
            "Cargo.toml",
            include_str!("plugin_templates/Cargo.toml.tmpl"),
        ),
        (
            ".cargo/config.toml",
            include_str!("plugin_templates/cargo-config.toml.tmpl"),
        ),
        ("src/lib.rs", args.kind.source()),
        ("README.md", include_str!("plugin_templates/README.md.tmpl")),
        (
            ".gitignore",
            include_str!("plugin_templates/gitignore.tmpl"),
        ),
    ];
    for (path, template) in files {
        let path = dir.join(path);
        std::fs::write(&path, values.fill(template))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote the {kind} plugin {name} in {dir}\n\
         build it:  cd {dir} && cargo build --release\n\
         its README says how to configure, grant and test it",
        kind = args.kind.as_str(),
        name = args.name,
        dir = dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// A crate name cargo and the config's keys accept.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !ok {
        bail!(
            "plugin name {name:?}: use lowercase letters, digits and `-`, starting with a letter (at most 64)"
        );
    }
    Ok(())
}

/// The `launch-plugin-sdk = ...` line of the crate's `Cargo.toml`.
fn sdk_dependency(path: Option<&Path>, git: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = git {
        return Ok(format!(
            "launch-plugin-sdk = {{ git = {} }}",
            toml_string(url)
        ));
    }
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => {
            // The checkout this agent was built from, when it is still there.
            let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
            if !checkout.join("Cargo.toml").is_file() {
                bail!(
                    "say where the guest SDK is: `--sdk PATH` (a launch-agent checkout's plugins/sdk) \
                     or `--sdk-git URL` (the launch-agent repository)"
                );
            }
            checkout
        }
    };
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "--sdk {}: no Cargo.toml there (give the SDK's directory, plugins/sdk in a checkout)",
            path.display()
        );
    }
    let path = std::fs::canonicalize(&path).with_context(|| format!("--sdk {}", path.display()))?;
    Ok(format!(
        "launch-plugin-sdk = {{ path = {} }}",
        toml_string(&path.to_string_lossy())
    ))
}

/// `s` as a TOML basic string: a JSON string is one (the same escapes,
/// `\uXXXX` for control characters).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The placeholders' values.
struct Values {
    pairs: Vec<(&'static str, String)>,
}

impl Values {
    fn new(kind: Kind, name: &str, dir: &Path, sdk_dependency: String) -> Self {
        let crate_name = name.replace('-', "_");
        let wasm = dir
            .join("target/wasm32-wasip2/release")
            .join(format!("{crate_name}.wasm"));
        let wasm = wasm.display();
        let (config_example, call_example) = match kind {
            Kind::Registry => (
                format!(
                    "registry:\n  type: {name}\n  uri: registry.example.com/team/launch\n\
                     secrets:\n  registry-password: {{ env: REGISTRY_PASSWORD }}\n\
                     plugins:\n  {name}:\n    path: {wasm}\n\
                     \x20   config: {{ username: launch, password-secret: registry-password }}\n\
                     \x20   grants:\n      hosts: [\"https://registry.example.com\"]\n\
                     \x20     secrets: [registry-password]"
                ),
                format!(
                    "launch-agent plugins call {name} image-exists --config launch-config.yaml \
                     --arg registry.example.com/team/launch:v1"
                ),
            ),
            Kind::Builder => (
                format!(
                    "builder:\n  type: {name}\n\
                     registry:\n  type: oci\n  uri: registry.example.com/team/launch\n\
                     plugins:\n  {name}:\n    path: {wasm}\n\
                     \x20   config: {{ base: \"python:3.11-slim\" }}\n\
                     \x20   grants:\n      docker: true\n\
                     \x20     hosts: [\"https://registry-1.docker.io\", \"https://auth.docker.io\"]"
                ),
                "# a builder's plan and build run in a job: `launch-agent run` with a job that needs an image"
                    .to_string(),
            ),
            Kind::Environment => (
                format!(
                    "environment:\n  type: {name}\n\
                     plugins:\n  {name}:\n    path: {wasm}\n\
                     \x20   config: {{ region: eu-west-1 }}"
                ),
                format!("launch-agent plugins call {name} verify --config launch-config.yaml"),
            ),
        };
        let env_prefix = name.to_ascii_uppercase().replace('-', "_");
        Values {
            pairs: vec![
                ("{{name}}", name.to_string()),
                ("{{crate}}", crate_name),
                ("{{kind}}", kind.as_str().to_string()),
                ("{{env_prefix}}", env_prefix),
                ("{{sdk_dependency}}", sdk_dependency),
                ("{{config_example}}", config_example),
                ("{{call_example}}", call_example),
            ],
        }
    }

    fn fill(&self, template: &str) -> String {
        self.pairs
            .iter()
            .fold(template.to_string(), |text, (key, value)| {
                text.replace(key, value)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-registry2").is_ok());
        for bad in ["", "My", "1st", "a_b", "a/b", "a b"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("lowercase"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for kind in [Kind::Registry, Kind::Builder, Kind::Environment] {
            let values = Values::new(kind, "my-plugin", Path::new("/x"), "sdk = 1".into());
            for template in [
                kind.source(),
                include_str!("plugin_templates/README.md.tmpl"),
                include_str!("plugin_templates/Cargo.toml.tmpl"),
            ] {
                let text = values.fill(template);
                assert!(!text.contains("{{name}}") && !text.contains("{{crate}}"));
                assert!(!text.contains("{{kind}}") && !text.contains("{{sdk_dependency}}"));
                assert!(!text.contains("{{env_prefix}}") && !text.contains("_example}}"));
            }
        }
    }

    #[test]
    fn a_git_sdk_is_quoted() {
        assert_eq!(
            sdk_dependency(None, Some("https://h/x \"y\".git")).unwrap(),
            r#"launch-plugin-sdk = { git = "https://h/x \"y\".git" }"#
        );
        let e = sdk_dependency(Some(Path::new("/nonexistent")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Cargo.toml"), "{e}");
    }
}
