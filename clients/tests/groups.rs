//! Consumer groups as users meet them through the real `consumer` binary: members sharing a
//! topic's messages, a member killed before it acknowledged, independent groups, a broker
//! restarted with a data directory, `groups` and its lag, resets, and the errors a user sees.

mod common;

use std::time::{Duration, Instant};

use common::{broker_binary, consumer, producer, Running};
use testkit::{signal_process, BrokerProcess, STEP};

/// The ack timeout of the brokers that show redelivery.
const ACK_TIMEOUT: &str = "1s";

/// A broker with no topics and `args`.
fn broker(args: &[&str]) -> BrokerProcess {
    BrokerProcess::start(&broker_binary(), args)
}

/// Appends `count` messages `prefix N` to `topic`.
fn produce(broker: &BrokerProcess, topic: &str, prefix: &str, count: usize) {
    let values: Vec<String> = (0..count).map(|i| format!("{prefix} {i}")).collect();
    let mut args = vec![topic];
    args.extend(values.iter().map(String::as_str));
    producer(broker, &args).assert_success();
}

/// Starts `consumer follow TOPIC --group GROUP` with `extra` and waits until it has joined.
fn start_member(broker: &BrokerProcess, topic: &str, group: &str, extra: &[&str]) -> Running {
    let mut args = vec!["follow", topic, "--group", group];
    args.extend_from_slice(extra);
    let mut member = Running::consumer(broker, &args);
    member.wait_stderr("following");
    member
}

/// The offsets at the start of text lines `OFFSET<TAB>VALUE`.
fn offsets<S: AsRef<str>>(lines: &[S]) -> Vec<u64> {
    lines
        .iter()
        .map(|line| {
            let line = line.as_ref();
            line.split('\t')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("{line:?} does not start with an offset"))
        })
        .collect()
}

/// The rows of `consumer groups` for these arguments, split on white space, without the header:
/// one per group, topic and partition.
fn partition_rows(broker: &BrokerProcess, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["groups"];
    all.extend_from_slice(args);
    let out = consumer(broker, &all);
    let lines = out.assert_success().lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "OFFSET",
            "END",
            "OFFSET",
            "LAG",
            "PENDING",
            "MEMBERS"
        ]
    );
    lines[1..].iter().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

/// The rows of `consumer groups` of topics of one partition, without its column.
fn group_rows(broker: &BrokerProcess, args: &[&str]) -> Vec<Vec<String>> {
    let mut rows = partition_rows(broker, args);
    for row in &mut rows {
        assert_eq!(row.remove(2), "0", "{row:?} is of one partition");
    }
    rows
}

#[test]
fn two_unordered_members_of_a_group_share_one_partition_each_message_exactly_once() {
    let broker = broker(&[]);
    producer(&broker, &["orders", "opening"]).assert_success();
    let unordered = ["--batch", "1", "--unordered"];
    let mut a = start_member(&broker, "orders", "preparers", &unordered);
    let mut b = start_member(&broker, "orders", "preparers", &unordered);
    // The group was new: it started at the topic's first message.
    produce(&broker, "orders", "order", 30);

    let mut lines: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + STEP;
    while lines[0].len() + lines[1].len() < 31 && Instant::now() < deadline {
        for (member, got) in [&mut a, &mut b].into_iter().zip(lines.iter_mut()) {
            got.extend(member.stdout_line_within(Duration::from_millis(20)));
        }
    }
    for member in [a, b] {
        member.interrupt();
        let (status, rest, stderr) = member.wait_exit();
        assert_eq!(status.code(), Some(130), "{status}: {stderr:?}");
        assert!(rest.is_empty(), "printed after the count was reached: {rest:?}");
    }
    let mut all: Vec<u64> = offsets(&lines[0]).into_iter().chain(offsets(&lines[1])).collect();
    all.sort_unstable();
    assert_eq!(all, (0..31).collect::<Vec<u64>>(), "every message exactly once: {lines:?}");
    assert!(!lines[0].is_empty() && !lines[1].is_empty(), "the work is shared: {lines:?}");
    // Both acknowledged what they printed.
    assert_eq!(group_rows(&broker, &[])[0][2..6], ["31", "31", "0", "0"]);
    broker.interrupt();
}

#[test]
fn a_member_killed_before_acknowledging_has_its_messages_printed_by_another() {
    let broker = broker(&["--group-ack-timeout", ACK_TIMEOUT]);
    produce(&broker, "orders", "order", 4);
    let before_delivery = Instant::now();
    let mut doomed = start_member(&broker, "orders", "preparers", &["--no-auto-ack"]);
    assert_eq!(offsets(&doomed.stdout_lines(4)), [0, 1, 2, 3]);
    signal_process(doomed.pid(), "KILL");
    let (status, _, _) = doomed.wait_exit();
    assert!(!status.success());
    assert_eq!(group_rows(&broker, &[])[0][2..6], ["0", "4", "4", "4"], "all four pending");

    let mut survivor = start_member(&broker, "orders", "preparers", &["--max", "4"]);
    let lines = survivor.stdout_lines(4);
    let waited = before_delivery.elapsed();
    assert!(waited >= Duration::from_secs(1), "redelivered before the timeout: {waited:?}");
    assert_eq!(offsets(&lines), [0, 1, 2, 3]);
    assert_eq!(lines[0], "0\torder 0");
    let (status, _, stderr) = survivor.wait_exit();
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("delivered again")), "{stderr:?}");
    assert_eq!(group_rows(&broker, &[])[0][2..6], ["4", "4", "0", "0"]);
    broker.interrupt();
}

#[test]
fn two_groups_each_see_every_message() {
    let broker = broker(&[]);
    produce(&broker, "t", "m", 5);
    for group in ["kitchen", "billing"] {
        let out = consumer(&broker, &["fetch", "t", "--group", group]);
        assert_eq!(offsets(&out.assert_success().lines()), [0, 1, 2, 3, 4], "{group}");
        assert!(out.stderr.contains("committed offset 5 of 5"), "{}", out.stderr);
        // Everything was acknowledged: a second read finds nothing new.
        let again = consumer(&broker, &["fetch", "t", "--group", group]);
        assert!(again.assert_success().stdout.is_empty(), "{group}: {again:?}");
    }
    broker.interrupt();
}

#[test]
fn committed_offsets_survive_a_broker_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = ["--data-dir", dir.path().to_str().expect("a UTF-8 path")];
    let first = broker(&args);
    produce(&first, "t", "m", 10);
    let out = consumer(&first, &["fetch", "t", "--group", "g", "--max", "3"]);
    assert_eq!(offsets(&out.assert_success().lines()), [0, 1, 2]);
    let out = consumer(&first, &["fetch", "t", "--group", "g", "--max", "2", "--no-auto-ack"]);
    assert_eq!(offsets(&out.assert_success().lines()), [3, 4]);
    consumer(&first, &["ack", "g", "t", "3"]).assert_success();
    first.signal("KILL");
    let (status, _) = first.wait_exit(STEP);
    assert!(!status.success());

    let second = broker(&args);
    assert_eq!(group_rows(&second, &["g"]), [["g", "t", "4", "10", "6", "1", "-"]]);
    // The group goes on from where it was: offset 4 is still pending, 5 comes next. (An
    // ordered reader would wait for offset 4's ack timeout first: it was a member's.)
    let out = consumer(&second, &["fetch", "t", "--group", "g", "--unordered"]);
    assert_eq!(offsets(&out.assert_success().lines()), [5, 6, 7, 8, 9]);
    let out = consumer(&second, &["fetch", "t", "--group", "g"]);
    assert!(out.assert_success().stdout.is_empty(), "{}", out.stdout);
    consumer(&second, &["ack", "g", "t", "4"]).assert_success();
    assert_eq!(group_rows(&second, &["g"]), [["g", "t", "10", "10", "0", "0", "-"]]);
    second.interrupt();
}

#[test]
fn lag_shown_by_groups_is_what_is_left_to_read() {
    let broker = broker(&[]);
    produce(&broker, "t", "m", 10);
    produce(&broker, "u", "m", 2);
    consumer(&broker, &["fetch", "t", "--group", "g", "--max", "4"]).assert_success();
    consumer(&broker, &["fetch", "t", "--group", "g", "--max", "2", "--no-auto-ack"])
        .assert_success();
    consumer(&broker, &["fetch", "u", "--group", "g", "--max", "1"]).assert_success();
    consumer(&broker, &["fetch", "t", "--group", "other", "--group-start", "latest", "--max", "1"])
        .assert_success();
    assert_eq!(
        group_rows(&broker, &[]),
        [
            ["g", "t", "4", "10", "6", "2", "-"],
            ["g", "u", "1", "2", "1", "0", "-"],
            ["other", "t", "10", "10", "0", "0", "-"],
        ]
    );
    assert_eq!(group_rows(&broker, &["--topic", "u"]).len(), 1);

    let out = consumer(&broker, &["ack", "g", "t", "4", "5", "5"]);
    assert!(out.assert_success().stderr.contains("committed offset 6"), "{}", out.stderr);
    let json = consumer(&broker, &["--json", "groups", "g", "--topic", "t"]);
    let row: serde_json::Value =
        serde_json::from_str(json.assert_success().stdout.trim()).expect("one JSON object");
    assert_eq!((row["committed_offset"].as_u64(), row["lag"].as_u64()), (Some(6), Some(4)));
    // The lag is what a member gets next.
    let out = consumer(&broker, &["fetch", "t", "--group", "g"]);
    assert_eq!(offsets(&out.assert_success().lines()).len(), 4);
    assert_eq!(group_rows(&broker, &["g", "--topic", "t"])[0][4], "0");
    broker.interrupt();
}

#[test]
fn group_reset_moves_where_the_group_reads_next() {
    let broker = broker(&[]);
    produce(&broker, "t", "m", 10);
    consumer(&broker, &["fetch", "t", "--group", "g"]).assert_success();
    let read = |broker: &BrokerProcess| -> Vec<u64> {
        offsets(&consumer(broker, &["fetch", "t", "--group", "g"]).assert_success().lines())
    };

    let out = consumer(&broker, &["group-reset", "g", "t", "--to-earliest"]);
    assert_eq!(
        out.assert_success().lines()[1].split_whitespace().collect::<Vec<_>>(),
        ["g", "t", "0"]
    );
    assert_eq!(read(&broker), (0..10).collect::<Vec<u64>>());
    consumer(&broker, &["group-reset", "g", "t", "--to-offset", "7"]).assert_success();
    assert_eq!(read(&broker), [7, 8, 9]);
    consumer(&broker, &["group-reset", "g", "t", "--to-offset", "2"]).assert_success();
    consumer(&broker, &["group-reset", "g", "t", "--to-latest"]).assert_success();
    assert!(read(&broker).is_empty());
    let json = consumer(&broker, &["--json", "group-reset", "g", "t", "--to-offset", "9"]);
    assert!(json.assert_success().stdout.contains("\"committed_offset\":9"), "{}", json.stdout);

    let out = consumer(&broker, &["group-reset", "g", "t", "--to-offset", "11"]);
    out.assert_code(1);
    assert!(out.stderr.contains("offset_out_of_range"), "{}", out.stderr);
    let out = consumer(&broker, &["group-reset", "g", "nope", "--to-earliest"]);
    out.assert_code(1);
    assert!(out.stderr.contains("unknown_topic"), "{}", out.stderr);
    assert_eq!(read(&broker), [9]);
    broker.interrupt();
}

#[test]
fn group_delete_forgets_a_group_once_no_member_reads() {
    let broker = broker(&[]);
    produce(&broker, "t", "m", 4);
    consumer(&broker, &["fetch", "t", "--group", "g", "--max", "2"]).assert_success();
    let mut member = Running::consumer(&broker, &["follow", "t", "--group", "g"]);
    member.stdout_lines(2);
    let out = consumer(&broker, &["group-delete", "g"]);
    out.assert_code(1);
    assert!(out.stderr.contains("group_active"), "{}", out.stderr);
    member.interrupt();
    let _ = member.wait_exit();
    let out = consumer(&broker, &["group-delete", "g", "t"]);
    assert_eq!(out.assert_success().stderr.trim(), "deleted group g's offsets on topic t");
    assert!(group_rows(&broker, &[]).is_empty());
    let out = consumer(&broker, &["group-delete", "g"]);
    out.assert_code(1);
    assert!(out.stderr.contains("unknown_group"), "{}", out.stderr);
    // Afresh: the group reads the topic from its start again.
    let again = consumer(&broker, &["fetch", "t", "--group", "g"]);
    assert_eq!(offsets(&again.assert_success().lines()), [0, 1, 2, 3]);
    broker.interrupt();
}

#[test]
fn group_delete_of_one_partition_forgets_that_partition_alone() {
    let broker = broker(&[]);
    consumer(&broker, &["create-topic", "p", "--partitions", "3"]).assert_success();
    consumer(&broker, &["group-reset", "g", "p", "--to-earliest"]).assert_success();
    assert_eq!(partition_rows(&broker, &[]).len(), 3);
    let out = consumer(&broker, &["group-delete", "g", "p", "--partition", "1"]);
    assert_eq!(
        out.assert_success().stderr.trim(),
        "deleted group g's offset on partition 1 of topic p"
    );
    let left: Vec<String> = partition_rows(&broker, &[]).iter().map(|r| r[2].clone()).collect();
    assert_eq!(left, ["0", "2"]);
    let out = consumer(&broker, &["group-delete", "g", "p", "--partition", "3"]);
    out.assert_code(1);
    assert!(out.stderr.contains("unknown_partition"), "{}", out.stderr);
    // A partition names one of a topic.
    consumer(&broker, &["group-delete", "g", "--partition", "1"]).assert_code(2);
    assert_eq!(partition_rows(&broker, &[]).len(), 2);
    broker.interrupt();
}

#[test]
fn bad_group_names_and_acks_of_unknown_offsets_get_clear_errors() {
    let broker = broker(&[]);
    produce(&broker, "t", "m", 3);
    consumer(&broker, &["fetch", "t", "--group", "g", "--max", "2", "--no-auto-ack"])
        .assert_success();
    let before = group_rows(&broker, &[]);

    let out = consumer(&broker, &["fetch", "t", "--group", ""]);
    out.assert_code(1);
    assert_eq!(out.stderr.trim(), "error: invalid group name \"\": group name is empty");
    let out = consumer(&broker, &["follow", "t", "--group", "a\tb"]);
    out.assert_code(1);
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    let out = consumer(&broker, &["ack", " g", "t", "0"]);
    out.assert_code(1);
    assert!(out.stderr.contains("invalid group name \" g\""), "{}", out.stderr);

    let out = consumer(&broker, &["ack", "g", "t", "0", "2"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("offset 2 of topic \"t\" was never delivered to group \"g\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(not_pending)"), "{}", out.stderr);
    let out = consumer(&broker, &["ack", "nope", "t", "0"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_group)"), "{}", out.stderr);
    let out = consumer(&broker, &["groups", "nope"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_group)"), "{}", out.stderr);
    let out = consumer(&broker, &["fetch", "nope", "--group", "g"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_topic)"), "{}", out.stderr);
    assert_eq!(group_rows(&broker, &[]), before, "refused requests changed nothing");

    // A repeated acknowledgement is accepted and says so.
    consumer(&broker, &["ack", "g", "t", "0"]).assert_success();
    let out = consumer(&broker, &["ack", "g", "t", "0", "1"]);
    assert!(
        out.assert_success().stderr.contains("1 had been acknowledged already"),
        "{}",
        out.stderr
    );
    assert_eq!(group_rows(&broker, &[])[0][2..4], ["2", "3"]);
    broker.interrupt();
}

#[test]
fn three_members_share_six_partitions_each_partition_in_order() {
    let broker = broker(&["--brokers", "4"]);
    consumer(&broker, &["create-topic", "jobs", "--partitions", "6"]).assert_success();
    let mut members: Vec<Running> = (0..3)
        .map(|_| start_member(&broker, "jobs", "workers", &["--batch", "4", "--print-key"]))
        .collect();
    let input: String = (0..120).map(|i| format!("k{}:job {i}\n", i % 12)).collect();
    let args = ["--connect", &broker.endpoint, "--key-separator", ":", "jobs"];
    common::run_with(common::PRODUCER, &args, input.as_bytes(), &[]).assert_success();

    // Each member's lines, `PARTITION:OFFSET<TAB>KEY<TAB>VALUE`, until every job was seen.
    let mut lines: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + STEP * 2;
    while seen.len() < 120 && Instant::now() < deadline {
        for (member, got) in members.iter_mut().zip(lines.iter_mut()) {
            if let Some(line) = member.stdout_line_within(Duration::from_millis(20)) {
                seen.insert(line.rsplit('\t').next().unwrap_or_default().to_owned());
                got.push(line);
            }
        }
    }
    assert_eq!(seen.len(), 120, "every job at least once: {lines:?}");
    for (i, got) in lines.iter().enumerate() {
        let mut last: [Option<u64>; 6] = [None; 6];
        for line in got {
            let mut fields = line.split('\t');
            let (partition, offset) = fields
                .next()
                .and_then(|p| p.split_once(':'))
                .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)))
                .unwrap_or_else(|| panic!("{line:?} does not start with PARTITION:OFFSET"));
            let key = fields.next().unwrap_or_default();
            assert_eq!(partition, protocol::partition_for_key(key.as_bytes(), 6), "{line}");
            // The member that has a partition gets its messages in order.
            let before = &mut last[partition as usize];
            assert!(before.is_none_or(|b| b < offset), "member {i} out of order: {got:?}");
            *before = Some(offset);
        }
    }
    // Everything is acknowledged: each partition's committed offset reaches its end.
    let deadline = Instant::now() + STEP;
    loop {
        let rows = partition_rows(&broker, &["workers"]);
        let done = rows.len() == 6 && rows.iter().all(|r| r[3] == r[4] && r[6] == "0");
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not all acknowledged: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = partition_rows(&broker, &["workers"]);
    let partitions: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(partitions, ["0", "1", "2", "3", "4", "5"]);
    let ends: u64 = rows.iter().map(|r| r[4].parse::<u64>().unwrap()).sum();
    assert_eq!(ends, 120);
    for member in members {
        member.interrupt();
        let (status, _, stderr) = member.wait_exit();
        assert_eq!(status.code(), Some(130), "{stderr:?}");
    }
    broker.interrupt();
}

#[test]
fn acks_and_resets_name_a_partition() {
    let broker = broker(&[]);
    consumer(&broker, &["create-topic", "t", "--partitions", "2"]).assert_success();
    producer(&broker, &["--partition", "0", "t", "a0", "a1"]).assert_success();
    producer(&broker, &["--partition", "1", "t", "b0", "b1", "b2"]).assert_success();
    let out = consumer(&broker, &["fetch", "t", "--group", "g", "--no-auto-ack"]);
    assert!(
        out.stderr.contains("read 5 messages of t for group g (2 partitions); not acknowledged")
            && out.stderr.contains("--partition N"),
        "{}",
        out.stderr
    );
    let mut lines = out.assert_success().lines();
    lines.sort_unstable();
    assert_eq!(lines, ["0:0\ta0", "0:1\ta1", "1:0\tb0", "1:1\tb1", "1:2\tb2"]);
    // Partition 1's offsets 0 and 1, by hand; offset 2 of partition 0 was never delivered.
    let out = consumer(&broker, &["ack", "g", "t", "0", "1", "--partition", "1"]);
    assert!(out.assert_success().stderr.contains("committed offset 2"), "{}", out.stderr);
    let out = consumer(&broker, &["ack", "g", "t", "2"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(not_pending)"), "{}", out.stderr);
    let out = consumer(&broker, &["ack", "g", "t", "0", "--partition", "2"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_partition)"), "{}", out.stderr);
    let rows = partition_rows(&broker, &["g"]);
    let committed: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r[2].as_str(), r[3].as_str(), r[6].as_str())).collect();
    assert_eq!(committed, [("0", "0", "2"), ("1", "2", "1")], "{rows:?}");

    // One partition moved, then every one.
    let out = consumer(&broker, &["group-reset", "g", "t", "--to-latest", "--partition", "0"]);
    let row = out.assert_success().lines()[1].split_whitespace().collect::<Vec<_>>();
    assert_eq!(row, ["g", "t", "0", "2"]);
    let committed: Vec<String> =
        partition_rows(&broker, &["g"]).iter().map(|r| r[3].clone()).collect();
    assert_eq!(committed, ["2", "2"]);
    consumer(&broker, &["group-reset", "g", "t", "--to-earliest"]).assert_success();
    let committed: Vec<String> =
        partition_rows(&broker, &["g"]).iter().map(|r| r[3].clone()).collect();
    assert_eq!(committed, ["0", "0"]);
    let out = consumer(&broker, &["fetch", "t", "--group", "g"]);
    assert_eq!(out.assert_success().lines().len(), 5, "{}", out.stdout);
    broker.interrupt();
}
