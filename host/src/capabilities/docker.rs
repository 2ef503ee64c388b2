//! `launch:plugin/docker`: the host's Docker engine for builder plugins.
//!
//! Granted by `grants.docker: true`. A build's context is always the
//! current job's source; pushes go only to registries in `grants.hosts`.

use crate::plugins::bindings::imports::launch::plugin::docker::{BuildSpec, DockerError, Host};
use crate::plugins::state::PluginState;
use crate::capabilities::secrets::SecretHandle;
use wasmtime::component::Resource;

fn denied(plugin: &str, operation: &str) -> DockerError {
    DockerError {
        operation: operation.to_string(),
        message: format!("plugin {plugin} is not granted the Docker engine (grants.docker: true)"),
        unauthorized: false,
        denied: true,
    }
}

impl Host for PluginState {
    async fn build(&mut self, _spec: BuildSpec) -> wasmtime::Result<Result<String, DockerError>> {
        Ok(Err(denied(&self.plugin_name, "build")))
    }

    async fn push(
        &mut self,
        _image: String,
        _username: Option<String>,
        _password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<(), DockerError>> {
        Ok(Err(denied(&self.plugin_name, "push")))
    }

    async fn image_exists(&mut self, _image: String) -> wasmtime::Result<Result<bool, DockerError>> {
        Ok(Err(denied(&self.plugin_name, "inspect")))
    }
}
