//! Consumer groups against the real broker, on the wire: work shared among the members of a
//! group, redelivery after the ack timeout, independent groups, long polls, resets, restarts
//! with a data directory, and the errors of each group request.

mod wire;

use std::time::{Duration, Instant};

use protocol::{ErrorCode, GroupFetch, GroupInfo, GroupStart, Request, ResetTo, Response};

use testkit::{BrokerProcess, STEP};
use wire::{append, ask, assert_silent, claim, expect_error, receive, release, send, start, QUIET};

/// The ack timeout of the brokers that show redelivery: long enough that a test's own steps
/// never reach it by accident, short enough to wait for. The rule itself is checked to the
/// millisecond, without waiting, by the unit tests in `cmd`.
const ACK_TIMEOUT: Duration = Duration::from_millis(300);

/// A wait long enough that only the event a test waits for can end it.
const LONG_WAIT_MS: u64 = 5000;

/// A broker with a short ack timeout and `args`.
fn start_with_timeout(args: &[&str]) -> BrokerProcess {
    let timeout = format!("{}ms", ACK_TIMEOUT.as_millis());
    let mut all = vec!["--group-ack-timeout", timeout.as_str()];
    all.extend_from_slice(args);
    start(&all)
}

/// What a `delivered` reply holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    /// The offsets delivered.
    offsets: Vec<u64>,
    /// Their values, as text.
    values: Vec<String>,
    /// The offsets among them delivered before.
    redelivered: Vec<u64>,
    /// The group's committed offset.
    committed: u64,
    /// The topic's next offset.
    end: u64,
    /// Where the group was reset to since the member's previous fetch, if it was.
    reset: Option<u64>,
}

/// Panics unless `response` is a `delivered` reply of `group` on `topic`.
#[track_caller]
fn expect_delivered(response: Response<'static>, group: &str, topic: &str) -> Delivered {
    match response {
        Response::Delivered {
            group: g,
            topic: t,
            messages,
            redelivered,
            committed_offset,
            end_offset,
            reset_offset,
            ..
        } if g == group && t == topic => Delivered {
            offsets: messages.iter().map(|m| m.offset).collect(),
            values: messages.iter().map(|m| String::from_utf8_lossy(m.value).into()).collect(),
            redelivered,
            committed: committed_offset,
            end: end_offset,
            reset: reset_offset,
        },
        other => panic!("expected delivered of {group:?} on {topic:?}, got {other:?}"),
    }
}

/// A group fetch of `topic` for `group` under `claim`.
fn group_fetch<'a>(
    claim: u64,
    group: &'a str,
    topic: &'a str,
    max_messages: u32,
    wait_ms: u64,
) -> Request<'a> {
    Request::GroupFetch(GroupFetch {
        ordered: false,
        claim,
        group,
        topic,
        max_messages,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms,
    })
}

/// Joins `group` on `topic` under `claim`; returns (committed offset, members, created).
#[track_caller]
fn join(
    socket: &zmq::Socket,
    claim: u64,
    group: &str,
    topic: &str,
    start: GroupStart,
) -> (u64, u32, bool) {
    match ask(socket, &Request::JoinGroup { claim, group, topic, start }) {
        Response::Joined { group: g, topic: t, committed_offset, members, created, .. }
            if g == group && t == topic =>
        {
            (committed_offset, members, created)
        }
        other => panic!("join {group:?} on {topic:?}: expected joined, got {other:?}"),
    }
}

/// Fetches for a member without waiting.
#[track_caller]
fn take(socket: &zmq::Socket, claim: u64, group: &str, topic: &str, max: u32) -> Delivered {
    expect_delivered(ask(socket, &group_fetch(claim, group, topic, max, 0)), group, topic)
}

/// Acknowledges `offsets`; returns (how many were pending, committed offset).
#[track_caller]
fn ack(socket: &zmq::Socket, group: &str, topic: &str, offsets: &[u64]) -> (u64, u64) {
    let request = Request::Ack { group, topic, partition: 0, offsets: offsets.to_vec() };
    match ask(socket, &request) {
        Response::Acked { group: g, topic: t, acked, committed_offset, .. }
            if g == group && t == topic =>
        {
            (acked, committed_offset)
        }
        other => panic!("ack {offsets:?}: expected acked, got {other:?}"),
    }
}

/// The groups `list_groups` shows for these filters.
#[track_caller]
fn groups(socket: &zmq::Socket, group: Option<&str>, topic: Option<&str>) -> Vec<GroupInfo> {
    match ask(socket, &Request::ListGroups { group, topic }) {
        Response::Groups { groups } => groups,
        other => panic!("list_groups: expected groups, got {other:?}"),
    }
}

/// The one state of `group` on `topic`.
#[track_caller]
fn state(socket: &zmq::Socket, group: &str, topic: &str) -> GroupInfo {
    let mut list = groups(socket, Some(group), Some(topic));
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

/// Appends `count` messages `prefix-N` to `topic`.
fn append_numbered(socket: &zmq::Socket, topic: &str, prefix: &str, count: usize) {
    let values: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    append(socket, topic, &values);
}

#[test]
fn two_members_of_one_group_together_receive_every_message_exactly_once() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&a, "orders", "order", 25);
    let (broker_a, token_a) = claim(&a, None, "preparer-a");
    let (broker_b, token_b) = claim(&b, None, "preparer-b");
    assert_eq!(join(&a, token_a, "preparers", "orders", GroupStart::Earliest), (0, 1, true));
    assert_eq!(join(&b, token_b, "preparers", "orders", GroupStart::Earliest), (0, 2, false));
    assert_eq!(state(&a, "preparers", "orders").members, [broker_a, broker_b]);

    let mut seen = Vec::new();
    let mut by_member = [0, 0];
    loop {
        let mut got = 0;
        for (i, (socket, token)) in [(&a, token_a), (&b, token_b)].into_iter().enumerate() {
            let batch = take(socket, token, "preparers", "orders", 4);
            assert!(batch.redelivered.is_empty(), "{batch:?}");
            if !batch.offsets.is_empty() {
                ack(socket, "preparers", "orders", &batch.offsets);
            }
            by_member[i] += batch.offsets.len();
            got += batch.offsets.len();
            seen.extend(batch.offsets);
        }
        if got == 0 {
            break;
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..25).collect::<Vec<u64>>(), "every message exactly once");
    assert!(by_member[0] > 0 && by_member[1] > 0, "the work is shared: {by_member:?}");
    let info = state(&a, "preparers", "orders");
    assert_eq!((info.committed_offset, info.delivered_offset, info.pending), (25, 25, 0));
    assert_eq!((info.end_offset, info.lag()), (25, 0));
}

#[test]
fn unacknowledged_messages_go_to_another_member_after_the_ack_timeout() {
    let broker = start_with_timeout(&[]);
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&a, "orders", "order", 5);
    let (_, token_a) = claim(&a, None, "a");
    let (_, token_b) = claim(&b, None, "b");
    join(&a, token_a, "g", "orders", GroupStart::Earliest);
    join(&b, token_b, "g", "orders", GroupStart::Earliest);

    let delivered_at = Instant::now();
    let first = take(&a, token_a, "g", "orders", 3);
    assert_eq!(first.offsets, [0, 1, 2]);
    // Member a goes silent. Member b gets the rest, then nothing until a's time runs out.
    assert_eq!(take(&b, token_b, "g", "orders", 10).offsets, [3, 4]);
    ack(&b, "g", "orders", &[3, 4]);
    assert!(take(&b, token_b, "g", "orders", 10).offsets.is_empty());
    send(&b, &group_fetch(token_b, "g", "orders", 10, LONG_WAIT_MS));
    let again = expect_delivered(receive(&b), "g", "orders");
    let waited = delivered_at.elapsed();
    assert_eq!(again.offsets, [0, 1, 2]);
    assert_eq!(again.redelivered, [0, 1, 2]);
    assert_eq!(again.values, ["order-0", "order-1", "order-2"]);
    assert!(waited >= ACK_TIMEOUT, "redelivered after {waited:?}");
    assert!(waited < ACK_TIMEOUT + Duration::from_secs(2), "redelivered only after {waited:?}");
    assert_eq!(again.committed, 0);

    // a's late acknowledgement still counts; b's then changes nothing.
    assert_eq!(ack(&a, "g", "orders", &[0, 1, 2]), (3, 5));
    assert_eq!(ack(&b, "g", "orders", &[0, 1, 2]), (0, 5));
    let info = state(&b, "g", "orders");
    assert_eq!((info.committed_offset, info.pending, info.lag()), (5, 0, 0));
}

#[test]
fn a_member_that_left_still_has_its_messages_redelivered() {
    let broker = start_with_timeout(&[]);
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&a, "t", "m", 2);
    let (_, token_a) = claim(&a, None, "a");
    join(&a, token_a, "g", "t", GroupStart::Earliest);
    assert_eq!(take(&a, token_a, "g", "t", 10).offsets, [0, 1]);
    release(&a, token_a);
    assert!(state(&b, "g", "t").members.is_empty(), "members leave with their claim");

    let (_, token_b) = claim(&b, None, "b");
    join(&b, token_b, "g", "t", GroupStart::Earliest);
    send(&b, &group_fetch(token_b, "g", "t", 10, LONG_WAIT_MS));
    assert_eq!(expect_delivered(receive(&b), "g", "t").redelivered, [0, 1]);
}

#[test]
fn different_groups_each_see_every_message() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&a, "t", "m", 6);
    let (_, token_a) = claim(&a, None, "a");
    let (_, token_b) = claim(&b, None, "b");
    join(&a, token_a, "kitchen", "t", GroupStart::Earliest);
    join(&b, token_b, "billing", "t", GroupStart::Earliest);
    assert_eq!(take(&a, token_a, "kitchen", "t", 100).offsets, (0..6).collect::<Vec<_>>());
    ack(&a, "kitchen", "t", &[0, 1, 2, 3, 4, 5]);
    assert_eq!(take(&b, token_b, "billing", "t", 100).offsets, (0..6).collect::<Vec<_>>());
    let listed: Vec<(String, u64, u64)> = groups(&a, None, Some("t"))
        .into_iter()
        .map(|g| (g.group, g.committed_offset, g.pending))
        .collect();
    assert_eq!(listed, [("billing".into(), 0, 6), ("kitchen".into(), 6, 0)]);
}

#[test]
fn a_new_group_starts_at_the_earliest_or_the_latest_offset_and_keeps_its_place() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "old", 3);
    let (_, token) = claim(&socket, None, "c");
    assert_eq!(join(&socket, token, "late", "t", GroupStart::Latest), (3, 1, true));
    assert_eq!(join(&socket, token, "early", "t", GroupStart::Earliest), (0, 1, true));
    // `start` only counts for a new group.
    assert_eq!(join(&socket, token, "late", "t", GroupStart::Earliest), (3, 1, false));
    append_numbered(&socket, "t", "new", 1);
    assert_eq!(take(&socket, token, "late", "t", 10).values, ["new-0"]);
    assert_eq!(take(&socket, token, "early", "t", 10).values.len(), 4);
}

#[test]
fn held_group_fetches_are_answered_as_messages_come_each_message_to_one_member() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (a, b, producer) = (broker.req(&context), broker.req(&context), broker.req(&context));
    append_numbered(&producer, "t", "m", 1);
    let (_, token_a) = claim(&a, None, "a");
    let (_, token_b) = claim(&b, None, "b");
    join(&a, token_a, "g", "t", GroupStart::Latest);
    join(&b, token_b, "g", "t", GroupStart::Latest);

    send(&a, &group_fetch(token_a, "g", "t", 10, LONG_WAIT_MS));
    assert_silent(&a, QUIET, "a group fetch at the end");
    send(&b, &group_fetch(token_b, "g", "t", 10, LONG_WAIT_MS));
    assert_silent(&b, QUIET, "a second group fetch at the end");

    append(&producer, "t", &["one"]);
    // The older held fetch gets the message; the other stays held.
    assert_eq!(expect_delivered(receive(&a), "g", "t").values, ["one"]);
    assert_silent(&b, QUIET, "the member that got nothing");
    append(&producer, "t", &["two"]);
    assert_eq!(expect_delivered(receive(&b), "g", "t").values, ["two"]);
}

#[test]
fn a_held_group_fetch_ends_empty_when_its_wait_does() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "m", 1);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Latest);
    let asked = Instant::now();
    let reply = expect_delivered(ask(&socket, &group_fetch(token, "g", "t", 10, 100)), "g", "t");
    assert!(reply.offsets.is_empty());
    assert!(asked.elapsed() >= Duration::from_millis(100), "{:?}", asked.elapsed());
    assert_eq!((reply.committed, reply.end), (1, 1));
}

#[test]
fn reset_moves_the_committed_offset_and_wakes_held_members() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (a, admin) = (broker.req(&context), broker.req(&context));
    append_numbered(&admin, "t", "m", 10);
    let (_, token) = claim(&a, None, "a");
    join(&a, token, "g", "t", GroupStart::Earliest);
    let batch = take(&a, token, "g", "t", 100);
    ack(&a, "g", "t", &batch.offsets);
    send(&a, &group_fetch(token, "g", "t", 2, LONG_WAIT_MS));
    assert_silent(&a, QUIET, "a group fetch at the end");

    let reset =
        Request::ResetGroup { group: "g", topic: "t", partition: None, to: ResetTo::Offset(7) };
    let reply = ask(&admin, &reset);
    assert_eq!(
        reply,
        Response::Reset { group: "g", topic: "t", committed_offset: 7, partition: None }
    );
    assert_eq!(expect_delivered(receive(&a), "g", "t").offsets, [7, 8]);

    for (to, committed) in [(ResetTo::Latest, 10), (ResetTo::Earliest, 0)] {
        let reply =
            ask(&admin, &Request::ResetGroup { group: "g", topic: "t", partition: None, to });
        assert_eq!(
            reply,
            Response::Reset {
                group: "g",
                topic: "t",
                committed_offset: committed,
                partition: None
            }
        );
        let info = state(&admin, "g", "t");
        assert_eq!(
            (info.committed_offset, info.delivered_offset, info.pending),
            (committed, committed, 0)
        );
    }
    // A reset creates the state of a group that has none on the topic.
    let reply = ask(
        &admin,
        &Request::ResetGroup { group: "new", topic: "t", partition: None, to: ResetTo::Latest },
    );
    assert_eq!(
        reply,
        Response::Reset { group: "new", topic: "t", committed_offset: 10, partition: None }
    );
    assert_eq!(state(&admin, "new", "t").lag(), 0);
}

#[test]
fn committed_offsets_and_pending_messages_survive_a_crash_with_a_data_dir() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path");
    let args = ["--data-dir", data_dir, "--group-ack-timeout", "600ms"];
    let broker = start(&args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "orders", "order", 10);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "preparers", "orders", GroupStart::Earliest);
    join(&socket, token, "auditors", "orders", GroupStart::Latest);
    assert_eq!(take(&socket, token, "preparers", "orders", 6).offsets, [0, 1, 2, 3, 4, 5]);
    ack(&socket, "preparers", "orders", &[0, 1, 2, 4]);
    let before = groups(&socket, None, None);

    // Everything acknowledged to the client is stored: even a SIGKILL loses none of it.
    broker.signal("KILL");
    let (status, _) = broker.wait_exit(STEP);
    assert!(!status.success());
    let broker = start(&args);
    let socket = broker.req(&context);
    let after = groups(&socket, None, None);
    let without_members: Vec<GroupInfo> =
        before.into_iter().map(|g| GroupInfo { members: Vec::new(), ..g }).collect();
    assert_eq!(after, without_members);
    let preparers = state(&socket, "preparers", "orders");
    assert_eq!((preparers.committed_offset, preparers.delivered_offset), (3, 6));
    assert_eq!((preparers.pending, preparers.lag()), (2, 7));

    // The pending ones go to a member once their timeout, counted from the restart, runs out.
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "preparers", "orders", GroupStart::Earliest);
    assert_eq!(take(&socket, token, "preparers", "orders", 10).offsets, [6, 7, 8, 9]);
    ack(&socket, "preparers", "orders", &[6, 7, 8, 9]);
    send(&socket, &group_fetch(token, "preparers", "orders", 10, LONG_WAIT_MS));
    let again = expect_delivered(receive(&socket), "preparers", "orders");
    assert_eq!((again.offsets, again.redelivered), (vec![3, 5], vec![3, 5]));
    broker.interrupt();
}

#[test]
fn deleting_a_topic_forgets_its_groups() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "m", 2);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Earliest);
    take(&socket, token, "g", "t", 1);
    assert!(matches!(ask(&socket, &Request::DeleteTopic { topic: "t" }), Response::Deleted { .. }));
    assert!(groups(&socket, None, None).is_empty());
    let reply =
        ask(&socket, &Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![0] });
    expect_error(&reply, ErrorCode::UnknownGroup);
}

#[test]
fn group_requests_with_bad_input_get_clear_errors_and_change_nothing() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "m", 5);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Earliest);
    assert_eq!(take(&socket, token, "g", "t", 3).offsets, [0, 1, 2]);
    let (_, stranger) = claim(&socket, None, "stranger");
    let long_name = "g".repeat(250);

    let refusals: Vec<(Request<'_>, ErrorCode, &str)> = vec![
        (
            Request::JoinGroup { claim: token, group: "", topic: "t", start: GroupStart::Earliest },
            ErrorCode::InvalidGroupName,
            "empty",
        ),
        (
            Request::JoinGroup {
                claim: token,
                group: "a\nb",
                topic: "t",
                start: GroupStart::Earliest,
            },
            ErrorCode::InvalidGroupName,
            "control character",
        ),
        (
            Request::JoinGroup {
                claim: token,
                group: "g",
                topic: " t",
                start: GroupStart::Earliest,
            },
            ErrorCode::InvalidTopicName,
            "white space",
        ),
        (
            Request::JoinGroup {
                claim: token,
                group: "g",
                topic: "nope",
                start: GroupStart::Earliest,
            },
            ErrorCode::UnknownTopic,
            "nope",
        ),
        (
            Request::JoinGroup {
                claim: 12345,
                group: "g",
                topic: "t",
                start: GroupStart::Earliest,
            },
            ErrorCode::UnknownClaim,
            "12345",
        ),
        (group_fetch(stranger, "g", "t", 10, 0), ErrorCode::UnknownMember, "join_group"),
        (group_fetch(token, "other", "t", 10, 0), ErrorCode::UnknownMember, "join_group"),
        (group_fetch(token, "g", "nope", 10, 0), ErrorCode::UnknownTopic, "nope"),
        (group_fetch(token, " g", "t", 10, 0), ErrorCode::InvalidGroupName, "white space"),
        (
            Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![0, 3] },
            ErrorCode::NotPending,
            "offset 3",
        ),
        (
            Request::Ack { group: "g", topic: "t", partition: 0, offsets: vec![u64::MAX] },
            ErrorCode::NotPending,
            "never delivered",
        ),
        (
            Request::Ack { group: "other", topic: "t", partition: 0, offsets: vec![0] },
            ErrorCode::UnknownGroup,
            "other",
        ),
        (
            Request::Ack { group: "g", topic: "u", partition: 0, offsets: vec![0] },
            ErrorCode::UnknownGroup,
            "\"u\"",
        ),
        (
            Request::Ack { group: &long_name, topic: "t", partition: 0, offsets: vec![0] },
            ErrorCode::InvalidGroupName,
            "250 bytes",
        ),
        (
            Request::ListGroups { group: Some("other"), topic: None },
            ErrorCode::UnknownGroup,
            "any topic",
        ),
        (
            Request::ListGroups { group: Some(""), topic: None },
            ErrorCode::InvalidGroupName,
            "empty",
        ),
        (
            Request::ResetGroup { group: "g", topic: "t", partition: None, to: ResetTo::Offset(6) },
            ErrorCode::OffsetOutOfRange,
            "offset 6",
        ),
        (
            Request::ResetGroup {
                group: "g",
                topic: "nope",
                partition: None,
                to: ResetTo::Earliest,
            },
            ErrorCode::UnknownTopic,
            "nope",
        ),
        (
            Request::ResetGroup {
                group: "g\t",
                topic: "t",
                partition: None,
                to: ResetTo::Earliest,
            },
            ErrorCode::InvalidGroupName,
            "control",
        ),
    ];
    let before = groups(&socket, None, None);
    for (request, code, says) in refusals {
        let reply = ask(&socket, &request);
        expect_error(&reply, code);
        let Response::Error { reason, range, .. } = &reply else { unreachable!() };
        assert!(reason.contains(says), "{request:?}: {reason:?} does not mention {says:?}");
        if code == ErrorCode::OffsetOutOfRange {
            assert_eq!(*range, Some((0, 5)));
        }
        assert_eq!(groups(&socket, None, None), before, "{request:?} changed the groups");
    }
    // The partly bad ack above acknowledged nothing: offset 0 is still pending.
    assert_eq!(ack(&socket, "g", "t", &[0]), (1, 1));
    // A member whose claim ended is one no more.
    release(&socket, token);
    let (_, token) = claim(&socket, None, "c");
    expect_error(&ask(&socket, &group_fetch(token, "g", "t", 10, 0)), ErrorCode::UnknownMember);
}

#[test]
fn group_fetches_respect_their_limits_and_mix_redeliveries_with_new_messages() {
    let broker = start_with_timeout(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "m", 3);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Earliest);
    assert_eq!(take(&socket, token, "g", "t", 3).offsets, [0, 1, 2]);
    ack(&socket, "g", "t", &[1]);

    // Offsets 0 and 2 come due together; a held fetch of one message gets the lowest.
    let first =
        expect_delivered(ask(&socket, &group_fetch(token, "g", "t", 1, LONG_WAIT_MS)), "g", "t");
    assert_eq!((first.offsets, first.redelivered), (vec![0], vec![0]));
    // The next fetch gets the other due one first, then a new one.
    append(&socket, "t", &["new"]);
    let mixed = take(&socket, token, "g", "t", 10);
    assert_eq!((mixed.offsets, mixed.redelivered), (vec![2, 3], vec![2]));
    assert_eq!(mixed.values, ["m-2", "new"]);

    // At most max_bytes, but at least one message.
    append(&socket, "t", &["four", "five"]);
    let request = Request::GroupFetch(GroupFetch {
        ordered: false,
        claim: token,
        group: "g",
        topic: "t",
        max_messages: 10,
        max_bytes: 1,
        wait_ms: 0,
    });
    assert_eq!(expect_delivered(ask(&socket, &request), "g", "t").offsets, [4]);
    let info = state(&socket, "g", "t");
    assert_eq!((info.committed_offset, info.delivered_offset, info.pending), (0, 5, 4));
}

#[test]
fn a_delivery_to_a_member_that_is_gone_goes_to_another_at_once() {
    // Long enough that a delivery lost to the gone member would show as a second timeout.
    let timeout = Duration::from_millis(1000);
    let broker = start(&["--group-ack-timeout", "1000ms"]);
    let context = zmq::Context::new();
    let (gone, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&b, "t", "m", 2);
    let (_, token_gone) = claim(&gone, None, "gone");
    let (_, token_b) = claim(&b, None, "b");
    join(&gone, token_gone, "g", "t", GroupStart::Earliest);
    join(&b, token_b, "g", "t", GroupStart::Earliest);
    let delivered_at = Instant::now();
    assert_eq!(take(&gone, token_gone, "g", "t", 10).offsets, [0, 1]);
    // The member asks for more, waiting long, and goes away before the answer: its held fetch
    // is the older one, so it is answered first when 0 and 1 come due, into a closed socket.
    send(&gone, &group_fetch(token_gone, "g", "t", 10, LONG_WAIT_MS));
    assert_silent(&gone, QUIET, "a group fetch with nothing due");
    drop(gone);
    send(&b, &group_fetch(token_b, "g", "t", 10, LONG_WAIT_MS));
    let again = expect_delivered(receive(&b), "g", "t");
    let waited = delivered_at.elapsed();
    assert_eq!(again.redelivered, [0, 1]);
    assert!(waited >= timeout, "{waited:?}");
    assert!(waited < timeout + timeout / 2, "given back only after {waited:?}");
}

#[test]
fn every_member_is_told_of_a_reset_once_and_a_held_fetch_at_once() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let (a, b) = (broker.req(&context), broker.req(&context));
    append_numbered(&a, "t", "m", 6);
    let (_, token_a) = claim(&a, None, "a");
    let (_, token_b) = claim(&b, None, "b");
    join(&a, token_a, "g", "t", GroupStart::Earliest);
    join(&b, token_b, "g", "t", GroupStart::Earliest);
    let drained = take(&a, token_a, "g", "t", 10);
    assert_eq!((drained.offsets, drained.reset), (vec![0, 1, 2, 3, 4, 5], None));

    // b waits; the reset answers its held fetch at once, telling it, with what there is.
    send(&b, &group_fetch(token_b, "g", "t", 10, LONG_WAIT_MS));
    assert_silent(&b, QUIET, "a group fetch with nothing for it");
    assert!(matches!(
        ask(
            &a,
            &Request::ResetGroup {
                group: "g",
                topic: "t",
                partition: None,
                to: ResetTo::Offset(4)
            }
        ),
        Response::Reset { committed_offset: 4, .. }
    ));
    let told = expect_delivered(receive(&b), "g", "t");
    assert_eq!((told.offsets, told.reset, told.committed), (vec![4, 5], Some(4), 4));

    // a is told on its next fetch, once, even with nothing to deliver.
    let told = take(&a, token_a, "g", "t", 10);
    assert_eq!((told.offsets, told.reset), (vec![], Some(4)));
    assert_eq!(take(&a, token_a, "g", "t", 10).reset, None);
    assert_eq!(take(&b, token_b, "g", "t", 10).reset, None);
    broker.interrupt();
}

/// Creates `topic` with `partitions` partitions and appends `per_partition` messages
/// `p<partition>-<n>` to each.
fn partitioned(socket: &zmq::Socket, topic: &str, partitions: u32, per_partition: usize) {
    let create = Request::CreateTopic {
        topic,
        partitions: Some(partitions),
        retention: protocol::Retention::default(),
    };
    assert!(matches!(ask(socket, &create), Response::Created { .. }));
    for partition in 0..partitions {
        let values: Vec<String> = (0..per_partition).map(|n| format!("p{partition}-{n}")).collect();
        let messages =
            values.iter().map(|v| protocol::NewMessage::new(None, v.as_bytes())).collect();
        let append = Request::Append(protocol::Append {
            topic,
            partition: Some(partition),
            messages,
            sequenced: None,
        });
        assert!(matches!(ask(socket, &append), Response::Appended { .. }));
    }
}

/// An ordered group fetch; returns the partition and the offsets delivered.
#[track_caller]
fn take_ordered(socket: &zmq::Socket, claim: u64, max_messages: u32) -> (u32, Vec<u64>) {
    let Request::GroupFetch(fetch) = group_fetch(claim, "g", "t", max_messages, 0) else {
        unreachable!()
    };
    match ask(socket, &Request::GroupFetch(GroupFetch { ordered: true, ..fetch })) {
        Response::Delivered { partition, messages, .. } => {
            for message in &messages {
                let value = String::from_utf8_lossy(message.value);
                assert!(value.starts_with(&format!("p{partition}-")), "{value} in {partition}");
            }
            (partition, messages.iter().map(|m| m.offset).collect())
        }
        other => panic!("expected delivered, got {other:?}"),
    }
}

#[test]
fn a_group_reads_every_partition_and_keeps_each_ones_offsets_across_a_crash() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path");
    let args = ["--data-dir", data_dir, "--group-ack-timeout", "60s"];
    let broker = start(&args);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    partitioned(&socket, "t", 6, 5);
    let members: Vec<u64> = (0..2).map(|_| claim(&socket, None, "c").1).collect();
    for &member in &members {
        let (_, _, _) = join(&socket, member, "g", "t", GroupStart::Earliest);
    }
    // Ordered fetches hand each member partitions no other member holds, in turn: six
    // fetches over two members take every partition once, each from its first offset.
    let mut seen = Vec::new();
    for round in 0..6 {
        let (partition, offsets) = take_ordered(&socket, members[round % 2], 3);
        assert_eq!(offsets, [0, 1, 2], "partition {partition}");
        seen.push(partition);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    for partition in 0..6 {
        let ack = Request::Ack { group: "g", topic: "t", partition, offsets: vec![0, 1] };
        assert!(matches!(ask(&socket, &ack), Response::Acked { .. }));
    }
    let ack = Request::Ack { group: "g", topic: "t", partition: 9, offsets: vec![0] };
    expect_error(&ask(&socket, &ack), ErrorCode::UnknownPartition);
    let before = groups(&socket, Some("g"), None);
    assert_eq!(before.iter().map(|g| g.partition).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert!(before
        .iter()
        .all(|g| (g.committed_offset, g.delivered_offset, g.pending) == (2, 3, 1)));

    broker.signal("KILL");
    let (status, _) = broker.wait_exit(STEP);
    assert!(!status.success());
    let broker = start(&args);
    let socket = broker.req(&context);
    let after = groups(&socket, Some("g"), None);
    let without_members: Vec<GroupInfo> =
        before.into_iter().map(|g| GroupInfo { members: Vec::new(), ..g }).collect();
    assert_eq!(after, without_members);

    // One partition reset alone moves that partition only.
    let reset =
        Request::ResetGroup { group: "g", topic: "t", partition: Some(4), to: ResetTo::Earliest };
    assert_eq!(
        ask(&socket, &reset),
        Response::Reset { group: "g", topic: "t", committed_offset: 0, partition: Some(4) }
    );
    let states = groups(&socket, Some("g"), None);
    let committed: Vec<u64> = states.iter().map(|g| g.committed_offset).collect();
    assert_eq!(committed, [2, 2, 2, 2, 0, 2]);
    broker.interrupt();
}

#[test]
fn delete_group_forgets_a_group_once_its_members_have_left_and_for_good() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path");
    let broker = start(&["--data-dir", data_dir]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append_numbered(&socket, "t", "m", 4);
    append_numbered(&socket, "u", "m", 4);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Earliest);
    join(&socket, token, "g", "u", GroupStart::Earliest);
    let taken = take(&socket, token, "g", "t", 2).offsets;
    ack(&socket, "g", "t", &taken);

    // A group with members is refused, and keeps everything.
    let delete = Request::DeleteGroup { group: "g", topic: Some("t"), partition: None };
    expect_error(&ask(&socket, &delete), ErrorCode::GroupActive);
    assert_eq!(state(&socket, "g", "t").committed_offset, 2);
    release(&socket, token);

    // Once they left: one topic's state goes, the other's stays.
    assert_eq!(
        ask(&socket, &delete),
        Response::GroupDeleted { group: "g", topic: Some("t"), partition: None }
    );
    assert_eq!(
        groups(&socket, Some("g"), None).iter().map(|g| g.topic.as_str()).collect::<Vec<_>>(),
        ["u"]
    );
    expect_error(&ask(&socket, &delete), ErrorCode::UnknownGroup);
    let every = Request::DeleteGroup { group: "g", topic: None, partition: None };
    assert_eq!(
        ask(&socket, &every),
        Response::GroupDeleted { group: "g", topic: None, partition: None }
    );
    expect_error(
        &ask(&socket, &Request::ListGroups { group: Some("g"), topic: None }),
        ErrorCode::UnknownGroup,
    );
    expect_error(
        &ask(&socket, &Request::DeleteGroup { group: "g\t", topic: None, partition: None }),
        ErrorCode::InvalidGroupName,
    );

    // For good: a restart does not bring it back, and a new join starts afresh.
    broker.interrupt();
    let broker = start(&["--data-dir", data_dir]);
    let socket = broker.req(&context);
    assert!(groups(&socket, None, None).is_empty());
    let (_, token) = claim(&socket, None, "c");
    let (committed, _, created) = join(&socket, token, "g", "t", GroupStart::Latest);
    assert_eq!((committed, created), (4, true));
    broker.interrupt();
}

#[test]
fn delete_group_of_one_partition_leaves_it_without_a_committed_offset_until_a_join() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path");
    let broker = start(&["--data-dir", data_dir]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    partitioned(&socket, "t", 3, 4);
    let reset = |partition| Request::ResetGroup {
        group: "g",
        topic: "t",
        partition,
        to: ResetTo::Offset(1),
    };
    let listed = |socket: &zmq::Socket| -> Vec<(u32, u64)> {
        groups(socket, Some("g"), None).iter().map(|g| (g.partition, g.committed_offset)).collect()
    };
    // A reset of one partition gives the others no committed offset.
    assert!(matches!(ask(&socket, &reset(Some(0))), Response::Reset { .. }));
    assert_eq!(listed(&socket), [(0, 1)]);
    assert!(matches!(ask(&socket, &reset(None)), Response::Reset { .. }));
    assert_eq!(listed(&socket), [(0, 1), (1, 1), (2, 1)]);

    let forget = |partition| Request::DeleteGroup { group: "g", topic: Some("t"), partition };
    assert_eq!(
        ask(&socket, &forget(Some(1))),
        Response::GroupDeleted { group: "g", topic: Some("t"), partition: Some(1) }
    );
    assert_eq!(listed(&socket), [(0, 1), (2, 1)]);
    expect_error(&ask(&socket, &forget(Some(3))), ErrorCode::UnknownPartition);
    assert_eq!(listed(&socket), [(0, 1), (2, 1)]);

    // For good, across a restart; then a join starts it at the join's start, and only it.
    broker.interrupt();
    let broker = start(&["--data-dir", data_dir]);
    let socket = broker.req(&context);
    assert_eq!(listed(&socket), [(0, 1), (2, 1)]);
    let (_, token) = claim(&socket, None, "c");
    join(&socket, token, "g", "t", GroupStart::Latest);
    assert_eq!(listed(&socket), [(0, 1), (1, 4), (2, 1)]);
    // A member there: nothing is forgotten.
    expect_error(&ask(&socket, &forget(Some(2))), ErrorCode::GroupActive);
    release(&socket, token);
    // Forgetting every partition's offset, one by one, leaves no state.
    for partition in 0..3 {
        assert!(matches!(ask(&socket, &forget(Some(partition))), Response::GroupDeleted { .. }));
    }
    expect_error(
        &ask(&socket, &Request::ListGroups { group: Some("g"), topic: None }),
        ErrorCode::UnknownGroup,
    );
    broker.interrupt();
}
