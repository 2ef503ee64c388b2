//! Host-side bindings of the WIT contract in `wit/`, one module per world.
//!
//! The interfaces every world imports (`types`, `log`, `secrets`) are
//! generated once, in [`imports`], and shared by the plugin worlds, so a
//! `PluginError` is one type whichever plugin returned it.

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

pub use imports::launch::plugin::types::{Job, PluginError, PluginInfo, Stage};
