//! The store's behaviour, checked once in memory and once on disk by the same tests, then what
//! only a store on disk does: survive a reopen, and cope with damaged or failing files.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn message(value: &[u8]) -> NewMessage<'_> {
    NewMessage::new(None, value)
}

fn config(data_dir: Option<&Path>) -> StoreConfig {
    StoreConfig {
        data_dir: data_dir.map(Path::to_path_buf),
        max_message_bytes: 100,
        segment_bytes: 256,
        ..StoreConfig::default()
    }
}

/// Appends and commits at once, as one pass of the server would.
fn append(store: &mut Store, topic: &str, values: &[&str]) -> Result<(u64, u64)> {
    let messages: Vec<NewMessage<'_>> = values.iter().map(|v| message(v.as_bytes())).collect();
    let offsets = store.append(topic, 0, &messages, NOW)?;
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    Ok(offsets)
}

fn read_all(store: &Store, topic: &str, offset: u64) -> Vec<(u64, String)> {
    read_partition(store, topic, 0, offset)
}

/// Reads as [`Log::read`] and as [`Log::read_batches`], and checks that the batches, written
/// and read back as a client does, hold the same messages: the messages.
fn read_both<'a>(
    store: &'a Store,
    (topic, partition, offset): (&str, u32, u64),
    budget: Budget,
) -> Vec<protocol::Message<'a>> {
    let mut messages: Vec<protocol::Message> = Vec::new();
    let end = store.read(topic, partition, offset, budget, &mut messages).unwrap();
    let mut pieces = Vec::new();
    let end_batches = store.read_batches(topic, partition, offset, budget, &mut pieces).unwrap();
    assert_eq!(end, end_batches);
    let mut bytes = Vec::new();
    protocol::batch::Batches::Pieces(pieces).write(&mut bytes);
    let mut from_batches = Vec::new();
    protocol::batch::read(&bytes, offset, &mut from_batches).unwrap();
    assert_eq!(from_batches, messages, "batches from {offset} with {budget:?}");
    messages
}

/// Runs each test against a store in memory ([`MemoryLog`]), a store in a fresh directory
/// ([`FileLog`]) whose commits a flush thread settles (`--fsync always`), one whose commits
/// settle at once (`--fsync never`), and one in a fresh NATS JetStream ([`NatsLog`]), its copies
/// in memory, and again in files (`--copy-dir`).
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[test] fn $name() { super::$name(&mut super::Store::open(super::config(None)).unwrap()); })*
        }
        mod on_disk {
            $(#[test] fn $name() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(&mut super::Store::open(super::config(Some(dir.path()))).unwrap());
            })*
        }
        mod on_nats {
            $(#[test] fn $name() {
                let server = testkit::NatsServer::start();
                let nats = super::NatsConfig {
                    servers: vec![server.url()],
                    replicas: 1,
                    lease: std::time::Duration::from_secs(30),
                    copy_dir: None,
                    cache_bytes: crate::nats::DEFAULT_CACHE_BYTES,
                    start_timeout: std::time::Duration::from_secs(10),
                };
                let config = super::StoreConfig { nats: Some(nats), ..super::config(None) };
                super::$name(&mut super::Store::open(config).unwrap());
            })*
        }
        mod on_nats_copied_to_disk {
            $(#[test] fn $name() {
                let server = testkit::NatsServer::start();
                let dir = tempfile::tempdir().unwrap();
                let nats = super::NatsConfig {
                    servers: vec![server.url()],
                    replicas: 1,
                    lease: std::time::Duration::from_secs(30),
                    copy_dir: Some(dir.path().to_path_buf()),
                    cache_bytes: crate::nats::DEFAULT_CACHE_BYTES,
                    start_timeout: std::time::Duration::from_secs(10),
                };
                let config = super::StoreConfig { nats: Some(nats), ..super::config(None) };
                super::$name(&mut super::Store::open(config).unwrap());
            })*
        }
        mod on_disk_unflushed {
            $(#[test] fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let config = super::StoreConfig {
                    fsync: super::Fsync::Never,
                    ..super::config(Some(dir.path()))
                };
                super::$name(&mut super::Store::open(config).unwrap());
            })*
        }
    };
}

both_stores!(
    append_creates_the_topic_and_read_returns_it,
    appends_are_invisible_until_commit,
    refused_operations_change_nothing,
    reads_outside_the_log_are_refused_but_the_end_is_not,
    create_then_delete,
    retention_keeps_the_newest_messages,
    commits_settle_in_order_and_only_then_are_read,
    partitions_are_logs_of_their_own,
    unknown_partitions_and_bad_counts_are_refused_and_change_nothing,
    a_topic_grows_and_keeps_its_messages,
    retention_applies_to_each_partition_on_its_own,
    a_deleted_topic_made_again_has_only_its_new_partitions,
    headers_are_kept_in_order_and_count_in_a_messages_size,
    batches_hold_what_a_read_of_messages_gives_wherever_it_starts_and_stops,
);

fn headers_are_kept_in_order_and_count_in_a_messages_size(store: &mut Store) {
    let headers = vec![
        protocol::Header { key: "trace-id", value: Some(b"abc") },
        protocol::Header { key: "trace-id", value: None },
        protocol::Header { key: "", value: Some(b"") },
    ];
    let messages = [
        NewMessage { key: Some(b"k"), value: b"with", headers: headers.clone() },
        message(b"without"),
    ];
    store.append("t", 0, &messages, NOW).unwrap();
    store.append("t", 0, &[message(b"plain")], NOW).unwrap();
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("t", 0, 0, Budget::new(10, usize::MAX), &mut out).unwrap();
    let got: Vec<_> = out.iter().map(|m| (m.key, m.value, m.headers.clone())).collect();
    assert_eq!(
        got,
        [
            (Some(&b"k"[..]), &b"with"[..], headers.clone()),
            (None, &b"without"[..], vec![]),
            (None, &b"plain"[..], vec![]),
        ]
    );
    // Headers count against the size limit (100 bytes here): refused whole, nothing stored.
    let big = [7; 90];
    let over = [
        message(b"fits"),
        NewMessage {
            key: None,
            value: b"0123456789",
            headers: vec![protocol::Header { key: "h", value: Some(&big) }],
        },
    ];
    assert_eq!(
        store.append("t", 0, &over, NOW),
        Err(StoreError::MessageTooLarge { index: 1, size: 101, limit: 100 })
    );
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(read_all(store, "t", 0).len(), 3);
}

/// Appends `values` to partition `partition` of `topic` and commits at once.
fn append_to(
    store: &mut Store,
    topic: &str,
    partition: u32,
    values: &[&str],
) -> Result<(u64, u64)> {
    let messages: Vec<NewMessage<'_>> = values.iter().map(|v| message(v.as_bytes())).collect();
    let offsets = store.append(topic, partition, &messages, NOW)?;
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    Ok(offsets)
}

/// Every message of partition `partition` of `topic` from `offset` on, with its offset.
fn read_partition(store: &Store, topic: &str, partition: u32, offset: u64) -> Vec<(u64, String)> {
    let out = read_both(store, (topic, partition, offset), Budget::new(10_000, usize::MAX));
    out.iter().map(|m| (m.offset, String::from_utf8_lossy(m.value).into_owned())).collect()
}

fn batches_hold_what_a_read_of_messages_gives_wherever_it_starts_and_stops(store: &mut Store) {
    let headers = vec![
        protocol::Header { key: "h", value: None },
        protocol::Header { key: "", value: Some(b"") },
    ];
    let values: Vec<String> = (0..12).map(|i| format!("value {i}")).collect();
    for (i, run) in values.chunks(4).enumerate() {
        let messages: Vec<NewMessage<'_>> = run
            .iter()
            .enumerate()
            .map(|(j, v)| NewMessage {
                key: (j % 2 == 0).then_some(&b"k"[..]),
                value: v.as_bytes(),
                headers: if i == 1 { headers.clone() } else { Vec::new() },
            })
            .collect();
        store.append("t", 0, &messages, NOW + i as u64).unwrap();
        assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    }
    // Every start, and budgets that stop inside a batch, at its end, and past it; a value is 7
    // or 8 bytes, a key 1, a header 1.
    for offset in 0..=12 {
        for max_messages in [1, 2, 3, 4, 5, 9, 100] {
            for max_bytes in [0, 8, 17, 30, 1000] {
                let budget = Budget::new(max_messages, max_bytes);
                let read = read_both(store, ("t", 0, offset), budget);
                assert!(read.len() <= max_messages);
            }
        }
    }
    // A read of whole batches copies each as it is kept: one piece a batch, its checksum the
    // stored one.
    let mut pieces = Vec::new();
    store.read_batches("t", 0, 4, Budget::new(100, usize::MAX), &mut pieces).unwrap();
    let counts: Vec<_> = pieces.iter().map(|p| (p.base_offset(), p.count())).collect();
    assert_eq!(counts, [(4, 4), (8, 4)]);
}

fn partitions_are_logs_of_their_own(store: &mut Store) {
    store.create("p", 3, Retention::default()).unwrap();
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(store.partitions("p"), Ok(3));
    assert_eq!(append_to(store, "p", 0, &["a", "b"]), Ok((0, 1)));
    assert_eq!(append_to(store, "p", 2, &["c"]), Ok((0, 0)));
    assert_eq!(append_to(store, "p", 2, &["d", "e"]), Ok((1, 2)));
    assert_eq!(read_partition(store, "p", 0, 0), [(0, "a".into()), (1, "b".into())]);
    assert!(read_partition(store, "p", 1, 0).is_empty());
    assert_eq!(read_partition(store, "p", 2, 1), [(1, "d".into()), (2, "e".into())]);
    assert_eq!(store.offsets("p", 2), Ok((0, 3)));
    assert_eq!(store.offsets("p", 1), Ok((0, 0)));
    let info = &store.list()[0];
    assert_eq!((info.partitions, info.messages, info.bytes), (3, 5, 5));
    assert_eq!((info.first_offset, info.next_offset), (0, 2), "partition 0's");
    assert_eq!(info.first_offsets, [0, 0, 0]);
    assert_eq!(info.next_offsets, [2, 0, 3]);
    assert_eq!(store.totals().messages, 5);
}

fn unknown_partitions_and_bad_counts_are_refused_and_change_nothing(store: &mut Store) {
    store.create("p", 3, Retention::default()).unwrap();
    append_to(store, "p", 1, &["a"]).unwrap();
    let before = store.list();
    let unknown = StoreError::UnknownPartition { topic: "p".into(), partition: 3, partitions: 3 };
    assert_eq!(store.append("p", 3, &[message(b"x")], NOW), Err(unknown.clone()));
    assert!(unknown.to_string().contains("has 3 partitions"), "{unknown}");
    let mut out = Vec::new();
    assert_eq!(store.read("p", 3, 0, Budget::new(10, 100), &mut out), Err(unknown.clone()));
    assert_eq!(store.offsets("p", 3), Err(unknown));
    // A topic an append would make has the store's default count: one partition here.
    assert!(matches!(
        store.append("new", 1, &[message(b"x")], NOW),
        Err(StoreError::UnknownPartition { partition: 1, partitions: 1, .. })
    ));
    for count in [0, protocol::MAX_PARTITIONS + 1] {
        let refused = store.create("q", count, Retention::default());
        assert!(matches!(refused, Err(StoreError::InvalidPartitions(_))), "{count}: {refused:?}");
    }
    for count in [0, 2, 3, protocol::MAX_PARTITIONS + 1] {
        let refused = store.grow("p", count);
        assert!(matches!(refused, Err(StoreError::InvalidPartitions(_))), "{count}: {refused:?}");
    }
    assert_eq!(store.grow("nope", 4), Err(StoreError::UnknownTopic("nope".into())));
    assert_eq!(store.partitions("nope"), Err(StoreError::UnknownTopic("nope".into())));
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(store.list(), before);
    assert_eq!(read_partition(store, "p", 1, 0), [(0, "a".into())]);
}

fn a_topic_grows_and_keeps_its_messages(store: &mut Store) {
    append_to(store, "g", 0, &["a", "b"]).unwrap();
    assert_eq!(store.partitions("g"), Ok(1));
    store.grow("g", 4).unwrap();
    assert_eq!(store.partitions("g"), Ok(4));
    assert_eq!(append_to(store, "g", 3, &["c"]), Ok((0, 0)));
    assert_eq!(append_to(store, "g", 0, &["d"]), Ok((2, 2)));
    assert_eq!(read_partition(store, "g", 0, 0).len(), 3);
    assert_eq!(read_partition(store, "g", 3, 0), [(0, "c".into())]);
    assert_eq!(store.list()[0].next_offsets, [3, 0, 0, 1]);
    store.grow("g", 5).unwrap();
    assert_eq!(store.list()[0].partitions, 5);
}

fn retention_applies_to_each_partition_on_its_own(store: &mut Store) {
    store.create("r", 2, Retention { messages: Some(5), ..Retention::default() }).unwrap();
    for i in 0..40 {
        append_to(store, "r", 0, &[&format!("value number {i:02}")]).unwrap();
    }
    append_to(store, "r", 1, &["x", "y", "z"]).unwrap();
    let info = &store.list()[0];
    assert!(info.first_offsets[0] > 0, "{info:?}");
    assert_eq!((info.first_offsets[1], info.next_offsets[1]), (0, 3), "{info:?}");
    assert_eq!(read_partition(store, "r", 1, 0).len(), 3);
}

fn a_deleted_topic_made_again_has_only_its_new_partitions(store: &mut Store) {
    store.create("d", 3, Retention::default()).unwrap();
    append_to(store, "d", 2, &["old"]).unwrap();
    store.delete("d").unwrap();
    assert_eq!(store.partitions("d"), Err(StoreError::UnknownTopic("d".into())));
    store.create("d", 2, Retention::default()).unwrap();
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(store.partitions("d"), Ok(2));
    assert!(matches!(
        store.offsets("d", 2),
        Err(StoreError::UnknownPartition { partitions: 2, .. })
    ));
    assert_eq!(store.offsets("d", 1), Ok((0, 0)));
}

fn commits_settle_in_order_and_only_then_are_read(store: &mut Store) {
    store.append("t", 0, &[message(b"a")], NOW).unwrap();
    let first = store.commit(Instant::now(), NOW);
    store.append("t", 0, &[message(b"b")], NOW).unwrap();
    store.append("u", 0, &[message(b"c")], NOW).unwrap();
    let second = store.commit(Instant::now(), NOW);
    let third = store.commit(Instant::now(), NOW);
    assert!(first < second && second < third);
    let mut settled = store.settled();
    if settled.len() < 3 {
        // Whatever did not settle yet is not readable yet.
        let read = read_all(store, "t", 0).len();
        assert!(read <= settled.iter().filter(|s| s.readable.contains(&("t".into(), 0))).count());
        settled.extend(store.wait_settled());
    }
    // Commits on a partition settle in order; a commit of nothing waits for none in a store
    // that settles commits without a partition in common independently.
    let mut tickets: Vec<Ticket> = settled.iter().map(|s| s.ticket).collect();
    let at = |ticket| tickets.iter().position(|t| *t == ticket);
    assert!(at(first) < at(second), "{tickets:?}");
    tickets.sort();
    assert_eq!(tickets, [first, second, third]);
    settled.sort_by_key(|s| s.ticket);
    assert!(settled.iter().all(|s| s.failures.is_empty()));
    assert_eq!(settled[0].readable, [("t".to_owned(), 0)]);
    assert_eq!(settled[1].readable, [("t".to_owned(), 0), ("u".to_owned(), 0)]);
    assert!(settled[2].readable.is_empty(), "a commit of nothing settles too");
    assert_eq!(read_all(store, "t", 0), [(0, "a".into()), (1, "b".into())]);
    assert_eq!(read_all(store, "u", 0), [(0, "c".into())]);
    assert!(store.wait_settled().is_empty());
}

fn append_creates_the_topic_and_read_returns_it(store: &mut Store) {
    assert_eq!(append(store, "t", &["a", "b"]), Ok((0, 1)));
    assert_eq!(append(store, "t", &["c"]), Ok((2, 2)));
    assert_eq!(read_all(store, "t", 1), [(1, "b".into()), (2, "c".into())]);
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("t", 0, 0, Budget::new(1, 100), &mut out).unwrap();
    assert_eq!(out[0].timestamp, NOW);
    assert_eq!(store.totals().messages, 3);
    assert_eq!(store.totals().bytes, 3);
}

fn appends_are_invisible_until_commit(store: &mut Store) {
    store.append("t", 0, &[message(b"a")], NOW).unwrap();
    assert!(read_all(store, "t", 0).is_empty());
    assert_eq!(store.list()[0].next_offset, 0);
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(read_all(store, "t", 0), [(0, "a".into())]);
}

fn refused_operations_change_nothing(store: &mut Store) {
    append(store, "t", &["a"]).unwrap();
    let too_large = store.append("t", 0, &[message(b"ok"), message(&[0; 101])], NOW);
    assert_eq!(too_large, Err(StoreError::MessageTooLarge { index: 1, size: 101, limit: 100 }));
    assert!(matches!(
        store.append("", 0, &[message(b"a")], NOW),
        Err(StoreError::InvalidTopicName(..))
    ));
    assert!(matches!(
        store.append(" x", 0, &[message(b"a")], NOW),
        Err(StoreError::InvalidTopicName(..))
    ));
    assert_eq!(
        store.create("t", 1, Retention::default()),
        Err(StoreError::TopicExists("t".into()))
    );
    assert_eq!(store.delete("u"), Err(StoreError::UnknownTopic("u".into())));
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert_eq!(store.list().len(), 1);
    assert_eq!(read_all(store, "t", 0), [(0, "a".into())]);
}

fn reads_outside_the_log_are_refused_but_the_end_is_not(store: &mut Store) {
    append(store, "t", &["a"]).unwrap();
    assert!(read_all(store, "t", 1).is_empty());
    let mut out = Vec::new();
    assert!(matches!(
        store.read("t", 0, 2, Budget::new(10, 100), &mut out),
        Err(StoreError::OffsetOutOfRange { first: 0, next: 1, .. })
    ));
    assert_eq!(
        store.read("nope", 0, 0, Budget::new(10, 100), &mut out),
        Err(StoreError::UnknownTopic("nope".into()))
    );
}

fn create_then_delete(store: &mut Store) {
    store.create("Hola mundo", 1, Retention::default()).unwrap();
    assert_eq!(store.list()[0].name, "Hola mundo");
    assert_eq!(store.list()[0].next_offset, 0);
    append(store, "Hola mundo", &["x"]).unwrap();
    store.delete("Hola mundo").unwrap();
    assert!(store.list().is_empty());
    assert_eq!(append(store, "Hola mundo", &["y"]), Ok((0, 0)));
}

fn retention_keeps_the_newest_messages(store: &mut Store) {
    store.create("kept", 1, Retention { messages: Some(5), ..Retention::default() }).unwrap();
    for i in 0..40 {
        append(store, "kept", &[&format!("value number {i:02}")]).unwrap();
    }
    let info = &store.list()[0];
    assert_eq!(info.next_offset, 40);
    assert!(info.messages >= 5 && info.messages < 40, "{info:?}");
    assert_eq!(info.first_offset, 40 - info.messages);
    let mut out = Vec::new();
    let below = store.read("kept", 0, 0, Budget::new(10, 100), &mut out);
    assert!(
        matches!(below, Err(StoreError::OffsetOutOfRange { first, .. }) if first == info.first_offset)
    );
    assert_eq!(read_all(store, "kept", info.first_offset).len() as u64, info.messages);
}

fn reopen(dir: &TempDir) -> Box<Store> {
    Store::open(config(Some(dir.path()))).unwrap()
}

/// A data directory whose topic `t` holds `value 0` to `value 39`, in several segments.
fn forty_values_on_disk() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    for i in 0..40 {
        append(&mut store, "t", &[&format!("value {i}")]).unwrap();
    }
    dir
}

/// Damages the first record of segment `file`.
fn flip_a_byte(file: &Path) {
    let mut bytes = fs::read(file).unwrap();
    bytes[20] ^= 0xff;
    fs::write(file, bytes).unwrap();
}

fn segment_files(dir: &TempDir, topic: &str) -> Vec<std::path::PathBuf> {
    let topic_dir = disk::topics_dir(dir.path()).join(disk::topic_dir_name(topic));
    let mut files: Vec<std::path::PathBuf> = fs::read_dir(topic_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            matches!(disk::topic_file(name), disk::TopicFile::Segment(_))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_reopened_store_has_every_committed_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    let values: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    for value in &values {
        append(&mut store, "Hello world", &[value]).unwrap();
    }
    store.append("Hello world", 0, &[NewMessage::new(Some(b"k"), b"keyed")], NOW + 1).unwrap();
    store.commit_and_wait(Instant::now(), NOW).is_empty().then_some(()).unwrap();
    store.create("empty", 1, Retention { bytes: Some(1000), ..Retention::default() }).unwrap();
    // A creation is durable once the next commit settled, as an append is.
    store.commit_and_wait(Instant::now(), NOW).is_empty().then_some(()).unwrap();
    let before = store.list();
    drop(store);

    let store = reopen(&dir);
    assert_eq!(store.list(), before);
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("Hello world", 0, 50, Budget::new(10, 1000), &mut out).unwrap();
    assert_eq!(
        (out[0].key, out[0].value, out[0].timestamp),
        (Some(&b"k"[..]), &b"keyed"[..], NOW + 1)
    );
    let read: Vec<String> =
        read_all(&store, "Hello world", 0).into_iter().map(|(_, v)| v).take(50).collect();
    assert_eq!(read, values);
    assert!(segment_files(&dir, "Hello world").len() > 1, "the test should span segments");
    assert!(store.totals().disk_bytes.unwrap() > 0);
}

#[test]
fn on_disk_only_the_newest_segment_stays_in_memory_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let value = "v".repeat(90);
    fn resident<M: Medium>(topics: &Topics<M>) -> usize {
        topics.topic("t").unwrap().memory_bytes()
    }
    let mut store = Topics::open(config(Some(dir.path()))).unwrap();
    for _ in 0..40 {
        store.append("t", 0, &[message(value.as_bytes()), message(value.as_bytes())], NOW).unwrap();
        assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    }
    assert!(resident(&store) <= 256, "{} bytes in memory", resident(&store));
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("t", 0, 0, Budget::new(10_000, usize::MAX), &mut out).unwrap();
    let written: Vec<(u64, String)> =
        out.iter().map(|m| (m.offset, String::from_utf8_lossy(m.value).into_owned())).collect();
    assert_eq!(written.len(), 80);
    let files = segment_files(&dir, "t").len();
    assert!(files > 10, "the test should span many segments: {files}");
    drop(out);
    drop(store);

    let mut topics = Topics::open(config(Some(dir.path()))).unwrap();
    // The newest segment's buffer, at most a segment's size (256 bytes here).
    assert!(resident(&topics) <= 256, "{} bytes in memory", resident(&topics));
    let mut out: Vec<protocol::Message> = Vec::new();
    topics.read("t", 0, 0, Budget::new(10_000, usize::MAX), &mut out).unwrap();
    let read: Vec<(u64, String)> =
        out.iter().map(|m| (m.offset, String::from_utf8_lossy(m.value).into_owned())).collect();
    assert_eq!(read, written);
    drop(out);
    for _ in 0..10 {
        topics.append("t", 0, &[message(value.as_bytes()), message(b"x")], NOW).unwrap();
        assert!(topics.commit_and_wait(Instant::now(), NOW).is_empty());
    }
    assert!(resident(&topics) <= 256, "{} bytes in memory", resident(&topics));
    let mut in_memory = Topics::in_memory(config(None));
    for _ in 0..40 {
        in_memory
            .append("t", 0, &[message(value.as_bytes()), message(value.as_bytes())], NOW)
            .unwrap();
        assert!(in_memory.commit_and_wait(Instant::now(), NOW).is_empty());
    }
    assert!(resident(&in_memory) > 40 * 2 * 90, "in memory, every segment stays");
}

#[test]
fn offsets_continue_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    append(&mut reopen(&dir), "t", &["a", "b"]).unwrap();
    let mut store = reopen(&dir);
    assert_eq!(append(&mut store, "t", &["c"]), Ok((2, 2)));
}

#[test]
fn a_torn_last_batch_is_cut_off_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    append(&mut store, "t", &["first"]).unwrap();
    append(&mut store, "t", &["second", "third"]).unwrap();
    drop(store);
    let file = segment_files(&dir, "t").pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    // Cut inside the last batch's last message: its first message is whole on disk, and goes
    // with the rest of its batch.
    fs::File::options().write(true).open(&file).unwrap().set_len(len - 3).unwrap();

    let mut store = reopen(&dir);
    assert_eq!(read_all(&store, "t", 0), [(0, "first".into())]);
    assert!(fs::metadata(&file).unwrap().len() < len - 3, "the torn bytes are cut on disk too");
    assert_eq!(append(&mut store, "t", &["again"]), Ok((1, 1)));
    drop(store);
    assert_eq!(read_all(&reopen(&dir), "t", 0), [(0, "first".into()), (1, "again".into())]);
}

#[test]
fn a_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    for value in ["first", "second", "third"] {
        append(&mut store, "t", &[value]).unwrap();
    }
    drop(store);
    let file = segment_files(&dir, "t").pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let at = bytes.windows(6).position(|w| w == b"second").unwrap();
    bytes[at] ^= 0x01;
    fs::write(&file, &bytes).unwrap();

    // A whole record follows the damaged one: opening refuses, naming the file, and cuts nothing.
    let error = Store::open(config(Some(dir.path()))).unwrap_err();
    assert!(matches!(&error, OpenError::Damaged(report) if report.files[0].path == file));
    assert!(error.to_string().contains("a whole batch follows"), "{error}");
    assert_eq!(fs::read(&file).unwrap(), bytes);

    // Repair keeps the records before the damage and a copy of the whole file.
    let store = Store::open(StoreConfig { repair: true, ..config(Some(dir.path())) }).unwrap();
    assert_eq!(read_all(&store, "t", 0), [(0, "first".into())]);
    let copy = store.set_aside_dir().unwrap().join("topics").join(disk::topic_dir_name("t"));
    assert_eq!(fs::read(copy.join(file.file_name().unwrap())).unwrap(), bytes);
}

#[test]
fn a_flipped_byte_in_the_last_batch_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    append(&mut store, "t", &["first"]).unwrap();
    append(&mut store, "t", &["second", "third"]).unwrap();
    drop(store);
    let file = segment_files(&dir, "t").pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let at = bytes.windows(6).position(|w| w == b"second").unwrap();
    bytes[at] ^= 0x01;
    fs::write(&file, bytes).unwrap();
    assert_eq!(read_all(&reopen(&dir), "t", 0), [(0, "first".into())]);
}

/// Removes a sealed segment's index, as if it had been written by a broker before indexes, or
/// sealed just before a crash: opening then reads and checks it.
fn unindex(segment: &Path) {
    fs::remove_file(segment.with_extension("idx")).unwrap();
}

#[test]
fn a_damaged_older_segment_stops_the_store_from_opening() {
    let dir = forty_values_on_disk();
    unindex(&segment_files(&dir, "t")[0]);
    flip_a_byte(&segment_files(&dir, "t")[0]);
    let error = Store::open(config(Some(dir.path()))).unwrap_err().to_string();
    assert!(error.contains("is damaged") && error.contains("checksum"), "{error}");
}

#[test]
fn repair_sets_aside_a_damaged_older_segment_with_those_before_it() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    assert!(files.len() >= 4, "{files:?}");
    unindex(&files[1]);
    flip_a_byte(&files[1]);

    let store = Store::open(StoreConfig { repair: true, ..config(Some(dir.path())) }).unwrap();
    // The topic starts at the first segment after the damaged one; nothing newer is lost.
    let first: u64 = files[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let info = store.list().into_iter().find(|t| t.name == "t").unwrap();
    assert_eq!((info.first_offset, info.next_offset), (first, 40));
    assert_eq!(read_all(&store, "t", first)[0], (first, format!("value {first}")));
    let aside = store.set_aside_dir().unwrap().join("topics").join(disk::topic_dir_name("t"));
    for file in &files[..2] {
        assert!(!file.exists());
        assert!(aside.join(file.file_name().unwrap()).exists());
    }
}

#[test]
fn a_reopen_reads_only_the_newest_segment_and_trusts_the_indexes_of_the_others() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    assert!(files.len() >= 4, "{files:?}");
    for file in &files[..files.len() - 1] {
        assert!(file.with_extension("idx").is_file(), "{} has no index", file.display());
    }
    let newest = fs::metadata(files.last().unwrap()).unwrap().len();
    let store = reopen(&dir);
    assert_eq!(store.checked_bytes(), newest);
    assert_eq!(read_all(&store, "t", 0).len(), 40);
}

/// The segment files of `dir` the process has mapped.
fn mapped_segments(dir: &TempDir) -> Vec<String> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.path().to_str().unwrap();
    maps.lines()
        .filter_map(|line| line.split_once(dir).map(|(_, file)| file.to_owned()))
        .filter(|file| file.ends_with(".log"))
        .collect()
}

#[test]
fn a_reopen_opens_no_sealed_segment_until_a_read_needs_it() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    let store = reopen(&dir);
    assert_eq!(mapped_segments(&dir), Vec::<String>::new());
    let listed = store.list();
    assert_eq!((listed[0].first_offset, listed[0].next_offset, listed[0].messages), (0, 40, 40));
    // "value 0" to "value 39", known from the files' lengths.
    assert_eq!(listed[0].bytes, 10 * 7 + 30 * 8);
    // A read from the third segment on opens it, and the ones after, not those before.
    let third: u64 = files[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(read_all(&store, "t", third).len() as u64, 40 - third);
    let mapped = mapped_segments(&dir);
    assert!(mapped.iter().any(|f| files[2].ends_with(f.trim_start_matches('/'))), "{mapped:?}");
    assert!(!mapped.iter().any(|f| files[0].ends_with(f.trim_start_matches('/'))), "{mapped:?}");
}

#[test]
fn retention_by_time_opens_the_oldest_segment_to_learn_its_age() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    let retention = Retention { ms: Some(1_000), ..Retention::default() };
    let mut store = Store::open(StoreConfig { retention, ..config(Some(dir.path())) }).unwrap();
    let later = NOW + 60_000;
    store.append("t", 0, &[message(b"after")], later).unwrap();
    assert!(store.commit_and_wait(Instant::now(), later).is_empty());
    let (first, next) = store.offsets("t", 0).unwrap();
    assert_eq!(next, 41);
    let newest: u64 = files.last().unwrap().file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(first, newest, "every sealed segment is past its time");
    assert!(!files[0].exists());
}

#[test]
fn a_damaged_index_is_rebuilt_from_its_segment_and_never_trusted() {
    let dir = forty_values_on_disk();
    let expected = read_all(&reopen(&dir), "t", 0);
    let files = segment_files(&dir, "t");
    let index = files[1].with_extension("idx");
    let good = fs::read(&index).unwrap();
    let mut bad = good.clone();
    // The record count: trusted, it would make offsets up.
    bad[16] ^= 0x04;
    fs::write(&index, &bad).unwrap();
    let store = reopen(&dir);
    let newest = fs::metadata(files.last().unwrap()).unwrap().len();
    // Opening reads no sealed segment; the first read of this one checks it instead.
    assert_eq!(store.checked_bytes(), newest);
    assert_eq!(read_all(&store, "t", 0), expected);
    assert_eq!(fs::read(&index).unwrap(), good, "the index is written anew");

    // An index that checks out but describes a file of another length is not trusted either:
    // the file is checked, and its records, all there, are read.
    drop(store);
    let mut longer = fs::read(&files[1]).unwrap();
    longer.extend_from_slice(&[0; 3]);
    fs::write(&files[1], longer).unwrap();
    assert_eq!(read_all(&reopen(&dir), "t", 0), expected);
}

#[test]
fn what_a_crash_while_writing_an_index_leaves_is_cleared_or_rebuilt() {
    let dir = forty_values_on_disk();
    let expected = read_all(&reopen(&dir), "t", 0);
    let files = segment_files(&dir, "t");
    // Killed before the rename: a half-written `.idx.new` beside no index.
    let first = files[0].with_extension("idx");
    let writing = files[0].with_extension("idx.new");
    let bytes = fs::read(&first).unwrap();
    fs::write(&writing, &bytes[..bytes.len() / 2]).unwrap();
    fs::remove_file(&first).unwrap();
    // An index cut short, as a file system without ordered writes may leave one.
    let second = files[1].with_extension("idx");
    let bytes = fs::read(&second).unwrap();
    fs::write(&second, &bytes[..bytes.len() - 3]).unwrap();
    // Killed before any index of the third was written.
    fs::remove_file(files[2].with_extension("idx")).unwrap();

    let store = reopen(&dir);
    assert_eq!(read_all(&store, "t", 0), expected);
    assert!(!writing.exists(), "the interrupted index was not cleared");
    let len = |file: &Path| fs::metadata(file).unwrap().len();
    let newest = len(files.last().unwrap());
    // Those with no index were checked at start-up, the one whose index is cut short when read.
    assert_eq!(store.checked_bytes(), newest + len(&files[0]) + len(&files[2]));
    drop(store);
    // Each was indexed again: the next opening reads only the newest segment.
    assert_eq!(reopen(&dir).checked_bytes(), newest);
}

#[test]
fn damage_in_an_indexed_segment_is_refused_when_read_naming_the_file() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    flip_a_byte(&files[1]);
    let store = reopen(&dir);
    let first: u64 = files[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut out = Vec::new();
    let error = store.read("t", 0, first, Budget::new(100, usize::MAX), &mut out).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(files[1].to_str().unwrap()) && text.contains("damaged"), "{text}");
    assert!(out.is_empty());
    // Reads stop before the damage, and what is not damaged reads as ever.
    store.read("t", 0, 0, Budget::new(100, usize::MAX), &mut out).unwrap();
    assert_eq!(out.last().map(|m| m.offset), Some(first - 1));
    let later: u64 = files[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(read_all(&store, "t", later).len() as u64, 40 - later);
}

/// The bytes of segment file `file`'s messages as records of format 1, without the header:
/// what a broker before batches wrote.
fn as_old_records(file: &Path) -> Vec<u8> {
    let base: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let (segment, damage) = segment::Segment::recover(base, fs::read(file).unwrap(), 0);
    assert_eq!(damage, None);
    let mut out = Vec::new();
    assert_eq!(segment.read(base, u64::MAX, &mut out, |_| true), Ok(true));
    segment::old_records(&out)
}

#[test]
fn a_directory_of_the_format_before_headers_and_indexes_opens() {
    let dir = forty_values_on_disk();
    let expected = read_all(&reopen(&dir), "t", 0);
    let files = segment_files(&dir, "t");
    for file in &files {
        let bytes = fs::read(file).unwrap();
        assert_eq!(&bytes[..6], b"BRKLOG");
        fs::write(file, as_old_records(file)).unwrap();
        let _ = fs::remove_file(file.with_extension("idx"));
    }
    let meta = files[0].with_file_name(disk::META_FILE);
    let bytes = fs::read(&meta).unwrap();
    assert_eq!(&bytes[..6], b"BRKTOP");
    fs::write(&meta, &bytes[8..]).unwrap();
    let total: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    let mut store = reopen(&dir);
    assert_eq!(store.checked_bytes(), total);
    assert_eq!(read_all(&store, "t", 0), expected);
    append(&mut store, "t", &["new"]).unwrap();
    drop(store);
    for file in &files[..files.len() - 1] {
        assert!(file.with_extension("idx").is_file(), "{} was not indexed", file.display());
    }
    let store = reopen(&dir);
    assert_eq!(read_all(&store, "t", 0).last(), Some(&(40, "new".to_owned())));
    assert_eq!(read_all(&store, "t", 0).len(), 41);
}

#[test]
fn a_directory_of_format_2_before_headers_opens_and_appends_in_format_3() {
    let dir = forty_values_on_disk();
    let expected = read_all(&reopen(&dir), "t", 0);
    let files = segment_files(&dir, "t");
    // What a broker before headers left: segments of format 2 (batches without a flags byte),
    // each sealed one with its index, whose positions therefore do not fit: rebuilt, never
    // trusted.
    for file in &files {
        fs::write(file, segment::as_format_2(&fs::read(file).unwrap())).unwrap();
    }
    let mut store = reopen(&dir);
    assert_eq!(read_all(&store, "t", 0), expected);
    let headers = vec![protocol::Header { key: "h", value: Some(b"v") }];
    let with = [NewMessage { key: None, value: b"new", headers: headers.clone() }];
    store.append("t", 0, &with, NOW).unwrap();
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    drop(store);
    let after = segment_files(&dir, "t");
    assert_eq!(after.len(), files.len() + 1, "appends go to a new segment");
    let newest = fs::read(after.last().unwrap()).unwrap();
    assert_eq!(newest[..8], format::header(format::SEGMENT));
    let store = reopen(&dir);
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("t", 0, 40, Budget::new(10, usize::MAX), &mut out).unwrap();
    assert_eq!((out[0].value, &out[0].headers), (&b"new"[..], &headers));
    assert_eq!(read_all(&store, "t", 0)[..40], expected[..]);
}

#[test]
fn a_directory_of_format_1_opens_through_its_old_indexes_and_appends_in_batches() {
    let dir = forty_values_on_disk();
    let expected = read_all(&reopen(&dir), "t", 0);
    let files = segment_files(&dir, "t");
    assert!(files.len() >= 4, "{files:?}");
    // What a broker before batches left: segments of format 1, each sealed one with an index
    // of version 1 (an entry at every 32nd record, offsets implied).
    for (i, file) in files.iter().enumerate() {
        let mut bytes = format::header(format::SEGMENT).to_vec();
        bytes[6] = 1;
        bytes.extend_from_slice(&as_old_records(file));
        fs::write(file, &bytes).unwrap();
        let base: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let (segment, damage) = segment::Segment::recover(base, bytes, 0);
        assert_eq!((damage, segment.version()), (None, 1));
        if i + 1 < files.len() {
            fs::write(file.with_extension("idx"), segment.index().encode_version_1()).unwrap();
        }
    }
    let newest = fs::metadata(files.last().unwrap()).unwrap().len();
    let mut store = reopen(&dir);
    assert_eq!(store.checked_bytes(), newest, "the old indexes were trusted");
    assert_eq!(read_all(&store, "t", 0), expected);
    let listed = store.list();
    assert_eq!((listed[0].messages, listed[0].bytes), (40, 10 * 7 + 30 * 8));
    // A read starting inside an old segment, through its old index.
    assert_eq!(read_all(&store, "t", 37), expected[37..]);
    // New appends go to a new segment of format 2, after the old newest one.
    append(&mut store, "t", &["new", "newer"]).unwrap();
    drop(store);
    let after = segment_files(&dir, "t");
    assert_eq!(after.len(), files.len() + 1);
    let newest = fs::read(after.last().unwrap()).unwrap();
    assert_eq!(newest[..8], format::header(format::SEGMENT));
    let store = reopen(&dir);
    let all = read_all(&store, "t", 0);
    assert_eq!(all[..40], expected[..]);
    assert_eq!(all[40..], [(40, "new".to_owned()), (41, "newer".to_owned())]);
}

#[test]
fn a_stray_file_refuses_the_open_and_a_missing_segment_the_reads_of_its_offsets() {
    let dir = forty_values_on_disk();
    let files = segment_files(&dir, "t");
    fs::remove_file(&files[1]).unwrap();
    let stray = files[0].with_file_name("notes.txt");
    fs::write(&stray, b"mine").unwrap();

    let error = Store::open(config(Some(dir.path()))).unwrap_err();
    let OpenError::Damaged(report) = &error else { panic!("{error}") };
    let named: Vec<&Path> = report.files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(named, [stray.as_path()], "{error}");
    assert!(stray.exists() && files[0].exists());

    // Without the stray file it opens; the offsets the missing segment held cannot be read,
    // and the error names the segment that should lead to them.
    fs::remove_file(&stray).unwrap();
    let store = reopen(&dir);
    let missing: u64 = files[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut out = Vec::new();
    let error = store.read("t", 0, missing, Budget::new(100, usize::MAX), &mut out).unwrap_err();
    assert!(error.to_string().contains(files[0].to_str().unwrap()), "{error}");
    let mut out: Vec<protocol::Message> = Vec::new();
    store.read("t", 0, 0, Budget::new(100, usize::MAX), &mut out).unwrap();
    assert_eq!(out.last().map(|m| m.offset), Some(missing - 1));
    let later: u64 = files[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(read_all(&store, "t", later).len() as u64, 40 - later);
}

#[test]
fn a_topic_made_by_its_first_append_is_published_by_that_appends_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    store.append("new", 0, &[message(b"one")], NOW).unwrap();
    let made = disk::topics_dir(dir.path()).join(disk::topic_dir_name("new"));
    // Made without waiting for the disk: its meta file is not published yet.
    assert!(made.join(disk::META_WRITING_FILE).is_file());
    assert!(!made.join(disk::META_FILE).exists());
    assert!(store.commit_and_wait(Instant::now(), NOW).is_empty());
    assert!(made.join(disk::META_FILE).is_file());
    assert!(!made.join(disk::META_WRITING_FILE).exists());
    drop(store);
    assert_eq!(read_all(&reopen(&dir), "new", 0), [(0, "one".to_owned())]);
}

#[test]
fn a_topic_directory_whose_first_flush_never_came_is_removed_and_one_without_meta_refused() {
    let dir = forty_values_on_disk();
    let topics = disk::topics_dir(dir.path());
    // What a crash between a topic's first append and its flush leaves.
    let cut = topics.join(disk::topic_dir_name("cut"));
    fs::create_dir(&cut).unwrap();
    fs::write(cut.join(disk::META_WRITING_FILE), b"BRKTOP").unwrap();
    fs::write(cut.join(disk::segment_file_name(0)), b"BRKLOG\x01\x00 cut").unwrap();
    let store = reopen(&dir);
    assert!(!cut.exists());
    assert_eq!(store.list().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t"]);
    assert_eq!(read_all(&store, "t", 0).len(), 40);
    drop(store);

    // Segments without any meta file are no interrupted creation: they are refused.
    let lost = topics.join(disk::topic_dir_name("lost"));
    fs::create_dir(&lost).unwrap();
    fs::write(lost.join(disk::segment_file_name(0)), b"BRKLOG\x01\x00").unwrap();
    let error = Store::open(config(Some(dir.path()))).unwrap_err().to_string();
    assert!(error.contains("has no topic.meta"), "{error}");
    assert!(lost.exists());
}

#[test]
fn a_topic_meta_naming_another_directory_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    append(&mut reopen(&dir), "t", &["x"]).unwrap();
    let topics = disk::topics_dir(dir.path());
    let copy = topics.join("copy");
    fs::create_dir(&copy).unwrap();
    let meta = topics.join(disk::topic_dir_name("t")).join(disk::META_FILE);
    fs::copy(&meta, copy.join(disk::META_FILE)).unwrap();
    let error = Store::open(config(Some(dir.path()))).unwrap_err().to_string();
    assert!(error.contains("names topic \"t\", whose directory would be"), "{error}");
}

#[test]
fn delete_removes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    append(&mut store, "gone", &["a"]).unwrap();
    store.delete("gone").unwrap();
    assert_eq!(fs::read_dir(disk::topics_dir(dir.path())).unwrap().count(), 0);
    drop(store);
    assert!(reopen(&dir).list().is_empty());
}

#[test]
fn names_that_differ_in_case_or_try_to_escape_are_distinct_topics() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    for name in ["orders", "Orders", "../../etc", "a/b"] {
        append(&mut store, name, &[name]).unwrap();
    }
    drop(store);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only topics/ is created");
    let store = reopen(&dir);
    for name in ["orders", "Orders", "../../etc", "a/b"] {
        assert_eq!(read_all(&store, name, 0), [(0, name.to_owned())]);
    }
}

#[test]
fn a_failed_write_refuses_the_pass_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    append(&mut store, "ok", &["kept"]).unwrap();
    store.create("full", 1, Retention::default()).unwrap();
    // Every write to the topic's first segment fails as on a full disk.
    let topic_dir = disk::topics_dir(dir.path()).join(disk::topic_dir_name("full"));
    std::os::unix::fs::symlink("/dev/full", topic_dir.join(disk::segment_file_name(0))).unwrap();

    store.append("full", 0, &[message(b"lost")], NOW).unwrap();
    store.append("ok", 0, &[message(b"also kept")], NOW).unwrap();
    let failures = store.commit_and_wait(Instant::now(), NOW);
    assert_eq!(failures.iter().map(|f| f.topic.as_str()).collect::<Vec<_>>(), ["full"]);
    assert!(read_all(&store, "full", 0).is_empty());
    assert_eq!(store.list().iter().find(|t| t.name == "full").unwrap().next_offset, 0);
    assert_eq!(read_all(&store, "ok", 0), [(0, "kept".into()), (1, "also kept".into())]);

    // Cleaning up after the failure removed the file the refused appends had started.
    assert!(fs::symlink_metadata(topic_dir.join(disk::segment_file_name(0))).is_err());
    assert_eq!(append(&mut store, "full", &["written"]), Ok((0, 0)));
}

#[test]
fn a_failed_file_operation_keeps_its_io_error_and_says_which_file() {
    let root = tempfile::tempdir().unwrap();
    let not_a_dir = root.path().join("file");
    fs::write(&not_a_dir, b"x").unwrap();
    let Err(OpenError::Store(StoreError::Io(failure))) =
        Store::open(config(Some(&not_a_dir.join("data"))))
    else {
        panic!("opening a data directory below a file should fail on the file system");
    };
    assert_eq!(failure.error().kind(), io::ErrorKind::NotADirectory);
    let text = StoreError::Io(failure.clone()).to_string();
    assert!(text.starts_with("storage failed: cannot "), "{text}");
    assert!(text.contains(&not_a_dir.display().to_string()), "{text}");
    assert!(text.ends_with(&failure.error().to_string()), "{text}");
    assert_eq!(failure, failure.clone());
}

#[test]
fn a_failed_flush_drops_every_unsettled_append_of_its_topics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut topics = Topics::open(config(Some(dir.path()))).unwrap();
    topics.append("t", 0, &[message(b"kept")], NOW).unwrap();
    assert!(topics.commit_and_wait(Instant::now(), NOW).is_empty());
    topics.append("t", 0, &[message(b"lost 1")], NOW).unwrap();
    topics.append("other", 0, &[message(b"other")], NOW).unwrap();
    let first = topics.commit(Instant::now(), NOW);
    topics.append("t", 0, &[message(b"lost 2")], NOW).unwrap();
    let second = topics.commit(Instant::now(), NOW);
    // Stop the real flush thread (what it reports is dropped with it) and report in its place
    // that the first flush failed and the second succeeded.
    topics.flusher = None;
    let error = Arc::new(io::Error::other("the disk failed"));
    topics.apply(flush::Done { tickets: vec![first.0], error: Some(error) });
    topics.apply(flush::Done { tickets: vec![second.0], error: None });
    let settled = topics.settled();
    let failed: Vec<Vec<&str>> =
        settled.iter().map(|s| s.failures.iter().map(|f| f.topic.as_str()).collect()).collect();
    assert_eq!(failed, [vec!["t", "other"], vec!["t"]], "the second append followed the first");
    assert!(settled.iter().all(|s| s.readable.is_empty()));
    let mut out: Vec<protocol::Message> = Vec::new();
    topics.read("t", 0, 0, Budget::new(10, 1000), &mut out).unwrap();
    assert_eq!(out.iter().map(|m| m.value).collect::<Vec<_>>(), [b"kept"]);
    assert_eq!(topics.offsets("other", 0), Ok((0, 0)));
    drop(out);

    topics.flusher = Some(flush::Flusher::start(dir.path()).unwrap());
    topics.append("t", 0, &[message(b"next")], NOW).unwrap();
    assert!(topics.commit_and_wait(Instant::now(), NOW).is_empty());
    drop(topics);
    let store = reopen(&dir);
    assert_eq!(read_all(&store, "t", 0), [(0, "kept".into()), (1, "next".into())]);
}

/// The directory of partition `partition` of `topic` in data directory `dir`.
fn partition_dir(dir: &TempDir, topic: &str, partition: u32) -> std::path::PathBuf {
    let topic_dir = disk::topics_dir(dir.path()).join(disk::topic_dir_name(topic));
    disk::partition_dir(&topic_dir, partition)
}

#[test]
fn partitions_and_their_growth_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    store.create("p", 3, Retention { messages: Some(100), ..Retention::default() }).unwrap();
    for i in 0..30 {
        append_to(&mut store, "p", i % 3, &[&format!("value {i}")]).unwrap();
    }
    store.grow("p", 5).unwrap();
    append_to(&mut store, "p", 4, &["late"]).unwrap();
    let before = store.list();
    drop(store);
    // Partition 0 in the topic's directory, the others in theirs.
    assert!(segment_files(&dir, "p").len() > 1);
    for p in 1..5 {
        assert!(partition_dir(&dir, "p", p).is_dir(), "partition {p}");
    }

    let mut store = reopen(&dir);
    assert_eq!(store.list(), before);
    assert_eq!(store.list()[0].partitions, 5);
    assert_eq!(read_partition(&store, "p", 1, 0)[3], (3, "value 10".into()));
    assert_eq!(read_partition(&store, "p", 4, 0), [(0, "late".into())]);
    assert_eq!(append_to(&mut store, "p", 2, &["next"]), Ok((10, 10)));
}

#[test]
fn appends_make_topics_of_the_configured_partitions_durably() {
    for fsync in [Fsync::Always, Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { partitions: 4, fsync, ..config(Some(dir.path())) };
        let mut store = Store::open(config.clone()).unwrap();
        assert_eq!(append_to(&mut store, "made", 3, &["a"]), Ok((0, 0)));
        assert_eq!(store.partitions("made"), Ok(4));
        drop(store);
        let store = Store::open(config).unwrap();
        assert_eq!(store.partitions("made"), Ok(4));
        assert_eq!(read_partition(&store, "made", 3, 0), [(0, "a".into())]);
    }
}

#[test]
fn a_topic_meta_of_format_1_opens_as_one_partition_with_its_messages() {
    let dir = forty_values_on_disk();
    let topic_dir = partition_dir(&dir, "t", 0);
    // What a broker before partitions wrote: header version 1, no `partitions`.
    #[derive(serde::Serialize)]
    struct Old<'a> {
        name: &'a str,
        retention_messages: Option<u64>,
        retention_bytes: Option<u64>,
        retention_ms: Option<u64>,
    }
    let mut bytes = b"BRKTOP".to_vec();
    bytes.extend_from_slice(&1u16.to_le_bytes());
    let old =
        Old { name: "t", retention_messages: None, retention_bytes: None, retention_ms: None };
    rmp_serde::encode::write_named(&mut bytes, &old).unwrap();
    fs::write(topic_dir.join(disk::META_FILE), &bytes).unwrap();

    let mut store = reopen(&dir);
    assert_eq!(store.partitions("t"), Ok(1));
    assert_eq!(read_all(&store, "t", 0).len(), 40);
    // Growing writes the meta file anew, in format 2.
    store.grow("t", 2).unwrap();
    drop(store);
    let written = fs::read(topic_dir.join(disk::META_FILE)).unwrap();
    assert_eq!(&written[..8], &format::header(format::META));
    assert_eq!(reopen(&dir).partitions("t"), Ok(2));
}

#[test]
fn a_damaged_segment_of_a_partition_is_named_and_set_aside_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    store.create("p", 2, Retention::default()).unwrap();
    for i in 0..40 {
        append_to(&mut store, "p", 1, &[&format!("value {i}")]).unwrap();
    }
    append_to(&mut store, "p", 0, &["zero"]).unwrap();
    drop(store);
    let one = partition_dir(&dir, "p", 1);
    let mut files: Vec<_> = fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    unindex(&files[1]);
    flip_a_byte(&files[1]);

    let error = Store::open(config(Some(dir.path()))).unwrap_err();
    assert!(matches!(&error, OpenError::Damaged(report) if report.files[0].path == files[1]));
    let store = Store::open(StoreConfig { repair: true, ..config(Some(dir.path())) }).unwrap();
    let first: u64 = files[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(store.offsets("p", 1), Ok((first, 40)));
    assert_eq!(read_partition(&store, "p", 0, 0), [(0, "zero".into())], "partition 0 untouched");
}

#[test]
fn partition_directories_missing_or_past_the_count_are_refused_or_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = reopen(&dir);
    store.create("p", 3, Retention::default()).unwrap();
    append_to(&mut store, "p", 2, &["two"]).unwrap();
    drop(store);

    // What a growth cut short leaves: an empty directory past the count. It is removed.
    let extra = partition_dir(&dir, "p", 3);
    fs::create_dir(&extra).unwrap();
    assert_eq!(reopen(&dir).partitions("p"), Ok(3));
    assert!(!extra.exists());

    // One past the count that holds files is no leftover: refused, by name.
    fs::create_dir(&extra).unwrap();
    fs::write(extra.join(disk::segment_file_name(0)), b"").unwrap();
    let error = Store::open(config(Some(dir.path()))).unwrap_err();
    assert!(
        matches!(&error, OpenError::Damaged(report) if report.files[0].path == extra),
        "{error}"
    );
    fs::remove_dir_all(&extra).unwrap();

    // A missing partition directory refuses the open; --repair makes it anew, empty.
    let one = partition_dir(&dir, "p", 1);
    fs::remove_dir(&one).unwrap();
    let error = Store::open(config(Some(dir.path()))).unwrap_err();
    assert!(error.to_string().contains("is missing"), "{error}");
    assert!(!one.exists(), "a refused open changes nothing");
    let store = Store::open(StoreConfig { repair: true, ..config(Some(dir.path())) }).unwrap();
    assert!(one.is_dir());
    assert_eq!(store.offsets("p", 1), Ok((0, 0)));
    assert_eq!(read_partition(&store, "p", 2, 0), [(0, "two".into())]);
}

#[test]
fn a_failed_write_to_one_partition_refuses_the_topics_other_partitions_of_the_pass_too() {
    for fsync in [Fsync::Always, Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(StoreConfig { fsync, ..config(Some(dir.path())) }).unwrap();
        store.create("half", 2, Retention::default()).unwrap();
        append_to(&mut store, "ok", 0, &["kept"]).unwrap();
        // Every write to partition 1's first segment fails as on a full disk.
        let one = partition_dir(&dir, "half", 1);
        std::os::unix::fs::symlink("/dev/full", one.join(disk::segment_file_name(0))).unwrap();

        let parts: [(u32, &[NewMessage<'_>]); 2] =
            [(0, &[message(b"lost 0")]), (1, &[message(b"lost 1")])];
        store.append_parts("half", &parts, NOW).unwrap();
        store.append("ok", 0, &[message(b"also kept")], NOW).unwrap();
        let failures = store.commit_and_wait(Instant::now(), NOW);
        let mut failed: Vec<(&str, u32)> =
            failures.iter().map(|f| (f.topic.as_str(), f.partition)).collect();
        failed.sort_unstable();
        assert_eq!(failed, [("half", 0), ("half", 1)], "{fsync:?}");
        assert!(read_partition(&store, "half", 0, 0).is_empty(), "{fsync:?}");
        assert_eq!(store.list()[0].next_offsets, [0, 0]);
        assert_eq!(read_all(&store, "ok", 0).len(), 2);
        // Cleaning up after the failure removed the file the refused append had started.
        assert!(fs::symlink_metadata(one.join(disk::segment_file_name(0))).is_err());
        assert_eq!(append_to(&mut store, "half", 1, &["written"]), Ok((0, 0)));
        assert_eq!(append_to(&mut store, "half", 0, &["written"]), Ok((0, 0)));
    }
}

#[test]
fn a_creation_of_partitions_whose_first_flush_never_came_is_removed() {
    let dir = forty_values_on_disk();
    let topics = disk::topics_dir(dir.path());
    // What a crash between a creation of three partitions (or an append that made them, with
    // a segment in partition 2) and its flush leaves: no topic.meta yet.
    for (name, segment) in [("made", false), ("appended", true)] {
        let cut = topics.join(disk::topic_dir_name(name));
        fs::create_dir(&cut).unwrap();
        fs::write(cut.join(disk::META_WRITING_FILE), b"BRKTOP").unwrap();
        for p in 1..3 {
            fs::create_dir(disk::partition_dir(&cut, p)).unwrap();
        }
        if segment {
            let two = disk::partition_dir(&cut, 2);
            fs::write(two.join(disk::segment_file_name(0)), b"BRKLOG\x01\x00 cut").unwrap();
        }
    }
    let store = reopen(&dir);
    assert_eq!(store.list().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t"]);
    assert_eq!(fs::read_dir(&topics).unwrap().count(), 1);
    drop(store);

    // A partition directory holding what the broker never writes is no leftover: refused.
    let odd = topics.join(disk::topic_dir_name("odd"));
    fs::create_dir_all(disk::partition_dir(&odd, 1)).unwrap();
    fs::write(odd.join(disk::META_WRITING_FILE), b"BRKTOP").unwrap();
    fs::write(disk::partition_dir(&odd, 1).join("notes.txt"), b"mine").unwrap();
    let error = Store::open(config(Some(dir.path()))).unwrap_err().to_string();
    assert!(error.contains("has no topic.meta"), "{error}");
    assert!(odd.exists());
}
