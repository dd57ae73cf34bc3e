//! The codec's limits and map rules (PROTOCOL.md, "Encoding" and "Limits"), each at the limit
//! and one past it, on frames built by hand.

use protocol::{
    decode_request, decode_response, encode_request, Append, DecodeError, ErrorCode, Header,
    NewMessage, Request, Response, MAX_ACK_OFFSETS, MAX_APPEND_MESSAGES, MAX_CLIENT_NAME_BYTES,
    MAX_HEADER_KEY_BYTES, MAX_MAP_ENTRIES, MAX_MESSAGE_HEADERS,
};

/// A MessagePack string.
fn str8(text: &[u8]) -> Vec<u8> {
    let mut out = match text.len() {
        0..32 => vec![0xa0 | text.len() as u8],
        32..256 => vec![0xd9, text.len() as u8],
        _ => {
            let len = u16::try_from(text.len()).expect("short enough");
            let [high, low] = len.to_be_bytes();
            vec![0xda, high, low]
        }
    };
    out.extend_from_slice(text);
    out
}

/// A MessagePack byte string.
fn bin(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc4, u8::try_from(bytes.len()).expect("short")];
    out.extend_from_slice(bytes);
    out
}

/// A map header for `len` entries.
fn map_header(len: usize) -> Vec<u8> {
    match len {
        0..16 => vec![0x80 | len as u8],
        _ => {
            let [high, low] = u16::try_from(len).expect("short").to_be_bytes();
            vec![0xde, high, low]
        }
    }
}

/// An array header for `len` elements.
fn array_header(len: usize) -> Vec<u8> {
    let mut out = vec![0xdd];
    out.extend_from_slice(&u32::try_from(len).expect("short").to_be_bytes());
    out
}

/// A map of already encoded keys and values, in order.
fn map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = map_header(entries.len());
    for (key, value) in entries {
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

/// `key` as a string key.
fn k(key: &str) -> Vec<u8> {
    str8(key.as_bytes())
}

fn refused(frame: &[u8], code: ErrorCode) -> String {
    match decode_request(frame) {
        Err(error) if error.code() == code => error.to_string(),
        other => panic!("expected {} {}, got {other:?}", code.code(), code.name()),
    }
}

#[test]
fn a_client_name_may_have_256_bytes_and_not_one_more() {
    for name in ["c".repeat(MAX_CLIENT_NAME_BYTES), "é".repeat(MAX_CLIENT_NAME_BYTES / 2)] {
        let request = Request::Claim { broker: None, wait_ms: 0, client: Some(&name) };
        let mut frame = Vec::new();
        encode_request(&request, &mut frame);
        assert_eq!(decode_request(&frame), Ok(request));
    }
    let name = format!("{}x", "é".repeat(MAX_CLIENT_NAME_BYTES / 2));
    let frame =
        map(&[(k("v"), vec![1]), (k("op"), str8(b"claim")), (k("client"), str8(name.as_bytes()))]);
    let reason = refused(&frame, ErrorCode::LimitExceeded);
    assert!(reason.contains("257 bytes") && reason.contains("256"), "{reason}");
    // The limit holds in any request, as a type does.
    let frame =
        map(&[(k("v"), vec![1]), (k("op"), str8(b"status")), (k("client"), str8(name.as_bytes()))]);
    refused(&frame, ErrorCode::LimitExceeded);
}

#[test]
fn an_empty_client_name_is_no_name() {
    let frame = map(&[(k("v"), vec![1]), (k("op"), str8(b"claim")), (k("client"), str8(b""))]);
    assert_eq!(
        decode_request(&frame),
        Ok(Request::Claim { broker: None, wait_ms: 0, client: None })
    );
}

/// An append of `count` messages with empty values.
fn append_of(count: usize) -> Vec<u8> {
    let mut messages = array_header(count);
    for _ in 0..count {
        messages.extend_from_slice(b"\x81\xa5value\xc4\x00");
    }
    map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"append")),
        (k("topic"), str8(b"t")),
        (k("messages"), messages),
    ])
}

#[test]
fn an_append_may_carry_100000_messages_and_not_one_more() {
    match decode_request(&append_of(MAX_APPEND_MESSAGES)) {
        Ok(Request::Append(Append { partition: None, messages, .. })) => {
            assert_eq!(messages.len(), MAX_APPEND_MESSAGES)
        }
        other => panic!("expected an append, got {other:?}"),
    }
    let reason = refused(&append_of(MAX_APPEND_MESSAGES + 1), ErrorCode::LimitExceeded);
    assert!(reason.contains("100001") && reason.contains("messages"), "{reason}");
}

/// An append of one message whose `headers` field is `headers`, already encoded, followed by
/// `after` (more fields of the body).
fn append_with_headers(headers: Vec<u8>, after: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let message = map(&[(k("value"), bin(b"v")), (k("headers"), headers)]);
    let mut messages = array_header(1);
    messages.extend_from_slice(&message);
    let mut entries = vec![
        (k("v"), vec![1]),
        (k("op"), str8(b"append")),
        (k("topic"), str8(b"t")),
        (k("messages"), messages),
    ];
    entries.extend_from_slice(after);
    map(&entries)
}

/// `count` headers, each `[key, value]`.
fn headers_of(count: usize, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = array_header(count);
    for _ in 0..count {
        out.push(0x92);
        out.extend_from_slice(&str8(key));
        out.extend_from_slice(&bin(value));
    }
    out
}

#[test]
fn a_message_may_carry_100_headers_with_keys_of_256_bytes_and_not_more() {
    let key = "k".repeat(MAX_HEADER_KEY_BYTES);
    let frame = append_with_headers(headers_of(MAX_MESSAGE_HEADERS, key.as_bytes(), b"x"), &[]);
    match decode_request(&frame) {
        Ok(Request::Append(Append { messages, .. })) => {
            assert_eq!(messages[0].headers.len(), MAX_MESSAGE_HEADERS);
            assert_eq!(messages[0].headers[0], Header { key: &key, value: Some(b"x") });
        }
        other => panic!("expected an append, got {other:?}"),
    }
    let too_many = append_with_headers(headers_of(MAX_MESSAGE_HEADERS + 1, b"k", b""), &[]);
    let reason = refused(&too_many, ErrorCode::LimitExceeded);
    assert!(reason.contains("101 items") && reason.contains("headers"), "{reason}");
    let long = format!("{key}k");
    let too_long = append_with_headers(headers_of(1, long.as_bytes(), b""), &[]);
    let reason = refused(&too_long, ErrorCode::LimitExceeded);
    assert!(reason.contains("257 bytes") && reason.contains("header key"), "{reason}");
    // The whole body is checked before the limits: a malformed field after them is malformed.
    let then_malformed = append_with_headers(
        headers_of(MAX_MESSAGE_HEADERS + 1, b"k", b""),
        &[(k("partition"), str8(b"zero"))],
    );
    refused(&then_malformed, ErrorCode::Malformed);
}

#[test]
fn headers_of_the_wrong_shape_or_types_are_malformed() {
    let nil_value = {
        let mut out = array_header(2);
        out.extend_from_slice(b"\x92\xa1a\xc0");
        // A key sent as `bin` of UTF-8 and a value as `str` are taken, as for keys and values.
        out.extend_from_slice(b"\x92\xc4\x01b\xa1v");
        out
    };
    match decode_request(&append_with_headers(nil_value, &[])) {
        Ok(Request::Append(Append { messages, .. })) => assert_eq!(
            messages[0].headers,
            [Header { key: "a", value: None }, Header { key: "b", value: Some(b"v") }]
        ),
        other => panic!("expected an append, got {other:?}"),
    }
    let shapes: [&[u8]; 7] = [
        b"\xa1x",                 // not an array
        b"\x91\xa1x",             // an item that is a string, not a pair
        b"\x91\x91\xa1k",         // a pair of one
        b"\x91\x93\xa1k\xc0\xc0", // a pair of three
        b"\x91\x92\x05\xc4\x00",  // a key that is a number
        b"\x91\x92\xc0\xc4\x00",  // a null key
        b"\x91\x92\xa1k\x05",     // a value that is a number
    ];
    for shape in shapes {
        refused(&append_with_headers(shape.to_vec(), &[]), ErrorCode::Malformed);
    }
    let not_utf8 = b"\x91\x92\xc4\x01\xff\xc4\x00".to_vec();
    refused(&append_with_headers(not_utf8, &[]), ErrorCode::Malformed);
    // Sent twice in one message: malformed, as any key twice.
    let message =
        map(&[(k("value"), bin(b"v")), (k("headers"), vec![0x90]), (k("headers"), vec![0x90])]);
    let mut messages = array_header(1);
    messages.extend_from_slice(&message);
    let frame = map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"append")),
        (k("topic"), str8(b"t")),
        (k("messages"), messages),
    ]);
    refused(&frame, ErrorCode::Malformed);
}

/// An ack of `count` offsets.
fn ack_of(count: usize) -> Vec<u8> {
    let mut offsets = array_header(count);
    offsets.extend(std::iter::repeat_n(0x05, count));
    map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"ack")),
        (k("group"), str8(b"g")),
        (k("topic"), str8(b"t")),
        (k("offsets"), offsets),
    ])
}

#[test]
fn an_ack_may_carry_100000_offsets_and_not_one_more() {
    match decode_request(&ack_of(MAX_ACK_OFFSETS)) {
        Ok(Request::Ack { offsets, .. }) => assert_eq!(offsets, vec![5; MAX_ACK_OFFSETS]),
        other => panic!("expected an ack, got {other:?}"),
    }
    let reason = refused(&ack_of(MAX_ACK_OFFSETS + 1), ErrorCode::LimitExceeded);
    assert!(reason.contains("100001") && reason.contains("offsets"), "{reason}");
}

#[test]
fn a_list_too_long_in_a_frame_of_another_version_is_unsupported_version() {
    let mut frame = ack_of(MAX_ACK_OFFSETS + 1);
    // The `v` value is the fourth byte: 0x85, 0xa1 'v', then the version.
    assert_eq!(frame[3], 1);
    frame[3] = 2;
    assert_eq!(decode_request(&frame), Err(DecodeError::UnsupportedVersion(2)));
}

/// `{"v": 1, "op": "status"}` with `unknown` keys more, each with a nil value.
fn status_with_unknown_keys(unknown: usize) -> Vec<u8> {
    let mut entries = vec![(k("v"), vec![1]), (k("op"), str8(b"status"))];
    entries.extend((0..unknown).map(|i| (k(&format!("x{i}")), vec![0xc0])));
    map(&entries)
}

#[test]
fn a_map_may_have_64_entries_and_not_one_more() {
    assert_eq!(decode_request(&status_with_unknown_keys(MAX_MAP_ENTRIES - 2)), Ok(Request::Status));
    let reason = refused(&status_with_unknown_keys(MAX_MAP_ENTRIES - 1), ErrorCode::Malformed);
    assert!(reason.contains("65 entries"), "{reason}");
    // A message record too.
    let mut record = map_header(MAX_MAP_ENTRIES + 1);
    record.extend_from_slice(b"\xa5value\xa0");
    for i in 0..MAX_MAP_ENTRIES {
        record.extend(k(&format!("x{i}")));
        record.push(0xc0);
    }
    let mut messages = array_header(1);
    messages.extend(record);
    let frame = map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"append")),
        (k("topic"), str8(b"t")),
        (k("messages"), messages),
    ]);
    refused(&frame, ErrorCode::Malformed);
}

#[test]
fn an_unknown_key_twice_is_malformed_in_the_body_and_in_a_message() {
    let twice = map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"status")),
        (k("later"), vec![1]),
        (k("other"), vec![1]),
        (k("later"), vec![2]),
    ]);
    let reason = refused(&twice, ErrorCode::Malformed);
    assert!(reason.contains("\"later\" appears twice"), "{reason}");
    // The same key once as a string and once as a byte string is the same key.
    let mixed = map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"status")),
        (k("x"), vec![1]),
        (bin(b"x"), vec![2]),
    ]);
    refused(&mixed, ErrorCode::Malformed);
    // Two different unknown keys are fine.
    let two =
        map(&[(k("v"), vec![1]), (k("op"), str8(b"status")), (k("x"), vec![1]), (k("y"), vec![2])]);
    assert_eq!(decode_request(&two), Ok(Request::Status));

    let append = |record: &[u8]| {
        let mut messages = array_header(1);
        messages.extend_from_slice(record);
        map(&[
            (k("v"), vec![1]),
            (k("op"), str8(b"append")),
            (k("topic"), str8(b"t")),
            (k("messages"), messages),
        ])
    };
    // {"value": "a", "x": 1, "x": 2}
    let reason = refused(&append(b"\x83\xa5value\xa1a\xa1x\x01\xa1x\x02"), ErrorCode::Malformed);
    assert!(reason.contains("a message") && reason.contains("twice"), "{reason}");
    // {"value": "a", "x": 1, "y": 2}
    assert_eq!(
        decode_request(&append(b"\x83\xa5value\xa1a\xa1x\x01\xa1y\x02")),
        Ok(Request::Append(Append {
            sequenced: None,
            topic: "t",
            partition: None,
            messages: vec![NewMessage::new(None, b"a")]
        }))
    );
}

#[test]
fn an_unknown_key_that_is_not_utf8_is_malformed() {
    for key in [bin(b"\xff\xfe"), str8(b"\xc3\x28")] {
        let frame = map(&[(k("v"), vec![1]), (k("op"), str8(b"status")), (key.clone(), vec![1])]);
        let reason = refused(&frame, ErrorCode::Malformed);
        assert!(reason.contains("UTF-8"), "{reason}");
        let mut messages = array_header(1);
        messages.extend_from_slice(b"\x82\xa5value\xa1a");
        messages.extend_from_slice(&key);
        messages.push(1);
        let frame = map(&[
            (k("v"), vec![1]),
            (k("op"), str8(b"append")),
            (k("topic"), str8(b"t")),
            (k("messages"), messages),
        ]);
        refused(&frame, ErrorCode::Malformed);
    }
}

#[test]
fn replies_follow_the_same_map_rules() {
    // {"v": 1, "code": 200, "reply": "released", "broker": 1, "x": 1, "x": 1}
    let frame =
        b"\x86\xa1v\x01\xa4code\xcc\xc8\xa5reply\xa8released\xa6broker\x01\xa1x\x01\xa1x\x01";
    assert!(
        matches!(decode_response(frame), Err(DecodeError::Malformed(m)) if m.contains("twice"))
    );
    // The same with `y` in place of the second `x`.
    let frame =
        b"\x86\xa1v\x01\xa4code\xcc\xc8\xa5reply\xa8released\xa6broker\x01\xa1x\x01\xa1y\x01";
    assert_eq!(decode_response(frame), Ok(Response::Released { broker: 1 }));
}

#[test]
fn refusals_quote_at_most_a_few_bytes_of_what_was_sent() {
    let long = vec![b'z'; 60_000];
    let frame = map(&[(k("v"), vec![1]), (k("op"), str8(&long))]);
    assert!(refused(&frame, ErrorCode::UnknownRequest).len() < 200);
    let frame = map(&[
        (k("v"), vec![1]),
        (k("op"), str8(b"reset_group")),
        (k("group"), str8(b"g")),
        (k("topic"), str8(b"t")),
        (k("to"), str8(&long)),
    ]);
    assert!(refused(&frame, ErrorCode::Malformed).len() < 200);
}
