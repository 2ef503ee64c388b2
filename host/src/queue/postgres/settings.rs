//! Where the PostgreSQL queue is: the connection URL (from a secret or
//! `DATABASE_URL`), read into a driver config and a TLS mode as libpq
//! reads them.
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (libpq's default) | when the server offers it | no |
//! | `require` | always | no (yes, as `verify-ca`, when `sslrootcert` is given: libpq does the same) |
//! | `verify-ca` | always | its chain, against `sslrootcert` or the system's roots |
//! | `verify-full` | always | its chain and its host name |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::config::SecretSource;
use crate::queue::QueueError;

/// Where the connection URL comes from. The URL holds a password, so it is
/// never in the config file, never printed, and never part of an error.
#[derive(Clone)]
pub enum UrlSource {
    /// A named secret of the config (`postgres: {url-secret: NAME}`).
    Secret {
        /// The secret's name.
        name: String,
        /// Where its value comes from.
        source: SecretSource,
    },
    /// The agent's `DATABASE_URL` environment variable.
    DatabaseUrl,
    /// A URL given directly (tests and benchmarks).
    Literal(String),
}

impl fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Secret { name, .. } => write!(f, "Secret({name:?})"),
            UrlSource::DatabaseUrl => f.write_str("DatabaseUrl"),
            UrlSource::Literal(_) => f.write_str("Literal(<redacted>)"),
        }
    }
}

impl UrlSource {
    /// The URL's text; an error names where it was looked for, never the
    /// value.
    pub fn read(&self) -> Result<String, QueueError> {
        let value = match self {
            UrlSource::Secret { name, source } => source.read().map_err(|why| {
                QueueError::Remote(format!(
                    "the PostgreSQL queue's URL (secret {name:?}, from `postgres.url-secret`) cannot be read: {why}"
                ))
            })?,
            UrlSource::DatabaseUrl => crate::secret_env::var("DATABASE_URL").ok_or_else(|| {
                QueueError::Remote(
                    "the PostgreSQL queue needs its URL: set `postgres: {url-secret: NAME}` in the config, or DATABASE_URL"
                        .to_owned(),
                )
            })?,
            UrlSource::Literal(url) => url.clone(),
        };
        if value.trim().is_empty() {
            return Err(QueueError::Remote(format!(
                "the PostgreSQL queue's URL ({}) is empty",
                self.describe()
            )));
        }
        Ok(value)
    }

    /// Where the URL comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            UrlSource::Secret { name, .. } => format!("secret {name:?}"),
            UrlSource::DatabaseUrl => "DATABASE_URL".to_owned(),
            UrlSource::Literal(_) => "given directly".to_owned(),
        }
    }
}

/// What the PostgreSQL backend needs to open.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// Where the connection URL comes from.
    pub url: UrlSource,
}

/// How to use TLS, as libpq's `sslmode` says (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disable,
    /// When the server offers it, the certificate not checked.
    Prefer,
    /// Always, the certificate not checked.
    Require,
    /// Always, the chain checked but not the host name.
    VerifyCa,
    /// Always, the chain and the host name checked.
    VerifyFull,
}

/// A parsed connection URL.
pub struct Connection {
    /// The driver's config (TLS settings mapped to what it knows).
    pub config: tokio_postgres::Config,
    /// How to use TLS.
    pub tls: TlsMode,
    /// `sslrootcert`: the CA certificates (PEM) to check the server against.
    pub root_cert: Option<PathBuf>,
    /// The server and database, without the password: how errors name the store.
    pub store: String,
}

impl Connection {
    /// Parses a libpq URL (`postgres://user:pass@host:port/db?sslmode=...`)
    /// or key/value string (`host=... user=...`).
    pub fn parse(text: &str) -> Result<Self, QueueError> {
        let bad = |why: String| {
            QueueError::Remote(format!("the PostgreSQL queue's URL cannot be used: {why}"))
        };
        let (rest, mode, root_cert) = strip_tls_params(text).map_err(bad)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            // The driver's message names the bad part, never the password.
            .map_err(|e| bad(e.to_string()))?;
        let root_cert = root_cert.map(PathBuf::from);
        let tls = match mode.as_deref() {
            None | Some("prefer") | Some("allow") => TlsMode::Prefer,
            Some("disable") => TlsMode::Disable,
            Some("require") if root_cert.is_some() => TlsMode::VerifyCa,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => {
                return Err(bad(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        config.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("launch-agent");
        }
        let store = store_name(&config);
        Ok(Connection {
            config,
            tls,
            root_cert,
            store,
        })
    }
}

/// `postgres://user@host:port/db`: the store as errors name it.
fn store_name(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Takes `sslmode` and `sslrootcert` out of a URL or key/value string (the
/// driver knows neither `verify-*` nor root certificates); returns the rest
/// and the two values.
#[allow(clippy::type_complexity)]
fn strip_tls_params(text: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut mode, mut root) = (None, None);
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        // The other parameters are kept byte for byte (the driver decodes
        // them itself, and reads `+` as itself, not as a space).
        let Some((base, query)) = text.split_once('?') else {
            return Ok((text.to_owned(), None, None));
        };
        let decode = |value: &str| {
            url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = Some(decode(value)),
                Some(("sslrootcert", value)) => root = Some(decode(value)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    let mut kept = Vec::new();
    for part in text.split_whitespace() {
        match part.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_owned()),
            Some(("sslrootcert", value)) => root = Some(value.to_owned()),
            _ => kept.push(part),
        }
    }
    Ok((kept.join(" "), mode, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_reads_as_libpq_reads_it() {
        let mode = |url: &str| Connection::parse(url).map(|c| c.tls).unwrap();
        assert_eq!(mode("postgres://u:p@h/db"), TlsMode::Prefer);
        assert_eq!(
            mode("postgres://u:p@h/db?sslmode=disable"),
            TlsMode::Disable
        );
        assert_eq!(
            mode("postgres://u:p@h/db?sslmode=require"),
            TlsMode::Require
        );
        assert_eq!(
            mode("postgres://u:p@h/db?sslmode=require&sslrootcert=/ca.pem"),
            TlsMode::VerifyCa
        );
        assert_eq!(
            mode("postgresql://u:p@h/db?sslmode=verify-full&application_name=x"),
            TlsMode::VerifyFull
        );
        assert_eq!(mode("host=h user=u sslmode=verify-ca"), TlsMode::VerifyCa);
        let bad = Connection::parse("postgres://u:secretpw@h/db?sslmode=sometimes")
            .err()
            .unwrap()
            .to_string();
        assert!(
            bad.contains("sometimes") && !bad.contains("secretpw"),
            "{bad}"
        );
    }

    #[test]
    fn the_store_is_named_without_the_password() {
        let c = Connection::parse("postgres://launch:hunter2@127.0.0.1:5433/q?sslmode=disable")
            .unwrap();
        assert_eq!(c.store, "postgres://launch@127.0.0.1:5433/q");
        let debug = format!(
            "{:?}",
            PostgresSettings {
                url: UrlSource::Literal("postgres://launch:hunter2@h/q".into())
            }
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
