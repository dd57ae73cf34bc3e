//! Idempotent appends against the real broker storing alone (in memory, and in a data
//! directory): an append sent again with the same producer and sequence is answered with the
//! offsets it got the first time and stored once; its keyless messages go where its mark says.
//! (Through several processes sharing a JetStream: `nats.rs`.)

mod wire;

use protocol::{encode_request, ErrorCode, NewMessage, Request, Response, Sequenced};

use wire::{ask, ask_raw, claim, expect_error, fetch_from, start};

/// The producer id of this file's appends.
const PRODUCER: u64 = 0x0123_4567_89ab_cdef;

/// An idempotent append of `values` to `topic`, marked `sequence`.
fn marked<'a>(topic: &'a str, sequence: u64, values: &[&'a str]) -> Request<'a> {
    let messages = values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
    let sequenced = Some(Sequenced { producer: PRODUCER, sequence });
    Request::Append(protocol::Append { topic, messages, partition: None, sequenced })
}

/// The partition and offsets of an `appended` reply.
fn offsets(reply: &Response<'_>) -> (u32, u64, u64) {
    match reply {
        Response::Appended { partition, first_offset, last_offset, .. } => {
            (*partition, *first_offset, *last_offset)
        }
        other => panic!("expected appended, got {other:?}"),
    }
}

/// The values partition `partition` of `topic` holds, from offset 0.
fn values(socket: &zmq::Socket, token: u64, topic: &str, partition: u32) -> Vec<String> {
    let fetch = protocol::Fetch { partition, ..fetch_from(token, topic, 0) };
    match ask(socket, &Request::Fetch(fetch)) {
        Response::Messages { messages, .. } => {
            messages.iter().map(|m| String::from_utf8_lossy(m.value).into_owned()).collect()
        }
        other => panic!("fetch {topic}/{partition}: {other:?}"),
    }
}

/// Appends marked appends and sends them again: each is answered with its first offsets,
/// stored once, its keyless messages on partition (producer + sequence) mod 3.
fn resends_are_stored_once(args: &[&str]) {
    let broker = start(args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let first = offsets(&ask(&socket, &marked("paid", 1, &["a", "b"])));
    let partition = ((PRODUCER + 1) % 3) as u32;
    assert_eq!(first, (partition, 0, 1));
    assert_eq!(offsets(&ask(&socket, &marked("paid", 1, &["a", "b"]))), first);
    // Another sequence goes to the next partition; the one after to the next again.
    let second = offsets(&ask(&socket, &marked("paid", 2, &["c"])));
    assert_eq!(second, ((partition + 1) % 3, 0, 0));
    let fourth = offsets(&ask(&socket, &marked("paid", 4, &["d"])));
    assert_eq!(fourth, (partition, 2, 2), "after the first, stored once");
    // Sent again after later ones, through another connection.
    let other = broker.req(&context);
    assert_eq!(offsets(&ask(&other, &marked("paid", 1, &["a", "b"]))), first);
    assert_eq!(offsets(&ask(&other, &marked("paid", 2, &["c"]))), second);
    // The same sequence on another topic, or of another producer, is another append.
    assert_eq!(offsets(&ask(&socket, &marked("other", 1, &["x"]))), (partition, 0, 0));
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(values(&socket, token, "paid", partition), ["a", "b", "d"]);
    assert_eq!(values(&socket, token, "paid", second.0), ["c"]);
    broker.interrupt();
}

#[test]
fn an_idempotent_append_sent_again_is_answered_with_its_first_offsets_and_stored_once() {
    resends_are_stored_once(&["--partitions", "3"]);
}

#[test]
fn with_a_data_directory_an_idempotent_append_sent_again_is_stored_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("a UTF-8 path");
    resends_are_stored_once(&["--partitions", "3", "--data-dir", path]);
}

#[test]
fn an_append_sent_again_before_the_first_is_answered_is_refused_in_progress_or_answered_the_same() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let sockets: Vec<zmq::Socket> = (0..8).map(|_| broker.req(&context)).collect();
    for sequence in 0..20 {
        // The same append from eight connections at once: most come in one pass of the
        // broker, before the first is committed.
        let mut frame = Vec::new();
        encode_request(&marked("burst", sequence, &["v"]), &mut frame);
        for socket in &sockets {
            socket.send(&frame[..], 0).expect("send");
        }
        let mut answered = Vec::new();
        for socket in &sockets {
            let reply = socket.recv_bytes(0).expect("a reply");
            match protocol::decode_response(&reply).expect("a reply frame") {
                Response::Error { code: ErrorCode::InProgress, .. } => {}
                appended => answered.push(offsets(&appended)),
            }
        }
        let stored = (0, sequence, sequence);
        assert!(answered.iter().all(|a| *a == stored), "sequence {sequence}: {answered:?}");
        // Every connection is answered the same once the first is stored.
        assert_eq!(offsets(&ask(&sockets[7], &marked("burst", sequence, &["v"]))), stored);
    }
    let (_, token) = claim(&sockets[0], None, "reader");
    assert_eq!(values(&sockets[0], token, "burst", 0).len(), 20, "each stored once");
    broker.interrupt();
}

#[test]
fn a_producer_without_a_sequence_or_a_sequence_without_a_producer_is_malformed() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let half = b"\x85\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\xa8messages\x91\x81\xa5value\xa1x";
    for field in [&b"\xa8producer\x07"[..], b"\xa8sequence\x07"] {
        let reply = ask_raw(&socket, &[&half[..], field].concat());
        expect_error(&reply, ErrorCode::Malformed);
        let Response::Error { reason, .. } = reply else { unreachable!() };
        assert!(reason.contains("both `producer` and `sequence`"), "{reason}");
    }
    let (_, token) = claim(&socket, None, "reader");
    expect_error(
        &ask(&socket, &Request::Fetch(fetch_from(token, "t", 0))),
        ErrorCode::UnknownTopic,
    );
    broker.interrupt();
}
