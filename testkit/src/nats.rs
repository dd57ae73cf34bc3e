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

    /// The index in [`NatsCluster::servers`] of the server that leads JetStream stream
    /// `stream` now, as the first live server's monitoring port (`/jsz`) reports it; `None`
    /// while it has no leader.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let path = "/jsz?accounts=true&streams=true";
        let leader = self
            .monitors
            .iter()
            .filter_map(|&port| monitor(port, path))
            .find_map(|body| leader_in(&body, stream))?;
        let number: usize = leader.strip_prefix('n')?.parse().ok()?;
        (1..=self.servers.len()).contains(&number).then(|| number - 1)
    }

    /// Waits until stream `stream` has a leader; its index in [`NatsCluster::servers`].
    ///
    /// # Panics
    /// None within [`STEP`].
    pub fn wait_for_stream_leader(&self, stream: &str) -> usize {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(leader) = self.stream_leader(stream) {
                return leader;
            }
            if Instant::now() >= deadline {
                let said = self
                    .monitors
                    .iter()
                    .find_map(|&port| monitor(port, "/jsz?accounts=true&streams=true"));
                panic!("stream {stream} has no leader after {STEP:?}; /jsz says {said:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a live server reports a JetStream meta leader with every other server
    /// current.
    ///
    /// # Panics
    /// None within [`STEP`].
    pub fn wait_for_leader(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            // Led, and every other server current: a stream of three replicas can be placed.
            let peers = self.servers.len() - 1;
            let led = self.monitors.iter().any(|&port| {
                monitor(port, "/jsz").is_some_and(|body| {
                    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                    let meta = body.find("\"meta_cluster\"").map_or("", |at| &body[at..]);
                    meta.contains("\"leader\"") && meta.matches("\"current\":true").count() >= peers
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

/// The body of `GET path` from a server's monitoring port, if it answers.
fn monitor(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The server name `/jsz?streams=true` gives as the cluster leader of `stream`: the first
/// `"leader"` after the stream's name in its `stream_detail` (which lists the stream's name,
/// then its `cluster` with `leader` and `replicas`). A plain search, not a JSON parser: the
/// crate depends on nothing but `std`, `zmq` and `protocol`.
fn leader_in(body: &str, stream: &str) -> Option<String> {
    // The server indents its JSON; names hold no spaces.
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let at = body.find(&format!("\"name\":\"{stream}\""))?;
    let rest = &body[at..];
    let rest = &rest[rest.find("\"leader\":\"")? + "\"leader\":\"".len()..];
    let name = &rest[..rest.find('"')?];
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::leader_in;

    #[test]
    fn the_leader_of_a_stream_is_read_from_its_detail() {
        let body = r#"{"meta_cluster":{"leader":"n1"},"account_details":[{"stream_detail":[
            {"name": "A", "cluster": {"name": "c", "leader": "n2"}},
            {"name":"B","cluster":{"name":"c","leader":"n3"}}]}]}"#;
        assert_eq!(leader_in(body, "A").as_deref(), Some("n2"));
        assert_eq!(leader_in(body, "B").as_deref(), Some("n3"));
        assert_eq!(leader_in(body, "C"), None);
    }
}
