//! The store on disk (`--data-dir`) against the real broker binary: what survives a clean stop
//! and a kill, how damaged files are handled at start-up, retention, where topics live on disk,
//! deletion, a failing disk, and the disk usage the broker reports.

mod wire;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use protocol::{
    Append, ErrorCode, GroupFetch, GroupStart, Message, NewMessage, Request, Response, Retention,
    TopicInfo,
};
use serde::Deserialize;
use testkit::{BrokerProcess, STEP};

use wire::{
    append, append_of, ask, claim, expect_error, fetch, fetch_from, status, topics, SAMPLES,
    SAMPLE_MESSAGES,
};

/// Bytes an append of one message without a key takes on disk besides its value: a batch of
/// one (length, checksum, base offset, count, timestamp, flags) and the message's two lengths.
const RECORD_FRAMING: u64 = 31;

/// Bytes a segment file begins with: its magic number and format version.
const SEGMENT_HEADER: u64 = 8;

/// The segment size the retention tests use: the header and five of their messages fill a
/// segment.
const SMALL_SEGMENT: &str = "313";

/// Bytes of each message value the retention tests append (a 61-byte batch of one).
const RETENTION_VALUE_BYTES: usize = 30;

/// How many messages of the retention tests fit one segment of [`SMALL_SEGMENT`] bytes.
const MESSAGES_PER_SEGMENT: u64 = 5;

/// Messages in each batch the loader appends.
const LOAD_BATCH: u64 = 10;

/// Bytes of each value the loader appends.
const LOAD_VALUE_BYTES: usize = 100;

/// Acknowledged batches the kill test waits for before it kills the broker.
const KILL_AFTER_BATCHES: usize = 300;

/// The most batches the loader sends, so that it stops even if nobody stops it.
const LOAD_LIMIT: u64 = 20_000;

/// How long the loader waits for one reply before it gives up.
const LOADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The loader's socket receive timeout: how often, while waiting, it looks at its stop flag.
const LOADER_TICK: Duration = Duration::from_millis(50);

/// The topic the loader appends to.
const LOAD_TOPIC: &str = "load";

/// Starts the broker on `data_dir` with `args` besides `--data-dir`.
fn start_on(data_dir: &Path, args: &[&str]) -> BrokerProcess {
    let dir = data_dir.to_str().expect("a temporary directory with a UTF-8 path");
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    wire::start(&all)
}

/// A new temporary data directory, removed when dropped.
fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Appends `messages` to `topic` in one request; returns the first and last offsets given.
#[track_caller]
fn append_batch(socket: &zmq::Socket, topic: &str, messages: &[NewMessage<'_>]) -> (u64, u64) {
    let request = Request::Append(Append {
        partition: None,
        topic,
        messages: messages.to_vec(),
        sequenced: None,
    });
    match ask(socket, &request) {
        Response::Appended { topic: got, first_offset, last_offset, .. } if got == topic => {
            (first_offset, last_offset)
        }
        other => panic!("append to {topic:?}: expected appended, got {other:?}"),
    }
}

/// Every message of `topic` from `offset` to its end, fetched under `token`.
#[track_caller]
fn read_all(socket: &zmq::Socket, token: u64, topic: &str, offset: u64) -> Vec<Message<'static>> {
    let mut messages = Vec::new();
    let mut offset = offset;
    loop {
        let fetched = fetch(socket, fetch_from(token, topic, offset));
        messages.extend(fetched.messages);
        if fetched.next_offset >= fetched.end_offset {
            return messages;
        }
        assert!(fetched.next_offset > offset, "a fetch of {topic:?} at {offset} made no progress");
        offset = fetched.next_offset;
    }
}

/// The values of `messages` as text.
fn values(messages: &[Message<'_>]) -> Vec<String> {
    messages.iter().map(|m| String::from_utf8_lossy(m.value).into_owned()).collect()
}

/// The offsets of `messages`.
fn offsets(messages: &[Message<'_>]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

/// Topic `name` as `list_topics` shows it under `token`.
#[track_caller]
fn topic_info(socket: &zmq::Socket, token: u64, name: &str) -> TopicInfo {
    topics(socket, token)
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("list_topics does not show {name:?}"))
}

/// The directories under `data_dir/topics`, sorted.
fn topic_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(data_dir.join("topics"))
        .expect("the data directory has a topics directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// What a topic directory's `topic.meta` says, as far as these tests need it.
#[derive(Debug, Deserialize)]
struct MetaName {
    /// The topic's name.
    name: String,
}

/// The topic name `dir`'s `topic.meta` holds.
fn meta_name(dir: &Path) -> String {
    let bytes = fs::read(dir.join("topic.meta"))
        .unwrap_or_else(|e| panic!("{} has no readable topic.meta: {e}", dir.display()));
    assert_eq!(
        &bytes[..8],
        b"BRKTOP\x02\x00",
        "{}'s topic.meta has no format header",
        dir.display()
    );
    let meta: MetaName = rmp_serde::from_slice(&bytes[8..])
        .unwrap_or_else(|e| panic!("{}'s topic.meta does not name a topic: {e}", dir.display()));
    meta.name
}

/// The directory of topic `name` under `data_dir`.
fn dir_of(data_dir: &Path, name: &str) -> PathBuf {
    topic_dirs(data_dir)
        .into_iter()
        .find(|dir| meta_name(dir) == name)
        .unwrap_or_else(|| panic!("no directory under {} holds {name:?}", data_dir.display()))
}

/// The segment files of a topic directory as (base offset, path), oldest first.
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("a readable topic directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            assert_eq!(stem.len(), 20, "a segment not named by a 20-digit offset: {path:?}");
            (stem.parse().expect("a segment named by its base offset"), path)
        })
        .collect();
    files.sort();
    files
}

/// The newest segment file of a topic directory.
fn newest_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("the topic has a segment file").1
}

/// Bytes of a topic directory's segment files.
fn segment_bytes(dir: &Path) -> u64 {
    segment_files(dir).iter().map(|(_, path)| file_len(path)).sum()
}

/// A file's length.
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

/// Flips one bit of the byte at `at` in the file at `path`.
fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).expect("read the segment");
    bytes[at as usize] ^= 0x01;
    fs::write(path, bytes).expect("write the segment back");
}

/// Bytes a record of `value` without a key takes on disk.
fn record_len(value: &str) -> u64 {
    RECORD_FRAMING + value.len() as u64
}

/// Value `i` of the retention tests, [`RETENTION_VALUE_BYTES`] long.
fn retention_value(i: u64) -> String {
    format!("{:.<width$}", format!("message {i:05}"), width = RETENTION_VALUE_BYTES)
}

/// Appends the retention values numbered by `offsets` to `topic`, one request each, and
/// checks that each gets its number as its offset.
fn append_one_by_one(socket: &zmq::Socket, topic: &str, offsets: std::ops::Range<u64>) {
    for i in offsets {
        assert_eq!(append(socket, topic, &[&retention_value(i)]), (i, i), "append {i}");
    }
}

/// Checks what retention left of `topic`: offsets up to `next`, a first offset above 0, a
/// fetch below it refused with the range, the kept messages intact, and no segment file below
/// the first offset left on disk. Returns the topic as listed.
#[track_caller]
fn assert_trimmed(
    socket: &zmq::Socket,
    token: u64,
    data_dir: &Path,
    topic: &str,
    next: u64,
) -> TopicInfo {
    let info = topic_info(socket, token, topic);
    assert!(info.first_offset > 0, "nothing was removed: {info:?}");
    assert_eq!(info.next_offset, next, "{info:?}");
    assert_eq!(info.messages, info.next_offset - info.first_offset, "{info:?}");

    let refused = ask(socket, &Request::Fetch(fetch_from(token, topic, 0)));
    let range = expect_error(&refused, ErrorCode::OffsetOutOfRange);
    assert_eq!(range, Some((info.first_offset, next)), "{refused:?}");

    let kept = read_all(socket, token, topic, info.first_offset);
    assert_eq!(offsets(&kept), (info.first_offset..next).collect::<Vec<_>>());
    let expected: Vec<String> = (info.first_offset..next).map(retention_value).collect();
    assert_eq!(values(&kept), expected);

    let dir = dir_of(data_dir, topic);
    let files = segment_files(&dir);
    assert_eq!(files.first().map(|(base, _)| *base), Some(info.first_offset), "{files:?}");
    assert_eq!(info.disk_bytes, Some(segment_bytes(&dir)), "{info:?}");
    info
}

#[test]
fn a_clean_restart_keeps_every_message_with_its_offset_key_value_and_timestamp() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);

    let every_byte: Vec<u8> = (0..=255).collect();
    let big = vec![0xa5; 5000];
    let numbered: Vec<(String, String)> =
        (0..5).map(|i| (format!("user-{i}"), format!("order {i}"))).collect();
    let first_batch = [
        NewMessage::new(Some(&b"k1"[..]), b"first"),
        NewMessage::new(None, &every_byte),
        NewMessage::new(Some(&b""[..]), b""),
    ];
    let second_batch: Vec<NewMessage<'_>> =
        numbered.iter().map(|(k, v)| NewMessage::new(Some(k.as_bytes()), v.as_bytes())).collect();
    let other_batch = [
        NewMessage::new(Some(&[0, 255, b'\n', 0][..]), &big),
        NewMessage::new(Some(&every_byte), b"\x00\xff\r\n"),
    ];
    let last_batch = [NewMessage::new(None, "último €".as_bytes())];

    assert_eq!(append_batch(&socket, "orders", &first_batch), (0, 2));
    assert_eq!(append_batch(&socket, "Hola mundo", &other_batch), (0, 1));
    assert_eq!(append_batch(&socket, "orders", &second_batch), (3, 7));
    assert_eq!(append_batch(&socket, "orders", &last_batch), (8, 8));

    let (_, token) = claim(&socket, None, "before");
    let orders = read_all(&socket, token, "orders", 0);
    let hola = read_all(&socket, token, "Hola mundo", 0);
    let listed = topics(&socket, token);

    // What was read is what was appended, before any restart.
    let sent: Vec<(Option<&[u8]>, &[u8])> = first_batch
        .iter()
        .chain(&second_batch)
        .chain(&last_batch)
        .map(|m| (m.key, m.value))
        .collect();
    let got: Vec<(Option<&[u8]>, &[u8])> = orders.iter().map(|m| (m.key, m.value)).collect();
    assert_eq!(got, sent);
    assert_eq!(offsets(&orders), (0..9).collect::<Vec<_>>());
    let got: Vec<(Option<&[u8]>, &[u8])> = hola.iter().map(|m| (m.key, m.value)).collect();
    assert_eq!(got, other_batch.iter().map(|m| (m.key, m.value)).collect::<Vec<_>>());
    assert!(orders.iter().chain(&hola).all(|m| m.timestamp > 0), "{orders:?}");
    drop(socket);
    broker.interrupt();

    let broker = start_on(data.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "after");
    assert_eq!(read_all(&socket, token, "orders", 0), orders);
    assert_eq!(read_all(&socket, token, "Hola mundo", 0), hola);
    assert_eq!(topics(&socket, token), listed);

    // Offsets go on from where they were.
    assert_eq!(append(&socket, "orders", &["after the restart"]), (9, 9));
    assert_eq!(append(&socket, "Hola mundo", &["después"]), (2, 2));
    broker.interrupt();
}

#[test]
fn preload_on_a_data_dir_that_has_the_sample_topics_adds_nothing() {
    let data = data_dir();
    let context = zmq::Context::new();
    let mut seen = Vec::new();
    for run in ["first", "second"] {
        let broker = start_on(data.path(), &["--preload"]);
        let socket = broker.req(&context);
        let (_, token) = claim(&socket, None, run);
        let listed = topics(&socket, token);
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, SAMPLES.map(|(name, _)| name), "{run} run");
        let mut messages = Vec::new();
        for ((name, word), info) in SAMPLES.iter().zip(&listed) {
            assert_eq!(
                (info.first_offset, info.next_offset, info.messages),
                (0, SAMPLE_MESSAGES, SAMPLE_MESSAGES),
                "{run} run: {info:?}"
            );
            let read = read_all(&socket, token, name, 0);
            let expected: Vec<String> =
                (1..=SAMPLE_MESSAGES).map(|i| format!("{word} {i}")).collect();
            assert_eq!(values(&read), expected, "{run} run");
            messages.push(read);
        }
        seen.push(messages);
        drop(socket);
        broker.interrupt();
    }
    // The second run served the first run's messages, timestamps and all.
    assert_eq!(seen[0], seen[1]);
}

/// Value `index` of batch `batch` as the loader appends it: distinct for every message.
fn load_value(batch: u64, index: u64) -> Vec<u8> {
    let mut value = format!("batch {batch:06} message {index:02} ").into_bytes();
    let seed = batch.wrapping_mul(31).wrapping_add(index);
    while value.len() < LOAD_VALUE_BYTES {
        value.push(b'a' + ((seed + value.len() as u64) % 26) as u8);
    }
    value
}

/// The key of every message of batch `batch` as the loader appends it.
fn load_key(batch: u64) -> [u8; 8] {
    batch.to_be_bytes()
}

/// One batch the broker acknowledged to the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    /// The loader's number for the batch, from 0.
    batch: u64,
    /// The offset given to its first message.
    first_offset: u64,
    /// The offset given to its last message.
    last_offset: u64,
}

/// Starts a thread that appends batches to [`LOAD_TOPIC`] on its own REQ socket, one after the
/// other as fast as the broker acknowledges them, and sends each acknowledgement on `acks`.
/// It stops at `stop`, at the first error, when a reply takes longer than [`LOADER_TIMEOUT`],
/// or after [`LOAD_LIMIT`] batches, and returns why it stopped.
fn spawn_loader(
    endpoint: String,
    stop: Arc<AtomicBool>,
    acks: mpsc::Sender<Acked>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).expect("REQ socket");
        socket.set_linger(0).expect("linger");
        socket.set_rcvtimeo(LOADER_TICK.as_millis() as i32).expect("rcvtimeo");
        socket.set_sndtimeo(LOADER_TIMEOUT.as_millis() as i32).expect("sndtimeo");
        socket.connect(&endpoint).expect("connect");
        let mut frame = Vec::new();
        for batch in 0..LOAD_LIMIT {
            if stop.load(Ordering::SeqCst) {
                return format!("stopped after {batch} batches");
            }
            let key = load_key(batch);
            let values: Vec<Vec<u8>> = (0..LOAD_BATCH).map(|i| load_value(batch, i)).collect();
            let messages = values.iter().map(|v| NewMessage::new(Some(&key[..]), v)).collect();
            frame.clear();
            let request = Request::Append(Append {
                partition: None,
                topic: LOAD_TOPIC,
                messages,
                sequenced: None,
            });
            protocol::encode_request(&request, &mut frame);
            if let Err(e) = socket.send(&frame[..], 0) {
                return format!("batch {batch}: send failed: {e}");
            }
            let sent = Instant::now();
            let reply = loop {
                match socket.recv_bytes(0) {
                    Ok(reply) => break reply,
                    Err(zmq::Error::EAGAIN)
                        if sent.elapsed() < LOADER_TIMEOUT && !stop.load(Ordering::SeqCst) => {}
                    Err(e) => return format!("batch {batch}: no reply: {e}"),
                }
            };
            match protocol::decode_response(&reply) {
                Ok(Response::Appended { first_offset, last_offset, .. }) => {
                    if acks.send(Acked { batch, first_offset, last_offset }).is_err() {
                        return format!("batch {batch}: nobody takes acknowledgements");
                    }
                }
                other => return format!("batch {batch}: unexpected reply {other:?}"),
            }
        }
        format!("sent all {LOAD_LIMIT} batches")
    })
}

/// Loads the broker under `--fsync <fsync>`, kills it with SIGKILL once enough batches are
/// acknowledged, restarts it on the same directory, and checks that every acknowledged message
/// is there as acknowledged, with no gap and no duplicate.
fn acknowledged_appends_survive_a_kill(fsync: &str, args: &[&str]) {
    let data = data_dir();
    let broker = start_on(data.path(), &[&["--fsync", fsync][..], args].concat());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let loader = spawn_loader(broker.endpoint.clone(), Arc::clone(&stop), tx);

    let mut acked = Vec::new();
    let deadline = Instant::now() + STEP;
    while acked.len() < KILL_AFTER_BATCHES {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ack) => acked.push(ack),
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                let why = loader.join().unwrap_or_else(|_| "the loader panicked".into());
                panic!("only {} batches acknowledged ({error}); loader: {why}", acked.len());
            }
        }
    }
    broker.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    let (status, _) = broker.wait_exit(STEP);
    assert_eq!(status.signal(), Some(9), "the broker was not killed: {status}");
    let why = loader.join().expect("the loader does not panic");
    // Every acknowledgement the loader got, including those after the count was reached.
    acked.extend(rx.try_iter());
    for (i, ack) in acked.iter().enumerate() {
        let i = i as u64;
        let expected = Acked {
            batch: i,
            first_offset: i * LOAD_BATCH,
            last_offset: i * LOAD_BATCH + LOAD_BATCH - 1,
        };
        assert_eq!(*ack, expected, "acknowledgements out of order");
    }

    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "after the kill");
    let recovered = read_all(&socket, token, LOAD_TOPIC, 0);
    let acknowledged = acked.len() as u64 * LOAD_BATCH;
    let count = recovered.len() as u64;
    // The batch in flight at the kill may have been written, whole or in part, but not
    // acknowledged; anything more would be messages nobody sent.
    assert!(
        (acknowledged..=acknowledged + LOAD_BATCH).contains(&count),
        "{count} messages recovered, {acknowledged} acknowledged (loader: {why})"
    );
    for (at, message) in recovered.iter().enumerate() {
        let at = at as u64;
        let (batch, index) = (at / LOAD_BATCH, at % LOAD_BATCH);
        assert_eq!(message.offset, at, "a gap or a duplicate");
        assert_eq!(message.key, Some(&load_key(batch)[..]), "key at offset {at}");
        assert!(message.value == load_value(batch, index), "value at offset {at}");
    }
    let info = topic_info(&socket, token, LOAD_TOPIC);
    assert_eq!((info.first_offset, info.next_offset, info.messages), (0, count, count), "{info:?}");

    assert_eq!(append(&socket, LOAD_TOPIC, &["after the kill"]), (count, count));
    let tail = read_all(&socket, token, LOAD_TOPIC, count);
    assert_eq!(values(&tail), ["after the kill"]);
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_kill_loses_no_acknowledged_append_with_fsync_always() {
    acknowledged_appends_survive_a_kill("always", &[]);
}

#[test]
fn a_kill_loses_no_acknowledged_append_with_fsync_never() {
    acknowledged_appends_survive_a_kill("never", &[]);
}

/// Segments of 4 KiB: about every third batch of the loader seals a segment and writes its
/// index, so the kill lands among seals and index writes (and sometimes in one).
const SEALING_SEGMENT: &str = "4096";

#[test]
fn a_kill_among_segment_seals_and_index_writes_loses_no_acknowledged_append() {
    acknowledged_appends_survive_a_kill("always", &["--segment-bytes", SEALING_SEGMENT]);
    acknowledged_appends_survive_a_kill("never", &["--segment-bytes", SEALING_SEGMENT]);
}

/// Starts a thread that appends one message to each of the topics `new-0`, `new-1`, ... in
/// turn, each append creating its topic (or, when `explicit`, creates each with
/// `create_topic`), and sends the number of each acknowledged one on `acks`, until `stop` or
/// the first error or silence.
fn spawn_creator(endpoint: String, stop: Arc<AtomicBool>, acks: mpsc::Sender<u64>, explicit: bool) {
    thread::spawn(move || {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).expect("REQ socket");
        socket.set_linger(0).expect("linger");
        socket.set_rcvtimeo(LOADER_TIMEOUT.as_millis() as i32).expect("rcvtimeo");
        socket.connect(&endpoint).expect("connect");
        let mut frame = Vec::new();
        for n in 0..LOAD_LIMIT {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let topic = format!("new-{n}");
            let messages = vec![NewMessage::new(None, topic.as_bytes())];
            frame.clear();
            let request = match explicit {
                true => Request::CreateTopic {
                    topic: &topic,
                    partitions: Some(1),
                    retention: Retention::default(),
                },
                false => Request::Append(Append {
                    partition: None,
                    topic: &topic,
                    messages,
                    sequenced: None,
                }),
            };
            protocol::encode_request(&request, &mut frame);
            let replied = socket.send(&frame[..], 0).and_then(|()| socket.recv_bytes(0));
            match replied.map(|reply| match protocol::decode_response(&reply) {
                Ok(Response::Appended { .. }) => !explicit,
                Ok(Response::Created { .. }) => explicit,
                _ => false,
            }) {
                Ok(true) if acks.send(n).is_ok() => {}
                _ => return,
            }
        }
    });
}

#[test]
fn a_kill_while_appends_create_topics_keeps_every_acknowledged_one_and_clears_the_rest() {
    let data = data_dir();
    let broker = start_on(data.path(), &["--fsync", "always"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    spawn_creator(broker.endpoint.clone(), Arc::clone(&stop), tx, false);
    let mut acked = Vec::new();
    while acked.len() < 200 {
        acked.push(rx.recv_timeout(STEP).expect("topics are created"));
    }
    broker.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    broker.wait_exit(STEP);
    acked.extend(rx.try_iter());

    // Start-up clears what the append in flight left, and refuses nothing.
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "after the kill");
    let topics = topics(&socket, token);
    let next = acked.len() as u64;
    for n in 0..next {
        let topic = format!("new-{n}");
        assert_eq!(values(&read_all(&socket, token, &topic, 0)), [topic], "an acknowledged topic");
    }
    // Beyond them, at most the append in flight at the kill.
    assert!(topics.len() as u64 <= next + 1, "{} topics, {next} acknowledged", topics.len());
    assert!(topics.iter().all(|t| t.messages <= 1), "{topics:?}");
    drop(socket);
    broker.interrupt();
}

/// `create_topic` under `--fsync always` does not flush on the serving thread: its `created`
/// waits for the flush thread's commit, so a kill right after it loses no created topic.
#[test]
fn a_kill_right_after_created_keeps_every_topic_created_explicitly() {
    let data = data_dir();
    let broker = start_on(data.path(), &["--fsync", "always"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    spawn_creator(broker.endpoint.clone(), Arc::clone(&stop), tx, true);
    let mut acked = Vec::new();
    while acked.len() < 200 {
        acked.push(rx.recv_timeout(STEP).expect("topics are created"));
    }
    broker.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    broker.wait_exit(STEP);
    acked.extend(rx.try_iter());

    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "after the kill");
    let names: BTreeSet<String> = topics(&socket, token).into_iter().map(|t| t.name).collect();
    let next = acked.len() as u64;
    for n in 0..next {
        assert!(names.contains(&format!("new-{n}")), "created topic new-{n} lost: {names:?}");
    }
    // Beyond them, at most the creation in flight at the kill.
    assert!(names.len() as u64 <= next + 1, "{} topics, {next} acknowledged", names.len());
    // Each one is a topic like any other: it takes appends.
    assert_eq!(append(&socket, "new-0", &["after the kill"]), (0, 0));
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_torn_last_record_is_cut_off_at_start_and_its_offset_given_again() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for (i, value) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(append(&socket, "t", &[value]), (i as u64, i as u64));
    }
    drop(socket);
    broker.interrupt();

    let segment = newest_segment(&dir_of(data.path(), "t"));
    let whole = SEGMENT_HEADER + record_len("one") + record_len("two") + record_len("three");
    assert_eq!(file_len(&segment), whole);
    File::options().write(true).open(&segment).and_then(|f| f.set_len(whole - 3)).expect("cut");

    let broker = start_on(data.path(), &[]);
    // The file is cut back to its last whole record.
    assert_eq!(file_len(&segment), SEGMENT_HEADER + record_len("one") + record_len("two"));
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(values(&read_all(&socket, token, "t", 0)), ["one", "two"]);
    let info = topic_info(&socket, token, "t");
    assert_eq!((info.first_offset, info.next_offset, info.messages), (0, 2, 2), "{info:?}");
    assert_eq!(append(&socket, "t", &["four"]), (2, 2));
    assert_eq!(values(&read_all(&socket, token, "t", 0)), ["one", "two", "four"]);
    drop(socket);

    let stderr = broker.interrupt();
    let dropped = record_len("three") - 3;
    let warning = format!(
        "dropped {dropped} bytes from offset 2 on: the batch is cut short; kept offsets 0..2"
    );
    assert!(stderr.contains(&warning), "no {warning:?} in the log:\n{stderr}");
}

#[test]
fn a_batch_torn_by_a_kill_is_dropped_whole_and_its_offsets_given_again() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let message = |value: &'static str| NewMessage::new(Some(b"k"), value.as_bytes());
    let first = [message("one"), message("two"), message("three")];
    assert_eq!(append_batch(&socket, "t", &first), (0, 2));
    let torn = [message("four"), message("five"), message("six"), message("seven")];
    assert_eq!(append_batch(&socket, "t", &torn), (3, 6));
    drop(socket);
    broker.signal("KILL");
    let (status, _) = broker.wait_exit(STEP);
    assert_eq!(status.signal(), Some(9), "the broker was not killed: {status}");

    // What a kill in the middle of writing the second batch leaves: its first messages whole
    // on disk, its last cut short. The batch is one unit: it goes whole.
    let segment = newest_segment(&dir_of(data.path(), "t"));
    let whole = file_len(&segment);
    let second = whole - (RECORD_FRAMING - 2 + 4 * 3 + "fourfivesixseven".len() as u64);
    File::options().write(true).open(&segment).and_then(|f| f.set_len(whole - 2)).expect("cut");

    let broker = start_on(data.path(), &[]);
    assert_eq!(file_len(&segment), second, "cut back to the end of the first batch");
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(values(&read_all(&socket, token, "t", 0)), ["one", "two", "three"]);
    assert_eq!(append(&socket, "t", &["again"]), (3, 3));
    let tail = read_all(&socket, token, "t", 2);
    assert_eq!((offsets(&tail), values(&tail)), (vec![2, 3], vec!["three".into(), "again".into()]));
    drop(socket);
    let stderr = broker.interrupt();
    let warning = format!(
        "dropped {} bytes from offset 3 on: the batch is cut short; kept offsets 0..3",
        whole - 2 - second
    );
    assert!(stderr.contains(&warning), "no {warning:?} in the log:\n{stderr}");
}

#[test]
fn a_flipped_byte_in_the_newest_segments_last_record_drops_that_record() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for (i, value) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(append(&socket, "t", &[value]), (i as u64, i as u64));
    }
    drop(socket);
    broker.interrupt();

    // The first byte of the last record's value: no whole record follows it, so it is taken
    // for a torn last write (damage that whole records follow stops start-up: see damage.rs).
    let segment = newest_segment(&dir_of(data.path(), "t"));
    flip_byte(&segment, record_len("one") + record_len("two") + RECORD_FRAMING);

    let broker = start_on(data.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(values(&read_all(&socket, token, "t", 0)), ["one", "two"]);
    let info = topic_info(&socket, token, "t");
    assert_eq!((info.first_offset, info.next_offset, info.messages), (0, 2, 2), "{info:?}");
    assert_eq!(append(&socket, "t", &["again"]), (2, 2));
    drop(socket);

    let stderr = broker.interrupt();
    let dropped = record_len("three");
    let warning = format!(
        "dropped {dropped} bytes from offset 2 on: the batch fails its checksum; kept offsets 0..2"
    );
    assert!(stderr.contains(&warning), "no {warning:?} in the log:\n{stderr}");
}

#[test]
fn a_flipped_byte_in_an_older_segment_stops_the_broker_from_starting() {
    let data = data_dir();
    let broker = start_on(data.path(), &["--segment-bytes", SMALL_SEGMENT]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_one_by_one(&socket, "t", 0..20);
    drop(socket);
    broker.interrupt();

    let dir = dir_of(data.path(), "t");
    let before: Vec<(u64, u64)> =
        segment_files(&dir).iter().map(|(base, path)| (*base, file_len(path))).collect();
    assert!(before.len() >= 3, "expected several segments: {before:?}");
    let (_, oldest) = segment_files(&dir).remove(0);
    // A sealed segment's index is trusted at start-up (its damage is found when it is read);
    // without one, as an older broker left it, the segment is checked.
    fs::remove_file(oldest.with_extension("idx")).expect("the oldest segment's index");
    let second_record = SEGMENT_HEADER + record_len(&retention_value(0));
    flip_byte(&oldest, second_record + RECORD_FRAMING);

    let data_path = data.path().to_str().expect("a UTF-8 path");
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--bind", "tcp://127.0.0.1:*", "--data-dir", data_path])
        .args(["--segment-bytes", SMALL_SEGMENT])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the broker");
    let Some(status) = testkit::wait_child(&mut child, STEP) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the broker kept running on a damaged older segment");
    };
    let output = child.wait_with_output().expect("the broker's output");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!status.success(), "exited with {status}; stderr:\n{stderr}");
    assert!(!stdout.contains("listening on"), "it listened: {stdout}");
    let error = format!("00000000000000000000.log is damaged at byte {second_record} (offset 1)");
    assert!(stderr.contains(&error), "no {error:?} in:\n{stderr}");

    // Nothing was cut: every segment is as it was.
    let after: Vec<(u64, u64)> =
        segment_files(&dir).iter().map(|(base, path)| (*base, file_len(path))).collect();
    assert_eq!(after, before);
}

#[test]
fn retention_by_count_removes_old_segments() {
    let data = data_dir();
    let args = ["--segment-bytes", SMALL_SEGMENT, "--retention-messages", "5"];
    let broker = start_on(data.path(), &args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_one_by_one(&socket, "t", 0..50);
    let (_, token) = claim(&socket, None, "reader");
    let info = assert_trimmed(&socket, token, data.path(), "t", 50);
    assert!((5..5 + MESSAGES_PER_SEGMENT).contains(&info.messages), "{info:?}");
    drop(socket);
    broker.interrupt();
}

#[test]
fn retention_by_bytes_removes_old_segments() {
    let data = data_dir();
    let args = ["--segment-bytes", SMALL_SEGMENT, "--retention-bytes", "200"];
    let broker = start_on(data.path(), &args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_one_by_one(&socket, "t", 0..50);
    let (_, token) = claim(&socket, None, "reader");
    let info = assert_trimmed(&socket, token, data.path(), "t", 50);
    let segment_payload = MESSAGES_PER_SEGMENT * RETENTION_VALUE_BYTES as u64;
    assert!((200..200 + segment_payload).contains(&info.bytes), "{info:?}");
    drop(socket);
    broker.interrupt();
}

#[test]
fn retention_by_time_removes_old_segments_without_further_appends() {
    let data = data_dir();
    let args = ["--segment-bytes", SMALL_SEGMENT, "--retention-time", "1s"];
    let broker = start_on(data.path(), &args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_one_by_one(&socket, "t", 0..20);
    let (_, token) = claim(&socket, None, "reader");

    // Every segment but the newest expires; the newest is never removed.
    let newest_base = 20 - MESSAGES_PER_SEGMENT;
    let deadline = Instant::now() + STEP;
    loop {
        let info = topic_info(&socket, token, "t");
        if info.first_offset == newest_base {
            break;
        }
        assert!(Instant::now() < deadline, "old segments still there after {STEP:?}: {info:?}");
        thread::sleep(Duration::from_millis(50));
    }
    assert_trimmed(&socket, token, data.path(), "t", 20);
    drop(socket);
    broker.interrupt();
}

#[test]
fn retention_set_by_create_topic_applies_to_that_topic_only_and_survives_a_restart() {
    let data = data_dir();
    let args = ["--segment-bytes", SMALL_SEGMENT];
    let broker = start_on(data.path(), &args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let retention = Retention { messages: Some(5), ..Retention::default() };
    let reply =
        ask(&socket, &Request::CreateTopic { topic: "kept five", partitions: Some(1), retention });
    assert!(matches!(reply, Response::Created { topic: "kept five", .. }), "{reply:?}");
    append_one_by_one(&socket, "kept five", 0..50);
    append_one_by_one(&socket, "kept all", 0..50);
    let (_, token) = claim(&socket, None, "reader");
    let trimmed = assert_trimmed(&socket, token, data.path(), "kept five", 50);
    let all = topic_info(&socket, token, "kept all");
    assert_eq!((all.first_offset, all.next_offset, all.messages), (0, 50, 50), "{all:?}");
    let files = segment_files(&dir_of(data.path(), "kept all"));
    assert_eq!(files.len() as u64, 50 / MESSAGES_PER_SEGMENT, "{files:?}");
    drop(socket);
    broker.interrupt();

    let broker = start_on(data.path(), &args);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(topic_info(&socket, token, "kept five"), trimmed);
    assert_eq!(topic_info(&socket, token, "kept all"), all);
    // The override came back from disk: it goes on trimming that topic.
    append_one_by_one(&socket, "kept five", 50..60);
    append_one_by_one(&socket, "kept all", 50..60);
    let info = assert_trimmed(&socket, token, data.path(), "kept five", 60);
    assert!(info.first_offset > trimmed.first_offset, "{info:?} after {trimmed:?}");
    assert_eq!(topic_info(&socket, token, "kept all").first_offset, 0);
    drop(socket);
    broker.interrupt();
}

#[test]
fn any_valid_topic_name_gets_its_own_directory_under_topics() {
    let names = ["../escape", "a/b", "Orders", "orders", "Hola mundo"];
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for name in names {
        let reply = ask(
            &socket,
            &Request::CreateTopic {
                topic: name,
                partitions: Some(1),
                retention: Retention::default(),
            },
        );
        assert!(matches!(reply, Response::Created { topic, .. } if topic == name), "{reply:?}");
        assert_eq!(append(&socket, name, &[name]), (0, 0));
    }

    let check_disk = || {
        let top: Vec<String> = fs::read_dir(data.path())
            .expect("read the data directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(top, ["topics"], "the data directory holds more than topics/");
        let dirs = topic_dirs(data.path());
        let on_disk: BTreeSet<String> = dirs.iter().map(|dir| meta_name(dir)).collect();
        assert_eq!(on_disk, names.iter().map(|n| n.to_string()).collect(), "{dirs:?}");
        assert_eq!(dirs.len(), names.len(), "{dirs:?}");
        for dir in &dirs {
            for entry in fs::read_dir(dir).expect("read a topic directory") {
                let path = entry.expect("entry").path();
                assert!(path.is_file(), "a topic directory holds more than files: {path:?}");
            }
            assert_eq!(segment_files(dir).len(), 1, "{dir:?}");
        }
    };
    check_disk();

    for name in ["", "a\nb", " leading space"] {
        let create = Request::CreateTopic {
            topic: name,
            partitions: Some(1),
            retention: Retention::default(),
        };
        expect_error(&ask(&socket, &create), ErrorCode::InvalidTopicName);
        expect_error(&ask(&socket, &append_of(name, &["x"])), ErrorCode::InvalidTopicName);
    }
    check_disk();
    drop(socket);
    broker.interrupt();

    let broker = start_on(data.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let listed: BTreeSet<String> = topics(&socket, token).into_iter().map(|t| t.name).collect();
    assert_eq!(listed, names.iter().map(|n| n.to_string()).collect());
    for name in names {
        assert_eq!(values(&read_all(&socket, token, name, 0)), [name]);
    }
    drop(socket);
    broker.interrupt();
    check_disk();
}

#[test]
fn delete_topic_removes_its_directory_for_good() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "doomed", &["a", "b"]);
    append(&socket, "kept", &["c"]);
    let doomed = dir_of(data.path(), "doomed");
    let kept = dir_of(data.path(), "kept");
    let reply = ask(&socket, &Request::DeleteTopic { topic: "doomed" });
    assert!(matches!(reply, Response::Deleted { topic: "doomed" }), "{reply:?}");
    assert!(!doomed.exists(), "{doomed:?} is still there");
    assert_eq!(topic_dirs(data.path()), [kept]);
    drop(socket);
    broker.interrupt();

    let broker = start_on(data.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let names: Vec<String> = topics(&socket, token).into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["kept"]);
    expect_error(
        &ask(&socket, &Request::Fetch(fetch_from(token, "doomed", 0))),
        ErrorCode::UnknownTopic,
    );
    // A topic of the same name starts again from offset 0.
    assert_eq!(append(&socket, "doomed", &["new"]), (0, 0));
    drop(socket);
    broker.interrupt();
    assert_eq!(topic_dirs(data.path()).len(), 2);
}

#[test]
fn a_failed_write_refuses_the_append_and_the_broker_goes_on() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    assert_eq!(append(&socket, "fine", &["kept"]), (0, 0));
    let reply = ask(
        &socket,
        &Request::CreateTopic {
            topic: "full",
            partitions: Some(1),
            retention: Retention::default(),
        },
    );
    assert!(matches!(reply, Response::Created { .. }), "{reply:?}");
    let full = dir_of(data.path(), "full");
    std::os::unix::fs::symlink("/dev/full", full.join("00000000000000000000.log"))
        .expect("link the segment to /dev/full");

    let reply = ask(&socket, &append_of("full", &["lost", "also lost"]));
    expect_error(&reply, ErrorCode::InternalError);

    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(values(&read_all(&socket, token, "fine", 0)), ["kept"]);
    let info = topic_info(&socket, token, "full");
    assert_eq!((info.first_offset, info.next_offset, info.messages, info.bytes), (0, 0, 0, 0));
    let brokers = status(&socket);
    assert_eq!(brokers.len(), 2);
    assert!(brokers.iter().all(|b| (b.topics, b.messages) == (2, 1)), "{brokers:?}");
    assert_eq!(append(&socket, "fine", &["still served"]), (1, 1));
    drop(socket);
    broker.interrupt();
}

#[test]
fn disk_bytes_are_reported_on_disk_and_absent_in_memory() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "t", &["one", "two", "three"]);
    let reply = ask(
        &socket,
        &Request::CreateTopic {
            topic: "empty",
            partitions: Some(1),
            retention: Retention::default(),
        },
    );
    assert!(matches!(reply, Response::Created { .. }), "{reply:?}");
    let on_disk = segment_bytes(&dir_of(data.path(), "t"));
    // One append, one batch: its header once, and two bytes of lengths a message.
    let batch_header = RECORD_FRAMING - 2;
    assert_eq!(on_disk, SEGMENT_HEADER + batch_header + 3 * 2 + "onetwothree".len() as u64);
    for b in status(&socket) {
        assert_eq!(b.disk_bytes, Some(on_disk), "{b:?}");
    }
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(topic_info(&socket, token, "t").disk_bytes, Some(on_disk));
    assert_eq!(topic_info(&socket, token, "empty").disk_bytes, Some(0));
    drop(socket);
    broker.interrupt();

    let broker = wire::start(&[]);
    let socket = broker.req(&context);
    append(&socket, "t", &["one", "two", "three"]);
    for b in status(&socket) {
        assert_eq!(b.disk_bytes, None, "{b:?}");
    }
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(topic_info(&socket, token, "t").disk_bytes, None);
    drop(socket);
    broker.interrupt();
}

#[test]
fn list_topics_counts_only_the_messages_a_fetch_can_serve() {
    let data = data_dir();
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let pipelined = wire::dealer(&context, &broker.endpoint);
    // An append and a listing sent together mostly land in one pass of the broker's loop,
    // where the append is not committed yet when the listing is made.
    for round in 0..20 {
        wire::send_tagged(&pipelined, "append", &append_of("t", &["one", "two"]));
        wire::send_tagged(&pipelined, "list", &Request::ListTopics { claim: Some(token) });
        for _ in 0..2 {
            if let (_, Response::Topics { topics }) = wire::receive_tagged(&pipelined) {
                let info = &topics[0];
                assert_eq!(
                    info.messages,
                    info.next_offset - info.first_offset,
                    "{round}: {info:?}"
                );
            }
        }
    }
    drop((socket, pipelined));
    broker.interrupt();
}

#[test]
fn a_damaged_record_refuses_a_group_fetch_as_it_refuses_a_fetch() {
    let data = data_dir();
    let broker = start_on(data.path(), &["--segment-bytes", SMALL_SEGMENT]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_one_by_one(&socket, "t", 0..20);
    drop(socket);
    broker.interrupt();
    // Offset 1 of the oldest segment, which keeps its index: start-up trusts it, and the damage
    // is found by the read that reaches it.
    let (_, oldest) = segment_files(&dir_of(data.path(), "t")).remove(0);
    let second_record = SEGMENT_HEADER + record_len(&retention_value(0));
    flip_byte(&oldest, second_record + RECORD_FRAMING);

    let broker = start_on(data.path(), &["--segment-bytes", SMALL_SEGMENT]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    expect_error(
        &ask(&socket, &Request::Fetch(fetch_from(token, "t", 1))),
        ErrorCode::InternalError,
    );
    let joined = ask(
        &socket,
        &Request::JoinGroup { claim: token, group: "g", topic: "t", start: GroupStart::Earliest },
    );
    assert!(matches!(joined, Response::Joined { .. }), "{joined:?}");
    let group_fetch = Request::GroupFetch(GroupFetch {
        ordered: false,
        claim: token,
        group: "g",
        topic: "t",
        max_messages: 100,
        max_bytes: 1 << 20,
        wait_ms: 0,
    });
    // What comes before the damage is delivered; then the damage is refused, every time.
    match ask(&socket, &group_fetch) {
        Response::Delivered { messages, .. } => {
            let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
            assert_eq!(offsets, [0]);
        }
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::InternalError),
        other => panic!("expected offset 0 or a refusal, got {other:?}"),
    }
    for _ in 0..2 {
        let reply = ask(&socket, &group_fetch);
        expect_error(&reply, ErrorCode::InternalError);
        let Response::Error { reason, .. } = reply else { unreachable!() };
        assert!(reason.contains("00000000000000000000.log"), "{reason}");
    }
    drop(socket);
    broker.interrupt();
}
