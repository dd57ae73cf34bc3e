//! Every string and list of every request at its limit (accepted) and one past it (refused
//! with the code PROTOCOL.md's "Limits" gives, changing nothing); the map rules of "Encoding";
//! and the answers the document spells out for the cases a client would otherwise guess.

mod wire;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use protocol::{
    Append, ErrorCode, Fetch, GroupFetch, GroupInfo, GroupStart, Header, NewMessage, Request,
    ResetTo, Response, TopicInfo, MAX_ACK_OFFSETS, MAX_APPEND_MESSAGES, MAX_CLIENT_NAME_BYTES,
    MAX_GROUP_NAME_BYTES, MAX_HEADER_KEY_BYTES, MAX_MAP_ENTRIES, MAX_MESSAGE_HEADERS,
    MAX_TOPIC_NAME_BYTES,
};

use wire::{
    ask, ask_raw, broker_states, claim, expect_error, expect_messages, fetch, fetch_from, map,
    release, start, start_preloaded, status, topics, BrokerState, Value,
};

/// Everything a refused request must leave as it was: the logical brokers, every topic (seen
/// under claim `observer`) and every group.
type Observed = (Vec<BrokerState>, Vec<TopicInfo>, Vec<GroupInfo>);

#[track_caller]
fn observe(socket: &zmq::Socket, observer: u64) -> Observed {
    let groups = match ask(socket, &Request::ListGroups { group: None, topic: None }) {
        Response::Groups { groups } => groups,
        other => panic!("list_groups: expected groups, got {other:?}"),
    };
    (broker_states(socket), topics(socket, observer), groups)
}

/// Sends `request`, expects `code`, checks that nothing changed; returns the reason.
#[track_caller]
fn refused(socket: &zmq::Socket, observer: u64, request: &Request<'_>, code: ErrorCode) -> String {
    let before = observe(socket, observer);
    let reply = ask(socket, request);
    expect_error(&reply, code);
    assert_eq!(observe(socket, observer), before, "{request:?} changed the broker's state");
    reason_of(reply)
}

/// Sends the raw `frame`, expects `code`, checks that nothing changed; returns the reason.
#[track_caller]
fn refused_raw(socket: &zmq::Socket, observer: u64, frame: &[u8], code: ErrorCode) -> String {
    let before = observe(socket, observer);
    let reply = ask_raw(socket, frame);
    expect_error(&reply, code);
    assert_eq!(observe(socket, observer), before, "a refused frame changed the broker's state");
    reason_of(reply)
}

fn reason_of(reply: Response<'_>) -> String {
    match reply {
        Response::Error { reason, .. } => reason.into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A name of exactly `bytes` bytes, made of two-byte characters where it can be, so that a
/// limit counted in characters would show.
fn name_of(bytes: usize) -> String {
    let mut name = "é".repeat(bytes / 2);
    if bytes % 2 == 1 {
        name.push('x');
    }
    assert_eq!(name.len(), bytes);
    name
}

/// A MessagePack string.
fn str_value(text: &[u8]) -> Vec<u8> {
    let mut out = match text.len() {
        0..32 => vec![0xa0 | text.len() as u8],
        32..256 => vec![0xd9, text.len() as u8],
        _ => {
            let mut header = vec![0xdb];
            header.extend_from_slice(&u32::try_from(text.len()).expect("short").to_be_bytes());
            header
        }
    };
    out.extend_from_slice(text);
    out
}

/// A map of keys and values already encoded, in order (keys may repeat or be byte strings).
fn raw_map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = if entries.len() < 16 {
        vec![0x80 | entries.len() as u8]
    } else {
        let mut header = vec![0xde];
        header.extend_from_slice(&u16::try_from(entries.len()).expect("short").to_be_bytes());
        header
    };
    for (key, value) in entries {
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

/// `key` as a MessagePack string key.
fn key(key: &str) -> Vec<u8> {
    str_value(key.as_bytes())
}

/// The encoding of `value`.
fn encoded(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("encoding to memory")
}

/// An append to `topic` of one message, the map `record` given encoded.
fn append_record(topic: &str, record: &[u8]) -> Vec<u8> {
    let mut messages = vec![0x91];
    messages.extend_from_slice(record);
    raw_map(&[
        (key("v"), vec![1]),
        (key("op"), str_value(b"append")),
        (key("topic"), str_value(topic.as_bytes())),
        (key("messages"), messages),
    ])
}

#[track_caller]
fn joined(socket: &zmq::Socket, claim: u64, group: &str, topic: &str) {
    let request = Request::JoinGroup { claim, group, topic, start: GroupStart::Earliest };
    match ask(socket, &request) {
        Response::Joined { .. } => {}
        other => panic!("join {group:?} on {topic:?}: expected joined, got {other:?}"),
    }
}

/// A group fetch with default limits and no wait.
fn group_fetch<'a>(claim: u64, group: &'a str, topic: &'a str) -> GroupFetch<'a> {
    GroupFetch {
        ordered: false,
        claim,
        group,
        topic,
        max_messages: protocol::DEFAULT_FETCH_MESSAGES,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms: 0,
    }
}

/// The offsets a group fetch delivered.
#[track_caller]
fn delivered(socket: &zmq::Socket, fetch: GroupFetch<'_>) -> Vec<u64> {
    match ask(socket, &Request::GroupFetch(fetch)) {
        Response::Delivered { messages, .. } => messages.iter().map(|m| m.offset).collect(),
        other => panic!("group_fetch: expected delivered, got {other:?}"),
    }
}

// ---- Point 5: every string and list of every request, at its limit and one past it. ----

#[test]
fn a_client_name_of_256_bytes_is_shown_and_one_of_257_is_refused() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, observer) = claim(&socket, Some(2), "observer");

    let name = name_of(MAX_CLIENT_NAME_BYTES);
    let (id, token) = claim(&socket, None, &name);
    assert_eq!(status(&socket)[0].holder.as_deref(), Some(name.as_str()));
    assert_eq!(release(&socket, token), id);

    let long = name_of(MAX_CLIENT_NAME_BYTES + 1);
    let request = Request::Claim { broker: None, wait_ms: 0, client: Some(&long) };
    let reason = refused(&socket, observer, &request, ErrorCode::LimitExceeded);
    assert!(reason.contains("257") && reason.contains("256"), "{reason}");
    // A held claim is refused the same way, at once.
    let request = Request::Claim { broker: None, wait_ms: 5000, client: Some(&long) };
    refused(&socket, observer, &request, ErrorCode::LimitExceeded);
    assert!(status(&socket)[0].available);
}

#[test]
fn a_topic_name_of_249_bytes_is_accepted_by_every_request_and_one_of_250_by_none() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let topic = name_of(MAX_TOPIC_NAME_BYTES);
    let other = "u".repeat(MAX_TOPIC_NAME_BYTES);
    let long = name_of(MAX_TOPIC_NAME_BYTES + 1);
    let invalid = ErrorCode::InvalidTopicName;

    // At the limit, each request does its work.
    assert!(matches!(
        ask(&socket, &Request::CreateTopic { topic: &other, partitions: Some(1), retention: Default::default() }),
        Response::Created { topic, .. } if topic == other
    ));
    assert_eq!(wire::append(&socket, &topic, &["a", "b"]), (0, 1));
    assert_eq!(fetch(&socket, fetch_from(token, &topic, 0)).values(), ["a", "b"]);
    joined(&socket, token, "g", &topic);
    assert_eq!(delivered(&socket, group_fetch(token, "g", &topic)), [0, 1]);
    assert!(matches!(
        ask(&socket, &Request::Ack { group: "g", topic: &topic, partition: 0, offsets: vec![0] }),
        Response::Acked { acked: 1, committed_offset: 1, .. }
    ));
    assert!(matches!(
        ask(&socket, &Request::ListGroups { group: None, topic: Some(&topic) }),
        Response::Groups { groups } if groups.len() == 1 && groups[0].topic == topic
    ));
    assert!(matches!(
        ask(
            &socket,
            &Request::ResetGroup {
                group: "g",
                topic: &topic,
                partition: None,
                to: ResetTo::Latest
            }
        ),
        Response::Reset { committed_offset: 2, .. }
    ));
    assert!(matches!(
        ask(&socket, &Request::DeleteTopic { topic: &other }),
        Response::Deleted { .. }
    ));

    // One byte more, each is refused and changes nothing.
    let requests = [
        wire::append_of(&long, &["a"]),
        Request::CreateTopic { topic: &long, partitions: Some(1), retention: Default::default() },
        Request::DeleteTopic { topic: &long },
        Request::Fetch(fetch_from(token, &long, 0)),
        Request::JoinGroup { claim: token, group: "g", topic: &long, start: GroupStart::Earliest },
        Request::GroupFetch(group_fetch(token, "g", &long)),
        Request::Ack { group: "g", topic: &long, partition: 0, offsets: vec![0] },
        Request::ListGroups { group: None, topic: Some(&long) },
        Request::ResetGroup { group: "g", topic: &long, partition: None, to: ResetTo::Earliest },
    ];
    for request in &requests {
        let reason = refused(&socket, token, request, invalid);
        assert!(reason.contains("250 bytes") && reason.contains("249"), "{reason}");
    }
}

#[test]
fn a_group_name_of_249_bytes_is_accepted_by_every_request_and_one_of_250_by_none() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(wire::append(&socket, "t", &["a", "b"]), (0, 1));
    let group = name_of(MAX_GROUP_NAME_BYTES);
    let long = name_of(MAX_GROUP_NAME_BYTES + 1);

    joined(&socket, token, &group, "t");
    assert_eq!(delivered(&socket, group_fetch(token, &group, "t")), [0, 1]);
    assert!(matches!(
        ask(&socket, &Request::Ack { group: &group, topic: "t", partition: 0, offsets: vec![1] }),
        Response::Acked { acked: 1, committed_offset: 0, .. }
    ));
    assert!(matches!(
        ask(&socket, &Request::ListGroups { group: Some(&group), topic: None }),
        Response::Groups { groups } if groups.len() == 1 && groups[0].group == group
    ));
    assert!(matches!(
        ask(
            &socket,
            &Request::ResetGroup {
                group: &group,
                topic: "t",
                partition: None,
                to: ResetTo::Offset(1)
            }
        ),
        Response::Reset { committed_offset: 1, .. }
    ));

    let requests = [
        Request::JoinGroup { claim: token, group: &long, topic: "t", start: GroupStart::Earliest },
        Request::GroupFetch(group_fetch(token, &long, "t")),
        Request::Ack { group: &long, topic: "t", partition: 0, offsets: vec![0] },
        Request::ListGroups { group: Some(&long), topic: None },
        Request::ResetGroup { group: &long, topic: "t", partition: None, to: ResetTo::Earliest },
    ];
    for request in &requests {
        let reason = refused(&socket, token, request, ErrorCode::InvalidGroupName);
        assert!(reason.contains("250 bytes") && reason.contains("249"), "{reason}");
    }
}

#[test]
fn a_message_of_key_and_value_at_the_limit_is_appended_and_one_byte_more_is_not() {
    let broker = start(&["--max-message-bytes", "1000"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let bytes = vec![b'k'; 1001];
    let message = |key: usize, value: usize| NewMessage {
        key: (key > 0).then(|| &bytes[..key]),
        value: &bytes[..value],
        headers: Vec::new(),
    };
    fn append(messages: Vec<NewMessage<'_>>) -> Request<'_> {
        Request::Append(Append { partition: None, topic: "t", messages, sequenced: None })
    }

    for (key, value) in [(0, 1000), (1000, 0), (400, 600)] {
        match ask(&socket, &append(vec![message(key, value)])) {
            Response::Appended { .. } => {}
            other => panic!("key {key} + value {value}: expected appended, got {other:?}"),
        }
    }
    for batch in [
        vec![message(0, 1001)],
        vec![message(1001, 0)],
        vec![message(401, 600)],
        vec![message(0, 1), message(401, 600)],
    ] {
        refused(&socket, token, &append(batch), ErrorCode::MessageTooLarge);
    }
    let stored = fetch(&socket, fetch_from(token, "t", 0));
    assert_eq!(stored.offsets(), [0, 1, 2]);
}

#[test]
fn an_append_of_100000_messages_is_taken_and_one_of_100001_is_refused() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let messages = vec![NewMessage::new(None, b""); MAX_APPEND_MESSAGES + 1];

    let over = Request::Append(Append {
        partition: None,
        topic: "t",
        messages: messages.clone(),
        sequenced: None,
    });
    let reason = refused(&socket, token, &over, ErrorCode::LimitExceeded);
    assert!(reason.contains("100001") && reason.contains("100000"), "{reason}");
    assert!(topics(&socket, token).is_empty(), "the refused append created its topic");

    let at = Request::Append(Append {
        sequenced: None,
        partition: None,
        topic: "t",
        messages: messages[1..].to_vec(),
    });
    match ask(&socket, &at) {
        Response::Appended { first_offset: 0, last_offset, .. } => {
            assert_eq!(last_offset, MAX_APPEND_MESSAGES as u64 - 1)
        }
        other => panic!("expected appended, got {other:?}"),
    }
}

#[test]
fn an_ack_of_100000_offsets_is_taken_and_one_of_100001_is_refused() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "member");
    wire::append(&socket, "t", &["a"]);
    joined(&socket, token, "g", "t");
    assert_eq!(delivered(&socket, group_fetch(token, "g", "t")), [0]);

    let over = Request::Ack {
        group: "g",
        topic: "t",
        partition: 0,
        offsets: vec![0; MAX_ACK_OFFSETS + 1],
    };
    let reason = refused(&socket, token, &over, ErrorCode::LimitExceeded);
    assert!(reason.contains("100001") && reason.contains("100000"), "{reason}");

    let at =
        Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![0; MAX_ACK_OFFSETS] };
    match ask(&socket, &at) {
        Response::Acked { committed_offset: 1, .. } => {}
        other => panic!("expected acked, got {other:?}"),
    }
}

#[test]
fn a_map_of_64_entries_is_read_and_one_of_65_is_malformed() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let with_unknown = |count: usize| {
        let mut entries = vec![
            (key("v"), vec![1]),
            (key("op"), str_value(b"append")),
            (key("topic"), str_value(b"t")),
            (key("messages"), b"\x91\x81\xa5value\xa1a".to_vec()),
        ];
        entries.extend((0..count).map(|i| (key(&format!("x{i}")), vec![0xc0])));
        raw_map(&entries)
    };
    let reason =
        refused_raw(&socket, token, &with_unknown(MAX_MAP_ENTRIES - 3), ErrorCode::Malformed);
    assert!(reason.contains("65 entries"), "{reason}");
    assert!(matches!(
        ask_raw(&socket, &with_unknown(MAX_MAP_ENTRIES - 4)),
        Response::Appended { first_offset: 0, last_offset: 0, .. }
    ));
}

#[test]
fn refusals_do_not_echo_a_long_string_back() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let long = "x".repeat(1 << 20);
    let short = |reason: String| assert!(reason.len() < 300, "a reason of {} bytes", reason.len());

    let frame = map(&[("v", 1u64.into()), ("op", long.as_str().into())]);
    short(refused_raw(&socket, token, &frame, ErrorCode::UnknownRequest));
    short(refused(&socket, token, &wire::append_of(&long, &["a"]), ErrorCode::InvalidTopicName));
    let request = Request::ListGroups { group: Some(&long), topic: None };
    short(refused(&socket, token, &request, ErrorCode::InvalidGroupName));
    let frame = map(&[
        ("v", 1u64.into()),
        ("op", "join_group".into()),
        ("claim", token.into()),
        ("group", "g".into()),
        ("topic", "t".into()),
        ("start", long.as_str().into()),
    ]);
    short(refused_raw(&socket, token, &frame, ErrorCode::Malformed));
}

// ---- Point 8: a key appears once in a map, and is UTF-8. ----

#[test]
fn an_unknown_key_twice_in_a_request_is_malformed_and_nothing_is_done() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, Some(2), "observer");

    let append = map(&[
        ("v", 1u64.into()),
        ("op", "append".into()),
        ("topic", "t".into()),
        ("trace", 1u64.into()),
        ("messages", Value::Array(vec![Value::Map(vec![("value".into(), "a".into())])])),
        ("trace", 2u64.into()),
    ]);
    let reason = refused_raw(&socket, token, &append, ErrorCode::Malformed);
    assert!(reason.contains("trace") && reason.contains("twice"), "{reason}");
    let claim_twice =
        map(&[("v", 1u64.into()), ("op", "claim".into()), ("x", Value::Nil), ("x", Value::Nil)]);
    refused_raw(&socket, token, &claim_twice, ErrorCode::Malformed);
    assert!(status(&socket)[0].available);

    // Two different unknown keys are ignored, as before.
    let append = map(&[
        ("v", 1u64.into()),
        ("op", "append".into()),
        ("topic", "t".into()),
        ("trace", 1u64.into()),
        ("messages", Value::Array(vec![Value::Map(vec![("value".into(), "a".into())])])),
        ("span", 2u64.into()),
    ]);
    assert!(matches!(ask_raw(&socket, &append), Response::Appended { last_offset: 0, .. }));
}

#[test]
fn an_unknown_key_twice_in_a_message_is_malformed_and_nothing_is_appended() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");
    wire::append(&socket, "t", &["first"]);

    let record = Value::Map(vec![
        ("value".into(), "a".into()),
        ("x".into(), 1u64.into()),
        ("x".into(), 2u64.into()),
    ]);
    let reason =
        refused_raw(&socket, token, &append_record("t", &encoded(&record)), ErrorCode::Malformed);
    assert!(reason.contains("a message") && reason.contains("twice"), "{reason}");
    // The same key once as a string and once as a byte string.
    let record = [b"\x83\xa5value\xa1a\xa1x\x01".as_slice(), b"\xc4\x01x\x02"].concat();
    refused_raw(&socket, token, &append_record("t", &record), ErrorCode::Malformed);
    assert_eq!(fetch(&socket, fetch_from(token, "t", 0)).values(), ["first"]);
}

#[test]
fn an_unknown_key_that_is_not_utf8_is_malformed_and_nothing_is_done() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "observer");

    for bad_key in [b"\xc4\x02\xff\xfe".to_vec(), b"\xa2\xc3\x28".to_vec()] {
        let frame = raw_map(&[
            (key("v"), vec![1]),
            (key("op"), str_value(b"create_topic")),
            (key("topic"), str_value(b"t")),
            (bad_key.clone(), vec![1]),
        ]);
        let reason = refused_raw(&socket, token, &frame, ErrorCode::Malformed);
        assert!(reason.contains("UTF-8"), "{reason}");
        let record = [b"\x82\xa5value\xa1a".as_slice(), &bad_key, b"\x01"].concat();
        let reason =
            refused_raw(&socket, token, &append_record("t", &record), ErrorCode::Malformed);
        assert!(reason.contains("UTF-8"), "{reason}");
    }
    assert!(topics(&socket, token).is_empty());
}

// ---- Point 10: what the document now says, for the cases a client had to guess. ----

#[test]
fn start_and_to_outside_their_choices_are_malformed() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "member");
    wire::append(&socket, "t", &["a"]);
    for start in ["Earliest", "beginning", ""] {
        let frame = map(&[
            ("v", 1u64.into()),
            ("op", "join_group".into()),
            ("claim", token.into()),
            ("group", "g".into()),
            ("topic", "t".into()),
            ("start", start.into()),
        ]);
        refused_raw(&socket, token, &frame, ErrorCode::Malformed);
    }
    for to in ["Latest", "first", ""] {
        let frame = map(&[
            ("v", 1u64.into()),
            ("op", "reset_group".into()),
            ("group", "g".into()),
            ("topic", "t".into()),
            ("to", to.into()),
            ("offset", 0u64.into()),
        ]);
        refused_raw(&socket, token, &frame, ErrorCode::Malformed);
    }
}

#[test]
fn reset_to_earliest_or_latest_ignores_an_offset() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    wire::append(&socket, "t", &["a", "b", "c"]);
    for (to, expected) in [("earliest", 0), ("latest", 3)] {
        let frame = map(&[
            ("v", 1u64.into()),
            ("op", "reset_group".into()),
            ("group", "g".into()),
            ("topic", "t".into()),
            ("to", to.into()),
            ("offset", 2u64.into()),
        ]);
        match ask_raw(&socket, &frame) {
            Response::Reset { committed_offset, .. } => assert_eq!(committed_offset, expected),
            other => panic!("reset to {to} with an offset: expected reset, got {other:?}"),
        }
    }
    // Even an offset out of the topic's range: it is not looked at.
    let frame = map(&[
        ("v", 1u64.into()),
        ("op", "reset_group".into()),
        ("group", "g".into()),
        ("topic", "t".into()),
        ("to", "earliest".into()),
        ("offset", 99u64.into()),
    ]);
    assert!(matches!(ask_raw(&socket, &frame), Response::Reset { committed_offset: 0, .. }));
}

#[test]
fn the_documented_order_of_checks() {
    let broker = start(&["--max-message-bytes", "10"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let bad_topic = " spaced ";

    // append: the name before the sizes.
    let big = [b'x'; 11];
    let request = Request::Append(Append {
        sequenced: None,
        partition: None,
        topic: bad_topic,
        messages: vec![NewMessage::new(None, &big)],
    });
    refused(&socket, token, &request, ErrorCode::InvalidTopicName);
    // list_groups: the group before the topic.
    let request = Request::ListGroups { group: Some(""), topic: Some(bad_topic) };
    refused(&socket, token, &request, ErrorCode::InvalidGroupName);
    // A missing field before the claim: decoding comes first.
    let frame = map(&[
        ("v", 1u64.into()),
        ("op", "fetch".into()),
        ("claim", token.wrapping_add(1).into()),
        ("offset", 0u64.into()),
    ]);
    let reason = refused_raw(&socket, token, &frame, ErrorCode::Malformed);
    assert!(reason.contains("topic"), "{reason}");
    // A limit before a missing field, and before an unknown request.
    let long = "c".repeat(MAX_CLIENT_NAME_BYTES + 1);
    let frame =
        map(&[("v", 1u64.into()), ("op", "renew".into()), ("client", long.as_str().into())]);
    refused_raw(&socket, token, &frame, ErrorCode::LimitExceeded);
    let frame = map(&[("v", 1u64.into()), ("op", "nope".into()), ("client", long.as_str().into())]);
    refused_raw(&socket, token, &frame, ErrorCode::LimitExceeded);
    // The limits the encoding sets hold in every request; names only where they are used.
    let frame =
        map(&[("v", 1u64.into()), ("op", "status".into()), ("client", long.as_str().into())]);
    refused_raw(&socket, token, &frame, ErrorCode::LimitExceeded);
    let topic = "t".repeat(MAX_TOPIC_NAME_BYTES + 1);
    let frame =
        map(&[("v", 1u64.into()), ("op", "status".into()), ("topic", topic.as_str().into())]);
    assert!(matches!(ask_raw(&socket, &frame), Response::Status { .. }));
}

#[test]
fn under_another_version_only_a_broken_map_is_malformed() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let long = "c".repeat(MAX_CLIENT_NAME_BYTES + 1);
    // A map that breaks the rules of "Encoding" is malformed whatever its version says.
    for frame in [
        map(&[("v", 2u64.into()), ("op", "renew".into()), ("claim", "x".into())]),
        map(&[("v", 2u64.into()), ("op", "status".into()), ("x", Value::Nil), ("x", Value::Nil)]),
        map(&[("v", 2u64.into()), ("op", "status".into()), ("wait_ms", Value::Int(-1))]),
    ] {
        refused_raw(&socket, token, &frame, ErrorCode::Malformed);
    }
    // A well-formed map of another version is unsupported, whatever else is wrong with it.
    for frame in [
        map(&[("v", 2u64.into())]),
        map(&[("v", 2u64.into()), ("op", "nope".into())]),
        map(&[("v", 2u64.into()), ("op", "renew".into())]),
        map(&[("v", 2u64.into()), ("op", "claim".into()), ("client", long.as_str().into())]),
        map(&[("v", 2u64.into()), ("op", "join_group".into()), ("start", "now".into())]),
    ] {
        refused_raw(&socket, token, &frame, ErrorCode::UnsupportedVersion);
    }
}

#[test]
fn an_empty_client_name_shows_the_peer_address_as_holder() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    claim(&socket, Some(1), "");
    ask(&socket, &Request::Claim { broker: Some(2), wait_ms: 0, client: None });
    let holders: Vec<Option<String>> = status(&socket).into_iter().map(|b| b.holder).collect();
    assert_eq!(holders, [Some("127.0.0.1".to_owned()), Some("127.0.0.1".to_owned())]);
}

/// A broker started on an `ipc://` endpoint, which [`wire::start`] cannot do; killed on drop.
struct IpcBroker {
    /// The broker process.
    child: Child,
}

impl Drop for IpcBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_holder_of_an_ipc_peer_that_gives_no_name() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let endpoint = format!("ipc://{}", dir.path().join("broker.sock").display());
    let mut child = Command::new(Path::new(env!("CARGO_BIN_EXE_broker")))
        .args(["--bind", &endpoint])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker");
    let stdout = child.stdout.take().expect("stdout is piped");
    let broker = IpcBroker { child };
    let lines = testkit::lines_of(stdout);
    let first = lines.recv_timeout(testkit::STEP).expect("a `listening on` line");
    assert_eq!(first, format!("listening on {endpoint}"));

    let context = zmq::Context::new();
    let socket = testkit::req_socket(&context, &endpoint);
    claim(&socket, Some(1), "");
    ask(&socket, &Request::Claim { broker: Some(2), wait_ms: 0, client: None });
    let holders: Vec<Option<String>> = status(&socket).into_iter().map(|b| b.holder).collect();
    assert_eq!(holders, [Some("localhost".to_owned()), Some("localhost".to_owned())]);
    drop(socket);
    drop(broker);
}

#[test]
fn max_bytes_zero_returns_one_message() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let request = Fetch { max_bytes: 0, ..fetch_from(token, "Hola mundo", 0) };
    let got = expect_messages(ask(&socket, &Request::Fetch(request)), "Hola mundo");
    assert_eq!((got.offsets(), got.next_offset), (vec![0], 1));

    joined(&socket, token, "g", "Hola mundo");
    let request = GroupFetch { max_bytes: 0, ..group_fetch(token, "g", "Hola mundo") };
    assert_eq!(delivered(&socket, request), [0]);
}

#[test]
fn a_held_group_fetch_keeps_its_claim_alive() {
    // A lease of a second leaves the test a second to renew after the reply, even on a busy
    // machine.
    let broker = start(&["--lease", "1s"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "member");
    wire::append(&socket, "t", &["a"]);
    joined(&socket, token, "g", "t");
    assert_eq!(delivered(&socket, group_fetch(token, "g", "t")), [0]);

    // Nothing is there for the group: the fetch is held three leases long.
    let started = Instant::now();
    let request = GroupFetch { wait_ms: 3000, ..group_fetch(token, "g", "t") };
    assert_eq!(delivered(&socket, request), Vec::<u64>::new());
    assert!(started.elapsed().as_millis() >= 3000);
    assert!(
        matches!(ask(&socket, &Request::Renew { claim: token }), Response::Renewed { .. }),
        "the claim expired while its group fetch was held"
    );
}

// ---- Limits that were there before: the fetch caps and the frame size, at both sides. ----

#[test]
fn a_fetch_returns_at_most_10000_messages_whatever_it_asks() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let cap = protocol::MAX_FETCH_MESSAGES;
    let messages = vec![NewMessage::new(None, b""); cap as usize + 1];
    ask(
        &socket,
        &Request::Append(Append { partition: None, topic: "t", messages, sequenced: None }),
    );

    for (asked, got) in [(cap, cap), (cap + 1, cap), (u32::MAX, cap), (0, 1)] {
        let request = Fetch { max_messages: asked, ..fetch_from(token, "t", 0) };
        let fetched = fetch(&socket, request);
        assert_eq!(fetched.messages.len() as u32, got, "max_messages {asked}");
        assert_eq!(fetched.next_offset, u64::from(got));
    }
    joined(&socket, token, "g", "t");
    let request = GroupFetch { max_messages: cap + 1, ..group_fetch(token, "g", "t") };
    assert_eq!(delivered(&socket, request).len() as u32, cap);
}

#[test]
fn a_fetch_returns_at_most_16_mib_whatever_it_asks() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let value = vec![b'v'; 1 << 20];
    let messages = vec![NewMessage::new(None, &value); 17];
    ask(
        &socket,
        &Request::Append(Append { partition: None, topic: "t", messages, sequenced: None }),
    );

    let cap = protocol::MAX_FETCH_BYTES;
    for (asked, got) in [(cap - 1, 15), (cap, 16), (cap + 1, 16), (u32::MAX, 16)] {
        let request = Fetch { max_bytes: asked, ..fetch_from(token, "t", 0) };
        assert_eq!(fetch(&socket, request).messages.len(), got, "max_bytes {asked}");
    }
}

/// `{"v": 1, "op": "status", "pad": BIN}` with the byte string sized so that the frame has
/// `bytes` bytes.
fn status_frame_of(bytes: usize) -> Vec<u8> {
    let mut frame =
        raw_map(&[(key("v"), vec![1]), (key("op"), str_value(b"status")), (key("pad"), vec![])]);
    let pad = bytes - frame.len() - 5;
    frame.push(0xc6);
    frame.extend_from_slice(&u32::try_from(pad).expect("short").to_be_bytes());
    frame.resize(bytes, 0);
    frame
}

#[test]
fn a_frame_of_64_mib_is_read_and_one_byte_more_is_dropped_unanswered() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let limit = 64 << 20;

    let socket = broker.req(&context);
    assert!(matches!(ask_raw(&socket, &status_frame_of(limit)), Response::Status { .. }));

    let dropped = broker.req(&context);
    dropped.send(status_frame_of(limit + 1), 0).expect("send");
    wire::assert_silent(&dropped, wire::QUIET, "a frame over the limit");
    // The broker goes on serving the others.
    assert!(matches!(ask(&socket, &Request::Status), Response::Status { .. }));
}

#[test]
fn headers_at_their_limits_are_stored_and_past_them_refused_changing_nothing() {
    let broker = start(&["--max-message-bytes", "1000"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let append = |headers: Vec<Header<'static>>| {
        Request::Append(Append {
            sequenced: None,
            partition: None,
            topic: "h",
            messages: vec![NewMessage { key: None, value: b"v", headers }],
        })
    };
    let name: &'static str = Box::leak("n".repeat(MAX_HEADER_KEY_BYTES + 1).into_boxed_str());
    let at_limit: Vec<Header<'static>> = (0..MAX_MESSAGE_HEADERS)
        .map(|i| Header { key: &name[..MAX_HEADER_KEY_BYTES - i % 2], value: None })
        .collect();
    // 100 names of 255 or 256 bytes with the value: 25,551 bytes, so a larger limit.
    let roomy = start(&["--max-message-bytes", "30000"]);
    let roomy_socket = roomy.req(&context);
    assert!(matches!(ask(&roomy_socket, &append(at_limit.clone())), Response::Appended { .. }));
    let (_, roomy_token) = claim(&roomy_socket, None, "reader");
    let stored = fetch(&roomy_socket, fetch_from(roomy_token, "h", 0));
    assert_eq!(stored.values(), ["v"]);
    match ask(&roomy_socket, &Request::Fetch(fetch_from(roomy_token, "h", 0))) {
        Response::Messages { messages, .. } => assert_eq!(messages[0].headers, at_limit),
        other => panic!("expected messages, got {other:?}"),
    }

    let mut too_many = at_limit.clone();
    too_many.push(Header { key: "one", value: Some(b"more") });
    let reason = refused(&socket, token, &append(too_many), ErrorCode::LimitExceeded);
    assert!(reason.contains("101 items"), "{reason}");
    let too_long = vec![Header { key: name, value: None }];
    let reason = refused(&socket, token, &append(too_long), ErrorCode::LimitExceeded);
    assert!(reason.contains("257 bytes"), "{reason}");
    // Their keys and values count in the message's size: 1 + 3 + 996 fits, one byte more not.
    let value = vec![7u8; 997];
    let value: &'static [u8] = Box::leak(value.into_boxed_slice());
    let over = vec![Header { key: "abc", value: Some(value) }];
    refused(&socket, token, &append(over), ErrorCode::MessageTooLarge);
    let fits = vec![Header { key: "abc", value: Some(&value[..996]) }];
    assert!(matches!(ask(&socket, &append(fits)), Response::Appended { .. }));

    // Malformed: headers that are not a list of [str, bin or nil] pairs.
    let message = |headers: Value| {
        map(&[
            ("v", 1u64.into()),
            ("op", "append".into()),
            ("topic", "h".into()),
            (
                "messages",
                Value::Array(vec![Value::Map(vec![
                    ("value".into(), Value::Bin(b"v".to_vec())),
                    ("headers".into(), headers),
                ])]),
            ),
        ])
    };
    let pair = |key: Value, value: Value| Value::Array(vec![key, value]);
    for headers in [
        Value::Map(vec![("a".into(), "b".into())]),
        Value::Array(vec!["a".into()]),
        Value::Array(vec![Value::Array(vec!["a".into(), Value::Nil, Value::Nil])]),
        Value::Array(vec![pair(Value::UInt(1), Value::Bin(vec![]))]),
        Value::Array(vec![pair(Value::Nil, Value::Bin(vec![]))]),
        Value::Array(vec![pair("a".into(), Value::Bool(true))]),
        Value::Array(vec![pair(Value::Bin(vec![0xff]), Value::Nil)]),
    ] {
        refused_raw(&socket, token, &message(headers), ErrorCode::Malformed);
    }
    let stored = fetch(&socket, fetch_from(token, "h", 0));
    assert_eq!(stored.offsets(), [0], "only the append that fitted was stored");
    roomy.interrupt();
}
