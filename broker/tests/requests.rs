//! Every request against the real broker, and the success reply a client sees for it.

mod wire;

use protocol::{Fetch, NewMessage, Request, Response};

use wire::{
    ask, ask_raw, claim, fetch, fetch_from, map, now_ms, release, start, start_preloaded, status,
    topics, Value, SAMPLES, SAMPLE_MESSAGES,
};

/// The lease the broker gives unless `--lease` says otherwise, in milliseconds.
const DEFAULT_LEASE_MS: u64 = 30_000;

/// Bytes of values the sample topics hold together.
fn sample_bytes() -> u64 {
    SAMPLES.iter().map(|(_, word)| SAMPLE_MESSAGES * (word.len() as u64 + 2)).sum()
}

#[test]
fn status_shows_two_free_logical_brokers_serving_the_preloaded_topics() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let brokers = status(&socket);
    assert_eq!(brokers.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2]);
    for b in &brokers {
        assert!(b.available, "{b:?}");
        assert_eq!((b.holder.as_deref(), b.lease_remaining_ms), (None, None), "{b:?}");
        assert_eq!((b.topics, b.messages, b.bytes), (4, 12, sample_bytes()), "{b:?}");
    }
}

#[test]
fn status_of_an_empty_broker_counts_nothing() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let brokers = status(&socket);
    assert_eq!(brokers.len(), 2);
    assert!(brokers.iter().all(|b| (b.topics, b.messages, b.bytes) == (0, 0, 0)), "{brokers:?}");
}

#[test]
fn claim_takes_the_lowest_free_broker_or_the_one_named_and_status_shows_the_holder() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b, c) = (broker.req(&context), broker.req(&context), broker.req(&context));

    // Named: broker 2 although 1 is free.
    let reply = ask(&b, &Request::Claim { broker: Some(2), wait_ms: 0, client: Some("bob") });
    let Response::Claimed { broker: 2, claim: bob, lease_ms: DEFAULT_LEASE_MS } = reply else {
        panic!("expected broker 2 with the default lease, got {reply:?}");
    };
    // Any: the lowest free one.
    let reply = ask(&a, &Request::Claim { broker: None, wait_ms: 0, client: Some("alice") });
    let Response::Claimed { broker: 1, claim: alice, lease_ms: DEFAULT_LEASE_MS } = reply else {
        panic!("expected broker 1 with the default lease, got {reply:?}");
    };
    assert_ne!(alice, bob, "two claims share a token");

    let brokers = status(&c);
    for (b, holder) in brokers.iter().zip(["alice", "bob"]) {
        assert!(!b.available, "{b:?}");
        assert_eq!(b.holder.as_deref(), Some(holder), "{b:?}");
        let remaining = b.lease_remaining_ms.unwrap_or_else(|| panic!("no lease shown: {b:?}"));
        assert!(remaining > 0 && remaining <= DEFAULT_LEASE_MS, "{b:?}");
        assert_eq!((b.topics, b.messages), (4, 12), "{b:?}");
    }

    // Broker 1 freed: a claim naming none takes it again, and without a client name the holder
    // is the peer's address.
    assert_eq!(release(&a, alice), 1);
    let reply = ask(&c, &Request::Claim { broker: None, wait_ms: 0, client: None });
    assert!(matches!(reply, Response::Claimed { broker: 1, .. }), "{reply:?}");
    let holder = status(&c)[0].holder.clone().unwrap_or_default();
    assert!(holder.starts_with("127.0.0.1"), "holder without a client name: {holder:?}");
}

#[test]
fn renew_restarts_the_lease_and_release_frees_the_broker() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let (id, token) = claim(&socket, Some(2), "renewer");
    assert_eq!(id, 2);
    assert_eq!(
        ask(&socket, &Request::Renew { claim: token }),
        Response::Renewed { broker: 2, lease_ms: DEFAULT_LEASE_MS }
    );
    assert_eq!(ask(&socket, &Request::Release { claim: token }), Response::Released { broker: 2 });
    let brokers = status(&socket);
    assert!(brokers[1].available && brokers[1].holder.is_none(), "{brokers:?}");
    assert_eq!(brokers[1].lease_remaining_ms, None, "{brokers:?}");
}

#[test]
fn list_topics_shows_the_preloaded_topics_ordered_by_name() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "lister");

    let listed = topics(&socket, token);
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Ciao mondo", "Hallo welt", "Hello world", "Hola mundo"]);
    for (topic, (_, word)) in listed.iter().zip(SAMPLES) {
        assert_eq!(
            (topic.messages, topic.first_offset, topic.next_offset),
            (SAMPLE_MESSAGES, 0, SAMPLE_MESSAGES),
            "{topic:?}"
        );
        assert_eq!(topic.bytes, SAMPLE_MESSAGES * (word.len() as u64 + 2), "{topic:?}");
    }
}

#[test]
fn fetch_returns_each_preloaded_topic_with_offsets_and_timestamps() {
    let before = now_ms();
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");

    for (topic, word) in SAMPLES {
        let fetched = fetch(&socket, fetch_from(token, topic, 0));
        let after = now_ms();
        let expected: Vec<String> = (1..=3).map(|i| format!("{word} {i}")).collect();
        assert_eq!(fetched.values(), expected, "{topic}");
        assert_eq!(fetched.offsets(), [0, 1, 2], "{topic}");
        assert_eq!((fetched.next_offset, fetched.end_offset), (3, 3), "{topic}");
        for m in &fetched.messages {
            assert_eq!(m.key, None, "{topic}: {m:?}");
            assert!(
                (before..=after).contains(&m.timestamp),
                "{topic}: timestamp {} is not between {before} and {after}",
                m.timestamp
            );
        }
    }
}

#[test]
fn fetch_respects_max_messages_and_max_bytes() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let topic = "Hello world";

    let first = fetch(&socket, Fetch { max_messages: 2, ..fetch_from(token, topic, 0) });
    assert_eq!(first.values(), ["message 1", "message 2"]);
    assert_eq!((first.next_offset, first.end_offset), (2, 3));

    let rest = fetch(&socket, fetch_from(token, topic, first.next_offset));
    assert_eq!(rest.values(), ["message 3"]);
    assert_eq!(rest.offsets(), [2]);
    assert_eq!((rest.next_offset, rest.end_offset), (3, 3));

    let at_end = fetch(&socket, fetch_from(token, topic, 3));
    assert!(at_end.messages.is_empty(), "{at_end:?}");
    assert_eq!((at_end.next_offset, at_end.end_offset), (3, 3));

    // Each value is 9 bytes: 18 bytes hold two, and a limit below one still returns one.
    let two = fetch(&socket, Fetch { max_bytes: 18, ..fetch_from(token, topic, 0) });
    assert_eq!(two.offsets(), [0, 1]);
    let one = fetch(&socket, Fetch { max_bytes: 1, ..fetch_from(token, topic, 0) });
    assert_eq!(one.offsets(), [0]);
    assert_eq!((one.next_offset, one.end_offset), (1, 3));
}

#[test]
fn append_gives_consecutive_offsets_and_keeps_keys() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (producer, consumer) = (broker.req(&context), broker.req(&context));
    let topic = "Hola mundo";
    let before = now_ms();

    assert_eq!(
        ask(&producer, &wire::append_of(topic, &["mensaje 4"])),
        Response::Appended {
            topic,
            partition: 0,
            first_offset: 3,
            last_offset: 3,
            placed: Vec::new()
        }
    );
    let batch = vec![
        NewMessage::new(Some(b"k5"), b"mensaje 5"),
        NewMessage::new(None, b"mensaje 6"),
        NewMessage::new(Some(b""), b"mensaje 7"),
        NewMessage::new(Some(b"k8"), b""),
    ];
    let append = Request::Append(protocol::Append {
        partition: None,
        topic,
        messages: batch.clone(),
        sequenced: None,
    });
    assert_eq!(
        ask(&producer, &append),
        Response::Appended {
            topic,
            partition: 0,
            first_offset: 4,
            last_offset: 7,
            placed: Vec::new()
        }
    );

    let (_, token) = claim(&consumer, None, "reader");
    let fetched = fetch(&consumer, fetch_from(token, topic, 3));
    let after = now_ms();
    assert_eq!(fetched.offsets(), [3, 4, 5, 6, 7]);
    assert_eq!((fetched.next_offset, fetched.end_offset), (8, 8));
    let got: Vec<(Option<&[u8]>, &[u8])> =
        fetched.messages.iter().map(|m| (m.key, m.value)).collect();
    let mut expected = vec![(None, &b"mensaje 4"[..])];
    expected.extend(batch.iter().map(|m| (m.key, m.value)));
    assert_eq!(got, expected);
    for m in &fetched.messages {
        assert!((before..=after).contains(&m.timestamp), "{m:?} not in {before}..={after}");
    }
    // One batch, one stamp.
    assert!(fetched.messages[1..].iter().all(|m| m.timestamp == fetched.messages[1].timestamp));

    let brokers = status(&consumer);
    assert_eq!((brokers[0].topics, brokers[0].messages), (4, 17), "{brokers:?}");
    assert_eq!(brokers[0].bytes, sample_bytes() + 9 + 2 + 9 + 9 + 9 + 2, "{brokers:?}");
}

#[test]
fn append_creates_a_missing_topic() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    assert_eq!(wire::append(&socket, "Nuevo", &["uno", "dos"]), (0, 1));
    let (_, token) = claim(&socket, None, "reader");
    let listed = topics(&socket, token);
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Ciao mondo", "Hallo welt", "Hello world", "Hola mundo", "Nuevo"]);
    let created = &listed[4];
    assert_eq!((created.messages, created.first_offset, created.next_offset), (2, 0, 2));
    assert_eq!(created.bytes, 6);
    let fetched = fetch(&socket, fetch_from(token, "Nuevo", 0));
    assert_eq!(fetched.values(), ["uno", "dos"]);
    assert_eq!(fetched.offsets(), [0, 1]);
}

#[test]
fn create_topic_makes_an_empty_topic_and_delete_topic_removes_it() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "admin");
    let topic = "Vacío";

    assert_eq!(
        ask(
            &socket,
            &Request::CreateTopic { topic, partitions: Some(1), retention: Default::default() }
        ),
        Response::Created { topic, partitions: 1 }
    );
    let listed = topics(&socket, token);
    let info = listed.iter().find(|t| t.name == topic).expect("created topic listed");
    assert_eq!((info.messages, info.first_offset, info.next_offset, info.bytes), (0, 0, 0, 0));
    let empty = fetch(&socket, fetch_from(token, topic, 0));
    assert!(empty.messages.is_empty(), "{empty:?}");
    assert_eq!((empty.next_offset, empty.end_offset), (0, 0));
    assert_eq!(wire::append(&socket, topic, &["algo", "más"]), (0, 1));
    assert_eq!(status(&socket)[0].topics, 5);

    assert_eq!(ask(&socket, &Request::DeleteTopic { topic }), Response::Deleted { topic });
    assert!(topics(&socket, token).iter().all(|t| t.name != topic));
    let brokers = status(&socket);
    assert_eq!((brokers[1].topics, brokers[1].messages), (4, 12), "{brokers:?}");
    let gone = ask(&socket, &Request::Fetch(fetch_from(token, topic, 0)));
    wire::expect_error(&gone, protocol::ErrorCode::UnknownTopic);

    // A topic made again under the same name starts from offset 0.
    assert_eq!(
        ask(
            &socket,
            &Request::CreateTopic { topic, partitions: Some(1), retention: Default::default() }
        ),
        Response::Created { topic, partitions: 1 }
    );
    assert_eq!(wire::append(&socket, topic, &["otra vez"]), (0, 0));
}

#[test]
fn offsets_agree_across_logical_brokers() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (producer, one, two) = (broker.req(&context), broker.req(&context), broker.req(&context));
    let topic = "Compartido";

    // Appended under no claim.
    let batch = vec![NewMessage::new(Some(b"a"), b"primero"), NewMessage::new(None, b"segundo")];
    let append = Request::Append(protocol::Append {
        partition: None,
        topic,
        messages: batch,
        sequenced: None,
    });
    assert!(matches!(ask(&producer, &append), Response::Appended { first_offset: 0, .. }));
    assert_eq!(wire::append(&producer, topic, &["tercero"]), (2, 2));
    assert_eq!(wire::append(&producer, "Hola mundo", &["mensaje 4"]), (3, 3));

    let (id_one, token_one) = claim(&one, Some(1), "one");
    let (id_two, token_two) = claim(&two, Some(2), "two");
    assert_eq!((id_one, id_two), (1, 2));
    for (name, count) in [(topic, 3), ("Hola mundo", 4)] {
        let via_one = fetch(&one, fetch_from(token_one, name, 0));
        let via_two = fetch(&two, fetch_from(token_two, name, 0));
        assert_eq!(via_one, via_two, "{name} differs between logical brokers");
        assert_eq!(via_one.offsets(), (0..count).collect::<Vec<u64>>(), "{name}");
    }
    assert_eq!(topics(&one, token_one), topics(&two, token_two));
}

#[test]
fn encodings_the_protocol_allows_besides_the_shortest_are_accepted() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let v1 = || ("v", Value::Int(1));

    // Unknown keys of any type, and a signed encoding of a non-negative integer.
    let frame = map(&[("x", Value::Array(vec![Value::Nil])), v1(), ("op", "status".into())]);
    assert!(matches!(ask_raw(&socket, &frame), Response::Status { .. }));
    // A value sent as a string; an optional field sent as nil.
    let message =
        Value::Map(vec![("value".into(), "mensaje 4".into()), ("key".into(), Value::Nil)]);
    let frame = map(&[
        v1(),
        ("op", "append".into()),
        ("topic", "Hola mundo".into()),
        ("messages", Value::Array(vec![message])),
    ]);
    let topic = "Hola mundo";
    assert_eq!(
        ask_raw(&socket, &frame),
        Response::Appended {
            topic,
            partition: 0,
            first_offset: 3,
            last_offset: 3,
            placed: Vec::new()
        }
    );
    let frame =
        map(&[v1(), ("op", "claim".into()), ("wait_ms", Value::Nil), ("client", "r".into())]);
    let Response::Claimed { claim: token, .. } = ask_raw(&socket, &frame) else {
        panic!("claim with a nil wait_ms refused");
    };
    let fetched = fetch(&socket, fetch_from(token, topic, 3));
    assert_eq!(fetched.values(), ["mensaje 4"]);
    assert_eq!(fetched.messages[0].key, None);

    // Keys and strings sent as byte strings: {b"v": 1, b"op": b"renew", b"claim": token}.
    let bin = |bytes: &[u8]| [&[0xc4, bytes.len() as u8][..], bytes].concat();
    let mut frame = vec![0x83];
    frame.extend([bin(b"v"), vec![0x01], bin(b"op"), bin(b"renew"), bin(b"claim")].concat());
    frame.push(0xcf);
    frame.extend(token.to_be_bytes());
    assert!(matches!(ask_raw(&socket, &frame), Response::Renewed { .. }));
}

#[test]
fn list_topics_needs_no_claim_and_shows_the_retention_each_topic_keeps_to() {
    let broker = wire::start(&["--retention-messages", "100"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let own = protocol::Retention { ms: Some(60_000), ..protocol::Retention::default() };
    let create = Request::CreateTopic { topic: "aged", partitions: Some(2), retention: own };
    assert!(matches!(wire::ask(&socket, &create), Response::Created { .. }));
    wire::append(&socket, "plain", &["x"]);
    let Response::Topics { topics } = wire::ask(&socket, &Request::ListTopics { claim: None })
    else {
        panic!("expected topics");
    };
    let limits: Vec<_> = topics
        .iter()
        .map(|t| (t.name.as_str(), t.retention_messages, t.retention_bytes, t.retention_ms))
        .collect();
    assert_eq!(
        limits,
        [("aged", Some(100), None, Some(60_000)), ("plain", Some(100), None, None)],
        "the topic's own limits over the broker's"
    );
    // A claim token the broker does not hold is refused, as under any claim.
    let stale = Request::ListTopics { claim: Some(u64::MAX) };
    wire::expect_error(&wire::ask(&socket, &stale), protocol::ErrorCode::UnknownClaim);
    broker.interrupt();
}
