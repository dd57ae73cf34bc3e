//! The codec at the byte level: round trips of every message, pinned encodings, bad frames.

use std::collections::{BTreeMap, BTreeSet};

use protocol::batch::{self, Batches};
use protocol::fields::{Field, REPLY_FIELDS, REQUEST_FIELDS};
use protocol::{
    decode_request, decode_response, encode_request, encode_response, Append, BrokerStatus,
    DecodeError, ErrorCode, Fetch, GroupFetch, GroupInfo, GroupStart, Header, Message, NewMessage,
    Placement, Request, ResetTo, Response, Retention, Sequenced, TopicInfo,
};

fn request_bytes(request: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(request, &mut out);
    out
}

fn response_bytes(response: Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(response, &mut out);
    out
}

/// PROTOCOL.md's worked example of a `batches` byte string ("A `batches` reply"): offset 5
/// with key `k` and value `hi`, offset 6 with value `yo`, both at 1700000000000.
const BATCHES_EXAMPLE: &[u8] = &[
    0x1e, 0x00, 0x00, 0x00, 0xbc, 0x06, 0x8f, 0x81, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x02, 0x02, 0x6b,
    0x68, 0x69, 0x00, 0x02, 0x79, 0x6f,
];

/// One or more of every request, with and without their optional fields.
fn requests() -> Vec<Request<'static>> {
    vec![
        Request::Status,
        Request::Claim { broker: None, wait_ms: 0, client: None },
        Request::Claim { broker: Some(2), wait_ms: 1500, client: Some("till-1") },
        Request::Renew { claim: u64::MAX },
        Request::Release { claim: 7 },
        Request::ListTopics { claim: Some(7) },
        Request::ListTopics { claim: None },
        Request::Fetch(Fetch {
            claim: 7,
            topic: "Hola mundo",
            partition: 0,
            offset: 3,
            max_messages: 10,
            max_bytes: 4096,
            wait_ms: 250,
            batches: false,
        }),
        Request::Fetch(Fetch {
            claim: 7,
            topic: "orders",
            partition: 9_999,
            offset: 0,
            max_messages: 10,
            max_bytes: 4096,
            wait_ms: 0,
            batches: true,
        }),
        Request::Append(Append {
            sequenced: None,
            topic: "orders",
            partition: None,
            messages: vec![
                NewMessage::new(None, b"one"),
                NewMessage::new(Some(b"k"), &[0, 159, 146, 150]),
            ],
        }),
        Request::Append(Append {
            sequenced: None,
            topic: "orders",
            partition: Some(5),
            messages: vec![NewMessage::new(None, b"two")],
        }),
        Request::Append(Append {
            sequenced: Some(Sequenced { producer: u64::MAX, sequence: 0 }),
            topic: "orders",
            partition: None,
            messages: vec![NewMessage::new(None, b"three")],
        }),
        Request::Append(Append {
            sequenced: None,
            topic: "orders",
            partition: None,
            messages: vec![
                NewMessage {
                    key: Some(b"k"),
                    value: b"v",
                    headers: vec![
                        Header { key: "trace", value: Some(b"1") },
                        Header { key: "trace", value: None },
                        Header { key: "", value: Some(b"") },
                    ],
                },
                NewMessage::new(None, b"plain"),
            ],
        }),
        Request::CreateTopic { topic: "t", partitions: None, retention: Retention::default() },
        Request::CreateTopic {
            topic: "t",
            partitions: Some(6),
            retention: Retention { messages: Some(10), bytes: Some(1 << 20), ms: Some(60_000) },
        },
        Request::CreatePartitions { topic: "t", partitions: 12 },
        Request::DeleteTopic { topic: "t" },
        Request::JoinGroup {
            claim: 7,
            group: "preparers",
            topic: "orders",
            start: GroupStart::Earliest,
        },
        Request::JoinGroup { claim: 7, group: "g", topic: "t", start: GroupStart::Latest },
        Request::GroupFetch(GroupFetch {
            claim: 7,
            group: "preparers",
            topic: "orders",
            max_messages: 2,
            max_bytes: 4096,
            wait_ms: 1000,
            ordered: false,
        }),
        Request::GroupFetch(GroupFetch {
            claim: 7,
            group: "g",
            topic: "t",
            max_messages: 2,
            max_bytes: 4096,
            wait_ms: 0,
            ordered: true,
        }),
        Request::Ack {
            group: "preparers",
            topic: "orders",
            partition: 0,
            offsets: vec![3, 1, u64::MAX],
        },
        Request::Ack { group: "g", topic: "t", partition: 3, offsets: vec![0] },
        Request::ListGroups { group: None, topic: None },
        Request::ListGroups { group: Some("g"), topic: Some("t") },
        Request::DeleteGroup { group: "g", topic: None, partition: None },
        Request::DeleteGroup { group: "g", topic: Some("t"), partition: None },
        Request::DeleteGroup { group: "g", topic: Some("t"), partition: Some(2) },
        Request::ResetGroup { group: "g", topic: "t", partition: None, to: ResetTo::Earliest },
        Request::ResetGroup { group: "g", topic: "t", partition: None, to: ResetTo::Latest },
        Request::ResetGroup { group: "g", topic: "t", partition: Some(2), to: ResetTo::Offset(42) },
    ]
}

#[test]
fn every_request_round_trips() {
    for request in requests() {
        let bytes = request_bytes(&request);
        assert_eq!(decode_request(&bytes), Ok(request));
    }
}

/// One or more of every reply, with and without their optional fields.
fn responses() -> Vec<Response<'static>> {
    vec![
        Response::Status {
            brokers: vec![
                BrokerStatus {
                    id: 1,
                    available: false,
                    holder: Some("tcp://127.0.0.1:40000".into()),
                    lease_remaining_ms: Some(29_000),
                    topics: 4,
                    messages: 12,
                    bytes: 120,
                    disk_bytes: None,
                },
                BrokerStatus {
                    id: 2,
                    available: true,
                    holder: None,
                    lease_remaining_ms: None,
                    topics: 4,
                    messages: 12,
                    bytes: 120,
                    disk_bytes: None,
                },
            ],
        },
        Response::Claimed { broker: 1, claim: 99, lease_ms: 30_000 },
        Response::Renewed { broker: 1, lease_ms: 30_000 },
        Response::Released { broker: 2 },
        Response::Topics {
            topics: vec![TopicInfo {
                name: "Hello world".into(),
                messages: 3,
                first_offset: 0,
                next_offset: 3,
                bytes: 27,
                disk_bytes: Some(4096),
                partitions: 2,
                first_offsets: vec![0, 0],
                next_offsets: vec![3, 0],
                retention_messages: None,
                retention_bytes: None,
                retention_ms: None,
            }],
        },
        Response::Batches {
            topic: "t",
            partition: 2,
            batches: Batches::Bytes(BATCHES_EXAMPLE),
            next_offset: 7,
            end_offset: 9,
        },
        Response::Batches {
            topic: "t",
            partition: 0,
            batches: Batches::Bytes(b""),
            next_offset: 7,
            end_offset: 7,
        },
        Response::Messages {
            topic: "Hello world",
            partition: 1,
            messages: vec![
                Message {
                    offset: 0,
                    timestamp: 1_700_000_000_000,
                    key: None,
                    value: b"message 1",
                    headers: Vec::new(),
                },
                Message {
                    offset: 1,
                    timestamp: 1_700_000_000_001,
                    key: Some(b"k"),
                    value: b"",
                    headers: Vec::new(),
                },
                Message {
                    offset: 2,
                    timestamp: 1_700_000_000_001,
                    key: None,
                    value: b"h",
                    headers: vec![
                        Header { key: "a", value: None },
                        Header { key: "é", value: Some(b"\xff") },
                    ],
                },
            ],
            next_offset: 3,
            end_offset: 3,
        },
        Response::Appended {
            topic: "orders",
            partition: 0,
            first_offset: 5,
            last_offset: 9,
            placed: vec![],
        },
        Response::Appended {
            topic: "orders",
            partition: 2,
            first_offset: 7,
            last_offset: 7,
            placed: vec![
                Placement { partition: 0, first_offset: 3, last_offset: 4 },
                Placement { partition: 2, first_offset: 7, last_offset: 7 },
            ],
        },
        Response::Created { topic: "t", partitions: 1 },
        Response::PartitionsCreated { topic: "t", partitions: 6 },
        Response::Deleted { topic: "t" },
        Response::Joined {
            group: "preparers",
            topic: "orders",
            committed_offset: 4,
            end_offset: 9,
            members: 2,
            created: false,
            ack_timeout_ms: 30_000,
            partitions: 3,
        },
        Response::Delivered {
            group: "preparers",
            topic: "orders",
            messages: vec![
                Message {
                    offset: 2,
                    timestamp: 1_700_000_000_000,
                    key: None,
                    value: b"again",
                    headers: Vec::new(),
                },
                Message {
                    offset: 5,
                    timestamp: 1_700_000_000_001,
                    key: Some(b"k"),
                    value: b"",
                    headers: Vec::new(),
                },
            ],
            redelivered: vec![2],
            committed_offset: 2,
            end_offset: 6,
            reset_offset: Some(2),
            partition: 4,
        },
        Response::Acked { group: "g", topic: "t", acked: 3, committed_offset: 7, partition: 1 },
        Response::Groups {
            groups: vec![GroupInfo {
                group: "g".into(),
                topic: "t".into(),
                committed_offset: 1,
                delivered_offset: 3,
                end_offset: 5,
                pending: 2,
                members: vec![1, 2],
                partition: 0,
            }],
        },
        Response::Reset { group: "g", topic: "t", committed_offset: 0, partition: None },
        Response::GroupDeleted { group: "g", topic: None, partition: None },
        Response::GroupDeleted { group: "g", topic: Some("t"), partition: None },
        Response::GroupDeleted { group: "g", topic: Some("t"), partition: Some(2) },
        Response::Reset { group: "g", topic: "t", committed_offset: 5, partition: Some(1) },
        Response::error(ErrorCode::NotPending, "offset 9 was never delivered to group g"),
        Response::error(ErrorCode::BrokerBusy, "logical broker 1 is claimed"),
        Response::Error {
            code: ErrorCode::OffsetOutOfRange,
            reason: "offset 10 is past the end".into(),
            range: Some((0, 3)),
            partitions: None,
        },
        Response::Error {
            code: ErrorCode::UnknownPartition,
            reason: "topic t has 3 partitions (0 to 2), not 7".into(),
            range: None,
            partitions: Some(3),
        },
    ]
}

#[test]
fn every_response_round_trips() {
    for response in responses() {
        let bytes = response_bytes(response.clone());
        assert_eq!(decode_response(&bytes), Ok(response));
    }
}

/// Checks that the frame of the request or reply `name` carries the fields `table` says it
/// does, always those it requires, and no other.
fn check_keys(table: &[Field], name: &str, frame: &[u8]) {
    let keys: BTreeMap<String, serde::de::IgnoredAny> =
        rmp_serde::from_slice(frame).expect("a frame is a map with string keys");
    let carried = |list: &[&str]| list.contains(&name) || list.contains(&"every");
    for key in keys.keys() {
        let field = table.iter().find(|field| field.name == key);
        assert!(
            field.is_some_and(|f| carried(f.required) || carried(f.optional)),
            "{name} carries `{key}`, which the table does not give it"
        );
    }
    for field in table.iter().filter(|field| carried(field.required)) {
        assert!(keys.contains_key(field.name), "{name} lacks `{}`, which it requires", field.name);
    }
}

#[test]
fn every_frame_carries_the_fields_its_table_names() {
    let names = |table: &[Field]| -> BTreeSet<&str> {
        let all = table.iter().flat_map(|field| field.required.iter().chain(field.optional));
        all.copied().filter(|&name| name != "every").collect()
    };
    let mut seen = BTreeSet::new();
    for request in requests() {
        check_keys(REQUEST_FIELDS, request.op(), &request_bytes(&request));
        seen.insert(request.op());
    }
    // status carries no field but `v` and `op`.
    assert_eq!(seen, &names(REQUEST_FIELDS) | &BTreeSet::from(["status"]));
    let mut seen = BTreeSet::new();
    for response in responses() {
        let name = response.name();
        check_keys(REPLY_FIELDS, name, &response_bytes(response.clone()));
        seen.insert(name);
    }
    assert_eq!(seen, names(REPLY_FIELDS));
}

#[test]
fn a_batches_reply_carries_the_documents_example_as_one_bin_and_reads_back_as_its_messages() {
    let pieces = batch::pieces_of(&[
        Message {
            offset: 5,
            timestamp: 1_700_000_000_000,
            key: Some(b"k"),
            value: b"hi",
            headers: Vec::new(),
        },
        Message {
            offset: 6,
            timestamp: 1_700_000_000_000,
            key: None,
            value: b"yo",
            headers: Vec::new(),
        },
    ]);
    let reply = Response::Batches {
        topic: "t",
        partition: 0,
        batches: Batches::Pieces(pieces),
        next_offset: 7,
        end_offset: 7,
    };
    let bytes = response_bytes(reply);
    let at = bytes.windows(2).position(|w| w == [0xc4, 0x26]).expect("a bin 8 of 38 bytes");
    assert_eq!(&bytes[at + 2..at + 2 + 38], BATCHES_EXAMPLE);
    let Ok(Response::Batches { batches: Batches::Bytes(read), next_offset: 7, .. }) =
        decode_response(&bytes)
    else {
        panic!("not a batches reply");
    };
    let mut messages = Vec::new();
    batch::read(read, 5, &mut messages).unwrap();
    let values: Vec<_> = messages.iter().map(|m| (m.offset, m.key, m.value)).collect();
    assert_eq!(values, [(5, Some(&b"k"[..]), &b"hi"[..]), (6, None, &b"yo"[..])]);
}

// The two encodings PROTOCOL.md shows byte by byte. A change here is a change of the wire format.
#[test]
fn status_request_is_pinned() {
    let bytes = request_bytes(&Request::Status);
    assert_eq!(bytes, b"\x82\xa1v\x01\xa2op\xa6status");
}

#[test]
fn append_request_is_pinned() {
    let bytes = request_bytes(&Request::Append(Append {
        sequenced: None,
        partition: None,
        topic: "t",
        messages: vec![NewMessage::new(None, b"hi")],
    }));
    let expected: &[u8] = b"\x84\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\
        \xa8messages\x91\x81\xa5value\xc4\x02hi";
    assert_eq!(bytes, expected);
}

#[test]
fn a_message_with_headers_is_pinned_and_one_without_is_as_before() {
    let bytes = request_bytes(&Request::Append(Append {
        sequenced: None,
        partition: None,
        topic: "t",
        messages: vec![NewMessage {
            key: None,
            value: b"hi",
            headers: vec![Header { key: "k", value: Some(b"v") }, Header { key: "n", value: None }],
        }],
    }));
    let expected: &[u8] = b"\x84\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\
        \xa8messages\x91\x82\xa5value\xc4\x02hi\xa7headers\x92\x92\xa1k\xc4\x01v\x92\xa1n\xc0";
    assert_eq!(bytes, expected);
}

#[test]
fn error_reply_is_pinned() {
    let bytes = response_bytes(Response::error(ErrorCode::UnknownTopic, "no topic x"));
    let expected: &[u8] = b"\x85\xa1v\x01\xa4code\xcd\x01\x2f\xa5reply\xa5error\
        \xa5error\xadunknown_topic\xa6reason\xaano topic x";
    assert_eq!(bytes, expected);
}

#[test]
fn keys_may_come_in_any_order_and_unknown_keys_are_ignored() {
    // {"topic": "t", "future": true, "op": "create_topic", "v": 1}
    let frame = b"\x84\xa5topic\xa1t\xa6future\xc3\xa2op\xaccreate_topic\xa1v\x01";
    assert_eq!(
        decode_request(frame),
        Ok(Request::CreateTopic { topic: "t", partitions: None, retention: Retention::default() })
    );
}

#[test]
fn values_sent_as_strings_are_accepted_as_bytes() {
    // {"v": 1, "op": "append", "topic": "t", "messages": [{"value": "hi", "key": "k"}]}
    let frame = b"\x84\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\xa8messages\x91\x82\xa5value\xa2hi\xa3key\xa1k";
    let expected = Request::Append(Append {
        sequenced: None,
        partition: None,
        topic: "t",
        messages: vec![NewMessage::new(Some(b"k"), b"hi")],
    });
    assert_eq!(decode_request(frame), Ok(expected));
}

#[test]
fn bad_frames_get_the_right_error() {
    let malformed = |frame: &[u8]| match decode_request(frame) {
        Err(DecodeError::Malformed(reason)) => reason,
        other => panic!("expected malformed for {frame:?}, got {other:?}"),
    };
    assert!(malformed(b"").contains("empty"));
    assert!(malformed(b"hello").contains("not a MessagePack map"));
    assert!(malformed(b"\x92\x01\xa6status").contains("not a MessagePack map"));
    assert!(malformed(b"\x81\xa2op\xa6status").contains("`v`"));
    assert!(malformed(b"\x81\xa1v\x01").contains("`op`"));
    assert!(malformed(b"\x82\xa1v\x01\xa2op\xa5renew").contains("renew needs the field `claim`"));
    // A map cut short.
    assert!(!malformed(b"\x83\xa1v\x01\xa2op").is_empty());
    // A field of the wrong type: claim as a string.
    assert!(!malformed(b"\x83\xa1v\x01\xa2op\xa5renew\xa5claim\xa1x").is_empty());
    // An append with no messages.
    assert!(malformed(b"\x84\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\xa8messages\x90")
        .contains("at least one message"));
    // An idempotent append's `producer` without its `sequence`, and the other way round.
    let half = b"\x85\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\xa8messages\x91\x81\xa5value\xa1x";
    for field in [&b"\xa8producer\x07"[..], b"\xa8sequence\x07"] {
        let frame = [&half[..], field].concat();
        assert!(malformed(&frame).contains("both `producer` and `sequence`"), "{frame:?}");
    }

    assert_eq!(
        decode_request(b"\x82\xa1v\x02\xa2op\xa6status"),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        decode_request(b"\x82\xa1v\x01\xa2op\xa4nope"),
        Err(DecodeError::UnknownRequest("nope".into()))
    );
}

#[test]
fn bad_group_requests_are_malformed() {
    let malformed = |frame: &[u8]| match decode_request(frame) {
        Err(DecodeError::Malformed(reason)) => reason,
        other => panic!("expected malformed for {frame:?}, got {other:?}"),
    };
    // {"v": 1, "op": "ack", "group": "g", "topic": "t", "offsets": []}
    assert!(malformed(b"\x85\xa1v\x01\xa2op\xa3ack\xa5group\xa1g\xa5topic\xa1t\xa7offsets\x90")
        .contains("at least one offset"));
    // An offset that is negative.
    assert!(!malformed(
        b"\x85\xa1v\x01\xa2op\xa3ack\xa5group\xa1g\xa5topic\xa1t\xa7offsets\x91\xff"
    )
    .is_empty());
    // {"v": 1, "op": "ack", "topic": "t", "offsets": [1]}
    assert!(malformed(b"\x84\xa1v\x01\xa2op\xa3ack\xa5topic\xa1t\xa7offsets\x91\x01")
        .contains("ack needs the field `group`"));
    // {"v": 1, "op": "reset_group", "group": "g", "topic": "t", "to": "offset"}: no offset.
    assert!(malformed(
        b"\x85\xa1v\x01\xa2op\xabreset_group\xa5group\xa1g\xa5topic\xa1t\xa2to\xa6offset"
    )
    .contains("`offset`"));
    // {"v": 1, "op": "reset_group", "group": "g", "topic": "t", "to": "start"}
    assert!(malformed(
        b"\x85\xa1v\x01\xa2op\xabreset_group\xa5group\xa1g\xa5topic\xa1t\xa2to\xa5start"
    )
    .contains("`to`"));
    // {"v": 1, "op": "join_group", "claim": 1, "group": "g", "topic": "t", "start": "now"}
    assert!(malformed(
        b"\x86\xa1v\x01\xa2op\xaajoin_group\xa5claim\x01\xa5group\xa1g\xa5topic\xa1t\xa5start\xa3now"
    )
    .contains("`start`"));
    // A join without `start` starts a new group at the earliest offset.
    assert_eq!(
        decode_request(
            b"\x85\xa1v\x01\xa2op\xaajoin_group\xa5claim\x01\xa5group\xa1g\xa5topic\xa1t"
        ),
        Ok(Request::JoinGroup { claim: 1, group: "g", topic: "t", start: GroupStart::Earliest })
    );
    // {"v": 1, "op": "delete_group", "group": "g", "partition": 1}: a partition of no topic.
    assert!(malformed(b"\x84\xa1v\x01\xa2op\xacdelete_group\xa5group\xa1g\xa9partition\x01")
        .contains("only with its topic"));
}

#[test]
fn huge_declared_lengths_do_not_allocate_or_panic() {
    // A map whose `messages` array claims 2^32-1 entries but holds none.
    let frame = b"\x84\xa1v\x01\xa2op\xa6append\xa5topic\xa1t\xa8messages\xdd\xff\xff\xff\xff";
    assert!(matches!(decode_request(frame), Err(DecodeError::Malformed(_))));
    // An ack whose `offsets` array claims 2^32-1 entries but holds one.
    let frame = b"\x85\xa1v\x01\xa2op\xa3ack\xa5group\xa1g\xa5topic\xa1t\xa7offsets\xdd\xff\xff\xff\xff\x01";
    assert!(matches!(decode_request(frame), Err(DecodeError::Malformed(_))));
}
