//! Host-side bindings of every interface a plugin may import (the WIT world
//! `plugin-host`): the traits each capability implements for
//! [`CapabilityState`](super::state::CapabilityState). Generated here, in
//! the capabilities, so they depend on nothing of the plugin runtime; the
//! runtime's per-world bindings reuse them (`plugins::bindings::imports`).
//! Generated items carry the WIT's own documentation.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "plugin-host",
    path: "../wit",
    imports: {
        "launch:plugin/docker": async | trappable,
        "launch:plugin/oci": async | trappable,
        default: trappable,
    },
    with: {
        "launch:plugin/secrets.secret": crate::capabilities::secrets::SecretHandle,
    },
});

/// The generated type of the `plugin-host` world, named so it is not taken
/// for the plugin runtime ([`crate::plugins::PluginHost`]).
pub use self::PluginHost as HostImports;
