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
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", b"\x00\x00\x00\x05hello".to_vec()),
        ("a 2 GB size prefix", vec![0x7f, 0xff, 0xff, 0xff, 0, 18]),
        ("a negative size prefix", vec![0xff, 0xff, 0xff, 0xff]),
        ("an unknown API key", vec![0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]),
        // JoinGroup (11), which this door does not list in ApiVersions.
        ("an API left out of ApiVersions", vec![0, 0, 0, 10, 0, 11, 0, 0, 0, 0, 0, 1, 0xff, 0xff]),
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
        "unknown API key 11",
        "does not decode",
    ] {
        assert!(log.contains(needle), "no log line with {needle:?} in:\n{log}");
    }
}

#[test]
fn fetch_at_the_end_waits_for_max_wait_ms_then_answers_empty() {
    // kcat -C without -e long-polls; a message produced natively meanwhile reaches it.
    let door = Door::start(&[]);
    let mut kcat = std::process::Command::new("kcat");
    kcat.args(["-C", "-b", &door.bootstrap(), "-t", "later", "-c", "1", "-f", "%s\n"]);
    kcat.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut child = kcat.spawn().expect("start kcat");
    let mut produce = std::process::Command::new(common::binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "later", "hello"]);
    common::success(&common::run(produce, ""), "producer");
    let status = testkit::wait_child(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut out = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut out).expect("read");
    assert_eq!(out, "hello\n");
    door.stop();
}
