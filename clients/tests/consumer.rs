//! The `consumer` binary against a real broker: status, topics, fetch, JSON output, and what a
//! user sees when something is wrong.

mod common;

use std::time::Duration;

use common::{
    consumer, dead_endpoint, preloaded_broker, producer, run, run_with, Running, CONSUMER,
    PRELOADED, PRODUCER,
};
use protocol::partition_for_key;

#[test]
fn topics_lists_the_preloaded_topics() {
    let broker = preloaded_broker();
    let out = consumer(&broker, &["topics"]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITIONS", "MESSAGES", "FIRST", "OFFSET", "NEXT", "OFFSET"]
    );
    let rows = &lines[1..];
    assert_eq!(rows.len(), 4, "{lines:?}");
    for (row, (name, _)) in rows.iter().zip(PRELOADED) {
        let rest = row.strip_prefix(name).unwrap_or_else(|| panic!("{row:?} is not {name}"));
        assert_eq!(rest.split_whitespace().collect::<Vec<_>>(), ["1", "3", "0", "3"], "{row:?}");
    }
    broker.interrupt();
}

#[test]
fn fetch_prints_the_preloaded_messages() {
    let broker = preloaded_broker();
    for (topic, word) in PRELOADED {
        let out = consumer(&broker, &["fetch", topic]);
        out.assert_success();
        let want: Vec<String> = (1..=3).map(|i| format!("{}\t{word} {i}", i - 1)).collect();
        assert_eq!(out.lines(), want, "{topic}");
        assert!(out.stderr.contains("read 3 messages"), "{}", out.stderr);
    }
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "1", "--max", "1"]);
    assert_eq!(out.assert_success().lines(), ["1\tmensaje 2"]);
    broker.interrupt();
}

#[test]
fn status_shows_every_logical_broker_free() {
    let broker = preloaded_broker();
    let out = consumer(&broker, &["status"]);
    out.assert_success();
    let lines = out.lines();
    assert!(lines[0].starts_with("BROKER"), "{lines:?}");
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [["1", "free", "-", "-", "4", "12"], ["2", "free", "-", "-", "4", "12"]]);
    broker.interrupt();
}

#[test]
fn json_output_is_one_object_per_line() {
    let broker = preloaded_broker();
    let parse = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
            .collect()
    };

    let status = parse(&consumer(&broker, &["--json", "status"]).assert_success().stdout);
    assert_eq!(status.len(), 2);
    assert_eq!(status[0]["id"], 1);
    assert_eq!(status[0]["available"], true);
    assert_eq!(status[0]["holder"], serde_json::Value::Null);

    let topics = parse(&consumer(&broker, &["topics", "--json"]).assert_success().stdout);
    let names: Vec<&str> = topics.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, PRELOADED.map(|(name, _)| name));
    assert!(topics.iter().all(|t| t["messages"] == 3 && t["next_offset"] == 3));

    let messages =
        parse(&consumer(&broker, &["--json", "fetch", "Hallo welt"]).assert_success().stdout);
    assert_eq!(messages.len(), 3);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["topic"], "Hallo welt");
        assert_eq!(m["partition"], 0);
        assert_eq!(m["offset"], i);
        assert_eq!(m["value"], format!("botschaft {}", i + 1));
        assert_eq!(m["key"], serde_json::Value::Null);
        assert!(m["timestamp"].as_u64().is_some_and(|t| t > 0));
    }
    broker.interrupt();
}

#[test]
fn an_unknown_topic_is_a_clear_error() {
    let broker = preloaded_broker();
    let out = consumer(&broker, &["fetch", "no such topic"]);
    out.assert_code(1);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("(unknown_topic)"), "{}", out.stderr);
    // The claim was given back on the way out.
    let status = consumer(&broker, &["status"]);
    assert_eq!(status.stdout.matches(" free ").count(), 2, "{}", status.stdout);
    broker.interrupt();
}

#[test]
fn a_dead_endpoint_fails_quickly_and_says_so() {
    let endpoint = dead_endpoint();
    for command in ["status", "topics"] {
        let out = run(CONSUMER, &["--connect", &endpoint, "--timeout", "1s", command]);
        out.assert_code(1);
        assert_eq!(out.stderr.trim_end(), format!("error: broker not reachable at {endpoint}"));
        assert!(out.elapsed < Duration::from_secs(5), "took {:?}", out.elapsed);
    }
}

#[test]
fn invalid_topic_names_are_refused_before_connecting() {
    let endpoint = dead_endpoint();
    for name in ["", " padded", "line\nbreak"] {
        let out = run(CONSUMER, &["--connect", &endpoint, "fetch", name]);
        out.assert_code(1);
        // The name's error alone: one that had tried the dead endpoint would say it is
        // unreachable.
        assert!(out.stderr.contains("invalid topic name"), "{}", out.stderr);
        assert!(!out.stderr.contains("not reachable"), "{}", out.stderr);
    }
}

#[test]
fn no_command_off_a_terminal_is_a_usage_error() {
    let out = run(CONSUMER, &["--connect", &dead_endpoint()]);
    out.assert_code(2);
    assert!(out.stderr.contains("no command given"), "{}", out.stderr);
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);
}

/// The row of `consumer topics` for `name`, split on white space, without the name.
fn topic_row(broker: &testkit::BrokerProcess, name: &str) -> Vec<String> {
    let out = consumer(broker, &["topics"]);
    let lines = out.assert_success().lines();
    let row = lines
        .iter()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no row for {name}: {lines:?}"));
    row.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn create_topic_takes_partitions_topics_shows_them_and_bad_counts_are_refused() {
    let broker = preloaded_broker();
    let out = consumer(&broker, &["create-topic", "spread", "--partitions", "3"]);
    out.assert_success();
    assert!(out.stderr.contains("created topic spread with 3 partitions"), "{}", out.stderr);
    assert_eq!(topic_row(&broker, "spread"), ["3", "0", "0,0,0", "0,0,0"]);

    // Refused before anything is sent, with what is allowed.
    for bad in ["0", "10001", "many"] {
        let out = consumer(&broker, &["create-topic", "bad", "--partitions", bad]);
        out.assert_code(2);
        assert!(out.stderr.contains("1 to 10000"), "{bad}: {}", out.stderr);
        let out = consumer(&broker, &["add-partitions", "spread", "--partitions", bad]);
        out.assert_code(2);
    }
    let out = consumer(&broker, &["topics"]);
    assert!(!out.assert_success().stdout.contains("bad"), "{}", out.stdout);
    let out = consumer(&broker, &["create-topic", "spread"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(topic_exists)"), "{}", out.stderr);

    // A topic grows, never shrinks.
    let out = consumer(&broker, &["add-partitions", "spread", "--partitions", "2"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(invalid_partitions)"), "{}", out.stderr);
    let out = consumer(&broker, &["add-partitions", "spread", "--partitions", "5"]);
    out.assert_success();
    assert!(out.stderr.contains("spread has 5 partitions now"), "{}", out.stderr);
    producer(&broker, &["--partition", "4", "spread", "a", "b"]).assert_success();
    assert_eq!(topic_row(&broker, "spread"), ["5", "2", "0,0,0,0,0", "0,0,0,0,2"]);
    let out = consumer(&broker, &["--json", "topics"]);
    let spread: serde_json::Value = out
        .assert_success()
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|t| t["name"] == "spread")
        .unwrap();
    assert_eq!(spread["partitions"], 5);
    assert_eq!(spread["next_offsets"], serde_json::json!([0, 0, 0, 0, 2]));
    assert_eq!(spread["messages"], 2);

    // A partition the topic lacks: the broker's error, which names the count.
    let out = consumer(&broker, &["fetch", "spread", "--partition", "5"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_partition)"), "{}", out.stderr);
    assert!(out.stderr.contains('5'), "{}", out.stderr);
    let out = consumer(&broker, &["fetch", "spread", "--partition", "4"]);
    assert_eq!(out.assert_success().lines(), ["0\ta", "1\tb"]);
    assert!(out.stderr.contains("read 2 messages of spread partition 4"), "{}", out.stderr);
    // An offset is a partition's: one alone cannot say where to start every partition.
    let out = consumer(&broker, &["fetch", "spread", "--offset", "1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("--partition N"), "{}", out.stderr);
    // A group shares out partitions itself.
    let out = consumer(&broker, &["fetch", "spread", "--partition", "1", "--group", "g"]);
    out.assert_code(2);
    // Nothing was left claimed.
    let status = consumer(&broker, &["status"]);
    assert_eq!(status.stdout.matches(" free ").count(), 2, "{}", status.stdout);
    broker.interrupt();
}

/// Parses a text line `PARTITION:OFFSET<TAB>KEY<TAB>VALUE`.
fn placed(line: &str) -> (u32, u64, String, String) {
    let mut fields = line.split('\t');
    let (position, key, value) = (fields.next(), fields.next(), fields.next());
    let parsed = position.and_then(|p| p.split_once(':')).and_then(|(p, o)| {
        Some((p.parse().ok()?, o.parse().ok()?, key?.to_owned(), value?.to_owned()))
    });
    parsed.unwrap_or_else(|| panic!("{line:?} is not PARTITION:OFFSET, key and value"))
}

#[test]
fn follow_reads_every_partition_and_shows_each_message_once_with_its_partition() {
    let broker = preloaded_broker();
    consumer(&broker, &["create-topic", "spread", "--partitions", "3"]).assert_success();
    let mut follow = Running::consumer(&broker, &["follow", "spread", "--print-key"]);
    follow.wait_stderr("following spread (3 partitions)");
    let keys: Vec<String> = (0..30).map(|i| format!("key-{}", i % 7)).collect();
    let input: String = keys.iter().enumerate().map(|(i, k)| format!("{k}:v{i}\n")).collect();
    let args = ["--connect", &broker.endpoint, "--key-separator", ":", "spread"];
    run_with(PRODUCER, &args, input.as_bytes(), &[]).assert_success();

    let lines = follow.stdout_lines(30);
    let mut values: Vec<String> = Vec::new();
    let mut next = [0u64; 3];
    for line in &lines {
        let (partition, offset, key, value) = placed(line);
        assert_eq!(partition, partition_for_key(key.as_bytes(), 3), "{line}");
        // Each partition's messages come in its order, from its first offset.
        assert_eq!(offset, next[partition as usize], "{lines:?}");
        next[partition as usize] += 1;
        values.push(value);
    }
    values.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(values, want, "every message once");
    assert!(next.iter().filter(|n| **n > 0).count() >= 2, "the keys spread: {next:?}");
    assert_eq!(follow.stdout_line_within(Duration::from_millis(300)), None);
    follow.interrupt();
    let (status, _, stderr) = follow.wait_exit();
    assert_eq!(status.code(), Some(130), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("read 30 messages of spread")), "{stderr:?}");

    // fetch reads every partition too, one after the other; JSON names each one's.
    let out = consumer(&broker, &["--json", "fetch", "spread"]);
    let fetched: Vec<serde_json::Value> =
        out.assert_success().stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(fetched.len(), 30);
    for m in &fetched {
        let key = m["key"].as_str().unwrap();
        assert_eq!(m["partition"], partition_for_key(key.as_bytes(), 3), "{m}");
    }
    assert!(out.stderr.contains("read 30 messages of spread from 3 partitions"), "{}", out.stderr);
    broker.interrupt();
}

#[test]
fn follow_waits_for_a_topic_of_partitions_and_takes_up_partitions_added_later() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["follow", "later"]);
    follow.wait_stderr("topic later does not exist yet; waiting for it");
    consumer(&broker, &["create-topic", "later", "--partitions", "2"]).assert_success();
    producer(&broker, &["--partition", "1", "later", "one"]).assert_success();
    producer(&broker, &["--partition", "0", "later", "zero"]).assert_success();
    let mut lines = follow.stdout_lines(2);
    lines.sort();
    assert_eq!(lines, ["0:0\tzero", "1:0\tone"]);

    consumer(&broker, &["add-partitions", "later", "--partitions", "3"]).assert_success();
    producer(&broker, &["--partition", "2", "later", "two"]).assert_success();
    follow.wait_stderr("later has 3 partitions now; following the new ones too");
    assert_eq!(follow.stdout_lines(1), ["2:0\ttwo"]);
    // Nothing was printed twice.
    assert_eq!(follow.stdout_line_within(Duration::from_millis(300)), None);
    follow.interrupt();
    let (status, _, stderr) = follow.wait_exit();
    assert_eq!(status.code(), Some(130), "{stderr:?}");
    broker.interrupt();
}
