//! Test support shared by the integration tests of `broker` and `clients`: start the real
//! `broker` binary on an ephemeral loopback port, talk to it over a raw REQ socket, stop it;
//! start a `nats-server` with JetStream for the store kept there.
//!
//! A crate of its own, a dev-dependency of both, so that neither includes the other's test
//! files; it depends on nothing but `std`, `zmq` and `protocol`.

mod nats;
pub mod require;

pub use nats::{NatsCluster, NatsServer};

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any single step of a test may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A `broker` process started for one test; killed when dropped if still running.
pub struct BrokerProcess {
    /// The child process.
    child: Child,
    /// The endpoint it printed once bound, e.g. `tcp://127.0.0.1:41234`.
    pub endpoint: String,
    /// The rest of its standard output, line by line, read on a thread.
    stdout: mpsc::Receiver<String>,
    /// Its standard error, collected on a thread until it exits.
    stderr: Option<thread::JoinHandle<String>>,
}

impl BrokerProcess {
    /// Starts `binary` (the `broker` executable) with `args` plus a wildcard-port `--bind`, and
    /// waits for its `listening on` line.
    pub fn start(binary: &Path, args: &[&str]) -> BrokerProcess {
        let mut command = Command::new(binary);
        command.args(["--bind", "tcp://127.0.0.1:*"]).args(args);
        BrokerProcess::spawn(command)
    }

    /// Starts `command`, which runs the broker (through a shell, say) and must pass it a
    /// wildcard-port `--bind`, and waits for its `listening on` line.
    pub fn spawn(mut command: Command) -> BrokerProcess {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = lines_of(child.stdout.take().expect("stdout is piped"));
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let first = stdout.recv_timeout(STEP).expect("broker printed no `listening on` line");
        let endpoint = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from broker: {first:?}"))
            .to_owned();
        BrokerProcess { child, endpoint, stdout, stderr: Some(stderr) }
    }

    /// The next line the broker prints on standard output after `listening on`, if one comes
    /// within `within`.
    pub fn stdout_line(&self, within: Duration) -> Option<String> {
        self.stdout.recv_timeout(within).ok()
    }

    /// The process id, to send signals to.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`) to the broker.
    pub fn signal(&self, signal: &str) {
        signal_process(self.pid(), signal);
    }

    /// Waits up to `limit` for the broker to exit; returns its status and everything it wrote
    /// to standard error.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, String) {
        let status = wait_child(&mut self.child, limit)
            .unwrap_or_else(|| panic!("broker did not exit within {limit:?}"));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, stderr)
    }

    /// Kills the broker with SIGKILL, as a crash would (no reply sent, nothing released), and
    /// waits until it is gone. Only this process is signalled, by its id.
    pub fn kill(self) {
        self.signal("KILL");
        let (status, stderr) = self.wait_exit(STEP);
        assert_eq!(status.signal(), Some(9), "broker ended otherwise: {status}; stderr:\n{stderr}");
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for a clean exit.
    pub fn interrupt(self) -> String {
        self.signal("INT");
        let (status, stderr) = self.wait_exit(STEP);
        assert!(status.success(), "broker exited with {status} after SIGINT; stderr:\n{stderr}");
        stderr
    }

    /// A REQ socket connected to the broker, with timeouts so that no test can hang on it.
    pub fn req(&self, context: &zmq::Context) -> zmq::Socket {
        req_socket(context, &self.endpoint)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A REQ socket connected to `endpoint` with send and receive timeouts of [`STEP`].
pub fn req_socket(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = context.socket(zmq::REQ).expect("REQ socket");
    socket.set_linger(0).expect("linger");
    socket.set_rcvtimeo(STEP.as_millis() as i32).expect("rcvtimeo");
    socket.set_sndtimeo(STEP.as_millis() as i32).expect("sndtimeo");
    socket.connect(endpoint).expect("connect");
    socket
}

/// Sends `request` on a REQ socket and returns the raw reply frame.
pub fn round_trip_raw(socket: &zmq::Socket, frame: &[u8]) -> Vec<u8> {
    socket.send(frame, 0).expect("send");
    socket.recv_bytes(0).expect("reply within the step limit")
}

/// Sends `request` on a REQ socket and decodes the reply into an owned form for assertions.
pub fn round_trip(socket: &zmq::Socket, request: &protocol::Request<'_>) -> Vec<u8> {
    let mut frame = Vec::new();
    protocol::encode_request(request, &mut frame);
    round_trip_raw(socket, &frame)
}

/// Sends `signal` to process `pid` with the system's `kill` command.
pub fn signal_process(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits up to `limit` for `child` to exit, polling; `None` if it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `stdout` line by line on a thread; the receiver yields each line without its newline.
pub fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The path of a binary built beside the one running this test (for `clients` tests, which
/// need the `broker` binary that another package builds).
pub fn sibling_binary(beside: &Path, name: &str) -> PathBuf {
    let path = beside.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}
