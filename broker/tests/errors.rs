//! Every error code the broker sends, on the request that earns it, and proof that the refused
//! request changed nothing and the broker goes on serving.

mod wire;

use protocol::{ErrorCode, Fetch, NewMessage, Request, Response, TopicInfo};

use wire::{
    ask, ask_raw, broker_states, claim, expect_error, fetch, fetch_from, map, release, start,
    start_preloaded, status, topics, BrokerState, Value,
};

/// What a refused request must leave as it was: the logical brokers and every topic, as seen
/// under claim `observer`.
#[track_caller]
fn observe(socket: &zmq::Socket, observer: u64) -> (Vec<BrokerState>, Vec<TopicInfo>) {
    (broker_states(socket), topics(socket, observer))
}

/// Sends `request`, expects `code`, and checks that nothing changed.
#[track_caller]
fn refused(socket: &zmq::Socket, observer: u64, request: &Request<'_>, code: ErrorCode) {
    let before = observe(socket, observer);
    let reply = ask(socket, request);
    expect_error(&reply, code);
    assert_eq!(observe(socket, observer), before, "{request:?} changed the broker's state");
}

/// Sends the raw `frame`, expects `code`, and checks that nothing changed.
#[track_caller]
fn refused_raw(socket: &zmq::Socket, observer: u64, what: &str, frame: &[u8], code: ErrorCode) {
    let before = observe(socket, observer);
    let reply = ask_raw(socket, frame);
    match &reply {
        Response::Error { code: got, .. } if *got == code => {}
        other => panic!("{what}: expected {} {}, got {other:?}", code.code(), code.name()),
    }
    assert_eq!(observe(socket, observer), before, "{what} changed the broker's state");
}

#[test]
fn no_broker_available_when_every_logical_broker_is_claimed() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b, c) = (broker.req(&context), broker.req(&context), broker.req(&context));
    let (_, first) = claim(&a, None, "a");
    let (_, second) = claim(&b, None, "b");

    refused(
        &c,
        first,
        &Request::Claim { broker: None, wait_ms: 0, client: Some("c") },
        ErrorCode::NoBrokerAvailable,
    );
    // Both claims stand.
    for (socket, token, id) in [(&a, first, 1), (&b, second, 2)] {
        assert!(matches!(
            ask(socket, &Request::Renew { claim: token }),
            Response::Renewed { broker, .. } if broker == id
        ));
    }
    let holders: Vec<Option<String>> = status(&c).into_iter().map(|b| b.holder).collect();
    assert_eq!(holders, [Some("a".to_owned()), Some("b".to_owned())]);
}

#[test]
fn broker_busy_when_the_named_broker_is_claimed() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, c) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&a, Some(1), "a");

    refused(
        &c,
        token,
        &Request::Claim { broker: Some(1), wait_ms: 0, client: Some("c") },
        ErrorCode::BrokerBusy,
    );
    assert_eq!(claim(&c, Some(2), "c").0, 2, "the other one is still free");
    assert_eq!(status(&c)[0].holder.as_deref(), Some("a"));
}

#[test]
fn unknown_claim_for_a_token_never_given_or_already_released() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, observer) = claim(&socket, Some(2), "observer");
    let (_, released) = claim(&socket, Some(1), "short");
    assert_eq!(release(&socket, released), 1);

    for token in [observer.wrapping_add(1), released] {
        for request in [
            Request::Renew { claim: token },
            Request::Release { claim: token },
            Request::ListTopics { claim: Some(token) },
            Request::Fetch(fetch_from(token, "Hola mundo", 0)),
            Request::Fetch(Fetch {
                wait_ms: 5000,
                batches: false,
                ..fetch_from(token, "Hola mundo", 3)
            }),
        ] {
            refused(&socket, observer, &request, ErrorCode::UnknownClaim);
        }
    }
    assert!(status(&socket)[0].available);
}

#[test]
fn unknown_topic_for_fetch_and_delete_of_a_missing_topic() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");

    refused(&socket, token, &Request::Fetch(fetch_from(token, "Nada", 0)), ErrorCode::UnknownTopic);
    refused(&socket, token, &Request::DeleteTopic { topic: "Nada" }, ErrorCode::UnknownTopic);
    // Names are compared byte for byte.
    refused(&socket, token, &Request::DeleteTopic { topic: "hola mundo" }, ErrorCode::UnknownTopic);
}

#[test]
fn offset_out_of_range_past_the_end_carries_the_topics_offsets() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let topic = "Hola mundo";

    for fetch in [
        fetch_from(token, topic, 4),
        fetch_from(token, topic, u64::MAX),
        // A wait past the socket's receive timeout: a held refusal fails the test.
        Fetch { wait_ms: 60_000, batches: false, ..fetch_from(token, topic, 4) },
    ] {
        let before = topics(&socket, token);
        let reply = ask(&socket, &Request::Fetch(fetch.clone()));
        assert_eq!(expect_error(&reply, ErrorCode::OffsetOutOfRange), Some((0, 3)), "{fetch:?}");
        assert_eq!(topics(&socket, token), before);
    }
    // The end itself is in range.
    assert!(wire::fetch(&socket, fetch_from(token, topic, 3)).messages.is_empty());
}

#[test]
fn topic_exists_for_creating_a_topic_twice() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "admin");

    refused(
        &socket,
        token,
        &Request::CreateTopic {
            topic: "Hola mundo",
            partitions: Some(1),
            retention: Default::default(),
        },
        ErrorCode::TopicExists,
    );
    assert_eq!(fetch(&socket, fetch_from(token, "Hola mundo", 0)).messages.len(), 3);
}

#[test]
fn unknown_broker_for_ids_outside_one_to_two_even_with_a_wait() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, observer) = claim(&socket, Some(2), "observer");

    for (id, wait_ms) in [(3, 0), (0, 0), (u32::MAX, 0), (3, 60_000)] {
        refused(
            &socket,
            observer,
            &Request::Claim { broker: Some(id), wait_ms, client: None },
            ErrorCode::UnknownBroker,
        );
    }
}

#[test]
fn malformed_for_frames_that_are_not_requests() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");
    let v1 = || ("v", Value::UInt(1));
    let op = |name: &str| ("op", Value::from(name));
    let fetch_at = |offset: Value| {
        let topic = ("topic", Value::from("Hola mundo"));
        map(&[v1(), op("fetch"), ("claim", token.into()), topic, ("offset", offset)])
    };
    let append_of = |messages: Value| {
        map(&[v1(), op("append"), ("topic", "Hola mundo".into()), ("messages", messages)])
    };
    let key_only = Value::Map(vec![("key".into(), Value::Bin(b"k".to_vec()))]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage bytes", b"\xc1\x00garbage\xff".to_vec()),
        ("text", b"status".to_vec()),
        ("a MessagePack array", rmp_serde::to_vec(&(1u32, "status")).expect("encode")),
        ("a MessagePack string", rmp_serde::to_vec("status").expect("encode")),
        ("a truncated map", map(&[v1(), op("status")])[..5].to_vec()),
        ("no v", map(&[op("status")])),
        ("no op", map(&[v1()])),
        (
            "fetch without offset",
            map(&[v1(), op("fetch"), ("claim", token.into()), ("topic", "Hola mundo".into())]),
        ),
        (
            "fetch without claim",
            map(&[v1(), op("fetch"), ("topic", "Hola mundo".into()), ("offset", 0u64.into())]),
        ),
        ("renew with a nil claim", map(&[v1(), op("renew"), ("claim", Value::Nil)])),
        ("append without messages", map(&[v1(), op("append"), ("topic", "Hola mundo".into())])),
        ("append of no messages", append_of(Value::Array(vec![]))),
        ("append of a message without value", append_of(Value::Array(vec![key_only]))),
        ("messages not a list", append_of("mensaje".into())),
        ("offset as a string", fetch_at("0".into())),
        ("a negative offset", fetch_at(Value::Int(-1))),
        ("a float offset", fetch_at(Value::Float(0.0))),
        ("a boolean claim", map(&[v1(), op("renew"), ("claim", Value::Bool(true))])),
        ("v as a string", map(&[("v", "1".into()), op("status")])),
        ("op as a number", map(&[v1(), ("op", 7u64.into())])),
        (
            "a mistyped known key status does not use",
            map(&[v1(), op("status"), ("topic", 5u64.into())]),
        ),
        ("broker beyond uint32", map(&[v1(), op("claim"), ("broker", (1u64 << 32).into())])),
        ("a key twice", map(&[v1(), op("status"), op("status")])),
    ];
    for (what, frame) in &cases {
        refused_raw(&socket, token, what, frame, ErrorCode::Malformed);
    }
}

#[test]
fn unknown_request_for_an_op_this_version_does_not_know() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");

    let frame = map(&[("v", 1u64.into()), ("op", "nope".into())]);
    refused_raw(&socket, token, "op nope", &frame, ErrorCode::UnknownRequest);
    let frame = map(&[("v", 1u64.into()), ("op", "Status".into())]);
    refused_raw(&socket, token, "op Status", &frame, ErrorCode::UnknownRequest);
}

#[test]
fn unsupported_version_for_any_other_v() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");

    // The reply is checked to carry v 1 by `wire::decode`.
    for v in [2u64, 0, 1000] {
        let frame = map(&[("v", v.into()), ("op", "status".into())]);
        refused_raw(&socket, token, &format!("v {v}"), &frame, ErrorCode::UnsupportedVersion);
    }
}

#[test]
fn message_too_large_refuses_the_whole_batch() {
    let broker = start(&["--preload", "--max-message-bytes", "100"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");
    let topic = "Hola mundo";
    let (small, fifty, large) = ([b's'; 10], [b'k'; 50], [b'v'; 101]);

    let batches: [&[NewMessage<'_>]; 3] = [
        &[NewMessage::new(None, &large)],
        &[NewMessage::new(None, &small), NewMessage::new(None, &large)],
        // The key counts: 50 + 51 is over.
        &[NewMessage::new(Some(&fifty), &large[..51])],
    ];
    for batch in batches {
        for topic in [topic, "Grande"] {
            let append = Request::Append(protocol::Append {
                sequenced: None,
                partition: None,
                topic,
                messages: batch.to_vec(),
            });
            refused(&socket, token, &append, ErrorCode::MessageTooLarge);
        }
    }
    assert!(
        topics(&socket, token).iter().all(|t| t.name != "Grande"),
        "refused append made a topic"
    );
    // 50 + 50 is exactly the limit.
    let at_limit = vec![NewMessage::new(Some(&fifty), &large[..50])];
    let append = Request::Append(protocol::Append {
        partition: None,
        topic,
        messages: at_limit,
        sequenced: None,
    });
    assert_eq!(
        ask(&socket, &append),
        Response::Appended {
            topic,
            partition: 0,
            first_offset: 3,
            last_offset: 3,
            placed: Vec::new()
        }
    );
}

#[test]
fn invalid_topic_name_for_empty_and_control_characters() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");

    for name in ["", "a\nb", "Hola mundo\n", "tab\there", " leading", "trailing ", &"x".repeat(250)]
    {
        refused(
            &socket,
            token,
            &Request::CreateTopic {
                topic: name,
                partitions: Some(1),
                retention: Default::default(),
            },
            ErrorCode::InvalidTopicName,
        );
        refused(&socket, token, &wire::append_of(name, &["x"]), ErrorCode::InvalidTopicName);
        refused(
            &socket,
            token,
            &Request::Fetch(fetch_from(token, name, 0)),
            ErrorCode::InvalidTopicName,
        );
    }
    // The longest name allowed is fine.
    let longest = "x".repeat(249);
    assert_eq!(wire::append(&socket, &longest, &["x"]), (0, 0));
}

#[test]
fn an_error_reply_is_one_flat_map_with_code_error_and_reason() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let frame = testkit::round_trip(&socket, &Request::DeleteTopic { topic: "Nada" });
    #[derive(serde::Deserialize)]
    struct ErrorFields {
        v: u32,
        code: u16,
        reply: String,
        error: String,
        reason: String,
    }
    let fields: ErrorFields = rmp_serde::from_slice(&frame).expect("an error map");
    assert_eq!((fields.v, fields.code), (1, 303));
    assert_eq!((fields.reply.as_str(), fields.error.as_str()), ("error", "unknown_topic"));
    assert!(!fields.reason.is_empty());
}
