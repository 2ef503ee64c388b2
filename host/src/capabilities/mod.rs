//! What plugins may import, one module per capability, and the one policy
//! that grants them.
//!
//! Everything is denied by default. A plugin's grants are compiled once,
//! when it is loaded, into a [`GrantPolicy`](policy::GrantPolicy) (its
//! `grants:` entry plus a bundled plugin's [`defaults`]), kept once on the
//! loaded plugin and shared into the Store of each call. Every host
//! function starts with one check against it; a refusal is logged as a
//! warning naming the plugin and the grant, and the call gets:
//!
//! | capability | WIT / WASI interface | grant | check | a refused call returns |
//! |---|---|---|---|---|
//! | logging | `launch:plugin/log` | always (tagged with the plugin's name), within the per-call caps of [`call_caps`] (and of [`docker::caps`] for the engine's output) | — | — |
//! | secrets | `launch:plugin/secrets.open` | `grants.secrets` | `policy.secret(name)` | `secret-error::not-granted` |
//! | kept secrets (0.2) | `launch:plugin/secrets.keep`, `.recall`, `.forget` | always: the plugin's own, in [`kept`] | — | — |
//! | the environment's credentials (0.2) | `wasi:http` requests to a marked origin, authorized by the environment's `authorizer` | `grants.environment_auth` (`auth: environment`) | `policy.environment_auth(uri)` | sent without credentials (`hosts` only) or refused ([`environment_auth`]) |
//! | the environment's token, lent (0.2) | `launch:plugin/lent.bearer-token` (registries, builders) | `grants.environment_auth` (`auth: environment`) | `policy.environment_auth(uri)` | `secret-error::not-granted` ([`lent`]); the handle granted is opaque, bound to the origin's registry |
//! | outbound HTTP | `wasi:http/outgoing-handler` | `grants.hosts` | `policy.http(uri)` | `error-code::HTTP-request-denied` |
//! | environment variables | `wasi:cli/environment` | `grants.env` | the WASI context holds only these | the variable is absent |
//! | directories | `wasi:filesystem` | `grants.dirs` | the WASI context preopens only these (read-only unless `write: true`) | the path does not exist |
//! | sockets | `wasi:sockets` | never | the WASI context allows none | a socket error |
//! | Docker engine | `launch:plugin/docker` (build, push, inspect) | `grants.docker` | `policy.docker()` | `docker-error` with `denied: true` |
//! | Docker build network | `launch:plugin/docker.build` (its steps) | `grants.build_network`, then `grants.hosts` per connection | `policy.build_network()`; `policy.http(uri)` in [`docker::build_proxy`] | the build runs with network mode `none`; a step's refused connection gets `403` |
//! | Docker base images and `ADD` URLs | `launch:plugin/docker.build` (its Dockerfile) | `grants.hosts` (the registry, the URL), the job's own repository, or an engine's Hub-shaped image | [`docker::build_fetches::judge`] | `docker-error` with `denied: true` naming the line |
//! | Docker tags and lookups | `launch:plugin/docker.build`, `.image-exists` | the builder's `build` call (the planned image's and destination's repositories) | `docker::reference::within` | `docker-error` with `denied: true` |
//! | Docker push targets | `launch:plugin/docker.push` | `grants.hosts` | `policy.push_registry(registry)` | `docker-error` with `denied: true` |
//! | OCI registries | `launch:plugin/oci` (manifest lookups) | `grants.hosts` | `policy.registry(scheme, registry)` | `oci-error` with `denied: true` |
//! | token realms and redirects of those requests | (the requests of `oci` and `docker.push`) | `grants.hosts` | `policy.http(url)` per hop ([`registry_auth`]) | `oci-error` / `docker-error` with `denied: true` |
//! | a registry credential's use | `docker.push`, `oci` given a handed-on credential | bound to the `registry.uri` it was issued for | the handle's scope | `denied: true` |
//! | Kubernetes (0.2) | `launch:plugin/kubernetes` (create a Job, ConfigMap or Secret; wait for a Job; its log; delete), in [`kubernetes`] | `grants.kubernetes.namespaces` | `policy.kubernetes(namespace)`; then the call's own objects only, and the runner's pod rules | `kube-error` with `denied: true` |
//! | object storage (0.2) | `launch:plugin/blob` (build contexts: upload, delete, the store's existence), requests authorized by the environment's `authorizer` | `grants.blob.stores` (store prefixes) | `policy.blob(url)` | `blob-error` with `denied: true` ([`blob`]) |
//!
//! Adding a capability's grant is one field in
//! [`GrantPolicy`](policy::GrantPolicy) (compiled in
//! [`GrantPolicy::compile`](policy::GrantPolicy::compile)) plus its check, a
//! method returning a [`Refusal`](policy::Refusal); the capability's host
//! functions call it first and turn the refusal into their "denied" error
//! with [`CapabilityState::refused`](state::CapabilityState::refused) (which
//! logs it and, for `plugins call`, records it with the grant that would
//! allow it; what was asked and answered is recorded with
//! [`CapabilityState::record`](state::CapabilityState::record)); a row
//! above, and a test that the plugin is refused without the grant.
//!
//! Plugins of both contract versions are served: the 0.1 interfaces by an
//! adapter onto the current ones ([`contract_v0_1`]), so each grant is
//! checked in one place.
//!
//! The capabilities sit below the plugin runtime: the host traits they
//! implement are generated here ([`bindings`]), for the call state they
//! hold ([`state::CapabilityState`]), so nothing here imports `plugins`; the
//! runtime wraps that state in its Store data with the call's limits.

pub mod bindings;
pub mod blob;
pub mod call_caps;
pub mod cloud_defaults;
pub mod contract_v0_1;
pub mod defaults;
pub mod docker;
pub mod environment_auth;
pub mod http;
pub mod kept;
pub mod kubernetes;
pub mod lent;
pub mod log;
pub mod oci;
pub mod policy;
pub mod registry_auth;
pub mod secrets;
pub mod state;
pub mod wasi;
