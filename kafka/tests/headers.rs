//! Record headers through both doors with real clients: the native `producer --header` read by
//! confluent-kafka's `msg.headers()`, and confluent-kafka's `headers=[...]` read by the native
//! `consumer --print-headers` and by kcat's `%h`, in order, repeated names and null values too.

mod common;

use std::process::Command;

use common::{binary, run, script, success, Door};

/// What `scripts/kafka-headers.py consume` prints for the headers both tests send.
const SENT: &str = r#"[["trace", "t-1"], ["trace", null], ["content-type", ""]]"#;

/// The messages of partition 0 of `topic` as `scripts/kafka-headers.py consume` prints them,
/// one JSON line each (Python's `json.dumps`, whose spacing is fixed).
fn confluent_reads(door: &Door, topic: &str, count: usize) -> Vec<String> {
    let mut consume = Command::new("python3");
    consume.arg(script("kafka-headers.py")).args(["consume", &door.bootstrap(), topic]);
    consume.arg(count.to_string());
    let out = success(&run(consume, ""), "confluent consume");
    out.lines().map(str::to_owned).collect()
}

#[test]
fn headers_from_the_native_producer_reach_confluent_kafka_in_order() {
    let door = Door::start(&[]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--header", "trace=t-1", "--header", "trace"]);
    produce.args(["--header", "content-type=", "traced", "with"]);
    success(&run(produce, ""), "producer --header");
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "traced", "without"]);
    success(&run(produce, ""), "producer");

    assert_eq!(
        confluent_reads(&door, "traced", 2),
        [
            format!(r#"{{"offset": 0, "value": "with", "headers": {SENT}}}"#),
            r#"{"offset": 1, "value": "without", "headers": null}"#.to_owned(),
        ]
    );
    door.stop();
}

#[test]
fn headers_from_confluent_kafka_reach_the_native_consumer_and_kcat() {
    let door = Door::start(&[]);
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-headers.py")).args(["produce", &door.bootstrap(), "from-kafka"]);
    assert_eq!(success(&run(produce, ""), "confluent produce"), "produced 2\n");

    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "from-kafka", "--print-headers"]);
    fetch.arg("--print-key");
    assert_eq!(
        success(&run(fetch, ""), "consumer --print-headers"),
        "0\ttrace:t-1,trace:null,content-type:\tk\twith\n1\tNO_HEADERS\tnull\twithout\n"
    );
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "from-kafka", "--json"]);
    let json = success(&run(fetch, ""), "consumer --json");
    let lines: Vec<&str> = json.lines().collect();
    let headers = r#""headers":[{"key":"trace","value":"t-1"},{"key":"trace","value":null},{"key":"content-type","value":""}]"#;
    assert!(lines[0].contains(headers), "{json}");
    assert!(!lines[1].contains("headers"), "{json}");

    // kcat prints headers as name=value pairs; a null value prints as nothing after `=`.
    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "from-kafka", "-f", "%h|%s\n"]);
    let out = success(&run(kcat, ""), "kcat -f %h");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("trace=t-1,trace="), "{out}");
    assert!(lines[0].ends_with(",content-type=|with"), "{out}");
    assert!(lines[1].ends_with("|without"), "{out}");

    // And back through the Kafka door: what a Kafka client wrote reads the same there.
    let read = confluent_reads(&door, "from-kafka", 2);
    assert_eq!(read[0], format!(r#"{{"offset": 0, "value": "with", "headers": {SENT}}}"#));
    door.stop();
}

#[test]
fn kcat_sends_headers_the_native_consumer_prints() {
    let door = Door::start(&[]);
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &door.bootstrap(), "-t", "from-kcat", "-H", "a=1", "-H", "a=2"]);
    success(&run(kcat, "one\n"), "kcat -P -H");
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "from-kcat", "--print-headers"]);
    assert_eq!(success(&run(fetch, ""), "consumer --print-headers"), "0\ta:1,a:2\tone\n");
    door.stop();
}
