//! Bad input on the Kafka port closes that connection with a log line and nothing else: the
//! gateway goes on answering other connections.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Door;

/// An `ApiVersions` v0 request with correlation id 7 and no client id, size prefix included.
const API_VERSIONS_V0: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];

fn connect(door: &Door) -> TcpStream {
    let stream = TcpStream::connect(door.bootstrap()).expect("connect to the gateway");
    stream.set_read_timeout(Some(testkit::STEP)).expect("read timeout");
    stream
}

/// Sends `bytes` and waits for the gateway to close the connection without answering.
fn closed_after(door: &Door, what: &str, bytes: &[u8]) {
    let mut stream = connect(door);
    stream.write_all(bytes).expect("send");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the gateway answered {:?} to {what}", &buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the gateway neither answered nor closed for {what}: {e}"),
    }
}

/// The gateway still answers `ApiVersions` on a new connection.
fn still_answers(door: &Door) {
    let mut stream = connect(door);
    stream.write_all(&API_VERSIONS_V0).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let mut body = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut body).expect("the whole response");
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(&body[4..6], &0i16.to_be_bytes(), "error code");
}

#[test]
fn api_versions_v0_is_answered_with_the_versions_of_each_api() {
    let door = Door::start(&[]);
    still_answers(&door);
    door.stop();
}

#[test]
fn an_api_versions_above_the_ones_spoken_gets_unsupported_version_at_v0() {
    let door = Door::start(&[]);
    let mut stream = connect(&door);
    // ApiVersions v9, correlation id 5, no client id.
    stream.write_all(&[0, 0, 0, 10, 0, 18, 0, 9, 0, 0, 0, 5, 0xff, 0xff]).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let mut body = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut body).expect("the whole response");
    assert_eq!(&body[..4], &5i32.to_be_bytes());
    assert_eq!(&body[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    door.stop();
}

#[test]
fn garbage_huge_sizes_cut_frames_and_unknown_apis_close_only_their_connection() {
    let door = Door::start(&[]);
    let cases: [(&str, Vec<u8>); 6] = [
        ("garbage", b"\x00\x00\x00\x05hello".to_vec()),
        ("a 2 GB size prefix", vec![0x7f, 0xff, 0xff, 0xff, 0, 18]),
        ("a negative size prefix", vec![0xff, 0xff, 0xff, 0xff]),
        ("an unknown API key", vec![0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]),
        // DescribeAcls (29), which this door does not list in ApiVersions.
        ("an API left out of ApiVersions", vec![0, 0, 0, 10, 0, 29, 0, 0, 0, 0, 0, 1, 0xff, 0xff]),
        ("a version not listed", vec![0, 0, 0, 10, 0, 3, 0, 99, 0, 0, 0, 1, 0xff, 0xff]),
    ];
    for (what, bytes) in &cases {
        closed_after(&door, what, bytes);
        still_answers(&door);
    }
    // A request cut short: the size says 10, 3 bytes come, then the peer goes away.
    let mut cut = connect(&door);
    cut.write_all(&[0, 0, 0, 10, 0, 18, 0]).expect("send");
    drop(cut);
    // A Metadata v1 whose topic array claims two billion entries.
    let forged = [0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    closed_after(&door, "a forged array length", &forged);
    still_answers(&door);
    let log = door.stop();
    for needle in [
        "too short",
        "over the limit",
        "unknown API key 32512",
        "unknown API key 29",
        "Metadata version 99 is not supported",
        "does not decode",
    ] {
        assert!(log.contains(needle), "no log line with {needle:?} in:\n{log}");
    }
}

/// Sends a Fetch v4 of `topic` from `offset` with `max_wait_ms` and returns the records'
/// values and how long the answer took.
fn raw_fetch(
    stream: &mut TcpStream,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> (Vec<Vec<u8>>, Duration) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use kafka_protocol::records::RecordBatchDecoder;

    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = 4;
    header.correlation_id = 3;
    let mut partition = FetchPartition::default();
    partition.fetch_offset = offset;
    partition.partition_max_bytes = 1 << 20;
    let mut wanted = FetchTopic::default();
    wanted.topic = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.topics = vec![wanted];
    let mut body = bytes::BytesMut::new();
    header.encode(&mut body, 1).expect("header encodes");
    request.encode(&mut body, 4).expect("request encodes");
    let size = u32::try_from(body.len()).expect("size");
    let started = std::time::Instant::now();
    stream.write_all(&size.to_be_bytes()).expect("send");
    stream.write_all(&body).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let took = started.elapsed();
    let mut reply = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut reply).expect("the whole response");
    let mut reply = bytes::Bytes::from(reply);
    let _correlation = reply.split_to(4);
    let response = FetchResponse::decode(&mut reply, 4).expect("a Fetch v4 response");
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    let mut records = data.records.clone().unwrap_or_default();
    let values = if records.is_empty() {
        Vec::new()
    } else {
        RecordBatchDecoder::decode_all(&mut records)
            .expect("record batches")
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
            .collect()
    };
    (values, took)
}

#[test]
fn fetch_at_the_end_is_held_for_max_wait_ms_and_answered_when_a_message_comes() {
    let door = Door::start(&[]);
    let produce = |value: &str| {
        let mut produce = std::process::Command::new(common::binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", "later", value]);
        common::success(&common::run(produce, ""), "producer");
    };
    produce("first");
    let mut stream = connect(&door);

    // Nothing at offset 1: the answer waits out max_wait_ms, then comes empty.
    let (values, took) = raw_fetch(&mut stream, "later", 1, 700);
    assert!(values.is_empty(), "{values:?}");
    assert!(took >= Duration::from_millis(650), "answered after {took:?}");

    // A message appended while a fetch waits ends the wait.
    let waiter = std::thread::spawn(move || raw_fetch(&mut stream, "later", 1, 20_000));
    produce("second");
    let (values, took) = waiter.join().expect("fetch thread");
    assert_eq!(values, vec![b"second".to_vec()]);
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    door.stop();
}
