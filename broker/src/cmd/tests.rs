//! The timing rules of the commands, with made-up instants instead of real waits: leases,
//! held fetches and claims and their deadlines, ack timeouts and the wake-up of held group
//! fetches. The integration tests in `broker/tests/` show each rule once end to end; these check
//! the rules to the millisecond.

use std::time::{Duration, Instant};

use protocol::{
    Append, ErrorCode, Fetch, GroupFetch, GroupStart, NewMessage, Request, Response, MAX_WAIT_MS,
};

use super::{apply, fetch, group_fetch, Context, Outcome};
use crate::store::{Budget, Store, StoreConfig};
use crate::waiting::{HeldFetch, HeldGroupFetch, Waiting, WaitingClaim};
use crate::{Broker, Config};

const LEASE: Duration = Duration::from_secs(30);
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

fn broker() -> Broker {
    let config = Config { lease: LEASE, group_ack_timeout: ACK_TIMEOUT, ..Config::default() };
    Broker::new(Store::in_memory(StoreConfig::default()), &config)
}

fn at(now: Instant) -> Context<'static> {
    Context { now, now_ms: 1_700_000_000_000, peer: "tcp://127.0.0.1:1" }
}

/// The reply of a request that is answered at once; panics if it is held.
#[track_caller]
fn reply<'a>(outcome: Outcome<'a>) -> Response<'a> {
    match outcome {
        Outcome::Reply(response) => response,
        held => panic!("expected a reply now, got {held:?}"),
    }
}

#[track_caller]
fn expect_error(response: &Response<'_>, code: ErrorCode) {
    assert!(matches!(response, Response::Error { code: c, .. } if *c == code), "{response:?}");
}

/// Claims broker `wanted` (or any) at `now`; returns its id and the token.
#[track_caller]
fn claim(broker: &mut Broker, wanted: Option<u32>, now: Instant) -> (u32, u64) {
    let request = Request::Claim { broker: wanted, wait_ms: 0, client: Some("c") };
    match reply(apply(request, broker, &at(now))) {
        Response::Claimed { broker, claim, .. } => (broker, claim),
        other => panic!("expected claimed, got {other:?}"),
    }
}

/// Appends `count` messages to `topic` and commits, as one pass of the server would.
fn append(broker: &mut Broker, topic: &str, count: usize, now: Instant) {
    let messages = vec![NewMessage::new(None, b"m"); count];
    let request = Request::Append(Append { topic, messages, partition: None, sequenced: None });
    assert!(matches!(reply(apply(request, broker, &at(now))), Response::Appended { .. }));
    assert!(broker.store.commit_and_wait(now, at(now).now_ms).is_empty());
}

/// A broker whose topic `t` holds `messages` messages, and the claims of two members of group
/// `g` on it, both reading from the earliest offset; all at `now`.
fn two_members(messages: usize, now: Instant) -> (Broker, u64, u64) {
    let mut broker = broker();
    append(&mut broker, "t", messages, now);
    let (_, a) = claim(&mut broker, None, now);
    let (_, b) = claim(&mut broker, None, now);
    for claim in [a, b] {
        let (group, topic, start) = ("g", "t", GroupStart::Earliest);
        let request = Request::JoinGroup { claim, group, topic, start };
        assert!(matches!(reply(apply(request, &mut broker, &at(now))), Response::Joined { .. }));
    }
    (broker, a, b)
}

fn fetch_at_end(claim: u64, wait_ms: u64) -> Request<'static> {
    let topic = "t";
    Request::Fetch(Fetch {
        claim,
        topic,
        partition: 0,
        offset: 3,
        max_messages: 10,
        max_bytes: 1 << 20,
        wait_ms,
        batches: false,
    })
}

fn group_fetch_of(claim: u64, wait_ms: u64) -> Request<'static> {
    let (group, topic) = ("g", "t");
    Request::GroupFetch(GroupFetch {
        claim,
        group,
        topic,
        max_messages: 10,
        max_bytes: 1 << 20,
        wait_ms,
        ordered: false,
    })
}

/// The offsets a group fetch delivered and redelivered; panics if it is held or refused.
#[track_caller]
fn delivered(outcome: Outcome<'_>) -> (Vec<u64>, Vec<u64>) {
    match reply(outcome) {
        Response::Delivered { messages, redelivered, .. } => {
            (messages.iter().map(|m| m.offset).collect(), redelivered)
        }
        other => panic!("expected delivered, got {other:?}"),
    }
}

#[test]
fn a_lease_runs_out_a_lease_after_the_last_request_and_its_token_is_forgotten() {
    let t0 = Instant::now();
    let mut broker = broker();
    let (id, token) = claim(&mut broker, None, t0);
    assert!(broker.brokers.expire(t0 + LEASE - MS).is_empty());
    let renewed = t0 + LEASE / 2;
    let response = reply(apply(Request::Renew { claim: token }, &mut broker, &at(renewed)));
    assert_eq!(response, Response::Renewed { broker: id, lease_ms: LEASE.as_millis() as u64 });
    // Counted from the renewal now, not from the claim.
    assert!(broker.brokers.expire(t0 + LEASE).is_empty());
    assert!(broker.brokers.expire(renewed + LEASE - MS).is_empty());
    assert_eq!(broker.brokers.expire(renewed + LEASE), [id]);

    let later = renewed + LEASE;
    for request in [
        Request::Renew { claim: token },
        Request::ListTopics { claim: Some(token) },
        fetch_at_end(token, 0),
        Request::Release { claim: token },
    ] {
        expect_error(&reply(apply(request, &mut broker, &at(later))), ErrorCode::UnknownClaim);
    }
    assert_eq!(claim(&mut broker, Some(id), later).0, id);
}

#[test]
fn a_held_fetch_keeps_its_claim_for_its_wait_and_a_lease_after() {
    let t0 = Instant::now();
    let mut broker = broker();
    append(&mut broker, "t", 3, t0);
    let (id, token) = claim(&mut broker, None, t0);
    let wait = 2 * LEASE;
    let held = apply(fetch_at_end(token, wait.as_millis() as u64), &mut broker, &at(t0));
    let Outcome::HoldFetch(HeldFetch { deadline, offset: 3, .. }) = held else {
        panic!("expected the fetch at the end to be held, got {held:?}");
    };
    assert_eq!(deadline, t0 + wait);
    assert!(broker.brokers.expire(t0 + LEASE).is_empty(), "the lease ran out under a held fetch");
    assert!(broker.brokers.expire(deadline + LEASE - MS).is_empty());
    assert_eq!(broker.brokers.expire(deadline + LEASE), [id]);
}

#[test]
fn a_held_fetch_is_answered_empty_when_its_wait_ends_and_no_later_than_the_longest_wait() {
    let t0 = Instant::now();
    let mut broker = broker();
    append(&mut broker, "t", 3, t0);
    let (_, token) = claim(&mut broker, None, t0);
    // No wait: answered at once, with nothing.
    let response = reply(apply(fetch_at_end(token, 0), &mut broker, &at(t0)));
    assert!(matches!(response, Response::Messages { ref messages, .. } if messages.is_empty()));

    let mut waiting = Waiting::default();
    for (envelope, wait_ms) in [(1, 300), (2, u64::MAX)] {
        let held = apply(fetch_at_end(token, wait_ms), &mut broker, &at(t0));
        let Outcome::HoldFetch(HeldFetch {
            claim,
            topic,
            offset,
            max_messages,
            max_bytes,
            deadline,
            ..
        }) = held
        else {
            panic!("expected a held fetch, got {held:?}");
        };
        let fetch = HeldFetch {
            envelope,
            claim,
            topic,
            partition: 0,
            offset,
            max_messages,
            max_bytes,
            batches: false,
            deadline,
        };
        waiting.push_fetch(fetch);
    }
    assert!(waiting.take_expired(t0 + 299 * MS).1.is_empty());
    let (_, ended) = waiting.take_expired(t0 + 300 * MS);
    assert_eq!(ended.iter().map(|f| f.envelope).collect::<Vec<_>>(), [1]);
    let ended = &ended[0];
    let budget = Budget::of_fetch(ended.max_messages, ended.max_bytes);
    let read = fetch::Read { topic: &ended.topic, partition: 0, offset: ended.offset };
    let answer = fetch::answer(&*broker.store, read, budget, false);
    let Response::Messages { messages, next_offset: 3, end_offset: 3, .. } = answer else {
        panic!("expected no messages at offset 3, got {answer:?}");
    };
    assert!(messages.is_empty());

    let longest = t0 + Duration::from_millis(MAX_WAIT_MS);
    assert!(waiting.take_expired(longest - MS).1.is_empty());
    assert_eq!(waiting.take_expired(longest).1.len(), 1);
}

#[test]
fn a_waiting_claim_is_refused_when_its_wait_ends() {
    let t0 = Instant::now();
    let mut broker = broker();
    claim(&mut broker, None, t0);
    claim(&mut broker, None, t0);
    let mut waiting = Waiting::default();
    for (envelope, wanted) in [(1, None), (2, Some(1))] {
        let request = Request::Claim { broker: wanted, wait_ms: 300, client: Some("late") };
        let held = apply(request, &mut broker, &at(t0));
        let Outcome::WaitForClaim(WaitingClaim { broker, holder, deadline, .. }) = held else {
            panic!("expected a waiting claim, got {held:?}");
        };
        assert_eq!((broker, holder.as_str(), deadline), (wanted, "late", t0 + 300 * MS));
        waiting.push_claim(WaitingClaim { envelope, broker, holder, deadline });
    }
    assert!(waiting.take_expired(t0 + 299 * MS).0.is_empty());
    let (ended, _) = waiting.take_expired(t0 + 300 * MS);
    // What the server then answers each: the claim tried once more, and refused.
    let codes: Vec<ErrorCode> = ended
        .iter()
        .map(|c| {
            let refusal = super::claim::grant(&mut broker, c.broker, &c.holder, &at(t0 + 300 * MS));
            match refusal.map_err(Response::from) {
                Err(Response::Error { code, .. }) => code,
                other => panic!("expected a refusal, got {other:?}"),
            }
        })
        .collect();
    assert_eq!(codes, [ErrorCode::NoBrokerAvailable, ErrorCode::BrokerBusy]);
}

#[test]
fn unacknowledged_messages_go_to_another_member_when_their_ack_timeout_runs_out() {
    let t0 = Instant::now();
    let (mut broker, a, b) = two_members(5, t0);
    let Request::GroupFetch(ask) = group_fetch_of(a, 0) else { unreachable!() };
    let take_three = Request::GroupFetch(GroupFetch { max_messages: 3, ..ask });
    assert_eq!(delivered(apply(take_three, &mut broker, &at(t0))), (vec![0, 1, 2], vec![]));
    assert_eq!(delivered(apply(group_fetch_of(b, 0), &mut broker, &at(t0))), (vec![3, 4], vec![]));
    let ack = Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![3, 4] };
    assert!(matches!(reply(apply(ack, &mut broker, &at(t0))), Response::Acked { acked: 2, .. }));

    // Within the lease, so both claims hold; a's messages are not b's until the timeout.
    let before = t0 + ACK_TIMEOUT - MS;
    assert_eq!(delivered(apply(group_fetch_of(b, 0), &mut broker, &at(before))), (vec![], vec![]));
    let due = t0 + ACK_TIMEOUT;
    assert_eq!(
        delivered(apply(group_fetch_of(b, 0), &mut broker, &at(due))),
        (vec![0, 1, 2], vec![0, 1, 2])
    );
    // Redelivered, they wait a whole timeout again.
    let again = due + ACK_TIMEOUT - MS;
    assert_eq!(delivered(apply(group_fetch_of(a, 0), &mut broker, &at(again))), (vec![], vec![]));
    let ack = Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![0, 1, 2] };
    let response = reply(apply(ack, &mut broker, &at(again)));
    assert!(matches!(response, Response::Acked { acked: 3, committed_offset: 5, .. }));
}

#[test]
fn a_held_group_fetch_wakes_when_a_pending_message_comes_due_or_its_wait_ends() {
    let t0 = Instant::now();
    let (mut broker, a, b) = two_members(2, t0);
    assert_eq!(delivered(apply(group_fetch_of(a, 0), &mut broker, &at(t0))), (vec![0, 1], vec![]));

    let asked = t0 + 100 * MS;
    let mut waiting = Waiting::default();
    // One waits longer than the ack timeout, so it wakes when 0 and 1 come due; one waits less,
    // so it wakes when its wait ends.
    for (envelope, wait) in [(1, 2 * ACK_TIMEOUT), (2, ACK_TIMEOUT / 2)] {
        let held = apply(group_fetch_of(b, wait.as_millis() as u64), &mut broker, &at(asked));
        let Outcome::HoldGroupFetch(HeldGroupFetch {
            claim,
            group,
            topic,
            max_messages,
            max_bytes,
            ordered,
            wake,
            until,
            ..
        }) = held
        else {
            panic!("expected a held group fetch, got {held:?}");
        };
        assert_eq!(until, asked + wait);
        assert_eq!(wake, (t0 + ACK_TIMEOUT).min(until));
        let fetch = HeldGroupFetch {
            envelope,
            claim,
            group,
            topic,
            max_messages,
            max_bytes,
            ordered,
            wake,
            until,
        };
        waiting.push_group_fetch(fetch);
    }
    let short_end = asked + ACK_TIMEOUT / 2;
    assert!(waiting.take_woken_group_fetches(short_end - MS).is_empty());
    let woken = waiting.take_woken_group_fetches(short_end);
    assert_eq!(woken.iter().map(|f| f.envelope).collect::<Vec<_>>(), [2]);
    // Woken at the end of its wait with nothing due: answered empty.
    let to = |f: &HeldGroupFetch<u32>| group_fetch::Delivery {
        group: "g",
        topic: "t",
        member: f.claim,
        budget: Budget::of_fetch(f.max_messages, f.max_bytes),
        ordered: f.ordered,
    };
    let response =
        group_fetch::deliver(&*broker.store, &mut broker.groups, to(&woken[0]), short_end);
    assert!(group_fetch::is_empty(&response), "{response:?}");

    let due = t0 + ACK_TIMEOUT;
    assert!(waiting.take_woken_group_fetches(due - MS).is_empty());
    let woken = waiting.take_woken_group_fetches(due);
    assert_eq!(woken.iter().map(|f| f.envelope).collect::<Vec<_>>(), [1]);
    let Response::Delivered { messages, redelivered, .. } =
        group_fetch::deliver(&*broker.store, &mut broker.groups, to(&woken[0]), due)
    else {
        panic!("expected a delivery");
    };
    assert_eq!((messages.len(), redelivered), (2, vec![0, 1]));
}

/// A group fetch of `claim`'s that asks for ordered delivery, answered at once.
fn ordered_fetch(claim: u64) -> Request<'static> {
    let Request::GroupFetch(fetch) = group_fetch_of(claim, 0) else { unreachable!() };
    Request::GroupFetch(GroupFetch { max_messages: 2, ordered: true, ..fetch })
}

/// The partition and offsets a group fetch delivered; panics if it is held or refused.
#[track_caller]
fn delivered_from(outcome: Outcome<'_>) -> (u32, Vec<u64>) {
    match reply(outcome) {
        Response::Delivered { partition, messages, .. } => {
            (partition, messages.iter().map(|m| m.offset).collect())
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn ordered_group_fetches_give_each_partition_to_one_member_at_a_time() {
    let t0 = Instant::now();
    let mut broker = broker();
    let create = Request::CreateTopic {
        topic: "t",
        partitions: Some(2),
        retention: protocol::Retention::default(),
    };
    assert!(matches!(reply(apply(create, &mut broker, &at(t0))), Response::Created { .. }));
    for partition in [0, 1] {
        let messages = vec![NewMessage::new(None, b"m"); 4];
        let request = Request::Append(Append {
            topic: "t",
            partition: Some(partition),
            messages,
            sequenced: None,
        });
        assert!(matches!(reply(apply(request, &mut broker, &at(t0))), Response::Appended { .. }));
    }
    assert!(broker.store.commit_and_wait(t0, at(t0).now_ms).is_empty());
    let (_, a) = claim(&mut broker, None, t0);
    let (_, b) = claim(&mut broker, None, t0);
    for claim in [a, b] {
        let (group, topic, start) = ("g", "t", GroupStart::Earliest);
        let request = Request::JoinGroup { claim, group, topic, start };
        assert!(matches!(reply(apply(request, &mut broker, &at(t0))), Response::Joined { .. }));
    }
    // Each member gets a partition of its own, in turn.
    assert_eq!(delivered_from(apply(ordered_fetch(a), &mut broker, &at(t0))), (0, vec![0, 1]));
    assert_eq!(delivered_from(apply(ordered_fetch(b), &mut broker, &at(t0))), (1, vec![0, 1]));
    // While a holds partition 0 and b partition 1, each gets more of its own only.
    assert_eq!(delivered_from(apply(ordered_fetch(a), &mut broker, &at(t0))), (0, vec![2, 3]));
    assert_eq!(delivered_from(apply(ordered_fetch(b), &mut broker, &at(t0))), (1, vec![2, 3]));
    // Once a acknowledged all of partition 0 nothing holds it, and nothing is left there.
    let ack = Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![0, 1, 2, 3] };
    assert!(matches!(reply(apply(ack, &mut broker, &at(t0))), Response::Acked { .. }));
    assert!(delivered_from(apply(ordered_fetch(b), &mut broker, &at(t0))).1.is_empty());
    // When b's messages come due, anyone may take them, lowest first.
    let due = t0 + ACK_TIMEOUT;
    assert_eq!(delivered_from(apply(ordered_fetch(a), &mut broker, &at(due))), (1, vec![0, 1]));
    // An unordered fetch shares a held partition.
    let Request::GroupFetch(fetch) = ordered_fetch(b) else { unreachable!() };
    let unordered = Request::GroupFetch(GroupFetch { ordered: false, ..fetch });
    assert_eq!(delivered_from(apply(unordered, &mut broker, &at(due))), (1, vec![2, 3]));
}
