//! A fake server the tests run as a child process that prints the port it
//! listens on as its first line (the Python fakes of `tests/gcp_fake` and
//! `tests/azure_fake` do), killed when dropped.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A running fake server, killed and reaped on drop.
pub struct PortServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PortServer {
    /// Spawns `command` with a piped stdout and reads its port from the
    /// first line.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{command:?} printed no port: {line:?}"));
        PortServer { child, port }
    }
}

impl Drop for PortServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
