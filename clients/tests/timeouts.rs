//! Honest waits: `--timeout` is the whole budget of a command's wait for the broker, retries
//! included; a long silence is explained on standard error; a reader that goes away or Ctrl-C
//! ends a consumer at once, giving its claim back.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    consumer, dead_endpoint, preloaded_broker, producer, run, Running, CONSUMER, PRODUCER,
};
use testkit::STEP;

/// How much later than its timeout a program may exit: the budget is the timeout, and the
/// process needs a moment to start, give up and exit (more on a loaded machine).
const GRACE: Duration = Duration::from_millis(500);

/// Scheduling slack on a busy test machine, on top of [`GRACE`].
const SLACK: Duration = Duration::from_millis(500);

#[test]
fn every_command_gives_up_within_its_timeout() {
    let endpoint = dead_endpoint();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["groups"],
        &["ack", "g", "t", "1"],
        &["group-reset", "g", "t", "--to-earliest"],
        &["fetch", "t"],
    ];
    for command in commands {
        let mut args = vec!["--connect", &endpoint, "--timeout", "1s"];
        args.extend_from_slice(command);
        let out = run(CONSUMER, &args);
        out.assert_code(1);
        let want = format!("error: broker not reachable at {endpoint}");
        assert!(out.stderr.contains(&want), "{command:?}: {}", out.stderr);
        assert!(
            out.elapsed < Duration::from_secs(1) + GRACE + SLACK,
            "{command:?} took {:?} for a 1 s timeout",
            out.elapsed
        );
    }
    let perf = ["perf", "--connect", &endpoint, "--timeout", "1s", "--messages", "10"];
    let out = run(PRODUCER, &[&perf[..], &["--clients", "2"]].concat());
    out.assert_code(1);
    assert!(out.elapsed < Duration::from_secs(1) + GRACE + SLACK, "took {:?}", out.elapsed);
    let out = run(CONSUMER, &[&perf[..1], &["t"], &perf[1..]].concat());
    out.assert_code(1);
    assert!(out.elapsed < Duration::from_secs(1) + GRACE + SLACK, "took {:?}", out.elapsed);
}

#[test]
fn a_long_wait_says_what_it_waits_for_once() {
    let endpoint = dead_endpoint();
    let out = run(CONSUMER, &["--connect", &endpoint, "--timeout", "3s", "status"]);
    out.assert_code(1);
    let note = format!("waiting for the broker at {endpoint} (1 s of 3 s)");
    assert_eq!(out.stderr.matches(&note).count(), 1, "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(3) + GRACE + SLACK, "took {:?}", out.elapsed);
    // A wait under a second stays quiet.
    let out = run(CONSUMER, &["--connect", &endpoint, "--timeout", "900ms", "status"]);
    assert!(!out.stderr.contains("waiting for the broker"), "{}", out.stderr);
}

#[test]
fn follow_gives_up_within_its_timeout_when_the_broker_stops() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["--timeout", "2s", "follow", "Hello world"]);
    follow.wait_stderr("following");
    broker.signal("STOP");
    let stopped = Instant::now();
    let (status, _, stderr) = follow.wait_exit();
    let took = stopped.elapsed();
    broker.signal("CONT");
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(took < Duration::from_secs(2) + GRACE + SLACK, "took {took:?}; {stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("broker not reachable")), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("waiting for the broker at")), "{stderr:?}");
    broker.interrupt();
}

#[test]
fn ctrl_c_ends_a_producer_waiting_on_a_frozen_broker_at_once_with_130() {
    let broker = preloaded_broker();
    broker.signal("STOP");
    let mut producer = Running::start(
        PRODUCER,
        &["--connect", &broker.endpoint, "--timeout", "20s", "Hello world", "stuck"],
        &[],
    );
    // It waits: after a second a note says so.
    producer.wait_stderr("waiting for the broker at");
    producer.interrupt();
    let interrupted = Instant::now();
    let (status, _, stderr) = producer.wait_exit();
    let took = interrupted.elapsed();
    broker.signal("CONT");
    assert_eq!(status.code(), Some(130), "{stderr:?}");
    assert!(took < GRACE + SLACK, "took {took:?}; {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("the last append may have been stored")),
        "{stderr:?}"
    );
    broker.interrupt();
}

#[test]
fn a_follower_is_told_at_once_when_its_broker_shuts_down() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["--timeout", "5s", "follow", "Hello world"]);
    follow.wait_stderr("following");
    let mut member =
        Running::consumer(&broker, &["--timeout", "5s", "follow", "Hola mundo", "--group", "g"]);
    member.wait_stderr("following");
    // Both wait in a held fetch at the end of their topic now (the member once it has
    // acknowledged its first batch).
    assert_eq!(member.stdout_lines(3).len(), 3);
    let deadline = Instant::now() + STEP;
    while !consumer(&broker, &["--json", "groups", "g"]).stdout.contains("\"committed_offset\":3") {
        assert!(Instant::now() < deadline, "the member did not acknowledge its batch");
    }
    let stopped = Instant::now();
    broker.interrupt();
    for reader in [follow, member] {
        let (status, _, stderr) = reader.wait_exit();
        let took = stopped.elapsed();
        assert_eq!(status.code(), Some(1), "{stderr:?}");
        assert!(took < Duration::from_secs(1) + SLACK, "took {took:?}; {stderr:?}");
        assert!(stderr.iter().any(|l| l.contains("the broker is shutting down")), "{stderr:?}");
        assert!(!stderr.iter().any(|l| l.contains("not reachable")), "{stderr:?}");
    }
}

#[test]
fn follow_gives_up_within_its_timeout_when_the_broker_is_killed() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["--timeout", "2s", "follow", "Hello world"]);
    follow.wait_stderr("following");
    broker.signal("KILL");
    let killed = Instant::now();
    let (status, _, stderr) = follow.wait_exit();
    let took = killed.elapsed();
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(took < Duration::from_secs(2) + GRACE + SLACK, "took {took:?}; {stderr:?}");
}

#[test]
fn a_reader_that_closes_its_output_ends_follow_and_frees_the_claim() {
    let broker = preloaded_broker();
    let mut child = Command::new(CONSUMER)
        .args(["--connect", &broker.endpoint, "follow", "Hello world"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the consumer");
    // Wait until it holds a logical broker, then close the pipe as `head` does when done.
    let deadline = Instant::now() + STEP;
    while !consumer(&broker, &["status"]).stdout.contains("claimed") {
        assert!(Instant::now() < deadline, "follow never claimed a logical broker");
    }
    drop(child.stdout.take());
    let closed = Instant::now();
    let status = testkit::wait_child(&mut child, STEP).expect("follow did not exit");
    assert!(status.success(), "{status}");
    assert!(closed.elapsed() < Duration::from_secs(2), "took {:?}", closed.elapsed());
    let status = consumer(&broker, &["status"]);
    assert!(!status.assert_success().stdout.contains("claimed"), "{}", status.stdout);
    broker.interrupt();
}

#[test]
fn ctrl_c_exits_130_after_the_summary() {
    let broker = preloaded_broker();
    let mut follow = Running::consumer(&broker, &["follow", "Hello world"]);
    follow.wait_stderr("following");
    producer(&broker, &["Hello world", "one more"]).assert_success();
    assert_eq!(follow.stdout_lines(1), ["3\tone more"]);
    follow.interrupt();
    let (status, _, stderr) = follow.wait_exit();
    assert_eq!(status.code(), Some(130), "{stderr:?}");
    assert_eq!(stderr.last().map(String::as_str), Some("read 1 message of Hello world"));
    broker.interrupt();
}

#[test]
fn after_ctrl_c_on_a_terminal_the_summary_starts_on_a_line_of_its_own() {
    let broker = preloaded_broker();
    // `script` runs the consumer on a terminal, where Ctrl-C is a key: the terminal echoes
    // `^C` and signals the program.
    let command = format!("{CONSUMER} --connect {} follow 'Hello world'", broker.endpoint);
    let mut follow = Running::start("script", &["-qfec", &command, "/dev/null"], &[]);
    follow.wait_stdout("following Hello world");
    follow.write_stdin(b"\x03");
    let summary = follow.wait_stdout("read 0 messages of Hello world");
    assert_eq!(summary.trim_end_matches('\r'), "read 0 messages of Hello world");
    let (status, _, _) = follow.wait_exit();
    assert_eq!(status.code(), Some(130));
    broker.interrupt();
}
