//! Failover as users meet it: two real broker processes on one real NATS JetStream, the real
//! `producer` and `consumer` given both (`--connect A,B`), and broker A killed with SIGKILL.
//! The producer sends the append A left unanswered again through B, with its producer id and
//! sequence, and goes on there (lockstep and pipelined; with `--no-idempotence` it reports
//! that append's lines in doubt instead), a group member gets what it had not acknowledged
//! through A again through B, a one-shot fetch claims through B, and a claim held through A frees up on
//! B only when its lease has run out.

mod common;

use std::time::{Duration, Instant};

use common::{broker_binary, run, Finished, Running, CONSUMER, PRODUCER};
use testkit::{BrokerProcess, NatsServer, STEP};

/// The brokers' lease: long enough that a claim outlives a client's start-up, short enough
/// for a test.
const LEASE: Duration = Duration::from_secs(3);

/// The clients' `--timeout`.
const TIMEOUT: &str = "2s";

/// One JetStream and two broker processes on it, A and B.
struct Pair {
    /// Broker A, the one killed; `None` once it is.
    a: Option<BrokerProcess>,
    /// Broker B, which goes on.
    b: BrokerProcess,
    /// A's endpoint, kept after the kill.
    a_endpoint: String,
    /// The JetStream both keep their topics, claims and groups in; stopped last.
    _server: NatsServer,
}

impl Pair {
    /// Starts a JetStream and two brokers on it, with a short lease and ack timeout.
    fn start() -> Pair {
        let server = NatsServer::start();
        let url = server.url();
        let lease = format!("{}s", LEASE.as_secs());
        let args = ["--store", &url, "--lease", &lease, "--group-ack-timeout", "1s"];
        let a = BrokerProcess::start(&broker_binary(), &args);
        let b = BrokerProcess::start(&broker_binary(), &args);
        Pair { a_endpoint: a.endpoint.clone(), a: Some(a), b, _server: server }
    }

    /// `--connect`'s value naming A, then B.
    fn both(&self) -> String {
        format!("{},{}", self.a_endpoint, self.b.endpoint)
    }

    /// Kills broker A with SIGKILL and waits until it is gone.
    fn kill_a(&mut self) {
        self.a.take().expect("broker A is running").kill();
    }

    /// Runs the consumer against B alone.
    fn consumer_on_b(&self, args: &[&str]) -> Finished {
        let mut all = vec!["--connect", &self.b.endpoint, "--timeout", TIMEOUT];
        all.extend_from_slice(args);
        run(CONSUMER, &all)
    }

    /// The values of `topic` read through B, once it holds at least `count` messages (B's
    /// copy of a topic follows JetStream), within [`STEP`].
    fn values_on_b(&self, topic: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + STEP;
        loop {
            let read = self.consumer_on_b(&["fetch", topic, "--max", "100000"]);
            let values: Vec<String> = read.lines().iter().map(|line| value_of(line)).collect();
            if read.status.success() && values.len() >= count {
                return values;
            }
            assert!(Instant::now() < deadline, "{topic} did not reach {count} on B: {read:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops B (Ctrl-C) and, when still running, A.
    fn stop(mut self) {
        if let Some(a) = self.a.take() {
            a.interrupt();
        }
        self.b.interrupt();
    }
}

/// The value of a text line `OFFSET<TAB>VALUE`.
fn value_of(line: &str) -> String {
    line.split_once('\t').map_or(line, |(_, value)| value).to_owned()
}

/// The line numbers a producer reported as unconfirmed: `line N: ...`, `lines N to M: ...`
/// and, pipelined, `C lines from line N to M: ...`.
fn unconfirmed_lines(stderr: &[String]) -> Vec<u64> {
    let mut numbers = Vec::new();
    for line in stderr.iter().filter(|line| line.ends_with("not sent again")) {
        let span = line.split(':').next().unwrap_or_default();
        let span = span.split_once(" lines from ").map_or(span, |(_, span)| span);
        let span = span.trim_start_matches("lines ").trim_start_matches("line ");
        let (first, last) = span.split_once(" to ").unwrap_or((span, span));
        let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
        numbers.extend(first..=last);
    }
    numbers
}

#[test]
fn the_idempotent_producer_sends_the_unanswered_append_again_through_the_other_broker() {
    let mut pair = Pair::start();
    let connect = pair.both();
    let common = ["--connect", &connect, "--timeout", TIMEOUT];
    let pipelined = ["--max-in-flight", "4", "--linger", "1", "--batch", "100"];
    let mut lockstep = Running::start(PRODUCER, &[&common[..], &["events"]].concat(), &[]);
    let mut piped =
        Running::start(PRODUCER, &[&common[..], &pipelined[..], &["piped"]].concat(), &[]);
    let before: Vec<String> = (1..=5).map(|n| format!("before {n}")).collect();
    for producer in [&mut lockstep, &mut piped] {
        producer.write_stdin(format!("{}\n", before.join("\n")).as_bytes());
    }
    assert_eq!(pair.values_on_b("events", 5), before, "appended through A, read through B");
    assert_eq!(pair.values_on_b("piped", 5), before, "appended through A, read through B");

    pair.kill_a();
    // The next line goes to A, which is gone: no reply within half the timeout, and the
    // producer sends it again through B, with the same producer and sequence.
    let moved =
        format!("the broker at {} did not answer; moving to {}", pair.a_endpoint, pair.b.endpoint);
    for producer in [&mut lockstep, &mut piped] {
        producer.write_stdin(b"after 6\n");
        assert_eq!(producer.wait_stderr("did not answer; moving to"), moved);
    }
    let after = |last: u64| -> Vec<String> { (7..=last).map(|n| format!("after {n}")).collect() };
    let (events_after, piped_after) = (after(10), after(2006));
    lockstep.write_stdin(format!("{}\n", events_after.join("\n")).as_bytes());
    piped.write_stdin(format!("{}\n", piped_after.join("\n")).as_bytes());
    for (producer, topic, after) in
        [(lockstep, "events", events_after), (piped, "piped", piped_after)]
    {
        let (status, stdout, stderr) = producer.wait_exit();
        // Every line is reported appended, none in doubt.
        assert_eq!(status.code(), Some(0), "{topic}: {stderr:#?}");
        let count = 6 + after.len();
        let summary = format!("appended {count} messages to {topic} at offsets 0..{}", count - 1);
        assert_eq!(stdout.len(), 1, "{stdout:?}");
        assert!(stdout[0].starts_with(&summary), "{stdout:?}");
        assert!(!stderr.iter().any(|line| line.contains("not confirmed")), "{stderr:#?}");
        // And each is held once, in the order written.
        let mut sent = before.clone();
        sent.push("after 6".to_owned());
        sent.extend(after);
        assert_eq!(pair.values_on_b(topic, sent.len()), sent, "{topic}");
    }
    pair.stop();
}

#[test]
fn without_idempotence_the_producer_goes_on_through_the_other_broker_and_every_acknowledged_line_is_kept(
) {
    let mut pair = Pair::start();
    let connect = pair.both();
    let mut producer = Running::start(
        PRODUCER,
        &["--connect", &connect, "--timeout", TIMEOUT, "--no-idempotence", "events"],
        &[],
    );
    let mut sent: Vec<String> = (1..=5).map(|n| format!("before {n}")).collect();
    producer.write_stdin(format!("{}\n", sent.join("\n")).as_bytes());
    assert_eq!(pair.values_on_b("events", 5), sent, "appended through A, read through B");

    pair.kill_a();
    // The next line goes to A, which is gone: no reply, and the producer moves to B.
    sent.push("after 6".to_owned());
    producer.write_stdin(b"after 6\n");
    let moved = producer.wait_stderr("did not answer; moving to");
    assert_eq!(
        moved,
        format!("the broker at {} did not answer; moving to {}", pair.a_endpoint, pair.b.endpoint)
    );
    for n in 7..=10 {
        let line = format!("after {n}");
        producer.write_stdin(format!("{line}\n").as_bytes());
        sent.push(line);
    }
    let (status, stdout, stderr) = producer.wait_exit();
    // The append that got no reply is reported with its line, and the run ends with status 1.
    let unconfirmed = unconfirmed_lines(&stderr);
    assert_eq!(unconfirmed, [6], "{stderr:#?}");
    assert!(
        stderr.iter().any(|line| line.starts_with("line 6: broker not reachable at")
            && line.contains("may or may not have been appended")),
        "{stderr:#?}"
    );
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    assert!(stderr.iter().any(|line| line
        == "error: 1 line was not confirmed: it may or may not \
                                               have been appended"));
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(stdout[0].starts_with("appended 9 messages to events"), "{stdout:?}");
    assert!(stdout[0].ends_with("; 1 line unconfirmed"), "{stdout:?}");

    // Every acknowledged line is there, in order, and nothing else; an unconfirmed one may be.
    let acknowledged: Vec<&String> = sent
        .iter()
        .enumerate()
        .filter(|(at, _)| !unconfirmed.contains(&(*at as u64 + 1)))
        .map(|(_, line)| line)
        .collect();
    let held = pair.values_on_b("events", acknowledged.len());
    let kept: Vec<&String> = held.iter().filter(|value| !value.starts_with("after 6")).collect();
    assert_eq!(kept, acknowledged);
    let mut in_order = sent.iter();
    assert!(held.iter().all(|value| in_order.any(|line| line == value)), "{held:?}");
    pair.stop();
}

#[test]
fn without_idempotence_the_pipelined_producer_goes_on_through_the_other_broker_and_every_acknowledged_line_is_kept(
) {
    let mut pair = Pair::start();
    let connect = pair.both();
    let args = [
        "--connect",
        &connect,
        "--timeout",
        TIMEOUT,
        "--no-idempotence",
        "--max-in-flight",
        "4",
        "--linger",
        "1",
    ];
    let mut producer =
        Running::start(PRODUCER, &[&args[..], &["--batch", "100", "events"]].concat(), &[]);
    let mut sent: Vec<String> = (1..=5).map(|n| format!("before {n}")).collect();
    producer.write_stdin(format!("{}\n", sent.join("\n")).as_bytes());
    assert_eq!(pair.values_on_b("events", 5), sent, "appended through A, read through B");

    pair.kill_a();
    // The next line goes to A, which is gone: no reply within the timeout, and the pipeline
    // moves to B on a new socket.
    sent.push("after 6".to_owned());
    producer.write_stdin(b"after 6\n");
    let moved = producer.wait_stderr("did not answer; moving to");
    assert_eq!(
        moved,
        format!("the broker at {} did not answer; moving to {}", pair.a_endpoint, pair.b.endpoint)
    );
    // Enough lines after the move for several appends of 100 in flight at once through B.
    let after: Vec<String> = (7..=2006).map(|n| format!("after {n}")).collect();
    producer.write_stdin(format!("{}\n", after.join("\n")).as_bytes());
    sent.extend(after);
    let (status, stdout, stderr) = producer.wait_exit();
    // The append that got no reply is reported with its line, and the run ends with status 1.
    let unconfirmed = unconfirmed_lines(&stderr);
    assert_eq!(unconfirmed, [6], "{stderr:#?}");
    assert!(
        stderr.iter().any(|line| line.starts_with("line 6: broker not reachable at")
            && line.contains("may or may not have been appended")),
        "{stderr:#?}"
    );
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    assert!(stderr.iter().any(
        |line| line == "error: 1 line was not confirmed: it may or may not have been appended"
    ));
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(stdout[0].starts_with("appended 2005 messages to events"), "{stdout:?}");
    assert!(stdout[0].ends_with("; 1 line unconfirmed"), "{stdout:?}");

    // Every acknowledged line is there, in order, and nothing else; the unconfirmed one may be.
    let acknowledged: Vec<&String> = sent.iter().filter(|line| *line != "after 6").collect();
    let held = pair.values_on_b("events", acknowledged.len());
    let kept: Vec<&String> = held.iter().filter(|value| *value != "after 6").collect();
    assert_eq!(kept, acknowledged);
    assert!(held.len() <= sent.len(), "{} values held", held.len());
    pair.stop();
}

#[test]
fn a_group_member_gets_what_it_left_unacknowledged_through_the_killed_broker_again() {
    let mut pair = Pair::start();
    let connect = pair.both();
    let values = ["m0", "m1", "m2"];
    let mut produce = vec!["--connect", &pair.a_endpoint, "orders"];
    produce.extend(values);
    run(PRODUCER, &produce).assert_success();
    let mut member = Running::start(
        CONSUMER,
        &[
            "--connect",
            &connect,
            "--timeout",
            TIMEOUT,
            "follow",
            "orders",
            "--group",
            "preparers",
            "--no-auto-ack",
        ],
        &[],
    );
    member.wait_stderr("following orders in group preparers");
    // Delivered through A, printed, not acknowledged.
    assert_eq!(member.stdout_lines(3), ["0\tm0", "1\tm1", "2\tm2"]);

    pair.kill_a();
    let moved = member.wait_stderr("did not answer; moving to");
    assert!(moved.ends_with(&format!("moving to {}", pair.b.endpoint)), "{moved}");
    member.wait_stderr(&format!("is not known at {}", pair.b.endpoint));
    // Through B, after the ack timeout, the same messages come again to the member that moved.
    member.wait_stderr("delivered again, not acknowledged in time before: offsets 0, 1, 2");
    assert_eq!(member.stdout_lines(3), ["0\tm0", "1\tm1", "2\tm2"]);
    // And it goes on with what is appended through B.
    run(PRODUCER, &["--connect", &pair.b.endpoint, "orders", "m3"]).assert_success();
    assert_eq!(member.wait_stdout("m3"), "3\tm3");
    member.interrupt();
    let (status, _, stderr) = member.wait_exit();
    assert_eq!(status.code(), Some(130), "{stderr:#?}");
    pair.stop();
}

#[test]
fn a_one_shot_fetch_given_both_reads_through_the_other_while_one_is_dead() {
    let mut pair = Pair::start();
    run(PRODUCER, &["--connect", &pair.a_endpoint, "t", "first", "second"]).assert_success();
    pair.values_on_b("t", 2);
    pair.kill_a();
    // Its claim gets no reply from A, and is tried on B: the fetch goes on there.
    let read = run(CONSUMER, &["--connect", &pair.both(), "--timeout", TIMEOUT, "fetch", "t"]);
    read.assert_success();
    assert!(read.stderr.contains("did not answer; moving to"), "{read:#?}");
    let values: Vec<String> = read.lines().iter().map(|line| value_of(line)).collect();
    assert_eq!(values, ["first", "second"]);
    pair.stop();
}

#[test]
fn a_claim_held_through_the_killed_broker_frees_up_on_the_other_when_its_lease_ends() {
    let mut pair = Pair::start();
    let connect = pair.both();
    run(PRODUCER, &["--connect", &pair.a_endpoint, "t", "first"]).assert_success();
    let mut follower = Running::start(
        CONSUMER,
        &["--connect", &connect, "--timeout", TIMEOUT, "follow", "t", "--broker", "1"],
        &[],
    );
    follower.wait_stderr("following t on logical broker 1");
    let held_by = format!("consumer-{}", follower.pid());

    pair.kill_a();
    let killed = Instant::now();
    // While the lease runs, logical broker 1 is busy through B, held by the claim made
    // through A.
    let busy = pair.consumer_on_b(&["fetch", "t", "--broker", "1"]);
    busy.assert_code(1);
    assert!(busy.stderr.contains("logical broker 1 is busy"), "{busy:#?}");
    assert!(killed.elapsed() < LEASE, "too slow to see the claim busy: {:?}", killed.elapsed());

    // The follower moves to B, finds its token unknown there, and waits for broker 1.
    follower.wait_stderr("did not answer; moving to");
    follower
        .wait_stderr(&format!("the claim on logical broker 1 is not known at {}", pair.b.endpoint));
    follower.wait_stderr("logical broker 1 is claimed; waiting for it to be released");
    // Once the lease has run out it has broker 1 again, through B, and reads on.
    run(PRODUCER, &["--connect", &pair.b.endpoint, "t", "second"]).assert_success();
    assert_eq!(follower.wait_stdout("second"), "1\tsecond");
    let freed = killed.elapsed();
    // A process renews its claims three times a lease: the last renewal through A was at most
    // a third of a lease before the kill.
    assert!(freed > LEASE / 2, "broker 1 was free {freed:?} after the kill, within its lease");
    let status = pair.consumer_on_b(&["status"]);
    status.assert_success();
    assert!(
        status.lines().iter().any(|row| row.starts_with("1 ") && row.contains(&held_by)),
        "{status:#?}"
    );
    follower.interrupt();
    let (exit, _, stderr) = follower.wait_exit();
    assert_eq!(exit.code(), Some(130), "{stderr:#?}");
    pair.stop();
}

#[test]
fn a_follower_moves_on_at_once_when_its_broker_stops_cleanly() {
    let mut pair = Pair::start();
    let connect = pair.both();
    run(PRODUCER, &["--connect", &pair.a_endpoint, "t", "first"]).assert_success();
    let mut follower = Running::start(
        CONSUMER,
        &["--connect", &connect, "--timeout", TIMEOUT, "follow", "t", "--from-beginning"],
        &[],
    );
    assert_eq!(follower.wait_stdout("first"), "0\tfirst");
    // A stops as Ctrl-C stops it: the follower's held fetch is told so, and it goes on
    // through B without waiting out its timeout.
    pair.a.take().expect("broker A is running").interrupt();
    follower.wait_stderr("is shutting down; moving to");
    run(PRODUCER, &["--connect", &pair.b.endpoint, "t", "second"]).assert_success();
    assert_eq!(follower.wait_stdout("second"), "1\tsecond");
    follower.interrupt();
    let (exit, _, stderr) = follower.wait_exit();
    assert_eq!(exit.code(), Some(130), "{stderr:#?}");
    assert!(!stderr.iter().any(|l| l.contains("not reachable")), "{stderr:#?}");
    assert!(!stderr.iter().any(|l| l.contains("did not answer")), "{stderr:#?}");
    pair.stop();
}

#[test]
fn group_members_on_both_brokers_at_once_keep_going_through_each_others_changes() {
    let pair = Pair::start();
    let a = pair.a.as_ref().expect("broker A is running").endpoint.clone();
    let member = |endpoint: &str| {
        let args =
            ["--connect", endpoint, "--timeout", TIMEOUT, "follow", "shared", "--group", "g"];
        Running::start(CONSUMER, &args, &[])
    };
    run(PRODUCER, &["--connect", &a, "shared", "first"]).assert_success();
    let (mut on_a, mut on_b) = (member(&a), member(&pair.b.endpoint));
    on_a.wait_stderr("following shared in group g");
    on_b.wait_stderr("following shared in group g");
    // Both members change the group's one state through their own process, again and again,
    // for several seconds: the one that loses a race is refused with 314 and sends again.
    let mut sent = vec!["first".to_owned()];
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let values: Vec<String> = (0..20).map(|n| format!("r{round}-{n}")).collect();
        let through = if round % 2 == 0 { &a } else { &pair.b.endpoint };
        let mut args = vec!["--connect", through, "shared"];
        args.extend(values.iter().map(String::as_str));
        run(PRODUCER, &args).assert_success();
        sent.extend(values);
        round += 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + STEP * 2;
    while seen.len() < sent.len() && Instant::now() < deadline {
        for running in [&mut on_a, &mut on_b] {
            while let Some(line) = running.stdout_line_within(Duration::from_millis(20)) {
                seen.insert(value_of(&line));
            }
        }
    }
    let missing: Vec<&String> = sent.iter().filter(|v| !seen.contains(*v)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    for running in [on_a, on_b] {
        running.interrupt();
        let (status, _, stderr) = running.wait_exit();
        // 130: stopped by the interrupt, not exited on its own with an error.
        assert_eq!(status.code(), Some(130), "{stderr:#?}");
    }
    pair.stop();
}

#[test]
fn the_producer_sends_again_what_nothing_was_appended_of_until_its_timeout() {
    let mut pair = Pair::start();
    run(PRODUCER, &["--connect", &pair.b.endpoint, "kept", "before"]).assert_success();
    pair._server.kill();
    // Until B has seen JetStream go, an append may be unconfirmed; from then on it is refused
    // with "nothing was appended".
    let deadline = Instant::now() + STEP;
    loop {
        let probe =
            run(PRODUCER, &["--connect", &pair.b.endpoint, "--timeout", "1s", "probe", "x"]);
        if probe.stderr.contains("nothing was appended") {
            break;
        }
        assert!(Instant::now() < deadline, "never refused as nothing appended: {probe:#?}");
    }
    let mut producer = Running::start(
        PRODUCER,
        &["--connect", &pair.b.endpoint, "--timeout", "20s", "kept", "after1", "after2"],
        &[],
    );
    producer.wait_stderr("sending again");
    pair._server.resume();
    let (status, _, stderr) = producer.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    assert_eq!(pair.values_on_b("kept", 3), ["before", "after1", "after2"]);
    pair.stop();
}

/// The committed offset of `group` on `topic`, as `consumer groups --json` says through
/// `endpoint`.
fn committed(endpoint: &str, group: &str, topic: &str) -> Option<u64> {
    let listed = run(CONSUMER, &["--connect", endpoint, "--json", "groups", group]);
    listed.lines().iter().find_map(|line| {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        (line["topic"] == topic).then(|| line["committed_offset"].as_u64())?
    })
}

#[test]
fn a_broker_process_started_mid_way_never_moves_a_groups_committed_offset_back() {
    let pair = Pair::start();
    let a = pair.a.as_ref().expect("broker A is running").endpoint.clone();
    let perf =
        ["perf", "--connect", &a, "--messages", "200000", "--batch", "1000", "--topic", "big"];
    run(PRODUCER, &perf).assert_success();
    // The group has read everything, through A.
    run(CONSUMER, &["--connect", &a, "group-reset", "g", "big", "--to-latest"]).assert_success();
    assert_eq!(committed(&a, "g", "big"), Some(200_000));
    // A process started now serves the group at once, while it still reads the topic from
    // JetStream: the group is at the end there too, and nothing is delivered again.
    let url = pair._server.url();
    let lease = format!("{}s", LEASE.as_secs());
    let args = ["--store", &url, "--lease", &lease, "--group-ack-timeout", "1s"];
    let late = BrokerProcess::start(&broker_binary(), &args);
    let fetched = run(
        CONSUMER,
        &["--connect", &late.endpoint, "--timeout", TIMEOUT, "fetch", "big", "--group", "g"],
    );
    fetched.assert_success();
    assert_eq!(fetched.lines(), Vec::<&str>::new(), "{}", fetched.stderr);
    assert_eq!(committed(&late.endpoint, "g", "big"), Some(200_000));
    // A follower at the end of the topic moves to the new process without starting over.
    let follow =
        ["--connect", &late.endpoint, "--timeout", TIMEOUT, "fetch", "big", "--offset", "199999"];
    let tail = run(CONSUMER, &follow);
    tail.assert_success();
    assert_eq!(tail.lines().len(), 1, "{}", tail.stderr);
    assert!(tail.lines()[0].starts_with("199999\t"), "{:?}", tail.lines());
    late.interrupt();
    pair.stop();
}
