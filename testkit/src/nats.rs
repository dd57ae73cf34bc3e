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

/// Three `nats-server`s in one JetStream cluster on loopback, for `--replicas 3`.
pub struct NatsCluster {
    /// The servers, named `n1`, `n2`, `n3`.
    pub servers: Vec<NatsServer>,
    /// Their monitoring ports, for [`NatsCluster::wait_for_leader`].
    monitors: Vec<u16>,
}

impl NatsCluster {
    /// Starts the three servers and waits until JetStream has elected its meta leader.
    ///
    /// # Panics
    /// As [`NatsServer::start`], or no leader within [`STEP`].
    pub fn start() -> NatsCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = (0..3)
            .map(|at| {
                let others: Vec<String> = (0..3)
                    .filter(|&o| o != at)
                    .map(|o| format!("nats://127.0.0.1:{}", routes[o]))
                    .collect();
                let args = vec![
                    "-n".to_owned(),
                    format!("n{}", at + 1),
                    "-m".to_owned(),
                    monitors[at].to_string(),
                    "--cluster_name".to_owned(),
                    "test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", routes[at]),
                    "--routes".to_owned(),
                    others.join(","),
                ];
                NatsServer::start_with(ports[at], args)
            })
            .collect();
        let cluster = NatsCluster { servers, monitors };
        cluster.wait_for_leader();
        cluster
    }

    /// `--store`'s value naming every server.
    pub fn url(&self) -> String {
        let addresses: Vec<String> =
            self.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("nats://{}", addresses.join(","))
    }

    /// Waits until a live server reports a JetStream meta leader.
    ///
    /// # Panics
    /// None within [`STEP`].
    pub fn wait_for_leader(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            let led = self.monitors.iter().any(|&port| {
                jsz(port).is_some_and(|body| {
                    body.contains("\"meta_cluster\"") && body.contains("\"leader\"")
                })
            });
            if led {
                return;
            }
            assert!(Instant::now() < deadline, "the NATS cluster elected no leader in {STEP:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The body of `GET /jsz` from a server's monitoring port, if it answers.
fn jsz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(b"GET /jsz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}
