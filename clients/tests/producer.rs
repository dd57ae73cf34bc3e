//! The `producer` binary against a real broker: messages from arguments and from standard
//! input, keys, Ctrl-C, and refusals.

mod common;

use std::time::Duration;

use common::{
    broker_binary, consumer, dead_endpoint, preloaded_broker, producer, run, run_with, Running,
    PRODUCER,
};
use testkit::BrokerProcess;

#[test]
fn arguments_are_appended_and_can_be_fetched() {
    let broker = preloaded_broker();
    let out = producer(&broker, &["orders", "first", "second"]);
    assert_eq!(out.assert_success().lines(), ["appended 2 messages to orders at offsets 0..1"]);
    let out = producer(&broker, &["orders", "third"]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to orders at offset 2"]);
    // A preloaded topic continues after its three messages.
    let out = producer(&broker, &["Hola mundo", "mensaje 4"]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to Hola mundo at offset 3"]);

    let out = consumer(&broker, &["fetch", "orders"]);
    assert_eq!(out.assert_success().lines(), ["0\tfirst", "1\tsecond", "2\tthird"]);
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "3"]);
    assert_eq!(out.assert_success().lines(), ["3\tmensaje 4"]);
    broker.interrupt();
}

#[test]
fn standard_input_arrives_whole_in_order_and_batched() {
    let broker = preloaded_broker();
    let input: String = (1..=2500).map(|i| format!("line {i}\n")).collect();
    let out = run_with(PRODUCER, &["--connect", &broker.endpoint, "bulk"], input.as_bytes(), &[]);
    let lines = out.assert_success().lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let summary = lines[0];
    let prefix = "appended 2500 messages to bulk at offsets 0..2499 in ";
    let requests: u32 = summary
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(" requests"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary {summary:?}"));
    // Batches of at most 1000 lines: at least 3 requests, and far fewer than one per line.
    assert!((3..=10).contains(&requests), "{summary}");

    let out = consumer(&broker, &["fetch", "bulk", "--max", "5000"]);
    let want: Vec<String> = (1..=2500).map(|i| format!("{}\tline {i}", i - 1)).collect();
    assert_eq!(out.assert_success().lines(), want);
    broker.interrupt();
}

#[test]
fn smaller_batches_mean_more_requests() {
    let broker = preloaded_broker();
    let input: String = (1..=100).map(|i| format!("{i}\n")).collect();
    let args = ["--connect", &broker.endpoint, "--batch", "10", "small"];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    let summary = out.assert_success().lines()[0].to_owned();
    assert!(
        summary.starts_with("appended 100 messages to small at offsets 0..99 in "),
        "{summary}"
    );
    let requests: u32 = summary.rsplit(' ').nth(1).and_then(|n| n.parse().ok()).unwrap();
    assert!(requests >= 10, "{summary}");
    broker.interrupt();
}

#[test]
fn keys_are_stored_and_printed() {
    let broker = preloaded_broker();
    producer(&broker, &["--key", "user-1", "keyed", "a", "b"]).assert_success();
    let input = b"user-2:c\nno separator\n:empty key\n";
    let args = ["--connect", &broker.endpoint, "--key-separator", ":", "keyed"];
    run_with(PRODUCER, &args, input, &[]).assert_success();
    producer(&broker, &["keyed", "plain"]).assert_success();

    let out = consumer(&broker, &["fetch", "keyed", "--print-key"]);
    assert_eq!(
        out.assert_success().lines(),
        [
            "0\tuser-1\ta",
            "1\tuser-1\tb",
            "2\tuser-2\tc",
            "3\tnull\tno separator",
            "4\t\tempty key",
            "5\tnull\tplain",
        ]
    );
    // Without --print-key only offset and value; with --print-timestamp=ms a number in between.
    let out = consumer(&broker, &["fetch", "keyed", "--max", "1"]);
    assert_eq!(out.assert_success().lines(), ["0\ta"]);
    let out =
        consumer(&broker, &["fetch", "keyed", "--max", "1", "--print-timestamp=ms", "--print-key"]);
    let line = out.assert_success().lines()[0].to_owned();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 4, "{line:?}");
    assert!(fields[1].parse::<u64>().is_ok_and(|t| t > 0), "{line:?}");
    assert_eq!((fields[0], fields[2], fields[3]), ("0", "user-1", "a"));

    let out = consumer(&broker, &["--json", "fetch", "keyed", "--max", "1"]);
    let v: serde_json::Value = serde_json::from_str(out.assert_success().lines()[0]).unwrap();
    assert_eq!((v["key"].as_str(), v["value"].as_str()), (Some("user-1"), Some("a")));
    broker.interrupt();
}

#[test]
fn ctrl_c_while_reading_sends_what_was_read() {
    let broker = preloaded_broker();
    let args = ["--connect", &broker.endpoint, "typed"];
    let mut typing = Running::start(PRODUCER, &args, &[("RUST_LOG", "clients=debug,client=debug")]);
    typing.write_stdin(b"one\ntwo\n");
    // A terminal hands over each line as it is typed; here both came in one read.
    typing.wait_stderr("appended");
    typing.interrupt();
    let (status, stdout, stderr) = typing.wait_exit();
    assert_eq!(status.code(), Some(130), "{status}; stderr {stderr:?}");
    assert_eq!(stdout, ["appended 2 messages to typed at offsets 0..1 in 1 request"]);
    let out = consumer(&broker, &["fetch", "typed"]);
    assert_eq!(out.assert_success().lines(), ["0\tone", "1\ttwo"]);
    broker.interrupt();
}

#[test]
fn invalid_topic_names_are_refused_before_connecting() {
    let endpoint = dead_endpoint();
    for name in ["", " leading space", "tab\there", &"x".repeat(250)] {
        let out = run(PRODUCER, &["--connect", &endpoint, name, "message"]);
        out.assert_code(1);
        assert!(out.stderr.starts_with("error: invalid topic name"), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.elapsed < Duration::from_secs(1), "took {:?}", out.elapsed);
    }
}

#[test]
fn an_oversize_message_is_refused_clearly() {
    let broker = BrokerProcess::start(&broker_binary(), &["--max-message-bytes", "100"]);
    let big = "x".repeat(200);
    let out = producer(&broker, &["limited", &big]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("(message_too_large)"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // Nothing of the refused append was stored; a message within the limit still goes.
    let out = producer(&broker, &["limited", &"y".repeat(100)]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to limited at offset 0"]);
    broker.interrupt();
}

#[test]
fn a_dead_endpoint_fails_quickly_and_says_so() {
    let endpoint = dead_endpoint();
    let out = run(PRODUCER, &["--connect", &endpoint, "--timeout", "1s", "t", "m"]);
    out.assert_code(1);
    let want = format!("error: broker not reachable at {endpoint}");
    assert!(out.stderr.starts_with(&want), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(5), "took {:?}", out.elapsed);
}
