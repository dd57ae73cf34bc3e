//! Partitions against the real broker binary: topics made with several, appends placed by
//! partition, by key (where Kafka's murmur2 puts them) and in turn without one, fetches per
//! partition, the refusals of partitions that do not exist and of counts that cannot be,
//! growth, a restart on a data directory, and a data directory written by the broker before
//! topics had partitions (`fixtures/before-partitions/`, see its `make-before-partitions.py`).

mod wire;

use std::path::Path;

use protocol::{
    partition_for_key, ErrorCode, Fetch, GroupInfo, NewMessage, Placement, Request, Response,
    Retention, TopicInfo, DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MESSAGES,
};
use testkit::BrokerProcess;
use wire::{ask, claim, expect_error, start, topics, QUIET};

/// Creates `topic` with `partitions` partitions; panics unless it is created.
fn create(socket: &zmq::Socket, topic: &str, partitions: u32) {
    let request = Request::CreateTopic {
        topic,
        partitions: Some(partitions),
        retention: Retention::default(),
    };
    match ask(socket, &request) {
        Response::Created { topic: got, partitions: count } if got == topic => {
            assert_eq!(count, partitions);
        }
        other => panic!("create_topic {topic:?}: {other:?}"),
    }
}

/// Appends `messages`, (key, value), to `topic`, in `partition` or placed by the broker;
/// returns the reply's partition, first and last offsets, and its placements.
fn append(
    socket: &zmq::Socket,
    topic: &str,
    partition: Option<u32>,
    messages: &[(Option<&str>, &str)],
) -> (u32, u64, u64, Vec<Placement>) {
    let messages = messages
        .iter()
        .map(|(key, value)| NewMessage::new(key.map(str::as_bytes), value.as_bytes()))
        .collect();
    let request = Request::Append(protocol::Append { topic, messages, partition, sequenced: None });
    match ask(socket, &request) {
        Response::Appended { topic: got, partition, first_offset, last_offset, placed }
            if got == topic =>
        {
            (partition, first_offset, last_offset, placed)
        }
        other => panic!("append to {topic:?}: {other:?}"),
    }
}

/// A fetch of partition `partition` of `topic` from `offset`, waiting at most `wait_ms`.
fn fetch_of(claim: u64, topic: &str, partition: u32, offset: u64, wait_ms: u64) -> Request<'_> {
    Request::Fetch(Fetch {
        claim,
        topic,
        partition,
        offset,
        max_messages: DEFAULT_FETCH_MESSAGES,
        max_bytes: DEFAULT_FETCH_BYTES,
        wait_ms,
        batches: false,
    })
}

/// Every message of partition `partition` of `topic` from offset 0: (offset, key, value).
fn read(
    socket: &zmq::Socket,
    claim: u64,
    topic: &str,
    partition: u32,
) -> Vec<(u64, Option<String>, String)> {
    match ask(socket, &fetch_of(claim, topic, partition, 0, 0)) {
        Response::Messages { topic: got, partition: p, messages, .. } if got == topic => {
            assert_eq!(p, partition);
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            messages.iter().map(|m| (m.offset, m.key.map(text), text(m.value))).collect()
        }
        other => panic!("fetch of {topic:?} partition {partition}: {other:?}"),
    }
}

/// The listing of `topic`.
fn info(socket: &zmq::Socket, claim: u64, topic: &str) -> TopicInfo {
    let listed = topics(socket, claim);
    listed.into_iter().find(|t| t.name == topic).unwrap_or_else(|| panic!("{topic} not listed"))
}

/// Panics unless `response` is `315 unknown_partition` saying the topic has `partitions`.
#[track_caller]
fn expect_unknown_partition(response: &Response<'_>, partitions: u32) {
    expect_error(response, ErrorCode::UnknownPartition);
    let Response::Error { partitions: count, reason, .. } = response else { unreachable!() };
    assert_eq!(*count, Some(partitions), "{response:?}");
    assert!(reason.contains(&format!("has {partitions} partitions")), "{reason}");
}

#[test]
fn appends_land_in_the_partition_named_or_where_the_key_hashes() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");
    create(&socket, "orders", 4);

    // Named: offsets start at 0 in each partition.
    assert_eq!(append(&socket, "orders", Some(2), &[(None, "two-a"), (None, "two-b")]).1, 0);
    let (partition, first, last, _) = append(&socket, "orders", Some(2), &[(Some("k"), "two-c")]);
    assert_eq!((partition, first, last), (2, 2, 2));

    // Keyed: where Kafka's default partitioner puts them, in request order within each.
    let keys = ["customer-1", "customer-2", "customer-3", "customer-1", "foobar", "customer-2"];
    let messages: Vec<(Option<&str>, &str)> = keys.iter().map(|k| (Some(*k), *k)).collect();
    let (first, _, _, placed) = append(&socket, "orders", None, &messages);
    assert_eq!(first, partition_for_key(b"customer-1", 4));
    let reached: Vec<u32> = placed.iter().map(|p| p.partition).collect();
    let mut expected: Vec<u32> = keys.iter().map(|k| partition_for_key(k.as_bytes(), 4)).collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(reached, expected, "one placement per partition reached, in order");
    for partition in 0..4 {
        let keyed: Vec<String> = read(&socket, token, "orders", partition)
            .into_iter()
            .filter(|(_, key, value)| key.as_deref() == Some(value.as_str()))
            .map(|(_, _, value)| value)
            .collect();
        let wanted: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| partition_for_key(k.as_bytes(), 4) == partition)
            .collect();
        assert_eq!(keyed, wanted, "partition {partition}");
    }

    // Keyless: every message of an append on one partition, the next append on the next.
    let mut turns = Vec::new();
    for round in 0..4 {
        let values = [format!("round {round} a"), format!("round {round} b")];
        let messages: Vec<(Option<&str>, &str)> =
            values.iter().map(|v| (None, v.as_str())).collect();
        let (partition, first, last, placed) = append(&socket, "orders", None, &messages);
        assert_eq!(last, first + 1);
        assert!(placed.is_empty(), "one partition reached: {placed:?}");
        let held = read(&socket, token, "orders", partition);
        assert_eq!(held[first as usize].2, values[0]);
        assert_eq!(held[last as usize].2, values[1]);
        turns.push(partition);
    }
    turns.sort_unstable();
    assert_eq!(turns, [0, 1, 2, 3], "four keyless appends, four partitions in turn");

    let listed = info(&socket, token, "orders");
    assert_eq!(listed.partitions, 4);
    assert_eq!(listed.messages, 3 + 6 + 8);
    let counts: Vec<u64> = (0..4).map(|p| read(&socket, token, "orders", p).len() as u64).collect();
    assert_eq!(listed.next_offsets, counts);
    assert_eq!(listed.first_offsets, [0, 0, 0, 0]);
    assert_eq!((listed.first_offset, listed.next_offset), (0, counts[0]), "partition 0's");
}

#[test]
fn partitions_that_do_not_exist_and_counts_that_cannot_be_are_refused_changing_nothing() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");
    create(&socket, "three", 3);
    append(&socket, "three", Some(1), &[(None, "kept")]);
    let before = topics(&socket, token);

    expect_unknown_partition(&ask(&socket, &fetch_of(token, "three", 3, 0, 0)), 3);
    let append_to_9 = Request::Append(protocol::Append {
        sequenced: None,
        topic: "three",
        messages: vec![NewMessage::new(None, b"lost")],
        partition: Some(9),
    });
    expect_unknown_partition(&ask(&socket, &append_to_9), 3);
    // A topic an append would make has the broker's default count, one here: nothing is made.
    let to_new = Request::Append(protocol::Append {
        sequenced: None,
        topic: "new",
        messages: vec![NewMessage::new(None, b"lost")],
        partition: Some(1),
    });
    expect_unknown_partition(&ask(&socket, &to_new), 1);

    for partitions in [0, protocol::MAX_PARTITIONS + 1] {
        let request = Request::CreateTopic {
            topic: "bad",
            partitions: Some(partitions),
            retention: Retention::default(),
        };
        expect_error(&ask(&socket, &request), ErrorCode::InvalidPartitions);
    }
    for partitions in [0, 2, 3, protocol::MAX_PARTITIONS + 1] {
        let request = Request::CreatePartitions { topic: "three", partitions };
        expect_error(&ask(&socket, &request), ErrorCode::InvalidPartitions);
    }
    let unknown = Request::CreatePartitions { topic: "nope", partitions: 2 };
    expect_error(&ask(&socket, &unknown), ErrorCode::UnknownTopic);

    assert_eq!(topics(&socket, token), before);
    assert_eq!(read(&socket, token, "three", 1), [(0, None, "kept".to_owned())]);
}

#[test]
fn a_topic_grows_and_a_fetch_held_on_a_partition_wakes_for_that_partition_only() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");
    append(&socket, "grows", None, &[(None, "zero")]);
    assert_eq!(info(&socket, token, "grows").partitions, 1);

    let grow = Request::CreatePartitions { topic: "grows", partitions: 3 };
    match ask(&socket, &grow) {
        Response::PartitionsCreated { topic: "grows", partitions: 3 } => {}
        other => panic!("create_partitions: {other:?}"),
    }
    let listed = info(&socket, token, "grows");
    assert_eq!((listed.partitions, listed.next_offsets.as_slice()), (3, &[1, 0, 0][..]));
    assert_eq!(read(&socket, token, "grows", 0), [(0, None, "zero".to_owned())]);

    // A fetch held at the end of partition 2 is not answered by appends elsewhere.
    let waiter = broker.req(&context);
    let (_, waiting) = claim(&waiter, None, "waiter");
    waiter.send(wire::encode(&fetch_of(waiting, "grows", 2, 0, 5_000)), 0).unwrap();
    append(&socket, "grows", Some(1), &[(None, "one")]);
    append(&socket, "grows", Some(0), &[(None, "zero again")]);
    wire::assert_silent(&waiter, QUIET, "a fetch held on partition 2");
    append(&socket, "grows", Some(2), &[(None, "two")]);
    match wire::receive(&waiter) {
        Response::Messages { partition: 2, messages, .. } => {
            assert_eq!(messages.iter().map(|m| m.value).collect::<Vec<_>>(), [b"two"]);
        }
        other => panic!("held fetch: {other:?}"),
    }
}

/// Starts the broker on `dir` with `args` besides `--data-dir`.
fn start_on(dir: &Path, args: &[&str]) -> BrokerProcess {
    let dir = dir.to_str().expect("a UTF-8 path");
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    start(&all)
}

#[test]
fn partitions_and_growth_survive_a_restart_on_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_on(dir.path(), &["--partitions", "3"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    // A topic made by an append gets --partitions.
    let keyed: Vec<(Option<&str>, &str)> =
        ["a", "b", "c", "d", "e", "f"].iter().map(|k| (Some(*k), *k)).collect();
    append(&socket, "made", None, &keyed);
    // So does one created without a count, as Kafka's num.partitions does.
    let unsized_topic =
        Request::CreateTopic { topic: "plain", partitions: None, retention: Retention::default() };
    assert!(matches!(ask(&socket, &unsized_topic), Response::Created { partitions: 3, .. }));
    create(&socket, "grown", 2);
    append(&socket, "grown", Some(1), &[(None, "one")]);
    assert!(matches!(
        ask(&socket, &Request::CreatePartitions { topic: "grown", partitions: 5 }),
        Response::PartitionsCreated { partitions: 5, .. }
    ));
    append(&socket, "grown", Some(4), &[(None, "four")]);
    let (_, token) = claim(&socket, None, "partitions");
    let before = topics(&socket, token);
    assert_eq!(before.iter().map(|t| t.partitions).collect::<Vec<_>>(), [5, 3, 3]);
    let made: Vec<_> = (0..3).map(|p| read(&socket, token, "made", p)).collect();
    drop(socket);
    broker.interrupt();

    let broker = start_on(dir.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");
    assert_eq!(topics(&socket, token), before);
    for (p, held) in made.iter().enumerate() {
        assert_eq!(&read(&socket, token, "made", p as u32), held);
    }
    assert_eq!(read(&socket, token, "grown", 4), [(0, None, "four".to_owned())]);
    assert_eq!(append(&socket, "grown", Some(1), &[(None, "again")]).1, 1);
}

/// The groups of `topic`, as `list_groups` shows them.
fn groups(socket: &zmq::Socket, topic: &str) -> Vec<GroupInfo> {
    match ask(socket, &Request::ListGroups { group: None, topic: Some(topic) }) {
        Response::Groups { groups } => groups,
        other => panic!("list_groups: {other:?}"),
    }
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_data_directory_written_before_partitions_opens_with_every_message_and_group_state() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-partitions");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture, dir.path());
    let broker = start_on(dir.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");

    let listed = info(&socket, token, "orders");
    assert_eq!(listed.partitions, 1);
    assert_eq!((listed.first_offset, listed.next_offset, listed.messages), (0, 7, 7));
    let customer = |n: &str| Some(format!("customer-{n}"));
    let expected = vec![
        (0, customer("1"), "order 1 of customer 1".to_owned()),
        (1, None, "a keyless order".to_owned()),
        (2, customer("2"), "order 1 of customer 2".to_owned()),
        (3, customer("1"), "order 2 of customer 1".to_owned()),
        (4, None, "another keyless order".to_owned()),
        (5, customer("3"), "order 1 of customer 3".to_owned()),
        (6, None, "the last order".to_owned()),
    ];
    assert_eq!(read(&socket, token, "orders", 0), expected);
    expect_unknown_partition(&ask(&socket, &fetch_of(token, "orders", 1, 0, 0)), 1);

    // The group took four messages and acknowledged the first two.
    let billing = groups(&socket, "orders");
    assert_eq!(billing.len(), 1, "{billing:?}");
    let state = &billing[0];
    assert_eq!((state.group.as_str(), state.partition), ("billing", 0));
    assert_eq!((state.committed_offset, state.delivered_offset), (2, 4));
    assert_eq!((state.pending, state.end_offset), (2, 7));

    // The topic goes on, and can grow; the directory opens again afterwards.
    let (partition, first, last, _) =
        append(&socket, "orders", None, &[(Some("customer-4"), "new")]);
    assert_eq!((partition, first, last), (0, 7, 7));
    let grow = Request::CreatePartitions { topic: "orders", partitions: 2 };
    assert!(matches!(ask(&socket, &grow), Response::PartitionsCreated { partitions: 2, .. }));
    drop(socket);
    broker.interrupt();
    let broker = start_on(dir.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "partitions");
    let listed = info(&socket, token, "orders");
    assert_eq!((listed.partitions, listed.next_offsets.as_slice()), (2, &[8, 0][..]));
    assert_eq!(read(&socket, token, "orders", 0)[..7], expected[..]);
    assert_eq!(groups(&socket, "orders")[0].committed_offset, 2);
}

#[test]
fn a_default_count_of_partitions_out_of_range_stops_the_broker_at_start() {
    for count in ["0", "10001", "many"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--bind", "tcp://127.0.0.1:*", "--partitions", count])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the broker");
        assert!(!output.status.success(), "--partitions {count} was taken");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--partitions"), "{stderr}");
    }
}
