//! Host-side bindings of the WIT contract in `wit/`, one module per world.
//!
//! The interfaces every world imports (`types`, `log`, `secrets`) are
//! generated once, in [`imports`], and shared by the plugin worlds, so a
//! `PluginError` is one type whichever plugin returned it.
//!
//! The frozen contract 0.1 (`wit/0.1/`) has its worlds in [`v0_1`]: the
//! host checks a 0.1 component against them when it loads it. Calls into a
//! plugin of either version use the current types: the component model
//! checks records, variants and enums by their shape, which 0.2 left as
//! 0.1 had them.

/// Every host interface a plugin may import (world `plugin-host`),
/// generated with the capabilities that implement it.
pub use crate::capabilities::bindings as imports;

/// World `builder-plugin`.
#[allow(missing_docs)]
pub mod builder {
    wasmtime::component::bindgen!({
        world: "builder-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "launch:plugin/types": super::imports::launch::plugin::types,
            "launch:plugin/log": super::imports::launch::plugin::log,
            "launch:plugin/secrets": super::imports::launch::plugin::secrets,
            "launch:plugin/docker": super::imports::launch::plugin::docker,
            "launch:plugin/lent": super::imports::launch::plugin::lent,
        },
    });
}

/// World `registry-plugin`.
#[allow(missing_docs)]
pub mod registry {
    wasmtime::component::bindgen!({
        world: "registry-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "launch:plugin/types": super::imports::launch::plugin::types,
            "launch:plugin/log": super::imports::launch::plugin::log,
            "launch:plugin/secrets": super::imports::launch::plugin::secrets,
            "launch:plugin/oci": super::imports::launch::plugin::oci,
            "launch:plugin/lent": super::imports::launch::plugin::lent,
        },
    });
}

/// World `environment-plugin`.
#[allow(missing_docs)]
pub mod environment {
    wasmtime::component::bindgen!({
        world: "environment-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "launch:plugin/types": super::imports::launch::plugin::types,
            "launch:plugin/log": super::imports::launch::plugin::log,
            "launch:plugin/secrets": super::imports::launch::plugin::secrets,
        },
    });
}

/// World `authorizing-environment-plugin` (0.2): an environment that also
/// exports `authorizer`.
#[allow(missing_docs)]
pub mod authorizing_environment {
    wasmtime::component::bindgen!({
        world: "authorizing-environment-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "launch:plugin/types": super::imports::launch::plugin::types,
            "launch:plugin/log": super::imports::launch::plugin::log,
            "launch:plugin/secrets": super::imports::launch::plugin::secrets,
        },
    });
}

/// World `deployer-plugin` (0.2): renders what runs the agent on a target.
#[allow(missing_docs)]
pub mod deployer {
    wasmtime::component::bindgen!({
        world: "deployer-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "launch:plugin/types": super::imports::launch::plugin::types,
            "launch:plugin/log": super::imports::launch::plugin::log,
            "launch:plugin/secrets": super::imports::launch::plugin::secrets,
        },
    });
}

/// The worlds of the frozen contract 0.1 (`wit/0.1/`).
pub mod v0_1 {
    /// The 0.1 host interfaces.
    pub use crate::capabilities::bindings::v0_1 as imports;

    /// World `builder-plugin` of 0.1.
    #[allow(missing_docs)]
    pub mod builder {
        wasmtime::component::bindgen!({
            world: "builder-plugin",
            path: "../wit/0.1",
            exports: { default: async },
            with: {
                "launch:plugin/types": super::imports::launch::plugin::types,
                "launch:plugin/log": super::imports::launch::plugin::log,
                "launch:plugin/secrets": super::imports::launch::plugin::secrets,
                "launch:plugin/docker": super::imports::launch::plugin::docker,
            },
        });
    }

    /// World `registry-plugin` of 0.1.
    #[allow(missing_docs)]
    pub mod registry {
        wasmtime::component::bindgen!({
            world: "registry-plugin",
            path: "../wit/0.1",
            exports: { default: async },
            with: {
                "launch:plugin/types": super::imports::launch::plugin::types,
                "launch:plugin/log": super::imports::launch::plugin::log,
                "launch:plugin/secrets": super::imports::launch::plugin::secrets,
                "launch:plugin/oci": super::imports::launch::plugin::oci,
            },
        });
    }

    /// World `environment-plugin` of 0.1.
    #[allow(missing_docs)]
    pub mod environment {
        wasmtime::component::bindgen!({
            world: "environment-plugin",
            path: "../wit/0.1",
            exports: { default: async },
            with: {
                "launch:plugin/types": super::imports::launch::plugin::types,
                "launch:plugin/log": super::imports::launch::plugin::log,
                "launch:plugin/secrets": super::imports::launch::plugin::secrets,
            },
        });
    }
}

pub use authorizing_environment::exports::launch::plugin::authorizer::{HttpRequest, LentToken};
pub use deployer::exports::launch::plugin::deployer::DeployRequest;
pub use imports::launch::plugin::types::{Job, PluginError, PluginInfo, Stage};
