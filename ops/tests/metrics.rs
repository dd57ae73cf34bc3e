//! What the broker's page shows from threads other than its serving one: the flush thread's
//! flushes under `--fsync always` (beside the commits the serving loop times), and the logins
//! the ZAP handler accepts and refuses.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, get, metrics_address};
use protocol::{Append, NewMessage, Request, Response};
use testkit::BrokerProcess;

/// The value of the sample `name` (with its labels, as written) on the page at `address`, once
/// `wanted` holds of it; fails with the page after 30 seconds.
fn wait_sample(address: SocketAddr, name: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = get(address, "/metrics");
        let value = page
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
        if let Some(value) = value.filter(|v| wanted(*v)) {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} never came as wanted:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_durable_broker_times_its_commits_and_its_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--data-dir", data, "--fsync", "always", "--metrics-listen", "127.0.0.1:0"];
    let broker = BrokerProcess::start(&binary("broker"), &args);
    let page = metrics_address(&broker.stdout_line(testkit::STEP).unwrap());
    assert_eq!(wait_sample(page, "broker_commit_seconds_count", |n| n >= 0.0), 0.0);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for _ in 0..3 {
        let messages = vec![NewMessage::new(None, b"durable")];
        let reply = testkit::round_trip(
            &socket,
            &Request::Append(Append { topic: "d", partition: None, messages, sequenced: None }),
        );
        assert!(matches!(protocol::decode_response(&reply), Ok(Response::Appended { .. })));
    }
    // Each lockstep append is its own commit, flushed before it is acknowledged.
    wait_sample(page, "broker_commit_seconds_count", |n| n == 3.0);
    wait_sample(page, "broker_flush_seconds_count", |n| n >= 1.0);
    wait_sample(page, "broker_commit_seconds_bucket{le=\"+Inf\"}", |n| n == 3.0);
    broker.kill();
}

#[test]
fn a_broker_on_a_jetstream_shows_what_its_cache_holds_and_what_it_read_back() {
    let server = testkit::NatsServer::start();
    let writer = BrokerProcess::start(&binary("broker"), &["--store", &server.url()]);
    let context = zmq::Context::new();
    let socket = writer.req(&context);
    let value = [b'v'; 100];
    for _ in 0..20 {
        let messages = vec![NewMessage::new(None, &value); 1000];
        let append =
            Request::Append(Append { topic: "big", partition: None, messages, sequenced: None });
        let reply = testkit::round_trip(&socket, &append);
        assert!(matches!(protocol::decode_response(&reply), Ok(Response::Appended { .. })));
    }
    // Another process, with room for about a quarter of the topic, reads it from the first.
    let args =
        ["--store", &server.url(), "--cache-bytes", "500000", "--metrics-listen", "127.0.0.1:0"];
    let reader = BrokerProcess::start(&binary("broker"), &args);
    let page = metrics_address(&reader.stdout_line(testkit::STEP).unwrap());
    assert_eq!(wait_sample(page, "broker_cache_limit_bytes", |_| true), 500_000.0);
    assert_eq!(wait_sample(page, "broker_read_backs_total", |_| true), 0.0);
    let socket = reader.req(&context);
    let claim = match protocol::decode_response(&testkit::round_trip(
        &socket,
        &Request::Claim { broker: None, wait_ms: 0, client: Some("reader") },
    )) {
        Ok(Response::Claimed { claim, .. }) => claim,
        other => panic!("claim: {other:?}"),
    };
    let mut offset = 0;
    while offset < 20_000 {
        let fetch = protocol::Fetch {
            claim,
            topic: "big",
            partition: 0,
            offset,
            max_messages: 1000,
            max_bytes: 1 << 20,
            wait_ms: 0,
            batches: false,
        };
        let reply = testkit::round_trip(&socket, &Request::Fetch(fetch));
        match protocol::decode_response(&reply) {
            Ok(Response::Messages { next_offset, .. }) if next_offset > offset => {
                offset = next_offset
            }
            other => panic!("fetch at {offset}: {other:?}"),
        }
    }
    wait_sample(page, "broker_read_backs_total", |n| n >= 2.0);
    // The stored batches of 1,000 messages of 100 bytes: at least the values' bytes.
    wait_sample(page, "broker_read_back_bytes_total", |n| n >= 2_000_000.0);
    wait_sample(page, "broker_cache_bytes", |n| n > 0.0 && n <= 500_000.0);
    reader.kill();
    writer.kill();
}

#[test]
fn logins_accepted_and_refused_are_counted() {
    let output = Command::new(binary("broker"))
        .arg("hash-password")
        .env("BROKER_PASSWORD", "right")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let hash = String::from_utf8(output.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.ann]\npassword_hash = \"{}\"\ntopics = {{ consume = [\"*\"] }}\n",
        hash.trim()
    );
    std::fs::write(&users, text).unwrap();
    let args = ["--auth", users.to_str().unwrap(), "--metrics-listen", "127.0.0.1:0"];
    let broker = BrokerProcess::start(&binary("broker"), &args);
    let page = metrics_address(&broker.stdout_line(testkit::STEP).unwrap());
    let context = zmq::Context::new();
    let login = |password: &str| {
        let socket = context.socket(zmq::REQ).unwrap();
        socket.set_plain_username(Some("ann")).unwrap();
        socket.set_plain_password(Some(password)).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_rcvtimeo(10_000).unwrap();
        socket.connect(&broker.endpoint).unwrap();
        socket
    };
    let ann = login("right");
    let reply = testkit::round_trip(&ann, &Request::Status);
    assert!(matches!(protocol::decode_response(&reply), Ok(Response::Status { .. })));
    let intruder = login("wrong");
    let mut frame = Vec::new();
    protocol::encode_request(&Request::Status, &mut frame);
    // Queued until a handshake succeeds, which never comes: nothing to wait for but the count.
    intruder.send(frame, zmq::DONTWAIT).unwrap();
    wait_sample(page, "broker_logins_total{result=\"accepted\"}", |n| n == 1.0);
    wait_sample(page, "broker_logins_total{result=\"refused\"}", |n| n >= 1.0);
    broker.kill();
}
