//! The network a granted build's steps run on: one where the only thing
//! they can reach is the host's [`build_proxy`](super::build_proxy).
//!
//! The engine here runs `RUN` steps of the classic builder in containers
//! on the build's network mode. A Docker network created `internal` has no
//! route out of its subnet (the engine drops forwarded traffic), and with
//! inter-container traffic off (`enable_icc=false`) two builds on it cannot
//! reach each other. What an internal network still reaches is the host
//! itself: every address of the host (the bridge's gateway, the default
//! bridge's, the host's own) is delivered locally, so any host service
//! listening on all addresses would be reachable. So, when it can, the host
//! also installs firewall rules dropping everything that enters from the
//! network's bridge ([`BRIDGE`]) except the one port of each running build
//! proxy: `INPUT -i launch-build0 -j LAUNCH-AGENT-BUILD`, that chain ending
//! in `DROP`, and per build `-p tcp --dport PORT -j ACCEPT` inserted first
//! in it, removed when the build ends.
//! Without `iptables` (or the right to use it) the build still runs, with
//! a warning that host services listening on all addresses are reachable
//! from its steps.
//!
//! | name | value |
//! |---|---|
//! | network | [`NETWORK`], created on first use: bridge, `internal`, `enable_icc=false` |
//! | bridge interface | [`BRIDGE`] |
//! | proxy | on the network's gateway address, a port per build |

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::NetworkCreateRequest;
use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;

/// The network's name.
pub const NETWORK: &str = "launch-agent-build";

/// The network's bridge interface on the host.
pub const BRIDGE: &str = "launch-build0";

/// The firewall chain of the agent's rules for [`BRIDGE`].
pub const CHAIN: &str = "LAUNCH-AGENT-BUILD";

/// The build network, ready: its name and its gateway (where the proxy
/// listens).
#[derive(Clone, Debug)]
pub struct NetworkReady {
    /// The network's name, the build's network mode.
    pub name: String,
    /// The host's address on it.
    pub gateway: IpAddr,
    /// Its IPv4 subnet: the addresses of the build's steps.
    pub subnet: super::build_proxy::Subnet,
}

/// The build network, created if it does not exist; an existing network of
/// that name that is not internal is refused (it would let steps out).
pub async fn ensure(docker: &Docker) -> Result<NetworkReady, String> {
    let inspect = || async {
        docker
            .inspect_network(
                NETWORK,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
    };
    let network = match inspect().await {
        Ok(network) => network,
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let request = NetworkCreateRequest {
                name: NETWORK.to_string(),
                driver: Some("bridge".into()),
                internal: Some(true),
                options: Some(HashMap::from([
                    (
                        "com.docker.network.bridge.enable_icc".to_string(),
                        "false".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.name".to_string(),
                        BRIDGE.to_string(),
                    ),
                ])),
                labels: Some(HashMap::from([(
                    "launch-agent.purpose".to_string(),
                    "build steps reach only the agent's proxy".to_string(),
                )])),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => {}
                // Another agent (or call) created it meanwhile.
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => return Err(format!("creating the build network {NETWORK}: {e}")),
            }
            inspect()
                .await
                .map_err(|e| format!("inspecting the build network {NETWORK}: {e}"))?
        }
        Err(e) => return Err(format!("inspecting the build network {NETWORK}: {e}")),
    };
    if network.internal != Some(true) {
        return Err(format!(
            "network {NETWORK} exists but is not internal, so build steps on it could reach any host: remove it (`docker network rm {NETWORK}`) and the agent creates it as it should be"
        ));
    }
    let (gateway, subnet) = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|config| {
            let gateway = config
                .gateway?
                .parse::<IpAddr>()
                .ok()
                .filter(IpAddr::is_ipv4)?;
            let subnet = super::build_proxy::Subnet::parse(&config.subnet?).ok()?;
            Some((gateway, subnet))
        })
        .ok_or_else(|| format!("the build network {NETWORK} has no IPv4 gateway and subnet"))?;
    Ok(NetworkReady {
        name: NETWORK.to_string(),
        gateway,
        subnet,
    })
}

/// The firewall rules that keep a build's steps off the host's other
/// services while one proxy runs; removed when dropped.
pub struct Firewall {
    port: Option<u16>,
}

impl Firewall {
    /// Drops what enters from [`BRIDGE`] except TCP to `port` (the
    /// proxy's). The error says why the host could not (no `iptables`, no
    /// right to use it): the build may go on, with that said.
    pub fn guard(port: u16) -> Result<Self, String> {
        // A chain of the agent's own: its ACCEPTs are inserted first and its
        // DROP appended last, so concurrent builds never reorder them.
        let _ = iptables("-N", &[CHAIN])?;
        let jump = ["INPUT", "-i", BRIDGE, "-j", CHAIN];
        if !iptables("-C", &jump)? {
            iptables_must("-I", &jump)?;
        }
        let drop_all = [CHAIN, "-j", "DROP"];
        if !iptables("-C", &drop_all)? {
            iptables_must("-A", &drop_all)?;
        }
        let port_text = port.to_string();
        iptables_must("-I", &accept_rule(&port_text))?;
        Ok(Firewall { port: Some(port) })
    }
}

/// The rule letting a build's steps reach the proxy on `port`.
fn accept_rule(port: &str) -> [&str; 7] {
    [CHAIN, "-p", "tcp", "--dport", port, "-j", "ACCEPT"]
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Some(port) = self.port.take() {
            let _ = iptables("-D", &accept_rule(&port.to_string()));
        }
    }
}

/// Runs `iptables -w <op> <rule>`: whether it succeeded; an error when
/// iptables cannot be run at all.
fn iptables(op: &str, rule: &[&str]) -> Result<bool, String> {
    let status = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    Ok(status.success())
}

/// [`iptables`], failing unless it succeeds.
fn iptables_must(op: &str, rule: &[&str]) -> Result<(), String> {
    if iptables(op, rule)? {
        Ok(())
    } else {
        Err(format!("iptables {op} {} failed", rule.join(" ")))
    }
}
