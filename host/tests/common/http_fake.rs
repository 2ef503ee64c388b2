//! What the tests' hand-written HTTP fakes share: reading one whole
//! request before answering it.
//!
//! A fake that answers after a single `read` can answer a request it has
//! only half seen, and closing a socket with unread bytes in it makes the
//! kernel reset the connection, which can drop the answer on its way to
//! the client (hyper then reports `IncompleteMessage`). Reading the head up
//! to its blank line and then `content-length` bytes of body avoids both.

use std::io::Read;
use std::net::TcpStream;

/// Reads one HTTP/1.1 request from `stream` (head, and a `content-length`
/// or chunked body); what arrived if the peer closes first. Capped at
/// 1 MiB.
pub fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    while request.len() < 1 << 20 {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        request.extend_from_slice(&buf[..n]);
        if let Some(end) = find_head_end(&request) {
            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
            let complete = if head.contains("transfer-encoding: chunked") {
                request[end..].ends_with(b"0\r\n\r\n")
            } else {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                request.len() >= end + length
            };
            if complete {
                break;
            }
        }
    }
    request
}

/// Reads one request (as [`read_request`]) as text, lossily.
pub fn read_request_text(stream: &mut TcpStream) -> String {
    String::from_utf8_lossy(&read_request(stream)).into_owned()
}

/// Where the head ends (just past its `\r\n\r\n`), once it has arrived.
fn find_head_end(request: &[u8]) -> Option<usize> {
    request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}
