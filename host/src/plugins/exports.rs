//! A plugin's exports as the host calls them: the component ready to
//! instantiate, where each function the host calls lies in it, and whether
//! a call may run without a fiber.
//!
//! A call is made through wasmtime's typed functions, found once at load
//! time, rather than through the bindings `bindgen!` generates per world:
//! those are async only, and a call into a plugin whose imports are all
//! synchronous (a lean plugin that uses neither the Docker nor the OCI
//! capability) does not need a fiber; calling it directly saves about 10%
//! of a call. The bindings still check at load time that the plugin matches
//! its world (see `PluginHost::load`), and their types are the parameters
//! and results here.

use super::contract::{PACKAGE, PluginKind};
use super::state::PluginState;
use wasmtime::Store;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Lower, TypedFunc,
};

/// A function of the contract the host calls in a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// `plugin.info`, exported by every plugin.
    Info,
    /// `environment.verify`.
    Verify,
    /// `environment.run-env`.
    RunEnv,
    /// `builder.plan`.
    Plan,
    /// `builder.build`.
    Build,
    /// `registry.login`.
    Login,
    /// `registry.repository-uri`.
    RepositoryUri,
    /// `registry.image-exists`.
    ImageExists,
    /// `authorizer.authorize` (0.2; environments that lend credentials).
    Authorize,
    /// `registry.verify` (0.2).
    RegistryVerify,
    /// `authorizer.bearer-token` (0.2; environments that lend a token).
    BearerToken,
    /// `deployer.render` (0.2).
    Render,
}

impl Export {
    /// Every export, in declaration order (the index into [`Exports`]'
    /// table is the discriminant).
    const ALL: [Export; 12] = [
        Export::Info,
        Export::Verify,
        Export::RunEnv,
        Export::Plan,
        Export::Build,
        Export::Login,
        Export::RepositoryUri,
        Export::ImageExists,
        Export::Authorize,
        Export::RegistryVerify,
        Export::BearerToken,
        Export::Render,
    ];

    /// The kind of plugin that exports it; `None` for every kind.
    pub fn kind(self) -> Option<PluginKind> {
        match self {
            Export::Info => None,
            Export::Verify | Export::RunEnv | Export::Authorize | Export::BearerToken => {
                Some(PluginKind::Environment)
            }
            Export::Plan | Export::Build => Some(PluginKind::Builder),
            Export::Login
            | Export::RepositoryUri
            | Export::ImageExists
            | Export::RegistryVerify => Some(PluginKind::Registry),
            Export::Render => Some(PluginKind::Deployer),
        }
    }

    /// The WIT interface and function.
    fn wit_name(self) -> (&'static str, &'static str) {
        match self {
            Export::Info => ("plugin", "info"),
            Export::Verify => ("environment", "verify"),
            Export::RunEnv => ("environment", "run-env"),
            Export::Plan => ("builder", "plan"),
            Export::Build => ("builder", "build"),
            Export::Login => ("registry", "login"),
            Export::RepositoryUri => ("registry", "repository-uri"),
            Export::ImageExists => ("registry", "image-exists"),
            Export::Authorize => ("authorizer", "authorize"),
            Export::RegistryVerify => ("registry", "verify"),
            Export::BearerToken => ("authorizer", "bearer-token"),
            Export::Render => ("deployer", "render"),
        }
    }

    /// Its index in [`Export::ALL`], which lists the variants in order.
    fn slot(self) -> usize {
        self as usize
    }
}

/// A loaded plugin's component and exports.
#[derive(Clone)]
pub struct Exports {
    pre: InstancePre<PluginState>,
    /// Where each of [`Export::ALL`] lies, if the plugin exports it.
    indices: [Option<ComponentExportIndex>; Export::ALL.len()],
    /// Whether every import is synchronous, so calls need no fiber.
    sync: bool,
}

impl Exports {
    /// Finds the exports of a plugin of `kind` in `pre`, whose component
    /// is built against contract version `version`. `sync` says every
    /// function it imports is synchronous on the host.
    pub fn new(pre: InstancePre<PluginState>, kind: PluginKind, version: &str, sync: bool) -> Self {
        let component = pre.component();
        let mut indices = [None; Export::ALL.len()];
        for export in Export::ALL {
            if export.kind().is_some_and(|k| k != kind) {
                continue;
            }
            let (interface, function) = export.wit_name();
            let name = format!("{PACKAGE}/{interface}@{version}");
            indices[export.slot()] = component
                .get_export_index(None, &name)
                .and_then(|interface| component.get_export_index(Some(&interface), function));
        }
        Exports { pre, indices, sync }
    }

    /// Whether the plugin exports `export`.
    pub fn has(&self, export: Export) -> bool {
        self.indices[export.slot()].is_some()
    }

    /// Whether calls run without a fiber (no import can wait).
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// Instantiates the plugin in `store` and calls `export` with the
    /// parameters `params` makes (it may put resources in the store first),
    /// then lets `finish` take what it needs from the result and the store.
    /// The caller has checked [`Exports::has`].
    pub async fn call<P, R, T>(
        &self,
        store: &mut Store<PluginState>,
        export: Export,
        params: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<P>,
        finish: impl FnOnce(&mut Store<PluginState>, R) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let Some(index) = &self.indices[export.slot()] else {
            wasmtime::bail!("the plugin does not export {export:?}");
        };
        let params = params(store)?;
        let result = if self.sync {
            let instance = self.pre.instantiate(&mut *store)?;
            let func: TypedFunc<P, R> = instance.get_typed_func(&mut *store, index)?;
            func.call(&mut *store, params)?
        } else {
            let instance = self.pre.instantiate_async(&mut *store).await?;
            let func: TypedFunc<P, R> = instance.get_typed_func(&mut *store, index)?;
            func.call_async(&mut *store, params).await?
        };
        finish(store, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_export_has_its_own_slot() {
        for (i, export) in Export::ALL.into_iter().enumerate() {
            assert_eq!(export.slot(), i, "{export:?}");
        }
    }
}
