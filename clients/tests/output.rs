//! Output that cannot be used against the reader: names and values from the network are shown
//! with their control and bidirectional characters escaped in text, exact in JSON, and tables
//! stay aligned (and do not panic) whatever the names.

mod common;

use common::{consumer, preloaded_broker, producer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protocol::Request;
use testkit::BrokerProcess;

/// Claims a logical broker under `name` on a raw socket, as any program on the network may.
fn claim_as(broker: &BrokerProcess, name: &str) {
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let reply = testkit::round_trip(
        &socket,
        &Request::Claim { broker: None, wait_ms: 0, client: Some(name) },
    );
    let reply = protocol::decode_response(&reply).expect("a reply");
    assert_eq!(reply.name(), "claimed", "{reply:?}");
}

/// The display width of `text` for the scripts these tests use: CJK ideographs and kana take
/// two columns, the rest one.
fn width(text: &str) -> usize {
    text.chars().map(|c| if ('\u{3000}'..='\u{9fff}').contains(&c) { 2 } else { 1 }).sum()
}

/// A stand-in broker on a free loopback port that answers every request with `reply` until
/// the returned flag is set: what any program on the network could send a client. Returns its
/// endpoint, the flag and its thread.
fn stand_in(
    reply: protocol::Response<'static>,
) -> (String, Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::ROUTER).expect("ROUTER");
    socket.set_linger(0).expect("linger");
    socket.set_rcvtimeo(50).expect("rcvtimeo");
    socket.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = socket.get_last_endpoint().expect("endpoint").expect("utf-8");
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let mut body = Vec::new();
    protocol::encode_response(reply, &mut body);
    let thread = std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(mut frames) = socket.recv_multipart(0) else { continue };
            frames.truncate(frames.len() - 1);
            frames.push(body.clone());
            socket.send_multipart(frames, 0).expect("send");
            answered += 1;
        }
        drop(context);
        answered
    });
    (endpoint, done, thread)
}

#[test]
fn status_survives_a_holder_name_of_65536_characters_and_more() {
    // The broker refuses such names now, but a client must not panic on whatever answers it.
    let long = "h".repeat(70_000);
    let holder = protocol::BrokerStatus {
        id: 1,
        available: false,
        holder: Some(long.clone()),
        lease_remaining_ms: Some(1000),
        topics: 0,
        messages: 0,
        bytes: 0,
        disk_bytes: None,
    };
    let (endpoint, done, thread) = stand_in(protocol::Response::Status { brokers: vec![holder] });
    let out = common::run(common::CONSUMER, &["--connect", &endpoint, "status"]);
    done.store(true, Ordering::SeqCst);
    assert!(thread.join().expect("the stand-in") >= 1);
    out.assert_success();
    let lines = out.lines();
    assert!(lines[1..].iter().any(|l| l.contains(&long)), "{}", &out.stdout[..200]);
}

#[test]
fn control_and_bidirectional_characters_are_escaped_in_text_and_exact_in_json() {
    let broker = preloaded_broker();
    let evil = "ok\x1b[2J\rfake line\u{202e}txt.exe\ttab\nnext";
    producer(&broker, &["evil", evil]).assert_success();
    let out = consumer(&broker, &["fetch", "evil"]);
    assert_eq!(
        out.assert_success().stdout,
        "0\tok\\x1b[2J\\rfake line\\u{202e}txt.exe\\ttab\\nnext\n"
    );
    let out = consumer(&broker, &["--json", "fetch", "evil"]);
    let v: serde_json::Value = serde_json::from_str(out.assert_success().lines()[0]).unwrap();
    assert_eq!(v["value"].as_str(), Some(evil));

    claim_as(&broker, "me\x1b]0;owned\x07\u{2067}");
    let out = consumer(&broker, &["status"]);
    assert!(out.assert_success().stdout.contains("me\\x1b]0;owned\\x07\\u{2067}"), "{out:?}");
    assert!(!out.stdout.contains('\x1b') && !out.stdout.contains('\u{2067}'), "{out:?}");
    let out = consumer(&broker, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(out.assert_success().lines()[0]).unwrap();
    assert_eq!(v["holder"].as_str(), Some("me\x1b]0;owned\x07\u{2067}"), "{}", out.stdout);
    broker.interrupt();
}

#[test]
fn bidirectional_characters_in_names_are_escaped_in_summary_lines_as_in_tables() {
    let broker = preloaded_broker();
    // Shown raw, this name reads as "orders" followed by "exe.txt" reversed.
    let topic = "orders\u{202e}txt.exe";
    let shown = "orders\\u{202e}txt.exe";
    let out = producer(&broker, &[topic, "one"]);
    assert_eq!(
        out.assert_success().stdout.trim_end(),
        format!("appended 1 message to {shown} at offset 0")
    );
    let out = consumer(&broker, &["fetch", topic]);
    assert!(
        out.assert_success().stderr.contains(&format!("read 1 message of {shown};")),
        "{out:?}"
    );
    let group = "till\u{2067}s";
    let out = consumer(&broker, &["fetch", topic, "--group", group]);
    let stderr = &out.assert_success().stderr;
    assert!(stderr.contains(&format!("of {shown} for group till\\u{{2067}}s")), "{stderr}");
    for out in [producer(&broker, &[topic, "two"]), consumer(&broker, &["fetch", topic])] {
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains('\u{202e}') && !all.contains('\u{2067}'), "{all}");
    }
    let out = consumer(&broker, &["topics"]);
    assert!(out.assert_success().stdout.contains(shown), "{out:?}");
    broker.interrupt();
}

#[test]
fn tables_align_by_display_width() {
    let broker = preloaded_broker();
    producer(&broker, &["日本語のトピック", "メッセージ"]).assert_success();
    producer(&broker, &["Ünïcödé", "x"]).assert_success();
    let out = consumer(&broker, &["topics"]);
    let lines = out.assert_success().lines();
    // Every row's second column starts where the header's PARTITIONS does.
    let column = width(lines[0].split("PARTITIONS").next().unwrap_or_default());
    for line in &lines[1..] {
        let name_end = line.find("  ").expect("two spaces after the name");
        let rest = line[name_end..].trim_start();
        let start = width(&line[..line.len() - rest.len()]);
        assert_eq!(start, column, "{lines:#?}");
    }
    broker.interrupt();
}
