//! Replies the broker holds back, and leases: claims that wait for a logical broker to free up,
//! fetches that wait for messages, and claims that expire.

mod wire;

use std::time::{Duration, Instant};

use protocol::{ErrorCode, Fetch, Request, Response};

use wire::{
    ask, assert_silent, claim, dealer, expect_error, expect_messages, fetch_from, receive,
    receive_tagged, release, send, send_tagged, start, start_preloaded, status, QUIET,
};

/// The lease of the brokers started to watch claims expire: long enough for a test's own steps
/// under one claim. The lease rules are checked to the millisecond, without waiting, by the unit
/// tests in `cmd`.
const SHORT_LEASE: Duration = Duration::from_millis(200);

/// A wait long enough that only the event a test waits for can end it.
const LONG_WAIT_MS: u64 = 5000;

/// The logical broker a `claimed` reply gives; panics on any other reply.
#[track_caller]
fn claimed_broker(response: &Response<'_>) -> u32 {
    match response {
        Response::Claimed { broker, .. } => *broker,
        other => panic!("expected claimed, got {other:?}"),
    }
}

#[test]
fn two_clients_get_different_brokers_and_a_third_is_refused() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b, c) = (broker.req(&context), broker.req(&context), broker.req(&context));

    let (first, _) = claim(&a, None, "a");
    let (second, _) = claim(&b, None, "b");
    assert_eq!((first, second), (1, 2));
    let reply = ask(&c, &Request::Claim { broker: None, wait_ms: 0, client: Some("c") });
    expect_error(&reply, ErrorCode::NoBrokerAvailable);
}

#[test]
fn a_waiting_claim_is_answered_as_soon_as_a_broker_is_released() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b, c) = (broker.req(&context), broker.req(&context), broker.req(&context));
    let (_, token_a) = claim(&a, None, "a");
    let (_, _token_b) = claim(&b, None, "b");

    send(&c, &Request::Claim { broker: None, wait_ms: LONG_WAIT_MS, client: Some("c") });
    assert_silent(&c, QUIET, "a claim while both brokers are claimed");
    assert_eq!(release(&a, token_a), 1);
    let reply = receive(&c);
    assert_eq!(claimed_broker(&reply), 1, "{reply:?}");
    assert_eq!(status(&a)[0].holder.as_deref(), Some("c"));
}

#[test]
fn a_claim_granted_to_a_client_that_left_goes_to_the_next_waiter() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    let (_, token_a) = claim(&a, None, "a");
    claim(&b, None, "b");

    // `gone` waits for a broker, then gives up and closes its socket; `next` waits after it.
    let gone = broker.req(&context);
    send(&gone, &Request::Claim { broker: None, wait_ms: LONG_WAIT_MS, client: Some("gone") });
    assert_silent(&gone, QUIET, "a claim while both brokers are claimed");
    drop(gone);
    let next = broker.req(&context);
    send(&next, &Request::Claim { broker: None, wait_ms: LONG_WAIT_MS, client: Some("next") });
    assert_silent(&next, QUIET, "a second waiting claim");

    // Broker 1 goes to `gone` first; the grant cannot be delivered, so it passes on.
    assert_eq!(release(&a, token_a), 1);
    let reply = receive(&next);
    assert_eq!(claimed_broker(&reply), 1, "{reply:?}");
    assert_eq!(status(&a)[0].holder.as_deref(), Some("next"));
}

#[test]
fn waiting_claims_are_served_first_come_first_served_among_those_that_fit() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    let (_, token_a) = claim(&a, Some(1), "a");
    let (_, token_b) = claim(&b, Some(2), "b");

    // One connection keeps the three requests in order.
    let waiters = dealer(&context, &broker.endpoint);
    let wants_two = Request::Claim { broker: Some(2), wait_ms: LONG_WAIT_MS, client: Some("w1") };
    let any = |name| Request::Claim { broker: None, wait_ms: LONG_WAIT_MS, client: Some(name) };
    send_tagged(&waiters, "w1", &wants_two);
    send_tagged(&waiters, "w2", &any("w2"));
    send_tagged(&waiters, "w3", &any("w3"));
    assert_silent(&waiters, QUIET, "claims while both brokers are claimed");

    // Broker 1 does not fit the first waiter: the second gets it.
    assert_eq!(release(&a, token_a), 1);
    let (tag, reply) = receive_tagged(&waiters);
    assert_eq!((tag.as_str(), claimed_broker(&reply)), ("w2", 1), "{reply:?}");
    assert_silent(&waiters, QUIET, "the other waiters after broker 1 was taken");

    // Broker 2 fits the first and the third: the first gets it.
    assert_eq!(release(&b, token_b), 2);
    let (tag, reply) = receive_tagged(&waiters);
    assert_eq!((tag.as_str(), claimed_broker(&reply)), ("w1", 2), "{reply:?}");
    let holders: Vec<Option<String>> = status(&a).into_iter().map(|b| b.holder).collect();
    assert_eq!(holders, [Some("w2".to_owned()), Some("w1".to_owned())]);
}

#[test]
fn a_waiting_claim_whose_wait_ends_is_refused() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    let (any, named) = (broker.req(&context), broker.req(&context));
    claim(&a, None, "a");
    claim(&b, None, "b");

    let wait = Duration::from_millis(150);
    let sent = Instant::now();
    let wait_ms = wait.as_millis() as u64;
    send(&any, &Request::Claim { broker: None, wait_ms, client: Some("any") });
    send(&named, &Request::Claim { broker: Some(1), wait_ms, client: Some("named") });
    expect_error(&receive(&any), ErrorCode::NoBrokerAvailable);
    expect_error(&receive(&named), ErrorCode::BrokerBusy);
    let waited = sent.elapsed();
    assert!(waited >= wait, "refused after {waited:?}, before the wait of {wait:?} ended");
    let holders: Vec<Option<String>> = status(&a).into_iter().map(|b| b.holder).collect();
    assert_eq!(holders, [Some("a".to_owned()), Some("b".to_owned())]);
}

#[test]
fn an_expired_lease_frees_its_broker_and_forgets_its_token() {
    let broker = start(&["--preload", "--lease", "200ms"]);
    let context = zmq::Context::new();
    let (a, c) = (broker.req(&context), broker.req(&context));

    let claimed_at = Instant::now();
    let reply = ask(&a, &Request::Claim { broker: None, wait_ms: 0, client: Some("a") });
    let Response::Claimed { broker: 1, claim: old, lease_ms: 200 } = reply else {
        panic!("expected broker 1 with a 200 ms lease, got {reply:?}");
    };
    // The lease runs out while this claim waits for broker 1.
    let reply =
        ask(&c, &Request::Claim { broker: Some(1), wait_ms: LONG_WAIT_MS, client: Some("c") });
    assert_eq!(claimed_broker(&reply), 1, "{reply:?}");
    let waited = claimed_at.elapsed();
    assert!(waited >= SHORT_LEASE, "broker 1 was free again after {waited:?}");

    for request in [
        Request::Renew { claim: old },
        Request::ListTopics { claim: Some(old) },
        Request::Fetch(fetch_from(old, "Hola mundo", 0)),
        Request::Release { claim: old },
    ] {
        expect_error(&ask(&a, &request), ErrorCode::UnknownClaim);
    }
    assert_eq!(status(&a)[0].holder.as_deref(), Some("c"));
}

#[test]
fn a_held_fetch_keeps_its_claim_alive_past_its_lease() {
    let broker = start(&["--preload", "--lease", "200ms"]);
    let context = zmq::Context::new();
    let (a, c) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&a, Some(1), "a");

    // Held for twice the lease.
    let fetched = expect_messages(
        ask(
            &a,
            &Request::Fetch(Fetch {
                wait_ms: 400,
                batches: false,
                ..fetch_from(token, "Hola mundo", 3)
            }),
        ),
        "Hola mundo",
    );
    assert!(fetched.messages.is_empty(), "{fetched:?}");
    let renewed_at = Instant::now();
    assert_eq!(
        ask(&a, &Request::Renew { claim: token }),
        Response::Renewed { broker: 1, lease_ms: 200 }
    );
    let reply =
        ask(&c, &Request::Claim { broker: Some(1), wait_ms: LONG_WAIT_MS, client: Some("c") });
    assert_eq!(claimed_broker(&reply), 1, "{reply:?}");
    let waited = renewed_at.elapsed();
    assert!(waited >= SHORT_LEASE, "the renewed claim expired {waited:?} after the renew");
}

#[test]
fn a_held_fetch_is_answered_as_soon_as_its_topic_grows() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (consumer, producer) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&consumer, None, "reader");
    let topic = "Hola mundo";

    send(
        &consumer,
        &Request::Fetch(Fetch {
            wait_ms: LONG_WAIT_MS,
            batches: false,
            ..fetch_from(token, topic, 3)
        }),
    );
    assert_silent(&consumer, QUIET, "a fetch at the end of its topic");
    // Another topic growing does not answer it.
    wire::append(&producer, "Hello world", &["message 4"]);
    assert_silent(&consumer, QUIET, "a fetch after another topic grew");

    assert_eq!(wire::append(&producer, topic, &["mensaje 4", "mensaje 5"]), (3, 4));
    let fetched = expect_messages(receive(&consumer), topic);
    assert_eq!(fetched.values(), ["mensaje 4", "mensaje 5"]);
    assert_eq!(fetched.offsets(), [3, 4]);
    assert_eq!((fetched.next_offset, fetched.end_offset), (5, 5));

    // Answered within its limits.
    let limited = Fetch {
        max_messages: 1,
        wait_ms: LONG_WAIT_MS,
        batches: false,
        ..fetch_from(token, topic, 5)
    };
    send(&consumer, &Request::Fetch(limited));
    assert_silent(&consumer, QUIET, "a fetch at the end of its topic");
    assert_eq!(wire::append(&producer, topic, &["mensaje 6", "mensaje 7"]), (5, 6));
    let fetched = expect_messages(receive(&consumer), topic);
    assert_eq!(fetched.values(), ["mensaje 6"]);
    assert_eq!((fetched.next_offset, fetched.end_offset), (6, 7));
}

#[test]
fn a_held_fetch_whose_wait_ends_gets_no_messages() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");

    let wait = Duration::from_millis(150);
    let sent = Instant::now();
    let fetch = Fetch {
        wait_ms: wait.as_millis() as u64,
        batches: false,
        ..fetch_from(token, "Hola mundo", 3)
    };
    let fetched = expect_messages(ask(&socket, &Request::Fetch(fetch)), "Hola mundo");
    let waited = sent.elapsed();
    assert!(fetched.messages.is_empty(), "{fetched:?}");
    assert_eq!((fetched.next_offset, fetched.end_offset), (3, 3));
    assert!(waited >= wait, "answered after {waited:?}, before the wait of {wait:?} ended");
}

#[test]
fn a_held_fetch_on_a_deleted_topic_gets_unknown_topic() {
    let broker = start_preloaded();
    let context = zmq::Context::new();
    let (consumer, admin) = (broker.req(&context), broker.req(&context));
    let (_, token) = claim(&consumer, None, "reader");
    let topic = "Efímero";
    assert_eq!(
        ask(
            &admin,
            &Request::CreateTopic { topic, partitions: Some(1), retention: Default::default() }
        ),
        Response::Created { topic, partitions: 1 }
    );

    send(
        &consumer,
        &Request::Fetch(Fetch {
            wait_ms: LONG_WAIT_MS,
            batches: false,
            ..fetch_from(token, topic, 0)
        }),
    );
    assert_silent(&consumer, QUIET, "a fetch on an empty topic");
    assert_eq!(ask(&admin, &Request::DeleteTopic { topic }), Response::Deleted { topic });
    expect_error(&receive(&consumer), ErrorCode::UnknownTopic);
}

#[test]
fn the_lease_starts_again_when_a_held_fetch_is_answered_early() {
    let broker = start(&["--preload", "--lease", "200ms"]);
    let context = zmq::Context::new();
    let (a, producer, c) = (broker.req(&context), broker.req(&context), broker.req(&context));
    let (_, token) = claim(&a, Some(1), "a");
    let topic = "Hola mundo";

    send(
        &a,
        &Request::Fetch(Fetch { wait_ms: 3000, batches: false, ..fetch_from(token, topic, 3) }),
    );
    assert_silent(&a, QUIET, "a fetch at the end of its topic");
    assert_eq!(wire::append(&producer, topic, &["mensaje 4"]), (3, 3));
    let answered = expect_messages(receive(&a), topic);
    assert_eq!(answered.values(), ["mensaje 4"]);

    // No request under the claim since the answer: it lasts one lease from the answer, not
    // from the end of the fetch's wait.
    let reply = ask(&c, &Request::Claim { broker: Some(1), wait_ms: 2000, client: Some("c") });
    assert_eq!(claimed_broker(&reply), 1, "{reply:?}");
}
