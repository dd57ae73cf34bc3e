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
    /// Its monitoring port, when it has one.
    monitor: Option<u16>,
    /// Its JetStream store directory, kept across a stop and a start.
    dir: PathBuf,
    /// Extra arguments (a cluster's), repeated on a restart.
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a single JetStream server on a port the server picks itself.
    ///
    /// # Panics
    /// `nats-server` is not installed (the message says how to install it), or it does not
    /// accept connections within [`STEP`].
    pub fn start() -> NatsServer {
        NatsServer::start_with(Vec::new())
    }

    /// Starts a server with `args` besides JetStream, address, port and store. Its client
    /// port, and its monitoring and cluster ports when `args` ask for `-1` (any), are the
    /// ones the server bound, read back from its ports file: nothing is bound and let go
    /// beforehand, so no other process can take a port between the choice and the bind.
    pub fn start_with(args: Vec<String>) -> NatsServer {
        let mut server = NatsServer::prepare(args);
        server.resume();
        server
    }

    /// A server not started yet, with its store directory made.
    fn prepare(args: Vec<String>) -> NatsServer {
        crate::require::program("nats-server", "pip install -r scripts/requirements.txt");
        let dir = std::env::temp_dir().join(format!(
            "nats-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create the server's store directory");
        NatsServer { child: None, port: 0, monitor: None, dir, args }
    }

    /// The server's address for a client: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs, to pause it (`SIGSTOP`) and let it go on.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it to exit; its store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and store (the first time, on the ports it
    /// picks), and waits until it accepts connections.
    ///
    /// # Panics
    /// It exits at start, or does not listen within [`STEP`].
    pub fn resume(&mut self) {
        if let Err(why) = self.try_resume() {
            panic!("{why}");
        }
    }

    /// [`NatsServer::resume`], saying why the server did not start rather than panicking.
    fn try_resume(&mut self) -> Result<(), String> {
        self.kill();
        let ports = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("create the server's ports directory");
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        // A restarted server keeps the ports it had: its peers and clients know them.
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| match (arg.as_str(), self.monitor) {
                ("-1", Some(monitor)) => monitor.to_string(),
                _ => arg.clone(),
            })
            .collect();
        let mut command = Command::new("nats-server");
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}); scripts/test.sh installs it \
                 (pip install -r scripts/requirements.txt)"
            )
        });
        let deadline = Instant::now() + STEP;
        let bound = loop {
            if let Some(bound) = read_ports(&ports) {
                break bound;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nats-server exited at start ({status}): {command:?}"));
            }
            assert!(Instant::now() < deadline, "nats-server wrote no ports file within {STEP:?}");
            thread::sleep(Duration::from_millis(20));
        };
        self.child = Some(child);
        (self.port, self.monitor) = bound;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen within {STEP:?}");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client and monitoring ports a server wrote to its ports file in `dir`
/// (`{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"],...}`), once
/// the file is whole.
fn read_ports(dir: &std::path::Path) -> Option<(u16, Option<u16>)> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|entry| entry.path().extension().is_some_and(|extension| extension == "ports"))?;
    let text = std::fs::read_to_string(file.path()).ok()?;
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !text.ends_with('}') {
        return None;
    }
    let port_of = |key: &str| {
        let rest = &text[text.find(&format!("\"{key}\":[\""))?..];
        let rest = &rest[rest.find("127.0.0.1:")? + "127.0.0.1:".len()..];
        rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse::<u16>().ok()
    };
    Some((port_of("nats")?, port_of("monitoring")))
}

/// Three `nats-server`s in one JetStream cluster on loopback, for `--replicas 3`.
pub struct NatsCluster {
    /// The servers, named `n1`, `n2`, `n3`.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three servers and waits until JetStream has elected its meta leader. The
    /// client and monitoring ports are the servers' own picks, read back; the cluster ports
    /// must be known to every server before it starts (a JetStream cluster needs configured
    /// routes), so they are chosen free beforehand, and the whole cluster is started again on
    /// other ports if another process took one meanwhile.
    ///
    /// # Panics
    /// As [`NatsServer::start`], or no leader within [`STEP`].
    pub fn start() -> NatsCluster {
        let cluster = NatsCluster::start_unled();
        cluster.wait_for_leader();
        cluster
    }

    /// Starts the three servers and returns as soon as each accepts connections, before
    /// JetStream has elected its leader: as a script that starts a cluster and its clients at
    /// once does.
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start_unled() -> NatsCluster {
        let mut tries = 0;
        loop {
            tries += 1;
            match NatsCluster::try_start() {
                Ok(cluster) => return cluster,
                Err(why) if tries >= 5 => panic!("the NATS cluster did not start: {why}"),
                Err(_) => continue,
            }
        }
    }

    /// Starts the three servers on fresh cluster ports; why one did not start.
    fn try_start() -> Result<NatsCluster, String> {
        crate::require::program("nats-server", "pip install -r scripts/requirements.txt");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for at in 0..3 {
            let others: Vec<String> = (0..3)
                .filter(|&o| o != at)
                .map(|o| format!("nats://127.0.0.1:{}", routes[o]))
                .collect();
            let args = vec![
                "-n".to_owned(),
                format!("n{}", at + 1),
                "-m".to_owned(),
                "-1".to_owned(),
                "--cluster_name".to_owned(),
                "test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", routes[at]),
                "--routes".to_owned(),
                others.join(","),
            ];
            let mut server = NatsServer::prepare(args);
            server.try_resume()?;
            servers.push(server);
        }
        Ok(NatsCluster { servers })
    }

    /// The monitoring ports of the servers, for [`NatsCluster::wait_for_leader`].
    fn monitors(&self) -> impl Iterator<Item = u16> + '_ {
        self.servers.iter().filter_map(|server| server.monitor)
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
            .monitors()
            .filter_map(|port| monitor(port, path))
            .find_map(|body| leader_in(&body, stream))?;
        let number: usize = leader.strip_prefix('n')?.parse().ok()?;
        (1..=self.servers.len()).contains(&number).then(|| number - 1)
    }

    /// The index in [`NatsCluster::servers`] of the server a client connection named `name`
    /// is connected to, as the servers' monitoring ports (`/connz`) report it; `None` when
    /// none lists it.
    pub fn serving(&self, name: &str) -> Option<usize> {
        let wanted = format!("\"name\":\"{name}\"");
        self.servers.iter().position(|server| {
            let body = server.monitor.and_then(|port| monitor(port, "/connz"));
            body.is_some_and(|body| {
                let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                body.contains(&wanted)
            })
        })
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
                    .monitors()
                    .find_map(|port| monitor(port, "/jsz?accounts=true&streams=true"));
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
            let led = self.monitors().any(|port| {
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

/// A port free on 127.0.0.1 now (taken by the system, then let go): only for the cluster
/// ports, which [`NatsCluster::start`] retries when another process took one meanwhile.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
