//! The durable log at scale, against the real broker binary: what stays in memory, what a
//! restart reads, and the files it keeps (format headers, index files, an older broker's data
//! directory).

mod wire;

use std::fs;
use std::path::{Path, PathBuf};

use protocol::{Append, NewMessage, Request, Response};
use testkit::BrokerProcess;
use wire::{ask, claim, fetch, fetch_from};

/// Bytes of each value the tests append.
const VALUE_BYTES: usize = 1000;

/// Messages per append request.
const BATCH: usize = 1000;

/// Bytes of each segment in the tests that write many: 1 MiB.
const SEGMENT: &str = "1048576";

/// Starts the broker on `data_dir` with `args` besides `--data-dir`.
fn start_on(data_dir: &Path, args: &[&str]) -> BrokerProcess {
    let dir = data_dir.to_str().expect("a temporary directory with a UTF-8 path");
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    wire::start(&all)
}

/// Appends batches `batches` of [`BATCH`] values of [`VALUE_BYTES`] bytes to `topic`, each
/// value starting with its offset (the topic holding batches `0..batches.start` already).
fn fill(socket: &zmq::Socket, topic: &str, batches: std::ops::Range<usize>) {
    for b in batches {
        let values: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                let mut value = format!("{:010}", b * BATCH + i).into_bytes();
                value.resize(VALUE_BYTES, b'.');
                value
            })
            .collect();
        let messages: Vec<NewMessage<'_>> =
            values.iter().map(|v| NewMessage::new(None, v)).collect();
        let reply = ask(
            socket,
            &Request::Append(Append { partition: None, topic, messages, sequenced: None }),
        );
        assert!(matches!(reply, Response::Appended { .. }), "{reply:?}");
    }
}

/// Reads `topic` from offset 0 to its end and checks each value holds its offset.
fn read_back(socket: &zmq::Socket, token: u64, topic: &str) -> u64 {
    let mut offset = 0;
    loop {
        let fetched = fetch(socket, fetch_from(token, topic, offset));
        for message in &fetched.messages {
            assert_eq!(message.offset, offset);
            assert_eq!(&message.value[..10], format!("{offset:010}").as_bytes());
            offset += 1;
        }
        if fetched.next_offset >= fetched.end_offset {
            return offset;
        }
    }
}

/// A line of `/proc/PID/status` in kB, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the broker's status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().expect("a number of kB");
    kb * 1024
}

/// The bytes of segment data the broker's start-up line says it read and checked.
fn checked_bytes(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("opened ") && l.contains("read and checked"))
        .unwrap_or_else(|| panic!("no start-up line in:\n{stderr}"));
    let after = line.split("read and checked ").nth(1).unwrap_or_default();
    after.split(' ').next().and_then(|n| n.parse().ok()).expect("a number of bytes")
}

/// The topic directory of the only topic in `data_dir`.
fn only_topic_dir(data_dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(data_dir.join("topics"))
        .expect("a topics directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    let [dir] = <[PathBuf; 1]>::try_from(dirs).expect("one topic directory");
    dir
}

/// The files of `dir` with `extension`, sorted.
fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("a topic directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn with_a_data_dir_the_broker_keeps_only_the_newest_segment_in_memory() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT, "--fsync", "never"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    // Warm up the allocator and the sockets before the baseline.
    fill(&socket, "warm", 0..2);
    let before = status_bytes(broker.pid(), "RssAnon");
    let resident_before = status_bytes(broker.pid(), "VmRSS");
    // 64 MB of values: in memory they would all be resident.
    let batches = 64;
    fill(&socket, "log", 0..batches);
    let written = status_bytes(broker.pid(), "RssAnon");
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(read_back(&socket, token, "log"), (batches * BATCH) as u64);
    let read = status_bytes(broker.pid(), "RssAnon");
    let log = (batches * BATCH * VALUE_BYTES) as u64;
    // The pages of the files read are let go once the reader has moved past them: they are in
    // the page cache, not in the broker's resident set.
    let resident = status_bytes(broker.pid(), "VmRSS");
    let grown = resident.saturating_sub(resident_before);
    assert!(grown < log / 4, "VmRSS grew by {grown} bytes after reading a log of {log} bytes");
    for (when, after) in [("writing", written), ("reading", read)] {
        let grown = after.saturating_sub(before);
        assert!(
            grown < log / 4,
            "the broker's own memory grew by {grown} bytes after {when} a log of {log} bytes"
        );
    }
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_restart_reads_only_each_topics_newest_segment_and_every_message_is_there() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    fill(&socket, "log", 0..8);
    drop(socket);
    broker.interrupt();

    let dir = only_topic_dir(data.path());
    let segments = files_with(&dir, "log");
    assert!(segments.len() >= 7, "{segments:?}");
    let newest = fs::metadata(segments.last().expect("a segment")).expect("its size").len();
    for segment in &segments {
        let bytes = fs::read(segment).expect("a segment");
        assert_eq!(&bytes[..8], b"BRKLOG\x03\x00", "{} has no format header", segment.display());
    }
    for index in files_with(&dir, "idx") {
        assert_eq!(&fs::read(&index).expect("an index")[..8], b"BRKIDX\x02\x00");
    }
    assert_eq!(files_with(&dir, "idx").len(), segments.len() - 1);

    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(read_back(&socket, token, "log"), (8 * BATCH) as u64);
    drop(socket);
    let stderr = broker.interrupt();
    assert_eq!(checked_bytes(&stderr), newest, "{stderr}");
}

#[test]
fn a_damaged_index_is_rebuilt_from_its_segment() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    fill(&socket, "log", 0..4);
    drop(socket);
    broker.interrupt();

    let dir = only_topic_dir(data.path());
    let index = files_with(&dir, "idx").remove(0);
    let good = fs::read(&index).expect("an index");
    let mut bad = good.clone();
    bad[20] ^= 0xff;
    fs::write(&index, &bad).expect("damage the index");

    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(read_back(&socket, token, "log"), (4 * BATCH) as u64);
    drop(socket);
    let stderr = broker.interrupt();
    // Start-up did not read it: the first read of its segment found it damaged.
    assert!(stderr.contains("it fails its checksum; checked the segment instead"), "{stderr}");
    assert_eq!(fs::read(&index).expect("the index"), good, "the index was not written anew");
    let segments = files_with(&dir, "log");
    let newest = fs::metadata(segments.last().expect("a segment")).expect("a size").len();
    assert_eq!(checked_bytes(&stderr), newest);
}

#[test]
fn a_data_directory_written_before_format_headers_and_indexes_opens_and_says_so() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    fill(&socket, "log", 0..3);
    drop(socket);
    broker.interrupt();

    // As the broker wrote it before: segments of records alone, no index files.
    let dir = only_topic_dir(data.path());
    for index in files_with(&dir, "idx") {
        fs::remove_file(index).expect("remove an index");
    }
    let segments = files_with(&dir, "log");
    for file in &segments {
        let bytes = fs::read(file).expect("a file");
        fs::write(file, as_records(&bytes)).expect("write it as before");
    }
    let meta = dir.join("topic.meta");
    let bytes = fs::read(&meta).expect("a file");
    fs::write(&meta, &bytes[8..]).expect("write it as before");

    let broker = start_on(data.path(), &["--segment-bytes", SEGMENT]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(read_back(&socket, token, "log"), (3 * BATCH) as u64);
    fill(&socket, "log", 3..4);
    assert_eq!(read_back(&socket, token, "log"), (4 * BATCH) as u64);
    drop(socket);
    let stderr = broker.interrupt();
    let said = format!("{} segment files have no format header", segments.len());
    assert!(stderr.contains(&said), "no {said:?} in:\n{stderr}");
    assert!(stderr.contains("and indexed them"), "{stderr}");
    assert!(stderr.contains("1 topic.meta files have no format header"), "{stderr}");
    assert_eq!(files_with(&dir, "idx").len(), files_with(&dir, "log").len() - 1);
}

/// The messages of a segment file of format 3 (header, then batches, here without record
/// headers) as records of format 0, as a broker before format headers and batches wrote them:
/// `body_len crc timestamp key_len key value`, a record a message, no file header.
fn as_records(segment: &[u8]) -> Vec<u8> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let varint = |b: &[u8], at: &mut usize| {
        let mut n = 0u64;
        for shift in (0..).step_by(7) {
            let byte = b[*at];
            *at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return n as usize;
            }
        }
        unreachable!()
    };
    assert_eq!(&segment[..8], b"BRKLOG\x03\x00", "a segment of format 3");
    let mut records = Vec::new();
    let mut at = 8;
    while at < segment.len() {
        let body = &segment[at + 8..at + 8 + u32_at(segment, at) as usize];
        at += 8 + body.len();
        let timestamp = &body[12..20];
        assert_eq!(body[20], 0, "a batch without headers");
        let mut entry = 21;
        for _ in 0..u32_at(body, 8) {
            let key = varint(body, &mut entry);
            let value_len = varint(body, &mut entry);
            let key_len = key.saturating_sub(1);
            let mut record = timestamp.to_vec();
            let tag = if key == 0 { u32::MAX } else { key_len as u32 };
            record.extend_from_slice(&tag.to_le_bytes());
            record.extend_from_slice(&body[entry..entry + key_len + value_len]);
            entry += key_len + value_len;
            records.extend_from_slice(&(record.len() as u32).to_le_bytes());
            records.extend_from_slice(&crc32c::crc32c(&record).to_le_bytes());
            records.extend_from_slice(&record);
        }
    }
    records
}

/// Appends 100 values of [`VALUE_BYTES`] bytes to `topic` in one request; the reply.
fn append_hundred(socket: &zmq::Socket, topic: &str) -> Response<'static> {
    let value = vec![b'v'; VALUE_BYTES];
    let messages = vec![NewMessage::new(None, &value); 100];
    ask(socket, &Request::Append(Append { partition: None, topic, messages, sequenced: None }))
}

/// The next offset of `topic` as `list_topics` shows it.
fn next_offset(socket: &zmq::Socket, token: u64, topic: &str) -> (u64, u64) {
    let info = wire::topics(socket, token)
        .into_iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("no topic {topic:?}"));
    (info.first_offset, info.next_offset)
}

/// Under a ceiling of `args`, a second batch of 100 KB does not fit: it is refused with
/// `313 storage_full`, and nothing of it is appended.
fn a_full_store_refuses_and_changes_nothing(broker: &BrokerProcess) {
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    assert!(matches!(append_hundred(&socket, "t"), Response::Appended { .. }));
    let refused = append_hundred(&socket, "t");
    assert!(wire::expect_error(&refused, protocol::ErrorCode::StorageFull).is_none());
    let Response::Error { reason, .. } = &refused else { unreachable!() };
    assert!(reason.contains("the store is full"), "{reason}");
    // Nor does a new topic get made by a refused append.
    let refused = append_hundred(&socket, "other");
    assert!(wire::expect_error(&refused, protocol::ErrorCode::StorageFull).is_none());
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(next_offset(&socket, token, "t"), (0, 100));
    assert_eq!(wire::topics(&socket, token).len(), 1);
}

#[test]
fn max_memory_refuses_appends_over_it_with_storage_full() {
    let broker = wire::start(&["--max-memory", "150000"]);
    a_full_store_refuses_and_changes_nothing(&broker);
    broker.interrupt();
}

#[test]
fn max_disk_refuses_appends_over_it_with_storage_full() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &["--max-disk", "150000"]);
    a_full_store_refuses_and_changes_nothing(&broker);
    broker.interrupt();
    let dir = only_topic_dir(data.path());
    let on_disk: u64 =
        files_with(&dir, "log").iter().map(|f| fs::metadata(f).expect("a size").len()).sum();
    assert!(on_disk <= 150_000, "{on_disk} bytes of segments");
}

#[test]
fn under_a_ceiling_retention_makes_room_again() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let retention = ["--segment-bytes", "65536", "--retention-bytes", "100000"];
    let in_memory = wire::start(&[&["--max-memory", "300000"][..], &retention].concat());
    let dir = data.path().to_str().expect("a UTF-8 path");
    let on_disk =
        wire::start(&[&["--data-dir", dir, "--max-disk", "300000"][..], &retention].concat());
    for broker in [in_memory, on_disk] {
        let context = zmq::Context::new();
        let socket = broker.req(&context);
        // Ten times the ceiling, in all.
        for _ in 0..30 {
            let reply = append_hundred(&socket, "t");
            assert!(matches!(reply, Response::Appended { .. }), "{reply:?}");
        }
        let (_, token) = claim(&socket, None, "reader");
        let (first, next) = next_offset(&socket, token, "t");
        assert_eq!(next, 3000);
        assert!(first > 0, "retention removed nothing");
        drop(socket);
        broker.interrupt();
    }
}
