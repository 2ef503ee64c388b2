//! The forward proxy a build's steps reach the network through, allowing
//! only the hosts the builder's `grants.hosts` allow.
//!
//! One proxy runs for one build call, on the build network's gateway
//! address (see [`build_network`](super::build_network)), the only address
//! the build's steps can reach; their `HTTP_PROXY`/`HTTPS_PROXY` build
//! arguments point at it. It speaks the two forms every HTTP client uses:
//!
//! | request | allowed when `grants.hosts` allows | then |
//! |---|---|---|
//! | `CONNECT host:port` (HTTPS, any TLS) | `https://host:port` or `http://host:port` | a tunnel to `host:port` |
//! | `GET http://host[:port]/path` (plain HTTP, any method) | `http://host[:port]` | the request, sent on with `Connection: close` |
//!
//! Anything else (a refused host, userinfo in the URL, a malformed or
//! oversized head) is answered `403`/`400` with the reason, and logged as a
//! warning naming the plugin. The proxy resolves names itself, as the
//! plugin's own `wasi:http` requests do; loopback is reached only when a
//! grant names it. Only the build network's own addresses are served (a
//! job's container on another network is closed on). At most
//! [`MAX_CONNECTIONS`] connections are open at once; a request head must
//! arrive within [`HEAD_TIMEOUT`].

use crate::capabilities::policy::GrantPolicy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The most connections one build's proxy holds open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to a granted host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// What the proxy says of what it refused (a warning line for the job's
/// log and tracing).
pub type RefusalLog = Arc<dyn Fn(&str) + Send + Sync>;

/// A running proxy; it stops (and closes every connection) when dropped.
pub struct BuildProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BuildProxy {
    /// Starts a proxy on `bind` (a free port) for plugin `plugin` under
    /// `policy`; refusals go to `log`.
    pub async fn start(
        bind: IpAddr,
        clients: Subnet,
        policy: Arc<GrantPolicy>,
        plugin: Arc<str>,
        log: RefusalLog,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((bind, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            let mut connections = JoinSet::new();
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Only the build network's containers: a job's container on
                // another network must not borrow the builder's grants.
                if !clients.contains(peer.ip()) {
                    continue;
                }
                let (policy, plugin, log) = (policy.clone(), plugin.clone(), log.clone());
                connections.spawn(async move {
                    serve(stream, &policy, &plugin, &*log).await;
                    drop(permit);
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(BuildProxy { addr, task })
    }

    /// The proxy's URL (`http://ip:port`), for `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for BuildProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An IPv4 subnet (`a.b.c.d/len`): the addresses a proxy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    network: u32,
    mask: u32,
}

impl Subnet {
    /// Parses `a.b.c.d/len`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IPv4 subnet (a.b.c.d/len)");
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Subnet {
            network: u32::from(addr) & mask,
            mask,
        })
    }

    /// Whether `ip` lies in it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return false,
            },
        };
        u32::from(ip) & self.mask == self.network
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// A tunnel to `host:port`.
    Tunnel { host: String, port: u16 },
    /// A plain HTTP request to `host:port`: its head rewritten for the
    /// origin server.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// Reads the request head (up to the blank line) and what followed it in
/// the same reads.
async fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("the request head is over {MAX_HEAD} bytes"));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("the client closed the connection before its request ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What `head` asks for, checked against `policy`; the error is the
/// status and reason to answer.
fn judge(head: &[u8], policy: &GrantPolicy) -> Result<Ask, (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err((400, "malformed request head".into())),
    }
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let uri: http::Uri = format!("https://{target}/")
            .parse()
            .map_err(|_| (400, format!("CONNECT target {target:?} is not host:port")))?;
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err((400, format!("CONNECT target {target:?} is not host:port")));
        };
        if target.contains('@') {
            return Err((403, format!("CONNECT target {target:?} carries userinfo")));
        }
        let allowed = ["https", "http"].iter().any(|scheme| {
            format!("{scheme}://{target}/")
                .parse::<http::Uri>()
                .is_ok_and(|uri| policy.http(&uri).is_ok())
        });
        if !allowed {
            return Err((403, format!("{host}:{port} is not in grants.hosts")));
        }
        return Ok(Ask::Tunnel {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        });
    }
    let uri: http::Uri = target
        .parse()
        .map_err(|_| (400, format!("{target:?} is not an absolute http:// URL")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err((
            400,
            format!("{target:?} is not an absolute http:// URL (use CONNECT for https)"),
        ));
    }
    if let Err(refusal) = policy.http(&uri) {
        let why = match refusal {
            crate::capabilities::policy::Refusal::Userinfo { uri } => {
                format!("{uri} carries userinfo")
            }
            _ => format!(
                "http://{}:{} is not in grants.hosts",
                uri.host().unwrap_or_default(),
                uri.port_u16().unwrap_or(80)
            ),
        };
        return Err((403, why));
    }
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Ask::Forward {
        host,
        port,
        head: out,
    })
}

/// Serves one client connection.
async fn serve(
    mut client: TcpStream,
    policy: &GrantPolicy,
    plugin: &str,
    log: &(dyn Fn(&str) + Send + Sync),
) {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(why)) => return answer(&mut client, 400, &why).await,
        Err(_) => return answer(&mut client, 408, "no request head in time").await,
    };
    let ask = match judge(&head, policy) {
        Ok(ask) => ask,
        Err((status, why)) => {
            if status == 403 {
                log(&format!(
                    "{plugin}: a build step's request was refused: {why} (add it to the builder's grants.hosts)"
                ));
            }
            return answer(&mut client, status, &why).await;
        }
    };
    let (host, port) = match &ask {
        Ask::Tunnel { host, port } | Ask::Forward { host, port, .. } => (host.clone(), *port),
    };
    let upstream =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await;
    let mut upstream = match upstream {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            return answer(
                &mut client,
                502,
                &format!("connecting to {host}:{port}: {e}"),
            )
            .await;
        }
        Err(_) => {
            return answer(
                &mut client,
                504,
                &format!("connecting to {host}:{port} timed out"),
            )
            .await;
        }
    };
    let sent = match &ask {
        Ask::Tunnel { .. } => {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
        }
        Ask::Forward { head, .. } => upstream.write_all(head).await,
    };
    if sent.is_err() || upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Answers `status` with `why` as the body, and closes.
async fn answer(client: &mut TcpStream, status: u16, why: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("launch-agent build proxy: {why}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_hold_their_addresses() {
        let s = Subnet::parse("172.21.0.0/16").unwrap();
        assert!(s.contains("172.21.3.4".parse().unwrap()));
        assert!(!s.contains("172.17.0.2".parse().unwrap()));
        assert!(s.contains("::ffff:172.21.0.9".parse().unwrap()));
        assert!(!s.contains("::1".parse().unwrap()));
        assert!(Subnet::parse("172.21.0.0").is_err());
        assert!(Subnet::parse("172.21.0.0/33").is_err());
    }

    #[test]
    fn only_granted_hosts_pass() {
        let policy =
            GrantPolicy::for_hosts(&["https://pypi.org", "http://127.0.0.1:8080"]).unwrap();
        assert_eq!(
            judge(
                b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
                &policy
            ),
            Ok(Ask::Tunnel {
                host: "pypi.org".into(),
                port: 443
            })
        );
        assert!(matches!(
            judge(b"CONNECT evil.example.com:443 HTTP/1.1\r\n\r\n", &policy),
            Err((403, why)) if why.contains("evil.example.com:443")
        ));
        assert!(matches!(
            judge(b"CONNECT pypi.org:22 HTTP/1.1\r\n\r\n", &policy),
            Err((403, _))
        ));
        assert!(matches!(
            judge(b"CONNECT x@pypi.org:443 HTTP/1.1\r\n\r\n", &policy),
            Err((403, _)) | Err((400, _))
        ));
        let Ok(Ask::Forward { host, port, head }) = judge(
            b"GET http://127.0.0.1:8080/simple/?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nProxy-Authorization: x\r\nConnection: keep-alive\r\n\r\n",
            &policy,
        ) else {
            panic!("a granted plain request passes");
        };
        assert_eq!((host.as_str(), port), ("127.0.0.1", 8080));
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET /simple/?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(!head.contains("Proxy-Authorization") && head.contains("Connection: close"));
        for refused in [
            &b"GET http://127.0.0.1:8081/ HTTP/1.1\r\n\r\n"[..],
            b"GET http://u:p@127.0.0.1:8080/ HTTP/1.1\r\n\r\n",
            b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
            b"GET /relative HTTP/1.1\r\n\r\n",
            b"nonsense\r\n\r\n",
        ] {
            assert!(
                judge(refused, &policy).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }
}
