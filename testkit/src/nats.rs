//! A `nats-server` with JetStream for one test, on a free loopback port, its store in a fresh
//! directory; killed and the directory removed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::STEP;

/// A `nats-server -js` started for one test.
pub struct NatsServer {
    /// The running server, `None` while stopped.
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its JetStream store directory, kept across a stop and a start.
    dir: PathBuf,
    /// Extra arguments (a cluster's), repeated on a restart.
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a single JetStream server on a free port.
    ///
    /// # Panics
    /// `nats-server` is not installed (the message says how to install it), or it does not
    /// accept connections within [`STEP`].
    pub fn start() -> NatsServer {
        NatsServer::start_with(free_port(), Vec::new())
    }

    /// Starts a server on `port` with `args` besides JetStream, address, port and store.
    pub fn start_with(port: u16, args: Vec<String>) -> NatsServer {
        let dir = std::env::temp_dir().join(format!(
            "nats-test-{}-{port}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create the server's store directory");
        let mut server = NatsServer { child: None, port, dir, args };
        server.resume();
        server
    }

    /// The server's address for a client: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and waits for it to exit; its store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it accepts
    /// connections.
    pub fn resume(&mut self) {
        self.kill();
        let mut command = Command::new("nats-server");
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}); install it with \
                 `pip install -r scripts/requirements.txt`"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen within {STEP:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on 127.0.0.1 now (taken by the system, then let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
