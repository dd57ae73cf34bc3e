//! Two real broker processes on one real NATS JetStream (`--store nats://...`): what one
//! appends the other serves at the same offsets, a fetch held on one is woken by an append on
//! the other, and appends are acknowledged only once JetStream has them.

mod wire;

use std::time::{Duration, Instant};

use protocol::{ErrorCode, NewMessage, Request, Response};
use testkit::{BrokerProcess, NatsServer};
use wire::{append, append_of, ask, claim, expect_error, fetch, fetch_from};

/// Starts a broker on `server`'s JetStream.
fn start_on(server: &NatsServer) -> BrokerProcess {
    wire::start(&["--store", &server.url()])
}

/// Fetches `topic` from 0 on `socket` until it holds `count` messages, for at most ten
/// seconds (the broker's copy of a topic follows JetStream); returns offsets and values.
fn fetch_until(socket: &zmq::Socket, token: u64, topic: &str, count: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ask(socket, &Request::Fetch(fetch_from(token, topic, 0)));
        if let Response::Messages { messages, .. } = &reply {
            let held: Vec<(u64, String)> = messages
                .iter()
                .map(|m| (m.offset, String::from_utf8_lossy(m.value).into_owned()))
                .collect();
            if held.len() >= count {
                return held;
            }
        }
        assert!(Instant::now() < deadline, "{topic} did not reach {count} messages: {reply:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn what_one_broker_appends_the_other_serves_at_the_same_offsets() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let (_, token_b) = claim(&on_b, None, "reader");
    assert_eq!(append(&on_a, "orders", &["one", "two"]), (0, 1));
    assert_eq!(fetch_until(&on_b, token_b, "orders", 2), [(0, "one".into()), (1, "two".into())]);
    // B's appends follow A's in the same log.
    assert_eq!(append(&on_b, "orders", &["three"]), (2, 2));
    let (_, token_a) = claim(&on_a, None, "reader");
    assert_eq!(fetch_until(&on_a, token_a, "orders", 3)[2], (2, "three".into()));
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_broker_started_on_a_topic_larger_than_its_cache_serves_every_message_from_the_first() {
    let server = NatsServer::start();
    let a = start_on(&server);
    let context = zmq::Context::new();
    let on_a = a.req(&context);
    let value = |n: u64| format!("{n:0>100}");
    for batch in 0..40 {
        let values: Vec<String> = (batch * 1000..(batch + 1) * 1000).map(value).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(append(&on_a, "big", &values), (batch * 1000, batch * 1000 + 999));
    }
    // About 4.4 MB of messages; B holds at most 1 MB, none of it at its start.
    let b = wire::start(&["--store", &server.url(), "--cache-bytes", "1000000"]);
    let on_b = b.req(&context);
    let (_, token) = claim(&on_b, None, "reader");
    let listed = wire::topics(&on_b, token);
    assert_eq!((listed[0].first_offset, listed[0].next_offset), (0, 40_000));
    assert_eq!(listed[0].messages, 40_000);
    // A fetch without a wait is held while its messages are read back, not answered empty;
    // reading on goes through every message once, in order, to the end.
    let mut offset = 0;
    while offset < 40_000 {
        let got = fetch(&on_b, fetch_from(token, "big", offset));
        assert_eq!(got.offsets().first(), Some(&offset), "nothing at {offset}");
        assert_eq!(got.end_offset, 40_000);
        for (at, value_read) in got.offsets().into_iter().zip(got.values()) {
            assert_eq!(value_read, value(at));
        }
        offset = got.next_offset;
    }
    // And again from the middle, after the cache has moved on.
    assert_eq!(fetch(&on_b, fetch_from(token, "big", 12_345)).values()[0], value(12_345));
    // With JetStream gone, what B holds (what was appended since it started) is still
    // served; what it would read back is refused as unavailable, saying so, rather than
    // answered empty.
    append(&on_a, "big", &["last"]);
    let last =
        protocol::Fetch { wait_ms: 5_000, batches: false, ..fetch_from(token, "big", 40_000) };
    assert_eq!(fetch(&on_b, last.clone()).values(), ["last"]);
    let mut server = server;
    server.kill();
    assert_eq!(fetch(&on_b, last).values(), ["last"]);
    let refused = ask(&on_b, &Request::Fetch(fetch_from(token, "big", 0)));
    expect_error(&refused, ErrorCode::StoreUnavailable);
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_fetch_held_on_one_broker_is_woken_by_an_append_on_the_other() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    append(&on_a, "events", &["first"]);
    let (_, token) = claim(&on_b, None, "follower");
    assert_eq!(fetch_until(&on_b, token, "events", 1).len(), 1);
    let held = Request::Fetch(protocol::Fetch {
        wait_ms: 8_000,
        batches: false,
        ..fetch_from(token, "events", 1)
    });
    on_b.send(wire::encode(&held), 0).expect("send");
    // The fetch is held: nothing comes until the append.
    wire::assert_silent(&on_b, wire::QUIET, "a fetch with nothing to read");
    let appended = Instant::now();
    append(&on_a, "events", &["second"]);
    let reply = wire::expect_messages(wire::receive(&on_b), "events");
    assert_eq!(reply.values(), ["second"]);
    assert_eq!(reply.offsets(), [1]);
    assert!(appended.elapsed() < Duration::from_secs(5), "woken only by the fetch's timeout");
    a.interrupt();
    b.interrupt();
}

#[test]
fn appends_get_an_error_while_jetstream_is_down_and_go_on_once_it_is_back() {
    let mut server = NatsServer::start();
    let broker = start_on(&server);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    assert_eq!(append(&socket, "t", &["stored"]), (0, 0));
    let (_, token) = claim(&socket, None, "reader");
    server.kill();
    let asked = Instant::now();
    let reply = ask(&socket, &append_of("t", &["refused"]));
    expect_error(&reply, ErrorCode::StoreUnavailable);
    // Refused for sure once the broker saw the connection down; before that (the kill not
    // noticed yet) the refusal says the messages may be stored when JetStream is back.
    let unsure = matches!(&reply, Response::Error { reason, .. } if reason.contains("may have"));
    let sure = matches!(&reply, Response::Error { reason, .. } if reason.contains("nothing was"));
    assert!(unsure != sure, "the refusal says neither what became of the append: {reply:?}");
    assert!(asked.elapsed() < Duration::from_secs(5), "the refusal took {:?}", asked.elapsed());
    // Other changes of the store are refused the same way, within the client's timeout.
    let asked = Instant::now();
    let created = ask(
        &socket,
        &Request::CreateTopic { topic: "new", partitions: Some(1), retention: Default::default() },
    );
    expect_error(&created, ErrorCode::StoreUnavailable);
    assert!(asked.elapsed() < Duration::from_secs(5), "the refusal took {:?}", asked.elapsed());
    // Reads go on from the broker's copy, which holds what JetStream acknowledged.
    assert_eq!(fetch(&socket, fetch_from(token, "t", 0)).values(), ["stored"]);
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    let offsets = loop {
        match ask(&socket, &append_of("t", &["after"])) {
            Response::Appended { first_offset, last_offset, .. } => {
                break (first_offset, last_offset)
            }
            other => assert!(Instant::now() < deadline, "appends did not resume: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let values = fetch(&socket, fetch_from(token, "t", 0)).values();
    if unsure && offsets == (2, 2) {
        assert_eq!(values, ["stored", "refused", "after"]);
    } else {
        assert_eq!(offsets, (1, 1), "the refused append was stored: {reply:?}");
        assert_eq!(values, ["stored", "after"]);
    }
    broker.interrupt();
}

/// Asks for logical broker `id` as `client`; the reply.
fn claim_reply(socket: &zmq::Socket, id: Option<u32>, client: &str) -> Response<'static> {
    ask(socket, &Request::Claim { broker: id, wait_ms: 0, client: Some(client) })
}

/// Asks for logical broker `id` until it is granted, for at most ten seconds; the token.
fn claim_when_free(socket: &zmq::Socket, id: u32, client: &str) -> (u64, Duration) {
    let asked = Instant::now();
    loop {
        match claim_reply(socket, Some(id), client) {
            Response::Claimed { claim, .. } => return (claim, asked.elapsed()),
            reply => {
                expect_error(&reply, ErrorCode::BrokerBusy);
                assert!(asked.elapsed() < Duration::from_secs(10), "{id} never came free");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks for any logical broker until one is granted (a release through another process
/// reaches this one through JetStream), for at most ten seconds; the broker and token.
fn claim_when_free_any(socket: &zmq::Socket, client: &str) -> (u32, u64) {
    let asked = Instant::now();
    loop {
        match claim_reply(socket, None, client) {
            Response::Claimed { broker, claim, .. } => return (broker, claim),
            reply => {
                expect_error(&reply, ErrorCode::NoBrokerAvailable);
                assert!(asked.elapsed() < Duration::from_secs(10), "none came free");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_logical_broker_claimed_through_one_process_is_busy_through_the_other() {
    let server = NatsServer::start();
    let lease = ["--store", &server.url(), "--lease", "2s"];
    let (a, b) = (wire::start(&lease), wire::start(&lease));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let (_, token) = claim(&on_a, Some(1), "first");
    expect_error(&claim_reply(&on_b, Some(1), "second"), ErrorCode::BrokerBusy);
    // Any free one, through B: not the one A holds.
    let (other, _) = claim(&on_b, None, "second");
    assert_eq!(other, 2);
    expect_error(&claim_reply(&on_b, None, "third"), ErrorCode::NoBrokerAvailable);
    // Released through A, it is free through B.
    wire::release(&on_a, token);
    claim_when_free(&on_b, 1, "second");
    a.interrupt();
    b.interrupt();
}

/// Polls `status` on `socket` until logical broker `id` is held by `holder` (or free, for
/// `None`), for at most ten seconds; how long that took.
fn status_until(socket: &zmq::Socket, id: u32, holder: Option<&str>) -> Duration {
    let asked = Instant::now();
    loop {
        let brokers = wire::status(socket);
        let shown = brokers.iter().find(|b| b.id == id).expect("the logical broker is listed");
        if shown.holder.as_deref() == holder && shown.available == holder.is_none() {
            return asked.elapsed();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{id} never showed {holder:?}: {shown:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn status_through_one_process_shows_the_claims_taken_through_the_other() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let (_, token) = claim(&on_a, Some(1), "held on a");
    let shown = status_until(&on_b, 1, Some("held on a"));
    println!("a claim through A showed in status through B after {shown:?}");
    let brokers = wire::status(&on_b);
    assert!(brokers[0].lease_remaining_ms.is_some_and(|ms| ms > 0), "{brokers:?}");
    assert!(brokers[1].available, "{brokers:?}");
    wire::release(&on_a, token);
    let shown = status_until(&on_b, 1, None);
    println!("its release showed through B after {shown:?}");
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_claim_waiting_through_one_process_is_granted_when_the_other_releases() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let (_, token) = claim(&on_a, Some(1), "first");
    status_until(&on_b, 1, Some("first"));
    // B waits up to 20 s for logical broker 1, which A holds.
    let waiting = Request::Claim { broker: Some(1), wait_ms: 20_000, client: Some("second") };
    on_b.send(wire::encode(&waiting), 0).expect("send");
    wire::assert_silent(
        &on_b,
        Duration::from_millis(500),
        "a claim of a logical broker held through A",
    );
    let released = Instant::now();
    assert_eq!(wire::release(&on_a, token), 1);
    let reply = wire::receive(&on_b);
    let waited = released.elapsed();
    assert!(matches!(reply, Response::Claimed { broker: 1, .. }), "{reply:?}");
    println!("the waiting claim was granted {waited:?} after the release");
    assert!(
        waited < Duration::from_secs(3),
        "granted {waited:?} after the release, at its deadline"
    );
    // B holds it now: A cannot have it.
    expect_error(&claim_reply(&on_a, Some(1), "third"), ErrorCode::BrokerBusy);
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_claim_held_through_a_killed_process_expires_with_its_lease() {
    let server = NatsServer::start();
    let lease = ["--store", &server.url(), "--lease", "4s"];
    let (a, b) = (wire::start(&lease), wire::start(&lease));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let (_, token) = claim(&on_a, Some(1), "doomed");
    // Its holder renews it through A; A keeps it in JetStream past the bucket's time to live
    // (half a lease).
    let renewing = Instant::now();
    while renewing.elapsed() < Duration::from_millis(2500) {
        let renewed = ask(&on_a, &Request::Renew { claim: token });
        assert!(matches!(renewed, Response::Renewed { .. }), "{renewed:?}");
        expect_error(&claim_reply(&on_b, Some(1), "next"), ErrorCode::BrokerBusy);
        std::thread::sleep(Duration::from_millis(200));
    }
    a.signal("KILL");
    let (_, waited) = claim_when_free(&on_b, 1, "next");
    assert!(waited >= Duration::from_millis(300), "free at once after the kill: {waited:?}");
    // Within about a lease of the kill, not two (the claim lingering in JetStream until its
    // time to live removes it was taken as held for a whole lease more).
    println!("free {waited:?} after the kill, with a lease of 4 s");
    assert!(waited < Duration::from_secs(5), "free only {waited:?} after the kill");
    b.interrupt();
}

/// A group fetch of at most `max` messages without waiting: the offsets delivered, and the
/// group's committed offset.
fn group_take(
    socket: &zmq::Socket,
    claim: u64,
    group: &str,
    topic: &str,
    max: u32,
) -> (Vec<u64>, u64) {
    let request = Request::GroupFetch(protocol::GroupFetch {
        ordered: false,
        claim,
        group,
        topic,
        max_messages: max,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms: 0,
    });
    match ask(socket, &request) {
        Response::Delivered { messages, committed_offset, .. } => {
            (messages.iter().map(|m| m.offset).collect(), committed_offset)
        }
        other => panic!("group_fetch: expected delivered, got {other:?}"),
    }
}

/// Joins `group` on `topic` from the earliest offset; the committed offset.
fn join_group(socket: &zmq::Socket, claim: u64, group: &str, topic: &str) -> u64 {
    let start = protocol::GroupStart::Earliest;
    match ask(socket, &Request::JoinGroup { claim, group, topic, start }) {
        Response::Joined { committed_offset, .. } => committed_offset,
        other => panic!("join_group: expected joined, got {other:?}"),
    }
}

#[test]
fn a_group_member_moves_to_the_other_broker_and_goes_on_where_its_group_was() {
    let server = NatsServer::start();
    let args = ["--store", &server.url(), "--group-ack-timeout", "500ms"];
    let (a, b) = (wire::start(&args), wire::start(&args));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    append(&on_a, "orders", &["m0", "m1", "m2", "m3", "m4"]);
    let (_, token_a) = claim(&on_a, None, "member");
    assert_eq!(join_group(&on_a, token_a, "preparers", "orders"), 0);
    assert_eq!(group_take(&on_a, token_a, "preparers", "orders", 3).0, [0, 1, 2]);
    let acked = ask(
        &on_a,
        &Request::Ack { group: "preparers", topic: "orders", partition: 0, offsets: vec![0, 1] },
    );
    assert!(matches!(acked, Response::Acked { committed_offset: 2, .. }), "{acked:?}");
    // Broker A is killed with offset 2 delivered and not acknowledged.
    a.signal("KILL");

    let (_, token_b) = claim(&on_b, None, "member");
    assert_eq!(fetch_until(&on_b, token_b, "orders", 5).len(), 5);
    assert_eq!(join_group(&on_b, token_b, "preparers", "orders"), 2, "the committed offset");
    // What was never delivered comes at once; offset 2 comes again after its ack timeout.
    assert_eq!(group_take(&on_b, token_b, "preparers", "orders", 10).0, [3, 4]);
    let acked = ask(
        &on_b,
        &Request::Ack { group: "preparers", topic: "orders", partition: 0, offsets: vec![3, 4] },
    );
    assert!(matches!(acked, Response::Acked { committed_offset: 2, .. }), "{acked:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (offsets, _) = group_take(&on_b, token_b, "preparers", "orders", 10);
        if !offsets.is_empty() {
            assert_eq!(offsets, [2], "only the unacknowledged message is delivered again");
            break;
        }
        assert!(Instant::now() < deadline, "offset 2 was never delivered again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let acked = ask(
        &on_b,
        &Request::Ack { group: "preparers", topic: "orders", partition: 0, offsets: vec![2] },
    );
    assert!(matches!(acked, Response::Acked { committed_offset: 5, .. }), "{acked:?}");
    b.interrupt();
}

/// Sends `request` until it is not refused with `314 store_unavailable` (another broker
/// process changed the group's state at the same moment), for at most ten seconds; the reply,
/// and how many refusals came first.
fn ask_until_stored(socket: &zmq::Socket, request: &Request<'_>) -> (Response<'static>, u32) {
    let asked = Instant::now();
    let mut refused = 0;
    loop {
        match ask(socket, request) {
            Response::Error { code: ErrorCode::StoreUnavailable, reason, .. } => {
                assert!(reason.contains("another broker process"), "{reason}");
                refused += 1;
                assert!(asked.elapsed() < Duration::from_secs(10), "refused for ten seconds");
            }
            reply => return (reply, refused),
        }
    }
}

#[test]
fn a_group_request_made_on_an_old_copy_is_made_again_on_the_stored_state_not_refused() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    append(&on_a, "jobs", &["j0", "j1", "j2", "j3", "j4", "j5"]);
    let (_, token_a) = claim(&on_a, None, "member on a");
    let (_, token_b) = claim(&on_b, None, "member on b");
    assert_eq!(fetch_until(&on_b, token_b, "jobs", 6).len(), 6);
    assert_eq!(join_group(&on_a, token_a, "crew", "jobs"), 0);
    assert_eq!(join_group(&on_b, token_b, "crew", "jobs"), 0);
    // B stores the state after A last read it: A's copy is old at A's next request.
    assert_eq!(group_take(&on_b, token_b, "crew", "jobs", 2).0, [0, 1]);
    // Made on A's old copy, the fetch would hand out 0 and 1 again; its store is refused, and A
    // makes it again on the state B stored: it hands out what nobody was given.
    let (taken, committed) = group_take(&on_a, token_a, "crew", "jobs", 2);
    assert_eq!((taken, committed), (vec![2, 3], 0));
    // Now B's copy is the old one: its acknowledgement is made again on the state A stored;
    // then A's copy is, and so is A's.
    let acked = ask(
        &on_b,
        &Request::Ack { group: "crew", topic: "jobs", partition: 0, offsets: vec![0, 1] },
    );
    assert!(matches!(acked, Response::Acked { acked: 2, committed_offset: 2, .. }), "{acked:?}");
    let acked = ask(
        &on_a,
        &Request::Ack { group: "crew", topic: "jobs", partition: 0, offsets: vec![2, 3] },
    );
    assert!(matches!(acked, Response::Acked { acked: 2, committed_offset: 4, .. }), "{acked:?}");
    // A join through the process whose copy is old takes the stored state (as it always did).
    assert_eq!(join_group(&on_b, token_b, "crew", "jobs"), 4);
    assert_eq!(group_take(&on_b, token_b, "crew", "jobs", 10).0, [4, 5]);
    // Nothing committed moved back: a newcomer through either process starts at 4.
    for socket in [&on_a, &on_b] {
        let listed = ask(socket, &Request::ListGroups { group: Some("crew"), topic: None });
        let Response::Groups { groups } = &listed else { panic!("{listed:?}") };
        assert!(groups.iter().all(|g| g.committed_offset >= 4), "{groups:?}");
    }
    a.interrupt();
    b.interrupt();
}

/// Sends a group fetch of `group` on `topic` that waits up to five seconds, without waiting
/// for its reply.
fn send_held_group_fetch(socket: &zmq::Socket, claim: u64, group: &str, topic: &str) {
    let request = Request::GroupFetch(protocol::GroupFetch {
        ordered: false,
        claim,
        group,
        topic,
        max_messages: 10,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms: 5_000,
    });
    socket.send(wire::encode(&request), 0).expect("send");
}

/// The offsets a `delivered` reply hands out.
fn delivered_offsets(reply: &Response<'_>) -> Vec<u64> {
    match reply {
        Response::Delivered { messages, .. } => messages.iter().map(|m| m.offset).collect(),
        other => panic!("group_fetch: expected delivered, got {other:?}"),
    }
}

#[test]
fn a_waiting_group_fetch_made_again_on_the_stored_state_waits_for_what_nobody_was_given() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    append(&on_a, "tasks", &["t0", "t1"]);
    let (_, token_a) = claim(&on_a, None, "member on a");
    let (_, token_b) = claim(&on_b, None, "member on b");
    assert_eq!(fetch_until(&on_b, token_b, "tasks", 2).len(), 2);
    join_group(&on_a, token_a, "pool", "tasks");
    join_group(&on_b, token_b, "pool", "tasks");
    assert_eq!(group_take(&on_b, token_b, "pool", "tasks", 10).0, [0, 1]);
    // On A's old copy the fetch hands out 0 and 1; made again on B's state it finds nothing,
    // and waits, as any fetch with nothing to take does.
    send_held_group_fetch(&on_a, token_a, "pool", "tasks");
    wire::assert_silent(&on_a, wire::QUIET, "a fetch with nothing left for the group");
    append(&on_b, "tasks", &["t2"]);
    assert_eq!(delivered_offsets(&wire::receive(&on_a)), [2]);
    // Both wait; each append wakes both processes, which race for the one state: whichever
    // stores second makes its fetch again on the state stored, finds nothing, and waits on.
    // Every offset goes to one member only, and no fetch is refused.
    let producer = b.req(&context);
    let mut handed = std::collections::BTreeSet::from([0, 1, 2]);
    send_held_group_fetch(&on_a, token_a, "pool", "tasks");
    send_held_group_fetch(&on_b, token_b, "pool", "tasks");
    for (offset, value) in (3..).zip(["t3", "t4", "t5", "t6"]) {
        append(&producer, "tasks", &[value]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handed.contains(&offset) {
            assert!(Instant::now() < deadline, "offset {offset} was never handed out");
            let mut items = [on_a.as_poll_item(zmq::POLLIN), on_b.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, 100).expect("poll");
            let ready: Vec<bool> = items.iter().map(|item| item.is_readable()).collect();
            for ((socket, claim), ready) in
                [(&on_a, token_a), (&on_b, token_b)].into_iter().zip(ready)
            {
                if !ready {
                    continue;
                }
                for offset in delivered_offsets(&wire::receive(socket)) {
                    assert!(handed.insert(offset), "{offset} handed out twice");
                }
                send_held_group_fetch(socket, claim, "pool", "tasks");
            }
        }
    }
    assert_eq!(handed, (0..7).collect());
    a.interrupt();
    b.interrupt();
}

#[test]
fn members_of_one_group_on_two_brokers_at_once_never_undo_each_others_acknowledgements() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    const TOTAL: u64 = 60;
    let values: Vec<String> = (0..TOTAL).map(|n| format!("m{n}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    append(&on_a, "work", &values);
    let (_, token_a) = claim(&on_a, None, "member on a");
    let (_, token_b) = claim(&on_b, None, "member on b");
    assert_eq!(fetch_until(&on_b, token_b, "work", TOTAL as usize).len(), TOTAL as usize);
    assert_eq!(join_group(&on_a, token_a, "workers", "work"), 0);
    assert_eq!(join_group(&on_b, token_b, "workers", "work"), 0);

    // The members take turns, each through its own broker process, whose copy of the group's
    // state is older than the other's store at every turn.
    let members = [(&on_a, token_a), (&on_b, token_b)];
    let mut delivered = std::collections::BTreeSet::new();
    let mut acknowledged = std::collections::BTreeSet::new();
    let (mut committed, mut refusals) = (0, 0);
    let started = Instant::now();
    while acknowledged.len() < TOTAL as usize {
        assert!(started.elapsed() < Duration::from_secs(60), "acknowledged {acknowledged:?}");
        for (socket, claim) in members {
            let fetch = Request::GroupFetch(protocol::GroupFetch {
                ordered: false,
                claim,
                group: "workers",
                topic: "work",
                max_messages: 3,
                max_bytes: protocol::DEFAULT_FETCH_BYTES,
                wait_ms: 0,
            });
            let (reply, refused) = ask_until_stored(socket, &fetch);
            refusals += refused;
            let Response::Delivered { messages, .. } = reply else {
                panic!("group_fetch: expected delivered, got {reply:?}");
            };
            let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
            for offset in &offsets {
                assert!(!acknowledged.contains(offset), "{offset} delivered after its ack");
                assert!(delivered.insert(*offset), "{offset} delivered twice");
            }
            if offsets.is_empty() {
                continue;
            }
            let ack = Request::Ack {
                group: "workers",
                topic: "work",
                partition: 0,
                offsets: offsets.clone(),
            };
            let (reply, refused) = ask_until_stored(socket, &ack);
            refusals += refused;
            let Response::Acked { acked, committed_offset, .. } = reply else {
                panic!("ack: expected acked, got {reply:?}");
            };
            if acked > 0 {
                assert!(
                    committed_offset >= committed,
                    "{committed} went back to {committed_offset}"
                );
                committed = committed_offset;
            }
            acknowledged.extend(offsets);
        }
    }
    // Each request made on an old copy was made again on the state the other process stored.
    assert_eq!(refusals, 0, "requests refused because the other process changed the group first");
    assert_eq!(committed, TOTAL);
    // A member joining afresh through either process starts after every acknowledgement.
    wire::release(&on_a, token_a);
    wire::release(&on_b, token_b);
    for socket in [&on_a, &on_b] {
        let (_, token) = claim_when_free_any(socket, "newcomer");
        assert_eq!(join_group(socket, token, "workers", "work"), TOTAL);
        wire::release(socket, token);
    }
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_cluster_of_three_keeps_every_acknowledged_append_when_the_streams_leader_is_killed() {
    let mut cluster = testkit::NatsCluster::start();
    let args = ["--store", &cluster.url(), "--replicas", "3"];
    let (a, b) = (wire::start(&args), wire::start(&args));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let mut acknowledged = Vec::new();
    let append_through = |socket: &zmq::Socket, value: String| match ask(
        socket,
        &append_of("replicated", &[&value]),
    ) {
        Response::Appended { first_offset, .. } => Ok((first_offset, value)),
        other => Err(other),
    };
    for n in 0..20 {
        let socket = if n % 2 == 0 { &on_a } else { &on_b };
        match append_through(socket, format!("before {n}")) {
            Ok(appended) => acknowledged.push(appended),
            Err(refusal) => panic!("append refused with the cluster whole: {refusal:?}"),
        }
    }
    assert_eq!(acknowledged.len(), 20);
    // The server that leads the topic's stream is killed: the others elect a new leader.
    let stream =
        format!("TOPIC_{}", "replicated".bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let leader = cluster.wait_for_stream_leader(&stream);
    println!("the stream's leader is n{}; killing it", leader + 1);
    cluster.servers[leader].kill();
    let killed = Instant::now();
    let (mut first_after, mut refused, mut n) = (None, 0, 0);
    while acknowledged.len() < 40 {
        let socket = if n % 2 == 0 { &on_a } else { &on_b };
        match append_through(socket, format!("after {n}")) {
            Ok(appended) => {
                acknowledged.push(appended);
                first_after.get_or_insert(killed.elapsed());
            }
            Err(refusal) => {
                // Refused within the client's timeout, as a state error, while no server leads.
                expect_error(&refusal, ErrorCode::StoreUnavailable);
                if refused == 0 {
                    println!("first refusal after the kill: {refusal:?}");
                }
                refused += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n += 1;
        assert!(killed.elapsed() < Duration::from_secs(30), "appends did not resume");
    }
    let first_after = first_after.unwrap_or_default();
    println!(
        "first acknowledged append {first_after:?} after the leader's death ({refused} refused \
         before it)"
    );
    let new_leader = cluster.wait_for_stream_leader(&stream);
    assert_ne!(new_leader, leader, "the killed server still leads the stream");
    acknowledged.sort();
    for socket in [&on_a, &on_b] {
        // The claims' bucket may be electing a new leader too: a client asks again.
        let asked = Instant::now();
        let token = loop {
            match claim_reply(socket, None, "reader") {
                Response::Claimed { claim, .. } => break claim,
                other => assert!(asked.elapsed() < Duration::from_secs(20), "{other:?}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let held = fetch_until(socket, token, "replicated", acknowledged.len());
        for (offset, value) in &acknowledged {
            assert!(held.contains(&(*offset, value.clone())), "{offset} {value} lost: {held:?}");
        }
    }
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_topic_whose_replicas_cannot_be_placed_is_refused_as_unavailable_and_nothing_is_made() {
    // Five replicas on three servers: JetStream says "no suitable peers for placement", as it
    // does while a cluster is starting. That passes by itself (servers may join): a state
    // error, `314` with nothing appended, which clients send again; not the broker's failure.
    let cluster = testkit::NatsCluster::start();
    let broker = wire::start(&["--store", &cluster.url(), "--replicas", "5"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let refused = ask(&socket, &append_of("wide", &["five copies"]));
    expect_error(&refused, ErrorCode::StoreUnavailable);
    let Response::Error { reason, .. } = &refused else { unreachable!() };
    assert!(reason.contains("no suitable peers"), "{reason}");
    assert!(reason.contains("nothing was appended"), "{reason}");
    // Claims are kept the same way, with as many replicas: refused alike.
    expect_error(&claim_reply(&socket, None, "reader"), ErrorCode::StoreUnavailable);
    drop(socket);
    broker.interrupt();
    // Nothing was made: a process keeping three replicas finds no topic.
    let other = wire::start(&["--store", &cluster.url(), "--replicas", "3"]);
    let socket = other.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    match ask(&socket, &Request::ListTopics { claim: Some(token) }) {
        Response::Topics { topics } => assert!(topics.is_empty(), "{topics:?}"),
        response => panic!("expected topics, got {response:?}"),
    }
    drop(socket);
    other.interrupt();
}

#[test]
fn appends_through_a_broker_whose_nats_server_is_paused_are_answered_all_through_the_pause() {
    let cluster = testkit::NatsCluster::start();
    let broker = wire::start(&["--store", &cluster.url(), "--replicas", "3"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    // Every append is answered within the client's timeout (`ask` fails otherwise).
    let append_one = |value: String| match ask(&socket, &append_of("paused", &[&value])) {
        Response::Appended { first_offset, .. } => Ok((first_offset, value)),
        other => Err(other),
    };
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        match append_one(format!("before {n}")) {
            Ok(appended) => acknowledged.push(appended),
            Err(refusal) => panic!("append refused with the cluster whole: {refusal:?}"),
        }
    }
    // The server this broker process is connected to stops answering, its sockets open.
    let name = format!("broker-{}", broker.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    let serving = loop {
        if let Some(at) = cluster.serving(&name) {
            break at;
        }
        assert!(Instant::now() < deadline, "no server lists the connection {name}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = cluster.servers[serving].pid().expect("the server runs");
    println!("{name} is connected to n{}; pausing it", serving + 1);
    testkit::signal_process(pid, "STOP");
    let paused = Instant::now();
    let (mut first_answer, mut first_ack, mut slowest) = (None, None, Duration::ZERO);
    let (mut answered, mut refused) = (0, 0);
    // Appends go on being answered while the server is paused: acknowledged through another
    // server of the cluster, or refused as a store that cannot be reached.
    while answered < 30 && acknowledged.len() < 30 {
        let asked = Instant::now();
        let outcome = append_one(format!("paused {answered}"));
        slowest = slowest.max(asked.elapsed());
        first_answer.get_or_insert(paused.elapsed());
        answered += 1;
        match outcome {
            Ok(appended) => {
                acknowledged.push(appended);
                first_ack.get_or_insert(paused.elapsed());
            }
            Err(refusal) => {
                expect_error(&refusal, ErrorCode::StoreUnavailable);
                refused += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let moved = cluster.serving(&name).filter(|&at| at != serving);
    println!(
        "paused n{}: first answer after {first_answer:?}, slowest {slowest:?}; {refused} of \
         {answered} refused; first acknowledged append after {first_ack:?}; now on {}",
        serving + 1,
        moved.map_or("no other server".to_owned(), |at| format!("n{}", at + 1)),
    );
    testkit::signal_process(pid, "CONT");
    let resumed = Instant::now();
    loop {
        if let Ok(appended) = append_one(format!("after {}", acknowledged.len())) {
            acknowledged.push(appended);
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(30), "appends did not go on");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing acknowledged is lost, and each is where its acknowledgement said.
    let token = loop {
        match claim_reply(&socket, None, "reader") {
            Response::Claimed { claim, .. } => break claim,
            other => assert!(resumed.elapsed() < Duration::from_secs(30), "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let held = fetch_until(&socket, token, "paused", acknowledged.len());
    for (offset, value) in &acknowledged {
        assert!(held.contains(&(*offset, value.clone())), "{offset} {value} lost: {held:?}");
    }
    let stopped = Instant::now();
    broker.interrupt();
    println!("the broker stopped in {:?}", stopped.elapsed());
}

/// How long appends through a broker process may go unacknowledged after its NATS server is
/// paused, with two servers of three left: the silence noticed (`SILENCE`, 1.5 s), a connection
/// made to another server (1 s each, a paused one drawn included), when the paused server led
/// the stream an election (up to 8 s), and the wait of an append sent meanwhile until it is
/// refused (3 s). A paused server is never let go on within it.
const MOVED_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn a_broker_whose_nats_server_is_paused_appends_through_the_others_each_time() {
    let cluster = testkit::NatsCluster::start();
    let broker = wire::start(&["--store", &cluster.url(), "--replicas", "3"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let name = format!("broker-{}", broker.pid());
    let mut acknowledged = Vec::new();
    let (first, _) = append(&socket, "moving", &["before"]);
    acknowledged.push((first, "before".to_owned()));
    let stream =
        format!("TOPIC_{}", "moving".bytes().map(|b| format!("{b:02x}")).collect::<String>());
    // Paused again and again, so that the reconnection draws the paused server from its
    // shuffled list in some rounds (once in three): it must move on from it.
    for round in 0..5 {
        let found = Instant::now();
        let serving = loop {
            if let Some(at) = cluster.serving(&name) {
                break at;
            }
            assert!(found.elapsed() < MOVED_WITHIN, "round {round}: no server lists {name}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let pid = cluster.servers[serving].pid().expect("the server runs");
        let led = cluster.stream_leader(&stream) == Some(serving);
        testkit::signal_process(pid, "STOP");
        let paused = Instant::now();
        let mut refused = 0;
        loop {
            let value = format!("round {round} try {refused}");
            match ask(&socket, &append_of("moving", &[&value])) {
                Response::Appended { first_offset, .. } => {
                    acknowledged.push((first_offset, value));
                    break;
                }
                // Refused as a store out of reach while the connection moves.
                refusal => expect_error(&refusal, ErrorCode::StoreUnavailable),
            };
            refused += 1;
            assert!(
                paused.elapsed() < MOVED_WITHIN,
                "round {round}: no append acknowledged {MOVED_WITHIN:?} into n{}'s pause \
                 ({refused} refused); the broker is on {:?}",
                serving + 1,
                cluster.serving(&name).map(|at| at + 1)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let moved = paused.elapsed();
        let now_on = cluster.serving(&name).map_or("none".to_owned(), |at| format!("n{}", at + 1));
        testkit::signal_process(pid, "CONT");
        println!(
            "round {round}: n{} paused{}, an append acknowledged after {moved:?} ({refused} \
             refused), the broker on {now_on}",
            serving + 1,
            if led { " (it led the stream)" } else { "" }
        );
        // Every server current again before the next pause, so that two are left for it.
        cluster.wait_for_leader();
    }
    // Each acknowledged append is where its acknowledgement said.
    let asked = Instant::now();
    let token = loop {
        match claim_reply(&socket, None, "reader") {
            Response::Claimed { claim, .. } => break claim,
            other => assert!(asked.elapsed() < MOVED_WITHIN, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let held = fetch_until(&socket, token, "moving", acknowledged.len());
    for (offset, value) in &acknowledged {
        assert!(held.contains(&(*offset, value.clone())), "{offset} {value} lost: {held:?}");
    }
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_broker_stops_on_sigterm_while_its_nats_server_is_paused() {
    let server = NatsServer::start();
    let broker = start_on(&server);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "t", &["before"]);
    // A claim held here, which the stop gives back in JetStream if it can.
    claim(&socket, None, "holder");
    let pid = server.pid().expect("the server runs");
    testkit::signal_process(pid, "STOP");
    // Once the broker took the connection for lost, it is making it again, to the only
    // server there is: appends are refused at once, saying that nothing was appended.
    let paused = Instant::now();
    loop {
        let reply = ask(&socket, &append_of("t", &["paused"]));
        if matches!(&reply, Response::Error { reason, .. } if reason.contains("nothing was appended"))
        {
            break;
        }
        assert!(paused.elapsed() < Duration::from_secs(20), "still connected: {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked = Instant::now();
    broker.signal("TERM");
    let (status, stderr) = broker.wait_exit(testkit::STEP);
    let took = asked.elapsed();
    testkit::signal_process(pid, "CONT");
    assert!(status.success(), "broker exited with {status}; stderr:\n{stderr}");
    println!("the broker stopped {took:?} after SIGTERM with its NATS server paused");
}

#[test]
fn a_broker_started_with_a_fresh_cluster_waits_for_its_leader_and_appends_once_it_can() {
    // As the README's three-node example run as a script: the servers, then at once a broker
    // keeping three copies of each topic, then an append.
    let cluster = testkit::NatsCluster::start_unled();
    let broker = wire::start(&["--store", &cluster.url(), "--replicas", "3"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    // Until the cluster can place three copies, the append is refused as unavailable with
    // nothing appended (JetStream's "no suitable peers for placement" passes), never 502.
    let asked = Instant::now();
    let mut refusals = Vec::new();
    let offset = loop {
        match ask(&socket, &append_of("placed", &["first"])) {
            Response::Appended { first_offset, .. } => break first_offset,
            other => {
                expect_error(&other, ErrorCode::StoreUnavailable);
                assert!(format!("{other:?}").contains("nothing was appended"), "{other:?}");
                assert!(asked.elapsed() < Duration::from_secs(30), "never placed: {other:?}");
                refusals.push(other);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "appended after {:?}, {} refused first: {:?}",
        asked.elapsed(),
        refusals.len(),
        refusals.first()
    );
    assert_eq!(offset, 0, "a refused append stored nothing");
    broker.interrupt();
}

#[test]
fn groups_stored_through_one_process_are_listed_through_another_that_never_read_them() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    append(&on_a, "listed", &["one", "two", "three"]);
    let (_, token) = claim(&on_a, None, "reader");
    join_group(&on_a, token, "readers", "listed");
    let (taken, _) = group_take(&on_a, token, "readers", "listed", 2);
    assert_eq!(taken, [0, 1]);
    let offsets = vec![0, 1];
    let acked =
        ask(&on_a, &Request::Ack { group: "readers", topic: "listed", offsets, partition: 0 });
    assert!(matches!(acked, Response::Acked { committed_offset: 2, .. }), "{acked:?}");
    // B never served the group: it lists it as stored, by name and in full.
    for group in [Some("readers"), None] {
        let listed = ask(&on_b, &Request::ListGroups { group, topic: None });
        let Response::Groups { groups } = &listed else { panic!("{listed:?}") };
        let found: Vec<_> = groups
            .iter()
            .map(|g| (g.group.as_str(), g.topic.as_str(), g.committed_offset))
            .collect();
        assert_eq!(found, [("readers", "listed", 2)], "{group:?}");
    }
    a.interrupt();
    b.interrupt();
}

/// The files in `dir`, sorted (none when it does not exist).
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.expect("an entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The directory of `topic`'s copy under `copy_dir` (`copies/topics/`, named after the topic,
/// then a hash).
fn copy_of(copy_dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    let prefix = format!("{topic}-");
    files_in(&copy_dir.join("copies").join("topics"))
        .into_iter()
        .find(|dir| dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no copy of {topic} in {}", copy_dir.display()))
}

/// The segment files of `topic`'s copy under `copy_dir`.
fn copy_segments(copy_dir: &std::path::Path, topic: &str) -> Vec<std::path::PathBuf> {
    let mut files = files_in(&copy_of(copy_dir, topic));
    files.retain(|path| path.extension().is_some_and(|e| e == "log"));
    files
}

/// What `list_topics` says of `topic`: its message count and its bytes on disk.
fn listed(socket: &zmq::Socket, token: u64, topic: &str) -> (u64, Option<u64>) {
    match ask(socket, &Request::ListTopics { claim: Some(token) }) {
        Response::Topics { topics } => topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| (t.messages, t.disk_bytes))
            .unwrap_or_else(|| panic!("{topic} is not listed: {topics:?}")),
        other => panic!("expected topics, got {other:?}"),
    }
}

#[test]
fn with_copy_dir_a_topics_copy_is_kept_in_files_resumed_after_a_clean_stop_and_read_again_else() {
    let server = NatsServer::start();
    let copy_dir = tempfile::tempdir().expect("a temporary directory");
    let path = copy_dir.path().to_str().expect("a UTF-8 path");
    let args = ["--store", &server.url(), "--copy-dir", path, "--segment-bytes", "4096"];
    let values: Vec<String> =
        (0..300).map(|i| format!("value {i:03} {}", "x".repeat(40))).collect();
    let expected: Vec<(u64, String)> =
        values.iter().cloned().enumerate().map(|(i, v)| (i as u64, v)).collect();

    let broker = wire::start(&args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for chunk in values.chunks(50) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        append(&socket, "orders", &chunk);
    }
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(fetch_until(&socket, token, "orders", 300), expected);
    // 300 records of about 70 bytes fill several segments of 4 KiB, sealed in files.
    assert!(copy_segments(copy_dir.path(), "orders").len() >= 4, "too few segment files");
    let (messages, disk_bytes) = listed(&socket, token, "orders");
    assert_eq!(messages, 300);
    // At least the values' 50 bytes each are in the files (batches of 50 add little more).
    assert!(disk_bytes.is_some_and(|bytes| bytes > 300 * 50), "{disk_bytes:?}");
    drop(socket);
    broker.interrupt();

    // After a clean stop the copy is resumed where it ends, and follows the stream from there.
    let broker = wire::start(&args);
    let socket = broker.req(&context);
    append(&socket, "orders", &["after the restart"]);
    let (_, token) = claim(&socket, None, "reader");
    let read = fetch_until(&socket, token, "orders", 301);
    assert_eq!(read[..300], expected[..]);
    assert_eq!(read[300], (300, "after the restart".to_owned()));
    drop(socket);
    let stderr = broker.interrupt();
    assert!(stderr.contains("copy resumed"), "{stderr}");

    // A topic deleted and made again while this process was stopped: the copy kept is not the
    // stream's, and is read again.
    let other = start_on(&server);
    let on_other = other.req(&context);
    let deleted = ask(&on_other, &Request::DeleteTopic { topic: "orders" });
    assert!(matches!(deleted, Response::Deleted { .. }), "{deleted:?}");
    append(&on_other, "orders", &["new one", "new two"]);
    drop(on_other);
    other.interrupt();
    let broker = wire::start(&args);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    let fresh = [(0, "new one".to_owned()), (1, "new two".to_owned())];
    assert_eq!(fetch_until(&socket, token, "orders", 2), fresh);
    drop(socket);
    // Killed: its copies' files were not flushed, so the next start reads them again.
    broker.kill();
    let broker = wire::start(&args);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(fetch_until(&socket, token, "orders", 2), fresh);
    drop(socket);
    let stderr = broker.interrupt();
    assert!(!stderr.contains("copy resumed"), "{stderr}");

    // Without --copy-dir the copy is in memory: no bytes on disk.
    let broker = start_on(&server);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "reader");
    assert_eq!(fetch_until(&socket, token, "orders", 2), fresh);
    assert_eq!(listed(&socket, token, "orders"), (2, None));
    drop(socket);
    broker.interrupt();
}

/// Appends `values` to partition `partition` of `topic`.
fn append_to_partition(socket: &zmq::Socket, topic: &str, partition: u32, values: &[&str]) {
    let messages = values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
    let request = Request::Append(protocol::Append {
        topic,
        messages,
        partition: Some(partition),
        sequenced: None,
    });
    let reply = ask(socket, &request);
    assert!(
        matches!(reply, Response::Appended { partition: p, .. } if p == partition),
        "{reply:?}"
    );
}

/// Fetches partition `partition` of `topic` from 0 until it holds `count` messages, for at
/// most ten seconds; returns their values.
fn fetch_partition_until(
    socket: &zmq::Socket,
    token: u64,
    topic: &str,
    partition: u32,
    count: usize,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fetch = protocol::Fetch { partition, ..fetch_from(token, topic, 0) };
        let reply = ask(socket, &Request::Fetch(fetch));
        if let Response::Messages { messages, .. } = &reply {
            if messages.len() >= count {
                return messages.iter().map(|m| String::from_utf8_lossy(m.value).into()).collect();
            }
        }
        assert!(Instant::now() < deadline, "{topic}/{partition} has not {count}: {reply:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn partitions_are_streams_other_brokers_follow_and_copies_of_each_are_resumed() {
    let server = NatsServer::start();
    let copy_dir = tempfile::tempdir().expect("a temporary directory");
    let path = copy_dir.path().to_str().expect("a UTF-8 path");
    let args = ["--store", &server.url(), "--copy-dir", path];
    let (a, b) = (wire::start(&args), start_on(&server));
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let create = Request::CreateTopic {
        topic: "orders",
        partitions: Some(2),
        retention: Default::default(),
    };
    assert!(matches!(ask(&on_a, &create), Response::Created { partitions: 2, .. }));
    append_to_partition(&on_a, "orders", 0, &["zero"]);
    append_to_partition(&on_a, "orders", 1, &["one a", "one b"]);
    let (_, token_b) = claim(&on_b, None, "reader");
    assert_eq!(fetch_partition_until(&on_b, token_b, "orders", 1, 2), ["one a", "one b"]);

    // Grown through b, the new partition is served by a too.
    let grow = Request::CreatePartitions { topic: "orders", partitions: 3 };
    assert!(matches!(ask(&on_b, &grow), Response::PartitionsCreated { partitions: 3, .. }));
    append_to_partition(&on_b, "orders", 2, &["two"]);
    let (_, token_a) = claim(&on_a, None, "reader");
    assert_eq!(fetch_partition_until(&on_a, token_a, "orders", 2, 1), ["two"]);
    drop(on_a);

    // a's copies of every partition are kept in files, and resumed after a clean stop.
    let stderr = a.interrupt();
    assert!(!stderr.contains("copy resumed"), "{stderr}");
    assert!(copy_dir.path().join("copies/partitions/2/topics").is_dir());
    append_to_partition(&on_b, "orders", 1, &["one c"]);
    let a = wire::start(&args);
    let on_a = a.req(&context);
    let (_, token_a) = claim(&on_a, None, "reader");
    assert_eq!(fetch_partition_until(&on_a, token_a, "orders", 1, 3), ["one a", "one b", "one c"]);
    assert_eq!(fetch_partition_until(&on_a, token_a, "orders", 2, 1), ["two"]);
    drop(on_a);
    let stderr = a.interrupt();
    assert_eq!(stderr.matches("copy resumed").count(), 3, "{stderr}");
    drop(on_b);
    b.interrupt();
}

/// Each partition's (committed, delivered, pending) of `group` on `topic`, as `list_groups`
/// through `socket` shows them, partition 0 first.
fn group_offsets(socket: &zmq::Socket, group: &str, topic: &str) -> Vec<(u32, u64, u64, u64)> {
    let listed = ask(socket, &Request::ListGroups { group: Some(group), topic: Some(topic) });
    let groups = match listed {
        Response::Groups { groups } => groups,
        Response::Error { code: ErrorCode::UnknownGroup, .. } => Vec::new(),
        other => panic!("list_groups: {other:?}"),
    };
    let mut offsets: Vec<(u32, u64, u64, u64)> = groups
        .iter()
        .map(|g| (g.partition, g.committed_offset, g.delivered_offset, g.pending))
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Stores `value` under `key` in the groups' key-value bucket of the JetStream at `url`, as
/// another program (or an older broker) would, bypassing the broker.
fn put_in_groups_bucket(url: &str, key: &str, value: Vec<u8>) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let put = async {
            let client = async_nats::connect(url).await.expect("a connection to NATS");
            let jetstream = async_nats::jetstream::new(client);
            let bucket = jetstream.get_key_value("broker_groups").await.expect("the bucket");
            bucket.put(key, value.into()).await.expect("the record stored");
        };
        tokio::time::timeout(Duration::from_secs(10), put).await.expect("NATS answered in time");
    });
}

/// `text`'s bytes in lowercase hex, as the groups bucket's keys spell names.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_group_record_of_the_older_layout_is_read_and_gone_on_from_without_moving_back() {
    #[derive(serde::Serialize)]
    struct Part {
        delivered: u64,
        pending: Vec<u64>,
    }
    /// The whole record brokers before partitions had keys of their own stored.
    #[derive(serde::Serialize)]
    struct Record {
        group: &'static str,
        topic: &'static str,
        delivered: u64,
        pending: Vec<u64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        more: Vec<Part>,
    }
    let server = NatsServer::start();
    let a = start_on(&server);
    let context = zmq::Context::new();
    let on_a = a.req(&context);
    let create = Request::CreateTopic {
        topic: "ledger",
        partitions: Some(3),
        retention: Default::default(),
    };
    assert!(matches!(ask(&on_a, &create), Response::Created { partitions: 3, .. }));
    let values: Vec<String> = (0..6).map(|n| format!("v{n}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    for partition in 0..3 {
        append_to_partition(&on_a, "ledger", partition, &values);
    }
    // Partition 0: 0 to 3 delivered, 2 not acknowledged; partition 1: 0 to 4 acknowledged;
    // partition 2: nothing delivered.
    let record = Record {
        group: "elders",
        topic: "ledger",
        delivered: 4,
        pending: vec![2],
        more: vec![
            Part { delivered: 5, pending: Vec::new() },
            Part { delivered: 0, pending: Vec::new() },
        ],
    };
    let mut value = vec![0xc1, 2];
    value.extend(rmp_serde::to_vec_named(&record).expect("encoded"));
    put_in_groups_bucket(&server.url(), &format!("g.{}.{}", hex("elders"), hex("ledger")), value);
    // A record of format 1, from before partitions: partition 0's offsets alone.
    let first =
        Record { group: "pioneers", delivered: 3, pending: Vec::new(), more: Vec::new(), ..record };
    let mut value = vec![0xc1, 1];
    value.extend(rmp_serde::to_vec_named(&first).expect("encoded"));
    put_in_groups_bucket(&server.url(), &format!("g.{}.{}", hex("pioneers"), hex("ledger")), value);

    // A process started after it reads it: its listing, and a member's deliveries.
    let b = start_on(&server);
    let on_b = b.req(&context);
    let was = [(0, 2, 4, 1), (1, 5, 5, 0), (2, 0, 0, 0)];
    assert_eq!(group_offsets(&on_b, "elders", "ledger"), was);
    assert_eq!(group_offsets(&on_b, "pioneers", "ledger"), [(0, 3, 3, 0)]);
    let (_, token) = claim(&on_b, None, "member");
    for partition in 0..3 {
        fetch_partition_until(&on_b, token, "ledger", partition, 6);
    }
    assert_eq!(join_group(&on_b, token, "elders", "ledger"), 2, "partition 0's committed offset");
    let mut delivered = std::collections::BTreeSet::new();
    loop {
        let request = Request::GroupFetch(protocol::GroupFetch {
            ordered: false,
            claim: token,
            group: "elders",
            topic: "ledger",
            max_messages: 10,
            max_bytes: protocol::DEFAULT_FETCH_BYTES,
            wait_ms: 0,
        });
        let reply = ask(&on_b, &request);
        let Response::Delivered { messages, partition, .. } = &reply else { panic!("{reply:?}") };
        if messages.is_empty() {
            break;
        }
        for message in messages {
            assert!(
                delivered.insert((*partition, message.offset)),
                "{partition}/{} twice",
                message.offset
            );
        }
    }
    let expected: std::collections::BTreeSet<(u32, u64)> =
        [(0, 4), (0, 5), (1, 5)].into_iter().chain((0..6).map(|offset| (2, offset))).collect();
    assert_eq!(delivered, expected, "only what the record says was never delivered");
    // Acknowledging everything, 2 of partition 0 included, commits every partition to 6.
    for partition in 0..3u32 {
        let mut offsets: Vec<u64> =
            delivered.iter().filter(|(p, _)| *p == partition).map(|(_, o)| *o).collect();
        if partition == 0 {
            offsets.insert(0, 2);
        }
        let ack = Request::Ack { group: "elders", topic: "ledger", partition, offsets };
        let acked = ask(&on_b, &ack);
        assert!(matches!(acked, Response::Acked { committed_offset: 6, .. }), "{acked:?}");
    }
    // Through a third process, fresh, and through the first: nothing moved back.
    let c = start_on(&server);
    let on_c = c.req(&context);
    let now = [(0, 6, 6, 0), (1, 6, 6, 0), (2, 6, 6, 0)];
    assert_eq!(group_offsets(&on_c, "elders", "ledger"), now);
    let (_, token_c) = claim(&on_c, None, "member on c");
    assert_eq!(join_group(&on_c, token_c, "elders", "ledger"), 6);
    assert_eq!(group_offsets(&on_c, "elders", "ledger"), now);
    // Deleting the group removes the record and the partitions' own keys: a process that
    // never held it lists nothing.
    wire::release(&on_b, token);
    wire::release(&on_c, token_c);
    let deleted =
        ask(&on_c, &Request::DeleteGroup { group: "elders", topic: None, partition: None });
    assert!(matches!(deleted, Response::GroupDeleted { .. }), "{deleted:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = start_on(&server);
        let on_d = d.req(&context);
        let left = group_offsets(&on_d, "elders", "ledger");
        d.interrupt();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still stored after its deletion: {left:?}");
    }
    a.interrupt();
    b.interrupt();
    c.interrupt();
}

/// The value of the counter `sample` (name and labels, as the exposition writes them) on the
/// broker's metrics page at `url`; `None` when the page does not show it.
fn metric(url: &str, sample: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let address = url.strip_prefix("http://")?.split('/').next()?;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines().find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

/// Starts a broker on `server`'s JetStream with its metrics on; the broker and its metrics
/// page's address.
fn start_with_metrics(server: &NatsServer) -> (BrokerProcess, String) {
    let broker = wire::start(&["--store", &server.url(), "--metrics-listen", "127.0.0.1:0"]);
    let line = broker.stdout_line(Duration::from_secs(10)).expect("the metrics line");
    let url = line.strip_prefix("metrics on ").expect("metrics on http://...").to_owned();
    (broker, url)
}

/// Waits until the metrics page at `url` shows `count` requests of kind `op`, then returns how
/// many group requests it says were made again.
fn made_again_after(url: &str, op: &str, count: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let requests = format!("broker_requests_total{{op=\"{op}\"}}");
    while metric(url, &requests) < Some(count as f64) {
        assert!(Instant::now() < deadline, "{url} never showed {count} {op} requests");
        std::thread::sleep(Duration::from_millis(100));
    }
    metric(url, "broker_group_requests_made_again_total").expect("the made-again counter")
}

#[test]
fn members_on_two_processes_changing_different_partitions_never_make_each_others_requests_again() {
    let server = NatsServer::start();
    let (a, metrics_a) = start_with_metrics(&server);
    let (b, metrics_b) = start_with_metrics(&server);
    let context = zmq::Context::new();
    let (on_a, on_b) = (a.req(&context), b.req(&context));
    let create = Request::CreateTopic {
        topic: "spread",
        partitions: Some(6),
        retention: Default::default(),
    };
    assert!(matches!(ask(&on_a, &create), Response::Created { partitions: 6, .. }));
    const EACH: usize = 12;
    let values: Vec<String> = (0..EACH).map(|n| format!("m{n}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    // Partitions 0 to 2 are A's member's: it takes all they hold through A.
    for partition in 0..3 {
        append_to_partition(&on_a, "spread", partition, &values);
    }
    let (_, token_a) = claim(&on_a, None, "member on a");
    let (_, token_b) = claim(&on_b, None, "member on b");
    join_group(&on_a, token_a, "split", "spread");
    let fetch = |claim| {
        Request::GroupFetch(protocol::GroupFetch {
            ordered: false,
            claim,
            group: "split",
            topic: "spread",
            max_messages: 3,
            max_bytes: protocol::DEFAULT_FETCH_BYTES,
            wait_ms: 0,
        })
    };
    let mut taken_a: Vec<(u32, u64)> = Vec::new();
    let mut fetches_a = 0;
    while taken_a.len() < 3 * EACH {
        fetches_a += 1;
        assert!(fetches_a < 100, "A's member took {taken_a:?}");
        let reply = ask(&on_a, &fetch(token_a));
        let Response::Delivered { messages, partition, .. } = &reply else { panic!("{reply:?}") };
        taken_a.extend(messages.iter().map(|m| (*partition, m.offset)));
    }
    // B's member joins, taking the state stored; then partitions 3 to 5 get their messages.
    for partition in 3..6 {
        append_to_partition(&on_a, "spread", partition, &values);
    }
    for partition in 0..6 {
        fetch_partition_until(&on_b, token_b, "spread", partition, EACH);
    }
    join_group(&on_b, token_b, "split", "spread");
    // A's member acknowledges partitions 0 to 2 while B's member takes and acknowledges
    // partitions 3 to 5, turn by turn: each process's copy of the other's partitions is old
    // at every turn, and neither ever changes the other's.
    let (mut acks_a, mut acks_b, mut fetches_b) = (0, 0, 0);
    let mut taken_b: Vec<(u32, u64)> = Vec::new();
    let mut to_ack = taken_a.clone();
    while taken_b.len() < 3 * EACH || !to_ack.is_empty() {
        assert!(fetches_b < 100, "B's member took {taken_b:?}");
        if let Some((partition, offset)) = to_ack.pop() {
            let ack =
                Request::Ack { group: "split", topic: "spread", partition, offsets: vec![offset] };
            let acked = ask(&on_a, &ack);
            assert!(matches!(acked, Response::Acked { acked: 1, .. }), "{acked:?}");
            acks_a += 1;
        }
        if taken_b.len() < 3 * EACH {
            fetches_b += 1;
            let reply = ask(&on_b, &fetch(token_b));
            let Response::Delivered { messages, partition, .. } = &reply else {
                panic!("{reply:?}")
            };
            assert!(messages.is_empty() || *partition >= 3, "B took from partition {partition}");
            let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
            taken_b.extend(offsets.iter().map(|&o| (*partition, o)));
            if !offsets.is_empty() {
                let ack = Request::Ack {
                    group: "split",
                    topic: "spread",
                    partition: *partition,
                    offsets,
                };
                let acked = ask(&on_b, &ack);
                assert!(matches!(acked, Response::Acked { .. }), "{acked:?}");
                acks_b += 1;
            }
        }
    }
    assert_eq!(made_again_after(&metrics_a, "ack", acks_a), 0.0, "A made requests again");
    assert_eq!(made_again_after(&metrics_b, "ack", acks_b), 0.0, "B made requests again");
    // Every partition is committed to its end: a join through A takes what B stored.
    join_group(&on_a, token_a, "split", "spread");
    let offsets = group_offsets(&on_a, "split", "spread");
    let committed: Vec<(u32, u64)> = offsets.iter().map(|o| (o.0, o.1)).collect();
    assert_eq!(committed, (0..6).map(|p| (p, EACH as u64)).collect::<Vec<_>>(), "{offsets:?}");
    a.interrupt();
    b.interrupt();
}

/// An idempotent producer's append of `values` to `topic`, marked `sequence`, through
/// `socket`: its reply's partition and offsets.
fn append_marked(
    socket: &zmq::Socket,
    topic: &str,
    sequence: u64,
    values: &[&str],
) -> (u32, u64, u64) {
    let messages = values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
    let sequenced = Some(protocol::Sequenced { producer: 0xfeed_beef_0000_0001, sequence });
    let request = Request::Append(protocol::Append { topic, messages, partition: None, sequenced });
    match ask(socket, &request) {
        Response::Appended { partition, first_offset, last_offset, .. } => {
            (partition, first_offset, last_offset)
        }
        other => panic!("append {sequence} refused: {other:?}"),
    }
}

/// Sends an idempotent producer's appends, and sends them again through either process, in
/// turn, after later ones: each is answered with its first offsets, and stored once.
fn resends_through_either_process_are_stored_once(on_a: &zmq::Socket, on_b: &zmq::Socket) {
    let create = Request::CreateTopic {
        topic: "paid",
        partitions: Some(3),
        retention: protocol::Retention::default(),
    };
    assert!(matches!(ask(on_a, &create), Response::Created { .. }));
    let first = append_marked(on_a, "paid", 1, &["a", "b", "c"]);
    assert_eq!(
        first.0,
        ((0xfeed_beef_0000_0001_u64 + 1) % 3) as u32,
        "(producer + sequence) mod 3"
    );
    assert_eq!(append_marked(on_a, "paid", 1, &["a", "b", "c"]), first, "again, the same process");
    assert_eq!(append_marked(on_b, "paid", 1, &["a", "b", "c"]), first, "through the other");
    // The next sequence goes to the next partition; a later one to the first's again.
    let second = append_marked(on_b, "paid", 2, &["d"]);
    let fourth = append_marked(on_b, "paid", 4, &["e"]);
    assert_eq!((second.0, fourth.0), ((first.0 + 1) % 3, first.0));
    assert_eq!(fourth.1, first.2 + 1, "after the first, stored once");
    // After later appends to its partition, through either process.
    assert_eq!(append_marked(on_a, "paid", 1, &["a", "b", "c"]), first, "after later ones");
    assert_eq!(append_marked(on_b, "paid", 1, &["a", "b", "c"]), first);
    assert_eq!(append_marked(on_a, "paid", 4, &["e"]), fourth);
    assert_eq!(append_marked(on_a, "paid", 2, &["d"]), second);
    // A last append through A: once A reads it, it has read every copy stored before it.
    let last = append_marked(on_a, "paid", 7, &["f"]);
    assert_eq!(last.0, first.0);
    let (_, token) = claim(on_a, None, "reader");
    let held = fetch_partition_until(on_a, token, "paid", first.0, 5);
    assert_eq!(held, ["a", "b", "c", "e", "f"], "each once");
    assert_eq!(fetch_partition_until(on_a, token, "paid", second.0, 1), ["d"]);
}

#[test]
fn an_idempotent_append_sent_again_through_either_process_is_stored_once() {
    let server = NatsServer::start();
    let (a, b) = (start_on(&server), start_on(&server));
    let context = zmq::Context::new();
    resends_through_either_process_are_stored_once(&a.req(&context), &b.req(&context));
    a.interrupt();
    b.interrupt();
}

#[test]
fn on_a_cluster_an_idempotent_append_sent_again_through_either_process_is_stored_once() {
    let cluster = testkit::NatsCluster::start();
    let args = ["--store", &cluster.url(), "--replicas", "3"];
    let (a, b) = (wire::start(&args), wire::start(&args));
    let context = zmq::Context::new();
    resends_through_either_process_are_stored_once(&a.req(&context), &b.req(&context));
    a.interrupt();
    b.interrupt();
}

#[test]
fn a_topics_partitions_on_a_cluster_are_led_by_every_server_in_turn() {
    let cluster = testkit::NatsCluster::start();
    let args = ["--store", &cluster.url(), "--replicas", "3"];
    let broker = wire::start(&args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let create = Request::CreateTopic {
        topic: "spread",
        partitions: Some(6),
        retention: protocol::Retention::default(),
    };
    assert!(matches!(ask(&socket, &create), Response::Created { .. }));
    // JetStream elects each stream's leader by itself; the broker asks those of a server that
    // leads more than its share to step down for a server that leads fewer: two each.
    let streams: Vec<String> = (0..6)
        .map(|p| {
            let hex: String = "spread".bytes().map(|b| format!("{b:02x}")).collect();
            if p == 0 {
                format!("TOPIC_{hex}")
            } else {
                format!("TOPIC_{hex}_{p}")
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let led = loop {
        let leaders: Vec<Option<usize>> =
            streams.iter().map(|s| cluster.stream_leader(s)).collect();
        let count = |server| leaders.iter().filter(|l| **l == Some(server)).count();
        if (0..3).all(|server| count(server) == 2) {
            break leaders;
        }
        assert!(Instant::now() < deadline, "leaders not spread: {leaders:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("the six partitions' leaders: {led:?}");
    // Each partition takes appends and serves them after its leader moved.
    for partition in 0..6 {
        append_to_partition(&socket, "spread", partition, &["after"]);
    }
    let (_, token) = claim(&socket, None, "reader");
    for partition in 0..6 {
        assert_eq!(fetch_partition_until(&socket, token, "spread", partition, 1), ["after"]);
    }
    broker.interrupt();
}
