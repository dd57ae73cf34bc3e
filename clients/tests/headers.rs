//! Record headers through the real `producer` and `consumer` against a real broker: sent with
//! `--header`, printed with `--print-headers` (Kafka's `print.headers=true`) and in `--json`,
//! kept in order, repeated names and null values too, in memory and across a restart on disk.

mod common;

use common::{broker_binary, consumer, preloaded_broker, producer, run_with, PRODUCER};
use testkit::BrokerProcess;

/// The headers every test sends: a name twice, a null value, an empty value.
const HEADERS: [&str; 6] =
    ["--header", "trace=t-1", "--header", "trace", "--header", "content-type="];

/// What `--print-headers` prints for [`HEADERS`].
const PRINTED: &str = "trace:t-1,trace:null,content-type:";

#[test]
fn headers_sent_with_the_producer_are_printed_by_the_consumer_in_order() {
    let broker = preloaded_broker();
    let mut args = HEADERS.to_vec();
    args.extend(["--key", "k", "traced", "first", "second"]);
    producer(&broker, &args).assert_success();
    producer(&broker, &["traced", "plain"]).assert_success();
    // From standard input, one append at a time and pipelined.
    for extra in [&[][..], &["--max-in-flight", "4"][..]] {
        let mut args = vec!["--connect", broker.endpoint.as_str()];
        args.extend_from_slice(&HEADERS);
        args.extend_from_slice(extra);
        args.push("traced");
        run_with(PRODUCER, &args, b"line\n", &[]).assert_success();
    }

    let out = consumer(&broker, &["fetch", "traced", "--print-headers", "--print-key"]);
    assert_eq!(
        out.assert_success().lines(),
        [
            format!("0\t{PRINTED}\tk\tfirst"),
            format!("1\t{PRINTED}\tk\tsecond"),
            "2\tNO_HEADERS\tnull\tplain".to_owned(),
            format!("3\t{PRINTED}\tnull\tline"),
            format!("4\t{PRINTED}\tnull\tline"),
        ]
    );
    // Kafka's console consumer properties say the same, with their own separators.
    let out = consumer(
        &broker,
        &[
            "fetch",
            "traced",
            "--property",
            "print.headers=true",
            "--property",
            "headers.separator=|",
            "--property",
            "headers.key.separator==",
            "--property",
            "print.offset=false",
        ],
    );
    assert_eq!(
        out.assert_success().lines()[..3],
        [
            "trace=t-1|trace=null|content-type=\tfirst",
            "trace=t-1|trace=null|content-type=\tsecond",
            "NO_HEADERS\tplain"
        ]
    );
    // Without the flag nothing changes for a reader that knows nothing of headers.
    let out = consumer(&broker, &["fetch", "traced"]);
    assert_eq!(out.assert_success().lines()[..3], ["0\tfirst", "1\tsecond", "2\tplain"]);

    let out = consumer(&broker, &["fetch", "traced", "--json"]);
    let lines: Vec<serde_json::Value> =
        out.assert_success().lines().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines[0]["headers"],
        serde_json::json!([
            {"key": "trace", "value": "t-1"},
            {"key": "trace", "value": null},
            {"key": "content-type", "value": ""},
        ])
    );
    assert!(lines[2].get("headers").is_none(), "{}", lines[2]);
    broker.interrupt();
}

#[test]
fn headers_survive_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let broker = BrokerProcess::start(&broker_binary(), &["--data-dir", data_dir]);
    let mut args = HEADERS.to_vec();
    args.extend(["kept", "one"]);
    producer(&broker, &args).assert_success();
    producer(&broker, &["kept", "two"]).assert_success();
    broker.interrupt();

    let broker = BrokerProcess::start(&broker_binary(), &["--data-dir", data_dir]);
    let out = consumer(&broker, &["fetch", "kept", "--print-headers"]);
    assert_eq!(
        out.assert_success().lines(),
        [format!("0\t{PRINTED}\tone"), "1\tNO_HEADERS\ttwo".to_owned()]
    );
    broker.interrupt();
}

#[test]
fn too_many_headers_or_a_name_too_long_are_refused_before_anything_is_sent() {
    let broker = preloaded_broker();
    let many: Vec<String> =
        (0..=protocol::MAX_MESSAGE_HEADERS).map(|i| format!("h{i}=v")).collect();
    let mut args: Vec<&str> = many.iter().flat_map(|h| ["--header", h.as_str()]).collect();
    args.extend(["refused", "x"]);
    let out = producer(&broker, &args);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("at most 100 headers"), "{}", out.stderr);
    let long = format!("{}=v", "n".repeat(protocol::MAX_HEADER_KEY_BYTES + 1));
    let out = producer(&broker, &["--header", &long, "refused", "x"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("at most 256 bytes"), "{}", out.stderr);
    // Nothing was appended: the topic was never made.
    let out = consumer(&broker, &["fetch", "refused"]);
    assert!(!out.status.success(), "{out:?}");
    broker.interrupt();
}
