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

/// The protocol document, whose worked example of a `batches` reply the decoder must read.
const PROTOCOL: &str = include_str!("../../protocol/PROTOCOL.md");

/// The bytes of PROTOCOL.md's worked example "A `batches` reply", in hex, as its hex dump
/// shows them: the test reads the document, so that it and the decoder cannot drift apart.
fn documented_batches_hex() -> String {
    let section = PROTOCOL
        .split_once("### A `batches` reply")
        .expect("PROTOCOL.md has the section \"A `batches` reply\"")
        .1;
    let dump = section.split("```").nth(1).expect("the section has a hex dump");
    let hex: Vec<&str> = dump
        .lines()
        .filter_map(|line| line.split_once('|').map(|(bytes, _)| bytes))
        .flat_map(|bytes| bytes.split_whitespace().skip(1))
        .collect();
    assert_eq!(hex.len(), 38, "the example is one batch of 38 bytes: {hex:?}");
    hex.concat()
}

/// A writer of record batches as PROTOCOL.md lays them out, with a CRC-32C of its own (bit by
/// bit, not pyclient's table), for the tests to build replies the decoder has not seen.
const BATCH_WRITER: &str = r#"
import sys
import pyclient

def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)

def seal(body):
    return len(body).to_bytes(4, "little") + crc32c(body).to_bytes(4, "little") + body

def batch(base, timestamp, entries, flags=None):
    return seal(batch_body(base, timestamp, entries, flags))

def batch_body(base, timestamp, entries, flags=None):
    """entries: (key or None, value, headers or None), headers a list of (name, value or None),
    a name str or, to damage it, bytes."""
    if flags is None:
        flags = 1 if any(headers is not None for _, _, headers in entries) else 0
    body = (base.to_bytes(8, "little") + len(entries).to_bytes(4, "little")
            + timestamp.to_bytes(8, "little") + bytes([flags]))
    for key, value, headers in entries:
        names = [name if isinstance(name, bytes) else name.encode() for name, _ in headers or []]
        encoded = b"".join(
            varint(len(name)) + name + varint(0 if data is None else len(data) + 1) + (data or b"")
            for name, (_, data) in zip(names, headers or []))
        body += varint(0 if key is None else len(key) + 1) + varint(len(value))
        if flags & 1:
            body += varint(len(encoded))
        body += (key or b"") + value + (encoded if flags & 1 else b"")
    return body

def show(messages):
    for m in messages:
        print(m["offset"], m["timestamp"], repr(m.get("key", "no key")), repr(m["value"]),
              m.get("headers", "no headers"), sorted(m))

example = bytes.fromhex(sys.argv[1])
"#;

/// Runs [`BATCH_WRITER`] then `script` in one `python3`, with the documented example's bytes
/// as `example`.
fn python_with_batches(script: &str) -> Run {
    let program = format!("{BATCH_WRITER}\n{script}");
    python(&["-c", &program, &documented_batches_hex()])
}

#[test]
fn python_client_decodes_the_documented_batches_reply() {
    require_python_packages();
    let run = python_with_batches(
        "print(hex(pyclient.crc32c(example[8:])), hex(crc32c(example[8:])))\n\
         show(pyclient.decode_batches(example, 5))",
    );
    run.assert_success("decode the documented example");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            // The checksum the document gives, by the table and bit by bit.
            "0x818f06bc 0x818f06bc",
            "5 1700000000000 b'k' b'hi' no headers ['key', 'offset', 'timestamp', 'value']",
            "6 1700000000000 'no key' b'yo' no headers ['offset', 'timestamp', 'value']",
        ],
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn python_client_refuses_damaged_batches_naming_the_fault() {
    require_python_packages();
    // Each case is a damaged reply and the offset fetched from; the body starts at byte 8,
    // its flags are byte 0x1c, and the value `hi` is at 0x20.
    let script = r#"
def changed(data, at, byte):
    return data[:at] + bytes([byte]) + data[at + 1:]

body = example[8:]
cases = [
    ("resealed", seal(body), 5),
    ("crc", changed(example, 0x20, example[0x20] ^ 0x01), 5),
    ("short", example[:-1], 5),
    ("prefix", example + b"\x1e\x00\x00", 5),
    ("flag", seal(changed(body, 0x1c - 8, body[0x1c - 8] | 0x04)), 5),
    ("gap-first", example, 4),
    ("gap-next", example + batch(8, 1, [(None, b"z", None)]), 5),
    ("trailing", seal(body + b"\x00"), 5),
    ("count", seal((5).to_bytes(8, "little") + bytes(4) + bytes(8) + b"\x00"), 5),
    ("varint", seal(body[:21] + b"\x80" * 10 + b"\x00" + body[21:]), 5),
    ("wide", seal(body[:21] + b"\xff" * 9 + b"\x02" + body[22:]), 5),
    ("overrun", seal(changed(body, 21 + 1, 9)), 5),
    ("name", batch(5, 1, [(None, b"v", [(b"\xff\xfe", None)])]), 5),
    ("headers", seal(batch_body(5, 1, [(None, b"v", [("n", b"12")]), (None, b"w", [])])
                     .replace(b"\x01n\x03", b"\x01n\x04")), 5),
]
for name, data, offset in cases:
    try:
        result = pyclient.decode_batches(data, offset)
        print(f"{name}\tdecoded {len(result)}")
    except pyclient.ClientError as e:
        print(f"{name}\t{type(e).__name__}\t{e}")
# A whole batch missing at the end leaves every batch whole: only next_offset tells. An empty
# reply is whole when its next_offset is the offset fetched.
for name, data, next_offset in [("tail", example, 8), ("empty", b"", 5)]:
    reply = {"reply": "batches", "topic": "t", "partition": 0, "next_offset": next_offset,
             "end_offset": 9, "batches": data}
    try:
        converted = pyclient.messages_of_batches(reply, 5)
        print(f"{name}\tdecoded {len(converted['messages'])} {sorted(converted)}")
    except pyclient.ClientError as e:
        print(f"{name}\t{type(e).__name__}\t{e}")
"#;
    let run = python_with_batches(script);
    run.assert_success("decode damaged replies");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let expected = [
        ("resealed", "decoded 2"),
        ("crc", "its checksum 0x818f06bc does not match its body's CRC-32C"),
        ("short", "batch 0 (at byte 0): cut short: its body_len is 30 but 29 bytes follow"),
        ("prefix", "batch 1 (at byte 38) is cut short: 3 bytes"),
        ("flag", "unknown flags 0x04"),
        ("gap-first", "a gap in the offsets: its base_offset is 5, where 4 comes next"),
        ("gap-next", "batch 1 (at byte 38): a gap in the offsets: its base_offset is 8, where 7"),
        ("trailing", "its 2 entries do not fill its body: 1 bytes are left over"),
        ("count", "its count is 0"),
        ("varint", "offset 5: key_len is a varint longer than 10 bytes"),
        ("wide", "offset 5: key_len does not fit in 64 bits"),
        ("overrun", "offset 5: the value of 9 bytes runs past the end of the body"),
        ("name", "its headers: a header's name is not UTF-8"),
        ("headers", "offset 5, its headers: the value of header 'n' of 3 bytes runs past the end of its headers"),
        ("tail", "its next_offset is 8, but its messages end before 7"),
        (
            "empty",
            "decoded 0 ['end_offset', 'messages', 'next_offset', 'partition', 'reply', 'topic']",
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    for (line, (case, needle)) in lines.iter().zip(expected) {
        let (name, outcome) = line.split_once('\t').expect("a tab after the case");
        assert_eq!(name, case, "stdout:\n{}", run.stdout);
        assert!(outcome.contains(needle), "{case}: expected {needle:?}, got {outcome:?}");
        if !["resealed", "empty"].contains(&case) {
            assert!(
                outcome.starts_with("DamagedBatches\tthe broker's `batches` reply is damaged: "),
                "{case}: {outcome}"
            );
        }
    }
}

#[test]
fn python_client_decodes_batches_with_headers() {
    require_python_packages();
    // Two batches: the first with headers (a nil value, an empty one, a name of two-byte
    // characters, a message whose entry carries no headers, an empty key, a value long enough
    // for a two-byte varint), the next without.
    let script = r#"
data = (batch(10, 1700000000123, [
            (b"k1", b"v1", [("trace", b"t-1"), ("nil", None), ("empty", b"")]),
            (None, b"", []),
            (b"", b"x" * 200, [("\u00fcber", b"\x00\xff")]),
        ])
        + batch(13, 1700000000456, [(None, b"plain", None)]))
messages = pyclient.decode_batches(data, 10)
show(m if len(m["value"]) < 200 else dict(m, value=len(m["value"])) for m in messages)
"#;
    let run = python_with_batches(script);
    run.assert_success("decode batches with headers");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "10 1700000000123 b'k1' b'v1' [['trace', b't-1'], ['nil', None], ['empty', b'']] \
             ['headers', 'key', 'offset', 'timestamp', 'value']",
            "11 1700000000123 'no key' b'' no headers ['offset', 'timestamp', 'value']",
            "12 1700000000123 b'' 200 [['über', b'\\x00\\xff']] \
             ['headers', 'key', 'offset', 'timestamp', 'value']",
            "13 1700000000456 'no key' b'plain' no headers ['offset', 'timestamp', 'value']",
        ],
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn python_client_fetch_takes_a_batches_reply_as_documented() {
    require_python_packages();
    // Until the broker answers `batches`, a replier in the test answers as PROTOCOL.md says a
    // broker does: `batches` (the documented example) to a fetch asking for them, `messages`
    // with the same two messages to one that does not, over ZeroMQ as the broker would.
    let script = r#"
import contextlib, io, threading
import msgpack, zmq

replier = zmq.Context.instance().socket(zmq.REP)
replier.bind("tcp://127.0.0.1:*")
endpoint = replier.getsockopt_string(zmq.LAST_ENDPOINT)
asked, stop = [], threading.Event()
stored = [{"offset": 5, "timestamp": 1700000000000, "key": b"k", "value": b"hi"},
          {"offset": 6, "timestamp": 1700000000000, "value": b"yo"}]

def answer(request):
    if request["op"] == "claim":
        return {"reply": "claimed", "broker": 1, "claim": 7, "lease_ms": 30000}
    if request["op"] == "release":
        return {"reply": "released", "broker": 1}
    topic = request["topic"]
    asked.append((topic, request["offset"], request.get("batches")))
    reply = {"topic": topic, "partition": 0, "next_offset": 7, "end_offset": 7}
    if not request.get("batches"):
        return dict(reply, reply="messages", messages=stored)
    # Topic `bad` gets the example with one byte of the value changed.
    data = example if topic == "t" else example[:0x20] + b"H" + example[0x21:]
    return dict(reply, reply="batches", batches=data)

def serve():
    while not stop.is_set():
        if replier.poll(50):
            request = msgpack.unpackb(replier.recv(), raw=False)
            replier.send(msgpack.packb({"v": 1, **answer(request)}, use_bin_type=True))
    replier.close(linger=0)

server = threading.Thread(target=serve)
server.start()
try:
    client = pyclient.Client(endpoint, timeout=5)
    reply = client.fetch(7, "t", 5)
    print(reply["reply"], reply["topic"], reply["partition"], reply["next_offset"],
          reply["end_offset"], "batches" in reply)
    show(reply["messages"])
    old = client.fetch(7, "t", 5, batches=False)
    print(old["reply"], "same" if old["messages"] == reply["messages"] else "different")
    client.close()
    for args in (["t"], ["t", "--no-batches"], ["bad"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = pyclient.main(["--connect", endpoint, "--timeout", "5", "fetch", *args,
                                    "--offset", "5"])
        print(" ".join(args), status, repr(out.getvalue()), err.getvalue().strip())
    print(asked)
finally:
    stop.set()
    server.join()
"#;
    let run = python_with_batches(script);
    run.assert_success("fetch against a replier answering batches");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "batches t 0 7 7 False",
            "5 1700000000000 b'k' b'hi' no headers ['key', 'offset', 'timestamp', 'value']",
            "6 1700000000000 'no key' b'yo' no headers ['offset', 'timestamp', 'value']",
            "messages same",
            "t 0 '5\\thi\\n6\\tyo\\n' ",
            "t --no-batches 0 '5\\thi\\n6\\tyo\\n' ",
            // Nothing of a damaged reply is printed.
            "bad 1 '' error: the broker's `batches` reply is damaged: batch 0 (at byte 0): its \
             checksum 0x818f06bc does not match its body's CRC-32C 0x047b1031",
            "[('t', 5, True), ('t', 5, None), ('t', 5, True), ('t', 5, None), ('bad', 5, True)]",
        ],
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn python_client_fetch_with_and_without_batches_agree() {
    require_python_packages();
    let broker = BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_broker")), &[]);
    // Three appends, so three batches: headers on some messages of the first, none in the
    // second, an empty key and value in the third. Fetches that start and stop inside a batch
    // get the same messages asked either way, as `batches` and as `messages`.
    let script = format!(
        "import pyclient\n\
         client = pyclient.Client({endpoint:?})\n\
         claim = client.claim()['claim']\n\
         client.append('mixed', [(b'a', b'one', [('h', b'1'), ('nil', None)]), (None, b'two')])\n\
         client.append('mixed', [b'three', b'four', b'five'])\n\
         client.append('mixed', [(b'', b'', [('e', b'')])])\n\
         for offset, most in [(0, None), (1, 4), (3, 1), (6, None)]:\n\
         \x20   new = client.fetch(claim, 'mixed', offset, max_messages=most)\n\
         \x20   old = client.fetch(claim, 'mixed', offset, max_messages=most, batches=False)\n\
         \x20   same = {{**new, 'reply': ''}} == {{**old, 'reply': ''}}\n\
         \x20   print(offset, new['reply'], old['reply'], len(new['messages']), new['next_offset'],\n\
         \x20         new['end_offset'], 'same' if same else f'different: {{new}} {{old}}')\n\
         for m in client.fetch(claim, 'mixed', 0)['messages']:\n\
         \x20   print(m['offset'], m.get('key'), m['value'], m.get('headers'))\n\
         client.release(claim)",
        endpoint = broker.endpoint
    );
    let run = python(&["-c", &script]);
    run.assert_success("fetch with and without batches");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "0 batches messages 6 6 6 same",
            "1 batches messages 4 5 6 same",
            "3 batches messages 1 4 6 same",
            "6 batches messages 0 6 6 same",
            "0 b'a' b'one' [['h', b'1'], ['nil', None]]",
            "1 None b'two' None",
            "2 None b'three' None",
            "3 None b'four' None",
            "4 None b'five' None",
            "5 b'' b'' [['e', b'']]",
        ],
        "stderr: {}",
        run.stderr
    );
    broker.interrupt();
}
