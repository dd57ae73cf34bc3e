//! Kafka consumer groups through the gateway with real clients: members that die are replaced.

mod common;

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, run, script, spawn_collecting, success, Door};

/// A confluent-kafka group member (`kafka-confluent.py member`) and the lines it printed.
struct Member {
    /// The Python process.
    child: Child,
    /// Its standard output, line by line, as it comes.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(door: &Door, topic: &str, group: &str) -> Member {
        Member::start_from(door, topic, group, "earliest")
    }

    /// A member whose `auto.offset.reset` is `reset`.
    fn start_from(door: &Door, topic: &str, group: &str, reset: &str) -> Member {
        let mut command = Command::new("python3");
        command.arg(script("kafka-confluent.py")).args(["member", &door.bootstrap(), topic, group]);
        command.env("KAFKA_OFFSET_RESET", reset);
        let (child, lines) = spawn_collecting(command, "python3 kafka-confluent.py member");
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Waits until `done` holds of its lines, within `limit`.
    fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.lines()) {
            assert!(Instant::now() < deadline, "{what} within {limit:?}: {:?}", self.lines());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether its last assignment holds the partition.
    fn holds(&self) -> bool {
        self.lines().iter().rev().find(|l| l.starts_with("assigned")).map(String::as_str)
            == Some("assigned 1")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Child::kill signals this process by its id, and is quiet if it already ended.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assignments(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.starts_with("assigned")).count()
}

#[test]
fn a_member_killed_with_sigkill_is_replaced_within_its_session_timeout() {
    let door = Door::start(&[]);
    let produce = |value: &str| {
        let mut produce = Command::new(binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", "work", value]);
        success(&run(produce, ""), "producer");
    };
    produce("before");
    let first = Member::start(&door, "work", "workers");
    first.wait_for(Duration::from_secs(30), "the first member reads", |l| {
        l.iter().any(|l| l == "message before")
    });
    let second = Member::start(&door, "work", "workers");
    // Both have their assignment of the second generation: one holds the partition.
    second.wait_for(Duration::from_secs(30), "the second member is assigned", |l| {
        assignments(l) >= 1
    });
    first.wait_for(Duration::from_secs(30), "the first member is assigned again", |l| {
        assignments(l) >= 2
    });
    let (mut holder, survivor) = if first.holds() { (first, second) } else { (second, first) };
    assert!(!survivor.holds(), "both hold the partition");
    testkit::signal_process(holder.child.id(), "KILL");
    let _ = holder.child.wait();
    produce("after");
    // Session timeout (6 s) and the rebalance, with room for a slow machine.
    survivor.wait_for(Duration::from_secs(40), "the survivor takes over", |l| {
        l.iter().any(|l| l == "message after")
    });
    assert!(survivor.holds());
    drop(holder);
    drop(survivor);
    door.stop();
}

/// What `kafka-confluent.py groups` prints of `group`.
fn admin_groups(door: &Door, group: &str) -> String {
    let mut admin = Command::new("python3");
    admin.arg(script("kafka-confluent.py")).args(["groups", &door.bootstrap(), group]);
    success(&run(admin, ""), "AdminClient list and describe")
}

#[test]
fn the_admin_client_lists_and_describes_groups_of_both_doors() {
    let door = Door::start(&[]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "admin", "x"]);
    success(&run(produce, ""), "producer");
    // A native group with a committed offset, no Kafka member.
    let mut native = Command::new(binary("consumer"));
    native.args(["--connect", &door.endpoint(), "group-reset", "--to-offset", "1"]);
    native.args(["natives", "admin"]);
    success(&run(native, ""), "consumer group-reset");
    let member = Member::start(&door, "admin", "kafkas");
    member.wait_for(Duration::from_secs(30), "the member is assigned", |l| {
        l.iter().any(|l| l == "assigned 1")
    });
    let out = admin_groups(&door, "kafkas");
    assert!(out.contains("listed kafkas STABLE\n"), "{out}");
    assert!(out.contains("listed natives EMPTY\n"), "{out}");
    assert!(out.contains("described kafkas STABLE\n"), "{out}");
    assert!(out.contains("member member admin:0\n"), "{out}");
    let unknown = admin_groups(&door, "nobody");
    assert!(unknown.contains("described nobody DEAD\n"), "{unknown}");
    drop(member);
    door.stop();
}

#[test]
fn the_admin_client_deletes_groups_without_members_and_refuses_the_others() {
    let door = Door::start(&[]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "doomed", "x"]);
    success(&run(produce, ""), "producer");
    let mut native = Command::new(binary("consumer"));
    native.args(["--connect", &door.endpoint(), "group-reset", "--to-offset", "1"]);
    native.args(["idle", "doomed"]);
    success(&run(native, ""), "consumer group-reset");
    let member = Member::start(&door, "doomed", "busy");
    member.wait_for(Duration::from_secs(30), "the member is assigned", |l| {
        l.iter().any(|l| l == "assigned 1")
    });
    let delete = |names: &[&str]| {
        let mut admin = Command::new("python3");
        admin.arg(script("kafka-confluent.py")).arg("delete-groups").arg(door.bootstrap());
        admin.args(names);
        success(&run(admin, ""), "AdminClient delete_consumer_groups")
    };
    let out = delete(&["idle", "busy", "nobody"]);
    assert!(out.contains("deleted idle\n"), "{out}");
    assert!(out.contains("refused busy NON_EMPTY_GROUP\n"), "{out}");
    assert!(out.contains("refused nobody GROUP_ID_NOT_FOUND\n"), "{out}");
    // The deleted group is gone for the native door too; the busy one keeps its state.
    let mut groups = Command::new(binary("consumer"));
    groups.args(["--connect", &door.endpoint(), "groups"]);
    let listed = success(&run(groups, ""), "consumer groups");
    assert!(!listed.contains("idle"), "{listed}");
    drop(member);
    door.stop();
}

/// Sends an `OffsetCommit` v8 of `offset` on partition 0 of `topic` for `group` as `member`
/// in `generation`; the partition's error code.
fn raw_commit(
    door: &Door,
    group: &str,
    topic: &str,
    member: &str,
    generation: i32,
    offset: i64,
) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use std::io::{Read, Write};

    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::OffsetCommit as i16;
    header.request_api_version = 8;
    header.correlation_id = 4;
    let mut partition = OffsetCommitRequestPartition::default();
    partition.committed_offset = offset;
    let mut wanted = OffsetCommitRequestTopic::default();
    wanted.name = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.partitions = vec![partition];
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    request.generation_id_or_member_epoch = generation;
    request.member_id = StrBytes::from_string(member.to_owned());
    request.topics = vec![wanted];
    let mut body = bytes::BytesMut::new();
    header.encode(&mut body, ApiKey::OffsetCommit.request_header_version(8)).expect("header");
    request.encode(&mut body, 8).expect("request");
    let mut stream = std::net::TcpStream::connect(door.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(testkit::STEP)).expect("timeout");
    let size = u32::try_from(body.len()).expect("size");
    stream.write_all(&size.to_be_bytes()).expect("send");
    stream.write_all(&body).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("an answer");
    let mut reply = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut reply).expect("the whole answer");
    let mut reply = bytes::Bytes::from(reply);
    // Correlation id, then the flexible header's tagged fields.
    let _ = reply.split_to(5);
    let response = OffsetCommitResponse::decode(&mut reply, 8).expect("an OffsetCommit v8 answer");
    response.topics[0].partitions[0].error_code
}

/// The id of the one member of `group`, from a `DescribeGroups`.
fn member_id(door: &Door, group: &str) -> String {
    use kafka_protocol::messages::{
        ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, RequestKind,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(StrBytes::from_string(group.to_owned()))];
    let mut stream = std::net::TcpStream::connect(door.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(testkit::STEP)).expect("timeout");
    let mut reply =
        common::ask(&mut stream, ApiKey::DescribeGroups, 5, RequestKind::DescribeGroups(request));
    let response = DescribeGroupsResponse::decode(&mut reply, 5).expect("DescribeGroups v5");
    let members = &response.groups[0].members;
    assert_eq!(members.len(), 1, "{response:?}");
    members[0].member_id.to_string()
}

#[test]
fn a_commit_from_outside_the_present_generation_moves_nothing() {
    let door = Door::start(&[]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "fenced", "a", "b", "c"]);
    success(&run(produce, ""), "producer");
    // No Kafka members: a commit outside any group is taken, as Kafka takes it.
    assert_eq!(raw_commit(&door, "fence", "fenced", "", -1, 1), 0);
    let mut groups = Command::new(binary("consumer"));
    groups.args(["--connect", &door.endpoint(), "groups", "--json"]);
    let out = success(&run(groups, ""), "consumer groups");
    let state = out.lines().find(|l| l.contains("\"group\":\"fence\"")).unwrap_or_default();
    assert!(state.contains("\"committed_offset\":1"), "{out}");
    let member = Member::start(&door, "fenced", "fence");
    member.wait_for(Duration::from_secs(30), "the member is assigned", |l| {
        l.iter().any(|l| l == "assigned 1")
    });
    // With a member: neither an outsider nor a stale member id moves the offset, nor the
    // member's own id in a generation that is not the present one.
    assert_eq!(raw_commit(&door, "fence", "fenced", "", -1, 2), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(raw_commit(&door, "fence", "fenced", "fence-member-0", 1, 2), 25);
    let id = member_id(&door, "fence");
    assert_eq!(raw_commit(&door, "fence", "fenced", &id, 1000, 2), 22, "ILLEGAL_GENERATION");
    let out = consumer(&door, &["groups", "--json"]);
    let state = out.lines().find(|l| l.contains("\"group\":\"fence\"")).unwrap_or_default();
    assert!(state.contains("\"committed_offset\":1"), "{out}");
    drop(member);
    door.stop();
}

/// Runs a native `consumer` with `args`; its standard output.
fn consumer(door: &Door, args: &[&str]) -> String {
    let mut command = Command::new(binary("consumer"));
    command.args(["--connect", &door.endpoint()]).args(args);
    success(&run(command, ""), "consumer")
}

/// Appends `values` to `partition` of `topic` with the native producer.
fn produce_to(door: &Door, topic: &str, partition: u32, values: &[&str]) {
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--partition", &partition.to_string()]);
    produce.args(["--topic", topic]).args(values);
    success(&run(produce, ""), "producer");
}

/// What `kafka-python-admin.py` prints for `action` (`delete-offsets` or `offsets`) of `group`
/// on the partitions `specs` (`TOPIC:P,P`).
fn python_admin(door: &Door, action: &str, group: &str, specs: &[&str]) -> String {
    let mut admin = Command::new("python3");
    admin.arg(script("kafka-python-admin.py")).args([&door.bootstrap(), action, group]);
    admin.args(specs);
    success(&run(admin, ""), "kafka-python admin")
}

/// The partitions `consumer groups --json` shows `group` with a committed offset on, on
/// `topic`, each with its offset.
fn committed(door: &Door, group: &str, topic: &str) -> Vec<(u64, u64)> {
    let out = consumer(door, &["groups", "--json"]);
    let field = |line: &str, name: &str| -> Option<u64> {
        let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
        line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut found: Vec<(u64, u64)> = out
        .lines()
        .filter(|l| l.contains(&format!("\"group\":\"{group}\"")))
        .filter(|l| l.contains(&format!("\"topic\":\"{topic}\"")))
        .filter_map(|l| Some((field(l, "partition")?, field(l, "committed_offset")?)))
        .collect();
    found.sort_unstable();
    found
}

#[test]
fn offsets_of_chosen_partitions_are_deleted_unless_members_read_their_topic() {
    let door = Door::start(&[]);
    consumer(&door, &["create-topic", "ledger", "--partitions", "3"]);
    for partition in 0..3 {
        produce_to(&door, "ledger", partition, &["a", "b"]);
    }
    consumer(&door, &["group-reset", "--to-offset", "1", "auditors", "ledger"]);
    assert_eq!(committed(&door, "auditors", "ledger"), [(0, 1), (1, 1), (2, 1)]);

    // One partition's offset goes; the others stay, and OffsetFetch says -1 for it.
    let out = python_admin(&door, "delete-offsets", "auditors", &["ledger:1"]);
    assert_eq!(out, "ledger:1 NoError\n");
    assert_eq!(committed(&door, "auditors", "ledger"), [(0, 1), (2, 1)]);
    let out = python_admin(&door, "offsets", "auditors", &["ledger:0,1,2"]);
    assert_eq!(out, "ledger:0 1\nledger:1 -1\nledger:2 1\n");

    // A partition the topic lacks, a topic that does not exist, a group that does not.
    let out = python_admin(&door, "delete-offsets", "auditors", &["ledger:7", "nowhere:0"]);
    assert!(out.contains("ledger:7 UnknownTopicOrPartitionError\n"), "{out}");
    assert!(out.contains("nowhere:0 UnknownTopicOrPartitionError\n"), "{out}");
    let out = python_admin(&door, "delete-offsets", "nobody", &["ledger:0"]);
    assert_eq!(out, "refused GroupIdNotFoundError\n");

    // While a Kafka member reads the topic its offsets stay.
    let member = Member::start(&door, "ledger", "auditors");
    member.wait_for(Duration::from_secs(30), "the member is assigned", |l| {
        l.iter().any(|l| l == "assigned 3")
    });
    let out = python_admin(&door, "delete-offsets", "auditors", &["ledger:0,2"]);
    assert_eq!(out, "ledger:0 GroupSubscribedToTopicError\nledger:2 GroupSubscribedToTopicError\n");
    // (The member commits as it reads, so the offsets may have moved on: they are there.)
    let kept: Vec<u64> = committed(&door, "auditors", "ledger").iter().map(|(p, _)| *p).collect();
    assert!(kept.contains(&0) && kept.contains(&2), "{kept:?}");
    drop(member);

    // Every partition of a topic named: the group's state on it goes whole.
    consumer(&door, &["group-reset", "--to-offset", "1", "others", "ledger"]);
    let out = python_admin(&door, "delete-offsets", "others", &["ledger:0,1,2"]);
    assert_eq!(out, "ledger:0 NoError\nledger:1 NoError\nledger:2 NoError\n");
    assert_eq!(committed(&door, "others", "ledger"), []);
    door.stop();
}

/// Starts a member of `group` on `topic` from `reset`, then appends `new` to partition 1 of
/// `topic` until the member reads a message; the messages it read.
fn first_read(door: &Door, topic: &str, group: &str, reset: &str) -> Vec<String> {
    let member = Member::start_from(door, topic, group, reset);
    member.wait_for(Duration::from_secs(30), "the member is assigned", |l| {
        l.iter().any(|l| l == "assigned 2")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let messages = |lines: Vec<String>| -> Vec<String> {
        lines.into_iter().filter_map(|l| l.strip_prefix("message ").map(str::to_owned)).collect()
    };
    // Where `latest` puts the member is the end when it asks, which may come after an append:
    // so append until one reaches it.
    while messages(member.lines()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no message read: {:?}", member.lines());
        produce_to(door, topic, 1, &["new"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    messages(member.lines())
}

#[test]
fn a_partition_never_committed_is_placed_by_auto_offset_reset() {
    let door = Door::start(&[]);
    consumer(&door, &["create-topic", "fresh", "--partitions", "2"]);
    produce_to(&door, "fresh", 0, &["zero"]);
    produce_to(&door, "fresh", 1, &["old"]);
    // Each group commits partition 0 alone (at its end): partition 1 was never committed.
    for group in ["late", "early"] {
        assert_eq!(raw_commit(&door, group, "fresh", "", -1, 1), 0);
        let out = python_admin(&door, "offsets", group, &["fresh:0,1"]);
        assert_eq!(out, "fresh:0 1\nfresh:1 -1\n", "{group}");
    }
    let late = first_read(&door, "fresh", "late", "latest");
    assert!(!late.is_empty() && late.iter().all(|m| m == "new"), "{late:?}");
    let early = first_read(&door, "fresh", "early", "earliest");
    assert_eq!(early.first().map(String::as_str), Some("old"), "{early:?}");
    door.stop();
}
