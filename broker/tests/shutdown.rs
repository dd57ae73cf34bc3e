//! Stopping the broker with SIGINT or SIGTERM: held replies are answered, the process exits 0
//! promptly and logs a one-line summary.

mod wire;

use std::time::{Duration, Instant};

use protocol::{ErrorCode, Fetch, Request, Response};
use testkit::BrokerProcess;

use wire::{claim, dealer, expect_error, fetch_from, receive_tagged, send_tagged, start_preloaded};

/// How long the broker may take to exit once signalled.
const EXIT_LIMIT: Duration = Duration::from_secs(2);

/// Waits for the broker to exit after `signal` was sent at `signalled`; checks the exit status
/// and the summary line.
fn assert_clean_exit(broker: BrokerProcess, signal: &str, signalled: Instant) {
    let (status, stderr) = broker.wait_exit(EXIT_LIMIT);
    assert!(status.success(), "exited with {status} after SIG{signal}; stderr:\n{stderr}");
    assert!(signalled.elapsed() < EXIT_LIMIT, "exit took {:?}", signalled.elapsed());
    let summaries: Vec<&str> =
        stderr.lines().filter(|l| l.starts_with("stopped: ") || l.contains(" stopped: ")).collect();
    assert_eq!(summaries.len(), 1, "expected one `stopped:` summary line; stderr:\n{stderr}");
}

#[test]
fn sigint_answers_held_requests_and_exits_cleanly() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&a, None, "a");
    claim(&b, None, "b");

    // One connection keeps these in order: once `status` is answered, the fetch and the claim
    // before it are held.
    let held = dealer(&context, &broker.endpoint);
    let fetch = Fetch { wait_ms: 30_000, batches: false, ..fetch_from(token, "Hola mundo", 3) };
    send_tagged(&held, "fetch", &Request::Fetch(fetch));
    let waiting_claim = Request::Claim { broker: None, wait_ms: 30_000, client: Some("late") };
    send_tagged(&held, "claim", &waiting_claim);
    send_tagged(&held, "status", &Request::Status);
    let (tag, reply) = receive_tagged(&held);
    assert_eq!(tag, "status", "{reply:?}");
    assert!(matches!(reply, Response::Status { .. }), "{reply:?}");

    let signalled = Instant::now();
    broker.signal("INT");
    let mut replies: Vec<(String, Response<'static>)> =
        (0..2).map(|_| receive_tagged(&held)).collect();
    replies.sort_by(|x, y| x.0.cmp(&y.0));
    let [(claim_tag, claim_reply), (fetch_tag, fetch_reply)] =
        <[_; 2]>::try_from(replies).expect("two replies");
    assert_eq!((claim_tag.as_str(), fetch_tag.as_str()), ("claim", "fetch"));
    // The held fetch had nothing to give: its reader is told the broker stops.
    expect_error(&fetch_reply, ErrorCode::ShuttingDown);
    expect_error(&claim_reply, ErrorCode::ShuttingDown);
    assert!(signalled.elapsed() < EXIT_LIMIT, "held replies took {:?}", signalled.elapsed());

    assert_clean_exit(broker, "INT", signalled);
}

#[test]
fn sigterm_exits_cleanly() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    assert!(matches!(wire::ask(&socket, &Request::Status), Response::Status { .. }));

    let signalled = Instant::now();
    broker.signal("TERM");
    assert_clean_exit(broker, "TERM", signalled);
}

#[test]
fn sigint_with_nothing_held_exits_cleanly() {
    let broker = start_preloaded();
    let signalled = Instant::now();
    broker.signal("INT");
    assert_clean_exit(broker, "INT", signalled);
}
