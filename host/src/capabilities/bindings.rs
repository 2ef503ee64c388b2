//! Host-side bindings of every interface a plugin may import (the WIT world
//! `plugin-host`): the traits each capability implements for
//! [`CapabilityState`](super::state::CapabilityState). Generated here, in
//! the capabilities, so they depend on nothing of the plugin runtime; the
//! runtime's per-world bindings reuse them (`plugins::bindings::imports`).
//! Generated items carry the WIT's own documentation.
//!
//! Two versions of the contract are generated: the current one (`wit/`,
//! `launch:plugin@0.2.0`) at the top of this module, and the frozen 0.1
//! (`wit/0.1/`) in [`v0_1`], whose traits the capabilities implement by
//! delegating to the current ones ([`super::contract_v0_1`]). Both are in
//! the linker, so a component built against either finds its imports.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "plugin-host",
    path: "../wit",
    imports: {
        "launch:plugin/docker": async | trappable,
        "launch:plugin/oci": async | trappable,
        "launch:plugin/kubernetes": async | trappable,
        "launch:plugin/lent": async | trappable,
        "launch:plugin/blob": async | trappable,
        default: trappable,
    },
    with: {
        "launch:plugin/secrets.secret": crate::capabilities::secrets::SecretHandle,
    },
});

/// The generated type of the `plugin-host` world, named so it is not taken
/// for the plugin runtime ([`crate::plugins::PluginHost`]).
pub use self::PluginHost as HostImports;

/// The frozen contract `launch:plugin@0.1.0` (`wit/0.1/`), for plugins
/// built against it. Its `secret` resource is the same host type as the
/// current contract's, so a handle is one thing whichever version a plugin
/// speaks.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin-host",
        path: "../wit/0.1",
        imports: {
            "launch:plugin/docker": async | trappable,
            "launch:plugin/oci": async | trappable,
            default: trappable,
        },
        with: {
            "launch:plugin/secrets.secret": crate::capabilities::secrets::SecretHandle,
        },
    });

    /// The generated type of the 0.1 `plugin-host` world.
    pub use self::PluginHost as HostImports;
}
