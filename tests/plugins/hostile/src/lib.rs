//! A hostile environment plugin: it attacks the sandbox in the way it is
//! told, so the host's tests can show the attack is stopped (or, for what a
//! config may grant, allowed).
//!
//! The orders are a JSON object with a `mode` and mode-specific keys, read
//! from two places:
//!
//! * `verify(settings)`: the settings themselves, when they have a `mode`
//!   (put `mode` etc. in the plugin's `config:` block). Without a `mode`,
//!   `verify` succeeds, so an agent configured with this plugin starts.
//! * `run-env(settings, job)`: the object at key `hostile` of the job's launch
//!   spec, when there is one, so each job can order its own attack. After a
//!   successful attack `run-env` returns no variables.
//!
//! | `mode` | other keys | does | result |
//! |---|---|---|---|
//! | `spin` | | loops forever | never returns (the deadline must stop it) |
//! | `alloc` | | allocates 1 MiB chunks forever | never returns (the memory cap must stop it) |
//! | `recurse` | | calls itself forever, using the native stack | never returns (the engine's stack limit must stop it) |
//! | `read-file` | `path` | reads the file | Ok, or Err `read-file <path>: <io error>` |
//! | `write-file` | `path` | writes `x` to the file | Ok, or Err `write-file <path>: <io error>` |
//! | `env` | `name` | reads the environment variable | Ok if set, else Err `env <NAME>: not visible` |
//! | `secret` | `name`, `expect` | opens the secret, reveals it | Ok if it equals `expect`, else Err `secret <name>: ...` (never with the value) |
//! | `leak` | `name`, `via` | reveals the secret and says `the secret is <value>` through `via`: `log` (a warning), `error` (its error) or `panic` | Ok, Err or a trap; the host must scrub the value from each |
//! | `http` | `url` | GET through `wasi:http` | Ok on status 200, else Err `http <url>: ...` |
//! | `leak-encoded` | `name`, `encoding` | reveals the secret and warns it as `base64`, `base64url`, `base64-inner` (inside a longer base64 string), `hex`, `HEX`, `url`, `reversed`, or `split` across two lines | Ok; the host must scrub each form |
//! | `leak-env` | `name` | (in `run-env`) returns the secret's value as variable `LEAKED` | Ok; the host must not hand it to the run |
//! | `stash` | `name`, `path` | writes the secret's value to the file (a granted writable directory) | Ok, or Err `stash <path>: <io error>` |
//! | `say-file` | `path` | warns what the file holds (a later call, without the secret) | Ok, or Err `say-file <path>: <io error>` |
//! | `tcp` | `addr` | opens a raw TCP connection | Ok if connected, else Err `tcp <addr>: <io error>` |
//! | `http-flood` | `url`, `count` | starts `count` GETs through `wasi:http` at once (none waited for until all are sent), then waits for each | Err `http-flood: <n> answered, <m> denied, <k> failed` |
//! | `log-flood` | `level` (default `info`), `bytes` (per line, default 100) | logs lines forever | never returns (the deadline must stop it; the log caps keep the job's log small) |
//! | `mint-flood` | `bytes` (per value, default 16) | mints distinct secrets forever | never returns (the mint caps must stop it) |
//! | `huge-error` | `bytes` | fails with a message of that many bytes | Err (the host must cut it) |
//! | `ok` | | nothing | Ok |
//! | `fail` | | nothing | Err `hostile plugin failed on purpose` |
//! | `panic` | | panics | a trap |
//!
//! Errors have stage `agent` and are not retryable.
//!
//! It is built twice: for `wasm32-wasip2` (`hostile.wasm`) and lean, for
//! `wasm32-unknown-unknown` (`hostile-lean.wasm`), which imports nothing of
//! WASI: its files, variables, HTTP and sockets all fail.

use launch_plugin_sdk::environment::Environment;
use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, SecretError, Stage, secrets};
use serde_json::{Map, Value};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// The plugin.
struct Hostile;

impl Plugin for Hostile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: "0.1.0".into(),
            description: "Test plugin that attacks the sandbox; never use it in a real config"
                .into(),
        }
    }
}

impl Environment for Hostile {
    fn verify(settings: String) -> Result<(), PluginError> {
        let settings: Map<String, Value> =
            launch_plugin_sdk::parse_settings(&settings, Stage::Agent)?;
        if settings.contains_key("mode") {
            attack(&settings)
        } else {
            Ok(())
        }
    }

    fn run_env(_settings: String, job: Job) -> Result<Vec<(String, String)>, PluginError> {
        let spec: Value = serde_json::from_str(&job.spec_json)
            .map_err(|e| PluginError::agent(format!("hostile: the job's spec is not JSON: {e}")))?;
        if let Some(orders) = spec.get("hostile").and_then(Value::as_object) {
            attack(orders)?;
            if orders.get("mode").and_then(Value::as_str) == Some("leak-env") {
                return Ok(vec![("LEAKED".into(), reveal(key(orders, "name")?)?)]);
            }
        }
        Ok(Vec::new())
    }
}

/// Carries out the attack `orders["mode"]` names, with its other keys.
fn attack(orders: &Map<String, Value>) -> Result<(), PluginError> {
    let mode = key(orders, "mode")?;
    launch_plugin_sdk::info!("hostile mode {mode}");
    match mode {
        "spin" => spin(),
        "alloc" => alloc(),
        "recurse" => {
            STOP_AT.store(u64::MAX, Ordering::Relaxed);
            black_box(recurse(0));
            Ok(())
        }
        "read-file" => read_file(key(orders, "path")?),
        "write-file" => write_file(key(orders, "path")?),
        "env" => env(key(orders, "name")?),
        "secret" => secret(key(orders, "name")?, key(orders, "expect")?),
        "leak" => leak(key(orders, "name")?, key(orders, "via")?),
        "leak-encoded" => leak_encoded(key(orders, "name")?, key(orders, "encoding")?),
        "leak-env" => Ok(()),
        "stash" => stash(key(orders, "name")?, key(orders, "path")?),
        "say-file" => say_file(key(orders, "path")?),
        "http" => http(key(orders, "url")?),
        "http-flood" => http_flood(key(orders, "url")?, number(orders, "count", 100)),
        "tcp" => tcp(key(orders, "addr")?),
        "log-flood" => log_flood(
            orders
                .get("level")
                .and_then(Value::as_str)
                .unwrap_or("info"),
            number(orders, "bytes", 100),
        ),
        "mint-flood" => mint_flood(number(orders, "bytes", 16)),
        "huge-error" => Err(PluginError::agent(format!(
            "huge error {}",
            "e".repeat(number(orders, "bytes", 1 << 20))
        ))),
        "ok" => Ok(()),
        "warn" => {
            let text = orders
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("hostile warning");
            launch_plugin_sdk::warn!("{text}");
            Ok(())
        }
        "fail" => Err(PluginError::agent("hostile plugin failed on purpose")),
        "panic" => panic!("hostile plugin panicked on purpose"),
        other => Err(PluginError::agent(format!(
            "unknown hostile mode `{other}`"
        ))),
    }
}

launch_plugin_sdk::export_environment!(Hostile);

/// The string at key `name` of `orders`.
fn key<'a>(orders: &'a Map<String, Value>, name: &str) -> Result<&'a str, PluginError> {
    orders
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PluginError::agent(format!("hostile: key `{name}` (a string) is required")))
}

/// The number at key `name` of `orders`, `default` when absent.
fn number(orders: &Map<String, Value>, name: &str, default: usize) -> usize {
    orders
        .get(name)
        .and_then(Value::as_u64)
        .map_or(default, |n| n as usize)
}

/// Logs lines of `bytes` bytes at `level` forever.
fn log_flood(level: &str, bytes: usize) -> Result<(), PluginError> {
    let line = "x".repeat(bytes);
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
        match level {
            "warn" => launch_plugin_sdk::warn!("{n} {line}"),
            "error" => launch_plugin_sdk::error!("{n} {line}"),
            _ => launch_plugin_sdk::info!("{n} {line}"),
        }
    }
}

/// Mints distinct secrets of `bytes` bytes forever, keeping no handle.
fn mint_flood(bytes: usize) -> Result<(), PluginError> {
    let padding = "s".repeat(bytes.saturating_sub(20));
    let mut n: u64 = 0;
    loop {
        n = n.wrapping_add(1);
        let secret = secrets::mint("flood", &format!("{n:020}{padding}"));
        drop(black_box(secret));
    }
}

/// Burns CPU forever.
fn spin() -> Result<(), PluginError> {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// The depth at which [`recurse`] would stop: never reached, but stored at
/// run time so the compiler cannot tell.
static STOP_AT: AtomicU64 = AtomicU64::new(0);

/// Calls itself without end. The result is combined so that the call
/// cannot become a loop, and no local has its address taken, so each frame
/// lives on the engine's native stack rather than in linear memory.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == STOP_AT.load(Ordering::Relaxed) {
        return depth;
    }
    recurse(depth + 1).wrapping_mul(31).wrapping_add(depth)
}

/// Allocates (and touches) 1 MiB chunks forever.
fn alloc() -> Result<(), PluginError> {
    const MIB: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xA5u8; MIB]));
        if hoard.len().is_multiple_of(64) {
            launch_plugin_sdk::debug!("hostile alloc: {} MiB held", hoard.len());
        }
        black_box(&hoard);
    }
}

/// Reads `path`.
fn read_file(path: &str) -> Result<(), PluginError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            launch_plugin_sdk::info!("read-file {path}: read {} bytes", bytes.len());
            Ok(())
        }
        Err(e) => Err(PluginError::agent(format!("read-file {path}: {e}"))),
    }
}

/// Writes `x` to `path`.
fn write_file(path: &str) -> Result<(), PluginError> {
    std::fs::write(path, "x").map_err(|e| PluginError::agent(format!("write-file {path}: {e}")))
}

/// Reads environment variable `name`.
fn env(name: &str) -> Result<(), PluginError> {
    match std::env::var(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(PluginError::agent(format!("env {name}: not visible"))),
    }
}

/// Opens secret `name` and compares its value with `expect` (never
/// reporting the value).
fn secret(name: &str, expect: &str) -> Result<(), PluginError> {
    let secret = secrets::open(name).map_err(|e| refused(name, "", e))?;
    // `reveal` fails (rather than returning the value) for a handle the host
    // handed over only to be passed on; the error names the reason, never
    // the value.
    let value = secret
        .reveal()
        .map_err(|e| refused(name, "cannot reveal: ", e))?;
    if value == expect {
        Ok(())
    } else {
        Err(PluginError::agent(format!(
            "secret {name}: opened, but its value is not the expected one"
        )))
    }
}

/// The error for a secret the host refused to open (`what` empty) or to
/// reveal (`what` = `cannot reveal: `); the host's reasons never carry the
/// value.
fn refused(name: &str, what: &str, error: SecretError) -> PluginError {
    let (kind, why) = match error {
        SecretError::NotGranted(why) => ("not granted", why),
        SecretError::Unavailable(why) => ("unavailable", why),
        SecretError::Opaque(why) => ("opaque", why),
    };
    PluginError::agent(format!("secret {name}: {what}{kind}: {why}"))
}

/// Reveals secret `name` and says its value through `via`.
fn leak(name: &str, via: &str) -> Result<(), PluginError> {
    let value = secrets::open(name)
        .and_then(|secret| secret.reveal())
        .map_err(|e| refused(name, "", e))?;
    let text = format!("the secret is {value}");
    match via {
        "log" => {
            launch_plugin_sdk::warn!("{text}");
            Ok(())
        }
        "error" => Err(PluginError::agent(text)),
        "panic" => panic!("{text}"),
        other => Err(PluginError::agent(format!("unknown leak route `{other}`"))),
    }
}

/// The value of secret `name`.
fn reveal(name: &str) -> Result<String, PluginError> {
    secrets::open(name)
        .and_then(|secret| secret.reveal())
        .map_err(|e| refused(name, "", e))
}

/// Reveals secret `name` and logs it (as warnings) disguised by `encoding`:
/// `base64`, `base64url`, `base64-inner` (inside a longer base64 string),
/// `hex`, `HEX`, `url`, `reversed` or `split` (two lines).
fn leak_encoded(name: &str, encoding: &str) -> Result<(), PluginError> {
    let value = reveal(name)?;
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let said = match encoding {
        "base64" => base64(value.as_bytes(), STD, true),
        "base64url" => base64(value.as_bytes(), URL, false),
        "base64-inner" => base64(format!("user:{value}:tail").as_bytes(), STD, true),
        "hex" => value.bytes().map(|b| format!("{b:02x}")).collect(),
        "HEX" => value.bytes().map(|b| format!("{b:02X}")).collect(),
        "url" => value
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect(),
        "reversed" => value.chars().rev().collect(),
        "split" => {
            let half = value.len() / 2;
            launch_plugin_sdk::warn!("the secret starts {}", &value[..half]);
            launch_plugin_sdk::warn!("{}", &value[half..]);
            return Ok(());
        }
        other => return Err(PluginError::agent(format!("unknown encoding `{other}`"))),
    };
    launch_plugin_sdk::warn!("the secret, as {encoding}: {said}");
    Ok(())
}

/// `bytes` in base64 with `alphabet`, padded when `pad`.
fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// Writes secret `name`'s value to `path` (a granted writable directory).
fn stash(name: &str, path: &str) -> Result<(), PluginError> {
    std::fs::write(path, reveal(name)?)
        .map_err(|e| PluginError::agent(format!("stash {path}: {e}")))
}

/// Logs (as a warning) what `path` holds.
fn say_file(path: &str) -> Result<(), PluginError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PluginError::agent(format!("say-file {path}: {e}")))?;
    launch_plugin_sdk::warn!("{path} holds {text}");
    Ok(())
}

/// GETs `url` through `wasi:http`.
fn http(url: &str) -> Result<(), PluginError> {
    let fail = |what: String| PluginError::agent(format!("http {url}: {what}"));
    let status = http_get_status(url).map_err(fail)?;
    if status == 200 {
        Ok(())
    } else {
        Err(fail(format!("status {status}")))
    }
}

/// A lean build has no `wasi:http`.
#[cfg(not(target_os = "wasi"))]
fn http_get_status(_url: &str) -> Result<u16, String> {
    Err("this build of the plugin is lean: it imports no wasi:http".into())
}

/// A lean build has no `wasi:http`.
#[cfg(not(target_os = "wasi"))]
fn http_flood(_url: &str, _count: usize) -> Result<(), PluginError> {
    Err(PluginError::agent(
        "http-flood: this build of the plugin is lean: it imports no wasi:http",
    ))
}

/// Starts `count` GETs of `url` before waiting for any, then waits for
/// each: how many were answered, denied by the host, or failed otherwise.
#[cfg(target_os = "wasi")]
fn http_flood(url: &str, count: usize) -> Result<(), PluginError> {
    use wasip2::http::types::ErrorCode;
    let mut futures = Vec::new();
    let (mut answered, mut denied, mut failed) = (0, 0, 0);
    for _ in 0..count {
        match start_get(url) {
            Ok(future) => futures.push(future),
            Err(_) => failed += 1,
        }
    }
    for future in futures {
        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        match response {
            Ok(Ok(_)) => answered += 1,
            Ok(Err(ErrorCode::HttpRequestDenied)) => denied += 1,
            _ => failed += 1,
        }
    }
    Err(PluginError::agent(format!(
        "http-flood: {answered} answered, {denied} denied, {failed} failed"
    )))
}

/// The status of a GET of `url`, or why there is none.
#[cfg(target_os = "wasi")]
fn http_get_status(url: &str) -> Result<u16, String> {
    let future = start_get(url)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    match response {
        Ok(Ok(response)) => Ok(response.status()),
        Ok(Err(code)) => Err(format!("{code:?}")),
        Err(()) => Err("response already taken".into()),
    }
}

/// Sends a GET of `url`, without waiting for its response.
#[cfg(target_os = "wasi")]
fn start_get(url: &str) -> Result<wasip2::http::types::FutureIncomingResponse, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))
}

/// Opens a raw TCP connection to `addr`.
fn tcp(addr: &str) -> Result<(), PluginError> {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(PluginError::agent(format!("tcp {addr}: {e}"))),
    }
}
