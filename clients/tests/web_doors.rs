//! The `web` console as a door to a broker with users, over raw HTTP on loopback: the broker's
//! audit log names the browser behind each request (`origin`) beside the console's own address,
//! and the console reaches a broker that requires CURVE with a key pair of its own; a topic it
//! creates without a count of partitions gets the broker's. Each test
//! starts the real `broker` and `web` binaries on free ports and stops them by their ids.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use testkit::{BrokerProcess, STEP};

/// The `web` binary under test.
const WEB: &str = env!("CARGO_BIN_EXE_web");

/// The password of every PLAIN user in the tests' users files.
const PASSWORD: &str = "correct horse";

/// The broker beside the `web` binary.
fn broker_binary() -> PathBuf {
    testkit::sibling_binary(Path::new(WEB), "broker")
}

/// An Argon2 hash of [`PASSWORD`], made by `broker hash-password` as an operator would.
fn hash() -> String {
    let output = Command::new(broker_binary())
        .arg("hash-password")
        .env("BROKER_PASSWORD", PASSWORD)
        .output()
        .expect("run broker hash-password");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

/// A new CURVE key pair in `dir/name`, made by `broker keygen`; its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let output =
        Command::new(broker_binary()).arg("keygen").arg(&path).output().expect("run keygen");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let public = stdout.trim().strip_prefix("curve public key ").expect("the key line");
    (path, public.to_owned())
}

/// Writes the users file `text` into `dir`; its path as a flag's value.
fn users_file(dir: &Path, text: &str) -> String {
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write the users file");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// A `web` process for one test, stopped by its id when dropped.
struct Console {
    /// The process.
    child: Child,
    /// Its address, `127.0.0.1:PORT`, from its `serving` line.
    address: String,
    /// What it logged, read on a thread.
    log: mpsc::Receiver<String>,
}

impl Console {
    /// Starts `web` against `broker` with `extra` flags on a free port and waits for its
    /// `serving` line.
    fn start(broker: &BrokerProcess, extra: &[&str]) -> Console {
        let mut child = Command::new(WEB)
            .args(["--connect", &broker.endpoint, "--listen", "127.0.0.1:0", "--timeout", "5s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start web");
        let lines = testkit::lines_of(child.stdout.take().expect("stdout is piped"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 || tx.send(String::from_utf8_lossy(&chunk[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        let line = lines.recv_timeout(STEP).expect("web printed no `serving` line");
        let address = line.strip_prefix("serving http://").expect("a `serving` line").to_owned();
        Console { child, address, log }
    }

    /// Sends `method path` with `headers` and a JSON `body`; the whole reply, and the address
    /// the request came from (this end of its connection).
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> (String, SocketAddr) {
        let mut stream = TcpStream::connect(&self.address).expect("connect to web");
        let from = stream.local_addr().expect("the connection's own address");
        stream.set_read_timeout(Some(STEP)).expect("set a read timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n{headers}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n\
             {body}",
            body.len(),
            host = self.address,
        )
        .expect("send the request");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        (reply, from)
    }

    /// Logs in as `user`; the `Cookie` header of the session it gives.
    fn log_in(&self, user: &str) -> String {
        let body = format!("{{\"user\":\"{user}\",\"password\":\"{PASSWORD}\"}}");
        let (reply, _) = self.request("POST", "/api/login", "", &body);
        assert!(reply.starts_with("HTTP/1.1 200"), "log in as {user}: {reply}");
        let line = reply.lines().find_map(|l| l.strip_prefix("Set-Cookie: ")).expect("a cookie");
        format!("Cookie: {}\r\n", line.split(';').next().expect("name=value"))
    }

    /// Everything logged so far, without the terminal's colours.
    fn logged(&self) -> String {
        let text: String = self.log.try_iter().collect();
        let mut plain = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find('\x1b') {
            plain.push_str(&rest[..at]);
            rest = rest[at..].split_once('m').map_or("", |(_, after)| after);
        }
        plain.push_str(rest);
        plain
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Interrupted rather than killed, so that it removes its socket's directory.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) only sends a signal to the process this test started.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        if testkit::wait_child(&mut self.child, STEP).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The audit events of a broker's JSON log.
fn audit_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|event: &serde_json::Value| event["target"] == "audit")
        .collect()
}

/// The audit event of `op` by `user`.
#[track_caller]
fn event<'e>(events: &'e [serde_json::Value], op: &str, user: &str) -> &'e serde_json::Value {
    events
        .iter()
        .find(|e| e["fields"]["op"] == op && e["fields"]["user"] == user)
        .unwrap_or_else(|| panic!("no audit event for {op} by {user} in {events:#?}"))
}

#[test]
fn the_brokers_audit_log_names_the_browser_behind_each_action_and_refusal() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hash = hash();
    let users = users_file(
        dir.path(),
        &format!(
            "[users.ops]\npassword_hash = \"{hash}\"\ntopics = {{ admin = [\"*\"] }}\n\n\
             [users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"*\"] }}\n"
        ),
    );
    let broker = BrokerProcess::start(
        &broker_binary(),
        &["--preload", "--auth", &users, "--log-format", "json"],
    );
    let console = Console::start(&broker, &[]);
    let ops = console.log_in("ops");
    let (created, created_from) =
        console.request("POST", "/api/topics", &ops, r#"{"name":"audited"}"#);
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let (deleted, deleted_from) = console.request("DELETE", "/api/topics?name=audited", &ops, "");
    assert!(deleted.starts_with("HTTP/1.1 200"), "{deleted}");
    let bob = console.log_in("bob");
    let (refused, refused_from) =
        console.request("POST", "/api/topics", &bob, r#"{"name":"not-bobs"}"#);
    assert!(refused.starts_with("HTTP/1.1 409") && refused.contains("forbidden"), "{refused}");
    // The console's own log says each login with the browser's address.
    let logged = console.logged();
    assert!(logged.contains("login accepted user=ops source=127.0.0.1"), "{logged}");
    assert!(logged.contains("login accepted user=bob source=127.0.0.1"), "{logged}");

    let events = audit_events(&broker.interrupt());
    for (op, user, from) in [
        ("create_topic", "ops", created_from),
        ("delete_topic", "ops", deleted_from),
        ("create_topic", "bob", refused_from),
    ] {
        let said = event(&events, op, user);
        // The browser's address and port as the console tells it, beside the console's own.
        assert_eq!(said["fields"]["origin"], from.to_string(), "{said}");
        // The console's own address, as ZeroMQ gives it (without a port).
        assert_eq!(said["fields"]["peer"], "127.0.0.1", "{said}");
    }
    assert_eq!(event(&events, "create_topic", "ops")["fields"]["topic"], "audited");
    assert_eq!(event(&events, "create_topic", "bob")["level"], "WARN");
}

#[test]
fn the_console_reaches_a_broker_that_requires_curve_with_its_own_key_pair() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (broker_key, broker_public) = keygen(dir.path(), "broker.key");
    let (console_key, console_public) = keygen(dir.path(), "console.key");
    let users = users_file(
        dir.path(),
        &format!(
            "[users.console]\ncurve_public_key = \"{console_public}\"\n\
             topics = {{ consume = [\"*\"], admin = [\"*\"] }}\n"
        ),
    );
    let broker_key = broker_key.to_str().expect("UTF-8 path");
    let broker = BrokerProcess::start(
        &broker_binary(),
        &["--preload", "--auth", &users, "--curve-secret-key", broker_key, "--log-format", "json"],
    );
    let console_key = console_key.to_str().expect("UTF-8 path");
    let console = Console::start(
        &broker,
        &["--curve-server-key", &broker_public, "--curve-key-file", console_key],
    );
    // The console logs in by its key: the overview lists the preloaded topics.
    let (overview, _) = console.request("GET", "/api/overview", "", "");
    assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
    let body = overview.split("\r\n\r\n").nth(1).unwrap_or_default();
    let overview: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(overview["up"], true, "{overview}");
    let topics: Vec<&str> = overview["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics: {overview}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(topics.contains(&"Hello world"), "{topics:?}");
    // A password login from the page cannot be: said at once, not tried.
    let body = r#"{"user":"console","password":"any"}"#;
    let (login, _) = console.request("POST", "/api/login", "", body);
    assert!(login.starts_with("HTTP/1.1 400") && login.contains("CURVE"), "{login}");
    // And acts as the key's user, its action in the broker's audit log.
    let (created, from) = console.request("POST", "/api/topics", "", r#"{"name":"by-key"}"#);
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");

    // A console whose key the broker does not know is refused, and says so.
    let stranger = Console::start(&broker, &["--curve-server-key", &broker_public]);
    let (refused, _) = stranger.request("GET", "/api/overview", "", "");
    let body = refused.split("\r\n\r\n").nth(1).unwrap_or_default();
    let refused: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!((&refused["up"], &refused["refused"]), (&false.into(), &true.into()), "{refused}");
    drop(stranger);
    drop(console);

    let events = audit_events(&broker.interrupt());
    let said = event(&events, "create_topic", "console");
    assert_eq!(said["fields"]["topic"], "by-key", "{said}");
    assert_eq!(said["fields"]["origin"], from.to_string(), "{said}");
}

#[test]
fn a_topic_created_without_a_count_gets_the_brokers_partitions() {
    let broker = BrokerProcess::start(&broker_binary(), &["--partitions", "3"]);
    let console = Console::start(&broker, &[]);
    let partitions_of = |body: &str| {
        let (reply, _) = console.request("POST", "/api/topics", "", body);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let json = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(json).expect("JSON");
        json["partitions"].as_u64().unwrap_or_else(|| panic!("no count: {json}"))
    };
    assert_eq!(partitions_of(r#"{"name":"by-default"}"#), 3);
    assert_eq!(partitions_of(r#"{"name":"two","partitions":2}"#), 2);
    let (refused, _) =
        console.request("POST", "/api/topics", "", r#"{"name":"no","partitions":0}"#);
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    drop(console);
    broker.interrupt();
}
