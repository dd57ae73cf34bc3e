//! Helpers for the Kafka door's tests: a real broker and a real gateway in front of it, both
//! on ephemeral loopback ports, and real Kafka clients run with a time limit.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Encodable;
use testkit::BrokerProcess;

/// The `kafka-gateway` binary under test.
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_kafka-gateway");

/// How long one run of a Kafka client may take.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A binary of the workspace built beside the gateway (`broker`, `producer`, `consumer`).
pub fn binary(name: &str) -> PathBuf {
    testkit::sibling_binary(Path::new(GATEWAY), name)
}

/// A broker and a gateway in front of it; both stopped with Ctrl-C when dropped.
pub struct Door {
    /// The gateway, whose `endpoint` is its Kafka address, `127.0.0.1:PORT`.
    pub gateway: Option<BrokerProcess>,
    /// The broker.
    pub broker: Option<BrokerProcess>,
}

impl Door {
    /// Starts a broker (with `broker_args`) and a gateway in front of it.
    pub fn start(broker_args: &[&str]) -> Door {
        Door::start_with(broker_args, &[])
    }

    /// Starts a broker (with `broker_args`) and a gateway (with `gateway_args`) in front of it.
    pub fn start_with(broker_args: &[&str], gateway_args: &[&str]) -> Door {
        let broker = BrokerProcess::start(&binary("broker"), broker_args);
        let mut command = Command::new(GATEWAY);
        command.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
        command.args(gateway_args);
        let gateway = BrokerProcess::spawn(command);
        Door { gateway: Some(gateway), broker: Some(broker) }
    }

    /// The gateway's Kafka address.
    pub fn bootstrap(&self) -> String {
        self.gateway.as_ref().map(|g| g.endpoint.clone()).unwrap_or_default()
    }

    /// The broker's native endpoint.
    pub fn endpoint(&self) -> String {
        self.broker.as_ref().map(|b| b.endpoint.clone()).unwrap_or_default()
    }

    /// Stops the gateway, then the broker; returns what the gateway wrote to standard error.
    pub fn stop(mut self) -> String {
        let log = self.gateway.take().map(BrokerProcess::interrupt).unwrap_or_default();
        if let Some(broker) = self.broker.take() {
            broker.interrupt();
        }
        log
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        for process in [self.gateway.take(), self.broker.take()].into_iter().flatten() {
            process.signal("KILL");
            let _ = process.wait_exit(testkit::STEP);
        }
    }
}

/// Runs `command` with `stdin` as its input, within [`CLIENT_LIMIT`]; panics if it does not
/// end in time.
pub fn run(mut command: Command, stdin: &str) -> Output {
    use std::io::Write as _;
    match command.get_program().to_str() {
        Some("kcat") => testkit::require::program("kcat", "apt-get install kcat"),
        Some("python3") => testkit::require::python_modules(&["confluent_kafka", "kafka"]),
        _ => {}
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLIENT_LIMIT) {
        Ok(output) => output.expect("wait for the client"),
        Err(_) => {
            testkit::signal_process(pid, "KILL");
            panic!("{command:?} did not end within {CLIENT_LIMIT:?}");
        }
    }
}

/// Standard output as text, after checking the run succeeded.
pub fn success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A script of `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join(name)
}

/// Sends `request` at `version` on `stream`, a raw Kafka connection to the gateway, and returns
/// the response body.
pub fn ask(stream: &mut TcpStream, api: ApiKey, version: i16, request: RequestKind) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    let mut body = BytesMut::new();
    header.encode(&mut body, api.request_header_version(version)).expect("header");
    request.encode(&mut body, version).expect("request");
    let size = u32::try_from(body.len()).expect("size");
    stream.write_all(&size.to_be_bytes()).expect("send");
    stream.write_all(&body).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("an answer");
    let mut reply = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut reply).expect("the whole answer");
    let mut reply = Bytes::from(reply);
    let header_len = if api.response_header_version(version) >= 1 { 5 } else { 4 };
    let _ = reply.split_to(header_len);
    reply
}

/// Starts `command` (a Python Kafka client) with its standard output collected line by line as
/// it comes, for a test to look at while it runs; its standard error is dropped.
pub fn spawn_collecting(
    mut command: Command,
    what: &str,
) -> (std::process::Child, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("piped");
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    (child, lines)
}
