//! Real Kafka clients (kcat, confluent-kafka, kafka-python) against the real broker through
//! the real gateway: what one door writes, the other reads, with the same offsets and keys.

mod common;

use std::process::Command;

use common::{binary, run, script, success, Door};

#[test]
fn kcat_produces_and_the_native_consumer_fetches_the_lines() {
    let door = Door::start(&[]);
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &door.bootstrap(), "-t", "lines", "-K", ":"]);
    success(&run(kcat, "k1:first\nk2:second\nthird\n"), "kcat -P");

    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "lines", "--json"]);
    let out = success(&run(fetch, ""), "consumer fetch");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, (key, value)) in [("k1", "first"), ("k2", "second"), ("", "third")].iter().enumerate() {
        assert!(lines[i].contains(&format!("\"offset\":{i}")), "{}", lines[i]);
        assert!(lines[i].contains(&format!("\"value\":\"{value}\"")), "{}", lines[i]);
        if !key.is_empty() {
            assert!(lines[i].contains(&format!("\"key\":\"{key}\"")), "{}", lines[i]);
        }
    }
    door.stop();
}

#[test]
fn the_native_producer_writes_and_kcat_prints_keys_offsets_and_timestamps() {
    let door = Door::start(&[]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "native", "--key", "k", "a", "b"]);
    success(&run(produce, ""), "producer");
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "native", "--json"]);
    let native = success(&run(fetch, ""), "consumer fetch");

    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "native", "-f", "%k=%s@%o %T\n"]);
    let out = success(&run(kcat, ""), "kcat -C");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("k=a@0 "), "{out}");
    assert!(lines[1].starts_with("k=b@1 "), "{out}");
    // The timestamp is the broker's, the one the native fetch shows.
    let stamp = lines[0].rsplit(' ').next().unwrap_or_default();
    assert!(native.contains(&format!("\"timestamp\":{stamp}")), "{stamp} not in {native}");

    // The README's form: key and value, split by the -K delimiter.
    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "native", "-K:"]);
    assert_eq!(success(&run(kcat, ""), "kcat -C -K:"), "k:a\nk:b\n");
    door.stop();
}

/// Runs the tutorial consumer of `scripts/kafka-confluent.py` in `group` for `count` messages.
fn tutorial_consumer(door: &Door, topic: &str, group: &str, count: usize) -> Vec<String> {
    let mut consume = Command::new("python3");
    consume.arg(script("kafka-confluent.py")).args(["consume", &door.bootstrap(), topic, group]);
    consume.arg(count.to_string());
    let out = success(&run(consume, ""), "confluent consume");
    out.lines().map(str::to_owned).collect()
}

/// What `consumer groups` says of `group`'s committed offset on `topic`.
fn committed(door: &Door, group: &str, topic: &str) -> String {
    let mut groups = Command::new(binary("consumer"));
    groups.args(["--connect", &door.endpoint(), "groups", "--json"]);
    let out = success(&run(groups, ""), "consumer groups");
    out.lines()
        .find(|l| l.contains(&format!("\"group\":\"{group}\"")) && l.contains(topic))
        .unwrap_or_else(|| panic!("no state of {group} in {out}"))
        .to_owned()
}

#[test]
fn confluent_kafka_groups_read_every_message_once_and_resume_from_the_commit() {
    let door = Door::start(&[]);
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-confluent.py")).args(["produce", &door.bootstrap(), "tut", "50"]);
    success(&run(produce, ""), "confluent produce");
    let expected: Vec<String> = (0..50).map(|i| format!("key-{i}=message-{i}@{i}")).collect();

    // A first member reads 20 and closes; the next member of the group goes on from 20.
    assert_eq!(tutorial_consumer(&door, "tut", "readers", 20), expected[..20]);
    let state = committed(&door, "readers", "tut");
    assert!(state.contains("\"committed_offset\":20"), "{state}");
    assert_eq!(tutorial_consumer(&door, "tut", "readers", 30), expected[20..]);
    let state = committed(&door, "readers", "tut");
    assert!(state.contains("\"committed_offset\":50"), "{state}");

    // Another group reads everything, from the start.
    assert_eq!(tutorial_consumer(&door, "tut", "auditors", 50), expected);
    door.stop();
}

#[test]
fn kafka_python_round_trips() {
    let door = Door::start(&[]);
    let mut round = Command::new("python3");
    round.arg(script("kafka-python-roundtrip.py")).args([&door.bootstrap(), "kp", "10"]);
    let out = success(&run(round, ""), "kafka-python round trip");
    let expected: Vec<String> = (0..10).map(|i| format!("key-{i}=value-{i}@{i}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    door.stop();
}

#[test]
fn kafka_python_admin_creates_grows_and_deletes_topics_the_native_door_sees() {
    let door = Door::start(&[]);
    let topics = || {
        let mut topics = Command::new(binary("consumer"));
        topics.args(["--connect", &door.endpoint(), "topics"]);
        success(&run(topics, ""), "consumer topics")
    };
    let admin = |args: &[&str]| {
        let mut admin = Command::new("python3");
        admin.arg(script("kafka-python-admin.py")).arg(door.bootstrap()).args(args);
        run(admin, "")
    };
    success(&admin(&["create", "made", "60000"]), "create");
    assert!(topics().lines().any(|l| l.starts_with("made ")), "{}", topics());
    let again = admin(&["create", "made"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("TopicAlreadyExists"), "{again:?}");
    // Existence is checked before the partitions asked for, as Kafka does.
    let three = admin(&["create3", "made"]);
    assert!(String::from_utf8_lossy(&three.stderr).contains("TopicAlreadyExists"), "{three:?}");
    success(&admin(&["create3", "other"]), "create with 3 partitions");
    let partitions = |topic: &str| {
        let mut topics = Command::new(binary("consumer"));
        topics.args(["--connect", &door.endpoint(), "topics", "--json"]);
        let out = success(&run(topics, ""), "consumer topics --json");
        let line =
            out.lines().find(|l| l.contains(&format!("\"name\":\"{topic}\""))).map(str::to_owned);
        line.unwrap_or_else(|| panic!("no {topic} in {out}"))
    };
    assert!(partitions("other").contains("\"partitions\":3,"), "{}", partitions("other"));
    let shrink = admin(&["grow", "other", "2"]);
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("InvalidPartitions"), "{shrink:?}");
    success(&admin(&["grow", "other", "4"]), "grow to 4 partitions");
    assert!(partitions("other").contains("\"partitions\":4,"), "{}", partitions("other"));
    success(&admin(&["delete", "made"]), "delete");
    assert!(!topics().lines().any(|l| l.starts_with("made ")), "{}", topics());
    door.stop();
}

/// What `consumer status --json` says of the one logical broker: whether it is free.
fn broker_free(door: &Door) -> bool {
    let mut status = Command::new(binary("consumer"));
    status.args(["--connect", &door.endpoint(), "status", "--json"]);
    success(&run(status, ""), "consumer status").contains("\"available\":true")
}

/// Polls `broker_free` until it says `free`, within `testkit::STEP`.
fn wait_until_free_is(door: &Door, free: bool) {
    let deadline = std::time::Instant::now() + testkit::STEP;
    while broker_free(door) != free {
        assert!(
            std::time::Instant::now() < deadline,
            "the logical broker never became free={free}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn native_claims_do_not_silently_block_kafka_reads_nor_the_reverse() {
    // One logical broker, so that whoever holds it holds them all.
    let door = Door::start(&["--brokers", "1"]);
    let mut produce = Command::new(binary("producer"));
    produce.args(["--connect", &door.endpoint(), "--topic", "held", "a", "b"]);
    success(&run(produce, ""), "producer");
    let kcat = || {
        let mut kcat = Command::new("kcat");
        kcat.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "held", "-f", "%s\n"]);
        run(kcat, "")
    };

    // A native follower holds the logical broker: a Kafka reader is told, not left hanging.
    let mut follow = Command::new(binary("consumer"))
        .args(["--connect", &door.endpoint(), "follow", "held"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start consumer follow");
    wait_until_free_is(&door, false);
    let refused = kcat();
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Leader not available"),
        "{refused:?}"
    );
    testkit::signal_process(follow.id(), "INT");
    testkit::wait_child(&mut follow, testkit::STEP).expect("consumer follow stops on Ctrl-C");
    wait_until_free_is(&door, true);

    // Free again: the Kafka reader reads, and once it has gone the gateway gives the logical
    // broker back, so a native reader is not kept out by a Kafka client that left.
    assert_eq!(success(&kcat(), "kcat -C"), "a\nb\n");
    wait_until_free_is(&door, true);
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "held"]);
    assert_eq!(success(&run(fetch, ""), "consumer fetch").lines().count(), 2);
    let log = door.stop();
    assert!(log.contains("the gateway cannot claim a logical broker"), "{log}");
}

#[test]
fn confluent_kafka_lists_every_topic_and_subscribes_by_regex() {
    let door = Door::start(&[]);
    for (topic, values) in
        [("orders-a", ["a1", "a2"]), ("orders-b", ["b1", "b2"]), ("other", ["x", "y"])]
    {
        let mut produce = Command::new(binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", topic]).args(values);
        success(&run(produce, ""), "producer");
    }
    // librdkafka 2.1 and later send Metadata v12 with bytes after the body.
    let mut list = Command::new("python3");
    list.arg(script("kafka-confluent.py")).args(["list", &door.bootstrap()]);
    let out = success(&run(list, ""), "confluent list_topics");
    for client in ["AdminClient", "Producer", "Consumer"] {
        let line = format!("{client} orders-a orders-b other");
        assert!(out.lines().any(|l| l == line), "{line} not in {out}");
    }

    let mut regex = Command::new("python3");
    regex.arg(script("kafka-confluent.py")).args([
        "regex",
        &door.bootstrap(),
        "^orders-.*",
        "re",
        "4",
    ]);
    let out = success(&run(regex, ""), "confluent regex subscription");
    assert_eq!(out, "orders-a:a1\norders-a:a2\norders-b:b1\norders-b:b2\n");
    door.stop();
}

#[test]
fn kafka_producers_never_wait_for_a_claim_that_native_consumers_hold() {
    // One logical broker, held by a native follower for the whole test.
    let door = Door::start(&["--brokers", "1"]);
    let mut follow = Command::new(binary("consumer"))
        .args(["--connect", &door.endpoint(), "follow", "busy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start consumer follow");
    wait_until_free_is(&door, false);

    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &door.bootstrap(), "-t", "busy", "-K", ":"]);
    success(&run(kcat, "k:one\ntwo\n"), "kcat -P");
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-confluent.py")).args(["produce", &door.bootstrap(), "busy", "10"]);
    success(&run(produce, ""), "confluent produce");

    // A Kafka reader cannot get a logical broker: it is told so, retriably.
    let mut reader = Command::new("kcat");
    reader.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "busy"]);
    let refused = run(reader, "");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Leader not available"),
        "{refused:?}"
    );

    testkit::signal_process(follow.id(), "INT");
    testkit::wait_child(&mut follow, testkit::STEP).expect("consumer follow stops on Ctrl-C");
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "busy"]);
    assert_eq!(success(&run(fetch, ""), "consumer fetch").lines().count(), 12);
    door.stop();
}

#[test]
fn a_transactional_producer_is_refused_at_once_and_the_log_says_why() {
    let door = Door::start(&[]);
    let mut init = Command::new("python3");
    init.arg(script("kafka-confluent.py")).args(["transactional", &door.bootstrap()]);
    let out = success(&run(init, ""), "confluent init_transactions");
    assert!(out.starts_with("refused "), "{out}");
    assert!(out.contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED"), "{out}");
    let log = door.stop();
    assert!(log.contains("the Kafka door has no transactions"), "{log}");
}

#[test]
fn a_gateway_given_a_dead_endpoint_first_goes_on_to_the_live_one() {
    let broker = testkit::BrokerProcess::start(&binary("broker"), &[]);
    // A port nobody listens on: bound, read back, and let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead = format!("127.0.0.1:{}", dead.local_addr().expect("its address").port());
    let mut command = Command::new(common::GATEWAY);
    command.args(["--listen", "127.0.0.1:0", "--connect", &format!("{dead},{}", broker.endpoint)]);
    let gateway = testkit::BrokerProcess::spawn(command);
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &gateway.endpoint, "-t", "onward"]);
    success(&run(kcat, "through\n"), "kcat -P");
    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-b", &gateway.endpoint, "-t", "onward"]);
    assert_eq!(success(&run(kcat, ""), "kcat -C"), "through\n");
    gateway.interrupt();
    broker.interrupt();
}

#[test]
fn the_broker_is_found_in_every_address_form_the_other_programs_take() {
    let broker = testkit::BrokerProcess::start(&binary("broker"), &[]);
    let port = broker.endpoint.rsplit(':').next().expect("a port").to_owned();
    let bare = format!("127.0.0.1:{port}");
    let named = format!("localhost:{port}");
    let several = format!("{bare},{}", broker.endpoint);
    let forms: [(&str, Option<&str>); 4] = [
        ("--connect HOST:PORT", Some(&bare)),
        ("BROKER_ENDPOINT=HOST:PORT", None),
        ("--connect with a list", Some(&several)),
        ("--connect tcp://", Some(&broker.endpoint)),
    ];
    for (i, (what, connect)) in forms.into_iter().enumerate() {
        let mut command = Command::new(common::GATEWAY);
        command.args(["--listen", "127.0.0.1:0"]);
        match connect {
            Some(endpoint) => command.args(["--connect", endpoint]),
            None => command.env("BROKER_ENDPOINT", &named),
        };
        let gateway = testkit::BrokerProcess::spawn(command);
        let topic = format!("forms{i}");
        let mut kcat = Command::new("kcat");
        kcat.args(["-P", "-b", &gateway.endpoint, "-t", &topic]);
        success(&run(kcat, "through\n"), what);
        let mut kcat = Command::new("kcat");
        kcat.args(["-C", "-e", "-b", &gateway.endpoint, "-t", &topic]);
        assert_eq!(success(&run(kcat, ""), what), "through\n", "{what}");
        gateway.interrupt();
    }
    let mut bad = Command::new(common::GATEWAY);
    bad.args(["--listen", "127.0.0.1:0", "--connect", "udp://nowhere:1"]);
    let out = run(bad, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--connect") && stderr.contains("HOST:PORT"), "{stderr}");
    broker.interrupt();
}

/// The `(offset, timestamp, value)` of each message of `topic`, from the native door.
fn native_messages(door: &Door, topic: &str) -> Vec<(u64, u64, String)> {
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", topic, "--json"]);
    let out = success(&run(fetch, ""), "consumer fetch");
    let number = |line: &str, field: &str| -> u64 {
        let at = line.find(&format!("\"{field}\":")).expect(field) + field.len() + 3;
        line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse().expect(field)
    };
    out.lines()
        .map(|l| {
            let value = l.split("\"value\":\"").nth(1).and_then(|v| v.split('"').next());
            (number(l, "offset"), number(l, "timestamp"), value.unwrap_or("").to_owned())
        })
        .collect()
}

#[test]
fn offsets_for_times_and_kcat_s_at_find_the_first_message_appended_since() {
    let door = Door::start(&[]);
    for value in ["a", "b", "c", "d"] {
        let mut produce = Command::new(binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", "timed", value]);
        success(&run(produce, ""), "producer");
    }
    let stored = native_messages(&door, "timed");
    assert_eq!(stored.len(), 4);
    // The time of the third append: its message, or an earlier one appended in the same ms.
    let target = stored[2].1;
    let (offset, stamp, value) =
        stored.iter().find(|(_, t, _)| *t >= target).cloned().expect("one at or after");

    let mut times = Command::new("python3");
    times.arg(script("kafka-confluent.py")).args(["times", &door.bootstrap(), "timed"]);
    times.arg(target.to_string());
    let out = success(&run(times, ""), "offsets_for_times");
    assert_eq!(out, format!("offset {offset}\nlog-append {stamp} {value}\n"));

    // After every message: none, which Kafka answers -1.
    let mut late = Command::new("python3");
    late.arg(script("kafka-confluent.py")).args(["times", &door.bootstrap(), "timed"]);
    late.arg((stored[3].1 + 1).to_string());
    assert_eq!(success(&run(late, ""), "offsets_for_times past the end"), "offset -1\n");

    let mut kcat = Command::new("kcat");
    kcat.args(["-C", "-e", "-b", &door.bootstrap(), "-t", "timed", "-f", "%o %T %s\n"]);
    kcat.args(["-o", &format!("s@{target}")]);
    let expected: String = stored
        .iter()
        .filter(|(o, ..)| *o >= offset)
        .map(|(o, t, v)| format!("{o} {t} {v}\n"))
        .collect();
    assert_eq!(success(&run(kcat, ""), "kcat -o s@"), expected);
    door.stop();
}

#[test]
fn every_codec_from_confluent_kafka_and_kafka_python_is_stored_and_read_back() {
    let door = Door::start(&[]);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("confluent-{codec}");
        let mut produce = Command::new("python3");
        produce.arg(script("kafka-confluent.py")).args([
            "produce",
            &door.bootstrap(),
            &topic,
            "200",
        ]);
        produce.env("KAFKA_COMPRESSION", codec);
        success(&run(produce, ""), &format!("confluent produce with {codec}"));
        let read = tutorial_consumer(&door, &topic, "codecs", 200);
        let expected: Vec<String> = (0..200).map(|i| format!("key-{i}=message-{i}@{i}")).collect();
        assert_eq!(read, expected, "{codec}");

        let topic = format!("kp-{codec}");
        let mut round = Command::new("python3");
        round.arg(script("kafka-python-roundtrip.py")).args([
            &door.bootstrap(),
            &topic,
            "50",
            codec,
        ]);
        let out = success(&run(round, ""), &format!("kafka-python round trip with {codec}"));
        let expected: Vec<String> = (0..50).map(|i| format!("key-{i}=value-{i}@{i}")).collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{codec}");
    }
    // The native door sees them uncompressed.
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "kp-zstd"]);
    let out = success(&run(fetch, ""), "consumer fetch");
    assert_eq!(out.lines().next(), Some("0\tvalue-0"), "{out}");
    door.stop();
}

#[test]
fn aiokafka_produces_and_a_group_member_reads_and_commits() {
    let door = Door::start(&[]);
    for (topic, codec) in [("aio", None), ("aio-lz4", Some("lz4"))] {
        let mut aio = Command::new("python3");
        aio.arg(script("kafka-aiokafka.py")).args([&door.bootstrap(), topic, "aio-readers", "30"]);
        aio.args(codec);
        let out = success(&run(aio, ""), "aiokafka producer and consumer");
        let expected: Vec<String> = (0..30).map(|i| format!("key-{i}=value-{i}@{i}")).collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), expected);
        let state = committed(&door, "aio-readers", topic);
        assert!(state.contains("\"committed_offset\":30"), "{state}");
    }
    door.stop();
}
