//! The Python client in `scripts/pyclient.py` against the real broker: the protocol document is
//! enough to write a client in another language, and that client sees what a user expects.
//!
//! These tests need `python3` with pyzmq and msgpack. Without them they fail, saying how to
//! install them, rather than pass without having run.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::BrokerProcess;

/// How long one run of the Python client may take before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// What to do when Python or its packages are missing.
const INSTALL: &str =
    "these tests need Python 3 with pyzmq and msgpack: pip install -r scripts/requirements.txt";

/// What one run of the Python client did.
struct Run {
    /// How it exited.
    status: ExitStatus,
    /// Everything it printed on standard output.
    stdout: String,
    /// Everything it printed on standard error.
    stderr: String,
    /// How long it ran.
    took: Duration,
}

impl Run {
    /// Panics, showing the output, unless the run exited 0.
    fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what}: pyclient exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Panics, showing the output, unless the run failed with `needle` on standard error.
    fn assert_failure(&self, what: &str, needle: &str) {
        assert!(
            !self.status.success() && self.stderr.contains(needle),
            "{what}: expected a failure mentioning {needle:?}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts")
}

/// Runs `python3 args...` in `scripts/`, killing it if it outlives [`RUN_LIMIT`].
fn python(args: &[&str]) -> Run {
    python_with(args, &[])
}

/// Runs `python3 args...` in `scripts/` with the environment variables `env` added.
fn python_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut child = Command::new("python3")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(scripts_dir())
        // Leave no bytecode cache in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}; {INSTALL}"));
    // Read both pipes on threads, so that a chatty child cannot block on a full pipe.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let Some(status) = testkit::wait_child(&mut child, RUN_LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("python3 {args:?} did not finish within {RUN_LIMIT:?}; killed it");
    };
    Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// Fails the test, saying what to install, unless `python3` can import pyzmq and msgpack.
fn require_python_packages() {
    testkit::require::python_modules(&["zmq", "msgpack"]);
}

/// Runs `pyclient.py --connect endpoint args...`.
fn pyclient(endpoint: &str, args: &[&str]) -> Run {
    let mut all = vec!["pyclient.py", "--connect", endpoint, "--timeout", "5"];
    all.extend_from_slice(args);
    python(&all)
}

#[test]
fn python_client_lists_appends_and_fetches() {
    require_python_packages();
    let broker = BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_broker")), &["--preload"]);
    let endpoint = broker.endpoint.clone();

    let topics = pyclient(&endpoint, &["topics"]);
    topics.assert_success("topics");
    assert_eq!(
        topics.stdout.lines().collect::<Vec<_>>(),
        [
            "Ciao mondo\t3\t0\t3",
            "Hallo welt\t3\t0\t3",
            "Hello world\t3\t0\t3",
            "Hola mundo\t3\t0\t3",
        ],
        "topics printed:\n{}",
        topics.stdout
    );

    let append = pyclient(&endpoint, &["append", "Bonjour monde", "message un", "ça va"]);
    append.assert_success("append");
    assert_eq!(append.stdout.trim_end(), "appended 2 message(s) to Bonjour monde at offsets 0..1");

    let fetch = pyclient(&endpoint, &["fetch", "Bonjour monde"]);
    fetch.assert_success("fetch");
    assert_eq!(fetch.stdout.lines().collect::<Vec<_>>(), ["0\tmessage un", "1\tça va"]);

    let preloaded = pyclient(&endpoint, &["fetch", "Hola mundo", "--offset", "1", "--max", "1"]);
    preloaded.assert_success("fetch of a preloaded topic");
    assert_eq!(preloaded.stdout.lines().collect::<Vec<_>>(), ["1\tmensaje 2"]);

    let unknown = pyclient(&endpoint, &["fetch", "no such topic"]);
    unknown.assert_failure("fetch of an unknown topic", "unknown_topic");
    assert!(unknown.stderr.starts_with("error: "), "stderr: {}", unknown.stderr);

    // Every claim the client made was released, the failed fetch's too.
    let script = format!(
        "import pyclient\n\
         brokers = pyclient.Client({endpoint:?}).status()\n\
         print(' '.join(f\"{{b['id']}}:{{b['available']}}\" for b in brokers))"
    );
    let status = python(&["-c", &script]);
    status.assert_success("status through the Client class");
    assert_eq!(status.stdout.trim_end(), "1:True 2:True");

    broker.interrupt();
}

#[test]
fn python_client_sends_and_reads_headers_in_order() {
    require_python_packages();
    let broker = BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_broker")), &[]);
    let endpoint = broker.endpoint.clone();
    let headers = ["--header", "trace=t-1", "--header", "trace", "--header", "empty="];
    let mut args = vec!["append", "traced", "with", "--key", "k"];
    args.extend_from_slice(&headers);
    pyclient(&endpoint, &args).assert_success("append with headers");
    pyclient(&endpoint, &["append", "traced", "without"]).assert_success("append");

    let fetch = pyclient(&endpoint, &["fetch", "traced", "--print-headers"]);
    fetch.assert_success("fetch --print-headers");
    assert_eq!(
        fetch.stdout.lines().collect::<Vec<_>>(),
        ["0\ttrace:t-1,trace:null,empty:\twith", "1\tNO_HEADERS\twithout"]
    );
    // A reader that knows nothing of headers sees the messages as ever.
    let plain = pyclient(&endpoint, &["fetch", "traced"]);
    assert_eq!(plain.stdout.lines().collect::<Vec<_>>(), ["0\twith", "1\twithout"]);
    // Through the Client class: the record's `headers`, as the broker sent them.
    let script = format!(
        "import pyclient\n\
         client = pyclient.Client({endpoint:?})\n\
         claim = client.claim()['claim']\n\
         messages = client.fetch(claim, 'traced', 0)['messages']\n\
         print(messages[0]['headers'], 'headers' in messages[1])\n\
         client.release(claim)"
    );
    let read = python(&["-c", &script]);
    read.assert_success("fetch through the Client class");
    assert_eq!(
        read.stdout.trim_end(),
        "[['trace', b't-1'], ['trace', None], ['empty', b'']] False"
    );
    broker.interrupt();
}

#[test]
fn python_client_reports_a_dead_broker() {
    require_python_packages();
    // A port nothing listens on: bind one, then let it go.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("local address").port()
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");

    let mut args = vec!["pyclient.py", "--connect", &endpoint, "--timeout", "1", "topics"];
    let run = python(&args);
    run.assert_failure("topics against a dead endpoint", "broker not reachable");
    assert!(run.stderr.contains(&endpoint), "stderr: {}", run.stderr);
    assert!(run.took < Duration::from_secs(8), "took {:?} to give up", run.took);

    args.truncate(5);
    args.extend(["append", "t", "m"]);
    let run = python(&args);
    run.assert_failure("append against a dead endpoint", "broker not reachable");
    assert!(run.took < Duration::from_secs(8), "took {:?} to give up", run.took);
}

/// Runs the `broker` binary's tool `args` and returns what it printed.
fn broker_tool(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the broker's tool");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

/// The exit status of a refused login, distinct from 1 (broker not reachable).
const EXIT_AUTH_FAILED: i32 = 3;

#[test]
fn python_client_logs_in_with_plain_and_a_refused_login_says_so() {
    require_python_packages();
    let dir = tempfile::tempdir().expect("temporary directory");
    let hash = broker_tool(&["hash-password"], &[("BROKER_PASSWORD", "pa55word")]);
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.alice]\npassword_hash = \"{hash}\"\ntopics = {{ produce = [\"orders\"], consume = [\"orders\"] }}\n"
    );
    std::fs::write(&users, text).expect("write the users file");
    let users = users.to_str().expect("UTF-8 path");
    let broker = BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_broker")), &["--auth", users]);
    let endpoint = broker.endpoint.clone();
    let as_alice = |password: &str, args: &[&str]| {
        let mut all =
            vec!["pyclient.py", "--connect", &endpoint, "--timeout", "5", "--user", "alice"];
        all.extend_from_slice(args);
        python_with(&all, &[("BROKER_PASSWORD", password)])
    };

    as_alice("pa55word", &["append", "orders", "tea"]).assert_success("append as alice");
    let fetch = as_alice("pa55word", &["fetch", "orders"]);
    fetch.assert_success("fetch as alice");
    assert_eq!(fetch.stdout.lines().collect::<Vec<_>>(), ["0\ttea"]);
    as_alice("pa55word", &["append", "payroll", "x"])
        .assert_failure("append without the right", "forbidden (312)");

    let refused = as_alice("guess", &["append", "orders", "coffee"]);
    refused.assert_failure(
        "a wrong password",
        &format!("authentication failed for user alice at {endpoint}"),
    );
    assert_eq!(refused.status.code(), Some(EXIT_AUTH_FAILED));
    assert!(
        refused.took < Duration::from_secs(5),
        "took {:?}: no faster than a timeout",
        refused.took
    );

    let anonymous = pyclient(&endpoint, &["append", "orders", "coffee"]);
    anonymous.assert_failure("no credentials", "authentication failed");
    assert_eq!(anonymous.status.code(), Some(EXIT_AUTH_FAILED));

    // Nothing the refused clients sent was appended.
    let fetch = as_alice("pa55word", &["fetch", "orders"]);
    assert_eq!(fetch.stdout.lines().collect::<Vec<_>>(), ["0\ttea"]);
    broker.interrupt();
}

#[test]
fn python_client_encrypts_with_curve_and_a_stranger_key_is_refused() {
    require_python_packages();
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_path = |name: &str| dir.path().join(name).to_str().expect("UTF-8 path").to_owned();
    let (server_key, client_key, stranger_key) =
        (key_path("server.key"), key_path("client.key"), key_path("stranger.key"));
    // A server key whose Z85 begins with `-`, as one in 85 do: the client must not take it
    // for an option.
    let server_public = (0..100_000)
        .find_map(|_| {
            let pair = zmq::CurveKeyPair::new().expect("CURVE");
            let public = zmq::z85_encode(&pair.public_key).expect("Z85");
            let secret = zmq::z85_encode(&pair.secret_key).expect("Z85");
            public.starts_with('-').then(|| {
                std::fs::write(&server_key, format!("{secret}\n")).expect("write the key");
                public
            })
        })
        .expect("a key beginning with -");
    let printed = broker_tool(&["keygen", &client_key], &[]);
    let client_public = printed.strip_prefix("curve public key ").expect("the key line").to_owned();
    broker_tool(&["keygen", &stranger_key], &[]);
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.till]\ncurve_public_key = \"{client_public}\"\ntopics = {{ produce = [\"*\"], consume = [\"*\"] }}\n"
    );
    std::fs::write(&users, text).expect("write the users file");
    let broker = BrokerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_broker")),
        &["--auth", users.to_str().expect("UTF-8 path"), "--curve-secret-key", &server_key],
    );
    let endpoint = broker.endpoint.clone();
    let with_key = |key_file: &str, args: &[&str]| {
        let mut all =
            vec!["--curve-server-key", server_public.as_str(), "--curve-key-file", key_file];
        all.extend_from_slice(args);
        pyclient(&endpoint, &all)
    };

    with_key(&client_key, &["append", "orders", "sealed"]).assert_success("append over CURVE");
    let fetch = with_key(&client_key, &["fetch", "orders"]);
    fetch.assert_success("fetch over CURVE");
    assert_eq!(fetch.stdout.lines().collect::<Vec<_>>(), ["0\tsealed"]);

    let refused = with_key(&stranger_key, &["topics"]);
    refused.assert_failure("a key no user has", "authentication failed for key");
    assert_eq!(refused.status.code(), Some(EXIT_AUTH_FAILED));
    broker.interrupt();
}
