//! What only the JetStream store does, against a real `nats-server`: de-duplication, and two
//! stores (two broker processes) sharing one JetStream.

use std::time::{Duration, Instant};

use protocol::NewMessage;
use testkit::NatsServer;

use super::log::NatsLog;
use super::{record, streams, NatsConfig};
use crate::store::{Budget, Log, Settled, StoreConfig, StoreError};

fn open(server: &NatsServer) -> NatsLog {
    open_with(server, super::DEFAULT_CACHE_BYTES, StoreConfig::default())
}

/// A store on `server` holding at most `cache_bytes` of messages.
fn open_with(server: &NatsServer, cache_bytes: u64, config: StoreConfig) -> NatsLog {
    let nats = NatsConfig {
        servers: vec![server.url()],
        replicas: 1,
        lease: Duration::from_secs(30),
        copy_dir: None,
        cache_bytes,
        start_timeout: std::time::Duration::from_secs(10),
    };
    NatsLog::open(config, &nats).unwrap()
}

/// Reads partition 0 of `topic` from `offset` (at most `max` messages), polling `store` until
/// something is there (what is not held comes once read back), for at most ten seconds.
fn read_from(store: &mut NatsLog, topic: &str, offset: u64, max: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.settled();
        let mut out = Vec::new();
        store.read(topic, 0, offset, Budget::new(max, usize::MAX), &mut out).unwrap();
        if !out.is_empty() || Instant::now() > deadline {
            return out
                .iter()
                .map(|m| (m.offset, String::from_utf8_lossy(m.value).into_owned()))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Appends `batches` batches of `size` messages to partition 0 of `topic`, each value `value`
/// of its offset, one commit each.
fn append_numbered(
    store: &mut NatsLog,
    topic: &str,
    batches: u64,
    size: u64,
    value: fn(u64) -> String,
) {
    for batch in 0..batches {
        let values: Vec<String> = (batch * size..(batch + 1) * size).map(value).collect();
        let messages: Vec<NewMessage<'_>> =
            values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
        store.append(topic, 0, &messages, 1).unwrap();
        assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    }
}

#[test]
fn a_process_started_on_a_stream_holds_none_of_it_and_reads_back_what_is_asked_for() {
    let server = NatsServer::start();
    let mut writer = open(&server);
    append_numbered(&mut writer, "t", 30, 100, |n| format!("v{n}"));
    // Ready at once, holding nothing of the stream, which it knows the offsets of.
    let mut reader = open(&server);
    assert_eq!(reader.held_bytes("t", 0), Some(0));
    assert_eq!(reader.offsets("t", 0), Ok((0, 3000)));
    assert_eq!(reader.list()[0].messages, 3000);
    // A read in the middle finds nothing yet and asks for it; it comes read back, in order.
    assert!(reader.loading("t", 0, 1234));
    let got = read_from(&mut reader, "t", 1234, 500);
    let want: Vec<(u64, String)> = (1234..1734).map(|n| (n, format!("v{n}"))).collect();
    assert_eq!(got, want);
    assert!(!reader.loading("t", 0, 1234));
    // Reading on from there reaches the end, and what is appended after.
    let mut offset = 1734;
    while offset < 3000 {
        let got = read_from(&mut reader, "t", offset, 400);
        assert_eq!(got.first().map(|m| m.0), Some(offset));
        assert!(got.iter().all(|(n, v)| *v == format!("v{n}")), "{got:?}");
        offset = got.last().unwrap().0 + 1;
    }
    append_numbered(&mut writer, "t", 1, 1, |_| "new".into());
    assert_eq!(read_from(&mut reader, "t", 3000, 10), [(3000, "new".into())]);
}

#[test]
fn a_process_learns_where_its_stream_starts_when_the_streams_limits_remove_what_it_never_held() {
    let server = NatsServer::start();
    let mut writer = open(&server);
    let retention = protocol::Retention { ms: Some(1000), ..protocol::Retention::default() };
    writer.create("t", 1, retention).unwrap();
    append_numbered(&mut writer, "t", 5, 1, |n| format!("v{n}"));
    let mut reader = open(&server);
    assert_eq!(reader.offsets("t", 0), Ok((0, 5)));
    // The stream drops what is older than a second while new messages come; the reader,
    // which holds only those appended since it started, learns that the first five are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.offsets("t", 0).unwrap().0 < 5 {
        assert!(Instant::now() < deadline, "still {:?}", reader.offsets("t", 0));
        writer.append("t", 0, &[NewMessage::new(None, b"more")], 1).unwrap();
        assert!(writer.commit_and_wait(Instant::now(), 1).is_empty());
        reader.settled();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_copies_and_what_is_read_back_stay_within_the_cache_and_every_message_is_still_read() {
    let server = NatsServer::start();
    let cache = 256 << 10;
    let config = StoreConfig { segment_bytes: 16 << 10, ..StoreConfig::default() };
    let value = |n: u64| format!("{n:0>160}");
    let mut writer = open_with(&server, cache, config.clone());
    // About 1 MiB of values, four times the cache.
    append_numbered(&mut writer, "t", 64, 100, value);
    assert!(writer.cached_bytes() <= cache, "{} bytes held", writer.cached_bytes());
    assert_eq!(writer.offsets("t", 0), Ok((0, 6400)), "the stream still holds them all");
    // Through the process that appended them, and through one started now, every message is
    // read in order from the first on, the cache never holding more than its size.
    let mut reader = open_with(&server, cache, config);
    for store in [&mut writer, &mut reader] {
        let mut offset = 0;
        while offset < 6400 {
            let got = read_from(store, "t", offset, 1000);
            assert_eq!(got.first().map(|m| m.0), Some(offset));
            assert!(got.iter().all(|(n, v)| *v == value(*n)), "not the values at {offset}");
            offset = got.last().unwrap().0 + 1;
            assert!(store.cached_bytes() <= cache, "{} bytes held", store.cached_bytes());
        }
    }
}

fn values(store: &NatsLog, topic: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    match store.read(topic, 0, 0, Budget::new(10_000, usize::MAX), &mut out) {
        Ok(_) => out.iter().map(|m| (m.offset, String::from_utf8_lossy(m.value).into())).collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `store` until `topic` holds `count` messages, for at most ten seconds.
fn wait_for(store: &mut NatsLog, topic: &str, count: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.settled();
        let held = values(store, topic);
        if held.len() >= count || Instant::now() > deadline {
            return held;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_message_published_again_with_its_id_is_stored_once() {
    let server = NatsServer::start();
    let mut store = open(&server);
    let batch = |values: &[&str]| -> Vec<(String, Vec<u8>)> {
        values.iter().map(|v| (format!("id-{v}"), record::encode(1, None, v.as_bytes()))).collect()
    };
    assert_eq!(store.publish_raw("t", batch(&["a", "b"])), [(1, false), (2, false)]);
    // The same batch again, as after an acknowledgement lost on the way back.
    assert_eq!(store.publish_raw("t", batch(&["a", "b", "c"])), [(1, true), (2, true), (3, false)]);
    let held = wait_for(&mut store, "t", 3);
    assert_eq!(held, [(0, "a".into()), (1, "b".into()), (2, "c".into())]);
}

#[test]
fn a_stream_of_single_messages_goes_on_with_batches_at_the_offsets_after_it() {
    let server = NatsServer::start();
    let mut store = open(&server);
    // Written as streams were before batches: one message per JetStream message.
    let old: Vec<(String, Vec<u8>)> = ["a", "b"]
        .iter()
        .map(|v| (format!("id-{v}"), record::encode(1, None, v.as_bytes())))
        .collect();
    assert_eq!(store.publish_raw("t", old), [(1, false), (2, false)]);
    assert_eq!(wait_for(&mut store, "t", 2).len(), 2);
    let message = |v: &'static str| NewMessage::new(None, v.as_bytes());
    store.append("t", 0, &[message("c"), message("d"), message("e")], 1).unwrap();
    assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    store.append("t", 0, &[message("f")], 1).unwrap();
    assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    let expected: Vec<(u64, String)> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(at, v)| (at as u64, v.to_string()))
        .collect();
    assert_eq!(wait_for(&mut store, "t", 6), expected);
    // Another process, started now, reads both formats back at the same offsets: the stream
    // holds 4 JetStream messages for 6 broker messages.
    let mut other = open(&server);
    assert_eq!(wait_for(&mut other, "t", 6), expected);
    assert_eq!(other.offsets("t", 0), Ok((0, 6)));
}

#[test]
fn a_batch_read_back_from_its_stream_is_held_as_one_batch_in_the_copy() {
    let server = NatsServer::start();
    let mut writer = open(&server);
    let values: Vec<String> = (0..1000).map(|i| format!("value {i}")).collect();
    let messages: Vec<NewMessage<'_>> =
        values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
    writer.append("t", 0, &messages, 1).unwrap();
    assert!(writer.commit_and_wait(Instant::now(), 1).is_empty());
    // The writer's copy took the batch from its acknowledgement, as it was appended; another
    // process, started after it, reads it back from the stream when asked for it, and holds
    // it the same way: one batch, not a thousand of one message each (30 bytes of framing
    // more for each).
    let mut reader = open(&server);
    assert_eq!(wait_for(&mut reader, "t", 1000).len(), 1000);
    let payload: u64 = values.iter().map(|v| v.len() as u64).sum();
    let framing = |store: &NatsLog| store.held_bytes("t", 0).unwrap() - payload;
    assert!(
        framing(&writer) < 4 * 1000,
        "the writer's copy: {} bytes of framing",
        framing(&writer)
    );
    assert_eq!(framing(&reader), framing(&writer));
}

#[test]
fn two_stores_on_one_jetstream_agree_on_offsets_and_interleave_appends() {
    let server = NatsServer::start();
    let (mut a, mut b) = (open(&server), open(&server));
    let message = |v: &'static str| NewMessage::new(None, v.as_bytes());
    a.append("t", 0, &[message("a0"), message("a1")], 1).unwrap();
    assert!(a.commit_and_wait(Instant::now(), 1).is_empty());
    assert_eq!(wait_for(&mut b, "t", 2), [(0, "a0".into()), (1, "a1".into())]);

    // Both append before either has read the other's messages: both guess offset 2, and the
    // commits give each append the offsets JetStream gave.
    assert_eq!(a.append("t", 0, &[message("a2")], 1), Ok((2, 2)));
    assert_eq!(b.append("t", 0, &[message("b2")], 1), Ok((2, 2)));
    let ticket_a = a.commit(Instant::now(), 1);
    let ticket_b = b.commit(Instant::now(), 1);
    let settled_a: Vec<Settled> = a.wait_settled();
    let settled_b: Vec<Settled> = b.wait_settled();
    let given = |settled: &[Settled], ticket| {
        let commit = settled.iter().find(|s| s.ticket == ticket).unwrap();
        assert!(commit.failures.is_empty());
        commit.renumbered.iter().map(|r| (r.first, r.last)).collect::<Vec<_>>()
    };
    let (from_a, from_b) = (given(&settled_a, ticket_a), given(&settled_b, ticket_b));
    let mut offsets = [from_a[0].0, from_b[0].0];
    offsets.sort();
    assert_eq!(offsets, [2, 3], "a got {from_a:?}, b got {from_b:?}");

    let on_a = wait_for(&mut a, "t", 4);
    let on_b = wait_for(&mut b, "t", 4);
    assert_eq!(on_a, on_b);
    assert_eq!(on_a[from_a[0].0 as usize].1, "a2");
    assert_eq!(on_a[from_b[0].0 as usize].1, "b2");
}

#[test]
fn appends_are_refused_while_jetstream_is_down_and_go_on_once_it_is_back() {
    let mut server = NatsServer::start();
    let mut store = open(&server);
    let message = |v: &'static str| NewMessage::new(None, v.as_bytes());
    store.append("t", 0, &[message("before")], 1).unwrap();
    assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    server.kill();
    let started = Instant::now();
    store.append("t", 0, &[message("lost")], 1).unwrap();
    let failures = store.commit_and_wait(Instant::now(), 1);
    assert_eq!(failures.len(), 1, "the append while JetStream is down is refused");
    // Refused for sure when the connection was seen down, so that nothing was published;
    // otherwise (the kill not noticed yet) the publish may reach JetStream after it is back.
    let unsure = match &failures[0].error {
        StoreError::Unconfirmed(_) => true,
        StoreError::Unavailable(_) => false,
        other => panic!("refused as {other:?}, not as an unreachable JetStream"),
    };
    assert!(started.elapsed() < streams::COMMIT_TIMEOUT + Duration::from_secs(1));
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.append("t", 0, &[message("after")], 1).unwrap();
        if store.commit_and_wait(Instant::now(), 1).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "appends did not resume after JetStream came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = wait_for(&mut store, "t", 2);
    let values: Vec<&str> = held.iter().map(|(_, v)| v.as_str()).collect();
    if unsure && values.len() == 3 {
        assert_eq!(values, ["before", "lost", "after"]);
    } else {
        assert_eq!(values, ["before", "after"]);
    }
    assert!(held.iter().enumerate().all(|(at, (offset, _))| *offset == at as u64));
}

/// Polls `store` until `check` holds of it, for at most ten seconds; whether it did.
fn wait_until(store: &mut NatsLog, check: impl Fn(&NatsLog) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.settled();
        if check(store) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_topics_partitions_and_their_growth_reach_every_store_on_the_jetstream() {
    let server = NatsServer::start();
    let (mut a, mut b) = (open(&server), open(&server));
    a.create("p", 2, protocol::Retention::default()).unwrap();
    let message = NewMessage::new(None, b"one");
    assert_eq!(a.append("p", 1, std::slice::from_ref(&message), 1), Ok((0, 0)));
    assert!(a.commit_and_wait(Instant::now(), 1).is_empty());
    let seen = |store: &NatsLog| {
        let mut out = Vec::new();
        store.read("p", 1, 0, Budget::new(10, 1000), &mut out).is_ok_and(|_| out.len() == 1)
    };
    assert!(wait_until(&mut b, seen), "b reads partition 1");
    assert_eq!(b.partitions("p"), Ok(2));

    // Each partition is its own stream, partition 0 keeping the name topics had before.
    let names = [record::stream_name("p", 0), record::stream_name("p", 1)];
    assert_eq!(names, ["TOPIC_70", "TOPIC_70_1"]);

    a.grow("p", 4).unwrap();
    assert_eq!(a.partitions("p"), Ok(4));
    assert!(wait_until(&mut b, |store| store.partitions("p") == Ok(4)), "b learns the growth");
    assert!(matches!(b.grow("p", 3), Err(StoreError::InvalidPartitions(_))));
    assert_eq!(b.append("p", 3, &[message], 1), Ok((0, 0)));
    assert!(b.commit_and_wait(Instant::now(), 1).is_empty());
    let list = a.list();
    assert!(wait_until(&mut a, |store| store.list()[0].next_offsets == [0, 1, 0, 1]), "{list:?}");

    // A deletion removes every partition, here and there.
    a.delete("p").unwrap();
    assert!(wait_until(&mut b, |store| store.partitions("p").is_err()), "b forgets the topic");
    b.create("p", 1, protocol::Retention::default()).unwrap();
    assert!(wait_until(&mut a, |store| store.partitions("p") == Ok(1)));
    assert!(matches!(a.offsets("p", 1), Err(StoreError::UnknownPartition { partitions: 1, .. })));
}

#[test]
fn partitions_guessed_for_an_append_to_a_topic_made_elsewhere_with_fewer_are_dropped() {
    let server = NatsServer::start();
    let mut a = open(&server);
    let nats = NatsConfig {
        servers: vec![server.url()],
        replicas: 1,
        lease: Duration::from_secs(30),
        copy_dir: None,
        cache_bytes: super::DEFAULT_CACHE_BYTES,
        start_timeout: std::time::Duration::from_secs(10),
    };
    let mut b =
        NatsLog::open(StoreConfig { partitions: 3, ..StoreConfig::default() }, &nats).unwrap();
    a.create("t", 1, protocol::Retention::default()).unwrap();
    // b has not heard of the topic yet: its append lists it with b's own count of partitions,
    // until the topic's stream says how many it has.
    let message = NewMessage::new(None, b"v");
    b.append("t", 0, &[message], 1).unwrap();
    assert_eq!(b.partitions("t"), Ok(3));
    assert!(b.commit_and_wait(Instant::now(), 1).is_empty());
    assert_eq!(b.partitions("t"), Ok(1));
    assert_eq!(b.list()[0].next_offsets, [1]);
}

#[test]
fn a_store_still_reading_a_stream_says_where_it_ends_and_never_refuses_an_offset_up_to_there() {
    let server = NatsServer::start();
    let mut writer = open(&server);
    let value = [7u8; 100];
    let batch: Vec<NewMessage<'_>> = (0..1000).map(|_| NewMessage::new(None, &value)).collect();
    for _ in 0..200 {
        writer.append("big", 0, &batch, 1).unwrap();
        assert!(writer.commit_and_wait(Instant::now(), 1).is_empty());
    }
    // A process started now knows where the stream ends before its copy holds it all: a
    // group's committed offset or a follower's fetch there is not past the end (issue: both
    // went back to what the half-read copy held), only not readable yet.
    let mut late = open(&server);
    assert_eq!(late.offsets("big", 0), Ok((0, 200_000)));
    let mut out = Vec::new();
    let next = late.read("big", 0, 199_999, Budget::new(10, usize::MAX), &mut out);
    assert!(matches!(next, Ok(n) if n >= 199_999), "{next:?}");
    assert!(late.read("big", 0, 200_001, Budget::new(1, 1), &mut Vec::new()).is_err());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        late.settled();
        let mut out = Vec::new();
        let read = late.read("big", 0, 199_999, Budget::new(10, usize::MAX), &mut out);
        if !out.is_empty() {
            assert_eq!((read, out[0].offset, out.len()), (Ok(200_000), 199_999, 1));
            break;
        }
        assert!(Instant::now() < deadline, "the copy was not read to the end");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(late.offsets("big", 0), Ok((0, 200_000)));
}

/// Gives stream `stream` these subjects, as an operator would with `nats stream edit`.
fn set_subjects(server: &NatsServer, stream: &str, subjects: Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.unwrap();
        let mut config = stream.info().await.unwrap().config.clone();
        config.subjects = subjects;
        js.update_stream(config).await.unwrap();
    });
}

#[test]
fn a_partition_whose_stream_takes_no_appends_holds_up_no_other_partition() {
    let server = NatsServer::start();
    let mut store = open(&server);
    let message = |v: &'static str| NewMessage::new(None, v.as_bytes());
    for topic in ["slow", "fast"] {
        store.append(topic, 0, &[message("first")], 1).unwrap();
        assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    }
    // Nothing takes the slow topic's subject now: each publish there finds no stream (as
    // while a stream has no leader) and is published again until its commit's time runs out.
    let slow = record::stream_name("slow", 0);
    set_subjects(&server, &slow, vec!["elsewhere".into()]);
    store.append("slow", 0, &[message("stuck")], 1).unwrap();
    let stuck = store.commit(Instant::now(), 1);
    let mut seen: Vec<Settled> = Vec::new();
    for value in ["a", "b", "c"] {
        store.append("fast", 0, &[message(value)], 1).unwrap();
        let ticket = store.commit(Instant::now(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|s| s.ticket == ticket) {
            assert!(Instant::now() < deadline, "the fast topic's commit did not settle");
            seen.extend(store.settled().into_iter().filter(|s| s.ticket.0 != 0));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Each append to the fast topic is acknowledged while the slow one still waits.
        assert!(!seen.iter().any(|s| s.ticket == stuck), "the slow commit settled first");
        let fast = seen.iter().find(|s| s.ticket == ticket).unwrap();
        assert!(fast.failures.is_empty(), "{:?}", fast.failures);
    }
    seen.extend(store.wait_settled());
    let refused = seen.iter().find(|s| s.ticket == stuck).expect("the slow commit settles");
    assert_eq!(refused.failures.len(), 1);
    assert!(
        matches!(&refused.failures[0].error, StoreError::Unavailable(_)),
        "nothing of it was stored: {:?}",
        refused.failures[0].error
    );
    let fast: Vec<String> = wait_for(&mut store, "fast", 4).into_iter().map(|(_, v)| v).collect();
    assert_eq!(fast, ["first", "a", "b", "c"]);

    // Once the stream takes its subject again, so does the slow topic, right after what it held.
    set_subjects(&server, &slow, vec![record::subject("slow", 0)]);
    store.append("slow", 0, &[message("again")], 1).unwrap();
    assert!(store.commit_and_wait(Instant::now(), 1).is_empty());
    assert_eq!(wait_for(&mut store, "slow", 2), [(0, "first".into()), (1, "again".into())]);
}
