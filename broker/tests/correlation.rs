//! Correlating replies by `id` (PROTOCOL.md, "Correlating replies"): a DEALER client with
//! several requests outstanding gets each reply with its request's `id`, errors and held
//! replies included, and none when the request carried none.

mod wire;

use protocol::{encode_request_with_id, frame_id, Append, NewMessage, Request, Response};

use wire::{claim, dealer, decode, fetch_from, start_preloaded};

/// Sends `request` with `id` on a DEALER socket, as `[body]` alone.
fn send_with_id(socket: &zmq::Socket, id: Option<u64>, request: &Request<'_>) {
    let mut frame = Vec::new();
    encode_request_with_id(request, id, &mut frame);
    socket.send(frame, 0).expect("send");
}

/// The next reply on a DEALER socket that sent `[body]`: its `id` and the reply.
fn receive_with_id(socket: &zmq::Socket) -> (Option<u64>, Response<'static>) {
    let frame = socket.recv_bytes(0).expect("a reply within the step limit");
    (frame_id(&frame), decode(frame))
}

#[test]
fn every_reply_echoes_its_requests_id_errors_and_held_replies_included() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = dealer(&context, &broker.endpoint);
    let value = NewMessage::new(None, b"v");
    let append = |topic| {
        Request::Append(Append {
            topic,
            partition: None,
            messages: vec![value.clone()],
            sequenced: None,
        })
    };
    // Several outstanding at once: appends, a refusal, a request without id.
    send_with_id(&socket, Some(10), &append("echo"));
    send_with_id(&socket, Some(u64::MAX), &append("echo"));
    send_with_id(&socket, Some(12), &Request::DeleteTopic { topic: "no such topic" });
    send_with_id(&socket, None, &Request::Status);
    socket.send(&b"\x82\xa1v\x01\xa2id\x0d"[..], 0).expect("send a frame without op");
    let replies: Vec<(Option<u64>, Response<'static>)> =
        (0..5).map(|_| receive_with_id(&socket)).collect();
    let ids: Vec<Option<u64>> = replies.iter().map(|(id, _)| *id).collect();
    // Not held: in the order sent.
    assert_eq!(ids, [Some(10), Some(u64::MAX), Some(12), None, Some(13)]);
    assert!(matches!(replies[0].1, Response::Appended { first_offset: 0, .. }), "{replies:?}");
    assert!(matches!(replies[1].1, Response::Appended { first_offset: 1, .. }), "{replies:?}");
    assert!(matches!(replies[2].1, Response::Error { .. }), "{replies:?}");
    assert!(matches!(replies[3].1, Response::Status { .. }), "{replies:?}");
    assert!(matches!(replies[4].1, Response::Error { .. }), "{replies:?}");

    // A held fetch's reply comes after a later request's, each with its own id.
    let (_, token) = claim(&dealer_req(&context, &broker.endpoint), None, "reader");
    send_with_id(&socket, Some(20), &Request::Fetch(wait(fetch_from(token, "echo", 2))));
    send_with_id(&socket, Some(21), &Request::Status);
    let (id, reply) = receive_with_id(&socket);
    assert_eq!(id, Some(21), "{reply:?}");
    send_with_id(&socket, Some(22), &append("echo"));
    let mut rest: Vec<(Option<u64>, Response<'static>)> =
        (0..2).map(|_| receive_with_id(&socket)).collect();
    rest.sort_by_key(|(id, _)| *id);
    assert_eq!(rest[0].0, Some(20));
    assert!(matches!(&rest[0].1, Response::Messages { messages, .. } if messages.len() == 1));
    assert_eq!(rest[1].0, Some(22));
    assert!(matches!(rest[1].1, Response::Appended { first_offset: 2, .. }), "{rest:?}");
    broker.interrupt();
}

/// A REQ socket for the claim, which a test makes in lockstep.
fn dealer_req(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    testkit::req_socket(context, endpoint)
}

/// `fetch` made to wait up to five seconds for a message.
fn wait(fetch: protocol::Fetch<'_>) -> protocol::Fetch<'_> {
    protocol::Fetch { wait_ms: 5000, batches: false, ..fetch }
}
