//! One plugin's grants, compiled once when it is loaded, and the one check
//! each capability makes against them.
//!
//! A plugin's `grants:` (plus a bundled plugin's defaults, see
//! [`defaults`](super::defaults)) are parsed here, once, into a
//! [`GrantPolicy`]; a bad grant is a load error naming the grant. The
//! policy is kept once, on the loaded plugin, and shared (an `Arc`) into
//! the Store of every call. Each host function starts with one check
//! against it, as Zed's capability granter and Spin's `check_url` do, and
//! turns a [`Refusal`] into its interface's "denied" error:
//!
//! | check | grant | used by |
//! |---|---|---|
//! | [`GrantPolicy::http`] | `grants.hosts` | `wasi:http/outgoing-handler` |
//! | [`GrantPolicy::environment_auth`] | `grants.environment_auth` (`auth: environment`) | `wasi:http/outgoing-handler`: the environment authorizes the request ([`environment_auth`](super::environment_auth)) |
//! | [`GrantPolicy::secret`] | `grants.secrets` | `launch:plugin/secrets.open` |
//! | [`GrantPolicy::docker`] | `grants.docker` | every `launch:plugin/docker` function |
//! | [`GrantPolicy::blob`] | `grants.blob.stores` | every `launch:plugin/blob` function |
//! | [`GrantPolicy::build_network`] | `grants.build_network` | `launch:plugin/docker.build` (network mode `none` without it) |
//! | [`GrantPolicy::push_registry`] | `grants.hosts` | `launch:plugin/docker.push` |
//! | [`GrantPolicy::registry`] | `grants.hosts` | `launch:plugin/oci.manifest-exists` |
//! | [`GrantPolicy::http`] again, for each redirect and token realm | `grants.hosts` | the requests `oci` and `docker.push` make ([`registry_auth`](super::registry_auth)) |
//! | [`GrantPolicy::env`], [`GrantPolicy::dirs`] | `grants.env`, `grants.dirs` | the WASI context of each call, which holds nothing else |
//! | [`GrantPolicy::kubernetes`] | `grants.kubernetes.namespaces` | every `launch:plugin/kubernetes` function |
//!
//! **Adding a capability's grant** is one field here, filled in
//! [`GrantPolicy::compile`], plus its check method returning a [`Refusal`]
//! variant; the host function calls the check first thing. One is reserved

use super::http::{HostAllowList, has_userinfo};
use crate::config::{DirGrant, Grants, SecretSource};
use std::collections::BTreeMap;

/// The hosts a grant may name for Docker Hub (an image reference without a
/// registry component).
pub const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// What one plugin may reach, compiled from its grants. Everything not
/// here is refused.
#[derive(Debug, Default)]
pub struct GrantPolicy {
    /// `grants.hosts`, parsed: outbound HTTP, OCI registries, push targets.
    hosts: HostAllowList,
    /// `grants.hosts` as written, for `plugins list`.
    host_grants: Vec<String>,
    /// `grants.environment_auth` (the grant `auth: environment`), parsed:
    /// origins whose requests the environment authorizes before they leave
    /// ([`environment_auth`](super::environment_auth)); requesting them is
    /// allowed too.
    environment_auth: HostAllowList,
    /// `grants.environment_auth` as written, for `plugins list`.
    environment_auth_grants: Vec<String>,
    /// `grants.env`: the agent's environment variables the plugin sees.
    env: Vec<String>,
    /// `grants.secrets`, each with where its value comes from, in the
    /// order granted.
    secrets: Vec<(String, SecretSource)>,
    /// `grants.dirs`: directories preopened in the plugin's WASI context.
    dirs: Vec<DirGrant>,
    /// `grants.docker`: the host's Docker engine.
    docker: bool,
    /// `grants.build_network`: a Docker build's steps get the network.
    build_network: bool,
    /// `grants.kubernetes.namespaces`: the namespaces the plugin may create
    /// objects in (`launch:plugin/kubernetes`); empty: none.
    kube_namespaces: Vec<String>,
    /// `grants.blob.stores`, parsed: the object-store prefixes the blob
    /// capability may use for the plugin.
    blob_stores: Vec<super::blob::StorePrefix>,
    /// `grants.blob.stores` as written, for `plugins list`.
    blob_store_grants: Vec<String>,
}

/// A grant that cannot be compiled: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{grant}: {reason}")]
pub struct GrantError {
    /// The grant, as the config names it (`grants.hosts`).
    pub grant: &'static str,
    /// What is wrong, naming the value.
    pub reason: String,
}

/// A call the policy refused: what was asked for, and which grant would
/// allow it. Each capability turns it into its own "denied" error with
/// [`Refusal::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Outbound HTTP to a destination `grants.hosts` does not allow.
    Http {
        /// `scheme://authority/path`, the query left out (it may carry
        /// signatures or tokens).
        uri: String,
    },
    /// An outbound URL with userinfo (`user[:password]@host`), refused
    /// whatever the grants.
    Userinfo {
        /// `scheme://host[:port]/path`, the userinfo and query left out.
        uri: String,
    },
    /// A secret `grants.secrets` does not name.
    Secret {
        /// The secret's name.
        name: String,
    },
    /// The Docker engine, without `grants.docker`.
    Docker,
    /// An object-store URL under no prefix of `grants.blob.stores`.
    Blob {
        /// The URL asked for.
        url: String,
    },
    /// A push to a registry `grants.hosts` does not allow.
    PushRegistry {
        /// `host[:port]` as people write it (`docker.io` for Docker Hub).
        registry: String,
    },
    /// An OCI registry request to an origin `grants.hosts` does not allow.
    Registry {
        /// `scheme://host[:port]`.
        origin: String,
    },
    /// A redirect, answered to a request the host made for the plugin, to
    /// an origin `grants.hosts` does not allow.
    Redirect {
        /// `scheme://host[:port]` that redirected.
        from: String,
        /// `scheme://host[:port]` it redirected to.
        to: String,
    },
    /// A registry's `401` challenge named a token realm on an origin
    /// `grants.hosts` does not allow: the credentials are not sent there.
    TokenRealm {
        /// `scheme://host[:port]` of the registry.
        registry: String,
        /// `scheme://host[:port]` of the realm.
        realm: String,
    },
    /// A Kubernetes namespace `grants.kubernetes.namespaces` does not list
    /// (or any, without the grant).
    KubeNamespace {
        /// The namespace asked for; `None` when the plugin named none and
        /// has no grant to take one from.
        namespace: Option<String>,
        /// The namespaces granted.
        granted: Vec<String>,
    },
    /// The environment's token asked (`lent.bearer-token`) for an origin
    /// `grants.environment_auth` does not mark `auth: environment`.
    EnvironmentAuth {
        /// `scheme://host[:port]`.
        origin: String,
    },
    /// A credential used for a registry or repository other than the one it
    /// was issued for. No grant allows it.
    CredentialScope {
        /// The credential's (secret's) name.
        secret: String,
        /// `registry/repository` it was issued for.
        bound_to: String,
        /// `registry/repository` it was to be used for.
        target: String,
    },
}

impl Refusal {
    /// The grant that would have allowed the call.
    pub fn grant(&self) -> &'static str {
        match self {
            Refusal::Http { .. }
            | Refusal::Userinfo { .. }
            | Refusal::PushRegistry { .. }
            | Refusal::Registry { .. }
            | Refusal::Redirect { .. }
            | Refusal::TokenRealm { .. } => "grants.hosts",
            Refusal::CredentialScope { .. } => "registry.uri",
            Refusal::EnvironmentAuth { .. } => "grants.environment_auth",
            Refusal::Secret { .. } => "grants.secrets",
            Refusal::Docker => "grants.docker",
            Refusal::KubeNamespace { .. } => "grants.kubernetes",
            Refusal::Blob { .. } => "grants.blob.stores",
        }
    }

    /// The message the plugin gets, naming `plugin` and the grant to add.
    pub fn message(&self, plugin: &str) -> String {
        match self {
            Refusal::Http { uri } => format!(
                "outbound HTTP request to {uri} is not granted to plugin {plugin} (add its \
                 origin to grants.hosts)"
            ),
            Refusal::Userinfo { uri } => format!(
                "outbound HTTP request to {uri} from plugin {plugin} carries userinfo \
                 (a user name or password before the host) in its URL, which is never allowed whatever grants.hosts says; \
                 send credentials in a header"
            ),
            Refusal::Secret { name } => {
                format!("secret {name:?} is not granted to plugin {plugin}")
            }
            Refusal::Docker => {
                format!("plugin {plugin} is not granted the Docker engine (grants.docker: true)")
            }
            Refusal::KubeNamespace { namespace, granted } => {
                let asked = match namespace {
                    Some(ns) => format!("Kubernetes namespace {ns:?} is"),
                    None => "the Kubernetes cluster is".to_string(),
                };
                let has = if granted.is_empty() {
                    "it has no grants.kubernetes".to_string()
                } else {
                    format!("its grants.kubernetes.namespaces are {granted:?}")
                };
                format!(
                    "{asked} not granted to plugin {plugin} ({has}; add the namespace to \
                     grants.kubernetes.namespaces)"
                )
            }
            Refusal::Blob { url } => format!(
                "object store URL {url} is not granted to plugin {plugin} (add its store \
                 prefix to grants.blob.stores)"
            ),
            Refusal::PushRegistry { registry } => format!(
                "plugin {plugin} may not push to registry {registry}: add https://{registry} \
                 or http://{registry} to its grants.hosts"
            ),
            Refusal::Registry { origin } => format!(
                "registry {origin} is not granted to plugin {plugin} (add {origin:?} to its \
                 grants.hosts)"
            ),
            Refusal::Redirect { from, to } => format!(
                "{from} redirected a request of plugin {plugin} to {to}, which is not granted: \
                 the redirect was not followed (add {to:?} to its grants.hosts if it is the \
                 registry's)"
            ),
            Refusal::TokenRealm { registry, realm } => format!(
                "registry {registry} asked plugin {plugin}'s credentials to be sent to token \
                 realm {realm}, which is not granted: nothing was sent there (add {realm:?} to \
                 its grants.hosts if it is the registry's token server)"
            ),
            Refusal::EnvironmentAuth { origin } => format!(
                "plugin {plugin} may not have the environment's token for {origin}: its \
                 grants.environment_auth does not mark it `auth: environment` (add {origin:?} \
                 there if the environment's credentials are meant for it)"
            ),
            Refusal::CredentialScope {
                secret,
                bound_to,
                target,
            } => format!(
                "credential {secret:?} was issued for {bound_to} and may not be used by plugin \
                 {plugin} for {target} (a registry credential is bound to the registry.uri it \
                 was issued for)"
            ),
        }
    }

    /// Logs the refusal (a warning tagged with the plugin and the grant)
    /// and returns [`Refusal::message`].
    pub fn report(&self, plugin: &str) -> String {
        let what = match self {
            Refusal::Http { uri } => format!("an outbound HTTP request to {uri}"),
            Refusal::Userinfo { uri } => {
                format!("an outbound HTTP request to {uri} with userinfo in its URL")
            }
            Refusal::Secret { name } => format!("to open secret {name:?}"),
            Refusal::Docker => "Docker engine access".to_string(),
            Refusal::KubeNamespace { namespace, .. } => match namespace {
                Some(ns) => format!("Kubernetes namespace {ns:?}"),
                None => "the Kubernetes cluster".to_string(),
            },
            Refusal::Blob { url } => format!("object store URL {url}"),
            Refusal::PushRegistry { registry } => format!("a push to registry {registry}"),
            Refusal::Registry { origin } => format!("a request to registry {origin}"),
            Refusal::Redirect { from, to } => format!("a redirect from {from} to {to}"),
            Refusal::TokenRealm { registry, realm } => {
                format!("token realm {realm} of registry {registry}")
            }
            Refusal::EnvironmentAuth { origin } => {
                format!("the environment's token for {origin}")
            }
            Refusal::CredentialScope {
                secret,
                bound_to,
                target,
            } => format!("credential {secret:?} of {bound_to} for {target}"),
        };
        tracing::warn!(
            plugin,
            grant = self.grant(),
            "refused {what}: not granted (add it to {})",
            self.grant()
        );
        self.message(plugin)
    }
}

impl GrantPolicy {
    /// Compiles `grants`; `secrets` is the config's `secrets:` map, where
    /// each granted secret must be defined. The error names the grant and
    /// the value.
    pub fn compile(
        grants: &Grants,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Self, GrantError> {
        let host_grants: Vec<String> = grants.hosts.iter().map(|h| h.value.clone()).collect();
        let hosts = HostAllowList::new(&host_grants).map_err(|reason| GrantError {
            grant: "grants.hosts",
            reason,
        })?;
        let environment_auth_grants: Vec<String> = grants
            .environment_auth
            .iter()
            .map(|h| h.value.clone())
            .collect();
        let environment_auth =
            HostAllowList::new(&environment_auth_grants).map_err(|reason| GrantError {
                grant: "grants.environment_auth",
                reason,
            })?;
        let secrets = grants
            .secrets
            .iter()
            .map(|name| match secrets.get(name) {
                Some(source) => Ok((name.clone(), source.clone())),
                None => Err(GrantError {
                    grant: "grants.secrets",
                    reason: format!(
                        "names secret {name:?}, which the `secrets:` map does not define"
                    ),
                }),
            })
            .collect::<Result<_, _>>()?;
        let blob_store_grants: Vec<String> =
            grants.blob.stores.iter().map(|s| s.value.clone()).collect();
        let blob_stores = blob_store_grants
            .iter()
            .map(|s| {
                super::blob::StorePrefix::parse(s).map_err(|reason| GrantError {
                    grant: "grants.blob.stores",
                    reason: format!("{s:?}: {reason}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(GrantPolicy {
            hosts,
            host_grants,
            blob_stores,
            blob_store_grants,
            environment_auth,
            environment_auth_grants,
            env: grants.env.clone(),
            secrets,
            dirs: grants.dirs.clone(),
            docker: grants.docker,
            build_network: grants.build_network,
            kube_namespaces: grants
                .kubernetes
                .as_ref()
                .map(|k| k.namespaces.clone())
                .unwrap_or_default(),
        })
    }

    /// A policy granting `hosts` (`grants.hosts` patterns) and nothing
    /// else: for the host's own requests made with a plugin's credentials
    /// outside any plugin (tests, tools).
    pub fn for_hosts(hosts: &[&str]) -> Result<Self, GrantError> {
        let host_grants: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let hosts = HostAllowList::new(&host_grants).map_err(|reason| GrantError {
            grant: "grants.hosts",
            reason,
        })?;
        Ok(GrantPolicy {
            hosts,
            host_grants,
            ..GrantPolicy::default()
        })
    }

    /// Whether the plugin may send a request to `uri` (`wasi:http`). A URI
    /// with userinfo (`user@host`) is refused whatever the grants: the
    /// refusal names it without the userinfo, which may be a password.
    pub fn http(&self, uri: &http::Uri) -> Result<(), Refusal> {
        let shown = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host()
                .map(|h| match uri.port_u16() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_string(),
                })
                .unwrap_or_else(|| "?".into()),
            uri.path()
        );
        if has_userinfo(uri) {
            return Err(Refusal::Userinfo { uri: shown });
        }
        if self.hosts.allows_uri(uri) || self.environment_auth.allows_uri(uri) {
            return Ok(());
        }
        Err(Refusal::Http { uri: shown })
    }

    /// Whether a request to `uri` is to be authorized by the environment
    /// before it leaves (`grants.environment_auth`, the grant `auth:
    /// environment`).
    pub fn environment_auth(&self, uri: &http::Uri) -> bool {
        !has_userinfo(uri) && self.environment_auth.allows_uri(uri)
    }

    /// `grants.environment_auth` as written.
    pub fn environment_auth_hosts(&self) -> &[String] {
        &self.environment_auth_grants
    }

    /// Where the value of secret `name` comes from, if it is granted.
    pub fn secret(&self, name: &str) -> Result<&SecretSource, Refusal> {
        self.secrets
            .iter()
            .find(|(granted, _)| granted == name)
            .map(|(_, source)| source)
            .ok_or_else(|| Refusal::Secret {
                name: name.to_string(),
            })
    }

    /// Whether the plugin may reach Kubernetes namespace `namespace`
    /// (`None`: whether it may reach the cluster at all, in its first
    /// granted namespace, which is returned).
    pub fn kubernetes(&self, namespace: Option<&str>) -> Result<String, Refusal> {
        let refused = || Refusal::KubeNamespace {
            namespace: namespace.map(str::to_string),
            granted: self.kube_namespaces.clone(),
        };
        match namespace {
            Some(ns) if self.kube_namespaces.iter().any(|g| g == ns) => Ok(ns.to_string()),
            Some(_) => Err(refused()),
            None => self.kube_namespaces.first().cloned().ok_or_else(refused),
        }
    }

    /// `grants.kubernetes.namespaces`, in the order granted.
    pub fn kubernetes_namespaces(&self) -> &[String] {
        &self.kube_namespaces
    }

    /// Whether the plugin may use the object-store URL `url`
    /// (`launch:plugin/blob`): it must lie under a prefix of
    /// `grants.blob.stores`.
    pub fn blob(&self, url: &super::blob::StoreUrl) -> Result<(), Refusal> {
        if self.blob_stores.iter().any(|p| p.contains(url)) {
            return Ok(());
        }
        Err(Refusal::Blob {
            url: url.to_string(),
        })
    }

    /// `grants.blob.stores` as written.
    pub fn blob_stores(&self) -> &[String] {
        &self.blob_store_grants
    }

    /// Whether the plugin may use the host's Docker engine.
    pub fn docker(&self) -> Result<(), Refusal> {
        if self.docker {
            Ok(())
        } else {
            Err(Refusal::Docker)
        }
    }

    /// Whether the engine may push to `registry` (`host[:port]`; `None` for
    /// Docker Hub).
    ///
    /// The engine chooses the scheme (https, falling back to http for
    /// insecure registries such as `127.0.0.1:*`), so a grant of either
    /// `https://host[:port]` or `http://host[:port]` allows it; without a
    /// port the default ports apply (443, 80). Docker Hub is allowed by a
    /// grant of any of `https://` [`DOCKER_HUB_HOSTS`].
    pub fn push_registry(&self, registry: Option<&str>) -> Result<(), Refusal> {
        let allowed = match registry {
            Some(host) => ["https", "http"]
                .iter()
                .any(|scheme| self.allows_origin(scheme, host)),
            None => DOCKER_HUB_HOSTS
                .iter()
                .any(|host| self.allows_origin("https", host)),
        };
        if allowed {
            return Ok(());
        }
        Err(Refusal::PushRegistry {
            registry: registry.unwrap_or("docker.io").to_string(),
        })
    }

    /// Whether the plugin may ask registry `host[:port]` over `scheme`
    /// (`launch:plugin/oci`); without a port the scheme's default applies.
    pub fn registry(&self, scheme: &str, registry: &str) -> Result<(), Refusal> {
        if self.allows_origin(scheme, registry) {
            return Ok(());
        }
        Err(Refusal::Registry {
            origin: format!("{scheme}://{registry}"),
        })
    }

    /// Whether `scheme://authority/` is allowed; an authority that is not
    /// one is not.
    fn allows_origin(&self, scheme: &str, authority: &str) -> bool {
        format!("{scheme}://{authority}/")
            .parse::<http::Uri>()
            .is_ok_and(|uri| self.hosts.allows_uri(&uri))
    }

    /// The environment variables granted, by name.
    pub fn env(&self) -> &[String] {
        &self.env
    }

    /// The directories granted.
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// `grants.hosts` as written.
    pub fn hosts(&self) -> &[String] {
        &self.host_grants
    }

    /// The names of the secrets granted, in the order granted.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(name, _)| name.as_str())
    }

    /// Whether the Docker engine is granted.
    pub fn docker_granted(&self) -> bool {
        self.docker
    }

    /// Whether a Docker build's steps get the network
    /// (`grants.build_network`); else the build runs with network mode
    /// `none`.
    pub fn build_network(&self) -> bool {
        self.docker && self.build_network
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_saphyr::Spanned;

    fn grants(hosts: &[&str]) -> Grants {
        let nowhere = serde_saphyr::Location::UNKNOWN;
        Grants {
            hosts: hosts
                .iter()
                .map(|h| Spanned::new(h.to_string(), nowhere, nowhere))
                .collect(),
            ..Grants::default()
        }
    }

    fn policy(hosts: &[&str]) -> GrantPolicy {
        GrantPolicy::compile(&grants(hosts), &BTreeMap::new()).unwrap()
    }

    #[test]
    fn only_hosts_marked_auth_environment_are_authorized_by_the_environment() {
        let nowhere = serde_saphyr::Location::UNKNOWN;
        let mut g = grants(&["https://registry.example.com"]);
        g.environment_auth = vec![Spanned::new(
            "https://api.ecr.us-east-1.amazonaws.com".to_string(),
            nowhere,
            nowhere,
        )];
        let policy = GrantPolicy::compile(&g, &BTreeMap::new()).unwrap();
        let api: http::Uri = "https://api.ecr.us-east-1.amazonaws.com/".parse().unwrap();
        let registry: http::Uri = "https://registry.example.com/v2/".parse().unwrap();
        // A marked host may be requested, and is authorized.
        assert!(policy.http(&api).is_ok() && policy.environment_auth(&api));
        // A host granted plainly is not.
        assert!(policy.http(&registry).is_ok() && !policy.environment_auth(&registry));
        // Nor is anything with userinfo, nor another host.
        let sneaky: http::Uri = "https://x@api.ecr.us-east-1.amazonaws.com/"
            .parse()
            .unwrap();
        assert!(!policy.environment_auth(&sneaky) && policy.http(&sneaky).is_err());
        let other: http::Uri = "https://api.ecr.eu-west-1.amazonaws.com/".parse().unwrap();
        assert!(!policy.environment_auth(&other) && policy.http(&other).is_err());
        assert_eq!(
            policy.environment_auth_hosts(),
            ["https://api.ecr.us-east-1.amazonaws.com"]
        );
        g.environment_auth[0].value = "api.ecr.amazonaws.com".into();
        let err = GrantPolicy::compile(&g, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.grant, "grants.environment_auth");
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let policy = GrantPolicy::default();
        let uri: http::Uri = "https://example.com/".parse().unwrap();
        assert!(policy.http(&uri).is_err());
        assert_eq!(policy.docker(), Err(Refusal::Docker));
        assert!(policy.secret("token").is_err());
        assert!(policy.push_registry(None).is_err());
        assert!(policy.registry("https", "example.com").is_err());
        assert!(policy.env().is_empty() && policy.dirs().is_empty());
    }

    #[test]
    fn a_bad_grant_is_an_error_naming_it() {
        let error = GrantPolicy::compile(&grants(&["example.com"]), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.grant, "grants.hosts");
        assert!(error.to_string().contains("\"example.com\""), "{error}");
        let mut missing = Grants::default();
        missing.secrets.push("nope".into());
        let error = GrantPolicy::compile(&missing, &BTreeMap::new()).unwrap_err();
        assert_eq!(error.grant, "grants.secrets");
        assert!(error.reason.contains("nope"), "{error}");
    }

    #[test]
    fn only_granted_secrets_open() {
        let mut granted = Grants::default();
        granted.secrets.push("token".into());
        let map = BTreeMap::from([
            ("token".to_string(), SecretSource::Env("TOKEN".into())),
            ("other".to_string(), SecretSource::Env("OTHER".into())),
        ]);
        let policy = GrantPolicy::compile(&granted, &map).unwrap();
        assert!(matches!(policy.secret("token"), Ok(SecretSource::Env(v)) if v == "TOKEN"));
        assert_eq!(
            policy.secret("other").unwrap_err(),
            Refusal::Secret {
                name: "other".into()
            }
        );
        assert_eq!(policy.secret_names().collect::<Vec<_>>(), ["token"]);
    }

    #[test]
    fn a_refused_http_request_is_named_without_its_query() {
        let policy = policy(&["https://api.example.com"]);
        let allowed: http::Uri = "https://api.example.com/v1?x=1".parse().unwrap();
        assert!(policy.http(&allowed).is_ok());
        let other: http::Uri = "https://evil.example.com/p?token=s3cret".parse().unwrap();
        let refusal = policy.http(&other).unwrap_err();
        assert_eq!(refusal.grant(), "grants.hosts");
        let message = refusal.message("p 1.0");
        assert!(message.contains("https://evil.example.com/p"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn a_url_with_userinfo_is_refused_even_to_a_granted_host_and_named_without_it() {
        let policy = policy(&["http://127.0.0.1:*"]);
        for text in [
            "http://x@127.0.0.1:5000/v2/",
            "http://user:pa55w0rd@127.0.0.1:5000/v2/",
            "http://127.0.0.1:80@127.0.0.1:5000/",
        ] {
            let uri: http::Uri = text.parse().unwrap();
            let refusal = policy.http(&uri).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Userinfo { .. }),
                "{text}: {refusal:?}"
            );
            let message = refusal.message("p 1.0");
            assert!(message.contains("userinfo"), "{message}");
            assert!(message.contains("127.0.0.1:5000"), "{message}");
            assert!(
                !message.contains("pa55w0rd") && !message.contains('@'),
                "{message}"
            );
        }
    }

    #[test]
    fn push_grants_follow_the_documented_rule() {
        let local = Some("127.0.0.1:5000");
        assert!(
            policy(&["http://127.0.0.1:5000"])
                .push_registry(local)
                .is_ok()
        );
        assert!(
            policy(&["https://127.0.0.1:5000"])
                .push_registry(local)
                .is_ok()
        );
        assert!(policy(&["http://127.0.0.1:*"]).push_registry(local).is_ok());
        assert!(policy(&["*://127.0.0.1:5000"]).push_registry(local).is_ok());
        assert!(
            policy(&["http://127.0.0.1:5001"])
                .push_registry(local)
                .is_err()
        );
        assert_eq!(
            policy(&[]).push_registry(local),
            Err(Refusal::PushRegistry {
                registry: "127.0.0.1:5000".into()
            })
        );
        assert!(
            policy(&["https://registry-1.docker.io"])
                .push_registry(None)
                .is_ok()
        );
        assert_eq!(
            policy(&["http://127.0.0.1:*"]).push_registry(None),
            Err(Refusal::PushRegistry {
                registry: "docker.io".into()
            })
        );
        let plain = Some("registry.example.com");
        assert!(
            policy(&["https://registry.example.com"])
                .push_registry(plain)
                .is_ok()
        );
        assert!(
            policy(&["https://registry.example.com:5000"])
                .push_registry(plain)
                .is_err()
        );
    }

    #[test]
    fn registry_grants_use_scheme_registry_and_default_port() {
        let policy_https = policy(&["https://registry.example.com"]);
        assert!(
            policy_https
                .registry("https", "registry.example.com")
                .is_ok()
        );
        assert_eq!(
            policy_https.registry("http", "registry.example.com"),
            Err(Refusal::Registry {
                origin: "http://registry.example.com".into()
            })
        );
        assert!(
            policy(&["http://127.0.0.1:*"])
                .registry("http", "127.0.0.1:5000")
                .is_ok()
        );
        assert!(
            policy(&["http://127.0.0.1:*"])
                .registry("http", "bad host")
                .is_err()
        );
    }

    #[test]
    fn every_refusal_names_its_grant_and_the_plugin() {
        let refusals = [
            Refusal::Http {
                uri: "https://x/".into(),
            },
            Refusal::Userinfo {
                uri: "https://x/".into(),
            },
            Refusal::Secret { name: "s".into() },
            Refusal::Docker,
            Refusal::PushRegistry {
                registry: "r".into(),
            },
            Refusal::Registry {
                origin: "https://r".into(),
            },
            Refusal::Redirect {
                from: "https://r".into(),
                to: "https://evil".into(),
            },
            Refusal::TokenRealm {
                registry: "https://r".into(),
                realm: "https://evil".into(),
            },
            Refusal::CredentialScope {
                secret: "s".into(),
                bound_to: "r/a".into(),
                target: "r/b".into(),
            },
            Refusal::EnvironmentAuth {
                origin: "https://r".into(),
            },
        ];
        for refusal in refusals {
            let message = refusal.message("plugin-x 1.0");
            assert!(message.contains("plugin-x 1.0"), "{message}");
            if refusal != (Refusal::Secret { name: "s".into() }) {
                assert!(message.contains(refusal.grant()), "{message}");
            }
        }
    }
}
