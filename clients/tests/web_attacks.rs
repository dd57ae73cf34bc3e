//! The `web` console against hostile clients, over raw HTTP on loopback: floods of cookie-less
//! requests, password guessing, huge and slow requests. Each test starts the real `broker` and
//! `web` binaries on free ports and stops them when done.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{BrokerProcess, STEP};

/// The `web` binary under test.
const WEB: &str = env!("CARGO_BIN_EXE_web");

/// The password of every user in the test's users file.
const PASSWORD: &str = "correct horse";

/// The broker beside the `web` binary.
fn broker_binary() -> PathBuf {
    testkit::sibling_binary(Path::new(WEB), "broker")
}

/// A broker with one user, bob, who may consume everything.
fn broker_with_users(dir: &Path) -> BrokerProcess {
    let output = Command::new(broker_binary())
        .arg("hash-password")
        .env("BROKER_PASSWORD", PASSWORD)
        .output()
        .expect("run broker hash-password");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!("[users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"*\"] }}\n"),
    )
    .expect("write the users file");
    BrokerProcess::start(&broker_binary(), &["--preload", "--auth", users.to_str().expect("UTF-8")])
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
    /// Starts `web` against `broker` on a free port and waits for its `serving` line.
    fn start(broker: &BrokerProcess) -> Console {
        let mut child = Command::new(WEB)
            .args(["--connect", &broker.endpoint, "--listen", "127.0.0.1:0", "--timeout", "2s"])
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

    /// A line of `/proc/PID/status` (`VmRSS`, `Threads`) as a number.
    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the web process's status");
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the status:\n{text}"))
    }

    /// Sends `method path` with `headers` and `body`, and reads the whole reply.
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(&self.address).expect("connect to web");
        stream.set_read_timeout(Some(STEP)).expect("set a read timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )
        .expect("send the request");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    }

    /// Logs in as bob with `password`; returns the reply.
    fn log_in(&self, password: &str) -> String {
        let body = format!("{{\"user\":\"bob\",\"password\":\"{password}\"}}");
        self.request("POST", "/api/login", "Content-Type: application/json\r\n", &body)
    }

    /// Everything logged so far.
    fn logged(&self) -> String {
        self.log.try_iter().collect()
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

/// The `Cookie` header a reply's `Set-Cookie` gives.
fn cookie_of(reply: &str) -> String {
    let line = reply.lines().find_map(|l| l.strip_prefix("Set-Cookie: ")).expect("a cookie");
    format!("Cookie: {}\r\n", line.split(';').next().expect("name=value"))
}

#[test]
fn ten_thousand_cookie_less_requests_do_not_log_out_a_logged_in_browser() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broker = broker_with_users(dir.path());
    let console = Console::start(&broker);
    let login = console.log_in(PASSWORD);
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let cookie = cookie_of(&login);

    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..10_000 {
        assert!(Instant::now() < deadline, "only {n} requests within the deadline");
        let path = if n % 2 == 0 { "/api/session" } else { "/api/consume/topics" };
        let reply = console.request("GET", path, "", "");
        assert!(reply.starts_with("HTTP/1.1 "), "request {n}: {reply}");
        assert!(!reply.contains("Set-Cookie"), "a cookie-less read started a session: {reply}");
    }
    // Cookie-less requests that do change state each get a session, bounded per address,
    // and never at the cost of the logged-in one.
    for _ in 0..200 {
        let reply = console.request("POST", "/api/consume/release", "X-Console-Page: p\r\n", "");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let me = console.request("GET", "/api/session", &cookie, "");
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    assert!(me.contains("\"user\":\"bob\""), "the logged-in session was ended:\n{me}");
}

#[test]
fn failed_logins_from_one_address_get_about_one_check_a_second() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broker = broker_with_users(dir.path());
    let console = Console::start(&broker);
    let started = Instant::now();
    let (mut checked, mut throttled) = (0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let reply = console.log_in("wrong");
        // Refused, or not answered in time by a broker that spaces failed checks itself.
        if reply.starts_with("HTTP/1.1 401") || reply.starts_with("HTTP/1.1 502") {
            checked += 1;
        } else if reply.starts_with("HTTP/1.1 429") {
            throttled += 1;
            assert!(reply.contains("too many failed logins"), "{reply}");
        } else {
            panic!("neither refused nor throttled: {reply}");
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert!(throttled > 0, "{checked} guesses checked in 3 s and none throttled");
    assert!(checked <= 3 + seconds, "{checked} guesses checked in {seconds} s");
    let deadline = Instant::now() + STEP;
    while !console.logged().contains("login throttled") {
        assert!(Instant::now() < deadline, "no `login throttled` line");
        thread::sleep(Duration::from_millis(50));
    }
    // The right password gets through once the address's turn comes.
    let deadline = Instant::now() + STEP;
    loop {
        let reply = console.log_in(PASSWORD);
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
        assert!(Instant::now() < deadline, "the right password never got through");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `head` and then `filler` in 1 MiB pieces, up to `total` bytes, until the console
/// closes the connection; returns how much was written and what came back.
fn flood(console: &Console, head: &str, filler: u8, total: usize) -> (usize, String) {
    let mut stream = TcpStream::connect(&console.address).expect("connect to web");
    stream.set_write_timeout(Some(STEP)).expect("set a write timeout");
    stream.set_read_timeout(Some(STEP)).expect("set a read timeout");
    stream.write_all(head.as_bytes()).expect("send the head");
    let piece = vec![filler; 1 << 20];
    let mut written = head.len();
    while written < total {
        match stream.write(&piece) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    (written, String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn an_unfinished_huge_header_line_is_refused_without_the_memory_growing() {
    let broker = BrokerProcess::start(&broker_binary(), &["--preload"]);
    let console = Console::start(&broker);
    let idle = console.status("VmRSS");
    let (written, reply) = flood(&console, "GET / HTTP/1.1\r\nX-Filler: ", b'a', 200 << 20);
    assert!(written < 200 << 20, "200 MiB of one header line were taken in");
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    let grown = console.status("VmRSS").saturating_sub(idle);
    assert!(grown < 16 * 1024, "the console grew {grown} KiB for one header line");
    let page = console.request("GET", "/api/session", "", "");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
}

#[test]
fn a_50_mb_query_string_is_refused() {
    let broker = BrokerProcess::start(&broker_binary(), &["--preload"]);
    let console = Console::start(&broker);
    let (written, reply) = flood(&console, "GET /api/session?q=", b'a', 50 << 20);
    assert!(written < 50 << 20 || reply.starts_with("HTTP/1.1 414"), "{written} {reply}");
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[test]
fn a_thousand_slow_connections_take_no_thread_each_and_a_request_still_answers() {
    let broker = BrokerProcess::start(&broker_binary(), &["--preload"]);
    let console = Console::start(&broker);
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(&console.address).expect("connect to web");
        stream.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").expect("send a piece of a head");
        slow.push(stream);
    }
    for stream in &mut slow {
        stream.write_all(b"a").expect("send a byte more");
    }
    let threads = console.status("Threads");
    assert!(threads < 200, "{threads} threads for 1000 slow connections");
    let started = Instant::now();
    let reply = console.request("GET", "/api/session", "", "");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(started.elapsed() < STEP, "answered in {:?}", started.elapsed());
    drop(slow);
}

/// Opens a follow view of `topic` from its start with `headers`, and returns it once its
/// first messages came.
fn open_follow(console: &Console, topic: &str, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(&console.address).expect("connect to web");
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("set a read timeout");
    write!(
        stream,
        "GET /api/follow?topic={topic}&from=0 HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
        console.address
    )
    .expect("send the request");
    let deadline = Instant::now() + STEP;
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&text).contains("\"messages\":[") {
        assert!(
            Instant::now() < deadline,
            "no messages within {STEP:?}:\n{}",
            String::from_utf8_lossy(&text)
        );
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the stream ended:\n{}", String::from_utf8_lossy(&text)),
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    stream
}

#[test]
fn the_follow_views_of_one_browser_share_one_logical_broker() {
    // Two logical brokers: before, three views of one browser took both and left the third
    // waiting.
    let broker = BrokerProcess::start(&broker_binary(), &["--preload"]);
    let console = Console::start(&broker);
    let started = console.request("POST", "/api/consume/release", "X-Console-Page: p\r\n", "");
    let cookie = cookie_of(&started);
    let views: Vec<TcpStream> = ["Hello%20world", "Hola%20mundo", "Hallo%20welt"]
        .iter()
        .map(|topic| open_follow(&console, topic, &cookie))
        .collect();
    let overview = console.request("GET", "/api/overview", "", "");
    assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
    assert_eq!(overview.matches("\"available\":false").count(), 1, "{overview}");
    drop(views);
}

#[test]
fn a_body_sent_a_byte_at_a_time_is_cut_off() {
    let broker = BrokerProcess::start(&broker_binary(), &["--preload"]);
    let console = Console::start(&broker);
    let mut stream = TcpStream::connect(&console.address).expect("connect to web");
    stream.set_read_timeout(Some(Duration::from_millis(100))).expect("set a read timeout");
    write!(
        stream,
        "POST /api/produce HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
        console.address
    )
    .expect("send the head");
    // The door gives a body 10 s; past that and a step more, it must have closed.
    let deadline = Instant::now() + Duration::from_secs(10) + STEP;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        assert!(Instant::now() < deadline, "a slow body was still being read");
        let _ = stream.write_all(b"a");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{reply}");
}
