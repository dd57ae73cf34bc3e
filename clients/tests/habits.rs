//! What a Kafka user's fingers already know: `--topic`, `--from-beginning`, `--max-messages`,
//! `--offset earliest|latest|N`, `--property`, timestamps, fetch reading everything, help that
//! shows what a command uses, group resets that check for members first, and standard input
//! that one long line cannot spoil.

mod common;

use chrono::{Local, SecondsFormat, TimeZone};
use common::{
    broker_binary, consumer, preloaded_broker, producer, run, run_with, Running, CONSUMER, PRODUCER,
};
use testkit::BrokerProcess;

#[test]
fn kafka_flags_for_fetch_and_follow() {
    let broker = preloaded_broker();
    let out = consumer(
        &broker,
        &["fetch", "--topic", "Hola mundo", "--from-beginning", "--max-messages", "2"],
    );
    assert_eq!(out.assert_success().lines(), ["0\tmensaje 1", "1\tmensaje 2"]);
    assert!(
        out.stderr.contains("1 left unread: add --offset 2 to read on, or leave out --max"),
        "{}",
        out.stderr
    );
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "latest"]);
    assert!(out.assert_success().stdout.is_empty(), "{}", out.stdout);
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "earliest", "--max", "1"]);
    assert_eq!(out.assert_success().lines(), ["0\tmensaje 1"]);
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "2"]);
    assert_eq!(out.assert_success().lines(), ["2\tmensaje 3"]);
    let out = consumer(&broker, &["fetch", "Hola mundo", "--partition", "0", "--offset", "2"]);
    assert_eq!(out.assert_success().lines(), ["2\tmensaje 3"]);
    // A partition the topic lacks: the broker's refusal, which names the count.
    let out = consumer(&broker, &["fetch", "Hola mundo", "--partition", "1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(unknown_partition)"), "{}", out.stderr);
    let out = consumer(&broker, &["fetch", "Hola mundo", "--offset", "soon"]);
    out.assert_code(2);
    assert!(out.stderr.contains("expected earliest, latest or an offset"), "{}", out.stderr);

    // --from-beginning with --group: the new group starts at the first message.
    let out =
        consumer(&broker, &["fetch", "--topic", "Ciao mondo", "--group", "g", "--from-beginning"]);
    assert_eq!(out.assert_success().lines().len(), 3, "{}", out.stdout);
    let mut follow = Running::consumer(
        &broker,
        &[
            "follow",
            "--topic",
            "Hallo welt",
            "--group",
            "h",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
    );
    assert_eq!(follow.stdout_lines(3), ["0\tbotschaft 1", "1\tbotschaft 2", "2\tbotschaft 3"]);
    assert!(follow.wait_exit().0.success());
    let mut follow =
        Running::consumer(&broker, &["follow", "Hallo welt", "--offset", "earliest", "--max", "1"]);
    assert_eq!(follow.stdout_lines(1), ["0\tbotschaft 1"]);
    assert!(follow.wait_exit().0.success());
    broker.interrupt();
}

#[test]
fn fetch_reads_the_whole_topic_by_default() {
    let broker = preloaded_broker();
    let lines: String = (0..1200).map(|i| format!("m{i}\n")).collect();
    let args = ["--connect", &broker.endpoint, "big"];
    run_with(PRODUCER, &args, lines.as_bytes(), &[]).assert_success();
    let out = consumer(&broker, &["fetch", "big"]);
    assert_eq!(out.assert_success().lines().len(), 1200);
    assert!(
        out.stderr.contains("read 1200 messages of big; next offset 1200 of 1200\n"),
        "{}",
        out.stderr
    );
    broker.interrupt();
}

#[test]
fn properties_and_timestamps_as_kafka_prints_them() {
    let broker = preloaded_broker();
    let args = ["--connect", &broker.endpoint, "--property", "parse.key=true", "--topic", "kv"];
    run_with(PRODUCER, &args, b"user-1\ta\n", &[]).assert_success();
    let args = [
        "--bootstrap-server",
        &broker.endpoint,
        "--topic",
        "kv",
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=:",
    ];
    run_with(PRODUCER, &args, b"user-2:b\n", &[]).assert_success();

    let out = consumer(&broker, &["fetch", "kv", "--print-timestamp=ms", "--max", "1"]);
    let line = out.assert_success().lines()[0].to_owned();
    let ms: i64 = line.split('\t').nth(1).and_then(|t| t.parse().ok()).expect("milliseconds");

    let props = [
        "fetch",
        "kv",
        "--property",
        "print.key=true",
        "--property",
        "print.timestamp=true",
        "--property",
        "key.separator=:",
        "--property",
        "print.offset=false",
    ];
    let out = consumer(&broker, &props);
    let lines = out.assert_success().lines();
    assert_eq!(lines[0], format!("CreateTime:{ms}\tuser-1:a"));
    assert!(lines[1].ends_with("\tuser-2:b"), "{lines:?}");

    // RFC 3339 in local time, as the TZ variable says.
    for tz in ["UTC", "Asia/Kolkata"] {
        let out = run_with(
            CONSUMER,
            &["--connect", &broker.endpoint, "fetch", "kv", "--print-timestamp", "--max", "1"],
            b"",
            &[("TZ", tz)],
        );
        let line = out.assert_success().lines()[0].to_owned();
        let shown = line.split('\t').nth(1).unwrap_or_default().to_owned();
        let offset = if tz == "UTC" { "+00:00" } else { "+05:30" };
        assert!(shown.ends_with(offset), "{tz}: {line}");
        let parsed = chrono::DateTime::parse_from_rfc3339(&shown).expect("RFC 3339");
        assert_eq!(parsed.timestamp_millis(), ms, "{line}");
    }
    // The same instant this process would show (whatever its zone).
    let local = Local.timestamp_millis_opt(ms).single().expect("a local time");
    let out = consumer(&broker, &["fetch", "kv", "--print-timestamp", "--max", "1"]);
    let want = local.to_rfc3339_opts(SecondsFormat::Millis, false);
    assert_eq!(out.assert_success().lines()[0], format!("0\t{want}\ta"));

    let out = consumer(&broker, &["fetch", "kv", "--property", "fetch.min.bytes=1"]);
    out.assert_code(2);
    assert!(out.stderr.contains("unknown property \"fetch.min.bytes\""), "{}", out.stderr);
    broker.interrupt();
}

#[test]
fn kafkas_console_consumer_line_without_a_command_follows() {
    let broker = preloaded_broker();
    let mut follow = Running::start(
        CONSUMER,
        &["--bootstrap-server", &broker.endpoint, "--topic", "Hola mundo", "--from-beginning"],
        &[],
    );
    assert_eq!(follow.stdout_lines(3), ["0\tmensaje 1", "1\tmensaje 2", "2\tmensaje 3"]);
    producer(&broker, &["Hola mundo", "otro"]).assert_success();
    assert_eq!(follow.stdout_lines(1), ["3\totro"]);
    follow.interrupt();
    assert_eq!(follow.wait_exit().0.code(), Some(130));
    // With --max-messages it ends by itself, as Kafka's does.
    let out = run(
        CONSUMER,
        &[
            "--bootstrap-server",
            &broker.endpoint,
            "--topic=Hola mundo",
            "--from-beginning",
            "--max-messages",
            "1",
        ],
    );
    assert_eq!(out.assert_success().lines(), ["0\tmensaje 1"]);
    // A mistake is still reported as one.
    let out = run(CONSUMER, &["--bootstrap-server", &broker.endpoint, "--topic", "t", "--nope"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--nope"), "{}", out.stderr);
    broker.interrupt();
}

#[test]
fn consumer_help_is_short_and_each_commands_help_has_what_it_promises() {
    let out = run(CONSUMER, &["--help"]);
    out.assert_success();
    let lines = out.stdout.lines().count();
    assert!(lines <= 40, "consumer --help is {lines} lines:\n{}", out.stdout);
    for flag in ["--print-key", "--print-timestamp", "--property", "--broker", "--wait"] {
        assert!(!out.stdout.contains(flag), "consumer --help lists {flag}");
    }
    assert!(!out.stdout.contains("see below"), "{}", out.stdout);
    for command in ["fetch", "follow"] {
        let out = run(CONSUMER, &[command, "--help"]);
        out.assert_success();
        assert!(out.stdout.contains("--print-key") && out.stdout.contains("--broker"));
        // What --json points to is there.
        assert!(out.stdout.contains("--json prints one JSON object a line"), "{}", out.stdout);
        assert!(!out.stdout.contains("see below"), "{}", out.stdout);
    }
    // Still accepted before the command's name, as before.
    let broker = preloaded_broker();
    let out = consumer(&broker, &["--print-key", "fetch", "Hola mundo", "--max", "1"]);
    assert_eq!(out.assert_success().lines(), ["0\tnull\tmensaje 1"]);
    broker.interrupt();
}

#[test]
fn help_shows_what_a_command_uses() {
    for command in ["ack", "groups", "group-reset"] {
        let out = run(CONSUMER, &[command, "--help"]);
        out.assert_success();
        for foreign in ["--broker", "--wait", "--print-key", "--print-timestamp", "--property"] {
            assert!(!out.stdout.contains(foreign), "{command} --help lists {foreign}");
        }
    }
    let out = run(CONSUMER, &["group-reset", "--help"]);
    let options: Vec<&str> =
        out.stdout.lines().map(str::trim_start).filter(|l| l.starts_with("--")).collect();
    assert_eq!(
        options[..5],
        ["--to-earliest", "--to-latest", "--to-offset <N>", "--partition <N>", "--force"]
    );
    let out = run(CONSUMER, &["fetch", "--help"]);
    assert!(out.stdout.contains("--print-key") && out.stdout.contains("--broker"));
}

#[test]
fn resetting_an_active_group_needs_force_and_its_members_are_told() {
    let broker = preloaded_broker();
    let mut member = Running::consumer(&broker, &["follow", "Hola mundo", "--group", "g"]);
    assert_eq!(member.stdout_lines(3), ["0\tmensaje 1", "1\tmensaje 2", "2\tmensaje 3"]);

    let out = consumer(&broker, &["group-reset", "g", "Hola mundo", "--to-earliest"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("group g has 1 active member on Hola mundo (on logical broker 1)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("add --force"), "{}", out.stderr);
    let groups = consumer(&broker, &["--json", "groups", "g"]);
    let state: serde_json::Value = serde_json::from_str(groups.lines()[0]).unwrap();
    assert_eq!(state["committed_offset"], 3, "the refused reset changed nothing");

    let out = consumer(&broker, &["group-reset", "g", "Hola mundo", "--to-earliest", "--force"]);
    out.assert_success();
    member.wait_stderr("group g was reset on Hola mundo to offset 0; reading on from there");
    assert_eq!(member.stdout_lines(3), ["0\tmensaje 1", "1\tmensaje 2", "2\tmensaje 3"]);
    // Forward too: the member skips what it has not read, and is told so.
    producer(&broker, &["Hola mundo", "cuatro", "cinco"]).assert_success();
    assert_eq!(member.stdout_lines(2), ["3\tcuatro", "4\tcinco"]);
    producer(&broker, &["Hola mundo", "seis"]).assert_success();
    assert_eq!(member.stdout_lines(1), ["5\tseis"]);
    let out = consumer(&broker, &["group-reset", "g", "Hola mundo", "--to-latest", "--force"]);
    out.assert_success();
    member.wait_stderr("group g was reset on Hola mundo to offset 6; reading on from there");
    producer(&broker, &["Hola mundo", "siete"]).assert_success();
    assert_eq!(member.stdout_lines(1), ["6\tsiete"]);
    member.interrupt();
    assert_eq!(member.wait_exit().0.code(), Some(130));

    // Without members a reset goes through.
    consumer(&broker, &["group-reset", "g", "Hola mundo", "--to-latest"]).assert_success();
    broker.interrupt();
}

#[test]
fn a_line_over_the_limit_is_skipped_and_the_others_are_sent() {
    let broker = BrokerProcess::start(&broker_binary(), &["--max-message-bytes", "100"]);
    let input = format!("first\n{}\nthird\n{}\nfifth\n", "x".repeat(200), "y".repeat(101));
    let args = ["--connect", &broker.endpoint, "lines"];
    let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("line 2 is 200 bytes; the limit is 100 (broker --max-message-bytes)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("line 4 is 101 bytes; the limit is 100"), "{}", out.stderr);
    assert!(out.stderr.contains("error: 2 lines were not sent"), "{}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        "appended 3 messages to lines at offsets 0..2 in 1 request; skipped 2 lines over the \
         size limit"
    );
    let fetched = consumer(&broker, &["fetch", "lines"]);
    assert_eq!(fetched.assert_success().lines(), ["0\tfirst", "1\tthird", "2\tfifth"]);
    broker.interrupt();
}

#[test]
fn all_brokers_claimed_says_how_to_get_more() {
    let broker = BrokerProcess::start(&broker_binary(), &["--brokers", "1"]);
    let mut holder = Running::consumer(&broker, &["follow", "t"]);
    holder.wait_stderr("following");
    let out = consumer(&broker, &["fetch", "t"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(all 1 are claimed)"), "{}", out.stderr);
    assert!(out.stderr.contains("`broker --brokers N` hosts more"), "{}", out.stderr);
    holder.interrupt();
    let _ = holder.wait_exit();
    broker.interrupt();
}
