//! The `producer` binary against a real broker: messages from arguments and from standard
//! input, keys, Ctrl-C, and refusals; the Python client beside it (keys, pipelining,
//! idempotent appends).

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
        // One line, the name's: a producer that had tried the dead endpoint would say it is
        // unreachable, after its timeout.
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
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

#[test]
fn keyed_messages_land_where_murmur2_says_and_a_named_partition_takes_everything() {
    let broker = preloaded_broker();
    consumer(&broker, &["create-topic", "spread", "--partitions", "4"]).assert_success();
    let keys = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    let home = |key: &str| protocol::partition_for_key(key.as_bytes(), 4);
    let input: String = keys.iter().enumerate().map(|(i, k)| format!("{k}:line {i}\n")).collect();
    let args = ["--connect", &broker.endpoint, "--key-separator", ":", "spread"];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    let summary = out.assert_success().lines()[0].to_owned();
    // One append per partition reached, each named with its offsets.
    let reached: std::collections::BTreeSet<u32> = keys.iter().map(|k| home(k)).collect();
    assert!(reached.len() >= 2, "the keys spread: {reached:?}");
    assert!(summary.starts_with("appended 8 messages to spread at partition "), "{summary}");
    assert!(summary.ends_with(&format!(" in {} requests", reached.len())), "{summary}");
    for partition in &reached {
        let count = keys.iter().filter(|k| home(k) == *partition).count();
        let offsets =
            if count == 1 { "offset 0".to_owned() } else { format!("offsets 0..{}", count - 1) };
        assert!(summary.contains(&format!("partition {partition} {offsets}")), "{summary}");
    }
    // Command-line messages are placed the same way.
    let out = producer(&broker, &["--key-separator", ":", "spread", "alice:again", "bob:again"]);
    out.assert_success();

    for partition in 0..4 {
        let p = partition.to_string();
        let out = consumer(&broker, &["fetch", "spread", "--partition", &p, "--print-key"]);
        let mut want: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| home(k) == partition)
            .map(|(i, k)| format!("{k}\tline {i}"))
            .collect();
        want.extend(
            ["alice", "bob"].iter().filter(|k| home(k) == partition).map(|k| format!("{k}\tagain")),
        );
        let want: Vec<String> = want
            .into_iter()
            .enumerate()
            .map(|(offset, line)| format!("{offset}\t{line}"))
            .collect();
        assert_eq!(out.assert_success().lines(), want, "partition {partition}");
    }

    // --partition puts keyed and keyless messages alike on the partition named.
    let out = producer(&broker, &["--partition", "3", "--key", "alice", "spread", "x", "y"]);
    let end = keys.iter().chain(&["alice", "bob"]).filter(|k| home(k) == 3).count();
    let want = format!("appended 2 messages to spread at partition 3 offsets {end}..{}", end + 1);
    assert_eq!(out.assert_success().lines(), [want.as_str()]);
    let input = b"one\ntwo\n";
    let args = ["--connect", &broker.endpoint, "--partition", "1", "spread"];
    let out = run_with(PRODUCER, &args, input, &[]);
    assert!(out.assert_success().stdout.contains("at partition 1 offsets "), "{}", out.stdout);
    let out = consumer(&broker, &["fetch", "spread", "--partition", "1", "--offset", "latest"]);
    out.assert_success();

    // A partition the topic lacks: the broker's refusal, nothing appended.
    let out = producer(&broker, &["--partition", "4", "spread", "lost"]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("(unknown_partition)"), "{}", out.stderr);
    let out = consumer(&broker, &["--json", "topics"]);
    let total: u64 = out
        .assert_success()
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|t| t["name"] == "spread")
        .map(|t| t["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 8 + 2 + 2 + 2);
    broker.interrupt();
}

#[test]
fn keyed_messages_are_placed_where_murmur2_says_even_when_no_logical_broker_is_free() {
    let broker = BrokerProcess::start(&broker_binary(), &["--brokers", "1"]);
    consumer(&broker, &["create-topic", "spread", "--partitions", "4"]).assert_success();
    let mut holder = Running::consumer(&broker, &["follow", "Hola mundo"]);
    holder.wait_stderr("following");
    // Listing topics needs no claim: the producer learns the count while every logical broker
    // is held, and places the keys itself.
    let out = producer(&broker, &["--key", "carol", "spread", "a", "b"]);
    let home = protocol::partition_for_key(b"carol", 4);
    let want = format!("appended 2 messages to spread at partition {home} offsets 0..1");
    assert_eq!(out.assert_success().lines(), [want.as_str()]);
    holder.interrupt();
    holder.wait_exit();
    let out = consumer(&broker, &["fetch", "spread", "--partition", &home.to_string()]);
    assert_eq!(out.assert_success().lines(), ["0\ta", "1\tb"]);
    broker.interrupt();
}

/// Runs `python3 scripts/pyclient.py --connect ENDPOINT args...` (or, when `args` starts
/// with `-c`, that script with `scripts/` on the module path), bounded in time by `run`.
fn pyclient(endpoint: &str, args: &[&str]) -> common::Finished {
    pyclient_fed(endpoint, args, b"")
}

/// [`pyclient`] with `stdin` on its standard input.
fn pyclient_fed(endpoint: &str, args: &[&str], stdin: &[u8]) -> common::Finished {
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let script = scripts.join("pyclient.py");
    let script = script.to_str().expect("a UTF-8 path");
    let path = scripts.to_str().expect("a UTF-8 path");
    let envs = [("PYTHONPATH", path), ("PYTHONDONTWRITEBYTECODE", "1")];
    let mut all = vec![script, "--connect", endpoint, "--timeout", "5"];
    if args.first() == Some(&"-c") {
        all.clear();
    }
    all.extend_from_slice(args);
    run_with("python3", &all, stdin, &envs)
}

#[test]
fn the_python_client_places_keys_as_the_producer_does_and_reads_partitions() {
    testkit::require::python_modules(&["zmq", "msgpack"]);
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    let out = pyclient(ep, &["create-topic", "spread", "--partitions", "4"]);
    assert_eq!(out.assert_success().lines(), ["created spread with 4 partition(s)"]);
    let out = pyclient(ep, &["topics", "--partitions"]);
    assert!(out.assert_success().lines().contains(&"spread\t4\t0,0,0,0"), "{}", out.stdout);

    // The same partition for every key as the Rust crate and Kafka.
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}-{}", "x".repeat(i % 7))).collect();
    let script = format!(
        "import pyclient\nfor k in {keys:?}: print(pyclient.partition_for_key(k.encode(), 7))"
    );
    let out = pyclient(ep, &["-c", &script]);
    let want: Vec<String> =
        keys.iter().map(|k| protocol::partition_for_key(k.as_bytes(), 7).to_string()).collect();
    assert_eq!(out.assert_success().lines(), want);

    // A keyed append lands where the native producer puts the same key.
    let home = protocol::partition_for_key(b"carol", 4);
    let out = pyclient(ep, &["append", "spread", "--key", "carol", "from python"]);
    let want = format!("appended 1 message(s) to spread at partition {home} offsets 0..0");
    assert_eq!(out.assert_success().lines(), [want.as_str()]);
    producer(&broker, &["--key", "carol", "spread", "from rust"]).assert_success();
    let p = home.to_string();
    let out = consumer(&broker, &["fetch", "spread", "--partition", &p, "--print-key"]);
    assert_eq!(out.assert_success().lines(), ["0\tcarol\tfrom python", "1\tcarol\tfrom rust"]);
    let out = pyclient(ep, &["fetch", "spread", "--partition", &p]);
    assert_eq!(out.assert_success().lines(), ["0\tfrom python", "1\tfrom rust"]);

    // A partition named, and one the topic lacks: the error carries the count.
    let out = pyclient(ep, &["append", "spread", "--partition", "3", "a", "b"]);
    // Partition 3 holds the two messages of carol already when carol's home is 3.
    let start = if home == 3 { 2 } else { 0 };
    let want =
        format!("appended 2 message(s) to spread at partition 3 offsets {start}..{}", start + 1);
    assert_eq!(out.assert_success().lines(), [want.as_str()]);
    let script = "import pyclient\n\
                  c = pyclient.Client(ENDPOINT)\n\
                  try:\n    c.append('spread', [b'x'], partition=9)\n\
                  except pyclient.BrokerError as e:\n    print(e.error, e.partitions)\n\
                  r = c.append('spread', [(b'carol', b'y'), (b'alice', b'z')])\n\
                  print(r['partition'], sorted(p['partition'] for p in r.get('placed', [])))";
    let script = script.replace("ENDPOINT", &format!("{ep:?}"));
    let out = pyclient(ep, &["-c", &script]);
    let lines = out.assert_success().lines();
    assert_eq!(lines[0], "unknown_partition 4");
    let alice = protocol::partition_for_key(b"alice", 4);
    let placed = if alice == home {
        "[]".to_owned()
    } else {
        let mut both = [home, alice];
        both.sort_unstable();
        format!("[{}, {}]", both[0], both[1])
    };
    assert_eq!(lines[1], format!("{home} {placed}"));
    broker.interrupt();
}

#[test]
fn the_python_client_pipelines_appends_and_tells_replies_apart_by_their_id() {
    testkit::require::python_modules(&["zmq", "msgpack"]);
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    // 5,000 lines, 100 per append, 8 appends in flight on one DEALER: all kept, in order.
    let input: String = (1..=5000).map(|i| format!("line {i}\n")).collect();
    let args = ["append-lines", "piped", "--batch", "100", "--max-in-flight", "8"];
    let out = pyclient_fed(ep, &args, input.as_bytes());
    assert_eq!(
        out.assert_success().lines(),
        ["appended 5000 message(s) to piped in 50 request(s)"]
    );
    let out = consumer(&broker, &["fetch", "piped", "--max", "10000"]);
    let want: Vec<String> = (1..=5000).map(|i| format!("{}\tline {i}", i - 1)).collect();
    assert_eq!(out.assert_success().lines(), want);

    // A held fetch sent first is answered after the append sent behind it: the replies come
    // in another order than the requests, and each is matched by the id it echoes.
    let script = "import pyclient\n\
                  c = pyclient.Client(ENDPOINT)\n\
                  c.create_topic('held')\n\
                  with pyclient.claimed(c) as claim:\n    \
                  p = pyclient.Pipeline(ENDPOINT, 5)\n    \
                  ops = {p.send('fetch', wait_ms=4000, claim=claim, topic='held', offset=0): \
                  'fetch'}\n    \
                  ops[p.send('append', topic='held', messages=[{'value': b'x'}])] = 'append'\n    \
                  for _ in range(2):\n        \
                  i, reply = p.next_reply()\n        \
                  print(ops[i], reply['reply'], len(reply.get('messages', [])))\n    \
                  p.close()";
    let script = script.replace("ENDPOINT", &format!("{ep:?}"));
    let out = pyclient(ep, &["-c", &script]);
    assert_eq!(out.assert_success().lines(), ["append appended 0", "fetch messages 1"]);
    broker.interrupt();
}

#[test]
fn the_python_client_marks_an_idempotent_append_and_its_copy_is_stored_once() {
    testkit::require::python_modules(&["zmq", "msgpack"]);
    let broker = preloaded_broker();
    let ep = broker.endpoint.as_str();
    // One field without the other, or a number out of range, is refused before sending; a
    // copy with the same producer and sequence gets the first sending's offsets.
    let script = "import pyclient\n\
                  c = pyclient.Client(ENDPOINT)\n\
                  for bad in ({'producer': 7}, {'sequence': 0}, \
                  {'producer': -1, 'sequence': 0}, {'producer': 1, 'sequence': 2**64}):\n    \
                  try:\n        \
                  c.append('marked', [b'x'], **bad)\n    \
                  except ValueError as e:\n        \
                  print('refused:', e)\n\
                  top = 2**64 - 1\n\
                  first = c.append('marked', [b'a', b'b'], producer=top, sequence=9)\n\
                  again = c.append('marked', [b'a', b'b'], producer=top, sequence=9)\n\
                  other = c.append('marked', [b'c'], producer=top, sequence=10)\n\
                  for r in (first, again, other):\n    \
                  print(r['first_offset'], r['last_offset'])";
    let script = script.replace("ENDPOINT", &format!("{ep:?}"));
    let out = pyclient(ep, &["-c", &script]);
    let lines = out.assert_success().lines();
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert!(lines[..4].iter().all(|line| line.starts_with("refused: ")), "{lines:?}");
    assert_eq!(lines[4..], ["0 1", "0 1", "2 2"]);
    let out = consumer(&broker, &["fetch", "marked"]);
    assert_eq!(out.assert_success().lines(), ["0\ta", "1\tb", "2\tc"]);
    broker.interrupt();
}
