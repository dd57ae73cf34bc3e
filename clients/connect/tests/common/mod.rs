//! What the `connect` tests share: a real PostgreSQL started for one test, the `connect`,
//! `broker`, `producer` and `consumer` binaries, a bare HTTP client for the REST API, and
//! polling with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The `connect` binary.
pub const CONNECT: &str = env!("CARGO_BIN_EXE_connect");

/// A binary of another package, built beside `connect` by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    testkit::sibling_binary(Path::new(CONNECT), name)
}

/// Polls `done` every 50 ms until it holds; fails the test naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL server of its own for one test, on a free loopback port, in a temporary
/// directory; stopped (`pg_ctl stop -m immediate`) when dropped.
pub struct Postgres {
    /// The temporary directory: the data directory, the socket and the log.
    dir: TempDir,
    /// PostgreSQL's programs.
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The server's options (`pg_ctl -o`).
    options: String,
}

/// PostgreSQL's server programs: Debian's under /usr/lib/postgresql/VERSION/bin, else on PATH.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(bin) = found.pop() {
        return bin;
    }
    let on_path = Command::new("sh").args(["-c", "command -v initdb"]).output();
    match on_path {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).with_file_name("")
        }
        _ => panic!(
            "initdb not found: PostgreSQL's server (Debian's postgresql package) is missing; \
             scripts/test.sh installs it"
        ),
    }
}

/// Whether this process runs as root (then PostgreSQL runs as the `postgres` user: initdb
/// refuses root).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Makes a cluster with initdb and starts it, waiting until it takes connections.
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// As [`Postgres::start`], with TLS on (a self-signed certificate made with `openssl`,
    /// which Debian's postgresql package brings).
    pub fn start_with_tls() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = is_root();
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).expect("a directory for PostgreSQL");
        if root {
            // The postgres user must reach its directory through ours.
            run(Command::new("chmod").arg("755").arg(dir.path()));
            run(Command::new("chown").arg("postgres:").arg(&home));
        }
        let port = free_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            path(&home)
        );
        if tls {
            let (cert, key) = (home.join("server.crt"), home.join("server.key"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=localhost", "-keyout", path(&key), "-out", path(&cert)])
                .output()
                .expect(
                    "openssl (Debian's postgresql package brings it; scripts/test.sh installs it)",
                );
            assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
            run(Command::new("chmod").arg("600").arg(&key));
            if root {
                run(Command::new("chown").arg("postgres:").arg(&key).arg(&cert));
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                path(&cert),
                path(&key)
            ));
        }
        let pg = Postgres { dir, bin, port, options };
        let data = pg.data();
        pg.as_owner(
            "initdb",
            &["-D", path(&data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"],
        );
        pg.resume();
        pg
    }

    /// Stops the server (a fast shutdown), keeping its data.
    pub fn halt(&self) {
        self.as_owner("pg_ctl", &["-D", path(&self.data()), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server (again), waiting until it takes connections.
    pub fn resume(&self) {
        let log = self.dir.path().join("pg").join("log");
        let data = self.data();
        self.as_owner(
            "pg_ctl",
            &["-D", path(&data), "-o", &self.options, "-l", path(&log), "-w", "-t", "60", "start"],
        );
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.dir.path().join("pg").join("data")
    }

    /// Runs PostgreSQL program `program` as the owner of the cluster, and checks it worked.
    fn as_owner(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        command.args(args).current_dir(self.dir.path());
        let out = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("pg").join("log")).unwrap_or_default();
            panic!(
                "{program} failed: {}\n{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// A connection as the superuser.
    pub fn client(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let params = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port);
            match postgres::Client::connect(&params, postgres::NoTls) {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("cannot connect to PostgreSQL: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The JDBC URL of the `postgres` database.
    pub fn jdbc_url(&self) -> String {
        format!("jdbc:postgresql://127.0.0.1:{}/postgres", self.port)
    }

    /// One number from `sql`.
    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = command
            .args(["-D", path(&data), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A path as a `&str` (the temporary directories are ASCII).
fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs `command` and checks it worked.
fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?}: {status}");
}

/// A broker with a data directory on a fixed port, so that it can be killed and started again
/// where clients look for it.
pub struct Broker {
    /// The process, while it runs.
    pub process: Option<testkit::BrokerProcess>,
    /// `tcp://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its data directory.
    data: PathBuf,
}

impl Broker {
    /// Starts a broker keeping its topics and groups in `data`, with a short ack timeout so
    /// that what a killed connector did not acknowledge comes back soon.
    pub fn start(data: &Path) -> Broker {
        // The first start takes a port the broker picks; a restart binds the same one again.
        let endpoint = "tcp://127.0.0.1:*".to_owned();
        let mut broker = Broker { process: None, endpoint, data: data.to_owned() };
        broker.restart();
        if let Some(process) = &broker.process {
            broker.endpoint = process.endpoint.clone();
        }
        broker
    }

    /// Starts the broker again on the same endpoint and data.
    pub fn restart(&mut self) {
        let mut command = Command::new(binary("broker"));
        command.args(["--bind", &self.endpoint, "--data-dir"]).arg(&self.data).args([
            "--group-ack-timeout",
            "2s",
            "--lease",
            "5s",
            "--brokers",
            "4",
        ]);
        self.process = Some(testkit::BrokerProcess::spawn(command));
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }
}

/// A running `connect`.
pub struct Connect {
    /// The process.
    child: Child,
    /// The REST API's `host:port`, when started with `--rest`.
    pub rest: Option<String>,
    /// Its standard error so far, read on a thread.
    stderr: Option<thread::JoinHandle<String>>,
}

impl Connect {
    /// Starts `connect run CONFIGS` against `endpoint`, keeping source offsets in `offsets`,
    /// with the REST API on a free port when `rest`; waits for its first lines.
    pub fn start(endpoint: &str, configs: &[&Path], offsets: &Path, rest: bool) -> Connect {
        let mut command = Command::new(CONNECT);
        command.args(["--connect", endpoint, "run", "--offsets"]).arg(offsets).args(configs);
        if rest {
            command.args(["--rest", "127.0.0.1:0"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("connect starts");
        let lines = testkit::lines_of(child.stdout.take().expect("piped"));
        let err = child.stderr.take().expect("piped");
        // Shown with the test's output when it fails.
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("connect: {line}");
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let first = lines.recv_timeout(testkit::STEP).expect("connect printed nothing");
        assert!(first.starts_with("running "), "{first}");
        let rest = rest.then(|| {
            let line = lines.recv_timeout(testkit::STEP).expect("connect printed no address");
            line.strip_prefix("serving http://").expect("serving line").to_owned()
        });
        Connect { child, rest, stderr: Some(stderr) }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        testkit::signal_process(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns its standard error.
    pub fn stop(mut self) -> String {
        testkit::signal_process(self.child.id(), "TERM");
        let status = testkit::wait_child(&mut self.child, Duration::from_secs(30));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        assert!(
            status.is_some_and(|s: ExitStatus| s.code().is_some()),
            "connect did not stop: {stderr}"
        );
        stderr
    }

    /// `METHOD PATH` on the REST API with `body`; the status code and the body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.rest.as_deref().expect("started with --rest"), method, path, body)
    }

    /// `GET PATH` as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.http("GET", path, "");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a connection of its own.
pub fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("REST API reachable");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let body = rest.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// Runs `producer` with `args`, feeding `input` on standard input; checks it worked.
pub fn produce(endpoint: &str, args: &[&str], input: &str) {
    let mut child = Command::new(binary("producer"))
        .args(["--connect", endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("producer starts");
    let mut stdin = child.stdin.take().expect("piped");
    let text = input.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    let out = thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("producer ended in time");
    let _ = writer.join();
    let out = out.join().expect("joined").expect("producer ran");
    assert!(out.status.success(), "producer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `consumer ARGS` output; empty when it failed (a topic or group not there yet).
pub fn consume(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(binary("consumer"))
        .args(["--connect", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("consumer runs");
    if !out.status.success() {
        return String::new();
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tutorial's value schema, in its JSON form.
pub const ORDER_SCHEMA: &str = r#"{"type": "struct", "optional": false, "name": "order", "fields": [
  {"type": "int64", "optional": false, "field": "order_time"},
  {"type": "int32", "optional": false, "field": "count"},
  {"type": "array", "items": {"type": "string", "optional": false}, "optional": false, "field": "order"}]}"#;

/// Orders `from..to` as JSON lines, about 100 bytes each.
pub fn orders(from: u64, to: u64) -> String {
    (from..to)
        .map(|i| {
            format!(
                "{{\"order_time\": {}, \"count\": {}, \"order\": [\"cod\", \"chips\", \"mushy peas\", \"curry sauce\"]}}\n",
                1_700_000_000_000 + i,
                1 + i % 4
            )
        })
        .collect()
}

/// The tutorial's connector config, with `insert_mode` and the database at `url`.
pub fn tutorial_config(name: &str, url: &str, insert_mode: &str, extra: &str) -> String {
    let pk = if insert_mode == "upsert" { "record_value" } else { "none" };
    format!(
        r#"{{ "name": "{name}",
  "connector.class": "io.aiven.connect.jdbc.JdbcSinkConnector",
  "topics": "demo5-cod-and-chips", "table.name.normalize": "true",
  "connection.url": "{url}?sslmode=prefer",
  "connection.user": "postgres", "connection.password": "unused",
  "tasks.max": "1", "auto.create": "false", "auto.evolve": "false",
  "insert.mode": "{insert_mode}", "delete.enabled": "false",
  "pk.mode": "{pk}", "pk.fields": "order_time", "batch.size": "100",
  "value.converter": "org.apache.kafka.connect.json.JsonConverter"{extra} }}"#
    )
}

/// A port free on 127.0.0.1 now, for PostgreSQL, which must be told its port (it cannot pick one
/// and say which): bound by the system, then let go, so another process could take it before
/// PostgreSQL does; it would then fail to start, saying so.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
