//! The frozen contract `launch:plugin@0.1.0`, served by the current
//! capabilities: each 0.1 host function converts its arguments to the
//! current contract's types, calls the current implementation, and converts
//! the result back.
//!
//! Why an adapter rather than two implementations: a grant is checked in
//! exactly one place whichever contract a plugin speaks, so a 0.1 plugin
//! can never reach more than a 0.2 plugin with the same grants. The 0.1
//! interfaces are a subset of the current ones with the same shapes; only
//! the generated Rust types differ.
//!
//! | 0.1 interface | served by |
//! |---|---|
//! | `types` | nothing to serve (types only) |
//! | `log` | [`super::log`] |
//! | `secrets` (`open`, `mint`, the `secret` resource) | [`super::secrets`]; `keep`/`recall` do not exist in 0.1 |
//! | `docker` | [`super::docker`] |
//! | `oci` | [`super::oci`] |

use super::bindings::launch::plugin as current;
use super::bindings::v0_1::launch::plugin as v0_1;
use super::secrets::SecretHandle;
use super::state::CapabilityState;
use wasmtime::component::Resource;

impl v0_1::types::Host for CapabilityState {}

impl v0_1::log::Host for CapabilityState {
    fn log(&mut self, level: v0_1::log::Level, message: String) -> wasmtime::Result<()> {
        use current::log::Level as L;
        use v0_1::log::Level as Old;
        let level = match level {
            Old::Trace => L::Trace,
            Old::Debug => L::Debug,
            Old::Info => L::Info,
            Old::Warn => L::Warn,
            Old::Error => L::Error,
        };
        current::log::Host::log(self, level, message)
    }
}

/// A current `secret-error` as 0.1 spells it (the same three cases).
fn secret_error(error: current::secrets::SecretError) -> v0_1::secrets::SecretError {
    use current::secrets::SecretError as E;
    use v0_1::secrets::SecretError as Old;
    match error {
        E::NotGranted(m) => Old::NotGranted(m),
        E::Unavailable(m) => Old::Unavailable(m),
        E::Opaque(m) => Old::Opaque(m),
    }
}

impl v0_1::secrets::Host for CapabilityState {
    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, v0_1::secrets::SecretError>> {
        Ok(current::secrets::Host::open(self, name)?.map_err(secret_error))
    }

    fn mint(&mut self, name: String, value: String) -> wasmtime::Result<Resource<SecretHandle>> {
        current::secrets::Host::mint(self, name, value)
    }
}

impl v0_1::secrets::HostSecret for CapabilityState {
    fn name(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        current::secrets::HostSecret::name(self, secret)
    }

    fn reveal(
        &mut self,
        secret: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<String, v0_1::secrets::SecretError>> {
        Ok(current::secrets::HostSecret::reveal(self, secret)?.map_err(secret_error))
    }

    fn drop(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<()> {
        current::secrets::HostSecret::drop(self, secret)
    }
}

/// A current `docker-error` as 0.1 spells it.
fn docker_error(e: current::docker::DockerError) -> v0_1::docker::DockerError {
    v0_1::docker::DockerError {
        operation: e.operation,
        message: e.message,
        unauthorized: e.unauthorized,
        denied: e.denied,
    }
}

impl v0_1::docker::Host for CapabilityState {
    async fn build(
        &mut self,
        spec: v0_1::docker::BuildSpec,
    ) -> wasmtime::Result<Result<String, v0_1::docker::DockerError>> {
        let spec = current::docker::BuildSpec {
            dockerfile: spec.dockerfile,
            tags: spec.tags,
            platform: spec.platform,
            build_args: spec.build_args,
        };
        Ok(current::docker::Host::build(self, spec)
            .await?
            .map_err(docker_error))
    }

    async fn push(
        &mut self,
        image: String,
        username: Option<String>,
        password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<(), v0_1::docker::DockerError>> {
        Ok(current::docker::Host::push(self, image, username, password)
            .await?
            .map_err(docker_error))
    }

    async fn image_exists(
        &mut self,
        image: String,
    ) -> wasmtime::Result<Result<bool, v0_1::docker::DockerError>> {
        Ok(current::docker::Host::image_exists(self, image)
            .await?
            .map_err(docker_error))
    }
}

impl v0_1::oci::Host for CapabilityState {
    async fn manifest_exists(
        &mut self,
        reference: String,
        login: v0_1::oci::OciLogin,
        password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<bool, v0_1::oci::OciError>> {
        let login = current::oci::OciLogin {
            username: login.username,
            insecure: login.insecure,
        };
        Ok(
            current::oci::Host::manifest_exists(self, reference, login, password)
                .await?
                .map_err(|e| v0_1::oci::OciError {
                    message: e.message,
                    unauthorized: e.unauthorized,
                    denied: e.denied,
                }),
        )
    }
}
