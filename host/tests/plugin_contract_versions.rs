//! The host speaks both contract versions: a plugin built against the
//! frozen `launch:plugin@0.1.0` (`wit/0.1/`) still loads, its calls work,
//! and its imports reach the current capabilities (with their grants)
//! through the adapter; the bundled plugins are built against 0.2.

mod common;
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost, PluginKind};
use std::path::Path;
use std::sync::Arc;

async fn load_v0_1(state: &Path, grants_yaml: &str) -> Arc<LoadedPlugin> {
    let path = common::test_plugin("contract-v0-1");
    let yaml = format!(
        "plugins:\n  old:\n    path: {}\n{grants_yaml}",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    let mut host = PluginHost::new(&state.join("cache"), 128).expect("runtime");
    host.load("old", &path, &config.plugins["old"], &config.secrets)
        .await
        .expect("a 0.1 plugin loads")
}

#[tokio::test]
async fn a_plugin_built_against_0_1_loads_and_its_calls_and_imports_work() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = load_v0_1(dir.path(), "").await;
    let description = plugin.description();
    assert_eq!(description.wit_version, "0.1.0");
    assert_eq!(description.kind, PluginKind::Registry);
    assert!(
        description
            .imports
            .iter()
            .any(|i| i == "launch:plugin/secrets@0.1.0"),
        "{:?}",
        description.imports
    );
    let settings = r#"{"type":"old","uri":"127.0.0.1:9/team/app"}"#;
    // `log` through the adapter, then the export itself.
    assert_eq!(
        plugin.repository_uri(settings, None).await.unwrap(),
        "127.0.0.1:9/team/app"
    );
    // `secrets.mint` through the adapter: the host keeps the password,
    // bound to the repository.
    let login = plugin
        .login(settings, None)
        .await
        .unwrap()
        .expect("a login");
    assert_eq!(login.username, "v01");
    assert_eq!(login.password.value(), "v01-token");
    assert_eq!(
        login.password.scope().map(ToString::to_string).as_deref(),
        Some("127.0.0.1:9/team/app")
    );
    // `oci` through the adapter: the grants still decide (nothing granted).
    let refused = plugin
        .image_exists(settings, "127.0.0.1:9/team/app:v1", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("denied: true") && refused.contains("grants.hosts"),
        "{refused}"
    );
    // 0.2's additions are simply absent.
    assert!(!plugin.can_verify_registry());
}

#[tokio::test]
async fn the_bundled_plugins_are_built_against_0_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
    for file in [
        "registry-oci",
        "registry-ecr",
        "registry-gcr",
        "registry-acr",
        "environment-aws",
        "environment-local",
    ] {
        let path = common::bundle_dir().join(format!("{file}.wasm"));
        let plugin = host
            .load(file, &path, &Default::default(), &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(plugin.description().wit_version, "0.2.0", "{file}");
    }
}
