//! Output that cannot be used against the reader: names and values from the network are shown
//! with their control and bidirectional characters escaped in text, exact in JSON, and tables
//! stay aligned (and do not panic) whatever the names.

#[path = "../../broker/tests/support/mod.rs"]
mod support;

mod common;

use common::{consumer, preloaded_broker, producer};
use protocol::Request;
use support::BrokerProcess;

/// Claims a logical broker under `name` on a raw socket, as any program on the network may.
fn claim_as(broker: &BrokerProcess, name: &str) {
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let reply = support::round_trip(
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

#[test]
fn status_survives_a_holder_name_of_65536_characters_and_more() {
    let broker = preloaded_broker();
    let long = "h".repeat(70_000);
    claim_as(&broker, &long);
    let out = consumer(&broker, &["status"]);
    out.assert_success();
    let lines = out.lines();
    assert!(lines[1..].iter().any(|l| l.contains(&long)), "{}", &out.stdout[..200]);
    broker.interrupt();
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
fn tables_align_by_display_width() {
    let broker = preloaded_broker();
    producer(&broker, &["日本語のトピック", "メッセージ"]).assert_success();
    producer(&broker, &["Ünïcödé", "x"]).assert_success();
    let out = consumer(&broker, &["topics"]);
    let lines = out.assert_success().lines();
    // Every row's second column starts where the header's MESSAGES does.
    let column = width(lines[0].split("MESSAGES").next().unwrap_or_default());
    for line in &lines[1..] {
        let name_end = line.find("  ").expect("two spaces after the name");
        let rest = line[name_end..].trim_start();
        let start = width(&line[..line.len() - rest.len()]);
        assert_eq!(start, column, "{lines:#?}");
    }
    broker.interrupt();
}
