//! `producer perf` and `consumer perf` against a real broker and against their floor, and the
//! producer's plain use beside its `perf` command.

mod common;

use common::{consumer, preloaded_broker, producer, run, CONSUMER, PRODUCER};
use serde_json::Value;

/// The one JSON object a `--json` run printed.
fn report(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn producer_perf_appends_what_it_says_and_consumer_perf_reads_it_back() {
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    let args = ["perf", "--connect", ep, "--messages", "250", "--batch", "100", "--clients", "2"];
    let out =
        run(PRODUCER, &[&args[..], &["--topic", "loaded", "--size", "10", "--json"]].concat());
    let appended = report(&out.assert_success().stdout);
    assert_eq!(appended["op"], "append");
    assert_eq!(appended["target"], "broker");
    assert_eq!(appended["messages"], 250);
    assert_eq!(appended["requests"], 3);
    assert_eq!(appended["bytes"], 2500);
    assert_eq!(appended["clients"], 2);
    assert!(appended["records_per_s"].as_f64().is_some_and(|r| r > 0.0), "{appended}");
    let latency = &appended["latency_us"];
    for field in ["mean", "p50", "p95", "p99", "p999", "max"] {
        assert!(latency[field].as_f64().is_some_and(|l| l > 0.0), "{field}: {latency}");
    }

    let out = consumer(&broker, &["topics"]);
    assert!(out.assert_success().stdout.contains("loaded"), "{}", out.stdout);
    let args = ["perf", "loaded", "--connect", ep, "--messages", "400", "--batch", "64", "--json"];
    let read = report(&run(CONSUMER, &args).assert_success().stdout);
    assert_eq!(read["op"], "fetch");
    // 400 messages from a topic of 250: the reader goes back to its start at the end.
    assert_eq!(read["messages"], 400);
    assert_eq!(read["size"], 10);
    broker.interrupt();
}

#[test]
fn producer_perf_spreads_its_appends_over_topics() {
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    let args = ["perf", "--connect", ep, "--messages", "12", "--clients", "2", "--topics", "3"];
    let out = run(PRODUCER, &[&args[..], &["--topic", "spread", "--json"]].concat());
    assert_eq!(report(&out.assert_success().stdout)["messages"], 12);
    let out = consumer(&broker, &["topics", "--json"]);
    let listed = &out.assert_success().stdout;
    let mut counts: Vec<(String, u64)> = listed
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("spread")))
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["messages"].as_u64().unwrap()))
        .collect();
    counts.sort();
    let expected = [("spread-0", 4), ("spread-1", 4), ("spread-2", 4)];
    assert_eq!(counts, expected.map(|(n, c)| (n.to_owned(), c)), "{listed}");
    broker.interrupt();
}

#[test]
fn the_text_report_gives_rates_and_percentiles() {
    let broker = preloaded_broker();
    let args = ["perf", "--connect", &broker.endpoint, "--messages", "20"];
    let out = run(PRODUCER, &args);
    let lines = out.assert_success().lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("append perf at tcp://127.0.0.1:"), "{lines:?}");
    assert!(lines[0].ends_with("(broker): 1 client, batches of 1, 100-byte values"), "{lines:?}");
    assert!(lines[1].starts_with("20 records in "), "{lines:?}");
    for part in ["records/s", "MB/s", "requests/s", "p50", "p95", "p99", "p99.9", "max"] {
        assert!(lines[1].contains(part), "{part}: {lines:?}");
    }
    broker.interrupt();
}

#[test]
fn the_floors_need_no_broker() {
    let out = run(PRODUCER, &["perf", "--floor", "--messages", "30", "--batch", "7", "--json"]);
    let echo = report(&out.assert_success().stdout);
    assert_eq!((echo["target"].as_str(), echo["messages"].as_u64()), (Some("floor"), Some(30)));
    assert_eq!(echo["requests"], 5);

    let args = ["perf", "t", "--floor", "--messages", "50", "--batch", "10", "--size", "3"];
    let out = run(CONSUMER, &[&args[..], &["--json"]].concat());
    let prepared = report(&out.assert_success().stdout);
    assert_eq!(prepared["target"], "floor");
    assert_eq!(prepared["messages"], 50);
    assert_eq!(prepared["size"], 3);
}

#[test]
fn consumer_perf_needs_a_logical_broker_per_client_unless_it_waits() {
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    let base = ["perf", "Hola mundo", "--connect", ep, "--messages", "30", "--clients", "3"];
    let out = run(CONSUMER, &base);
    out.assert_code(1);
    assert!(out.stderr.contains("no logical broker is free"), "{}", out.stderr);

    let out = run(CONSUMER, &[&base[..], &["--wait", "--json"]].concat());
    assert_eq!(report(&out.assert_success().stdout)["messages"], 30);
    // Every claim was given back.
    let status = consumer(&broker, &["status"]);
    assert!(!status.assert_success().stdout.contains("claimed"), "{}", status.stdout);

    let out = run(CONSUMER, &["perf", "nowhere", "--connect", ep, "--messages", "1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("\"nowhere\" does not exist"), "{}", out.stderr);
    broker.interrupt();
}

#[test]
fn perf_is_a_command_only_in_first_place() {
    let broker = preloaded_broker();
    let out = producer(&broker, &["t", "perf"]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to t at offset 0"]);
    let out = producer(&broker, &["--", "perf", "hello"]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to perf at offset 0"]);
    let out = consumer(&broker, &["fetch", "t"]);
    assert_eq!(out.assert_success().lines(), ["0\tperf"]);
    broker.interrupt();
}
