//! `group_fetch`: hand a group member the next messages of a topic, one partition per reply,
//! under its claim, waiting for some if asked to.

use crate::quiet::Shown;
use std::time::Instant;

use protocol::{GroupFetch, Message, Response};

use super::{deadline, group_topic, partition_offsets, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::group::{GroupError, Groups};
use crate::store::{Budget, Store, StoreError};
use crate::waiting::HeldGroupFetch;

/// Delivers what `fetch` asks for to its member, renewing its claim. When nothing is there for
/// the group and the fetch may wait, it is held (and its claim kept alive) until something
/// comes: an append, a pending message coming due, a reset.
pub fn apply<'a>(broker: &'a mut Broker, fetch: GroupFetch<'a>, cx: &Context<'_>) -> Outcome<'a> {
    if let Err(error) = broker.brokers.renew(fetch.claim, cx.now, cx.now) {
        return refuse(error);
    }
    let partitions = match group_topic(&*broker.store, fetch.group, fetch.topic) {
        Ok(partitions) => partitions,
        Err(refusal) => return Outcome::Reply(refusal),
    };
    let Some(states) = broker.groups.state(fetch.group, fetch.topic) else {
        return refuse(unknown_member(&fetch));
    };
    if !states.first().is_some_and(|state| state.is_member(fetch.claim)) {
        return refuse(unknown_member(&fetch));
    }
    if states.len() < partitions as usize {
        // The topic grew since the group last read it: its new partitions start at their
        // first offset, so that nothing appended to them is missed.
        match partition_offsets(&*broker.store, fetch.topic, partitions) {
            Ok(offsets) => {
                let starts: Vec<u64> = offsets.iter().map(|&(first, _)| first).collect();
                broker.groups.ensure(fetch.group, fetch.topic, &starts);
            }
            Err(refusal) => return Outcome::Reply(refusal),
        }
    }
    let Broker { store, groups, brokers, .. } = broker;
    let budget = Budget::of_fetch(fetch.max_messages, fetch.max_bytes);
    let to = Delivery {
        group: fetch.group,
        topic: fetch.topic,
        member: fetch.claim,
        budget,
        ordered: fetch.ordered,
    };
    let response = deliver(&**store, groups, to, cx.now);
    if is_empty(&response) && fetch.wait_ms > 0 {
        let until = deadline(cx.now, fetch.wait_ms);
        // Cannot fail: the claim was renewed above, within this same request.
        let _ = brokers.renew(fetch.claim, cx.now, until);
        return Outcome::HoldGroupFetch(HeldGroupFetch {
            envelope: (),
            claim: fetch.claim,
            group: fetch.group.to_owned(),
            topic: fetch.topic.to_owned(),
            max_messages: fetch.max_messages,
            max_bytes: fetch.max_bytes,
            ordered: fetch.ordered,
            wake: wake(groups, fetch.group, fetch.topic, until),
            until,
        });
    }
    Outcome::Reply(response)
}

/// A delivery to make: to a member of `group`, of `topic`, within `budget`.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The member's group.
    pub group: &'a str,
    /// The topic it reads.
    pub topic: &'a str,
    /// The member's claim.
    pub member: u64,
    /// How many messages and bytes it may be handed.
    pub budget: Budget,
    /// Whether partitions another member holds messages of are skipped.
    pub ordered: bool,
}

/// Delivers to a member of `to.group` what one partition of `to.topic` has for it at `now`,
/// possibly nothing: the partitions are taken in turn, from the one after the partition the
/// group was last served from, and the first with something for the member is served (with
/// `to.ordered`, one whose messages another member holds is passed over). Within it, first the
/// messages whose ack timeout ran out, lowest offsets first, then new ones, within the budget
/// (but at least one if there is one). They are pending from then on.
pub fn deliver<'a>(
    store: &'a Store,
    groups: &mut Groups,
    to: Delivery<'a>,
    now: Instant,
) -> Response<'a> {
    let partitions = match groups.state(to.group, to.topic) {
        Some(states) => u32::try_from(states.len()).unwrap_or(u32::MAX),
        None => return unknown_group(to.group, to.topic),
    };
    let turn = groups.next_turn(to.group, to.topic) % partitions.max(1);
    let mut empty = None;
    for step in 0..partitions {
        let partition = (turn + step) % partitions;
        let held = groups
            .get(to.group, to.topic, partition)
            .is_some_and(|state| state.held_by_other(to.member, now));
        if to.ordered && held {
            continue;
        }
        let response = deliver_partition(store, groups, to, partition, now);
        if !is_empty(&response) {
            groups.served(to.group, to.topic, partition, partitions);
            return response;
        }
        empty.get_or_insert(response);
    }
    empty.unwrap_or_else(|| nothing(store, groups, to, turn))
}

/// Delivers to a member what `partition` of `to.topic` has for it.
fn deliver_partition<'a>(
    store: &'a Store,
    groups: &mut Groups,
    to: Delivery<'a>,
    partition: u32,
    now: Instant,
) -> Response<'a> {
    let Delivery { group, topic, member, mut budget, .. } = to;
    let (first, end) = match store.offsets(topic, partition) {
        Ok(offsets) => offsets,
        Err(error) => return error.into(),
    };
    match groups.get(group, topic, partition).map(|state| state.needs_trim(first)) {
        None => return unknown_group(group, topic),
        Some(true) => trim(groups, group, topic, partition, first),
        Some(false) => {}
    }
    let Some(state) = groups.get(group, topic, partition) else {
        return unknown_group(group, topic);
    };
    let mut messages: Vec<Message<'a>> = Vec::new();
    for offset in state.due(now, budget.messages_left()) {
        let mut one = Vec::with_capacity(1);
        match store.read(topic, partition, offset, Budget::new(1, usize::MAX), &mut one) {
            // An offset retention removed since is simply not there any more.
            Ok(_) | Err(StoreError::OffsetOutOfRange { .. }) => {}
            // A record that cannot be read (damaged) is refused as a plain fetch refuses it,
            // unless earlier messages go first; then the next group fetch reaches it.
            Err(error) if messages.is_empty() => return error.into(),
            Err(_) => break,
        }
        let Some(message) = one.pop() else { continue };
        if !budget.take(&message) {
            break;
        }
        messages.push(message);
    }
    // A delivered offset past the end: another broker process handed out what it appended,
    // and this process's copy of the partition has not reached it yet. Nothing new is there
    // for the group here until it has (the fetch is held, and woken as the copy grows).
    if budget.messages_left() > 0 && state.delivered() <= end {
        // From `first` on: the state was trimmed to the partition above. A record that
        // cannot be read is refused as above: never an empty delivery that would come again
        // forever.
        let read = store.read(topic, partition, state.delivered(), budget, &mut messages);
        if let Err(error) = read {
            if messages.is_empty() {
                return error.into();
            }
        }
    }
    let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
    let (redelivered, committed_offset) = if offsets.is_empty() {
        (Vec::new(), state.committed())
    } else {
        let until = now + groups.ack_timeout();
        let delivered = groups.update(group, topic, partition, |state| {
            (state.deliver(&offsets, until), state.committed())
        });
        groups.hand_to(group, topic, partition, member);
        delivered.unwrap_or((Vec::new(), end))
    };
    let reset_offset = groups.take_reset(group, topic, partition, member);
    Response::Delivered {
        group,
        topic,
        messages,
        redelivered,
        committed_offset,
        end_offset: end,
        reset_offset,
        partition,
    }
}

/// An empty delivery of `partition`, when every partition was passed over for another member.
fn nothing<'a>(store: &Store, groups: &Groups, to: Delivery<'a>, partition: u32) -> Response<'a> {
    let end = store.offsets(to.topic, partition).map_or(0, |(_, end)| end);
    let committed_offset =
        groups.get(to.group, to.topic, partition).map_or(end, |state| state.committed());
    Response::Delivered {
        group: to.group,
        topic: to.topic,
        messages: Vec::new(),
        redelivered: Vec::new(),
        committed_offset,
        end_offset: end,
        reset_offset: None,
        partition,
    }
}

/// Fits `group`'s state on `partition` of `topic` to its oldest offset `first` now
/// ([`crate::group::Subscription::trim`]), saying so if retention removed pending messages.
fn trim(groups: &mut Groups, group: &str, topic: &str, partition: u32, first: u64) {
    let dropped = groups.update(group, topic, partition, |state| state.trim(first)).unwrap_or(0);
    if dropped > 0 {
        tracing::warn!(
            group = %Shown(group),
            topic = %Shown(topic),
            partition,
            "{dropped} pending messages were removed by retention before they were \
             acknowledged; skipped"
        );
    }
}

/// When a group fetch held until `until` must be looked at again even if its topic does not
/// grow: when the group's first pending message, in any partition, comes due, if that is
/// sooner.
pub fn wake(groups: &Groups, group: &str, topic: &str, until: Instant) -> Instant {
    groups.next_due(group, topic).map_or(until, |due| due.min(until))
}

/// Whether `response` delivered nothing and tells of no reset (and is no error): a fetch that
/// may wait is held rather than answered with it.
pub fn is_empty(response: &Response<'_>) -> bool {
    matches!(
        response,
        Response::Delivered { messages, reset_offset: None, .. } if messages.is_empty()
    )
}

fn unknown_member(fetch: &GroupFetch<'_>) -> GroupError {
    GroupError::UnknownMember {
        claim: fetch.claim,
        group: fetch.group.to_owned(),
        topic: fetch.topic.to_owned(),
    }
}

fn unknown_group<'a>(group: &str, topic: &str) -> Response<'a> {
    GroupError::UnknownGroup { group: group.to_owned(), topic: Some(topic.to_owned()) }.into()
}
