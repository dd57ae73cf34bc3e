//! Helpers for driving the real `producer` and `consumer` binaries against a real broker:
//! one-shot runs with a time limit, and long-running children whose output is read line by
//! line as it comes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use testkit::{self, BrokerProcess, STEP};

/// The `producer` binary under test.
pub const PRODUCER: &str = env!("CARGO_BIN_EXE_producer");

/// The `consumer` binary under test.
pub const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer");

/// The four sample topics of `broker --preload` and the word of their messages, by name.
pub const PRELOADED: [(&str, &str); 4] = [
    ("Ciao mondo", "messaggio"),
    ("Hallo welt", "botschaft"),
    ("Hello world", "message"),
    ("Hola mundo", "mensaje"),
];

/// The `broker` binary, built beside the clients.
pub fn broker_binary() -> PathBuf {
    testkit::sibling_binary(Path::new(PRODUCER), "broker")
}

/// A broker with the sample topics, on an ephemeral port.
pub fn preloaded_broker() -> BrokerProcess {
    BrokerProcess::start(&broker_binary(), &["--preload"])
}

/// A loopback endpoint nothing listens on: a port the system just handed out and took back.
pub fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("tcp://127.0.0.1:{port}")
}

/// What a finished run printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Finished {
    /// Standard output's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Asserts the run exited 0, showing its output if not.
    pub fn assert_success(&self) -> &Finished {
        assert!(self.status.success(), "expected success, got {self:#?}");
        self
    }

    /// Asserts the run exited with `code`, showing its output if not.
    pub fn assert_code(&self, code: i32) -> &Finished {
        assert_eq!(self.status.code(), Some(code), "unexpected exit status: {self:#?}");
        self
    }
}

/// Runs `program` with `args`, feeding it `stdin`, and waits for it to finish within `limit`
/// (killing it and failing the test if it does not).
pub fn run_with(program: &str, args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Finished {
    let limit = STEP;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        // The program may exit without reading everything (an early error): ignore that.
        let _ = input.write_all(&stdin);
    });
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let Some(status) = testkit::wait_child(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{program} {args:?} did not finish within {limit:?}");
    };
    let _ = writer.join();
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

/// Runs `program` with `args` and empty standard input.
pub fn run(program: &str, args: &[&str]) -> Finished {
    run_with(program, args, b"", &[])
}

/// Runs the consumer against `broker` with `args` after `--connect`.
pub fn consumer(broker: &BrokerProcess, args: &[&str]) -> Finished {
    let mut all = vec!["--connect", &broker.endpoint];
    all.extend_from_slice(args);
    run(CONSUMER, &all)
}

/// Runs the producer against `broker` with `args` after `--connect`.
pub fn producer(broker: &BrokerProcess, args: &[&str]) -> Finished {
    let mut all = vec!["--connect", &broker.endpoint];
    all.extend_from_slice(args);
    run(PRODUCER, &all)
}

/// A program left running, its output read line by line on threads.
pub struct Running {
    /// The child process; killed when dropped if still running.
    child: Child,
    /// Its standard input, until closed.
    stdin: Option<ChildStdin>,
    /// Its standard output, line by line.
    stdout: Receiver<String>,
    /// Its standard error, line by line.
    stderr: Receiver<String>,
    /// Every standard error line seen so far, for failure messages.
    stderr_seen: Vec<String>,
}

impl Running {
    /// Starts `program` with `args` and `envs`, standard input piped.
    pub fn start(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().expect("stdout is piped"));
        let stderr = lines_of(child.stderr.take().expect("stderr is piped"));
        Running { child, stdin, stdout, stderr, stderr_seen: Vec::new() }
    }

    /// Starts the consumer against `broker` with `args` after `--connect`.
    pub fn consumer(broker: &BrokerProcess, args: &[&str]) -> Running {
        let mut all = vec!["--connect", &broker.endpoint];
        all.extend_from_slice(args);
        Running::start(CONSUMER, &all, &[])
    }

    /// The process id, to signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard input, for a thread of the test to write to as it goes (dropping it ends
    /// the program's input); `None` once taken or closed.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Whether the process has exited, without waiting.
    pub fn try_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Writes `bytes` to its standard input.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to the child's stdin");
        stdin.flush().expect("flush the child's stdin");
    }

    /// Waits up to [`STEP`] for a standard error line containing `text`; returns it.
    pub fn wait_stderr(&mut self, text: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no standard error line containing {text:?} within {STEP:?}; saw {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// Waits up to [`STEP`] for a standard output line containing `text`; returns it.
    pub fn wait_stdout(&mut self, text: &str) -> String {
        let deadline = Instant::now() + STEP;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no standard output line containing {text:?}; saw {seen:#?}"),
            }
        }
    }

    /// Waits up to [`STEP`] for the next `count` standard output lines.
    pub fn stdout_lines(&mut self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + STEP;
        let mut lines = Vec::new();
        while lines.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => {
                    panic!("only {} of {count} lines within {STEP:?}: {lines:?}", lines.len())
                }
            }
        }
        lines
    }

    /// The next standard output line, if one comes within `within`.
    pub fn stdout_line_within(&mut self, within: Duration) -> Option<String> {
        self.stdout.recv_timeout(within).ok()
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        testkit::signal_process(self.pid(), "INT");
    }

    /// Waits up to [`STEP`] for the process to exit; returns its status and the rest of its
    /// standard output and standard error.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        drop(self.stdin.take());
        let Some(status) = testkit::wait_child(&mut self.child, STEP) else {
            panic!("process did not exit within {STEP:?}; stderr so far {:?}", self.stderr_seen);
        };
        // The pipes close with the process, so these end.
        let stdout: Vec<String> = self.stdout.iter().collect();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        stderr.extend(self.stderr.iter());
        (status, stdout, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads everything from `pipe` on a thread.
fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reads `pipe` line by line on a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
