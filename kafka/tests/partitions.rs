//! Partitions through the Kafka door, with real clients: topics made and grown by the Kafka
//! AdminClient, producers choosing partitions by number and by key (landing where the native
//! door puts the same keys), kcat reading one partition, group members sharing a topic's
//! partitions through each of librdkafka's assignors, and bad partitions refused without a
//! change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, GroupId, ListOffsetsRequest,
    ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProduceRequest, ProduceResponse, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use common::{ask, binary, run, script, spawn_collecting, success, Door};

/// Kafka's error codes the tests expect.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PARTITIONS: i16 = 37;

/// Runs `kafka-partitions.py` with `args`; its output.
fn partitions(args: &[&str]) -> String {
    let mut command = Command::new("python3");
    command.arg(script("kafka-partitions.py")).args(args);
    success(&run(command, ""), &format!("kafka-partitions.py {}", args.join(" ")))
}

/// [`partitions`] with the producer idempotent.
fn idempotent(args: &[&str]) -> String {
    let mut command = Command::new("python3");
    command.arg(script("kafka-partitions.py")).args(args).env("KAFKA_IDEMPOTENCE", "1");
    success(
        &run(command, ""),
        &format!("KAFKA_IDEMPOTENCE=1 kafka-partitions.py {}", args.join(" ")),
    )
}

/// The partition count of every topic, and each one's next offsets, from a native
/// `list_topics` under a claim of its own.
fn native_topics(door: &Door) -> BTreeMap<String, Vec<u64>> {
    let mut client = client::Client::connect(&door.endpoint(), testkit::STEP).expect("connect");
    let claimed = client.claim(None, testkit::STEP, Some("test")).expect("a logical broker");
    let topics = client.list_topics(claimed.token).expect("list_topics");
    client.release(claimed.token).expect("release");
    topics
        .into_iter()
        .map(|t| {
            assert_eq!(t.next_offsets.len(), usize::try_from(t.partitions).expect("count"));
            (t.name, t.next_offsets)
        })
        .collect()
}

#[test]
fn the_admin_client_makes_and_grows_topics_that_both_doors_see_whole() {
    let door = Door::start(&["--brokers", "2"]);
    let bootstrap = door.bootstrap();
    let made = partitions(&["create", &bootstrap, "orders", "3"]);
    assert_eq!(made, "created\npartitions 3\n");
    assert_eq!(native_topics(&door)["orders"].len(), 3);
    let mut kcat = Command::new("kcat");
    kcat.args(["-L", "-b", &bootstrap, "-t", "orders"]);
    let listed = success(&run(kcat, ""), "kcat -L");
    assert!(listed.contains("topic \"orders\" with 3 partitions:"), "{listed}");
    for p in 0..3 {
        assert!(listed.contains(&format!("partition {p}, leader 1,")), "{listed}");
    }

    assert_eq!(partitions(&["grow", &bootstrap, "orders", "5"]), "grown\npartitions 5\n");
    assert_eq!(native_topics(&door)["orders"].len(), 5);
    // Shrinking, staying, and past the most: refused, and the topic keeps its five.
    for count in ["4", "5", "10001"] {
        let refused = partitions(&["grow", &bootstrap, "orders", count]);
        assert_eq!(refused, "refused INVALID_PARTITIONS\npartitions 5\n", "to {count}");
    }
    let again = partitions(&["create", &bootstrap, "orders", "3"]);
    assert_eq!(again, "refused TOPIC_ALREADY_EXISTS\npartitions 5\n");
    let unknown = partitions(&["grow", &bootstrap, "nowhere", "2"]);
    assert_eq!(unknown, "refused UNKNOWN_TOPIC_OR_PART\n");
    assert_eq!(native_topics(&door)["orders"].len(), 5);
    assert!(!native_topics(&door).contains_key("nowhere"));
    door.stop();
}

/// The partition and key of every message of `topic`, read with kcat from every partition.
fn placed(door: &Door, topic: &str) -> Vec<(u32, String)> {
    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-q", "-b", &door.bootstrap(), "-t", topic, "-f", "%p %k\n"]);
    let out = success(&run(kcat, ""), "kcat -C");
    out.lines()
        .map(|line| {
            let (partition, key) = line.split_once(' ').expect("PARTITION KEY");
            (partition.parse().expect("a partition"), key.to_owned())
        })
        .collect()
}

#[test]
fn keys_land_on_the_same_partitions_through_the_native_door_and_confluent_kafka() {
    let door = Door::start(&[]);
    let bootstrap = door.bootstrap();
    assert_eq!(partitions(&["create", &bootstrap, "keyed", "3"]), "created\npartitions 3\n");
    let keys: Vec<String> = (0..12).map(|i| format!("customer-{i}")).collect();
    let messages: Vec<String> = keys.iter().map(|k| format!("{k}=kafka")).collect();
    let mut args = vec!["produce", &bootstrap, "keyed"];
    args.extend(messages.iter().map(String::as_str));
    let delivered = partitions(&args);
    // The native door: the `producer`, which hashes keys itself, and an append that names no
    // partition, which the broker places.
    let mut native = client::Client::connect(&door.endpoint(), testkit::STEP).expect("connect");
    for key in &keys {
        let mut produce = Command::new(binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", "keyed", "--key", key, "native"]);
        success(&run(produce, ""), "producer --key");
        let message = protocol::NewMessage::new(Some(key.as_bytes()), b"placed");
        native.append("keyed", None, vec![message]).expect("a native append");
    }
    // Where confluent-kafka said each went is where Kafka's murmur2 puts the key.
    for (line, key) in delivered.lines().zip(&keys) {
        let partition = line.split(' ').nth(1).expect("delivered P O V");
        let expected = protocol::partition_for_key(key.as_bytes(), 3);
        assert_eq!(partition, expected.to_string(), "{key}: {delivered}");
    }
    // Every message of a key, from either door, is on that partition, and every partition
    // has some.
    let all = placed(&door, "keyed");
    assert_eq!(all.len(), 3 * keys.len(), "{all:?}");
    for (partition, key) in &all {
        assert_eq!(*partition, protocol::partition_for_key(key.as_bytes(), 3), "{key}");
    }
    let used: BTreeSet<u32> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(used.len(), 3, "twelve keys on fewer than three partitions: {all:?}");
    door.stop();
}

#[test]
fn producers_send_to_a_partition_by_number_idempotent_or_not_and_kcat_reads_one_partition() {
    let door = Door::start(&["--brokers", "2"]);
    let bootstrap = door.bootstrap();
    assert_eq!(partitions(&["create", &bootstrap, "numbered", "3"]), "created\npartitions 3\n");
    let delivered = partitions(&["produce", &bootstrap, "numbered", "2:a", "0:b", "2:c"]);
    assert_eq!(delivered, "delivered 2 0 a\ndelivered 0 0 b\ndelivered 2 1 c\n");
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &bootstrap, "-t", "numbered", "-p", "1"]);
    success(&run(kcat, "d\ne\n"), "kcat -P -p 1");
    let read = |p: &str| {
        let mut kcat = Command::new("kcat");
        kcat.args(["-C", "-e", "-q", "-b", &bootstrap, "-t", "numbered", "-p", p]);
        kcat.args(["-f", "%p:%o:%s\n"]);
        success(&run(kcat, ""), "kcat -C -p")
    };
    assert_eq!(read("0"), "0:0:b\n");
    assert_eq!(read("1"), "1:0:d\n1:1:e\n");
    assert_eq!(read("2"), "2:0:a\n2:1:c\n");
    assert_eq!(native_topics(&door)["numbered"], vec![1, 2, 2]);
    // An idempotent producer numbers its batches per partition: each partition's first batch
    // is sequence 0, and none is taken for a retry of another partition's.
    let delivered = idempotent(&["produce", &bootstrap, "numbered", "0:f", "1:g", "2:h", "1:i"]);
    assert_eq!(delivered, "delivered 0 1 f\ndelivered 1 2 g\ndelivered 2 2 h\ndelivered 1 3 i\n");
    assert_eq!(native_topics(&door)["numbered"], vec![2, 4, 3]);
    // A partition the topic lacks: kcat is told so, and nothing is stored.
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &bootstrap, "-t", "numbered", "-p", "7"]);
    let refused = run(kcat, "lost\n");
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(said.contains("unknown partition"), "{said}");
    assert_eq!(native_topics(&door)["numbered"], vec![2, 4, 3]);
    door.stop();
}

#[test]
fn a_topic_a_kafka_producer_or_create_topics_of_minus_one_makes_gets_the_brokers_count() {
    let door = Door::start(&["--brokers", "2", "--partitions", "4"]);
    let bootstrap = door.bootstrap();
    // librdkafka's Metadata allows creation: the gateway makes the topic with create_topic
    // without a count, which gives it the broker's --partitions.
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &bootstrap, "-t", "made", "-p", "3"]);
    success(&run(kcat, "last\n"), "kcat -P -p 3");
    assert_eq!(native_topics(&door)["made"], vec![0, 0, 0, 1]);
    // An existing topic: its count again, and still nothing stored by asking.
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &bootstrap, "-t", "made", "-p", "0"]);
    success(&run(kcat, "first\n"), "kcat -P -p 0");
    assert_eq!(native_topics(&door)["made"], vec![1, 0, 0, 1]);
    // CreateTopics with num_partitions -1 asks for the broker's default, as on Kafka.
    let mut stream = TcpStream::connect(&bootstrap).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    assert_eq!(create_topic(&mut stream, "defaulted", -1), 0);
    assert_eq!(native_topics(&door)["defaulted"], vec![0, 0, 0, 0]);
    door.stop();
}

/// A group member of `kafka-partitions.py member` and the lines it printed.
struct Member {
    /// The Python process.
    child: Child,
    /// Its standard output, line by line, as it comes.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(door: &Door, topic: &str, group: &str, strategy: &str) -> Member {
        testkit::require::python_modules(&["confluent_kafka"]);
        let mut command = Command::new("python3");
        command.arg(script("kafka-partitions.py")).args([
            "member",
            &door.bootstrap(),
            topic,
            group,
            strategy,
        ]);
        let (child, lines) = spawn_collecting(command, "python3 kafka-partitions.py member");
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Its partitions, as it last printed them.
    fn assignment(&self) -> Option<BTreeSet<u32>> {
        let lines = self.lines();
        let last = lines.iter().rev().find_map(|l| l.strip_prefix("assignment "))?;
        Some(last.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().expect("P")).collect())
    }

    /// The messages it read: partition, offset, value.
    fn messages(&self) -> Vec<(u32, u64, String)> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("message "))
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let partition = parts.next().and_then(|p| p.parse().ok()).expect("P");
                let offset = parts.next().and_then(|o| o.parse().ok()).expect("O");
                (partition, offset, parts.next().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// Stops it with SIGTERM, after which it closes (leaving its group) and ends.
    fn close(&mut self) {
        testkit::signal_process(self.child.id(), "TERM");
        let ended = testkit::wait_child(&mut self.child, Duration::from_secs(30));
        assert!(ended.is_some_and(|s| s.success()), "the member did not close: {ended:?}");
        assert_eq!(self.lines().last().map(String::as_str), Some("closed"));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Child::kill signals this process by its id, and is quiet if it already ended.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, within `limit`; `what` and `state` say what did not come.
fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}: {}", state());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two members of a group with `strategy` share a topic of three partitions; the one that
/// closes leaves its partitions to the other, which goes on from its commits.
fn two_members_share_and_one_takes_over(door: &Door, strategy: &str) {
    let bootstrap = door.bootstrap();
    let topic = format!("shared-{strategy}");
    let group = format!("sharers-{strategy}");
    assert_eq!(partitions(&["create", &bootstrap, &topic, "3"]), "created\npartitions 3\n");
    let all: BTreeSet<u32> = [0, 1, 2].into();
    let mut first = Member::start(door, &topic, &group, strategy);
    let state = |m: &Member| format!("{:?}", m.lines());
    wait_for(
        Duration::from_secs(30),
        "the first member holds every partition",
        || first.assignment().as_ref() == Some(&all),
        || state(&first),
    );
    let second = Member::start(door, &topic, &group, strategy);
    let shared = || {
        let (Some(a), Some(b)) = (first.assignment(), second.assignment()) else {
            return false;
        };
        !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).eq(all.iter())
    };
    wait_for(Duration::from_secs(40), "both members hold a share", shared, || {
        format!("{} / {}", state(&first), state(&second))
    });

    let produce = |round: &str| {
        let messages: Vec<String> =
            (0..3).flat_map(|p| (0..2).map(move |i| format!("{p}:{round}-{p}-{i}"))).collect();
        let mut args = vec!["produce", bootstrap.as_str(), topic.as_str()];
        args.extend(messages.iter().map(String::as_str));
        partitions(&args);
        messages.into_iter().map(|m| m[2..].to_owned()).collect::<Vec<_>>()
    };
    let before = produce("before");
    let read = |m: &Member| m.messages().into_iter().map(|(_, _, v)| v).collect::<BTreeSet<_>>();
    wait_for(
        Duration::from_secs(30),
        "the members read the first messages",
        || before.iter().all(|v| read(&first).contains(v) || read(&second).contains(v)),
        || format!("{} / {}", state(&first), state(&second)),
    );
    // Each read only its own partitions' messages, each once.
    let (mine, theirs) = (first.assignment().expect("held"), second.assignment().expect("held"));
    assert!(first.messages().iter().all(|(p, ..)| mine.contains(p)), "{}", state(&first));
    assert!(second.messages().iter().all(|(p, ..)| theirs.contains(p)), "{}", state(&second));
    let failed = |m: &Member| m.lines().iter().any(|l| l.starts_with("uncommitted"));
    assert!(!failed(&first) && !failed(&second), "{} / {}", state(&first), state(&second));
    assert_eq!(first.messages().len() + second.messages().len(), before.len());

    first.close();
    wait_for(
        Duration::from_secs(40),
        "the second member takes every partition",
        || second.assignment().as_ref() == Some(&all),
        || state(&second),
    );
    let after = produce("after");
    wait_for(
        Duration::from_secs(30),
        "the second member reads the later messages",
        || after.iter().all(|v| read(&second).contains(v)),
        || state(&second),
    );
    // On the partitions it took over it went on from the first member's commits: offset 2,
    // nothing of the first round again.
    for partition in &mine {
        let offsets: Vec<u64> = second
            .messages()
            .iter()
            .filter(|(p, ..)| p == partition)
            .map(|(_, offset, _)| *offset)
            .collect();
        assert_eq!(offsets, vec![2, 3], "partition {partition}: {}", state(&second));
    }
    assert!(!failed(&second), "{}", state(&second));
}

#[test]
fn group_members_share_partitions_with_each_assignor_and_the_survivor_resumes_from_commits() {
    let door = Door::start(&[]);
    for strategy in ["range", "roundrobin", "cooperative-sticky"] {
        two_members_share_and_one_takes_over(&door, strategy);
    }
    door.stop();
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// `CreateTopics` v4 of `topic` with `count` partitions: the error code.
fn create_topic(stream: &mut TcpStream, topic: &str, count: i32) -> i16 {
    let mut wanted = CreatableTopic::default();
    wanted.name = name(topic);
    wanted.num_partitions = count;
    wanted.replication_factor = -1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 10_000;
    let mut reply = ask(stream, ApiKey::CreateTopics, 4, RequestKind::CreateTopics(request));
    CreateTopicsResponse::decode(&mut reply, 4).expect("CreateTopics v4").topics[0].error_code
}

/// `CreatePartitions` v3 (a flexible version) of `topic` to `count`: the error code.
fn grow(stream: &mut TcpStream, topic: &str, count: i32, validate_only: bool) -> i16 {
    grow_assigned(stream, topic, count, validate_only, None)
}

/// [`grow`] with replica assignments: the broker ids of each new partition.
fn grow_assigned(
    stream: &mut TcpStream,
    topic: &str,
    count: i32,
    validate_only: bool,
    assignments: Option<&[&[i32]]>,
) -> i16 {
    let mut wanted = CreatePartitionsTopic::default();
    wanted.name = name(topic);
    wanted.count = count;
    wanted.assignments = assignments.map(|all| {
        all.iter()
            .map(|ids| {
                let mut assignment = CreatePartitionsAssignment::default();
                assignment.broker_ids = ids.iter().map(|id| BrokerId(*id)).collect();
                assignment
            })
            .collect()
    });
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 10_000;
    request.validate_only = validate_only;
    let kind = RequestKind::CreatePartitions(request);
    let mut reply = ask(stream, ApiKey::CreatePartitions, 3, kind);
    CreatePartitionsResponse::decode(&mut reply, 3).expect("CreatePartitions v3").results[0]
        .error_code
}

/// `Produce` v7 of one record to `partition`: the error code and base offset.
fn produce(stream: &mut TcpStream, topic: &str, partition: i32, value: &str) -> (i16, i64) {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(value.to_owned())),
        headers: Default::default(),
    };
    let mut records = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut records, &[record], &options).expect("a batch");
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records.freeze());
    let mut wanted = TopicProduceData::default();
    wanted.name = name(topic);
    wanted.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![wanted];
    let mut reply = ask(stream, ApiKey::Produce, 7, RequestKind::Produce(request));
    let response = ProduceResponse::decode(&mut reply, 7).expect("Produce v7");
    let part = &response.responses[0].partition_responses[0];
    (part.error_code, part.base_offset)
}

/// `Fetch` v11 of `topic`'s `partitions`, each from its offset, waiting up to `max_wait_ms`:
/// each partition's error code and values.
fn fetch(
    stream: &mut TcpStream,
    topic: &str,
    partitions: &[(i32, i64)],
    max_wait_ms: i32,
) -> Vec<(i32, i16, Vec<String>)> {
    let mut wanted = FetchTopic::default();
    wanted.topic = name(topic);
    wanted.partitions = partitions
        .iter()
        .map(|(index, from)| {
            let mut partition = FetchPartition::default();
            partition.partition = *index;
            partition.fetch_offset = *from;
            partition.partition_max_bytes = 1 << 20;
            partition
        })
        .collect();
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.topics = vec![wanted];
    let mut reply = ask(stream, ApiKey::Fetch, 11, RequestKind::Fetch(request));
    let response = FetchResponse::decode(&mut reply, 11).expect("Fetch v11");
    response.responses[0]
        .partitions
        .iter()
        .map(|data| {
            let mut records = data.records.clone().unwrap_or_default();
            let values = if records.is_empty() {
                Vec::new()
            } else {
                RecordBatchDecoder::decode_all(&mut records)
                    .expect("record batches")
                    .into_iter()
                    .flat_map(|set| set.records)
                    .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
                    .collect()
            };
            (data.partition_index, data.error_code, values)
        })
        .collect()
}

/// `ListOffsets` v5 of `partition` at `timestamp` (-1 latest, -2 earliest): error and offset.
fn list_offset(stream: &mut TcpStream, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let mut wanted = ListOffsetsPartition::default();
    wanted.partition_index = partition;
    wanted.timestamp = timestamp;
    let mut asked = ListOffsetsTopic::default();
    asked.name = name(topic);
    asked.partitions = vec![wanted];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = vec![asked];
    let mut reply = ask(stream, ApiKey::ListOffsets, 5, RequestKind::ListOffsets(request));
    let response = ListOffsetsResponse::decode(&mut reply, 5).expect("ListOffsets v5");
    let part = &response.topics[0].partitions[0];
    (part.error_code, part.offset)
}

/// `OffsetCommit` v8 of `offset` on `partition` from outside any group: the error code.
fn commit(stream: &mut TcpStream, group: &str, topic: &str, partition: i32, offset: i64) -> i16 {
    let mut wanted = OffsetCommitRequestPartition::default();
    wanted.partition_index = partition;
    wanted.committed_offset = offset;
    let mut asked = OffsetCommitRequestTopic::default();
    asked.name = name(topic);
    asked.partitions = vec![wanted];
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    request.generation_id_or_member_epoch = -1;
    request.topics = vec![asked];
    let mut reply = ask(stream, ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(request));
    let response = OffsetCommitResponse::decode(&mut reply, 8).expect("OffsetCommit v8");
    response.topics[0].partitions[0].error_code
}

/// `OffsetFetch` v7 of `group`: each (topic, partition, committed offset) it answers, for
/// `wanted` (topic, partitions) or, with `None`, every partition the group has state on.
fn kafka_offsets(
    stream: &mut TcpStream,
    group: &str,
    wanted: Option<(&str, &[i32])>,
) -> Vec<(String, i32, i64)> {
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    request.topics = wanted.map(|(topic, partitions)| {
        let mut asked = OffsetFetchRequestTopic::default();
        asked.name = name(topic);
        asked.partition_indexes = partitions.to_vec();
        vec![asked]
    });
    let mut reply = ask(stream, ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(request));
    let response = OffsetFetchResponse::decode(&mut reply, 7).expect("OffsetFetch v7");
    assert_eq!(response.error_code, 0);
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
        })
        .collect()
}

/// The committed offsets of `group`, by (topic, partition), from a native `list_groups`.
fn committed(door: &Door, group: &str) -> BTreeMap<(String, u32), u64> {
    let mut client = client::Client::connect(&door.endpoint(), testkit::STEP).expect("connect");
    match client.list_groups(Some(group), None) {
        Ok(states) => {
            states.into_iter().map(|s| ((s.topic, s.partition), s.committed_offset)).collect()
        }
        Err(e) if e.broker_code() == Some(protocol::ErrorCode::UnknownGroup) => BTreeMap::new(),
        Err(e) => panic!("list_groups: {e}"),
    }
}

#[test]
fn each_partition_is_produced_fetched_listed_and_committed_on_its_own() {
    let door = Door::start(&["--brokers", "2"]);
    let mut stream = TcpStream::connect(door.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    assert_eq!(create_topic(&mut stream, "parts", 3), 0);
    assert_eq!(produce(&mut stream, "parts", 1, "one"), (0, 0));
    assert_eq!(produce(&mut stream, "parts", 2, "two"), (0, 0));
    assert_eq!(produce(&mut stream, "parts", 2, "three"), (0, 1));
    assert_eq!(list_offset(&mut stream, "parts", 0, -1), (0, 0));
    assert_eq!(list_offset(&mut stream, "parts", 2, -1), (0, 2));
    assert_eq!(list_offset(&mut stream, "parts", 2, -2), (0, 0));
    // By time: the partition's first message appended since then, or none (-1).
    assert_eq!(list_offset(&mut stream, "parts", 2, 0), (0, 0));
    assert_eq!(list_offset(&mut stream, "parts", 0, 0), (0, -1));
    assert_eq!(list_offset(&mut stream, "parts", 2, i64::MAX / 2), (0, -1));
    let read = fetch(&mut stream, "parts", &[(0, 0), (1, 0), (2, 0)], 0);
    assert_eq!(
        read,
        vec![
            (0, 0, vec![]),
            (1, 0, vec!["one".to_owned()]),
            (2, 0, vec!["two".to_owned(), "three".to_owned()])
        ]
    );
    assert_eq!(commit(&mut stream, "readers", "parts", 2, 1), 0);
    assert_eq!(commit(&mut stream, "readers", "parts", 1, 1), 0);
    let offsets = committed(&door, "readers");
    assert_eq!(offsets.get(&("parts".to_owned(), 2)), Some(&1), "{offsets:?}");
    assert_eq!(offsets.get(&("parts".to_owned(), 1)), Some(&1), "{offsets:?}");
    // Read back through the Kafka door: the partitions named, or every one with an offset.
    // Partition 0 was never committed, so it has none (-1), as a partition the topic lacks:
    // the consumer's auto.offset.reset places it.
    let parts = |p: i32, o: i64| ("parts".to_owned(), p, o);
    let named = kafka_offsets(&mut stream, "readers", Some(("parts", &[0, 1, 2, 5])));
    assert_eq!(named, vec![parts(0, -1), parts(1, 1), parts(2, 1), parts(5, -1)]);
    let every = kafka_offsets(&mut stream, "readers", None);
    assert_eq!(every, vec![parts(1, 1), parts(2, 1)]);

    // A fetch of several partitions that finds nothing waits, and a message on any of them
    // ends the wait, not only one on the first.
    let mut waiting = TcpStream::connect(door.bootstrap()).expect("connect");
    waiting.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let started = Instant::now();
    let waiter = std::thread::spawn(move || {
        let read = fetch(&mut waiting, "parts", &[(0, 0), (1, 1)], 20_000);
        (read, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(produce(&mut stream, "parts", 1, "late"), (0, 1));
    let (read, took) = waiter.join().expect("the waiting fetch");
    assert_eq!(read, vec![(0, 0, vec![]), (1, 0, vec!["late".to_owned()])]);
    assert!(took < Duration::from_secs(10), "answered after {took:?}, not at the message");
    door.stop();
}

#[test]
fn partitions_a_topic_lacks_and_bad_counts_are_refused_and_change_nothing() {
    let door = Door::start(&["--brokers", "2"]);
    let mut stream = TcpStream::connect(door.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    assert_eq!(create_topic(&mut stream, "three", 3), 0);
    assert_eq!(produce(&mut stream, "three", 0, "kept"), (0, 0));
    let unknown = UNKNOWN_TOPIC_OR_PARTITION;
    for partition in [3, 7, -1, i32::MAX] {
        assert_eq!(produce(&mut stream, "three", partition, "lost"), (unknown, -1));
        let read = fetch(&mut stream, "three", &[(partition, 0)], 0);
        assert_eq!(read, vec![(partition, unknown, vec![])]);
        assert_eq!(list_offset(&mut stream, "three", partition, -1).0, unknown);
        assert_eq!(commit(&mut stream, "readers", "three", partition, 0), unknown);
    }
    assert_eq!(native_topics(&door)["three"], vec![1, 0, 0]);
    assert!(committed(&door, "readers").is_empty());

    // Counts: none, too many, fewer or as many as now (-1 asks for the default, one).
    for count in [0, -2, 10_001, i32::MAX] {
        assert_eq!(create_topic(&mut stream, "bad", count), INVALID_PARTITIONS, "{count}");
    }
    assert!(!native_topics(&door).contains_key("bad"));
    for count in [0, -1, 1, 2, 3, 10_001] {
        for validate_only in [true, false] {
            let code = grow(&mut stream, "three", count, validate_only);
            assert_eq!(code, INVALID_PARTITIONS, "{count} {validate_only}");
        }
    }
    assert_eq!(grow(&mut stream, "absent", 4, false), unknown);
    assert_eq!(native_topics(&door)["three"], vec![1, 0, 0]);
    assert!(!native_topics(&door).contains_key("absent"));
    // Replicas: only the gateway, node 1, one list per new partition.
    let invalid_assignment = 39;
    let assigned = |stream: &mut TcpStream, ids: &[&[i32]]| {
        grow_assigned(stream, "three", 4, false, Some(ids))
    };
    assert_eq!(assigned(&mut stream, &[&[2]]), invalid_assignment);
    assert_eq!(assigned(&mut stream, &[&[1, 2]]), invalid_assignment);
    assert_eq!(assigned(&mut stream, &[&[1], &[1]]), invalid_assignment);
    assert_eq!(native_topics(&door)["three"], vec![1, 0, 0]);
    // Checked only, then done: the topic grows once, by the second.
    assert_eq!(grow(&mut stream, "three", 4, true), 0);
    assert_eq!(native_topics(&door)["three"].len(), 3);
    assert_eq!(grow(&mut stream, "three", 4, false), 0);
    assert_eq!(native_topics(&door)["three"], vec![1, 0, 0, 0]);
    assert_eq!(produce(&mut stream, "three", 3, "new"), (0, 0));
    assert_eq!(grow_assigned(&mut stream, "three", 5, false, Some(&[&[1]])), 0);
    assert_eq!(native_topics(&door)["three"], vec![1, 0, 0, 1, 0]);
    door.stop();
}
