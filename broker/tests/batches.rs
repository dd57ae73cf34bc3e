//! Fetches that ask for record batches (PROTOCOL.md, "Record batches"), against the real
//! broker: the reply holds the messages a `messages` reply holds, as the batches the broker
//! stored, whole where the fetch takes them whole; held fetches and refusals behave as for any
//! fetch.

mod wire;

use protocol::batch::{self, Batches};
use protocol::{ErrorCode, Fetch, Message, Request, Response};

use wire::{ask, ask_raw, claim, expect_error, fetch_from, map, receive, send, start, Value};

/// What a `batches` reply held: its messages, as a client reads them, and each batch's first
/// offset and count, read from the layout.
struct Read {
    messages: Vec<Message<'static>>,
    batches: Vec<(u64, u32)>,
    next_offset: u64,
    end_offset: u64,
}

/// The base offset and count of each batch of a `batches` byte string.
fn batch_heads(mut bytes: &[u8]) -> Vec<(u64, u32)> {
    let mut heads = Vec::new();
    while !bytes.is_empty() {
        let body_len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let count = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        heads.push((base, count));
        bytes = &bytes[8 + body_len..];
    }
    heads
}

/// Panics unless `response` is a `batches` reply to a fetch from `offset`.
#[track_caller]
fn expect_batches(response: Response<'static>, offset: u64) -> Read {
    let Response::Batches { batches: Batches::Bytes(bytes), next_offset, end_offset, .. } =
        response
    else {
        panic!("expected batches, got {response:?}");
    };
    let mut messages = Vec::new();
    batch::read(bytes, offset, &mut messages).expect("the batches read back");
    Read { messages, batches: batch_heads(bytes), next_offset, end_offset }
}

/// Fetches as `fetch` says, once as batches and once as messages; checks both hold the same.
#[track_caller]
fn fetch_both(socket: &zmq::Socket, fetch: Fetch<'_>) -> Read {
    let read = expect_batches(
        ask(socket, &Request::Fetch(Fetch { batches: true, ..fetch })),
        fetch.offset,
    );
    let plain = wire::fetch(socket, Fetch { batches: false, ..fetch });
    assert_eq!(read.messages, plain.messages, "from {} as batches and as messages", fetch.offset);
    assert_eq!((read.next_offset, read.end_offset), (plain.next_offset, plain.end_offset));
    read
}

#[test]
fn a_fetch_asking_for_batches_gets_the_stored_batches_holding_what_a_fetch_of_messages_gets() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(wire::append(&socket, "t", &["a", "b", "c"]), (0, 2));
    assert_eq!(wire::append(&socket, "t", &["d"]), (3, 3));
    assert_eq!(wire::append(&socket, "t", &["e", "f", "g", "h"]), (4, 7));

    // Taken whole, each append is one batch, as stored.
    let all = fetch_both(&socket, fetch_from(token, "t", 0));
    assert_eq!(all.batches, [(0, 3), (3, 1), (4, 4)]);
    assert_eq!(
        all.messages.iter().map(|m| m.value).collect::<Vec<_>>(),
        [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]
    );
    // Cut where the fetch starts and where its limit stops it.
    let cut = fetch_both(&socket, Fetch { max_messages: 4, ..fetch_from(token, "t", 1) });
    assert_eq!(cut.batches, [(1, 2), (3, 1), (4, 1)]);
    assert_eq!((cut.next_offset, cut.end_offset), (5, 8));
    // A byte limit (each value is one byte) stops it the same way.
    let bytes = fetch_both(&socket, Fetch { max_bytes: 2, ..fetch_from(token, "t", 5) });
    assert_eq!(bytes.batches, [(5, 2)]);
    // Every start and limit gives what a fetch of messages gives.
    for offset in 0..=8 {
        for max_messages in [1, 2, 3, 5, 500] {
            fetch_both(&socket, Fetch { max_messages, ..fetch_from(token, "t", offset) });
        }
    }
    // At the end, no batch.
    let end = fetch_both(&socket, fetch_from(token, "t", 8));
    assert!(end.batches.is_empty() && end.messages.is_empty());
    broker.interrupt();
}

#[test]
fn batches_read_from_sealed_segments_after_a_restart_hold_the_same_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let args = ["--data-dir", data_dir, "--segment-bytes", "4096"];
    let values: Vec<String> =
        (0..300).map(|i| format!("value {i:03} {}", "x".repeat(40))).collect();
    {
        let broker = start(&args);
        let context = zmq::Context::new();
        let socket = broker.req(&context);
        for chunk in values.chunks(30) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            wire::append(&socket, "durable", &chunk);
        }
        broker.interrupt();
    }
    let broker = start(&args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let mut offset = 0;
    let mut read = Vec::new();
    while offset < 300 {
        let fetched =
            fetch_both(&socket, Fetch { max_messages: 70, ..fetch_from(token, "durable", offset) });
        read.extend(fetched.messages.iter().map(|m| String::from_utf8_lossy(m.value).into_owned()));
        offset = fetched.next_offset;
    }
    assert_eq!(read, values);
    broker.interrupt();
}

#[test]
fn a_held_fetch_asking_for_batches_is_answered_with_the_batch_that_woke_it() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (consumer, producer) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&consumer, None, "reader");
    wire::append(&producer, "t", &["first"]);
    let held = Fetch { wait_ms: 5000, batches: true, ..fetch_from(token, "t", 1) };
    send(&consumer, &Request::Fetch(held));
    wire::assert_silent(&consumer, wire::QUIET, "a fetch at the end of its topic");
    assert_eq!(wire::append(&producer, "t", &["second", "third"]), (1, 2));
    let read = expect_batches(receive(&consumer), 1);
    assert_eq!(read.batches, [(1, 2)]);
    assert_eq!(
        read.messages.iter().map(|m| m.value).collect::<Vec<_>>(),
        [&b"second"[..], b"third"]
    );
    assert_eq!((read.next_offset, read.end_offset), (3, 3));
    broker.interrupt();
}

#[test]
fn a_fetch_asking_for_batches_is_refused_as_any_fetch_and_a_batches_that_is_no_bool_is_malformed() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    wire::append(&socket, "t", &["a"]);
    let batches =
        |fetch: Fetch<'_>| ask(&socket, &Request::Fetch(Fetch { batches: true, ..fetch }));
    expect_error(&batches(fetch_from(token, "none", 0)), ErrorCode::UnknownTopic);
    let range = expect_error(&batches(fetch_from(token, "t", 5)), ErrorCode::OffsetOutOfRange);
    assert_eq!(range, Some((0, 1)));
    expect_error(
        &batches(Fetch { partition: 3, ..fetch_from(token, "t", 0) }),
        ErrorCode::UnknownPartition,
    );
    expect_error(&batches(fetch_from(token + 1, "t", 0)), ErrorCode::UnknownClaim);
    let frame = map(&[
        ("v", Value::from(1)),
        ("op", Value::from("fetch")),
        ("claim", Value::from(token)),
        ("topic", Value::from("t")),
        ("offset", Value::from(0)),
        ("batches", Value::from(1)),
    ]);
    expect_error(&ask_raw(&socket, &frame), ErrorCode::Malformed);
    broker.interrupt();
}
