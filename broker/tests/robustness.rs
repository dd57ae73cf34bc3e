//! Frames no well-behaved client sends: each gets an error reply on the framing it came in, and
//! the broker goes on serving everyone.

mod wire;

use protocol::{ErrorCode, Fetch, Request, Response};

use wire::{
    ask_raw, claim, dealer, decode, encode, expect_error, fetch_from, map, start_preloaded, status,
    Value,
};

/// Panics unless the broker still answers `status` normally on `socket`.
#[track_caller]
fn assert_serving(socket: &zmq::Socket) {
    let brokers = status(socket);
    assert_eq!(brokers.len(), 2, "{brokers:?}");
    assert!(brokers.iter().all(|b| b.topics == 4), "{brokers:?}");
}

/// Receives one multipart reply on a DEALER socket.
fn receive_frames(socket: &zmq::Socket) -> Vec<Vec<u8>> {
    socket.recv_multipart(0).expect("a reply within the step limit")
}

#[test]
fn garbage_and_empty_frames_get_malformed_and_the_broker_goes_on() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let garbage: Vec<u8> = (0u8..=255).rev().collect();
    for frame in [&garbage[..], b"", b"\x00", b"\xc1", b"{\"v\":1,\"op\":\"status\"}"] {
        expect_error(&ask_raw(&socket, frame), ErrorCode::Malformed);
        assert_serving(&socket);
    }
}

#[test]
fn huge_bogus_lengths_get_malformed_and_the_broker_goes_on() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    // The map of an append up to its `messages` key, for lengths to be claimed after it.
    let append = map(&[
        ("v", 1u64.into()),
        ("op", "append".into()),
        ("topic", "Hola mundo".into()),
        ("messages", Value::Nil),
    ]);
    let head = &append[..append.len() - 1];
    let with = |tail: &[u8]| [head, tail].concat();
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("a map of 2^32-1 entries", b"\xdf\xff\xff\xff\xff\xa1v\x01".to_vec()),
        ("an array of 2^32-1 messages", with(b"\xdd\xff\xff\xff\xff\x81\xa5value\xa1x")),
        ("an array of 65535 messages", with(b"\xdc\xff\xff\x81\xa5value\xa1x")),
        ("a value of 2^32-1 bytes", with(b"\x91\x81\xa5value\xc6\xff\xff\xff\xffxyz")),
        ("a string of 2^32-1 bytes", with(b"\x91\x81\xa5value\xdb\xff\xff\xff\xffxyz")),
        ("a key of 2^32-1 bytes", b"\x81\xdb\xff\xff\xff\xffv".to_vec()),
    ];
    for (what, frame) in &frames {
        match ask_raw(&socket, frame) {
            Response::Error { code: ErrorCode::Malformed, .. } => {}
            other => panic!("{what}: expected malformed, got {other:?}"),
        }
        assert_serving(&socket);
    }
    // None of them appended anything.
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(wire::fetch(&socket, fetch_from(token, "Hola mundo", 0)).next_offset, 3);
}

#[test]
fn deeply_nested_values_of_unknown_keys_do_not_bring_the_broker_down() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    // {"v": 1, "op": "status", "x": [[[[...]]]]}, nested 100000 deep.
    let head = map(&[("v", 1u64.into()), ("op", "status".into()), ("x", Value::Nil)]);
    let depth = 100_000;
    let mut frame = head[..head.len() - 1].to_vec();
    frame.extend(std::iter::repeat_n(0x91, depth));
    frame.push(0x90);
    // Unknown keys are ignored whatever their value; a decoder may also refuse such depth.
    match ask_raw(&socket, &frame) {
        Response::Status { .. } | Response::Error { code: ErrorCode::Malformed, .. } => {}
        other => panic!("expected status or malformed, got {other:?}"),
    }
    assert_serving(&socket);
}

#[test]
fn a_dealer_gets_replies_on_the_framing_it_used() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = dealer(&context, &broker.endpoint);
    let body = encode(&Request::Status);

    // [body] alone: the reply comes back alone.
    socket.send(&body, 0).expect("send");
    let frames = receive_frames(&socket);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(decode(frames[0].clone()), Response::Status { .. }));

    // [empty, body], as a REQ socket sends: the reply comes back behind an empty frame.
    socket.send_multipart([&b""[..], &body], 0).expect("send");
    let frames = receive_frames(&socket);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].is_empty(), "{frames:?}");
    assert!(matches!(decode(frames[1].clone()), Response::Status { .. }));
}

#[test]
fn a_dealer_sending_the_wrong_number_of_frames_gets_malformed() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = dealer(&context, &broker.endpoint);
    let body = encode(&Request::Status);

    // Two body frames after the delimiter.
    socket.send_multipart([&b""[..], b"a", b"b"], 0).expect("send");
    let frames = receive_frames(&socket);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].is_empty(), "{frames:?}");
    expect_error(&decode(frames[1].clone()), ErrorCode::Malformed);

    // Two frames, neither of them a delimiter: not a request even if one is a good body.
    socket.send_multipart([&body[..], &body], 0).expect("send");
    let frames = receive_frames(&socket);
    assert_eq!(frames.len(), 1, "{frames:?}");
    expect_error(&decode(frames[0].clone()), ErrorCode::Malformed);

    // The delimiter and no body.
    socket.send(&b""[..], 0).expect("send");
    let frames = receive_frames(&socket);
    let reply = frames.last().cloned().unwrap_or_default();
    expect_error(&decode(reply), ErrorCode::Malformed);

    // The same connection is still served.
    socket.send(&body, 0).expect("send");
    let frames = receive_frames(&socket);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(decode(frames[0].clone()), Response::Status { .. }));
    assert_serving(&broker.req(&context));
}

#[test]
fn a_client_that_leaves_with_a_held_fetch_costs_nobody_anything() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (producer, reader) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&reader, None, "reader");

    // On one DEALER connection, the status reply shows that the fetch before it is held.
    let leaver = dealer(&context, &broker.endpoint);
    let held = Fetch { wait_ms: 5000, batches: false, ..fetch_from(token, "Hola mundo", 3) };
    leaver.send(encode(&Request::Fetch(held)), 0).expect("send");
    leaver.send(encode(&Request::Status), 0).expect("send");
    let frames = receive_frames(&leaver);
    assert!(matches!(decode(frames[0].clone()), Response::Status { .. }), "{frames:?}");
    drop(leaver);

    // Its reply goes nowhere; everyone else is served as before.
    assert_eq!(wire::append(&producer, "Hola mundo", &["mensaje 4"]), (3, 3));
    let fetched = wire::fetch(&reader, fetch_from(token, "Hola mundo", 3));
    assert_eq!(fetched.values(), ["mensaje 4"]);
    assert_serving(&producer);
}
