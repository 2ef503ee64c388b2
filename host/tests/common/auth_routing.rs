//! What the `auth: environment` tests share: a server that records the
//! requests reaching it, and loading a plugin with a config entry.

use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A server on 127.0.0.1 answering 200 to everything and keeping each
/// request's head (lowercased).
pub fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = super::http_fake::read_request_text(&mut stream);
            kept.lock().unwrap().push(request.to_lowercase());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, heads)
}

/// Loads `path` as plugin `name` with the `plugins:` entry lines
/// `entry_yaml` (indented under the entry).
pub async fn load(
    host: &mut PluginHost,
    name: &str,
    path: &Path,
    entry_yaml: &str,
) -> Arc<LoadedPlugin> {
    let yaml = format!(
        "plugins:\n  {name}:\n    path: {}\n{entry_yaml}",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("test.yaml")).expect("config");
    host.load(name, path, &config.plugins[name], &config.secrets)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}
