//! What the operations tests share: the programs' binaries, the repository's `deploy/`
//! directory, and plain HTTP GETs.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The programs whose operation this crate serves, as their binaries and example files are
/// named.
pub const PROGRAMS: [&str; 4] = ["broker", "kafka-gateway", "web", "connect"];

/// The binary `name`, built beside this test (`target/<profile>/`): `cargo test --workspace`
/// builds every binary; `cargo build --bins` does for a test run alone.
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile = test.parent().and_then(Path::parent).expect("target/<profile>/deps/");
    let path = profile.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// The repository's `deploy/` directory: example config files and the service unit.
pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `GET path` on `address` over HTTP/1.0: the status and the body.
pub fn get(address: SocketAddr, path: &str) -> (u16, String) {
    try_get(address, path).unwrap_or_else(|e| panic!("GET {path} on {address}: {e}"))
}

/// `GET path` on `address` over HTTP/1.0: the status and the body, or why not.
pub fn try_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The address of a `metrics on http://ADDR/metrics` line.
pub fn metrics_address(line: &str) -> SocketAddr {
    line.strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("not a metrics line: {line:?}"))
}

/// A program started for a test, its standard output read line by line; killed (by its own
/// process id) and waited for when dropped.
pub struct Started {
    /// The process.
    child: std::process::Child,
    /// Its standard output's lines.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Started {
    /// Starts `command` with standard output piped, standard error inherited.
    pub fn spawn(mut command: std::process::Command) -> Started {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let lines = testkit::lines_of(child.stdout.take().expect("piped"));
        Started { child, lines }
    }

    /// The next line of standard output, waiting at most `testkit::STEP`.
    pub fn line(&self) -> String {
        self.lines.recv_timeout(testkit::STEP).expect("a line on standard output in time")
    }

    /// The first line that starts with `prefix`, the rest of it.
    pub fn line_after(&self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = testkit::wait_child(&mut self.child, testkit::STEP);
    }
}
