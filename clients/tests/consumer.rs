//! The `consumer` binary against a real broker: status, topics, fetch, JSON output, and what a
//! user sees when something is wrong.

mod common;

use std::time::Duration;

use common::{consumer, dead_endpoint, preloaded_broker, run, CONSUMER, PRELOADED};

#[test]
fn topics_lists_the_preloaded_topics() {
    let broker = preloaded_broker();
    let out = consumer(&broker, &["topics"]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "MESSAGES", "FIRST", "OFFSET", "NEXT", "OFFSET"]
    );
    let rows = &lines[1..];
    assert_eq!(rows.len(), 4, "{lines:?}");
    for (row, (name, _)) in rows.iter().zip(PRELOADED) {
        let rest = row.strip_prefix(name).unwrap_or_else(|| panic!("{row:?} is not {name}"));
        assert_eq!(rest.split_whitespace().collect::<Vec<_>>(), ["3", "0", "3"], "{row:?}");
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
        assert!(out.stderr.contains("invalid topic name"), "{}", out.stderr);
        assert!(out.elapsed < Duration::from_secs(1), "took {:?}", out.elapsed);
    }
}

#[test]
fn no_command_off_a_terminal_is_a_usage_error() {
    let out = run(CONSUMER, &["--connect", &dead_endpoint()]);
    out.assert_code(2);
    assert!(out.stderr.contains("no command given"), "{}", out.stderr);
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);
}
