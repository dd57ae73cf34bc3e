//! The pipelined `producer` (`--max-in-flight`) against a real broker: lines piped in arrive
//! whole and in order per partition, each reported; one append in flight gives what lockstep
//! gives; refusals and a broker killed mid-stream are reported with the lines they affected;
//! Ctrl-C awaits what is in flight; `producer perf --max-in-flight` and `--keys`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{broker_binary, consumer, preloaded_broker, run, run_with, Running, PRODUCER};
use testkit::BrokerProcess;

/// The lines of `consumer fetch TOPIC --partition P --print-key`: (offset, key, value).
fn fetch_partition(broker: &BrokerProcess, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let p = partition.to_string();
    let out = consumer(broker, &["fetch", topic, "--partition", &p, "--max", "100000"]);
    out.assert_success()
        .lines()
        .iter()
        .map(|line| {
            let (offset, rest) = line.split_once('\t').expect("offset, tab, message");
            (offset.parse().expect("an offset"), rest.to_owned())
        })
        .collect()
}

#[test]
fn many_single_lines_arrive_all_in_order_per_partition_each_reported() {
    let broker = preloaded_broker();
    // Keyless lines on a topic of one partition: every line, in order, in several appends.
    let input: String = (1..=20_000).map(|i| format!("line {i}\n")).collect();
    let args = [
        "--connect",
        &broker.endpoint,
        "--max-in-flight",
        "8",
        "--linger",
        "2",
        "--batch-bytes",
        "4096",
        "bulk",
    ];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    let lines = out.assert_success().lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let requests: u32 = lines[0]
        .strip_prefix("appended 20000 messages to bulk at offsets 0..19999 in ")
        .and_then(|rest| rest.strip_suffix(" requests"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary {:?}", lines[0]));
    // 4 KiB appends of ~10-byte lines: far more than one append, far fewer than one per line.
    assert!((20..=5000).contains(&requests), "{}", lines[0]);
    let got = fetch_partition(&broker, "bulk", 0);
    let want: Vec<(u64, String)> = (1..=20_000).map(|i| (i - 1, format!("line {i}"))).collect();
    assert_eq!(got, want);

    // Keyed lines over four partitions: each key's lines in order on its partition.
    consumer(&broker, &["create-topic", "spread", "--partitions", "4"]).assert_success();
    let input: String = (1..=20_000).map(|i| format!("k{}:{i}\n", i % 16)).collect();
    let args = [
        "--connect",
        &broker.endpoint,
        "--key-separator",
        ":",
        "--max-in-flight",
        "8",
        "--batch-bytes",
        "2048",
        "spread",
    ];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    let summary = out.assert_success().lines()[0].to_owned();
    assert!(summary.starts_with("appended 20000 messages to spread at partition "), "{summary}");
    let mut seen = 0;
    for partition in 0..4 {
        let out = consumer(
            &broker,
            &["fetch", "spread", "--partition", &partition.to_string(), "--max", "100000"],
        );
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for line in out.assert_success().lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 2, "{line}");
            // Without --print-key the value alone: the key is the line number modulo 16.
            let number: u64 = fields[1].parse().expect("a line number");
            let key = format!("k{}", number % 16);
            assert_eq!(
                protocol::partition_for_key(key.as_bytes(), 4),
                partition,
                "line {number} on partition {partition}"
            );
            let previous = last.insert(key.clone(), number);
            assert!(previous.is_none_or(|p| p < number), "{key}: {previous:?} then {number}");
            seen += 1;
        }
    }
    assert_eq!(seen, 20_000);
    broker.interrupt();
}

#[test]
fn one_append_in_flight_gives_what_lockstep_gives() {
    let broker = preloaded_broker();
    let input: String = (1..=2500).map(|i| format!("line {i}\n")).collect();
    let lockstep = run_with(
        PRODUCER,
        &["--connect", &broker.endpoint, "--batch", "500", "lockstep"],
        input.as_bytes(),
        &[],
    );
    let pipelined = run_with(
        PRODUCER,
        &["--connect", &broker.endpoint, "--batch", "500", "--max-in-flight", "1", "piped"],
        input.as_bytes(),
        &[],
    );
    let lockstep = lockstep.assert_success().lines()[0].replace("lockstep", "TOPIC");
    let pipelined = pipelined.assert_success().lines()[0].replace("piped", "TOPIC");
    // Both cut the lines into appends of at most 500: the offsets are the same, and so are
    // the messages.
    let prefix = "appended 2500 messages to TOPIC at offsets 0..2499 in ";
    assert!(lockstep.starts_with(prefix), "{lockstep}");
    assert!(pipelined.starts_with(prefix), "{pipelined}");
    let requests = |summary: &str| -> u32 {
        summary[prefix.len()..].trim_end_matches(" requests").parse().expect("a count")
    };
    assert!(requests(&pipelined) >= 5, "{pipelined}");
    assert_eq!(fetch_partition(&broker, "lockstep", 0), fetch_partition(&broker, "piped", 0));
    broker.interrupt();
}

#[test]
fn an_unknown_partition_is_reported_with_its_lines_and_the_exit_code() {
    let broker = preloaded_broker();
    consumer(&broker, &["create-topic", "four", "--partitions", "4"]).assert_success();
    let args = ["--connect", &broker.endpoint, "--partition", "9", "--max-in-flight", "4", "four"];
    let out = run_with(PRODUCER, &args, b"a\nb\nc\n", &[]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("3 lines from line 1 to 3: not appended: "), "{}", out.stderr);
    assert!(out.stderr.contains("(unknown_partition)"), "{}", out.stderr);
    let out = consumer(&broker, &["--json", "topics"]);
    assert!(out.assert_success().stdout.contains(r#""messages":0"#), "{}", out.stdout);
    broker.interrupt();
}

#[test]
fn a_line_over_the_size_limit_is_skipped_as_in_lockstep() {
    let broker = BrokerProcess::start(&broker_binary(), &["--max-message-bytes", "100"]);
    let input = format!("short 1\n{}\nshort 3\n", "x".repeat(200));
    let outs: Vec<_> = [&[][..], &["--max-in-flight", "4"][..]]
        .iter()
        .map(|extra| {
            let mut args = vec!["--connect", broker.endpoint.as_str()];
            args.extend_from_slice(extra);
            args.push("limited");
            run_with(PRODUCER, &args, input.as_bytes(), &[])
        })
        .collect();
    for out in &outs {
        out.assert_code(1);
        assert!(
            out.stderr
                .contains("line 2 is 200 bytes; the limit is 100 (broker --max-message-bytes)"),
            "{}",
            out.stderr
        );
        assert!(out.stdout.contains("; skipped 1 line over the size limit"), "{}", out.stdout);
    }
    assert!(outs[0].stdout.starts_with("appended 2 messages to limited at offsets 0..1"));
    assert!(outs[1].stdout.starts_with("appended 2 messages to limited at offsets 2..3"));
    let values: Vec<String> =
        fetch_partition(&broker, "limited", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["short 1", "short 3", "short 1", "short 3"]);
    broker.interrupt();
}

#[test]
fn a_broker_killed_mid_stream_leaves_the_lines_in_flight_unconfirmed() {
    let broker = preloaded_broker();
    let args = [
        "--connect",
        &broker.endpoint,
        "--timeout",
        "1s",
        "--max-in-flight",
        "4",
        "--linger",
        "1",
        "doomed",
    ];
    let mut producing =
        Running::start(PRODUCER, &args, &[("RUST_LOG", "clients=debug,client=debug")]);
    let first: String = (1..=100).map(|i| format!("first {i}\n")).collect();
    producing.write_stdin(first.as_bytes());
    producing.wait_stderr("appended");
    // Poll until the hundred lines are stored, then kill the broker without a word.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_partition(&broker, "doomed", 0).len() < 100 {
        assert!(Instant::now() < deadline, "the first lines were not stored");
    }
    broker.kill();
    let second: String = (1..=100).map(|i| format!("second {i}\n")).collect();
    producing.write_stdin(second.as_bytes());
    let (status, stdout, stderr) = producing.wait_exit();
    assert_eq!(status.code(), Some(1), "{status}; stderr {stderr:?}");
    let stderr = stderr.join("\n");
    assert!(
        stderr.contains("were not confirmed and may or may not have been appended"),
        "{stderr}"
    );
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(stdout[0].starts_with("appended 100 messages to doomed at offsets 0..99 in "));
    assert!(stdout[0].ends_with(" unconfirmed"), "{}", stdout[0]);
}

#[test]
fn ctrl_c_awaits_the_appends_in_flight_and_reports_them() {
    let broker = preloaded_broker();
    let args = ["--connect", &broker.endpoint, "--max-in-flight", "4", "typed"];
    let mut typing = Running::start(PRODUCER, &args, &[("RUST_LOG", "clients=debug,client=debug")]);
    typing.write_stdin(b"one\ntwo\n");
    typing.wait_stderr("appended");
    typing.interrupt();
    let (status, stdout, stderr) = typing.wait_exit();
    assert_eq!(status.code(), Some(130), "{status}; stderr {stderr:?}");
    assert_eq!(stdout, ["appended 2 messages to typed at offsets 0..1 in 1 request"]);
    let values: Vec<String> =
        fetch_partition(&broker, "typed", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["one", "two"]);
    broker.interrupt();
}

#[test]
fn perf_pipelines_single_messages_and_spreads_keys() {
    let broker = preloaded_broker();
    consumer(&broker, &["create-topic", "keyed", "--partitions", "4"]).assert_success();
    let endpoint = broker.endpoint.as_str();
    let perf = |extra: &[&str]| {
        let mut args = vec!["perf", "--connect", endpoint, "--json", "--messages", "20000"];
        args.extend_from_slice(extra);
        let out = run(PRODUCER, &args);
        let json: serde_json::Value =
            serde_json::from_str(out.assert_success().stdout.trim()).expect("one JSON object");
        json
    };
    let piped = perf(&["--max-in-flight", "4", "--topic", "piped"]);
    assert_eq!(piped["messages"], 20000);
    let requests = piped["requests"].as_u64().expect("requests");
    assert!((2..20000).contains(&requests), "{piped}");
    // Every message was acknowledged: the topic holds them all.
    assert_eq!(fetch_partition(&broker, "piped", 0).len(), 20000);
    perf(&["--max-in-flight", "4", "--keys", "40", "--topic", "keyed"]);
    perf(&["--batch", "100", "--keys", "40", "--topic", "keyed"]);
    let mut total = 0;
    for partition in 0..4 {
        let got = fetch_partition(&broker, "keyed", partition);
        assert!(!got.is_empty(), "partition {partition} got no key");
        total += got.len();
    }
    assert_eq!(total, 40000);
    // Pipelining needs single sends to a broker.
    let out = run(
        PRODUCER,
        &[
            "perf",
            "--connect",
            endpoint,
            "--messages",
            "10",
            "--max-in-flight",
            "2",
            "--batch",
            "5",
        ],
    );
    out.assert_code(1);
    assert!(out.stderr.contains("use --batch 1"), "{}", out.stderr);
    broker.interrupt();
}

/// What the stand-in broker does with the next append.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// `appended`, at the next offsets.
    Appended,
    /// A refusal with this code and reason.
    Refuse(protocol::ErrorCode, &'static str),
    /// No reply at all.
    Ignore,
}

/// A stand-in broker on a ROUTER socket that answers each append as the next of `answers`
/// says, echoing its `id`; returns the idempotent mark (producer and sequence) of each append
/// it took, in the order they came. It stops after the last answer or after 10 s.
fn scripted_broker(
    answers: Vec<Answer>,
) -> (String, std::thread::JoinHandle<Vec<Option<protocol::Sequenced>>>) {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).expect("ROUTER socket");
    router.set_linger(0).expect("linger");
    router.set_rcvtimeo(10_000).expect("rcvtimeo");
    router.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = router.get_last_endpoint().expect("endpoint").expect("utf-8 endpoint");
    let serving = std::thread::spawn(move || {
        let _context = context;
        let mut next_offset = 0;
        let mut marks = Vec::new();
        for answer in answers {
            let Ok(frames) = router.recv_multipart(0) else { break };
            let (body, envelope) = frames.split_last().expect("frames");
            let request = protocol::decode_request(body).expect("a request");
            let protocol::Request::Append(append) = request else { panic!("not an append") };
            marks.push(append.sequenced);
            let count = append.messages.len() as u64;
            let response = match answer {
                Answer::Ignore => continue,
                Answer::Refuse(code, reason) => protocol::Response::error(code, reason),
                Answer::Appended => {
                    next_offset += count;
                    protocol::Response::Appended {
                        topic: append.topic,
                        partition: 0,
                        first_offset: next_offset - count,
                        last_offset: next_offset - 1,
                        placed: Vec::new(),
                    }
                }
            };
            let mut reply = Vec::new();
            protocol::encode_response_with_id(response, protocol::frame_id(body), &mut reply);
            let mut out: Vec<Vec<u8>> = envelope.iter().map(|f| f.to_vec()).collect();
            out.push(reply);
            router.send_multipart(out, 0).expect("send");
        }
        marks
    });
    (endpoint, serving)
}

/// Whether every mark is the same one, of an idempotent producer.
fn one_mark(marks: &[Option<protocol::Sequenced>]) -> bool {
    marks.first().is_some_and(Option::is_some) && marks.iter().all(|m| *m == marks[0])
}

#[test]
fn an_append_that_stored_nothing_is_sent_again_and_one_that_may_have_is_not() {
    use protocol::ErrorCode::StoreUnavailable;
    let nothing = "the store cannot be reached (down); nothing was appended";
    let (endpoint, serving) =
        scripted_broker(vec![Answer::Refuse(StoreUnavailable, nothing), Answer::Appended]);
    let args = ["--connect", &endpoint, "--max-in-flight", "2", "retried"];
    let out = run_with(PRODUCER, &args, b"a\nb\nc\n", &[]);
    assert_eq!(
        out.assert_success().lines(),
        ["appended 3 messages to retried at offsets 0..2 in 1 request"]
    );
    let marks = serving.join().expect("the stand-in broker");
    assert_eq!(marks.len(), 2);
    assert!(one_mark(&marks), "{marks:?}");

    // Without idempotence, one that may have been stored is not sent again.
    let maybe = "could not confirm that the messages were stored; they may have been appended";
    let (endpoint, serving) = scripted_broker(vec![Answer::Refuse(StoreUnavailable, maybe)]);
    let args = ["--connect", &endpoint, "--max-in-flight", "2", "--no-idempotence", "maybe"];
    let out = run_with(PRODUCER, &args, b"a\nb\nc\n", &[]);
    out.assert_code(1);
    // Reported as the broker said it, in doubt: never "not appended", which invites a resend.
    let doubt = format!("3 lines from line 1 to 3: {maybe} (store_unavailable)");
    assert!(out.stderr.lines().any(|line| line == doubt), "{}", out.stderr);
    assert!(!out.stderr.contains("not appended"), "{}", out.stderr);
    // Nothing marks it.
    assert_eq!(serving.join().expect("the stand-in broker"), [None]);
}

/// The stand-in's answers to an append in doubt, then to its copies: a `314` that may have
/// stored it, a `317` (a copy while the first is being stored), no reply, then `appended`.
fn in_doubt_then_appended() -> Vec<Answer> {
    use protocol::ErrorCode::{InProgress, StoreUnavailable};
    let maybe = "could not confirm that the messages were stored; they may have been appended";
    vec![
        Answer::Refuse(StoreUnavailable, maybe),
        Answer::Refuse(InProgress, "the first sending is still being stored"),
        Answer::Ignore,
        Answer::Appended,
    ]
}

#[test]
fn an_idempotent_append_in_doubt_is_sent_again_with_its_mark_until_appended() {
    for pipelined in [false, true] {
        let (endpoint, serving) = scripted_broker(in_doubt_then_appended());
        let mut args = vec!["--connect", &endpoint, "--timeout", "4s"];
        if pipelined {
            args.extend(["--max-in-flight", "2"]);
        }
        args.push("doubted");
        let out = run_with(PRODUCER, &args, b"a\nb\nc\n", &[]);
        assert_eq!(
            out.assert_success().lines(),
            ["appended 3 messages to doubted at offsets 0..2 in 1 request"],
            "pipelined {pipelined}: {}",
            out.stderr
        );
        // Four sendings of one append, each with the same producer and sequence.
        let marks = serving.join().expect("the stand-in broker");
        assert_eq!(marks.len(), 4, "pipelined {pipelined}: {marks:?}");
        assert!(one_mark(&marks), "pipelined {pipelined}: {marks:?}");
        assert!(!out.stderr.contains("unconfirmed"), "{}", out.stderr);
    }
}

#[test]
fn each_new_append_gets_a_new_sequence_and_no_idempotence_sends_none() {
    use protocol::ErrorCode::MessageTooLarge;
    let too_large = "message 1 of the batch is 200 bytes; the limit is 100";
    let (endpoint, serving) = scripted_broker(vec![
        Answer::Refuse(MessageTooLarge, too_large),
        Answer::Appended,
        Answer::Appended,
    ]);
    let input = format!("short 1\n{}\nshort 3\n", "x".repeat(200));
    let args = ["--connect", &endpoint, "marked"];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    out.assert_code(1);
    assert!(out.stdout.contains("; skipped 1 line over the size limit"), "{}", out.stdout);
    // The lines left after the refusal make a new append, with the next sequence.
    let out = run_with(PRODUCER, &["--connect", &endpoint, "marked", "again"], b"", &[]);
    out.assert_success();
    let marks = serving.join().expect("the stand-in broker");
    let marks: Vec<protocol::Sequenced> = marks.into_iter().map(Option::unwrap).collect();
    assert_eq!(marks.len(), 3);
    assert_eq!((marks[0].producer, marks[0].sequence), (marks[1].producer, 0));
    assert_eq!(marks[1].sequence, 1);
    // Another run is another producer, counting from 0 again.
    assert_ne!(marks[2].producer, marks[0].producer);
    assert_eq!(marks[2].sequence, 0);

    for pipelined in [&[][..], &["--max-in-flight", "2"][..]] {
        let (endpoint, serving) = scripted_broker(vec![Answer::Appended]);
        let args = [&["--connect", &endpoint, "--no-idempotence"][..], pipelined, &["plain"]];
        let out = run_with(PRODUCER, &args.concat(), b"a\nb\n", &[]);
        out.assert_success();
        assert_eq!(serving.join().expect("the stand-in broker"), [None], "{pipelined:?}");
    }
}
