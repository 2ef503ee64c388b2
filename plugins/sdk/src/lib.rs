//! Guest SDK for launch-agent plugins.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` against the
//! `launch:plugin@0.2.0` WIT contract (the repository's `wit/`, of which
//! this crate carries a copy in its own `wit/`, so that it builds on its
//! own; see the crate's README). This crate holds the bindings for the contract's three plugin worlds and a few
//! helpers, so a plugin crate is a `cdylib` that depends on this crate (and
//! `serde` for its settings), implements two traits and calls one export
//! macro:
//!
//! | world | traits to implement | export macro | extra host import |
//! |---|---|---|---|
//! | `builder-plugin` | [`Plugin`] + [`builder::Builder`] | [`export_builder!`] | [`builder::docker`], [`builder::lent`] (0.2) |
//! | `registry-plugin` | [`Plugin`] + [`registry::Registry`] | [`export_registry!`] | [`registry::oci`], [`registry::lent`] (0.2) |
//! | `environment-plugin` | [`Plugin`] + [`environment::Environment`] | [`export_environment!`] | — |
//! | `authorizing-environment-plugin` (0.2) | the above + [`authorizer::Authorizer`] | [`export_authorizing_environment!`] | — |
//! | `cluster-builder-plugin` (0.2) | as `builder-plugin` | [`export_builder!`] | [`builder::docker`] and [`kubernetes`] |
//! | `deployer-plugin` (0.2) | [`Plugin`] + [`deployer::Deployer`] | [`export_deployer!`] | — |
//!
//! [`kubernetes`] (0.2) is the cluster, for a plugin that works there
//! (granted by namespace, `grants.kubernetes`): any plugin that calls it
//! imports it, and only then.
//!
//! Every world also imports logging ([`info!`] and the other macros),
//! and secrets: [`open`] a secret the config grants, [`mint`] one from a
//! value the plugin obtained (a registry token), [`keep`] it in the host
//! until shortly before it expires and [`recall`] it in a later call (0.2:
//! every call gets a fresh instance), and read it with
//! [`Secret::reveal`], which fails with [`SecretError::Opaque`] for a
//! handle the host handed over only to be passed on (the registry password
//! a builder receives).
//!
//! A minimal environment plugin:
//!
//! ```no_run
//! use launch_plugin_sdk::environment::Environment;
//! use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, Stage};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     #[serde(rename = "type")]
//!     _kind: String,
//!     region: Option<String>,
//! }
//!
//! struct MyPlugin;
//!
//! impl Plugin for MyPlugin {
//!     fn info() -> PluginInfo {
//!         PluginInfo {
//!             name: "environment-mine".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Runs jobs on my cloud".into(),
//!         }
//!     }
//! }
//!
//! impl Environment for MyPlugin {
//!     fn verify(settings: String) -> Result<(), PluginError> {
//!         let settings: Settings = launch_plugin_sdk::parse_settings(&settings, Stage::Agent)?;
//!         if settings.region.is_none() {
//!             return Err(PluginError::agent("set `environment.region` in launch-config.yaml"));
//!         }
//!         launch_plugin_sdk::info!("environment verified");
//!         Ok(())
//!     }
//!
//!     fn run_env(settings: String, _job: Job) -> Result<Vec<(String, String)>, PluginError> {
//!         let settings: Settings = launch_plugin_sdk::parse_settings(&settings, Stage::Agent)?;
//!         Ok(settings.region.map(|r| ("MY_REGION".to_string(), r)).into_iter().collect())
//!     }
//! }
//!
//! launch_plugin_sdk::export_environment!(MyPlugin);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `.wasm` file in `target/wasm32-wasip2/release/` is the component. A
//! plugin that needs no files, environment variables or `wasi:http` (this
//! one) is better built *lean*, for `wasm32-unknown-unknown`: it imports
//! only the contract and its calls cost less (see [`lean`], which is
//! compiled on that target only).
//!
//! The export macros expand to paths starting with `launch_plugin_sdk`, so
//! depend on this crate under its own name (do not rename it in
//! `Cargo.toml`).
//!
//! # How the bindings are laid out
//!
//! `wit-bindgen` cannot put the export macros of several worlds in one crate
//! when the worlds export the same interface (every plugin world exports
//! `launch:plugin/plugin`; see wit-bindgen issue #1502). So the bindings are
//! generated per *part* of a world, and the export macros put the parts back
//! together:
//!
//! * [`common`]: the imports every world has (`types`, `log`, `secrets`) and
//!   the `plugin` export ([`Plugin`]), generated once and shared, so there is
//!   one [`PluginError`], one [`Secret`] and one [`Plugin`] trait;
//! * [`builder`], [`registry`], [`environment`]: each world's own export
//!   and its own extra import (`docker` for builders, `oci` for
//!   registries), generated with `with:` pointing at [`common`]'s types, so
//!   the [`Secret`] a `docker.push` or `oci.manifest-exists` takes is the
//!   one [`open`] and [`mint`] return.
//!
//! A component built with `export_builder!` has exactly the imports and
//! exports of the contract's `builder-plugin` world (and so on for the
//! others).

#![warn(missing_docs)]

// The generated bindings and export macros name this crate by path.
extern crate self as launch_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings shared by every plugin world: the `types`, `log` and `secrets`
/// imports and the `plugin` export.
///
/// Generated from the inline world `launch:sdk/common`, which is the
/// contract's `plugin-imports` world plus `export plugin`. The crate root re-exports
/// what a plugin needs from here.
#[allow(missing_docs)]
pub mod common {
    wit_bindgen::generate!({
        inline: "
            package launch:sdk;

            world common {
                include launch:plugin/plugin-imports@0.2.0;
                export launch:plugin/plugin@0.2.0;
            }
        ",
        path: "wit",
        world: "launch:sdk/common",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_common",
        default_bindings_module: "launch_plugin_sdk::common",
        runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
    });
}

/// The `builder-plugin` world: plugins that turn a job into an image
/// (`builder.type` in launch-config.yaml).
///
/// Implement [`Plugin`] and [`Builder`](crate::builder::Builder) and call
/// [`export_builder!`](crate::export_builder).
pub mod builder {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world builder {
                    include launch:plugin/plugin-imports@0.2.0;
                    import launch:plugin/docker@0.2.0;
                    import launch:plugin/lent@0.2.0;
                    import launch:plugin/blob@0.2.0;
                    export launch:plugin/builder@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/builder",
            with: {
                "launch:plugin/types@0.2.0": crate::common::launch::plugin::types,
                "launch:plugin/log@0.2.0": crate::common::launch::plugin::log,
                "launch:plugin/secrets@0.2.0": crate::common::launch::plugin::secrets,
                "launch:plugin/docker@0.2.0": generate,
                "launch:plugin/lent@0.2.0": generate,
                "launch:plugin/blob@0.2.0": generate,
            },
            pub_export_macro: true,
            export_macro_name: "__export_builder",
            default_bindings_module: "launch_plugin_sdk::builder::__bindings",
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::exports::launch::plugin::builder::{
        BuildOutcome, BuildPlan, BuildRequest, Guest as Builder,
    };

    /// The host's Docker engine (`launch:plugin/docker`), imported by the
    /// `builder-plugin` world: [`docker::build`], [`docker::push`],
    /// [`docker::image_exists`] and their records [`docker::BuildSpec`] and
    /// [`docker::DockerError`].
    ///
    /// Granted by `grants.docker: true` in the plugin's config entry; without
    /// the grant every call fails with a [`docker::DockerError`] whose
    /// `denied` is true. The build context is always the current job's
    /// source.
    pub mod docker {
        pub use super::__bindings::launch::plugin::docker::{
            BuildSpec, DockerError, build, image_exists, push,
        };
    }

    /// The environment's token lent as an opaque handle
    /// (`launch:plugin/lent`, contract 0.2): [`lent::bearer_token`], and
    /// [`lent::post_form`]. See [`registry::lent`](crate::registry::lent).
    pub mod lent {
        pub use super::__bindings::launch::plugin::lent::{
            FormResponse, FormValue, bearer_token, post_form,
        };
    }

    /// Object storage for build contexts (`launch:plugin/blob`, world
    /// `cluster-builder-plugin`, since 0.2.0): [`blob::upload_context`],
    /// [`blob::delete`], [`blob::exists_store`]. A builder that never calls
    /// them does not import the interface (the component keeps only the
    /// imports its code uses), so it stays a `builder-plugin`.
    ///
    /// Granted by store prefix (`grants.blob.stores`); any other URL fails
    /// with a [`blob::BlobError`] whose `denied` is true.
    pub mod blob {
        pub use super::__bindings::launch::plugin::blob::{
            BlobError, Uploaded, delete, exists_store, upload_context,
        };
    }
}

/// The `registry-plugin` world: plugins that say where images go and whether
/// one already exists (`registry.type` in launch-config.yaml).
///
/// Implement [`Plugin`] and [`Registry`](crate::registry::Registry) and call
/// [`export_registry!`](crate::export_registry).
pub mod registry {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world registry {
                    include launch:plugin/plugin-imports@0.2.0;
                    import launch:plugin/oci@0.2.0;
                    import launch:plugin/lent@0.2.0;
                    export launch:plugin/registry@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/registry",
            with: {
                "launch:plugin/types@0.2.0": crate::common::launch::plugin::types,
                "launch:plugin/log@0.2.0": crate::common::launch::plugin::log,
                "launch:plugin/secrets@0.2.0": crate::common::launch::plugin::secrets,
                "launch:plugin/oci@0.2.0": generate,
                "launch:plugin/lent@0.2.0": generate,
            },
            pub_export_macro: true,
            export_macro_name: "__export_registry",
            default_bindings_module: "launch_plugin_sdk::registry::__bindings",
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::exports::launch::plugin::registry::{Guest as Registry, RegistryLogin};

    /// OCI distribution registries (`launch:plugin/oci`), imported by the
    /// `registry-plugin` world: [`oci::manifest_exists`] and its records
    /// [`oci::OciLogin`] and [`oci::OciError`].
    ///
    /// Requests go only to registries the plugin's `grants.hosts` allow.
    pub mod oci {
        pub use super::__bindings::launch::plugin::oci::{OciError, OciLogin, manifest_exists};
    }

    /// The environment's token lent as an opaque handle
    /// (`launch:plugin/lent`, contract 0.2): [`lent::bearer_token`]`(url)`
    /// returns a [`Secret`](crate::Secret) for `url`'s origin that the
    /// plugin can return as its login's password or pass to
    /// [`oci::manifest_exists`], but never `reveal`.
    ///
    /// Granted by marking the origin `auth: environment`
    /// (`grants.environment_auth`); without it the call fails with
    /// [`SecretError::NotGranted`](crate::SecretError::NotGranted).
    ///
    /// [`lent::post_form`]`(url, fields, secret_fields)` has the host send a
    /// form with such a handle filled in ([`lent::FormValue::Secret`]), to
    /// the origin it is bound to only, and answers the JSON members named
    /// in `secret_fields` as handles bound to `url`'s origin, which the
    /// plugin can keep (`secrets.keep`) but not read: ACR's
    /// `/oauth2/exchange` (AAD token in, refresh token out). Granted by
    /// `grants.hosts`.
    pub mod lent {
        pub use super::__bindings::launch::plugin::lent::{
            FormResponse, FormValue, bearer_token, post_form,
        };
    }
}

/// The `environment-plugin` world: the cloud or machine jobs run in
/// (`environment.type` in launch-config.yaml).
///
/// Implement [`Plugin`] and [`Environment`](crate::environment::Environment) and call
/// [`export_environment!`](crate::export_environment).
pub mod environment {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world environment {
                    include launch:plugin/plugin-imports@0.2.0;
                    export launch:plugin/environment@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/environment",
            with: {
                "launch:plugin/types@0.2.0": crate::common::launch::plugin::types,
                "launch:plugin/log@0.2.0": crate::common::launch::plugin::log,
                "launch:plugin/secrets@0.2.0": crate::common::launch::plugin::secrets,
            },
            pub_export_macro: true,
            export_macro_name: "__export_environment",
            default_bindings_module: "launch_plugin_sdk::environment::__bindings",
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::exports::launch::plugin::environment::Guest as Environment;
}

/// The `authorizer` export (contract 0.2): an environment that lends its
/// credentials to other plugins' requests (world
/// `authorizing-environment-plugin`, the cloud environments).
///
/// Implement [`Plugin`], [`Environment`](crate::environment::Environment)
/// and [`Authorizer`](crate::authorizer::Authorizer) and call
/// [`export_authorizing_environment!`](crate::export_authorizing_environment).
/// The host calls `authorize` for another plugin's request to a host its
/// grant marks `auth: environment`, and adds the headers it returns; and
/// `bearer_token` when such a plugin asks for the environment's token
/// (`lent`), which it hands on as an opaque handle.
pub mod authorizer {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world authorizer {
                    include launch:plugin/plugin-imports@0.2.0;
                    export launch:plugin/authorizer@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/authorizer",
            with: {
                "launch:plugin/types@0.2.0": crate::common::launch::plugin::types,
                "launch:plugin/log@0.2.0": crate::common::launch::plugin::log,
                "launch:plugin/secrets@0.2.0": crate::common::launch::plugin::secrets,
            },
            pub_export_macro: true,
            export_macro_name: "__export_authorizer",
            default_bindings_module: "launch_plugin_sdk::authorizer::__bindings",
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::exports::launch::plugin::authorizer::{
        Guest as Authorizer, HttpRequest, LentToken,
    };
}

/// A Kubernetes cluster (`launch:plugin/kubernetes`, contract 0.2), for
/// plugins that work there: a builder that builds on the cluster (world
/// `cluster-builder-plugin`).
///
/// [`kubernetes::create`] makes a Job, ConfigMap or Secret from a JSON
/// manifest in a namespace the plugin's `grants.kubernetes.namespaces`
/// lists; [`kubernetes::wait_job`] follows a Job to its end (its pod's log
/// into the job's log, the last lines returned); [`kubernetes::job_log`]
/// reads its log; [`kubernetes::delete`] deletes what the call created.
/// The host labels everything and deletes what the plugin left when the
/// call ends; the plugin never sees the cluster's token. Without the grant
/// every call fails with a [`kubernetes::KubeError`] whose `denied` is true.
pub mod kubernetes {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world kubernetes {
                    import launch:plugin/kubernetes@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/kubernetes",
            with: {
                "launch:plugin/kubernetes@0.2.0": generate,
            },
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::launch::plugin::kubernetes::{
        JobEnd, KubeError, ObjectRef, create, delete, job_log, wait_job,
    };
}

/// The `deployer-plugin` world (contract 0.2): plugins that render the
/// Kubernetes objects that run this agent on a target (`launch-agent deploy
/// <target>`); the host applies them.
///
/// Implement [`Plugin`] and [`Deployer`](crate::deployer::Deployer) and call
/// [`export_deployer!`](crate::export_deployer).
pub mod deployer {
    #[doc(hidden)]
    #[allow(missing_docs)]
    pub mod __bindings {
        wit_bindgen::generate!({
            inline: "
                package launch:sdk;

                world deployer {
                    include launch:plugin/plugin-imports@0.2.0;
                    export launch:plugin/deployer@0.2.0;
                }
            ",
            path: "wit",
            world: "launch:sdk/deployer",
            with: {
                "launch:plugin/types@0.2.0": crate::common::launch::plugin::types,
                "launch:plugin/log@0.2.0": crate::common::launch::plugin::log,
                "launch:plugin/secrets@0.2.0": crate::common::launch::plugin::secrets,
            },
            pub_export_macro: true,
            export_macro_name: "__export_deployer",
            default_bindings_module: "launch_plugin_sdk::deployer::__bindings",
            runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        });
    }

    pub use __bindings::exports::launch::plugin::deployer::{DeployRequest, Guest as Deployer};
}

/// Exports `$ty` as a builder plugin (world `builder-plugin`).
///
/// `$ty` must implement [`Plugin`] and [`builder::Builder`]. Call it once, at
/// the top level of the plugin crate:
/// `launch_plugin_sdk::export_builder!(MyPlugin);`
#[macro_export]
macro_rules! export_builder {
    ($ty:ident) => {
        $crate::common::__export_common!($ty with_types_in $crate::common);
        $crate::builder::__bindings::__export_builder!($ty with_types_in $crate::builder::__bindings);
    };
}

/// Exports `$ty` as a registry plugin (world `registry-plugin`).
///
/// `$ty` must implement [`Plugin`] and [`registry::Registry`]. Call it once,
/// at the top level of the plugin crate:
/// `launch_plugin_sdk::export_registry!(MyPlugin);`
#[macro_export]
macro_rules! export_registry {
    ($ty:ident) => {
        $crate::common::__export_common!($ty with_types_in $crate::common);
        $crate::registry::__bindings::__export_registry!($ty with_types_in $crate::registry::__bindings);
    };
}

/// Exports `$ty` as an environment plugin (world `environment-plugin`).
///
/// `$ty` must implement [`Plugin`] and [`environment::Environment`]. Call it
/// once, at the top level of the plugin crate:
/// `launch_plugin_sdk::export_environment!(MyPlugin);`
#[macro_export]
macro_rules! export_environment {
    ($ty:ident) => {
        $crate::common::__export_common!($ty with_types_in $crate::common);
        $crate::environment::__bindings::__export_environment!($ty with_types_in $crate::environment::__bindings);
    };
}

/// Exports `$ty` as an environment that lends its credentials (world
/// `authorizing-environment-plugin`, contract 0.2).
///
/// `$ty` must implement [`Plugin`], [`environment::Environment`] and
/// [`authorizer::Authorizer`]. Call it once, at the top level of the plugin
/// crate: `launch_plugin_sdk::export_authorizing_environment!(MyPlugin);`
#[macro_export]
macro_rules! export_authorizing_environment {
    ($ty:ident) => {
        $crate::common::__export_common!($ty with_types_in $crate::common);
        $crate::environment::__bindings::__export_environment!($ty with_types_in $crate::environment::__bindings);
        $crate::authorizer::__bindings::__export_authorizer!($ty with_types_in $crate::authorizer::__bindings);
    };
}

/// Exports `$ty` as a deployer plugin (world `deployer-plugin`, contract 0.2).
///
/// `$ty` must implement [`Plugin`] and [`deployer::Deployer`]. Call it once,
/// at the top level of the plugin crate:
/// `launch_plugin_sdk::export_deployer!(MyPlugin);`
#[macro_export]
macro_rules! export_deployer {
    ($ty:ident) => {
        $crate::common::__export_common!($ty with_types_in $crate::common);
        $crate::deployer::__bindings::__export_deployer!($ty with_types_in $crate::deployer::__bindings);
    };
}

pub use common::exports::launch::plugin::plugin::Guest as Plugin;
pub use common::launch::plugin::log::Level;
pub use common::launch::plugin::secrets::{
    self, Secret, SecretError, forget, keep, mint, open, recall,
};
pub use common::launch::plugin::types::{Job, PluginError, PluginInfo, Stage};

mod errors;
pub mod http;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod lean;
mod logging;
mod settings;

pub use logging::log;
pub use settings::parse_settings;
