//! Claims as users meet them: `follow` holds a logical broker until Ctrl-C, `--broker` asks for
//! one, `--wait` waits for one, and every way out gives the claim back.

mod common;

use common::{consumer, preloaded_broker, producer, Running};
use testkit::BrokerProcess;

/// Starts `consumer follow` with `args` and waits until it reports that it is following;
/// returns it and the logical broker it holds.
fn start_follow(broker: &BrokerProcess, args: &[&str]) -> (Running, u32) {
    let mut all = vec!["follow"];
    all.extend_from_slice(args);
    let mut follow = Running::consumer(broker, &all);
    let line = follow.wait_stderr("following");
    let held = line
        .split("on logical broker ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no logical broker in {line:?}"));
    (follow, held)
}

/// Asserts `status` shows every logical broker free.
fn assert_all_free(broker: &BrokerProcess) {
    let out = consumer(broker, &["status"]);
    let rows: Vec<&str> = out.assert_success().lines()[1..].to_vec();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row.split_whitespace().nth(1), Some("free"), "{}", out.stdout);
    }
}

#[test]
fn follow_prints_what_is_appended_and_ctrl_c_releases_its_claim() {
    let broker = preloaded_broker();
    let (mut follow, held) = start_follow(&broker, &["Hello world"]);

    // Holding a claim shows in status, with this consumer's name.
    let status = consumer(&broker, &["status"]);
    let row = status.lines()[held as usize].to_owned();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[..2], [held.to_string().as_str(), "claimed"], "{row}");
    assert!(fields[2].starts_with("consumer-"), "{row}");

    // Starting from the end: the three preloaded messages are not printed, new ones are.
    producer(&broker, &["Hello world", "message 4", "message 5"]).assert_success();
    assert_eq!(follow.stdout_lines(2), ["3\tmessage 4", "4\tmessage 5"]);
    producer(&broker, &["Hello world", "message 6"]).assert_success();
    assert_eq!(follow.stdout_lines(1), ["5\tmessage 6"]);

    follow.interrupt();
    let (status, rest, stderr) = follow.wait_exit();
    assert_eq!(status.code(), Some(130), "follow exited with {status}; stderr {stderr:?}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(stderr.iter().any(|l| l.contains("read 3 messages")), "{stderr:?}");
    assert_all_free(&broker);
    broker.interrupt();
}

#[test]
fn follow_from_the_beginning_and_from_an_offset() {
    let broker = preloaded_broker();
    let (mut all, _) = start_follow(&broker, &["Ciao mondo", "--from-beginning"]);
    assert_eq!(all.stdout_lines(3), ["0\tmessaggio 1", "1\tmessaggio 2", "2\tmessaggio 3"]);
    let (mut late, _) = start_follow(&broker, &["Ciao mondo", "--offset", "2"]);
    assert_eq!(late.stdout_lines(1), ["2\tmessaggio 3"]);
    producer(&broker, &["Ciao mondo", "messaggio 4"]).assert_success();
    assert_eq!(all.stdout_lines(1), ["3\tmessaggio 4"]);
    assert_eq!(late.stdout_lines(1), ["3\tmessaggio 4"]);
    for follow in [all, late] {
        follow.interrupt();
        assert_eq!(follow.wait_exit().0.code(), Some(130));
    }
    assert_all_free(&broker);
    broker.interrupt();
}

#[test]
fn follow_past_the_end_restarts_from_the_first_offset() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["follow", "Hola mundo", "--offset", "100"]);
    let note = follow.wait_stderr("restarting");
    assert!(note.contains("offset 100") && note.contains("restarting from offset 0"), "{note}");
    assert_eq!(follow.stdout_lines(3), ["0\tmensaje 1", "1\tmensaje 2", "2\tmensaje 3"]);
    follow.interrupt();
    assert_eq!(follow.wait_exit().0.code(), Some(130));
    broker.interrupt();
}

#[test]
fn follow_restarts_from_the_first_kept_offset_after_retention() {
    // Small segments and a short retention: most of 50 messages are gone at once. Each is
    // appended alone: an append is one batch, which never spans segments, so 50 in one would
    // fill one segment that retention never removes (the newest).
    let args = ["--segment-bytes", "100", "--retention-messages", "5"];
    let broker = BrokerProcess::start(&common::broker_binary(), &args);
    let input: String = (0..50).map(|i| format!("m{i}\n")).collect();
    let produce = ["--connect", &broker.endpoint, "--batch", "1", "kept"];
    common::run_with(common::PRODUCER, &produce, input.as_bytes(), &[]).assert_success();
    let topics = consumer(&broker, &["--json", "topics"]);
    let info: serde_json::Value = serde_json::from_str(topics.assert_success().lines()[0]).unwrap();
    let first = info["first_offset"].as_u64().unwrap();
    assert!(first > 0 && first <= 45, "{info}");

    // A fetch of what is gone is an error; a follow says so and carries on from what is kept.
    let out = consumer(&broker, &["fetch", "kept", "--offset", "0"]);
    out.assert_code(1);
    assert!(out.stderr.contains("(offset_out_of_range)"), "{}", out.stderr);
    // In words, not in a programming language's range syntax.
    assert!(out.stderr.contains("which can be read from offset"), "{}", out.stderr);
    assert!(!out.stderr.contains("..="), "{}", out.stderr);
    let mut follow = Running::consumer(&broker, &["follow", "kept", "--offset", "0"]);
    let note = follow.wait_stderr("restarting");
    assert!(note.contains(&format!("restarting from offset {first}")), "{note}");
    assert_eq!(follow.stdout_lines(1), [format!("{first}\tm{first}")]);
    follow.interrupt();
    assert_eq!(follow.wait_exit().0.code(), Some(130));
    broker.interrupt();
}

#[test]
fn follow_waits_for_a_topic_that_does_not_exist_yet() {
    let broker = preloaded_broker();
    let (mut follow, _) = start_follow(&broker, &["later", "--json"]);
    let note = follow.wait_stderr("does not exist");
    assert_eq!(note, "topic later does not exist yet; waiting for it");
    producer(&broker, &["later", "finally"]).assert_success();
    let line = follow.stdout_lines(1).remove(0);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["topic"].as_str(), v["offset"].as_u64()), (Some("later"), Some(0)));
    assert_eq!(v["value"], "finally");
    // Deleted once read: said so, and it waits for the topic to be made again.
    let context = zmq::Context::new();
    let reply = testkit::round_trip(
        &broker.req(&context),
        &protocol::Request::DeleteTopic { topic: "later" },
    );
    assert!(String::from_utf8_lossy(&reply).contains("deleted"), "{reply:?}");
    follow.wait_stderr("topic later was deleted; waiting for it to be made again");
    follow.interrupt();
    assert_eq!(follow.wait_exit().0.code(), Some(130));
    broker.interrupt();
}

#[test]
fn asking_for_a_held_logical_broker_is_refused_as_busy() {
    let broker = preloaded_broker();
    let (follow, held) = start_follow(&broker, &["Hola mundo"]);
    let out = consumer(&broker, &["--broker", &held.to_string(), "fetch", "Hello world"]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let want = format!("error: logical broker {held} is busy (claimed by consumer-");
    assert!(out.stderr.starts_with(&want), "{}", out.stderr);
    // The other one is free, and asking for it by id works.
    let other = if held == 1 { "2" } else { "1" };
    consumer(&broker, &["--broker", other, "fetch", "Hello world"]).assert_success();
    follow.interrupt();
    assert_eq!(follow.wait_exit().0.code(), Some(130));
    broker.interrupt();
}

#[test]
fn with_every_logical_broker_held_a_third_consumer_fails_or_waits() {
    let broker = preloaded_broker();
    let (first, _) = start_follow(&broker, &["Hola mundo"]);
    let (second, _) = start_follow(&broker, &["Hello world"]);

    // Listing topics needs no claim.
    assert_eq!(consumer(&broker, &["topics"]).assert_success().lines().len(), 5);
    let out = consumer(&broker, &["fetch", "Hello world"]);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        "error: no logical broker is free (all 2 are claimed); use --wait to wait for one (each \
         serves one claim at a time; `broker --brokers N` hosts more)"
    );

    let mut waiter = Running::consumer(&broker, &["--wait", "fetch", "Hola mundo"]);
    waiter.wait_stderr("waiting for one to be released");
    first.interrupt();
    assert_eq!(first.wait_exit().0.code(), Some(130));
    let (status, stdout, stderr) = waiter.wait_exit();
    assert!(status.success(), "{status}; stderr {stderr:?}");
    assert!(!stdout.is_empty(), "{stdout:?}");

    second.interrupt();
    assert_eq!(second.wait_exit().0.code(), Some(130));
    assert_all_free(&broker);
    broker.interrupt();
}

#[test]
fn waiting_for_a_named_logical_broker() {
    let broker = preloaded_broker();
    let (holder, held) = start_follow(&broker, &["Hola mundo"]);
    let id = held.to_string();
    let mut waiter =
        Running::consumer(&broker, &["--broker", &id, "--wait", "fetch", "Hola mundo"]);
    waiter.wait_stderr(&format!("logical broker {id} is claimed; waiting"));
    holder.interrupt();
    assert_eq!(holder.wait_exit().0.code(), Some(130));
    let (status, stdout, _) = waiter.wait_exit();
    assert!(status.success());
    assert_eq!(stdout, ["0\tmensaje 1", "1\tmensaje 2", "2\tmensaje 3"]);
    broker.interrupt();
}
